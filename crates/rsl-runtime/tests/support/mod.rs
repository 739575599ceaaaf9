//! Test support for the runtime's integration tests: a state machine that records every
//! call the runtime makes and can be made to block, veto, refuse or fail on demand
//! ([`Probe`]); a log store that fails or holds its syncs on demand ([`GatedLog`]); and
//! rings of one or three replicas on the in-memory network. Every wait is on a condition,
//! bounded by [`WAIT`].

#![allow(dead_code)]

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rsl_core::{Ballot, Config, Configuration, NodeId, PersistRequest, Proposal, RingId, Role, Slot, Status};
use rsl_log::vfs::MemoryDirectory;
use rsl_log::{
    CheckpointOptions, CheckpointStore, LogError, LogStatistics, LogStore, MemoryDisk, MemoryLog,
    RecoveryPolicy,
};
use rsl_runtime::{
    LocalCheckpointNetwork, MemoryStorage, Ring, RingOptions, RoleChange, Runtime, RuntimeOptions,
    StateMachine, Storage,
};
use rsl_transport::MemoryNetwork;
use tokio::sync::watch;

/// How long any awaited condition may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// The ring every test runs.
pub const RING: RingId = RingId(1);

/// One call the runtime made on a [`Probe`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    Execute(Slot, Vec<u8>),
    AllowSave(Slot),
    Save(Slot),
    Saved(Slot, u64),
    Copied(Slot, NodeId, bool),
    Load(Slot),
    Role(RoleChange),
    Configuration(Slot, Vec<NodeId>),
    Recovered(Ballot, Slot),
    ShutDown,
}

/// What a test controls and observes of a [`Probe`], shared with it.
#[derive(Debug)]
pub struct Controls {
    calls: watch::Sender<Vec<Call>>,
    /// `can_become_primary` answers the opposite.
    pub veto: AtomicBool,
    /// Times `can_become_primary` was asked.
    polls: watch::Sender<u64>,
    /// `allow_save` answers the opposite.
    pub refuse_save: AtomicBool,
    /// `save_checkpoint` fails.
    pub fail_save: AtomicBool,
    /// `load_checkpoint` fails.
    pub fail_load: AtomicBool,
    /// `execute` panics on this request.
    pub panic_on: Mutex<Option<Vec<u8>>>,
    /// `execute` blocks while this is true.
    held: Mutex<bool>,
    released: Condvar,
}

impl Controls {
    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.borrow().clone()
    }

    /// The requests executed so far, in order.
    pub fn executed(&self) -> Vec<Vec<u8>> {
        self.calls()
            .into_iter()
            .filter_map(|call| match call {
                Call::Execute(_, request) => Some(request),
                _ => None,
            })
            .collect()
    }

    /// Waits until the calls satisfy `condition`; returns them then.
    pub async fn until(&self, what: &str, condition: impl Fn(&[Call]) -> bool) -> Vec<Call> {
        let mut calls = self.calls.subscribe();
        let reached = tokio::time::timeout(WAIT, calls.wait_for(|calls| condition(calls))).await;
        match reached {
            Ok(Ok(calls)) => calls.clone(),
            _ => panic!("{what} within the time limit; calls: {:?}", self.calls()),
        }
    }

    /// Waits until `can_become_primary` was asked at least `count` times.
    pub async fn polled(&self, count: u64) {
        let mut polls = self.polls.subscribe();
        let reached = tokio::time::timeout(WAIT, polls.wait_for(|polls| *polls >= count)).await;
        assert!(matches!(reached, Ok(Ok(_))), "polled {count} times within the time limit");
    }

    /// `execute` blocks from now on, until [`Controls::release`] or until the guard is
    /// dropped (so that a failing test does not leave the apply thread blocked).
    #[must_use]
    pub fn hold(self: &Arc<Self>) -> Held {
        *self.held.lock().unwrap() = true;
        let controls = self.clone();
        Held(Box::new(move || controls.release()))
    }

    /// Times `can_become_primary` was asked so far.
    pub fn polls(&self) -> u64 {
        *self.polls.borrow()
    }

    /// `execute` runs again.
    pub fn release(&self) {
        *self.held.lock().unwrap() = false;
        self.released.notify_all();
    }

    fn record(&self, call: Call) {
        self.calls.send_modify(|calls| calls.push(call));
    }
}

/// A state machine that counts its requests, echoes each back, and records every call.
/// Reads answer the number of requests executed (8 bytes, little-endian); a checkpoint is
/// that number.
#[derive(Debug)]
pub struct Probe {
    pub count: u64,
    pub controls: Arc<Controls>,
}

impl Probe {
    pub fn new() -> (Probe, Arc<Controls>) {
        let controls = Arc::new(Controls {
            calls: watch::Sender::new(Vec::new()),
            veto: AtomicBool::new(false),
            polls: watch::Sender::new(0),
            refuse_save: AtomicBool::new(false),
            fail_save: AtomicBool::new(false),
            fail_load: AtomicBool::new(false),
            panic_on: Mutex::new(None),
            held: Mutex::new(false),
            released: Condvar::new(),
        });
        (Probe { count: 0, controls: controls.clone() }, controls)
    }
}

/// The number a read of a [`Probe`] answers.
pub fn count(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes.try_into().expect("an 8-byte count"))
}

impl StateMachine for Probe {
    fn execute(&mut self, slot: Slot, request: &[u8]) -> Bytes {
        let mut held = self.controls.held.lock().unwrap();
        while *held {
            held = self.controls.released.wait(held).unwrap();
        }
        drop(held);
        if self.controls.panic_on.lock().unwrap().as_deref() == Some(request) {
            panic!("the probe was told to panic on {request:?}");
        }
        self.count += 1;
        self.controls.record(Call::Execute(slot, request.to_vec()));
        Bytes::copy_from_slice(request)
    }

    fn read(&self, _request: &[u8]) -> Bytes {
        Bytes::copy_from_slice(&self.count.to_le_bytes())
    }

    fn allow_save(&mut self, slot: Slot) -> bool {
        self.controls.record(Call::AllowSave(slot));
        !self.controls.refuse_save.load(Ordering::SeqCst)
    }

    fn save_checkpoint(&self, slot: Slot, writer: &mut dyn Write) -> std::io::Result<()> {
        self.controls.record(Call::Save(slot));
        if self.controls.fail_save.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("the probe's disk is on fire"));
        }
        writer.write_all(&self.count.to_le_bytes())
    }

    fn checkpoint_saved(&mut self, slot: Slot, data_bytes: u64) {
        self.controls.record(Call::Saved(slot, data_bytes));
    }

    fn checkpoint_copied(&mut self, slot: Slot, from: NodeId, loaded: bool) {
        self.controls.record(Call::Copied(slot, from, loaded));
    }

    fn load_checkpoint(&mut self, slot: Slot, reader: &mut dyn Read) -> std::io::Result<()> {
        self.controls.record(Call::Load(slot));
        if self.controls.fail_load.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("the probe cannot read its checkpoint"));
        }
        let mut bytes = [0; 8];
        reader.read_exact(&mut bytes)?;
        self.count = u64::from_le_bytes(bytes);
        Ok(())
    }

    fn role_changed(&mut self, change: &RoleChange) {
        self.controls.record(Call::Role(*change));
    }

    fn configuration_changed(&mut self, slot: Slot, configuration: &Configuration) {
        self.controls.record(Call::Configuration(slot, configuration.members.clone()));
    }

    fn primary_recovered(&mut self, ballot: Ballot, slot: Slot) {
        self.controls.record(Call::Recovered(ballot, slot));
    }

    fn shut_down(&mut self) {
        self.controls.record(Call::ShutDown);
    }

    fn can_become_primary(&mut self) -> bool {
        self.controls.polls.send_modify(|polls| *polls += 1);
        !self.controls.veto.load(Ordering::SeqCst)
    }
}

/// Releases what a `hold` held when dropped.
pub struct Held(Box<dyn Fn() + Send + Sync>);

impl Drop for Held {
    fn drop(&mut self) {
        (self.0)();
    }
}

/// What a test controls of a [`GatedLog`].
#[derive(Debug, Default)]
pub struct StoreGate {
    /// `append` fails.
    pub fail_append: AtomicBool,
    /// `flush` fails.
    pub fail_flush: AtomicBool,
    /// `truncate_below` fails.
    pub fail_truncate: AtomicBool,
    /// Appends seen.
    pub appends: AtomicU64,
    /// Truncations seen (the highest bound asked for).
    pub truncated_below: AtomicU64,
    held: Mutex<bool>,
    released: Condvar,
}

impl StoreGate {
    /// `flush` blocks from now on, until [`StoreGate::release`] or until the guard is
    /// dropped (so that a failing test does not leave the committer thread blocked).
    #[must_use]
    pub fn hold(self: &Arc<Self>) -> Held {
        *self.held.lock().unwrap() = true;
        let gate = self.clone();
        Held(Box::new(move || gate.release()))
    }

    /// `flush` runs again.
    pub fn release(&self) {
        *self.held.lock().unwrap() = false;
        self.released.notify_all();
    }
}

/// A [`MemoryLog`] whose operations fail, or whose syncs wait, when the test says so: a
/// disk that fills up, dies, or is slow.
#[derive(Debug)]
pub struct GatedLog {
    inner: MemoryLog,
    gate: Arc<StoreGate>,
}

fn injected(what: &str) -> LogError {
    LogError::Io { path: "<gated>".into(), source: std::io::Error::other(format!("injected {what} failure")) }
}

impl LogStore for GatedLog {
    fn append(&mut self, request: &PersistRequest) -> Result<(), LogError> {
        self.gate.appends.fetch_add(1, Ordering::SeqCst);
        if self.gate.fail_append.load(Ordering::SeqCst) {
            return Err(injected("append"));
        }
        self.inner.append(request)
    }

    fn truncate_below(&mut self, below: Slot) -> Result<(), LogError> {
        self.gate.truncated_below.fetch_max(below.0, Ordering::SeqCst);
        if self.gate.fail_truncate.load(Ordering::SeqCst) {
            return Err(injected("truncate"));
        }
        self.inner.truncate_below(below)
    }

    fn flush(&mut self) -> Result<u64, LogError> {
        let mut held = self.gate.held.lock().unwrap();
        while *held {
            held = self.gate.released.wait(held).unwrap();
        }
        drop(held);
        if self.gate.fail_flush.load(Ordering::SeqCst) {
            return Err(injected("flush"));
        }
        self.inner.flush()
    }

    fn needs_flush(&self) -> bool {
        self.inner.needs_flush()
    }

    fn durable_ticket(&self) -> u64 {
        self.inner.durable_ticket()
    }

    fn appended_ticket(&self) -> u64 {
        self.inner.appended_ticket()
    }

    fn read_range(&mut self, first: Slot, last: Slot, bytes_max: u64) -> Result<Vec<Proposal>, LogError> {
        self.inner.read_range(first, last, bytes_max)
    }

    fn log_start(&self) -> Slot {
        self.inner.log_start()
    }

    fn last_slot(&self) -> Slot {
        self.inner.last_slot()
    }

    fn statistics(&self) -> LogStatistics {
        self.inner.statistics()
    }
}

/// A storage opened by the test: a [`GatedLog`] over `disk`, checkpoints in memory.
pub fn gated(disk: &MemoryDisk, gate: &Arc<StoreGate>) -> Storage {
    let (log, durable, _) = MemoryLog::open(disk, RecoveryPolicy::TruncateTornTail).expect("open the log");
    let checkpoints =
        CheckpointStore::open_in(Box::new(MemoryDirectory::new()), &CheckpointOptions::default())
            .expect("open the checkpoints");
    Storage::Opened { log: Box::new(GatedLog { inner: log, gate: gate.clone() }), durable, checkpoints }
}

/// A configuration with timers short enough for tests.
pub fn config(node: u64, members: &[u64]) -> Config {
    let mut config = Config::new(RING, NodeId(node), members.iter().copied().map(NodeId).collect());
    config.heartbeat_interval_ms = 10;
    config.election_delay_min_ms = 50;
    config.election_delay_max_ms = 120;
    config
}

/// Options with short timeouts, so that a test of a timeout does not take long.
pub fn quick_options() -> RingOptions {
    RingOptions {
        request_timeout: Duration::from_millis(400),
        read_timeout: Duration::from_millis(300),
        ..RingOptions::default()
    }
}

/// Waits until `ring`'s status satisfies `condition`; returns it then.
pub async fn status_until(ring: &Ring, what: &str, condition: impl Fn(&Status) -> bool) -> Status {
    let mut status = ring.status();
    let reached = tokio::time::timeout(WAIT, status.wait_for(|s| condition(s))).await;
    match reached {
        Ok(Ok(status)) => status.clone(),
        _ => panic!("{}: {what} within the time limit; status {:?}", ring.node(), *ring.status().borrow()),
    }
}

/// Waits until `ring` is primary.
pub async fn primary(ring: &Ring) -> Status {
    status_until(ring, "primary", |s| s.role == Role::Primary).await
}

/// A lone replica of a one-member ring, in a runtime of its own.
pub struct Solo {
    pub ring: Ring,
    pub probe: Arc<Controls>,
}

/// Starts a lone replica on `storage` with `config` and `options`, and waits until it is
/// primary.
pub async fn solo_with(config: Config, options: RingOptions, storage: Storage) -> Solo {
    let solo = solo_started(config, options, storage).await;
    primary(&solo.ring).await;
    solo
}

/// Starts a lone replica without waiting for anything.
pub async fn solo_started(config: Config, options: RingOptions, storage: Storage) -> Solo {
    let (probe, controls) = Probe::new();
    let node = config.node;
    let network = MemoryNetwork::new(1);
    let (endpoint, inbound) = network.endpoint(node).expect("attach");
    let ring = Ring::builder(config)
        .state_machine(probe)
        .storage(storage)
        .transport(Arc::new(endpoint), inbound, RuntimeOptions::default())
        .options(options)
        .start()
        .await
        .expect("start");
    Solo { ring, probe: controls }
}

/// A lone primary on memory storage with the quick options.
pub async fn solo() -> Solo {
    solo_with(config(1, &[1]), quick_options(), MemoryStorage::new().into()).await
}

/// A lone primary on a [`GatedLog`], with the quick options adjusted by `adjust`.
pub async fn solo_gated(adjust: impl FnOnce(&mut Config, &mut RingOptions)) -> (Solo, Arc<StoreGate>) {
    let gate = Arc::new(StoreGate::default());
    let (mut config, mut options) = (config(1, &[1]), quick_options());
    adjust(&mut config, &mut options);
    let solo = solo_with(config, options, gated(&MemoryDisk::new(), &gate)).await;
    (solo, gate)
}

/// A lone primary that was shut down.
pub async fn stopped() -> Ring {
    let solo = solo().await;
    solo.ring.shutdown().await;
    assert!(solo.ring.is_stopped());
    solo.ring
}

/// Three replicas of one ring on three runtimes over one in-memory network.
pub struct Trio {
    pub network: MemoryNetwork,
    pub runtimes: Vec<Runtime>,
    pub rings: Vec<Ring>,
    pub probes: Vec<Arc<Controls>>,
}

impl Trio {
    /// Starts nodes 1, 2 and 3 with memory storage and the quick options; `adjust` may
    /// change each node's configuration.
    pub async fn start(adjust: impl Fn(&mut Config)) -> Trio {
        let network = MemoryNetwork::new(7);
        let checkpoints = LocalCheckpointNetwork::new();
        let (mut runtimes, mut rings, mut probes) = (Vec::new(), Vec::new(), Vec::new());
        for node in 1..=3 {
            let (endpoint, inbound) = network.endpoint(NodeId(node)).expect("attach");
            let runtime =
                Runtime::new(Arc::new(endpoint), inbound, RuntimeOptions::default()).expect("runtime");
            checkpoints.join(&runtime);
            let mut config = config(node, &[1, 2, 3]);
            adjust(&mut config);
            let (probe, controls) = Probe::new();
            let ring = Ring::builder(config)
                .state_machine(probe)
                .storage(MemoryStorage::new())
                .runtime(&runtime)
                .options(quick_options())
                .start()
                .await
                .expect("start");
            runtimes.push(runtime);
            rings.push(ring);
            probes.push(controls);
        }
        Trio { network, runtimes, rings, probes }
    }

    /// Waits until one replica is primary and every other follows it; returns its index.
    pub async fn primary(&self) -> usize {
        let mut statuses: Vec<_> = self.rings.iter().map(Ring::status).collect();
        let settled = async {
            loop {
                let seen: Vec<Status> = statuses.iter_mut().map(|s| s.borrow_and_update().clone()).collect();
                if let Some(at) = seen.iter().position(|s| s.role == Role::Primary) {
                    let node = self.rings[at].node();
                    if seen.iter().all(|s| s.primary == Some(node)) {
                        return at;
                    }
                }
                let (first, rest) = statuses.split_at_mut(1);
                let (second, third) = rest.split_at_mut(1);
                tokio::select! {
                    _ = first[0].changed() => {}
                    _ = second[0].changed() => {}
                    _ = third[0].changed() => {}
                }
            }
        };
        tokio::time::timeout(WAIT, settled).await.expect("a primary every replica follows")
    }

    /// The index of a replica other than `at`.
    pub fn other(&self, at: usize) -> usize {
        (at + 1) % self.rings.len()
    }

    pub async fn shutdown(&self) {
        for runtime in &self.runtimes {
            runtime.shutdown().await;
        }
    }
}
