//! The apply thread: one OS thread per ring owns the user's [`StateMachine`] and runs every
//! call into it, in the order the ring task hands out jobs (see the crate's design notes
//! for why a thread). [`ApplyQueue`] is the ring task's end of it: an `rsl_log::handoff`
//! queue, so an idle thread sleeps at once (no spinning or yielding, which on few CPUs
//! competes with the ring tasks) and a hand-off wakes it with one futex wake, only when it
//! sleeps; it takes every job queued in one lock.
//!
//! With [`ApplyOn::RingTask`] there is no thread: the queue keeps the same [`ApplyThread`]
//! and performs each job on the ring task as it is handed over, and the events it reports
//! are handled in the same wake-up (`RingTask::flush`), so a request is answered without
//! a hand-off to another thread and back. A panic in the state machine is caught there and
//! stops the ring, as the thread's end does.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use rsl_core::{Ballot, Configuration, NodeId, Request, RequestId, Slot, Value};
use rsl_log::handoff::{self, Receiver, RecvTimeoutError, Sender};
use rsl_log::{CheckpointReader, CheckpointStore};
use tokio::sync::{mpsc, oneshot};

use super::checkpoints::OldestCheckpoint;
use super::{ApplyOn, RingShared};
use crate::error::{FastReadError, ReadError, RingFailure};
use crate::framing::{read_ring_record, write_ring_record, RingRecord};
use crate::state_machine::{RoleChange, StateMachine};
use crate::stats::RingCounters;

/// Work for the apply thread, performed in order.
pub(crate) enum Job {
    /// Execute chosen values, in slot order.
    Apply(Vec<(Slot, Value)>),
    /// Save a checkpoint as of this slot, with the configuration in force after it.
    Checkpoint(Slot, Configuration),
    /// Load the published checkpoint at this slot (fetched from a peer).
    Install(Slot, NodeId),
    /// A checkpoint at this slot was copied from a peer into the store, not loaded.
    Copied(Slot, NodeId),
    /// This replica is primary of the ballot and every inherited slot up to this one is
    /// handed out.
    PrimaryRecovered(Ballot, Slot),
    /// Load the published checkpoint at this slot, fetched from a peer to re-seed the state
    /// machine (`reseed.rs`): even when it is older than what was applied.
    Reseed(Slot),
    /// A linearizable read: serve once everything up to `index` is applied.
    Read { index: Slot, request: Bytes, reply: oneshot::Sender<Result<Bytes, ReadError>> },
    /// A fast read: serve once `min_slot` is applied (the caller bounds the wait).
    FastRead { min_slot: Slot, request: Bytes, reply: oneshot::Sender<Result<Bytes, FastReadError>> },
    /// Tell the state machine about a role change.
    Role(RoleChange),
    /// Finish: drop the state machine.
    Stop,
}

/// What the apply thread reports to the ring task.
#[derive(Debug)]
pub(crate) enum Event {
    /// Every slot up to `through` is applied; responses to this replica's own requests.
    Applied { through: Slot, responses: Vec<(Slot, RequestId, Bytes)> },
    /// The checkpoint at this slot is durable.
    CheckpointSaved(Slot),
    /// No checkpoint at this slot was saved: the state machine refused, or saving failed.
    CheckpointFailed { slot: Slot, reason: CheckpointFailure },
    /// A checkpoint fetched from a peer is loaded: the state is as of this slot, and the
    /// configuration saved with it (none when the state was already past it).
    Installed(Slot, Option<Configuration>),
    /// Fetching or installing a checkpoint failed; catch-up will retry.
    InstallFailed,
    /// The state machine's [`StateMachine::can_become_primary`] answer changed.
    CanBecomePrimary(bool),
    /// The state machine failed to load a checkpoint: its state is undefined.
    LoadFailed { slot: Slot, reason: String },
    /// An installed checkpoint says the ring's last request was chosen at this slot.
    Closed(Slot),
    /// The re-seed's checkpoint is loaded: the state is as of `slot`.
    Reseeded { slot: Slot, record: RingRecord },
    /// The re-seed's checkpoint could not be used; nothing was loaded.
    ReseedFailed(String),
    /// The state machine panicked (the panic's message): the thread is ending.
    Panicked(String),
}

/// Why a checkpoint was not saved.
#[derive(Debug)]
pub(crate) enum CheckpointFailure {
    /// [`StateMachine::allow_save`] said no.
    Refused,
    /// An installed checkpoint moved the state past the slot.
    Stale { applied: Slot },
    /// Writing it failed.
    Failed(String),
}

enum Waiting {
    Lease { index: Slot, request: Bytes, reply: oneshot::Sender<Result<Bytes, ReadError>> },
    Fast { min_slot: Slot, request: Bytes, reply: oneshot::Sender<Result<Bytes, FastReadError>> },
}

impl Waiting {
    fn slot(&self) -> Slot {
        match self {
            Waiting::Lease { index, .. } => *index,
            Waiting::Fast { min_slot, .. } => *min_slot,
        }
    }

    fn abandoned(&self) -> bool {
        match self {
            Waiting::Lease { reply, .. } => reply.is_closed(),
            Waiting::Fast { reply, .. } => reply.is_closed(),
        }
    }
}

/// The ring task's end of the apply thread: jobs in order, with the chosen values of one
/// wake-up handed over as one batch.
pub(super) struct ApplyQueue {
    worker: Worker,
    /// Chosen values not yet handed to the thread.
    batch: Vec<(Slot, Value)>,
}

/// Who performs the jobs.
enum Worker {
    /// The apply thread, fed through a channel.
    Thread { jobs: Sender<Job>, thread: Option<std::thread::JoinHandle<()>> },
    /// The ring task itself ([`ApplyOn::RingTask`]); `None` once the state machine panicked
    /// or stopped.
    RingTask(Option<Box<Inline>>),
}

/// The state machine on the ring task, with what the thread's loop keeps between jobs.
struct Inline {
    applier: ApplyThread,
    waiting: Vec<Waiting>,
    can_become_primary: Option<bool>,
    polled_at: Instant,
}

impl ApplyQueue {
    /// Another sender of jobs, for the ring's handles (fast reads go straight to the
    /// thread); `None` when the ring task runs the state machine, which then takes reads
    /// as commands.
    pub(super) fn jobs(&self) -> Option<Sender<Job>> {
        match &self.worker {
            Worker::Thread { jobs, .. } => Some(jobs.clone()),
            Worker::RingTask(_) => None,
        }
    }

    /// Whether the state machine runs on a thread of its own, whose events arrive on the
    /// ring task's channel.
    pub(super) fn on_thread(&self) -> bool {
        matches!(self.worker, Worker::Thread { .. })
    }

    /// Queues a chosen value; it goes out with the next [`ApplyQueue::flush`].
    pub(super) fn push(&mut self, slot: Slot, value: Value) {
        self.batch.push((slot, value));
    }

    /// Hands the queued values to the thread (on the ring task: executes them).
    pub(super) fn flush(&mut self) -> Result<(), RingFailure> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        self.send(Job::Apply(batch))
    }

    /// Hands a job to the thread, behind everything queued before it (on the ring task:
    /// performs it now).
    pub(super) fn send(&mut self, job: Job) -> Result<(), RingFailure> {
        match &mut self.worker {
            Worker::Thread { jobs, .. } => jobs.send(job).map_err(|_| RingFailure::StateMachineStopped),
            Worker::RingTask(inline) => Self::guarded(inline, |inline| {
                let go_on = inline.applier.perform(job, &mut inline.waiting);
                inline.applier.serve_reads(&mut inline.waiting);
                go_on
            }),
        }
    }

    /// On the ring task: asks the state machine whether it may become primary when the
    /// poll interval has passed since it was last asked (the thread does so on its own).
    pub(super) fn poll_veto(&mut self) -> Result<(), RingFailure> {
        let Worker::RingTask(inline) = &mut self.worker else { return Ok(()) };
        if inline
            .as_ref()
            .is_some_and(|inline| inline.polled_at.elapsed() < inline.applier.veto_poll_interval)
        {
            return Ok(());
        }
        Self::guarded(inline, |inline| {
            inline.polled_at = Instant::now();
            inline.applier.poll_veto(&mut inline.can_become_primary);
            true
        })
    }

    /// On the ring task: the next event the state machine reported, to be handled in the
    /// same wake-up. Always `None` with a thread (its events come through the channel).
    pub(super) fn next_event(&mut self) -> Option<Event> {
        match &mut self.worker {
            Worker::RingTask(Some(inline)) => inline.applier.events.next(),
            _ => None,
        }
    }

    /// Runs `work` on the inline state machine, catching a panic: the state machine is then
    /// dropped and the ring fails with [`RingFailure::StateMachinePanicked`], as when the
    /// apply thread panics. `work` returning false (a `Stop`) drops it too.
    fn guarded(
        inline: &mut Option<Box<Inline>>,
        work: impl FnOnce(&mut Inline) -> bool,
    ) -> Result<(), RingFailure> {
        let Some(state) = inline.as_mut() else { return Err(RingFailure::StateMachineStopped) };
        match std::panic::catch_unwind(AssertUnwindSafe(|| work(state))) {
            Ok(true) => Ok(()),
            Ok(false) => {
                inline.take();
                Ok(())
            }
            Err(payload) => {
                let ring = state.applier.shared.ring.0;
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|text| (*text).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic without a message".to_owned());
                tracing::error!(ring, %message, "the state machine panicked on the ring task; stopping the ring");
                if let Some(state) = inline.take() {
                    // Its state may be broken half-way: dropping it must not take the ring
                    // task down with it.
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(move || drop(state)));
                }
                Err(RingFailure::StateMachinePanicked { message })
            }
        }
    }

    /// Tells the thread to finish and returns it, for joining (on the ring task: shuts
    /// the state machine down now).
    pub(super) fn stop(&mut self) -> Option<std::thread::JoinHandle<()>> {
        match &mut self.worker {
            Worker::Thread { jobs, thread } => {
                let _ = jobs.send(Job::Stop);
                thread.take()
            }
            Worker::RingTask(inline) => {
                let _ =
                    Self::guarded(inline, |inline| inline.applier.perform(Job::Stop, &mut inline.waiting));
                None
            }
        }
    }
}

/// Where the state machine's reports go: the ring task's channel from the apply thread,
/// or, on the ring task, a queue it empties in the same wake-up.
pub(super) enum Events {
    Channel(mpsc::UnboundedSender<Event>),
    Local(std::collections::VecDeque<Event>),
}

impl Events {
    /// Reports `event` (dropped if the ring task is gone: it is stopping anyway).
    pub(super) fn send(&mut self, event: Event) {
        match self {
            Events::Channel(sender) => drop(sender.send(event)),
            Events::Local(queue) => queue.push_back(event),
        }
    }

    fn next(&mut self) -> Option<Event> {
        match self {
            Events::Channel(_) => None,
            Events::Local(queue) => queue.pop_front(),
        }
    }
}

/// Everything the apply thread works with.
pub(super) struct ApplyThread {
    pub(super) shared: Arc<RingShared>,
    pub(super) state_machine: Box<dyn StateMachine>,
    pub(super) applied: Slot,
    /// The client id of this replica's own requests, whose responses go back to the task.
    pub(super) local_client: u64,
    /// Where reports go (set by [`ApplyThread::spawn`]).
    pub(super) events: Events,
    pub(super) checkpoints: Arc<Mutex<CheckpointStore>>,
    pub(super) oldest_checkpoint: OldestCheckpoint,
    /// How often the thread asks the state machine whether it may become primary.
    pub(super) veto_poll_interval: Duration,
    /// The slot of the ring's last request once applied (or loaded with a checkpoint):
    /// values of later slots are applied as no-ops.
    pub(super) last_slot: Option<Slot>,
    /// A re-seed moved the state back: values handed out before it, beyond the slot after
    /// the checkpoint, are skipped until the replica hands them out again.
    pub(super) rewinding: bool,
}

impl ApplyThread {
    /// Starts the thread, or with [`ApplyOn::RingTask`] keeps the state machine for the ring
    /// task to run (its reports then stay on the task: the channel in `events` is dropped);
    /// the returned queue feeds it.
    pub(super) fn spawn(mut self, on: ApplyOn) -> std::io::Result<ApplyQueue> {
        if on == ApplyOn::RingTask {
            self.events = Events::Local(Default::default());
            let polled_at = Instant::now() - self.veto_poll_interval;
            let inline = Inline { applier: self, waiting: Vec::new(), can_become_primary: None, polled_at };
            return Ok(ApplyQueue { worker: Worker::RingTask(Some(Box::new(inline))), batch: Vec::new() });
        }
        let (jobs, queue) = handoff::unbounded();
        let name = format!("rsl-apply-{}", self.shared.ring.0);
        let thread = std::thread::Builder::new().name(name).spawn(move || self.run(queue))?;
        Ok(ApplyQueue { worker: Worker::Thread { jobs, thread: Some(thread) }, batch: Vec::new() })
    }

    fn run(mut self, mut jobs: Receiver<Job>) {
        if let Events::Channel(events) = &self.events {
            super::panicked::report_to(events.clone());
        }
        let mut waiting: Vec<Waiting> = Vec::new();
        let mut can_become_primary = None;
        let mut polled_at = Instant::now() - self.veto_poll_interval;
        loop {
            if polled_at.elapsed() >= self.veto_poll_interval {
                polled_at = Instant::now();
                self.poll_veto(&mut can_become_primary);
            }
            let job = match jobs.recv_timeout(self.veto_poll_interval) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            if !self.perform(job, &mut waiting) {
                break;
            }
            self.serve_reads(&mut waiting);
        }
    }

    /// Asks the state machine whether it may become primary, and reports a change.
    fn poll_veto(&mut self, can_become_primary: &mut Option<bool>) {
        let allowed = self.state_machine.can_become_primary();
        if *can_become_primary != Some(allowed) {
            *can_become_primary = Some(allowed);
            self.events.send(Event::CanBecomePrimary(allowed));
        }
    }

    /// Performs one job; false once it was `Stop` (the state machine was shut down).
    fn perform(&mut self, job: Job, waiting: &mut Vec<Waiting>) -> bool {
        match job {
            Job::Apply(values) => self.apply(values),
            Job::Checkpoint(slot, configuration) => self.checkpoint(slot, &configuration),
            Job::Install(slot, from) => self.install(slot, from),
            Job::Copied(slot, from) => self.state_machine.checkpoint_copied(slot, from, false),
            Job::PrimaryRecovered(ballot, slot) => self.state_machine.primary_recovered(ballot, slot),
            Job::Reseed(slot) => self.reseed(slot),
            Job::Read { index, request, reply } => {
                self.park(waiting, Waiting::Lease { index, request, reply });
            }
            Job::FastRead { min_slot, request, reply } => {
                self.park(waiting, Waiting::Fast { min_slot, request, reply });
            }
            Job::Role(change) => self.state_machine.role_changed(&change),
            Job::Stop => {
                self.state_machine.shut_down();
                return false;
            }
        }
        true
    }

    fn apply(&mut self, values: Vec<(Slot, Value)>) {
        let started = Instant::now();
        let mut responses = Vec::new();
        // Report what the replica handed out, even when an installed checkpoint already
        // covers it: the replica never hears of a slot it did not emit.
        let through = values.last().map_or(Slot::ZERO, |(slot, _)| *slot);
        let mut executed = 0;
        for (slot, value) in values {
            if slot <= self.applied || (self.rewinding && slot > self.applied.next()) {
                // Already reflected by an installed checkpoint, or handed out before a
                // re-seed moved the state back (it comes again).
                continue;
            }
            assert_eq!(slot, self.applied.next(), "chosen values are applied strictly in slot order");
            self.rewinding = false;
            let closed = self.last_slot.is_some_and(|last| slot > last);
            let requests: &[Request] = match &value {
                Value::Noop => &[],
                // After the ring's last request, nothing executes.
                Value::Batch(_) | Value::Last(_) if closed => &[],
                Value::Last(request) => {
                    self.last_slot = Some(slot);
                    std::slice::from_ref(request)
                }
                // The shared batch, read in place.
                Value::Batch(requests) => requests,
                Value::Configuration(configuration) => {
                    self.state_machine.configuration_changed(slot, configuration);
                    &[]
                }
            };
            for request in requests {
                let response = self.state_machine.execute(slot, &request.payload);
                executed += 1;
                if request.id.client == self.local_client {
                    responses.push((slot, request.id, response));
                }
            }
            self.set_applied(slot);
        }
        RingCounters::add(&self.shared.counters.requests_executed, executed);
        self.shared.latencies.apply.record(started.elapsed());
        // Never more than the state reflects (values skipped after a re-seed are not).
        let through = through.min(self.applied);
        self.events.send(Event::Applied { through, responses });
    }

    pub(super) fn set_applied(&mut self, slot: Slot) {
        self.applied = slot;
        self.shared.applied.store(slot.0, Ordering::Release);
        if self.shared.reader.is_some() {
            self.shared.applied_changed.send_replace(slot);
        }
    }

    fn checkpoint(&mut self, slot: Slot, configuration: &Configuration) {
        let (ring, applied) = (self.shared.ring.0, self.applied);
        let result = if slot != applied {
            // An installed checkpoint moved the state past `slot`: it cannot be saved as of
            // `slot` any more, and a newer one exists.
            tracing::debug!(ring, %slot, %applied, "skipping a stale checkpoint request");
            Err(CheckpointFailure::Stale { applied })
        } else if !self.state_machine.allow_save(slot) {
            RingCounters::bump(&self.shared.counters.checkpoint_saves_refused);
            tracing::info!(ring, %slot, "the state machine postponed a checkpoint; it is asked again later");
            Err(CheckpointFailure::Refused)
        } else {
            self.save(slot, configuration).map_err(CheckpointFailure::Failed)
        };
        self.events.send(match result {
            Ok(()) => Event::CheckpointSaved(slot),
            Err(reason) => Event::CheckpointFailed { slot, reason },
        });
    }

    /// Writes the checkpoint at `slot` (the applied state) into the store.
    fn save(&mut self, slot: Slot, configuration: &Configuration) -> Result<(), String> {
        let started = Instant::now();
        let result = (|| -> Result<rsl_log::CheckpointInfo, String> {
            let mut store = self.checkpoints.lock();
            let mut writer = store.writer(slot).map_err(|e| e.to_string())?;
            write_ring_record(&mut writer, configuration, self.last_slot).map_err(|e| e.to_string())?;
            self.state_machine
                .save_checkpoint(slot, &mut writer)
                .map_err(|e| format!("state machine: {e}"))?;
            let info = writer.finish().map_err(|e| e.to_string())?;
            self.oldest_checkpoint.refresh(&store);
            Ok(info)
        })();
        match result {
            Ok(info) => {
                RingCounters::bump(&self.shared.counters.checkpoints_saved);
                tracing::info!(
                    ring = self.shared.ring.0, %slot, data_bytes = info.data_bytes,
                    elapsed_ms = started.elapsed().as_millis() as u64, "checkpoint saved"
                );
                self.state_machine.checkpoint_saved(slot, info.data_bytes);
                Ok(())
            }
            Err(reason) => {
                RingCounters::bump(&self.shared.counters.checkpoint_save_failures);
                tracing::warn!(ring = self.shared.ring.0, %slot, %reason, "checkpoint failed; it is tried again later");
                Err(reason)
            }
        }
    }

    fn install(&mut self, slot: Slot, from: NodeId) {
        if slot <= self.applied {
            // The state is already at or past it (slots arrived from another peer meanwhile).
            self.events.send(Event::Installed(slot, None));
            return;
        }
        let (mut reader, record) = match self.open_fetched(slot) {
            Ok(opened) => opened,
            Err(reason) => {
                // Nothing was loaded, so catch-up may try elsewhere.
                RingCounters::bump(&self.shared.counters.checkpoint_fetch_failures);
                tracing::warn!(ring = self.shared.ring.0, %slot, %reason, "cannot use the fetched checkpoint");
                self.events.send(Event::InstallFailed);
                return;
            }
        };
        match self.state_machine.load_checkpoint(slot, &mut reader) {
            Ok(()) => {
                self.set_applied(slot);
                self.last_slot = record.last_slot;
                RingCounters::bump(&self.shared.counters.checkpoints_installed);
                let configuration = record.configuration;
                tracing::info!(ring = self.shared.ring.0, %slot, configuration = configuration.number, "checkpoint installed");
                self.state_machine.checkpoint_copied(slot, from, true);
                if let Some(last_slot) = record.last_slot {
                    self.events.send(Event::Closed(last_slot));
                }
                self.events.send(Event::Installed(slot, Some(configuration)));
            }
            Err(error) => {
                self.events.send(Event::LoadFailed { slot, reason: error.to_string() });
            }
        }
    }

    /// Opens the fetched checkpoint at `slot` and reads the ring's record saved in front of
    /// the state machine's part.
    pub(super) fn open_fetched(&self, slot: Slot) -> Result<(CheckpointReader, RingRecord), String> {
        let mut reader =
            self.checkpoints.lock().reader(slot).map_err(|error| format!("cannot open it: {error}"))?;
        // Verified by its CRCs, yet maybe not a checkpoint this runtime wrote.
        let record = read_ring_record(&mut reader)
            .map_err(|error| format!("not a checkpoint this runtime wrote: {error}"))?;
        Ok((reader, record))
    }

    fn park(&mut self, waiting: &mut Vec<Waiting>, read: Waiting) {
        if read.slot() > self.applied && waiting.len() as u64 >= self.shared.options.reads_waiting_max {
            waiting.retain(|w| !w.abandoned());
            if waiting.len() as u64 >= self.shared.options.reads_waiting_max {
                RingCounters::bump(&self.shared.counters.reads_failed);
                let max = self.shared.options.reads_waiting_max;
                match read {
                    Waiting::Lease { reply, .. } => drop(reply.send(Err(ReadError::Busy { max }))),
                    Waiting::Fast { reply, .. } => drop(reply.send(Err(FastReadError::Busy { max }))),
                }
                return;
            }
        }
        waiting.push(read);
    }

    fn serve_reads(&mut self, waiting: &mut Vec<Waiting>) {
        if waiting.is_empty() {
            return;
        }
        let applied = self.applied;
        let (ready, rest): (Vec<Waiting>, Vec<Waiting>) =
            std::mem::take(waiting).into_iter().partition(|w| w.slot() <= applied);
        *waiting = rest;
        for read in ready {
            if read.abandoned() {
                continue;
            }
            match read {
                Waiting::Lease { request, reply, .. } => {
                    let _ = reply.send(Ok(self.state_machine.read(&request)));
                }
                Waiting::Fast { request, reply, .. } => {
                    let response = self.state_machine.read(&request);
                    RingCounters::bump(&self.shared.counters.reads_fast);
                    let _ = reply.send(Ok(response));
                }
            }
        }
    }
}
