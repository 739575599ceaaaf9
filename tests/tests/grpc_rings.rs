//! Two rings hosted by the same three runtimes, each runtime with one real gRPC endpoint on
//! loopback (RSL's multi-ring): both rings elect, replicate and read; when one node's whole
//! runtime stops (every ring it hosts loses that replica at once), both rings go on. And a
//! ring over mutual TLS whose stopped replica, restarted behind the others' truncated logs,
//! catches up from a checkpoint the runtime fetches over the replica port by itself.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use rsl::{
    Bytes, Config, MemoryStorage, NodeId, ReplicateError, Ring, RingId, Role, Runtime, RuntimeOptions, Slot,
    StateMachine, Transport,
};
use rsl_transport::{GrpcConfig, GrpcTransport};

const WAIT: Duration = Duration::from_secs(30);

/// The requests executed, in order: two replicas agree exactly when their lists are equal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Journal(Vec<u64>);

impl StateMachine for Journal {
    fn execute(&mut self, _slot: Slot, request: &[u8]) -> Bytes {
        self.0.push(u64::from_le_bytes(request.try_into().expect("8-byte request")));
        Bytes::from(self.0.len().to_le_bytes().to_vec())
    }

    fn read(&self, _request: &[u8]) -> Bytes {
        Bytes::from(self.0.iter().flat_map(|r| r.to_le_bytes()).collect::<Vec<u8>>())
    }

    fn save_checkpoint(&self, _slot: Slot, writer: &mut dyn Write) -> std::io::Result<()> {
        writer.write_all(&self.read(&[]))
    }

    fn load_checkpoint(&mut self, _slot: Slot, reader: &mut dyn Read) -> std::io::Result<()> {
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes)?;
        *self = decode(&bytes);
        Ok(())
    }
}

/// The replicas of `ring` among `rings`.
fn of(rings: &BTreeMap<(RingId, NodeId), Ring>, ring: RingId) -> Vec<&Ring> {
    rings.iter().filter(|((r, _), _)| *r == ring).map(|(_, handle)| handle).collect()
}

fn decode(bytes: &[u8]) -> Journal {
    Journal(bytes.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect())
}

/// Replicates `request` on whichever replica of `rings` is primary.
async fn replicate(rings: &[&Ring], request: u64) -> u64 {
    let attempt = async {
        let mut at = 0;
        loop {
            match rings[at].replicate(request.to_le_bytes().to_vec()).await {
                Ok(response) => return u64::from_le_bytes(response[..].try_into().unwrap()),
                Err(ReplicateError::NotPrimary { hint }) => {
                    at = match hint.and_then(|h| rings.iter().position(|r| r.node() == h)) {
                        Some(primary) if primary != at => primary,
                        _ => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            (at + 1) % rings.len()
                        }
                    };
                }
                Err(error) => panic!("replicate {request}: {error}"),
            }
        }
    };
    tokio::time::timeout(WAIT, attempt).await.expect("replicated within the time limit")
}

/// What every replica of `rings` holds once it applied `slot`.
async fn states(rings: &[&Ring], slot: Slot) -> Vec<Journal> {
    let mut states = Vec::new();
    for ring in rings {
        let mut status = ring.status();
        tokio::time::timeout(WAIT, status.wait_for(|s| s.applied >= slot))
            .await
            .expect("applied within the time limit")
            .expect("the ring is running");
        states.push(decode(&ring.read_fast(Vec::new(), slot).await.expect("a fast read")));
    }
    states
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rings_share_three_grpc_endpoints_and_survive_a_node_loss() {
    let nodes: Vec<NodeId> = (1..=3).map(NodeId).collect();
    let grpc = GrpcConfig { backoff_initial_ms: 10, backoff_max_ms: 200, ..GrpcConfig::default() };
    let mut endpoints = BTreeMap::new();
    for &node in &nodes {
        let (transport, inbound) = GrpcTransport::builder(node)
            .config(grpc.clone())
            .bind("127.0.0.1:0".parse().unwrap())
            .await
            .expect("binding a gRPC endpoint");
        endpoints.insert(node, (transport, inbound));
    }
    let addresses: BTreeMap<NodeId, String> =
        endpoints.iter().map(|(&node, (t, _))| (node, t.local_addr().to_string())).collect();
    let mut runtimes = BTreeMap::new();
    for (node, (transport, inbound)) in endpoints {
        for (&peer, address) in &addresses {
            if peer != node {
                transport.set_peer_address(peer, address.clone().into()).unwrap();
            }
        }
        let transport: Arc<dyn Transport> = Arc::new(transport);
        runtimes
            .insert(node, Runtime::new(transport, inbound, RuntimeOptions::default()).expect("a runtime"));
    }

    let ring_ids = [RingId(1), RingId(2)];
    let mut rings: BTreeMap<(RingId, NodeId), Ring> = BTreeMap::new();
    for ring in ring_ids {
        for &node in &nodes {
            let mut config = Config::new(ring, node, nodes.clone());
            config.heartbeat_interval_ms = 20;
            config.election_delay_min_ms = 150;
            config.election_delay_max_ms = 300;
            let started = Ring::builder(config)
                .state_machine(Journal::default())
                .storage(MemoryStorage::new())
                .runtime(&runtimes[&node])
                .start()
                .await
                .expect("starting a ring");
            rings.insert((ring, node), started);
        }
    }
    for runtime in runtimes.values() {
        assert_eq!(runtime.rings(), ring_ids.to_vec());
    }

    // Interleaved writes to both rings; each ring holds exactly its own, in order.
    let mut written: BTreeMap<RingId, Vec<u64>> = BTreeMap::new();
    for i in 1..=30u64 {
        for (k, ring) in ring_ids.iter().enumerate() {
            let request = (k as u64 + 1) * 1000 + i;
            let count = replicate(&of(&rings, *ring), request).await;
            written.entry(*ring).or_default().push(request);
            assert_eq!(count, written[ring].len() as u64);
        }
    }
    for ring in ring_ids {
        let handles = of(&rings, ring);
        let chosen = handles.iter().map(|h| h.status().borrow().chosen).max().unwrap();
        for state in states(&handles, chosen).await {
            assert_eq!(state.0, written[&ring]);
        }
    }

    // Stop the whole runtime of the node that is primary of ring 1: both rings lose that
    // replica together and must both keep serving on the other two nodes.
    let victim =
        of(&rings, RingId(1)).into_iter().find(|r| r.status().borrow().role == Role::Primary).map(Ring::node);
    let victim = victim.unwrap_or(NodeId(1));
    runtimes.remove(&victim).unwrap().shutdown().await;
    rings.retain(|(_, node), _| *node != victim);
    for i in 31..=40u64 {
        for (k, ring) in ring_ids.iter().enumerate() {
            let request = (k as u64 + 1) * 1000 + i;
            replicate(&of(&rings, *ring), request).await;
            written.entry(*ring).or_default().push(request);
        }
    }
    for ring in ring_ids {
        let handles = of(&rings, ring);
        let chosen = handles.iter().map(|h| h.status().borrow().chosen).max().unwrap();
        let states = states(&handles, chosen).await;
        assert_eq!(states.len(), 2);
        for state in states {
            assert_eq!(state.0, written[&ring], "ring {} after node {} stopped", ring.0, victim.0);
        }
    }
    for runtime in runtimes.values() {
        runtime.shutdown().await;
    }
}

#[path = "../../crates/rsl-transport/tests/common/pki.rs"]
mod pki;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_over_mutual_tls_catches_up_from_a_checkpoint_fetched_over_the_replica_port() {
    let nodes: Vec<NodeId> = (1..=3).map(NodeId).collect();
    let ca = pki::Authority::new("ring CA");
    let grpc = GrpcConfig { backoff_initial_ms: 10, backoff_max_ms: 200, ..GrpcConfig::default() };
    let mut endpoints = BTreeMap::new();
    for &node in &nodes {
        let (transport, inbound) = GrpcTransport::builder(node)
            .config(grpc.clone())
            .tls(ca.tls(node.0))
            .bind("127.0.0.1:0".parse().unwrap())
            .await
            .expect("binding a gRPC endpoint with mutual TLS");
        endpoints.insert(node, (Arc::new(transport), inbound));
    }
    let addresses: BTreeMap<NodeId, String> =
        endpoints.iter().map(|(&node, (t, _))| (node, format!("https://{}", t.local_addr()))).collect();
    let mut runtimes = BTreeMap::new();
    let mut transports = BTreeMap::new();
    for (node, (transport, inbound)) in endpoints {
        for (&peer, address) in &addresses {
            if peer != node {
                transport.set_peer_address(peer, address.clone().into()).unwrap();
            }
        }
        transports.insert(node, transport.clone());
        // Default options: the runtime fetches checkpoints through its transport.
        let runtime = Runtime::new(transport, inbound, RuntimeOptions::default()).expect("a runtime");
        runtimes.insert(node, runtime);
    }

    let ring = RingId(1);
    let storages: BTreeMap<NodeId, MemoryStorage> =
        nodes.iter().map(|&n| (n, MemoryStorage::new())).collect();
    let start = |node: NodeId| {
        let mut config = Config::new(ring, node, nodes.clone());
        config.heartbeat_interval_ms = 20;
        config.election_delay_min_ms = 150;
        config.election_delay_max_ms = 300;
        config.checkpoint_interval_slots = 5;
        config.log_retain_slots = 2;
        Ring::builder(config)
            .state_machine(Journal::default())
            .storage(storages[&node].clone())
            .runtime(&runtimes[&node])
            .start()
    };
    let mut rings: BTreeMap<(RingId, NodeId), Ring> = BTreeMap::new();
    for &node in &nodes {
        rings.insert((ring, node), start(node).await.expect("starting a ring"));
    }
    for request in 1..=3u64 {
        replicate(&of(&rings, ring), request).await;
    }
    let primary =
        of(&rings, ring).into_iter().find(|r| r.status().borrow().role == Role::Primary).map(Ring::node);
    let lagging = *nodes.iter().rev().find(|&&n| Some(n) != primary).unwrap();
    rings.remove(&(ring, lagging)).unwrap().shutdown().await;

    // The others go on and truncate their logs far past where `lagging` stopped.
    for request in 4..=40u64 {
        replicate(&of(&rings, ring), request).await;
    }
    // (The primary truncates once it copied a secondary's checkpoint, in the background.)
    for running in of(&rings, ring) {
        let mut status = running.status();
        let truncated = tokio::time::timeout(WAIT, status.wait_for(|s| s.log_start > Slot(5))).await;
        assert!(truncated.is_ok_and(|waited| waited.is_ok()), "truncated its log: {:?}", *status.borrow());
    }

    rings.insert((ring, lagging), start(lagging).await.expect("restarting the lagging replica"));
    let chosen = of(&rings, ring).iter().map(|r| r.status().borrow().chosen).max().unwrap();
    for state in states(&of(&rings, ring), chosen).await {
        assert_eq!(state.0, (1..=40).collect::<Vec<u64>>());
    }
    let statistics = rings[&(ring, lagging)].statistics().await.unwrap();
    assert!(statistics.runtime.checkpoints_installed >= 1, "installed a fetched checkpoint: {statistics:?}");
    let served: u64 = transports.values().map(|t| t.stats().snapshot().checkpoints_served).sum();
    assert!(served >= 1, "a peer served it over the replica port");
    for (node, transport) in &transports {
        let stats = transport.stats().snapshot();
        assert_eq!(
            (stats.rejected_unauthenticated, stats.rejected_impersonation),
            (0, 0),
            "node {node} refused a certified member: {stats:?}"
        );
        // While its ring was stopped, `lagging` rightly answered the primary's checkpoint
        // copies with "does not host ring"; the others hosted the ring throughout.
        if *node != lagging {
            assert_eq!(stats.checkpoint_requests_refused, 0, "node {node} refused a member: {stats:?}");
        }
    }
    for runtime in runtimes.values() {
        runtime.shutdown().await;
    }
}
