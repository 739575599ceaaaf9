//! Three replicas in one process over the in-memory network: replication, reads, failover,
//! restarts from the file log, catch-up from a checkpoint, two rings on shared runtimes,
//! the errors a user sees for an oversized request and a corrupt log, and the slot tests
//! compare states at once a request was answered.

mod common;

use std::time::Duration;

use common::{Cluster, Tally, WAIT};
use rsl::{BuildError, NodeId, ReadError, ReplicateError, RingId, Role, Slot, StartError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const RING: RingId = RingId(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicate_and_read() {
    let cluster = Cluster::with_ring(3, RING).await;
    let requests: Vec<u64> = (1..=20).collect();
    for (i, &request) in requests.iter().enumerate() {
        let response = cluster.replicate(RING, request).await;
        assert_eq!(response, Tally::of(requests[..=i].iter().copied()), "response to request {request}");
    }
    let expected = Tally::of(requests.iter().copied());

    // A linearizable read at the primary sees every acknowledged write.
    let primary = cluster.primary(RING).await;
    let read =
        tokio::time::timeout(WAIT, primary.read(Vec::new())).await.expect("in time").expect("lease read");
    assert_eq!(Tally::decode(&read), expected);

    // A secondary refuses lease reads and writes, naming the primary.
    let secondary = cluster.replicas(RING).into_iter().find(|r| r.node() != primary.node()).unwrap();
    match secondary.read(Vec::new()).await {
        Err(ReadError::NotPrimary { hint, .. }) => assert_eq!(hint, Some(primary.node())),
        other => panic!("lease read at a secondary: {other:?}"),
    }
    match secondary.replicate(1u64.to_le_bytes().to_vec()).await {
        Err(ReplicateError::NotPrimary { hint }) => assert_eq!(hint, Some(primary.node())),
        other => panic!("replicate at a secondary: {other:?}"),
    }

    // Fast reads on every replica once it applied the last write's slot.
    let last = primary.status().borrow().chosen;
    for state in cluster.states(RING, last).await {
        assert_eq!(state, expected);
    }
    // A fast read for a slot nobody reached gives up after the bound.
    let far = Slot(last.0 + 1_000);
    let refused = secondary.read_fast_within(Vec::new(), far, Duration::from_millis(50)).await;
    assert!(
        matches!(refused, Err(rsl::FastReadError::NotApplied { min_slot, .. }) if min_slot == far),
        "{refused:?}"
    );

    // Statistics: group commit, slots, latencies, and their Prometheus rendering.
    let statistics = primary.statistics().await.expect("running");
    assert_eq!(statistics.status.role, Role::Primary);
    assert!(statistics.log.store.syncs > 0 && statistics.log.store.appends >= 20, "{statistics:?}");
    assert!(statistics.log.requests >= statistics.log.rounds, "{statistics:?}");
    assert!(statistics.core.slots_chosen >= 20, "{statistics:?}");
    assert_eq!(statistics.runtime.requests_replicated, 20);
    assert_eq!(statistics.replicate_latency.count, 20);
    assert!(statistics.persist_latency.count > 0);
    let text = cluster.runtimes[&primary.node()].render_prometheus().await;
    let node = primary.node().0;
    assert!(text.contains(&format!("rsl_role{{ring=\"1\",node=\"{node}\",role=\"primary\"}} 1")), "{text}");
    assert!(text.contains("# TYPE rsl_log_syncs_total counter"), "{text}");
    assert!(text.contains("rsl_replicate_latency_seconds_count{ring=\"1\""), "{text}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_serving_after_the_primary_is_dropped() {
    let mut cluster = Cluster::with_ring(3, RING).await;
    cluster.replicate_all(RING, 1..=5).await;
    let old_primary = cluster.primary(RING).await.node();
    // Kill it: dropping the replica stops it (in the background).
    drop(cluster.rings.remove(&(RING, old_primary)));

    cluster.replicate_all(RING, 6..=10).await;
    let new_primary = cluster.primary(RING).await;
    assert_ne!(new_primary.node(), old_primary);
    let last = new_primary.status().borrow().chosen;
    let states = cluster.states(RING, last).await;
    assert_eq!(states.len(), 2);
    for state in states {
        assert_eq!(state, Tally::of(1..=10));
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_replica_recovers_its_file_log_and_catches_up_from_slots() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::with_ring_on_files(3, RING, dir.path()).await;
    cluster.replicate_all(RING, 1..=10).await;
    let primary = cluster.primary(RING).await.node();
    let secondary = *cluster.members.iter().find(|&&n| n != primary).unwrap();
    // Everything the secondary acknowledged is on its disk once it applied slot 10's value.
    let before = cluster.ring(RING, primary).status().borrow().chosen;
    cluster.applied(cluster.ring(RING, secondary), before).await;
    cluster.stop(RING, secondary).await;

    cluster.replicate_all(RING, 11..=30).await;
    let target = cluster.ring(RING, primary).status().borrow().chosen;

    cluster.restart(RING, secondary).await.expect("restart from the file log");
    let restarted = cluster.ring(RING, secondary);
    // Recovery brings back what the log held: every slot it had applied before the stop.
    let recovery = restarted.recovery();
    assert!(recovery.proposals >= before.0, "recovered {recovery:?}");
    assert!(recovery.log_records > 0 && recovery.promise > rsl::Ballot::ZERO, "recovered {recovery:?}");
    assert!(recovery.torn_tail.is_none(), "a clean stop leaves no torn tail: {recovery:?}");
    cluster.applied(restarted, target).await;
    for state in cluster.states(RING, target).await {
        assert_eq!(state, Tally::of(1..=30));
    }
    let statistics = cluster.ring(RING, secondary).statistics().await.unwrap();
    assert!(statistics.core.fetches_sent > 0, "caught up by fetching slots: {statistics:?}");
    assert_eq!(statistics.runtime.checkpoints_installed, 0, "no checkpoint was needed");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catches_up_from_a_checkpoint_after_the_slots_were_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::new(3);
    cluster
        .start_ring_on_files(RING, dir.path(), |config| {
            config.checkpoint_interval_slots = 5;
            config.log_retain_slots = 2;
        })
        .await;
    cluster.replicate_all(RING, 1..=3).await;
    let primary = cluster.primary(RING).await.node();
    let lagging = *cluster.members.iter().rev().find(|&&n| n != primary).unwrap();
    cluster.stop(RING, lagging).await;

    cluster.replicate_all(RING, 4..=40).await;
    // The primary copies the secondary's checkpoints in the background, then truncates.
    let mut status = cluster.ring(RING, primary).status();
    let truncated =
        tokio::time::timeout(WAIT, status.wait_for(|s| s.checkpoint >= Slot(30) && s.log_start > Slot(4)))
            .await
            .is_ok_and(|waited| waited.is_ok());
    assert!(truncated, "checkpoint copied and log truncated: {:?}", *status.borrow());
    let primary_status = cluster.ring(RING, primary).status().borrow().clone();

    cluster.restart(RING, lagging).await.expect("restart");
    let target = primary_status.chosen;
    cluster.applied(cluster.ring(RING, lagging), target).await;
    for state in cluster.states(RING, target).await {
        assert_eq!(state, Tally::of(1..=40));
    }
    let statistics = cluster.ring(RING, lagging).statistics().await.unwrap();
    assert!(statistics.runtime.checkpoints_installed >= 1, "installed a checkpoint: {statistics:?}");
    assert!(statistics.runtime.checkpoint_bytes_received > 0);
    let served: u64 = {
        let mut served = 0;
        for replica in cluster.replicas(RING) {
            served += replica.statistics().await.unwrap().runtime.checkpoints_served;
        }
        served
    };
    assert!(served >= 1, "a peer served the checkpoint");

    // The caught-up replica keeps up with new slots after the checkpoint.
    cluster.replicate(RING, 41).await;
    let target = cluster.ring(RING, primary).status().borrow().chosen;
    for state in cluster.states(RING, target).await {
        assert_eq!(state, Tally::of(1..=41));
    }

    // The installed checkpoint is on its disk: a restart loads it, then replays the rest.
    let installed = statistics.status.checkpoint;
    assert!(installed >= Slot(30), "{statistics:?}");
    cluster.stop(RING, lagging).await;
    cluster.restart(RING, lagging).await.expect("restart from the installed checkpoint");
    let recovery = cluster.ring(RING, lagging).recovery().clone();
    assert!(recovery.checkpoint >= installed, "{recovery:?}");
    assert!(recovery.skipped_checkpoints.is_empty(), "{recovery:?}");
    cluster.replicate(RING, 42).await;
    let target = cluster.ring(RING, primary).status().borrow().chosen;
    for state in cluster.states(RING, target).await {
        assert_eq!(state, Tally::of(1..=42));
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rings_share_three_runtimes() {
    let mut cluster = Cluster::new(3);
    let (first, second) = (RingId(1), RingId(2));
    cluster.start_ring(first, |_| {}).await;
    cluster.start_ring(second, |_| {}).await;
    for runtime in cluster.runtimes.values() {
        assert_eq!(runtime.rings(), vec![first, second]);
    }
    for request in 1..=6 {
        cluster.replicate(first, request).await;
        cluster.replicate(second, 100 + request).await;
        cluster.replicate(second, 200 + request).await;
    }
    let first_chosen = cluster.primary(first).await.status().borrow().chosen;
    let second_chosen = cluster.primary(second).await.status().borrow().chosen;
    for state in cluster.states(first, first_chosen).await {
        assert_eq!(state, Tally::of(1..=6));
    }
    let second_requests: Vec<u64> = (1..=6).flat_map(|r| [100 + r, 200 + r]).collect();
    for state in cluster.states(second, second_chosen).await {
        assert_eq!(state, Tally::of(second_requests.iter().copied()));
    }
    // Stopping one ring leaves the other serving on the same runtimes.
    for node in cluster.members.clone() {
        cluster.stop(first, node).await;
    }
    assert_eq!(cluster.runtimes[&NodeId(1)].rings(), vec![second]);
    cluster.replicate(second, 7).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_is_rejected_with_a_clear_error() {
    let mut cluster = Cluster::new(3);
    cluster.start_ring(RING, |config| config.request_bytes_max = 1024).await;
    cluster.replicate(RING, 1).await;
    let primary = cluster.primary(RING).await;
    let error = primary.replicate(vec![0u8; 2000]).await.expect_err("too large");
    assert_eq!(error, ReplicateError::TooLarge { bytes: 2000, max: 1024 });
    let message = error.to_string();
    assert!(message.contains("2000 bytes") && message.contains("request_bytes_max of 1024"), "{message}");
    // The ring is unaffected.
    assert_eq!(cluster.replicate(RING, 2).await, Tally::of([1, 2]));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_log_is_refused_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::with_ring_on_files(3, RING, dir.path()).await;
    cluster.replicate_all(RING, 1..=5).await;
    let victim = NodeId(3);
    cluster.stop(RING, victim).await;

    // Damage the first segment's header: not a torn tail, so recovery must refuse.
    let log_dir = dir.path().join("ring-1-node-3").join("log");
    let mut segments: Vec<_> = std::fs::read_dir(&log_dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    let segment = segments.first().expect("a segment").clone();
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[0] ^= 0xFF;
    std::fs::write(&segment, &bytes).unwrap();

    match cluster.restart(RING, victim).await {
        Err(BuildError::Start(StartError::Log {
            ring,
            source: rsl::log::LogError::Corrupt { file, offset, .. },
        })) => {
            assert_eq!(ring, RING);
            assert_eq!(file, segment);
            assert_eq!(offset, 0);
        }
        Err(other) => panic!("expected a corrupt-log error, got {other}"),
        Ok(()) => panic!("a corrupt log was accepted"),
    }
    let message = match cluster.restart(RING, victim).await {
        Err(error) => error.to_string(),
        Ok(()) => unreachable!(),
    };
    assert!(message.contains("corrupt log") && message.contains(&segment.display().to_string()), "{message}");
    // The two healthy replicas still form a majority.
    cluster.replicate(RING, 6).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relinquish_hands_primacy_to_the_target() {
    let cluster = Cluster::with_ring(3, RING).await;
    cluster.replicate(RING, 1).await;
    let primary = cluster.primary(RING).await;
    let target = *cluster.members.iter().find(|&&n| n != primary.node()).unwrap();
    assert_eq!(primary.relinquish_primary(Some(target)).await.expect("relinquish"), target);
    let mut status = cluster.ring(RING, target).status();
    tokio::time::timeout(WAIT, status.wait_for(|s| s.role == Role::Primary))
        .await
        .expect("the target becomes primary in time")
        .expect("running");
    assert_eq!(cluster.replicate(RING, 2).await, Tally::of([1, 2]));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_over_http() {
    let cluster = Cluster::with_ring(3, RING).await;
    cluster.replicate(RING, 1).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(rsl::serve_metrics(cluster.runtimes[&NodeId(1)].clone(), listener));
    let scrape = async {
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    };
    let response = tokio::time::timeout(WAIT, scrape).await.expect("scrape in time");
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(response.contains("rsl_slots_chosen_total{ring=\"1\",node=\"1\"}"), "{response}");
    server.abort();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_share_slots_and_syncs() {
    let cluster = Cluster::with_ring(3, RING).await;
    cluster.replicate(RING, 0).await;
    let primary = cluster.primary(RING).await.clone();
    let (clients, per_client) = (32u64, 40u64);
    let mut tasks = Vec::new();
    for client in 0..clients {
        let primary = primary.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_client {
                let request = client * 1_000 + i;
                primary.replicate(request.to_le_bytes().to_vec()).await.expect("replicate");
            }
        }));
    }
    for task in tasks {
        tokio::time::timeout(WAIT, task).await.expect("in time").expect("no panic");
    }
    let statistics = primary.statistics().await.unwrap();
    let requests = clients * per_client + 1;
    assert_eq!(statistics.runtime.requests_executed, requests);
    assert!(statistics.core.slots_chosen <= requests, "{statistics:?}");
    let chosen = statistics.status.chosen;
    let expected_total: u64 = (0..clients).flat_map(|c| (0..per_client).map(move |i| c * 1_000 + i)).sum();
    for state in cluster.states(RING, chosen).await {
        assert_eq!((state.count, state.total), (requests, expected_total));
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newest_applied_slot_covers_every_answered_request() {
    // What tests compare states at: once a request is answered, every replica's state as of
    // `newest_applied` includes it. (A replica's published status may not show the slot of
    // the request it just answered yet; taking the newest status instead fails here.)
    let cluster = Cluster::with_ring(3, RING).await;
    for request in 1..=30u64 {
        cluster.replicate(RING, request).await;
        let slot = cluster.newest_applied(RING);
        for state in cluster.states(RING, slot).await {
            assert_eq!(state, Tally::of(1..=request), "as of slot {slot}, after request {request}");
        }
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_state_machine_fails_waiting_and_later_requests_as_shut_down() {
    let mut cluster = Cluster::new(3);
    // Far shorter than the time a panic hook may take to print a backtrace on a loaded
    // machine: the answer must come from the panic's report, not from this timer.
    cluster.options.request_timeout = Duration::from_secs(1);
    cluster.start_ring(RING, |_| {}).await;
    assert_eq!(cluster.replicate(RING, 7).await, Tally::of([7]));
    let primary = cluster.primary(RING).await;
    // Tally's `execute` panics on anything but an 8-byte request. Good requests go in
    // with the bad one; those executed before it succeed, every other one is refused.
    let (eight, bad, nine) = tokio::join!(
        primary.replicate(8u64.to_le_bytes().to_vec()),
        primary.replicate(&b"bad"[..]),
        primary.replicate(9u64.to_le_bytes().to_vec()),
    );
    let results = [eight, bad, nine];
    let bad = results[1].as_ref().expect_err("the state machine panicked");
    for result in &results {
        match result {
            Ok(response) => assert_eq!(Tally::decode(response).count, 2, "only 8 runs before the panic"),
            Err(ReplicateError::Shutdown { reason }) => {
                assert!(
                    reason.contains("state machine panicked") && reason.contains("8-byte request"),
                    "{reason}"
                );
            }
            Err(other) => panic!("expected Shutdown, got {other:?} (first error {bad:?})"),
        }
    }
    let later = primary.replicate(10u64.to_le_bytes().to_vec()).await.expect_err("the ring stopped");
    assert!(
        matches!(&later, ReplicateError::Shutdown { reason } if reason.contains("state machine panicked")),
        "{later:?}"
    );
    let reason = primary.stop_reason().expect("the ring says why it stopped");
    assert!(reason.contains("8-byte request"), "{reason}");
    cluster.shutdown().await;
}
