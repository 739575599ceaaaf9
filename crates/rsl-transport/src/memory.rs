//! An in-process network for tests: endpoints attached to one [`MemoryNetwork`] hub deliver
//! to each other directly, with injectable faults (one-way link drops, random loss from a
//! seeded generator, partitions).

use crate::codec::{encoded_len, framed_len};
use crate::gate::{ChannelClosed, Gate};
use crate::membership::Membership;
use crate::stats::TransportStats;
use crate::transport::{
    check_outbound, AddressError, Inbound, InboundSink, PeerAddress, SendError, Transport,
};
use parking_lot::{Mutex, RwLock};
use rsl_core::SplitMix64;
use rsl_core::{Message, NodeId};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Settings of a [`MemoryNetwork`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryConfig {
    /// Seeds the generator behind [`MemoryNetwork::set_drop_percent`].
    pub seed: u64,
    /// Largest encoded message `send` accepts; defaults to what a default gRPC endpoint
    /// carries (in chunks beyond a frame: [`crate::GrpcConfig::message_bytes_max`]), so a
    /// message that the gRPC transport would refuse is refused in tests too. Messages are
    /// handed over whole in process, never chunked.
    pub message_bytes_max: u64,
    /// Capacity of each endpoint's inbound channel, in messages. A message that finds the
    /// channel full is dropped and counted in [`TransportStats::dropped_inbound_full`].
    pub inbound_queue_messages_max: u32,
}

impl Default for MemoryConfig {
    fn default() -> MemoryConfig {
        MemoryConfig {
            seed: 0,
            message_bytes_max: crate::grpc::CHUNKED_MESSAGE_BYTES_MAX_DEFAULT,
            inbound_queue_messages_max: 8192,
        }
    }
}

/// Why an endpoint could not be attached.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AttachError {
    /// Another live endpoint already speaks for the node.
    #[error("{node} is already attached to this network")]
    AlreadyAttached {
        /// The node.
        node: NodeId,
    },
    /// The configuration cannot work.
    #[error("invalid memory network configuration: {problem}")]
    InvalidConfig {
        /// What is wrong.
        problem: String,
    },
}

#[derive(Debug)]
struct Faults {
    rng: SplitMix64,
    drop_percent: u32,
    dropped_links: HashSet<(NodeId, NodeId)>,
    /// Partition group of each named node; `None` when the network is whole.
    groups: Option<HashMap<NodeId, usize>>,
}

impl Faults {
    /// Whether a message from `from` to `to` is lost. Draws from the generator only when
    /// random loss is on, so switching it off keeps the other faults deterministic.
    fn loses(&mut self, from: NodeId, to: NodeId) -> bool {
        self.cuts(from, to) || (self.drop_percent > 0 && self.rng.below(100) < u64::from(self.drop_percent))
    }

    /// Whether a dropped link or a partition loses every message from `from` to `to`.
    fn cuts(&self, from: NodeId, to: NodeId) -> bool {
        if self.dropped_links.contains(&(from, to)) {
            return true;
        }
        match &self.groups {
            Some(groups) => !matches!((groups.get(&from), groups.get(&to)), (Some(a), Some(b)) if a == b),
            None => false,
        }
    }
}

/// The receiving side of an attached endpoint: its inbound checks, and where admitted
/// messages go (the inbound channel, or the sink its owner registered).
#[derive(Debug)]
struct Receiving {
    gate: Gate,
    sink: RwLock<Option<Arc<dyn InboundSink>>>,
}

impl Receiving {
    /// Hands an admitted message to the sink, or else to the inbound channel (dropping it,
    /// counted, when the channel is full). Runs on the sender's thread.
    fn deliver(&self, inbound: Inbound) -> Result<(), ChannelClosed> {
        let sink = self.sink.read();
        let Some(sink) = sink.as_ref() else { return self.gate.deliver_now(inbound) };
        // Counted before the message becomes visible to the receiver, as on the channel.
        TransportStats::bump(&self.gate.stats.messages_received);
        if sink.deliver(inbound) {
            Ok(())
        } else {
            self.gate.stats.messages_received.fetch_sub(1, Ordering::Relaxed);
            Err(ChannelClosed)
        }
    }
}

#[derive(Debug)]
struct Hub {
    config: MemoryConfig,
    endpoints: RwLock<HashMap<NodeId, Arc<Receiving>>>,
    faults: Mutex<Faults>,
}

/// A hub connecting [`MemoryEndpoint`]s in one process. Cheap to clone (shared).
///
/// Faults apply per message at `send` time, in this order: a dropped link, a partition,
/// then random loss. Lost messages count in the sender's
/// [`TransportStats::dropped_by_fault`].
#[derive(Clone, Debug)]
pub struct MemoryNetwork {
    hub: Arc<Hub>,
}

impl MemoryNetwork {
    /// A network with default settings and random loss seeded by `seed`.
    pub fn new(seed: u64) -> MemoryNetwork {
        MemoryNetwork::with_config(MemoryConfig { seed, ..MemoryConfig::default() })
    }

    /// A network with `config`.
    pub fn with_config(config: MemoryConfig) -> MemoryNetwork {
        let faults = Faults {
            rng: SplitMix64::new(config.seed),
            drop_percent: 0,
            dropped_links: HashSet::new(),
            groups: None,
        };
        MemoryNetwork {
            hub: Arc::new(Hub { config, endpoints: RwLock::new(HashMap::new()), faults: Mutex::new(faults) }),
        }
    }

    /// Attaches an endpoint for `node`, with an empty membership table, and returns it with
    /// the receiver of its inbound messages. Dropping the endpoint detaches it.
    pub fn endpoint(&self, node: NodeId) -> Result<(MemoryEndpoint, mpsc::Receiver<Inbound>), AttachError> {
        let capacity = self.hub.config.inbound_queue_messages_max;
        if capacity == 0 {
            return Err(AttachError::InvalidConfig { problem: "inbound_queue_messages_max is 0".to_owned() });
        }
        let (sender, receiver) = mpsc::channel(capacity as usize);
        let gate = Gate {
            local: node,
            membership: Arc::new(Membership::new()),
            stats: Arc::new(TransportStats::default()),
            inbound: sender,
        };
        let receiving = Arc::new(Receiving { gate, sink: RwLock::new(None) });
        let mut endpoints = self.hub.endpoints.write();
        if endpoints.contains_key(&node) {
            return Err(AttachError::AlreadyAttached { node });
        }
        endpoints.insert(node, Arc::clone(&receiving));
        drop(endpoints);
        let endpoint =
            MemoryEndpoint { hub: Arc::clone(&self.hub), receiving, addresses: Mutex::new(HashMap::new()) };
        Ok((endpoint, receiver))
    }

    /// Whether an endpoint for `node` is attached.
    pub fn is_attached(&self, node: NodeId) -> bool {
        self.hub.endpoints.read().contains_key(&node)
    }

    /// Loses every message from `from` to `to` (one direction) until restored or healed.
    pub fn drop_link(&self, from: NodeId, to: NodeId) {
        self.hub.faults.lock().dropped_links.insert((from, to));
    }

    /// Undoes [`MemoryNetwork::drop_link`] for `from -> to`.
    pub fn restore_link(&self, from: NodeId, to: NodeId) {
        self.hub.faults.lock().dropped_links.remove(&(from, to));
    }

    /// Loses each message with probability `percent`/100, drawn from the seeded generator.
    ///
    /// # Panics
    /// If `percent > 100` (a bug in the caller).
    pub fn set_drop_percent(&self, percent: u32) {
        assert!(percent <= 100, "drop percent {percent} is above 100");
        self.hub.faults.lock().drop_percent = percent;
    }

    /// Splits the network: messages flow only between nodes of the same group. A node named
    /// in no group is cut off from everyone. Replaces any previous partition.
    pub fn partition(&self, groups: &[&[NodeId]]) {
        let mut map = HashMap::new();
        for (index, group) in groups.iter().enumerate() {
            for node in group.iter() {
                map.insert(*node, index);
            }
        }
        self.hub.faults.lock().groups = Some(map);
    }

    /// Removes the partition and restores every dropped link. Random loss is left as set.
    pub fn heal(&self) {
        let mut faults = self.hub.faults.lock();
        faults.groups = None;
        faults.dropped_links.clear();
    }
}

/// One node's endpoint on a [`MemoryNetwork`]. Delivery happens inside `send`, after the
/// receiver's membership check, straight into the receiver's inbound channel, or into its
/// [`InboundSink`] once it registered one ([`Transport::deliver_inbound_to`]: a runtime
/// does, so a message reaches its ring's task with no task in between). There is no
/// outbound queue (a full inbound channel drops the message and counts it).
#[derive(Debug)]
pub struct MemoryEndpoint {
    hub: Arc<Hub>,
    receiving: Arc<Receiving>,
    addresses: Mutex<HashMap<NodeId, PeerAddress>>,
}

impl MemoryEndpoint {
    fn gate(&self) -> &Gate {
        &self.receiving.gate
    }

    fn check(&self, to: NodeId, messages: &[Message]) -> Result<Vec<u64>, SendError> {
        check_outbound(self.gate().local, to, self.hub.config.message_bytes_max, messages, encoded_len)
    }
}

impl Transport for MemoryEndpoint {
    fn local_node(&self) -> NodeId {
        self.gate().local
    }

    fn send(&self, to: NodeId, messages: Vec<Message>) -> Result<(), SendError> {
        if messages.is_empty() {
            return Ok(());
        }
        let sizes = self.check(to, &messages)?;
        let stats = &self.gate().stats;
        let count = messages.len() as u64;
        let frame_bytes: u64 = sizes.iter().map(|bytes| framed_len(*bytes)).sum();
        TransportStats::bump(&stats.frames_sent);
        TransportStats::add(&stats.messages_sent, count);
        TransportStats::add(&stats.bytes_sent, frame_bytes);
        let Some(receiver) = self.hub.endpoints.read().get(&to).cloned() else {
            TransportStats::add(&stats.dropped_unreachable, count);
            return Ok(());
        };
        let from = self.gate().local;
        let delivered: Vec<Message> = {
            let mut faults = self.hub.faults.lock();
            messages.into_iter().filter(|_| !faults.loses(from, to)).collect()
        };
        TransportStats::add(&stats.dropped_by_fault, count - delivered.len() as u64);
        if delivered.is_empty() {
            return Ok(());
        }
        TransportStats::bump(&receiver.gate.stats.frames_received);
        TransportStats::add(&receiver.gate.stats.bytes_received, frame_bytes);
        for message in delivered {
            if receiver.gate.admit(from, message.ring, message.from, message.to).is_err() {
                continue;
            }
            if receiver.deliver(Inbound { from, message }).is_err() {
                // The receiver's runtime is gone: like a crashed node, it hears nothing.
                TransportStats::bump(&stats.dropped_unreachable);
            }
        }
        Ok(())
    }

    fn set_peer_address(&self, node: NodeId, address: PeerAddress) -> Result<(), AddressError> {
        self.addresses.lock().insert(node, address);
        Ok(())
    }

    fn peer_address(&self, node: NodeId) -> Option<PeerAddress> {
        self.addresses.lock().get(&node).cloned()
    }

    fn remove_peer(&self, node: NodeId) {
        self.addresses.lock().remove(&node);
    }

    /// Up while `node` is attached and no dropped link or partition cuts the way to it
    /// (random loss leaves it up).
    fn peer_connected(&self, node: NodeId) -> Option<bool> {
        let attached = self.hub.endpoints.read().contains_key(&node);
        Some(attached && !self.hub.faults.lock().cuts(self.gate().local, node))
    }

    fn deliver_inbound_to(&self, sink: Arc<dyn InboundSink>) -> bool {
        *self.receiving.sink.write() = Some(sink);
        true
    }

    fn membership(&self) -> &Membership {
        &self.gate().membership
    }

    fn stats(&self) -> &TransportStats {
        &self.gate().stats
    }
}

impl Drop for MemoryEndpoint {
    fn drop(&mut self) {
        let mut endpoints = self.hub.endpoints.write();
        let local = self.gate().local;
        if endpoints.get(&local).is_some_and(|receiving| Arc::ptr_eq(receiving, &self.receiving)) {
            endpoints.remove(&local);
        }
    }
}
