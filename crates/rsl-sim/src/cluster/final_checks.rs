//! The checks at the end of a run, safety first (a safety violation often stalls the run
//! too, and must not hide behind the stall): agreement of every value a replica's disk
//! holds as chosen, configuration safety, durability (every acknowledged write is in the
//! chosen log) and linearizability of the clients' history; then liveness (every operation
//! invoked after healing completed, the members converged, a primary exists).

use rsl_core::{NodeId, RequestId, Role, Slot, Time};

use super::{node_id, Simulation, SETTLE_US};
use crate::checkers::Failure;
use rsl_check as linearizability;

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

    pub(super) fn final_checks(&mut self) {
        // Agreement: every value a disk holds as chosen (slots up to its durable chosen
        // watermark) is the value applied there, or the same as every other disk's.
        for (index, node) in self.nodes.iter().enumerate() {
            for (slot, proposal) in node.disk.proposals.range(..=node.disk.chosen) {
                if let Err(failure) =
                    self.agreement.on_chosen_held(self.now, node_id(index), *slot, &proposal.value)
                {
                    self.fail(failure);
                    return;
                }
            }
        }
        if let Err(failure) = self.configurations.check(self.now, &self.agreement) {
            self.fail(failure);
            return;
        }
        // Durability: every acknowledged write is in the chosen log.
        let chosen_ids = self.agreement.request_ids();
        let mut lost: Vec<&RequestId> =
            self.acknowledged.iter().filter(|id| !chosen_ids.contains(id)).collect();
        lost.sort();
        if let Some(first) = lost.first() {
            let detail =
                format!("{} acknowledged writes missing from the chosen log; first {first:?}", lost.len());
            self.fail(Failure::new("durability", self.now, detail));
            return;
        }
        // Linearizability of the client history.
        match linearizability::check(&self.history, linearizability::CheckBudget::default()) {
            linearizability::CheckResult::Linearizable => {}
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
                self.fail(Failure::new("linearizability", self.now, detail));
                return;
            }
            linearizability::CheckResult::Unknown { key, reason } => {
                let detail = format!("key {key}: checker gave up: {reason}");
                self.fail(Failure::new("linearizability", self.now, detail));
                return;
            }
        }
        // Liveness: every operation invoked after the cluster settled completed, and the
        // replicas converged on one applied slot.
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
            self.fail(Failure::new("liveness", self.now, detail));
            return;
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
            self.fail(Failure::new(
                "liveness",
                self.now,
                format!(
                    "replicas did not converge: applied {applied:?}; replicas: {}",
                    self.describe_replicas()
                ),
            ));
            return;
        }
        if !self.nodes.iter().filter_map(|n| n.replica.as_ref()).any(|r| r.role() == Role::Primary) {
            self.fail(Failure::new("liveness", self.now, "no primary at the end of the healed phase".into()));
        }
    }
}
