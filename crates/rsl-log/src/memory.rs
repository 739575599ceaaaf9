//! An in-memory [`LogStore`]: nothing survives the process. For tests, examples and the
//! in-memory rings of `rsl_runtime::MemoryStorage`.
//!
//! A [`MemoryDisk`] plays the disk: it holds only what was flushed, survives dropping the
//! store, and can be reopened, so a test can "restart" a replica and see exactly the
//! durable state. Like the real stores it holds a lock: two open handles on one disk fail
//! with [`LogError::Locked`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use parking_lot::Mutex;
use rsl_core::{DurableState, PersistRequest, Proposal, Slot};

use crate::error::LogError;
use crate::state::Summary;
use crate::store::{LogStatistics, LogStore, ReadBudget, RecoveryPolicy, RecoveryReport, Tickets};
use crate::vfs::FlagLock;

#[derive(Debug, Default)]
struct DiskState {
    summary: Summary,
    proposals: BTreeMap<u64, Proposal>,
    opened: bool,
}

/// The durable side of a [`MemoryLog`]: cheap to clone, shared by every clone.
#[derive(Clone, Debug, Default)]
pub struct MemoryDisk {
    inner: Arc<Mutex<DiskState>>,
    lock: Arc<AtomicBool>,
}

impl MemoryDisk {
    /// An empty disk.
    pub fn new() -> MemoryDisk {
        MemoryDisk::default()
    }
}

#[derive(Debug)]
enum Pending {
    Persist(PersistRequest),
    Truncate(Slot),
}

/// An in-memory log store; see the module docs.
#[derive(Debug)]
pub struct MemoryLog {
    disk: MemoryDisk,
    _lock: FlagLock,
    /// Durable state plus everything buffered: what reads see.
    summary: Summary,
    proposals: BTreeMap<u64, Proposal>,
    pending: Vec<Pending>,
    tickets: Tickets,
    statistics: LogStatistics,
}

impl MemoryLog {
    /// Opens (and locks) `disk`, returning the store, the durable state and a report.
    /// The policy is accepted for symmetry with the other stores: memory is never torn.
    pub fn open(
        disk: &MemoryDisk,
        _policy: RecoveryPolicy,
    ) -> Result<(MemoryLog, DurableState, RecoveryReport), LogError> {
        let lock = FlagLock::try_take(&disk.lock)
            .ok_or_else(|| LogError::Locked { dir: PathBuf::from("<memory>") })?;
        let mut state = disk.inner.lock();
        let created = !state.opened;
        state.opened = true;
        let durable = DurableState {
            promise: state.summary.promise,
            proposals: state.proposals.values().cloned().collect(),
            chosen: state.summary.chosen,
            checkpoint: Slot::ZERO,
            configuration: None,
        };
        let report = RecoveryReport {
            records: state.proposals.len() as u64,
            files: 1,
            log_start: state.summary.floor,
            created,
            ..RecoveryReport::default()
        };
        let log = MemoryLog {
            disk: disk.clone(),
            _lock: lock,
            summary: state.summary,
            proposals: state.proposals.clone(),
            pending: Vec::new(),
            tickets: Tickets::default(),
            statistics: LogStatistics::default(),
        };
        Ok((log, durable, report))
    }

    /// A store on a fresh disk.
    pub fn new() -> MemoryLog {
        MemoryLog::open(&MemoryDisk::new(), RecoveryPolicy::Strict).expect("a fresh disk is unlocked").0
    }

    /// The disk this store writes to.
    pub fn disk(&self) -> &MemoryDisk {
        &self.disk
    }
}

impl Default for MemoryLog {
    fn default() -> Self {
        MemoryLog::new()
    }
}

fn apply(summary: &mut Summary, proposals: &mut BTreeMap<u64, Proposal>, pending: &Pending) {
    match pending {
        Pending::Persist(request) => {
            summary.observe(request.promise, request.chosen, None);
            for proposal in &request.proposals {
                if proposal.slot >= summary.floor {
                    proposals.insert(proposal.slot.0, proposal.clone());
                }
            }
        }
        Pending::Truncate(below) => {
            summary.observe(None, None, Some(*below));
            *proposals = proposals.split_off(&summary.floor.0);
        }
    }
}

impl LogStore for MemoryLog {
    fn append(&mut self, request: &PersistRequest) -> Result<(), LogError> {
        self.tickets.admit(request.ticket)?;
        self.tickets.appended = request.ticket;
        self.statistics.appends += 1;
        if request.is_empty() {
            return Ok(());
        }
        let pending = Pending::Persist(request.clone());
        apply(&mut self.summary, &mut self.proposals, &pending);
        self.pending.push(pending);
        Ok(())
    }

    fn truncate_below(&mut self, below: Slot) -> Result<(), LogError> {
        self.tickets.check_usable()?;
        if below <= self.summary.floor {
            return Ok(());
        }
        let pending = Pending::Truncate(below);
        apply(&mut self.summary, &mut self.proposals, &pending);
        self.pending.push(pending);
        Ok(())
    }

    fn flush(&mut self) -> Result<u64, LogError> {
        self.tickets.check_usable()?;
        if !self.pending.is_empty() {
            let mut disk = self.disk.inner.lock();
            let DiskState { summary, proposals, .. } = &mut *disk;
            for pending in self.pending.drain(..) {
                apply(summary, proposals, &pending);
                self.statistics.records += 1;
            }
            self.statistics.flushes += 1;
            self.statistics.syncs += 1;
        }
        Ok(self.tickets.flushed())
    }

    fn needs_flush(&self) -> bool {
        !self.pending.is_empty() || self.tickets.unflushed()
    }

    fn durable_ticket(&self) -> u64 {
        self.tickets.durable
    }

    fn appended_ticket(&self) -> u64 {
        self.tickets.appended
    }

    fn read_range(&mut self, first: Slot, last: Slot, bytes_max: u64) -> Result<Vec<Proposal>, LogError> {
        self.tickets.check_usable()?;
        if first > last {
            return Ok(Vec::new());
        }
        let mut budget = ReadBudget::new(bytes_max);
        let within = self.proposals.range(first.0..=last.0).map(|(_, p)| p).take_while(|p| budget.admits(p));
        Ok(within.cloned().collect())
    }

    fn log_start(&self) -> Slot {
        self.summary.floor
    }

    fn last_slot(&self) -> Slot {
        self.proposals.keys().next_back().map_or(Slot::ZERO, |&slot| Slot(slot))
    }

    fn statistics(&self) -> LogStatistics {
        self.statistics
    }
}
