//! Phase 2 on every replica: accepting a primary's proposals (answered only once durable)
//! and learning which slots are chosen from the primary's watermark, carried by accepts and
//! heartbeats. The always-on checks that the protocol's safety rests on guard the writes
//! this makes: the promise (`stage_promise`), the log (`Log::record`) and the answers
//! (`Persistence`).

use crate::message::{MessageBody, RejectReason};
use crate::time::Time;
use crate::types::{Ballot, NodeId, Proposal, Slot, Value};

use super::mutation::Mutation;
use super::Replica;

impl Replica {
    /// The acceptor's phase 2b. The always-on checks of what it writes are in
    /// `stage_promise`, `stage_proposal` and `Log::record`.
    pub(super) fn on_accept(&mut self, from: NodeId, ballot: Ballot, slot: Slot, value: Value, chosen: Slot) {
        precondition!(ballot.node == from, "validated: the sender owns the ballot");
        precondition!(slot > Slot::ZERO, "validated: no slot 0");
        precondition!(self.membership.configuration.contains(from), "validated: the sender is a member");
        let honour_promise =
            !(self.mutated(Mutation::AcceptBelowPromise) || self.mutated(Mutation::ForgetPromiseOnRestart));
        self.highest_seen = self.highest_seen.max(ballot);
        let below_promise = ballot < self.promised;
        if below_promise && honour_promise {
            // Never accept below the promise.
            self.stats.accepts_refused += 1;
            let promised = self.promised;
            self.send(from, MessageBody::Reject { ballot, promised, reason: RejectReason::Promised });
            return;
        }
        if !below_promise {
            self.follow(from, ballot);
        }
        if slot < self.log.start() {
            // Long since chosen and truncated here; nothing to record.
            return;
        }
        if slot <= self.log.chosen() && self.log.get(slot).is_none() {
            // Chosen and held only by the checkpoint: a replica that crashed after
            // publishing a fetched checkpoint, before truncating its log, restarts with a
            // hole between its old entries and that checkpoint. Nothing to record.
            return;
        }
        if let Some(existing) = self.log.get(slot) {
            if existing.chosen || slot <= self.log.chosen() {
                // Already chosen here: the primary can only be re-proposing that value.
                if existing.proposal.value == value {
                    let ticket = existing.ticket;
                    self.send_after(ticket, from, MessageBody::Accepted { ballot, slot });
                } else {
                    self.stats.accepts_refused += 1;
                }
                self.learn_chosen(chosen, ballot);
                return;
            }
            if existing.proposal.ballot == ballot {
                if existing.proposal.value != value {
                    // Never a second value for one (ballot, slot): refuse, never overwrite.
                    self.stats.accepts_refused += 1;
                    return;
                }
                // A duplicate: idempotent; answer again once the first write is durable.
                let ticket = existing.ticket.max(self.promised_ticket);
                // What the slot held, for the postcondition (cloned only with contracts on).
                let held_before = crate::contracts::ENABLED.then(|| existing.proposal.clone());
                let promised_before = self.promised;
                self.send_after(ticket, from, MessageBody::Accepted { ballot, slot });
                self.learn_chosen(chosen, ballot);
                postcondition!(
                    self.log.is_known_chosen(slot)
                        || held_before
                            .is_none_or(|held| self.log.get(slot).is_some_and(|e| e.proposal == held)),
                    "a duplicate accept changes nothing but learning the slot chosen"
                );
                postcondition!(self.promised == promised_before, "a duplicate accept changes no promise");
                return;
            }
            if existing.proposal.ballot > ballot && honour_promise {
                // Unreachable when ballot >= promise >= every accepted ballot.
                invariant!(
                    false,
                    "accepted ballot {} above promise {}",
                    existing.proposal.ballot,
                    self.promised
                );
                return;
            }
        }
        if ballot > self.promised {
            // Accepting a ballot promises it.
            self.stage_promise(ballot);
        }
        let ticket = self.stage_proposal(Proposal { ballot, slot, value }, false);
        let ticket = ticket.max(self.promised_ticket);
        // Persisted before answered: the Accepted waits for the write's ticket.
        let answer_ticket = if self.mutated(Mutation::CountVoteBeforePersist) { 0 } else { ticket };
        self.send_after(answer_ticket, from, MessageBody::Accepted { ballot, slot });
        postcondition!(
            answer_ticket == 0
                || self.persistence.is_held(answer_ticket)
                || self.persistence.is_durable(answer_ticket),
            "the answer waits for its write"
        );
        self.learn_chosen(chosen, ballot);
    }

    /// A primary's heartbeat: follow it, learn its watermark, echo its clock for the lease.
    pub(super) fn on_heartbeat(&mut self, from: NodeId, ballot: Ballot, chosen: Slot, sent_at: Time) {
        if ballot < self.promised {
            let promised = self.promised;
            self.send(from, MessageBody::Reject { ballot, promised, reason: RejectReason::Promised });
            return;
        }
        precondition!(ballot.node == from, "validated: the primary owns the ballot");
        let promised_before = self.promised;
        let configuration_before = self.membership.configuration.number;
        self.follow(from, ballot);
        self.learn_chosen(chosen, ballot);
        let chosen = self.log.chosen();
        if self.membership.configuration.number == configuration_before {
            self.send(from, MessageBody::HeartbeatReply { ballot, sent_at, chosen });
        }
        postcondition!(self.promised == promised_before, "a heartbeat changes no promise");
        postcondition!(
            self.primary.is_some_and(|p| p.node == from && p.ballot == ballot)
                || self.membership.configuration.number > configuration_before,
            "a live primary is followed (unless its watermark ended its configuration)"
        );
    }

    /// The primary of `ballot` says every slot up to `chosen` is chosen.
    pub(super) fn learn_chosen(&mut self, chosen: Slot, ballot: Ballot) {
        if self.role.is_primary() {
            return;
        }
        self.catch_up.primary_watermark(chosen, ballot);
        self.advance_learned_chosen();
        self.request_fetch_if_behind();
    }

    /// Secondary: a slot is chosen here when it is durable and either known chosen or
    /// accepted at the ballot of the primary whose watermark covers it.
    pub(super) fn advance_learned_chosen(&mut self) {
        let watermark = self.catch_up.watermark();
        let before = self.log.chosen();
        loop {
            let slot = self.log.chosen().next();
            let Some(entry) = self.log.get(slot) else { break };
            if !self.persistence.is_durable(entry.ticket) {
                break;
            }
            let chosen =
                entry.chosen || (slot <= watermark.chosen && entry.proposal.ballot == watermark.ballot);
            if !chosen {
                break;
            }
            self.log.advance_chosen();
            self.stats.slots_chosen += 1;
        }
        if self.log.chosen() > before {
            self.absorb_chosen_configurations(before);
            self.emit_applies();
        }
    }
}
