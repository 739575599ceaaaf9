//! Damaged and foreign files: truncated, zeroed, bit-flipped, foreign, missing. Each gives
//! the expected recovery (a torn tail cut and reported) or a clear error naming the file
//! and offset, never silent loss and never a panic.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use rsl_core::{DurableState, Slot};
use rsl_log::journal::{RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use rsl_log::pmem::{COMMIT_WORD_POS, LOG_AREA_POS, LOG_METADATA_POS, REGION_METADATA_POS};
use rsl_log::{
    CheckpointError, CheckpointOptions, CheckpointStore, FileJournal, JournalOptions, LogError, LogStore,
    PmemLog, PmemOptions, RecoveryPolicy,
};

// ----- File journal -----

fn options(segment_bytes_max: u64) -> JournalOptions {
    JournalOptions { segment_bytes_max, preallocate: false }
}

/// Appends `count` requests (slot i has a 100-byte payload), one flush each, and returns
/// the model state before the first and after each.
fn write_requests(log: &mut dyn LogStore, count: u64) -> Vec<DurableState> {
    let mut model = ModelState::default();
    let mut states = vec![model.durable_state()];
    for ticket in 1..=count {
        let op = request(ticket, Some(ballot(ticket, 1)), vec![batch(ticket, ticket, 100)], None);
        log.append(&op).unwrap();
        log.flush().unwrap();
        model.apply(&Op::Persist(op));
        states.push(model.durable_state());
    }
    states
}

/// Writes `count` requests ([`write_requests`]) and returns the segment files oldest first
/// and the model state after each request.
fn write_journal(dir: &Path, options: &JournalOptions, count: u64) -> (Vec<PathBuf>, Vec<DurableState>) {
    let (mut log, _, _) = FileJournal::open(dir, options, RecoveryPolicy::Strict).unwrap();
    let states = write_requests(&mut log, count);
    let segments = log.segment_names().iter().map(|n| dir.join(n)).collect();
    (segments, states)
}

/// Offset of the `n`-th own record (0-based) of a segment written by `write_journal`.
fn record_offset(n: u64) -> u64 {
    // Header, then the 64-byte snapshot frame, then 208-byte frames (32 + 170 payload,
    // padded to a multiple of 8).
    SEGMENT_HEADER_BYTES + 64 + n * 208
}

fn open(
    dir: &Path,
    options: &JournalOptions,
    policy: RecoveryPolicy,
) -> Result<(DurableState, rsl_log::RecoveryReport), LogError> {
    FileJournal::open(dir, options, policy).map(|(_, state, report)| (state, report))
}

/// Zeroes the bytes of file `path` from `from` on, `len` of them or to the end.
fn zero(path: &Path, from: u64, len: Option<u64>) {
    let mut bytes = fs::read(path).unwrap();
    let end = len.map_or(bytes.len(), |len| (from + len) as usize);
    bytes[from as usize..end].fill(0);
    fs::write(path, bytes).unwrap();
}

fn flip_bit(path: &Path, offset: u64, bit: u8) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset as usize] ^= 1 << bit;
    fs::write(path, bytes).unwrap();
}

fn assert_corrupt(error: LogError, file: &Path, offset: u64, reason: &str) {
    match error {
        LogError::Corrupt { file: f, offset: o, reason: r } => {
            assert_eq!((f.as_path(), o), (file, offset), "{r}");
            assert!(r.contains(reason), "reason {r:?} should mention {reason:?}");
        }
        other => panic!("expected corruption at {}:{offset}, got {other}", file.display()),
    }
}

#[test]
fn layout_assumption_of_these_tests_holds() {
    let dir = scratch_dir();
    let (segments, _) = write_journal(dir.path(), &options(1 << 20), 3);
    let len = fs::metadata(&segments[0]).unwrap().len();
    assert_eq!(len, record_offset(3));
    assert_eq!(RECORD_HEADER_BYTES, 32);
}

#[test]
fn journal_truncated_mid_record_cuts_the_torn_tail_and_reports_it() {
    let dir = scratch_dir();
    let (segments, states) = write_journal(dir.path(), &options(1 << 20), 5);
    let cut_at = record_offset(4) + 77;
    fs::OpenOptions::new().write(true).open(&segments[0]).unwrap().set_len(cut_at).unwrap();

    let error = open(dir.path(), &options(1 << 20), RecoveryPolicy::Strict).unwrap_err();
    assert_corrupt(error, &segments[0], record_offset(4), "runs past the end");

    let (state, report) = open(dir.path(), &options(1 << 20), RecoveryPolicy::TruncateTornTail).unwrap();
    assert_eq!(state, states[4]);
    let torn = report.torn_tail.expect("reported");
    assert_eq!((torn.file, torn.offset, torn.bytes_dropped), (segments[0].clone(), record_offset(4), 77));
    assert_eq!(fs::metadata(&segments[0]).unwrap().len(), record_offset(4), "cut on disk");
    let (state, report) = open(dir.path(), &options(1 << 20), RecoveryPolicy::Strict).unwrap();
    assert_eq!((state, report.torn_tail), (states[4].clone(), None), "clean after the cut");
}

#[test]
fn journal_truncated_older_segment_is_an_error_naming_it() {
    let dir = scratch_dir();
    let opts = options(600);
    let (segments, states) = write_journal(dir.path(), &opts, 8);
    assert!(segments.len() >= 3, "{segments:?}");
    let len = fs::metadata(&segments[0]).unwrap().len();
    fs::OpenOptions::new().write(true).open(&segments[0]).unwrap().set_len(len - 208).unwrap();

    let error = open(dir.path(), &opts, RecoveryPolicy::TruncateTornTail).unwrap_err();
    assert_corrupt(error, &segments[0], len - 208, "successor");

    // Salvage keeps the valid prefix and sets the rest aside, saying so.
    let (state, report) = open(dir.path(), &opts, RecoveryPolicy::SalvagePrefix).unwrap();
    let kept = state.proposals.len();
    assert_eq!(state, states[kept]);
    assert!(kept < 8);
    assert!(report.salvaged.is_some());
    assert_eq!(report.set_aside.len(), segments.len() - 1);
}

#[test]
fn journal_zeroed_segment_is_an_error() {
    let dir = scratch_dir();
    let (segments, _) = write_journal(dir.path(), &options(1 << 20), 3);
    let len = fs::metadata(&segments[0]).unwrap().len();
    fs::write(&segments[0], vec![0u8; len as usize]).unwrap();
    for policy in [RecoveryPolicy::Strict, RecoveryPolicy::TruncateTornTail] {
        let error = open(dir.path(), &options(1 << 20), policy).unwrap_err();
        assert_corrupt(error, &segments[0], 0, "not a journal segment");
    }
}

#[test]
fn journal_zeroed_tail_is_a_torn_tail() {
    let dir = scratch_dir();
    let (segments, states) = write_journal(dir.path(), &options(1 << 20), 4);
    zero(&segments[0], record_offset(3), None);
    let (state, report) = open(dir.path(), &options(1 << 20), RecoveryPolicy::TruncateTornTail).unwrap();
    assert_eq!(state, states[3]);
    let torn = report.torn_tail.expect("reported");
    assert!(torn.reason.contains("zeroed tail"), "{}", torn.reason);
    assert_eq!(torn.offset, record_offset(3));
}

#[test]
fn journal_zeroed_record_before_synced_records_is_an_error() {
    let dir = scratch_dir();
    let (segments, _) = write_journal(dir.path(), &options(1 << 20), 5);
    zero(&segments[0], record_offset(1), Some(208));
    let error = open(dir.path(), &options(1 << 20), RecoveryPolicy::TruncateTornTail).unwrap_err();
    assert_corrupt(error, &segments[0], record_offset(1), "magic");
}

#[test]
fn journal_bit_flip_in_a_synced_record_is_an_error_and_salvage_keeps_the_prefix() {
    let dir = scratch_dir();
    let (segments, states) = write_journal(dir.path(), &options(1 << 20), 5);
    flip_bit(&segments[0], record_offset(2) + 100, 3);
    for policy in [RecoveryPolicy::Strict, RecoveryPolicy::TruncateTornTail] {
        let error = open(dir.path(), &options(1 << 20), policy).unwrap_err();
        assert_corrupt(error, &segments[0], record_offset(2), "CRC");
    }
    let (state, report) = open(dir.path(), &options(1 << 20), RecoveryPolicy::SalvagePrefix).unwrap();
    assert_eq!(state, states[2]);
    let salvaged = report.salvaged.expect("reported");
    assert_eq!((salvaged.offset, salvaged.bytes_dropped), (record_offset(2), 3 * 208));
}

#[test]
fn journal_bit_flip_in_the_last_batch_is_indistinguishable_from_a_torn_write() {
    // Documented limit: damage confined to the last batch looks exactly like a write torn
    // by a crash. It is cut and reported (or refused under Strict), never silently kept.
    let dir = scratch_dir();
    let (segments, states) = write_journal(dir.path(), &options(1 << 20), 3);
    flip_bit(&segments[0], record_offset(2) + 50, 0);
    assert!(open(dir.path(), &options(1 << 20), RecoveryPolicy::Strict).is_err());
    let (state, report) = open(dir.path(), &options(1 << 20), RecoveryPolicy::TruncateTornTail).unwrap();
    assert_eq!(state, states[2]);
    assert_eq!(report.torn_tail.expect("reported").offset, record_offset(2));
}

#[test]
fn journal_bit_flips_in_a_segment_header_are_errors() {
    let dir = scratch_dir();
    let (segments, _) = write_journal(dir.path(), &options(1 << 20), 2);
    for (offset, reason) in [(0, "not a journal segment"), (9, "format version"), (20, "CRC"), (40, "CRC")] {
        flip_bit(&segments[0], offset, 1);
        let error = open(dir.path(), &options(1 << 20), RecoveryPolicy::TruncateTornTail).unwrap_err();
        let expected_offset = match offset {
            0 => 0,
            9 => 8,
            _ => 12,
        };
        assert_corrupt(error, &segments[0], expected_offset, reason);
        flip_bit(&segments[0], offset, 1);
    }
    assert!(open(dir.path(), &options(1 << 20), RecoveryPolicy::Strict).is_ok(), "restored");
}

#[test]
fn journal_foreign_files_are_errors_or_ignored_by_name() {
    let dir = scratch_dir();
    let (segments, states) = write_journal(dir.path(), &options(1 << 20), 2);
    fs::write(dir.path().join("notes.txt"), b"not part of the log").unwrap();
    let (state, report) = open(dir.path(), &options(1 << 20), RecoveryPolicy::Strict).unwrap();
    assert_eq!(state, states[2]);
    assert_eq!(report.ignored, vec![dir.path().join("notes.txt")]);

    // A foreign file that takes a segment's name is damage.
    let foreign = dir.path().join(rsl_log::journal::segment_name(Slot(9), 2));
    fs::write(&foreign, b"GIF89a and then some bytes that are not a journal. ".repeat(4)).unwrap();
    let error = open(dir.path(), &options(1 << 20), RecoveryPolicy::TruncateTornTail).unwrap_err();
    assert_corrupt(error, &foreign, 0, "not a journal segment");
    // A real segment renamed to another sequence is caught by its header.
    fs::copy(&segments[0], &foreign).unwrap();
    let error = open(dir.path(), &options(1 << 20), RecoveryPolicy::TruncateTornTail).unwrap_err();
    assert_corrupt(error, &foreign, 16, "header names segment 1");
}

#[test]
fn journal_missing_middle_segment_is_an_error() {
    let dir = scratch_dir();
    let (segments, _) = write_journal(dir.path(), &options(600), 8);
    assert!(segments.len() >= 3);
    fs::remove_file(&segments[1]).unwrap();
    let error = open(dir.path(), &options(600), RecoveryPolicy::TruncateTornTail).unwrap_err();
    assert_corrupt(error, &segments[2], 0, "missing");
}

#[test]
fn journal_leftover_temporary_file_is_removed_and_reported() {
    let dir = scratch_dir();
    let (_, states) = write_journal(dir.path(), &options(1 << 20), 2);
    let leftover = dir.path().join(format!("{}.tmp", rsl_log::journal::segment_name(Slot(3), 2)));
    fs::write(&leftover, b"half a segment").unwrap();
    let (state, report) = open(dir.path(), &options(1 << 20), RecoveryPolicy::Strict).unwrap();
    assert_eq!(state, states[2]);
    assert_eq!(report.removed_temporary, vec![leftover.clone()]);
    assert!(!leftover.exists());
}

#[test]
fn journal_preallocated_segments_end_at_the_first_zero_header() {
    let dir = scratch_dir();
    let opts = JournalOptions { segment_bytes_max: 1 << 20, preallocate: true };
    let (segments, states) = write_journal(dir.path(), &opts, 3);
    let len = fs::metadata(&segments[0]).unwrap().len();
    let (state, report) = open(dir.path(), &opts, RecoveryPolicy::Strict).unwrap();
    assert_eq!(state, states[3]);
    assert!(report.torn_tail.is_none(), "preallocated zeros are not a tear");
    if len == 1 << 20 {
        // fallocate worked: appends overwrite the allocated blocks.
        let (mut log, _, _) = FileJournal::open(dir.path(), &opts, RecoveryPolicy::Strict).unwrap();
        log.append(&request(1, None, vec![batch(9, 9, 10)], None)).unwrap();
        log.flush().unwrap();
        assert_eq!(fs::metadata(&segments[0]).unwrap().len(), 1 << 20);
    }
}

// ----- Persistent-memory log -----

fn write_pmem(path: &Path, count: u64) -> Vec<DurableState> {
    let options = PmemOptions { capacity_bytes: 64 << 10, ..PmemOptions::default() };
    let (mut log, _, _) = PmemLog::open(path, &options, RecoveryPolicy::Strict).unwrap();
    write_requests(&mut log, count)
}

fn open_pmem(
    path: &Path,
    policy: RecoveryPolicy,
) -> Result<(DurableState, rsl_log::RecoveryReport), LogError> {
    PmemLog::open(path, &PmemOptions::default(), policy).map(|(_, state, report)| (state, report))
}

#[test]
fn pmem_truncated_file_is_an_error() {
    let dir = scratch_dir();
    let path = dir.path().join("log.pmem");
    write_pmem(&path, 3);
    fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(32 << 10).unwrap();
    let error = open_pmem(&path, RecoveryPolicy::TruncateTornTail).unwrap_err();
    assert_corrupt(error, &path, REGION_METADATA_POS, "the region has 32768");
    fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(100).unwrap();
    assert_corrupt(open_pmem(&path, RecoveryPolicy::TruncateTornTail).unwrap_err(), &path, 100, "too short");
}

#[test]
fn pmem_zeroed_and_foreign_files_are_errors() {
    let dir = scratch_dir();
    let path = dir.path().join("log.pmem");
    fs::write(&path, vec![0u8; 64 << 10]).unwrap();
    assert_corrupt(
        open_pmem(&path, RecoveryPolicy::TruncateTornTail).unwrap_err(),
        &path,
        16,
        "program GUID",
    );
    let foreign: Vec<u8> = (0..64u32 << 10).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    fs::write(&path, foreign).unwrap();
    assert_corrupt(open_pmem(&path, RecoveryPolicy::SalvagePrefix).unwrap_err(), &path, 16, "not an rsl");
}

#[test]
fn pmem_bit_flips_in_metadata_are_errors_naming_the_field() {
    let dir = scratch_dir();
    let path = dir.path().join("log.pmem");
    let states = write_pmem(&path, 3);
    let bytes = fs::read(&path).unwrap();
    let word = &bytes[COMMIT_WORD_POS as usize..COMMIT_WORD_POS as usize + 8];
    let active = if word == rsl_log::pmem::COMMIT_WORD[0].to_le_bytes() { 0 } else { 1 };
    let cases = [
        (2, 32, "global metadata CRC"),
        (44, 72, "region metadata CRC"),
        (COMMIT_WORD_POS + 3, COMMIT_WORD_POS, "commit word"),
        (LOG_METADATA_POS[active] + 1, LOG_METADATA_POS[active] + 32, "log metadata copy"),
    ];
    for (flip_at, reported_at, reason) in cases {
        flip_bit(&path, flip_at, 4);
        assert_corrupt(
            open_pmem(&path, RecoveryPolicy::TruncateTornTail).unwrap_err(),
            &path,
            reported_at,
            reason,
        );
        flip_bit(&path, flip_at, 4);
    }
    // The inactive copy is not in force: damage there changes nothing.
    flip_bit(&path, LOG_METADATA_POS[1 - active] + 1, 4);
    assert_eq!(open_pmem(&path, RecoveryPolicy::Strict).unwrap().0, states[3]);
}

#[test]
fn pmem_bit_flip_in_an_entry_is_an_error_and_salvage_keeps_the_prefix() {
    let dir = scratch_dir();
    let path = dir.path().join("log.pmem");
    let states = write_pmem(&path, 4);
    // Entries are 16 + 170 bytes, padded to 192; flip inside the third.
    let third = LOG_AREA_POS + 2 * 192;
    flip_bit(&path, third + 60, 2);
    let error = open_pmem(&path, RecoveryPolicy::TruncateTornTail).unwrap_err();
    assert_corrupt(error, &path, third, "entry CRC");
    let (state, report) = open_pmem(&path, RecoveryPolicy::SalvagePrefix).unwrap();
    assert_eq!(state, states[2]);
    assert_eq!(report.salvaged.expect("reported").bytes_dropped, 2 * 192);
    let (state, _) = open_pmem(&path, RecoveryPolicy::Strict).unwrap();
    assert_eq!(state, states[2], "the salvage was committed");
}

// ----- Checkpoints -----

fn write_checkpoints(dir: &Path, slots: &[u64]) -> CheckpointStore {
    use std::io::Write;
    let options = CheckpointOptions { keep: 3, block_bytes: 1000 };
    let mut store = CheckpointStore::open(dir, &options).unwrap();
    for &slot in slots {
        let mut writer = store.writer(Slot(slot)).unwrap();
        writer.write_all(&vec![slot as u8; 2500]).unwrap();
        writer.finish().unwrap();
    }
    store
}

fn checkpoint_path(dir: &Path, slot: u64) -> PathBuf {
    dir.join(rsl_log::checkpoint::checkpoint_name(Slot(slot)))
}

fn assert_checkpoint_corrupt(error: &CheckpointError, file: &Path, offset: u64, reason: &str) {
    match error {
        CheckpointError::Corrupt { file: f, offset: o, reason: r } => {
            assert_eq!((f.as_path(), *o), (file, offset), "{r}");
            assert!(r.contains(reason), "reason {r:?} should mention {reason:?}");
        }
        other => panic!("expected corruption, got {other}"),
    }
}

#[test]
fn checkpoint_damage_falls_back_to_an_older_one() {
    use std::io::Read;
    type Damage = fn(&Path);
    let damages: [(&str, Damage); 4] = [
        ("truncated", |p| fs::OpenOptions::new().write(true).open(p).unwrap().set_len(1500).unwrap()),
        ("zeroed", |p| fs::write(p, vec![0u8; fs::metadata(p).unwrap().len() as usize]).unwrap()),
        ("bit flip", |p| flip_bit(p, 64 + 8 + 1000 + 8 + 17, 6)),
        ("foreign", |p| fs::write(p, b"\x7fELF, not a checkpoint. ".repeat(8)).unwrap()),
    ];
    let expected: [(u64, &str); 4] =
        [(0, ""), (0, "not a checkpoint"), (1072, "block 1 CRC"), (0, "not a checkpoint")];
    for ((name, damage), (offset, reason)) in damages.iter().zip(expected) {
        let dir = scratch_dir();
        let store = write_checkpoints(dir.path(), &[10, 20]);
        let newest = checkpoint_path(dir.path(), 20);
        damage(&newest);
        let outcome = store.load_newest().unwrap();
        let mut reader = outcome.checkpoint.unwrap_or_else(|| panic!("{name}: fell back"));
        assert_eq!(reader.slot(), Slot(10), "{name}");
        let mut data = Vec::new();
        reader.read_to_end(&mut data).unwrap();
        assert_eq!(data, vec![10u8; 2500]);
        assert_eq!(outcome.skipped.len(), 1, "{name}");
        if *name == "truncated" {
            assert!(
                matches!(&outcome.skipped[0], CheckpointError::Corrupt { file, .. } if *file == newest),
                "{name}"
            );
        } else {
            assert_checkpoint_corrupt(&outcome.skipped[0], &newest, offset, reason);
        }
        assert!(store.verify(Slot(20)).is_err());
    }
}

#[test]
fn checkpoint_cut_inside_its_trailer_is_corrupt_not_a_panic() {
    let dir = scratch_dir();
    let store = write_checkpoints(dir.path(), &[20]);
    let path = checkpoint_path(dir.path(), 20);
    // Header, three blocks of 1000, 1000 and 500 bytes, then the 32-byte trailer.
    let trailer_at = 64 + 3 * 8 + 2500;
    let whole = fs::read(&path).unwrap();
    assert_eq!(whole.len() as u64, trailer_at + 32);
    // Cut 10 bytes from the end, past the trailer's magic: the loop finds the trailer.
    fs::write(&path, &whole[..whole.len() - 10]).unwrap();
    let error = store.verify(Slot(20)).unwrap_err();
    assert_checkpoint_corrupt(&error, &path, trailer_at, "trailer cut short: 22 of its 32 bytes");
    // A byte after a whole trailer is named as such.
    fs::write(&path, [whole.as_slice(), &[0]].concat()).unwrap();
    let error = store.verify(Slot(20)).unwrap_err();
    assert_checkpoint_corrupt(&error, &path, trailer_at, "trailer followed by 1 more bytes");
    fs::write(&path, &whole).unwrap();
    store.verify(Slot(20)).expect("the whole file verifies");
}

#[test]
fn checkpoint_all_damaged_loads_nothing_and_says_why() {
    let dir = scratch_dir();
    let store = write_checkpoints(dir.path(), &[10, 20]);
    for slot in [10, 20] {
        flip_bit(&checkpoint_path(dir.path(), slot), 20, 0);
    }
    let outcome = store.load_newest().unwrap();
    assert!(outcome.checkpoint.is_none());
    assert_eq!(outcome.skipped.len(), 2);
    for (error, slot) in outcome.skipped.iter().zip([20, 10]) {
        assert_checkpoint_corrupt(error, &checkpoint_path(dir.path(), slot), 12, "header CRC");
    }
}
