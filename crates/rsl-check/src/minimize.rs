//! Showing a violation with a few operations: [`minimize`], and the local
//! refutation [`check()`](crate::check()) falls back on.
//!
//! Dropping operations from a history is not a sound way to shrink a violation: a
//! read of 1 is fine after a put of 1 and a violation without it. Instead, the
//! operations left out of a candidate witness are *relaxed*: their outcome becomes
//! unknown ([`Operation::relaxed`]), so each may take effect at any time after its
//! invocation, or not at all (a relaxed read constrains nothing, so it is dropped).
//! Every linearization of the history is also one of any relaxation of it, so if the
//! witness with everything else relaxed cannot be linearized, neither can the history.
//!
//! Shrinking starts from a *window*: the completed operations that returned just
//! before the one the search could not linearize, those concurrent with it, and the
//! writers of every value they read or compare against, widened until the window
//! alone (everything else relaxed) cannot be linearized. Checking such a window is
//! cheap even when the key's whole history is long and concurrent, which is why
//! [`check()`](crate::check()) also uses it to refute a violation its search is slow to
//! prove. The window is then shrunk by delta debugging (Zeller & Hildebrandt's
//! `ddmin`) to a 1-minimal witness: relaxing any one more of its operations makes the
//! rest linearizable.

use std::collections::{HashMap, HashSet};

use crate::search::{search_key_ops, KeyOutcome};
use crate::{CheckBudget, Input, Operation, Output};

/// Search steps allowed to each check of a window or a candidate witness; a check
/// that runs out counts as "linearizable" (so nothing unsound follows from it).
const STEPS_PER_CHECK_MAX: u64 = 2_000_000;

/// Sizes of the windows tried, in completed operations returned before the blocked
/// one.
const WINDOWS: [usize; 4] = [16, 64, 256, 1024];

/// A 1-minimal witness of a violation on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Witness {
    /// The key.
    pub key: String,
    /// Indices into the history of operations of `key` that cannot be linearized
    /// together, even when every other write of the key may take effect at any time
    /// after its invocation, or not at all. In invocation order. Never empty.
    pub operations: Vec<usize>,
    /// Whether 1-minimality was confirmed: relaxing any one of `operations` makes the
    /// rest linearizable. `false` when the budget ran out first (the witness is then
    /// still a valid witness, just perhaps larger than needed), or when no witness
    /// smaller than all the key's completed operations could be shown valid.
    pub minimal: bool,
    /// How many writes of `key` were relaxed (all its writes not in `operations`).
    pub relaxed_writes: usize,
    /// How many checks the minimization ran.
    pub checks: usize,
}

/// Shrinks the violation of `check`'s verdict `NotLinearizable { key, witness: hint }`
/// to a 1-minimal [`Witness`] (see the module documentation). The last element of
/// `hint` should be the operation the search could not linearize; the result's
/// soundness does not depend on `hint`.
///
/// If no subset of the key's completed operations can be shown not to be
/// linearizable within `budget` (for example because the key's history is in fact
/// linearizable), the witness is every completed operation of the key with
/// `minimal: false`.
pub fn minimize(history: &[Operation], key: &str, hint: &[usize], budget: CheckBudget) -> Witness {
    let ops: Vec<(usize, &Operation)> = history.iter().enumerate().filter(|(_, op)| op.key == key).collect();
    let mut relaxer = Relaxer::new(&ops, budget);
    let completed: Vec<usize> = (0..ops.len()).filter(|&p| ops[p].1.output.is_some()).collect();
    let blocker = hint.last().and_then(|&global| relaxer.position_of(global));
    let start = blocker.and_then(|blocker| relaxer.refute_windows(blocker));
    let (positions, minimal) = match start {
        Some(start) => relaxer.ddmin(start),
        None if relaxer.fails(&completed) => relaxer.ddmin(completed),
        None => (completed, false),
    };
    let mut operations: Vec<usize> = positions.iter().map(|&p| ops[p].0).collect();
    operations.sort_by_key(|&i| (history[i].call_ns, i));
    let in_witness: HashSet<usize> = operations.iter().copied().collect();
    let relaxed_writes = ops.iter().filter(|(i, op)| op.input.is_write() && !in_witness.contains(i)).count();
    Witness { key: key.to_owned(), operations, minimal, relaxed_writes, checks: relaxer.checks }
}

/// Tries to show that the key's operations `ops` (`(index in the history,
/// operation)`) cannot be linearized, by checking windows around operation `blocker`
/// (an index in the history) with everything else relaxed. Returns the window that
/// cannot be linearized, as indices in the history with `blocker` last.
pub(crate) fn refute_near(
    ops: &[(usize, &Operation)],
    blocker: usize,
    budget: CheckBudget,
) -> Option<Vec<usize>> {
    let mut relaxer = Relaxer::new(ops, budget);
    let position = relaxer.position_of(blocker)?;
    let window = relaxer.refute_windows(position)?;
    let mut witness: Vec<usize> = window.iter().map(|&p| ops[p].0).filter(|&i| i != blocker).collect();
    witness.push(blocker);
    Some(witness)
}

/// Checks of one key's operations with all but some of them relaxed.
struct Relaxer<'a, 'h> {
    /// The key's operations: `(index in the history, operation)`. Everything else
    /// refers to them by position in this list.
    ops: &'a [(usize, &'h Operation)],
    /// The relaxed form of each operation that is a write (reads relax to nothing).
    relaxed: Vec<Option<Operation>>,
    /// Puts and deletes by the value they write (`None`: deletes), each list in
    /// invocation order.
    setters: HashMap<Option<i64>, Vec<usize>>,
    /// All puts and deletes, in invocation order.
    all_setters: Vec<usize>,
    /// Compare-and-sets by the value they write, in invocation order.
    cas_by_new: HashMap<i64, Vec<usize>>,
    /// Compare-and-sets by the value they expect, in invocation order.
    cas_by_expected: HashMap<Option<i64>, Vec<usize>>,
    budget: CheckBudget,
    checks: usize,
    /// Set once the deadline has passed: stop checking.
    out_of_time: bool,
}

impl<'a, 'h> Relaxer<'a, 'h> {
    fn new(ops: &'a [(usize, &'h Operation)], budget: CheckBudget) -> Relaxer<'a, 'h> {
        let relaxed = ops.iter().map(|(_, op)| op.input.is_write().then(|| op.relaxed())).collect();
        let mut by_call: Vec<usize> = (0..ops.len()).collect();
        by_call.sort_by_key(|&p| (ops[p].1.call_ns, p));
        let mut relaxer = Relaxer {
            ops,
            relaxed,
            setters: HashMap::new(),
            all_setters: Vec::new(),
            cas_by_new: HashMap::new(),
            cas_by_expected: HashMap::new(),
            budget: CheckBudget { max_steps: budget.max_steps.min(STEPS_PER_CHECK_MAX), ..budget },
            checks: 0,
            out_of_time: false,
        };
        for p in by_call {
            match ops[p].1.input {
                Input::Put { value } => {
                    relaxer.setters.entry(Some(value)).or_default().push(p);
                    relaxer.all_setters.push(p);
                }
                Input::Delete => {
                    relaxer.setters.entry(None).or_default().push(p);
                    relaxer.all_setters.push(p);
                }
                Input::Cas { expected, new } => {
                    relaxer.cas_by_new.entry(new).or_default().push(p);
                    relaxer.cas_by_expected.entry(expected).or_default().push(p);
                }
                Input::Get => {}
            }
        }
        relaxer
    }

    fn position_of(&self, global: usize) -> Option<usize> {
        self.ops.iter().position(|&(index, _)| index == global)
    }

    /// Whether the operations with exactly `required` (positions) kept as they are
    /// and every other one relaxed cannot be linearized. `false` when unsure.
    fn fails(&mut self, required: &[usize]) -> bool {
        if self.out_of_time || self.budget.expired() {
            self.out_of_time = true;
            return false;
        }
        self.checks += 1;
        let horizon = required
            .iter()
            .map(|&p| {
                let op = self.ops[p].1;
                match op.output {
                    Some(_) => op.return_ns.unwrap_or(u64::MAX),
                    None => op.call_ns,
                }
            })
            .max()
            .unwrap_or(0);
        let budget = self.budget;
        let outcome = search_key_ops(self.relaxation(required, horizon), budget);
        match outcome {
            KeyOutcome::NotLinearizable(_) => true,
            KeyOutcome::Linearizable => false,
            KeyOutcome::Unknown(_) => {
                if self.budget.expired() {
                    self.out_of_time = true;
                }
                false
            }
        }
    }

    /// The operations to check for `required` (positions): those, and the relaxed
    /// forms of the others that can make a difference. Each rule is exact (keeps
    /// the verdict):
    ///
    /// * A relaxed operation called after `horizon` (when every required one has
    ///   returned) can only be linearized after all of them.
    /// * Between two consecutive required operations of a linearization, only the
    ///   last relaxed put or delete matters (it overwrites the effect of the relaxed
    ///   operations before it), so at most one per required operation is used; and
    ///   relaxed puts or deletes of one value are interchangeable, an earlier-invoked
    ///   one serving wherever a later one does. So for each value, only the
    ///   earliest-invoked ones, as many as there are required operations, are kept.
    /// * Let `U` be the values the required operations read or compare against,
    ///   closed under "expected value of a relaxed cas that writes a value in `U`".
    ///   The register holding any value outside `U` looks the same to every required
    ///   operation and to every relaxed cas expecting a value in `U`, so a relaxed
    ///   cas expecting a value outside `U` is never needed.
    /// * A write leaving a value outside `U` can only help a required cas reported as
    ///   not applied (by moving the register off its expected value), and each such
    ///   cas needs at most one. So with `k` of them, only the `k` earliest-invoked
    ///   relaxed puts and deletes of values outside `U` are kept, and the relaxed cas
    ///   that move the register from a value in `U` to one outside it; with none, no
    ///   such write at all.
    fn relaxation<'s>(&'s self, required: &[usize], horizon: u64) -> Vec<(usize, &'s Operation)> {
        let required_set: HashSet<usize> = required.iter().copied().collect();
        let available = |p: &usize| !required_set.contains(p) && self.relaxed[*p].is_some();
        let called_by_horizon = |p: &usize| self.ops[*p].1.call_ns <= horizon;
        let mut useful: HashSet<Option<i64>> = HashSet::new();
        let mut todo: Vec<Option<i64>> = required
            .iter()
            .filter_map(|&p| match (&self.ops[p].1.input, &self.ops[p].1.output) {
                (Input::Cas { expected, .. }, _) => Some(*expected),
                (_, Some(Output::Get { value })) => Some(*value),
                _ => None,
            })
            .collect();
        let mut keep: Vec<usize> = Vec::new();
        while let Some(value) = todo.pop() {
            if !useful.insert(value) {
                continue;
            }
            let setters = self.setters.get(&value).into_iter().flatten().copied();
            keep.extend(setters.take_while(called_by_horizon).filter(available).take(required.len()));
            if let Some(value) = value {
                for p in
                    self.cas_by_new.get(&value).into_iter().flatten().copied().take_while(called_by_horizon)
                {
                    if let (true, Input::Cas { expected, .. }) = (available(&p), &self.ops[p].1.input) {
                        keep.push(p);
                        todo.push(*expected);
                    }
                }
            }
        }
        let failed_cas = required
            .iter()
            .filter(|&&p| matches!(self.ops[p].1.output, Some(Output::Cas { ok: false })))
            .count();
        if failed_cas > 0 {
            let other_value = |p: &usize| match self.ops[*p].1.input {
                Input::Put { value } => !useful.contains(&Some(value)),
                _ => !useful.contains(&None),
            };
            let setters = self.all_setters.iter().copied().take_while(called_by_horizon);
            keep.extend(setters.filter(available).filter(other_value).take(failed_cas));
            for value in &useful {
                let cas = self.cas_by_expected.get(value).into_iter().flatten().copied();
                keep.extend(cas.take_while(called_by_horizon).filter(available));
            }
        }
        keep.sort_unstable();
        keep.dedup();
        let mut checked: Vec<(usize, &'s Operation)> = Vec::with_capacity(required.len() + keep.len());
        checked.extend(required.iter().map(|&p| self.ops[p]));
        for p in keep {
            if let Some(relaxed) = &self.relaxed[p] {
                checked.push((self.ops[p].0, relaxed));
            }
        }
        checked
    }

    /// The smallest of the windows around `blocker` (a position) that cannot be
    /// linearized with everything else relaxed: the last `size` completed operations
    /// to return before it, it, those concurrent with it, and the completed writers
    /// of each value they read or compare against.
    fn refute_windows(&mut self, blocker: usize) -> Option<Vec<usize>> {
        let op = self.ops[blocker].1;
        let (call, ret) = (op.call_ns, op.return_ns.unwrap_or(u64::MAX));
        let mut completed: Vec<usize> =
            (0..self.ops.len()).filter(|&p| self.ops[p].1.output.is_some()).collect();
        completed.sort_by_key(|&p| (self.ops[p].1.return_ns.unwrap_or(u64::MAX), p));
        let returned_before =
            completed.partition_point(|&p| self.ops[p].1.return_ns.unwrap_or(u64::MAX) < call);
        let concurrent: Vec<usize> = completed
            .iter()
            .copied()
            .filter(|&p| {
                let other = self.ops[p].1;
                other.call_ns <= ret && other.return_ns.unwrap_or(u64::MAX) >= call
            })
            .collect();
        // Completed writers by the value they write.
        let mut writers: HashMap<i64, Vec<usize>> = HashMap::new();
        for &p in &completed {
            if let Input::Put { value } | Input::Cas { new: value, .. } = self.ops[p].1.input {
                writers.entry(value).or_default().push(p);
            }
        }
        let mut previous_len = 0;
        for size in WINDOWS {
            let mut window: Vec<usize> =
                completed[returned_before.saturating_sub(size)..returned_before].to_vec();
            window.push(blocker);
            window.extend(&concurrent);
            let observed: Vec<i64> = window.iter().filter_map(|&p| observed_value(self.ops[p].1)).collect();
            for value in observed {
                window.extend(writers.get(&value).into_iter().flatten());
            }
            window.sort_unstable();
            window.dedup();
            if window.len() == previous_len {
                // The window reached the start of the key's history.
                break;
            }
            previous_len = window.len();
            if self.fails(&window) {
                return Some(window);
            }
            if self.out_of_time {
                break;
            }
        }
        None
    }

    /// Delta debugging: shrinks `set` (positions, which fails) while it keeps
    /// failing. Returns the result and whether it is 1-minimal.
    fn ddmin(&mut self, mut set: Vec<usize>) -> (Vec<usize>, bool) {
        let mut parts = 2usize;
        while set.len() >= 2 {
            let chunks = split(&set, parts);
            let mut reduced = false;
            for chunk in &chunks {
                if self.fails(chunk) {
                    set = chunk.clone();
                    parts = 2;
                    reduced = true;
                    break;
                }
            }
            if !reduced && chunks.len() > 2 {
                for skip in 0..chunks.len() {
                    let complement: Vec<usize> = chunks
                        .iter()
                        .enumerate()
                        .filter(|&(index, _)| index != skip)
                        .flat_map(|(_, chunk)| chunk.iter().copied())
                        .collect();
                    if self.fails(&complement) {
                        set = complement;
                        parts = (parts - 1).max(2);
                        reduced = true;
                        break;
                    }
                }
            }
            if self.out_of_time {
                return (set, false);
            }
            if !reduced {
                if parts >= set.len() {
                    // Every single-operation complement was tried.
                    return (set, true);
                }
                parts = (parts * 2).min(set.len());
            }
        }
        // One operation that fails on its own is minimal: with nothing required,
        // every operation is optional and the empty order is a linearization.
        (set, !self.out_of_time)
    }
}

/// The value a completed operation needs the register to hold: what a get read, what
/// a successful cas expected.
fn observed_value(op: &Operation) -> Option<i64> {
    match (&op.input, &op.output) {
        (_, Some(Output::Get { value })) => *value,
        (Input::Cas { expected, .. }, Some(Output::Cas { ok: true })) => *expected,
        _ => None,
    }
}

/// `set` cut into `parts` contiguous chunks of nearly equal sizes.
fn split(set: &[usize], parts: usize) -> Vec<Vec<usize>> {
    let parts = parts.clamp(1, set.len().max(1));
    let (size, extra) = (set.len() / parts, set.len() % parts);
    let mut chunks = Vec::with_capacity(parts);
    let mut start = 0;
    for part in 0..parts {
        let len = size + usize::from(part < extra);
        chunks.push(set[start..start + len].to_vec());
        start += len;
    }
    chunks
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::reference::{arb_key_history, arb_small_history, brute_force_linearizable};
    use crate::{check, CheckResult};

    /// The operations of `key` with those at `required` (indices in `history`)
    /// as they are and every other one relaxed (reads dropped).
    fn relaxed_history(history: &[Operation], key: &str, required: &[usize]) -> Vec<Operation> {
        (0..history.len())
            .filter(|&i| history[i].key == key)
            .filter_map(|i| {
                if required.contains(&i) {
                    Some(history[i].clone())
                } else {
                    history[i].input.is_write().then(|| history[i].relaxed())
                }
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn prop_witness_is_sound_and_one_minimal(history in arb_small_history()) {
            let CheckResult::NotLinearizable { key, witness: hint } = check(&history, CheckBudget::default()) else {
                return Ok(());
            };
            let witness = minimize(&history, &key, &hint, CheckBudget::default());
            prop_assert!(!witness.operations.is_empty());
            prop_assert!(witness.minimal, "{:?}", witness);
            prop_assert!(witness.operations.iter().all(|&i| history[i].key == key && history[i].output.is_some()));
            // Sound: the witness alone, everything else relaxed, has no linearization.
            prop_assert!(!brute_force_linearizable(&relaxed_history(&history, &key, &witness.operations)));
            // 1-minimal: relaxing any one more operation leaves a linearizable history.
            for skip in 0..witness.operations.len() {
                let mut fewer = witness.operations.clone();
                fewer.remove(skip);
                prop_assert!(brute_force_linearizable(&relaxed_history(&history, &key, &fewer)), "without {}", skip);
            }
            let writes = history.iter().enumerate()
                .filter(|(i, op)| op.key == key && op.input.is_write() && !witness.operations.contains(i))
                .count();
            prop_assert_eq!(witness.relaxed_writes, writes);
        }

        #[test]
        fn prop_pruned_relaxation_keeps_the_verdict(history in arb_key_history(9), mask in any::<u16>()) {
            let ops: Vec<(usize, &Operation)> = history.iter().enumerate().filter(|(_, op)| op.key == "a").collect();
            let mut relaxer = Relaxer::new(&ops, CheckBudget::default());
            let required: Vec<usize> = (0..ops.len())
                .filter(|&p| mask & (1 << p) != 0 && ops[p].1.output.is_some())
                .collect();
            let globals: Vec<usize> = required.iter().map(|&p| ops[p].0).collect();
            let expected = !brute_force_linearizable(&relaxed_history(&history, "a", &globals));
            prop_assert_eq!(relaxer.fails(&required), expected, "required {:?}", globals);
        }

        #[test]
        fn prop_local_refutation_is_sound(history in arb_small_history(), pick in any::<usize>()) {
            let ops: Vec<(usize, &Operation)> = history.iter().enumerate().filter(|(_, op)| op.key == "a").collect();
            let completed: Vec<usize> = ops.iter().filter(|(_, op)| op.output.is_some()).map(|&(i, _)| i).collect();
            if completed.is_empty() {
                return Ok(());
            }
            let blocker = completed[pick % completed.len()];
            if let Some(window) = refute_near(&ops, blocker, CheckBudget::default()) {
                prop_assert_eq!(window.last(), Some(&blocker));
                prop_assert!(!brute_force_linearizable(&history.iter().filter(|op| op.key == "a").cloned().collect::<Vec<_>>()));
                prop_assert!(!brute_force_linearizable(&relaxed_history(&history, "a", &window)));
            }
        }
    }

    fn op(input: Input, output: Option<Output>, call: u64, ret: u64) -> Operation {
        let return_ns = output.is_some().then_some(ret);
        Operation { process: 0, key: "a".to_owned(), input, output, call_ns: call, return_ns }
    }

    #[test]
    fn relaxed_writes_of_one_value_serve_several_reads() {
        // Two relaxed puts of 1 are needed: one before each read of 1, around the
        // put of 2. Keeping only one of them would wrongly refute.
        let history = [
            op(Input::Put { value: 1 }, Some(Output::Put), 0, 100),
            op(Input::Put { value: 1 }, Some(Output::Put), 0, 100),
            op(Input::Get, Some(Output::Get { value: Some(1) }), 1, 2),
            op(Input::Put { value: 2 }, Some(Output::Put), 3, 4),
            op(Input::Get, Some(Output::Get { value: Some(1) }), 5, 6),
        ];
        let ops: Vec<(usize, &Operation)> = history.iter().enumerate().collect();
        let mut relaxer = Relaxer::new(&ops, CheckBudget::default());
        assert!(!relaxer.fails(&[2, 3, 4]));
        assert!(!relaxer.fails(&[0, 2, 3, 4]));
        // With a single put of 1, the reads cannot both be explained.
        let single = [history[0].clone(), history[2].clone(), history[3].clone(), history[4].clone()];
        let ops: Vec<(usize, &Operation)> = single.iter().enumerate().collect();
        assert!(Relaxer::new(&ops, CheckBudget::default()).fails(&[1, 2, 3]));
    }

    #[test]
    fn split_covers_the_set_in_order() {
        let set: Vec<usize> = (0..10).collect();
        for parts in 1..=10 {
            let chunks = split(&set, parts);
            assert_eq!(chunks.len(), parts);
            assert_eq!(chunks.concat(), set);
            let sizes: Vec<usize> = chunks.iter().map(Vec::len).collect();
            assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1, "{sizes:?}");
        }
        assert_eq!(split(&set, 20).len(), 10);
    }
}
