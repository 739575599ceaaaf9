//! The replica's log: the proposals it holds by slot, the first slot it still holds, and the
//! chosen watermark, with the acceptor's always-on safety checks at every write.
//!
//! A slot is *chosen here* once its value is known chosen and durable here; the watermark
//! `chosen` says every slot up to it is. Below [`Log::start`] slots were truncated after a
//! checkpoint covered them.

use std::collections::btree_map;
use std::collections::BTreeMap;
use std::ops::RangeBounds;

use crate::config::ConfigError;
use crate::types::{Ballot, Configuration, Proposal, Slot, Value};

/// What the log store recovered after a restart (all of it durable).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DurableState {
    /// The highest ballot promised.
    pub promise: Ballot,
    /// Every proposal held, any order, at most one per slot.
    pub proposals: Vec<Proposal>,
    /// Chosen-watermark hint: the proposals up to here are chosen.
    pub chosen: Slot,
    /// The slot of the checkpoint the state machine was loaded from (zero: none).
    pub checkpoint: Slot,
    /// The configuration saved with that checkpoint (in force for the slots after it).
    /// Configuration values chosen in the log above the checkpoint take over from it.
    pub configuration: Option<Configuration>,
}

/// One slot of the log as this replica holds it.
#[derive(Clone, Debug)]
pub(super) struct Entry {
    pub(super) proposal: Proposal,
    /// The persist ticket that wrote it.
    pub(super) ticket: u64,
    /// Known chosen (learned from a quorum, a fetch, or the primary's watermark).
    pub(super) chosen: bool,
}

/// The proposals held, by slot.
#[derive(Debug)]
pub(super) struct Log {
    entries: BTreeMap<Slot, Entry>,
    /// The first slot still held (everything below was truncated).
    start: Slot,
    /// Every slot up to here is chosen and durable here.
    chosen: Slot,
}

/// A log rebuilt from durable state.
pub(super) struct Recovered {
    pub(super) log: Log,
    /// The highest ballot accepted above the recovered chosen hint: the promise is at least
    /// this (the promise may have been in a torn write that the accept's write superseded).
    pub(super) highest_unchosen_ballot: Option<Ballot>,
}

impl Log {
    /// Rebuilds the log from the proposals a log store recovered, the checkpoint the state
    /// machine was loaded from, and the chosen hint (trusted only as far as the proposals
    /// are contiguous above the checkpoint). Recovered proposals are durable: ticket 0.
    pub(super) fn recover(
        proposals: Vec<Proposal>,
        checkpoint: Slot,
        chosen_hint: Slot,
    ) -> Result<Recovered, ConfigError> {
        let mut entries = BTreeMap::new();
        for proposal in proposals {
            let slot = proposal.slot;
            if slot == Slot::ZERO {
                return Err(ConfigError::Durable { reason: "a proposal for slot 0".into() });
            }
            let entry = Entry { proposal, ticket: 0, chosen: slot <= chosen_hint };
            if entries.insert(slot, entry).is_some() {
                return Err(ConfigError::Durable { reason: format!("two proposals for slot {slot}") });
            }
        }
        let highest_unchosen_ballot =
            entries.values().filter(|e: &&Entry| !e.chosen).map(|e| e.proposal.ballot).max();
        let start = entries.keys().next().copied().unwrap_or(checkpoint.next()).min(checkpoint.next());
        let mut chosen = checkpoint;
        while chosen < chosen_hint && entries.contains_key(&chosen.next()) {
            chosen = chosen.next();
        }
        for (slot, entry) in entries.iter_mut() {
            entry.chosen = *slot <= chosen;
        }
        Ok(Recovered { log: Log { entries, start, chosen }, highest_unchosen_ballot })
    }

    /// The first slot still held.
    pub(super) fn start(&self) -> Slot {
        self.start
    }

    /// Every slot up to here is chosen and durable here.
    pub(super) fn chosen(&self) -> Slot {
        self.chosen
    }

    /// The highest slot held, if any.
    pub(super) fn last_held(&self) -> Option<Slot> {
        self.entries.keys().next_back().copied()
    }

    /// The entry of `slot`, if held.
    pub(super) fn get(&self, slot: Slot) -> Option<&Entry> {
        self.entries.get(&slot)
    }

    /// Whether `slot` is held and known chosen (it may still wait for its write).
    pub(super) fn is_known_chosen(&self, slot: Slot) -> bool {
        self.entries.get(&slot).is_some_and(|e| e.chosen)
    }

    /// The value held for `slot`.
    pub(super) fn value(&self, slot: Slot) -> Option<&Value> {
        self.entries.get(&slot).map(|e| &e.proposal.value)
    }

    /// The members of the configuration value held at `slot`, if that is what it holds.
    pub(super) fn configuration_members(&self, slot: Slot) -> Option<Vec<crate::types::NodeId>> {
        match self.value(slot) {
            Some(Value::Configuration(c)) => Some(c.members.clone()),
            _ => None,
        }
    }

    /// The entries in `range`, in slot order.
    pub(super) fn range(&self, range: impl RangeBounds<Slot>) -> btree_map::Range<'_, Slot, Entry> {
        self.entries.range(range)
    }

    /// Every proposal held from `first` on (what a promise carries).
    pub(super) fn proposals_from(&self, first: Slot) -> Vec<Proposal> {
        self.entries.range(first..).map(|(_, e)| e.proposal.clone()).collect()
    }

    /// Records `proposal` written by the persist request `ticket`. The always-on checks
    /// guard the acceptor contract: never a second value for one (ballot, slot), and a
    /// chosen value never changes.
    pub(super) fn record(&mut self, proposal: Proposal, ticket: u64, chosen: bool) {
        if let Some(existing) = self.entries.get(&proposal.slot) {
            safety!(
                OneValuePerBallotAndSlot,
                existing.proposal.ballot != proposal.ballot || existing.proposal.value == proposal.value,
                "second value for ballot {} slot {}",
                proposal.ballot,
                proposal.slot
            );
            safety!(
                ChosenValueImmutable,
                !existing.chosen || existing.proposal.value == proposal.value,
                "chosen value of slot {} would change",
                proposal.slot
            );
        }
        let slot = proposal.slot;
        self.entries.insert(slot, Entry { proposal, ticket, chosen });
    }

    /// The value held at `slot` is known chosen (a fetch carried the same value).
    pub(super) fn mark_known_chosen(&mut self, slot: Slot) {
        if let Some(entry) = self.entries.get_mut(&slot) {
            entry.chosen = true;
        }
    }

    /// The slot after the watermark is chosen and durable here: the watermark moves to it.
    pub(super) fn advance_chosen(&mut self) -> Slot {
        let slot = self.chosen.next();
        let entry = self.entries.get_mut(&slot).expect("a slot is chosen here only once held");
        entry.chosen = true;
        self.chosen = slot;
        slot
    }

    /// A checkpoint at `slot` was installed: every slot up to it is chosen (the state
    /// machine reflects them), whether held or not.
    pub(super) fn cover_to(&mut self, slot: Slot) {
        if self.chosen < slot {
            self.chosen = slot;
        }
    }

    /// Forgets every slot below `below`; false if none was held there.
    pub(super) fn truncate_below(&mut self, below: Slot) -> bool {
        if below <= self.start {
            return false;
        }
        safety!(
            TruncateOnlyChosen,
            below.prev() <= self.chosen,
            "truncating below {below} with slots chosen only up to {}",
            self.chosen
        );
        self.entries = self.entries.split_off(&below);
        self.start = below;
        true
    }

    /// The first slot above the watermark not already held as a chosen value (held ones
    /// only wait for their write to become durable): where fetching starts.
    pub(super) fn fetch_start(&self) -> Slot {
        let mut slot = self.chosen.next();
        while self.is_known_chosen(slot) {
            slot = slot.next();
        }
        slot
    }

    /// The chosen values from `first` to `last`, contiguous, at most `bytes_max` bytes of
    /// values (at least one value: each fits a message).
    pub(super) fn chosen_values(&self, first: Slot, last: Slot, bytes_max: u64) -> Vec<Proposal> {
        self.held_values(first, last.min(self.chosen), bytes_max)
    }

    /// The values held from `first` to `last`, contiguous (up to the first hole), at most
    /// `bytes_max` bytes of values (at least one value), chosen or not: what
    /// [`Log::chosen_values`] serves below the watermark, and a seeded bug beyond it.
    pub(super) fn held_values(&self, first: Slot, last: Slot, bytes_max: u64) -> Vec<Proposal> {
        let mut values: Vec<Proposal> = Vec::new();
        if first > last {
            return values;
        }
        let mut bytes = 0u64;
        let mut expected = first;
        for (slot, entry) in self.entries.range(first..=last) {
            let size = entry.proposal.value.size_bytes();
            if *slot != expected || (!values.is_empty() && bytes + size > bytes_max) {
                break;
            }
            expected = slot.next();
            bytes += size;
            values.push(entry.proposal.clone());
        }
        values
    }

    /// The O(n) checks of the log, for contracts builds. `durable` says whether an entry's
    /// write is durable; `promise` bounds accepted ballots unless `promise_bound` is off
    /// (seeded bugs break that bound on purpose).
    pub(super) fn check_invariants(
        &self,
        checkpoint: Slot,
        durable: impl Fn(&Entry) -> bool,
        promise: Option<Ballot>,
    ) {
        let mut expected = self.chosen;
        for (slot, entry) in self.entries.range(..=self.chosen).rev() {
            if *slot < self.start || *slot > self.chosen {
                break;
            }
            invariant!(entry.chosen && durable(entry), "slot {slot} below chosen is not chosen and durable");
            invariant!(*slot == expected || *slot <= checkpoint, "hole at {expected} below chosen");
            expected = expected.prev();
        }
        for (slot, entry) in &self.entries {
            invariant!(*slot >= self.start, "entry {slot} below log start {}", self.start);
            invariant!(entry.proposal.slot == *slot);
            if let Some(promise) = promise {
                invariant!(
                    entry.chosen || entry.proposal.ballot <= promise,
                    "accepted ballot {} above promise {promise} at slot {slot}",
                    entry.proposal.ballot,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{NodeId, Request, RequestId};

    fn proposal(round: u64, slot: u64, payload: &'static str) -> Proposal {
        let request = Request { id: RequestId::default(), payload: payload.into() };
        Proposal {
            ballot: Ballot::new(round, NodeId(1)),
            slot: Slot(slot),
            value: Value::Batch(vec![request]),
        }
    }

    #[test]
    fn recovery_trusts_the_hint_only_as_far_as_the_log_is_contiguous() {
        let proposals = vec![proposal(1, 1, "a"), proposal(1, 2, "b"), proposal(2, 4, "d")];
        let recovered = Log::recover(proposals, Slot::ZERO, Slot(4)).unwrap();
        let log = recovered.log;
        assert_eq!(log.chosen(), Slot(2), "slot 3 is missing");
        assert!(log.is_known_chosen(Slot(2)));
        assert!(!log.is_known_chosen(Slot(4)));
        assert_eq!(log.start(), Slot(1));
        // Slot 4 counted as chosen by the hint when the promise floor was taken.
        assert_eq!(recovered.highest_unchosen_ballot, None);
    }

    #[test]
    fn recovery_refuses_contradictions() {
        assert!(Log::recover(vec![proposal(1, 0, "x")], Slot::ZERO, Slot::ZERO).is_err());
        assert!(Log::recover(vec![proposal(1, 3, "x"), proposal(2, 3, "y")], Slot::ZERO, Slot::ZERO).is_err());
    }

    #[test]
    fn recovery_reports_the_highest_unchosen_ballot_and_starts_at_the_checkpoint() {
        let proposals = vec![proposal(3, 11, "a"), proposal(5, 12, "b")];
        let recovered = Log::recover(proposals, Slot(10), Slot(10)).unwrap();
        assert_eq!(recovered.highest_unchosen_ballot, Some(Ballot::new(5, NodeId(1))));
        assert_eq!(recovered.log.start(), Slot(11));
        assert_eq!(recovered.log.chosen(), Slot(10));
    }

    #[test]
    #[should_panic(expected = "second value for ballot")]
    fn a_second_value_for_one_ballot_and_slot_is_refused() {
        let mut log = Log::recover(Vec::new(), Slot::ZERO, Slot::ZERO).unwrap().log;
        log.record(proposal(1, 1, "a"), 1, false);
        log.record(proposal(1, 1, "b"), 2, false);
    }

    #[test]
    #[should_panic(expected = "chosen value of slot 1 would change")]
    fn a_chosen_value_never_changes() {
        let mut log = Log::recover(Vec::new(), Slot::ZERO, Slot::ZERO).unwrap().log;
        log.record(proposal(1, 1, "a"), 1, true);
        log.record(proposal(2, 1, "b"), 2, false);
    }

    #[test]
    fn a_higher_ballot_replaces_an_unchosen_value() {
        let mut log = Log::recover(Vec::new(), Slot::ZERO, Slot::ZERO).unwrap().log;
        log.record(proposal(1, 1, "a"), 1, false);
        log.record(proposal(2, 1, "b"), 2, false);
        assert_eq!(log.get(Slot(1)).unwrap().proposal, proposal(2, 1, "b"));
    }

    #[test]
    fn the_watermark_advances_over_held_slots_and_truncation_keeps_the_rest() {
        let mut log = Log::recover(Vec::new(), Slot::ZERO, Slot::ZERO).unwrap().log;
        for slot in 1..=4 {
            log.record(proposal(1, slot, "v"), slot, false);
        }
        assert_eq!(log.advance_chosen(), Slot(1));
        assert_eq!(log.advance_chosen(), Slot(2));
        log.mark_known_chosen(Slot(3));
        assert_eq!(log.fetch_start(), Slot(4), "slot 3 is known chosen, only waiting");
        assert!(log.truncate_below(Slot(3)));
        assert!(!log.truncate_below(Slot(2)), "already truncated");
        assert_eq!(log.start(), Slot(3));
        assert!(log.get(Slot(2)).is_none());
        assert!(log.get(Slot(3)).is_some());
        assert_eq!(log.chosen_values(Slot(3), Slot(9), 1 << 20), Vec::new(), "slot 3 is not chosen here yet");
        log.cover_to(Slot(3));
        assert_eq!(log.chosen_values(Slot(3), Slot(9), 1 << 20).len(), 1);
    }

    #[test]
    fn chosen_values_stop_at_the_byte_limit_but_serve_at_least_one() {
        let mut log = Log::recover(Vec::new(), Slot::ZERO, Slot::ZERO).unwrap().log;
        for slot in 1..=5 {
            log.record(proposal(1, slot, "0123456789"), slot, true);
            log.advance_chosen();
        }
        let size = proposal(1, 1, "0123456789").value.size_bytes();
        assert_eq!(log.chosen_values(Slot(1), Slot(5), size * 2).len(), 2);
        assert_eq!(log.chosen_values(Slot(1), Slot(5), 1).len(), 1);
        assert_eq!(log.chosen_values(Slot(2), Slot(3), u64::MAX).len(), 2);
    }
}
