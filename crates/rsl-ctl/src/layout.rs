//! What a path given on the command line holds: a replica's data directory (the runtime's
//! `log/` journal and `checkpoints/`, or rsl-kv's `pmem.log`, with rsl-kv's `ring.toml`),
//! a journal directory, a checkpoint directory, or a single file (a persistent-memory
//! region or a checkpoint), told apart by names and magic bytes. A file that is none of
//! these is refused with its path and the bytes found at offset 0.

use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use rsl::log::checkpoint::{parse_checkpoint_name, CHECKPOINT_MAGIC};
use rsl::log::journal::{parse_segment_name, SEGMENT_MAGIC};
use rsl::log::pmem::PROGRAM_GUID;

/// Name of the journal directory in a data directory (`rsl::FileStorage`).
pub const JOURNAL_DIR: &str = "log";
/// Name of the checkpoint directory in a data directory.
pub const CHECKPOINT_DIR: &str = "checkpoints";
/// Name of rsl-kv's persistent-memory log in a data directory.
pub const PMEM_FILE: &str = "pmem.log";

/// Where a replica's log lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogLocation {
    /// A file journal: a directory of segments.
    Journal(PathBuf),
    /// A persistent-memory log region: one file.
    Pmem(PathBuf),
}

impl LogLocation {
    /// The directory or file.
    pub fn path(&self) -> &Path {
        match self {
            LogLocation::Journal(path) | LogLocation::Pmem(path) => path,
        }
    }
}

/// The stores a path holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stores {
    /// The log, if any.
    pub log: Option<LogLocation>,
    /// The checkpoint directory, if any.
    pub checkpoints: Option<PathBuf>,
    /// A single checkpoint file given on its own.
    pub checkpoint_file: Option<PathBuf>,
    /// rsl-kv's record of how the directory's ring began.
    pub ring_record: Option<PathBuf>,
}

/// Finds the stores at `path`.
pub fn discover(path: &Path) -> Result<Stores> {
    let metadata = fs::metadata(path).with_context(|| format!("{}", path.display()))?;
    if metadata.is_file() {
        return discover_file(path);
    }
    let mut stores = Stores::default();
    let journal = path.join(JOURNAL_DIR);
    let pmem = path.join(PMEM_FILE);
    if journal.is_dir() {
        stores.log = Some(LogLocation::Journal(journal));
    } else if pmem.is_file() {
        stores.log = Some(LogLocation::Pmem(pmem));
    }
    let checkpoints = path.join(CHECKPOINT_DIR);
    if checkpoints.is_dir() {
        stores.checkpoints = Some(checkpoints);
    }
    let record = path.join(rsl_kv::bootstrap::RING_RECORD);
    if record.is_file() {
        stores.ring_record = Some(record);
    }
    if stores.log.is_none() && stores.checkpoints.is_none() {
        // The directory may itself be a journal or a checkpoint directory.
        let names = names(path)?;
        if names.iter().any(|name| parse_segment_name(name).is_some()) {
            stores.log = Some(LogLocation::Journal(path.to_path_buf()));
        } else if names.iter().any(|name| parse_checkpoint_name(name).is_some()) {
            stores.checkpoints = Some(path.to_path_buf());
        } else {
            bail!(
                "{} holds no rsl log or checkpoints (looked for {JOURNAL_DIR}/, {PMEM_FILE}, \
                 {CHECKPOINT_DIR}/, journal segments and checkpoint files)",
                path.display()
            );
        }
    }
    Ok(stores)
}

/// What a single file is, by its magic bytes.
fn discover_file(path: &Path) -> Result<Stores> {
    let mut head = Vec::with_capacity(32);
    fs::File::open(path)
        .and_then(|file| file.take(32).read_to_end(&mut head))
        .with_context(|| format!("{}", path.display()))?;
    let mut stores = Stores::default();
    if head.len() >= 8 && head[..8] == CHECKPOINT_MAGIC {
        stores.checkpoint_file = Some(path.to_path_buf());
    } else if head.len() >= 32 && head[16..32] == PROGRAM_GUID.to_le_bytes() {
        stores.log = Some(LogLocation::Pmem(path.to_path_buf()));
    } else if head.len() >= 8 && head[..8] == SEGMENT_MAGIC {
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        stores.log = Some(LogLocation::Journal(parent.to_path_buf()));
    } else {
        bail!(
            "{} at byte 0: not an rsl journal segment, persistent-memory log or checkpoint \
             (first bytes {:02x?})",
            path.display(),
            &head[..head.len().min(16)]
        );
    }
    Ok(stores)
}

/// The names of the files in `dir`, sorted.
pub fn names(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("{}", dir.display()))? {
        let entry = entry.with_context(|| format!("{}", dir.display()))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}
