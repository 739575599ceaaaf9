//! A simulated replica's durable storage: what survives a crash, and what a crash with
//! torn writes leaves of the writes not yet reported durable.

use std::collections::{BTreeMap, VecDeque};

use rsl_core::{Ballot, DurableState, PersistRequest, Proposal, Slot};

use super::Checkpoint;
use crate::rng::Rng;

/// A replica's durable storage: what survives a crash.
#[derive(Debug, Default)]
pub(super) struct Disk {
    pub(super) promise: Ballot,
    pub(super) proposals: BTreeMap<Slot, Proposal>,
    pub(super) chosen: Slot,
    pub(super) log_start: Slot,
    /// Written but not yet reported durable.
    pub(super) pending: VecDeque<PersistRequest>,
    /// Completions are reported in ticket order.
    pub(super) last_completion: u64,
    pub(super) checkpoint: Checkpoint,
}

impl Disk {
    pub(super) fn apply(&mut self, request: &PersistRequest) {
        if let Some(promise) = request.promise {
            self.promise = self.promise.max(promise);
        }
        for proposal in &request.proposals {
            self.apply_proposal(proposal.clone());
        }
        if let Some(chosen) = request.chosen {
            self.chosen = self.chosen.max(chosen);
        }
    }

    pub(super) fn apply_proposal(&mut self, proposal: Proposal) {
        if proposal.slot >= self.log_start {
            self.proposals.insert(proposal.slot, proposal);
        }
    }

    /// A crash: unsynced writes are lost, except possibly a prefix of them torn at a
    /// record boundary (the last record written may be incomplete and is then dropped,
    /// as the journal's recovery cuts a torn tail).
    pub(super) fn crash(&mut self, rng: &mut Rng, torn: bool) {
        let pending: Vec<PersistRequest> = self.pending.drain(..).collect();
        if !torn || pending.is_empty() || !rng.chance(0.5) {
            return;
        }
        let records: usize = pending
            .iter()
            .map(|r| r.promise.is_some() as usize + r.proposals.len() + r.chosen.is_some() as usize)
            .sum();
        let mut keep = rng.between(0, records as u64) as usize;
        for request in pending {
            if keep == 0 {
                break;
            }
            if let Some(promise) = request.promise {
                self.promise = self.promise.max(promise);
                keep -= 1;
            }
            for proposal in request.proposals {
                if keep == 0 {
                    break;
                }
                self.apply_proposal(proposal);
                keep -= 1;
            }
            if let (Some(chosen), true) = (request.chosen, keep > 0) {
                self.chosen = self.chosen.max(chosen);
                keep -= 1;
            }
        }
    }

    pub(super) fn truncate_below(&mut self, below: Slot) {
        self.log_start = self.log_start.max(below);
        self.proposals = self.proposals.split_off(&below);
    }

    pub(super) fn recovered(&self) -> DurableState {
        DurableState {
            promise: self.promise,
            proposals: self.proposals.values().cloned().collect(),
            chosen: self.chosen,
            checkpoint: self.checkpoint.0,
            configuration: self.checkpoint.2.clone(),
        }
    }
}
