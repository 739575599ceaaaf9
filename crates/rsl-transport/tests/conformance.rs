//! One suite every transport passes: the in-memory network, gRPC over loopback and, with the
//! `rdma` feature, the RDMA transport over the emulated provider. Each transport's own file
//! tests what only it has (faults of the in-memory network, gRPC's bad peers, the ring's
//! faults).

mod common;

use common::{accept, heartbeat, receive, PATIENCE};
use rsl_core::{MessageBody, NodeId, RingId};
use rsl_transport::{Inbound, MemoryConfig, MemoryEndpoint, MemoryNetwork, SendError, Transport};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// One node's endpoint and its inbound messages.
struct Node {
    endpoint: Arc<dyn Transport>,
    inbound: mpsc::Receiver<Inbound>,
}

/// Builds endpoints of one transport that know each other's addresses.
trait Fabric {
    /// Largest message `send` accepts, as configured here.
    fn message_bytes_max(&self) -> u64;
    /// Starts an endpoint for `node` (again, at the same address, if it ran before).
    async fn start(&mut self, node: u64) -> Node;
    /// Stops `node`'s endpoint.
    async fn stop(&mut self, node: u64);
    /// The address peers register for `node`.
    fn address(&self, node: u64) -> String;
}

/// Starts `nodes`, tells each the others' addresses and admits all of them on rings 1 and 2.
async fn start_all<F: Fabric>(fabric: &mut F, nodes: &[u64]) -> HashMap<u64, Node> {
    let mut started = HashMap::new();
    for &node in nodes {
        started.insert(node, fabric.start(node).await);
    }
    for (&node, handle) in &started {
        for &peer in nodes.iter().filter(|&&peer| peer != node) {
            handle.endpoint.set_peer_address(NodeId(peer), fabric.address(peer).into()).unwrap();
        }
        for ring in [1, 2] {
            handle.endpoint.membership().set_members(RingId(ring), nodes.iter().copied().map(NodeId));
        }
    }
    started
}

fn tag(inbound: &Inbound) -> u64 {
    match inbound.message.body {
        MessageBody::Heartbeat { sent_at, .. } => sent_at.0,
        MessageBody::Accept { slot, .. } => slot.0,
        ref other => panic!("unexpected {other:?}"),
    }
}

async fn delivers_in_order_both_ways_across_rings<F: Fabric>(mut fabric: F) {
    let mut nodes = start_all(&mut fabric, &[1, 2]).await;
    let mut to_two = Vec::new();
    for round in 0..20u64 {
        let batch: Vec<_> = (0..25).map(|i| accept(1 + i % 2, 1, 2, round * 25 + i, 64)).collect();
        to_two.extend(batch.clone());
        nodes[&1].endpoint.send(NodeId(2), batch).unwrap();
        nodes[&2].endpoint.send(NodeId(1), vec![heartbeat(2, 2, 1, round)]).unwrap();
    }
    let got = receive(&mut nodes.get_mut(&2).unwrap().inbound, 500).await;
    assert!(got.iter().all(|m| m.from == NodeId(1)));
    assert_eq!(got.into_iter().map(|m| m.message).collect::<Vec<_>>(), to_two, "in order, intact");
    let back = receive(&mut nodes.get_mut(&1).unwrap().inbound, 20).await;
    assert_eq!(back.iter().map(tag).collect::<Vec<_>>(), (0..20).collect::<Vec<_>>());
    let (one, two) = (nodes[&1].endpoint.stats().snapshot(), nodes[&2].endpoint.stats().snapshot());
    assert_eq!((one.messages_sent, two.messages_received), (500, 500));
    assert_eq!((two.messages_sent, one.messages_received), (20, 20));
    assert!(one.frames_sent >= 1 && one.frames_sent <= 20, "batched: {one:?}");
    common::eventually("frame counters to agree", || {
        nodes[&1].endpoint.stats().snapshot().frames_sent
            == nodes[&2].endpoint.stats().snapshot().frames_received
    })
    .await;
    assert_eq!(
        nodes[&1].endpoint.stats().snapshot().bytes_sent,
        nodes[&2].endpoint.stats().snapshot().bytes_received
    );
    assert_eq!(one.decode_errors + two.decode_errors + one.rejected_non_member + two.rejected_non_member, 0);
}

async fn strangers_and_unknown_rings_are_rejected_and_counted<F: Fabric>(mut fabric: F) {
    let mut nodes = start_all(&mut fabric, &[1, 2, 3]).await;
    // Node 2 admits only {1, 2} on ring 1 and knows no ring 7.
    nodes[&2].endpoint.membership().set_members(RingId(1), [NodeId(1), NodeId(2)]);
    nodes[&3].endpoint.send(NodeId(2), vec![heartbeat(1, 3, 2, 1), heartbeat(1, 3, 2, 2)]).unwrap();
    nodes[&1].endpoint.send(NodeId(2), vec![heartbeat(7, 1, 2, 3)]).unwrap();
    common::eventually("node 2 to judge the strangers", || {
        let stats = nodes[&2].endpoint.stats().snapshot();
        stats.rejected_non_member == 2 && stats.rejected_unknown_ring == 1
    })
    .await;
    nodes[&1].endpoint.send(NodeId(2), vec![heartbeat(1, 1, 2, 4)]).unwrap();
    let two = nodes.get_mut(&2).unwrap();
    assert_eq!(tag(&receive(&mut two.inbound, 1).await[0]), 4);
    assert!(two.inbound.try_recv().is_err());
    assert_eq!(two.endpoint.stats().snapshot().messages_received, 1);
    // Once node 3 is admitted, its messages pass.
    two.endpoint.membership().set_members(RingId(1), [NodeId(1), NodeId(2), NodeId(3)]);
    nodes[&3].endpoint.send(NodeId(2), vec![heartbeat(1, 3, 2, 5)]).unwrap();
    assert_eq!(receive(&mut nodes.get_mut(&2).unwrap().inbound, 1).await[0].from, NodeId(3));
}

async fn send_checks_envelope_and_size_before_queuing_anything<F: Fabric>(mut fabric: F) {
    let max = fabric.message_bytes_max();
    let mut nodes = start_all(&mut fabric, &[1, 2]).await;
    let one = Arc::clone(&nodes[&1].endpoint);
    let too_big = accept(1, 1, 2, 2, max as usize + 1);
    let error = one.send(NodeId(2), vec![accept(1, 1, 2, 1, 10), too_big]).unwrap_err();
    let SendError::TooLarge { bytes, max: limit } = error else { panic!("expected TooLarge, got {error}") };
    assert!(bytes > max, "{bytes}");
    assert_eq!(limit, max);
    assert_eq!(
        one.send(NodeId(2), vec![heartbeat(1, 9, 2, 1)]),
        Err(SendError::WrongSender { local: NodeId(1), message_from: NodeId(9) })
    );
    assert_eq!(
        one.send(NodeId(2), vec![heartbeat(1, 1, 3, 1)]),
        Err(SendError::WrongReceiver { to: NodeId(2), message_to: NodeId(3) })
    );
    assert_eq!(one.stats().snapshot().messages_sent, 0, "a refused call queued nothing");
    // The largest message that fits goes through, with a small one behind it.
    let mut size = max.saturating_sub(200) as usize;
    let fits = loop {
        let candidate = accept(1, 1, 2, 3, size);
        if one.send(NodeId(2), vec![candidate.clone(), heartbeat(1, 1, 2, 4)]).is_ok() {
            break candidate;
        }
        size -= 64;
    };
    assert!(size as u64 + 300 >= max, "a message of {size} payload bytes should fit under {max}");
    // (A message too large for a frame travels in chunks, and the small one may overtake it.)
    let mut got = receive(&mut nodes.get_mut(&2).unwrap().inbound, 2).await;
    got.sort_by_key(|inbound| inbound.message.body.kind() != "accept");
    assert!(got[0].message == fits, "the largest message arrived changed");
    assert_eq!(tag(&got[1]), 4);
}

async fn addresses_are_recorded_and_forgotten<F: Fabric>(mut fabric: F) {
    let nodes = start_all(&mut fabric, &[1, 2]).await;
    let one = &nodes[&1].endpoint;
    assert_eq!(one.peer_address(NodeId(2)).map(|a| a.0), Some(fabric.address(2)));
    one.remove_peer(NodeId(2));
    assert_eq!(one.peer_address(NodeId(2)), None);
    assert_eq!(one.local_node(), NodeId(1));
}

/// A peer that stops and comes back at the same address is reached again; messages sent
/// while it was down may be lost, never duplicated or altered.
async fn a_restarted_peer_is_reached_again<F: Fabric>(mut fabric: F) {
    let mut nodes = start_all(&mut fabric, &[1, 2]).await;
    nodes[&2].endpoint.send(NodeId(1), vec![heartbeat(1, 2, 1, 1)]).unwrap();
    assert_eq!(tag(&receive(&mut nodes.get_mut(&1).unwrap().inbound, 1).await[0]), 1);
    nodes.remove(&1);
    fabric.stop(1).await;
    let mut one = fabric.start(1).await;
    one.endpoint.membership().set_members(RingId(1), [NodeId(1), NodeId(2)]);
    one.endpoint.set_peer_address(NodeId(2), fabric.address(2).into()).unwrap();
    let two = Arc::clone(&nodes[&2].endpoint);
    let arrived = tokio::time::timeout(PATIENCE, async {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let mut next = 100;
        let mut seen = Vec::new();
        loop {
            tokio::select! {
                inbound = one.inbound.recv() => {
                    seen.push(tag(&inbound.unwrap()));
                    if seen.len() == 3 { break seen; }
                }
                _ = tick.tick() => {
                    two.send(NodeId(1), vec![heartbeat(1, 2, 1, next)]).unwrap();
                    next += 1;
                }
            }
        }
    })
    .await
    .expect("node 2 never reached the restarted node 1");
    assert!(arrived.windows(2).all(|pair| pair[0] < pair[1]), "no duplicates, in order: {arrived:?}");
    assert!(arrived[0] >= 100);
}

// ---------------------------------------------------------------------------------------
// The transports.

struct Memory {
    network: MemoryNetwork,
    endpoints: HashMap<u64, Arc<MemoryEndpoint>>,
}

impl Memory {
    /// Messages of up to 8 MiB, so the test of the limit allocates little.
    fn config() -> MemoryConfig {
        MemoryConfig { message_bytes_max: 8 << 20, ..MemoryConfig::default() }
    }

    fn new() -> Memory {
        Memory { network: MemoryNetwork::with_config(Memory::config()), endpoints: HashMap::new() }
    }
}

impl Fabric for Memory {
    fn message_bytes_max(&self) -> u64 {
        Memory::config().message_bytes_max
    }
    async fn start(&mut self, node: u64) -> Node {
        let (endpoint, inbound) = self.network.endpoint(NodeId(node)).unwrap();
        let endpoint = Arc::new(endpoint);
        self.endpoints.insert(node, Arc::clone(&endpoint));
        Node { endpoint, inbound }
    }
    async fn stop(&mut self, node: u64) {
        self.endpoints.remove(&node);
    }
    fn address(&self, node: u64) -> String {
        format!("memory-{node}")
    }
}

struct Grpc {
    endpoints: HashMap<u64, Arc<rsl_transport::GrpcTransport>>,
    addresses: HashMap<u64, std::net::SocketAddr>,
}

impl Grpc {
    fn new() -> Grpc {
        Grpc { endpoints: HashMap::new(), addresses: HashMap::new() }
    }
    fn config() -> rsl_transport::GrpcConfig {
        rsl_transport::GrpcConfig {
            backoff_initial_ms: 10,
            backoff_max_ms: 100,
            seed: 5,
            // Messages beyond a frame travel in chunks up to 8 MiB; the test of the limit
            // then allocates little.
            chunked_message_bytes_max: 8 << 20,
            ..Default::default()
        }
    }
}

impl Fabric for Grpc {
    fn message_bytes_max(&self) -> u64 {
        Grpc::config().message_bytes_max()
    }
    async fn start(&mut self, node: u64) -> Node {
        let address = self.addresses.get(&node).copied().unwrap_or_else(|| "127.0.0.1:0".parse().unwrap());
        let (endpoint, inbound) = rsl_transport::GrpcTransport::builder(NodeId(node))
            .config(Grpc::config())
            .bind(address)
            .await
            .unwrap();
        self.addresses.insert(node, endpoint.local_addr());
        let endpoint = Arc::new(endpoint);
        self.endpoints.insert(node, Arc::clone(&endpoint));
        Node { endpoint, inbound }
    }
    async fn stop(&mut self, node: u64) {
        if let Some(endpoint) = self.endpoints.remove(&node) {
            endpoint.shutdown(PATIENCE).await;
        }
    }
    fn address(&self, node: u64) -> String {
        self.addresses[&node].to_string()
    }
}

macro_rules! conformance {
    ($transport:ident, $make:expr) => {
        mod $transport {
            use super::*;
            conformance!(@cases $make;
                delivers_in_order_both_ways_across_rings,
                strangers_and_unknown_rings_are_rejected_and_counted,
                send_checks_envelope_and_size_before_queuing_anything,
                addresses_are_recorded_and_forgotten,
                a_restarted_peer_is_reached_again
            );
        }
    };
    (@cases $make:expr; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                super::$case($make).await;
            }
        )*
    };
}

conformance!(memory, Memory::new());
conformance!(grpc, Grpc::new());

#[cfg(feature = "rdma")]
mod rdma_fabric {
    use super::*;
    use rsl_transport::rdma::emulated::{EmulatedConfig, EmulatedDevice};
    use rsl_transport::rdma::{RdmaConfig, RdmaTransport};

    /// RDMA over the emulated provider, with small rings so frames wrap around often.
    pub(super) struct Rdma {
        endpoints: HashMap<u64, Arc<RdmaTransport>>,
        addresses: HashMap<u64, std::net::SocketAddr>,
    }

    impl Rdma {
        pub(super) fn new() -> Rdma {
            Rdma { endpoints: HashMap::new(), addresses: HashMap::new() }
        }
        fn config() -> RdmaConfig {
            RdmaConfig {
                ring_bytes: 256 << 10,
                frame_bytes_max: 64 << 10,
                backoff_initial_ms: 10,
                backoff_max_ms: 100,
                ..RdmaConfig::default()
            }
        }
    }

    impl Fabric for Rdma {
        fn message_bytes_max(&self) -> u64 {
            Rdma::config().message_bytes_max()
        }
        async fn start(&mut self, node: u64) -> Node {
            let address =
                self.addresses.get(&node).copied().unwrap_or_else(|| "127.0.0.1:0".parse().unwrap());
            let device = EmulatedDevice::open(EmulatedConfig::default()).unwrap();
            let (endpoint, inbound) = RdmaTransport::builder(NodeId(node))
                .config(Rdma::config())
                .device(Arc::new(device))
                .bind(address)
                .unwrap();
            self.addresses.insert(node, endpoint.local_addr());
            let endpoint = Arc::new(endpoint);
            self.endpoints.insert(node, Arc::clone(&endpoint));
            Node { endpoint, inbound }
        }
        async fn stop(&mut self, node: u64) {
            if let Some(endpoint) = self.endpoints.remove(&node) {
                endpoint.shutdown();
            }
        }
        fn address(&self, node: u64) -> String {
            self.addresses[&node].to_string()
        }
    }
}

#[cfg(feature = "rdma")]
conformance!(rdma, rdma_fabric::Rdma::new());
