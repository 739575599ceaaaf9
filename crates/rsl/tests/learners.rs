//! Growing a ring through a learner on an in-memory network: three voters and a joining
//! replica that is added as a learner, follows the log and serves fast reads without
//! voting, is refused promotion while it lags (after waiting the promotion wait), and is
//! promoted once it caught up.

mod common;

use std::time::{Duration, Instant};

use common::{config, Cluster, Disk, Tally, WAIT};
use rsl::runtime::ReadinessOptions;
use rsl::{
    ChangeConfigurationError, MemberAddress, MembershipChange, MemoryStorage, NodeId, Ring, RingId,
    RingOptions,
};

const RING: RingId = RingId(17);

fn n(id: u64) -> NodeId {
    NodeId(id)
}

/// Waits until `replica`'s configuration satisfies `reached`.
async fn wait_for_configuration(replica: &Ring, what: &str, reached: impl Fn(&rsl::Configuration) -> bool) {
    let mut status = replica.status();
    let entered = tokio::time::timeout(WAIT, status.wait_for(|s| reached(&s.configuration))).await;
    assert!(matches!(entered, Ok(Ok(_))), "{} never {what}: {:?}", replica.node(), replica.status().borrow());
}

/// Waits until `replica` is ready by `options` (`/readyz`).
async fn wait_ready(replica: &Ring, options: ReadinessOptions) {
    let started = Instant::now();
    while let Err(not_ready) = replica.readiness(options).await {
        assert!(started.elapsed() < WAIT, "{} never became ready: {not_ready}", replica.node());
        let mut status = replica.status();
        let _ = tokio::time::timeout(Duration::from_millis(20), status.changed()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_voters_and_a_learner_grow_into_four_voters() {
    let mut cluster = Cluster::new(4);
    cluster.options =
        RingOptions { learner_promotion_wait: Duration::from_secs(2), ..RingOptions::default() };
    let voters = [n(1), n(2), n(3)];
    for node in voters {
        let mut voter = config(RING, node, &voters);
        voter.learner_promotion_lag_slots_max = 5;
        cluster.configs.insert((RING, node), voter);
        cluster.disks.insert((RING, node), Disk::Memory(MemoryStorage::new()));
        cluster.restart(RING, node).await.unwrap();
    }
    let mut joining = config(RING, n(4), &[n(1)]);
    joining.joining = true;
    cluster.configs.insert((RING, n(4)), joining);
    cluster.disks.insert((RING, n(4)), Disk::Memory(MemoryStorage::new()));
    cluster.restart(RING, n(4)).await.unwrap();
    let mut expected: Vec<u64> = (1..=5).collect();
    cluster.replicate_all(RING, expected.clone()).await;

    // Add node 4 as a learner, with its addresses chosen in the configuration.
    let address = MemberAddress {
        node: n(4),
        replica: "http://node-4:7001".into(),
        client: "http://node-4:7000".into(),
    };
    let primary = cluster.primary(RING).await;
    let add = MembershipChange::new(voters.to_vec(), vec![n(4)]).with_addresses(vec![address.clone()]);
    let configuration = primary.change_configuration(add).await.expect("the learner is added");
    assert_eq!(
        (configuration.members.as_slice(), configuration.learners.as_slice()),
        (&voters[..], &[n(4)][..])
    );
    assert_eq!(configuration.address(n(4)), Some(&address));
    for voter in voters {
        // Every member's transport learns the address from the chosen configuration.
        let transport = cluster.runtimes[&voter].transport().clone();
        let learned = async {
            while transport.peer_address(n(4)).is_none_or(|a| a.as_str() != address.replica) {
                let mut status = cluster.ring(RING, voter).status();
                let _ = tokio::time::timeout(Duration::from_millis(20), status.changed()).await;
            }
        };
        tokio::time::timeout(WAIT, learned).await.expect("the address is learned from the configuration");
    }
    let learner = cluster.ring(RING, n(4));
    wait_for_configuration(learner, "became a learner", |c| c.is_learner(n(4))).await;
    assert!(!learner.status().borrow().member, "a learner does not vote");

    // It follows the log and serves fast reads of what it applied.
    for request in 10..20 {
        cluster.replicate(RING, request).await;
        expected.push(request);
    }
    let chosen = cluster.primary(RING).await.status().borrow().chosen;
    cluster.applied(learner, chosen).await;
    let state = Tally::decode(&learner.read_fast(Vec::new(), chosen).await.unwrap());
    assert_eq!(state, Tally::of(expected.iter().copied()));
    let tight = ReadinessOptions { lag_slots_max: 5 };
    wait_ready(learner, tight).await;
    let primary = cluster.primary(RING).await;
    let health = primary.replicas().await;
    let listed = health.iter().find(|r| r.node == n(4)).expect("the primary reports the learner");
    assert!(listed.is_learner && listed.measured_by_primary);

    // Cut off, the learner falls behind: the ring still chooses (it needs no learner), and
    // a promotion waits the promotion wait, then is refused naming the learner and the bound.
    cluster.network.partition(&[&voters, &[n(4)]]);
    for request in 100..130 {
        cluster.replicate(RING, request).await;
        expected.push(request);
    }
    let promote = MembershipChange::new(vec![n(1), n(2), n(3), n(4)], vec![]);
    let asked = Instant::now();
    let refused = primary.change_configuration(promote.clone()).await;
    let Err(ChangeConfigurationError::LearnerBehind { node, lag_slots_max, waited_ms, .. }) = &refused else {
        panic!("a lagging learner's promotion must be refused, got {refused:?}");
    };
    assert_eq!((*node, *lag_slots_max), (n(4), 5));
    assert!(*waited_ms >= 2_000 && asked.elapsed() >= Duration::from_secs(2), "it waited first: {refused:?}");
    assert!(refused.unwrap_err().to_string().contains("learner_promotion_lag_slots_max = 5"));
    assert!(cluster.ring(RING, n(4)).readiness(tight).await.is_err(), "a lagging learner is not ready");

    // The same promotion asked while it is still behind waits, and succeeds once it caught up.
    let promotion = {
        let primary = primary.clone();
        let promote = promote.clone();
        tokio::spawn(async move { primary.change_configuration(promote).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!promotion.is_finished(), "the promotion waits for the learner");
    cluster.network.heal();
    let configuration = promotion.await.unwrap().expect("promoted once caught up");
    assert_eq!(configuration.members, vec![n(1), n(2), n(3), n(4)]);
    assert!(configuration.learners.is_empty());
    assert_eq!(configuration.address(n(4)), Some(&address), "addresses are kept across changes");
    wait_for_configuration(cluster.ring(RING, n(4)), "became a voter", |c| c.contains(n(4))).await;
    assert!(cluster.ring(RING, n(4)).status().borrow().member);
    for request in 200..205 {
        let tally = cluster.replicate(RING, request).await;
        expected.push(request);
        assert_eq!(tally, Tally::of(expected.iter().copied()));
    }
    let chosen = cluster.primary(RING).await.status().borrow().chosen;
    let states = cluster.states(RING, chosen).await;
    assert!(states.iter().all(|s| *s == Tally::of(expected.iter().copied())), "{states:?}");
    cluster.shutdown().await;
}
