//! The linearizability search: [`check`] and its budget.
//!
//! # Model
//!
//! Every key is an independent register whose initial value is absent
//! (`None`). Operations are [`Input::Put`](crate::Input::Put), [`Input::Get`](crate::Input::Get), [`Input::Delete`](crate::Input::Delete)
//! and [`Input::Cas`](crate::Input::Cas) (compare-and-set, where `expected: None` means "the key
//! is absent"). A history is a set of [`Operation`]s, each with a call time
//! and, if it completed, a return time and an [`Output`](crate::Output).
//!
//! An operation whose outcome is unknown (a timeout, Jepsen's `:info`) has
//! `output: None`: it may have taken effect at any instant after its call, or
//! never, and its result is unconstrained. Operations known to have failed
//! (Jepsen's `:fail`) must not be passed to the checker at all.
//!
//! A history is linearizable if there is a total order of all completed
//! operations, plus any subset of the unknown-outcome ones, that (a) respects
//! real time — if `a` returned before `b` was called, `a` comes first — and
//! (b) is a legal sequential execution of the register. Intervals that merely
//! touch (`a.return_ns == b.call_ns`) count as concurrent, which is the
//! permissive choice: the checker never rejects a history because of
//! timestamp granularity.
//!
//! # Algorithm
//!
//! 1. **P-compositionality.** Linearizability is local (Herlihy & Wing): a
//!    history is linearizable iff its restriction to every key is. [`check`]
//!    splits the history per key and checks each key separately, which turns
//!    one exponential search into many small ones.
//! 2. **Wing & Gong search** (as in porcupine and Knossos' `wgl`). Per key,
//!    every completed operation contributes a call entry and a return entry,
//!    sorted by time into a doubly linked list. An operation whose call entry
//!    precedes the first return entry still in the list may be linearized
//!    next; if the register model accepts it, its entries are unlinked
//!    ("lifted") and the search goes on from the new configuration. When no
//!    candidate is left, the first pending response would precede its
//!    operation's linearization point, so the search backtracks: it pops the
//!    last choice from an explicit stack (no recursion, so no stack overflow),
//!    relinks its entries and tries the next alternative. The search succeeds
//!    as soon as every *completed* operation is linearized; unknown-outcome
//!    operations have no response, so they are kept out of the list, may be
//!    linearized any time after their call, and are deemed never to have
//!    taken effect if left over.
//! 3. **Memo cache** (Lowe). Whether the rest can be linearized depends only
//!    on the configuration: which operations are linearized and the
//!    register's value. Every configuration entered is recorded, and reaching
//!    one again (by linearizing the same operations in another order) is
//!    pruned. The set of completed operations linearized is stored exactly
//!    but compactly: they are numbered in call order, and the set is encoded
//!    as `hi` (one past the highest linearized number) plus the
//!    *un*linearized numbers below `hi` (as a sorted list, or as a bitmask
//!    from the lowest of them when that is shorter). Because an operation can
//!    only be linearized while its call precedes every pending response,
//!    those are never more than the operations concurrent at one instant, so
//!    a configuration costs `O(concurrency)` words instead of a bitset of
//!    `O(n)` bits, however many thousands of operations the key has.
//! 4. **Reductions.** Each of these preserves the verdict exactly; together
//!    they keep the number of configurations close to the number of
//!    genuinely different ones.
//!    * *Value classes.* Values that no operation reads or compares against
//!      (as a cas's expected value) behave identically in every operation,
//!      so the register holds a class of values, and all such values share
//!      one class; a value also joins it once every operation that could
//!      tell it apart has been linearized.
//!    * *Forced reads.* A pending completed operation that never changes the
//!      register (a get, a cas reported as not applied) and is legal now is
//!      linearized at once without branching: any linearization can be
//!      rearranged to do so.
//!    * *Runs of unknown-outcome operations.* In any linearization, a maximal
//!      run of consecutive unknown-outcome operations can be dropped or
//!      rearranged until it is immediately followed by a completed operation
//!      that it enables (one illegal before the run). So such operations are
//!      only tried after the completed candidates, only when leading towards
//!      a value a pending completed operation needs, a run holds at most one
//!      put or delete (first), and equal ones are interchangeable (the
//!      earliest-called available one stands for all).
//!    * *Useless unknown-outcome operations.* One called after every completed
//!      operation returned, and one that can only leave the register holding a
//!      value no operation reads or compares against while no cas is reported
//!      as not applied (the only step such a value can help), are left out
//!      before the search starts. An unknown-outcome get is left out too: it
//!      neither changes nor constrains the register.
//!    * *Subsumption.* Configurations that differ only in how many
//!      interchangeable unknown-outcome puts and deletes they have used are
//!      compared, and one that used no more of each kind dominates. (The set
//!      of unknown-outcome cas used is compared by a 128-bit Zobrist
//!      fingerprint; a collision, with probability below `2^-70` even for the
//!      largest searches the default budget allows, could only hide a
//!      linearization.)
//!    * *Order.* Candidates are tried by the midpoint of their interval, the
//!      likeliest linearization order, which makes backtracking rare on
//!      linearizable histories.
//!
//!    Before searching, a completed operation that can never be legal (it
//!    reads a value nothing writes, or its output does not match its input)
//!    is reported at once.
//!
//! # Complexity
//!
//! Deciding linearizability is NP-complete in general (Gibbons & Korach), and
//! the worst case here is exponential in the number of mutually concurrent
//! operations. The memo cache bounds the work per key by the number of
//! distinct configurations, roughly `n · 2^c · v` for `n` operations, `c`
//! operations concurrent at any instant and `v` register values those can
//! produce, and each search step costs `O(c)` (candidates, encoding and
//! hashing the configuration). On realistic histories the search rarely
//! backtracks and runs in near-linear time, `O(n log n + n · c)`; a history
//! that is not linearizable makes it explore every configuration reachable
//! before the violation, which is fast at moderate concurrency but grows
//! with the length of the history. So a search that goes a million steps
//! without linearizing more operations than it ever had (what backtracking
//! from a violation deep in a long, concurrent history looks like) is paused,
//! and the operations around the furthest point it reached are checked on
//! their own, every other operation relaxed to unknown outcome
//! ([`crate::minimize`]): if they cannot be linearized, neither can the key,
//! and the verdict comes in milliseconds. Otherwise the search resumes.
//! [`CheckBudget::max_steps`] caps the steps per key and
//! [`CheckBudget::deadline`] the time; exhausting either yields
//! [`CheckResult::Unknown`] rather than a wrong answer.
//!
//! # Witnesses
//!
//! When a key is not linearizable, [`CheckResult::NotLinearizable`] carries a
//! witness: among all configurations explored, the one whose search got
//! furthest in real time (latest first pending response; ties go to the one
//! with more operations linearized). The witness lists its linearized
//! operations in linearization order, followed by the operation whose
//! response it reached without being able to linearize it: after that
//! prefix, neither it nor any alternative leads to a linearization. An
//! operation that can never be legal is reported alone, and a violation found
//! by checking the operations around the furthest point alone is reported as
//! those operations, the one the search could not get past last.
//!
//! Such a witness can be long; [`crate::minimize`] shrinks it to a few
//! operations that on their own cannot be linearized.

mod configuration;
mod entries;
mod key_search;
mod limits;
mod memo;
mod operations;
mod register;
mod usage;
mod witness;

use std::collections::HashMap;
use std::time::Instant;

use crate::Operation;
use key_search::KeySearch;
use limits::{Stuck, STUCK_STEPS};

/// Limits on the work [`check`] may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckBudget {
    /// Maximum number of search steps (attempts to linearize one operation)
    /// spent on any single key before giving up with
    /// [`CheckResult::Unknown`]. Time and memory grow with the steps taken: a
    /// step costs a fraction of a microsecond and at most a few dozen bytes,
    /// so on the hardest histories exhausting the default budget takes
    /// roughly 10 to 60 seconds and up to about 1 GB.
    pub max_steps: u64,
    /// An instant after which the search gives up with [`CheckResult::Unknown`]
    /// (checked every few thousand steps, so it overshoots by well under a
    /// millisecond). `None`: no time limit. A deadline makes the verdict depend
    /// on the machine's speed, so deterministic callers (the simulator) leave it
    /// out and rely on `max_steps` alone.
    pub deadline: Option<Instant>,
}

impl CheckBudget {
    /// The default budget with a deadline `timeout` from now.
    pub fn with_timeout(timeout: std::time::Duration) -> CheckBudget {
        CheckBudget { deadline: Instant::now().checked_add(timeout), ..CheckBudget::default() }
    }

    /// Whether the deadline has passed.
    pub fn expired(&self) -> bool {
        self.deadline.is_some_and(|deadline| Instant::now() >= deadline)
    }
}

impl Default for CheckBudget {
    /// 50 million search steps per key, no deadline.
    fn default() -> Self {
        CheckBudget { max_steps: 50_000_000, deadline: None }
    }
}

/// The verdict of [`check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckResult {
    /// Every key's sub-history is linearizable.
    Linearizable,
    /// The sub-history of `key` is not linearizable.
    NotLinearizable {
        /// The first key (in order of first appearance in the history) found
        /// not to be linearizable.
        key: String,
        /// Indices into the checked slice, never empty: the operations of the
        /// partial linearization that reached furthest in real time, in
        /// linearization order, followed by the operation that could not be
        /// linearized after them before its response (always the last
        /// element). An operation that can never be legal (a read of a value
        /// nothing writes, an output that does not match the input) is
        /// reported alone; a violation found by the local check of the
        /// operations around the furthest point is reported as those. See the
        /// module documentation; [`crate::minimize`] shrinks it.
        witness: Vec<usize>,
    },
    /// The budget (steps or deadline) ran out on `key` before a verdict was
    /// reached, and no key checked was found not to be linearizable. Keys not
    /// reached before the deadline are not checked at all.
    Unknown {
        /// The first key whose search was abandoned.
        key: String,
        /// Human-readable description of why.
        reason: String,
    },
}

impl CheckResult {
    /// Whether the result is [`CheckResult::Linearizable`].
    pub fn is_linearizable(&self) -> bool {
        matches!(self, CheckResult::Linearizable)
    }
}

/// Checks whether `history` is linearizable with respect to a map of
/// independent registers, each initially absent.
///
/// Keys are checked independently, in order of first appearance; the first
/// key found not to be linearizable is reported. If no key is found not to be
/// linearizable but some key exhausted `budget`, the first such key is
/// reported as [`CheckResult::Unknown`].
pub fn check(history: &[Operation], budget: CheckBudget) -> CheckResult {
    check_with(history, budget, STUCK_STEPS)
}

/// [`check`], deeming a search stuck after `stuck_steps` (see [`check_key_ops`]).
pub(crate) fn check_with(history: &[Operation], budget: CheckBudget, stuck_steps: u64) -> CheckResult {
    let mut unknown = None;
    for (key, indices) in partition(history) {
        if budget.expired() {
            return unknown.unwrap_or_else(|| CheckResult::Unknown {
                key: key.to_owned(),
                reason: "time limit reached before this key was checked".to_owned(),
            });
        }
        match check_key(history, &indices, budget, stuck_steps) {
            KeyOutcome::Linearizable => {}
            KeyOutcome::NotLinearizable(witness) => {
                return CheckResult::NotLinearizable { key: key.to_owned(), witness };
            }
            KeyOutcome::Unknown(reason) => {
                if unknown.is_none() {
                    unknown = Some(CheckResult::Unknown { key: key.to_owned(), reason });
                }
            }
        }
    }
    unknown.unwrap_or(CheckResult::Linearizable)
}

/// The history split per key (linearizability is local): every key with the indices
/// of its operations, keys in order of first appearance.
fn partition(history: &[Operation]) -> Vec<(&str, Vec<usize>)> {
    let mut positions: HashMap<&str, usize> = HashMap::new();
    let mut keys: Vec<(&str, Vec<usize>)> = Vec::new();
    for (index, op) in history.iter().enumerate() {
        let key = op.key.as_str();
        let position = *positions.entry(key).or_insert_with(|| {
            keys.push((key, Vec::new()));
            keys.len() - 1
        });
        keys[position].1.push(index);
    }
    keys
}

/// Verdict for a single key.
#[derive(Debug)]
pub(crate) enum KeyOutcome {
    Linearizable,
    NotLinearizable(Vec<usize>),
    Unknown(String),
}

/// Checks the operations `indices` of `history`, which all share one key.
fn check_key(history: &[Operation], indices: &[usize], budget: CheckBudget, stuck_steps: u64) -> KeyOutcome {
    let ops: Vec<(usize, &Operation)> =
        indices.iter().filter_map(|&global| Some((global, history.get(global)?))).collect();
    check_key_ops(ops, budget, stuck_steps)
}

/// Checks `ops`, `(index in the history, operation)` pairs that all share one
/// key; witnesses are given as those indices.
///
/// A search that gets stuck (`stuck_steps` steps without linearizing more
/// operations than it ever had) has most likely hit a violation deep in a long,
/// concurrent history, and is backtracking through every configuration before
/// it. So the operations around the furthest point reached are checked on their
/// own, with every other operation relaxed (see [`crate::minimize`]): if they
/// cannot be linearized, neither can the key. Otherwise the search resumes where
/// it was, with no further interruption.
fn check_key_ops(ops: Vec<(usize, &Operation)>, budget: CheckBudget, stuck_steps: u64) -> KeyOutcome {
    if u32::try_from(ops.len()).is_err() {
        return too_many(ops.len());
    }
    let mut search = KeySearch::new(&ops, budget);
    search.set_stuck_steps(Some(stuck_steps));
    loop {
        match search.run() {
            Ok(outcome) => return outcome,
            Err(Stuck) => {
                search.set_stuck_steps(None);
                let refuted =
                    search.blocker().and_then(|blocker| crate::minimize::refute_near(&ops, blocker, budget));
                if let Some(witness) = refuted {
                    return KeyOutcome::NotLinearizable(witness);
                }
            }
        }
    }
}

fn too_many(count: usize) -> KeyOutcome {
    KeyOutcome::Unknown(format!("{count} operations on one key exceed the supported maximum of {}", u32::MAX))
}

/// Checks `ops` (as [`check_key_ops`]) with the search alone.
pub(crate) fn search_key_ops(ops: Vec<(usize, &Operation)>, budget: CheckBudget) -> KeyOutcome {
    if u32::try_from(ops.len()).is_err() {
        return too_many(ops.len());
    }
    // Without `stuck_steps`, the search never reports being stuck.
    KeySearch::new(&ops, budget).run().unwrap_or_else(|Stuck| KeyOutcome::Unknown("search stuck".to_owned()))
}

#[cfg(test)]
mod tests;
