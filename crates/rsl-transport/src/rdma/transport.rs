//! [`RdmaTransport`]: the [`Transport`] over the ring protocol, and its poller.
//!
//! `send` checks the messages and queues them on the peer's bounded queue, then wakes the
//! poller. One poller thread per endpoint does everything else in a loop: it takes
//! completions and credits, writes queued messages as frames into each peer's ring (several
//! frames per doorbell), reads complete frames from every ring it owns, delivers them
//! through the membership gate and writes credits back. When a turn finds no work it spins,
//! then yields, then parks for a time that doubles up to `idle_sleep_max_us`: one-sided
//! writes raise no event, so an idle receiver notices a frame within that time, and a busy
//! one at once. A `send` unparks it.
//!
//! Connections are set up by short-lived threads (the TCP handshake blocks) and handed to
//! the poller; a failed or ended connection is torn down (counted), and the sender dials
//! again with jittered exponential backoff while the peer keeps an address.

use crate::gate::Gate;
use crate::membership::Membership;
use crate::rdma::archive::archived_len;
use crate::rdma::config::{RdmaConfig, RdmaConfigError};
use crate::rdma::connection::{Inbound as InboundLink, LinkError, Outbound};
use crate::rdma::stats::RdmaStats;
use crate::rdma::verbs::Device;
use crate::stats::TransportStats;
use crate::transport::{
    check_outbound, AddressError, Inbound, PeerAddress, QueueFullPolicy, SendError, Transport,
};
use parking_lot::{Mutex, RwLock};
use rsl_core::{Message, NodeId, SplitMix64};
use std::collections::{HashMap, VecDeque};
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, OnceLock};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};
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
            stats: RdmaStats::default(),
            peers: RwLock::new(HashMap::new()),
            closed: AtomicBool::new(false),
            generations: AtomicU64::new(0),
            poller: OnceLock::new(),
        });
        let poller = Poller::new(Arc::clone(&shared), listener);
        let handle = thread::Builder::new()
            .name(format!("rsl-rdma-{}", self.node.0))
            .spawn(move || poller.run())
            .map_err(RdmaError::Spawn)?;
        let _ = shared.poller.set(handle.thread().clone());
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

#[derive(Debug)]
struct Peer {
    address: PeerAddress,
    socket: SocketAddr,
    generation: u64,
    queue: Mutex<Outgoing>,
}

#[derive(Debug)]
struct Shared {
    gate: Arc<Gate>,
    config: RdmaConfig,
    device: Arc<dyn Device>,
    stats: RdmaStats,
    peers: RwLock<HashMap<NodeId, Arc<Peer>>>,
    closed: AtomicBool,
    generations: AtomicU64,
    poller: OnceLock<Thread>,
}

impl Shared {
    fn wake(&self) {
        if let Some(poller) = self.poller.get() {
            poller.unpark();
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
}

// ---------------------------------------------------------------------------------------
// The poller.

/// Spin, then yield, then sleep with a doubling timeout, until there is work again.
#[derive(Debug)]
struct IdleBackoff {
    turns: u32,
    sleep: Duration,
    spin: u32,
    yields: u32,
    initial: Duration,
    max: Duration,
}

impl IdleBackoff {
    fn new(config: &RdmaConfig) -> IdleBackoff {
        let initial = Duration::from_micros(config.idle_sleep_initial_us);
        IdleBackoff {
            turns: 0,
            sleep: initial,
            spin: config.idle_spin_turns,
            yields: config.idle_yield_turns,
            initial,
            max: Duration::from_micros(config.idle_sleep_max_us),
        }
    }

    fn busy(&mut self) {
        self.turns = 0;
        self.sleep = self.initial;
    }

    /// Waits after a turn without work; true when it slept.
    fn idle(&mut self) -> bool {
        self.turns = self.turns.saturating_add(1);
        if self.turns <= self.spin {
            std::hint::spin_loop();
            false
        } else if self.turns <= self.spin + self.yields {
            thread::yield_now();
            false
        } else {
            thread::park_timeout(self.sleep);
            self.sleep = (self.sleep * 2).min(self.max);
            true
        }
    }
}

/// A sending direction's state.
#[derive(Debug)]
enum Link {
    Connected { connection: Box<Outbound>, generation: u64 },
    Dialing { generation: u64 },
    Waiting { until: Instant, attempt: u32, generation: u64 },
}

#[derive(Debug)]
enum Event {
    Dialed { peer: NodeId, generation: u64, result: Result<Box<Outbound>, LinkError> },
    Accepted(Result<Box<InboundLink>, LinkError>),
}

/// How often the poller accepts handshakes, checks liveness and starts dials.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_millis(2);

struct Poller {
    shared: Arc<Shared>,
    listener: TcpListener,
    events: (std_mpsc::Sender<Event>, std_mpsc::Receiver<Event>),
    outbound: HashMap<NodeId, Link>,
    inbound: HashMap<NodeId, Box<InboundLink>>,
    ever_connected: std::collections::HashSet<NodeId>,
    rng: SplitMix64,
    backoff: IdleBackoff,
    next_housekeeping: Instant,
}

impl Poller {
    fn new(shared: Arc<Shared>, listener: TcpListener) -> Poller {
        let rng = SplitMix64::new(shared.config.seed ^ rsl_core::mix64(shared.gate.local.0));
        let backoff = IdleBackoff::new(&shared.config);
        Poller {
            shared,
            listener,
            events: std_mpsc::channel(),
            outbound: HashMap::new(),
            inbound: HashMap::new(),
            ever_connected: std::collections::HashSet::new(),
            rng,
            backoff,
            next_housekeeping: Instant::now(),
        }
    }

    fn run(mut self) {
        while !self.shared.closed.load(Ordering::Acquire) {
            let mut work = self.take_events();
            work |= self.pump_outbound();
            work |= self.receive_inbound();
            let now = Instant::now();
            if now >= self.next_housekeeping {
                work |= self.housekeeping(now);
                self.next_housekeeping = now + HOUSEKEEPING_INTERVAL;
            }
            if work {
                self.backoff.busy();
            } else if self.backoff.idle() {
                RdmaStats::bump(&self.shared.stats.idle_sleeps);
            }
        }
    }

    fn local(&self) -> NodeId {
        self.shared.gate.local
    }

    fn take_events(&mut self) -> bool {
        let mut work = false;
        while let Ok(event) = self.events.1.try_recv() {
            work = true;
            match event {
                Event::Dialed { peer, generation, result } => self.on_dialed(peer, generation, result),
                Event::Accepted(Ok(link)) => {
                    if let Some(old) = self.inbound.insert(link.peer, link) {
                        self.count_inbound_end(&old, "replaced by a new connection from the same peer", true);
                    }
                }
                Event::Accepted(Err(error)) => {
                    TransportStats::bump(&self.shared.gate.stats.connect_failures);
                    tracing::warn!(local = %self.local(), %error, "refused an RDMA connection");
                }
            }
        }
        work
    }

    fn on_dialed(&mut self, peer: NodeId, generation: u64, result: Result<Box<Outbound>, LinkError>) {
        let current = self.shared.peers.read().get(&peer).map(|entry| entry.generation);
        let expected =
            matches!(self.outbound.get(&peer), Some(Link::Dialing { generation: g }) if *g == generation);
        if current != Some(generation) || !expected {
            return; // The peer was removed or readdressed meanwhile; the connection drops.
        }
        match result {
            Ok(connection) => {
                let stats = &self.shared.gate.stats;
                if !self.ever_connected.insert(peer) {
                    TransportStats::bump(&stats.reconnects);
                }
                tracing::debug!(local = %self.local(), %peer, "RDMA connection established");
                self.outbound.insert(peer, Link::Connected { connection, generation });
            }
            Err(error) => {
                TransportStats::bump(&self.shared.gate.stats.connect_failures);
                tracing::debug!(local = %self.local(), %peer, %error, "RDMA connection attempt failed");
                self.wait(peer, generation, 1);
            }
        }
    }

    /// Schedules the next dial of `peer` after `attempt` failures.
    fn wait(&mut self, peer: NodeId, generation: u64, attempt: u32) {
        let config = &self.shared.config;
        let delay = config
            .backoff_initial_ms
            .saturating_mul(1 << attempt.min(16).saturating_sub(1))
            .min(config.backoff_max_ms);
        let jittered = self.rng.between(delay / 2, delay);
        let until = Instant::now() + Duration::from_millis(jittered);
        self.outbound.insert(peer, Link::Waiting { until, attempt, generation });
    }

    fn pump_outbound(&mut self) -> bool {
        let mut work = false;
        let mut failed = Vec::new();
        // Held for the turn: `send` reads it too; only address changes wait.
        let shared = Arc::clone(&self.shared);
        let peers = shared.peers.read();
        for (peer, link) in &mut self.outbound {
            let Link::Connected { connection, generation } = link else { continue };
            let Some(entry) = peers.get(peer).filter(|entry| entry.generation == *generation) else {
                failed.push((*peer, *generation, LinkError::PeerGone, false));
                continue;
            };
            let take = |count: usize, bytes_max: u64| {
                let mut queue = entry.queue.lock();
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
            };
            match connection.pump(take, &self.shared.stats, &self.shared.gate.stats) {
                Ok(pumped) => {
                    work |= pumped.work;
                    if !pumped.requeue.is_empty() {
                        let mut queue = entry.queue.lock();
                        for message in pumped.requeue.into_iter().rev() {
                            let size = archived_len(&message);
                            queue.bytes += size;
                            queue.messages.push_front((message, size));
                        }
                    }
                }
                Err(error) => failed.push((*peer, *generation, error, true)),
            }
        }
        drop(peers);
        for (peer, generation, error, redial) in failed {
            work = true;
            if let Some(Link::Connected { connection, .. }) = self.outbound.remove(&peer) {
                let lost = connection.unacknowledged();
                RdmaStats::bump(&self.shared.stats.connections_reset);
                RdmaStats::add(&self.shared.stats.messages_unacknowledged_lost, lost);
                tracing::warn!(local = %self.local(), %peer, %error, lost, "RDMA connection to the peer ended");
            }
            if redial {
                self.wait(peer, generation, 1);
            }
        }
        work
    }

    fn receive_inbound(&mut self) -> bool {
        let mut work = false;
        let mut failed = Vec::new();
        for (peer, link) in &mut self.inbound {
            match link.receive(&self.shared.gate, &self.shared.stats) {
                Ok(did) => work |= did,
                Err(error) => failed.push((*peer, error)),
            }
        }
        for (peer, error) in failed {
            work = true;
            if let Some(link) = self.inbound.remove(&peer) {
                // A refused frame was counted as what it is; otherwise a frame begun and
                // never finished is a torn one.
                let refused = matches!(error, LinkError::Frame(_) | LinkError::Invalid { .. });
                self.count_inbound_end(&link, &error.to_string(), !refused);
            }
        }
        work
    }

    fn count_inbound_end(&self, link: &InboundLink, why: &str, count_partial: bool) {
        RdmaStats::bump(&self.shared.stats.connections_reset);
        if count_partial && link.partial_frame() {
            RdmaStats::bump(&self.shared.stats.frames_torn);
        }
        tracing::warn!(local = %self.local(), peer = %link.peer, why, "RDMA connection from the peer ended");
    }

    /// Accepts handshakes, drops connections whose peer is gone, starts due dials.
    fn housekeeping(&mut self, now: Instant) -> bool {
        let mut work = false;
        while let Ok((socket, _)) = self.listener.accept() {
            work = true;
            self.spawn_accept(socket);
        }
        let gone: Vec<NodeId> =
            self.inbound.iter().filter(|(_, link)| link.peer_gone()).map(|(peer, _)| *peer).collect();
        for peer in gone {
            if let Some(link) = self.inbound.remove(&peer) {
                self.count_inbound_end(&link, "the peer closed the handshake socket", true);
            }
        }
        let peers = self.shared.peers.read().clone();
        let mut redial = Vec::new();
        self.outbound.retain(|peer, link| {
            let generation = match link {
                Link::Connected { generation, .. }
                | Link::Dialing { generation }
                | Link::Waiting { generation, .. } => *generation,
            };
            peers.get(peer).is_some_and(|entry| entry.generation == generation)
        });
        for (peer, link) in &self.outbound {
            if let Link::Connected { connection, generation } = link {
                if connection.peer_gone() {
                    redial.push((*peer, *generation));
                }
            }
        }
        for (peer, generation) in redial {
            work = true;
            if let Some(Link::Connected { connection, .. }) = self.outbound.remove(&peer) {
                RdmaStats::bump(&self.shared.stats.connections_reset);
                RdmaStats::add(&self.shared.stats.messages_unacknowledged_lost, connection.unacknowledged());
                tracing::warn!(local = %self.local(), %peer, "RDMA peer closed its handshake socket");
            }
            self.wait(peer, generation, 1);
        }
        for (peer, entry) in &peers {
            let due = match self.outbound.get(peer) {
                None => Some(0),
                Some(Link::Waiting { until, attempt, .. }) if *until <= now => Some(*attempt),
                Some(_) => None,
            };
            if let Some(attempt) = due {
                work = true;
                self.spawn_dial(*peer, entry, attempt);
            }
        }
        work
    }

    /// Runs `handshake` on a thread of its own and hands its outcome to the poller.
    fn spawn_handshake(
        &self,
        name: &str,
        handshake: impl FnOnce(&Shared) -> Event + Send + 'static,
    ) -> std::io::Result<()> {
        let (shared, events) = (Arc::clone(&self.shared), self.events.0.clone());
        thread::Builder::new().name(name.to_owned()).spawn(move || {
            let _ = events.send(handshake(&shared));
            shared.wake();
        })?;
        Ok(())
    }

    fn spawn_accept(&mut self, socket: std::net::TcpStream) {
        let key = self.rng.next_u64();
        let spawned = self.spawn_handshake("rsl-rdma-accept", move |shared| {
            let _ = socket.set_nonblocking(false);
            let (device, local, link) = (shared.device.as_ref(), shared.gate.local, shared.config.link());
            Event::Accepted(InboundLink::accept(device, local, socket, key, link).map(Box::new))
        });
        if let Err(error) = spawned {
            tracing::error!(%error, "cannot start an RDMA handshake thread");
        }
    }

    fn spawn_dial(&mut self, peer: NodeId, entry: &Peer, attempt: u32) {
        let (generation, address) = (entry.generation, entry.socket);
        self.outbound.insert(peer, Link::Dialing { generation });
        let spawned = self.spawn_handshake("rsl-rdma-dial", move |shared| {
            let (device, local, link) = (shared.device.as_ref(), shared.gate.local, shared.config.link());
            let result = Outbound::dial(device, local, peer, address, link).map(Box::new);
            Event::Dialed { peer, generation, result }
        });
        if let Err(error) = spawned {
            tracing::error!(%error, "cannot start an RDMA dial thread");
            self.wait(peer, generation, attempt + 1);
        }
    }
}
