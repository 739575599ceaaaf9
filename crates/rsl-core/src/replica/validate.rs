//! Peer input validation: a message is checked against the ring, the receiver, the
//! configuration and its own consistency before any handler sees it. A bad message is
//! counted and returned as an error for the caller to log; it never changes state and never
//! panics the replica.

use crate::action::MessageError;
use crate::message::{Message, MessageBody};
use crate::types::{Slot, Value};

use super::reconfiguration::configuration_problem;
use super::Replica;

impl Replica {
    /// Why `message` must be dropped, if it must.
    pub(super) fn validate(&self, message: &Message) -> Result<(), MessageError> {
        let configuration = &self.membership.configuration;
        if message.ring != self.config.ring {
            return Err(MessageError::WrongRing { expected: self.config.ring.0, found: message.ring.0 });
        }
        if message.to != self.config.node {
            return Err(MessageError::WrongReceiver { expected: self.config.node, found: message.to });
        }
        if message.from == self.config.node {
            return Err(MessageError::NotAMember { from: message.from, configuration: configuration.number });
        }
        // Catch-up traffic crosses configurations: a replica behind (or removed, or joining)
        // asks anyone the transport admits, and learns the newer configuration from the
        // slots it fetches. Everything else is between members of one configuration.
        let catch_up = matches!(
            message.body,
            MessageBody::StatusQuery
                | MessageBody::StatusReply { .. }
                | MessageBody::Fetch { .. }
                | MessageBody::FetchReply { .. }
                | MessageBody::FetchTruncated { .. }
        );
        if !catch_up {
            if message.configuration != configuration.number {
                return Err(MessageError::WrongConfiguration {
                    expected: configuration.number,
                    found: message.configuration,
                });
            }
            // A learner only answers what a primary replicates to it: its acknowledgements
            // are recorded, never counted as votes.
            let from_learner = configuration.is_learner(message.from)
                && matches!(
                    message.body,
                    MessageBody::Accepted { .. }
                        | MessageBody::HeartbeatReply { .. }
                        | MessageBody::Reject { .. }
                );
            if !configuration.contains(message.from) && !from_learner {
                return Err(MessageError::NotAMember {
                    from: message.from,
                    configuration: configuration.number,
                });
            }
        }
        let malformed = |reason: String| {
            Err(MessageError::Malformed { kind: message.body.kind(), from: message.from, reason })
        };
        match &message.body {
            MessageBody::PreVote { ballot, .. }
            | MessageBody::Prepare { ballot, .. }
            | MessageBody::Accept { ballot, .. }
            | MessageBody::Heartbeat { ballot, .. }
            | MessageBody::TimeoutNow { ballot }
            | MessageBody::ReadIndexReply { ballot, .. }
                if ballot.node != message.from =>
            {
                malformed(format!("ballot {ballot} is not owned by the sender"))
            }
            MessageBody::PromotionRequest { ballot } if ballot.node != message.to => {
                malformed(format!("ballot {ballot} is not the receiver's"))
            }
            MessageBody::PreVote { ballot, .. } | MessageBody::Prepare { ballot, .. }
                if (configuration.number > 1 && ballot.round <= configuration.round_floor())
                    || ballot.round >= self.membership.round_ceiling() =>
            {
                malformed(format!(
                    "ballot {ballot} is outside configuration {}'s rounds",
                    configuration.number
                ))
            }
            MessageBody::Accept { slot, .. } | MessageBody::Accepted { slot, .. } if *slot == Slot::ZERO => {
                malformed("slot 0".into())
            }
            MessageBody::Accept { slot, value: Value::Configuration(next), .. } => {
                if next.number != configuration.number + 1 || next.first_slot != slot.next() {
                    return malformed(format!(
                        "configuration {} starting at {} proposed at slot {slot} in configuration {}",
                        next.number, next.first_slot, configuration.number
                    ));
                }
                match configuration_problem(next) {
                    Some(problem) => malformed(problem),
                    None => Ok(()),
                }
            }
            MessageBody::Prepare { first_unchosen, .. } if *first_unchosen == Slot::ZERO => {
                malformed("first_unchosen 0".into())
            }
            MessageBody::Promise { accepted, .. } => {
                if accepted.len() as u64 > self.config.promise_slots_max {
                    return malformed(format!(
                        "{} proposals, more than promise_slots_max {}",
                        accepted.len(),
                        self.config.promise_slots_max
                    ));
                }
                if accepted.iter().any(|p| p.slot == Slot::ZERO) {
                    return malformed("proposal for slot 0".into());
                }
                if accepted.windows(2).any(|w| w[0].slot >= w[1].slot) {
                    return malformed("proposals not in increasing slot order".into());
                }
                Ok(())
            }
            MessageBody::Fetch { from, to } if from > to || *from == Slot::ZERO => {
                malformed(format!("empty or invalid range {from}..={to}"))
            }
            MessageBody::FetchReply { chosen_values } => {
                if chosen_values.windows(2).any(|w| w[1].slot != w[0].slot.next()) {
                    return malformed("chosen values not contiguous".into());
                }
                if chosen_values.iter().any(|p| p.slot == Slot::ZERO) {
                    return malformed("value for slot 0".into());
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}
