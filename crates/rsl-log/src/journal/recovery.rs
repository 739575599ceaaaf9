//! Opening a journal: which files of the directory are its segments, replaying their
//! records in order, and what each [`RecoveryPolicy`] does with damage.
//!
//! Only the last segment can have a torn tail (rotation syncs a segment before the next is
//! created), and a tear is told from damage to synced data by the batch start every frame
//! carries ([`torn_tail_plausible`]). Any other damage is an error naming file and offset,
//! unless the policy is [`RecoveryPolicy::SalvagePrefix`], which keeps the valid prefix
//! and renames every later segment aside. Intact bytes of another format version are
//! refused under every policy ([`LogError::UnsupportedVersion`]): they are not damage.
//!
//! A dry run ([`Changes::ReportOnly`], behind `FileJournal::check`) makes every decision
//! and reports it, but changes nothing on disk: no cut, no rename, no deletion, no sync.

use std::collections::VecDeque;

use bytes::Bytes;
use rsl_core::Slot;

use super::format::{
    parse_frame, parse_segment_name, torn_tail_plausible, Frame, SegmentHeader, DAMAGED_SUFFIX,
    SEGMENT_HEADER_BYTES,
};
use super::{io_error, path_of, Segment, SegmentOffset};
use crate::codec::{Record, Refusal};
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

/// Whether recovery changes the directory or only says what it would change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Changes {
    /// Cut, rename aside, delete leftovers and sync, as the policy says.
    Apply,
    /// Decide and report the same, but write nothing.
    ReportOnly,
}

/// A segment file found in the directory: (sequence, first slot, name).
pub(super) type Found = (u64, Slot, String);

/// Recovers the journal in `dir` under `policy`.
pub(super) fn recover(
    dir: &dyn Directory,
    policy: RecoveryPolicy,
    changes: Changes,
) -> Result<Recovered, LogError> {
    let apply = changes == Changes::Apply;
    let mut report = RecoveryReport::default();
    let mut found = list_segments(dir, &mut report, changes)?;
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
        set_aside(dir, &found[from..], &mut report, changes)?;
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
            Ok(header) if header.sequence != sequence || header.first_slot != first_slot => {
                Err(Refusal::damaged(
                    16,
                    format!(
                        "header names segment {} with first slot {}, the file name says {sequence} and {first_slot}",
                        header.sequence, header.first_slot
                    ),
                ))
            }
            other => other,
        };
        let header = match header {
            Ok(header) => header,
            Err(Refusal::Damaged { offset, reason }) if policy == RecoveryPolicy::SalvagePrefix => {
                report.salvaged = Some(Cut { file: path_of(dir, &name), offset, bytes_dropped: len, reason });
                set_aside(dir, &found[i..], &mut report, changes)?;
                break;
            }
            Err(refusal) => return Err(refusal.log_error(path_of(dir, &name))),
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
                    set_aside(dir, &found[i..], &mut report, changes)?;
                    break;
                }
                return Err(LogError::corrupt(path_of(dir, &previous.name), previous.len, reason));
            }
        }

        let (offset, records_start, damage) = scan_records(&bytes, sequence, &mut replay, &mut report);
        let mut valid_end = offset;
        let damage = match damage {
            Some(Refusal::Damaged { offset, reason }) => Some((offset, reason)),
            Some(version @ Refusal::Version { .. }) => return Err(version.log_error(path_of(dir, &name))),
            None => None,
        };
        if let Some((offset, reason)) = damage {
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
                if apply {
                    cut(dir, &name, &mut *file, offset)?;
                }
            } else if policy == RecoveryPolicy::SalvagePrefix && offset > SEGMENT_HEADER_BYTES {
                report.salvaged = Some(Cut { file: path, offset, bytes_dropped: len - offset, reason });
                if apply {
                    cut(dir, &name, &mut *file, offset)?;
                }
                set_aside(dir, &found[i + 1..], &mut report, changes)?;
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
                set_aside(dir, &found[i..], &mut report, changes)?;
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
        Some(_) if !apply => {}
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
/// interrupted segment creation) are deleted (when `changes` applies); other files are
/// reported as ignored.
pub(super) fn list_segments(
    dir: &dyn Directory,
    report: &mut RecoveryReport,
    changes: Changes,
) -> Result<Vec<Found>, LogError> {
    let names = dir.list().map_err(|e| LogError::io(dir.path(), e))?;
    let mut found = Vec::new();
    let mut removed = false;
    for name in names {
        if name.ends_with(TEMPORARY_SUFFIX) {
            if changes == Changes::Apply {
                dir.remove(&name).map_err(|e| io_error(dir, &name, e))?;
            }
            report.removed_temporary.push(path_of(dir, &name));
            removed = true;
        } else if let Some((first_slot, sequence)) = parse_segment_name(&name) {
            found.push((sequence, first_slot, name));
        } else if name != LOCK_FILE {
            report.ignored.push(path_of(dir, &name));
        }
    }
    if removed && changes == Changes::Apply {
        dir.sync().map_err(|e| LogError::io(dir.path(), e))?;
    }
    report.removed_temporary.sort();
    found.sort();
    report.ignored.sort();
    Ok(found)
}

/// Replays the records of the segment `bytes` (sequence `sequence`) that verify. Returns
/// where they end, where the segment's own records start (after its snapshot), and what
/// stopped the scan, if anything.
fn scan_records(
    bytes: &Bytes,
    sequence: u64,
    replay: &mut Replay<ProposalAt<SegmentOffset>>,
    report: &mut RecoveryReport,
) -> (u64, u64, Option<Refusal>) {
    walk_records(bytes, sequence, SEGMENT_HEADER_BYTES, |offset, frame, record| {
        let (address, payload_bytes) = (SegmentOffset { segment: sequence, offset }, frame.payload_bytes);
        replay.apply(record, |index| ProposalAt::Stored { address, payload_bytes, index });
        report.bytes += frame.end - offset;
    })
}

/// Walks the frames of the segment `bytes` (sequence `sequence`) from `start`, calling
/// `visit` with the offset, frame and record of each one that verifies and decodes, in
/// order. Returns where they end, where the segment's own records start (after its
/// snapshot), and what stopped the walk, if anything. Recovery and inspection share it.
pub(super) fn walk_records(
    bytes: &Bytes,
    sequence: u64,
    start: u64,
    mut visit: impl FnMut(u64, &Frame, Record),
) -> (u64, u64, Option<Refusal>) {
    let len = bytes.len() as u64;
    let mut offset = start;
    let mut records_start = offset;
    let mut damage = None;
    while offset < len {
        let frame = match parse_frame(bytes, offset, sequence) {
            Ok(frame) => frame,
            Err(refusal) => {
                damage = Some(refusal);
                break;
            }
        };
        let payload = bytes.slice(
            frame.payload_start as usize..(frame.payload_start + u64::from(frame.payload_bytes)) as usize,
        );
        let record = match Record::decode(frame.kind, &payload) {
            Ok(record) => record,
            Err(error) => {
                damage = Some(Refusal::damaged(offset, format!("record does not decode: {error}")));
                break;
            }
        };
        if offset == SEGMENT_HEADER_BYTES {
            if !matches!(record, Record::Snapshot { .. }) {
                damage = Some(Refusal::damaged(offset, "the first record is not the segment's snapshot"));
                break;
            }
            records_start = frame.end;
        }
        visit(offset, &frame, record);
        offset = frame.end;
    }
    if offset == SEGMENT_HEADER_BYTES && damage.is_none() {
        damage = Some(Refusal::damaged(offset, "the segment has no snapshot record"));
    }
    (offset, records_start, damage)
}

/// Cuts segment file `name` at `offset`, durably.
fn cut(dir: &dyn Directory, name: &str, file: &mut dyn StorageFile, offset: u64) -> Result<(), LogError> {
    file.set_len(offset).map_err(|e| io_error(dir, name, e))?;
    file.sync_data().map_err(|e| io_error(dir, name, e))
}

/// Renames `segments` aside (suffix `.damaged`), durably, and reports them.
fn set_aside(
    dir: &dyn Directory,
    segments: &[Found],
    report: &mut RecoveryReport,
    changes: Changes,
) -> Result<(), LogError> {
    for (_, _, name) in segments {
        let aside = format!("{name}{DAMAGED_SUFFIX}");
        if changes == Changes::Apply {
            dir.rename(name, &aside).map_err(|e| io_error(dir, name, e))?;
        }
        report.set_aside.push(path_of(dir, &aside));
    }
    if !segments.is_empty() && changes == Changes::Apply {
        dir.sync().map_err(|e| LogError::io(dir.path(), e))?;
    }
    Ok(())
}
