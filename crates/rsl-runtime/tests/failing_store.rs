//! A log store that fails: the ring stops rather than answer for a write it cannot make
//! durable, says why, acknowledges nothing after the failure, and releases its storage.
//! Storage that cannot be opened refuses the start with the store's error.

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use rsl_core::{NodeId, Slot};
use rsl_log::{CheckpointError, LogError, MemoryDisk};
use rsl_runtime::{
    BuildError, FileStorage, MemoryStorage, ReplicateError, Ring, RuntimeOptions, StartError, Storage,
};
use rsl_transport::MemoryNetwork;
use support::{config, gated, quick_options, solo_gated, solo_started, StoreGate, WAIT};

/// Waits until `ring` stopped by itself and returns why.
async fn stopped_by_itself(ring: &Ring) -> String {
    tokio::time::timeout(WAIT, ring.shutdown()).await.expect("the ring stops");
    assert!(ring.is_stopped());
    ring.stop_reason().expect("a reason")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_sync_stops_the_ring_and_the_request_is_not_acknowledged() {
    let (solo, gate) = solo_gated(|_, _| {}).await;
    solo.ring.replicate(&b"before"[..]).await.expect("a healthy write");
    gate.fail_flush.store(true, Ordering::SeqCst);
    let error = solo.ring.replicate(&b"lost"[..]).await.expect_err("the sync failed");
    assert!(
        matches!(&error, ReplicateError::Shutdown { reason } if reason.contains("log store failed")),
        "{error:?}"
    );
    let reason = stopped_by_itself(&solo.ring).await;
    assert!(reason.contains("log store failed") && reason.contains("injected flush failure"), "{reason}");
    assert_eq!(solo.probe.executed(), vec![b"before".to_vec()], "nothing after the failure executed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_append_stops_the_ring_and_names_the_error() {
    let (solo, gate) = solo_gated(|_, _| {}).await;
    gate.fail_append.store(true, Ordering::SeqCst);
    let error = solo.ring.replicate(&b"lost"[..]).await.expect_err("the append failed");
    assert!(matches!(error, ReplicateError::Shutdown { .. }), "{error:?}");
    let reason = stopped_by_itself(&solo.ring).await;
    assert!(reason.contains("injected append failure"), "{reason}");
    assert!(solo.probe.executed().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_after_a_store_failure_reports_the_failure() {
    let (solo, gate) = solo_gated(|_, _| {}).await;
    gate.fail_flush.store(true, Ordering::SeqCst);
    let _ = solo.ring.replicate(&b"lost"[..]).await;
    let reason = stopped_by_itself(&solo.ring).await;
    assert_eq!(
        solo.ring.replicate(&b"later"[..]).await,
        Err(ReplicateError::Shutdown { reason: reason.clone() })
    );
    assert_eq!(
        solo.ring.read(Bytes::new()).await,
        Err(rsl_runtime::ReadError::Shutdown { reason: reason.clone() })
    );
    assert!(solo.ring.statistics().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_fails_from_the_start_never_makes_a_primary() {
    let gate = Arc::new(StoreGate::default());
    gate.fail_flush.store(true, Ordering::SeqCst);
    let solo = solo_started(config(1, &[1]), quick_options(), gated(&MemoryDisk::new(), &gate)).await;
    // The candidate's promise cannot become durable: the ring stops instead of campaigning on.
    let reason = tokio::time::timeout(WAIT, async {
        let mut status = solo.ring.status();
        while !solo.ring.is_stopped() {
            let _ = tokio::time::timeout(std::time::Duration::from_millis(50), status.changed()).await;
        }
        solo.ring.stop_reason().expect("a reason")
    })
    .await
    .expect("the ring stops by itself");
    assert!(reason.contains("injected flush failure"), "{reason}");
    assert_ne!(solo.ring.status().borrow().role, rsl_core::Role::Primary);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_truncation_stops_the_ring() {
    let (solo, gate) = solo_gated(|config, _| {
        config.checkpoint_interval_slots = 2;
        config.log_retain_slots = 1;
    })
    .await;
    gate.fail_truncate.store(true, Ordering::SeqCst);
    // Writes until a checkpoint lets the log be truncated, which fails.
    let outcome = tokio::time::timeout(WAIT, async {
        for i in 0u64.. {
            if let Err(error) = solo.ring.replicate(i.to_le_bytes().to_vec()).await {
                return error;
            }
        }
        unreachable!()
    })
    .await
    .expect("a write fails once the truncation failed");
    assert!(matches!(outcome, ReplicateError::Shutdown { .. }), "{outcome:?}");
    assert!(gate.truncated_below.load(Ordering::SeqCst) > 1, "a truncation was asked for");
    let reason = stopped_by_itself(&solo.ring).await;
    assert!(reason.contains("injected truncate failure"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_sync_delays_the_answer_until_it_completes() {
    let (solo, gate) = solo_gated(|_, options| options.request_timeout = WAIT).await;
    let appends_before = gate.appends.load(Ordering::SeqCst);
    let held = gate.hold();
    let writer = {
        let ring = solo.ring.clone();
        tokio::spawn(async move { ring.replicate(&b"slow disk"[..]).await })
    };
    // The write reached the store, but is not durable: no answer, nothing executed.
    let appended = tokio::time::timeout(WAIT, async {
        // Polls a counter the committer thread bumps: there is nothing to await.
        while gate.appends.load(Ordering::SeqCst) <= appends_before {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    });
    appended.await.expect("appended");
    assert!(!writer.is_finished());
    assert!(solo.probe.executed().is_empty());
    drop(held);
    assert_eq!(writer.await.unwrap().as_deref(), Ok(&b"slow disk"[..]));
    assert_eq!(solo.probe.executed(), vec![b"slow disk".to_vec()]);
    solo.ring.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_log_in_use_refuses_a_second_ring_as_locked() {
    let storage = MemoryStorage::new();
    let first = support::solo_with(config(1, &[1]), quick_options(), storage.clone().into()).await;
    let network = MemoryNetwork::new(2);
    let (endpoint, inbound) = network.endpoint(NodeId(1)).unwrap();
    let error = Ring::builder(config(1, &[1]))
        .state_machine(support::Probe::new().0)
        .storage(storage)
        .transport(Arc::new(endpoint), inbound, RuntimeOptions::default())
        .start()
        .await
        .expect_err("locked");
    assert!(
        matches!(&error, BuildError::Start(StartError::Log { source: LogError::Locked { .. }, .. })),
        "{error}"
    );
    assert!(error.to_string().contains("locked"), "{error}");
    first.ring.shutdown().await;
}

async fn start_on(storage: Storage) -> Result<Ring, BuildError> {
    let network = MemoryNetwork::new(3);
    let (endpoint, inbound) = network.endpoint(NodeId(1)).unwrap();
    Ring::builder(config(1, &[1]))
        .state_machine(support::Probe::new().0)
        .storage(storage)
        .transport(Arc::new(endpoint), inbound, RuntimeOptions::default())
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_storage_under_a_regular_file_refuses_the_start_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-directory");
    std::fs::write(&file, b"x").unwrap();
    let error = start_on(FileStorage::new(&file).into()).await.expect_err("a file is no directory");
    match &error {
        BuildError::Start(StartError::Log { source: LogError::Io { path, .. }, .. }) => {
            assert!(path.starts_with(&file), "{}", path.display());
        }
        other => panic!("{other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_checkpoint_options_refuse_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut storage = FileStorage::new(dir.path());
    storage.checkpoints.keep = 0;
    let error = start_on(storage.into()).await.expect_err("keep 0");
    assert!(
        matches!(
            &error,
            BuildError::Start(StartError::Checkpoint { source: CheckpointError::InvalidOption { .. }, .. })
        ),
        "{error}"
    );
    assert!(error.to_string().contains("keep must be at least 1"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_storage_lays_out_its_log_and_checkpoints_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let storage = FileStorage::new(dir.path());
    assert_eq!(storage.log_dir(), dir.path().join("log"));
    assert_eq!(storage.checkpoint_dir(), dir.path().join("checkpoints"));
    let ring = start_on(storage.clone().into()).await.expect("start");
    support::primary(&ring).await;
    for i in 0..5u8 {
        ring.replicate(vec![i]).await.expect("replicate");
    }
    ring.shutdown().await;
    assert!(storage.log_dir().is_dir() && storage.checkpoint_dir().is_dir());
    let again = start_on(storage.into()).await.expect("restart");
    let recovery = again.recovery().clone();
    assert!(recovery.log_records > 0 && recovery.log_bytes > 0, "{recovery:?}");
    assert!(recovery.proposals >= 5, "{recovery:?}");
    assert_eq!(recovery.torn_tail, None);
    support::primary(&again).await;
    // The restarted replica re-executes what it recovered from the log.
    support::status_until(&again, "re-applied", |s| s.applied >= Slot(5)).await;
    again.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_ring_recovered_nothing() {
    let solo = support::solo().await;
    let recovery = solo.ring.recovery();
    assert_eq!(recovery.proposals, 0);
    assert_eq!(recovery.checkpoint, Slot(0));
    assert!(recovery.skipped_checkpoints.is_empty());
    solo.ring.shutdown().await;
}
