//! Seeded histories of a simulated linearizable key-value store, and mutations that
//! make them certainly not linearizable: material for tests and benchmarks of the
//! checker.
//!
//! [`generate`] runs `processes` clients against an atomic store, each issuing one
//! operation at a time with random latencies (so operations overlap at random),
//! some of them timing out (`info`: they take effect later or never) and some
//! failing (`fail`: no effect). Every operation that takes effect does so at one
//! instant inside its interval (after its invocation, for a timed-out one), and its
//! result is what the store held at that instant, so the history is linearizable by
//! construction. Every value written is unique, which is what lets the mutations
//! below guarantee a violation.
//!
//! ```
//! use rsl_check::generate::{generate, Workload};
//! use rsl_check::{check, parse_history, CheckBudget};
//!
//! let generated = generate(&Workload { duration_ns: 10_000_000_000, ..Workload::ten_minutes(7) });
//! let history = parse_history(&generated.to_jsonl()).expect("well-formed");
//! assert_eq!(history.ops, generated.ops);
//! assert!(check(&history.ops, CheckBudget::default()).is_linearizable());
//! ```

use std::collections::HashMap;

pub use crate::rng::Rng;
use crate::{Event, EventType, Input, Operation, Output};

/// What the simulated clients do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// Seed of every random choice.
    pub seed: u64,
    /// Concurrent clients, each with one operation outstanding at a time.
    pub processes: u32,
    /// Keys, `k0` to `k{keys-1}`.
    pub keys: u32,
    /// Per mille of operations on `k0`, the hot key; the rest are spread evenly.
    pub hot_key_per_mille: u32,
    /// Clients stop invoking after this long.
    pub duration_ns: u64,
    /// Mean time from invocation to response (uniform in 1..2×mean).
    pub latency_ns: u64,
    /// Mean pause between a response and the client's next invocation (uniform in 0..2×mean).
    pub think_ns: u64,
    /// Per mille of operations that time out: `info` after `timeout_ns`; half of them
    /// take effect (up to `timeout_ns` after the timeout), half never do.
    pub info_per_mille: u32,
    /// Per mille of operations that fail (`fail`, no effect).
    pub fail_per_mille: u32,
    /// How long a client waits before giving up (`info`).
    pub timeout_ns: u64,
    /// Operation mix, per mille: gets; puts; deletes; the rest are cas.
    pub get_per_mille: u32,
    /// Per mille of puts.
    pub put_per_mille: u32,
    /// Per mille of deletes.
    pub delete_per_mille: u32,
}

impl Workload {
    /// Ten minutes of 10 clients on 10 keys (a third of the operations on one hot
    /// key), 10 ms per operation and 10 ms of think time on average, 0.5% timeouts
    /// (after 50 ms) and 1% failures: about 300,000 operations, 600,000 events.
    /// Shorten `duration_ns` or `latency_ns` and `think_ns` for fewer or more.
    pub fn ten_minutes(seed: u64) -> Workload {
        Workload {
            seed,
            processes: 10,
            keys: 10,
            hot_key_per_mille: 300,
            duration_ns: 600_000_000_000,
            latency_ns: 10_000_000,
            think_ns: 10_000_000,
            info_per_mille: 5,
            fail_per_mille: 10,
            timeout_ns: 50_000_000,
            get_per_mille: 450,
            put_per_mille: 300,
            delete_per_mille: 50,
        }
    }
}

/// A generated history.
#[derive(Debug, Clone, Default)]
pub struct Generated {
    /// The events in time order, as a recorder would write them (failed operations
    /// included).
    pub events: Vec<Event>,
    /// The operations [`parse_history`](crate::parse_history) yields for `events`:
    /// every operation but the failed ones, in invocation order.
    pub ops: Vec<Operation>,
}

impl Generated {
    /// The events as JSON lines.
    pub fn to_jsonl(&self) -> String {
        let mut out = String::with_capacity(self.events.len() * 90);
        for event in &self.events {
            out.push_str(&event.to_json_line());
            out.push('\n');
        }
        out
    }
}

/// How an operation of the simulation ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Ok,
    Fail,
    /// Timed out; takes effect at the instant given, if any.
    Info,
}

/// One simulated operation, before its request and result are known.
#[derive(Debug)]
struct Slot {
    process: u64,
    key: u32,
    call: u64,
    /// Time of the completion event.
    done: u64,
    fate: Fate,
    /// When it takes effect, if it does.
    point: Option<u64>,
    /// Drawn up front: 0..1000, picks the function by the mix.
    kind: u32,
}

/// Runs `workload` and records its history.
pub fn generate(workload: &Workload) -> Generated {
    let mut rng = Rng::new(workload.seed);
    let keys = workload.keys.max(1);
    let latency_max = workload.latency_ns.max(1) * 2;
    // Timelines first: when each operation is invoked, completes and takes effect.
    let mut slots: Vec<Slot> = Vec::new();
    for process in 0..u64::from(workload.processes) {
        let mut now = rng.below(workload.think_ns * 2 + 1);
        while now < workload.duration_ns {
            let key =
                if rng.per_mille(workload.hot_key_per_mille) { 0 } else { rng.below(u64::from(keys)) as u32 };
            let call = now;
            let fate = if rng.per_mille(workload.info_per_mille) {
                Fate::Info
            } else if rng.per_mille(workload.fail_per_mille) {
                Fate::Fail
            } else {
                Fate::Ok
            };
            let (done, point) = match fate {
                Fate::Ok => {
                    let done = call + 1 + rng.below(latency_max);
                    (done, Some(call + rng.below(done - call + 1)))
                }
                Fate::Fail => (call + 1 + rng.below(latency_max), None),
                Fate::Info => {
                    let done = call + workload.timeout_ns.max(1);
                    let point = rng.per_mille(500).then(|| call + rng.below(2 * workload.timeout_ns.max(1)));
                    (done, point)
                }
            };
            let kind = rng.below(1000) as u32;
            slots.push(Slot { process, key, call, done, fate, point, kind });
            now = done + rng.below(workload.think_ns * 2 + 1);
        }
    }

    // Then the store, operation by operation in the order they take effect.
    let mut by_point: Vec<usize> = (0..slots.len()).filter(|&i| slots[i].point.is_some()).collect();
    by_point.sort_by_key(|&i| (slots[i].point, i));
    let mut store: HashMap<u32, Option<i64>> = HashMap::new();
    // Recent values per key, for cas expectations that fail.
    let mut recent: HashMap<u32, Vec<i64>> = HashMap::new();
    let mut next_value = 0i64;
    let mut decided: Vec<Option<(Input, Output)>> = vec![None; slots.len()];
    let mut decide = |slot: &Slot, current: Option<i64>, rng: &mut Rng, recent: &[i64]| {
        let mix = workload.get_per_mille;
        let (puts, deletes) =
            (mix + workload.put_per_mille, mix + workload.put_per_mille + workload.delete_per_mille);
        if slot.kind < mix {
            return (Input::Get, Output::Get { value: current });
        }
        next_value += 1;
        if slot.kind < puts {
            (Input::Put { value: next_value }, Output::Put)
        } else if slot.kind < deletes {
            (Input::Delete, Output::Delete)
        } else {
            let expected = match rng.below(4) {
                0 | 1 => current,
                2 if !recent.is_empty() => Some(recent[rng.below(recent.len() as u64) as usize]),
                _ => None,
            };
            let ok = expected == current;
            (Input::Cas { expected, new: next_value }, Output::Cas { ok })
        }
    };
    for &i in &by_point {
        let slot = &slots[i];
        let current = store.get(&slot.key).copied().flatten();
        let key_recent = recent.entry(slot.key).or_default();
        let (input, output) = decide(slot, current, &mut rng, key_recent);
        let after = match (&input, &output) {
            (Input::Put { value }, _) => Some(*value),
            (Input::Delete, _) => None,
            (Input::Cas { new, .. }, Output::Cas { ok: true }) => Some(*new),
            _ => current,
        };
        if after != current {
            if let Some(value) = after {
                key_recent.push(value);
                if key_recent.len() > 8 {
                    key_recent.remove(0);
                }
            }
            store.insert(slot.key, after);
        }
        decided[i] = Some((input, output));
    }
    // Operations without effect still have a request (a failed put writes something).
    for (i, slot) in slots.iter().enumerate() {
        if decided[i].is_none() {
            let key_recent = recent.entry(slot.key).or_default();
            let current = key_recent.last().copied();
            decided[i] = Some(decide(slot, current, &mut rng, key_recent));
        }
    }

    // Finally the record: operations and their events.
    let mut generated = Generated::default();
    let mut timed: Vec<(u64, u64, usize, Event)> = Vec::with_capacity(2 * slots.len());
    let mut order: Vec<usize> = (0..slots.len()).collect();
    order.sort_by_key(|&i| (slots[i].call, slots[i].process));
    for (rank, &i) in order.iter().enumerate() {
        let slot = &slots[i];
        let Some((input, output)) = decided[i].take() else { continue };
        // A cas whose comparison failed certainly did not take effect: recorded as
        // `fail` or as `ok` with `false`, alternately.
        let not_swapped = output == Output::Cas { ok: false };
        let fate = if slot.fate == Fate::Ok && not_swapped && rank % 2 == 0 { Fate::Fail } else { slot.fate };
        let op = Operation {
            process: slot.process,
            key: format!("k{}", slot.key),
            input,
            output: (fate == Fate::Ok).then_some(output),
            call_ns: slot.call,
            return_ns: (fate == Fate::Ok).then_some(slot.done),
        };
        // Sorting by (time, process, sequence) keeps each process's own order.
        timed.push((slot.call, slot.process, 2 * rank, Event::invoke(&op)));
        let completion = match fate {
            Fate::Ok => Event::ok(&op, slot.done),
            Fate::Fail => Some(Event::completion(&op, EventType::Fail, slot.done)),
            Fate::Info => Some(Event::completion(&op, EventType::Info, slot.done)),
        };
        if let Some(completion) = completion {
            timed.push((slot.done, slot.process, 2 * rank + 1, completion));
        }
        if fate != Fate::Fail {
            generated.ops.push(op);
        }
    }
    timed.sort_by_key(|&(time, process, sequence, _)| (time, process, sequence));
    generated.events = timed.into_iter().map(|(.., event)| event).collect();
    generated
}

/// For each (key, value), the operations that can write it.
fn writers(ops: &[Operation]) -> HashMap<(&str, i64), Vec<usize>> {
    let mut writers: HashMap<(&str, i64), Vec<usize>> = HashMap::new();
    for (index, op) in ops.iter().enumerate() {
        if let Input::Put { value } | Input::Cas { new: value, .. } = op.input {
            writers.entry((op.key.as_str(), value)).or_default().push(index);
        }
    }
    writers
}

/// The one operation that can write `value` to `key`, if exactly one can.
fn only_writer(writers: &HashMap<(&str, i64), Vec<usize>>, key: &str, value: i64) -> Option<usize> {
    match writers.get(&(key, value))?.as_slice() {
        [only] => Some(*only),
        _ => None,
    }
}

/// Whether `op` certainly took effect and left its key holding something other than
/// `value`: a completed put of another value, a completed delete, a completed cas that
/// swapped in another value.
fn certainly_overwrote(op: &Operation, value: i64) -> bool {
    match (&op.input, &op.output) {
        (Input::Put { value: written }, Some(_)) => *written != value,
        (Input::Delete, Some(_)) => true,
        (Input::Cas { new, .. }, Some(Output::Cas { ok: true })) => *new != value,
        _ => false,
    }
}

/// The completed gets of `ops`, rotated to start at `pick` (mod their number), so a
/// seed picks where a mutation lands.
fn completed_gets(ops: &[Operation], pick: usize) -> Vec<usize> {
    let mut gets: Vec<usize> =
        (0..ops.len()).filter(|&i| matches!(ops[i].output, Some(Output::Get { .. }))).collect();
    if !gets.is_empty() {
        let len = gets.len();
        gets.rotate_left(pick % len);
    }
    gets
}

/// Makes a completed get read a stale value, and returns its index: a value `v`
/// written only by a completed put that returned before another operation certainly
/// overwrote the key, which itself returned before the get was invoked. No order can
/// have the get see `v`. `None` if no get has such a pair before it.
pub fn stale_read(ops: &mut [Operation], pick: usize) -> Option<usize> {
    let mut found = None;
    {
        let writers = writers(ops);
        // Per key, the completed operations in order of return.
        let mut by_key: HashMap<&str, Vec<usize>> = HashMap::new();
        for (index, op) in ops.iter().enumerate() {
            if op.return_ns.is_some() && op.output.is_some() {
                by_key.entry(op.key.as_str()).or_default().push(index);
            }
        }
        for list in by_key.values_mut() {
            list.sort_by_key(|&i| ops[i].return_ns);
        }
        let returned_before = |i: usize, time: u64| ops[i].return_ns.is_some_and(|ret| ret < time);
        'victims: for victim in completed_gets(ops, pick) {
            let key = ops[victim].key.as_str();
            let Some(list) = by_key.get(key) else { continue };
            // Overwrites that returned before the get, latest first; for each, the
            // puts that returned before it was invoked, latest first.
            let before_get = list.partition_point(|&i| returned_before(i, ops[victim].call_ns));
            for &overwrite in list[..before_get].iter().rev().take(16) {
                let before_overwrite = list.partition_point(|&i| returned_before(i, ops[overwrite].call_ns));
                for &writer in list[..before_overwrite].iter().rev().take(16) {
                    let Input::Put { value } = ops[writer].input else { continue };
                    if certainly_overwrote(&ops[overwrite], value)
                        && only_writer(&writers, key, value) == Some(writer)
                    {
                        found = Some((victim, value));
                        break 'victims;
                    }
                }
            }
        }
    }
    let (victim, value) = found?;
    ops[victim].output = Some(Output::Get { value: Some(value) });
    Some(victim)
}

/// Makes a completed get read a value nothing writes, and returns its index.
pub fn read_of_unwritten_value(ops: &mut [Operation], pick: usize) -> Option<usize> {
    let victim = *completed_gets(ops, pick).first()?;
    let unwritten = ops
        .iter()
        .filter_map(|op| match op.input {
            Input::Put { value } | Input::Cas { new: value, .. } => Some(value),
            Input::Get | Input::Delete => None,
        })
        .max()
        .unwrap_or(0)
        .saturating_add(1);
    ops[victim].output = Some(Output::Get { value: Some(unwritten) });
    Some(victim)
}

/// Makes a completed get read a value written only by a put invoked after the get
/// returned, and returns the get's index. `None` if no get has such a put after it.
pub fn read_from_the_future(ops: &mut [Operation], pick: usize) -> Option<usize> {
    let mut found = None;
    {
        let writers = writers(ops);
        'victims: for victim in completed_gets(ops, pick) {
            let (key, ret) = (ops[victim].key.as_str(), ops[victim].return_ns.unwrap_or(u64::MAX));
            for (index, op) in ops.iter().enumerate().skip(victim) {
                let Input::Put { value } = op.input else { continue };
                if op.key == key && op.call_ns > ret && only_writer(&writers, key, value) == Some(index) {
                    found = Some((victim, value));
                    break 'victims;
                }
            }
        }
    }
    let (victim, value) = found?;
    ops[victim].output = Some(Output::Get { value: Some(value) });
    Some(victim)
}

/// Removes from the history (as if it had failed) the write whose value a completed
/// get read, and returns the history without it and the get's index in it. `None`
/// if no get read a value with a single writer.
pub fn drop_observed_write(ops: &[Operation], pick: usize) -> Option<(Vec<Operation>, usize)> {
    let writers = writers(ops);
    for reader in completed_gets(ops, pick) {
        let Some(Output::Get { value: Some(value) }) = ops[reader].output else { continue };
        let Some(writer) = only_writer(&writers, &ops[reader].key, value) else { continue };
        let mut mutated = ops.to_vec();
        mutated.remove(writer);
        let reader = if writer < reader { reader - 1 } else { reader };
        return Some((mutated, reader));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{check, parse_history, CheckBudget, CheckResult, Completion};

    fn small(seed: u64) -> Workload {
        Workload { duration_ns: 2_000_000_000, ..Workload::ten_minutes(seed) }
    }

    #[test]
    fn generated_history_parses_back_to_its_operations() {
        let generated = generate(&small(1));
        assert!(generated.ops.len() > 500, "{} operations", generated.ops.len());
        let history = parse_history(&generated.to_jsonl()).expect("generated histories are well-formed");
        assert_eq!(history.ops, generated.ops);
        assert_eq!(history.events, generated.events.len());
        assert!(history.failed > 0, "some operations fail");
        assert!(history.origins.iter().any(|origin| origin.completion == Completion::Info));
        assert!(history.ops.iter().any(|op| matches!(op.output, Some(Output::Cas { ok: true }))));
        assert!(history.ops.iter().any(|op| matches!(op.output, Some(Output::Cas { ok: false }))));
        assert!(history.ops.iter().any(|op| matches!(op.output, Some(Output::Get { value: None }))));
    }

    #[test]
    fn generation_is_deterministic() {
        assert_eq!(generate(&small(5)).events, generate(&small(5)).events);
        assert_ne!(generate(&small(5)).events, generate(&small(6)).events);
    }

    #[test]
    fn operations_overlap() {
        let generated = generate(&small(2));
        let mut ops: Vec<&Operation> = generated.ops.iter().filter(|op| op.return_ns.is_some()).collect();
        ops.sort_by_key(|op| op.call_ns);
        let overlapping =
            ops.windows(2).filter(|pair| pair[1].call_ns < pair[0].return_ns.unwrap_or(0)).count();
        assert!(overlapping * 4 > ops.len(), "{overlapping} of {} overlap their predecessor", ops.len());
    }

    #[test]
    fn generated_histories_are_linearizable() {
        for seed in 0..8 {
            let generated = generate(&Workload { duration_ns: 500_000_000, ..small(seed) });
            assert_eq!(
                check(&generated.ops, CheckBudget::default()),
                CheckResult::Linearizable,
                "seed {seed}"
            );
        }
    }
}
