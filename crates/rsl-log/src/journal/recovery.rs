//! Opening a journal: which files of the directory are its segments, replaying their
//! records in order, and what each [`RecoveryPolicy`] does with damage.
//!
//! Only the last segment can have a torn tail (rotation syncs a segment before the next is
//! created), and a tear is told from damage to synced data by the batch start every frame
//! carries ([`torn_tail_plausible`]). Any other damage is an error naming file and offset,
//! unless the policy is [`RecoveryPolicy::SalvagePrefix`], which keeps the valid prefix
//! and renames every later segment aside.

use std::collections::VecDeque;

use bytes::Bytes;
use rsl_core::Slot;

use super::format::{
    parse_frame, parse_segment_name, torn_tail_plausible, SegmentHeader, DAMAGED_SUFFIX, SEGMENT_HEADER_BYTES,
};
use super::{io_error, path_of, Segment, SegmentOffset};
use crate::codec::Record;
use crate::error::LogError;
use crate::staging::ProposalAt;
use crate::state::Replay;
use crate::store::{Cut, RecoveryPolicy, RecoveryReport};
use crate::vfs::{Directory, StorageFile, LOCK_FILE, TEMPORARY_SUFFIX};

/// What recovery read from a journal directory.
pub(super) struct Recovered {
    /// The segments kept, oldest first, the last one synced. Empty when there were none
    /// (or none was kept): the caller creates the first.
    pub segments: VecDeque<Segment>,
    /// Every record of `segments`, replayed in order.
    pub replay: Replay<ProposalAt<SegmentOffset>>,
    pub report: RecoveryReport,
}

/// A segment file found in the directory: (sequence, first slot, name).
type Found = (u64, Slot, String);

/// Where the records of a segment stop verifying, and why.
struct Damage {
    offset: u64,
    reason: String,
}

/// Recovers the journal in `dir` under `policy`.
pub(super) fn recover(dir: &dyn Directory, policy: RecoveryPolicy) -> Result<Recovered, LogError> {
    let mut report = RecoveryReport::default();
    let mut found = list_segments(dir, &mut report)?;
    let mut replay = Replay::default();
    let mut segments: VecDeque<Segment> = VecDeque::new();

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
                    Some(Cut { file: path_of(dir, &found[i].2), offset: 0, bytes_dropped: 0, reason });
                set_aside_from = Some(i);
                break;
            }
            return Err(LogError::corrupt(path_of(dir, &found[i].2), 0, reason));
        }
    }
    if let Some(from) = set_aside_from {
        set_aside(dir, &found[from..], &mut report)?;
        found.truncate(from);
    }

    let count = found.len();
    for i in 0..count {
        let (sequence, first_slot, name) = found[i].clone();
        let is_last = i + 1 == count;
        let mut file = dir.open(&name).map_err(|e| io_error(dir, &name, e))?;
        let len = file.len().map_err(|e| io_error(dir, &name, e))?;
        let mut raw = vec![0u8; len as usize];
        file.read_at(&mut raw, 0).map_err(|e| io_error(dir, &name, e))?;
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
                        Some(Cut { file: path_of(dir, &name), offset, bytes_dropped: len, reason });
                    set_aside(dir, &found[i..], &mut report)?;
                    break;
                }
                return Err(LogError::corrupt(path_of(dir, &name), offset, reason));
            }
        };
        if let Some(previous) = segments.back() {
            if header.previous_bytes != previous.len {
                let reason = format!(
                    "segment holds {} bytes of valid records, but its successor {name} records {} bytes",
                    previous.len, header.previous_bytes
                );
                if policy == RecoveryPolicy::SalvagePrefix {
                    report.salvaged = Some(Cut {
                        file: path_of(dir, &previous.name),
                        offset: previous.len,
                        bytes_dropped: header.previous_bytes.saturating_sub(previous.len),
                        reason,
                    });
                    set_aside(dir, &found[i..], &mut report)?;
                    break;
                }
                return Err(LogError::corrupt(path_of(dir, &previous.name), previous.len, reason));
            }
        }

        let (offset, records_start, damage) = scan_records(&bytes, sequence, &mut replay, &mut report);
        let mut valid_end = offset;
        if let Some(Damage { offset, reason }) = damage {
            let zero_tail = bytes[offset as usize..].iter().all(|&b| b == 0);
            let path = path_of(dir, &name);
            if zero_tail && header.preallocated > 0 && offset > SEGMENT_HEADER_BYTES {
                // The unwritten part of a preallocated segment.
            } else if is_last
                && policy != RecoveryPolicy::Strict
                && offset > SEGMENT_HEADER_BYTES
                && (zero_tail || torn_tail_plausible(&bytes, offset, sequence))
            {
                let reason = if zero_tail { format!("zeroed tail ({reason})") } else { reason };
                report.torn_tail = Some(Cut { file: path, offset, bytes_dropped: len - offset, reason });
                cut(dir, &name, &mut *file, offset)?;
            } else if policy == RecoveryPolicy::SalvagePrefix && offset > SEGMENT_HEADER_BYTES {
                report.salvaged = Some(Cut { file: path, offset, bytes_dropped: len - offset, reason });
                cut(dir, &name, &mut *file, offset)?;
                set_aside(dir, &found[i + 1..], &mut report)?;
                segments.push_back(Segment::recovered(
                    sequence,
                    first_slot,
                    name,
                    file,
                    offset,
                    records_start,
                ));
                break;
            } else if policy == RecoveryPolicy::SalvagePrefix {
                report.salvaged = Some(Cut { file: path, offset, bytes_dropped: len, reason });
                set_aside(dir, &found[i..], &mut report)?;
                break;
            } else {
                return Err(LogError::Corrupt { file: path, offset, reason });
            }
            valid_end = offset;
        }
        segments.push_back(Segment::recovered(sequence, first_slot, name, file, valid_end, records_start));
    }
    report.files = segments.len() as u64;

    match segments.back_mut() {
        None => report.created = found.is_empty() && report.set_aside.is_empty(),
        Some(last) => {
            // What was read may be in the page cache only (the previous process crashed,
            // the machine did not): make it durable before anyone acts on it.
            last.file.sync_data().map_err(|e| io_error(dir, &last.name, e))?;
            dir.sync().map_err(|e| LogError::io(dir.path(), e))?;
        }
    }
    Ok(Recovered { segments, replay, report })
}

/// The segment files in `dir`, ordered by sequence. Leftover temporary files (an
/// interrupted segment creation) are deleted; other files are reported as ignored.
fn list_segments(dir: &dyn Directory, report: &mut RecoveryReport) -> Result<Vec<Found>, LogError> {
    let names = dir.list().map_err(|e| LogError::io(dir.path(), e))?;
    let mut found = Vec::new();
    let mut removed = false;
    for name in names {
        if name.ends_with(TEMPORARY_SUFFIX) {
            dir.remove(&name).map_err(|e| io_error(dir, &name, e))?;
            report.removed_temporary.push(path_of(dir, &name));
            removed = true;
        } else if let Some((first_slot, sequence)) = parse_segment_name(&name) {
            found.push((sequence, first_slot, name));
        } else if name != LOCK_FILE {
            report.ignored.push(path_of(dir, &name));
        }
    }
    if removed {
        dir.sync().map_err(|e| LogError::io(dir.path(), e))?;
    }
    found.sort();
    report.ignored.sort();
    Ok(found)
}

/// Replays the records of the segment `bytes` (sequence `sequence`) that verify. Returns
/// where they end, where the segment's own records start (after its snapshot), and the
/// damage that stopped the scan, if any.
fn scan_records(
    bytes: &Bytes,
    sequence: u64,
    replay: &mut Replay<ProposalAt<SegmentOffset>>,
    report: &mut RecoveryReport,
) -> (u64, u64, Option<Damage>) {
    let len = bytes.len() as u64;
    let mut offset = SEGMENT_HEADER_BYTES;
    let mut records_start = offset;
    let mut damage = None;
    while offset < len {
        let frame = match parse_frame(bytes, offset, sequence) {
            Ok(frame) => frame,
            Err(reason) => {
                damage = Some(Damage { offset, reason });
                break;
            }
        };
        let payload = bytes.slice(
            frame.payload_start as usize..(frame.payload_start + u64::from(frame.payload_bytes)) as usize,
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
                damage =
                    Some(Damage { offset, reason: "the first record is not the segment's snapshot".into() });
                break;
            }
            records_start = frame.end;
        }
        let (address, payload_bytes) = (SegmentOffset { segment: sequence, offset }, frame.payload_bytes);
        replay.apply(record, |index| ProposalAt::Stored { address, payload_bytes, index });
        report.bytes += frame.end - offset;
        offset = frame.end;
    }
    if offset == SEGMENT_HEADER_BYTES && damage.is_none() {
        damage = Some(Damage { offset, reason: "the segment has no snapshot record".into() });
    }
    (offset, records_start, damage)
}

/// Cuts segment file `name` at `offset`, durably.
fn cut(dir: &dyn Directory, name: &str, file: &mut dyn StorageFile, offset: u64) -> Result<(), LogError> {
    file.set_len(offset).map_err(|e| io_error(dir, name, e))?;
    file.sync_data().map_err(|e| io_error(dir, name, e))
}

/// Renames `segments` aside (suffix `.damaged`), durably, and reports them.
fn set_aside(dir: &dyn Directory, segments: &[Found], report: &mut RecoveryReport) -> Result<(), LogError> {
    for (_, _, name) in segments {
        let aside = format!("{name}{DAMAGED_SUFFIX}");
        dir.rename(name, &aside).map_err(|e| io_error(dir, name, e))?;
        report.set_aside.push(path_of(dir, &aside));
    }
    if !segments.is_empty() {
        dir.sync().map_err(|e| LogError::io(dir.path(), e))?;
    }
    Ok(())
}
