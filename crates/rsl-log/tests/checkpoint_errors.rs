//! The checkpoint store's refusals and bookkeeping on an in-memory directory: invalid
//! options, file names, a checkpoint damaged in its header, data or trailer (refused
//! naming the file and offset, skipped by `load_newest` for an older one), a missing slot,
//! the truncation floor, and removing checkpoints newer than a slot.

use std::io::{Read, Write};

use rsl_core::Slot;
use rsl_log::checkpoint::{checkpoint_name, parse_checkpoint_name, BLOCK_BYTES_MAX};
use rsl_log::vfs::{Directory, MemoryDirectory};
use rsl_log::{CheckpointError, CheckpointOptions, CheckpointStore};

fn options(keep: u32) -> CheckpointOptions {
    CheckpointOptions { keep, block_bytes: 64 }
}

fn store(dir: &MemoryDirectory, keep: u32) -> CheckpointStore {
    CheckpointStore::open_in(Box::new(dir.clone()), &options(keep)).expect("open")
}

fn save(store: &mut CheckpointStore, slot: u64, data: &[u8]) {
    let mut writer = store.writer(Slot(slot)).unwrap();
    writer.write_all(data).unwrap();
    writer.finish().unwrap();
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7) as u8).collect()
}

/// Flips one byte of the checkpoint at `slot` at `offset`.
fn damage(dir: &MemoryDirectory, slot: u64, offset: u64) {
    let name = checkpoint_name(Slot(slot));
    let mut file = dir.open(&name).unwrap();
    let mut byte = [0u8];
    file.read_at(&mut byte, offset).unwrap();
    file.write_at(&[byte[0] ^ 0x5a], offset).unwrap();
}

fn invalid_option(options: CheckpointOptions) -> String {
    match CheckpointStore::open_in(Box::new(MemoryDirectory::new()), &options) {
        Err(CheckpointError::InvalidOption { reason }) => reason,
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("accepted"),
    }
}

#[test]
fn keeping_no_checkpoint_is_an_invalid_option() {
    assert!(invalid_option(CheckpointOptions { keep: 0, ..options(1) })
        .contains("keep must be at least 1 (is 0)"));
}

#[test]
fn a_zero_block_size_is_an_invalid_option() {
    assert!(invalid_option(CheckpointOptions { block_bytes: 0, ..options(1) }).contains("(is 0)"));
}

#[test]
fn a_block_size_over_its_ceiling_is_an_invalid_option() {
    let reason = invalid_option(CheckpointOptions { block_bytes: BLOCK_BYTES_MAX + 1, ..options(1) });
    assert!(reason.contains(&format!("1..={BLOCK_BYTES_MAX}")), "{reason}");
}

#[test]
fn checkpoint_names_sort_by_slot_and_parse_back() {
    let (a, b) = (checkpoint_name(Slot(9)), checkpoint_name(Slot(10)));
    assert!(a < b, "{a} {b}");
    assert_eq!(parse_checkpoint_name(&a), Some(Slot(9)));
    assert_eq!(parse_checkpoint_name(&checkpoint_name(Slot(u64::MAX))), Some(Slot(u64::MAX)));
}

#[test]
fn names_that_are_not_checkpoints_do_not_parse() {
    for name in [
        "checkpoint-1.ckpt",
        "checkpoint-0000000000000000000x.ckpt",
        "checkpoint-00000000000000000001.tmp",
        "notes.txt",
        "checkpoint-99999999999999999999.ckpt",
    ] {
        assert_eq!(parse_checkpoint_name(name), None, "{name}");
    }
}

#[test]
fn a_checkpoint_reads_back_what_was_written() {
    let dir = MemoryDirectory::new();
    let mut store = store(&dir, 2);
    save(&mut store, 5, &data(300));
    let info = store.verify(Slot(5)).unwrap();
    assert_eq!((info.slot, info.data_bytes), (Slot(5), 300));
    let mut read = Vec::new();
    store.reader(Slot(5)).unwrap().read_to_end(&mut read).unwrap();
    assert_eq!(read, data(300));
}

#[test]
fn a_missing_slot_is_not_found() {
    let dir = MemoryDirectory::new();
    let store = store(&dir, 2);
    assert!(matches!(store.verify(Slot(3)), Err(CheckpointError::NotFound { slot: Slot(3) })));
    assert!(matches!(store.reader(Slot(3)), Err(CheckpointError::NotFound { .. })));
}

#[test]
fn a_damaged_header_is_corrupt_naming_the_file() {
    let dir = MemoryDirectory::new();
    let mut store = store(&dir, 2);
    save(&mut store, 5, &data(300));
    damage(&dir, 5, 0);
    match store.verify(Slot(5)) {
        Err(CheckpointError::Corrupt { file, .. }) => {
            assert!(file.to_string_lossy().contains(&checkpoint_name(Slot(5))), "{}", file.display())
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn damaged_data_is_corrupt_at_its_offset() {
    let dir = MemoryDirectory::new();
    let mut store = store(&dir, 2);
    save(&mut store, 5, &data(300));
    let len = dir.open(&checkpoint_name(Slot(5))).unwrap().len().unwrap();
    damage(&dir, 5, len / 2);
    match store.verify(Slot(5)) {
        Err(CheckpointError::Corrupt { offset, reason, .. }) => {
            assert!(offset <= len, "{offset} {reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_damaged_trailer_is_corrupt() {
    let dir = MemoryDirectory::new();
    let mut store = store(&dir, 2);
    save(&mut store, 5, &data(300));
    let len = dir.open(&checkpoint_name(Slot(5))).unwrap().len().unwrap();
    damage(&dir, 5, len - 1);
    assert!(matches!(store.verify(Slot(5)), Err(CheckpointError::Corrupt { .. })));
}

#[test]
fn a_truncated_checkpoint_is_corrupt() {
    let dir = MemoryDirectory::new();
    let mut store = store(&dir, 2);
    save(&mut store, 5, &data(300));
    let mut file = dir.open(&checkpoint_name(Slot(5))).unwrap();
    let len = file.len().unwrap();
    file.set_len(len - 10).unwrap();
    assert!(matches!(store.verify(Slot(5)), Err(CheckpointError::Corrupt { .. })));
}

#[test]
fn load_newest_skips_a_damaged_newest_for_an_older_one_and_says_why() {
    let dir = MemoryDirectory::new();
    let mut store = store(&dir, 3);
    save(&mut store, 5, &data(100));
    save(&mut store, 9, &data(200));
    damage(&dir, 9, 40);
    let outcome = store.load_newest().unwrap();
    assert_eq!(outcome.checkpoint.expect("the older one").info().slot, Slot(5));
    assert_eq!(outcome.skipped.len(), 1);
    assert!(matches!(outcome.skipped[0], CheckpointError::Corrupt { .. }));
}

#[test]
fn load_newest_of_an_empty_store_finds_nothing() {
    let dir = MemoryDirectory::new();
    let outcome = store(&dir, 2).load_newest().unwrap();
    assert!(outcome.checkpoint.is_none() && outcome.skipped.is_empty());
}

#[test]
fn only_the_newest_keep_are_kept_and_the_floor_follows_the_oldest() {
    let dir = MemoryDirectory::new();
    let mut store = store(&dir, 2);
    assert_eq!(store.truncation_floor(Slot(100)).unwrap(), Slot(0), "no checkpoint: nothing may go");
    for slot in [3, 6, 9] {
        save(&mut store, slot, &data(10));
    }
    assert_eq!(store.list().unwrap(), vec![Slot(6), Slot(9)]);
    assert_eq!(store.oldest_kept().unwrap(), Some(Slot(6)));
    assert_eq!(store.truncation_floor(Slot(100)).unwrap(), Slot(7));
    assert_eq!(store.truncation_floor(Slot(4)).unwrap(), Slot(4));
}

#[test]
fn checkpoints_newer_than_a_slot_are_removed() {
    let dir = MemoryDirectory::new();
    let mut store = store(&dir, 5);
    for slot in [3, 6, 9] {
        save(&mut store, slot, &data(10));
    }
    assert_eq!(store.remove_newer_than(Slot(5)).unwrap(), vec![Slot(6), Slot(9)]);
    assert_eq!(store.list().unwrap(), vec![Slot(3)]);
}

#[test]
fn a_writer_dropped_before_finish_publishes_nothing() {
    let dir = MemoryDirectory::new();
    let mut store = store(&dir, 2);
    {
        let mut writer = store.writer(Slot(4)).unwrap();
        writer.write_all(&data(100)).unwrap();
    }
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn a_second_store_on_the_same_directory_is_locked_out() {
    let dir = MemoryDirectory::new();
    let _first = store(&dir, 2);
    let error = CheckpointStore::open_in(Box::new(dir.clone()), &options(2)).map(|_| ()).unwrap_err();
    assert!(matches!(error, CheckpointError::Locked { .. }), "{error}");
}
