//! The properties a run must keep, each named after what it checks:
//! - **agreement**: every replica applies the same value at the same position of its log
//!   (no two replicas choose different values for a slot; apply is in slot order);
//! - **validity**: every applied request was issued by a client, and nothing else is
//!   applied but no-ops;
//! - **durability**: every write acknowledged to a client is in the final chosen log;
//! - **linearizability**: the client history has a legal sequential order
//!   ([`rsl_check::check`], with a minimal witness from [`rsl_check::minimize`]);
//! - **configuration**: every configuration a replica led as primary was chosen, in the
//!   slot before its first (no slot is decided by a quorum of a configuration that was
//!   never chosen);
//! - **liveness**: after the faults heal, every new request completes and the replicas
//!   converge.
//!
//! Agreement is checked online, at every apply, and at the end of the run against every
//! value a replica's disk holds as chosen; configuration when a replica becomes primary
//! and at the end; the others at the end of the run, safety before liveness.

use std::collections::{HashMap, HashSet};
use std::fmt;

use rsl_core::{Configuration, NodeId, RequestId, Slot, Time, Value};

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

    /// Checks a value that `node`'s durable log holds as chosen at `slot` (recorded as the
    /// slot's value if nobody applied it yet).
    pub fn on_chosen_held(
        &mut self,
        time: u64,
        node: NodeId,
        slot: Slot,
        value: &Value,
    ) -> Result<(), Failure> {
        match self.chosen.get(&slot) {
            Some((first, chosen)) if chosen != value => {
                let detail = format!(
                    "slot {slot}: {node}'s log holds {} as chosen but {first} applied {}",
                    describe(value),
                    describe(chosen)
                );
                Err(Failure::new("agreement", time, detail))
            }
            Some(_) => Ok(()),
            None => {
                self.chosen.insert(slot, (node, value.clone()));
                Ok(())
            }
        }
    }

    /// The value chosen at `slot`, when known.
    pub fn value_at(&self, slot: Slot) -> Option<&Value> {
        self.chosen.get(&slot).map(|(_, value)| value)
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

/// The configuration checker: a primary decides slots with the quorums of its
/// configuration, so that configuration must have been chosen (at the slot before its
/// first). Configurations led are recorded as replicas become primary and checked against
/// the chosen values as they become known.
#[derive(Debug, Default)]
pub struct Configurations {
    /// Every configuration (after the initial one) some replica led, with the first leader.
    led: HashMap<Configuration, NodeId>,
}

impl Configurations {
    /// `node` became primary in `configuration`.
    pub fn on_primary(&mut self, node: NodeId, configuration: &Configuration) {
        if configuration.number > 1 {
            self.led.entry(configuration.clone()).or_insert(node);
        }
    }

    /// Checks every configuration led whose slot before its first is chosen.
    pub fn check(&self, time: u64, agreement: &Agreement) -> Result<(), Failure> {
        let mut led: Vec<(&Configuration, &NodeId)> = self.led.iter().collect();
        led.sort_by_key(|(c, node)| (c.number, c.first_slot, **node));
        for (configuration, node) in led {
            let slot = configuration.first_slot.prev();
            match agreement.value_at(slot) {
                Some(Value::Configuration(chosen)) if chosen == configuration => {}
                Some(other) => {
                    let detail = format!(
                        "{node} led configuration {} {:?} from slot {}, but slot {slot} chose {}",
                        configuration.number,
                        configuration.members,
                        configuration.first_slot,
                        describe(other)
                    );
                    return Err(Failure::new("configuration", time, detail));
                }
                None => {}
            }
        }
        Ok(())
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
        let failure = agreement.on_chosen_held(0, NodeId(2), Slot(1), &batch(3)).unwrap_err();
        assert!(failure.detail.contains("n2's log holds"), "{failure}");
        agreement.on_chosen_held(0, NodeId(2), Slot(5), &batch(3)).unwrap();
        assert_eq!(agreement.value_at(Slot(5)), Some(&batch(3)), "a held chosen value nobody applied yet");
    }

    #[test]
    fn configuration_catches_a_configuration_led_but_not_chosen() {
        let next = Configuration::new(2, vec![NodeId(1), NodeId(4)], Slot(8));
        let mut configurations = Configurations::default();
        configurations.on_primary(NodeId(1), &Configuration::new(1, vec![NodeId(1)], Slot(1)));
        configurations.on_primary(NodeId(1), &next);
        let mut agreement = Agreement::default();
        configurations.check(0, &agreement).expect("slot 7 not known chosen yet");
        agreement.on_apply(0, NodeId(2), Slot(7), Slot(7), &Value::Configuration(next.clone())).unwrap();
        configurations.check(0, &agreement).expect("chosen");
        let mut agreement = Agreement::default();
        agreement.on_apply(0, NodeId(2), Slot(7), Slot(7), &Value::Noop).unwrap();
        let failure = configurations.check(0, &agreement).unwrap_err();
        assert_eq!(failure.checker, "configuration");
        assert!(failure.detail.contains("slot 7 chose no-op"), "{failure}");
    }
}
