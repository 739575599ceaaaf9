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

#[cfg(test)]
mod tests {
    use rsl_core::{Ballot, NodeId, Value};

    use super::*;

    /// A request with `ticket` writing a no-op at each of `slots` at ballot 1.1.
    fn request(ticket: u64, slots: &[u64]) -> PersistRequest {
        let ballot = Ballot::new(1, NodeId(1));
        PersistRequest {
            ticket,
            promise: None,
            proposals: slots
                .iter()
                .map(|&slot| Proposal { ballot, slot: Slot(slot), value: Value::Noop })
                .collect(),
            chosen: None,
        }
    }

    fn slots(proposals: &[Proposal]) -> Vec<u64> {
        proposals.iter().map(|p| p.slot.0).collect()
    }

    #[test]
    fn tickets_are_durable_only_once_flushed_and_reads_see_what_is_buffered() {
        let mut log = MemoryLog::default();
        log.append(&request(1, &[1, 2])).unwrap();
        log.append(&request(2, &[3])).unwrap();
        assert_eq!((log.appended_ticket(), log.durable_ticket()), (2, 0));
        assert!(log.needs_flush());
        assert_eq!(slots(&log.read_range(Slot(2), Slot(9), u64::MAX).unwrap()), vec![2, 3]);
        assert_eq!(log.last_slot(), Slot(3));
        assert!(log.disk().inner.lock().proposals.is_empty(), "nothing reached the disk yet");
        assert_eq!(log.flush().unwrap(), 2);
        assert_eq!(log.durable_ticket(), 2);
        assert!(!log.needs_flush());
        assert_eq!(log.disk().inner.lock().proposals.len(), 3);
        assert_eq!(log.record_bytes_max(), u64::MAX, "memory takes a record of any size");
    }

    #[test]
    fn reads_of_an_empty_range_or_past_the_budget_stop_early() {
        let mut log = MemoryLog::new();
        log.append(&request(1, &[1, 2, 3])).unwrap();
        assert!(log.read_range(Slot(3), Slot(2), u64::MAX).unwrap().is_empty());
        assert_eq!(slots(&log.read_range(Slot(1), Slot(3), 1).unwrap()), vec![1], "at least one is served");
    }

    #[test]
    fn truncation_moves_the_log_start_and_survives_a_reopen_once_flushed() {
        let disk = MemoryDisk::new();
        let (mut log, _, _) = MemoryLog::open(&disk, RecoveryPolicy::Strict).unwrap();
        log.append(&request(1, &[1, 2, 3, 4])).unwrap();
        log.truncate_below(Slot(3)).unwrap();
        assert_eq!(log.log_start(), Slot(3));
        log.truncate_below(Slot(2)).unwrap();
        assert_eq!(log.log_start(), Slot(3), "a truncation never goes back");
        assert_eq!(slots(&log.read_range(Slot(1), Slot(9), u64::MAX).unwrap()), vec![3, 4]);
        // A proposal below the start, arriving late, is not kept.
        log.append(&request(2, &[2])).unwrap();
        assert_eq!(slots(&log.read_range(Slot(1), Slot(9), u64::MAX).unwrap()), vec![3, 4]);
        log.flush().unwrap();
        drop(log);
        let (log, state, _) = MemoryLog::open(&disk, RecoveryPolicy::Strict).unwrap();
        assert_eq!(log.log_start(), Slot(3));
        assert_eq!(slots(&state.proposals), vec![3, 4]);
    }
}
