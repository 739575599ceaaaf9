//! The ring task: the loop that owns a ring's [`Replica`] and feeds it every input (inbound
//! messages, client commands, timers, durable tickets, apply thread events, fetched
//! checkpoints), performing the replica's actions after each (see `actions`).

use std::sync::Arc;
use std::time::Duration;

use rsl_core::{Message, Replica, Status};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::apply::{ApplyQueue, Event};
use super::checkpoints::Checkpoints;
use super::controls::Controls;
use super::handle::Command;
use super::network::Network;
use super::persist::Persist;
use super::reads::ReadIndexes;
use super::requests::Requests;
use super::stop::{Stop, Stopping};
use super::{Clock, RingShared};
use crate::error::{ChangeConfigurationError, RelinquishError, RingFailure};
use crate::stats::{RingCounters, RingStatistics};

/// Inputs a ring task handles per wake-up before it flushes sends (bounds latency).
const BURST_INPUTS_MAX: usize = 256;

/// Where the runtime routes the ring's inbound messages.
#[derive(Debug)]
pub(crate) struct Inbox {
    sender: mpsc::Sender<Message>,
    counters: Arc<RingCounters>,
}

impl Inbox {
    pub(super) fn new(sender: mpsc::Sender<Message>, counters: Arc<RingCounters>) -> Inbox {
        Inbox { sender, counters }
    }

    /// Hands a message to the ring task without waiting. Drops it (counted) when the
    /// queue is full: the protocol tolerates loss, a full queue means the ring is behind,
    /// and blocking here would stall every other ring of the runtime.
    pub(crate) fn deliver(&self, message: Message) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.sender.try_send(message) {
            RingCounters::bump(&self.counters.messages_dropped_queue_full);
        }
    }
}

/// The ring task: owns the replica and everything that performs its actions. Built by
/// [`RingTask::start`], driven by [`RingTask::run`].
pub(crate) struct RingTask {
    pub(super) shared: Arc<RingShared>,
    pub(super) replica: Replica,
    pub(super) clock: Clock,
    pub(super) commands: mpsc::Receiver<Command>,
    pub(super) inbound: mpsc::Receiver<Message>,
    pub(super) events: mpsc::UnboundedReceiver<Event>,
    pub(super) persist: Persist,
    pub(super) apply: ApplyQueue,
    pub(super) checkpoints: Checkpoints,
    pub(super) requests: Requests,
    pub(super) reads: ReadIndexes,
    pub(super) network: Network,
    pub(super) status: watch::Sender<Status>,
    pub(super) finished: watch::Sender<bool>,
    pub(super) controls: Controls,
}

impl RingTask {
    /// Runs the ring until it is asked to stop or fails; what it returns still owns the
    /// storage until [`Stopping::finish`].
    pub(crate) async fn run(mut self) -> Stopping {
        tracing::info!(
            ring = self.shared.ring.0, node = %self.shared.node, checkpoint = %self.shared.recovery.checkpoint,
            chosen = %self.replica.chosen(), "ring started"
        );
        let mut next_statistics_log =
            self.shared.options.statistics_log_interval.map(|every| Instant::now() + every);
        // Building the replica already produced actions (status queries, applies of the
        // chosen slots recovered from the log).
        if let Err(stop) = self.drain().and_then(|()| self.flush()) {
            return self.stopping(stop);
        }
        // One timer for the ring: the replica's next timeout and the earliest `replicate`
        // deadline. It is moved only when something is due earlier than it is set for; one
        // that fires early finds nothing due and is set again.
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        let stop = loop {
            let due = self.next_due();
            if let Some(due) = due.filter(|due| armed.is_none_or(|armed| *due < armed)) {
                timer.as_mut().reset(due);
                armed = Some(due);
            }
            let far = Instant::now() + Duration::from_secs(3600);
            let step: Result<(), Stop> = tokio::select! {
                biased;
                changed = self.persist.changed() => match changed {
                    Ok(()) => self.on_durable(),
                    Err(failure) => Err(failure.into()),
                },
                event = self.events.recv(), if self.apply.on_thread() => match event {
                    Some(event) => self.on_event(event),
                    None => Err(RingFailure::StateMachineStopped.into()),
                },
                fetched = self.checkpoints.fetched(), if self.checkpoints.fetching() => self.on_fetched(fetched),
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
                // What is due is handled below, with the timers that came due meanwhile.
                () = &mut timer, if armed.is_some() => {
                    armed = None;
                    Ok(())
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
                .and_then(|()| self.fire_due_timers())
                .and_then(|()| self.flush_inline_log());
            if let Err(stop) = step.and_then(|()| self.flush()) {
                break stop;
            }
        };
        self.stopping(stop)
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

    /// When the ring's timer must fire next: the replica's next timeout or the earliest
    /// deadline of a waiting `replicate` call.
    fn next_due(&mut self) -> Option<Instant> {
        let replica = self.replica.poll_timeout().map(|time| self.clock.instant(time));
        match (replica, self.requests.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Fires the replica's timers that are due and answers the `replicate` calls whose
    /// deadline passed.
    fn fire_due_timers(&mut self) -> Result<(), Stop> {
        let now = self.clock.now();
        if self.replica.poll_timeout().is_some_and(|deadline| deadline <= now) {
            self.replica.handle_timeout(now);
            self.drain()?;
        }
        self.requests.expire(Instant::now());
        Ok(())
    }

    /// A log the ring task flushes itself is flushed before the wake-up's sends go out, so
    /// the messages that waited for it (an `Accepted`) leave with them.
    fn flush_inline_log(&mut self) -> Result<(), Stop> {
        if self.persist.inline_pending() {
            self.on_durable()
        } else {
            Ok(())
        }
    }

    fn on_message(&mut self, message: Message) {
        let now = self.clock.now();
        let (from, kind) = (message.from, message.body.kind());
        if let Err(error) = self.replica.handle_message(now, message) {
            RingCounters::bump(&self.shared.counters.messages_invalid);
            let (ring, node) = (self.shared.ring.0, self.shared.node);
            tracing::debug!(ring, %node, %from, kind, %error, "dropped an invalid message");
        }
    }

    fn on_durable(&mut self) -> Result<(), Stop> {
        if let Some(ticket) = self.persist.newly_durable(&self.shared.latencies.persist)? {
            let now = self.clock.now();
            self.replica.on_persisted(now, ticket);
        }
        self.drain()
    }

    pub(super) fn on_event(&mut self, event: Event) -> Result<(), Stop> {
        let now = self.clock.now();
        match event {
            Event::Applied { through, responses } => {
                self.requests.applied(through, responses, self.replica.primary_hint());
                self.replica.on_applied(through);
            }
            Event::CheckpointSaved(slot) => self.on_checkpoint_saved(slot),
            Event::CheckpointFailed { slot, reason } => self.on_checkpoint_failed(slot, reason),
            Event::Installed(slot, configuration) => {
                self.requests.installed(slot);
                let configuration = configuration.unwrap_or_else(|| self.replica.status().configuration);
                self.replica.on_checkpoint_installed(now, slot, configuration);
            }
            Event::InstallFailed => self.replica.on_checkpoint_fetch_failed(now),
            Event::CanBecomePrimary(allowed) => {
                let (ring, node) = (self.shared.ring.0, self.shared.node);
                tracing::info!(ring, %node, allowed, "state machine changed can_become_primary");
                self.replica.set_can_become_primary(allowed);
            }
            Event::LoadFailed { slot, reason } => {
                return Err(RingFailure::LoadCheckpoint { slot, reason }.into());
            }
            Event::Closed(last_slot) => self.replica.on_last_slot_known(last_slot),
            Event::Reseeded { slot, record } => self.on_reseeded(slot, record)?,
            Event::ReseedFailed(reason) => self.on_reseed_unusable(reason),
            Event::Panicked(message) => return Err(RingFailure::StateMachinePanicked { message }.into()),
        }
        self.drain()
    }

    fn on_command(&mut self, command: Command) -> Result<(), Stop> {
        let now = self.clock.now();
        let (ring, node) = (self.shared.ring.0, self.shared.node);
        match command {
            // Requests wait until the burst of inputs is taken, then go to the replica
            // together (see `propose`), so concurrent callers share slots.
            Command::Replicate { payload, reply, deadline } => self.requests.queue(payload, reply, deadline),
            Command::ReplicateMany { payloads, reply } => self.requests.queue_group(payloads, reply),
            // Read indexes, like requests, go to the replica at the end of the burst.
            Command::Read { consistency, reply } => self.on_read(consistency, reply),
            Command::Relinquish { target, reply } => {
                let result = self.replica.handle_relinquish(now, target).map_err(RelinquishError::from);
                if let Ok(target) = &result {
                    tracing::info!(ring, %node, %target, "relinquishing primacy");
                }
                let _ = reply.send(result);
            }
            Command::ChangeConfiguration { change, reply } => {
                match self.replica.handle_change_configuration(now, change.clone()) {
                    Ok(()) => {
                        let (mut members, mut learners) = (change.members, change.learners);
                        members.sort_unstable();
                        learners.sort_unstable();
                        tracing::info!(ring, %node, ?members, ?learners, "configuration change accepted");
                        self.requests.await_change(members, learners, reply, self.replica.primary_hint());
                    }
                    Err(error) => {
                        let _ = reply.send(Err(ChangeConfigurationError::from(error)));
                    }
                }
            }
            Command::Statistics { reply } => {
                let _ = reply.send(self.statistics());
            }
            Command::CheckpointNow { reply } => return self.on_checkpoint_now(reply),
            Command::PurgeLog { below, reply } => return self.on_purge_log(below, reply),
            Command::Control(control) => return self.on_control(control),
            Command::StateMachine(job) => self.apply.send(job)?,
            Command::Shutdown => unreachable!("handled by the loop"),
        }
        self.drain()
    }

    /// Hands the requests of this burst to the replica together.
    fn propose(&mut self) -> Result<(), Stop> {
        let now = self.clock.now();
        let proposed = self.requests.propose(&mut self.replica, now);
        if self.reads.start(&mut self.replica, now) || proposed {
            self.drain()
        } else {
            Ok(())
        }
    }

    fn statistics(&self) -> RingStatistics {
        let shared = &self.shared;
        RingStatistics {
            ring: shared.ring,
            node: shared.node,
            status: self.replica.status(),
            core: self.replica.statistics().clone(),
            log: self.persist.statistics(),
            runtime: shared.counters.snapshot(),
            persist_latency: shared.latencies.persist.snapshot(),
            replicate_latency: shared.latencies.replicate.snapshot(),
            apply_latency: shared.latencies.apply.snapshot(),
            queued_requests: self.replica.queued_requests(),
            in_flight_slots: self.replica.in_flight_slots(),
            pending_requests: self.requests.pending(),
            replicas: self.replicas(),
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
}
