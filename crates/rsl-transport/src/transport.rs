//! The seam between the runtime and the network: [`Transport`], [`Inbound`] and errors.

use crate::checkpoint::{CheckpointFetcher, CheckpointSource};
use crate::membership::Membership;
use crate::stats::TransportStats;
use rsl_core::{Message, NodeId};
use std::fmt;
use std::sync::Arc;

/// A message received from a peer, after the transport checked it.
///
/// `from` is the sender as the transport knows it (the frame's sender); the transport
/// guarantees `message.from == from`, `message.to` is the local node, and `from` is an
/// allowed member of `message.ring` in the [`Membership`] table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inbound {
    /// The sending node.
    pub from: NodeId,
    /// The message.
    pub message: Message,
}

/// Where an endpoint can hand admitted inbound messages itself, from the sending side,
/// instead of queueing them on its inbound channel for a receiving task to route: one task
/// wake-up per message fewer (see [`Transport::deliver_inbound_to`]).
pub trait InboundSink: Send + Sync + fmt::Debug {
    /// Takes one message that passed the endpoint's checks, without blocking. Returns
    /// `false` when the sink takes no more messages (its runtime stopped routing): the
    /// endpoint then counts the message unreachable, as when its inbound receiver is gone.
    fn deliver(&self, inbound: Inbound) -> bool;
}

/// Where a peer listens, in the syntax of the transport it is given to.
///
/// For gRPC: `host:port` (`127.0.0.1:7000`, `replica-1.example:7000`), or a URI with an
/// `http` (plain) or `https` (TLS) scheme. The in-memory network routes by node id and
/// only records the address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PeerAddress(pub String);

impl PeerAddress {
    /// The address text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PeerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for PeerAddress {
    fn from(address: &str) -> PeerAddress {
        PeerAddress(address.to_owned())
    }
}

impl From<String> for PeerAddress {
    fn from(address: String) -> PeerAddress {
        PeerAddress(address)
    }
}

impl From<std::net::SocketAddr> for PeerAddress {
    fn from(address: std::net::SocketAddr) -> PeerAddress {
        PeerAddress(address.to_string())
    }
}

/// What a transport does when a peer's outbound queue is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum QueueFullPolicy {
    /// Enqueue the new messages and drop the oldest queued ones until the queue fits its
    /// limits again, counting them in [`TransportStats::dropped_queue_full`]. The default:
    /// Paxos tolerates loss, and the newest messages (latest ballot, latest chosen
    /// watermark) are the useful ones when a peer has fallen behind.
    #[default]
    DropOldest,
    /// Refuse the whole `send` with [`SendError::QueueFull`] and enqueue nothing.
    Reject,
}

/// Why [`Transport::send`] refused messages. A refused call enqueued none of its messages.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// One message encodes to more bytes than the endpoint carries (in chunks, for an
    /// endpoint that chunks messages too large for a frame).
    #[error("message of {bytes} encoded bytes exceeds the per-message limit of {max} bytes")]
    TooLarge {
        /// Encoded size of the message.
        bytes: u64,
        /// The largest message the endpoint carries.
        max: u64,
    },
    /// The peer's lane of messages too large for a frame is full and the policy is
    /// [`QueueFullPolicy::Reject`].
    #[error(
        "chunked-message queue for {to} is full ({queued_bytes} bytes queued, {capacity_bytes} allowed)"
    )]
    ChunkedQueueFull {
        /// The receiver.
        to: NodeId,
        /// Bytes of chunked messages queued.
        queued_bytes: u64,
        /// The lane's bound.
        capacity_bytes: u64,
    },
    /// No address is registered for the receiver.
    #[error("no address registered for {to}")]
    UnknownPeer {
        /// The receiver.
        to: NodeId,
    },
    /// A message's `to` is not the node the call sends to.
    #[error("message addressed to {message_to} passed to send for {to}")]
    WrongReceiver {
        /// The node passed to `send`.
        to: NodeId,
        /// The message's `to`.
        message_to: NodeId,
    },
    /// A message's `from` is not this endpoint's node.
    #[error("message from {message_from} passed to the endpoint of {local}")]
    WrongSender {
        /// This endpoint's node.
        local: NodeId,
        /// The message's `from`.
        message_from: NodeId,
    },
    /// The peer's queue is full and the policy is [`QueueFullPolicy::Reject`].
    #[error("outbound queue for {to} is full ({queued} messages queued, {capacity} allowed)")]
    QueueFull {
        /// The receiver.
        to: NodeId,
        /// Messages already queued.
        queued: u64,
        /// The queue's capacity in messages.
        capacity: u64,
    },
    /// The transport was shut down.
    #[error("transport is shut down")]
    Closed,
}

/// Why a peer address was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// The address does not parse for this transport.
    #[error("invalid address {address:?} for {node}: {problem}")]
    Invalid {
        /// The peer.
        node: NodeId,
        /// The address given.
        address: String,
        /// What is wrong with it.
        problem: String,
    },
}

/// A network endpoint of one node, shared by every ring that node hosts.
///
/// The runtime holds it as `Arc<dyn Transport>`. Outbound, [`Transport::send`] never
/// blocks: it checks the messages and enqueues them on the receiver's bounded queue (or
/// delivers them, in memory); what happens when that queue is full is the endpoint's
/// [`QueueFullPolicy`]. Delivery is best effort: a message may be lost (a connection drops
/// with frames in flight, a queue overflows) but is never altered, and never duplicated by
/// the transport. Messages to one peer arrive in the order sent while a connection lasts;
/// across a reconnect the order is not guaranteed. The protocol relies on neither delivery
/// nor order.
///
/// Inbound, each endpoint is built together with a `tokio::sync::mpsc::Receiver<Inbound>`
/// that yields messages from every peer and every ring, in per-peer order, after the
/// membership check.
pub trait Transport: Send + Sync + fmt::Debug {
    /// The node this endpoint speaks for.
    fn local_node(&self) -> NodeId;

    /// Queues `messages` for `to`. Every message must have `from == self.local_node()` and
    /// `to == to`, and encode within the per-message limit; otherwise nothing is queued and
    /// the first offending message is reported.
    fn send(&self, to: NodeId, messages: Vec<Message>) -> Result<(), SendError>;

    /// Registers (or replaces) where `node` listens. Replacing an address drops what was
    /// queued for the old one.
    fn set_peer_address(&self, node: NodeId, address: PeerAddress) -> Result<(), AddressError>;

    /// The registered address of `node`.
    fn peer_address(&self, node: NodeId) -> Option<PeerAddress>;

    /// Forgets `node`: its queue is dropped and its connection closed.
    fn remove_peer(&self, node: NodeId);

    /// Whether the connection to `node` is up now, as far as this endpoint can tell:
    /// `Some(true)` when it is, `Some(false)` when messages cannot reach `node` (no
    /// connection, no address, a fault), `None` (the default) when this transport cannot
    /// tell. Cheap: it reads state and never connects.
    fn peer_connected(&self, node: NodeId) -> Option<bool> {
        let _ = node;
        None
    }

    /// Hands admitted inbound messages to `sink` from now on, instead of the inbound channel
    /// (replacing an earlier sink), and returns whether this endpoint does so; `false`, the
    /// default, when it only delivers on the channel. The in-memory network delivers to the
    /// sink from the sender's `send`, so a message reaches its ring without a task in between.
    fn deliver_inbound_to(&self, sink: Arc<dyn InboundSink>) -> bool {
        drop(sink);
        false
    }

    /// The ring -> allowed members table this endpoint enforces on inbound messages.
    fn membership(&self) -> &Membership;

    /// This endpoint's counters.
    fn stats(&self) -> &TransportStats;

    /// Serves `source`'s checkpoints to peers over this endpoint (replacing an earlier
    /// source) and returns the fetcher that gets checkpoints from peers over it; `None`, the
    /// default, when this transport carries no checkpoint transfer. The gRPC endpoint
    /// serves them on its replica port, under the same TLS and membership checks as
    /// messages (see [`crate::checkpoint`]).
    fn serve_checkpoints(&self, source: Arc<dyn CheckpointSource>) -> Option<Arc<dyn CheckpointFetcher>> {
        drop(source);
        None
    }
}

/// Checks a `send` call's messages before anything is queued: each comes from `local`, is
/// addressed to `to`, and has a `size` within `max`. Returns every message's size, or the
/// first offending message's error.
pub(crate) fn check_outbound(
    local: NodeId,
    to: NodeId,
    max: u64,
    messages: &[Message],
    size: impl Fn(&Message) -> u64,
) -> Result<Vec<u64>, SendError> {
    messages
        .iter()
        .map(|message| {
            if message.from != local {
                return Err(SendError::WrongSender { local, message_from: message.from });
            }
            if message.to != to {
                return Err(SendError::WrongReceiver { to, message_to: message.to });
            }
            let bytes = size(message);
            if bytes > max {
                return Err(SendError::TooLarge { bytes, max });
            }
            Ok(bytes)
        })
        .collect()
}
