//! Where a persist goes to the log. A log whose flush costs a sync (the file journal, the
//! persistent-memory log) is driven by the ring's [`GroupCommitter`] thread, whose callback
//! publishes the durable ticket back to the ring task; a log whose flush is free (the
//! memory log) is appended to and flushed on the ring task itself, at the end of each
//! wake-up, with no thread and no hand-off. Either way, only a ticket the store reported
//! durable ever reaches `Replica::on_persisted`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use rsl_core::{PersistRequest, Slot};
use rsl_log::{
    CommitError, DurableCallback, GroupCommitOptions, GroupCommitStatistics, GroupCommitter, LogError,
    LogStore,
};
use tokio::sync::watch;

use crate::error::RingFailure;
use crate::stats::Histogram;

/// The durable ticket the group committer last reported, or its failure.
#[derive(Clone, Debug, Default)]
struct Durable {
    ticket: u64,
    failure: Option<Arc<LogError>>,
}

/// The ring's log, as the ring task drives it.
pub(super) struct Persist {
    log: Log,
    /// The highest durable ticket handed to the replica.
    persisted: u64,
    /// When each ticket not yet durable was handed to the log (persist latency).
    started: VecDeque<(u64, Instant)>,
}

/// Who flushes the log.
enum Log {
    /// A group committer thread; `committer` is `None` once closed.
    Thread { committer: Option<GroupCommitter>, durable: watch::Receiver<Durable> },
    /// The ring task, at the end of each wake-up; `store` is `None` once closed.
    Inline { store: Option<Box<dyn LogStore>>, counts: InlineCounts },
}

/// What [`GroupCommitStatistics`] counts, for a log the ring task flushes itself.
#[derive(Default)]
struct InlineCounts {
    /// Requests appended since the last flush.
    round: u64,
    requests: u64,
    rounds: u64,
    largest_round: u64,
}

/// A log taken out of a stopping ring, to be closed off the ring task (closing blocks).
pub(super) enum Closing {
    Thread(GroupCommitter),
    Inline(Box<dyn LogStore>),
}

impl Closing {
    /// Flushes what is queued and drops the store, releasing its lock.
    pub(super) fn close(self) -> Result<(), RingFailure> {
        match self {
            Closing::Thread(committer) => committer.close().map(drop).map_err(RingFailure::Commit),
            Closing::Inline(mut store) => {
                store.flush().map(drop).map_err(|error| RingFailure::Log(Arc::new(error)))
            }
        }
    }
}

impl Persist {
    /// Starts the group committer on `log`, or, with `inline`, keeps `log` on the ring task
    /// (for a store whose flush is free: nothing to gain from a thread that groups syncs).
    pub(super) fn spawn(log: Box<dyn LogStore>, options: &GroupCommitOptions, inline: bool) -> Persist {
        let log = if inline {
            Log::Inline { store: Some(log), counts: InlineCounts::default() }
        } else {
            let (sender, durable) = watch::channel(Durable::default());
            let on_durable: DurableCallback = Box::new(move |result| {
                sender.send_modify(|durable| match result {
                    Ok(ticket) => durable.ticket = durable.ticket.max(ticket),
                    Err(failure) => durable.failure = Some(failure),
                });
            });
            let committer = GroupCommitter::spawn_with_callback(log, options, Some(on_durable));
            Log::Thread { committer: Some(committer), durable }
        };
        Persist { log, persisted: 0, started: VecDeque::new() }
    }

    fn committer(committer: &Option<GroupCommitter>) -> &GroupCommitter {
        committer.as_ref().expect("the log is open while the ring runs")
    }

    fn store(store: &mut Option<Box<dyn LogStore>>) -> &mut Box<dyn LogStore> {
        store.as_mut().expect("the log is open while the ring runs")
    }

    /// Queues a persist request; it becomes durable with the next sync (for an inline log:
    /// the flush at the end of this wake-up).
    pub(super) fn append(&mut self, request: PersistRequest) -> Result<(), RingFailure> {
        self.started.push_back((request.ticket, Instant::now()));
        match &mut self.log {
            Log::Thread { committer, .. } => {
                Persist::committer(committer).append(request).map_err(RingFailure::Commit)
            }
            Log::Inline { store, counts } => {
                counts.round += 1;
                Persist::store(store).append(&request).map_err(|error| RingFailure::Log(Arc::new(error)))
            }
        }
    }

    /// Drops the log's slots below `floor`.
    pub(super) fn truncate_below(&mut self, floor: Slot) -> Result<(), RingFailure> {
        match &mut self.log {
            Log::Thread { committer, .. } => {
                Persist::committer(committer).truncate_below(floor).map_err(RingFailure::Commit)
            }
            Log::Inline { store, .. } => {
                Persist::store(store).truncate_below(floor).map_err(|error| RingFailure::Log(Arc::new(error)))
            }
        }
    }

    /// Whether the ring task flushes this log itself and something is waiting for that.
    pub(super) fn inline_pending(&self) -> bool {
        match &self.log {
            Log::Thread { .. } => false,
            Log::Inline { store, .. } => store.as_ref().is_some_and(|store| store.needs_flush()),
        }
    }

    /// Waits until there is something new to hand to the replica: for a committer, a
    /// durable ticket or a failure it reported; for an inline log, something to flush.
    pub(super) async fn changed(&mut self) -> Result<(), RingFailure> {
        if let Log::Thread { durable, .. } = &mut self.log {
            return durable.changed().await.map_err(|_| RingFailure::Commit(CommitError::Stopped));
        }
        if self.inline_pending() {
            Ok(())
        } else {
            std::future::pending().await
        }
    }

    /// The durable ticket to hand to the replica, if it moved since the last call, recording
    /// the persist latency of every ticket it covers; the log's failure as an error. An
    /// inline log is flushed here.
    pub(super) fn newly_durable(&mut self, latency: &Histogram) -> Result<Option<u64>, RingFailure> {
        let ticket = match &mut self.log {
            Log::Thread { durable, .. } => {
                let durable = durable.borrow_and_update().clone();
                if let Some(failure) = durable.failure {
                    return Err(RingFailure::Log(failure));
                }
                durable.ticket
            }
            Log::Inline { store, counts } => {
                let store = Persist::store(store);
                if !store.needs_flush() {
                    return Ok(None);
                }
                let ticket = store.flush().map_err(|error| RingFailure::Log(Arc::new(error)))?;
                counts.requests += counts.round;
                counts.rounds += 1;
                counts.largest_round = counts.largest_round.max(counts.round);
                counts.round = 0;
                ticket
            }
        };
        if ticket <= self.persisted {
            return Ok(None);
        }
        self.persisted = ticket;
        let now = Instant::now();
        while let Some(&(started_ticket, started)) = self.started.front() {
            if started_ticket > ticket {
                break;
            }
            latency.record(now.duration_since(started));
            self.started.pop_front();
        }
        Ok(Some(ticket))
    }

    /// The committer's counters (for an inline log, the same counts kept here) and the
    /// store's.
    pub(super) fn statistics(&self) -> GroupCommitStatistics {
        match &self.log {
            Log::Thread { committer, .. } => Persist::committer(committer).statistics(),
            Log::Inline { store, counts } => GroupCommitStatistics {
                requests: counts.requests,
                rounds: counts.rounds,
                largest_round: counts.largest_round,
                store: store.as_ref().map(|store| store.statistics()).unwrap_or_default(),
            },
        }
    }

    /// Takes the log out, to close it (flushing what is queued) once the ring stops.
    pub(super) fn take(&mut self) -> Option<Closing> {
        match &mut self.log {
            Log::Thread { committer, .. } => committer.take().map(Closing::Thread),
            Log::Inline { store, .. } => store.take().map(Closing::Inline),
        }
    }
}
