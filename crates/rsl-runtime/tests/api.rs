//! The runtime's public functions not covered elsewhere, each with the effect it promises:
//! the runtime's registry of rings and its statistics, a ring's handle accessors, replica
//! health and readiness, the checkpoint server and the in-process checkpoint network, the
//! checkpoint's ring record (`framing`), latency histograms and `entropy`.

mod support;

use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rsl_core::{Configuration, NodeId, RingId, Role, Slot};
use rsl_runtime::framing::{
    read_configuration, read_ring_record, write_configuration, write_ring_record, RingRecord,
    CONFIGURATION_MAGIC,
};
use rsl_runtime::stats::Histogram;
use rsl_runtime::{
    render_prometheus, CheckpointFetcher, CheckpointRequest, LocalCheckpointNetwork, MemoryStorage,
    ReadinessOptions, RingSpec, Runtime, RuntimeOptions, StartError, TransferError,
};
use rsl_transport::MemoryNetwork;
use support::{config, primary, Probe, Trio, RING};

fn runtime(network: &MemoryNetwork, node: u64) -> Runtime {
    let (endpoint, inbound) = network.endpoint(NodeId(node)).expect("attach");
    Runtime::new(Arc::new(endpoint), inbound, RuntimeOptions::default()).expect("runtime")
}

fn spec(ring: u64, node: u64, members: &[u64]) -> RingSpec {
    let mut config = config(node, members);
    config.ring = RingId(ring);
    RingSpec::new(config, Probe::new().0, MemoryStorage::new().into())
}

// ---- the runtime ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_lists_its_rings_and_finds_each_by_id() {
    let network = MemoryNetwork::new(1);
    let runtime = runtime(&network, 1);
    assert_eq!(runtime.node(), NodeId(1));
    assert_eq!(runtime.transport().local_node(), NodeId(1));
    assert!(runtime.rings().is_empty());
    let first = runtime.start_ring(spec(1, 1, &[1])).await.expect("ring 1");
    let second = runtime.start_ring(spec(2, 1, &[1])).await.expect("ring 2");
    let mut rings = runtime.rings();
    rings.sort();
    assert_eq!(rings, vec![RingId(1), RingId(2)]);
    assert_eq!(runtime.ring(RingId(2)).expect("hosted").ring(), second.ring());
    assert!(runtime.ring(RingId(3)).is_none());
    assert_eq!((first.ring(), first.node()), (RingId(1), NodeId(1)));
    runtime.shutdown().await;
    assert!(first.is_stopped() && second.is_stopped(), "shutdown stops every ring");
    assert!(runtime.rings().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shut_down_runtime_starts_no_ring() {
    let network = MemoryNetwork::new(1);
    let runtime = runtime(&network, 1);
    runtime.shutdown().await;
    let error = runtime.start_ring(spec(1, 1, &[1])).await.expect_err("shut down");
    assert!(matches!(error, StartError::RuntimeShutDown), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_reports_statistics_and_prometheus_text_for_every_ring() {
    let network = MemoryNetwork::new(1);
    let runtime = runtime(&network, 1);
    let ring = runtime.start_ring(spec(4, 1, &[1])).await.expect("start");
    primary(&ring).await;
    ring.replicate(&b"x"[..]).await.expect("replicate");
    let statistics = runtime.statistics().await;
    assert_eq!(statistics.len(), 1);
    assert_eq!((statistics[0].ring, statistics[0].node), (RingId(4), NodeId(1)));
    assert_eq!(statistics[0].status.role, Role::Primary);
    assert_eq!(statistics[0].runtime.requests_replicated, 1);
    assert_eq!(statistics[0].replicate_latency.count, 1);
    let text = runtime.render_prometheus().await;
    assert!(text.contains("rsl_chosen_slot{ring=\"4\",node=\"1\"}"), "{text}");
    assert!(text.contains("# HELP rsl_applied_slot"), "{text}");
    assert!(text.starts_with(&render_prometheus(&statistics)), "the runtime renders its rings' statistics");
    assert!(text.contains("rsl_messages_dropped_unknown_ring_total{node=\"1\"} 0"), "and its own counters");
    assert_eq!(runtime.dropped_unknown_ring(), 0);
    runtime.shutdown().await;
}

#[test]
fn render_prometheus_of_no_rings_has_no_samples() {
    let text = render_prometheus(&[]);
    assert!(!text.lines().any(|line| !line.starts_with('#') && !line.is_empty()), "{text}");
}

// ---- a ring's handle ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_follows_role_chosen_and_applied() {
    let solo = support::solo().await;
    let before = solo.ring.status().borrow().clone();
    assert_eq!(before.role, Role::Primary);
    assert_eq!(before.primary, Some(NodeId(1)));
    assert!(before.member);
    solo.ring.replicate(&b"x"[..]).await.expect("replicate");
    let after = solo.ring.status().borrow().clone();
    assert!(after.chosen > before.chosen, "{before:?} -> {after:?}");
    assert!(solo.ring.applied() > before.applied);
    assert_eq!(after.configuration.members, vec![NodeId(1)]);
    solo.ring.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_sees_every_replica_and_their_progress() {
    let trio = Trio::start(|_| {}).await;
    let at = trio.primary().await;
    trio.rings[at].replicate(&b"x"[..]).await.expect("replicate");
    let chosen = trio.rings[at].status().borrow().chosen;
    let healthy = tokio::time::timeout(support::WAIT, async {
        loop {
            let replicas = trio.rings[at].replicas().await;
            if replicas.iter().all(|r| r.acknowledged.is_some_and(|a| a >= chosen)) {
                return replicas;
            }
            let mut status = trio.rings[at].status();
            let _ = tokio::time::timeout(Duration::from_millis(50), status.changed()).await;
        }
    })
    .await
    .expect("every replica acknowledged");
    assert_eq!(healthy.len(), 3);
    let own: Vec<_> = healthy.iter().filter(|r| r.is_self).collect();
    assert_eq!(own.len(), 1);
    assert!(own[0].is_primary && own[0].node == trio.rings[at].node());
    assert!(healthy.iter().all(|r| r.measured_by_primary));
    assert!(healthy.iter().filter(|r| !r.is_self).all(|r| r.connected == Some(true)), "{healthy:?}");
    trio.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_following_replica_is_ready_and_a_lagging_bound_of_zero_still_admits_a_caught_up_one() {
    let trio = Trio::start(|_| {}).await;
    let at = trio.primary().await;
    trio.rings[at].readiness(ReadinessOptions::default()).await.expect("the primary is ready");
    let other = &trio.rings[trio.other(at)];
    other.readiness(ReadinessOptions::default()).await.expect("a following secondary is ready");
    trio.rings[at].replicate(&b"x"[..]).await.expect("replicate");
    let chosen = trio.rings[at].status().borrow().chosen;
    support::status_until(other, "caught up", |s| s.applied >= chosen).await;
    other.readiness(ReadinessOptions { lag_slots_max: 0 }).await.expect("nothing to catch up");
    trio.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statistics_count_fast_reads_and_failed_reads() {
    let solo = support::solo().await;
    solo.ring.replicate(&b"x"[..]).await.expect("replicate");
    solo.ring.read_fast(Bytes::new(), Slot(1)).await.expect("fast read");
    let _ = solo.ring.read_fast_within(Bytes::new(), Slot(99), Duration::from_millis(10)).await;
    let statistics = solo.ring.statistics().await.expect("running");
    assert_eq!(statistics.runtime.reads_fast, 1);
    assert_eq!(statistics.runtime.reads_failed, 1);
    assert_eq!(statistics.runtime.requests_executed, 1);
    assert!(statistics.apply_latency.count >= 1);
    solo.ring.shutdown().await;
}

// ---- checkpoint transfer ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checkpoint_server_refuses_unknown_rings_strangers_and_missing_checkpoints() {
    let trio = Trio::start(|_| {}).await;
    let at = trio.primary().await;
    let server = trio.runtimes[at].checkpoint_server();
    assert_eq!(server.node(), trio.rings[at].node());
    let member = trio.rings[trio.other(at)].node();

    let unknown =
        server.open(CheckpointRequest { ring: RingId(9), requester: member, min_slot: Slot(0) }).await;
    assert!(
        matches!(unknown, Err(TransferError::NotAMember { .. } | TransferError::UnknownRing { .. })),
        "{unknown:?}"
    );

    let stranger =
        server.open(CheckpointRequest { ring: RING, requester: NodeId(42), min_slot: Slot(0) }).await;
    assert!(
        matches!(stranger, Err(TransferError::NotAMember { requester: NodeId(42), ring: RING })),
        "{stranger:?}"
    );

    let none = server.open(CheckpointRequest { ring: RING, requester: member, min_slot: Slot(0) }).await;
    assert!(matches!(none, Err(TransferError::NoCheckpoint { ring: RING, slot: Slot(0) })), "{none:?}");

    trio.rings[at].replicate(&b"x"[..]).await.expect("replicate");
    let slot = trio.rings[at].checkpoint_now().await.expect("checkpoint");
    let stream = server
        .open(CheckpointRequest { ring: RING, requester: member, min_slot: slot })
        .await
        .expect("served");
    assert_eq!(stream.slot, slot);
    let newer = server.open(CheckpointRequest { ring: RING, requester: member, min_slot: slot.next() }).await;
    assert!(matches!(newer, Err(TransferError::NoCheckpoint { .. })), "{newer:?}");
    let statistics = trio.rings[at].statistics().await.expect("running");
    assert_eq!(statistics.runtime.checkpoints_served, 1);
    trio.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_checkpoint_network_reaches_registered_servers_only() {
    let network = MemoryNetwork::new(1);
    let runtime = runtime(&network, 1);
    let checkpoints = LocalCheckpointNetwork::new();
    let request = CheckpointRequest { ring: RING, requester: NodeId(2), min_slot: Slot(0) };
    let unreachable = checkpoints.fetch(NodeId(1), request).await;
    assert!(matches!(unreachable, Err(TransferError::Unreachable { node: NodeId(1) })), "{unreachable:?}");
    checkpoints.join(&runtime);
    let reached = checkpoints.fetch(NodeId(1), request).await;
    assert!(!matches!(reached, Err(TransferError::Unreachable { .. })), "{reached:?}");
    checkpoints.unregister(NodeId(1));
    let gone = checkpoints.fetch(NodeId(1), request).await;
    assert!(matches!(gone, Err(TransferError::Unreachable { node: NodeId(1) })), "{gone:?}");
    runtime.shutdown().await;
}

// ---- framing: the ring's record in front of a checkpoint ----

fn configuration() -> Configuration {
    Configuration::new(3, vec![NodeId(1), NodeId(4), NodeId(7)], Slot(12))
}

#[test]
fn a_configuration_record_round_trips() {
    let mut bytes = Vec::new();
    write_configuration(&mut bytes, &configuration()).unwrap();
    assert_eq!(bytes[..8], CONFIGURATION_MAGIC);
    assert_eq!(bytes.len(), 28 + 3 * 8);
    assert_eq!(read_configuration(&mut Cursor::new(&bytes)).unwrap(), configuration());
    let record = read_ring_record(&mut Cursor::new(&bytes)).unwrap();
    assert_eq!(record, RingRecord { configuration: configuration(), last_slot: None });
}

#[test]
fn a_closed_ring_record_round_trips_with_its_last_slot() {
    let mut bytes = Vec::new();
    write_ring_record(&mut bytes, &configuration(), Some(Slot(99))).unwrap();
    assert_eq!(bytes.len(), 28 + 3 * 8 + 8);
    let record = read_ring_record(&mut Cursor::new(&bytes)).unwrap();
    assert_eq!(record, RingRecord { configuration: configuration(), last_slot: Some(Slot(99)) });
}

fn refused(bytes: &[u8]) -> String {
    let error = read_ring_record(&mut Cursor::new(bytes)).expect_err("refused");
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
    error.to_string()
}

fn record() -> Vec<u8> {
    let mut bytes = Vec::new();
    write_configuration(&mut bytes, &configuration()).unwrap();
    bytes
}

#[test]
fn a_record_without_the_magic_is_refused() {
    let mut bytes = record();
    bytes[0] = b'X';
    assert!(refused(&bytes).contains("does not start with a configuration record"));
}

#[test]
fn a_record_of_an_unknown_version_is_refused_naming_it() {
    let mut bytes = record();
    bytes[7] = 9;
    assert!(refused(&bytes).contains("version 9"));
}

#[test]
fn a_record_with_no_members_is_refused() {
    let mut bytes = record();
    bytes[24..28].copy_from_slice(&0u32.to_le_bytes());
    assert!(refused(&bytes).contains("has 0 members"));
}

#[test]
fn a_record_with_too_many_members_is_refused() {
    let mut bytes = record();
    bytes[24..28].copy_from_slice(&(rsl_core::MEMBERS_MAX as u32 + 1).to_le_bytes());
    assert!(refused(&bytes).contains(&format!("has {} members", rsl_core::MEMBERS_MAX + 1)));
}

#[test]
fn a_record_naming_a_member_twice_is_refused() {
    let mut bytes = record();
    let first = bytes[28..36].to_vec();
    bytes[36..44].copy_from_slice(&first);
    assert!(refused(&bytes).contains("names a member twice"));
}

#[test]
fn a_record_cut_in_its_head_is_refused() {
    assert!(refused(&record()[..20]).contains("checkpoint configuration record"));
}

#[test]
fn a_record_cut_in_its_members_is_refused() {
    let bytes = record();
    assert!(refused(&bytes[..bytes.len() - 3]).contains("checkpoint configuration members"));
}

#[test]
fn a_closed_record_cut_before_its_last_slot_is_refused() {
    let mut bytes = Vec::new();
    write_ring_record(&mut bytes, &configuration(), Some(Slot(5))).unwrap();
    let error = read_ring_record(&mut Cursor::new(&bytes[..bytes.len() - 1])).expect_err("cut");
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
}

// ---- histograms and entropy ----

#[test]
fn an_empty_histogram_has_no_quantiles() {
    let histogram = Histogram::default();
    let snapshot = histogram.snapshot();
    assert_eq!((snapshot.count, snapshot.sum_us), (0, 0));
    assert_eq!(snapshot.quantile_bound_us(0.5), None);
}

#[test]
fn a_histogram_counts_sums_and_bounds_its_quantiles() {
    let histogram = Histogram::default();
    for us in [40, 60, 300, 900, 4_000] {
        histogram.record(Duration::from_micros(us));
    }
    let snapshot = histogram.snapshot();
    assert_eq!(snapshot.count, 5);
    assert_eq!(snapshot.sum_us, 40 + 60 + 300 + 900 + 4_000);
    assert_eq!(snapshot.buckets.iter().sum::<u64>(), 5);
    assert_eq!(snapshot.quantile_bound_us(0.0), Some(50), "the smallest is under 50 us");
    assert_eq!(snapshot.quantile_bound_us(0.5), Some(500), "the median (300 us) is under 500 us");
    assert_eq!(snapshot.quantile_bound_us(1.0), Some(5_000));
    let bounds: Vec<_> = [0.1, 0.3, 0.5, 0.7, 0.9].iter().map(|&q| snapshot.quantile_bound_us(q)).collect();
    assert!(bounds.windows(2).all(|w| w[0] <= w[1]), "{bounds:?}");
}

#[test]
fn a_histogram_puts_what_exceeds_every_bound_in_the_last_bucket() {
    let histogram = Histogram::default();
    histogram.record(Duration::from_secs(60));
    let snapshot = histogram.snapshot();
    assert_eq!(*snapshot.buckets.last().unwrap(), 1);
    assert_eq!(snapshot.sum_us, 60_000_000);
}

#[test]
fn entropy_differs_between_calls() {
    let draws: std::collections::HashSet<u64> = (0..64).map(|_| rsl_runtime::entropy()).collect();
    assert_eq!(draws.len(), 64);
}

// ---- re-seeding and relinquishing to a named replica ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_reseeded_from_a_peer_loads_the_peers_checkpoint_and_replays_on() {
    let trio = Trio::start(|_| {}).await;
    let at = trio.primary().await;
    for i in 0..4u8 {
        trio.rings[at].replicate(vec![i]).await.expect("replicate");
    }
    let peer = trio.other(at);
    let target = trio.other(peer);
    let chosen = trio.rings[at].status().borrow().chosen;
    support::status_until(&trio.rings[peer], "the peer caught up", |s| s.applied >= chosen).await;
    let saved = trio.rings[peer].checkpoint_now().await.expect("the peer saves");
    let slot = trio.rings[target].reseed_from(trio.rings[peer].node()).await.expect("reseeded");
    assert_eq!(slot, saved);
    trio.probes[target].until("loaded", |calls| calls.contains(&support::Call::Load(slot))).await;
    // It goes on applying what comes after.
    trio.rings[at].replicate(&b"after"[..]).await.expect("replicate");
    let applied = trio.rings[at].applied();
    let state =
        trio.rings[target].read_fast_within(Bytes::new(), applied, support::WAIT).await.expect("read");
    assert_eq!(support::count(&state), 5);
    trio.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reseed_from_a_peer_without_a_checkpoint_fails_and_changes_nothing() {
    let trio = Trio::start(|_| {}).await;
    let at = trio.primary().await;
    trio.rings[at].replicate(&b"x"[..]).await.expect("replicate");
    let peer = trio.rings[trio.other(at)].node();
    let error = trio.rings[at].reseed_from(peer).await.expect_err("nothing to fetch");
    assert!(
        matches!(&error, rsl_runtime::ReseedError::Transfer { from, error: TransferError::NoCheckpoint { .. } } if *from == peer),
        "{error:?}"
    );
    assert!(!trio.probes[at].calls().iter().any(|c| matches!(c, support::Call::Load(_))));
    assert_eq!(support::count(&trio.rings[at].read(Bytes::new()).await.expect("read")), 1);
    trio.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relinquish_to_a_named_replica_makes_it_primary() {
    let trio = Trio::start(|_| {}).await;
    let at = trio.primary().await;
    let target = trio.rings[trio.other(at)].node();
    assert_eq!(trio.rings[at].relinquish_primary(Some(target)).await, Ok(target));
    primary(&trio.rings[trio.other(at)]).await;
    trio.rings[trio.other(at)].replicate(&b"new primary"[..]).await.expect("serves");
    trio.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secondary_sees_the_replicas_only_partially() {
    let trio = Trio::start(|_| {}).await;
    let at = trio.primary().await;
    let replicas = trio.rings[trio.other(at)].replicas().await;
    assert_eq!(replicas.len(), 3);
    assert!(replicas.iter().all(|r| !r.measured_by_primary), "{replicas:?}");
    assert_eq!(replicas.iter().filter(|r| r.is_primary).count(), 1);
    trio.shutdown().await;
}
