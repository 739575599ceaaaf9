//! Errors, one narrow enum per area: the log stores ([`LogError`]), the checkpoint store
//! ([`CheckpointError`]) and the group committer ([`CommitError`]). Each says what was
//! expected, what was found, and where (file and byte offset).

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use rsl_core::Slot;

/// Why a log store operation (open, recover, append, flush, read) failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The operating system refused an operation on `path`.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Stored bytes are damaged, foreign or inconsistent, and the recovery policy does not
    /// allow cutting them.
    #[error("corrupt log {file} at byte {offset}: {reason}")]
    Corrupt {
        /// The file holding the damage.
        file: PathBuf,
        /// Byte offset of the damaged record or field within `file`.
        offset: u64,
        /// What was expected and what was found.
        reason: String,
    },
    /// Stored bytes are intact (their checksum verifies) but in a format version this
    /// build does not read: a newer build wrote them. No recovery policy cuts or sets aside
    /// such a file; run a build that reads the version.
    #[error("{file} at byte {offset} is format version {found}; this build reads version {supported}")]
    UnsupportedVersion {
        /// The file.
        file: PathBuf,
        /// Byte offset of the version field within `file`.
        offset: u64,
        /// The version found.
        found: u64,
        /// The version this build reads and writes.
        supported: u64,
    },
    /// Another process (or another handle in this process) has the log open.
    #[error("log {dir} is locked by another process or handle")]
    Locked {
        /// The locked directory or file.
        dir: PathBuf,
    },
    /// A request's ticket did not increase. The store is poisoned afterwards.
    #[error("ticket {found} appended after ticket {last}: tickets must increase")]
    TicketOrder {
        /// The last ticket appended.
        last: u64,
        /// The ticket offered.
        found: u64,
    },
    /// One encoded record is larger than the store can frame. The store is poisoned
    /// afterwards.
    #[error("record of {bytes} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// Encoded size of the record.
        bytes: u64,
        /// The largest record this store accepts.
        max: u64,
    },
    /// The persistent-memory log has no room for the next buffered record, even after
    /// reclaiming every dead entry. The records before it were committed (a durable
    /// prefix, not reported durable); it and those after stay buffered. A truncation
    /// appended now commits after them and cannot make room for them: reopen the log
    /// (dropping the buffer), truncate below a checkpoint, and append again. The runtime
    /// avoids this by truncating in time and bounding a round
    /// ([`crate::GroupCommitOptions::batch_bytes_max`]) well below the log area.
    #[error("persistent-memory log full: {needed} bytes needed, {available} bytes free")]
    Full {
        /// Bytes the buffered records still need.
        needed: u64,
        /// Bytes free after reclaiming dead entries.
        available: u64,
    },
    /// An earlier failure (an I/O error during a write or sync, or a refused append) left
    /// the store in an unknown state. Reopen it to recover what is durable.
    #[error("log store unusable after an earlier failure: {reason}")]
    Poisoned {
        /// The earlier failure.
        reason: String,
    },
    /// The options cannot describe a working store.
    #[error("invalid log store option: {reason}")]
    InvalidOption {
        /// What is wrong.
        reason: String,
    },
}

impl LogError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> LogError {
        LogError::Io { path: path.into(), source }
    }

    pub(crate) fn corrupt(file: impl Into<PathBuf>, offset: u64, reason: impl Into<String>) -> LogError {
        LogError::Corrupt { file: file.into(), offset, reason: reason.into() }
    }
}

/// Why a checkpoint could not be written, verified or read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The operating system refused an operation on `path`.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A checkpoint file is damaged, truncated or foreign.
    #[error("corrupt checkpoint {file} at byte {offset}: {reason}")]
    Corrupt {
        /// The checkpoint file.
        file: PathBuf,
        /// Byte offset of the damage.
        offset: u64,
        /// What was expected and what was found.
        reason: String,
    },
    /// A checkpoint is intact but in a format version this build does not read (a newer
    /// build wrote it).
    #[error(
        "{file} at byte {offset} is checkpoint format version {found}; this build reads version {supported}"
    )]
    UnsupportedVersion {
        /// The checkpoint file.
        file: PathBuf,
        /// Byte offset of the version field.
        offset: u64,
        /// The version found.
        found: u64,
        /// The version this build reads and writes.
        supported: u64,
    },
    /// Another process (or handle) has the checkpoint directory open.
    #[error("checkpoint directory {dir} is locked by another process or handle")]
    Locked {
        /// The directory.
        dir: PathBuf,
    },
    /// No checkpoint is stored for this slot.
    #[error("no checkpoint at slot {slot}")]
    NotFound {
        /// The slot asked for.
        slot: Slot,
    },
    /// The options cannot describe a working store.
    #[error("invalid checkpoint option: {reason}")]
    InvalidOption {
        /// What is wrong.
        reason: String,
    },
}

impl CheckpointError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> CheckpointError {
        CheckpointError::Io { path: path.into(), source }
    }

    pub(crate) fn corrupt(
        file: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> CheckpointError {
        CheckpointError::Corrupt { file: file.into(), offset, reason: reason.into() }
    }
}

/// Why the group committer could not take or complete a request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CommitError {
    /// The committer was shut down.
    #[error("group committer stopped")]
    Stopped,
    /// A request's ticket did not increase; nothing was queued.
    #[error("ticket {found} submitted after ticket {last}: tickets must increase")]
    TicketOrder {
        /// The last ticket queued.
        last: u64,
        /// The ticket offered.
        found: u64,
    },
    /// The store failed; nothing after the last reported durable ticket is known durable.
    #[error("log store failed: {0}")]
    Failed(#[source] Arc<LogError>),
}
