//! The one interface the runtime persists through, [`LogStore`], and what recovery reports.
//!
//! The model is group commit driven by one thread: [`LogStore::append`] only buffers (no
//! I/O), [`LogStore::flush`] writes everything buffered and makes it durable with a single
//! sync, then reports "durable through ticket T". A dedicated thread calling `flush` in a
//! loop while producers keep appending gets many appends per sync; [`crate::GroupCommitter`]
//! is that thread.
//!
//! Tickets are the core's persist tickets ([`rsl_core::PersistRequest::ticket`]): they
//! increase within one process lifetime and restart at 1 in the next, so they are never
//! stored. After a restart a store reports `durable_ticket() == 0` until its first flush.

use std::fmt;
use std::path::PathBuf;

use rsl_core::{PersistRequest, Proposal, Slot};

use crate::error::LogError;

/// What recovery does with damaged bytes. The choice is explicit: no store guesses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RecoveryPolicy {
    /// Refuse to open if anything is out of place, even a tail torn by a crash. For
    /// inspection, and after a clean shutdown.
    Strict,
    /// Cut a torn tail (the unsynced last write, partial or zeroed) and report it in
    /// [`RecoveryReport::torn_tail`]; any other damage is a [`LogError::Corrupt`] that
    /// names the file and offset. Nothing acknowledged is lost: a write is only
    /// acknowledged after the sync that makes it whole.
    #[default]
    TruncateTornTail,
    /// Keep the longest valid prefix: cut at the first damaged record wherever it is and
    /// set aside everything after it, reporting it in [`RecoveryReport::salvaged`].
    /// This can drop acknowledged promises and accepts, which Paxos relies on: use it only
    /// for a replica that will rejoin as a new member and be rebuilt from its peers.
    SalvagePrefix,
}

/// Bytes recovery cut off, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cut {
    /// The file cut.
    pub file: PathBuf,
    /// Where the cut starts (the first byte not kept).
    pub offset: u64,
    /// How many bytes were dropped from `file` (not counting files set aside).
    pub bytes_dropped: u64,
    /// What was found at `offset`.
    pub reason: String,
}

/// What recovery found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Records replayed.
    pub records: u64,
    /// Files (segments) or regions read.
    pub files: u64,
    /// Bytes of valid records read.
    pub bytes: u64,
    /// A torn tail cut under [`RecoveryPolicy::TruncateTornTail`] (or
    /// [`RecoveryPolicy::SalvagePrefix`]).
    pub torn_tail: Option<Cut>,
    /// Damage cut under [`RecoveryPolicy::SalvagePrefix`].
    pub salvaged: Option<Cut>,
    /// Whole files renamed aside (suffix `.damaged`) by [`RecoveryPolicy::SalvagePrefix`].
    pub set_aside: Vec<PathBuf>,
    /// Leftover temporary files (an interrupted segment creation) that were deleted.
    pub removed_temporary: Vec<PathBuf>,
    /// Files in the log directory that are not part of the log and were left alone.
    pub ignored: Vec<PathBuf>,
    /// The first slot the log holds (proposals below were truncated).
    pub log_start: Slot,
    /// The store was created by this open (nothing existed).
    pub created: bool,
}

/// Counters of a store, monotonically increasing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogStatistics {
    /// Requests appended.
    pub appends: u64,
    /// Records written (requests that wrote something, truncations, snapshots).
    pub records: u64,
    /// Bytes written, framing included.
    pub bytes_written: u64,
    /// Flushes that made something durable.
    pub flushes: u64,
    /// Device syncs issued (fdatasync, msync, or a persistence fence).
    pub syncs: u64,
    /// Storage containers reclaimed (segments deleted, entries dropped from the head).
    pub reclaimed: u64,
}

/// A durable log of promises and accepted proposals with group commit.
///
/// Call order: open the store through its backend's `open`, which recovers it and returns
/// the [`rsl_core::DurableState`] to build the replica from; then any interleaving of
/// [`append`](LogStore::append), [`truncate_below`](LogStore::truncate_below) and
/// [`read_range`](LogStore::read_range), with [`flush`](LogStore::flush) whenever the
/// caller wants durability. A failed append or flush poisons the store: every later call
/// fails with [`LogError::Poisoned`], and the only way on is to reopen it, which recovers
/// exactly what is durable.
pub trait LogStore: Send + fmt::Debug {
    /// Buffers `request` for the next flush and returns at once (no I/O). Its ticket must
    /// be greater than every ticket appended before in this process.
    fn append(&mut self, request: &PersistRequest) -> Result<(), LogError>;

    /// Proposals below `below` are no longer needed: they stop being returned at once,
    /// the truncation becomes durable with the next flush, and space is reclaimed after
    /// it. The floor never moves down.
    fn truncate_below(&mut self, below: Slot) -> Result<(), LogError>;

    /// Writes everything buffered and makes it durable with one sync (none when nothing is
    /// buffered). Returns the highest durable ticket: every request up to it is durable.
    fn flush(&mut self) -> Result<u64, LogError>;

    /// Whether anything appended or truncated is not yet durable.
    fn needs_flush(&self) -> bool;

    /// The highest ticket known durable in this process (0 before the first flush).
    fn durable_ticket(&self) -> u64;

    /// The highest ticket appended in this process (0 before the first append).
    fn appended_ticket(&self) -> u64;

    /// The latest proposal of each slot in `first..=last` that the log holds (durable or
    /// buffered), in slot order, skipping holes. Stops before exceeding `bytes_max`
    /// encoded bytes, but always returns at least one proposal when there is one.
    fn read_range(&mut self, first: Slot, last: Slot, bytes_max: u64) -> Result<Vec<Proposal>, LogError>;

    /// The first slot the log holds: proposals below it were truncated.
    fn log_start(&self) -> Slot;

    /// The highest slot holding a proposal, or zero.
    fn last_slot(&self) -> Slot;

    /// Counters.
    fn statistics(&self) -> LogStatistics;

    /// The largest encoded record payload [`append`](LogStore::append) takes (one
    /// `PersistRequest`); a larger one is [`LogError::TooLarge`] and poisons the store. The
    /// runtime checks at start that a request of `request_bytes_max` fits. Unbounded unless
    /// the medium says otherwise.
    fn record_bytes_max(&self) -> u64 {
        u64::MAX
    }
}

impl LogStore for Box<dyn LogStore> {
    fn append(&mut self, request: &PersistRequest) -> Result<(), LogError> {
        (**self).append(request)
    }
    fn truncate_below(&mut self, below: Slot) -> Result<(), LogError> {
        (**self).truncate_below(below)
    }
    fn flush(&mut self) -> Result<u64, LogError> {
        (**self).flush()
    }
    fn needs_flush(&self) -> bool {
        (**self).needs_flush()
    }
    fn durable_ticket(&self) -> u64 {
        (**self).durable_ticket()
    }
    fn appended_ticket(&self) -> u64 {
        (**self).appended_ticket()
    }
    fn read_range(&mut self, first: Slot, last: Slot, bytes_max: u64) -> Result<Vec<Proposal>, LogError> {
        (**self).read_range(first, last, bytes_max)
    }
    fn log_start(&self) -> Slot {
        (**self).log_start()
    }
    fn last_slot(&self) -> Slot {
        (**self).last_slot()
    }
    fn statistics(&self) -> LogStatistics {
        (**self).statistics()
    }
    fn record_bytes_max(&self) -> u64 {
        (**self).record_bytes_max()
    }
}

/// Ticket bookkeeping shared by the stores: order check and poisoning.
#[derive(Debug, Default)]
pub(crate) struct Tickets {
    pub appended: u64,
    pub durable: u64,
    pub poisoned: Option<String>,
}

impl Tickets {
    pub fn check_usable(&self) -> Result<(), LogError> {
        match &self.poisoned {
            Some(reason) => Err(LogError::Poisoned { reason: reason.clone() }),
            None => Ok(()),
        }
    }

    /// Checks that `ticket` may follow; a refused ticket poisons the store because the
    /// caller would otherwise read a later durable ticket as covering it.
    pub fn admit(&mut self, ticket: u64) -> Result<(), LogError> {
        self.check_usable()?;
        if ticket <= self.appended {
            let error = LogError::TicketOrder { last: self.appended, found: ticket };
            self.poisoned = Some(error.to_string());
            return Err(error);
        }
        Ok(())
    }

    /// Whether a ticket appended is not yet reported durable.
    pub fn unflushed(&self) -> bool {
        self.durable < self.appended
    }

    /// A flush made everything appended durable; returns the durable ticket.
    pub fn flushed(&mut self) -> u64 {
        self.durable = self.appended;
        self.durable
    }

    /// Poisons the store with `error` and returns it.
    pub fn poison(&mut self, error: LogError) -> LogError {
        if self.poisoned.is_none() {
            self.poisoned = Some(error.to_string());
        }
        error
    }
}

/// The byte budget of [`LogStore::read_range`]: proposals are taken in slot order until the
/// next one would take the encoded total past `bytes_max`, but the first is always taken.
#[derive(Debug)]
pub(crate) struct ReadBudget {
    bytes_max: u64,
    total: u64,
    taken: bool,
}

impl ReadBudget {
    pub fn new(bytes_max: u64) -> ReadBudget {
        ReadBudget { bytes_max, total: 0, taken: false }
    }

    /// Whether `proposal` is still within the budget; it is counted when it is.
    pub fn admits(&mut self, proposal: &Proposal) -> bool {
        self.total += crate::codec::proposal_encoded_bytes(proposal);
        if self.taken && self.total > self.bytes_max {
            return false;
        }
        self.taken = true;
        true
    }
}
