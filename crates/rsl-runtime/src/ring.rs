//! One ring: the task that owns its [`Replica`], and [`RingHandle`], how clients reach it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use rsl_core::{
    Action, Configuration, Message, NodeId, PersistRequest, ProposeError, Replica, Request, RequestId,
    RingId, Slot, Status, Value,
};
use rsl_log::{CheckpointStore, GroupCommitOptions, GroupCommitter, LogError};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::apply::{Event, Job};
use crate::error::{
    ChangeConfigurationError, FastReadError, ReadError, RelinquishError, ReplicateError, RingFailure,
    TransferError,
};
use crate::runtime::Shared;
use crate::state_machine::RoleChange;
use crate::stats::{RingCounters, RingLatencies, RingStatistics};
use crate::transfer::{receive_checkpoint, CheckpointRequest};

/// Inputs a ring task handles per wake-up before it flushes sends (bounds latency).
const BURST_INPUTS_MAX: usize = 256;
/// How long a stopping ring waits for a checkpoint being served to release the store.
const STORE_RELEASE_WAIT: Duration = Duration::from_secs(10);

/// Per-ring options of the runtime (the protocol's options are in [`rsl_core::Config`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingOptions {
    /// How long `replicate` waits for the response before [`ReplicateError::Timeout`].
    pub request_timeout: Duration,
    /// How long `read` waits for the state machine to reach the read index.
    pub read_timeout: Duration,
    /// How long `read_fast` waits for the replica to apply the slot the client names.
    pub fast_read_wait_max: Duration,
    /// Reads that may wait for the state machine at once; more are refused as busy.
    pub reads_waiting_max: u64,
    /// Client commands queued for the ring task; `replicate` waits for room beyond this.
    pub commands_max: usize,
    /// Inbound messages queued for the ring task; more are dropped (and counted).
    pub inbound_messages_max: usize,
    /// Options of the ring's group committer (queue depth, requests per sync).
    pub group_commit: GroupCommitOptions,
    /// A checkpoint transfer gives up when no progress is made for this long.
    pub checkpoint_transfer_timeout: Duration,
    /// Log a statistics line (at `info`) this often; `None` never.
    pub statistics_log_interval: Option<Duration>,
}

impl Default for RingOptions {
    fn default() -> Self {
        RingOptions {
            request_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(5),
            fast_read_wait_max: Duration::from_secs(1),
            reads_waiting_max: 10_000,
            commands_max: 4096,
            inbound_messages_max: 8192,
            group_commit: GroupCommitOptions { queue_depth_max: 65_536, ..GroupCommitOptions::default() },
            checkpoint_transfer_timeout: Duration::from_secs(10),
            statistics_log_interval: Some(Duration::from_secs(60)),
        }
    }
}

pub(crate) type ChangeReply = oneshot::Sender<Result<Configuration, ChangeConfigurationError>>;

pub(crate) enum Command {
    Replicate { payload: Bytes, reply: oneshot::Sender<Result<Bytes, ReplicateError>> },
    ReplicateMany { payloads: Vec<Bytes>, reply: oneshot::Sender<Vec<Result<Bytes, ReplicateError>>> },
    Read { request: Bytes, reply: oneshot::Sender<Result<Bytes, ReadError>> },
    Relinquish { target: Option<NodeId>, reply: oneshot::Sender<Result<NodeId, RelinquishError>> },
    ChangeConfiguration { members: Vec<NodeId>, reply: ChangeReply },
    Statistics { reply: oneshot::Sender<RingStatistics> },
    Shutdown,
}

/// The durable ticket the group committer last reported, or its failure.
#[derive(Clone, Debug, Default)]
pub(crate) struct Durable {
    pub ticket: u64,
    pub failure: Option<Arc<LogError>>,
}

/// What a ring found in its storage when it started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Log records replayed (zero for a store opened by the caller).
    pub log_records: u64,
    /// Bytes of valid log records read.
    pub log_bytes: u64,
    /// A torn tail the log recovery cut (the unsynced last write of a crash).
    pub torn_tail: Option<rsl_log::Cut>,
    /// The durable promise.
    pub promise: rsl_core::Ballot,
    /// Proposals the log held.
    pub proposals: u64,
    /// The durable chosen-watermark hint.
    pub chosen_hint: Slot,
    /// The checkpoint loaded into the state machine (zero: none).
    pub checkpoint: Slot,
    /// Newer checkpoints that failed to verify and were skipped, with the reason.
    pub skipped_checkpoints: Vec<String>,
}

/// What a ring's handles share with its task.
#[derive(Debug)]
pub(crate) struct RingShared {
    pub ring: RingId,
    pub node: NodeId,
    pub counters: Arc<RingCounters>,
    pub latencies: Arc<RingLatencies>,
    pub applied: Arc<AtomicU64>,
    pub stop_reason: Mutex<Option<String>>,
    pub finished: watch::Receiver<bool>,
    pub options: RingOptions,
    pub recovery: Recovery,
}

impl RingShared {
    fn stop_reason(&self) -> String {
        self.stop_reason.lock().clone().unwrap_or_else(|| "the ring stopped".into())
    }
}

/// A running ring: replicate requests, read, hand over primacy, watch its status.
///
/// Cheap to clone; every clone drives the same ring. The ring runs until
/// [`RingHandle::shutdown`], until its runtime shuts down, until it fails (a log error),
/// or until every handle is dropped (it then stops in the background).
#[derive(Clone, Debug)]
pub struct RingHandle {
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) jobs: crossbeam_channel::Sender<Job>,
    pub(crate) status: watch::Receiver<Status>,
    pub(crate) shared: Arc<RingShared>,
}

impl RingHandle {
    /// The ring.
    pub fn ring(&self) -> RingId {
        self.shared.ring
    }

    /// This replica.
    pub fn node(&self) -> NodeId {
        self.shared.node
    }

    /// Replicates `request`: the primary gives it a slot, a majority makes it durable, and
    /// once chosen every replica executes it. Returns this replica's state machine's
    /// response. Only the primary accepts requests; others answer
    /// [`ReplicateError::NotPrimary`] with a hint.
    pub async fn replicate(&self, request: impl Into<Bytes>) -> Result<Bytes, ReplicateError> {
        let started = std::time::Instant::now();
        let timeout = self.shared.options.request_timeout;
        let (reply, answer) = oneshot::channel();
        let command = Command::Replicate { payload: request.into(), reply };
        let result = tokio::time::timeout(timeout, async {
            if self.commands.send(command).await.is_err() {
                return Err(ReplicateError::Shutdown { reason: self.shared.stop_reason() });
            }
            answer
                .await
                .unwrap_or_else(|_| Err(ReplicateError::Shutdown { reason: self.shared.stop_reason() }))
        })
        .await
        .unwrap_or(Err(ReplicateError::Timeout { after_ms: timeout.as_millis() as u64 }));
        match &result {
            Ok(_) => {
                RingCounters::bump(&self.shared.counters.requests_replicated);
                self.shared.latencies.replicate.record(started.elapsed());
            }
            Err(_) => RingCounters::bump(&self.shared.counters.requests_failed),
        }
        result
    }

    /// Replicates many requests submitted together: the primary queues them all before it
    /// opens slots, so they share slots (one [`RingHandle::replicate`] per request would
    /// give each its own slot while the pipeline has room), and the ring task is woken once.
    /// Returns one result per request, in order, once every one has its outcome; each is
    /// what `replicate` would have returned. The timeout applies to the whole group.
    pub async fn replicate_many(&self, requests: Vec<Bytes>) -> Vec<Result<Bytes, ReplicateError>> {
        if requests.is_empty() {
            return Vec::new();
        }
        let started = std::time::Instant::now();
        let timeout = self.shared.options.request_timeout;
        let count = requests.len();
        let (reply, answer) = oneshot::channel();
        let command = Command::ReplicateMany { payloads: requests, reply };
        let results = tokio::time::timeout(timeout, async {
            if self.commands.send(command).await.is_err() {
                return None;
            }
            answer.await.ok()
        })
        .await;
        let results = match results {
            Ok(Some(results)) => results,
            Ok(None) => {
                let reason = self.shared.stop_reason();
                (0..count).map(|_| Err(ReplicateError::Shutdown { reason: reason.clone() })).collect()
            }
            Err(_) => {
                let after_ms = timeout.as_millis() as u64;
                (0..count).map(|_| Err(ReplicateError::Timeout { after_ms })).collect()
            }
        };
        let succeeded = results.iter().filter(|r| r.is_ok()).count() as u64;
        RingCounters::add(&self.shared.counters.requests_replicated, succeeded);
        RingCounters::add(&self.shared.counters.requests_failed, count as u64 - succeeded);
        if succeeded > 0 {
            self.shared.latencies.replicate.record(started.elapsed());
        }
        results
    }

    /// A linearizable read without a slot: the primary checks its lease, and the state
    /// machine serves the read once it applied every slot chosen before the call.
    pub async fn read(&self, request: impl Into<Bytes>) -> Result<Bytes, ReadError> {
        let timeout = self.shared.options.read_timeout;
        let (reply, answer) = oneshot::channel();
        let command = Command::Read { request: request.into(), reply };
        let result = tokio::time::timeout(timeout, async {
            if self.commands.send(command).await.is_err() {
                return Err(ReadError::Shutdown { reason: self.shared.stop_reason() });
            }
            answer.await.unwrap_or_else(|_| Err(ReadError::Shutdown { reason: self.shared.stop_reason() }))
        })
        .await
        .unwrap_or(Err(ReadError::Timeout { after_ms: timeout.as_millis() as u64 }));
        if result.is_err() {
            RingCounters::bump(&self.shared.counters.reads_failed);
        }
        result
    }

    /// A fast read on this replica (any role) once it applied at least `min_slot`
    /// (read-your-writes, monotonic reads; not linearizable). Waits up to
    /// [`RingOptions::fast_read_wait_max`] for the slot.
    pub async fn read_fast(&self, request: impl Into<Bytes>, min_slot: Slot) -> Result<Bytes, FastReadError> {
        self.read_fast_within(request, min_slot, self.shared.options.fast_read_wait_max).await
    }

    /// [`RingHandle::read_fast`] with an explicit bound on the wait.
    pub async fn read_fast_within(
        &self,
        request: impl Into<Bytes>,
        min_slot: Slot,
        wait: Duration,
    ) -> Result<Bytes, FastReadError> {
        let (reply, answer) = oneshot::channel();
        let job = Job::FastRead { min_slot, request: request.into(), reply };
        if self.jobs.send(job).is_err() {
            RingCounters::bump(&self.shared.counters.reads_failed);
            return Err(FastReadError::Shutdown { reason: self.shared.stop_reason() });
        }
        let result = match tokio::time::timeout(wait, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(FastReadError::Shutdown { reason: self.shared.stop_reason() }),
            Err(_) => Err(FastReadError::NotApplied {
                min_slot,
                applied: self.applied(),
                after_ms: wait.as_millis() as u64,
            }),
        };
        if result.is_err() {
            RingCounters::bump(&self.shared.counters.reads_failed);
        }
        result
    }

    /// Every slot up to here has been executed by this replica's state machine.
    pub fn applied(&self) -> Slot {
        Slot(self.shared.applied.load(Ordering::Acquire))
    }

    /// Hands primacy to `target` (or the most up-to-date live member): the primary stops
    /// taking requests, waits for its in-flight slots, then tells the target to campaign at
    /// once. Returns the target.
    pub async fn relinquish_primary(&self, target: Option<NodeId>) -> Result<NodeId, RelinquishError> {
        let (reply, answer) = oneshot::channel();
        if self.commands.send(Command::Relinquish { target, reply }).await.is_err() {
            return Err(RelinquishError::Shutdown { reason: self.shared.stop_reason() });
        }
        answer.await.unwrap_or_else(|_| Err(RelinquishError::Shutdown { reason: self.shared.stop_reason() }))
    }

    /// Changes the ring's members (add, remove, replace, grow or shrink; RSL's
    /// `ChangeConfiguration`): the primary proposes a configuration value at the next slot
    /// `s`, and the new configuration governs every slot from `s + 1`. Returns the new
    /// configuration once the change is chosen. Only the primary accepts, one change at a
    /// time; [`ChangeConfigurationError::Interrupted`] if it stops being primary first.
    /// New members catch up by themselves (a checkpoint, then slots): start them first,
    /// with [`rsl_core::Config::joining`] set.
    pub async fn change_configuration(
        &self,
        members: Vec<NodeId>,
    ) -> Result<Configuration, ChangeConfigurationError> {
        let timeout = self.shared.options.request_timeout;
        let (reply, answer) = oneshot::channel();
        let shutdown = || ChangeConfigurationError::Shutdown { reason: self.shared.stop_reason() };
        tokio::time::timeout(timeout, async {
            if self.commands.send(Command::ChangeConfiguration { members, reply }).await.is_err() {
                return Err(shutdown());
            }
            answer.await.unwrap_or_else(|_| Err(shutdown()))
        })
        .await
        .unwrap_or(Err(ChangeConfigurationError::Timeout { after_ms: timeout.as_millis() as u64 }))
    }

    /// The replica's status (role, ballot, chosen and applied slots, configuration), kept
    /// current: `changed().await` on the receiver to follow it.
    pub fn status(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// A snapshot of the ring's statistics; `None` once the ring stopped.
    pub async fn statistics(&self) -> Option<RingStatistics> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::Statistics { reply }).await.ok()?;
        answer.await.ok()
    }

    /// What the ring recovered from its storage when it started.
    pub fn recovery(&self) -> &Recovery {
        &self.shared.recovery
    }

    /// Whether the ring stopped (shut down or failed).
    pub fn is_stopped(&self) -> bool {
        *self.shared.finished.borrow()
    }

    /// Why the ring stopped, once it has.
    pub fn stop_reason(&self) -> Option<String> {
        self.shared.stop_reason.lock().clone()
    }

    /// Stops the ring: fails waiting requests with [`ReplicateError::Shutdown`], stops the
    /// apply thread (after the state machine call in progress returns), flushes and closes
    /// the log, and releases the storage (a restart may open it again as soon as this
    /// returns).
    pub async fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown).await;
        let mut finished = self.shared.finished.clone();
        let _ = finished.wait_for(|done| *done).await;
    }
}

pub(crate) struct Pending {
    reply: Reply,
    slot: Option<Slot>,
}

/// Where the outcome of one replicated request goes.
pub(crate) enum Reply {
    /// A `replicate` call.
    One(oneshot::Sender<Result<Bytes, ReplicateError>>),
    /// Entry `index` of the `replicate_many` call `group`.
    Group { group: u64, index: u32 },
}

/// A `replicate_many` call waiting for the outcomes of its requests.
pub(crate) struct Group {
    results: Vec<Option<Result<Bytes, ReplicateError>>>,
    missing: usize,
    reply: oneshot::Sender<Vec<Result<Bytes, ReplicateError>>>,
}

/// Maps the core's microsecond clock to tokio's monotonic clock.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    pub epoch: Instant,
}

impl Clock {
    pub(crate) fn now(&self) -> rsl_core::Time {
        rsl_core::Time(u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX))
    }

    fn instant(&self, time: rsl_core::Time) -> Instant {
        self.epoch + Duration::from_micros(time.0)
    }
}

/// Why the ring task stopped.
enum Stop {
    Requested(&'static str),
    Failed(RingFailure),
}

/// The ring task: owns the replica and performs its actions.
pub(crate) struct RingTask {
    pub ring: RingId,
    pub node: NodeId,
    pub replica: Replica,
    pub clock: Clock,
    pub runtime: Arc<Shared>,
    pub generation: u64,
    pub committer: Option<GroupCommitter>,
    pub durable: watch::Receiver<Durable>,
    pub persisted: u64,
    pub persist_started: VecDeque<(u64, std::time::Instant)>,
    pub commands: mpsc::Receiver<Command>,
    pub inbound: mpsc::Receiver<Message>,
    pub jobs: crossbeam_channel::Sender<Job>,
    pub events: mpsc::UnboundedReceiver<Event>,
    pub apply_thread: Option<std::thread::JoinHandle<()>>,
    pub checkpoints: Option<Arc<Mutex<CheckpointStore>>>,
    pub oldest_checkpoint: Arc<AtomicU64>,
    pub fetch: Option<JoinHandle<Result<(Slot, u64), TransferError>>>,
    pub fetch_cancel: watch::Sender<bool>,
    pub local_client: u64,
    pub next_sequence: u64,
    pub pending: HashMap<RequestId, Pending>,
    pub groups: HashMap<u64, Group>,
    pub next_group: u64,
    /// Requests received in this burst of inputs, proposed together at its end.
    pub proposals: Vec<(Bytes, Reply)>,
    pub assigned: BTreeMap<Slot, Vec<RequestId>>,
    pub outbox: BTreeMap<NodeId, Vec<Message>>,
    pub apply_batch: Vec<(Slot, Value)>,
    /// The configuration change this replica is waiting for, as primary.
    pub change: Option<(Vec<NodeId>, ChangeReply)>,
    /// Every node of every configuration this replica has been in: the transport admits
    /// them all for this ring, so removed replicas can still learn that they are out.
    pub admitted: std::collections::BTreeSet<NodeId>,
    /// The configuration number the transport's admission was last set for.
    pub admitted_for: u64,
    pub status: watch::Sender<Status>,
    pub shared: Arc<RingShared>,
    pub finished: watch::Sender<bool>,
}

impl RingTask {
    pub(crate) async fn run(mut self) {
        let mut next_statistics_log =
            self.shared.options.statistics_log_interval.map(|every| Instant::now() + every);
        // Building the replica already produced actions (status queries, applies of the
        // chosen slots recovered from the log).
        if let Err(stop) = self.drain().and_then(|()| self.flush()) {
            self.finish(stop).await;
            return;
        }
        let stop = loop {
            let deadline = self.replica.poll_timeout().map(|time| self.clock.instant(time));
            let far = Instant::now() + Duration::from_secs(3600);
            let step: Result<(), Stop> = tokio::select! {
                biased;
                changed = self.durable.changed() => match changed {
                    Ok(()) => self.on_durable(),
                    Err(_) => Err(Stop::Failed(RingFailure::Commit(rsl_log::CommitError::Stopped))),
                },
                event = self.events.recv() => match event {
                    Some(event) => self.on_event(event),
                    None => Err(Stop::Failed(RingFailure::StateMachineStopped)),
                },
                fetched = async { self.fetch.as_mut().expect("guarded").await }, if self.fetch.is_some() => {
                    self.fetch = None;
                    self.on_fetched(fetched.unwrap_or(Err(TransferError::Cancelled)))
                }
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown) => Err(Stop::Requested("shut down")),
                    Some(command) => self.on_command(command),
                    None => Err(Stop::Requested("every handle was dropped")),
                },
                message = self.inbound.recv() => match message {
                    Some(message) => {
                        self.on_message(message);
                        self.drain()
                    }
                    None => Err(Stop::Requested("the runtime stopped routing messages")),
                },
                _ = tokio::time::sleep_until(deadline.unwrap_or(far)), if deadline.is_some() => {
                    let now = self.clock.now();
                    self.replica.handle_timeout(now);
                    self.drain()
                }
                _ = tokio::time::sleep_until(next_statistics_log.unwrap_or(far)), if next_statistics_log.is_some() => {
                    self.log_statistics();
                    next_statistics_log = self.shared.options.statistics_log_interval.map(|every| Instant::now() + every);
                    Ok(())
                }
            };
            // Take whatever else is ready, so sends go out in batches, and fire timers that
            // are due even when other inputs keep the select busy (heartbeats must not
            // starve under load).
            let step = step
                .and_then(|()| self.burst())
                .and_then(|()| self.propose())
                .and_then(|()| self.fire_due_timers());
            if let Err(stop) = step.and_then(|()| self.flush()) {
                break stop;
            }
        };
        self.finish(stop).await;
    }

    fn burst(&mut self) -> Result<(), Stop> {
        for _ in 0..BURST_INPUTS_MAX {
            match self.inbound.try_recv() {
                Ok(message) => {
                    self.on_message(message);
                    self.drain()?;
                }
                Err(_) => break,
            }
        }
        for _ in 0..BURST_INPUTS_MAX {
            match self.commands.try_recv() {
                Ok(Command::Shutdown) => return Err(Stop::Requested("shut down")),
                Ok(command) => self.on_command(command)?,
                Err(_) => break,
            }
        }
        Ok(())
    }

    fn fire_due_timers(&mut self) -> Result<(), Stop> {
        let now = self.clock.now();
        if self.replica.poll_timeout().is_some_and(|deadline| deadline <= now) {
            self.replica.handle_timeout(now);
            self.drain()?;
        }
        Ok(())
    }

    fn on_message(&mut self, message: Message) {
        let now = self.clock.now();
        let (from, kind) = (message.from, message.body.kind());
        if let Err(error) = self.replica.handle_message(now, message) {
            RingCounters::bump(&self.shared.counters.messages_invalid);
            tracing::debug!(ring = self.ring.0, node = %self.node, %from, kind, %error, "dropped an invalid message");
        }
    }

    fn on_durable(&mut self) -> Result<(), Stop> {
        let durable = self.durable.borrow_and_update().clone();
        if let Some(failure) = durable.failure {
            return Err(Stop::Failed(RingFailure::Log(failure)));
        }
        if durable.ticket > self.persisted {
            // Only a ticket the committer reported durable reaches the replica.
            self.persisted = durable.ticket;
            let now = std::time::Instant::now();
            while let Some(&(ticket, started)) = self.persist_started.front() {
                if ticket > durable.ticket {
                    break;
                }
                self.shared.latencies.persist.record(now.duration_since(started));
                self.persist_started.pop_front();
            }
            let now = self.clock.now();
            self.replica.on_persisted(now, durable.ticket);
        }
        self.drain()
    }

    fn on_event(&mut self, event: Event) -> Result<(), Stop> {
        let now = self.clock.now();
        match event {
            Event::Applied { through, responses } => {
                for (_, id, response) in responses {
                    if let Some(pending) = self.pending.remove(&id) {
                        self.complete(pending.reply, Ok(response));
                    }
                }
                // A request whose slot was applied without it lost the slot to a new
                // primary: it certainly did not take effect.
                let later = self.assigned.split_off(&through.next());
                let done = std::mem::replace(&mut self.assigned, later);
                for (slot, ids) in done {
                    for id in ids {
                        if self.pending.get(&id).is_some_and(|p| p.slot == Some(slot)) {
                            let pending = self.pending.remove(&id).expect("checked");
                            let hint = self.replica.primary_hint();
                            self.complete(pending.reply, Err(ReplicateError::NotPrimary { hint }));
                        }
                    }
                }
                self.replica.on_applied(through);
            }
            Event::CheckpointSaved(slot) => self.replica.on_checkpoint_saved(slot),
            Event::Installed(slot, configuration) => {
                let later = self.assigned.split_off(&slot.next());
                let covered = std::mem::replace(&mut self.assigned, later);
                for (covered_slot, ids) in covered {
                    for id in ids {
                        if let Some(pending) = self.pending.remove(&id) {
                            self.complete(
                                pending.reply,
                                Err(ReplicateError::OutcomeUnknown { slot: covered_slot }),
                            );
                        }
                    }
                }
                let configuration = configuration.unwrap_or_else(|| self.replica.status().configuration);
                self.replica.on_checkpoint_installed(now, slot, configuration);
            }
            Event::InstallFailed => self.replica.on_checkpoint_fetch_failed(now),
            Event::CanBecomePrimary(allowed) => {
                tracing::info!(ring = self.ring.0, node = %self.node, allowed, "state machine changed can_become_primary");
                self.replica.set_can_become_primary(allowed);
            }
            Event::LoadFailed { slot, reason } => {
                return Err(Stop::Failed(RingFailure::LoadCheckpoint { slot, reason }));
            }
        }
        self.drain()
    }

    fn on_fetched(&mut self, result: Result<(Slot, u64), TransferError>) -> Result<(), Stop> {
        match result {
            Ok((slot, file_bytes)) => {
                RingCounters::add(&self.shared.counters.checkpoint_bytes_received, file_bytes);
                tracing::info!(ring = self.ring.0, node = %self.node, %slot, file_bytes, "checkpoint fetched");
                self.send_job(Job::Install(slot))?;
            }
            Err(error) => {
                RingCounters::bump(&self.shared.counters.checkpoint_fetch_failures);
                tracing::warn!(ring = self.ring.0, node = %self.node, %error, "checkpoint fetch failed; catch-up retries");
                let now = self.clock.now();
                self.replica.on_checkpoint_fetch_failed(now);
            }
        }
        self.drain()
    }

    fn on_command(&mut self, command: Command) -> Result<(), Stop> {
        let now = self.clock.now();
        match command {
            // Requests wait in `proposals` until the burst of inputs is taken, then go to the
            // replica together (see `propose`), so concurrent callers share slots.
            Command::Replicate { payload, reply } => self.proposals.push((payload, Reply::One(reply))),
            Command::ReplicateMany { payloads, reply } => {
                let group = self.next_group;
                self.next_group += 1;
                let count = payloads.len();
                if count == 0 {
                    let _ = reply.send(Vec::new());
                    return Ok(());
                }
                self.groups.insert(
                    group,
                    Group { results: (0..count).map(|_| None).collect(), missing: count, reply },
                );
                for (index, payload) in payloads.into_iter().enumerate() {
                    self.proposals.push((payload, Reply::Group { group, index: index as u32 }));
                }
            }
            Command::Read { request, reply } => match self.replica.handle_read(now) {
                Ok(index) => {
                    self.flush_applies()?;
                    self.send_job(Job::Read { index, request, reply })?;
                }
                Err(reason) => {
                    let hint = self.replica.primary_hint();
                    let _ = reply.send(Err(ReadError::NotPrimary { reason, hint }));
                }
            },
            Command::Relinquish { target, reply } => {
                let result = self.replica.handle_relinquish(now, target).map_err(RelinquishError::from);
                if let Ok(target) = &result {
                    tracing::info!(ring = self.ring.0, node = %self.node, %target, "relinquishing primacy");
                }
                let _ = reply.send(result);
            }
            Command::ChangeConfiguration { mut members, reply } => {
                match self.replica.handle_change_configuration(now, members.clone()) {
                    Ok(()) => {
                        members.sort_unstable();
                        tracing::info!(ring = self.ring.0, node = %self.node, ?members, "configuration change accepted");
                        if let Some((_, earlier)) = self.change.replace((members, reply)) {
                            let _ = earlier.send(Err(ChangeConfigurationError::Interrupted {
                                primary: self.replica.primary_hint(),
                            }));
                        }
                    }
                    Err(error) => {
                        let _ = reply.send(Err(error.into()));
                    }
                }
            }
            Command::Statistics { reply } => {
                let _ = reply.send(self.statistics());
            }
            Command::Shutdown => unreachable!("handled by the loop"),
        }
        self.drain()
    }

    /// Hands every request waiting in `proposals` to the replica in one call: the primary
    /// queues them all before it opens slots, so requests that arrived in one burst share
    /// slots instead of taking one each while the pipeline has room.
    fn propose(&mut self) -> Result<(), Stop> {
        if self.proposals.is_empty() {
            return Ok(());
        }
        let now = self.clock.now();
        let proposals = std::mem::take(&mut self.proposals);
        let client = self.local_client;
        let first = self.next_sequence + 1;
        self.next_sequence += proposals.len() as u64;
        let mut replies = Vec::with_capacity(proposals.len());
        let requests = proposals.into_iter().enumerate().map(|(index, (payload, reply))| {
            replies.push(reply);
            Request { id: RequestId { client, sequence: first + index as u64 }, payload }
        });
        let outcomes = self.replica.handle_propose_many(now, requests);
        for (index, (outcome, reply)) in outcomes.into_iter().zip(replies).enumerate() {
            match outcome {
                Ok(()) => {
                    let id = RequestId { client, sequence: first + index as u64 };
                    self.pending.insert(id, Pending { reply, slot: None });
                }
                Err(error) => self.complete(reply, Err(propose_error(error))),
            }
        }
        self.drain()
    }

    /// Performs every action the replica has for us, in order.
    fn drain(&mut self) -> Result<(), Stop> {
        while let Some(action) = self.replica.poll_action() {
            match action {
                Action::Persist(request) => self.persist(request)?,
                Action::Send(message) => self.outbox.entry(message.to).or_default().push(message),
                Action::Apply { slot, value } => {
                    if let Value::Configuration(configuration) = &value {
                        tracing::info!(
                            ring = self.ring.0, node = %self.node, %slot, number = configuration.number,
                            members = ?configuration.members, "configuration chosen"
                        );
                        if self.change.as_ref().is_some_and(|(members, _)| *members == configuration.members)
                        {
                            let (_, reply) = self.change.take().expect("checked");
                            let _ = reply.send(Ok(configuration.clone()));
                        }
                    }
                    self.apply_batch.push((slot, value));
                }
                Action::ConfigurationChangeInterrupted { members, primary } => {
                    if self.change.as_ref().is_some_and(|(m, _)| *m == members) {
                        let (_, reply) = self.change.take().expect("checked");
                        let _ = reply.send(Err(ChangeConfigurationError::Interrupted { primary }));
                    }
                }
                Action::TakeCheckpoint { slot, configuration } => {
                    self.flush_applies()?;
                    self.send_job(Job::Checkpoint(slot, configuration))?;
                }
                Action::TruncateLog { below } => self.truncate(below)?,
                Action::FetchCheckpoint { from, slot } => self.start_fetch(from, slot),
                Action::RoleChanged { role, ballot, primary } => {
                    tracing::info!(ring = self.ring.0, node = %self.node, ?role, %ballot, ?primary, "role changed");
                    self.flush_applies()?;
                    self.send_job(Job::Role(RoleChange { role, ballot, primary }))?;
                }
                Action::RequestsDropped { ids, primary } => {
                    for id in ids {
                        if let Some(pending) = self.pending.remove(&id) {
                            self.complete(pending.reply, Err(ReplicateError::NotPrimary { hint: primary }));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn persist(&mut self, request: PersistRequest) -> Result<(), Stop> {
        // Learn which slot each of our own requests went to, to tell later whether a
        // slot applied without it means the request was lost.
        for proposal in &request.proposals {
            if let Value::Batch(requests) = &proposal.value {
                for r in requests.iter().filter(|r| r.id.client == self.local_client) {
                    if let Some(pending) = self.pending.get_mut(&r.id) {
                        if pending.slot != Some(proposal.slot) {
                            pending.slot = Some(proposal.slot);
                            self.assigned.entry(proposal.slot).or_default().push(r.id);
                        }
                    }
                }
            }
        }
        self.persist_started.push_back((request.ticket, std::time::Instant::now()));
        let committer = self.committer.as_ref().expect("running");
        committer.append(request).map_err(|e| Stop::Failed(RingFailure::Commit(e)))
    }

    /// Delivers the outcome of one replicated request.
    fn complete(&mut self, reply: Reply, result: Result<Bytes, ReplicateError>) {
        match reply {
            Reply::One(sender) => drop(sender.send(result)),
            Reply::Group { group, index } => {
                let Some(waiting) = self.groups.get_mut(&group) else { return };
                let slot = &mut waiting.results[index as usize];
                if slot.is_none() {
                    *slot = Some(result);
                    waiting.missing -= 1;
                }
                if waiting.missing == 0 {
                    let done = self.groups.remove(&group).expect("present");
                    let _ = done.reply.send(done.results.into_iter().flatten().collect());
                }
            }
        }
    }

    fn truncate(&mut self, below: Slot) -> Result<(), Stop> {
        // Never below the slot after the oldest kept checkpoint: falling back to it must
        // find every later slot in the log.
        let oldest = self.oldest_checkpoint.load(Ordering::Acquire);
        if oldest == 0 {
            return Ok(());
        }
        let floor = below.min(Slot(oldest).next());
        let committer = self.committer.as_ref().expect("running");
        committer.truncate_below(floor).map_err(|e| Stop::Failed(RingFailure::Commit(e)))
    }

    fn start_fetch(&mut self, from: NodeId, slot: Slot) {
        if self.fetch.is_some() {
            return;
        }
        let fetcher = self.runtime.fetcher.read().clone();
        let store = self.checkpoints.clone().expect("running");
        let request = CheckpointRequest { ring: self.ring, requester: self.node, min_slot: slot };
        let timeout = self.shared.options.checkpoint_transfer_timeout;
        let oldest = self.oldest_checkpoint.clone();
        let mut cancel = self.fetch_cancel.subscribe();
        tracing::info!(ring = self.ring.0, node = %self.node, %from, %slot, "fetching a checkpoint");
        self.fetch = Some(tokio::spawn(async move {
            receive_checkpoint(fetcher, from, request, store, oldest, timeout, &mut cancel).await
        }));
    }

    fn send_job(&self, job: Job) -> Result<(), Stop> {
        self.jobs.send(job).map_err(|_| Stop::Failed(RingFailure::StateMachineStopped))
    }

    fn flush_applies(&mut self) -> Result<(), Stop> {
        if self.apply_batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.apply_batch);
        self.send_job(Job::Apply(batch))
    }

    /// Sends what accumulated, hands applies to the state machine, publishes the status.
    fn flush(&mut self) -> Result<(), Stop> {
        self.flush_applies()?;
        let transport = &self.runtime.transport;
        for (to, messages) in std::mem::take(&mut self.outbox) {
            match transport.send(to, messages) {
                Ok(()) => {}
                Err(error @ rsl_transport::SendError::QueueFull { .. }) => {
                    // Loss the protocol tolerates: retransmission and catch-up cover it.
                    RingCounters::bump(&self.shared.counters.send_errors);
                    tracing::debug!(ring = self.ring.0, node = %self.node, %to, %error, "transport refused messages");
                }
                Err(error) => {
                    // A message that can never be sent (too large, no address) stalls the
                    // ring if it keeps recurring: say so loudly.
                    RingCounters::bump(&self.shared.counters.send_errors);
                    tracing::warn!(ring = self.ring.0, node = %self.node, %to, %error, "transport refused messages");
                }
            }
        }
        let configuration = &self.replica.status().configuration;
        if configuration.number != self.admitted_for {
            self.admitted_for = configuration.number;
            self.admitted.extend(configuration.members.iter().copied());
            transport.membership().set_members(self.ring, self.admitted.iter().copied());
        }
        let replica = &self.replica;
        self.status.send_if_modified(|status| {
            let now = replica.status();
            if *status == now {
                false
            } else {
                *status = now;
                true
            }
        });
        Ok(())
    }

    fn statistics(&self) -> RingStatistics {
        let committer = self.committer.as_ref().expect("running");
        RingStatistics {
            ring: self.ring,
            node: self.node,
            status: self.replica.status(),
            core: self.replica.statistics().clone(),
            log: committer.statistics(),
            runtime: self.shared.counters.snapshot(),
            persist_latency: self.shared.latencies.persist.snapshot(),
            replicate_latency: self.shared.latencies.replicate.snapshot(),
            apply_latency: self.shared.latencies.apply.snapshot(),
            queued_requests: self.replica.queued_requests(),
            in_flight_slots: self.replica.in_flight_slots(),
            pending_requests: self.pending.len() as u64,
        }
    }

    fn log_statistics(&self) {
        let s = self.statistics();
        tracing::info!(
            ring = s.ring.0,
            node = %s.node,
            role = ?s.status.role,
            chosen = %s.status.chosen,
            applied = %s.status.applied,
            checkpoint = %s.status.checkpoint,
            slots_chosen = s.core.slots_chosen,
            requests_executed = s.runtime.requests_executed,
            log_bytes = s.log.store.bytes_written,
            log_syncs = s.log.store.syncs,
            log_requests = s.log.requests,
            persist_p99_us = s.persist_latency.quantile_bound_us(0.99),
            replicate_p99_us = s.replicate_latency.quantile_bound_us(0.99),
            "ring statistics"
        );
    }

    /// Stops everything the ring owns, in an order that loses nothing durable, then
    /// releases the storage.
    async fn finish(mut self, stop: Stop) {
        let reason = match &stop {
            Stop::Requested(why) => {
                tracing::info!(ring = self.ring.0, node = %self.node, why, "ring stopping");
                (*why).to_string()
            }
            Stop::Failed(failure) => {
                tracing::error!(ring = self.ring.0, node = %self.node, %failure, "ring failed; stopping");
                format!("ring failed: {failure}")
            }
        };
        *self.shared.stop_reason.lock() = Some(reason.clone());
        self.runtime.remove_route(self.ring, self.generation);
        // Whatever the replica released is safe to send (it only releases after durability).
        let _ = self.flush_applies();
        let transport = &self.runtime.transport;
        for (to, messages) in std::mem::take(&mut self.outbox) {
            let _ = transport.send(to, messages);
        }
        let _ = self.fetch_cancel.send(true);
        if let Some(fetch) = self.fetch.take() {
            let _ = fetch.await;
        }
        for (_, pending) in std::mem::take(&mut self.pending) {
            self.complete(pending.reply, Err(ReplicateError::Shutdown { reason: reason.clone() }));
        }
        for (_, reply) in std::mem::take(&mut self.proposals) {
            self.complete(reply, Err(ReplicateError::Shutdown { reason: reason.clone() }));
        }
        self.commands.close();
        while let Ok(command) = self.commands.try_recv() {
            fail_command(command, &reason);
        }
        let _ = self.jobs.send(Job::Stop);
        let apply_thread = self.apply_thread.take();
        let committer = self.committer.take();
        let ring = self.ring;
        let closed = tokio::task::spawn_blocking(move || {
            if let Some(thread) = apply_thread {
                if thread.join().is_err() {
                    tracing::error!(ring = ring.0, "the state machine thread panicked");
                }
            }
            // Close (flushing what is queued) and drop the store here, so its lock is
            // released before the ring reports itself finished.
            committer.map(|committer| committer.close().map(drop))
        })
        .await;
        match closed {
            Ok(Some(Err(error))) => tracing::warn!(ring = ring.0, %error, "closing the log"),
            Err(error) => tracing::warn!(ring = ring.0, %error, "closing the log"),
            _ => {}
        }
        // A peer's checkpoint request may still be opening a file in the store: wait for it
        // to let go, so the store's directory lock is released before we report finished.
        if let Some(mut store) = self.checkpoints.take() {
            let deadline = Instant::now() + STORE_RELEASE_WAIT;
            loop {
                match Arc::try_unwrap(store) {
                    Ok(store) => {
                        drop(store);
                        break;
                    }
                    Err(shared) if Instant::now() < deadline => {
                        store = shared;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err(_) => {
                        tracing::warn!(
                            ring = ring.0,
                            "the checkpoint store is still in use; it closes when released"
                        );
                        break;
                    }
                }
            }
        }
        drop(self.status);
        let _ = self.finished.send(true);
    }
}

fn fail_command(command: Command, reason: &str) {
    let reason = reason.to_string();
    match command {
        Command::Replicate { reply, .. } => drop(reply.send(Err(ReplicateError::Shutdown { reason }))),
        Command::ReplicateMany { payloads, reply } => drop(reply.send(
            payloads.iter().map(|_| Err(ReplicateError::Shutdown { reason: reason.clone() })).collect(),
        )),
        Command::Read { reply, .. } => drop(reply.send(Err(ReadError::Shutdown { reason }))),
        Command::Relinquish { reply, .. } => drop(reply.send(Err(RelinquishError::Shutdown { reason }))),
        Command::ChangeConfiguration { reply, .. } => {
            drop(reply.send(Err(ChangeConfigurationError::Shutdown { reason })))
        }
        Command::Statistics { .. } | Command::Shutdown => {}
    }
}

fn propose_error(error: ProposeError) -> ReplicateError {
    match error {
        ProposeError::NotPrimary { hint } => ReplicateError::NotPrimary { hint },
        ProposeError::Relinquishing { target } => ReplicateError::NotPrimary { hint: Some(target) },
        ProposeError::Busy { queued, max } => ReplicateError::Busy { queued, max },
        ProposeError::TooLarge { bytes, max } => ReplicateError::TooLarge { bytes, max },
    }
}
