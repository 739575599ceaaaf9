//! [`RdmaTransport`]: the [`Transport`] over the ring protocol, the state its poller shares
//! with it, and its checkpoint transfer.
//!
//! `send` checks the messages and queues them on the peer's bounded queue, then wakes the
//! poller (through the endpoint's completion channel). One poller thread per endpoint
//! (`poller.rs`) does everything else: it takes completions and credits, writes queued
//! messages as frames into each peer's ring (several frames per doorbell), reads complete
//! frames from every ring it owns, delivers them through the membership gate and writes
//! credits back; idle, it sleeps until a peer's write with immediate or a local `send`
//! wakes it, or its timer ends.
//!
//! Connections are set up by short-lived threads (the TCP handshake blocks) and handed to
//! the poller; a failed or ended connection is torn down (counted), and the sender dials
//! again with jittered exponential backoff while the peer keeps an address.
//!
//! Checkpoints travel over the same TCP listener (`checkpoint.rs`), once a runtime calls
//! [`Transport::serve_checkpoints`].

use crate::checkpoint::{CheckpointFetcher, CheckpointSource};
use crate::gate::Gate;
use crate::membership::Membership;
use crate::rdma::archive::archived_len;
use crate::rdma::checkpoint::{CheckpointService, RdmaCheckpointFetcher};
use crate::rdma::config::{RdmaConfig, RdmaConfigError};
use crate::rdma::handshake::{self, CheckpointAnswer, CheckpointAsk};
use crate::rdma::poller::Poller;
use crate::rdma::stats::RdmaStats;
use crate::rdma::verbs::{CompletionChannel, Device, VerbsError};
use crate::stats::TransportStats;
use crate::transport::{
    check_outbound, AddressError, Inbound, PeerAddress, QueueFullPolicy, SendError, Transport,
};
use parking_lot::{Mutex, RwLock};
use rsl_core::{Message, NodeId};
use std::collections::{HashMap, VecDeque};
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::{self, JoinHandle};
use tokio::sync::mpsc;

/// Why an [`RdmaTransport`] could not start.
#[derive(Debug, thiserror::Error)]
pub enum RdmaError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] RdmaConfigError),
    /// No device was given to the builder.
    #[error("no RDMA device given: call RdmaBuilder::device (an EmulatedDevice, or a verbs device with the rdma-verbs feature)")]
    NoDevice,
    /// The handshake listener could not be bound or set up.
    #[error("cannot listen for RDMA handshakes on {address}: {source}")]
    Listen {
        /// The address.
        address: String,
        /// The error.
        source: std::io::Error,
    },
    /// The poller thread could not start.
    #[error("cannot start the RDMA poller thread: {0}")]
    Spawn(std::io::Error),
    /// The device refused to create the endpoint's completion channel.
    #[error("cannot create the RDMA completion channel: {0}")]
    Device(#[from] VerbsError),
}

/// Builds an [`RdmaTransport`].
#[derive(Debug)]
pub struct RdmaBuilder {
    node: NodeId,
    config: RdmaConfig,
    device: Option<Arc<dyn Device>>,
}

impl RdmaBuilder {
    /// Uses `config`.
    pub fn config(mut self, config: RdmaConfig) -> RdmaBuilder {
        self.config = config;
        self
    }

    /// Uses `device` (an emulated device, or a verbs device).
    pub fn device(mut self, device: Arc<dyn Device>) -> RdmaBuilder {
        self.device = Some(device);
        self
    }

    /// Listens for handshakes on `address` and starts the poller.
    pub fn bind(self, address: SocketAddr) -> Result<(RdmaTransport, mpsc::Receiver<Inbound>), RdmaError> {
        let listener = TcpListener::bind(address)
            .map_err(|source| RdmaError::Listen { address: address.to_string(), source })?;
        self.serve(listener)
    }

    /// Serves handshakes on `listener` and starts the poller.
    pub fn serve(self, listener: TcpListener) -> Result<(RdmaTransport, mpsc::Receiver<Inbound>), RdmaError> {
        self.config.validate()?;
        let device = self.device.ok_or(RdmaError::NoDevice)?;
        let listen_error = |source| RdmaError::Listen { address: format!("{listener:?}"), source };
        let local_addr = listener.local_addr().map_err(listen_error)?;
        listener
            .set_nonblocking(true)
            .map_err(|source| RdmaError::Listen { address: local_addr.to_string(), source })?;
        let channel = device.create_channel()?;
        let (sender, receiver) = mpsc::channel(self.config.inbound_queue_messages_max as usize);
        let gate = Gate {
            local: self.node,
            membership: Arc::new(Membership::new()),
            stats: Arc::new(TransportStats::default()),
            inbound: sender,
        };
        let shared = Arc::new(Shared {
            gate: Arc::new(gate),
            config: self.config,
            device,
            channel,
            stats: RdmaStats::default(),
            peers: RwLock::new(HashMap::new()),
            closed: AtomicBool::new(false),
            generations: AtomicU64::new(0),
            checkpoints: RwLock::new(None),
            #[cfg(test)]
            hold_next_accepted: Mutex::new(None),
        });
        let poller = Poller::new(Arc::clone(&shared), listener);
        let handle = thread::Builder::new()
            .name(format!("rsl-rdma-{}", self.node.0))
            .spawn(move || poller.run())
            .map_err(RdmaError::Spawn)?;
        let transport = RdmaTransport { shared, poller: Mutex::new(Some(handle)), local_addr };
        Ok((transport, receiver))
    }
}

/// Messages waiting for one peer.
#[derive(Debug, Default)]
struct Outgoing {
    messages: VecDeque<(Message, u64)>,
    bytes: u64,
}

/// A peer as `send` and the poller see it.
#[derive(Debug)]
pub(crate) struct Peer {
    address: PeerAddress,
    /// Its handshake address.
    pub(crate) socket: SocketAddr,
    /// Bumped when the address changes: connections of an older generation are dropped.
    pub(crate) generation: u64,
    queue: Mutex<Outgoing>,
}

impl Peer {
    /// Takes up to `count` queued messages of at most `bytes_max` archived bytes together
    /// (at least one, whatever its size).
    pub(crate) fn take(&self, count: usize, bytes_max: u64) -> Vec<Message> {
        let mut queue = self.queue.lock();
        let mut taken = Vec::new();
        let mut bytes = 0;
        while taken.len() < count {
            let Some((_, size)) = queue.messages.front() else { break };
            if !taken.is_empty() && bytes + size > bytes_max {
                break;
            }
            bytes += size;
            let Some((message, size)) = queue.messages.pop_front() else { break };
            queue.bytes -= size;
            taken.push(message);
        }
        taken
    }

    /// Puts `messages` (taken, then not written) back at the front of the queue, in order.
    pub(crate) fn requeue(&self, messages: Vec<Message>) {
        let mut queue = self.queue.lock();
        for message in messages.into_iter().rev() {
            let size = archived_len(&message);
            queue.bytes += size;
            queue.messages.push_front((message, size));
        }
    }
}

/// What the transport, its poller and its handshake threads share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) gate: Arc<Gate>,
    pub(crate) config: RdmaConfig,
    pub(crate) device: Arc<dyn Device>,
    /// What the poller sleeps on: inbound completion queues notify it, `wake` too.
    pub(crate) channel: Arc<dyn CompletionChannel>,
    pub(crate) stats: RdmaStats,
    pub(crate) peers: RwLock<HashMap<NodeId, Arc<Peer>>>,
    pub(crate) closed: AtomicBool,
    generations: AtomicU64,
    /// Serves checkpoints once a runtime attached a source.
    checkpoints: RwLock<Option<Arc<CheckpointService>>>,
    /// Tests: the handshake thread of the next accepted connection waits on this before it
    /// hands the connection to the poller, like a thread descheduled at the worst moment.
    #[cfg(test)]
    pub(crate) hold_next_accepted: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

impl Shared {
    /// Wakes the poller.
    pub(crate) fn wake(&self) {
        self.channel.wake();
    }

    /// Answers a checkpoint request that arrived on the handshake listener.
    pub(crate) fn serve_checkpoint(&self, mut socket: std::net::TcpStream, ask: CheckpointAsk) {
        let service = self.checkpoints.read().clone();
        match service {
            Some(service) => service.serve(socket, ask),
            None => {
                let reason = format!("{} serves no checkpoints", self.gate.local);
                let _ =
                    handshake::write_checkpoint_answer(&mut socket, &CheckpointAnswer::Unavailable(reason));
            }
        }
    }
}

/// The RDMA transport endpoint of one node (see the module documentation and
/// docs/RDMA.md). Dropping it stops the poller and closes every connection.
#[derive(Debug)]
pub struct RdmaTransport {
    shared: Arc<Shared>,
    poller: Mutex<Option<JoinHandle<()>>>,
    local_addr: SocketAddr,
}

impl RdmaTransport {
    /// A builder for `node`'s endpoint.
    pub fn builder(node: NodeId) -> RdmaBuilder {
        RdmaBuilder { node, config: RdmaConfig::default(), device: None }
    }

    /// Where this endpoint listens for handshakes (what peers register as its address).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The ring protocol's counters.
    pub fn rdma_stats(&self) -> &RdmaStats {
        &self.shared.stats
    }

    /// The device this endpoint uses.
    pub fn device(&self) -> &Arc<dyn Device> {
        &self.shared.device
    }

    /// Stops the poller and closes every connection; later sends fail with
    /// [`SendError::Closed`].
    pub fn shutdown(&self) {
        self.shared.closed.store(true, Ordering::Release);
        *self.shared.checkpoints.write() = None;
        self.shared.wake();
        if let Some(handle) = self.poller.lock().take() {
            let _ = handle.join();
        }
    }

    fn check(&self, to: NodeId, messages: &[Message]) -> Result<Vec<u64>, SendError> {
        let max = self.shared.config.message_bytes_max();
        check_outbound(self.shared.gate.local, to, max, messages, archived_len)
    }
}

#[cfg(test)]
impl RdmaTransport {
    /// Holds the next accepted connection back from the poller until the returned sender
    /// sends (or is dropped).
    pub(crate) fn hold_next_accepted(&self) -> std::sync::mpsc::Sender<()> {
        let (release, hold) = std::sync::mpsc::channel();
        *self.shared.hold_next_accepted.lock() = Some(hold);
        release
    }
}

impl Drop for RdmaTransport {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Transport for RdmaTransport {
    fn local_node(&self) -> NodeId {
        self.shared.gate.local
    }

    fn send(&self, to: NodeId, messages: Vec<Message>) -> Result<(), SendError> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(SendError::Closed);
        }
        if messages.is_empty() {
            return Ok(());
        }
        let sizes = self.check(to, &messages)?;
        let Some(peer) = self.shared.peers.read().get(&to).cloned() else {
            return Err(SendError::UnknownPeer { to });
        };
        let config = &self.shared.config;
        let (messages_max, bytes_max) =
            (u64::from(config.peer_queue_messages_max), config.peer_queue_bytes_max);
        let added: u64 = sizes.iter().sum();
        let mut queue = peer.queue.lock();
        let queued = queue.messages.len() as u64;
        let over = queued + messages.len() as u64 > messages_max || queue.bytes + added > bytes_max;
        if over && config.queue_full == QueueFullPolicy::Reject {
            return Err(SendError::QueueFull { to, queued, capacity: messages_max });
        }
        queue.bytes += added;
        queue.messages.extend(messages.into_iter().zip(sizes));
        let mut dropped = 0;
        while queue.messages.len() as u64 > messages_max || queue.bytes > bytes_max {
            let Some((_, bytes)) = queue.messages.pop_front() else { break };
            queue.bytes -= bytes;
            dropped += 1;
        }
        drop(queue);
        TransportStats::add(&self.shared.gate.stats.dropped_queue_full, dropped);
        self.shared.wake();
        Ok(())
    }

    fn set_peer_address(&self, node: NodeId, address: PeerAddress) -> Result<(), AddressError> {
        let invalid = |problem: String| AddressError::Invalid { node, address: address.0.clone(), problem };
        let socket = address
            .as_str()
            .to_socket_addrs()
            .map_err(|error| invalid(format!("expected host:port ({error})")))?
            .next()
            .ok_or_else(|| invalid("the name resolves to no address".to_owned()))?;
        let generation = self.shared.generations.fetch_add(1, Ordering::Relaxed);
        let peer = Arc::new(Peer { address, socket, generation, queue: Mutex::new(Outgoing::default()) });
        self.shared.peers.write().insert(node, peer);
        self.shared.wake();
        Ok(())
    }

    fn peer_address(&self, node: NodeId) -> Option<PeerAddress> {
        self.shared.peers.read().get(&node).map(|peer| peer.address.clone())
    }

    fn remove_peer(&self, node: NodeId) {
        self.shared.peers.write().remove(&node);
        self.shared.wake();
    }

    fn membership(&self) -> &Membership {
        &self.shared.gate.membership
    }

    fn stats(&self) -> &TransportStats {
        &self.shared.gate.stats
    }

    /// Serves `source`'s checkpoints over the handshake listener and returns a fetcher
    /// that reaches peers at their handshake addresses (see docs/RDMA.md, "Checkpoint
    /// transfer"). Transfers run on the tokio runtime this is called in; outside one it
    /// serves nothing and returns `None`.
    fn serve_checkpoints(&self, source: Arc<dyn CheckpointSource>) -> Option<Arc<dyn CheckpointFetcher>> {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                local = %self.shared.gate.local,
                "RDMA checkpoint transfer needs a tokio runtime: serve_checkpoints was called outside one"
            );
            return None;
        };
        let limits = self.shared.config.transfer_limits();
        let service = CheckpointService { gate: Arc::clone(&self.shared.gate), source, runtime, limits };
        *self.shared.checkpoints.write() = Some(Arc::new(service));
        let shared: Weak<Shared> = Arc::downgrade(&self.shared);
        let addresses = Arc::new(move |node: NodeId| {
            shared.upgrade().and_then(|shared| shared.peers.read().get(&node).map(|peer| peer.socket))
        });
        Some(Arc::new(RdmaCheckpointFetcher { local: self.shared.gate.local, addresses, limits }))
    }
}
