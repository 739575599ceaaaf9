//! Shared test helpers: builders, the reference model of what a log means, and the
//! backends the conformance and crash suites run against.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use bytes::Bytes;
use rsl_core::SplitMix64;
use rsl_core::{
    Ballot, Configuration, DurableState, NodeId, PersistRequest, Proposal, Request, RequestId, Slot, Value,
};
use rsl_log::sim::{CrashModel, SimDisk, SimPmem};
use rsl_log::{
    FileJournal, JournalOptions, LogStore, MemoryDisk, MemoryLog, PmemFlush, PmemLog, PmemOptions,
    RecoveryPolicy, RecoveryReport,
};

/// A temporary directory on tmpfs where there is one (these tests are not about fsync).
pub fn scratch_dir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    let builder = {
        let mut builder = tempfile::Builder::new();
        builder.prefix("rsl-log-test-");
        builder
    };
    if shm.is_dir() {
        if let Ok(dir) = builder.tempdir_in(shm) {
            return dir;
        }
    }
    builder.tempdir().expect("create a temporary directory")
}

/// An environment knob: `name` parsed, or `default`.
pub fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

pub fn ballot(round: u64, node: u64) -> Ballot {
    Ballot::new(round, NodeId(node))
}

pub fn batch(slot: u64, round: u64, payload_bytes: usize) -> Proposal {
    let payload: Vec<u8> = (0..payload_bytes).map(|i| (i as u64 ^ slot ^ round) as u8).collect();
    Proposal {
        ballot: ballot(round, 1),
        slot: Slot(slot),
        value: Value::Batch(vec![Request {
            id: RequestId { client: slot, sequence: round },
            payload: Bytes::from(payload),
        }]),
    }
}

pub fn every_value_kind(first_slot: u64) -> Vec<Proposal> {
    vec![
        Proposal { ballot: ballot(3, 2), slot: Slot(first_slot), value: Value::Noop },
        batch(first_slot + 1, 3, 100),
        Proposal {
            ballot: ballot(3, 2),
            slot: Slot(first_slot + 2),
            value: Value::Configuration(Configuration::new(
                2,
                vec![NodeId(1), NodeId(2), NodeId(4)],
                Slot(first_slot + 3),
            )),
        },
        Proposal {
            ballot: ballot(3, 2),
            slot: Slot(first_slot + 3),
            value: Value::Batch(vec![
                Request { id: RequestId { client: 1, sequence: 1 }, payload: Bytes::new() },
                Request { id: RequestId { client: 1, sequence: 2 }, payload: Bytes::from_static(b"x") },
            ]),
        },
    ]
}

pub fn request(
    ticket: u64,
    promise: Option<Ballot>,
    proposals: Vec<Proposal>,
    chosen: Option<u64>,
) -> PersistRequest {
    PersistRequest { ticket, promise, proposals, chosen: chosen.map(Slot) }
}

/// One operation of the reference model.
#[derive(Clone, Debug)]
pub enum Op {
    Persist(PersistRequest),
    Truncate(Slot),
}

/// What a log holding `ops` (in order) means.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelState {
    pub promise: Ballot,
    pub chosen: Slot,
    pub floor: Slot,
    pub proposals: BTreeMap<u64, Proposal>,
}

impl ModelState {
    pub fn apply(&mut self, op: &Op) {
        match op {
            Op::Persist(request) => {
                if let Some(promise) = request.promise {
                    self.promise = self.promise.max(promise);
                }
                if let Some(chosen) = request.chosen {
                    self.chosen = self.chosen.max(chosen);
                }
                for proposal in &request.proposals {
                    if proposal.slot >= self.floor {
                        self.proposals.insert(proposal.slot.0, proposal.clone());
                    }
                }
            }
            Op::Truncate(below) => {
                self.floor = self.floor.max(*below);
                self.proposals = self.proposals.split_off(&self.floor.0);
            }
        }
    }

    pub fn durable_state(&self) -> DurableState {
        DurableState {
            promise: self.promise,
            proposals: self.proposals.values().cloned().collect(),
            chosen: self.chosen,
            checkpoint: Slot::ZERO,
            configuration: None,
        }
    }
}

/// The model of a log under crashes: every op in order, the state after each prefix, and
/// how many ops are known durable.
#[derive(Clone, Debug)]
pub struct Model {
    pub ops: Vec<Op>,
    pub states: Vec<DurableState>,
    /// The truncation floor after each prefix.
    pub floors: Vec<Slot>,
    current: ModelState,
    pub durable: usize,
    pub next_ticket: u64,
}

impl Default for Model {
    fn default() -> Self {
        Model {
            ops: Vec::new(),
            states: vec![DurableState::default()],
            floors: vec![Slot::ZERO],
            current: ModelState::default(),
            durable: 0,
            next_ticket: 1,
        }
    }
}

impl Model {
    pub fn push(&mut self, op: Op) {
        self.current.apply(&op);
        self.ops.push(op);
        self.states.push(self.current.durable_state());
        self.floors.push(self.current.floor);
    }

    pub fn current(&self) -> &ModelState {
        &self.current
    }

    /// Every op so far is durable.
    pub fn mark_durable(&mut self) {
        self.durable = self.ops.len();
    }

    /// The prefix lengths whose state equals `recovered`, among those a crash may leave
    /// (at least every durable op).
    pub fn matching_prefixes(&self, recovered: &DurableState) -> Vec<usize> {
        (self.durable..self.states.len()).filter(|&k| self.states[k] == *recovered).collect()
    }

    /// Like [`Model::matching_prefixes`], also matching the truncation floor.
    pub fn matching_prefixes_with_floor(&self, recovered: &DurableState, floor: Slot) -> Vec<usize> {
        self.matching_prefixes(recovered).into_iter().filter(|&k| self.floors[k] == floor).collect()
    }

    /// Restarts from the first `k` ops (after a crash recovered that prefix).
    pub fn restart_at(&mut self, k: usize) {
        let mut model = Model::default();
        for op in &self.ops[..k] {
            model.push(op.clone());
        }
        model.durable = k;
        *self = model;
    }

    /// A restart without a crash: buffered ops are lost, tickets restart.
    pub fn restart_clean(&mut self) {
        let k = self.durable;
        self.restart_at(k);
    }

    pub fn ticket(&mut self) -> u64 {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        ticket
    }
}

/// A random persist request over slots `1..=slot_max`.
pub fn random_request(rng: &mut SplitMix64, ticket: u64, slot_max: u64, payload_max: u64) -> PersistRequest {
    let promise = (rng.below(4) == 0).then(|| ballot(1 + rng.below(20), 1 + rng.below(3)));
    let chosen = (rng.below(4) == 0).then(|| Slot(rng.below(slot_max + 1)));
    let count = rng.below(4);
    let proposals = (0..count)
        .map(|_| batch(1 + rng.below(slot_max), 1 + rng.below(20), rng.below(payload_max + 1) as usize))
        .collect();
    PersistRequest { ticket, promise, proposals, chosen }
}

/// Something that can open (and reopen) one store.
pub trait Backend {
    fn name(&self) -> &'static str;
    fn open_with(&mut self, policy: RecoveryPolicy) -> (Box<dyn LogStore>, DurableState, RecoveryReport);
    fn open(&mut self) -> (Box<dyn LogStore>, DurableState, RecoveryReport) {
        self.open_with(RecoveryPolicy::TruncateTornTail)
    }
    /// Opening while another handle is open must fail with `Locked`.
    fn open_fails_locked(&mut self) -> bool;
}

pub struct MemoryBackend {
    disk: MemoryDisk,
}

impl MemoryBackend {
    pub fn new() -> MemoryBackend {
        MemoryBackend { disk: MemoryDisk::new() }
    }
}

impl Backend for MemoryBackend {
    fn name(&self) -> &'static str {
        "memory"
    }
    fn open_with(&mut self, policy: RecoveryPolicy) -> (Box<dyn LogStore>, DurableState, RecoveryReport) {
        let (log, state, report) = MemoryLog::open(&self.disk, policy).expect("open memory log");
        (Box::new(log), state, report)
    }
    fn open_fails_locked(&mut self) -> bool {
        matches!(MemoryLog::open(&self.disk, RecoveryPolicy::Strict), Err(rsl_log::LogError::Locked { .. }))
    }
}

pub struct JournalBackend {
    pub dir: tempfile::TempDir,
    pub options: JournalOptions,
}

impl JournalBackend {
    pub fn new() -> JournalBackend {
        JournalBackend {
            dir: scratch_dir(),
            options: JournalOptions { segment_bytes_max: 16 << 10, preallocate: true },
        }
    }
    pub fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Backend for JournalBackend {
    fn name(&self) -> &'static str {
        "journal"
    }
    fn open_with(&mut self, policy: RecoveryPolicy) -> (Box<dyn LogStore>, DurableState, RecoveryReport) {
        let (log, state, report) =
            FileJournal::open(self.dir.path(), &self.options, policy).expect("open journal");
        (Box::new(log), state, report)
    }
    fn open_fails_locked(&mut self) -> bool {
        matches!(
            FileJournal::open(self.dir.path(), &self.options, RecoveryPolicy::Strict),
            Err(rsl_log::LogError::Locked { .. })
        )
    }
}

pub struct SimJournalBackend {
    pub disk: SimDisk,
    pub options: JournalOptions,
}

impl SimJournalBackend {
    pub fn new() -> SimJournalBackend {
        SimJournalBackend {
            disk: SimDisk::new(),
            options: JournalOptions { segment_bytes_max: 4 << 10, preallocate: false },
        }
    }
}

impl Backend for SimJournalBackend {
    fn name(&self) -> &'static str {
        "sim-journal"
    }
    fn open_with(&mut self, policy: RecoveryPolicy) -> (Box<dyn LogStore>, DurableState, RecoveryReport) {
        let (log, state, report) =
            FileJournal::open_in(Box::new(self.disk.clone()), &self.options, policy).expect("open journal");
        (Box::new(log), state, report)
    }
    fn open_fails_locked(&mut self) -> bool {
        matches!(
            FileJournal::open_in(Box::new(self.disk.clone()), &self.options, RecoveryPolicy::Strict),
            Err(rsl_log::LogError::Locked { .. })
        )
    }
}

pub struct PmemBackend {
    pub dir: tempfile::TempDir,
    pub options: PmemOptions,
}

impl PmemBackend {
    /// Persisted with `msync`, as on a page-cache file system.
    pub fn new() -> PmemBackend {
        PmemBackend::with_flush(PmemFlush::Msync)
    }

    /// Persisted with cache-line write-back and fences where the CPU has them (x86_64), on
    /// the tmpfs scratch directory; `msync` elsewhere.
    pub fn cache_lines() -> PmemBackend {
        let flush = match rsl_log::detect_cache_line_flush() {
            Some(_) => PmemFlush::CacheLines,
            None => PmemFlush::Msync,
        };
        PmemBackend::with_flush(flush)
    }
    /// The log persisted with `flush`. The scratch directory is on tmpfs where there is one,
    /// so `CacheLines` exercises the DAX path there (tmpfs is not persistent memory: this
    /// checks behaviour, not durability).
    pub fn with_flush(flush: PmemFlush) -> PmemBackend {
        let mut backend = PmemBackend::with_capacity(1 << 20);
        backend.options.flush = flush;
        backend
    }

    pub fn with_capacity(capacity_bytes: u64) -> PmemBackend {
        PmemBackend { dir: scratch_dir(), options: PmemOptions { capacity_bytes, ..PmemOptions::default() } }
    }
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("log.pmem")
    }
}

impl Backend for PmemBackend {
    fn name(&self) -> &'static str {
        "pmem"
    }
    fn open_with(&mut self, policy: RecoveryPolicy) -> (Box<dyn LogStore>, DurableState, RecoveryReport) {
        let (log, state, report) = PmemLog::open(self.path(), &self.options, policy).expect("open pmem log");
        (Box::new(log), state, report)
    }
    fn open_fails_locked(&mut self) -> bool {
        matches!(
            PmemLog::open(self.path(), &self.options, RecoveryPolicy::Strict),
            Err(rsl_log::LogError::Locked { .. })
        )
    }
}

/// A persistent-memory log on simulated persistent memory. Reopening recovers from the
/// current contents (a process restart: everything written is still in memory).
pub struct SimPmemBackend {
    pub pmem: SimPmem,
    open: bool,
}

impl SimPmemBackend {
    pub fn new(len: u64) -> SimPmemBackend {
        let mut pmem = SimPmem::new(len);
        PmemLog::format(&mut pmem, 7).expect("format");
        SimPmemBackend { pmem, open: false }
    }
}

impl Backend for SimPmemBackend {
    fn name(&self) -> &'static str {
        "sim-pmem"
    }
    fn open_with(&mut self, policy: RecoveryPolicy) -> (Box<dyn LogStore>, DurableState, RecoveryReport) {
        // A restart persists nothing that was not fenced: start from the durable image.
        self.pmem = self.pmem.crash_states(1, 0).remove(0);
        self.open = true;
        let (log, state, report) =
            PmemLog::recover(Box::new(self.pmem.clone()), policy).expect("recover pmem log");
        (Box::new(log), state, report)
    }
    fn open_fails_locked(&mut self) -> bool {
        // The simulator has no lock: locking is the file's (tested on PmemBackend).
        true
    }
}
