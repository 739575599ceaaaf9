//! The file journal: a directory of segment files, each named by its first slot and
//! sequence number, holding CRC32C-framed records; group commit with one `fdatasync` per
//! flush.
//!
//! Layout and crash arguments are in `docs/STORAGE.md`. In short:
//! - A segment is created under a temporary name with its header and a snapshot record
//!   (promise, chosen hint, floor as of that point), synced, renamed, and the directory
//!   synced: a segment file either does not exist or starts with a valid header.
//! - A flush writes every staged record with one `pwrite` at the tail of the active
//!   segment and syncs it. Every record carries the offset where its unsynced run (its
//!   "batch") started, so recovery can tell a torn tail (damage inside the last batch,
//!   after which nothing of a later batch exists) from damage to synced data (error).
//! - Rotation syncs the active segment first, so only the last segment can have a torn
//!   tail. Each header records the exact length of the previous segment, so a truncated
//!   or zero-filled older segment is an error, never silent loss.
//! - Segments are deleted oldest first, each deletion made durable before the next, once
//!   none of their proposals is live (all superseded or below the truncation floor); the
//!   next segment's snapshot carries their promise and chosen hint.
//! - A `LOCK` file held with `flock` keeps a second process (or handle) out.
//!
//! Files: `format` holds the bytes (names, segment header, record frames), `recovery`
//! the opening of a journal; this file the journal itself and its write path. Staging,
//! tickets and the [`LogStore`](crate::LogStore) operations are shared with the
//! persistent-memory log (`crate::staging`).

use std::collections::VecDeque;
use std::fmt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use rsl_core::{DurableState, Slot};

use crate::codec::{Record, RECORD_SNAPSHOT};
use crate::error::LogError;
use crate::staging::{Address, RecordAt, StagedStore, Staging};
use crate::store::RecoveryPolicy;
use crate::store::RecoveryReport;
use crate::vfs::{Directory, DirectoryLock, OsDirectory, StorageFile, TEMPORARY_SUFFIX};

mod format;
mod inspect;
mod recovery;

pub use format::{
    parse_segment_name, segment_name, FORMAT_VERSION, RECORD_ALIGNMENT, RECORD_HEADER_BYTES, RECORD_MAGIC,
    RECORD_PAYLOAD_BYTES_MAX, SEGMENT_BYTES_MIN, SEGMENT_HEADER_BYTES, SEGMENT_MAGIC,
};

pub use inspect::{list, scan_segment, JournalListing, SegmentListing, SegmentScan, StoredRecord};

use format::{seal_frame, verify_read_frame, SegmentHeader, FRAMING};

/// Options of a [`FileJournal`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalOptions {
    /// A segment is rotated before a flush would take it past this size (a single larger
    /// batch still goes into one segment). Default 64 MiB.
    pub segment_bytes_max: u64,
    /// Reserve `segment_bytes_max` bytes when a segment is created (`fallocate`), so
    /// appends overwrite allocated blocks instead of growing the file. Where the file
    /// system cannot, segments grow as written. Default true.
    pub preallocate: bool,
}

impl Default for JournalOptions {
    fn default() -> Self {
        JournalOptions { segment_bytes_max: 64 << 20, preallocate: true }
    }
}

/// Where a record is stored: the segment with sequence number `segment`, at byte `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegmentOffset {
    segment: u64,
    offset: u64,
}

impl Address for SegmentOffset {
    fn container(&self) -> u64 {
        self.segment
    }
}

#[derive(Debug)]
struct Segment {
    sequence: u64,
    first_slot: Slot,
    name: String,
    file: Box<dyn StorageFile>,
    /// End of the last record written.
    len: u64,
    /// End of the last record known durable.
    synced_len: u64,
    /// End of the segment's snapshot record: records after it are the segment's own.
    records_start: u64,
}

impl Segment {
    /// A segment recovery read, durable up to `len`.
    fn recovered(
        sequence: u64,
        first_slot: Slot,
        name: String,
        file: Box<dyn StorageFile>,
        len: u64,
        records_start: u64,
    ) -> Segment {
        Segment { sequence, first_slot, name, file, len, synced_len: len, records_start }
    }
}

/// The path of file `name` of `dir`.
fn path_of(dir: &dyn Directory, name: &str) -> PathBuf {
    dir.path().join(name)
}

/// An I/O error on file `name` of `dir`.
fn io_error(dir: &dyn Directory, name: &str, error: std::io::Error) -> LogError {
    LogError::io(path_of(dir, name), error)
}

/// A segmented file journal; see the module docs.
pub struct FileJournal {
    dir: Box<dyn Directory>,
    _lock: Box<dyn DirectoryLock>,
    options: JournalOptions,
    /// Oldest first; the last is the active segment, where records are written. Never
    /// empty once open.
    segments: VecDeque<Segment>,
    staging: Staging<SegmentOffset>,
}

impl fmt::Debug for FileJournal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileJournal")
            .field("dir", &self.dir.path())
            .field("options", &self.options)
            .field("segments", &self.segments.iter().map(|s| &s.name).collect::<Vec<_>>())
            .field("staging", &self.staging)
            .finish()
    }
}

const ACTIVE: &str = "a journal always has an active segment";

impl FileJournal {
    /// Opens (creating if needed) the journal in directory `path`, recovering it under
    /// `policy`.
    pub fn open(
        path: impl AsRef<Path>,
        options: &JournalOptions,
        policy: RecoveryPolicy,
    ) -> Result<(FileJournal, DurableState, RecoveryReport), LogError> {
        let path = path.as_ref();
        let dir = OsDirectory::open(path).map_err(|e| LogError::io(path, e))?;
        FileJournal::open_in(Box::new(dir), options, policy)
    }

    /// Opens the journal in `dir` (any [`Directory`], e.g. a crash simulator).
    pub fn open_in(
        dir: Box<dyn Directory>,
        options: &JournalOptions,
        policy: RecoveryPolicy,
    ) -> Result<(FileJournal, DurableState, RecoveryReport), LogError> {
        if options.segment_bytes_max < SEGMENT_BYTES_MIN {
            return Err(LogError::InvalidOption {
                reason: format!(
                    "segment_bytes_max {} is below the minimum {SEGMENT_BYTES_MIN}",
                    options.segment_bytes_max
                ),
            });
        }
        let lock = dir.try_lock().map_err(|e| LogError::io(dir.path(), e))?;
        let lock = lock.ok_or_else(|| LogError::Locked { dir: dir.path().to_path_buf() })?;
        let recovery::Recovered { segments, replay, mut report } =
            recovery::recover(&*dir, policy, recovery::Changes::Apply)?;
        let mut journal = FileJournal {
            dir,
            _lock: lock,
            options: options.clone(),
            segments,
            staging: Staging::new(FRAMING),
        };
        let state = journal.staging.recovered(replay, &mut report);
        if journal.segments.is_empty() {
            let first_slot = Slot(1).max(journal.staging.committed.floor);
            let segment = journal.create_segment(1, first_slot, 0)?;
            journal.segments.push_back(segment);
        }
        Ok((journal, state, report))
    }

    /// What opening the journal in directory `path` under `policy` would recover and cut,
    /// without changing a byte: the same decisions as [`FileJournal::open`] (the same
    /// errors, the same [`RecoveryReport`] of cuts and files set aside), but no file is
    /// cut, renamed, deleted or synced, and no segment is created. The directory is locked
    /// while it is read, so a running replica's journal is refused ([`LogError::Locked`]).
    /// For offline tools.
    pub fn check(
        path: impl AsRef<Path>,
        policy: RecoveryPolicy,
    ) -> Result<(DurableState, RecoveryReport), LogError> {
        let path = path.as_ref();
        if !path.is_dir() {
            let error = std::io::Error::new(std::io::ErrorKind::NotFound, "no journal directory here");
            return Err(LogError::io(path, error));
        }
        let dir = OsDirectory::open(path).map_err(|e| LogError::io(path, e))?;
        let lock = dir.try_lock().map_err(|e| LogError::io(path, e))?;
        let _lock = lock.ok_or_else(|| LogError::Locked { dir: path.to_path_buf() })?;
        let recovery::Recovered { replay, mut report, .. } =
            recovery::recover(&dir, policy, recovery::Changes::ReportOnly)?;
        let mut staging = Staging::<SegmentOffset>::new(FRAMING);
        let state = staging.recovered(replay, &mut report);
        report.created = false;
        Ok((state, report))
    }

    /// Names of the segment files, oldest first.
    pub fn segment_names(&self) -> Vec<String> {
        self.segments.iter().map(|s| s.name.clone()).collect()
    }

    /// The journal's directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn io(&self, name: &str, error: std::io::Error) -> LogError {
        io_error(&*self.dir, name, error)
    }

    /// Creates, fills and publishes a new segment: header and snapshot under a temporary
    /// name, synced, renamed, directory synced.
    fn create_segment(
        &mut self,
        sequence: u64,
        first_slot: Slot,
        previous_bytes: u64,
    ) -> Result<Segment, LogError> {
        let name = segment_name(first_slot, sequence);
        let temporary = format!("{name}{TEMPORARY_SUFFIX}");
        let mut file = self.dir.create(&temporary).map_err(|e| self.io(&temporary, e))?;
        let preallocated = if self.options.preallocate {
            let size = self.options.segment_bytes_max;
            if file.allocate(size).map_err(|e| self.io(&temporary, e))? {
                size
            } else {
                0
            }
        } else {
            0
        };
        let header = SegmentHeader { sequence, first_slot, previous_bytes, preallocated };
        let mut bytes = header.encode().to_vec();
        let start = bytes.len();
        bytes.resize(start + RECORD_HEADER_BYTES as usize, 0);
        self.staging.committed.snapshot().encode(&mut bytes);
        let payload_bytes = (bytes.len() - start) as u32 - RECORD_HEADER_BYTES as u32;
        bytes.resize(FRAMING.aligned(bytes.len() as u64) as usize, 0);
        let offset = start as u64;
        seal_frame(&mut bytes[start..], RECORD_SNAPSHOT, payload_bytes, offset, offset, sequence);
        file.write_at(&bytes, 0).map_err(|e| self.io(&temporary, e))?;
        file.sync_all().map_err(|e| self.io(&temporary, e))?;
        self.dir.rename(&temporary, &name).map_err(|e| self.io(&temporary, e))?;
        self.dir.sync().map_err(|e| LogError::io(self.dir.path(), e))?;
        self.staging.statistics.syncs += 2;
        self.staging.statistics.bytes_written += bytes.len() as u64;
        let len = bytes.len() as u64;
        Ok(Segment { sequence, first_slot, name, file, len, synced_len: len, records_start: len })
    }

    fn sync_active(&mut self) -> Result<(), LogError> {
        let active = self.segments.back_mut().expect(ACTIVE);
        if active.synced_len < active.len {
            active.file.sync_data().map_err(|e| io_error(&*self.dir, &active.name, e))?;
            active.synced_len = active.len;
            self.staging.statistics.syncs += 1;
        }
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), LogError> {
        self.sync_active()?;
        let active = self.segments.back().expect(ACTIVE);
        let sequence = active.sequence + 1;
        let first_slot = Slot(self.staging.committed_highest_slot.0.saturating_add(1))
            .max(self.staging.committed.floor)
            .max(active.first_slot);
        let previous_bytes = active.len;
        let segment = self.create_segment(sequence, first_slot, previous_bytes)?;
        self.segments.push_back(segment);
        Ok(())
    }

    /// Writes every staged record with one write at the tail of the active segment,
    /// rotating first if they would take a segment with records of its own past
    /// `segment_bytes_max`. The caller syncs.
    fn write_staged_records(&mut self) -> Result<(), LogError> {
        if self.staging.is_empty() {
            return Ok(());
        }
        let staged = self.staging.uncommitted();
        let bytes = self.staging.frames(staged.clone()).len() as u64;
        let active = self.segments.back().expect(ACTIVE);
        if active.len > active.records_start && active.len + bytes > self.options.segment_bytes_max {
            self.rotate()?;
        }
        let active = self.segments.back_mut().expect(ACTIVE);
        let (base, batch_start, sequence) = (active.len, active.synced_len, active.sequence);
        self.staging.seal(staged.clone(), |record, at, frame| {
            seal_frame(frame, record.kind, record.payload_bytes, base + at, batch_start, sequence);
        });
        let frames = self.staging.frames(staged.clone());
        active.file.write_at(frames, base).map_err(|e| io_error(&*self.dir, &active.name, e))?;
        active.len += frames.len() as u64;
        // The records join the committed view in log order now; they are durable once the
        // flush's sync returns, before anything reads the live counts.
        self.staging.commit(staged.end, |_, at| SegmentOffset { segment: sequence, offset: base + at });
        Ok(())
    }

    /// Deletes segments from the oldest while none of their proposals is live. Each
    /// deletion is made durable before the next, so the survivors are always contiguous.
    fn reclaim(&mut self) -> Result<(), LogError> {
        while self.segments.len() > 1 && self.staging.index.live(self.segments[0].sequence) == 0 {
            let name = self.segments[0].name.clone();
            self.dir.remove(&name).map_err(|e| self.io(&name, e))?;
            self.dir.sync().map_err(|e| LogError::io(self.dir.path(), e))?;
            self.segments.pop_front();
            self.staging.statistics.reclaimed += 1;
            self.staging.statistics.syncs += 1;
        }
        Ok(())
    }

    /// The held segment with sequence number `sequence`.
    fn segment(&self, sequence: u64) -> &Segment {
        let first = self.segments.front().expect(ACTIVE).sequence;
        sequence
            .checked_sub(first)
            .and_then(|i| self.segments.get(i as usize))
            .filter(|s| s.sequence == sequence)
            .expect("indexed segments are held")
    }
}

impl StagedStore for FileJournal {
    type Address = SegmentOffset;
    const RECORD: &'static str = "record";

    fn staging(&self) -> &Staging<SegmentOffset> {
        &self.staging
    }

    fn staging_mut(&mut self) -> &mut Staging<SegmentOffset> {
        &mut self.staging
    }

    fn write_staged(&mut self) -> Result<(), LogError> {
        let before = self.staging.statistics.syncs;
        self.write_staged_records()?;
        self.sync_active()?;
        if self.staging.statistics.syncs > before {
            self.staging.statistics.flushes += 1;
        }
        self.reclaim()
    }

    fn read_stored(&self, address: SegmentOffset, payload_bytes: u32) -> Result<Record, LogError> {
        let segment = self.segment(address.segment);
        let offset = address.offset;
        let mut bytes = vec![0u8; (RECORD_HEADER_BYTES + u64::from(payload_bytes)) as usize];
        segment.file.read_at(&mut bytes, offset).map_err(|e| self.io(&segment.name, e))?;
        let corrupt = |reason| LogError::corrupt(path_of(&*self.dir, &segment.name), offset, reason);
        let (kind, payload) = verify_read_frame(&bytes, offset, segment.sequence).map_err(corrupt)?;
        Record::decode(kind, &Bytes::copy_from_slice(payload))
            .map_err(|e| corrupt(format!("record does not decode: {e}")))
    }

    fn locate(&self, at: RecordAt<SegmentOffset>) -> (PathBuf, u64) {
        match at {
            RecordAt::Stored { address, .. } => {
                let segment = self.segments.iter().find(|s| s.sequence == address.segment);
                let name = segment.map(|s| s.name.clone()).unwrap_or_default();
                (path_of(&*self.dir, &name), address.offset)
            }
            RecordAt::Staged(_) => (self.dir.path().to_path_buf(), 0),
        }
    }
}
