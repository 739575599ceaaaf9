//! Linearizable reads through the facade: read indexes when no lease can be used, on a
//! secondary, and during a partition (which must fail, never read stale data); reads served
//! by a state machine's concurrent reader while a slow `execute` runs.

mod common;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Duration;

use common::{Cluster, Tally, WAIT};
use rsl::{
    Bytes, ConcurrentReader, FastReadError, NodeId, ReadConsistency, ReadError, Ring, RingId, Role, Slot,
    StateMachine,
};

const RING: RingId = RingId(3);

/// Reads `ring` with `consistency` within the test's time limit.
async fn read(ring: &Ring, consistency: ReadConsistency) -> Result<Tally, ReadError> {
    let read = ring.read_with(Vec::new(), consistency);
    let bytes = tokio::time::timeout(WAIT, read).await.expect("an answer within the time limit")?;
    Ok(Tally::decode(&bytes))
}

/// An in-memory endpoint that delays every heartbeat reply by longer than a lease but less
/// than the election delay: the primary hears its quorum in time (check-quorum passes, read
/// indexes get confirmed) but never holds a lease. With a drift bound of 40% the lease is
/// 60% of the election delay, which leaves 200 ms either side of the delay for a loaded
/// machine's scheduling.
#[derive(Debug)]
struct SlowEchoes(Arc<rsl::transport::MemoryEndpoint>);

const ELECTION_DELAY_MIN_MS: u64 = 1_000;
const CLOCK_DRIFT_MAX_PPM: u64 = 400_000;
const ECHO_DELAY: Duration = Duration::from_millis(800);

impl rsl::Transport for SlowEchoes {
    fn local_node(&self) -> NodeId {
        self.0.local_node()
    }

    fn send(&self, to: NodeId, messages: Vec<rsl::core::Message>) -> Result<(), rsl::transport::SendError> {
        let (echoes, others): (Vec<_>, Vec<_>) = messages
            .into_iter()
            .partition(|m| matches!(m.body, rsl::core::MessageBody::HeartbeatReply { .. }));
        if !echoes.is_empty() {
            let endpoint = self.0.clone();
            tokio::spawn(async move {
                tokio::time::sleep(ECHO_DELAY).await;
                let _ = endpoint.send(to, echoes);
            });
        }
        if others.is_empty() {
            return Ok(());
        }
        self.0.send(to, others)
    }

    fn set_peer_address(
        &self,
        node: NodeId,
        address: rsl::transport::PeerAddress,
    ) -> Result<(), rsl::transport::AddressError> {
        self.0.set_peer_address(node, address)
    }

    fn peer_address(&self, node: NodeId) -> Option<rsl::transport::PeerAddress> {
        self.0.peer_address(node)
    }

    fn remove_peer(&self, node: NodeId) {
        self.0.remove_peer(node)
    }

    fn membership(&self) -> &rsl::transport::Membership {
        self.0.membership()
    }

    fn stats(&self) -> &rsl::transport::TransportStats {
        self.0.stats()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_index_serves_when_no_lease_can_be_used() {
    let network = rsl::MemoryNetwork::new(5);
    let members: Vec<NodeId> = (1..=3).map(NodeId).collect();
    let mut runtimes = Vec::new();
    let mut rings = Vec::new();
    for &node in &members {
        let (endpoint, inbound) = network.endpoint(node).expect("attach");
        let transport = Arc::new(SlowEchoes(Arc::new(endpoint)));
        let runtime = rsl::Runtime::new(transport, inbound, rsl::RuntimeOptions::default()).expect("runtime");
        let mut config = common::config(RING, node, &members);
        config.election_delay_min_ms = ELECTION_DELAY_MIN_MS;
        config.election_delay_max_ms = 2 * ELECTION_DELAY_MIN_MS;
        config.clock_drift_max_ppm = CLOCK_DRIFT_MAX_PPM;
        assert!(config.lease().0 < ECHO_DELAY.as_micros() as u64, "no lease can be used");
        let ring = Ring::builder(config)
            .state_machine(Tally::default())
            .storage(rsl::MemoryStorage::new())
            .runtime(&runtime)
            .start()
            .await
            .expect("start");
        runtimes.push(runtime);
        rings.push(ring);
    }
    let primary = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(primary) = rings.iter().find(|r| r.status().borrow().role == Role::Primary) {
                return primary.clone();
            }
            let mut status = rings[0].status();
            let _ = tokio::time::timeout(Duration::from_millis(100), status.changed()).await;
        }
    })
    .await
    .expect("a primary");
    for request in 1..=5u64 {
        primary.replicate(request.to_le_bytes().to_vec()).await.expect("replicate");
    }
    let expected = Tally::of(1..=5);

    match read(&primary, ReadConsistency::Lease).await {
        Err(ReadError::NotPrimary { reason: rsl::core::ReadError::LeaseExpired, .. }) => {}
        other => panic!("a lease read without a lease: {other:?}"),
    }
    let before = primary.statistics().await.expect("running").runtime;
    assert_eq!(read(&primary, ReadConsistency::ReadIndex).await.unwrap(), expected);
    assert_eq!(read(&primary, ReadConsistency::LeaseOrReadIndex).await.unwrap(), expected);
    assert_eq!(Tally::decode(&primary.read(Vec::new()).await.unwrap()), expected);
    let after = primary.statistics().await.expect("running").runtime;
    assert_eq!(after.reads_read_index - before.reads_read_index, 3, "all three through a read index");
    assert_eq!(after.reads_lease, before.reads_lease, "never under the lease");
    for runtime in &runtimes {
        runtime.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secondary_read_sees_every_write_acknowledged_before_it_began() {
    let cluster = Cluster::with_ring(3, RING).await;
    cluster.replicate(RING, 1).await;
    let primary = cluster.primary(RING).await.node();
    let secondaries: Vec<&Ring> =
        cluster.replicas(RING).into_iter().filter(|r| r.node() != primary).collect();
    for request in 2..=30u64 {
        cluster.replicate(RING, request).await;
        // Right after the acknowledgement: the secondary may not even know the slot is
        // chosen; the read index makes it wait until it applied it.
        let secondary = secondaries[request as usize % 2];
        let state = read(secondary, ReadConsistency::ReadIndex).await.expect("a read on a secondary");
        assert_eq!(state, Tally::of(1..=request), "read on {} after write {request}", secondary.node());
    }
    // Without the read index a secondary still refuses, naming the primary.
    match read(secondaries[0], ReadConsistency::LeaseOrReadIndex).await {
        Err(ReadError::NotPrimary { hint, .. }) => assert_eq!(hint, Some(primary)),
        other => panic!("a lease-or-read-index read on a secondary: {other:?}"),
    }
    let statistics = secondaries[0].statistics().await.expect("running");
    assert!(statistics.runtime.reads_read_index >= 14, "{:?}", statistics.runtime);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_index_during_a_partition_fails_rather_than_reads_stale_data() {
    let cluster = Cluster::with_ring(3, RING).await;
    cluster.replicate_all(RING, 1..=5).await;
    let old = cluster.primary(RING).await.clone();
    let others: Vec<NodeId> = cluster.members.iter().copied().filter(|&n| n != old.node()).collect();
    cluster.network.partition(&[&[old.node()], &others]);

    // Reads at the old primary start at once, while it still believes it leads.
    let at_old_primary = {
        let old = old.clone();
        tokio::spawn(async move {
            let index = old.read_with(Vec::new(), ReadConsistency::ReadIndex).await;
            let fallback = old.read_with(Vec::new(), ReadConsistency::LeaseOrReadIndex).await;
            (index, fallback)
        })
    };
    // Meanwhile the majority elects a new primary and acknowledges more writes.
    let majority: Vec<&Ring> =
        cluster.replicas(RING).into_iter().filter(|r| r.node() != old.node()).collect();
    let new_primary = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(primary) = majority.iter().find(|r| r.status().borrow().role == Role::Primary) {
                return *primary;
            }
            let mut status = majority[0].status();
            let _ = tokio::time::timeout(Duration::from_millis(100), status.changed()).await;
        }
    })
    .await
    .expect("the majority elects a primary");
    for request in 6..=8u64 {
        new_primary.replicate(request.to_le_bytes().to_vec()).await.expect("the majority writes");
    }

    let (index, fallback) = at_old_primary.await.expect("the reads finish");
    for (consistency, result) in [("read index", index), ("lease or read index", fallback)] {
        match result {
            Err(ReadError::NotPrimary { .. } | ReadError::Timeout { .. }) => {}
            Ok(bytes) => panic!("{consistency} at the cut-off primary returned {:?}", Tally::decode(&bytes)),
            Err(other) => panic!("{consistency} at the cut-off primary: unexpected {other}"),
        }
    }
    // It stepped down and has no primary to ask: a read index on it keeps failing.
    let mut status = old.status();
    // (The status guard `wait_for` returns is dropped at once: held, it would stall the ring.)
    let stepped_down = tokio::time::timeout(WAIT, status.wait_for(|s| s.role != Role::Primary)).await;
    assert!(matches!(stepped_down.map(|r| r.map(drop)), Ok(Ok(()))), "the cut-off primary steps down");
    assert!(read(&old, ReadConsistency::ReadIndex).await.is_err());

    cluster.network.heal();
    // Once healed, the old primary reads what the majority wrote.
    let healed = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(state) = read(&old, ReadConsistency::ReadIndex).await {
                return state;
            }
            let mut status = old.status();
            let _ = tokio::time::timeout(Duration::from_millis(100), status.changed()).await;
        }
    })
    .await
    .expect("a read after healing");
    assert_eq!(healed, Tally::of(1..=8));
    cluster.shutdown().await;
}

/// A counter whose `execute` of the request `[0xff]` blocks until the test opens its
/// gate, and whose state a concurrent reader serves meanwhile.
struct Gated {
    total: Arc<RwLock<u64>>,
    gate: Arc<(Mutex<bool>, Condvar)>,
    blocked: Arc<AtomicU64>,
    concurrent: bool,
}

struct TotalReader(Arc<RwLock<u64>>);

impl ConcurrentReader for TotalReader {
    fn read(&self, _request: &[u8]) -> Bytes {
        Bytes::copy_from_slice(&self.0.read().unwrap().to_le_bytes())
    }
}

impl StateMachine for Gated {
    fn execute(&mut self, _slot: Slot, request: &[u8]) -> Bytes {
        if request == [0xff] {
            self.blocked.fetch_add(1, Ordering::SeqCst);
            let (open, opened) = &*self.gate;
            let mut guard = open.lock().unwrap();
            while !*guard {
                guard = opened.wait(guard).unwrap();
            }
        } else {
            *self.total.write().unwrap() += u64::from_le_bytes(request.try_into().unwrap());
        }
        Bytes::copy_from_slice(&self.total.read().unwrap().to_le_bytes())
    }

    fn read(&self, _request: &[u8]) -> Bytes {
        Bytes::copy_from_slice(&self.total.read().unwrap().to_le_bytes())
    }

    fn reader(&self) -> Option<Arc<dyn ConcurrentReader>> {
        self.concurrent.then(|| Arc::new(TotalReader(self.total.clone())) as Arc<dyn ConcurrentReader>)
    }

    fn save_checkpoint(&self, _slot: Slot, writer: &mut dyn Write) -> std::io::Result<()> {
        writer.write_all(&self.total.read().unwrap().to_le_bytes())
    }

    fn load_checkpoint(&mut self, _slot: Slot, reader: &mut dyn Read) -> std::io::Result<()> {
        let mut bytes = [0u8; 8];
        reader.read_exact(&mut bytes)?;
        *self.total.write().unwrap() = u64::from_le_bytes(bytes);
        Ok(())
    }
}

/// A one-member ring of `Gated` (with or without its concurrent reader) that executed 5,
/// then got the request `[0xff]`, whose `execute` now blocks at the gate.
struct Stalled {
    ring: Ring,
    gate: Arc<(Mutex<bool>, Condvar)>,
    /// The slot applied before the blocked request.
    applied: Slot,
    /// The blocked request's `replicate`.
    slow: tokio::task::JoinHandle<Result<Bytes, rsl::ReplicateError>>,
}

impl Stalled {
    async fn start(concurrent: bool) -> Stalled {
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let blocked = Arc::new(AtomicU64::new(0));
        let machine =
            Gated { total: Arc::default(), gate: gate.clone(), blocked: blocked.clone(), concurrent };
        let config = common::config(RING, NodeId(1), &[NodeId(1)]);
        let network = rsl::MemoryNetwork::new(1);
        let (endpoint, inbound) = network.endpoint(NodeId(1)).expect("attach");
        let ring = Ring::builder(config)
            .state_machine(machine)
            .storage(rsl::MemoryStorage::new())
            .transport(Arc::new(endpoint), inbound, rsl::RuntimeOptions::default())
            .start()
            .await
            .expect("start");
        let mut status = ring.status();
        tokio::time::timeout(WAIT, status.wait_for(|s| s.role == Role::Primary)).await.unwrap().unwrap();
        ring.replicate(5u64.to_le_bytes().to_vec()).await.unwrap();
        let applied = ring.applied();
        let slow = {
            let ring = ring.clone();
            tokio::spawn(async move { ring.replicate(vec![0xff]).await })
        };
        tokio::time::timeout(WAIT, async {
            while blocked.load(Ordering::SeqCst) == 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the slow execute starts");
        Stalled { ring, gate, applied, slow }
    }

    /// Lets the blocked `execute` finish; returns once its request is answered.
    async fn release(self) -> Ring {
        *self.gate.0.lock().unwrap() = true;
        self.gate.1.notify_all();
        self.slow.await.unwrap().unwrap();
        self.ring
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_reader_serves_while_a_slow_execute_runs() {
    let stalled = Stalled::start(true).await;
    let ring = stalled.ring.clone();
    // The apply thread is stuck in `execute`; reads of what it applied are served anyway.
    for _ in 0..100 {
        let bytes = ring.read_fast_within(Vec::new(), stalled.applied, Duration::from_secs(5)).await.unwrap();
        assert_eq!(bytes, 5u64.to_le_bytes().to_vec());
    }
    // A linearizable read must see the slow request: it waits for it, and is served right
    // after it is applied.
    let linearizable = {
        let ring = ring.clone();
        tokio::spawn(async move { ring.read_with(Vec::new(), ReadConsistency::ReadIndex).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!linearizable.is_finished(), "a linearizable read does not skip the request being executed");
    stalled.release().await;
    assert_eq!(linearizable.await.unwrap().unwrap(), 5u64.to_le_bytes().to_vec());
    let statistics = ring.statistics().await.expect("running").runtime;
    assert_eq!(statistics.reads_concurrent, 101);
    ring.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_concurrent_reader_reads_queue_behind_execution() {
    let stalled = Stalled::start(false).await;
    let refused =
        stalled.ring.read_fast_within(Vec::new(), stalled.applied, Duration::from_millis(100)).await;
    assert!(matches!(refused, Err(FastReadError::NotApplied { .. })), "{refused:?}");
    stalled.release().await.shutdown().await;
}
