//! The tonic gRPC transport; the design is documented on [`GrpcTransport`].

mod checkpoint;
mod fetcher;
mod identity;
mod peer;
mod server;
#[cfg(feature = "tls")]
mod tls;

#[cfg(feature = "tls")]
pub use tls::{certificate_node, node_uri, CertificateIdentityError, TlsConfig, NODE_URI_PREFIX};

use crate::checkpoint::{CheckpointFetcher, CheckpointSource};
use crate::chunk::{ChunkHeader, CHUNK_OVERHEAD_BYTES};
use crate::codec::{message_to_proto, FRAME_OVERHEAD_BYTES, PROTOCOL_VERSION};
use crate::gate::Gate;
use crate::membership::Membership;
use crate::queue::{Chunked, PeerQueue, QueueLimits, Queued};
use crate::stats::TransportStats;
use crate::transport::{AddressError, Inbound, PeerAddress, QueueFullPolicy, SendError, Transport};
use parking_lot::{Mutex, RwLock};
use prost::Message as _;
use rsl_core::{Message, NodeId};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tonic::transport::Endpoint;

/// Default [`GrpcConfig::frame_bytes_max`]: 4 MiB, tonic's default message limit.
pub const FRAME_BYTES_MAX_DEFAULT: u32 = 4 << 20;

/// Smallest accepted [`GrpcConfig::frame_bytes_max`].
pub const FRAME_BYTES_MIN: u32 = 1024;

/// Largest accepted [`GrpcConfig::frame_bytes_max`]: 1 GiB.
pub const FRAME_BYTES_MAX: u32 = 1 << 30;

/// Default [`GrpcConfig::chunk_bytes`]: 1 MiB.
pub const CHUNK_BYTES_DEFAULT: u32 = 1 << 20;

/// Default [`GrpcConfig::chunked_message_bytes_max`]: 512 MiB, room for a promise or fetch
/// reply carrying values of up to `rsl_core::REQUEST_BYTES_MAX` bytes.
pub const CHUNKED_MESSAGE_BYTES_MAX_DEFAULT: u64 = 512 << 20;

/// Largest accepted [`GrpcConfig::chunked_message_bytes_max`]: 4 GiB.
pub const CHUNKED_MESSAGE_BYTES_MAX: u64 = 4 << 30;

const _: () = assert!(FRAME_BYTES_MIN as u64 > 4 * FRAME_OVERHEAD_BYTES);
const _: () = assert!(CHUNKED_MESSAGE_BYTES_MAX_DEFAULT >= 2 * rsl_core::REQUEST_BYTES_MAX);
const _: () = assert!(
    CHUNK_BYTES_DEFAULT as u64 + crate::chunk::CHUNK_OVERHEAD_BYTES <= FRAME_BYTES_MAX_DEFAULT as u64 / 2
);
const _: () = assert!(FRAME_BYTES_MIN as u64 / 2 >= CHUNK_OVERHEAD_BYTES + 256);
const _: () =
    assert!(FRAME_BYTES_MIN <= FRAME_BYTES_MAX_DEFAULT && FRAME_BYTES_MAX_DEFAULT <= FRAME_BYTES_MAX);

/// Settings of a gRPC endpoint. Every queue, frame and window has a named maximum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrpcConfig {
    /// Largest encoded frame (one `Batch`) sent or accepted; tonic's
    /// `max_encoding_message_size` and `max_decoding_message_size`. A message of up to
    /// `frame_bytes_max - FRAME_OVERHEAD_BYTES` bytes travels whole; a larger one in chunks
    /// (see [`crate::chunk`]), up to `chunked_message_bytes_max`.
    pub frame_bytes_max: u32,
    /// Data bytes per chunk of a message too large for a frame, at least 256. Capped so a
    /// chunk with its framing takes at most half a frame: every frame has room for whole
    /// messages beside one chunk.
    pub chunk_bytes: u32,
    /// Largest encoded message sent or accepted in chunks; a larger one is refused with
    /// [`SendError::TooLarge`] on send, and its first chunk is refused (and counted in
    /// [`TransportStats::rejected_chunks`]) on receipt. Also what one inbound stream may
    /// buffer while reassembling.
    pub chunked_message_bytes_max: u64,
    /// Most bytes of chunked messages waiting in one peer's outbound queue (a lone message
    /// always fits); [`GrpcConfig::queue_full`] says what happens beyond.
    pub peer_queue_chunked_bytes_max: u64,
    /// Most messages in one frame.
    pub batch_messages_max: u32,
    /// Most messages waiting in one peer's outbound queue.
    pub peer_queue_messages_max: u32,
    /// Most encoded bytes waiting in one peer's outbound queue; at least `frame_bytes_max`.
    pub peer_queue_bytes_max: u64,
    /// What `send` does when a peer's queue is full.
    pub queue_full: QueueFullPolicy,
    /// Capacity of the inbound channel, in messages.
    pub inbound_queue_messages_max: u32,
    /// How long one connection attempt may take.
    pub connect_timeout_ms: u64,
    /// First reconnect delay; doubles per failed attempt up to `backoff_max_ms`.
    pub backoff_initial_ms: u64,
    /// Largest reconnect delay. Each delay is drawn from `[d/2, d]` for jitter.
    pub backoff_max_ms: u64,
    /// HTTP/2 keepalive ping interval (both directions), so a dead peer is noticed.
    pub keepalive_interval_ms: u64,
    /// How long a keepalive ping may go unanswered before the connection is closed.
    pub keepalive_timeout_ms: u64,
    /// HTTP/2 initial flow-control window of one stream, in bytes (the connection window
    /// is the same: one stream per connection).
    pub window_bytes: u32,
    /// Most concurrent calls a server accepts on one connection (a peer needs one).
    pub streams_per_connection_max: u32,
    /// Seeds the reconnect jitter (mixed with each peer's id).
    pub seed: u64,
    /// The newest protocol version this endpoint speaks, in
    /// [`PROTOCOL_VERSION_MIN`](crate::PROTOCOL_VERSION_MIN)`..=`[`PROTOCOL_VERSION`]
    /// (default: the newest). Frames it sends start in this version and speak down to a peer that refuses it; frames it
    /// receives in a newer version are refused (and counted in `rejected_version`). Set it
    /// to the old version during a rolling upgrade, until every replica runs the new build
    /// (docs/PROTOCOL.md, "Versions").
    pub protocol_version: u32,
}

impl Default for GrpcConfig {
    fn default() -> GrpcConfig {
        GrpcConfig {
            frame_bytes_max: FRAME_BYTES_MAX_DEFAULT,
            chunk_bytes: CHUNK_BYTES_DEFAULT,
            chunked_message_bytes_max: CHUNKED_MESSAGE_BYTES_MAX_DEFAULT,
            peer_queue_chunked_bytes_max: 256 << 20,
            batch_messages_max: 1024,
            peer_queue_messages_max: 16 * 1024,
            peer_queue_bytes_max: 64 << 20,
            queue_full: QueueFullPolicy::DropOldest,
            inbound_queue_messages_max: 16 * 1024,
            connect_timeout_ms: 1_000,
            backoff_initial_ms: 20,
            backoff_max_ms: 2_000,
            keepalive_interval_ms: 1_000,
            keepalive_timeout_ms: 5_000,
            window_bytes: 4 << 20,
            streams_per_connection_max: 16,
            seed: 0,
            protocol_version: PROTOCOL_VERSION,
        }
    }
}

/// A [`GrpcConfig`] value out of range.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid gRPC transport configuration: {field}: {problem}")]
pub struct ConfigError {
    /// The field.
    pub field: &'static str,
    /// What was expected and what was found.
    pub problem: String,
}

impl GrpcConfig {
    /// The largest encoded message that travels whole, in one frame.
    pub fn frame_message_bytes_max(&self) -> u64 {
        u64::from(self.frame_bytes_max) - FRAME_OVERHEAD_BYTES
    }

    /// The largest encoded message `send` accepts (in chunks beyond a frame).
    pub fn message_bytes_max(&self) -> u64 {
        self.chunked_message_bytes_max.max(self.frame_message_bytes_max())
    }

    /// Data bytes per chunk: `chunk_bytes`, capped at half a frame less a chunk's framing.
    pub fn effective_chunk_bytes(&self) -> u64 {
        let half_frame = u64::from(self.frame_bytes_max) / 2;
        u64::from(self.chunk_bytes).min(half_frame - CHUNK_OVERHEAD_BYTES)
    }

    /// Checks every field against its range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn check(ok: bool, field: &'static str, problem: impl FnOnce() -> String) -> Result<(), ConfigError> {
            if ok {
                Ok(())
            } else {
                Err(ConfigError { field, problem: problem() })
            }
        }
        let frame = self.frame_bytes_max;
        check((FRAME_BYTES_MIN..=FRAME_BYTES_MAX).contains(&frame), "frame_bytes_max", || {
            format!("{frame} not in {FRAME_BYTES_MIN}..={FRAME_BYTES_MAX}")
        })?;
        check(self.chunk_bytes >= 256, "chunk_bytes", || format!("{} is below 256", self.chunk_bytes))?;
        let chunked = self.chunked_message_bytes_max;
        check(chunked <= CHUNKED_MESSAGE_BYTES_MAX, "chunked_message_bytes_max", || {
            format!("{chunked} exceeds {CHUNKED_MESSAGE_BYTES_MAX}")
        })?;
        check(self.peer_queue_chunked_bytes_max > 0, "peer_queue_chunked_bytes_max", || {
            "must be at least 1".to_owned()
        })?;
        check(self.batch_messages_max > 0, "batch_messages_max", || "must be at least 1".to_owned())?;
        check(self.peer_queue_messages_max >= self.batch_messages_max, "peer_queue_messages_max", || {
            format!(
                "{} is below batch_messages_max {}",
                self.peer_queue_messages_max, self.batch_messages_max
            )
        })?;
        check(self.peer_queue_bytes_max >= u64::from(frame), "peer_queue_bytes_max", || {
            format!("{} is below frame_bytes_max {frame}", self.peer_queue_bytes_max)
        })?;
        check(self.inbound_queue_messages_max > 0, "inbound_queue_messages_max", || {
            "must be at least 1".to_owned()
        })?;
        check(self.connect_timeout_ms > 0, "connect_timeout_ms", || "must be at least 1".to_owned())?;
        check(self.backoff_initial_ms > 0, "backoff_initial_ms", || "must be at least 1".to_owned())?;
        check(self.backoff_max_ms >= self.backoff_initial_ms, "backoff_max_ms", || {
            format!("{} is below backoff_initial_ms {}", self.backoff_max_ms, self.backoff_initial_ms)
        })?;
        check(self.keepalive_interval_ms > 0, "keepalive_interval_ms", || "must be at least 1".to_owned())?;
        check(self.keepalive_timeout_ms > 0, "keepalive_timeout_ms", || "must be at least 1".to_owned())?;
        let window = self.window_bytes;
        check((65_535..=i32::MAX as u32).contains(&window), "window_bytes", || {
            format!("{window} not in 65535..={} (HTTP/2 limits)", i32::MAX)
        })?;
        check(self.streams_per_connection_max > 0, "streams_per_connection_max", || {
            "must be at least 1".to_owned()
        })?;
        crate::version::check_speaks(self.protocol_version)
            .map_err(|problem| ConfigError { field: "protocol_version", problem })
    }

    fn queue_limits(&self) -> QueueLimits {
        QueueLimits {
            messages_max: u64::from(self.peer_queue_messages_max),
            bytes_max: self.peer_queue_bytes_max,
            batch_messages_max: u64::from(self.batch_messages_max),
            frame_bytes_max: u64::from(self.frame_bytes_max),
            policy: self.queue_full,
            chunked_bytes_max: self.peer_queue_chunked_bytes_max,
            chunk_bytes: self.effective_chunk_bytes(),
        }
    }
}

/// Why an endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The configuration is out of range.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The listening socket could not be bound or inspected.
    #[error("cannot listen on {address}: {source}")]
    Io {
        /// The address asked for.
        address: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The TLS material was refused.
    #[error("TLS configuration refused: {problem}")]
    Tls {
        /// What tonic or rustls said.
        problem: String,
    },
}

/// Builds a [`GrpcTransport`]: `GrpcTransport::builder(node).config(..).bind(addr).await`.
#[derive(Debug)]
pub struct GrpcBuilder {
    local: NodeId,
    config: GrpcConfig,
    membership: Option<Arc<Membership>>,
    #[cfg(feature = "tls")]
    tls: Option<TlsConfig>,
}

impl GrpcBuilder {
    /// Uses `config` instead of [`GrpcConfig::default`].
    pub fn config(mut self, config: GrpcConfig) -> GrpcBuilder {
        self.config = config;
        self
    }

    /// Enforces `membership` (shared with the caller) instead of a fresh, empty table.
    pub fn membership(mut self, membership: Arc<Membership>) -> GrpcBuilder {
        self.membership = Some(membership);
        self
    }

    /// Requires mutual TLS on the server and presents `tls`'s certificate to peers.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: TlsConfig) -> GrpcBuilder {
        self.tls = Some(tls);
        self
    }

    /// Listens on `address` (port 0 picks a free port; see [`GrpcTransport::local_addr`]).
    /// Must be called inside a tokio runtime, which then runs the endpoint's tasks.
    pub async fn bind(
        self,
        address: SocketAddr,
    ) -> Result<(GrpcTransport, mpsc::Receiver<Inbound>), BindError> {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|source| BindError::Io { address: address.to_string(), source })?;
        self.serve(listener).await
    }

    /// Serves on an already bound `listener`.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
    ) -> Result<(GrpcTransport, mpsc::Receiver<Inbound>), BindError> {
        self.config.validate()?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| BindError::Io { address: "listener".to_owned(), source })?;
        let config = Arc::new(self.config);
        let membership = self.membership.unwrap_or_default();
        let stats = Arc::new(TransportStats::default());
        let (sender, receiver) = mpsc::channel(config.inbound_queue_messages_max as usize);
        let gate = Arc::new(Gate { local: self.local, membership, stats, inbound: sender });
        let (shutdown, shutdown_rx) = watch::channel(false);
        #[cfg(feature = "tls")]
        let server_tls = match &self.tls {
            Some(tls) => {
                tls.check_names(self.local)?;
                Some(tls.server())
            }
            None => None,
        };
        #[cfg(not(feature = "tls"))]
        let server_tls = None;
        let checkpoint_source = checkpoint::SharedSource::default();
        let server = server::spawn(
            Arc::clone(&gate),
            &config,
            listener,
            shutdown_rx,
            server_tls,
            Arc::clone(&checkpoint_source),
        )?;
        let transport = GrpcTransport {
            gate,
            config,
            local_addr,
            runtime: tokio::runtime::Handle::current(),
            peers: RwLock::new(HashMap::new()),
            endpoints: fetcher::Endpoints::default(),
            checkpoint_source,
            next_message_id: AtomicU64::new(1),
            closed: AtomicBool::new(false),
            shutdown,
            server: Mutex::new(Some(server)),
            #[cfg(feature = "tls")]
            tls: self.tls,
        };
        Ok((transport, receiver))
    }
}

/// One peer: its address, queue and connection task. Dropping it stops the task.
#[derive(Debug)]
struct PeerEntry {
    address: PeerAddress,
    queue: Arc<PeerQueue>,
    /// Whether the peer task holds a connection with a call open now.
    connected: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Drop for PeerEntry {
    fn drop(&mut self) {
        self.queue.close();
        self.task.abort();
    }
}

/// A node's gRPC endpoint: a server for inbound streams and one outbound stream per peer.
/// Dropping it stops its tasks; call [`GrpcTransport::shutdown`] to also wait for the
/// server to close.
///
/// # Shape on the wire
/// One client-streaming call per direction per pair of nodes: to talk to B, A opens
/// `Replication.Stream` on B's server and pushes `Batch` frames into it for as long as the
/// connection lives; B answers only when the call ends. B talks to A over its own call on
/// A's server. We chose this over one bidirectional call per pair because every replica
/// runs a server anyway, and with one owner per direction there is nothing to arbitrate
/// (which of two simultaneous dials wins, which side reconnects), each direction gets its
/// own TCP and HTTP/2 flow control (a slow receiver in one direction never stalls the
/// other), and reconnect logic lives in one place, the sender. The cost is a second TCP
/// connection per pair, which is nothing at ring sizes.
///
/// # Outbound
/// [`Transport::send`] converts messages to protobuf, checks each against the per-message
/// limit and pushes them on the peer's bounded queue without blocking; a message too large
/// for a frame is encoded once and waits in the queue's chunked lane, leaving one chunk
/// per frame beside the whole messages ([`crate::chunk`]). One task per peer
/// owns the connection: it connects when there is something to send, then serves the
/// call's request stream from the queue. Batches are built lazily, when HTTP/2 flow control
/// lets the stream take another frame, so a busy peer gets fuller frames (up to
/// [`GrpcConfig::batch_messages_max`] messages and [`GrpcConfig::frame_bytes_max`] bytes).
/// When the connection or call fails, the task waits an exponentially growing delay
/// (bounded, with jitter drawn from a generator seeded by [`GrpcConfig::seed`] and the peer
/// id) and reconnects. Frames in flight on a failed connection are lost.
///
/// # Inbound
/// Each frame names its sender and receiver. A frame for another node ends the call with
/// `FAILED_PRECONDITION`. Each message is then checked before its body is decoded: its
/// sender must be the frame's sender and an allowed member of its ring in the
/// [`Membership`] table; then it is decoded and validated
/// ([`crate::codec::message_from_proto`]) and sent to the inbound channel, waiting for
/// room, so a slow runtime pushes back through HTTP/2 flow control instead of dropping.
/// Chunks are checked the same way (sender, ring membership) before they are buffered, put
/// back together by one [`crate::chunk::Reassembler`] per stream, and the whole message is
/// decoded and validated before delivery; a bad chunk is dropped and counted.
///
/// # Checkpoint transfer
/// The same server also answers `CheckpointTransfer.Fetch` (see [`crate::checkpoint`]):
/// once a runtime calls [`Transport::serve_checkpoints`], peers fetch its rings'
/// checkpoints over this port, under the same TLS, identity and membership checks as
/// `Replication`, and the returned fetcher reaches peers at their registered addresses,
/// each transfer on a connection of its own.
///
/// # Trust
/// Without TLS a caller's node id (a frame's sender, a checkpoint request's requester) is
/// taken on faith: anyone who reaches the port can claim to be any member. With the `tls`
/// feature and a `TlsConfig`, both sides present certificates signed by the configured
/// CA, so only holders of a CA-signed key connect at all, and each certificate names its
/// node (`rsl://node/<id>`): a call whose certificate names no node is refused with
/// `UNAUTHENTICATED`, a frame or request that claims another node with
/// `PERMISSION_DENIED` (both counted, see [`TransportStats`]). [`GrpcBuilder::bind`]
/// refuses a certificate that does not name the local node.
#[derive(Debug)]
pub struct GrpcTransport {
    gate: Arc<Gate>,
    config: Arc<GrpcConfig>,
    local_addr: SocketAddr,
    runtime: tokio::runtime::Handle,
    peers: RwLock<HashMap<NodeId, PeerEntry>>,
    /// Every peer's endpoint, for checkpoint fetches (which open connections of their own).
    endpoints: fetcher::Endpoints,
    checkpoint_source: checkpoint::SharedSource,
    /// Numbers chunked messages (unique per endpoint, hence per link).
    next_message_id: AtomicU64,
    closed: AtomicBool,
    shutdown: watch::Sender<bool>,
    server: Mutex<Option<JoinHandle<()>>>,
    #[cfg(feature = "tls")]
    tls: Option<TlsConfig>,
}

impl GrpcTransport {
    /// Starts building the endpoint of `local`.
    pub fn builder(local: NodeId) -> GrpcBuilder {
        GrpcBuilder {
            local,
            config: GrpcConfig::default(),
            membership: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The configuration in force.
    pub fn config(&self) -> &GrpcConfig {
        &self.config
    }

    /// Stops everything: refuses further sends, ends inbound calls with `UNAVAILABLE`, closes
    /// outbound connections, and waits (up to `grace`) for the server to close its listener
    /// and connections; past that the server task is aborted.
    pub async fn shutdown(&self, grace: Duration) {
        self.closed.store(true, Ordering::SeqCst);
        self.shutdown.send_replace(true);
        self.peers.write().clear();
        self.endpoints.write().clear();
        let server = self.server.lock().take();
        if let Some(mut server) = server {
            if tokio::time::timeout(grace, &mut server).await.is_err() {
                tracing::warn!(local = %self.gate.local, "server did not close within the grace period; aborting it");
                server.abort();
            }
        }
    }

    fn endpoint_for(&self, node: NodeId, address: &PeerAddress) -> Result<Endpoint, AddressError> {
        let invalid = |problem: String| AddressError::Invalid { node, address: address.0.clone(), problem };
        #[cfg(feature = "tls")]
        let secure = self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        let secure = false;
        let wanted = if secure { "https" } else { "http" };
        let text = address.as_str();
        let uri = match text.split_once("://") {
            Some((scheme, _)) if scheme == wanted => text.to_owned(),
            Some((scheme, _)) => {
                return Err(invalid(format!(
                    "scheme {scheme:?} does not match this endpoint, which uses {wanted}"
                )))
            }
            None => format!("{wanted}://{text}"),
        };
        let endpoint = Endpoint::from_shared(uri).map_err(|error| invalid(error.to_string()))?;
        if endpoint.uri().host().is_none() || endpoint.uri().port_u16().is_none() {
            return Err(invalid("expected host:port".to_owned()));
        }
        let config = &self.config;
        let endpoint = endpoint
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_millis(config.keepalive_interval_ms))
            .keep_alive_timeout(Duration::from_millis(config.keepalive_timeout_ms))
            .keep_alive_while_idle(true)
            .initial_stream_window_size(config.window_bytes)
            .initial_connection_window_size(config.window_bytes);
        #[cfg(feature = "tls")]
        let endpoint = match &self.tls {
            Some(tls) => {
                endpoint.tls_config(tls.client()).map_err(|error| invalid(format!("TLS: {error}")))?
            }
            None => endpoint,
        };
        Ok(endpoint)
    }

    /// Converts `messages` for `to`'s queue: whole messages, and those too large for a
    /// frame encoded for chunking. Refuses the call if any message is refused.
    fn encode(&self, to: NodeId, messages: Vec<Message>) -> Result<(Vec<Queued>, Vec<Chunked>), SendError> {
        let local = self.gate.local;
        let whole_max = self.config.frame_message_bytes_max();
        let max = self.config.message_bytes_max();
        let mut whole = Vec::new();
        let mut chunked = Vec::new();
        for message in &messages {
            if message.from != local {
                return Err(SendError::WrongSender { local, message_from: message.from });
            }
            if message.to != to {
                return Err(SendError::WrongReceiver { to, message_to: message.to });
            }
            let proto = message_to_proto(message);
            let bytes = proto.encoded_len() as u64;
            if bytes > max {
                return Err(SendError::TooLarge { bytes, max });
            }
            if bytes <= whole_max {
                whole.push(Queued { message: proto, encoded_len: bytes });
            } else {
                let message_id = self.next_message_id.fetch_add(1, Ordering::Relaxed);
                let header = ChunkHeader { ring: message.ring, from: local, to, message_id };
                chunked.push(Chunked::new(header, &proto));
            }
        }
        Ok((whole, chunked))
    }
}

impl Transport for GrpcTransport {
    fn local_node(&self) -> NodeId {
        self.gate.local
    }

    fn send(&self, to: NodeId, messages: Vec<Message>) -> Result<(), SendError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(SendError::Closed);
        }
        if messages.is_empty() {
            return Ok(());
        }
        let queue = match self.peers.read().get(&to) {
            Some(peer) => Arc::clone(&peer.queue),
            None => return Err(SendError::UnknownPeer { to }),
        };
        let (whole, chunked) = self.encode(to, messages)?;
        queue.push(whole, chunked, &self.gate.stats)
    }

    fn set_peer_address(&self, node: NodeId, address: PeerAddress) -> Result<(), AddressError> {
        if self.peers.read().get(&node).is_some_and(|peer| peer.address == address) {
            return Ok(());
        }
        let endpoint = self.endpoint_for(node, &address)?;
        self.endpoints.write().insert(node, endpoint.clone());
        let queue = Arc::new(PeerQueue::new(node, self.config.queue_limits()));
        let connected = Arc::new(AtomicBool::new(false));
        let link = peer::PeerLink {
            local: self.gate.local,
            peer: node,
            endpoint,
            queue: Arc::clone(&queue),
            stats: Arc::clone(&self.gate.stats),
            config: Arc::clone(&self.config),
            connected: Arc::clone(&connected),
        };
        let task = self.runtime.spawn(link.run());
        // Replacing an entry drops the old one, which closes its queue and stops its task.
        self.peers.write().insert(node, PeerEntry { address, queue, connected, task });
        Ok(())
    }

    fn peer_address(&self, node: NodeId) -> Option<PeerAddress> {
        self.peers.read().get(&node).map(|peer| peer.address.clone())
    }

    fn remove_peer(&self, node: NodeId) {
        self.endpoints.write().remove(&node);
        self.peers.write().remove(&node);
    }

    /// Up while the outbound stream to `node` is open (connected, the call not failed);
    /// down with no address for it.
    fn peer_connected(&self, node: NodeId) -> Option<bool> {
        let connected =
            self.peers.read().get(&node).is_some_and(|peer| peer.connected.load(Ordering::Relaxed));
        Some(connected)
    }

    fn membership(&self) -> &Membership {
        &self.gate.membership
    }

    fn stats(&self) -> &TransportStats {
        &self.gate.stats
    }

    fn serve_checkpoints(&self, source: Arc<dyn CheckpointSource>) -> Option<Arc<dyn CheckpointFetcher>> {
        *self.checkpoint_source.write() = Some(source);
        Some(Arc::new(fetcher::GrpcCheckpointFetcher {
            local: self.gate.local,
            endpoints: Arc::clone(&self.endpoints),
            frame_bytes_max: self.config.frame_bytes_max,
        }))
    }
}

impl Drop for GrpcTransport {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
        self.peers.get_mut().clear();
        self.endpoints.write().clear();
        *self.checkpoint_source.write() = None;
    }
}
