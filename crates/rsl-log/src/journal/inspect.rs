//! Reading a journal directory for offline tools, without changing it: which files are
//! segments (and which are leftovers, set aside or foreign), each segment's header, and
//! every record that verifies, with the file and byte offset it is stored at.
//!
//! The bytes are read with the same functions recovery uses (`format`, and
//! `recovery::walk_records`); what recovery would *do* with damage is
//! [`FileJournal::check`](super::FileJournal::check)'s business. A scan goes further than
//! recovery in one way: after the first damaged frame of a segment it looks for frames
//! that still verify further on (at every 8-byte boundary, as the torn-tail test does), so
//! a tool can say which records a cut would drop.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use rsl_core::Slot;

use super::format::{parse_frame, torn_tail_plausible, SegmentHeader, DAMAGED_SUFFIX, RECORD_ALIGNMENT};
use super::recovery::{list_segments, walk_records, Changes};
use crate::codec::{Record, Refusal};
use crate::error::LogError;
use crate::store::RecoveryReport;
use crate::vfs::OsDirectory;

/// The files of a journal directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalListing {
    /// The directory.
    pub dir: PathBuf,
    /// The segment files, in sequence order.
    pub segments: Vec<SegmentListing>,
    /// Leftover temporary files (an interrupted segment creation; recovery deletes them).
    pub temporary: Vec<PathBuf>,
    /// Segments set aside by an earlier salvage (suffix `.damaged`; recovery ignores them).
    pub set_aside: Vec<PathBuf>,
    /// Other files, which recovery leaves alone.
    pub ignored: Vec<PathBuf>,
}

/// A segment file, as its name describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentListing {
    /// The file.
    pub path: PathBuf,
    /// The sequence number in its name.
    pub sequence: u64,
    /// The first slot in its name.
    pub first_slot: Slot,
}

/// One record that verified, and where it is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRecord {
    /// The segment file.
    pub file: PathBuf,
    /// Byte offset of the record's frame.
    pub offset: u64,
    /// Bytes of the frame, header and padding included.
    pub frame_bytes: u64,
    /// Offset of the first byte of the batch (one flush) the record was written in.
    pub batch_start: u64,
    /// The record.
    pub record: Record,
    /// The record lies after the first damage of its segment (recovery does not read it;
    /// a cut at the damage drops it).
    pub beyond_damage: bool,
}

/// What a scan of one segment found.
#[derive(Debug)]
pub struct SegmentScan {
    /// The segment.
    pub listing: SegmentListing,
    /// Bytes of the file.
    pub file_bytes: u64,
    /// The header's sequence, first slot, length of the previous segment's records and
    /// bytes preallocated, when the header verifies.
    pub header: Option<SegmentHeaderInfo>,
    /// Where the records that verify end (the first damaged byte, or the clean end).
    pub valid_bytes: u64,
    /// Records that verified before `valid_bytes`.
    pub records: u64,
    /// What stopped the records at `valid_bytes`, when something did and it is not the
    /// zeroed, never written end of a preallocated segment.
    pub damage: Option<SegmentDamage>,
}

/// The fields of a segment header that verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeaderInfo {
    /// The format version.
    pub version: u32,
    /// The sequence number.
    pub sequence: u64,
    /// The first slot.
    pub first_slot: Slot,
    /// Bytes of valid records of the previous segment, as recorded when this one was made.
    pub previous_bytes: u64,
    /// Bytes reserved at creation.
    pub preallocated: u64,
}

/// Damage found in a segment.
#[derive(Debug)]
pub struct SegmentDamage {
    /// [`LogError::Corrupt`] or [`LogError::UnsupportedVersion`], naming the file and
    /// offset.
    pub error: LogError,
    /// Every byte from the damage on is zero.
    pub zero_tail: bool,
    /// No frame after the damage belongs to a later batch: if this is the last segment,
    /// the damage can be a write torn by a crash, which
    /// [`RecoveryPolicy::TruncateTornTail`](crate::RecoveryPolicy::TruncateTornTail) cuts.
    pub torn_tail_plausible: bool,
    /// Bytes from the damage to the end of the file.
    pub bytes_after: u64,
}

/// Lists the journal directory `dir` without changing it.
pub fn list(dir: &Path) -> Result<JournalListing, LogError> {
    if !dir.is_dir() {
        let error = std::io::Error::new(std::io::ErrorKind::NotFound, "no journal directory here");
        return Err(LogError::io(dir, error));
    }
    let directory = OsDirectory::open(dir).map_err(|e| LogError::io(dir, e))?;
    let mut report = RecoveryReport::default();
    let found = list_segments(&directory, &mut report, Changes::ReportOnly)?;
    let (set_aside, ignored) =
        report.ignored.into_iter().partition(|path| path.to_string_lossy().ends_with(DAMAGED_SUFFIX));
    Ok(JournalListing {
        dir: dir.to_path_buf(),
        segments: found
            .into_iter()
            .map(|(sequence, first_slot, name)| SegmentListing { path: dir.join(name), sequence, first_slot })
            .collect(),
        temporary: report.removed_temporary,
        set_aside,
        ignored,
    })
}

/// Reads the segment `segment` and calls `visit` with every record that verifies, in
/// file order, including those after damage (marked [`StoredRecord::beyond_damage`]).
/// Changes nothing.
pub fn scan_segment(
    segment: &SegmentListing,
    visit: &mut dyn FnMut(&StoredRecord),
) -> Result<SegmentScan, LogError> {
    let path = &segment.path;
    let bytes = Bytes::from(std::fs::read(path).map_err(|e| LogError::io(path, e))?);
    let file_bytes = bytes.len() as u64;
    let mut scan = SegmentScan {
        listing: segment.clone(),
        file_bytes,
        header: None,
        valid_bytes: 0,
        records: 0,
        damage: None,
    };
    let header = match SegmentHeader::decode(&bytes) {
        Ok(header) => header,
        Err(refusal) => {
            scan.damage = Some(damage_at(&bytes, refusal, path, segment.sequence));
            return Ok(scan);
        }
    };
    scan.header = Some(SegmentHeaderInfo {
        version: super::FORMAT_VERSION,
        sequence: header.sequence,
        first_slot: header.first_slot,
        previous_bytes: header.previous_bytes,
        preallocated: header.preallocated,
    });
    let mut records = 0;
    let start = super::SEGMENT_HEADER_BYTES;
    let (end, _, refusal) = walk_records(&bytes, segment.sequence, start, |offset, frame, record| {
        records += 1;
        visit(&stored(path, offset, frame.end - offset, frame.batch_start, record, false));
    });
    scan.records = records;
    scan.valid_bytes = end;
    let Some(refusal) = refusal else { return Ok(scan) };
    let damage = damage_at(&bytes, refusal, path, segment.sequence);
    if damage.zero_tail && header.preallocated > 0 && end > start {
        return Ok(scan);
    }
    // Frames that still verify after the damage: what a cut there would drop.
    let mut at = end + RECORD_ALIGNMENT;
    while at + super::RECORD_HEADER_BYTES <= file_bytes {
        if bytes[at as usize..at as usize + 4] == super::RECORD_MAGIC {
            if let Ok(frame) = parse_frame(&bytes, at, segment.sequence) {
                let range = frame.payload_start as usize
                    ..(frame.payload_start + u64::from(frame.payload_bytes)) as usize;
                if let Ok(record) = Record::decode(frame.kind, &bytes.slice(range)) {
                    visit(&stored(path, at, frame.end - at, frame.batch_start, record, true));
                    at = frame.end;
                    continue;
                }
            }
        }
        at += RECORD_ALIGNMENT;
    }
    scan.damage = Some(damage);
    Ok(scan)
}

fn stored(
    path: &Path,
    offset: u64,
    frame_bytes: u64,
    batch_start: u64,
    record: Record,
    beyond: bool,
) -> StoredRecord {
    StoredRecord { file: path.to_path_buf(), offset, frame_bytes, batch_start, record, beyond_damage: beyond }
}

fn damage_at(bytes: &Bytes, refusal: Refusal, path: &Path, sequence: u64) -> SegmentDamage {
    let offset = match &refusal {
        // The version field sits inside the frame (or header): the frame starts before it.
        Refusal::Version { offset, .. } if *offset >= super::SEGMENT_HEADER_BYTES => offset - 4,
        Refusal::Version { .. } => 0,
        Refusal::Damaged { offset, .. } => *offset,
    };
    let rest = &bytes[offset.min(bytes.len() as u64) as usize..];
    SegmentDamage {
        zero_tail: rest.iter().all(|&b| b == 0),
        torn_tail_plausible: !matches!(refusal, Refusal::Version { .. })
            && offset > super::SEGMENT_HEADER_BYTES
            && torn_tail_plausible(bytes, offset, sequence),
        bytes_after: rest.len() as u64,
        error: refusal.log_error(path),
    }
}
