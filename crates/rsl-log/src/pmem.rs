//! The persistent-memory log: a circular log in a mapped region with the layout of the
//! verified log in "PoWER Never Corrupts" (OSDI 2025).
//!
//! ```text
//! 0    global metadata: version, region-metadata length, program GUID    + CRC
//! 40   region metadata: region size, log area length, log id              + CRC
//! 80   commit word: one of two 8-byte values, selecting a log metadata copy
//! 88   log metadata copy 0: log length, padding, head (virtual position) + CRC
//! 128  log metadata copy 1: same
//! 256  log area: byte n holds virtual position p where p mod area length = n
//! ```
//!
//! An append writes entries past the tail (free space, not part of the log), writes the
//! inactive metadata copy with the new length (and head), persists both, then flips the
//! commit word (an aligned 8-byte store, atomic on persistent memory) and persists it.
//! A crash before the flip leaves the old metadata in force and the new bytes outside the
//! log; a crash after it finds the new copy complete. Every entry also carries a CRC32C
//! seeded with its virtual position, to detect media corruption.
//!
//! Space is reclaimed from the head: when a flush does not fit, a snapshot entry (promise,
//! chosen hint, floor) is appended and the head advanced past every leading entry whose
//! proposals are all superseded or truncated (in committed state), in one commit; the
//! buffered entries then commit in as many runs as the free space needs.
//!
//! Persistence goes through [`PersistentMemory`]: on a file mapping ([`MappedFile`]) it is
//! cache-line write-back plus a store fence in DAX mode (the mapping *is* persistent
//! memory), and `msync` otherwise (a page-cache mapping is only durable once written
//! back). On the crash simulator (`sim::SimPmem`, cargo feature `sim`) it is a model of
//! which 8-byte chunks may persist at a crash.

use std::collections::VecDeque;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use memmap2::MmapMut;
use rsl_core::{Ballot, DurableState, PersistRequest, Proposal, Slot};

use crate::codec::{encode_persist, Record, RECORD_PERSIST, RECORD_SNAPSHOT, RECORD_TRUNCATE};
use crate::error::LogError;
use crate::state::{Location, Replay, SlotIndex, Summary};
use crate::store::{Cut, LogStatistics, LogStore, RecoveryPolicy, RecoveryReport, Tickets};
use crate::sys::{self, CacheLineFlush};
use crate::vfs::{open_read_write, TEMPORARY_SUFFIX};

/// Offset of the global metadata.
pub const GLOBAL_METADATA_POS: u64 = 0;
/// Offset of the region metadata.
pub const REGION_METADATA_POS: u64 = 40;
/// Offset of the commit word.
pub const COMMIT_WORD_POS: u64 = 80;
/// Offsets of the two log metadata copies.
pub const LOG_METADATA_POS: [u64; 2] = [88, 128];
/// Offset of the log area.
pub const LOG_AREA_POS: u64 = 256;
/// The two values of the commit word: which log metadata copy is in force. Complements of
/// each other, so no single corruption turns one into the other.
pub const COMMIT_WORD: [u64; 2] = [0x4e7b_11d0_93c6_a25f, !0x4e7b_11d0_93c6_a25f];
/// Identifies a region written by this program.
pub const PROGRAM_GUID: u128 = 0x7c1e_5a90_d2f4_4b63_8a0d_e6b1_39c5_f270;
/// The layout version this build writes and reads.
pub const PROGRAM_VERSION: u64 = 1;
/// Bytes of region metadata (without its CRC).
pub const REGION_METADATA_BYTES: u64 = 32;
/// Bytes of an entry header.
pub const ENTRY_HEADER_BYTES: u64 = 16;
/// Entries start at multiples of this.
pub const ENTRY_ALIGNMENT: u64 = 8;
/// The smallest log area.
pub const LOG_AREA_BYTES_MIN: u64 = 256;
/// Room always kept free for the snapshot entry that reclaiming space writes.
const SNAPSHOT_ENTRY_BYTES: u64 = 48;
const _: () = assert!(SNAPSHOT_ENTRY_BYTES == ENTRY_HEADER_BYTES + 32);
const _: () = assert!(LOG_METADATA_POS[1] + 40 <= LOG_AREA_POS);

/// A region of (simulated or real) persistent memory.
///
/// Writes land in a volatile view at once; they become persistent after
/// [`flush`](PersistentMemory::flush) of their range and then a
/// [`fence`](PersistentMemory::fence). Until then a crash may persist any subset of the
/// written 8-byte aligned chunks.
pub trait PersistentMemory: Send + fmt::Debug {
    /// Region size in bytes.
    fn len(&self) -> u64;
    /// Whether the region is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// A name for messages (the file path).
    fn name(&self) -> &Path;
    /// Copies bytes at `offset` into `buf`. Panics if out of range.
    fn read(&self, offset: u64, buf: &mut [u8]);
    /// Stores `bytes` at `offset`. Panics if out of range.
    fn write(&mut self, offset: u64, bytes: &[u8]);
    /// Starts writing back `len` bytes at `offset`.
    fn flush(&mut self, offset: u64, len: u64) -> io::Result<()>;
    /// Waits until every flushed range is persistent.
    fn fence(&mut self) -> io::Result<()>;
}

/// How a [`MappedFile`] makes stores persistent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Persistence {
    /// `msync` of the written range: right for any file in the page cache.
    Msync,
    /// Cache-line write-back and a store fence: right only for a DAX mapping of
    /// persistent memory.
    CacheLines(CacheLineFlush),
}

/// A file mapped into memory (memmap2).
pub struct MappedFile {
    path: PathBuf,
    _file: File,
    map: MmapMut,
    persistence: Persistence,
    /// msync mode: the range flushed since the last fence.
    dirty: Option<(u64, u64)>,
}

impl fmt::Debug for MappedFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MappedFile")
            .field("path", &self.path)
            .field("len", &self.map.len())
            .field("persistence", &self.persistence)
            .finish()
    }
}

impl MappedFile {
    /// Maps `file` (already locked by the caller) at `path`. With `dax`, persistence is
    /// cache-line write-back where the CPU has it; otherwise (and off x86_64) `msync`.
    fn map(path: &Path, file: File, dax: bool) -> io::Result<MappedFile> {
        let map = sys::map_file(&file)?;
        let persistence = match (dax, sys::detect_cache_line_flush()) {
            (true, Some(method)) => Persistence::CacheLines(method),
            _ => Persistence::Msync,
        };
        Ok(MappedFile { path: path.to_path_buf(), _file: file, map, persistence, dirty: None })
    }

    /// How this mapping persists stores.
    pub fn persistence(&self) -> Persistence {
        self.persistence
    }
}

impl PersistentMemory for MappedFile {
    fn len(&self) -> u64 {
        self.map.len() as u64
    }

    fn name(&self) -> &Path {
        &self.path
    }

    fn read(&self, offset: u64, buf: &mut [u8]) {
        let start = offset as usize;
        buf.copy_from_slice(&self.map[start..start + buf.len()]);
    }

    fn write(&mut self, offset: u64, bytes: &[u8]) {
        let start = offset as usize;
        self.map[start..start + bytes.len()].copy_from_slice(bytes);
    }

    fn flush(&mut self, offset: u64, len: u64) -> io::Result<()> {
        match self.persistence {
            Persistence::Msync => {
                let end = offset + len;
                self.dirty = Some(match self.dirty {
                    Some((start, stop)) => (start.min(offset), stop.max(end)),
                    None => (offset, end),
                });
            }
            Persistence::CacheLines(method) => {
                sys::write_back(&self.map[offset as usize..(offset + len) as usize], method);
            }
        }
        Ok(())
    }

    fn fence(&mut self) -> io::Result<()> {
        match self.persistence {
            Persistence::Msync => {
                if let Some((start, stop)) = self.dirty.take() {
                    self.map.flush_range(start as usize, (stop - start) as usize)?;
                }
            }
            Persistence::CacheLines(_) => sys::store_fence(),
        }
        Ok(())
    }
}

/// Options of a [`PmemLog`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PmemOptions {
    /// Size of the region (file) when it is created, metadata included. Default 64 MiB.
    pub capacity_bytes: u64,
    /// The file is on a DAX file system (its mapping is persistent memory): persist with
    /// cache-line write-back and a fence instead of `msync`. Setting this for a file that
    /// is not DAX loses durability. Default false.
    pub dax: bool,
    /// An identifier stored in the region metadata when the region is created.
    pub log_id: u128,
}

impl Default for PmemOptions {
    fn default() -> Self {
        PmemOptions { capacity_bytes: 64 << 20, dax: false, log_id: 0 }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PmemLocation {
    Buffered { record: u32, index: u32 },
    Stored { position: u64, payload_bytes: u32, index: u32 },
}

impl Location for PmemLocation {
    fn container(&self) -> Option<u64> {
        match self {
            PmemLocation::Buffered { .. } => None,
            PmemLocation::Stored { position, .. } => Some(*position),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct BufferedEntry {
    start: usize,
    payload_bytes: u32,
    kind: u8,
    promise: Option<Ballot>,
    chosen: Option<Slot>,
    floor: Option<Slot>,
}

/// The persistent-memory log; see the module docs.
pub struct PmemLog {
    region: Box<dyn PersistentMemory>,
    name: PathBuf,
    log_id: u128,
    area_len: u64,
    head: u64,
    length: u64,
    active: usize,
    /// Virtual positions of the committed entries, oldest first.
    entries: VecDeque<u64>,
    index: SlotIndex<PmemLocation>,
    committed: Summary,
    buffer: Vec<u8>,
    buffered: Vec<BufferedEntry>,
    buffered_slots: Vec<(Slot, u32, u32)>,
    /// Buffered entries (a prefix) already committed by an interrupted flush.
    committed_records: usize,
    /// How many of `buffered_slots` belong to committed entries.
    committed_slots: usize,
    tickets: Tickets,
    statistics: LogStatistics,
}

impl fmt::Debug for PmemLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PmemLog")
            .field("region", &self.region)
            .field("area_len", &self.area_len)
            .field("head", &self.head)
            .field("length", &self.length)
            .field("entries", &self.entries.len())
            .field("buffered_bytes", &self.buffer.len())
            .field("appended_ticket", &self.tickets.appended)
            .field("durable_ticket", &self.tickets.durable)
            .finish()
    }
}

fn crc64_field(bytes: &[u8]) -> u64 {
    u64::from(crc32c::crc32c(bytes))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

fn u128_at(bytes: &[u8], at: usize) -> u128 {
    u128::from_le_bytes(bytes[at..at + 16].try_into().expect("16 bytes"))
}

fn aligned(len: u64) -> u64 {
    len.div_ceil(ENTRY_ALIGNMENT) * ENTRY_ALIGNMENT
}

fn entry_crc(position: u64, header: &[u8], payload: &[u8]) -> u32 {
    let mut zeroed = [0u8; ENTRY_HEADER_BYTES as usize];
    zeroed.copy_from_slice(header);
    zeroed[8..12].fill(0);
    let crc = crc32c::crc32c(&position.to_le_bytes());
    let crc = crc32c::crc32c_append(crc, &zeroed);
    crc32c::crc32c_append(crc, payload)
}

fn seal_entry(entry: &mut [u8], kind: u8, payload_bytes: u32, position: u64) {
    entry[0..4].copy_from_slice(&payload_bytes.to_le_bytes());
    entry[4] = kind;
    entry[5..16].fill(0);
    let (header, rest) = entry.split_at_mut(ENTRY_HEADER_BYTES as usize);
    let crc = entry_crc(position, header, &rest[..payload_bytes as usize]);
    header[8..12].copy_from_slice(&crc.to_le_bytes());
}

fn encode_log_metadata(length: u64, head: u64) -> [u8; 40] {
    let mut bytes = [0u8; 40];
    bytes[0..8].copy_from_slice(&length.to_le_bytes());
    bytes[16..32].copy_from_slice(&u128::from(head).to_le_bytes());
    let crc = crc64_field(&bytes[0..32]);
    bytes[32..40].copy_from_slice(&crc.to_le_bytes());
    bytes
}

impl PmemLog {
    /// Opens the log in file `path`, creating and formatting it (`options.capacity_bytes`)
    /// if it does not exist, and recovers it under `policy`. The file is locked (`flock`)
    /// while open.
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
        let region = MappedFile::map(path, file, options.dax).map_err(|e| LogError::io(path, e))?;
        let (log, state, mut report) = PmemLog::recover(Box::new(region), policy)?;
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
        // Allocate every block now: a DAX mapping must not fault in new blocks later
        // (their allocation would need an fsync the log never issues).
        if !sys::allocate(&file, options.capacity_bytes).map_err(io)? {
            file.set_len(options.capacity_bytes).map_err(io)?;
        }
        let sync_file = file.try_clone().map_err(io)?;
        let mut region = MappedFile::map(&temporary, file, options.dax).map_err(io)?;
        PmemLog::format(&mut region, options.log_id)?;
        drop(region);
        sync_file.sync_all().map_err(io)?;
        std::fs::rename(&temporary, path).map_err(|e| LogError::io(path, e))?;
        let parent = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        File::open(parent).and_then(|d| d.sync_all()).map_err(|e| LogError::io(parent, e))?;
        Ok(())
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
        let mut bytes = [0u8; LOG_AREA_POS as usize];
        bytes[0..8].copy_from_slice(&PROGRAM_VERSION.to_le_bytes());
        bytes[8..16].copy_from_slice(&REGION_METADATA_BYTES.to_le_bytes());
        bytes[16..32].copy_from_slice(&PROGRAM_GUID.to_le_bytes());
        let crc = crc64_field(&bytes[0..32]);
        bytes[32..40].copy_from_slice(&crc.to_le_bytes());
        bytes[40..48].copy_from_slice(&size.to_le_bytes());
        bytes[48..56].copy_from_slice(&(size - LOG_AREA_POS).to_le_bytes());
        bytes[56..72].copy_from_slice(&log_id.to_le_bytes());
        let crc = crc64_field(&bytes[40..72]);
        bytes[72..80].copy_from_slice(&crc.to_le_bytes());
        bytes[80..88].copy_from_slice(&COMMIT_WORD[0].to_le_bytes());
        bytes[88..128].copy_from_slice(&encode_log_metadata(0, 0));
        let name = region.name().to_path_buf();
        region.write(0, &bytes);
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
        let corrupt = |offset: u64, reason: String| LogError::corrupt(&name, offset, reason);
        if size < LOG_AREA_POS + LOG_AREA_BYTES_MIN {
            return Err(corrupt(0, format!("region of {size} bytes is too short for a log")));
        }
        let mut meta = [0u8; LOG_AREA_POS as usize];
        region.read(0, &mut meta);

        let guid = u128_at(&meta, 16);
        if guid != PROGRAM_GUID {
            return Err(corrupt(16, format!("not an rsl persistent-memory log: program GUID {guid:#034x}")));
        }
        let (stored, computed) = (u64_at(&meta, 32), crc64_field(&meta[0..32]));
        if stored != computed {
            return Err(corrupt(32, format!("global metadata CRC {stored:#x}, computed {computed:#x}")));
        }
        let version = u64_at(&meta, 0);
        if version != PROGRAM_VERSION {
            return Err(corrupt(0, format!("layout version {version}, this build reads {PROGRAM_VERSION}")));
        }
        let region_metadata_bytes = u64_at(&meta, 8);
        if region_metadata_bytes != REGION_METADATA_BYTES {
            return Err(corrupt(
                8,
                format!("region metadata of {region_metadata_bytes} bytes, expected {REGION_METADATA_BYTES}"),
            ));
        }
        let (stored, computed) = (u64_at(&meta, 72), crc64_field(&meta[40..72]));
        if stored != computed {
            return Err(corrupt(72, format!("region metadata CRC {stored:#x}, computed {computed:#x}")));
        }
        let region_size = u64_at(&meta, 40);
        if region_size != size {
            return Err(corrupt(
                40,
                format!("region metadata says {region_size} bytes, the region has {size}"),
            ));
        }
        let area_len = u64_at(&meta, 48);
        if area_len != size - LOG_AREA_POS {
            return Err(corrupt(48, format!("log area of {area_len} bytes does not fit a region of {size}")));
        }
        let log_id = u128_at(&meta, 56);
        let word = u64_at(&meta, COMMIT_WORD_POS as usize);
        let active = match COMMIT_WORD.iter().position(|&w| w == word) {
            Some(active) => active,
            None => {
                return Err(corrupt(
                    COMMIT_WORD_POS,
                    format!("commit word {word:#018x} is neither commit value"),
                ))
            }
        };
        let at = LOG_METADATA_POS[active] as usize;
        let (stored, computed) = (u64_at(&meta, at + 32), crc64_field(&meta[at..at + 32]));
        if stored != computed {
            return Err(corrupt(
                at as u64 + 32,
                format!("log metadata copy {active} CRC {stored:#x}, computed {computed:#x}"),
            ));
        }
        let length = u64_at(&meta, at);
        let head = u128_at(&meta, at + 16);
        if u64_at(&meta, at + 8) != 0 {
            return Err(corrupt(at as u64 + 8, "log metadata padding is not zero".into()));
        }
        if length > area_len {
            return Err(corrupt(
                at as u64,
                format!("log length {length} exceeds the log area of {area_len}"),
            ));
        }
        let head = match u64::try_from(head) {
            Ok(head) if head.checked_add(length).is_some() => head,
            _ => return Err(corrupt(at as u64 + 16, format!("log head {head} out of range"))),
        };

        let mut log = PmemLog {
            region,
            name: name.clone(),
            log_id,
            area_len,
            head,
            length,
            active,
            entries: VecDeque::new(),
            index: SlotIndex::default(),
            committed: Summary::default(),
            buffer: Vec::new(),
            buffered: Vec::new(),
            buffered_slots: Vec::new(),
            committed_records: 0,
            committed_slots: 0,
            tickets: Tickets::default(),
            statistics: LogStatistics::default(),
        };
        let mut report = RecoveryReport { files: 1, ..RecoveryReport::default() };
        let mut replay = Replay::<PmemLocation>::default();
        let mut area = vec![0u8; length as usize];
        log.read_virtual(head, &mut area);
        let area = Bytes::from(area);
        let mut offset = 0u64;
        let mut damage = None;
        while offset < length {
            let position = head + offset;
            match log.parse_entry(&area, offset, position) {
                Ok((kind, payload, bytes)) => match Record::decode(kind, &payload) {
                    Ok(record) => {
                        let payload_bytes = payload.len() as u32;
                        replay.apply(record, |index| PmemLocation::Stored { position, payload_bytes, index });
                        log.entries.push_back(position);
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
            let physical = log.physical(position);
            let reason = format!("entry at log position {position}: {reason}");
            if policy != RecoveryPolicy::SalvagePrefix {
                return Err(corrupt(physical, reason));
            }
            report.salvaged =
                Some(Cut { file: name.clone(), offset: physical, bytes_dropped: length - offset, reason });
            log.commit(head, offset).map_err(|e| LogError::io(&name, e))?;
        }
        report.records = replay.records;
        let (index, state) = replay.finish();
        log.index = index;
        log.committed = log.index.summary();
        report.log_start = log.committed.floor;
        // What was read may sit in CPU caches or the page cache only: persist it before
        // anyone acts on it.
        log.region.flush(0, size).map_err(|e| LogError::io(&name, e))?;
        log.region.fence().map_err(|e| LogError::io(&name, e))?;
        Ok((log, state, report))
    }

    /// Verifies the entry at `offset` of `area` (the committed log read from the head);
    /// returns its kind, payload and size including padding.
    fn parse_entry(&self, area: &Bytes, offset: u64, position: u64) -> Result<(u8, Bytes, u64), String> {
        let remaining = area.len() as u64 - offset;
        if remaining < ENTRY_HEADER_BYTES {
            return Err(format!("{remaining} bytes left, an entry header needs {ENTRY_HEADER_BYTES}"));
        }
        let at = offset as usize;
        let header = &area[at..at + ENTRY_HEADER_BYTES as usize];
        let payload_bytes = u64::from(u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")));
        let bytes = aligned(ENTRY_HEADER_BYTES + payload_bytes);
        if bytes > remaining {
            return Err(format!("entry of {bytes} bytes runs past the log's end ({remaining} bytes left)"));
        }
        let payload =
            area.slice(at + ENTRY_HEADER_BYTES as usize..at + (ENTRY_HEADER_BYTES + payload_bytes) as usize);
        let stored = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
        let computed = entry_crc(position, header, &payload);
        if stored != computed {
            return Err(format!("entry CRC {stored:#010x}, computed {computed:#010x}"));
        }
        Ok((header[4], payload, bytes))
    }

    fn physical(&self, position: u64) -> u64 {
        LOG_AREA_POS + position % self.area_len
    }

    fn read_virtual(&self, position: u64, buf: &mut [u8]) {
        let start = position % self.area_len;
        let first = (buf.len() as u64).min(self.area_len - start) as usize;
        self.region.read(LOG_AREA_POS + start, &mut buf[..first]);
        if first < buf.len() {
            self.region.read(LOG_AREA_POS, &mut buf[first..]);
        }
    }

    fn write_virtual(&mut self, position: u64, bytes: &[u8]) -> io::Result<()> {
        let start = position % self.area_len;
        let first = (bytes.len() as u64).min(self.area_len - start) as usize;
        self.region.write(LOG_AREA_POS + start, &bytes[..first]);
        self.region.flush(LOG_AREA_POS + start, first as u64)?;
        if first < bytes.len() {
            self.region.write(LOG_AREA_POS, &bytes[first..]);
            self.region.flush(LOG_AREA_POS, (bytes.len() - first) as u64)?;
        }
        Ok(())
    }

    /// Makes (`head`, `length`) the log: persist the inactive metadata copy together with
    /// everything flushed before, then flip and persist the commit word.
    fn commit(&mut self, head: u64, length: u64) -> io::Result<()> {
        let copy = 1 - self.active;
        self.region.write(LOG_METADATA_POS[copy], &encode_log_metadata(length, head));
        self.region.flush(LOG_METADATA_POS[copy], 40)?;
        self.region.fence()?;
        self.region.write(COMMIT_WORD_POS, &COMMIT_WORD[copy].to_le_bytes());
        self.region.flush(COMMIT_WORD_POS, 8)?;
        self.region.fence()?;
        self.active = copy;
        self.head = head;
        self.length = length;
        self.statistics.syncs += 2;
        Ok(())
    }

    /// Appends a snapshot and advances the head past every leading entry with no live
    /// proposal, in one commit. Does nothing when the first entry is live.
    fn reclaim(&mut self) -> io::Result<()> {
        match self.entries.front() {
            Some(&front) if self.index.live(front) == 0 => {}
            _ => return Ok(()),
        }
        let position = self.head + self.length;
        let mut entry = vec![0u8; ENTRY_HEADER_BYTES as usize];
        self.committed.snapshot().encode(&mut entry);
        let payload_bytes = entry.len() as u64 - ENTRY_HEADER_BYTES;
        entry.resize(aligned(entry.len() as u64) as usize, 0);
        debug_assert_eq!(entry.len() as u64, SNAPSHOT_ENTRY_BYTES);
        seal_entry(&mut entry, RECORD_SNAPSHOT, payload_bytes as u32, position);
        self.write_virtual(position, &entry)?;
        let mut dropped = 0;
        while let Some(&front) = self.entries.front() {
            if self.index.live(front) != 0 {
                break;
            }
            self.entries.pop_front();
            dropped += 1;
        }
        let end = position + entry.len() as u64;
        let head = self.entries.front().copied().unwrap_or(position);
        self.commit(head, end - head)?;
        self.entries.push_back(position);
        self.statistics.reclaimed += dropped;
        self.statistics.records += 1;
        self.statistics.bytes_written += entry.len() as u64;
        Ok(())
    }

    fn buffer_entry(&mut self, kind: u8, encode: impl FnOnce(&mut Vec<u8>)) -> Result<u32, LogError> {
        let start = self.buffer.len();
        self.buffer.resize(start + ENTRY_HEADER_BYTES as usize, 0);
        encode(&mut self.buffer);
        let payload_bytes = (self.buffer.len() - start) as u64 - ENTRY_HEADER_BYTES;
        let entry_bytes = aligned(ENTRY_HEADER_BYTES + payload_bytes);
        let max = self.area_len - SNAPSHOT_ENTRY_BYTES;
        if entry_bytes > max || payload_bytes > u64::from(u32::MAX) {
            self.buffer.truncate(start);
            return Err(self.tickets.poison(LogError::TooLarge { bytes: entry_bytes, max }));
        }
        self.buffer.resize(start + entry_bytes as usize, 0);
        let record = u32::try_from(self.buffered.len()).expect("buffered entries fit in u32");
        self.buffered.push(BufferedEntry {
            start,
            payload_bytes: payload_bytes as u32,
            kind,
            promise: None,
            chosen: None,
            floor: None,
        });
        Ok(record)
    }

    /// Where buffered entry `i` ends in the buffer.
    fn entry_end(&self, i: usize) -> usize {
        self.buffered.get(i + 1).map_or(self.buffer.len(), |next| next.start)
    }

    /// Commits the buffered entries, in as many runs as the free space needs: when the
    /// rest does not fit, reclaim first, then commit the longest run that fits. A run
    /// that cannot take even one entry is [`LogError::Full`]; the runs committed so far
    /// stay committed (their tickets are reported only when everything is).
    fn write_buffered(&mut self) -> Result<(), LogError> {
        while self.committed_records < self.buffered.len() {
            let first = self.committed_records;
            let start = self.buffered[first].start;
            let remaining = (self.buffer.len() - start) as u64;
            if self.length + remaining + SNAPSHOT_ENTRY_BYTES > self.area_len {
                self.reclaim().map_err(|e| self.poison_io(e))?;
            }
            let available = self.area_len - self.length - SNAPSHOT_ENTRY_BYTES;
            let mut end = first;
            while end < self.buffered.len() && (self.entry_end(end) - start) as u64 <= available {
                end += 1;
            }
            if end == first {
                return Err(LogError::Full { needed: remaining, available });
            }
            self.commit_run(first, end)?;
        }
        self.buffer.clear();
        self.buffered.clear();
        self.buffered_slots.clear();
        self.committed_records = 0;
        self.committed_slots = 0;
        Ok(())
    }

    /// Writes buffered entries `first..end` at the tail and commits them.
    fn commit_run(&mut self, first: usize, end: usize) -> Result<(), LogError> {
        let start = self.buffered[first].start;
        let stop = self.entry_end(end - 1);
        let bytes = (stop - start) as u64;
        let tail = self.head + self.length;
        for i in first..end {
            let entry = self.buffered[i];
            let position = tail + (entry.start - start) as u64;
            seal_entry(&mut self.buffer[entry.start..], entry.kind, entry.payload_bytes, position);
        }
        let buffer = std::mem::take(&mut self.buffer);
        let written = self
            .write_virtual(tail, &buffer[start..stop])
            .and_then(|()| self.commit(self.head, self.length + bytes));
        self.buffer = buffer;
        written.map_err(|e| self.poison_io(e))?;
        for number in first..end {
            let entry = self.buffered[number];
            let position = tail + (entry.start - start) as u64;
            self.entries.push_back(position);
            self.committed.observe(entry.promise, entry.chosen, entry.floor);
            while let Some(&(slot, owner, index)) = self.buffered_slots.get(self.committed_slots) {
                if owner as usize != number {
                    break;
                }
                let to = PmemLocation::Stored { position, payload_bytes: entry.payload_bytes, index };
                self.index.commit_put(slot, PmemLocation::Buffered { record: owner, index }, to);
                self.committed_slots += 1;
            }
            if let Some(below) = entry.floor {
                self.index.commit_truncate(below);
            }
        }
        self.committed_records = end;
        self.statistics.records += (end - first) as u64;
        self.statistics.bytes_written += bytes;
        self.statistics.flushes += 1;
        Ok(())
    }

    fn poison_io(&mut self, error: io::Error) -> LogError {
        self.tickets.poison(LogError::io(&self.name, error))
    }

    fn read_stored(&self, position: u64, payload_bytes: u32) -> Result<Record, LogError> {
        let bytes = aligned(ENTRY_HEADER_BYTES + u64::from(payload_bytes));
        let mut entry = vec![0u8; bytes as usize];
        self.read_virtual(position, &mut entry);
        let entry = Bytes::from(entry);
        let physical = self.physical(position);
        let (kind, payload, _) = self
            .parse_entry(&entry, 0, position)
            .map_err(|reason| LogError::corrupt(&self.name, physical, reason))?;
        Record::decode(kind, &payload)
            .map_err(|e| LogError::corrupt(&self.name, physical, format!("entry does not decode: {e}")))
    }

    /// The log id stored when the region was created.
    pub fn log_id(&self) -> u128 {
        self.log_id
    }

    /// Bytes of the log area.
    pub fn area_bytes(&self) -> u64 {
        self.area_len
    }

    /// Bytes the committed log occupies.
    pub fn used_bytes(&self) -> u64 {
        self.length
    }

    /// The region, for inspection.
    pub fn region(&self) -> &dyn PersistentMemory {
        &*self.region
    }
}

impl LogStore for PmemLog {
    fn append(&mut self, request: &PersistRequest) -> Result<(), LogError> {
        self.tickets.admit(request.ticket)?;
        if !request.is_empty() {
            let record = self.buffer_entry(RECORD_PERSIST, |out| encode_persist(request, out))?;
            let buffered = &mut self.buffered[record as usize];
            buffered.promise = request.promise;
            buffered.chosen = request.chosen;
            self.index.observe(request.promise, request.chosen);
            for (i, proposal) in request.proposals.iter().enumerate() {
                let index = u32::try_from(i).expect("proposal index fits in u32");
                if self.index.put(proposal.slot, PmemLocation::Buffered { record, index }) {
                    self.buffered_slots.push((proposal.slot, record, index));
                }
            }
        }
        self.tickets.appended = request.ticket;
        self.statistics.appends += 1;
        Ok(())
    }

    fn truncate_below(&mut self, below: Slot) -> Result<(), LogError> {
        self.tickets.check_usable()?;
        if below <= self.index.summary().floor {
            return Ok(());
        }
        let record = self.buffer_entry(RECORD_TRUNCATE, |out| Record::Truncate { below }.encode(out))?;
        self.buffered[record as usize].floor = Some(below);
        self.index.truncate(below);
        Ok(())
    }

    fn flush(&mut self) -> Result<u64, LogError> {
        self.tickets.check_usable()?;
        if !self.buffered.is_empty() {
            self.write_buffered()?;
        }
        self.tickets.durable = self.tickets.appended;
        Ok(self.tickets.durable)
    }

    fn needs_flush(&self) -> bool {
        !self.buffered.is_empty() || self.tickets.durable < self.tickets.appended
    }

    fn durable_ticket(&self) -> u64 {
        self.tickets.durable
    }

    fn appended_ticket(&self) -> u64 {
        self.tickets.appended
    }

    fn read_range(&mut self, first: Slot, last: Slot, bytes_max: u64) -> Result<Vec<Proposal>, LogError> {
        self.tickets.check_usable()?;
        let locations: Vec<(Slot, PmemLocation)> = self.index.range(first, last).collect();
        let mut out = Vec::new();
        let mut total = 0u64;
        let mut cached: Option<((bool, u64), Record)> = None;
        for (slot, location) in locations {
            let (key, index) = match location {
                PmemLocation::Buffered { record, index } => ((true, u64::from(record)), index),
                PmemLocation::Stored { position, index, .. } => ((false, position), index),
            };
            if cached.as_ref().is_none_or(|(k, _)| *k != key) {
                let record = match location {
                    PmemLocation::Buffered { record, .. } => {
                        let entry = self.buffered[record as usize];
                        let start = entry.start + ENTRY_HEADER_BYTES as usize;
                        let payload =
                            Bytes::copy_from_slice(&self.buffer[start..start + entry.payload_bytes as usize]);
                        Record::decode(entry.kind, &payload).expect("buffered entries decode")
                    }
                    PmemLocation::Stored { position, payload_bytes, .. } => {
                        self.read_stored(position, payload_bytes)?
                    }
                };
                cached = Some((key, record));
            }
            let (_, record) = cached.as_ref().expect("just cached");
            let proposal = match record {
                Record::Persist { proposals, .. } => proposals.get(index as usize).filter(|p| p.slot == slot),
                _ => None,
            };
            let Some(proposal) = proposal else {
                let offset = if key.0 { 0 } else { self.physical(key.1) };
                return Err(LogError::corrupt(
                    &self.name,
                    offset,
                    format!("entry holds no proposal {index} for slot {slot}"),
                ));
            };
            total += crate::codec::proposal_encoded_bytes(proposal);
            if !out.is_empty() && total > bytes_max {
                break;
            }
            out.push(proposal.clone());
        }
        Ok(out)
    }

    fn log_start(&self) -> Slot {
        self.index.summary().floor
    }

    fn last_slot(&self) -> Slot {
        self.index.last_slot()
    }

    fn statistics(&self) -> LogStatistics {
        self.statistics
    }
}
