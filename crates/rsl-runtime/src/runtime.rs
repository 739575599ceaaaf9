//! [`Runtime`]: one per process (per node), hosting any number of rings over one transport
//! endpoint.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use rsl_core::{Config, Message, NodeId, Replica, RingId, Slot, Status};
use rsl_log::{CheckpointStore, DurableCallback, GroupCommitter};
use rsl_transport::{Inbound, Transport};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::apply::{ApplyThread, Job};
use crate::error::StartError;
use crate::ring::{Clock, Command, Durable, Recovery, RingHandle, RingOptions, RingShared, RingTask};
use crate::state_machine::StateMachine;
use crate::stats::{RingCounters, RingLatencies, RingStatistics};
use crate::storage::{Opened, Storage};
use crate::transfer::{CheckpointFetcher, CheckpointServer, NoCheckpointTransfer, ServedRing};

/// Options of a [`Runtime`].
#[derive(Clone, Debug)]
pub struct RuntimeOptions {
    /// Bytes per chunk when serving a checkpoint to a peer.
    pub checkpoint_chunk_bytes: u32,
    /// How this runtime fetches checkpoints from peers (see [`crate::transfer`]). The
    /// default reaches nobody; use a [`crate::LocalCheckpointNetwork`] in one process, or
    /// the network transport's implementation.
    pub checkpoint_fetcher: Arc<dyn CheckpointFetcher>,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions { checkpoint_chunk_bytes: 1 << 20, checkpoint_fetcher: Arc::new(NoCheckpointTransfer) }
    }
}

/// What starting a ring needs: its configuration, the application, and its storage.
pub struct RingSpec {
    /// The replica's configuration (ring, node, members, timing, bounds).
    pub config: Config,
    /// The application.
    pub state_machine: Box<dyn StateMachine>,
    /// Where the log and the checkpoints live.
    pub storage: Storage,
    /// The runtime's per-ring options.
    pub options: RingOptions,
}

impl RingSpec {
    /// A spec with default [`RingOptions`].
    pub fn new(config: Config, state_machine: impl StateMachine, storage: Storage) -> RingSpec {
        RingSpec { config, state_machine: Box::new(state_machine), storage, options: RingOptions::default() }
    }
}

impl fmt::Debug for RingSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingSpec")
            .field("config", &self.config)
            .field("storage", &self.storage)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

struct Route {
    generation: u64,
    inbound: mpsc::Sender<Message>,
    commands: mpsc::WeakSender<Command>,
    jobs: crossbeam_channel::Sender<Job>,
    status: watch::Receiver<Status>,
    shared: Arc<RingShared>,
}

impl Route {
    fn handle(&self) -> Option<RingHandle> {
        Some(RingHandle {
            commands: self.commands.upgrade()?,
            jobs: self.jobs.clone(),
            status: self.status.clone(),
            shared: self.shared.clone(),
        })
    }
}

/// What the dispatcher and the ring tasks share.
pub(crate) struct Shared {
    pub node: NodeId,
    pub transport: Arc<dyn Transport>,
    pub server: CheckpointServer,
    pub fetcher: RwLock<Arc<dyn CheckpointFetcher>>,
    pub clock: Clock,
    routes: RwLock<HashMap<RingId, Route>>,
    next_generation: AtomicU64,
    dropped_unknown_ring: AtomicU64,
    shut_down: AtomicBool,
}

impl Shared {
    /// Hands an inbound message to its ring's task, dropping it when the ring is unknown
    /// or its queue is full (the protocol tolerates loss; a full queue means the ring is
    /// behind, and blocking here would stall every other ring).
    fn route(&self, message: Message) {
        let routes = self.routes.read();
        let Some(route) = routes.get(&message.ring) else {
            self.dropped_unknown_ring.fetch_add(1, Ordering::Relaxed);
            tracing::trace!(node = %self.node, ring = message.ring.0, "dropped a message for a ring not running here");
            return;
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = route.inbound.try_send(message) {
            RingCounters::bump(&route.shared.counters.messages_dropped_queue_full);
        }
    }

    pub(crate) fn remove_route(&self, ring: RingId, generation: u64) {
        let mut routes = self.routes.write();
        if routes.get(&ring).is_some_and(|route| route.generation == generation) {
            routes.remove(&ring);
            self.server.remove_ring(ring);
            self.transport.membership().remove_ring(ring);
        }
    }

    fn handles(&self) -> Vec<RingHandle> {
        let mut routes: Vec<(RingId, RingHandle)> =
            self.routes.read().iter().filter_map(|(ring, route)| Some((*ring, route.handle()?))).collect();
        routes.sort_by_key(|(ring, _)| *ring);
        routes.into_iter().map(|(_, handle)| handle).collect()
    }
}

struct RuntimeInner {
    shared: Arc<Shared>,
    dispatcher: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for RuntimeInner {
    fn drop(&mut self) {
        if let Some(dispatcher) = self.dispatcher.lock().take() {
            dispatcher.abort();
        }
        for route in self.shared.routes.read().values() {
            if let Some(commands) = route.commands.upgrade() {
                let _ = commands.try_send(Command::Shutdown);
            }
        }
    }
}

/// The runtime of one node: hosts rings, routes their messages, serves their checkpoints.
///
/// One process (one node id, one transport endpoint) runs one `Runtime` and any number of
/// rings in it (RSL's multi-ring). Inbound messages from the transport are demultiplexed by
/// [`Message::ring`] to each ring's task. Cheap to clone. Dropping the last clone stops
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
    /// Starts a runtime on a transport endpoint and its inbound receiver. Must be called
    /// within a tokio runtime (it spawns the message dispatcher).
    pub fn new(
        transport: Arc<dyn Transport>,
        inbound: mpsc::Receiver<Inbound>,
        options: RuntimeOptions,
    ) -> Result<Runtime, StartError> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| StartError::NoTokioRuntime)?;
        let shared = Arc::new(Shared {
            node: transport.local_node(),
            server: CheckpointServer::new(transport.clone(), options.checkpoint_chunk_bytes),
            transport,
            fetcher: RwLock::new(options.checkpoint_fetcher),
            clock: Clock { epoch: tokio::time::Instant::now() },
            routes: RwLock::new(HashMap::new()),
            next_generation: AtomicU64::new(1),
            dropped_unknown_ring: AtomicU64::new(0),
            shut_down: AtomicBool::new(false),
        });
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

    /// The server answering peers' checkpoint requests for this runtime's rings: register it
    /// with the checkpoint network (or the network transport's checkpoint service).
    pub fn checkpoint_server(&self) -> CheckpointServer {
        self.inner.shared.server.clone()
    }

    /// Replaces how checkpoints are fetched from peers (used by later fetches).
    pub fn set_checkpoint_fetcher(&self, fetcher: Arc<dyn CheckpointFetcher>) {
        *self.inner.shared.fetcher.write() = fetcher;
    }

    /// The rings running here, in id order.
    pub fn rings(&self) -> Vec<RingId> {
        let mut rings: Vec<RingId> = self.inner.shared.routes.read().keys().copied().collect();
        rings.sort_unstable();
        rings
    }

    /// A handle to a running ring.
    pub fn ring(&self, ring: RingId) -> Option<RingHandle> {
        self.inner.shared.routes.read().get(&ring)?.handle()
    }

    /// Messages dropped because their ring does not run here.
    pub fn dropped_unknown_ring(&self) -> u64 {
        self.inner.shared.dropped_unknown_ring.load(Ordering::Relaxed)
    }

    /// Opens the ring's storage (recovering the log and loading the newest valid checkpoint
    /// into the state machine), builds its replica, and starts its task, group committer
    /// and apply thread.
    pub async fn start_ring(&self, spec: RingSpec) -> Result<RingHandle, StartError> {
        let shared = &self.inner.shared;
        if shared.shut_down.load(Ordering::Acquire) {
            return Err(StartError::RuntimeShutDown);
        }
        let RingSpec { mut config, state_machine, storage, options } = spec;
        let ring = config.ring;
        if config.node != shared.node {
            return Err(StartError::WrongNode { ring, ring_node: config.node, runtime_node: shared.node });
        }
        config.validate().map_err(|source| StartError::Config { ring, source })?;
        if shared.routes.read().contains_key(&ring) {
            return Err(StartError::AlreadyRunning { ring });
        }

        let opened = tokio::task::spawn_blocking(move || open_storage(ring, storage, state_machine)).await;
        let Loaded { opened, state_machine, checkpoint, configuration, skipped_checkpoints } = match opened {
            Ok(result) => result?,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(_) => return Err(StartError::RuntimeShutDown),
        };
        let Opened { log, mut durable, checkpoints, report } = opened;
        durable.checkpoint = checkpoint;
        durable.configuration = configuration;
        let recovery = Recovery {
            log_records: report.as_ref().map_or(0, |r| r.records),
            log_bytes: report.as_ref().map_or(0, |r| r.bytes),
            torn_tail: report.and_then(|r| r.torn_tail),
            promise: durable.promise,
            proposals: durable.proposals.len() as u64,
            chosen_hint: durable.chosen,
            checkpoint,
            skipped_checkpoints,
        };

        // Election delays differ across restarts as well as across replicas.
        config.seed ^= crate::entropy();
        let members = config.members.clone();
        // The veto is polled about once per heartbeat: it takes effect well inside an
        // election delay.
        let veto_poll_interval = std::time::Duration::from_millis(config.heartbeat_interval_ms);
        let replica = Replica::new(config, durable, shared.clock.now())
            .map_err(|source| StartError::Config { ring, source })?;
        let applied = replica.applied();
        // The transport admits the initial members (or contacts) and the configuration
        // recovered; later configurations are added as the ring enters them.
        let recovered = replica.status().configuration;
        let admitted_for = recovered.number;
        let admitted: std::collections::BTreeSet<NodeId> =
            members.iter().chain(recovered.members.iter()).copied().collect();

        let (durable_sender, durable_receiver) = watch::channel(Durable::default());
        let on_durable: DurableCallback = Box::new(move |result| {
            durable_sender.send_modify(|durable| match result {
                Ok(ticket) => durable.ticket = durable.ticket.max(ticket),
                Err(failure) => durable.failure = Some(failure),
            });
        });
        let committer = GroupCommitter::spawn_with_callback(log, &options.group_commit, Some(on_durable));

        let oldest_checkpoint = Arc::new(AtomicU64::new(0));
        crate::apply::refresh_oldest(&checkpoints, &oldest_checkpoint);
        let checkpoints: Arc<Mutex<CheckpointStore>> = Arc::new(Mutex::new(checkpoints));
        let counters = Arc::new(RingCounters::default());
        let latencies = Arc::new(RingLatencies::default());
        let applied_shared = Arc::new(AtomicU64::new(applied.0));
        let local_client = crate::entropy() | 1;

        let (jobs_sender, jobs) = crossbeam_channel::unbounded();
        let (events_sender, events) = mpsc::unbounded_channel();
        let apply_thread = ApplyThread {
            ring,
            state_machine,
            applied,
            local_client,
            jobs,
            events: events_sender,
            checkpoints: checkpoints.clone(),
            oldest_checkpoint: oldest_checkpoint.clone(),
            counters: counters.clone(),
            latencies: latencies.clone(),
            applied_shared: applied_shared.clone(),
            veto_poll_interval,
            reads_waiting_max: options.reads_waiting_max,
        }
        .spawn()
        .map_err(|source| StartError::Thread { ring, source })?;

        let (command_sender, commands) = mpsc::channel(options.commands_max.max(1));
        let (inbound_sender, inbound) = mpsc::channel(options.inbound_messages_max.max(1));
        let (status_sender, status) = watch::channel(replica.status());
        let (finished_sender, finished) = watch::channel(false);
        let ring_shared = Arc::new(RingShared {
            ring,
            node: shared.node,
            counters: counters.clone(),
            latencies,
            applied: applied_shared,
            stop_reason: Mutex::new(None),
            finished,
            options,
            recovery,
        });
        let generation = shared.next_generation.fetch_add(1, Ordering::Relaxed);
        {
            let mut routes = shared.routes.write();
            if routes.contains_key(&ring) || shared.shut_down.load(Ordering::Acquire) {
                drop(routes);
                let _ = jobs_sender.send(Job::Stop);
                return Err(StartError::AlreadyRunning { ring });
            }
            routes.insert(
                ring,
                Route {
                    generation,
                    inbound: inbound_sender,
                    commands: command_sender.downgrade(),
                    jobs: jobs_sender.clone(),
                    status: status.clone(),
                    shared: ring_shared.clone(),
                },
            );
            shared.server.add_ring(ring, ServedRing { store: checkpoints.clone(), counters });
            shared.transport.membership().set_members(ring, admitted.iter().copied());
        }
        tracing::info!(ring = ring.0, node = %shared.node, %checkpoint, chosen = %replica.chosen(), "ring started");

        let task = RingTask {
            ring,
            node: shared.node,
            replica,
            clock: shared.clock,
            runtime: shared.clone(),
            generation,
            committer: Some(committer),
            durable: durable_receiver,
            persisted: 0,
            persist_started: Default::default(),
            commands,
            inbound,
            jobs: jobs_sender.clone(),
            events,
            apply_thread: Some(apply_thread),
            checkpoints: Some(checkpoints),
            oldest_checkpoint,
            fetch: None,
            fetch_cancel: watch::channel(false).0,
            local_client,
            next_sequence: 0,
            pending: HashMap::new(),
            groups: HashMap::new(),
            next_group: 0,
            proposals: Vec::new(),
            assigned: Default::default(),
            outbox: Default::default(),
            apply_batch: Vec::new(),
            change: None,
            admitted,
            admitted_for,
            status: status_sender,
            shared: ring_shared.clone(),
            finished: finished_sender,
        };
        tokio::spawn(task.run());
        Ok(RingHandle { commands: command_sender, jobs: jobs_sender, status, shared: ring_shared })
    }

    /// Statistics of every running ring, in ring order.
    pub async fn statistics(&self) -> Vec<RingStatistics> {
        let mut all = Vec::new();
        for handle in self.inner.shared.handles() {
            if let Some(statistics) = handle.statistics().await {
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
        for handle in shared.handles() {
            handle.shutdown().await;
        }
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

/// Storage opened and a state machine loaded from its newest valid checkpoint.
struct Loaded {
    opened: Opened,
    state_machine: Box<dyn StateMachine>,
    checkpoint: Slot,
    configuration: Option<rsl_core::Configuration>,
    skipped_checkpoints: Vec<String>,
}

/// Opens the storage and loads the newest valid checkpoint into the state machine.
fn open_storage(
    ring: RingId,
    storage: Storage,
    mut state_machine: Box<dyn StateMachine>,
) -> Result<Loaded, StartError> {
    let opened = storage.open(ring)?;
    if let Some(report) = &opened.report {
        if let Some(cut) = &report.torn_tail {
            tracing::warn!(
                ring = ring.0, file = %cut.file.display(), offset = cut.offset, bytes = cut.bytes_dropped,
                reason = %cut.reason, "log recovery cut a torn tail"
            );
        }
        tracing::info!(ring = ring.0, records = report.records, bytes = report.bytes, log_start = %report.log_start, "log recovered");
    }
    let outcome =
        opened.checkpoints.load_newest().map_err(|source| StartError::Checkpoint { ring, source })?;
    let mut skipped = Vec::new();
    for error in &outcome.skipped {
        tracing::warn!(ring = ring.0, %error, "skipped a checkpoint that fails to verify");
        skipped.push(error.to_string());
    }
    let (slot, configuration) = match outcome.checkpoint {
        Some(mut reader) => {
            let slot = reader.slot();
            let configuration = crate::framing::read_configuration(&mut reader)
                .map_err(|source| StartError::LoadCheckpoint { ring, slot, source })?;
            state_machine
                .load_checkpoint(slot, &mut reader)
                .map_err(|source| StartError::LoadCheckpoint { ring, slot, source })?;
            tracing::info!(ring = ring.0, %slot, configuration = configuration.number, "state machine loaded the newest checkpoint");
            (slot, Some(configuration))
        }
        None => (Slot::ZERO, None),
    };
    Ok(Loaded { opened, state_machine, checkpoint: slot, configuration, skipped_checkpoints: skipped })
}
