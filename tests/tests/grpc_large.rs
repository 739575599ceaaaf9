//! 64 MiB requests on a ring of three runtimes, each with a real gRPC endpoint on loopback
//! whose frames stay at 4 MiB: the request travels in chunks, replicates and executes
//! identically while small requests keep completing, a replica that was down fetches it
//! in chunks; and when the primary's node dies in the middle of replicating one, the others
//! elect a new primary and the request is chosen whole exactly once or the client gets an
//! error, never a partial value.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rsl::{
    Bytes, Config, MemoryStorage, NodeId, ReplicateError, Ring, RingId, Role, Runtime, RuntimeOptions,
    Transport,
};
use rsl_transport::{GrpcConfig, GrpcTransport};

#[path = "../../crates/rsl/tests/requests/mod.rs"]
mod requests;
use requests::{answer, expected, large, small, Requests, LARGE};

use std::time::Instant;

const RING: RingId = RingId(1);
const WAIT: Duration = Duration::from_secs(60);

struct Node {
    transport: Arc<GrpcTransport>,
    runtime: Runtime,
    disk: MemoryStorage,
}

struct Cluster {
    nodes: BTreeMap<NodeId, Node>,
    rings: BTreeMap<NodeId, Ring>,
}

impl Cluster {
    async fn new(grpc: GrpcConfig) -> Cluster {
        let ids: Vec<NodeId> = (1..=3).map(NodeId).collect();
        let mut endpoints = BTreeMap::new();
        for &node in &ids {
            let (transport, inbound) = GrpcTransport::builder(node)
                .config(GrpcConfig { seed: node.0, ..grpc.clone() })
                .bind("127.0.0.1:0".parse().unwrap())
                .await
                .expect("binding a gRPC endpoint");
            endpoints.insert(node, (Arc::new(transport), inbound));
        }
        let addresses: BTreeMap<NodeId, String> =
            endpoints.iter().map(|(&node, (t, _))| (node, t.local_addr().to_string())).collect();
        let mut cluster = Cluster { nodes: BTreeMap::new(), rings: BTreeMap::new() };
        for (node, (transport, inbound)) in endpoints {
            for (&peer, address) in &addresses {
                if peer != node {
                    transport.set_peer_address(peer, address.clone().into()).unwrap();
                }
            }
            let shared: Arc<dyn Transport> = transport.clone();
            let runtime = Runtime::new(shared, inbound, RuntimeOptions::default()).expect("a runtime");
            cluster.nodes.insert(node, Node { transport, runtime, disk: MemoryStorage::new() });
        }
        for node in ids {
            cluster.start(node).await;
        }
        cluster
    }

    async fn start(&mut self, node: NodeId) {
        let members: Vec<NodeId> = self.nodes.keys().copied().collect();
        let mut config = Config::new(RING, node, members);
        config.heartbeat_interval_ms = 20;
        // Long enough that a 2-core machine busy copying 64 MiB values does not elect anew.
        config.election_delay_min_ms = 1000;
        config.election_delay_max_ms = 2000;
        let ring = Ring::builder(config)
            .state_machine(Requests::default())
            .storage(self.nodes[&node].disk.clone())
            .runtime(&self.nodes[&node].runtime)
            .start()
            .await
            .expect("starting a ring");
        self.rings.insert(node, ring);
    }

    async fn primary(&self) -> &Ring {
        let wait = async {
            loop {
                if let Some(ring) = self.rings.values().find(|r| r.status().borrow().role == Role::Primary) {
                    return ring;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(WAIT, wait).await.expect("a primary within the time limit")
    }

    async fn replicate(&self, request: Vec<u8>) -> Bytes {
        let attempt = async {
            loop {
                match self.primary().await.replicate(request.clone()).await {
                    Ok(response) => return response,
                    Err(ReplicateError::NotPrimary { .. }) => {
                        tokio::time::sleep(Duration::from_millis(20)).await
                    }
                    Err(error) => panic!("replicate: {error}"),
                }
            }
        };
        tokio::time::timeout(WAIT, attempt).await.expect("replicated within the time limit")
    }

    /// What every live replica executed, as length and checksum per request, once it
    /// applied everything the primary has chosen.
    async fn states(&self) -> Vec<Vec<Bytes>> {
        let chosen = self.primary().await.status().borrow().chosen;
        let mut states = Vec::new();
        for ring in self.rings.values() {
            let mut status = ring.status();
            tokio::time::timeout(WAIT, status.wait_for(|s| s.applied >= chosen)).await.unwrap().unwrap();
            let answers = ring.read_fast(Vec::new(), chosen).await.unwrap();
            states.push(answers.chunks(16).map(Bytes::copy_from_slice).collect());
        }
        states
    }

    async fn shutdown(self) {
        for node in self.nodes.values() {
            node.runtime.shutdown().await;
            node.transport.shutdown(Duration::from_secs(1)).await;
        }
    }
}

fn grpc() -> GrpcConfig {
    GrpcConfig { backoff_initial_ms: 10, backoff_max_ms: 200, ..GrpcConfig::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_request_replicates_in_chunks_while_small_requests_complete() {
    let mut cluster = Cluster::new(grpc()).await;
    assert_eq!(GrpcConfig::default().frame_bytes_max, 4 << 20, "frames stay small");
    cluster.replicate(small(0)).await;
    // Replica 3 is down while the large request is chosen, and fetches it afterwards.
    let late = NodeId(3);
    while cluster.primary().await.node() == late {
        cluster.primary().await.relinquish_primary(None).await.ok();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.rings.remove(&late).unwrap().shutdown().await;

    let value = large(5);
    let primary = cluster.primary().await;
    // Small requests queued just before the large one do not wait for the 64 MiB to cross
    // the network: their accepts leave beside its chunks, not behind them.
    let smalls: Vec<u64> = (1..=20).collect();
    let started = Instant::now();
    let (small_time, large_time) = tokio::join!(
        async {
            let requests = smalls.iter().map(|&n| Bytes::from(small(n))).collect();
            for answer in primary.replicate_many(requests).await {
                answer.expect("a small request");
            }
            started.elapsed()
        },
        async {
            let answer = primary.replicate(value.clone()).await;
            assert_eq!(answer.expect("the large request"), requests::answer(&value));
            started.elapsed()
        }
    );
    assert!(
        small_time < large_time,
        "small requests ahead of the large one waited for it: {small_time:?} vs {large_time:?}"
    );
    let during = smalls;
    let stats = cluster.nodes[&primary.node()].transport.stats().snapshot();
    assert!(stats.chunks_sent >= 2 * 64, "the value travelled in chunks: {} chunks sent", stats.chunks_sent);

    cluster.start(late).await;
    let states = cluster.states().await;
    let mut executed = vec![small(0), value];
    executed.extend(during.iter().map(|&n| small(n)));
    let mut wanted = expected(&executed);
    wanted.sort();
    for state in &states {
        let mut sorted = state.clone();
        sorted.sort();
        assert_eq!(sorted, wanted, "every request executed once, the large one whole");
    }
    assert!(states.windows(2).all(|w| w[0] == w[1]), "identical on every replica, the late one included");
    let late_stats = cluster.nodes[&late].transport.stats().snapshot();
    assert!(late_stats.chunks_received >= 64, "the late replica fetched the value in chunks");
    assert_eq!(late_stats.rejected_chunks, 0);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_dies_mid_replication_and_the_value_is_chosen_whole_once_or_refused() {
    // Small chunks: the value takes many frames, so the primary dies well inside them.
    let grpc = GrpcConfig { chunk_bytes: 64 << 10, ..grpc() };
    let mut cluster = Cluster::new(grpc).await;
    cluster.replicate(small(0)).await;
    let value = large(9);
    let victim = cluster.primary().await.node();
    let chunks_per_copy = (LARGE as u64).div_ceil(64 << 10);
    let stats = |cluster: &Cluster| stats_of(&cluster.nodes[&victim].transport);
    let before = stats(&cluster);
    let outcome = {
        let primary = cluster.rings[&victim].clone();
        let value = value.clone();
        tokio::spawn(async move { primary.replicate(value).await })
    };
    // Kill the primary's node (its ring, runtime and transport) once the value is on the wire.
    let started = tokio::time::timeout(WAIT, async {
        while stats(&cluster) == before {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(started.is_ok(), "the large value never left the primary");
    let ring = cluster.rings.remove(&victim).unwrap();
    let node = cluster.nodes.remove(&victim).unwrap();
    node.transport.shutdown(Duration::ZERO).await;
    let sent = stats_of(&node.transport) - before;
    ring.shutdown().await;
    node.runtime.shutdown().await;
    assert!(sent < 2 * chunks_per_copy, "the primary died after sending every chunk ({sent})");
    let outcome = outcome.await.unwrap();

    // The others elect a new primary and go on.
    assert_ne!(cluster.primary().await.node(), victim);
    cluster.replicate(small(1)).await;
    let states = cluster.states().await;
    assert_eq!(states.len(), 2);
    assert_eq!(states[0], states[1], "the survivors agree");
    let whole = answer(&value);
    let copies = states[0].iter().filter(|a| **a == whole).count();
    let partial = states[0].iter().filter(|a| **a != whole && a[..8] != 8u64.to_le_bytes()).count();
    assert_eq!(partial, 0, "no partial value was executed: {:?}", states[0].len());
    match outcome {
        Ok(response) => {
            assert_eq!(response, whole);
            assert_eq!(copies, 1, "answered, so chosen exactly once");
        }
        Err(error) => assert!(copies <= 1, "refused ({error}), and chosen at most once"),
    }
    let mut wanted = vec![small(0)];
    if copies == 1 {
        wanted.push(value);
    }
    wanted.push(small(1));
    assert_eq!(states[0], expected(&wanted));
    cluster.shutdown().await;
}

fn stats_of(transport: &GrpcTransport) -> u64 {
    transport.stats().snapshot().chunks_sent
}
