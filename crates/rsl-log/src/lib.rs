//! `rsl-log`: durable storage for rsl replicas.
//!
//! A replica ([`rsl_core::Replica`]) asks its runtime to persist promises, accepted
//! proposals and chosen hints ([`rsl_core::PersistRequest`]), each with a ticket, and must
//! hear "durable through ticket T" before it releases the messages that depend on them.
//! This crate provides:
//!
//! - [`LogStore`], the one interface for that, with group commit: `append` only buffers,
//!   `flush` writes everything buffered with a single sync and returns the highest durable
//!   ticket. Backends: [`FileJournal`] (segmented files, CRC32C-framed records, one
//!   `fdatasync` per flush), [`PmemLog`] (a circular log in mapped persistent memory with
//!   the layout of the verified log from "PoWER Never Corrupts") and [`MemoryLog`]
//!   (nothing survives the process: tests, examples and in-memory rings). Opening a store recovers it under an explicit [`RecoveryPolicy`] and returns
//!   the [`rsl_core::DurableState`] to rebuild the replica from, plus a [`RecoveryReport`].
//! - [`GroupCommitter`], a thread that owns a store and turns appends from many producers
//!   into one sync per round, fed through [`handoff`], a queue whose receiving thread
//!   sleeps at once when idle (no spinning or yielding) and is woken once per hand-off.
//! - [`CheckpointStore`], block-checksummed state-machine checkpoints published atomically,
//!   loaded newest-valid-first, streamable in chunks.
//! - [`vfs`], the file operations the journal and the checkpoints need, on the operating
//!   system's directories or in memory ([`vfs::MemoryDirectory`]).
//! - Offline inspection, for tools that read a stopped replica's files without changing
//!   them: dry-run recovery ([`FileJournal::check`], [`PmemLog::check`]: the decisions
//!   opening would make, reported, nothing written), read-only scans of every record with
//!   its file and offset ([`journal::scan_segment`], [`pmem::scan`]) and of checkpoint
//!   files ([`checkpoint::inspect_file`]). Files of a newer format version are refused
//!   under every policy ([`LogError::UnsupportedVersion`]).
//! - `sim` (cargo feature `sim`, test support that no shipped build enables), crash-model
//!   simulators of a disk and of persistent memory, on which the crash-consistency tests
//!   enumerate every state a crash can leave.
//!
//! The journal and the persistent-memory log share everything above their media (staging
//! of records until a flush, tickets, the slot index, the [`LogStore`] operations); each
//! keeps only its bytes on the medium, its write path and its recovery.
//!
//! On-disk formats and the argument for each crash point are in `docs/STORAGE.md`.
//!
//! ```
//! use rsl_core::{Ballot, NodeId, PersistRequest, Proposal, Slot, Value};
//! use rsl_log::{FileJournal, JournalOptions, LogStore, RecoveryPolicy};
//!
//! let dir = tempfile::tempdir()?;
//! let options = JournalOptions::default();
//! let (mut log, state, _) = FileJournal::open(dir.path(), &options, RecoveryPolicy::TruncateTornTail)?;
//! assert!(state.proposals.is_empty());
//!
//! // Two requests, one sync: flush reports both durable.
//! let ballot = Ballot::new(1, NodeId(1));
//! log.append(&PersistRequest { ticket: 1, promise: Some(ballot), proposals: vec![], chosen: None })?;
//! let proposal = Proposal { ballot, slot: Slot(1), value: Value::Noop };
//! log.append(&PersistRequest { ticket: 2, promise: None, proposals: vec![proposal], chosen: None })?;
//! assert_eq!(log.flush()?, 2);
//! drop(log);
//!
//! // A restart recovers exactly what was durable.
//! let (_log, state, report) = FileJournal::open(dir.path(), &options, RecoveryPolicy::TruncateTornTail)?;
//! assert_eq!(state.promise, ballot);
//! assert_eq!(state.proposals.len(), 1);
//! assert!(report.torn_tail.is_none());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The runtime drives a store from a dedicated thread ([`GroupCommitter`]), holds it as
//! `Box<dyn LogStore>`, fills [`rsl_core::DurableState::checkpoint`] from the checkpoint it
//! loads, and truncates the log no further than [`CheckpointStore::truncation_floor`].

#![deny(unsafe_op_in_unsafe_fn)]

pub mod checkpoint;
pub mod codec;
mod error;
mod group;
pub mod handoff;
pub mod journal;
mod memory;
pub mod pmem;
#[cfg(feature = "sim")]
pub mod sim;
mod staging;
mod state;
mod store;
mod sys;
pub mod vfs;

pub use checkpoint::{
    CheckpointInfo, CheckpointOptions, CheckpointReader, CheckpointStore, CheckpointWriter, LoadOutcome,
};
pub use error::{CheckpointError, CommitError, LogError};
pub use group::{DurableCallback, GroupCommitOptions, GroupCommitStatistics, GroupCommitter};
pub use journal::{FileJournal, JournalOptions};
pub use memory::{MemoryDisk, MemoryLog};
pub use pmem::{MappedFile, Persistence, PersistentMemory, PmemFlush, PmemLog, PmemOptions};
pub use store::{Cut, LogStatistics, LogStore, RecoveryPolicy, RecoveryReport};
pub use sys::{detect_cache_line_flush, CacheLineFlush};
