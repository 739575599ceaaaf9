//! Reading a replica's stores the same way whichever backend holds them: the log (file
//! journal or persistent-memory region) as a sequence of records with their file and byte
//! offset, each file of it summarised (slot range, configurations, damage), what recovery
//! would make of it (a dry run, `FileJournal::check` / `PmemLog::check`), and the
//! checkpoints with the configuration record at the start of each one's data.
//!
//! Everything here reads; only `repair` writes, through the log stores' own recovery.

use std::path::{Path, PathBuf};

use anyhow::Result;
use rsl::core::{Configuration, DurableState, Proposal, Slot, Value};
use rsl::log::checkpoint::{self, CheckpointFile};
use rsl::log::codec::Record;
use rsl::log::{FileJournal, LogError, PmemLog, RecoveryPolicy, RecoveryReport};

use crate::describe::{proposals, widen};
use crate::layout::LogLocation;

/// One record of the log, wherever it is stored.
#[derive(Clone, Debug)]
pub struct LogRecord {
    /// The segment or region file.
    pub file: PathBuf,
    /// Byte offset of the record's frame (or entry) in `file`.
    pub offset: u64,
    /// Bytes of the frame, header and padding included.
    pub frame_bytes: u64,
    /// The record lies after damage: recovery does not read it.
    pub beyond_damage: bool,
    /// The record.
    pub record: Record,
}

/// Where the records of one file stop verifying.
#[derive(Debug)]
pub struct Damage {
    /// The error, naming file and offset.
    pub error: LogError,
    /// Byte offset of the damage.
    pub offset: u64,
    /// Bytes from the damage to the end of the file (for a region: of the log).
    pub bytes_after: u64,
    /// It can be a write torn by a crash (recovery under the default policy cuts it).
    pub torn_tail_plausible: bool,
}

/// One file of the log.
#[derive(Debug)]
pub struct LogFile {
    /// The file.
    pub path: PathBuf,
    /// `segment N, first slot S, ...` or `region, log id ...`: what its header says.
    pub header: String,
    /// Bytes of the file.
    pub file_bytes: u64,
    /// Bytes of records that verify (from the start of the records).
    pub valid_bytes: u64,
    /// Records that verify before any damage.
    pub records: u64,
    /// Lowest and highest slot of a proposal in those records.
    pub slots: Option<(Slot, Slot)>,
    /// Configuration values proposed, by slot.
    pub configurations: Vec<(Slot, Configuration)>,
    /// What stopped the records, if anything.
    pub damage: Option<Damage>,
}

/// A scan of the whole log.
#[derive(Debug, Default)]
pub struct LogScan {
    /// Its files, in log order.
    pub files: Vec<LogFile>,
    /// Files of the journal directory that recovery deletes (interrupted segment creation).
    pub temporary: Vec<PathBuf>,
    /// Segments an earlier salvage set aside.
    pub set_aside: Vec<PathBuf>,
    /// Files recovery leaves alone.
    pub ignored: Vec<PathBuf>,
}

impl LogScan {
    /// Whether any file has damage.
    pub fn damaged(&self) -> bool {
        self.files.iter().any(|file| file.damage.is_some())
    }
}

/// Reads every record of `log`, calling `visit` with each (also those after damage, for a
/// journal), and summarises each file.
pub fn scan_log(log: &LogLocation, visit: &mut dyn FnMut(&LogRecord)) -> Result<LogScan> {
    match log {
        LogLocation::Journal(dir) => scan_journal(dir, visit),
        LogLocation::Pmem(path) => scan_pmem(path, visit),
    }
}

fn scan_journal(dir: &Path, visit: &mut dyn FnMut(&LogRecord)) -> Result<LogScan> {
    let listing = rsl::log::journal::list(dir)?;
    let mut scan = LogScan {
        files: Vec::new(),
        temporary: listing.temporary,
        set_aside: listing.set_aside,
        ignored: listing.ignored,
    };
    for segment in &listing.segments {
        let mut summary = Summary::default();
        let found = rsl::log::journal::scan_segment(segment, &mut |stored| {
            if !stored.beyond_damage {
                summary.add(&stored.record);
            }
            visit(&LogRecord {
                file: stored.file.clone(),
                offset: stored.offset,
                frame_bytes: stored.frame_bytes,
                beyond_damage: stored.beyond_damage,
                record: stored.record.clone(),
            });
        })?;
        let header = match &found.header {
            Some(h) => format!(
                "segment {} first slot {} format version {} previous segment {} bytes preallocated {} bytes",
                h.sequence, h.first_slot, h.version, h.previous_bytes, h.preallocated
            ),
            None => format!("segment {} (header does not verify)", segment.sequence),
        };
        let damage = found.damage.map(|d| Damage {
            offset: error_offset(&d.error),
            error: d.error,
            bytes_after: d.bytes_after,
            torn_tail_plausible: d.torn_tail_plausible,
        });
        scan.files.push(LogFile {
            path: segment.path.clone(),
            header,
            file_bytes: found.file_bytes,
            valid_bytes: found.valid_bytes,
            records: found.records,
            slots: summary.slots,
            configurations: summary.configurations,
            damage,
        });
    }
    Ok(scan)
}

fn scan_pmem(path: &Path, visit: &mut dyn FnMut(&LogRecord)) -> Result<LogScan> {
    let mut summary = Summary::default();
    let region = rsl::log::pmem::scan(path, &mut |entry| {
        summary.add(&entry.record);
        visit(&LogRecord {
            file: path.to_path_buf(),
            offset: entry.offset,
            frame_bytes: entry.entry_bytes,
            beyond_damage: false,
            record: entry.record.clone(),
        });
    })?;
    let header = format!(
        "persistent-memory region layout version {} log id {:#x} area {} bytes, log metadata copy {}: head {} length {}",
        region.version, region.log_id, region.area_bytes, region.active_copy, region.head, region.length
    );
    let damage = region.damage.map(|error| Damage {
        offset: error_offset(&error),
        error,
        bytes_after: region.length - region.valid_bytes,
        torn_tail_plausible: false,
    });
    let file = LogFile {
        path: path.to_path_buf(),
        header,
        file_bytes: region.region_bytes,
        valid_bytes: region.valid_bytes,
        records: region.entries,
        slots: summary.slots,
        configurations: summary.configurations,
        damage,
    };
    Ok(LogScan { files: vec![file], ..LogScan::default() })
}

/// Slot range and configurations of the records of one file.
#[derive(Default)]
struct Summary {
    slots: Option<(Slot, Slot)>,
    configurations: Vec<(Slot, Configuration)>,
}

impl Summary {
    fn add(&mut self, record: &Record) {
        for proposal in proposals(record) {
            widen(&mut self.slots, proposal.slot);
            if let Value::Configuration(configuration) = &proposal.value {
                self.configurations.push((proposal.slot, configuration.clone()));
            }
        }
    }
}

/// The byte offset an error names (0 when it names none).
pub fn error_offset(error: &LogError) -> u64 {
    match error {
        LogError::Corrupt { offset, .. } | LogError::UnsupportedVersion { offset, .. } => *offset,
        _ => 0,
    }
}

/// Fails when a process holds `log` open (a running replica): the tools work on a stopped
/// replica's files only.
pub fn refuse_if_running(log: &LogLocation) -> Result<()> {
    let locked = match log {
        LogLocation::Journal(dir) => {
            use rsl::log::vfs::Directory as _;
            let directory = rsl::log::vfs::OsDirectory::open(dir)?;
            directory.try_lock()?.is_none()
        }
        LogLocation::Pmem(_) => {
            matches!(check_log(log, RecoveryPolicy::Strict), Err(LogError::Locked { .. }))
        }
    };
    if locked {
        anyhow::bail!("{} is locked by another process: stop the replica first", log.path().display());
    }
    Ok(())
}

/// What opening `log` under `policy` would recover and cut, changing nothing.
pub fn check_log(
    log: &LogLocation,
    policy: RecoveryPolicy,
) -> Result<(DurableState, RecoveryReport), LogError> {
    match log {
        LogLocation::Journal(dir) => FileJournal::check(dir, policy),
        LogLocation::Pmem(path) => PmemLog::check(path, policy),
    }
}

/// One checkpoint file and what it holds.
#[derive(Debug)]
pub struct CheckpointEntry {
    /// The file.
    pub path: PathBuf,
    /// The slot its name gives.
    pub slot: Slot,
    /// The verified file and the configuration record its data starts with, or why it
    /// does not verify (naming file and offset).
    pub verified: Result<(CheckpointFile, Configuration), String>,
}

/// Every checkpoint file of directory `dir`, oldest first, each verified, and leftover
/// temporary files.
pub fn scan_checkpoints(dir: &Path) -> Result<(Vec<CheckpointEntry>, Vec<PathBuf>)> {
    let checkpoint::CheckpointListing { files, temporary } = checkpoint::list_dir(dir)?;
    let entries = files.into_iter().map(|(slot, path)| {
        let verified = verify_checkpoint(&path);
        CheckpointEntry { path, slot, verified }
    });
    Ok((entries.collect(), temporary))
}

/// Verifies the checkpoint file at `path` and reads its configuration record.
pub fn verify_checkpoint(path: &Path) -> Result<(CheckpointFile, Configuration), String> {
    let file = checkpoint::inspect_file(path).map_err(|e| e.to_string())?;
    let mut reader = checkpoint::open_file(path).map_err(|e| e.to_string())?;
    let configuration = rsl::runtime::framing::read_configuration(&mut reader).map_err(|error| {
        let offset = rsl::log::checkpoint::CHECKPOINT_HEADER_BYTES + rsl::log::checkpoint::BLOCK_HEADER_BYTES;
        format!("{} at byte {offset} (the start of its data): {error}", path.display())
    })?;
    Ok((file, configuration))
}

/// Whether `proposal` lies in `from..=to`.
pub fn in_range(proposal: &Proposal, from: Option<Slot>, to: Option<Slot>) -> bool {
    from.is_none_or(|from| proposal.slot >= from) && to.is_none_or(|to| proposal.slot <= to)
}
