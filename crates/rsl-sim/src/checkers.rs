//! The properties a run must keep, each named after what it checks:
//! - **agreement**: every replica applies the same value at the same position of its log
//!   (no two replicas choose different values for a slot; apply is in slot order);
//! - **validity**: every applied request was issued by a client, and nothing else is
//!   applied but no-ops;
//! - **durability**: every write acknowledged to a client is in the final chosen log;
//! - **linearizability**: the client history has a legal sequential order
//!   ([`rsl_check::check`], with a minimal witness from [`rsl_check::minimize`]);
//! - **liveness**: after the faults heal, every new request completes and the replicas
//!   converge.
//!
//! Agreement is checked online, at every apply; the others at the end of the run.

use std::collections::{HashMap, HashSet};
use std::fmt;

use rsl_core::{NodeId, RequestId, Slot, Time, Value};

/// A violated property.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The checker that caught it.
    pub checker: &'static str,
    /// Simulated time, microseconds.
    pub time: u64,
    /// What was wrong.
    pub detail: String,
}

impl Failure {
    /// Builds a failure report.
    pub fn new(checker: &'static str, time: u64, detail: String) -> Failure {
        Failure { checker, time, detail }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} violated at {}: {}", self.checker, Time(self.time), self.detail)
    }
}

/// The agreement checker: the first value applied at each log position is the chosen
/// one; every later apply at that position must match it.
#[derive(Debug, Default)]
pub struct Agreement {
    chosen: HashMap<Slot, (NodeId, Value)>,
}

impl Agreement {
    /// Records that `node` applied `value`, announced for `slot`, as its `position`-th
    /// log entry.
    pub fn on_apply(
        &mut self,
        time: u64,
        node: NodeId,
        position: Slot,
        slot: Slot,
        value: &Value,
    ) -> Result<(), Failure> {
        if slot != position {
            let detail = format!("{node} applied slot {slot} at log position {position}");
            return Err(Failure::new("agreement", time, detail));
        }
        match self.chosen.get(&position) {
            Some((first, chosen)) if chosen != value => {
                let detail = format!(
                    "slot {position}: {node} applied {} but {first} applied {}",
                    describe(value),
                    describe(chosen)
                );
                Err(Failure::new("agreement", time, detail))
            }
            Some(_) => Ok(()),
            None => {
                self.chosen.insert(position, (node, value.clone()));
                Ok(())
            }
        }
    }

    /// Every request id in any chosen slot.
    pub fn request_ids(&self) -> HashSet<RequestId> {
        let mut ids = HashSet::new();
        for (_, value) in self.chosen.values() {
            if let Value::Batch(requests) = value {
                ids.extend(requests.iter().map(|r| r.id));
            }
        }
        ids
    }

    /// Slots recorded.
    pub fn slots(&self) -> usize {
        self.chosen.len()
    }
}

fn describe(value: &Value) -> String {
    match value {
        Value::Noop => "no-op".into(),
        Value::Batch(requests) => {
            let ids: Vec<String> =
                requests.iter().take(4).map(|r| format!("{}/{}", r.id.client, r.id.sequence)).collect();
            format!("batch[{}{}]", ids.join(","), if requests.len() > 4 { ",…" } else { "" })
        }
        Value::Configuration(c) => format!("configuration {}", c.number),
        Value::Last(r) => format!("last {}/{}", r.id.client, r.id.sequence),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsl_core::Request;

    fn batch(client: u64) -> Value {
        Value::Batch(vec![Request { id: RequestId { client, sequence: 1 }, payload: "x".into() }])
    }

    #[test]
    fn agreement_catches_a_second_value_and_a_misplaced_apply() {
        let mut agreement = Agreement::default();
        agreement.on_apply(0, NodeId(1), Slot(1), Slot(1), &batch(1)).unwrap();
        agreement.on_apply(0, NodeId(2), Slot(1), Slot(1), &batch(1)).unwrap();
        let failure = agreement.on_apply(0, NodeId(3), Slot(1), Slot(1), &batch(2)).unwrap_err();
        assert_eq!(failure.checker, "agreement");
        assert!(failure.detail.contains("slot 1"), "{failure}");
        let failure = agreement.on_apply(0, NodeId(3), Slot(2), Slot(3), &Value::Noop).unwrap_err();
        assert!(failure.detail.contains("position 2"), "{failure}");
        assert!(agreement.request_ids().contains(&RequestId { client: 1, sequence: 1 }));
    }
}
