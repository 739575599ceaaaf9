//! The group committer: many producers, one sync per round, durability reported in order,
//! failures reported to everyone.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use parking_lot::Mutex;
use rsl_core::Slot;
use rsl_log::sim::{CrashModel, SimDisk};
use rsl_log::{
    CommitError, FileJournal, GroupCommitOptions, GroupCommitter, JournalOptions, LogError, LogStore,
    MemoryLog, RecoveryPolicy,
};

#[test]
fn many_producers_share_each_sync() {
    // A disk whose every sync takes as long as a slow disk's fdatasync.
    let disk = SimDisk::new();
    disk.barriers().set_before(|_| std::thread::sleep(Duration::from_millis(2)));
    let options = JournalOptions { segment_bytes_max: 64 << 20, preallocate: false };
    let (journal, _, _) =
        FileJournal::open_in(Box::new(disk.clone()), &options, RecoveryPolicy::Strict).unwrap();
    let committer = Arc::new(GroupCommitter::spawn(Box::new(journal), &GroupCommitOptions::default()));
    let producers: Vec<_> = (0..4u64)
        .map(|p| {
            let committer = committer.clone();
            std::thread::spawn(move || {
                let mut last = 0;
                for i in 0..2000u64 {
                    last = committer.append_next(None, vec![batch(p * 10_000 + i + 1, 1, 64)], None).unwrap();
                }
                committer.wait_durable(last).unwrap();
            })
        })
        .collect();
    for producer in producers {
        producer.join().unwrap();
    }
    let statistics = committer.statistics();
    assert_eq!(statistics.requests, 8000);
    assert!(
        statistics.rounds * 20 < statistics.requests,
        "expected many requests per sync, got {} rounds for {} requests",
        statistics.rounds,
        statistics.requests
    );
    assert_eq!(committer.durable_ticket(), 8000);
    let committer = Arc::try_unwrap(committer).expect("producers are done");
    drop(committer.close().unwrap());
    let (_, state, _) = FileJournal::open_in(Box::new(disk), &options, RecoveryPolicy::Strict).unwrap();
    assert_eq!(state.proposals.len(), 8000);
}

#[test]
fn durability_is_reported_in_order_through_the_callback() {
    let dir = scratch_dir();
    let (journal, _, _) =
        FileJournal::open(dir.path(), &JournalOptions::default(), RecoveryPolicy::Strict).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let callback_seen = seen.clone();
    let committer = GroupCommitter::spawn_with_callback(
        Box::new(journal),
        &GroupCommitOptions { queue_depth_max: 16, batch_requests_max: 7, ..GroupCommitOptions::default() },
        Some(Box::new(move |result| callback_seen.lock().push(result.expect("no failure")))),
    );
    for ticket in 1..=100 {
        committer
            .append(request(ticket, Some(ballot(ticket, 1)), vec![batch(ticket, ticket, 10)], None))
            .unwrap();
    }
    assert_eq!(committer.wait_durable(100).unwrap(), 100);
    assert!(committer.statistics().largest_round <= 7, "batch_requests_max is respected");
    // Reads go through the committer, after what was queued before them.
    committer.append(request(101, None, vec![batch(200, 1, 5)], None)).unwrap();
    let read = committer.read_range(Slot(99), Slot(300), u64::MAX).unwrap();
    assert_eq!(read.iter().map(|p| p.slot.0).collect::<Vec<_>>(), vec![99, 100, 200]);
    committer.truncate_below(Slot(100)).unwrap();
    let store = committer.close().unwrap();
    assert_eq!(store.log_start(), Slot(100));
    assert_eq!(store.durable_ticket(), 101);
    // The callback ran on the committer thread after every flush, never going back.
    let seen = seen.lock().clone();
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert!(seen.contains(&100) && seen.last() == Some(&101), "{seen:?}");
}

#[test]
fn ticket_order_is_checked_at_submission() {
    let committer = GroupCommitter::spawn(Box::new(MemoryLog::new()), &GroupCommitOptions::default());
    committer.append(request(5, None, vec![], None)).unwrap();
    let error = committer.append(request(5, None, vec![], None)).unwrap_err();
    assert!(matches!(error, CommitError::TicketOrder { last: 5, found: 5 }), "{error}");
    assert_eq!(committer.append_next(None, vec![], None).unwrap(), 6);
    assert_eq!(committer.wait_durable_for(6, Duration::from_secs(10)).unwrap(), Some(6));
    assert_eq!(committer.wait_durable_for(7, Duration::from_millis(20)).unwrap(), None, "never submitted");
}

#[test]
fn a_failed_sync_is_reported_to_waiters_callbacks_and_later_producers() {
    let disk = SimDisk::new();
    let options = JournalOptions { segment_bytes_max: 1 << 20, preallocate: false };
    let (journal, _, _) =
        FileJournal::open_in(Box::new(disk.clone()), &options, RecoveryPolicy::Strict).unwrap();
    let failures = Arc::new(AtomicU64::new(0));
    let callback_failures = failures.clone();
    let committer = GroupCommitter::spawn_with_callback(
        Box::new(journal),
        &GroupCommitOptions::default(),
        Some(Box::new(move |result| {
            if result.is_err() {
                callback_failures.fetch_add(1, Ordering::Relaxed);
            }
        })),
    );
    committer.append(request(1, None, vec![batch(1, 1, 10)], None)).unwrap();
    committer.wait_durable(1).unwrap();
    disk.barriers().fail_after(0);
    committer.append(request(2, None, vec![batch(2, 1, 10)], None)).unwrap();
    let error = committer.wait_durable(2).unwrap_err();
    assert!(matches!(&error, CommitError::Failed(e) if matches!(**e, LogError::Io { .. })), "{error}");
    assert_eq!(committer.durable_ticket(), 1, "nothing after the failure is reported durable");
    assert!(matches!(committer.append(request(3, None, vec![], None)), Err(CommitError::Failed(_))));
    assert_eq!(failures.load(Ordering::Relaxed), 1);
    assert!(committer.close().is_err());
}
