//! [`Ring`], the public handle of a running ring replica, and the commands it sends to the
//! ring task. Every call that needs the task goes through one helper, `Ring::call`: send the
//! command, await the reply, report a stopped ring (`Ring::call_within` adds a timeout, and
//! `Ring::ask` turns no answer into the operation's own error).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rsl_core::{ChangeError, Configuration, MembershipChange, NodeId, RingId, Slot, Status};
use tokio::sync::{mpsc, oneshot, watch};

use super::apply::Job;
use super::checkpoints::CheckpointNowReply;
use super::controls::Control;
use super::reads::{self, IndexReply};
use super::{Recovery, RingOptions, RingShared};
use crate::error::{
    ChangeConfigurationError, CheckpointNowError, FastReadError, PurgeLogError, ReadError, RelinquishError,
    ReplicateError,
};
use crate::reads::ReadConsistency;
use crate::stats::{RingCounters, RingStatistics};

/// Where the outcome of a configuration change goes.
pub(super) type ChangeReply = oneshot::Sender<Result<Configuration, ChangeConfigurationError>>;

/// What a [`Ring`] asks of its task.
pub(super) enum Command {
    /// The ring task answers [`ReplicateError::Timeout`] itself once `deadline` passes.
    Replicate {
        payload: Bytes,
        reply: oneshot::Sender<Result<Bytes, ReplicateError>>,
        deadline: tokio::time::Instant,
    },
    ReplicateMany {
        payloads: Vec<Bytes>,
        reply: oneshot::Sender<Vec<Result<Bytes, ReplicateError>>>,
    },
    Read {
        consistency: ReadConsistency,
        reply: IndexReply,
    },
    Relinquish {
        target: Option<NodeId>,
        reply: oneshot::Sender<Result<NodeId, RelinquishError>>,
    },
    ChangeConfiguration {
        change: MembershipChange,
        reply: ChangeReply,
    },
    Statistics {
        reply: oneshot::Sender<RingStatistics>,
    },
    CheckpointNow {
        reply: CheckpointNowReply,
    },
    PurgeLog {
        below: Slot,
        reply: oneshot::Sender<Result<Slot, PurgeLogError>>,
    },
    Control(Control),
    /// Work for a state machine that runs on the ring task ([`crate::ApplyOn::RingTask`]):
    /// reads, which otherwise go straight to the apply thread.
    StateMachine(Job),
    Shutdown,
}

impl Command {
    /// Answers the caller of a command the stopping ring will never perform.
    pub(super) fn refuse(self, reason: &str) {
        let stopped = Unanswered::Stopped(reason.to_string());
        match self {
            Command::Replicate { reply, .. } => drop(reply.send(Err(stopped.into()))),
            Command::ReplicateMany { payloads, reply } => {
                drop(reply.send(payloads.iter().map(|_| Err(stopped.clone().into())).collect()))
            }
            Command::Read { reply, .. } => drop(reply.send(Err(stopped.into()))),
            Command::Relinquish { reply, .. } => {
                drop(reply.send(Err(RelinquishError::Shutdown { reason: reason.to_string() })))
            }
            Command::ChangeConfiguration { reply, .. } => drop(reply.send(Err(stopped.into()))),
            Command::CheckpointNow { reply } => {
                drop(reply.send(Err(CheckpointNowError::Shutdown { reason: reason.to_string() })))
            }
            Command::PurgeLog { reply, .. } => {
                drop(reply.send(Err(PurgeLogError::Shutdown { reason: reason.to_string() })))
            }
            Command::Control(control) => control.refuse(reason),
            // Dropping a read's reply tells its caller the ring stopped.
            Command::Statistics { .. } | Command::StateMachine(_) | Command::Shutdown => {}
        }
    }
}

/// The ring stopped (or failed) before answering a command; why.
pub(super) struct Stopped(pub(super) String);

/// Why a command with a timeout got no answer from the ring task.
#[derive(Clone, Debug)]
pub(super) enum Unanswered {
    /// The ring stopped (or failed) first; why.
    Stopped(String),
    /// No answer within the bound, in milliseconds.
    TimedOut { after_ms: u64 },
}

impl From<Unanswered> for ReplicateError {
    fn from(unanswered: Unanswered) -> ReplicateError {
        match unanswered {
            Unanswered::Stopped(reason) => ReplicateError::Shutdown { reason },
            Unanswered::TimedOut { after_ms } => ReplicateError::Timeout { after_ms },
        }
    }
}

impl From<Unanswered> for ReadError {
    fn from(unanswered: Unanswered) -> ReadError {
        match unanswered {
            Unanswered::Stopped(reason) => ReadError::Shutdown { reason },
            Unanswered::TimedOut { after_ms } => ReadError::Timeout { after_ms },
        }
    }
}

impl From<Unanswered> for ChangeConfigurationError {
    fn from(unanswered: Unanswered) -> ChangeConfigurationError {
        match unanswered {
            Unanswered::Stopped(reason) => ChangeConfigurationError::Shutdown { reason },
            Unanswered::TimedOut { after_ms } => ChangeConfigurationError::Timeout { after_ms },
        }
    }
}

/// One replica of a running ring: replicate requests, read, hand over primacy, change the
/// members, watch its status. The names in brackets are Azure RSL's.
///
/// Get one from [`Ring::builder`] or [`Runtime::start_ring`](crate::Runtime::start_ring).
/// Cheap to clone; every clone drives the same replica. The replica runs until
/// [`Ring::shutdown`], until its runtime shuts down, until it fails (a log error), or until
/// every clone is dropped (it then stops in the background). A ring built with
/// [`RingBuilder::transport`](crate::RingBuilder::transport) runs in a runtime of its own,
/// which stops with it.
#[derive(Clone, Debug)]
pub struct Ring {
    commands: mpsc::Sender<Command>,
    /// The apply thread's queue; `None` when the ring task runs the state machine.
    jobs: Option<rsl_log::handoff::Sender<Job>>,
    pub(super) status: watch::Receiver<Status>,
    pub(super) shared: Arc<RingShared>,
}

/// A [`Ring`] that does not keep the replica running: the runtime's routing table holds one
/// per ring and makes handles from it on demand.
#[derive(Debug)]
pub(crate) struct WeakRing {
    commands: mpsc::WeakSender<Command>,
    jobs: Option<rsl_log::handoff::Sender<Job>>,
    status: watch::Receiver<Status>,
    shared: Arc<RingShared>,
}

impl WeakRing {
    /// A handle, unless the replica is stopping because every handle was dropped.
    pub(crate) fn upgrade(&self) -> Option<Ring> {
        Some(Ring {
            commands: self.commands.upgrade()?,
            jobs: self.jobs.clone(),
            status: self.status.clone(),
            shared: self.shared.clone(),
        })
    }
}

impl Ring {
    pub(super) fn new(
        commands: mpsc::Sender<Command>,
        jobs: Option<rsl_log::handoff::Sender<Job>>,
        status: watch::Receiver<Status>,
        shared: Arc<RingShared>,
    ) -> Ring {
        Ring { commands, jobs, status, shared }
    }

    /// Hands `job` to whoever runs the state machine: the apply thread, or the ring task.
    /// Fails only when the ring stopped.
    pub(super) async fn send_job(&self, job: Job) -> Result<(), Stopped> {
        let stopped = || Stopped(self.shared.stop_reason());
        match &self.jobs {
            Some(jobs) => jobs.send(job).map_err(|_| stopped()),
            None => self.commands.send(Command::StateMachine(job)).await.map_err(|_| stopped()),
        }
    }

    pub(crate) fn downgrade(&self) -> WeakRing {
        WeakRing {
            commands: self.commands.downgrade(),
            jobs: self.jobs.clone(),
            status: self.status.clone(),
            shared: self.shared.clone(),
        }
    }

    /// Asks the replica to stop without waiting for it (from code that cannot wait).
    pub(crate) fn request_stop(&self) {
        let _ = self.commands.try_send(Command::Shutdown);
    }

    /// The ring.
    pub fn ring(&self) -> RingId {
        self.shared.ring
    }

    /// This replica's node.
    pub fn node(&self) -> NodeId {
        self.shared.node
    }

    /// The runtime options this ring was started with (where it applies, its timeouts).
    pub fn options(&self) -> &RingOptions {
        &self.shared.options
    }

    /// Sends the command `command` builds around its reply channel and waits for the answer;
    /// the stop reason when the ring stopped before answering.
    pub(super) async fn call<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, Stopped> {
        let (reply, answer) = oneshot::channel();
        if self.commands.send(command(reply)).await.is_ok() {
            if let Ok(answer) = answer.await {
                return Ok(answer);
            }
        }
        Err(Stopped(self.shared.stop_reason()))
    }

    /// `Ring::call`, giving up after `timeout`.
    pub(super) async fn call_within<T>(
        &self,
        timeout: Duration,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, Unanswered> {
        match tokio::time::timeout(timeout, self.call(command)).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(Stopped(reason))) => Err(Unanswered::Stopped(reason)),
            Err(_) => Err(Unanswered::TimedOut { after_ms: timeout.as_millis() as u64 }),
        }
    }

    /// `Ring::call_within` for a command answered with a `Result`: no answer becomes the
    /// operation's own error.
    pub(super) async fn ask<T, E: From<Unanswered>>(
        &self,
        timeout: Duration,
        command: impl FnOnce(oneshot::Sender<Result<T, E>>) -> Command,
    ) -> Result<T, E> {
        self.call_within(timeout, command).await.unwrap_or_else(|unanswered| Err(unanswered.into()))
    }

    /// Replicates `request` [RSL's ReplicateRequest]: the primary gives it a slot, a
    /// majority makes it durable, and once chosen every replica executes it. Returns this
    /// replica's state machine's response. Only the primary accepts requests; others answer
    /// [`ReplicateError::NotPrimary`] with a hint. Gives up after
    /// [`RingOptions::request_timeout`](crate::RingOptions::request_timeout).
    pub async fn replicate(&self, request: impl Into<Bytes>) -> Result<Bytes, ReplicateError> {
        let payload = request.into();
        let started = Instant::now();
        let timeout = self.shared.options.request_timeout;
        // The ring task keeps the deadline (one timer per ring, not one per call); the
        // caller needs a timer only while it waits for room in a full command queue.
        let deadline = tokio::time::Instant::now() + timeout;
        let (reply, answer) = oneshot::channel();
        let command = Command::Replicate { payload, reply, deadline };
        let sent = match self.commands.try_send(command) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Unanswered::Stopped(self.shared.stop_reason())),
            Err(mpsc::error::TrySendError::Full(command)) => {
                match tokio::time::timeout_at(deadline, self.commands.send(command)).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(_)) => Err(Unanswered::Stopped(self.shared.stop_reason())),
                    Err(_) => Err(Unanswered::TimedOut { after_ms: timeout.as_millis() as u64 }),
                }
            }
        };
        let result = match sent {
            Ok(()) => {
                answer.await.unwrap_or_else(|_| Err(Unanswered::Stopped(self.shared.stop_reason()).into()))
            }
            Err(unanswered) => Err(unanswered.into()),
        };
        self.count_replicated(started, &result);
        result
    }

    /// Replicates through the command `command` builds, within the request timeout,
    /// counting the outcome and its latency.
    pub(super) async fn replicate_through(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<Bytes, ReplicateError>>) -> Command,
    ) -> Result<Bytes, ReplicateError> {
        let started = Instant::now();
        let result = self.ask(self.shared.options.request_timeout, command).await;
        self.count_replicated(started, &result);
        result
    }

    /// Counts a replicated request's outcome, and its latency from `started` if it succeeded.
    fn count_replicated(&self, started: Instant, result: &Result<Bytes, ReplicateError>) {
        match result {
            Ok(_) => {
                RingCounters::bump(&self.shared.counters.requests_replicated);
                self.shared.latencies.replicate.record(started.elapsed());
            }
            Err(_) => RingCounters::bump(&self.shared.counters.requests_failed),
        }
    }

    /// Replicates many requests submitted together: the primary queues them all before it
    /// opens slots, so they share slots (one [`Ring::replicate`] per request would give each
    /// its own slot while the pipeline has room), and the ring task is woken once. Returns
    /// one result per request, in order, once every one has its outcome; each is what
    /// `replicate` would have returned. The timeout applies to the whole group.
    pub async fn replicate_many(&self, requests: Vec<Bytes>) -> Vec<Result<Bytes, ReplicateError>> {
        if requests.is_empty() {
            return Vec::new();
        }
        let started = Instant::now();
        let count = requests.len();
        let timeout = self.shared.options.request_timeout;
        let command = |reply| Command::ReplicateMany { payloads: requests, reply };
        let results = match self.call_within(timeout, command).await {
            Ok(results) => results,
            Err(unanswered) => (0..count).map(|_| Err(unanswered.clone().into())).collect(),
        };
        let succeeded = results.iter().filter(|r| r.is_ok()).count() as u64;
        RingCounters::add(&self.shared.counters.requests_replicated, succeeded);
        RingCounters::add(&self.shared.counters.requests_failed, count as u64 - succeeded);
        if succeeded > 0 {
            self.shared.latencies.replicate.record(started.elapsed());
        }
        results
    }

    /// A linearizable read without a slot, on the primary: under its lease where it holds,
    /// through a read index otherwise ([`ReadConsistency::LeaseOrReadIndex`]); see
    /// [`Ring::read_with`].
    pub async fn read(&self, request: impl Into<Bytes>) -> Result<Bytes, ReadError> {
        self.read_with(request, ReadConsistency::LeaseOrReadIndex).await
    }

    /// A linearizable read without a slot [RSL's fast read on the primary]: it sees every
    /// write acknowledged before the call. `consistency` says how the ring makes sure of
    /// it (the lease, a read index confirmed by a round of heartbeats, or the lease with
    /// the read index as fallback); with [`ReadConsistency::ReadIndex`] a secondary asks
    /// the primary for the index and serves the read itself. The state machine serves the
    /// read once it applied the slot found. Gives up after
    /// [`RingOptions::read_timeout`](crate::RingOptions::read_timeout) with
    /// [`ReadError::Timeout`]; a replica that cannot confirm (not primary, no primary
    /// known, cut off from its quorum) answers [`ReadError::NotPrimary`] or times out, and
    /// never serves a stale read.
    pub async fn read_with(
        &self,
        request: impl Into<Bytes>,
        consistency: ReadConsistency,
    ) -> Result<Bytes, ReadError> {
        let request = request.into();
        let timeout = self.shared.options.read_timeout;
        let read = async {
            let index = self
                .call(|reply| Command::Read { consistency, reply })
                .await
                .map_err(|Stopped(reason)| ReadError::Shutdown { reason })??;
            reads::serve(self, index, request).await
        };
        let result = tokio::time::timeout(timeout, read)
            .await
            .unwrap_or(Err(ReadError::Timeout { after_ms: timeout.as_millis() as u64 }));
        if result.is_err() {
            RingCounters::bump(&self.shared.counters.reads_failed);
        }
        result
    }

    /// A fast read on this replica (any role) once it applied at least `min_slot` [RSL's
    /// FastRead]: read-your-writes and monotonic reads, not linearizable. Waits up to
    /// [`RingOptions::fast_read_wait_max`](crate::RingOptions::fast_read_wait_max) for the
    /// slot.
    pub async fn read_fast(&self, request: impl Into<Bytes>, min_slot: Slot) -> Result<Bytes, FastReadError> {
        self.read_fast_within(request, min_slot, self.shared.options.fast_read_wait_max).await
    }

    /// [`Ring::read_fast`] with an explicit bound on the wait for `min_slot`. The read goes
    /// straight to the state machine's thread, not through the ring task.
    pub async fn read_fast_within(
        &self,
        request: impl Into<Bytes>,
        min_slot: Slot,
        wait: Duration,
    ) -> Result<Bytes, FastReadError> {
        let request = request.into();
        if let Some(result) = reads::serve_fast_concurrently(&self.shared, min_slot, &request, wait).await {
            if result.is_err() {
                RingCounters::bump(&self.shared.counters.reads_failed);
            }
            return result;
        }
        let (reply, answer) = oneshot::channel();
        let job = Job::FastRead { min_slot, request, reply };
        if self.send_job(job).await.is_err() {
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

    /// Every slot up to here has been executed by this replica's state machine. It is raised
    /// before the answers of those slots leave the state machine's thread, so once this
    /// replica answered a request it covers the request's slot; [`Ring::status`]'s
    /// `applied` is published after the answers and may still lag. It goes back only when
    /// [`Ring::reseed_from`] loads an older checkpoint.
    pub fn applied(&self) -> Slot {
        Slot(self.shared.applied.load(Ordering::Acquire))
    }

    /// Hands primacy to `target` (or the most up-to-date live member) [RSL's
    /// RelinquishPrimary]: the primary stops taking requests, waits for its in-flight slots,
    /// then tells the target to campaign at once. Returns the target.
    pub async fn relinquish_primary(&self, target: Option<NodeId>) -> Result<NodeId, RelinquishError> {
        self.call(|reply| Command::Relinquish { target, reply })
            .await
            .unwrap_or_else(|Stopped(reason)| Err(RelinquishError::Shutdown { reason }))
    }

    /// Changes the ring's members [RSL's ChangeConfiguration]: add, remove, replace, grow or
    /// shrink; add, promote or drop learners; change members' addresses. A bare
    /// `Vec<NodeId>` asks for those voters and no learners; a [`MembershipChange`] names
    /// both (and addresses). The primary proposes a configuration value at the next slot
    /// `s`, and the new configuration governs every slot from `s + 1`; the state machine
    /// hears of it through
    /// [`StateMachine::configuration_changed`](crate::StateMachine::configuration_changed).
    /// Returns the new configuration once the change is chosen. Only the primary accepts,
    /// one change at a time; [`ChangeConfigurationError::Interrupted`] if it stops being
    /// primary first. New members catch up by themselves (a checkpoint, then slots): start
    /// them first, with [`rsl_core::Config::joining`] set; the safe way in is as a learner
    /// first, then a promotion. A change that promotes a learner still too far behind waits
    /// for it up to [`RingOptions::learner_promotion_wait`](crate::RingOptions::learner_promotion_wait),
    /// asking again every heartbeat interval, then fails with
    /// [`ChangeConfigurationError::LearnerBehind`].
    pub async fn change_configuration(
        &self,
        change: impl Into<MembershipChange>,
    ) -> Result<Configuration, ChangeConfigurationError> {
        let change = change.into();
        let timeout = self.shared.options.request_timeout;
        let wait = self.shared.options.learner_promotion_wait;
        let started = Instant::now();
        loop {
            let command = |reply| Command::ChangeConfiguration { change: change.clone(), reply };
            match self.ask(timeout, command).await {
                Err(ChangeConfigurationError::Refused(ChangeError::LearnerBehind {
                    node,
                    holds,
                    chosen,
                    lag_slots_max,
                })) => {
                    let waited = started.elapsed();
                    if waited >= wait {
                        let waited_ms = waited.as_millis() as u64;
                        return Err(ChangeConfigurationError::LearnerBehind {
                            node,
                            holds,
                            chosen,
                            lag_slots_max,
                            waited_ms,
                        });
                    }
                    tracing::info!(%node, %holds, %chosen, lag_slots_max, "waiting for a learner to catch up before promoting it");
                    let retry = Duration::from_millis(self.shared.timing.lock().heartbeat_interval_ms);
                    tokio::time::sleep(retry.min(wait - waited)).await;
                }
                result => return result,
            }
        }
    }

    /// The replica's status (role, ballot, chosen and applied slots, configuration), kept
    /// current: `changed().await` on the receiver to follow it.
    pub fn status(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// A snapshot of the replica's counters and latencies (see
    /// [`render_prometheus`](crate::render_prometheus)); `None` once it stopped.
    pub async fn statistics(&self) -> Option<RingStatistics> {
        self.call(|reply| Command::Statistics { reply }).await.ok()
    }

    /// What the replica recovered from its storage when it started.
    pub fn recovery(&self) -> &Recovery {
        &self.shared.recovery
    }

    /// Whether the replica stopped (shut down or failed).
    pub fn is_stopped(&self) -> bool {
        *self.shared.finished.borrow()
    }

    /// Why the replica stopped, once it has.
    pub fn stop_reason(&self) -> Option<String> {
        self.shared.stop_reason.lock().clone()
    }

    /// Stops the replica: fails waiting requests with [`ReplicateError::Shutdown`], stops
    /// the apply thread (after the state machine call in progress returns), flushes and
    /// closes the log, and releases the storage (a restart may open it again as soon as this
    /// returns). A ring with a runtime of its own shuts that runtime down too.
    pub async fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown).await;
        let mut finished = self.shared.finished.clone();
        let _ = finished.wait_for(|done| *done).await;
    }
}
