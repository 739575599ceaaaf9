//! Handing chosen values to the state machine in slot order (checking after each whether a
//! checkpoint is due, see `checkpointing`), and truncating the log.

use crate::action::Action;
use crate::types::{Slot, Value};

use super::mutation::Mutation;
use super::Replica;

impl Replica {
    /// The state machine applied every slot up to `slot`.
    pub fn on_applied(&mut self, slot: Slot) {
        precondition!(
            slot <= self.apply_emitted,
            "applied {slot} beyond what was handed out ({})",
            self.apply_emitted
        );
        if slot > self.applied {
            self.applied = slot;
        }
        self.finish();
    }

    /// Hands every chosen slot not yet handed out to the state machine, asking for a
    /// checkpoint whenever one is due.
    pub(super) fn emit_applies(&mut self) {
        let chosen = self.log.chosen();
        if self.mutated(Mutation::ApplyOutOfOrder) && chosen.0 >= self.apply_emitted.0 + 2 {
            // Hand out the next two slots swapped.
            let a = self.apply_emitted.next();
            let b = a.next();
            for slot in [b, a] {
                let value =
                    self.log.value(slot).cloned().expect("chosen slots above the checkpoint are held");
                self.actions.push_back(Action::Apply { slot, value });
            }
            self.apply_emitted = b;
            self.stats.slots_applied += 2;
        }
        while self.apply_emitted < chosen {
            let slot = self.apply_emitted.next();
            let entry = self.log.get(slot).expect("chosen slots above the checkpoint are held");
            // The seeded acceptor bugs let a stale accept overwrite an in-flight slot at the
            // primary; the checkers, not this contract, must catch what follows.
            let durable = self.persistence.is_durable(entry.ticket) || self.durability_bug_seeded();
            safety!(
                DurableBeforeAnswered,
                entry.chosen && durable,
                "applying slot {slot}, which is not chosen and durable here (chosen {}, ticket {})",
                entry.chosen,
                entry.ticket
            );
            let value = entry.proposal.value.clone();
            self.checkpoints.applied(value.size_bytes());
            let last = matches!(value, Value::Last(_));
            self.actions.push_back(Action::Apply { slot, value });
            if last {
                self.closed_at(slot);
            }
            self.apply_emitted = slot;
            self.stats.slots_applied += 1;
            self.checkpoint_if_due();
        }
        self.report_primary_recovered();
    }

    /// Forgets the slots below `below` and tells the log store it may too.
    pub(super) fn truncate_below(&mut self, below: Slot) {
        // A re-seed in progress replays the log from the peer's checkpoint: keep it.
        if self.reseeding.is_none() && self.log.truncate_below(below) {
            let below = if self.mutated(Mutation::TruncateUnchosen) {
                // Every slot held, the ones not yet chosen here included.
                self.log.last_held().map_or(below, |last| below.max(last.next()))
            } else {
                below
            };
            self.actions.push_back(Action::TruncateLog { below });
        }
    }
}
