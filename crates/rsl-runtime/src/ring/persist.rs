//! Where a persist goes to the log: the ring's [`GroupCommitter`] takes every persist request
//! the replica emits, and its callback publishes the durable ticket back to the ring task.
//! Only a ticket the committer reported durable ever reaches `Replica::on_persisted`.

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
    /// `None` once closed.
    committer: Option<GroupCommitter>,
    durable: watch::Receiver<Durable>,
    /// The highest durable ticket handed to the replica.
    persisted: u64,
    /// When each ticket not yet durable was handed to the committer (persist latency).
    started: VecDeque<(u64, Instant)>,
}

impl Persist {
    /// Starts the group committer on `log`.
    pub(super) fn spawn(log: Box<dyn LogStore>, options: &GroupCommitOptions) -> Persist {
        let (sender, durable) = watch::channel(Durable::default());
        let on_durable: DurableCallback = Box::new(move |result| {
            sender.send_modify(|durable| match result {
                Ok(ticket) => durable.ticket = durable.ticket.max(ticket),
                Err(failure) => durable.failure = Some(failure),
            });
        });
        let committer = GroupCommitter::spawn_with_callback(log, options, Some(on_durable));
        Persist { committer: Some(committer), durable, persisted: 0, started: VecDeque::new() }
    }

    fn committer(&self) -> &GroupCommitter {
        self.committer.as_ref().expect("the log is open while the ring runs")
    }

    /// Queues a persist request; it becomes durable with the next sync.
    pub(super) fn append(&mut self, request: PersistRequest) -> Result<(), RingFailure> {
        self.started.push_back((request.ticket, Instant::now()));
        self.committer().append(request).map_err(RingFailure::Commit)
    }

    /// Drops the log's slots below `floor`.
    pub(super) fn truncate_below(&self, floor: Slot) -> Result<(), RingFailure> {
        self.committer().truncate_below(floor).map_err(RingFailure::Commit)
    }

    /// Waits until the committer reports something new: a durable ticket or a failure.
    pub(super) async fn changed(&mut self) -> Result<(), RingFailure> {
        self.durable.changed().await.map_err(|_| RingFailure::Commit(CommitError::Stopped))
    }

    /// The durable ticket to hand to the replica, if it moved since the last call, recording
    /// the persist latency of every ticket it covers; the committer's failure as an error.
    pub(super) fn newly_durable(&mut self, latency: &Histogram) -> Result<Option<u64>, RingFailure> {
        let durable = self.durable.borrow_and_update().clone();
        if let Some(failure) = durable.failure {
            return Err(RingFailure::Log(failure));
        }
        if durable.ticket <= self.persisted {
            return Ok(None);
        }
        self.persisted = durable.ticket;
        let now = Instant::now();
        while let Some(&(ticket, started)) = self.started.front() {
            if ticket > durable.ticket {
                break;
            }
            latency.record(now.duration_since(started));
            self.started.pop_front();
        }
        Ok(Some(durable.ticket))
    }

    /// The committer's counters and the store's.
    pub(super) fn statistics(&self) -> GroupCommitStatistics {
        self.committer().statistics()
    }

    /// Takes the committer out, to close it (flushing what is queued) once the ring stops.
    pub(super) fn take(&mut self) -> Option<GroupCommitter> {
        self.committer.take()
    }
}
