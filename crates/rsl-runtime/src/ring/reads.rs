//! Linearizable reads of one ring. The ring task finds the slot a read must see (the
//! lease's chosen slot, or a read index the replica confirms with a round of heartbeats,
//! or asks of the primary); the caller's task then has the read served once that slot is
//! applied: by the apply thread, in order with execution, or by the state machine's
//! [`ConcurrentReader`] on the caller's own task while execution goes on.
//!
//! Read-index reads of one burst of commands go to the replica together
//! (`Replica::handle_read_index_many`), so they share one round of heartbeats.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rsl_core::{NodeId, ReadId, Replica, Slot, Time};
use tokio::sync::oneshot;

use super::apply::Job;
use super::task::RingTask;
use super::RingShared;
use crate::error::{FastReadError, ReadError};
use crate::reads::{ConcurrentReader, ReadConsistency};
use crate::stats::RingCounters;

/// Where the ring task answers a read's index.
pub(super) type IndexReply = oneshot::Sender<Result<Slot, ReadError>>;

/// The state machine's concurrent reader, as the ring's shared state holds it.
#[derive(Clone)]
pub(super) struct SharedReader(pub(super) Arc<dyn ConcurrentReader>);

impl fmt::Debug for SharedReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ConcurrentReader")
    }
}

/// The read-index reads of this replica's callers that wait for the replica's answer.
#[derive(Debug, Default)]
pub(super) struct ReadIndexes {
    /// The id of the next read (unique per ring task).
    next: u64,
    /// Reads of this burst, handed to the replica together at its end.
    queued: Vec<ReadId>,
    /// Every read the replica has not answered, with where its index goes.
    waiting: HashMap<ReadId, IndexReply>,
}

impl ReadIndexes {
    /// Queues a read-index read until the end of the burst.
    fn queue(&mut self, reply: IndexReply) {
        let id = ReadId(self.next);
        self.next += 1;
        self.waiting.insert(id, reply);
        self.queued.push(id);
    }

    /// Hands the queued reads to the replica; whether there were any.
    pub(super) fn start(&mut self, replica: &mut Replica, now: Time) -> bool {
        if self.queued.is_empty() {
            return false;
        }
        let ids = std::mem::take(&mut self.queued);
        let results = replica.handle_read_index_many(now, ids.iter().copied());
        let hint = replica.primary_hint();
        for (id, result) in ids.into_iter().zip(results) {
            if let Err(error) = result {
                self.answer(id, Err(read_error(error, hint)));
            }
        }
        true
    }

    /// The replica's outcome of read `id`.
    pub(super) fn answer(&mut self, id: ReadId, result: Result<Slot, ReadError>) {
        if let Some(reply) = self.waiting.remove(&id) {
            let _ = reply.send(result);
        }
    }
}

/// The runtime's form of the core's refusal of a linearizable read.
pub(super) fn read_error(error: rsl_core::ReadError, hint: Option<NodeId>) -> ReadError {
    match error {
        rsl_core::ReadError::Busy { max, .. } => ReadError::Busy { max },
        rsl_core::ReadError::NoAnswer { after_ms, .. } => ReadError::Timeout { after_ms },
        rsl_core::ReadError::NotPrimary { hint: known } => {
            ReadError::NotPrimary { reason: rsl_core::ReadError::NotPrimary { hint: known }, hint: known }
        }
        reason => ReadError::NotPrimary { reason, hint },
    }
}

impl RingTask {
    /// A caller asks for the slot its read must see: the lease answers at once where it
    /// may; a read index is queued for the end of the burst.
    pub(super) fn on_read(&mut self, consistency: ReadConsistency, reply: IndexReply) {
        if consistency == ReadConsistency::ReadIndex {
            self.reads.queue(reply);
            return;
        }
        let now = self.clock.now();
        match self.replica.handle_read(now) {
            Ok(index) => {
                RingCounters::bump(&self.shared.counters.reads_lease);
                let _ = reply.send(Ok(index));
            }
            Err(reason @ rsl_core::ReadError::NotPrimary { .. }) => {
                let _ = reply.send(Err(read_error(reason, self.replica.primary_hint())));
            }
            Err(reason) if consistency == ReadConsistency::Lease => {
                let _ = reply.send(Err(read_error(reason, self.replica.primary_hint())));
            }
            // No lease (yet), or a new primary still recovering: confirm instead.
            Err(_) => self.reads.queue(reply),
        }
    }

    /// The replica confirmed read `id` at `index`.
    pub(super) fn read_index_ready(&mut self, id: ReadId, index: Slot) {
        RingCounters::bump(&self.shared.counters.reads_read_index);
        self.reads.answer(id, Ok(index));
    }

    /// The replica could not confirm read `id`.
    pub(super) fn read_index_failed(&mut self, id: ReadId, error: rsl_core::ReadError) {
        let hint = self.replica.primary_hint();
        self.reads.answer(id, Err(read_error(error, hint)));
    }
}

/// Serves `request` once the state machine applied `index`: on the caller's task through
/// the concurrent reader when the state machine has one, else on the apply thread.
pub(super) async fn serve(
    shared: &RingShared,
    jobs: &crossbeam_channel::Sender<Job>,
    index: Slot,
    request: Bytes,
) -> Result<Bytes, ReadError> {
    if let Some(SharedReader(reader)) = &shared.reader {
        if !applied(shared, index).await {
            return Err(ReadError::Shutdown { reason: shared.stop_reason() });
        }
        RingCounters::bump(&shared.counters.reads_concurrent);
        return Ok(reader.read(&request));
    }
    let (reply, answer) = oneshot::channel();
    if jobs.send(Job::Read { index, request, reply }).is_err() {
        return Err(ReadError::Shutdown { reason: shared.stop_reason() });
    }
    answer.await.unwrap_or_else(|_| Err(ReadError::Shutdown { reason: shared.stop_reason() }))
}

/// A fast read through the concurrent reader: serves `request` once `min_slot` is
/// applied, waiting at most `wait`. `None` when the state machine has no concurrent reader.
pub(super) async fn serve_fast_concurrently(
    shared: &RingShared,
    min_slot: Slot,
    request: &Bytes,
    wait: Duration,
) -> Option<Result<Bytes, FastReadError>> {
    let SharedReader(reader) = shared.reader.as_ref()?;
    let result = match tokio::time::timeout(wait, applied(shared, min_slot)).await {
        Ok(true) => {
            RingCounters::bump(&shared.counters.reads_fast);
            RingCounters::bump(&shared.counters.reads_concurrent);
            Ok(reader.read(request))
        }
        Ok(false) => Err(FastReadError::Shutdown { reason: shared.stop_reason() }),
        Err(_) => Err(FastReadError::NotApplied {
            min_slot,
            applied: shared.applied_changed.borrow().to_owned(),
            after_ms: wait.as_millis() as u64,
        }),
    };
    Some(result)
}

/// Waits until the state machine applied `slot`: true then, false if the ring stopped first.
async fn applied(shared: &RingShared, slot: Slot) -> bool {
    let mut applied = shared.applied_changed.subscribe();
    let mut finished = shared.finished.clone();
    tokio::select! {
        reached = applied.wait_for(|applied| *applied >= slot) => reached.is_ok(),
        _ = finished.wait_for(|done| *done) => false,
    }
}
