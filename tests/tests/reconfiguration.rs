//! Reconfiguration of rings of real `rsl-kv-server` processes: RSL's chain ABC → BCD → CDE
//! → ADE under a steady write load with no acknowledged write lost (A offline across BCD
//! and CDE, finding the current configuration when it returns), replacing a killed
//! replica with a fresh one, and a change asked of a secondary refused with the primary's
//! address. A second bootstrap of a data directory is refused.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rsl_kv::proto as pb;
use rsl_tests::process::{fast_timing, ClusterOptions, ProcessCluster};
use rsl_tests::server;

const WAIT: Duration = Duration::from_secs(30);

/// A cluster of `nodes` processes in the address book; `initial` bootstrap the ring, the
/// others start joining.
fn start(nodes: u64, initial: &[u64], extra: &[&str]) -> ProcessCluster {
    let mut args = fast_timing();
    let list: Vec<String> = initial.iter().map(u64::to_string).collect();
    args.push(format!("--initial-members={}", list.join(",")));
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    let mut cluster = ProcessCluster::create(
        server::binary(),
        ClusterOptions { replicas: nodes, args, ..Default::default() },
    );
    for id in 1..=nodes {
        let join: &[&str] = if initial.contains(&id) { &[] } else { &["--join"] };
        cluster.spawn(id, join);
    }
    cluster
}

/// Writes `key-{n}` for n = 0, 1, 2, ... until told to stop; records every acknowledged one.
fn spawn_writer(
    cluster: &ProcessCluster,
    stop: Arc<Mutex<bool>>,
    acknowledged: Arc<Mutex<BTreeMap<String, String>>>,
) -> tokio::task::JoinHandle<u64> {
    let mut client = cluster.client(WAIT);
    tokio::spawn(async move {
        let mut failures = 0;
        for n in 0u64.. {
            if *stop.lock().unwrap() {
                break;
            }
            let (key, value) = (format!("key-{n}"), format!("value-{n}"));
            match client.put(&key, value.clone()).await {
                Ok(_) => {
                    acknowledged.lock().unwrap().insert(key, value);
                }
                // The outcome of a failed write is unknown; it is simply not counted.
                Err(_) => failures += 1,
            }
        }
        failures
    })
}

/// Reconfigures and checks the answer names exactly `members`.
async fn reconfigure(client: &mut rsl_kv::Client, members: &[u64]) -> u64 {
    let started = Instant::now();
    let answer =
        client.reconfigure(members).await.unwrap_or_else(|e| panic!("reconfigure to {members:?}: {e}"));
    assert_eq!(answer.members, members);
    eprintln!("configuration {} {members:?} chosen after {:?}", answer.configuration, started.elapsed());
    answer.configuration
}

/// Waits until every running replica in `members` reports configuration `number` and votes.
async fn wait_for_configuration(
    cluster: &ProcessCluster,
    client: &mut rsl_kv::Client,
    number: u64,
    members: &[u64],
) {
    let deadline = Instant::now() + WAIT;
    loop {
        let statuses = cluster.statuses(client).await;
        let entered = members.iter().all(|id| {
            !cluster.is_running(*id)
                || statuses.get(id).is_some_and(|s| s.configuration >= number && s.member)
        });
        if entered {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "members {members:?} did not enter configuration {number}: {statuses:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn assert_holds(client: &mut rsl_kv::Client, expected: &BTreeMap<String, String>) {
    for (key, value) in expected {
        let read = client.get(key).await.unwrap_or_else(|e| panic!("get {key}: {e}"));
        assert_eq!(read.as_deref(), Some(value.as_bytes()), "{key} lost");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chain_abc_bcd_cde_ade_loses_no_acknowledged_write() {
    // A=1 .. E=5; D and E start joining. Small checkpoints: joiners catch up from one.
    let mut cluster = start(5, &[1, 2, 3], &["--checkpoint-interval-slots=50", "--log-retain-slots=20"]);
    let mut client = cluster.client(WAIT);
    cluster.wait_for_primary(&mut client, WAIT).await;
    let stop = Arc::new(Mutex::new(false));
    let acknowledged = Arc::new(Mutex::new(BTreeMap::new()));
    let writer = spawn_writer(&cluster, stop.clone(), acknowledged.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut number = 1;
    for members in [[2, 3, 4], [3, 4, 5], [1, 4, 5]] {
        number = reconfigure(&mut client, &members).await;
        if members == [1, 4, 5] {
            // A was offline across BCD and CDE: it comes back, finds the current
            // configuration through the chosen log and a checkpoint, and votes in it.
            cluster.spawn(1, &[]);
        }
        wait_for_configuration(&cluster, &mut client, number, &members).await;
        if members == [2, 3, 4] {
            assert!(cluster.terminate(1).success());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    *stop.lock().unwrap() = true;
    let failures = writer.await.unwrap();
    let acknowledged = acknowledged.lock().unwrap().clone();
    eprintln!("{} writes acknowledged, {failures} failed during the chain", acknowledged.len());
    assert!(acknowledged.len() > 20, "the ring kept serving through the changes");

    // Everything acknowledged is there, read through the final configuration's primary.
    assert_holds(&mut client, &acknowledged).await;
    let last = client.put("after-the-chain", "1").await.unwrap();
    let statuses = cluster.statuses(&mut client).await;
    let primary = statuses.values().find(|s| s.role == "primary").expect("a primary");
    assert!([1, 4, 5].contains(&primary.node), "the primary is in ADE: {primary:?}");
    assert_eq!(primary.configuration, number);
    // Members of ADE converge on the same state; B and C know they are out.
    let deadline = Instant::now() + WAIT;
    loop {
        let statuses = cluster.statuses(&mut client).await;
        let ade: Vec<_> = [1, 4, 5].iter().filter_map(|id| statuses.get(id)).collect();
        let converged = ade.len() == 3
            && ade.iter().all(|s| s.applied >= last && (s.digest, s.keys) == (ade[0].digest, ade[0].keys));
        let out = [2, 3].iter().all(|id| statuses.get(id).is_some_and(|s| !s.member && s.role != "primary"));
        if converged && out {
            break;
        }
        assert!(Instant::now() < deadline, "ADE did not converge or B, C still vote: {statuses:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_is_replaced_by_a_fresh_one_and_a_secondary_refuses_changes() {
    let mut cluster = start(4, &[1, 2, 3], &["--checkpoint-interval-slots=20", "--log-retain-slots=5"]);
    let mut client = cluster.client(WAIT);
    let primary = cluster.wait_for_primary(&mut client, WAIT).await;
    let mut acknowledged = BTreeMap::new();
    for n in 0..50 {
        client.put(&format!("k{n}"), format!("v{n}")).await.unwrap();
        acknowledged.insert(format!("k{n}"), format!("v{n}"));
    }

    // A change asked of a secondary is refused, naming the primary.
    let secondary = [1, 2, 3].into_iter().find(|&id| id != primary).unwrap();
    let options = rsl_kv::ClientOptions { security: cluster.security(), ..Default::default() };
    let mut raw = rsl_kv::client::connect_lazy(cluster.client_address(secondary), &options).unwrap();
    let refusal = raw
        .reconfigure(pb::ReconfigureRequest { members: vec![1, 2, 4], ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(refusal.code(), tonic::Code::FailedPrecondition, "{refusal:?}");
    let named =
        refusal.metadata().get(rsl_kv::PRIMARY_ADDRESS_METADATA).unwrap().to_str().unwrap().to_owned();
    assert_eq!(named, cluster.client_address(primary));
    // An unknown node is refused as invalid.
    let mut at_primary = rsl_kv::client::connect_lazy(&named, &options).unwrap();
    let invalid = at_primary
        .reconfigure(pb::ReconfigureRequest { members: vec![1, 2, 9], ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(invalid.code(), tonic::Code::InvalidArgument, "{invalid:?}");

    // A secondary dies for good; the fresh replica 4 takes its place.
    let victim = [1, 2, 3].into_iter().find(|&id| id != primary && id != secondary).unwrap();
    cluster.kill(victim);
    for n in 50..100 {
        client.put(&format!("k{n}"), format!("v{n}")).await.unwrap();
        acknowledged.insert(format!("k{n}"), format!("v{n}"));
    }
    let mut members: Vec<u64> = [1, 2, 3, 4].into_iter().filter(|&id| id != victim).collect();
    members.sort_unstable();
    let number = reconfigure(&mut client, &members).await;
    wait_for_configuration(&cluster, &mut client, number, &members).await;
    // Retrying the same change is answered with the configuration in force.
    assert_eq!(reconfigure(&mut client, &members).await, number);

    // The ring serves with the replacement; it holds everything, even with the old primary
    // gone (the replacement and the other survivor form a majority).
    let last = client.put("after-replacement", "1").await.unwrap();
    cluster.kill(primary);
    let after = client.put("after-primary-loss", "1").await.unwrap();
    assert!(after > last);
    acknowledged.insert("after-replacement".into(), "1".into());
    acknowledged.insert("after-primary-loss".into(), "1".into());
    assert_holds(&mut client, &acknowledged).await;
    let statuses = cluster.wait_converged(&mut client, after, WAIT).await;
    assert!(
        statuses[&4].checkpoints_installed >= 1,
        "the replacement started from a checkpoint: {statuses:#?}"
    );
    assert_eq!(statuses[&4].keys, acknowledged.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_bootstrap_of_a_data_directory_is_refused() {
    let mut cluster = start(1, &[1], &[]);
    let mut client = cluster.client(WAIT);
    cluster.wait_for_primary(&mut client, WAIT).await;
    client.put("k", "v").await.unwrap();
    assert!(cluster.terminate(1).success());
    let (status, stderr) = cluster.spawn_expecting_failure(1, &["--bootstrap"], WAIT);
    assert!(!status.success());
    assert!(stderr.contains("refusing to bootstrap"), "{stderr}");
    // Recovering it (no --bootstrap) keeps its data.
    cluster.spawn(1, &[]);
    assert_eq!(client.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
}
