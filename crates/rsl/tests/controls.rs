//! Operator controls and replica health through the facade, on in-process rings over the
//! in-memory network: replica health while a replica is cut off and after, a forced
//! election, timing changed on a running ring, re-seeding a damaged replica from a named
//! peer, the last request that closes a ring (across a restart and a checkpoint install),
//! readiness, and the `/healthz` and `/readyz` probes.

mod common;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rsl::{
    Bytes, MemoryStorage, NodeId, NotReady, PromotionError, ReadinessOptions, ReplicaHealth, ReplicateError,
    ReseedError, Ring, RingId, Role, Slot, StateMachine, Storage, Timing, TimingError, TransferError,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const RING: RingId = RingId(1);

/// Asks `ring` for its replicas' health until `done` holds of it, and returns it.
async fn health_until(
    ring: &Ring,
    what: &str,
    done: impl Fn(&[ReplicaHealth]) -> bool,
) -> Vec<ReplicaHealth> {
    let wait = async {
        loop {
            let replicas = ring.replicas().await;
            if done(&replicas) {
                return replicas;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    match tokio::time::timeout(WAIT, wait).await {
        Ok(replicas) => replicas,
        Err(_) => panic!("{what}: not within the time limit; last seen {:?}", ring.replicas().await),
    }
}

/// Waits until `ring`'s readiness is `ready` (or, when not, until `not_ready` holds of the
/// reason).
async fn readiness_until(
    ring: &Ring,
    options: ReadinessOptions,
    done: impl Fn(&Result<(), NotReady>) -> bool,
) {
    let wait = async {
        while !done(&ring.readiness(options).await) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    if tokio::time::timeout(WAIT, wait).await.is_err() {
        panic!("readiness of {} stuck at {:?}", ring.node(), ring.readiness(options).await);
    }
}

fn peer(replicas: &[ReplicaHealth], node: NodeId) -> &ReplicaHealth {
    replicas.iter().find(|r| r.node == node).expect("a member")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_sees_a_cut_off_replica_fall_behind_and_recover() {
    let cluster = Cluster::with_ring(3, RING).await;
    cluster.replicate_all(RING, 1..=3).await;
    let primary = cluster.primary(RING).await.clone();
    let cut = *cluster.members.iter().find(|&&n| n != primary.node()).unwrap();
    let other = *cluster.members.iter().find(|&&n| n != primary.node() && n != cut).unwrap();
    health_until(&primary, "everyone caught up and connected", |replicas| {
        replicas.len() == 3
            && replicas.iter().all(|r| {
                r.measured_by_primary && r.lag_slots == Some(0) && (r.is_self || r.connected == Some(true))
            })
    })
    .await;

    cluster.network.partition(&[&[primary.node(), other], &[cut]]);
    for request in 4..=9u64 {
        primary.replicate(request.to_le_bytes().to_vec()).await.expect("a quorum remains");
    }
    let replicas = health_until(&primary, "the cut-off replica lags", |replicas| {
        let r = peer(replicas, cut);
        r.connected == Some(false)
            && r.lag_slots.is_some_and(|lag| lag >= 6)
            && r.lag.is_some_and(|lag| lag >= Duration::from_millis(50))
            && r.last_heard.is_some_and(|ago| ago >= Duration::from_millis(50))
    })
    .await;
    assert_eq!(peer(&replicas, other).lag_slots, Some(0), "{replicas:?}");
    let held = peer(&replicas, cut).acknowledged;
    assert!(held < peer(&replicas, primary.node()).acknowledged, "{replicas:?}");
    // The lag keeps growing in time while the replica is away.
    let first = peer(&replicas, cut).lag.unwrap();
    health_until(&primary, "the lag grows", |replicas| {
        peer(replicas, cut).lag.is_some_and(|lag| lag > first)
    })
    .await;

    // Prometheus: one gauge per replica.
    let text = cluster.runtimes[&primary.node()].render_prometheus().await;
    let labels = format!("ring=\"1\",node=\"{}\",replica=\"{}\"", primary.node().0, cut.0);
    assert!(text.contains(&format!("rsl_replica_connected{{{labels}}} 0\n")), "{text}");
    assert!(text.contains(&format!("rsl_replica_lag_slots{{{labels}}} ")), "{text}");

    // A secondary knows itself and its primary only, and says so.
    let view = cluster.ring(RING, other).replicas().await;
    assert!(view.iter().all(|r| !r.measured_by_primary), "{view:?}");
    assert!(peer(&view, primary.node()).is_primary && peer(&view, primary.node()).last_heard.is_some());
    assert_eq!(peer(&view, cut).lag_slots, None, "{view:?}");

    cluster.network.heal();
    health_until(&primary, "the replica caught up", |replicas| {
        let r = peer(replicas, cut);
        r.connected == Some(true) && r.lag_slots == Some(0) && r.lag == Some(Duration::ZERO)
    })
    .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_election_makes_the_chosen_replica_primary() {
    let cluster = Cluster::with_ring(3, RING).await;
    cluster.replicate(RING, 1).await;
    let primary = cluster.primary(RING).await.clone();
    primary.attempt_promotion().await.expect("the primary is primary already");
    let chosen = *cluster.members.iter().find(|&&n| n != primary.node()).unwrap();
    let ring = cluster.ring(RING, chosen);
    ring.attempt_promotion().await.expect("promoted");
    assert_eq!(ring.status().borrow().role, Role::Primary);
    let mut old = primary.status();
    tokio::time::timeout(WAIT, old.wait_for(|s| s.primary == Some(chosen))).await.unwrap().unwrap();
    assert_eq!(Tally::decode(&ring.replicate(2u64.to_le_bytes().to_vec()).await.unwrap()), Tally::of([1, 2]));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vetoed_replica_refuses_a_forced_election() {
    /// A state machine that never lets its replica become primary.
    struct Vetoed(Tally);
    impl StateMachine for Vetoed {
        fn execute(&mut self, slot: Slot, request: &[u8]) -> Bytes {
            self.0.execute(slot, request)
        }
        fn read(&self, request: &[u8]) -> Bytes {
            self.0.read(request)
        }
        fn save_checkpoint(&self, slot: Slot, writer: &mut dyn Write) -> std::io::Result<()> {
            self.0.save_checkpoint(slot, writer)
        }
        fn load_checkpoint(&mut self, slot: Slot, reader: &mut dyn Read) -> std::io::Result<()> {
            self.0.load_checkpoint(slot, reader)
        }
        fn can_become_primary(&mut self) -> bool {
            false
        }
    }
    let mut cluster = Cluster::new(3);
    let vetoed = NodeId(1);
    for node in cluster.members.clone() {
        let builder = Ring::builder(config(RING, node, &cluster.members))
            .storage(Storage::Memory(MemoryStorage::new()))
            .runtime(&cluster.runtimes[&node]);
        let builder = if node == vetoed {
            builder.state_machine(Vetoed(Tally::default()))
        } else {
            builder.state_machine(Tally::default())
        };
        cluster.rings.insert((RING, node), builder.start().await.unwrap());
    }
    // An election takes an election delay; the veto is polled within a heartbeat of the
    // start, long before.
    let primary = cluster.primary(RING).await;
    assert_ne!(primary.node(), vetoed);
    match cluster.ring(RING, vetoed).attempt_promotion().await {
        Err(PromotionError::Refused(rsl::core::PromotionError::Vetoed)) => {}
        other => panic!("expected the veto, got {other:?}"),
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timing_changes_on_a_running_ring() {
    let cluster = Cluster::with_ring(3, RING).await;
    cluster.replicate(RING, 1).await;
    let primary = cluster.primary(RING).await.clone();
    let secondary = cluster.ring(RING, *cluster.members.iter().find(|&&n| n != primary.node()).unwrap());
    let bad = Timing { heartbeat_interval_ms: 100, election_delay_min_ms: 150, election_delay_max_ms: 300 };
    match primary.change_timing(bad).await {
        Err(TimingError::Invalid(rsl::ConfigError::Invalid { field, .. })) => {
            assert_eq!(field, "election_delay_min_ms")
        }
        other => panic!("expected a refusal naming the field, got {other:?}"),
    }
    assert_eq!(primary.timing().heartbeat_interval_ms, 10, "nothing changed");

    // Slower heartbeats: the secondaries first, so their election delays cover them.
    let slow =
        Timing { heartbeat_interval_ms: 200, election_delay_min_ms: 1_000, election_delay_max_ms: 1_500 };
    for replica in cluster.replicas(RING) {
        if replica.node() != primary.node() {
            replica.change_timing(slow).await.expect("valid timing");
        }
    }
    primary.change_timing(slow).await.expect("valid timing");
    for replica in cluster.replicas(RING) {
        assert_eq!(replica.timing(), slow);
    }
    // With 10 ms heartbeats the primary is never 150 ms unheard; with 200 ms it is.
    health_until(secondary, "heartbeats slowed down", |replicas| {
        replicas
            .iter()
            .any(|r| r.is_primary && r.last_heard.is_some_and(|ago| ago >= Duration::from_millis(150)))
    })
    .await;
    assert_eq!(primary.status().borrow().role, Role::Primary, "no election meanwhile");
    assert_eq!(cluster.replicate(RING, 2).await, Tally::of([1, 2]));
    cluster.shutdown().await;
}

/// A tally whose next execution can be made to go wrong, as a damaged state would.
struct Damageable {
    tally: Tally,
    damage: Arc<AtomicBool>,
}

impl StateMachine for Damageable {
    fn execute(&mut self, slot: Slot, request: &[u8]) -> Bytes {
        let answer = self.tally.execute(slot, request);
        if self.damage.swap(false, Ordering::SeqCst) {
            self.tally.total += 1_000;
            return self.tally.read(&[]);
        }
        answer
    }
    fn read(&self, request: &[u8]) -> Bytes {
        self.tally.read(request)
    }
    fn save_checkpoint(&self, slot: Slot, writer: &mut dyn Write) -> std::io::Result<()> {
        self.tally.save_checkpoint(slot, writer)
    }
    fn load_checkpoint(&mut self, slot: Slot, reader: &mut dyn Read) -> std::io::Result<()> {
        self.tally.load_checkpoint(slot, reader)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_replica_is_reseeded_from_a_named_peer() {
    let mut cluster = Cluster::new(3);
    let mut damage = std::collections::BTreeMap::new();
    for node in cluster.members.clone() {
        let mut config = config(RING, node, &cluster.members);
        config.checkpoint_interval_slots = 5;
        config.log_retain_slots = 50;
        let flag = Arc::new(AtomicBool::new(false));
        damage.insert(node, flag.clone());
        let ring = Ring::builder(config)
            .state_machine(Damageable { tally: Tally::default(), damage: flag })
            .storage(Storage::Memory(MemoryStorage::new()))
            .runtime(&cluster.runtimes[&node])
            .start()
            .await
            .unwrap();
        cluster.rings.insert((RING, node), ring);
    }
    cluster.replicate_all(RING, 1..=12).await;
    let primary = cluster.primary(RING).await.clone();
    let mut others = cluster.members.iter().copied().filter(|&n| n != primary.node());
    let (damaged, source) = (others.next().unwrap(), others.next().unwrap());
    // The damage hits request 13: the damaged replica executed request 12 already.
    cluster.applied(cluster.ring(RING, damaged), cluster.newest_applied(RING)).await;
    damage[&damaged].store(true, Ordering::SeqCst);
    cluster.replicate(RING, 13).await;
    // The slot of request 13 (primacy may have moved under load, and a replica's status
    // may not show the slot of the request it just answered yet).
    let slot = cluster.newest_applied(RING);
    let states = cluster.states(RING, slot).await;
    assert_eq!(
        states.iter().filter(|s| **s == Tally::of(1..=13)).count(),
        2,
        "one replica diverged: {states:?}"
    );

    let ring = cluster.ring(RING, damaged);
    match ring.reseed_from(damaged).await {
        Err(ReseedError::Refused(rsl::core::ReseedError::FromSelf { .. })) => {}
        other => panic!("a replica cannot re-seed from itself: {other:?}"),
    }
    match ring.reseed_from(NodeId(9)).await {
        Err(ReseedError::Transfer { from: NodeId(9), error: TransferError::Unreachable { .. } }) => {}
        other => panic!("an unknown peer is unreachable: {other:?}"),
    }
    let checkpoint = ring.reseed_from(source).await.expect("re-seeded");
    assert!(checkpoint >= Slot(5) && checkpoint <= slot, "{checkpoint}");
    cluster.replicate(RING, 14).await;
    let slot = cluster.newest_applied(RING);
    for state in cluster.states(RING, slot).await {
        assert_eq!(state, Tally::of(1..=14), "every replica holds the same state again");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_last_request_closes_the_ring_across_restarts_and_checkpoints() {
    let mut cluster = Cluster::new(3);
    // A checkpoint at every slot, the log kept only from the oldest: a replica that falls
    // behind catches up by installing a checkpoint.
    cluster
        .start_ring(RING, |c| {
            c.checkpoint_interval_slots = 1;
            c.log_retain_slots = 0;
        })
        .await;
    cluster.replicate_all(RING, 1..=2).await;
    let primary = cluster.primary(RING).await.clone();
    let late = *cluster.members.iter().find(|&&n| n != primary.node()).unwrap();
    let late_applied = cluster.ring(RING, late).status().borrow().applied;
    cluster.stop(RING, late).await;
    let primary = cluster.primary(RING).await.clone();
    for request in 3..=5u64 {
        primary.replicate(request.to_le_bytes().to_vec()).await.unwrap();
    }
    let alone = primary.replicate_exclusive(6u64.to_le_bytes().to_vec(), false).await.unwrap();
    assert_eq!(Tally::decode(&alone), Tally::of(1..=6));
    let last = primary.replicate_exclusive(7u64.to_le_bytes().to_vec(), true).await.unwrap();
    assert_eq!(Tally::decode(&last), Tally::of(1..=7));
    let last_slot = primary.status().borrow().last_slot.expect("closed");
    for replica in cluster.replicas(RING) {
        let mut status = replica.status();
        tokio::time::timeout(WAIT, status.wait_for(|s| s.last_slot == Some(last_slot)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            replica.replicate(8u64.to_le_bytes().to_vec()).await,
            Err(ReplicateError::RingClosed { last_slot }),
            "{} refuses writes",
            replica.node()
        );
    }
    // Reads still work.
    assert_eq!(Tally::decode(&primary.read(Vec::new()).await.expect("a lease read")), Tally::of(1..=7));

    // The replica that was away catches up from a checkpoint that carries the closed state,
    // once the others truncated their logs past where it stopped. (They would on their own,
    // the primary once it copied a secondary's checkpoint in the background; on demand it
    // does not depend on how loaded the machine is.)
    for replica in cluster.replicas(RING) {
        let checkpoint = replica.checkpoint_now().await.expect("a checkpoint on demand");
        assert!(checkpoint >= last_slot, "{checkpoint}");
        let mut status = replica.status();
        tokio::time::timeout(WAIT, status.wait_for(|s| s.log_start > late_applied.next()))
            .await
            .expect("the running replicas truncated their logs in time")
            .unwrap();
    }
    cluster.restart(RING, late).await.unwrap();
    let ring = cluster.ring(RING, late).clone();
    let mut status = ring.status();
    tokio::time::timeout(WAIT, status.wait_for(|s| s.last_slot == Some(last_slot) && s.applied >= last_slot))
        .await
        .expect("caught up and closed in time")
        .unwrap();
    let installed = ring.statistics().await.unwrap().runtime.checkpoints_installed;
    assert!(installed >= 1, "it caught up through a checkpoint, not the log");
    assert_eq!(
        ring.replicate(9u64.to_le_bytes().to_vec()).await,
        Err(ReplicateError::RingClosed { last_slot })
    );
    assert_eq!(Tally::decode(&ring.read_fast(Vec::new(), last_slot).await.unwrap()), Tally::of(1..=7));
    // Restarted, it is closed from the start: its newest checkpoint says so (it installed
    // one, or saved its own once it applied the last slot).
    let mut status = ring.status();
    tokio::time::timeout(WAIT, status.wait_for(|s| s.checkpoint >= last_slot))
        .await
        .expect("a checkpoint of the closed state in time")
        .unwrap();
    cluster.stop(RING, late).await;
    cluster.restart(RING, late).await.unwrap();
    let ring = cluster.ring(RING, late);
    assert!(ring.recovery().checkpoint >= last_slot, "{:?}", ring.recovery());
    assert_eq!(ring.status().borrow().last_slot, Some(last_slot));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_and_the_probes_follow_a_cut_off_replica() {
    let cluster = Cluster::with_ring(3, RING).await;
    cluster.replicate(RING, 1).await;
    let primary = cluster.primary(RING).await.clone();
    let cut = *cluster.members.iter().find(|&&n| n != primary.node()).unwrap();
    let options = ReadinessOptions::default();
    for replica in cluster.replicas(RING) {
        readiness_until(replica, options, Result::is_ok).await;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(rsl::serve_metrics_with(cluster.runtimes[&cut].clone(), listener, options));
    let probe = |path: &'static str| async move {
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    };
    assert!(probe("/healthz").await.starts_with("HTTP/1.1 200 OK"));
    assert!(probe("/readyz").await.starts_with("HTTP/1.1 200 OK"));

    let others: Vec<NodeId> = cluster.members.iter().copied().filter(|&n| n != cut).collect();
    cluster.network.partition(&[&others, &[cut]]);
    let ring = cluster.ring(RING, cut);
    readiness_until(ring, options, |r| matches!(r, Err(NotReady::NoPrimary { .. }))).await;
    let response = probe("/readyz").await;
    assert!(response.starts_with("HTTP/1.1 503 Service Unavailable"), "{response}");
    assert!(response.ends_with("ring 1: no primary heard within 250 ms\n"), "{response}");
    assert!(probe("/healthz").await.starts_with("HTTP/1.1 200 OK"), "still serving");

    cluster.network.heal();
    readiness_until(ring, options, Result::is_ok).await;
    assert!(probe("/readyz").await.starts_with("HTTP/1.1 200 OK"));
    server.abort();
    cluster.shutdown().await;
}
