//! The file journal: a directory of segment files, each named by its first slot and
//! sequence number, holding CRC32C-framed records; group commit with one `fdatasync` per
//! flush.
//!
//! Layout and crash arguments are in `docs/STORAGE.md`. In short:
//! - A segment is created under a temporary name with its header and a snapshot record
//!   (promise, chosen hint, floor as of that point), synced, renamed, and the directory
//!   synced: a segment file either does not exist or starts with a valid header.
//! - A flush writes every buffered record with one `pwrite` at the tail of the active
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

use std::collections::VecDeque;
use std::fmt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use rsl_core::{DurableState, PersistRequest, Proposal, Slot};

use crate::codec::{encode_persist, Record, RECORD_PERSIST, RECORD_SNAPSHOT, RECORD_TRUNCATE};
use crate::error::LogError;
use crate::state::{Location, Replay, SlotIndex, Summary};
use crate::store::{Cut, LogStatistics, LogStore, RecoveryPolicy, RecoveryReport, Tickets};
use crate::vfs::{Directory, DirectoryLock, OsDirectory, StorageFile, LOCK_FILE, TEMPORARY_SUFFIX};

/// First bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"RSLJSEG\0";
/// First bytes of every record frame.
pub const RECORD_MAGIC: [u8; 4] = *b"RSLR";
/// The on-disk format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes of the segment header.
pub const SEGMENT_HEADER_BYTES: u64 = 64;
/// Bytes of a record frame's header.
pub const RECORD_HEADER_BYTES: u64 = 32;
/// Largest record payload accepted.
pub const RECORD_PAYLOAD_BYTES_MAX: u64 = 64 << 20;
/// Records start at multiples of this.
pub const RECORD_ALIGNMENT: u64 = 8;
/// Smallest allowed `segment_bytes_max` (tests use tiny segments to rotate often).
pub const SEGMENT_BYTES_MIN: u64 = 256;

const SEGMENT_SUFFIX: &str = ".seg";
const DAMAGED_SUFFIX: &str = ".damaged";

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

/// The name of the segment with `sequence` whose first slot is `first_slot`.
pub fn segment_name(first_slot: Slot, sequence: u64) -> String {
    format!("{:020}-{:016}{SEGMENT_SUFFIX}", first_slot.0, sequence)
}

/// Parses a segment name into (first slot, sequence).
pub fn parse_segment_name(name: &str) -> Option<(Slot, u64)> {
    let stem = name.strip_suffix(SEGMENT_SUFFIX)?;
    let (slot, sequence) = stem.split_once('-')?;
    let digits = |s: &str, width: usize| s.len() == width && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(slot, 20) || !digits(sequence, 16) {
        return None;
    }
    Some((Slot(slot.parse().ok()?), sequence.parse().ok()?))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SegmentHeader {
    sequence: u64,
    first_slot: Slot,
    previous_bytes: u64,
    preallocated: u64,
}

impl SegmentHeader {
    fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES as usize] {
        let mut bytes = [0u8; SEGMENT_HEADER_BYTES as usize];
        bytes[0..8].copy_from_slice(&SEGMENT_MAGIC);
        bytes[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.sequence.to_le_bytes());
        bytes[24..32].copy_from_slice(&self.first_slot.0.to_le_bytes());
        bytes[32..40].copy_from_slice(&self.previous_bytes.to_le_bytes());
        bytes[40..48].copy_from_slice(&self.preallocated.to_le_bytes());
        let crc = crc32c::crc32c(&bytes);
        bytes[12..16].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    fn decode(bytes: &[u8]) -> Result<SegmentHeader, (u64, String)> {
        if bytes.len() < SEGMENT_HEADER_BYTES as usize {
            return Err((0, format!("file of {} bytes is shorter than a segment header", bytes.len())));
        }
        if bytes[0..8] != SEGMENT_MAGIC {
            return Err((0, format!("not a journal segment: magic {:02x?}", &bytes[0..8])));
        }
        let version = u32_at(bytes, 8);
        if version != FORMAT_VERSION {
            return Err((8, format!("format version {version}, this build reads {FORMAT_VERSION}")));
        }
        let mut copy = [0u8; SEGMENT_HEADER_BYTES as usize];
        copy.copy_from_slice(&bytes[..SEGMENT_HEADER_BYTES as usize]);
        copy[12..16].fill(0);
        let (stored, computed) = (u32_at(bytes, 12), crc32c::crc32c(&copy));
        if stored != computed {
            return Err((12, format!("segment header CRC {stored:#010x}, computed {computed:#010x}")));
        }
        Ok(SegmentHeader {
            sequence: u64_at(bytes, 16),
            first_slot: Slot(u64_at(bytes, 24)),
            previous_bytes: u64_at(bytes, 32),
            preallocated: u64_at(bytes, 40),
        })
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

fn aligned(len: u64) -> u64 {
    len.div_ceil(RECORD_ALIGNMENT) * RECORD_ALIGNMENT
}

/// CRC32C of a frame: seeded with the segment's sequence, over the header without its CRC
/// field, then the payload. A frame copied from another segment does not verify.
fn frame_crc(sequence: u64, header: &[u8], payload: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&sequence.to_le_bytes());
    let crc = crc32c::crc32c_append(crc, &header[0..12]);
    let crc = crc32c::crc32c_append(crc, &header[16..32]);
    crc32c::crc32c_append(crc, payload)
}

/// Fills in the header of the frame whose header starts at `frame[0]` and whose payload
/// (`payload_bytes` long) follows it.
fn seal_frame(frame: &mut [u8], kind: u8, payload_bytes: u32, offset: u64, batch_start: u64, sequence: u64) {
    frame[0..4].copy_from_slice(&RECORD_MAGIC);
    frame[4] = FORMAT_VERSION as u8;
    frame[5] = kind;
    frame[6..8].fill(0);
    frame[8..12].copy_from_slice(&payload_bytes.to_le_bytes());
    frame[12..16].fill(0);
    frame[16..24].copy_from_slice(&offset.to_le_bytes());
    frame[24..32].copy_from_slice(&batch_start.to_le_bytes());
    let header_end = RECORD_HEADER_BYTES as usize;
    let (header, rest) = frame.split_at_mut(header_end);
    let crc = frame_crc(sequence, header, &rest[..payload_bytes as usize]);
    header[12..16].copy_from_slice(&crc.to_le_bytes());
}

/// A frame that verified.
#[derive(Clone, Copy, Debug)]
struct Frame {
    kind: u8,
    payload_start: u64,
    payload_bytes: u32,
    batch_start: u64,
    /// Offset of the next frame.
    end: u64,
}

/// Verifies the frame at `offset` of a segment with `sequence` whose bytes are `bytes`.
fn parse_frame(bytes: &[u8], offset: u64, sequence: u64) -> Result<Frame, String> {
    let len = bytes.len() as u64;
    if len - offset < RECORD_HEADER_BYTES {
        return Err(format!("{} bytes left, a record header needs {RECORD_HEADER_BYTES}", len - offset));
    }
    let at = offset as usize;
    let header = &bytes[at..at + RECORD_HEADER_BYTES as usize];
    if header[0..4] != RECORD_MAGIC {
        return Err(format!("record magic {:02x?}, expected {:02x?}", &header[0..4], RECORD_MAGIC));
    }
    if header[4] != FORMAT_VERSION as u8 {
        return Err(format!("record version {}, expected {FORMAT_VERSION}", header[4]));
    }
    let stated = u64_at(header, 16);
    if stated != offset {
        return Err(format!("record states offset {stated}, found at {offset}"));
    }
    let payload_bytes = u32_at(header, 8);
    if u64::from(payload_bytes) > RECORD_PAYLOAD_BYTES_MAX {
        return Err(format!("record length {payload_bytes} exceeds {RECORD_PAYLOAD_BYTES_MAX}"));
    }
    let payload_start = offset + RECORD_HEADER_BYTES;
    let payload_end = payload_start + u64::from(payload_bytes);
    if payload_end > len {
        return Err(format!("record of {payload_bytes} bytes runs past the end of the file ({len} bytes)"));
    }
    let end = aligned(payload_end);
    if end > len {
        return Err(format!("record padding runs past the end of the file ({len} bytes)"));
    }
    let payload = &bytes[payload_start as usize..payload_end as usize];
    let (stored, computed) = (u32_at(header, 12), frame_crc(sequence, header, payload));
    if stored != computed {
        return Err(format!("record CRC {stored:#010x}, computed {computed:#010x}"));
    }
    Ok(Frame { kind: header[5], payload_start, payload_bytes, batch_start: u64_at(header, 24), end })
}

/// Whether damage at `hole` in the last segment can be a torn write: every valid frame
/// after it belongs to a batch that started at or before `hole` (the unsynced last batch).
/// A frame of a batch that started after `hole` proves the bytes at `hole` were synced.
fn torn_tail_plausible(bytes: &[u8], hole: u64, sequence: u64) -> bool {
    let mut at = hole + RECORD_ALIGNMENT;
    while at + RECORD_HEADER_BYTES <= bytes.len() as u64 {
        if bytes[at as usize..at as usize + 4] == RECORD_MAGIC {
            if let Ok(frame) = parse_frame(bytes, at, sequence) {
                if frame.batch_start > hole {
                    return false;
                }
            }
        }
        at += RECORD_ALIGNMENT;
    }
    true
}

/// Where a proposal is: in the write buffer, or in a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum JournalLocation {
    Buffered { record: u32, index: u32 },
    Stored { segment: u64, offset: u64, payload_bytes: u32, index: u32 },
}

impl Location for JournalLocation {
    fn container(&self) -> Option<u64> {
        match self {
            JournalLocation::Buffered { .. } => None,
            JournalLocation::Stored { segment, .. } => Some(*segment),
        }
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

#[derive(Clone, Copy, Debug)]
struct BufferedRecord {
    start: usize,
    payload_bytes: u32,
    kind: u8,
    promise: Option<rsl_core::Ballot>,
    chosen: Option<Slot>,
    floor: Option<Slot>,
}

/// A segmented file journal; see the module docs.
pub struct FileJournal {
    dir: Box<dyn Directory>,
    _lock: Box<dyn DirectoryLock>,
    options: JournalOptions,
    segments: VecDeque<Segment>,
    index: SlotIndex<JournalLocation>,
    /// What the records written to segments establish.
    written: Summary,
    written_highest_slot: Slot,
    buffer: Vec<u8>,
    buffered: Vec<BufferedRecord>,
    buffered_slots: Vec<(Slot, u32, u32)>,
    tickets: Tickets,
    statistics: LogStatistics,
}

impl fmt::Debug for FileJournal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileJournal")
            .field("dir", &self.dir.path())
            .field("options", &self.options)
            .field("segments", &self.segments.iter().map(|s| &s.name).collect::<Vec<_>>())
            .field("buffered_bytes", &self.buffer.len())
            .field("appended_ticket", &self.tickets.appended)
            .field("durable_ticket", &self.tickets.durable)
            .finish()
    }
}

struct Damage {
    offset: u64,
    reason: String,
}

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
        let dir_path = dir.path().to_path_buf();
        let lock = dir.try_lock().map_err(|e| LogError::io(&dir_path, e))?;
        let lock = lock.ok_or_else(|| LogError::Locked { dir: dir_path.clone() })?;
        let mut journal = FileJournal {
            dir,
            _lock: lock,
            options: options.clone(),
            segments: VecDeque::new(),
            index: SlotIndex::default(),
            written: Summary::default(),
            written_highest_slot: Slot::ZERO,
            buffer: Vec::new(),
            buffered: Vec::new(),
            buffered_slots: Vec::new(),
            tickets: Tickets::default(),
            statistics: LogStatistics::default(),
        };
        let (state, report) = journal.recover(policy)?;
        Ok((journal, state, report))
    }

    fn path_of(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn io(&self, name: &str, error: std::io::Error) -> LogError {
        LogError::io(self.path_of(name), error)
    }

    fn recover(&mut self, policy: RecoveryPolicy) -> Result<(DurableState, RecoveryReport), LogError> {
        let mut report = RecoveryReport::default();
        let dir_path = self.dir.path().to_path_buf();
        let names = self.dir.list().map_err(|e| LogError::io(&dir_path, e))?;
        let mut found: Vec<(u64, Slot, String)> = Vec::new();
        let mut removed = false;
        for name in names {
            if name.ends_with(TEMPORARY_SUFFIX) {
                self.dir.remove(&name).map_err(|e| self.io(&name, e))?;
                report.removed_temporary.push(self.path_of(&name));
                removed = true;
            } else if let Some((first_slot, sequence)) = parse_segment_name(&name) {
                found.push((sequence, first_slot, name));
            } else if name != LOCK_FILE {
                report.ignored.push(self.path_of(&name));
            }
        }
        if removed {
            self.dir.sync().map_err(|e| LogError::io(&dir_path, e))?;
        }
        found.sort();
        report.ignored.sort();

        let mut replay = Replay::<JournalLocation>::default();
        let mut set_aside_from = None;
        for i in 1..found.len() {
            if found[i].0 != found[i - 1].0 + 1 {
                let reason = format!(
                    "segment {} follows segment {}: the segments between are missing",
                    found[i].0,
                    found[i - 1].0
                );
                if policy == RecoveryPolicy::SalvagePrefix {
                    report.salvaged =
                        Some(Cut { file: self.path_of(&found[i].2), offset: 0, bytes_dropped: 0, reason });
                    set_aside_from = Some(i);
                    break;
                }
                return Err(LogError::corrupt(self.path_of(&found[i].2), 0, reason));
            }
        }
        if let Some(from) = set_aside_from {
            self.set_aside(&found[from..], &mut report)?;
            found.truncate(from);
        }

        let count = found.len();
        let mut i = 0;
        while i < count {
            let (sequence, first_slot, name) = found[i].clone();
            let is_last = i + 1 == count;
            let mut file = self.dir.open(&name).map_err(|e| self.io(&name, e))?;
            let len = file.len().map_err(|e| self.io(&name, e))?;
            let mut raw = vec![0u8; len as usize];
            file.read_at(&mut raw, 0).map_err(|e| self.io(&name, e))?;
            let bytes = Bytes::from(raw);

            // The header: a segment file is only ever published whole, so a bad header is
            // damage, not a crash artifact.
            let header = match SegmentHeader::decode(&bytes) {
                Ok(header) if header.sequence != sequence || header.first_slot != first_slot => Err((
                    16,
                    format!(
                        "header names segment {} with first slot {}, the file name says {sequence} and {first_slot}",
                        header.sequence, header.first_slot
                    ),
                )),
                other => other,
            };
            let header = match header {
                Ok(header) => header,
                Err((offset, reason)) => {
                    if policy == RecoveryPolicy::SalvagePrefix {
                        report.salvaged =
                            Some(Cut { file: self.path_of(&name), offset, bytes_dropped: len, reason });
                        self.set_aside(&found[i..], &mut report)?;
                        break;
                    }
                    return Err(LogError::corrupt(self.path_of(&name), offset, reason));
                }
            };
            if let Some(previous) = self.segments.back() {
                if header.previous_bytes != previous.len {
                    let reason = format!(
                        "segment holds {} bytes of valid records, but its successor {name} records {} bytes",
                        previous.len, header.previous_bytes
                    );
                    if policy == RecoveryPolicy::SalvagePrefix {
                        report.salvaged = Some(Cut {
                            file: self.path_of(&previous.name),
                            offset: previous.len,
                            bytes_dropped: header.previous_bytes.saturating_sub(previous.len),
                            reason,
                        });
                        self.set_aside(&found[i..], &mut report)?;
                        break;
                    }
                    let file = self.path_of(&previous.name);
                    return Err(LogError::corrupt(file, previous.len, reason));
                }
            }

            // The records.
            let mut offset = SEGMENT_HEADER_BYTES;
            let mut records_start = offset;
            let mut damage = None;
            while offset < len {
                let frame = match parse_frame(&bytes, offset, sequence) {
                    Ok(frame) => frame,
                    Err(reason) => {
                        damage = Some(Damage { offset, reason });
                        break;
                    }
                };
                let payload = bytes.slice(
                    frame.payload_start as usize
                        ..(frame.payload_start + u64::from(frame.payload_bytes)) as usize,
                );
                let record = match Record::decode(frame.kind, &payload) {
                    Ok(record) => record,
                    Err(error) => {
                        damage = Some(Damage { offset, reason: format!("record does not decode: {error}") });
                        break;
                    }
                };
                if offset == SEGMENT_HEADER_BYTES {
                    if !matches!(record, Record::Snapshot { .. }) {
                        damage = Some(Damage {
                            offset,
                            reason: "the first record is not the segment's snapshot".into(),
                        });
                        break;
                    }
                    records_start = frame.end;
                }
                let payload_bytes = frame.payload_bytes;
                replay.apply(record, |index| JournalLocation::Stored {
                    segment: sequence,
                    offset,
                    payload_bytes,
                    index,
                });
                report.bytes += frame.end - offset;
                offset = frame.end;
            }
            if offset == SEGMENT_HEADER_BYTES && damage.is_none() {
                damage = Some(Damage { offset, reason: "the segment has no snapshot record".into() });
            }
            let mut valid_end = offset;
            if let Some(Damage { offset, reason }) = damage {
                let zero_tail = bytes[offset as usize..].iter().all(|&b| b == 0);
                let path = self.path_of(&name);
                if zero_tail && header.preallocated > 0 && offset > SEGMENT_HEADER_BYTES {
                    // The unwritten part of a preallocated segment.
                } else if is_last
                    && policy != RecoveryPolicy::Strict
                    && offset > SEGMENT_HEADER_BYTES
                    && (zero_tail || torn_tail_plausible(&bytes, offset, sequence))
                {
                    let reason = if zero_tail { format!("zeroed tail ({reason})") } else { reason };
                    report.torn_tail = Some(Cut { file: path, offset, bytes_dropped: len - offset, reason });
                    file.set_len(offset).map_err(|e| self.io(&name, e))?;
                    file.sync_data().map_err(|e| self.io(&name, e))?;
                } else if policy == RecoveryPolicy::SalvagePrefix && offset > SEGMENT_HEADER_BYTES {
                    report.salvaged = Some(Cut { file: path, offset, bytes_dropped: len - offset, reason });
                    file.set_len(offset).map_err(|e| self.io(&name, e))?;
                    file.sync_data().map_err(|e| self.io(&name, e))?;
                    self.set_aside(&found[i + 1..], &mut report)?;
                    valid_end = offset;
                    self.push_recovered(sequence, first_slot, name, file, valid_end, records_start);
                    break;
                } else if policy == RecoveryPolicy::SalvagePrefix {
                    report.salvaged = Some(Cut { file: path, offset, bytes_dropped: len, reason });
                    self.set_aside(&found[i..], &mut report)?;
                    break;
                } else {
                    return Err(LogError::Corrupt { file: path, offset, reason });
                }
                valid_end = offset;
            }
            self.push_recovered(sequence, first_slot, name, file, valid_end, records_start);
            i += 1;
        }
        report.files = self.segments.len() as u64;
        report.records = replay.records;
        let (index, state) = replay.finish();
        self.index = index;
        self.written = self.index.summary();
        self.written_highest_slot = self.index.highest_slot();
        report.log_start = self.written.floor;

        if self.segments.is_empty() {
            report.created = found.is_empty() && report.set_aside.is_empty();
            let first_slot = Slot(1).max(self.written.floor);
            let segment = self.create_segment(1, first_slot, 0)?;
            self.segments.push_back(segment);
        } else {
            // What was read may be in the page cache only (the previous process crashed,
            // the machine did not): make it durable before anyone acts on it.
            let dir_path = self.dir.path().to_path_buf();
            let last = self.segments.back_mut().expect("not empty");
            last.file.sync_data().map_err(|e| LogError::io(dir_path.join(&last.name), e))?;
            self.dir.sync().map_err(|e| LogError::io(&dir_path, e))?;
        }
        Ok((state, report))
    }

    fn push_recovered(
        &mut self,
        sequence: u64,
        first_slot: Slot,
        name: String,
        file: Box<dyn StorageFile>,
        len: u64,
        records_start: u64,
    ) {
        self.segments.push_back(Segment {
            sequence,
            first_slot,
            name,
            file,
            len,
            synced_len: len,
            records_start,
        });
    }

    fn set_aside(
        &mut self,
        segments: &[(u64, Slot, String)],
        report: &mut RecoveryReport,
    ) -> Result<(), LogError> {
        for (_, _, name) in segments {
            let aside = format!("{name}{DAMAGED_SUFFIX}");
            self.dir.rename(name, &aside).map_err(|e| self.io(name, e))?;
            report.set_aside.push(self.path_of(&aside));
        }
        if !segments.is_empty() {
            let dir_path = self.dir.path().to_path_buf();
            self.dir.sync().map_err(|e| LogError::io(&dir_path, e))?;
        }
        Ok(())
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
        self.written.snapshot().encode(&mut bytes);
        let payload_bytes = (bytes.len() - start) as u32 - RECORD_HEADER_BYTES as u32;
        bytes.resize(aligned(bytes.len() as u64) as usize, 0);
        let offset = start as u64;
        seal_frame(&mut bytes[start..], RECORD_SNAPSHOT, payload_bytes, offset, offset, sequence);
        file.write_at(&bytes, 0).map_err(|e| self.io(&temporary, e))?;
        file.sync_all().map_err(|e| self.io(&temporary, e))?;
        self.dir.rename(&temporary, &name).map_err(|e| self.io(&temporary, e))?;
        let dir_path = self.dir.path().to_path_buf();
        self.dir.sync().map_err(|e| LogError::io(&dir_path, e))?;
        self.statistics.syncs += 2;
        self.statistics.bytes_written += bytes.len() as u64;
        let len = bytes.len() as u64;
        Ok(Segment { sequence, first_slot, name, file, len, synced_len: len, records_start: len })
    }

    fn sync_active(&mut self) -> Result<(), LogError> {
        let dir_path = self.dir.path().to_path_buf();
        let active = self.segments.back_mut().expect("a journal always has an active segment");
        if active.synced_len < active.len {
            active.file.sync_data().map_err(|e| LogError::io(dir_path.join(&active.name), e))?;
            active.synced_len = active.len;
            self.statistics.syncs += 1;
        }
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), LogError> {
        self.sync_active()?;
        let active = self.segments.back().expect("a journal always has an active segment");
        let sequence = active.sequence + 1;
        let first_slot = Slot(self.written_highest_slot.0.saturating_add(1))
            .max(self.written.floor)
            .max(active.first_slot);
        let previous_bytes = active.len;
        let segment = self.create_segment(sequence, first_slot, previous_bytes)?;
        self.segments.push_back(segment);
        Ok(())
    }

    fn write_buffered(&mut self) -> Result<(), LogError> {
        if self.buffered.is_empty() {
            return Ok(());
        }
        let active = self.segments.back().expect("a journal always has an active segment");
        if active.len > active.records_start
            && active.len + self.buffer.len() as u64 > self.options.segment_bytes_max
        {
            self.rotate()?;
        }
        let dir_path = self.dir.path().to_path_buf();
        let active = self.segments.back_mut().expect("a journal always has an active segment");
        let (base, batch_start, sequence) = (active.len, active.synced_len, active.sequence);
        for record in &self.buffered {
            let offset = base + record.start as u64;
            seal_frame(
                &mut self.buffer[record.start..],
                record.kind,
                record.payload_bytes,
                offset,
                batch_start,
                sequence,
            );
        }
        active.file.write_at(&self.buffer, base).map_err(|e| LogError::io(dir_path.join(&active.name), e))?;
        active.len += self.buffer.len() as u64;
        // Apply the records to the committed view in log order (they are durable once the
        // flush's sync returns, before anything reads the live counts).
        let mut slots = self.buffered_slots.iter().peekable();
        for (number, record) in self.buffered.iter().enumerate() {
            self.written.observe(record.promise, record.chosen, record.floor);
            while let Some(&&(slot, owner, index)) = slots.peek() {
                if owner as usize != number {
                    break;
                }
                slots.next();
                let to = JournalLocation::Stored {
                    segment: sequence,
                    offset: base + record.start as u64,
                    payload_bytes: record.payload_bytes,
                    index,
                };
                self.index.commit_put(slot, JournalLocation::Buffered { record: owner, index }, to);
                self.written_highest_slot = self.written_highest_slot.max(slot);
            }
            if let Some(below) = record.floor {
                self.index.commit_truncate(below);
            }
        }
        self.statistics.records += self.buffered.len() as u64;
        self.statistics.bytes_written += self.buffer.len() as u64;
        self.buffer.clear();
        self.buffered.clear();
        self.buffered_slots.clear();
        Ok(())
    }

    /// Deletes segments from the oldest while none of their proposals is live. Each
    /// deletion is made durable before the next, so the survivors are always contiguous.
    fn reclaim(&mut self) -> Result<(), LogError> {
        while self.segments.len() > 1 && self.index.live(self.segments[0].sequence) == 0 {
            let name = self.segments[0].name.clone();
            self.dir.remove(&name).map_err(|e| self.io(&name, e))?;
            let dir_path = self.dir.path().to_path_buf();
            self.dir.sync().map_err(|e| LogError::io(&dir_path, e))?;
            self.segments.pop_front();
            self.statistics.reclaimed += 1;
            self.statistics.syncs += 1;
        }
        Ok(())
    }

    fn buffer_record(&mut self, kind: u8, encode: impl FnOnce(&mut Vec<u8>)) -> Result<u32, LogError> {
        let start = self.buffer.len();
        self.buffer.resize(start + RECORD_HEADER_BYTES as usize, 0);
        encode(&mut self.buffer);
        let payload_bytes = (self.buffer.len() - start) as u64 - RECORD_HEADER_BYTES;
        if payload_bytes > RECORD_PAYLOAD_BYTES_MAX {
            self.buffer.truncate(start);
            let error = LogError::TooLarge { bytes: payload_bytes, max: RECORD_PAYLOAD_BYTES_MAX };
            return Err(self.tickets.poison(error));
        }
        self.buffer.resize(aligned(self.buffer.len() as u64) as usize, 0);
        let record = u32::try_from(self.buffered.len()).expect("buffered records fit in u32");
        self.buffered.push(BufferedRecord {
            start,
            payload_bytes: payload_bytes as u32,
            kind,
            promise: None,
            chosen: None,
            floor: None,
        });
        Ok(record)
    }

    /// Names of the segment files, oldest first.
    pub fn segment_names(&self) -> Vec<String> {
        self.segments.iter().map(|s| s.name.clone()).collect()
    }

    /// The journal's directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn read_stored(&self, segment: u64, offset: u64, payload_bytes: u32) -> Result<Record, LogError> {
        let first = self.segments.front().expect("a journal always has a segment").sequence;
        let segment = segment
            .checked_sub(first)
            .and_then(|i| self.segments.get(i as usize))
            .filter(|s| s.sequence == segment)
            .expect("indexed segments are held");
        let frame_bytes = RECORD_HEADER_BYTES + u64::from(payload_bytes);
        let mut bytes = vec![0u8; frame_bytes as usize];
        segment.file.read_at(&mut bytes, offset).map_err(|e| self.io(&segment.name, e))?;
        // Parse as if the frame started the file: shift the stated offset check.
        let header_offset = u64_at(&bytes, 16);
        if header_offset != offset {
            return Err(LogError::corrupt(
                self.path_of(&segment.name),
                offset,
                format!("record states offset {header_offset}, read at {offset}"),
            ));
        }
        let stored = u32_at(&bytes, 12);
        let (header, payload) = bytes.split_at(RECORD_HEADER_BYTES as usize);
        let computed = frame_crc(segment.sequence, header, payload);
        if stored != computed || header[0..4] != RECORD_MAGIC {
            return Err(LogError::corrupt(
                self.path_of(&segment.name),
                offset,
                format!("record CRC {stored:#010x}, computed {computed:#010x} on read"),
            ));
        }
        let kind = header[5];
        let payload = Bytes::copy_from_slice(payload);
        Record::decode(kind, &payload).map_err(|e| {
            LogError::corrupt(self.path_of(&segment.name), offset, format!("record does not decode: {e}"))
        })
    }
}

impl LogStore for FileJournal {
    fn append(&mut self, request: &PersistRequest) -> Result<(), LogError> {
        self.tickets.admit(request.ticket)?;
        if !request.is_empty() {
            let record = self.buffer_record(RECORD_PERSIST, |out| encode_persist(request, out))?;
            let buffered = &mut self.buffered[record as usize];
            buffered.promise = request.promise;
            buffered.chosen = request.chosen;
            self.index.observe(request.promise, request.chosen);
            for (i, proposal) in request.proposals.iter().enumerate() {
                let index = u32::try_from(i).expect("proposal index fits in u32");
                if self.index.put(proposal.slot, JournalLocation::Buffered { record, index }) {
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
        let record = self.buffer_record(RECORD_TRUNCATE, |out| Record::Truncate { below }.encode(out))?;
        self.buffered[record as usize].floor = Some(below);
        self.index.truncate(below);
        Ok(())
    }

    fn flush(&mut self) -> Result<u64, LogError> {
        self.tickets.check_usable()?;
        let result = (|| {
            let before = self.statistics.syncs;
            self.write_buffered()?;
            self.sync_active()?;
            if self.statistics.syncs > before {
                self.statistics.flushes += 1;
            }
            self.reclaim()
        })();
        if let Err(error) = result {
            return Err(self.tickets.poison(error));
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
        let locations: Vec<(Slot, JournalLocation)> = self.index.range(first, last).collect();
        let mut out = Vec::new();
        let mut total = 0u64;
        let mut cached: Option<(JournalLocation, Record)> = None;
        for (slot, location) in locations {
            let (key, index) = match location {
                JournalLocation::Buffered { record, index } => {
                    (JournalLocation::Buffered { record, index: 0 }, index)
                }
                JournalLocation::Stored { segment, offset, payload_bytes, index } => {
                    (JournalLocation::Stored { segment, offset, payload_bytes, index: 0 }, index)
                }
            };
            if cached.as_ref().is_none_or(|(k, _)| *k != key) {
                let record = match location {
                    JournalLocation::Buffered { record, .. } => {
                        let buffered = self.buffered[record as usize];
                        let start = buffered.start + RECORD_HEADER_BYTES as usize;
                        let payload = Bytes::copy_from_slice(
                            &self.buffer[start..start + buffered.payload_bytes as usize],
                        );
                        Record::decode(buffered.kind, &payload).expect("buffered records decode")
                    }
                    JournalLocation::Stored { segment, offset, payload_bytes, .. } => {
                        self.read_stored(segment, offset, payload_bytes)?
                    }
                };
                cached = Some((key, record));
            }
            let (_, record) = cached.as_ref().expect("just cached");
            let proposal = match record {
                Record::Persist { proposals, .. } => proposals.get(index as usize),
                _ => None,
            };
            let proposal = match proposal {
                Some(proposal) if proposal.slot == slot => proposal.clone(),
                _ => {
                    let (file, offset) = match location {
                        JournalLocation::Stored { segment, offset, .. } => {
                            let name =
                                self.segments.iter().find(|s| s.sequence == segment).map(|s| s.name.clone());
                            (self.path_of(&name.unwrap_or_default()), offset)
                        }
                        JournalLocation::Buffered { .. } => (self.dir.path().to_path_buf(), 0),
                    };
                    return Err(LogError::corrupt(
                        file,
                        offset,
                        format!("record holds no proposal {index} for slot {slot}"),
                    ));
                }
            };
            total += crate::codec::proposal_encoded_bytes(&proposal);
            if !out.is_empty() && total > bytes_max {
                break;
            }
            out.push(proposal);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip_and_reject_near_misses() {
        let name = segment_name(Slot(42), 7);
        assert_eq!(name, "00000000000000000042-0000000000000007.seg");
        assert_eq!(parse_segment_name(&name), Some((Slot(42), 7)));
        for bad in [
            "42-7.seg",
            "00000000000000000042-0000000000000007.log",
            "0000000000000000004x-0000000000000007.seg",
            "LOCK",
        ] {
            assert_eq!(parse_segment_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn segment_header_round_trips_and_detects_flips() {
        let header =
            SegmentHeader { sequence: 3, first_slot: Slot(9), previous_bytes: 4096, preallocated: 0 };
        let bytes = header.encode();
        assert_eq!(SegmentHeader::decode(&bytes), Ok(header));
        for bit in 0..(SEGMENT_HEADER_BYTES as usize * 8) {
            let mut flipped = bytes;
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(SegmentHeader::decode(&flipped).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn frames_verify_only_at_their_offset_and_in_their_segment() {
        let mut bytes = vec![0u8; 64];
        let payload = b"payload!";
        let mut frame = vec![0u8; 32];
        frame.extend_from_slice(payload);
        seal_frame(&mut frame, RECORD_TRUNCATE, 8, 64, 64, 5);
        bytes.extend_from_slice(&frame);
        let parsed = parse_frame(&bytes, 64, 5).unwrap();
        assert_eq!((parsed.kind, parsed.payload_bytes, parsed.end), (RECORD_TRUNCATE, 8, 104));
        assert!(parse_frame(&bytes, 64, 6).unwrap_err().contains("CRC"));
        let mut shifted = vec![0u8; 8];
        shifted.extend_from_slice(&bytes);
        assert!(parse_frame(&shifted, 72, 5).unwrap_err().contains("offset"));
    }
}
