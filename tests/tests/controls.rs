//! Operator controls of rings of real `rsl-kv-server` processes, through the client
//! library the `rsl-kv` command line uses: replica health in `Status` and Prometheus, a
//! forced election, timing changed on a running ring, a replica re-seeded from a named
//! peer, the last write after which writes are refused (also after a restart), and the
//! `/healthz` and `/readyz` probes on the metrics port: a joining replica is not ready until
//! it is a member and caught up, a replica that lost its primary until a new one is elected.

use std::time::Duration;

use rsl_kv::proto as pb;
use rsl_kv::ClientError;
use rsl_tests::process::{self, ClusterOptions, ProcessCluster};
use rsl_tests::server;
use tonic::Code;

/// Longest wait for the ring to elect, converge or serve a request.
const WAIT: Duration = Duration::from_secs(30);

fn cluster(replicas: u64, extra: &[&str]) -> ProcessCluster {
    ProcessCluster::create(server::binary(), ClusterOptions::probed(replicas, extra))
}

/// Polls `probe` until it returns something, at most [`WAIT`]; `what` names the wait.
async fn until<T>(what: &str, probe: impl AsyncFnMut() -> Option<T>) -> T {
    process::until(what, WAIT, probe).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_election_timing_reseed_and_the_last_write_on_real_processes() {
    let mut cluster = cluster(3, &["--checkpoint-interval-slots=20", "--log-retain-slots=10"]);
    for id in cluster.ids() {
        cluster.spawn(id, &[]);
    }
    let mut client = cluster.client(WAIT);
    let primary = cluster.wait_for_primary(&mut client, WAIT).await;
    let mut last = 0;
    for i in 0..60 {
        last = client.put(&format!("key-{i}"), format!("value-{i}")).await.unwrap();
    }

    // Replica health, as the primary sees it, in Status and in Prometheus.
    let replicas = until("every replica caught up in the primary's view", async || {
        let status = client.status_of(cluster.client_address(primary)).await.ok()?;
        let caught_up = status.replicas.len() == 3
            && status.replicas.iter().all(|r: &pb::ReplicaHealth| {
                r.measured_by_primary && r.lag_slots == Some(0) && (r.is_self || r.connected == Some(true))
            });
        caught_up.then_some(status.replicas)
    })
    .await;
    assert!(replicas.iter().all(|r| r.acknowledged.is_some_and(|slot| slot >= last)), "{replicas:#?}");
    let scrape = cluster.metrics(primary);
    let other = cluster.ids().into_iter().find(|&id| id != primary).unwrap();
    let series = format!("rsl_replica_connected{{ring=\"1\",node=\"{primary}\",replica=\"{other}\"}} 1");
    assert!(scrape.contains(&series), "{scrape}");

    // A forced election on a chosen replica.
    let target = other;
    assert_eq!(client.promote(cluster.client_address(target)).await.unwrap(), target);
    assert_eq!(cluster.wait_for_primary(&mut client, WAIT).await, target);

    // New timing on every replica of the running ring; a bad one names the setting.
    let timing = pb::ChangeTimingRequest {
        heartbeat_interval_ms: 30,
        election_delay_min_ms: 300,
        election_delay_max_ms: 600,
    };
    for id in cluster.ids() {
        client.change_timing(cluster.client_address(id), timing).await.unwrap();
    }
    let statuses = cluster.statuses(&mut client).await;
    assert!(statuses.values().all(|s| (s.heartbeat_interval_ms, s.election_delay_max_ms) == (30, 600)));
    let bad = pb::ChangeTimingRequest { election_delay_min_ms: 40, ..timing };
    match client.change_timing(cluster.client_address(target), bad).await {
        Err(ClientError::Server { code: Code::InvalidArgument, message, .. }) => {
            assert!(message.contains("election_delay_min_ms"), "{message}")
        }
        other => panic!("a bad timing is refused: {other:?}"),
    }
    for i in 60..80 {
        last = client.put(&format!("key-{i}"), format!("value-{i}")).await.unwrap();
    }

    // Re-seeding a replica from a named peer's checkpoint, then it converges.
    let mut others = cluster.ids().into_iter().filter(|&id| id != target);
    let (node, from) = (others.next().unwrap(), others.next().unwrap());
    let slot = client.reseed(cluster.client_address(node), from).await.unwrap();
    assert!(slot >= 20, "a checkpoint of the peer: slot {slot}");
    let statuses = cluster.wait_converged(&mut client, last, WAIT).await;
    assert_eq!(statuses[&node].keys, 80);

    // The last write: afterwards every write is refused, reads still work.
    let final_slot = client.put_exclusive("final", "x", true).await.unwrap();
    match client.put("after", "y").await {
        Err(ClientError::RingClosed { last_slot }) => assert_eq!(last_slot, final_slot),
        other => panic!("a write after the last one is refused: {other:?}"),
    }
    assert_eq!(client.get("final").await.unwrap().as_deref(), Some(&b"x"[..]));
    // Still closed after a restart.
    assert!(cluster.terminate(node).success());
    cluster.spawn(node, &[]);
    until("the restarted replica knows the ring is closed", async || {
        let status = client.status_of(cluster.client_address(node)).await.ok()?;
        (status.last_slot == final_slot).then_some(())
    })
    .await;
    match client.put("after", "y").await {
        Err(ClientError::RingClosed { last_slot }) => assert_eq!(last_slot, final_slot),
        other => panic!("still refused after a restart: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_a_joining_replica_and_a_lost_primary() {
    let mut cluster = cluster(4, &["--initial-members=1,2,3"]);
    for id in 1..=3 {
        cluster.spawn(id, &[]);
    }
    cluster.spawn(4, &["--join"]);
    let mut client = cluster.client(WAIT);
    let primary = cluster.wait_for_primary(&mut client, WAIT).await;
    for i in 0..100 {
        client.put(&format!("key-{i}"), "value").await.unwrap();
    }
    for id in cluster.ids() {
        assert_eq!(cluster.probe(id, "/healthz"), ("HTTP/1.1 200 OK".to_owned(), "ok\n".to_owned()));
    }
    for id in 1..=3 {
        until("a member is ready", async || cluster.ready(id).then_some(())).await;
    }
    // The joining replica holds nothing and votes in nothing yet.
    let (status, body) = cluster.probe(4, "/readyz");
    assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
    assert_eq!(body, "ring 1: not a member of any configuration yet (joining)\n");
    client.reconfigure(&[1, 2, 3, 4]).await.unwrap();
    until("the new member catches up and is ready", async || cluster.ready(4).then_some(())).await;

    // A replica that hears no primary is not ready until one is elected: with the primary
    // and another replica paused, the two left are no quorum of four.
    let mut others = cluster.ids().into_iter().filter(|&id| id != primary);
    let (watcher, paused) = (others.next().unwrap(), others.next().unwrap());
    cluster.pause(primary);
    cluster.pause(paused);
    let reason = until("the lost primary is noticed", async || {
        let (status, body) = cluster.probe(watcher, "/readyz");
        (status != "HTTP/1.1 200 OK").then_some(body)
    })
    .await;
    assert!(reason.contains("no primary heard within 400 ms"), "{reason}");
    assert_eq!(cluster.probe(watcher, "/healthz").0, "HTTP/1.1 200 OK", "it still serves");
    cluster.resume(paused);
    until("a new primary is followed", async || cluster.ready(watcher).then_some(())).await;
    cluster.resume(primary);
}
