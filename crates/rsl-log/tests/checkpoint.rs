//! The checkpoint store: round trips, retention, fallback, streaming transfer, and every
//! crash state of publishing a checkpoint.

mod common;

use std::io::{Read, Write};
use std::sync::Arc;

use common::*;
use parking_lot::Mutex;
use rsl_core::Slot;
use rsl_log::sim::{CrashModel, SimDisk};
use rsl_log::vfs::Directory;
use rsl_log::{CheckpointError, CheckpointOptions, CheckpointStore};

fn data(slot: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u64).wrapping_mul(31).wrapping_add(slot) as u8).collect()
}

fn save(store: &mut CheckpointStore, slot: u64, len: usize) {
    let mut writer = store.writer(Slot(slot)).unwrap();
    // Odd-sized writes straddle block boundaries.
    for chunk in data(slot, len).chunks(333) {
        writer.write_all(chunk).unwrap();
    }
    let info = writer.finish().unwrap();
    assert_eq!((info.slot, info.data_bytes), (Slot(slot), len as u64));
}

fn load(store: &CheckpointStore, slot: u64) -> Vec<u8> {
    let mut out = Vec::new();
    store.reader(Slot(slot)).unwrap().read_to_end(&mut out).unwrap();
    out
}

fn small_blocks() -> CheckpointOptions {
    CheckpointOptions { keep: 2, block_bytes: 1024 }
}

#[test]
fn checkpoints_round_trip_at_every_size_around_block_boundaries() {
    let dir = scratch_dir();
    let mut store =
        CheckpointStore::open(dir.path(), &CheckpointOptions { keep: 100, ..small_blocks() }).unwrap();
    for (slot, len) in [0usize, 1, 1023, 1024, 1025, 4096, 10_000].iter().enumerate() {
        save(&mut store, slot as u64 + 1, *len);
        assert_eq!(load(&store, slot as u64 + 1), data(slot as u64 + 1, *len), "{len} bytes");
    }
}

#[test]
fn only_the_newest_are_kept_and_the_log_floor_follows_the_oldest() {
    let dir = scratch_dir();
    let mut store = CheckpointStore::open(dir.path(), &small_blocks()).unwrap();
    assert_eq!(store.truncation_floor(Slot(50)).unwrap(), Slot::ZERO, "no checkpoint: keep the log");
    for slot in [10, 20, 30] {
        save(&mut store, slot, 3000);
    }
    assert_eq!(store.list().unwrap(), vec![Slot(20), Slot(30)]);
    assert_eq!(store.oldest_kept().unwrap(), Some(Slot(20)));
    assert_eq!(store.truncation_floor(Slot(31)).unwrap(), Slot(21));
    assert_eq!(store.truncation_floor(Slot(15)).unwrap(), Slot(15));
    let outcome = store.load_newest().unwrap();
    assert_eq!(outcome.checkpoint.unwrap().slot(), Slot(30));
    assert!(outcome.skipped.is_empty());
}

#[test]
fn an_older_checkpoint_published_is_kept_and_newer_ones_can_be_dropped() {
    let dir = scratch_dir();
    let mut store = CheckpointStore::open(dir.path(), &small_blocks()).unwrap();
    for slot in [20, 30] {
        save(&mut store, slot, 1500);
    }
    // Older than both kept ones (a peer's, to re-seed from): kept, the oldest other goes.
    save(&mut store, 10, 1500);
    assert_eq!(store.list().unwrap(), vec![Slot(10), Slot(30)]);
    assert_eq!(load(&store, 10), data(10, 1500));
    assert_eq!(store.remove_newer_than(Slot(10)).unwrap(), vec![Slot(30)]);
    assert_eq!(store.list().unwrap(), vec![Slot(10)]);
    assert_eq!(store.remove_newer_than(Slot(10)).unwrap(), Vec::<Slot>::new());
}

#[test]
fn a_dropped_writer_leaves_nothing_and_leftovers_are_cleaned_on_open() {
    let dir = scratch_dir();
    {
        let mut store = CheckpointStore::open(dir.path(), &small_blocks()).unwrap();
        let mut writer = store.writer(Slot(5)).unwrap();
        writer.write_all(&[1; 5000]).unwrap();
        drop(writer);
        assert!(store.list().unwrap().is_empty());
        assert!(matches!(store.reader(Slot(5)), Err(CheckpointError::NotFound { slot: Slot(5) })));
    }
    std::fs::write(dir.path().join("checkpoint-00000000000000000007.ckpt.tmp"), b"partial").unwrap();
    let store = CheckpointStore::open(dir.path(), &small_blocks()).unwrap();
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("LOCK")]);
    assert!(store.load_newest().unwrap().checkpoint.is_none());
}

#[test]
fn a_checkpoint_streams_in_chunks_to_another_store() {
    let (a, b) = (scratch_dir(), scratch_dir());
    let mut source = CheckpointStore::open(a.path(), &small_blocks()).unwrap();
    save(&mut source, 42, 7777);
    // The receiver may use another block size: the file says which.
    let mut target =
        CheckpointStore::open(b.path(), &CheckpointOptions { keep: 1, block_bytes: 4096 }).unwrap();
    let chunks = source.chunks(Slot(42), 1000).unwrap();
    let file_bytes = chunks.file_bytes();
    let mut receiver = target.receiver(Slot(42)).unwrap();
    let mut sent = 0;
    for chunk in chunks {
        let chunk = chunk.unwrap();
        sent += chunk.len() as u64;
        receiver.write_chunk(&chunk).unwrap();
    }
    assert_eq!(sent, file_bytes);
    let info = receiver.finish().unwrap();
    assert_eq!((info.slot, info.data_bytes, info.file_bytes), (Slot(42), 7777, file_bytes));
    assert_eq!(load(&target, 42), data(42, 7777));
}

#[test]
fn a_damaged_transfer_is_refused_and_not_published() {
    let (a, b) = (scratch_dir(), scratch_dir());
    let mut source = CheckpointStore::open(a.path(), &small_blocks()).unwrap();
    save(&mut source, 42, 3000);
    let mut target = CheckpointStore::open(b.path(), &small_blocks()).unwrap();
    let mut chunks: Vec<Vec<u8>> =
        source.chunks(Slot(42), 512).unwrap().map(|c| c.unwrap().to_vec()).collect();
    chunks[2][100] ^= 0x20;
    let mut receiver = target.receiver(Slot(42)).unwrap();
    for chunk in &chunks {
        receiver.write_chunk(chunk).unwrap();
    }
    let error = receiver.finish().unwrap_err();
    assert!(matches!(error, CheckpointError::Corrupt { offset: 1096, .. }), "{error}");
    assert!(target.list().unwrap().is_empty());
    // A transfer cut short is refused too.
    let mut receiver = target.receiver(Slot(42)).unwrap();
    receiver.write_chunk(&chunks[0]).unwrap();
    assert!(matches!(receiver.finish(), Err(CheckpointError::Corrupt { .. })));
    // And one for another slot (a file renamed in transit).
    let mut receiver = target.receiver(Slot(43)).unwrap();
    for chunk in source.chunks(Slot(42), 4096).unwrap() {
        receiver.write_chunk(&chunk.unwrap()).unwrap();
    }
    assert!(matches!(receiver.finish(), Err(CheckpointError::Corrupt { offset: 16, .. })));
}

#[test]
fn the_directory_is_locked() {
    let dir = scratch_dir();
    let _store = CheckpointStore::open(dir.path(), &small_blocks()).unwrap();
    assert!(matches!(
        CheckpointStore::open(dir.path(), &small_blocks()),
        Err(CheckpointError::Locked { .. })
    ));
}

/// Every crash state while publishing checkpoint 20 (and pruning 10 beyond keep = 2 after
/// 15) loads either the new checkpoint or an older complete one, never fails.
#[test]
fn every_crash_state_of_publishing_loads_a_complete_checkpoint() {
    let disk = SimDisk::new();
    let mut store = CheckpointStore::open_in(Box::new(disk.clone()), &small_blocks()).unwrap();
    save(&mut store, 10, 2500);
    save(&mut store, 15, 2500);
    let outcomes = Arc::new(Mutex::new(std::collections::BTreeMap::<u64, u64>::new()));
    let hook_outcomes = outcomes.clone();
    let check = move |disk: &SimDisk| {
        for state in disk.crash_states(100_000, 7) {
            let store = CheckpointStore::open_in(Box::new(state), &small_blocks()).unwrap();
            let outcome = store.load_newest().unwrap();
            assert!(outcome.skipped.is_empty(), "a torn checkpoint was visible: {:?}", outcome.skipped);
            let mut reader = outcome.checkpoint.expect("some checkpoint survives");
            let slot = reader.slot().0;
            let mut out = Vec::new();
            reader.read_to_end(&mut out).unwrap();
            assert_eq!(out, data(slot, 2500));
            *hook_outcomes.lock().entry(slot).or_default() += 1;
        }
    };
    disk.barriers().set_before(check.clone());
    save(&mut store, 20, 2500);
    check(&disk);
    let outcomes = outcomes.lock();
    assert!(outcomes.contains_key(&15) && outcomes.contains_key(&20), "{outcomes:?}");
    assert_eq!(disk.list().unwrap().iter().filter(|n| n.ends_with(".ckpt")).count(), 2);
}
