//! The persistent-memory log: a circular log in a mapped region with the layout of the
//! verified log in "PoWER Never Corrupts" (OSDI 2025).
//!
//! A flush writes the staged entries past the tail (free space, not part of the log), then
//! commits the new length: the inactive log metadata copy is written and persisted with
//! them, then the commit word flips to it (`area`). A crash before the flip leaves the
//! old metadata in force and the new bytes outside the log; a crash after it finds the new
//! copy complete. Every entry also carries a CRC32C seeded with its virtual position, to
//! detect media corruption.
//!
//! Space is reclaimed from the head: when a flush does not fit, a snapshot entry (promise,
//! chosen hint, floor) is appended and the head advanced past every leading entry whose
//! proposals are all superseded or truncated (in committed state), in one commit; the
//! staged entries then commit in as many runs as the free space needs.
//!
//! Files: `layout` holds the bytes (metadata, entry frames), `area` the log area and its
//! commit, `region` the memory it lives in ([`PersistentMemory`], [`MappedFile`]), `flush`
//! how a mapped file is made persistent ([`PmemFlush`]: cache lines or `msync`);
//! this file the log itself: opening, recovery and the write path. Staging, tickets and
//! the [`LogStore`](crate::LogStore) operations are shared with the file journal
//! (`crate::staging`).

use std::collections::VecDeque;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::ops::Range;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use rsl_core::DurableState;

use crate::codec::{Record, RECORD_SNAPSHOT};
use crate::error::LogError;
use crate::staging::{Address, ProposalAt, RecordAt, StagedStore, Staging};
use crate::state::Replay;
use crate::store::{Cut, RecoveryPolicy, RecoveryReport};
use crate::sys;
use crate::vfs::{open_read_write, TEMPORARY_SUFFIX};

mod area;
mod flush;
mod inspect;
mod layout;
mod region;

pub use flush::PmemFlush;
pub use inspect::{scan, EntryRecord, RegionScan};
pub use layout::{
    COMMIT_WORD, COMMIT_WORD_POS, ENTRY_ALIGNMENT, ENTRY_HEADER_BYTES, GLOBAL_METADATA_POS,
    LOG_AREA_BYTES_MIN, LOG_AREA_POS, LOG_METADATA_POS, PROGRAM_GUID, PROGRAM_VERSION, REGION_METADATA_BYTES,
    REGION_METADATA_POS,
};
pub use region::{MappedFile, Persistence, PersistentMemory, RegionCopy};

use area::Area;
use layout::{
    decode_metadata, encode_metadata, entry_bytes, framing, parse_entry, seal_entry, SNAPSHOT_ENTRY_BYTES,
};

/// Options of a [`PmemLog`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PmemOptions {
    /// Size of the region (file) when it is created, metadata included. Default 64 MiB.
    pub capacity_bytes: u64,
    /// How stores are made persistent: cache-line write-back and a fence on a DAX file
    /// or tmpfs, `msync` on a page-cache file system. Default [`PmemFlush::Auto`], which
    /// picks from the file system; [`PmemFlush::CacheLines`] on a page-cache file system
    /// is refused with [`LogError::InvalidOption`] (it would not be durable).
    pub flush: PmemFlush,
    /// An identifier stored in the region metadata when the region is created.
    pub log_id: u128,
}

impl Default for PmemOptions {
    fn default() -> Self {
        PmemOptions { capacity_bytes: 64 << 20, flush: PmemFlush::Auto, log_id: 0 }
    }
}

/// Where an entry is stored: its virtual position in the log area.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EntryPosition(u64);

impl Address for EntryPosition {
    fn container(&self) -> u64 {
        self.0
    }
}

/// The persistent-memory log; see the module docs.
pub struct PmemLog {
    area: Area,
    log_id: u128,
    /// Virtual positions of the committed entries, oldest first.
    entries: VecDeque<u64>,
    staging: Staging<EntryPosition>,
    /// How the mapped file persists stores (`None` for a region that is not a mapped file).
    persistence: Option<Persistence>,
}

impl fmt::Debug for PmemLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PmemLog")
            .field("region", &self.area.region)
            .field("area_len", &self.area.len)
            .field("head", &self.area.head)
            .field("length", &self.area.length)
            .field("entries", &self.entries.len())
            .field("staging", &self.staging)
            .finish()
    }
}

impl PmemLog {
    /// Opens the log in file `path`, creating and formatting it (`options.capacity_bytes`)
    /// if it does not exist, and recovers it under `policy`. The file is locked (`flock`)
    /// while open. `options.flush` decides how stores are persisted ([`PmemFlush`]); a
    /// choice the file's file system cannot honour is [`LogError::InvalidOption`].
    pub fn open(
        path: impl AsRef<Path>,
        options: &PmemOptions,
        policy: RecoveryPolicy,
    ) -> Result<(PmemLog, DurableState, RecoveryReport), LogError> {
        let path = path.as_ref();
        let created = !path.exists();
        if created {
            PmemLog::create_file(path, options)?;
        }
        let file = OpenOptions::new().read(true).write(true).open(path).map_err(|e| LogError::io(path, e))?;
        if !sys::try_lock_exclusive(&file).map_err(|e| LogError::io(path, e))? {
            return Err(LogError::Locked { dir: path.to_path_buf() });
        }
        let len = file.metadata().map_err(|e| LogError::io(path, e))?.len();
        if len < LOG_AREA_POS + LOG_AREA_BYTES_MIN {
            return Err(LogError::corrupt(
                path,
                len,
                format!("file of {len} bytes is too short for a log region"),
            ));
        }
        let persistence = options.flush.resolve(path, &file)?;
        let region = MappedFile::map(path, file, persistence).map_err(|e| LogError::io(path, e))?;
        let (mut log, state, mut report) = PmemLog::recover(Box::new(region), policy)?;
        log.persistence = Some(persistence);
        report.created = created;
        Ok((log, state, report))
    }

    /// Creates the region file under a temporary name, formats it, makes it durable and
    /// renames it into place, so a crash never leaves a half-formatted region at `path`.
    fn create_file(path: &Path, options: &PmemOptions) -> Result<(), LogError> {
        if options.capacity_bytes < LOG_AREA_POS + LOG_AREA_BYTES_MIN {
            return Err(LogError::InvalidOption {
                reason: format!(
                    "capacity_bytes {} is below the minimum {}",
                    options.capacity_bytes,
                    LOG_AREA_POS + LOG_AREA_BYTES_MIN
                ),
            });
        }
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(TEMPORARY_SUFFIX);
        let temporary = PathBuf::from(temporary);
        let io = |e| LogError::io(&temporary, e);
        let file = open_read_write(&temporary, true).map_err(io)?;
        if !sys::try_lock_exclusive(&file).map_err(io)? {
            return Err(LogError::Locked { dir: temporary.clone() });
        }
        let persistence = match options.flush.resolve(path, &file) {
            Ok(persistence) => persistence,
            Err(refused) => {
                // Nothing was formatted: leave no half-made file behind a refused option.
                let _ = std::fs::remove_file(&temporary);
                return Err(refused);
            }
        };
        // Allocate every block now: a DAX mapping must not fault in new blocks later
        // (their allocation would need an fsync the log never issues).
        if !sys::allocate(&file, options.capacity_bytes).map_err(io)? {
            file.set_len(options.capacity_bytes).map_err(io)?;
        }
        let sync_file = file.try_clone().map_err(io)?;
        let mut region = MappedFile::map(&temporary, file, persistence).map_err(io)?;
        PmemLog::format(&mut region, options.log_id)?;
        drop(region);
        sync_file.sync_all().map_err(io)?;
        std::fs::rename(&temporary, path).map_err(|e| LogError::io(path, e))?;
        // Unlock explicitly: the open that follows must find the file free even if a child
        // forked elsewhere in the process still holds a copy of this descriptor.
        sys::unlock(&sync_file).map_err(|e| LogError::io(path, e))?;
        let parent = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        File::open(parent).and_then(|d| d.sync_all()).map_err(|e| LogError::io(parent, e))?;
        Ok(())
    }

    /// What opening the log in file `path` under `policy` would recover and cut, without
    /// changing a byte: recovery runs on a private copy of the file ([`RegionCopy`]), so
    /// a salvage is reported in the [`RecoveryReport`] but not committed. The file is
    /// locked while it is read, so a running replica's log is refused
    /// ([`LogError::Locked`]). For offline tools.
    pub fn check(
        path: impl AsRef<Path>,
        policy: RecoveryPolicy,
    ) -> Result<(DurableState, RecoveryReport), LogError> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| LogError::io(path, e))?;
        if !sys::try_lock_exclusive(&file).map_err(|e| LogError::io(path, e))? {
            return Err(LogError::Locked { dir: path.to_path_buf() });
        }
        let copy = RegionCopy::read(path).map_err(|e| LogError::io(path, e))?;
        let (_, state, report) = PmemLog::recover(Box::new(copy), policy)?;
        Ok((state, report))
    }

    /// Writes fresh metadata (an empty log) to `region` and persists it.
    pub fn format(region: &mut dyn PersistentMemory, log_id: u128) -> Result<(), LogError> {
        let size = region.len();
        if size < LOG_AREA_POS + LOG_AREA_BYTES_MIN {
            return Err(LogError::InvalidOption {
                reason: format!(
                    "region of {size} bytes is below the minimum {}",
                    LOG_AREA_POS + LOG_AREA_BYTES_MIN
                ),
            });
        }
        let name = region.name().to_path_buf();
        region.write(0, &encode_metadata(size, log_id));
        region.flush(0, LOG_AREA_POS).map_err(|e| LogError::io(&name, e))?;
        region.fence().map_err(|e| LogError::io(&name, e))?;
        Ok(())
    }

    /// Recovers the log in a formatted `region` under `policy`.
    pub fn recover(
        region: Box<dyn PersistentMemory>,
        policy: RecoveryPolicy,
    ) -> Result<(PmemLog, DurableState, RecoveryReport), LogError> {
        let name = region.name().to_path_buf();
        let size = region.len();
        if size < LOG_AREA_POS + LOG_AREA_BYTES_MIN {
            return Err(LogError::corrupt(
                &name,
                0,
                format!("region of {size} bytes is too short for a log"),
            ));
        }
        let mut meta = [0u8; LOG_AREA_POS as usize];
        region.read(0, &mut meta);
        let metadata = decode_metadata(&meta, size).map_err(|refusal| refusal.log_error(&name))?;
        let mut log = PmemLog {
            area: Area::new(region, &metadata),
            log_id: metadata.log_id,
            entries: VecDeque::new(),
            staging: Staging::new(framing(metadata.area_len)),
            persistence: None,
        };
        let mut report = RecoveryReport { files: 1, ..RecoveryReport::default() };
        let replay = log.replay_entries(policy, &mut report)?;
        let state = log.staging.recovered(replay, &mut report);
        // What was read may sit in CPU caches or the page cache only: persist it before
        // anyone acts on it.
        log.area.persist_all().map_err(|e| LogError::io(&name, e))?;
        Ok((log, state, report))
    }

    /// Replays the committed entries in log order. Damage is an error, except under
    /// [`RecoveryPolicy::SalvagePrefix`], which commits the entries before it as the log
    /// (a commit is atomic: nothing committed is ever torn).
    fn replay_entries(
        &mut self,
        policy: RecoveryPolicy,
        report: &mut RecoveryReport,
    ) -> Result<Replay<ProposalAt<EntryPosition>>, LogError> {
        let (head, length) = (self.area.head, self.area.length);
        let mut replay = Replay::default();
        let mut area = vec![0u8; length as usize];
        self.area.read(head, &mut area);
        let area = Bytes::from(area);
        let mut offset = 0u64;
        let mut damage = None;
        while offset < length {
            let position = head + offset;
            match parse_entry(&area, offset, position) {
                Ok((kind, payload, bytes)) => match Record::decode(kind, &payload) {
                    Ok(record) => {
                        let (address, payload_bytes) = (EntryPosition(position), payload.len() as u32);
                        replay.apply(record, |index| ProposalAt::Stored { address, payload_bytes, index });
                        self.entries.push_back(position);
                        offset += bytes;
                    }
                    Err(error) => {
                        damage = Some((position, format!("entry does not decode: {error}")));
                        break;
                    }
                },
                Err(reason) => {
                    damage = Some((position, reason));
                    break;
                }
            }
        }
        report.bytes = offset;
        if let Some((position, reason)) = damage {
            let (file, physical) = (self.area.name.clone(), self.area.physical(position));
            let reason = format!("entry at log position {position}: {reason}");
            if policy != RecoveryPolicy::SalvagePrefix {
                return Err(LogError::corrupt(file, physical, reason));
            }
            self.commit(head, offset).map_err(|e| LogError::io(&file, e))?;
            report.salvaged = Some(Cut { file, offset: physical, bytes_dropped: length - offset, reason });
        }
        Ok(replay)
    }

    /// Makes (`head`, `length`) the log ([`Area::commit`]).
    fn commit(&mut self, head: u64, length: u64) -> std::io::Result<()> {
        self.area.commit(head, length)?;
        self.staging.statistics.syncs += 2;
        Ok(())
    }

    /// Appends a snapshot and advances the head past every leading entry with no live
    /// proposal, in one commit. Does nothing when the first entry is live, or when what it
    /// would free is less than the snapshot it writes: the log always keeps room for one
    /// more snapshot, and a reclaim that ate into that room would leave the next one
    /// writing past the end of the area.
    fn reclaim(&mut self) -> std::io::Result<()> {
        let dead =
            self.entries.iter().take_while(|&&position| self.staging.index.live(position) == 0).count();
        if dead == 0 {
            return Ok(());
        }
        let freed = self.entries.get(dead).copied().unwrap_or(self.area.tail()) - self.area.head;
        if self.area.length - freed + 2 * SNAPSHOT_ENTRY_BYTES > self.area.len {
            return Ok(());
        }
        let position = self.area.tail();
        let mut entry = vec![0u8; ENTRY_HEADER_BYTES as usize];
        self.staging.committed.snapshot().encode(&mut entry);
        let payload_bytes = entry.len() as u64 - ENTRY_HEADER_BYTES;
        entry.resize(entry_bytes(payload_bytes) as usize, 0);
        debug_assert_eq!(entry.len() as u64, SNAPSHOT_ENTRY_BYTES);
        seal_entry(&mut entry, RECORD_SNAPSHOT, payload_bytes as u32, position);
        self.area.write(position, &entry)?;
        let mut dropped = 0;
        while let Some(&front) = self.entries.front() {
            if self.staging.index.live(front) != 0 {
                break;
            }
            self.entries.pop_front();
            dropped += 1;
        }
        let end = position + entry.len() as u64;
        let head = self.entries.front().copied().unwrap_or(position);
        self.commit(head, end - head)?;
        self.entries.push_back(position);
        self.staging.statistics.reclaimed += dropped;
        self.staging.statistics.records += 1;
        self.staging.statistics.bytes_written += entry.len() as u64;
        Ok(())
    }

    /// Writes the staged entries of `run` at the tail and commits them.
    fn commit_run(&mut self, run: Range<usize>) -> Result<(), LogError> {
        let tail = self.area.tail();
        self.staging.seal(run.clone(), |entry, at, frame| {
            seal_entry(frame, entry.kind, entry.payload_bytes, tail + at);
        });
        let frames = self.staging.frames(run.clone());
        let bytes = frames.len() as u64;
        let written = self.area.write(tail, frames);
        let written = written.and_then(|()| self.commit(self.area.head, self.area.length + bytes));
        written.map_err(|e| LogError::io(&self.area.name, e))?;
        let entries = &mut self.entries;
        self.staging.commit(run.end, |_, at| {
            entries.push_back(tail + at);
            EntryPosition(tail + at)
        });
        self.staging.statistics.flushes += 1;
        Ok(())
    }

    /// The log id stored when the region was created.
    pub fn log_id(&self) -> u128 {
        self.log_id
    }

    /// Bytes of the log area.
    pub fn area_bytes(&self) -> u64 {
        self.area.len
    }

    /// Bytes the committed log occupies.
    pub fn used_bytes(&self) -> u64 {
        self.area.length
    }

    /// How the mapped file persists stores, as [`PmemOptions::flush`] resolved for its file
    /// system when it was opened; `None` for a region given to [`PmemLog::recover`].
    pub fn persistence(&self) -> Option<Persistence> {
        self.persistence
    }

    /// The region, for inspection.
    pub fn region(&self) -> &dyn PersistentMemory {
        &*self.area.region
    }
}

impl StagedStore for PmemLog {
    type Address = EntryPosition;
    const RECORD: &'static str = "entry";

    fn staging(&self) -> &Staging<EntryPosition> {
        &self.staging
    }

    fn staging_mut(&mut self) -> &mut Staging<EntryPosition> {
        &mut self.staging
    }

    /// Commits the staged entries in as many runs as the free space needs: when the rest
    /// does not fit, reclaim first, then commit the longest run that fits. A run that
    /// cannot take even one entry is [`LogError::Full`]; the runs committed so far stay
    /// committed (their tickets are reported only when everything is).
    fn write_staged(&mut self) -> Result<(), LogError> {
        loop {
            let staged = self.staging.uncommitted();
            if staged.is_empty() {
                return Ok(());
            }
            let remaining = self.staging.frames(staged.clone()).len() as u64;
            if self.area.length + remaining + SNAPSHOT_ENTRY_BYTES > self.area.len {
                self.reclaim().map_err(|e| LogError::io(&self.area.name, e))?;
            }
            let available = self.area.len - self.area.length - SNAPSHOT_ENTRY_BYTES;
            let start = self.staging.records()[staged.start].start;
            let mut end = staged.start;
            while end < staged.end && (self.staging.frame_end(end) - start) as u64 <= available {
                end += 1;
            }
            if end == staged.start {
                return Err(LogError::Full { needed: remaining, available });
            }
            self.commit_run(staged.start..end)?;
        }
    }

    fn read_stored(&self, position: EntryPosition, payload_bytes: u32) -> Result<Record, LogError> {
        let mut entry = vec![0u8; entry_bytes(u64::from(payload_bytes)) as usize];
        self.area.read(position.0, &mut entry);
        let corrupt = |reason| LogError::corrupt(&self.area.name, self.area.physical(position.0), reason);
        let (kind, payload, _) = parse_entry(&Bytes::from(entry), 0, position.0).map_err(corrupt)?;
        Record::decode(kind, &payload).map_err(|e| corrupt(format!("entry does not decode: {e}")))
    }

    fn locate(&self, at: RecordAt<EntryPosition>) -> (PathBuf, u64) {
        match at {
            RecordAt::Stored { address, .. } => (self.area.name.clone(), self.area.physical(address.0)),
            RecordAt::Staged(_) => (self.area.name.clone(), 0),
        }
    }
}
