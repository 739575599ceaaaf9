//! [`Runtime`]: one per process (per node), hosting any number of rings over one transport
//! endpoint. It keeps the routing (inbound messages demultiplexed by ring id, the checkpoint
//! server's table, the transport's admission of each ring) and the lifecycle of its rings
//! (start, stop, shutdown, a ring's failure). It builds each ring through
//! [`RingTask::start`] and knows nothing of a ring's inside; the ring knows nothing of it.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, RwLock};
use rsl_core::{Message, NodeId, RingId};
use rsl_transport::{Inbound, InboundSink, Transport};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::StartError;
use crate::ring::{Clock, Inbox, Ring, RingSpec, RingTask, Started, WeakRing};
use crate::stats::RingStatistics;
use crate::transfer::{CheckpointFetcher, CheckpointServer, NoCheckpointTransfer, SharedFetcher};

/// Options of a [`Runtime`].
#[derive(Clone, Debug)]
pub struct RuntimeOptions {
    /// Bytes per chunk when serving a checkpoint to a peer (a transport may split them
    /// further to fit its frames).
    pub checkpoint_chunk_bytes: u32,
    /// How this runtime fetches checkpoints from peers (see [`crate::transfer`]). `None`,
    /// the default, uses the transport's own checkpoint transfer (the gRPC transport's, over
    /// the replica port and its TLS), or reaches nobody ([`NoCheckpointTransfer`]) on a
    /// transport without one; a [`crate::LocalCheckpointNetwork`] connects runtimes of one
    /// process.
    pub checkpoint_fetcher: Option<Arc<dyn CheckpointFetcher>>,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions { checkpoint_chunk_bytes: 1 << 20, checkpoint_fetcher: None }
    }
}

/// A running ring, as the routing table knows it.
struct Route {
    /// Tells this start of the ring from a later one under the same id.
    generation: u64,
    inbox: Inbox,
    ring: WeakRing,
}

/// What the dispatcher, the runtime's handles and the rings' lifecycles share.
struct Shared {
    node: NodeId,
    transport: Arc<dyn Transport>,
    server: CheckpointServer,
    fetcher: SharedFetcher,
    clock: Clock,
    routes: RwLock<HashMap<RingId, Route>>,
    next_generation: AtomicU64,
    dropped_unknown_ring: AtomicU64,
    shut_down: AtomicBool,
    /// Set when the runtime stops routing (its last handle dropped, or shut down): the
    /// transport's sink then takes no more messages, as a closed inbound channel would not.
    routing_stopped: AtomicBool,
}

impl Shared {
    /// Hands an inbound message to its ring, dropping it when the ring is unknown.
    fn route(&self, message: Message) {
        let routes = self.routes.read();
        let Some(route) = routes.get(&message.ring) else {
            self.dropped_unknown_ring.fetch_add(1, Ordering::Relaxed);
            tracing::trace!(node = %self.node, ring = message.ring.0, "dropped a message for a ring not running here");
            return;
        };
        route.inbox.deliver(message);
    }

    /// Takes a stopping ring out of the routing, the checkpoint server and the transport's
    /// admission, unless the id already belongs to a later start.
    fn remove_route(&self, ring: RingId, generation: u64) {
        let mut routes = self.routes.write();
        if routes.get(&ring).is_some_and(|route| route.generation == generation) {
            routes.remove(&ring);
            self.server.remove_ring(ring);
            self.transport.membership().remove_ring(ring);
        }
    }

    /// Handles to the running rings, in ring order.
    fn rings(&self) -> Vec<Ring> {
        let mut routes: Vec<(RingId, Ring)> =
            self.routes.read().iter().filter_map(|(id, route)| Some((*id, route.ring.upgrade()?))).collect();
        routes.sort_by_key(|(id, _)| *id);
        routes.into_iter().map(|(_, ring)| ring).collect()
    }
}

struct RuntimeInner {
    shared: Arc<Shared>,
    dispatcher: Mutex<Option<JoinHandle<()>>>,
}

/// The runtime's routing as the transport's [`InboundSink`]: an endpoint that supports it
/// routes each admitted message into its ring's inbox from the sending side, with no
/// dispatcher task in between. Holds the routing weakly, so the transport never keeps a
/// stopped runtime alive.
#[derive(Debug)]
struct RouteSink(Weak<Shared>);

impl InboundSink for RouteSink {
    fn deliver(&self, inbound: Inbound) -> bool {
        match self.0.upgrade() {
            Some(shared) if !shared.routing_stopped.load(Ordering::Acquire) => {
                shared.route(inbound.message);
                true
            }
            _ => false,
        }
    }
}

impl Drop for RuntimeInner {
    fn drop(&mut self) {
        self.shared.routing_stopped.store(true, Ordering::Release);
        if let Some(dispatcher) = self.dispatcher.lock().take() {
            dispatcher.abort();
        }
        for route in self.shared.routes.read().values() {
            if let Some(ring) = route.ring.upgrade() {
                ring.request_stop();
            }
        }
    }
}

/// The runtime of one node: hosts rings, routes their messages, serves their checkpoints.
///
/// One process (one node id, one transport endpoint) runs one `Runtime` and any number of
/// rings in it (RSL's multi-ring). Inbound messages from the transport are demultiplexed by
/// [`Message::ring`] to each ring's task: by the sending side itself on a transport that
/// takes an [`InboundSink`] (the in-memory network), by a dispatcher task otherwise. Cheap to clone. Dropping the last clone stops
/// routing and asks every ring to stop; [`Runtime::shutdown`] does so and waits.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<RuntimeInner>,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime").field("node", &self.node()).field("rings", &self.rings()).finish()
    }
}

impl Runtime {
    /// Starts a runtime on a transport endpoint and its inbound receiver, and registers its
    /// routing as the endpoint's [`InboundSink`] (see [`Transport::deliver_inbound_to`]).
    /// Must be called within a tokio runtime (it spawns the message dispatcher).
    pub fn new(
        transport: Arc<dyn Transport>,
        inbound: mpsc::Receiver<Inbound>,
        options: RuntimeOptions,
    ) -> Result<Runtime, StartError> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| StartError::NoTokioRuntime)?;
        let server = CheckpointServer::new(transport.clone(), options.checkpoint_chunk_bytes);
        // Peers fetch this runtime's checkpoints over the transport, if it carries them.
        let transport_fetcher = transport.serve_checkpoints(Arc::new(server.clone()));
        let fetcher = options
            .checkpoint_fetcher
            .or(transport_fetcher)
            .unwrap_or_else(|| Arc::new(NoCheckpointTransfer));
        let shared = Arc::new(Shared {
            node: transport.local_node(),
            server,
            transport,
            fetcher: SharedFetcher::new(fetcher),
            clock: Clock::start(),
            routes: RwLock::new(HashMap::new()),
            next_generation: AtomicU64::new(1),
            dropped_unknown_ring: AtomicU64::new(0),
            shut_down: AtomicBool::new(false),
            routing_stopped: AtomicBool::new(false),
        });
        // Messages go straight into the rings' inboxes where the transport can do that; the
        // dispatcher routes whatever arrives on the channel (every message, on a transport
        // without a sink).
        shared.transport.deliver_inbound_to(Arc::new(RouteSink(Arc::downgrade(&shared))));
        let dispatcher = handle.spawn(dispatch(shared.clone(), inbound));
        Ok(Runtime { inner: Arc::new(RuntimeInner { shared, dispatcher: Mutex::new(Some(dispatcher)) }) })
    }

    /// The node this runtime speaks for.
    pub fn node(&self) -> NodeId {
        self.inner.shared.node
    }

    /// The transport endpoint.
    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.inner.shared.transport
    }

    /// The server answering peers' checkpoint requests for this runtime's rings. The
    /// runtime already serves it over its transport (if the transport carries checkpoint
    /// transfer); register it with a [`crate::LocalCheckpointNetwork`] otherwise.
    pub fn checkpoint_server(&self) -> CheckpointServer {
        self.inner.shared.server.clone()
    }

    /// Replaces how checkpoints are fetched from peers (used by later fetches).
    pub fn set_checkpoint_fetcher(&self, fetcher: Arc<dyn CheckpointFetcher>) {
        self.inner.shared.fetcher.replace(fetcher);
    }

    /// The rings running here, in id order.
    pub fn rings(&self) -> Vec<RingId> {
        let mut rings: Vec<RingId> = self.inner.shared.routes.read().keys().copied().collect();
        rings.sort_unstable();
        rings
    }

    /// A handle to a running ring.
    pub fn ring(&self, ring: RingId) -> Option<Ring> {
        self.inner.shared.routes.read().get(&ring)?.ring.upgrade()
    }

    /// Messages dropped because their ring does not run here.
    pub fn dropped_unknown_ring(&self) -> u64 {
        self.inner.shared.dropped_unknown_ring.load(Ordering::Relaxed)
    }

    /// Opens the ring's storage (recovering the log and loading the newest valid checkpoint
    /// into the state machine), builds its replica, and starts its task, group committer
    /// and apply thread.
    pub async fn start_ring(&self, spec: RingSpec) -> Result<Ring, StartError> {
        self.start(spec, None).await
    }

    /// [`Runtime::start_ring`] on a runtime that exists for this ring alone: the runtime
    /// shuts down when the ring stops (the ring's lifecycle holds it until then).
    pub(crate) async fn start_ring_owning(self, spec: RingSpec) -> Result<Ring, StartError> {
        let runtime = self.clone();
        runtime.start(spec, Some(self)).await
    }

    async fn start(&self, mut spec: RingSpec, owner: Option<Runtime>) -> Result<Ring, StartError> {
        let shared = &self.inner.shared;
        if shared.shut_down.load(Ordering::Acquire) {
            return Err(StartError::RuntimeShutDown);
        }
        let config = &mut spec.config;
        let ring = config.ring;
        if config.node != shared.node {
            return Err(StartError::WrongNode { ring, ring_node: config.node, runtime_node: shared.node });
        }
        config.validate().map_err(|source| StartError::Config { ring, source })?;
        if shared.routes.read().contains_key(&ring) {
            return Err(StartError::AlreadyRunning { ring });
        }

        let started =
            RingTask::start(spec, shared.transport.clone(), shared.fetcher.clone(), shared.clock).await?;
        let Started { task, ring: handle, inbox, served, admitted } = started;
        let generation = shared.next_generation.fetch_add(1, Ordering::Relaxed);
        {
            let mut routes = shared.routes.write();
            if routes.contains_key(&ring) || shared.shut_down.load(Ordering::Acquire) {
                // Dropping the task stops the threads it started.
                return Err(StartError::AlreadyRunning { ring });
            }
            routes.insert(ring, Route { generation, inbox, ring: handle.downgrade() });
            shared.server.add_ring(ring, served);
            shared.transport.membership().set_members(ring, admitted);
        }

        let shared = shared.clone();
        tokio::spawn(async move {
            let stopping = task.run().await;
            // Out of the routing before the ring releases its storage: once a handle's
            // `shutdown` returns, the id is free and the storage can be opened again.
            shared.remove_route(ring, generation);
            if let Some(runtime) = owner {
                runtime.shutdown().await;
            }
            stopping.finish().await;
        });
        Ok(handle)
    }

    /// Statistics of every running ring, in ring order.
    pub async fn statistics(&self) -> Vec<RingStatistics> {
        let mut all = Vec::new();
        for ring in self.inner.shared.rings() {
            if let Some(statistics) = ring.statistics().await {
                all.push(statistics);
            }
        }
        all
    }

    /// Statistics of every ring in the Prometheus text exposition format, plus the
    /// runtime's own counters and its transport's.
    pub async fn render_prometheus(&self) -> String {
        let mut text = crate::stats::render_prometheus(&self.statistics().await);
        let transport = self.transport().stats().snapshot();
        crate::stats::render_node_counters(&mut text, self.node(), self.dropped_unknown_ring(), &transport);
        text
    }

    /// Stops every ring (each flushes and closes its log) and the dispatcher, and waits.
    /// Starting rings afterwards fails with [`StartError::RuntimeShutDown`].
    pub async fn shutdown(&self) {
        let shared = &self.inner.shared;
        shared.shut_down.store(true, Ordering::Release);
        for ring in shared.rings() {
            ring.shutdown().await;
        }
        shared.routing_stopped.store(true, Ordering::Release);
        let dispatcher = self.inner.dispatcher.lock().take();
        if let Some(dispatcher) = dispatcher {
            dispatcher.abort();
            let _ = dispatcher.await;
        }
    }
}

async fn dispatch(shared: Arc<Shared>, mut inbound: mpsc::Receiver<Inbound>) {
    while let Some(Inbound { message, .. }) = inbound.recv().await {
        shared.route(message);
    }
    tracing::info!(node = %shared.node, "transport inbound closed; no more messages are routed");
}
