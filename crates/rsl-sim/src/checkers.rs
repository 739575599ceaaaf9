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
//! - **fast-read-staleness**: a fast read answers the key's value at some slot between
//!   its minimum slot and the highest slot applied anywhere when it was answered
//!   ([`check_fast_reads`]); so it reflects every write in a slot up to its minimum: the
//!   client's own acknowledged writes, and every write acknowledged anywhere before a
//!   lease read handed the client that slot;
//! - **state-digest**: replicas that applied the same slot hold states with equal digests
//!   (a wrong checkpoint, or an install that crashed half way and recovered badly, shows
//!   here even where the slots agree);
//! - **liveness**: after the faults heal, every new request completes and the replicas
//!   converge.
//!
//! Agreement is checked online, at every apply, and at the end of the run against every
//! value a replica's disk holds as chosen; configuration when a replica becomes primary
//! and at the end; the others at the end of the run, safety before liveness.

use std::collections::{HashMap, HashSet};
use std::fmt;

use rsl_core::{Configuration, NodeId, RequestId, Slot, Time, Value};

use crate::kv::{Kv, KvOp};

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

/// A fast read as its replica answered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FastReadAnswer {
    /// The client that asked.
    pub client: usize,
    /// The key read.
    pub key: u8,
    /// The slot the replica had to have applied first.
    pub min_slot: Slot,
    /// The value answered.
    pub value: Option<i64>,
    /// Simulated time of the answer, microseconds.
    pub answered_at: u64,
    /// The highest slot any replica had applied then.
    pub applied_anywhere: Slot,
}

/// The fast-read staleness checker: every answer is the key's value after some slot from
/// its minimum slot up to the highest slot applied anywhere when it was answered, the
/// values replayed from the agreed log.
pub fn check_fast_reads(agreement: &Agreement, answers: &[FastReadAnswer]) -> Result<(), Failure> {
    let top = answers.iter().map(|a| a.applied_anywhere).max().unwrap_or_default();
    // Per key, the slots that changed its value and the value after each.
    let mut changes: HashMap<u8, Vec<(Slot, Option<i64>)>> = HashMap::new();
    let mut kv = Kv::default();
    for slot in (1..=top.0).map(Slot) {
        let Some(Value::Batch(requests)) = agreement.value_at(slot) else { continue };
        for request in requests {
            let _ = kv.execute(request);
            let Some(key) = KvOp::decode(&request.payload).map(|op| op.key()) else { continue };
            let history = changes.entry(key).or_insert_with(|| vec![(Slot::ZERO, None)]);
            let now = kv.get(key);
            if history.last().is_some_and(|(_, before)| *before != now) {
                history.push((slot, now));
            }
        }
    }
    let initial = vec![(Slot::ZERO, None)];
    for answer in answers {
        let history = changes.get(&answer.key).unwrap_or(&initial);
        let at_min = history.iter().rev().find(|(slot, _)| *slot <= answer.min_slot).and_then(|c| c.1);
        let later =
            history.iter().filter(|(slot, _)| *slot > answer.min_slot && *slot <= answer.applied_anywhere);
        if at_min == answer.value || later.clone().any(|(_, value)| *value == answer.value) {
            continue;
        }
        let detail = format!(
            "client {} fast-read key {} = {:?} with minimum slot {}: the key held {:?} at slot {} \
             and then {:?} up to slot {} (the highest applied anywhere)",
            answer.client,
            answer.key,
            answer.value,
            answer.min_slot,
            at_min,
            answer.min_slot,
            later.map(|(slot, value)| format!("{value:?}@{slot}")).collect::<Vec<_>>(),
            answer.applied_anywhere
        );
        return Err(Failure::new("fast-read-staleness", answer.answered_at, detail));
    }
    Ok(())
}

/// The state-digest checker: `(node, applied slot, digest)` of every live replica; any two
/// at the same slot must have the same digest.
pub fn check_digests(time: u64, states: &[(NodeId, Slot, u64)]) -> Result<(), Failure> {
    for (i, (node, slot, digest)) in states.iter().enumerate() {
        if let Some((other, _, theirs)) = states[..i].iter().find(|(_, s, d)| s == slot && d != digest) {
            let detail = format!(
                "{other} and {node} both applied up to slot {slot} but their states differ \
                 (digests {theirs:016x} and {digest:016x})"
            );
            return Err(Failure::new("state-digest", time, detail));
        }
    }
    Ok(())
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
    /// `node` became primary in `configuration`. A primary's own vote counts towards its
    /// quorums, so it must be a voter of that configuration: a learner (or a node outside
    /// it) that leads is a failure at once.
    pub fn on_primary(
        &mut self,
        time: u64,
        node: NodeId,
        configuration: &Configuration,
    ) -> Result<(), Failure> {
        if !configuration.contains(node) {
            let what = if configuration.is_learner(node) { "a learner" } else { "not a member" };
            let detail = format!(
                "{node} became primary in configuration {} (voters {:?}, learners {:?}) where it is {what}",
                configuration.number, configuration.members, configuration.learners
            );
            return Err(Failure::new("configuration", time, detail));
        }
        if configuration.number > 1 {
            self.led.entry(configuration.clone()).or_insert(node);
        }
        Ok(())
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
        Value::Batch(vec![Request { id: RequestId { client, sequence: 1 }, payload: "x".into() }].into())
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
        configurations.on_primary(0, NodeId(1), &Configuration::new(1, vec![NodeId(1)], Slot(1))).unwrap();
        configurations.on_primary(0, NodeId(1), &next).unwrap();
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

    #[test]
    fn configuration_catches_a_learner_or_outsider_that_leads() {
        let with_learner = Configuration::new(2, vec![NodeId(1), NodeId(2), NodeId(3)], Slot(8))
            .with_learners(vec![NodeId(4)]);
        let mut configurations = Configurations::default();
        configurations.on_primary(0, NodeId(2), &with_learner).expect("a voter leads");
        let failure = configurations.on_primary(5, NodeId(4), &with_learner).unwrap_err();
        assert_eq!(failure.checker, "configuration");
        assert!(failure.detail.contains("n4") || failure.detail.contains("4"), "{failure}");
        assert!(failure.detail.contains("a learner"), "{failure}");
        let failure = configurations.on_primary(5, NodeId(9), &with_learner).unwrap_err();
        assert!(failure.detail.contains("not a member"), "{failure}");
    }

    fn put(client: u64, sequence: u64, key: u8, value: i64) -> Value {
        let payload = KvOp::Put { key, value }.encode();
        Value::Batch(vec![Request { id: RequestId { client, sequence }, payload }].into())
    }

    fn answer(min_slot: u64, value: Option<i64>, applied_anywhere: u64) -> FastReadAnswer {
        FastReadAnswer {
            client: 0,
            key: 1,
            min_slot: Slot(min_slot),
            value,
            answered_at: 0,
            applied_anywhere: Slot(applied_anywhere),
        }
    }

    #[test]
    fn fast_reads_answer_a_value_between_their_minimum_slot_and_the_newest_applied() {
        let mut agreement = Agreement::default();
        let log = [put(1, 1, 1, 10), put(1, 2, 2, 99), put(1, 3, 1, 30), Value::Noop];
        for (i, value) in log.iter().enumerate() {
            let slot = Slot(i as u64 + 1);
            agreement.on_apply(0, NodeId(1), slot, slot, value).unwrap();
        }
        // Before any write, at the minimum slot, and a newer value already applied.
        let fine =
            [answer(0, None, 0), answer(0, Some(10), 4), answer(2, Some(10), 4), answer(2, Some(30), 3)];
        check_fast_reads(&agreement, &fine).unwrap();
        // Staler than the minimum slot: the value before slot 3 after asking for 3.
        let failure = check_fast_reads(&agreement, &[answer(3, Some(10), 4)]).unwrap_err();
        assert_eq!(failure.checker, "fast-read-staleness");
        assert!(failure.detail.contains("minimum slot 3"), "{failure}");
        // From the future: a value not applied anywhere when answered.
        assert!(check_fast_reads(&agreement, &[answer(1, Some(30), 2)]).is_err());
        // Never written.
        assert!(check_fast_reads(&agreement, &[answer(0, Some(7), 4)]).is_err());
    }

    #[test]
    fn digests_must_match_at_equal_slots_only() {
        let states = [(NodeId(1), Slot(5), 1), (NodeId(2), Slot(6), 2), (NodeId(3), Slot(5), 1)];
        check_digests(0, &states).unwrap();
        let states = [(NodeId(1), Slot(5), 1), (NodeId(2), Slot(6), 2), (NodeId(3), Slot(5), 3)];
        let failure = check_digests(0, &states).unwrap_err();
        assert_eq!(failure.checker, "state-digest");
        assert!(failure.detail.contains("n1 and n3") || failure.detail.contains("slot 5"), "{failure}");
    }
}
