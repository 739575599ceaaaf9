//! The primary's phase 2: queueing requests, cutting batches, proposing slots in a
//! pipeline, counting durable votes until a slot is chosen, heartbeats (which carry the
//! chosen watermark and retransmit unanswered accepts), and the read lease measured from
//! heartbeat echoes.

use crate::action::{ProposeError, ReadError};
use crate::message::MessageBody;
use crate::time::{Micros, Time};
use crate::types::{Ballot, NodeId, Proposal, Request, Slot, Value};

use super::large::large_value_bytes;
use super::mutation::Mutation;
use super::role::{BatchLimits, InFlight, NextBatch};
use super::{Replica, Timer};

impl Replica {
    /// Queues a client request for a slot. Only the primary accepts; the request's
    /// outcome is its `Apply` (or a `RequestsDropped`).
    pub fn handle_propose(&mut self, now: Time, request: Request) -> Result<(), ProposeError> {
        self.advance_clock(now);
        let result = self.enqueue(request);
        if result.is_ok() {
            self.propose_queued();
        }
        self.finish();
        result
    }

    /// Queues many client requests at once and only then opens slots, so requests that
    /// arrive together share slots even while the pipeline has room (one
    /// [`Replica::handle_propose`] per request would give each its own slot). The results
    /// are in the order of `requests`; each is what `handle_propose` would have returned.
    pub fn handle_propose_many(
        &mut self,
        now: Time,
        requests: impl IntoIterator<Item = Request>,
    ) -> Vec<Result<(), ProposeError>> {
        self.advance_clock(now);
        let results: Vec<Result<(), ProposeError>> =
            requests.into_iter().map(|request| self.enqueue(request)).collect();
        if results.iter().any(Result::is_ok) {
            self.propose_queued();
        }
        self.finish();
        results
    }

    /// A linearizable read without a slot: returns the slot the state machine must have
    /// applied before the read is served locally. Needs a valid primary lease.
    pub fn handle_read(&mut self, now: Time) -> Result<Slot, ReadError> {
        self.advance_clock(now);
        let hint = self.primary_hint();
        let Some(primary) = self.role.primary() else {
            return Err(ReadError::NotPrimary { hint });
        };
        if primary.relinquish_to.is_some() {
            return Err(ReadError::NotPrimary { hint: primary.relinquish_to });
        }
        let chosen = self.log.chosen();
        if chosen < primary.recovery_end {
            return Err(ReadError::Recovering { recovering_to: primary.recovery_end });
        }
        if now >= self.lease_until() {
            return Err(ReadError::LeaseExpired);
        }
        Ok(chosen)
    }

    /// Adds one request to the primary's queue (a large one to its own lane), or says why
    /// not.
    fn enqueue(&mut self, request: Request) -> Result<(), ProposeError> {
        self.admit(&request)?;
        let now = self.now;
        let batch_bytes_max = self.config.batch_bytes_max;
        let large_bytes_max = self.config.large_bytes_in_flight_max;
        let primary = self.role.primary_mut().expect("admitted by the primary");
        if request.size_bytes() > batch_bytes_max {
            primary.queue.large.push(request, large_bytes_max)?;
        } else {
            primary.queue.push(request, now);
        }
        self.stats.requests_proposed += 1;
        Ok(())
    }

    /// Whether the primary takes `request` into its queues now, or why not.
    pub(super) fn admit(&self, request: &Request) -> Result<(), ProposeError> {
        let hint = self.primary_hint();
        let request_bytes_max = self.config.request_bytes_max;
        let queue_max = self.config.proposal_queue_max;
        // A closed ring refuses on every replica, primary or not.
        if let Some(last_slot) = self.last_slot {
            return Err(ProposeError::Closed { last_slot });
        }
        let Some(primary) = self.role.primary() else {
            return Err(ProposeError::NotPrimary { hint });
        };
        if let Some(target) = primary.relinquish_to {
            return Err(ProposeError::Relinquishing { target });
        }
        let payload = request.payload.len() as u64;
        if payload > request_bytes_max {
            return Err(ProposeError::TooLarge { bytes: payload, max: request_bytes_max });
        }
        let queued = (primary.queue.len() + primary.exclusive.len()) as u64;
        if queued >= queue_max {
            return Err(ProposeError::Busy { queued, max: queue_max });
        }
        Ok(())
    }

    /// When the primary's lease ends: a lease length after the newest time a quorum echoed
    /// (zero when not primary or before any quorum echoed).
    fn lease_until(&self) -> Time {
        let Some(primary) = self.role.primary() else { return Time(0) };
        let quorum = if self.mutated(Mutation::LeaseWithoutQuorumEcho) {
            1
        } else {
            self.membership.configuration.quorum()
        };
        let lease = if self.mutated(Mutation::LeaseIgnoresDrift) { self.guard } else { self.lease };
        match primary.progress.lease_start(self.now, quorum) {
            Some(start) => start.plus(lease),
            None => Time(0),
        }
    }

    /// Opens slots while the pipeline has room: a pending configuration change first, then
    /// batches of queued requests (a partial batch lingers up to `batch_linger_us`), and
    /// large requests in their own window (`large.rs`).
    pub(super) fn propose_queued(&mut self) {
        self.propose_batches();
        self.propose_large();
    }

    fn propose_batches(&mut self) {
        let depth = self.config.pipeline_depth;
        let limits = BatchLimits {
            requests_max: self.config.batch_requests_max as usize,
            bytes_max: self.config.batch_bytes_max,
            linger: self.config.batch_linger(),
        };
        let enter_early = self.mutated(Mutation::EnterConfigurationEarly);
        loop {
            let now = self.now;
            let number = self.membership.configuration.number;
            let Some(primary) = self.role.primary_mut() else { return };
            let closing = primary.exclusive.closing.is_some() || self.last_slot.is_some();
            if (primary.change_slot.is_some() && !enter_early) || closing {
                // Nothing beyond a configuration change until it is chosen: the next slots
                // belong to the new configuration. Nothing beyond a last request, ever.
                self.timers.cancel(Timer::BatchLinger);
                return;
            }
            if primary.pending_change.is_some() && primary.relinquish_to.is_none() {
                if primary.small_in_flight() >= depth {
                    return;
                }
                let Some(mut next) = primary.pending_change.take() else { return };
                let slot = primary.next_slot;
                primary.change_slot = Some(slot);
                precondition!(next.number == number + 1, "a pending change is for the next configuration");
                next.first_slot = slot.next();
                self.stats.configuration_changes_proposed += 1;
                self.propose_value(Value::Configuration(next.clone()));
                if enter_early {
                    self.enter_configuration(next);
                }
                return;
            }
            if primary.relinquish_to.is_some()
                || (primary.queue.batches_empty() && primary.exclusive.len() == 0)
            {
                self.timers.cancel(Timer::BatchLinger);
                return;
            }
            if primary.small_in_flight() >= depth {
                return;
            }
            if let Some((value, last)) = primary.exclusive.take_due() {
                if last {
                    primary.exclusive.closing = Some(primary.next_slot);
                }
                self.propose_value(value);
                continue;
            }
            // A batch never crosses an exclusive request, and does not linger before one.
            let limits = match primary.exclusive.batch_room() {
                Some(room) => BatchLimits {
                    requests_max: limits.requests_max.min(room),
                    linger: Micros::ZERO,
                    ..limits
                },
                None => limits,
            };
            match primary.queue.next_batch(now, limits) {
                NextBatch::Empty => return,
                NextBatch::LingerUntil(at) => {
                    self.timers.set(Timer::BatchLinger, at);
                    return;
                }
                NextBatch::Ready(batch) => {
                    primary.exclusive.consumed(batch.len());
                    self.propose_value(Value::Batch(batch.into()))
                }
            }
        }
    }

    /// Assigns the next slot to `value` and sends accepts.
    pub(super) fn propose_value(&mut self, value: Value) {
        let primary = self.role.primary().expect("only the primary proposes");
        let ballot = primary.ballot;
        let slot = primary.next_slot;
        let me = primary.progress.me();
        precondition!(ballot == self.promised, "a primary proposes only at its own promise");
        precondition!(slot > self.log.chosen(), "slot {slot} is already chosen here");
        precondition!(!primary.in_flight.contains_key(&slot));
        let large_bytes = large_value_bytes(&value, self.config.batch_bytes_max).unwrap_or(0);
        let ticket = self.stage_proposal(Proposal { ballot, slot, value: value.clone() }, false);
        let votes = if self.mutated(Mutation::CountVoteBeforePersist) { 1 << me } else { 0 };
        let now = self.now;
        let primary = self.role.primary_mut().expect("still primary");
        let flight = InFlight { votes, self_ticket: ticket, sent_at: now, large_bytes, resends: 0 };
        primary.large.add(&flight);
        primary.in_flight.insert(slot, flight);
        primary.next_slot = slot.next();
        self.stats.slots_proposed += 1;
        let chosen = self.log.chosen();
        self.broadcast_followers(MessageBody::Accept { ballot, slot, value, chosen });
    }

    /// A member's vote, or a learner's acknowledgement (recorded, never counted), for `slot`.
    pub(super) fn on_accepted(&mut self, from: NodeId, ballot: Ballot, slot: Slot) {
        let Some(index) = self.membership.follower_index_of(from) else { return };
        let now = self.now;
        let chosen = self.log.chosen();
        let Some(primary) = self.role.primary_mut() else { return };
        if primary.ballot != ballot {
            return;
        }
        primary.progress.accepted(index, slot, now);
        primary.progress.caught_up(chosen, now);
        let Some(flight) = primary.in_flight.get_mut(&slot) else { return };
        flight.votes |= 1 << index;
        self.advance_primary_chosen();
    }

    /// Primary: marks slots with a durable quorum of voters chosen, in order.
    pub(super) fn advance_primary_chosen(&mut self) {
        let quorum = self.membership.configuration.quorum();
        let before = self.log.chosen();
        let premature = self.mutated(Mutation::CountVoteBeforePersist);
        let learners_vote = self.mutated(Mutation::LearnerVotes);
        let now = self.now;
        let Some(primary) = self.role.primary_mut() else { return };
        // Members that hold the old watermark were caught up until now.
        primary.progress.caught_up(before, now);
        let voters = if learners_vote { u64::MAX } else { primary.progress.voter_mask() };
        while let Some((&slot, flight)) = primary.in_flight.first_key_value() {
            // Chosen here means chosen by a quorum and durable here: we apply it next.
            let durable_here = self.persistence.is_durable(flight.self_ticket) || premature;
            if ((flight.votes & voters).count_ones() as usize) < quorum || !durable_here {
                break;
            }
            invariant!(slot == self.log.chosen().next(), "in-flight slots start right after chosen");
            if let Some(flight) = primary.in_flight.remove(&slot) {
                primary.large.remove(&flight);
            }
            self.log.advance_chosen();
            self.stats.slots_chosen += 1;
        }
        let ballot = primary.ballot;
        primary.progress.caught_up(self.log.chosen(), now);
        if self.log.chosen() > before {
            if self.crossed_configuration(before) {
                // Tell the old configuration the change is chosen before leaving it: its
                // members learn it from the watermark and follow into the new one.
                let chosen = self.log.chosen();
                self.broadcast_followers(MessageBody::Heartbeat { ballot, chosen, sent_at: Time(0) });
                self.absorb_chosen_configurations(before);
            }
            self.emit_applies();
            self.try_complete_relinquish();
            self.propose_queued();
        }
    }

    /// Primary: heartbeats every member and learner, and retransmits accepts that live ones
    /// have not answered within a heartbeat interval (a large value's within a longer, growing wait:
    /// `large.rs`).
    pub(super) fn on_heartbeat_timer(&mut self) {
        let Some(primary) = self.role.primary() else { return };
        let ballot = primary.ballot;
        let now = self.now;
        let chosen = self.log.chosen();
        self.broadcast_heartbeat();
        let interval = self.config.heartbeat_interval();
        let live_since = now.minus(self.config.election_delay_min());
        let Some(primary) = self.role.primary() else { return };
        let due: Vec<Slot> = primary
            .in_flight
            .iter()
            .filter(|(_, flight)| self.resend_due(flight, now))
            .map(|(slot, _)| *slot)
            .collect();
        let followers: Vec<NodeId> = self.membership.configuration.followers().collect();
        let mut resend: Vec<(NodeId, MessageBody)> = Vec::new();
        let Some(primary) = self.role.primary_mut() else { return };
        let me = primary.progress.me();
        for slot in &due {
            let Some(flight) = primary.in_flight.get_mut(slot) else { continue };
            flight.sent_at = now;
            flight.resends = flight.resends.saturating_add(1);
            let Some(entry) = self.log.get(*slot) else { continue };
            for (i, &member) in followers.iter().enumerate() {
                if i != me && flight.votes & (1 << i) == 0 && primary.progress.is_live(i, live_since) {
                    let value = entry.proposal.value.clone();
                    resend.push((member, MessageBody::Accept { ballot, slot: *slot, value, chosen }));
                }
            }
        }
        self.stats.accepts_retransmitted += resend.len() as u64;
        for (to, body) in resend {
            self.send(to, body);
        }
        self.timers.set(Timer::Heartbeat, now.plus(interval));
    }

    pub(super) fn on_heartbeat_reply(&mut self, from: NodeId, ballot: Ballot, sent_at: Time, chosen: Slot) {
        let Some(index) = self.membership.follower_index_of(from) else { return };
        let now = self.now;
        let primary_chosen = self.log.chosen();
        let Some(primary) = self.role.primary_mut() else { return };
        if primary.ballot != ballot {
            return;
        }
        primary.progress.heartbeat_reply(index, sent_at, chosen, now);
        primary.progress.caught_up(primary_chosen, now);
    }
}
