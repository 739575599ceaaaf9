//! Where a ring keeps its log and its checkpoints, and how they are opened at start.

use std::path::PathBuf;

use rsl_core::{DurableState, RingId};
use rsl_log::vfs::MemoryDirectory;
use rsl_log::{
    CheckpointOptions, CheckpointStore, FileJournal, JournalOptions, LogStore, MemoryDisk, MemoryLog,
    RecoveryPolicy, RecoveryReport,
};

use crate::error::StartError;

/// The storage of one ring: a log store and a checkpoint store.
#[derive(Debug)]
pub enum Storage {
    /// Everything in memory: a [`MemoryDisk`] for the log and an in-memory directory for the
    /// checkpoints. Survives stopping and restarting the ring in the same process (clone
    /// the [`MemoryStorage`] first), not the process. For tests and examples.
    Memory(MemoryStorage),
    /// A directory: the file journal in `<dir>/log`, checkpoints in `<dir>/checkpoints`.
    File(FileStorage),
    /// A store the caller opened itself (for example the persistent-memory log), with the
    /// state it recovered and a checkpoint store.
    Opened {
        /// The log store.
        log: Box<dyn LogStore>,
        /// What the log store recovered (its `checkpoint` field is ignored: the runtime
        /// fills it from the checkpoint store).
        durable: DurableState,
        /// The checkpoint store.
        checkpoints: CheckpointStore,
    },
}

/// In-memory storage of one ring; clones share the same "disk".
#[derive(Clone, Debug, Default)]
pub struct MemoryStorage {
    /// The log's durable side.
    pub log: MemoryDisk,
    /// The checkpoints' directory.
    pub checkpoints: MemoryDirectory,
}

impl MemoryStorage {
    /// Empty storage.
    pub fn new() -> MemoryStorage {
        MemoryStorage::default()
    }
}

/// File storage of one ring.
#[derive(Clone, Debug)]
pub struct FileStorage {
    /// The ring's directory (created if missing).
    pub dir: PathBuf,
    /// Options of the journal in `<dir>/log`.
    pub journal: JournalOptions,
    /// What recovery does with damaged bytes; the default cuts only a torn tail and
    /// refuses any other damage with an error naming file and offset.
    pub recovery: RecoveryPolicy,
    /// Options of the checkpoints in `<dir>/checkpoints`.
    pub checkpoints: CheckpointOptions,
}

impl FileStorage {
    /// File storage in `dir` with default options.
    pub fn new(dir: impl Into<PathBuf>) -> FileStorage {
        FileStorage {
            dir: dir.into(),
            journal: JournalOptions::default(),
            recovery: RecoveryPolicy::TruncateTornTail,
            checkpoints: CheckpointOptions::default(),
        }
    }

    /// The journal's directory.
    pub fn log_dir(&self) -> PathBuf {
        self.dir.join("log")
    }

    /// The checkpoints' directory.
    pub fn checkpoint_dir(&self) -> PathBuf {
        self.dir.join("checkpoints")
    }
}

impl From<MemoryStorage> for Storage {
    fn from(storage: MemoryStorage) -> Storage {
        Storage::Memory(storage)
    }
}

impl From<FileStorage> for Storage {
    fn from(storage: FileStorage) -> Storage {
        Storage::File(storage)
    }
}

/// What opening a ring's storage yields.
pub(crate) struct Opened {
    pub log: Box<dyn LogStore>,
    /// The log's flush is free (nothing reaches a device): the ring task flushes it itself
    /// instead of a group commit thread.
    pub flush_inline: bool,
    pub durable: DurableState,
    pub report: Option<RecoveryReport>,
    pub checkpoints: CheckpointStore,
}

impl Storage {
    /// Opens (and recovers) the log and the checkpoint store. Blocking I/O.
    pub(crate) fn open(self, ring: RingId) -> Result<Opened, StartError> {
        let log_error = |source| StartError::Log { ring, source };
        let checkpoint_error = |source| StartError::Checkpoint { ring, source };
        match self {
            Storage::Memory(memory) => {
                let (log, durable, report) =
                    MemoryLog::open(&memory.log, RecoveryPolicy::TruncateTornTail).map_err(log_error)?;
                let checkpoints = CheckpointStore::open_in(
                    Box::new(memory.checkpoints.clone()),
                    &CheckpointOptions::default(),
                )
                .map_err(checkpoint_error)?;
                Ok(Opened {
                    log: Box::new(log),
                    flush_inline: true,
                    durable,
                    report: Some(report),
                    checkpoints,
                })
            }
            Storage::File(file) => {
                let log_dir = file.log_dir();
                let checkpoint_dir = file.checkpoint_dir();
                for dir in [&log_dir, &checkpoint_dir] {
                    std::fs::create_dir_all(dir)
                        .map_err(|source| log_error(rsl_log::LogError::Io { path: dir.clone(), source }))?;
                }
                let (log, durable, report) =
                    FileJournal::open(&log_dir, &file.journal, file.recovery).map_err(log_error)?;
                let checkpoints =
                    CheckpointStore::open(&checkpoint_dir, &file.checkpoints).map_err(checkpoint_error)?;
                Ok(Opened {
                    log: Box::new(log),
                    flush_inline: false,
                    durable,
                    report: Some(report),
                    checkpoints,
                })
            }
            Storage::Opened { log, durable, checkpoints } => {
                Ok(Opened { log, flush_inline: false, durable, report: None, checkpoints })
            }
        }
    }
}
