//! What offline tools rely on: dry-run recovery (`FileJournal::check`, `PmemLog::check`)
//! decides exactly as opening would but changes nothing; scans list every record with its
//! file and offset, also past damage; and files of a newer format version are refused by
//! every policy with an error naming the file, the version found and the one supported.

mod common;

use std::fs;
use std::io::Write as _;
use std::path::Path;

use common::*;
use rsl_core::Slot;
use rsl_log::journal::{SEGMENT_HEADER_BYTES, SEGMENT_MAGIC};
use rsl_log::{
    CheckpointError, CheckpointOptions, CheckpointStore, FileJournal, JournalOptions, LogError, LogStore,
    PmemLog, PmemOptions, RecoveryPolicy,
};

const POLICIES: [RecoveryPolicy; 3] =
    [RecoveryPolicy::Strict, RecoveryPolicy::TruncateTornTail, RecoveryPolicy::SalvagePrefix];

fn journal_options() -> JournalOptions {
    JournalOptions { segment_bytes_max: 1 << 20, preallocate: false }
}

/// A journal with `count` one-proposal records (slot i in record i), one flush each.
fn write_journal(dir: &Path, count: u64) -> Vec<std::path::PathBuf> {
    let (mut log, _, _) = FileJournal::open(dir, &journal_options(), RecoveryPolicy::Strict).unwrap();
    for ticket in 1..=count {
        log.append(&request(ticket, Some(ballot(ticket, 1)), vec![batch(ticket, ticket, 100)], None))
            .unwrap();
        log.flush().unwrap();
    }
    log.segment_names().iter().map(|name| dir.join(name)).collect()
}

/// Offset of the `n`-th own record of a segment written by `write_journal`.
fn record_offset(n: u64) -> u64 {
    SEGMENT_HEADER_BYTES + 64 + n * 208
}

/// Rewrites the `u32` at `at` of `path` to `value` and reseals the CRC32C at `crc_at` over
/// `covered` (with the CRC field zero), as a newer build writing that header would.
fn reseal(path: &Path, at: usize, value: &[u8], crc_at: usize, covered: std::ops::Range<usize>) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at..at + value.len()].copy_from_slice(value);
    bytes[crc_at..crc_at + 4].fill(0);
    let crc = crc32c::crc32c(&bytes[covered]);
    bytes[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
    fs::write(path, bytes).unwrap();
}

#[test]
fn journal_check_reports_the_cut_and_changes_nothing() {
    let dir = scratch_dir();
    let segments = write_journal(dir.path(), 4);
    let cut_at = record_offset(3) + 50;
    fs::OpenOptions::new().write(true).open(&segments[0]).unwrap().set_len(cut_at).unwrap();
    let before = fs::read(&segments[0]).unwrap();

    let error = FileJournal::check(dir.path(), RecoveryPolicy::Strict).unwrap_err();
    assert!(matches!(error, LogError::Corrupt { offset, .. } if offset == record_offset(3)), "{error}");
    let (state, report) = FileJournal::check(dir.path(), RecoveryPolicy::TruncateTornTail).unwrap();
    assert_eq!(state.proposals.len(), 3);
    let torn = report.torn_tail.expect("the cut is reported");
    assert_eq!((torn.file, torn.offset, torn.bytes_dropped), (segments[0].clone(), record_offset(3), 50));
    assert_eq!(fs::read(&segments[0]).unwrap(), before, "a check cuts nothing");

    // Opening for real makes the same decision.
    let (_, opened, report) =
        FileJournal::open(dir.path(), &journal_options(), RecoveryPolicy::TruncateTornTail).unwrap();
    assert_eq!((opened, report.torn_tail.unwrap().offset), (state, record_offset(3)));
}

#[test]
fn journal_check_refuses_a_locked_journal_and_a_missing_one() {
    let dir = scratch_dir();
    write_journal(dir.path(), 1);
    let (_open, _, _) = FileJournal::open(dir.path(), &journal_options(), RecoveryPolicy::Strict).unwrap();
    assert!(matches!(FileJournal::check(dir.path(), RecoveryPolicy::Strict), Err(LogError::Locked { .. })));
    let missing = dir.path().join("nothing-here");
    assert!(matches!(FileJournal::check(&missing, RecoveryPolicy::Strict), Err(LogError::Io { .. })));
    assert!(!missing.exists(), "a check creates nothing");
}

#[test]
fn journal_scan_lists_records_with_offsets_and_those_past_damage() {
    let dir = scratch_dir();
    let segments = write_journal(dir.path(), 5);
    let mut bytes = fs::read(&segments[0]).unwrap();
    bytes[record_offset(2) as usize + 100] ^= 4;
    fs::write(&segments[0], bytes).unwrap();

    let listing = rsl_log::journal::list(dir.path()).unwrap();
    assert_eq!(listing.segments.len(), 1);
    let mut records = Vec::new();
    let scan =
        rsl_log::journal::scan_segment(&listing.segments[0], &mut |record| records.push(record.clone()))
            .unwrap();
    // The snapshot and two records before the damage, two after it.
    let offsets: Vec<(u64, bool)> = records.iter().map(|r| (r.offset, r.beyond_damage)).collect();
    assert_eq!(
        offsets,
        vec![
            (SEGMENT_HEADER_BYTES, false),
            (record_offset(0), false),
            (record_offset(1), false),
            (record_offset(3), true),
            (record_offset(4), true)
        ]
    );
    assert_eq!((scan.records, scan.valid_bytes), (3, record_offset(2)));
    let damage = scan.damage.expect("damage found");
    assert!(matches!(damage.error, LogError::Corrupt { offset, .. } if offset == record_offset(2)));
    assert!(!damage.torn_tail_plausible, "later batches were synced after it");
}

#[test]
fn journal_segment_of_a_newer_format_is_refused_by_every_policy() {
    let dir = scratch_dir();
    let segments = write_journal(dir.path(), 2);
    reseal(&segments[0], 8, &2u32.to_le_bytes(), 12, 0..64);
    let before = fs::read(&segments[0]).unwrap();
    assert_eq!(before[..8], SEGMENT_MAGIC);
    for policy in POLICIES {
        let error = FileJournal::open(dir.path(), &journal_options(), policy).unwrap_err();
        match &error {
            LogError::UnsupportedVersion { file, offset: 8, found: 2, supported: 1 } => {
                assert_eq!(file, &segments[0]);
            }
            other => panic!("{policy:?}: expected a version refusal, got {other}"),
        }
        let message = error.to_string();
        assert!(message.contains("format version 2") && message.contains("reads version 1"), "{message}");
    }
    assert_eq!(fs::read(&segments[0]).unwrap(), before, "nothing cut or set aside");
    assert!(!dir
        .path()
        .join(format!("{}.damaged", segments[0].file_name().unwrap().to_string_lossy()))
        .exists());
}

#[test]
fn journal_record_of_a_newer_format_in_the_last_batch_is_not_cut_as_a_torn_tail() {
    let dir = scratch_dir();
    let segments = write_journal(dir.path(), 3);
    // The last record, resealed with version 2: its frame CRC is seeded with the segment's
    // sequence (1) and skips the CRC field.
    let at = record_offset(2) as usize;
    let mut bytes = fs::read(&segments[0]).unwrap();
    bytes[at + 4] = 2;
    let crc = crc32c::crc32c_append(crc32c::crc32c(&1u64.to_le_bytes()), &bytes[at..at + 12]);
    let crc = crc32c::crc32c_append(crc, &bytes[at + 16..at + 208 - 6]);
    bytes[at + 12..at + 16].copy_from_slice(&crc.to_le_bytes());
    fs::write(&segments[0], &bytes).unwrap();
    for policy in POLICIES {
        let error = FileJournal::open(dir.path(), &journal_options(), policy).unwrap_err();
        assert!(
            matches!(error, LogError::UnsupportedVersion { offset, found: 2, supported: 1, .. } if offset == record_offset(2) + 4),
            "{policy:?}: {error}"
        );
    }
    assert_eq!(fs::read(&segments[0]).unwrap(), bytes, "not cut");
}

fn write_pmem(path: &Path, count: u64) {
    let options = PmemOptions { capacity_bytes: 64 << 10, ..PmemOptions::default() };
    let (mut log, _, _) = PmemLog::open(path, &options, RecoveryPolicy::Strict).unwrap();
    for ticket in 1..=count {
        log.append(&request(ticket, Some(ballot(ticket, 1)), vec![batch(ticket, ticket, 100)], None))
            .unwrap();
        log.flush().unwrap();
    }
}

#[test]
fn pmem_check_reports_a_salvage_without_committing_it_and_scan_lists_entries() {
    let dir = scratch_dir();
    let path = dir.path().join("log.pmem");
    write_pmem(&path, 4);
    let mut entries = Vec::new();
    let scan = rsl_log::pmem::scan(&path, &mut |entry| entries.push(entry.clone())).unwrap();
    assert_eq!((scan.entries, scan.length, scan.damage.is_none()), (4, 4 * 192, true));
    let third = entries[2].offset;
    assert_eq!(third, rsl_log::pmem::LOG_AREA_POS + 2 * 192);

    let mut bytes = fs::read(&path).unwrap();
    bytes[third as usize + 60] ^= 2;
    fs::write(&path, &bytes).unwrap();
    let scan = rsl_log::pmem::scan(&path, &mut |_| {}).unwrap();
    assert!(matches!(scan.damage, Some(LogError::Corrupt { offset, .. }) if offset == third));
    assert!(PmemLog::check(&path, RecoveryPolicy::TruncateTornTail).is_err());
    let (state, report) = PmemLog::check(&path, RecoveryPolicy::SalvagePrefix).unwrap();
    assert_eq!(state.proposals.len(), 2);
    assert_eq!(report.salvaged.expect("reported").offset, third);
    assert_eq!(fs::read(&path).unwrap(), bytes, "the salvage is not committed by a check");
}

#[test]
fn pmem_region_of_a_newer_layout_is_refused_by_every_policy() {
    let dir = scratch_dir();
    let path = dir.path().join("log.pmem");
    write_pmem(&path, 2);
    // Global metadata: version u64 at 0, CRC32C of bytes 0..32 in the u64 at 32.
    let mut bytes = fs::read(&path).unwrap();
    bytes[0..8].copy_from_slice(&2u64.to_le_bytes());
    let crc = u64::from(crc32c::crc32c(&bytes[0..32]));
    bytes[32..40].copy_from_slice(&crc.to_le_bytes());
    fs::write(&path, &bytes).unwrap();
    for policy in POLICIES {
        let error = PmemLog::open(&path, &PmemOptions::default(), policy).unwrap_err();
        assert!(
            matches!(&error, LogError::UnsupportedVersion { file, offset: 0, found: 2, supported: 1 } if *file == path),
            "{policy:?}: {error}"
        );
    }
    assert_eq!(fs::read(&path).unwrap(), bytes);
}

#[test]
fn checkpoint_of_a_newer_format_is_refused_not_skipped() {
    let dir = scratch_dir();
    let options = CheckpointOptions { keep: 3, block_bytes: 1000 };
    let store = {
        let mut store = CheckpointStore::open(dir.path(), &options).unwrap();
        for slot in [10, 20] {
            let mut writer = store.writer(Slot(slot)).unwrap();
            writer.write_all(&[slot as u8; 1500]).unwrap();
            writer.finish().unwrap();
        }
        store
    };
    let newest = dir.path().join(rsl_log::checkpoint::checkpoint_name(Slot(20)));
    let file = rsl_log::checkpoint::inspect_file(&newest).unwrap();
    assert_eq!(
        (file.info.slot, file.info.data_bytes, file.blocks, file.block_bytes),
        (Slot(20), 1500, 2, 1000)
    );
    reseal(&newest, 8, &2u32.to_le_bytes(), 12, 0..64);
    let expect_version = |error: &CheckpointError| {
        assert!(
            matches!(error, CheckpointError::UnsupportedVersion { file, offset: 8, found: 2, supported: 1 } if *file == newest),
            "{error}"
        );
    };
    expect_version(&store.load_newest().unwrap_err());
    expect_version(&rsl_log::checkpoint::inspect_file(&newest).unwrap_err());
    // A copy under another name is read by the slot its header states.
    let copy = dir.path().join("backup.bin");
    fs::copy(dir.path().join(rsl_log::checkpoint::checkpoint_name(Slot(10))), &copy).unwrap();
    assert_eq!(rsl_log::checkpoint::inspect_file(&copy).unwrap().info.slot, Slot(10));
}
