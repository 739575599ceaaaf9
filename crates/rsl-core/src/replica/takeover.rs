//! What a newly elected primary re-proposes: for every slot from the first one it does not
//! know chosen to the last one any promise carried, the value phase 1 says may have been
//! chosen (the highest-ballot proposal among the quorum), the chosen value where it knows
//! it, and a no-op for a hole. A configuration value ends the inherited range at its slot
//! (PROTOCOL.md, "Reconfiguration"); one that cannot have been chosen becomes a no-op.

use std::collections::BTreeMap;

use crate::types::{Ballot, Proposal, Slot, Value};

use super::log::Log;
use super::reconfiguration::Membership;
use super::role::CandidateState;

/// The slots a new primary inherits and the values it re-proposes there.
#[derive(Debug)]
pub(super) struct Takeover {
    /// The first inherited slot (the first not known chosen).
    pub(super) first: Slot,
    /// The last inherited slot (`first - 1` when none is).
    pub(super) last: Slot,
    /// The slot of an inherited configuration change: no slot beyond it is opened until it
    /// is chosen.
    pub(super) change_slot: Option<Slot>,
    /// The slot of an inherited last request: no slot beyond `last` is opened until it is
    /// chosen.
    pub(super) last_slot: Option<Slot>,
    /// The value for each slot from `first` to `last`, in order.
    pub(super) values: Vec<Value>,
}

/// Plans the takeover of a candidate that won with the promises it collected.
/// `lowest_ballot` is a seeded bug (`Mutation::TakeoverPicksLowestBallot`): the merge keeps
/// the lowest-ballot proposal of each slot instead of the highest.
pub(super) fn plan(
    candidate: &CandidateState,
    log: &Log,
    membership: &Membership,
    lowest_ballot: bool,
) -> Takeover {
    let configuration = &membership.configuration;
    // Merge: for each slot, the proposal with the highest ballot among the quorum.
    let mut merged: BTreeMap<Slot, Proposal> = BTreeMap::new();
    for proposal in candidate.promises.iter().flatten().flatten() {
        match merged.get(&proposal.slot) {
            Some(existing) if (existing.ballot >= proposal.ballot) != lowest_ballot => {}
            _ => {
                merged.insert(proposal.slot, proposal.clone());
            }
        }
    }
    // The candidate may have learned more chosen slots while campaigning.
    let first = candidate.first_unchosen.max(log.chosen().next());
    let mut last = merged.keys().next_back().copied().unwrap_or(first.prev()).max(first.prev());
    // A configuration value ends this configuration at its slot: re-propose up to it and
    // nothing beyond. Unless a proposal beyond it carries a higher ballot: its primary saw
    // another value at that slot, so the change was never chosen and the slot is free (it
    // becomes a no-op).
    let mut change_slot = None;
    for slot in (first.0..=last.0).map(Slot) {
        let known_chosen = log.is_known_chosen(slot);
        let (ballot, is_change) = match (merged.get(&slot), log.get(slot)) {
            (_, Some(e)) if e.chosen => {
                (e.proposal.ballot, matches!(e.proposal.value, Value::Configuration(_)))
            }
            (Some(p), _) => (p.ballot, matches!(p.value, Value::Configuration(_))),
            _ => (Ballot::ZERO, false),
        };
        if !is_change {
            continue;
        }
        let stale = match merged.get(&slot).map(|p| &p.value) {
            // Proposed under an earlier configuration, past that configuration's end: never
            // chosen, and not a change this configuration can make.
            Some(Value::Configuration(c)) if !known_chosen => {
                c.number != configuration.number + 1 || c.first_slot != slot.next()
            }
            _ => false,
        };
        if stale {
            merged.insert(slot, Proposal { ballot, slot, value: Value::Noop });
            continue;
        }
        // Only a proposal of this configuration (a ballot within its rounds) can supersede;
        // one of a later configuration proves the change was chosen.
        let ceiling = membership.round_ceiling();
        let superseded = !known_chosen
            && candidate
                .promises
                .iter()
                .flatten()
                .flatten()
                .any(|p| p.slot > slot && p.ballot > ballot && p.ballot.round < ceiling);
        if superseded {
            merged.insert(slot, Proposal { ballot, slot, value: Value::Noop });
            continue;
        }
        change_slot = Some(slot);
        last = slot;
        break;
    }
    let values: Vec<Value> = (first.0..=last.0)
        .map(Slot)
        .map(|slot| match (log.get(slot), merged.remove(&slot)) {
            (Some(e), _) if e.chosen => e.proposal.value.clone(),
            (_, Some(p)) => p.value,
            _ => Value::Noop,
        })
        .collect();
    // A last request among them: no slot after the inherited ones is opened while it may
    // still be chosen (slots after it that a quorum may have chosen are re-proposed; they
    // apply as no-ops if it is).
    let last_slot =
        values.iter().position(|value| matches!(value, Value::Last(_))).map(|at| Slot(first.0 + at as u64));
    Takeover { first, last, change_slot, last_slot, values }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Configuration, NodeId, Request, RequestId};

    use super::super::role::CandidatePhase;

    /// Node 1 of configuration 1 over nodes 1..=3, from slot 1.
    fn configuration() -> Configuration {
        Configuration::new(1, vec![NodeId(1), NodeId(2), NodeId(3)], Slot(1))
    }

    fn ballot(round: u64, node: u64) -> Ballot {
        Ballot::new(round, NodeId(node))
    }

    fn batch(payload: &'static str) -> Value {
        Value::Batch(vec![Request { id: RequestId::default(), payload: payload.into() }].into())
    }

    fn proposal(ballot: Ballot, slot: u64, value: Value) -> Proposal {
        Proposal { ballot, slot: Slot(slot), value }
    }

    /// A change to configuration `number` over `members`, starting at `first_slot`.
    fn change(number: u64, members: &[u64], first_slot: u64) -> Value {
        Value::Configuration(Configuration::new(
            number,
            members.iter().copied().map(NodeId).collect(),
            Slot(first_slot),
        ))
    }

    /// Plans the takeover of node 1 at ballot 9.1 after the promises of nodes 2 and 3
    /// (its own carries nothing), from `first_unchosen`, over `log`.
    fn plan_with(
        log: &Log,
        first_unchosen: u64,
        promises: [Vec<Proposal>; 2],
        lowest_ballot: bool,
    ) -> Takeover {
        let [two, three] = promises;
        let candidate = CandidateState {
            ballot: ballot(9, 1),
            phase: CandidatePhase::Prepare,
            me: 0,
            granted: 0b111,
            promises: vec![Some(Vec::new()), Some(two), Some(three)],
            self_ticket: 0,
            first_unchosen: Slot(first_unchosen),
        };
        let membership = Membership::recover(configuration(), log, NodeId(1));
        plan(&candidate, log, &membership, lowest_ballot)
    }

    fn empty_log() -> Log {
        Log::recover(Vec::new(), Slot::ZERO, Slot::ZERO).unwrap().log
    }

    #[test]
    fn the_highest_ballot_proposal_of_each_slot_wins_and_holes_become_no_ops() {
        let promises = [
            vec![proposal(ballot(2, 2), 1, batch("old")), proposal(ballot(2, 2), 4, batch("d"))],
            vec![proposal(ballot(3, 3), 1, batch("new")), proposal(ballot(1, 3), 2, batch("b"))],
        ];
        let takeover = plan_with(&empty_log(), 1, promises, false);
        assert_eq!((takeover.first, takeover.last), (Slot(1), Slot(4)));
        assert_eq!(takeover.values, vec![batch("new"), batch("b"), Value::Noop, batch("d")]);
        assert_eq!((takeover.change_slot, takeover.last_slot), (None, None));
    }

    #[test]
    fn the_seeded_bug_keeps_the_lowest_ballot_proposal() {
        let promises =
            [vec![proposal(ballot(2, 2), 1, batch("old"))], vec![proposal(ballot(3, 3), 1, batch("new"))]];
        let takeover = plan_with(&empty_log(), 1, promises, true);
        assert_eq!(takeover.values, vec![batch("old")]);
    }

    #[test]
    fn nothing_is_inherited_when_no_promise_carries_a_proposal() {
        let takeover = plan_with(&empty_log(), 1, [Vec::new(), Vec::new()], false);
        assert_eq!((takeover.first, takeover.last), (Slot(1), Slot::ZERO));
        assert!(takeover.values.is_empty());
    }

    #[test]
    fn slots_learned_chosen_while_campaigning_are_not_inherited_and_known_chosen_values_win() {
        let mut log = empty_log();
        log.record(proposal(ballot(1, 2), 1, batch("a")), 1, false);
        log.advance_chosen();
        // Slot 3 is known chosen but slot 2 is missing, so the watermark stays at 1.
        log.record(proposal(ballot(1, 2), 3, batch("chosen")), 2, true);
        let promises = [
            vec![proposal(ballot(1, 2), 1, batch("a")), proposal(ballot(5, 2), 3, batch("later"))],
            vec![proposal(ballot(1, 3), 2, batch("b"))],
        ];
        // The candidate campaigned from slot 1 but has learned slot 1 chosen since.
        let takeover = plan_with(&log, 1, promises, false);
        assert_eq!((takeover.first, takeover.last), (Slot(2), Slot(3)));
        assert_eq!(takeover.values, vec![batch("b"), batch("chosen")]);
    }

    #[test]
    fn a_configuration_value_ends_the_inherited_range_at_its_slot() {
        let promises = [
            vec![proposal(ballot(2, 2), 1, batch("a")), proposal(ballot(2, 2), 2, change(2, &[1, 2], 3))],
            vec![proposal(ballot(2, 2), 3, batch("beyond")), proposal(ballot(1, 3), 4, batch("beyond too"))],
        ];
        let takeover = plan_with(&empty_log(), 1, promises, false);
        assert_eq!((takeover.first, takeover.last), (Slot(1), Slot(2)));
        assert_eq!(takeover.change_slot, Some(Slot(2)));
        assert_eq!(takeover.values, vec![batch("a"), change(2, &[1, 2], 3)]);
    }

    #[test]
    fn a_configuration_value_this_configuration_cannot_make_becomes_a_no_op() {
        // Number 3 skips one, and number 2 starting at slot 5 is not the slot after it.
        for stale in [change(3, &[1, 2], 2), change(2, &[1, 2], 5)] {
            let promises =
                [vec![proposal(ballot(2, 2), 1, stale)], vec![proposal(ballot(2, 3), 2, batch("b"))]];
            let takeover = plan_with(&empty_log(), 1, promises, false);
            assert_eq!(takeover.change_slot, None);
            assert_eq!(takeover.last, Slot(2), "the range goes on past the stale change");
            assert_eq!(takeover.values, vec![Value::Noop, batch("b")]);
        }
    }

    #[test]
    fn a_configuration_value_superseded_by_a_higher_ballot_beyond_it_becomes_a_no_op() {
        // A primary at 3.3 proposed at slot 2, past the change at slot 1: it never saw the
        // change chosen, so the change was not.
        let promises = [
            vec![proposal(ballot(2, 2), 1, change(2, &[1, 2], 2))],
            vec![proposal(ballot(3, 3), 2, batch("b"))],
        ];
        let takeover = plan_with(&empty_log(), 1, promises, false);
        assert_eq!(takeover.change_slot, None);
        assert_eq!(takeover.values, vec![Value::Noop, batch("b")]);
    }

    #[test]
    fn a_higher_ballot_of_a_later_configuration_proves_the_change_rather_than_superseding_it() {
        let later = Ballot::new(Configuration::new(2, vec![NodeId(1)], Slot(2)).round_floor() + 1, NodeId(2));
        let promises =
            [vec![proposal(ballot(2, 2), 1, change(2, &[1, 2], 2))], vec![proposal(later, 2, batch("next"))]];
        let takeover = plan_with(&empty_log(), 1, promises, false);
        assert_eq!(takeover.change_slot, Some(Slot(1)));
        assert_eq!((takeover.last, takeover.values.len()), (Slot(1), 1));
    }

    #[test]
    fn a_configuration_value_known_chosen_is_kept_whatever_follows_it() {
        let mut log = empty_log();
        log.record(proposal(ballot(2, 2), 1, change(2, &[1, 2], 2)), 1, true);
        let promises = [Vec::new(), vec![proposal(ballot(3, 3), 2, batch("b"))]];
        let takeover = plan_with(&log, 1, promises, false);
        assert_eq!(takeover.change_slot, Some(Slot(1)));
        assert_eq!(takeover.values, vec![change(2, &[1, 2], 2)]);
    }

    #[test]
    fn an_inherited_last_request_names_its_slot() {
        let last = Request { id: RequestId { client: 4, sequence: 1 }, payload: "bye".into() };
        let promises = [
            vec![proposal(ballot(2, 2), 1, batch("a")), proposal(ballot(2, 2), 2, Value::Last(last.clone()))],
            vec![proposal(ballot(2, 3), 3, batch("after"))],
        ];
        let takeover = plan_with(&empty_log(), 1, promises, false);
        assert_eq!(takeover.last_slot, Some(Slot(2)));
        assert_eq!(takeover.values, vec![batch("a"), Value::Last(last), batch("after")]);
    }
}
