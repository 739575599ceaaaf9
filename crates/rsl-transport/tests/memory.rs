//! The in-memory network: delivery, membership checks, limits and injected faults.

mod common;

use common::{accept, heartbeat, receive};
use rsl_core::{NodeId, RingId};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use rsl_transport::{
    AttachError, Inbound, InboundSink, MemoryConfig, MemoryEndpoint, MemoryNetwork, SendError, Transport,
};
use tokio::sync::mpsc;

fn members(endpoints: &[&dyn Transport], ring: u64, nodes: &[u64]) {
    for endpoint in endpoints {
        endpoint.membership().set_members(RingId(ring), nodes.iter().copied().map(NodeId));
    }
}

/// Attaches an endpoint for each of `nodes`, every one admitting all of them on `ring`.
fn attach<const N: usize>(
    network: &MemoryNetwork,
    ring: u64,
    nodes: [u64; N],
) -> [(MemoryEndpoint, mpsc::Receiver<Inbound>); N] {
    let attached = nodes.map(|node| network.endpoint(NodeId(node)).unwrap());
    let endpoints: Vec<&dyn Transport> =
        attached.iter().map(|(endpoint, _)| endpoint as &dyn Transport).collect();
    members(&endpoints, ring, &nodes);
    attached
}

/// Node 1 sending to node 2 on a network built from `config`: node 2 admits node 1 on
/// ring 1. Bind every field: an endpoint or receiver dropped changes what delivery does.
struct OneWay {
    network: MemoryNetwork,
    a: MemoryEndpoint,
    _a_in: mpsc::Receiver<Inbound>,
    b: MemoryEndpoint,
    b_in: mpsc::Receiver<Inbound>,
}

fn one_way(config: MemoryConfig) -> OneWay {
    let network = MemoryNetwork::with_config(config);
    let (a, _a_in) = network.endpoint(NodeId(1)).unwrap();
    let (b, b_in) = network.endpoint(NodeId(2)).unwrap();
    b.membership().set_members(RingId(1), [NodeId(1)]);
    OneWay { network, a, _a_in, b, b_in }
}

#[tokio::test]
async fn delivers_in_order_both_ways_across_rings() {
    let network = MemoryNetwork::new(1);
    let [(a, mut a_in), (b, mut b_in)] = attach(&network, 1, [1, 2]);
    members(&[&a, &b], 2, &[1, 2]);
    let to_b: Vec<_> = (0..10).map(|i| heartbeat(1 + i % 2, 1, 2, i)).collect();
    a.send(NodeId(2), to_b.clone()).unwrap();
    b.send(NodeId(1), vec![heartbeat(2, 2, 1, 99)]).unwrap();
    let got: Vec<_> = receive(&mut b_in, 10).await.into_iter().map(|m| m.message).collect();
    assert_eq!(got, to_b);
    let back = receive(&mut a_in, 1).await;
    assert_eq!(back[0].from, NodeId(2));
    let (sa, sb) = (a.stats().snapshot(), b.stats().snapshot());
    assert_eq!((sa.frames_sent, sa.messages_sent, sa.messages_received), (1, 10, 1));
    assert_eq!((sb.frames_received, sb.messages_received), (1, 10));
    assert_eq!(sa.bytes_sent, sb.bytes_received);
}

#[tokio::test]
async fn strangers_and_unknown_rings_are_rejected_and_counted() {
    let network = MemoryNetwork::new(1);
    let (a, _a_in) = network.endpoint(NodeId(1)).unwrap();
    let (c, _c_in) = network.endpoint(NodeId(3)).unwrap();
    let (b, mut b_in) = network.endpoint(NodeId(2)).unwrap();
    b.membership().set_members(RingId(1), [NodeId(1), NodeId(2)]);
    c.send(NodeId(2), vec![heartbeat(1, 3, 2, 1), heartbeat(1, 3, 2, 2)]).unwrap();
    a.send(NodeId(2), vec![heartbeat(7, 1, 2, 3)]).unwrap();
    a.send(NodeId(2), vec![heartbeat(1, 1, 2, 4)]).unwrap();
    let got = receive(&mut b_in, 1).await;
    assert_eq!(got[0].message, heartbeat(1, 1, 2, 4));
    assert!(b_in.try_recv().is_err());
    let stats = b.stats().snapshot();
    assert_eq!(stats.rejected_non_member, 2);
    assert_eq!(stats.rejected_unknown_ring, 1);
    assert_eq!(stats.messages_received, 1);
    // Once the runtime admits node 3, its messages pass.
    b.membership().set_members(RingId(1), [NodeId(1), NodeId(2), NodeId(3)]);
    c.send(NodeId(2), vec![heartbeat(1, 3, 2, 5)]).unwrap();
    assert_eq!(receive(&mut b_in, 1).await[0].from, NodeId(3));
}

#[tokio::test]
async fn send_checks_envelope_and_size_before_queuing_anything() {
    let OneWay { network, a, _a_in, b: _b, mut b_in } =
        one_way(MemoryConfig { message_bytes_max: 1000, ..MemoryConfig::default() });
    let error = a.send(NodeId(2), vec![accept(1, 1, 2, 1, 10), accept(1, 1, 2, 2, 2000)]).unwrap_err();
    let SendError::TooLarge { bytes, max } = error else { panic!("expected TooLarge, got {error}") };
    assert!(bytes > 2000, "{bytes}");
    assert_eq!(max, 1000);
    assert_eq!(
        a.send(NodeId(2), vec![heartbeat(1, 9, 2, 1)]),
        Err(SendError::WrongSender { local: NodeId(1), message_from: NodeId(9) })
    );
    assert_eq!(
        a.send(NodeId(2), vec![heartbeat(1, 1, 3, 1)]),
        Err(SendError::WrongReceiver { to: NodeId(2), message_to: NodeId(3) })
    );
    assert!(b_in.try_recv().is_err(), "a refused call queued nothing");
    assert_eq!(a.stats().snapshot().messages_sent, 0);
    assert_eq!(
        network.endpoint(NodeId(1)).map(|_| ()).unwrap_err(),
        AttachError::AlreadyAttached { node: NodeId(1) }
    );
}

#[tokio::test]
async fn dropped_link_is_one_way_until_restored() {
    let network = MemoryNetwork::new(1);
    let [(a, mut a_in), (b, mut b_in)] = attach(&network, 1, [1, 2]);
    network.drop_link(NodeId(1), NodeId(2));
    a.send(NodeId(2), vec![heartbeat(1, 1, 2, 1)]).unwrap();
    b.send(NodeId(1), vec![heartbeat(1, 2, 1, 2)]).unwrap();
    assert_eq!(receive(&mut a_in, 1).await[0].message, heartbeat(1, 2, 1, 2));
    assert!(b_in.try_recv().is_err());
    assert_eq!(a.stats().snapshot().dropped_by_fault, 1);
    network.restore_link(NodeId(1), NodeId(2));
    a.send(NodeId(2), vec![heartbeat(1, 1, 2, 3)]).unwrap();
    assert_eq!(receive(&mut b_in, 1).await[0].message, heartbeat(1, 1, 2, 3));
}

#[tokio::test]
async fn partition_splits_groups_and_heal_rejoins() {
    let network = MemoryNetwork::new(1);
    let [(a, mut a_in), (b, mut b_in), (c, mut c_in)] = attach(&network, 1, [1, 2, 3]);
    assert_eq!(a.peer_connected(NodeId(3)), Some(true));
    network.partition(&[&[NodeId(1), NodeId(2)], &[NodeId(3)]]);
    assert_eq!((a.peer_connected(NodeId(2)), a.peer_connected(NodeId(3))), (Some(true), Some(false)));
    assert_eq!(c.peer_connected(NodeId(1)), Some(false));
    assert_eq!(a.peer_connected(NodeId(9)), Some(false), "nobody attached as node 9");
    a.send(NodeId(2), vec![heartbeat(1, 1, 2, 1)]).unwrap();
    a.send(NodeId(3), vec![heartbeat(1, 1, 3, 2)]).unwrap();
    c.send(NodeId(1), vec![heartbeat(1, 3, 1, 3)]).unwrap();
    assert_eq!(receive(&mut b_in, 1).await[0].message, heartbeat(1, 1, 2, 1));
    assert!(c_in.try_recv().is_err());
    assert!(a_in.try_recv().is_err());
    assert_eq!(a.stats().snapshot().dropped_by_fault + c.stats().snapshot().dropped_by_fault, 2);
    network.heal();
    assert_eq!(c.peer_connected(NodeId(1)), Some(true));
    c.send(NodeId(1), vec![heartbeat(1, 3, 1, 4)]).unwrap();
    a.send(NodeId(3), vec![heartbeat(1, 1, 3, 5)]).unwrap();
    assert_eq!(receive(&mut a_in, 1).await[0].message, heartbeat(1, 3, 1, 4));
    assert_eq!(receive(&mut c_in, 1).await[0].message, heartbeat(1, 1, 3, 5));
    drop(b);
}

/// Sends `count` messages one at a time at `percent` loss and returns which arrived.
async fn lossy_run(seed: u64, percent: u32, count: u64) -> Vec<u64> {
    let OneWay { network, a, _a_in, b: _b, mut b_in } =
        one_way(MemoryConfig { seed, inbound_queue_messages_max: count as u32, ..MemoryConfig::default() });
    network.set_drop_percent(percent);
    for i in 0..count {
        a.send(NodeId(2), vec![heartbeat(1, 1, 2, i)]).unwrap();
    }
    let dropped = a.stats().snapshot().dropped_by_fault;
    let arrived = receive(&mut b_in, (count - dropped) as usize).await;
    assert!(b_in.try_recv().is_err());
    arrived
        .into_iter()
        .map(|m| {
            if let rsl_core::MessageBody::Heartbeat { sent_at, .. } = m.message.body {
                sent_at.0
            } else {
                u64::MAX
            }
        })
        .collect()
}

#[tokio::test]
async fn random_loss_is_seeded_and_near_the_asked_rate() {
    let first = lossy_run(42, 30, 2000).await;
    let again = lossy_run(42, 30, 2000).await;
    let other = lossy_run(43, 30, 2000).await;
    assert_eq!(first, again, "same seed, same losses");
    assert_ne!(first, other, "another seed, other losses");
    let delivered = first.len();
    assert!((1200..=1600).contains(&delivered), "70% of 2000 expected, got {delivered}");
    assert_eq!(lossy_run(1, 0, 100).await.len(), 100);
    assert!(lossy_run(1, 100, 100).await.is_empty());
}

#[tokio::test]
async fn detached_receivers_are_unreachable_and_full_channels_drop() {
    let OneWay { network, a, b, mut b_in, _a_in } =
        one_way(MemoryConfig { inbound_queue_messages_max: 2, ..MemoryConfig::default() });
    a.send(NodeId(2), (0..3).map(|i| heartbeat(1, 1, 2, i)).collect()).unwrap();
    assert_eq!(receive(&mut b_in, 2).await.len(), 2);
    assert_eq!(b.stats().snapshot().dropped_inbound_full, 1);
    assert!(network.is_attached(NodeId(2)));
    drop(b);
    assert!(!network.is_attached(NodeId(2)));
    a.send(NodeId(2), vec![heartbeat(1, 1, 2, 9)]).unwrap();
    assert_eq!(a.stats().snapshot().dropped_unreachable, 1);
    // The node can come back under the same id.
    let (_b, _b_in) = network.endpoint(NodeId(2)).unwrap();
}

/// Records what it is handed, while open.
#[derive(Debug, Default)]
struct Recorder {
    taken: Mutex<Vec<Inbound>>,
    closed: AtomicBool,
}

impl InboundSink for Recorder {
    fn deliver(&self, inbound: Inbound) -> bool {
        if self.closed.load(Ordering::Relaxed) {
            return false;
        }
        self.taken.lock().push(inbound);
        true
    }
}

#[test]
fn a_registered_sink_takes_admitted_messages_from_the_sender_instead_of_the_channel() {
    let mut net = one_way(MemoryConfig::default());
    let sink = Arc::new(Recorder::default());
    assert!(net.b.deliver_inbound_to(sink.clone()), "the memory network delivers to a sink");
    let sent = vec![heartbeat(1, 1, 2, 1), heartbeat(1, 1, 2, 2)];
    net.a.send(NodeId(2), sent.clone()).unwrap();
    // Delivered inside `send`, in order, after the membership check; the channel gets nothing.
    let taken: Vec<_> = sink.taken.lock().iter().map(|inbound| inbound.message.clone()).collect();
    assert_eq!(taken, sent);
    assert!(sink.taken.lock().iter().all(|inbound| inbound.from == NodeId(1)));
    assert!(net.b_in.try_recv().is_err());
    net.a.send(NodeId(2), vec![heartbeat(2, 1, 2, 3)]).unwrap();
    assert_eq!(sink.taken.lock().len(), 2, "a ring node 1 is not a member of is refused before the sink");
    assert_eq!(net.b.stats().snapshot().messages_received, 2);

    // A sink that takes no more messages counts them unreachable, like a dropped receiver.
    sink.closed.store(true, Ordering::Relaxed);
    net.a.send(NodeId(2), vec![heartbeat(1, 1, 2, 4)]).unwrap();
    assert_eq!(net.a.stats().snapshot().dropped_unreachable, 1);
    assert_eq!(net.b.stats().snapshot().messages_received, 2);
}
