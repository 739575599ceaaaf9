//! Requests that take a slot alone (RSL's `ReplicateRequestExclusiveVote`), and the last
//! one a ring accepts (its `isLastDecree`).
//!
//! An exclusive request waits in the primary's [`ExclusiveQueue`] behind the ordinary
//! requests queued before it; batches are cut so they never cross it, and it is then
//! proposed as a value of its own: a batch of one, or [`Value::Last`]. Once a last request
//! is proposed at slot `L`, the primary opens no slot after `L`; once `L` is chosen the
//! ring is closed for good: every replica refuses requests with
//! [`ProposeError::Closed`], and a value chosen after `L` anyway (a primary that never
//! heard of `L` may have proposed one before `L` was decided) is applied as a no-op.
//! The closed state is replicated: it is chosen in the log, found again when the log is
//! replayed, and saved with every checkpoint at or after `L` (the runtime's checkpoint
//! record), from which [`Replica::on_last_slot_known`] restores it.

use std::collections::VecDeque;

use crate::action::{Action, ProposeError};
use crate::time::Time;
use crate::types::{Request, RequestId, Slot, Value};

use super::{Replica, Timer};

/// An exclusive request waiting for its slot.
#[derive(Debug)]
struct Waiting {
    request: Request,
    last: bool,
    /// Ordinary requests queued before it that must be proposed first.
    ahead: usize,
}

/// The primary's exclusive requests, in arrival order, and the last request in flight.
#[derive(Debug, Default)]
pub(super) struct ExclusiveQueue {
    waiting: VecDeque<Waiting>,
    /// The slot of a last request proposed and not yet chosen: no slot after it is opened.
    pub(super) closing: Option<Slot>,
}

impl ExclusiveQueue {
    /// An empty queue; `closing` is the slot of an inherited last request.
    pub(super) fn new(closing: Option<Slot>) -> ExclusiveQueue {
        ExclusiveQueue { waiting: VecDeque::new(), closing }
    }

    /// Requests waiting.
    pub(super) fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Queues `request` behind the `ahead` ordinary requests queued now.
    fn push(&mut self, request: Request, last: bool, ahead: usize) {
        self.waiting.push_back(Waiting { request, last, ahead });
    }

    /// At most how many ordinary requests the next batch may take: all of them when no
    /// exclusive request waits.
    pub(super) fn batch_room(&self) -> Option<usize> {
        self.waiting.front().map(|first| first.ahead)
    }

    /// `count` ordinary requests were proposed.
    pub(super) fn consumed(&mut self, count: usize) {
        for waiting in &mut self.waiting {
            waiting.ahead = waiting.ahead.saturating_sub(count);
        }
    }

    /// The next exclusive request, if nothing is ahead of it, as the value to propose.
    pub(super) fn take_due(&mut self) -> Option<(Value, bool)> {
        if self.waiting.front()?.ahead > 0 {
            return None;
        }
        let Waiting { request, last, .. } = self.waiting.pop_front()?;
        let value = if last { Value::Last(request) } else { Value::Batch(vec![request].into()) };
        Some((value, last))
    }

    /// Empties the queue, returning the ids of what waited.
    pub(super) fn drain_ids(&mut self) -> Vec<RequestId> {
        self.waiting.drain(..).map(|waiting| waiting.request.id).collect()
    }
}

impl Replica {
    /// Queues a client request for a slot of its own [RSL's ReplicateRequestExclusiveVote]:
    /// it is proposed after the requests queued before it, alone in its slot. With `last`
    /// it is the last request the ring accepts (RSL's `isLastDecree`): no slot after it is
    /// opened, and once it is chosen every replica refuses requests with
    /// [`ProposeError::Closed`]. The outcome is its `Apply` (or a `RequestsDropped`).
    pub fn handle_propose_exclusive(
        &mut self,
        now: Time,
        request: Request,
        last: bool,
    ) -> Result<(), ProposeError> {
        self.advance_clock(now);
        let result = self.admit(&request).map(|()| {
            let primary = self.role.primary_mut().expect("admitted by the primary");
            let ahead = primary.queue.len();
            primary.exclusive.push(request, last, ahead);
            self.stats.requests_proposed += 1;
        });
        if result.is_ok() {
            self.propose_queued();
        }
        self.finish();
        result
    }

    /// The slot of the ring's last request once it is chosen (or a checkpoint said so):
    /// the ring takes no more requests.
    pub fn last_slot(&self) -> Option<Slot> {
        self.last_slot
    }

    /// A checkpoint (loaded at start or installed from a peer) says the ring's last request
    /// was chosen at `slot`.
    pub fn on_last_slot_known(&mut self, slot: Slot) {
        self.closed_at(slot);
        self.finish();
    }

    /// The last request chosen at `slot` closes the ring: what waits at the primary is
    /// dropped (its callers hear that the ring is closed), and nothing more is taken.
    pub(super) fn closed_at(&mut self, slot: Slot) {
        if self.last_slot.is_some_and(|last| last <= slot) {
            return;
        }
        self.last_slot = Some(slot);
        let me = self.config.node;
        let Some(primary) = self.role.primary_mut() else { return };
        primary.exclusive.closing = None;
        let mut ids = primary.queue.drain_ids();
        ids.extend(primary.exclusive.drain_ids());
        self.timers.cancel(Timer::BatchLinger);
        if !ids.is_empty() {
            self.actions.push_back(Action::RequestsDropped { ids, primary: Some(me) });
        }
    }
}
