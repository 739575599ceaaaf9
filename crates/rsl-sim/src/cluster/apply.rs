//! The state machine side of a simulated replica: every applied slot is checked (agreement
//! with every other replica, validity of each request and configuration) before it is
//! executed (and chained into the state's digest), and writes, lease reads and fast reads
//! waiting for it are answered.

use rsl_core::{Configuration, Slot, Value};

use super::clients::ClientReply;
use super::{node_id, Simulation};
use crate::checkers::Failure;
use crate::kv::KvResult;

impl Simulation {
    pub(super) fn apply(&mut self, index: usize, slot: Slot, value: Value) {
        let position = self.nodes[index].apply_position;
        if let Err(failure) = self.agreement.on_apply(self.now, node_id(index), position, slot, &value) {
            self.fail(failure);
            return;
        }
        self.nodes[index].apply_position = position.next();
        self.nodes[index].kv.record_slot(slot, &value);
        self.stats.slots = self.stats.slots.max(slot.0);
        if let Value::Batch(requests) = &value {
            for request in requests {
                match self.issued.get(&request.id) {
                    Some(issued) if issued.payload == request.payload => {}
                    _ => {
                        let detail =
                            format!("slot {slot} holds request {:?} that no client issued", request.id);
                        self.fail(Failure::new("validity", self.now, detail));
                        return;
                    }
                }
                let result = self.nodes[index].kv.execute(request);
                if let Some((client, attempt)) = self.nodes[index].waiting_writes.remove(&request.id) {
                    self.reply(client, attempt, ClientReply::Ok { result, slot });
                }
            }
        } else if let Value::Configuration(configuration) = &value {
            if !self
                .changes_requested
                .contains(&(configuration.members.clone(), configuration.learners.clone()))
            {
                let detail =
                    format!("slot {slot} holds configuration {configuration:?} that nobody asked for");
                self.fail(Failure::new("validity", self.now, detail));
                return;
            }
            if configuration.first_slot != slot.next() {
                let detail = format!("slot {slot} holds configuration {configuration:?} starting elsewhere");
                self.fail(Failure::new("validity", self.now, detail));
                return;
            }
            self.stats.configurations_chosen =
                self.stats.configurations_chosen.max(configuration.number.saturating_sub(1));
            self.count_learners(configuration);
        }
        let node = &mut self.nodes[index];
        let replica = node.replica.as_mut().expect("alive");
        replica.on_applied(slot);
        // Serve lease reads that waited for this slot.
        let applied = replica.applied();
        let mut ready = Vec::new();
        node.waiting_reads.retain(|&(index_slot, key, client, attempt)| {
            if index_slot <= applied {
                ready.push((key, client, attempt));
                false
            } else {
                true
            }
        });
        for (key, client, attempt) in ready {
            let result = KvResult::Value(self.nodes[index].kv.get(key));
            self.reply(client, attempt, ClientReply::Ok { result, slot: applied });
        }
        self.serve_fast_reads(index);
    }

    /// Counts a chosen configuration with learners, and the learners of the one before it
    /// that it makes voters (the first replica to apply a configuration counts it).
    fn count_learners(&mut self, configuration: &Configuration) {
        let previous = self.newest_chosen_configuration.as_ref();
        if previous.is_some_and(|p| p.number >= configuration.number) {
            return;
        }
        if !configuration.learners.is_empty() {
            self.stats.configurations_with_learners += 1;
        }
        if let Some(previous) = previous.filter(|p| p.number + 1 == configuration.number) {
            let promoted = configuration.members.iter().filter(|node| previous.is_learner(**node)).count();
            self.stats.learners_promoted += promoted as u64;
        }
        self.newest_chosen_configuration = Some(configuration.clone());
    }
}
