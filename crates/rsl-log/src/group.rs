//! Group commit on a dedicated thread: [`GroupCommitter`] owns a [`LogStore`], takes
//! appends from any number of producers through a bounded queue, and in each round drains
//! everything queued, appends it, and flushes once. While one sync is in progress the next
//! round's requests pile up in the queue, so the number of requests per sync grows with
//! the load and the sync latency: this is what lets a disk that does a few hundred syncs a
//! second take hundreds of thousands of durable appends.
//!
//! Durability is reported three ways: [`GroupCommitter::durable_ticket`] (a read),
//! [`GroupCommitter::wait_durable`] (blocks), and an optional callback run on the
//! committer thread after every flush, before waiters wake (to wake an async runtime).
//!
//! The queue is a [`handoff`] queue: an idle committer sleeps at once, without spinning or
//! yielding, and the first request of a round wakes it with one futex wake; it takes
//! everything queued in one lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use rsl_core::{Ballot, PersistRequest, Proposal, Slot};

use crate::error::{CommitError, LogError};
use crate::handoff::{self, Receiver, Sender};
use crate::store::{LogStatistics, LogStore};

/// Options of a [`GroupCommitter`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupCommitOptions {
    /// Requests the queue holds before producers block. Default 8192.
    pub queue_depth_max: usize,
    /// Requests appended per flush at most. Default 65536.
    pub batch_requests_max: usize,
    /// Encoded bytes appended per flush at most (a round ends once it reaches this).
    /// Bounds the memory and the latency of one round. Default 64 MiB.
    pub batch_bytes_max: u64,
}

impl Default for GroupCommitOptions {
    fn default() -> Self {
        GroupCommitOptions { queue_depth_max: 8192, batch_requests_max: 65536, batch_bytes_max: 64 << 20 }
    }
}

/// Bytes a request counts for against `batch_bytes_max` (its encoding plus framing).
fn request_bytes(request: &PersistRequest) -> u64 {
    64 + request.proposals.iter().map(crate::codec::proposal_encoded_bytes).sum::<u64>()
}

/// What a committer reports after each flush: the durable ticket, or the failure.
pub type DurableCallback = Box<dyn Fn(Result<u64, Arc<LogError>>) + Send>;

/// Counters of a [`GroupCommitter`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupCommitStatistics {
    /// Requests appended to the store.
    pub requests: u64,
    /// Rounds that flushed.
    pub rounds: u64,
    /// The most requests one round flushed.
    pub largest_round: u64,
    /// The store's counters after the last round.
    pub store: LogStatistics,
}

enum Command {
    Append(PersistRequest),
    Truncate(Slot),
    Read { first: Slot, last: Slot, bytes_max: u64, reply: Sender<Result<Vec<Proposal>, LogError>> },
    Stop,
}

#[derive(Debug, Default)]
struct Progress {
    durable: u64,
    failure: Option<Arc<LogError>>,
}

#[derive(Debug, Default)]
struct Shared {
    progress: Mutex<Progress>,
    changed: Condvar,
    durable: AtomicU64,
    requests: AtomicU64,
    rounds: AtomicU64,
    largest_round: AtomicU64,
    store: Mutex<LogStatistics>,
}

/// A thread that owns a log store and commits appends in groups; see the module docs.
pub struct GroupCommitter {
    sender: Sender<Command>,
    submitted: Mutex<u64>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<Box<dyn LogStore>>>,
}

impl std::fmt::Debug for GroupCommitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommitter")
            .field("submitted", &*self.submitted.lock())
            .field("durable", &self.durable_ticket())
            .finish()
    }
}

impl GroupCommitter {
    /// Starts the committer thread for `store`.
    pub fn spawn(store: Box<dyn LogStore>, options: &GroupCommitOptions) -> GroupCommitter {
        GroupCommitter::spawn_with_callback(store, options, None)
    }

    /// Starts the committer thread for `store`, calling `on_durable` after every flush.
    pub fn spawn_with_callback(
        store: Box<dyn LogStore>,
        options: &GroupCommitOptions,
        on_durable: Option<DurableCallback>,
    ) -> GroupCommitter {
        let (sender, receiver) = handoff::bounded(options.queue_depth_max);
        let shared = Arc::new(Shared::default());
        let submitted = store.appended_ticket();
        {
            let durable = store.durable_ticket();
            shared.progress.lock().durable = durable;
            shared.durable.store(durable, Ordering::Release);
        }
        let thread_shared = shared.clone();
        let limits = (options.batch_requests_max.max(1), options.batch_bytes_max.max(1));
        let thread = std::thread::Builder::new()
            .name("rsl-log-commit".into())
            .spawn(move || run(store, receiver, thread_shared, limits, on_durable))
            .expect("spawn the group commit thread");
        GroupCommitter { sender, submitted: Mutex::new(submitted), shared, thread: Some(thread) }
    }

    fn check_failed(&self) -> Result<(), CommitError> {
        match &self.shared.progress.lock().failure {
            Some(failure) => Err(CommitError::Failed(failure.clone())),
            None => Ok(()),
        }
    }

    /// Queues `request` (blocking while the queue is full). Its ticket must exceed every
    /// ticket queued before.
    pub fn append(&self, request: PersistRequest) -> Result<(), CommitError> {
        self.check_failed()?;
        let mut submitted = self.submitted.lock();
        if request.ticket <= *submitted {
            return Err(CommitError::TicketOrder { last: *submitted, found: request.ticket });
        }
        let ticket = request.ticket;
        self.sender.send(Command::Append(request)).map_err(|_| CommitError::Stopped)?;
        *submitted = ticket;
        Ok(())
    }

    /// Queues a request with the next ticket and returns the ticket. For producers that
    /// share the committer and do not number their own writes.
    pub fn append_next(
        &self,
        promise: Option<Ballot>,
        proposals: Vec<Proposal>,
        chosen: Option<Slot>,
    ) -> Result<u64, CommitError> {
        self.check_failed()?;
        let mut submitted = self.submitted.lock();
        let ticket = *submitted + 1;
        let request = PersistRequest { ticket, promise, proposals, chosen };
        self.sender.send(Command::Append(request)).map_err(|_| CommitError::Stopped)?;
        *submitted = ticket;
        Ok(ticket)
    }

    /// Queues a truncation of the log below `below`.
    pub fn truncate_below(&self, below: Slot) -> Result<(), CommitError> {
        self.check_failed()?;
        self.sender.send(Command::Truncate(below)).map_err(|_| CommitError::Stopped)
    }

    /// Reads proposals (see [`LogStore::read_range`]) on the committer thread, after
    /// everything queued before.
    pub fn read_range(&self, first: Slot, last: Slot, bytes_max: u64) -> Result<Vec<Proposal>, CommitError> {
        let (reply, mut answer) = handoff::bounded(1);
        self.sender
            .send(Command::Read { first, last, bytes_max, reply })
            .map_err(|_| CommitError::Stopped)?;
        let result = answer.recv().map_err(|_| CommitError::Stopped)?;
        result.map_err(|e| CommitError::Failed(Arc::new(e)))
    }

    /// The highest ticket known durable.
    pub fn durable_ticket(&self) -> u64 {
        self.shared.durable.load(Ordering::Acquire)
    }

    /// The highest ticket queued.
    pub fn submitted_ticket(&self) -> u64 {
        *self.submitted.lock()
    }

    /// Blocks until `ticket` is durable; returns the durable ticket.
    pub fn wait_durable(&self, ticket: u64) -> Result<u64, CommitError> {
        let mut progress = self.shared.progress.lock();
        loop {
            if progress.durable >= ticket {
                return Ok(progress.durable);
            }
            if let Some(failure) = &progress.failure {
                return Err(CommitError::Failed(failure.clone()));
            }
            if self.thread.as_ref().is_none_or(|t| t.is_finished()) {
                return Err(CommitError::Stopped);
            }
            self.shared.changed.wait_for(&mut progress, Duration::from_millis(100));
        }
    }

    /// Like [`GroupCommitter::wait_durable`], giving up after `timeout`: `Ok(None)` then.
    pub fn wait_durable_for(&self, ticket: u64, timeout: Duration) -> Result<Option<u64>, CommitError> {
        let deadline = Instant::now() + timeout;
        let mut progress = self.shared.progress.lock();
        loop {
            if progress.durable >= ticket {
                return Ok(Some(progress.durable));
            }
            if let Some(failure) = &progress.failure {
                return Err(CommitError::Failed(failure.clone()));
            }
            if self.shared.changed.wait_until(&mut progress, deadline).timed_out() {
                return Ok((progress.durable >= ticket).then_some(progress.durable));
            }
        }
    }

    /// Counters.
    pub fn statistics(&self) -> GroupCommitStatistics {
        GroupCommitStatistics {
            requests: self.shared.requests.load(Ordering::Relaxed),
            rounds: self.shared.rounds.load(Ordering::Relaxed),
            largest_round: self.shared.largest_round.load(Ordering::Relaxed),
            store: *self.shared.store.lock(),
        }
    }

    /// Flushes everything queued, stops the thread and hands back the store.
    pub fn close(mut self) -> Result<Box<dyn LogStore>, CommitError> {
        let _ = self.sender.send(Command::Stop);
        let store = self.thread.take().expect("running").join().map_err(|_| CommitError::Stopped)?;
        self.check_failed()?;
        Ok(store)
    }
}

impl Drop for GroupCommitter {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = self.sender.send(Command::Stop);
            let _ = thread.join();
        }
    }
}

fn run(
    mut store: Box<dyn LogStore>,
    mut receiver: Receiver<Command>,
    shared: Arc<Shared>,
    (requests_max, bytes_max): (usize, u64),
    on_durable: Option<DurableCallback>,
) -> Box<dyn LogStore> {
    let mut failed = false;
    loop {
        let Ok(first) = receiver.recv() else { break };
        let mut round = 0u64;
        let mut round_bytes = 0u64;
        let mut stop = false;
        let mut next = Some(first);
        while let Some(command) = next.take() {
            match command {
                Command::Append(request) => {
                    round += 1;
                    round_bytes += request_bytes(&request);
                    if !failed {
                        if let Err(error) = store.append(&request) {
                            failed = true;
                            fail(&shared, error, &on_durable);
                        }
                    }
                }
                Command::Truncate(below) => {
                    if !failed {
                        if let Err(error) = store.truncate_below(below) {
                            failed = true;
                            fail(&shared, error, &on_durable);
                        }
                    }
                }
                Command::Read { first, last, bytes_max, reply } => {
                    let _ = reply.send(store.read_range(first, last, bytes_max));
                }
                Command::Stop => stop = true,
            }
            if stop || round as usize >= requests_max || round_bytes >= bytes_max {
                break;
            }
            next = receiver.try_recv().ok();
        }
        if !failed && store.needs_flush() {
            match store.flush() {
                Ok(durable) => {
                    shared.requests.fetch_add(round, Ordering::Relaxed);
                    shared.rounds.fetch_add(1, Ordering::Relaxed);
                    shared.largest_round.fetch_max(round, Ordering::Relaxed);
                    *shared.store.lock() = store.statistics();
                    // The callback runs before waiters wake, so whatever it does is done
                    // by the time `wait_durable` returns. Keep it short.
                    if let Some(callback) = &on_durable {
                        callback(Ok(durable));
                    }
                    {
                        let mut progress = shared.progress.lock();
                        progress.durable = durable;
                        shared.durable.store(durable, Ordering::Release);
                    }
                    shared.changed.notify_all();
                }
                Err(error) => {
                    failed = true;
                    fail(&shared, error, &on_durable);
                }
            }
        }
        if stop {
            break;
        }
    }
    *shared.store.lock() = store.statistics();
    store
}

fn fail(shared: &Shared, error: LogError, on_durable: &Option<DurableCallback>) {
    let error = Arc::new(error);
    if let Some(callback) = on_durable {
        callback(Err(error.clone()));
    }
    shared.progress.lock().failure = Some(error);
    shared.changed.notify_all();
}
