//! The O(n) invariants that hold between any two steps, checked after every input in
//! contracts builds (tests, the simulator, `cargo xtask contracts`) and compiled away in
//! release. The sub-state types check their own; this file ties them together.

use super::large::LargeWindow;
use super::mutation::Mutation;
use super::role::RoleState;
use super::Replica;

impl Replica {
    pub(super) fn check_invariants(&self) {
        if !crate::contracts::ENABLED {
            return;
        }
        invariant!(self.applied <= self.apply_emitted);
        invariant!(self.apply_emitted <= self.log.chosen(), "applied beyond chosen");
        invariant!(self.checkpoint <= self.apply_emitted);
        self.persistence.check_invariants();
        self.check_read_invariants();
        // These bugs break the promise bound directly (a truncation past the chosen slots
        // loses the accepts that raise a recovered promise); the simulator's checkers must
        // catch their consequences instead.
        let promise_broken = self.mutated(Mutation::AcceptBelowPromise)
            || self.mutated(Mutation::ForgetPromiseOnRestart)
            || self.mutated(Mutation::TruncateUnchosen);
        let promise_bound = (!promise_broken).then_some(self.promised);
        let durability_bug = self.durability_bug_seeded();
        self.log.check_invariants(
            self.checkpoint,
            |entry| self.persistence.is_durable(entry.ticket) || durability_bug,
            promise_bound,
        );
        match &self.role {
            RoleState::Primary(primary) => {
                invariant!(primary.ballot == self.promised, "primary's ballot is its promise");
                invariant!(primary.next_slot > self.log.chosen());
                invariant!(primary.in_flight.keys().all(|&s| s > self.log.chosen() && s < primary.next_slot));
                primary.queue.check_invariants();
                invariant!(
                    primary.large == LargeWindow::of(primary.in_flight.values()),
                    "large window count"
                );
                invariant!(
                    primary.large.slots <= self.config.pipeline_depth.max(primary.in_flight.len() as u64)
                );
                invariant!(primary.queue.len() as u64 <= self.config.proposal_queue_max);
            }
            RoleState::Candidate(candidate) => {
                invariant!(
                    candidate.me < self.membership.configuration.members.len(),
                    "a candidate is a member"
                );
            }
            RoleState::Secondary => {}
        }
    }
}
