//! The checks at the end of a run, safety first (a safety violation often stalls the run
//! too, and must not hide behind the stall): agreement of every value a replica's disk
//! holds as chosen, configuration safety, state digests (replicas at one applied slot hold
//! one state), durability (every acknowledged write is in the chosen log), fast-read
//! staleness and linearizability of the clients' history; then liveness (every operation
//! invoked after healing completed, the members converged, a primary exists).

use rsl_core::{NodeId, RequestId, Role, Slot, Time};

use super::{node_id, Simulation, SETTLE_US};
use crate::checkers::{self, Failure};
use rsl_check as linearizability;

/// One of the checks at the end of a run.
type Check = fn(&mut Simulation) -> Result<(), Failure>;

impl Simulation {
    /// Every replica's role, configuration and watermarks, for failure reports.
    pub(super) fn describe_replicas(&self) -> String {
        let described: Vec<String> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| match &n.replica {
                None => format!("{}: down", node_id(i)),
                Some(r) => {
                    let s = r.status();
                    format!(
                        "{}: {:?} cfg {}{:?}@{} member={} primary={:?} promised={} chosen={} applied={} queued={} in_flight={}",
                        s.node,
                        s.role,
                        s.configuration.number,
                        s.configuration.members,
                        s.configuration.first_slot,
                        s.member,
                        s.primary,
                        s.promised,
                        s.chosen,
                        s.applied,
                        r.queued_requests(),
                        r.in_flight_slots()
                    )
                }
            })
            .collect();
        described.join(" | ")
    }

    /// The checks at the end of a run, safety first (agreement of what the disks hold as
    /// chosen, configuration, state digests, durability, fast-read staleness,
    /// linearizability), then liveness and convergence: a run that breaks both reports the
    /// safety violation.
    pub(super) fn final_checks(&mut self) {
        let checks: [Check; 7] = [
            Simulation::check_chosen_held,
            |sim| sim.configurations.check(sim.now, &sim.agreement),
            Simulation::check_digests,
            Simulation::check_durability,
            |sim| checkers::check_fast_reads(&sim.agreement, &sim.fast_reads),
            Simulation::check_linearizability,
            Simulation::check_liveness,
        ];
        for check in checks {
            if let Err(failure) = check(self) {
                self.fail(failure);
                return;
            }
        }
    }

    /// Agreement: every value a disk holds as chosen (slots up to its durable chosen
    /// watermark) is the value applied there, or the same as every other disk's.
    fn check_chosen_held(&mut self) -> Result<(), Failure> {
        for (index, node) in self.nodes.iter().enumerate() {
            for (slot, proposal) in node.disk.proposals.range(..=node.disk.chosen) {
                self.agreement.on_chosen_held(self.now, node_id(index), *slot, &proposal.value)?;
            }
        }
        Ok(())
    }

    /// Replicas at the same applied slot hold the same state.
    fn check_digests(&mut self) -> Result<(), Failure> {
        let states: Vec<(NodeId, Slot, u64)> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.replica.is_some())
            .map(|(i, n)| (node_id(i), Slot(n.apply_position.0 - 1), n.kv.digest()))
            .collect();
        checkers::check_digests(self.now, &states)
    }

    /// Every acknowledged write is in the chosen log.
    fn check_durability(&mut self) -> Result<(), Failure> {
        let chosen_ids = self.agreement.request_ids();
        let mut lost: Vec<&RequestId> =
            self.acknowledged.iter().filter(|id| !chosen_ids.contains(id)).collect();
        lost.sort();
        match lost.first() {
            Some(first) => {
                let detail = format!(
                    "{} acknowledged writes missing from the chosen log; first {first:?}",
                    lost.len()
                );
                Err(Failure::new("durability", self.now, detail))
            }
            None => Ok(()),
        }
    }

    /// The client history (fast reads apart) is linearizable.
    fn check_linearizability(&mut self) -> Result<(), Failure> {
        match linearizability::check(&self.history, linearizability::CheckBudget::default()) {
            linearizability::CheckResult::Linearizable => Ok(()),
            linearizability::CheckResult::NotLinearizable { key, witness } => {
                let budget = linearizability::CheckBudget::default();
                let witness = linearizability::minimize(&self.history, &key, &witness, budget);
                let ops: Vec<String> =
                    witness.operations.iter().map(|&i| format!("{:?}", self.history[i])).collect();
                let detail = format!(
                    "key {key}: cannot order {} (with the key's {} other writes of unknown outcome)",
                    ops.join("; "),
                    witness.relaxed_writes
                );
                Err(Failure::new("linearizability", self.now, detail))
            }
            linearizability::CheckResult::Unknown { key, reason } => {
                let detail = format!("key {key}: checker gave up: {reason}");
                Err(Failure::new("linearizability", self.now, detail))
            }
        }
    }

    /// Every operation invoked after the cluster settled completed, the members converged
    /// on one applied slot, and there is a primary.
    fn check_liveness(&mut self) -> Result<(), Failure> {
        for (client, state) in self.clients.iter().enumerate() {
            if let Some(op) = state.pending.as_ref().filter(|op| op.invoked_at >= self.fault_end + SETTLE_US)
            {
                self.liveness_misses.push(format!(
                    "client {client} {:?} invoked at {} still pending at the end",
                    op.op,
                    Time(op.invoked_at)
                ));
            }
        }
        if let Some(miss) = self.liveness_misses.first() {
            let detail = format!(
                "{} operations timed out after healing; first: {miss}; replicas: {}",
                self.liveness_misses.len(),
                self.describe_replicas()
            );
            return Err(Failure::new("liveness", self.now, detail));
        }
        // Replicas outside the final configuration (removed, or spares never added) stop
        // following the ring; the members must agree.
        let applied: Vec<(NodeId, Slot)> = self
            .nodes
            .iter()
            .filter_map(|n| n.replica.as_ref())
            .filter(|r| r.status().member)
            .map(|r| (r.node(), r.applied()))
            .collect();
        let top = applied.iter().map(|(_, s)| *s).max().unwrap_or_default();
        if applied.iter().any(|(_, s)| *s != top) {
            let detail = format!(
                "replicas did not converge: applied {applied:?}; replicas: {}",
                self.describe_replicas()
            );
            return Err(Failure::new("liveness", self.now, detail));
        }
        if !self.nodes.iter().filter_map(|n| n.replica.as_ref()).any(|r| r.role() == Role::Primary) {
            return Err(Failure::new(
                "liveness",
                self.now,
                "no primary at the end of the healed phase".into(),
            ));
        }
        Ok(())
    }
}
