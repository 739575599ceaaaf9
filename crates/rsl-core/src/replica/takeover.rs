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
