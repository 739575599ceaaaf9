//! The linearizability search: [`check`] and its budget.
//!
//! # Model
//!
//! Every key is an independent register whose initial value is absent
//! (`None`). Operations are [`Input::Put`], [`Input::Get`], [`Input::Delete`]
//! and [`Input::Cas`] (compare-and-set, where `expected: None` means "the key
//! is absent"). A history is a set of [`Operation`]s, each with a call time
//! and, if it completed, a return time and an [`Output`].
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

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Instant;

use crate::{Input, Operation, Output};

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
    let mut order: Vec<&str> = Vec::new();
    let mut groups: HashMap<&str, Vec<usize>> = HashMap::new();
    for (index, op) in history.iter().enumerate() {
        groups
            .entry(op.key.as_str())
            .or_insert_with(|| {
                order.push(op.key.as_str());
                Vec::new()
            })
            .push(index);
    }

    let mut unknown = None;
    for key in order {
        let Some(indices) = groups.get(key) else {
            continue;
        };
        if budget.expired() {
            return unknown.unwrap_or_else(|| CheckResult::Unknown {
                key: key.to_owned(),
                reason: "time limit reached before this key was checked".to_owned(),
            });
        }
        match check_key(history, indices, budget, stuck_steps) {
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

// ---------------------------------------------------------------------------
// Search
// ---------------------------------------------------------------------------

/// Verdict for a single key.
#[derive(Debug)]
pub(crate) enum KeyOutcome {
    Linearizable,
    NotLinearizable(Vec<usize>),
    Unknown(String),
}

/// A register value up to indistinguishability. Only the values some
/// operation of the key reads or compares against (the expected value of a
/// cas) can be told apart; every other value behaves identically in every
/// operation, so they all share class [`ANON`]. Searching over classes
/// instead of values merges configurations that differ only in such a value.
type Class = u32;

/// The class of all values no operation reads or compares against.
const ANON: Class = 0;

/// Assigns classes to register values.
#[derive(Debug, Default)]
struct Classes {
    ids: FastMap<Option<i64>, Class>,
}

impl Classes {
    fn new(ops: &[(usize, &Operation)]) -> Classes {
        let mut classes = Classes::default();
        for (_, op) in ops {
            let distinguished = match (&op.input, &op.output) {
                (Input::Cas { expected, .. }, _) => Some(*expected),
                (Input::Get, Some(Output::Get { value })) => Some(*value),
                _ => None,
            };
            if let Some(value) = distinguished {
                let next = classes.ids.len() as Class + 1;
                classes.ids.entry(value).or_insert(next);
            }
        }
        classes
    }

    fn of(&self, value: Option<i64>) -> Class {
        self.ids.get(&value).copied().unwrap_or(ANON)
    }
}

/// The register transition of one operation, precompiled from its input and
/// output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Unconditionally set the register (put, delete; any outcome).
    Set(Class),
    /// A completed read: legal only if the register holds exactly this.
    Read(Class),
    /// A successful compare-and-set: legal only if the register == expected.
    CasOk { expected: Class, new: Class },
    /// A compare-and-set reported as not applied: legal only if the register
    /// differs from expected.
    CasFailed { expected: Class },
    /// A compare-and-set of unknown outcome: swaps iff register == expected.
    CasMaybe { expected: Class, new: Class },
    /// The output does not match the input: never legal.
    Impossible,
}

impl Step {
    /// Compiles an operation; `None` for operations that cannot affect the
    /// verdict (a get with unknown outcome neither changes the register nor
    /// constrains it).
    fn compile(op: &Operation, classes: &Classes) -> Option<Step> {
        let class = |value: Option<i64>| classes.of(value);
        match (&op.input, &op.output) {
            (Input::Put { value }, None | Some(Output::Put)) => Some(Step::Set(class(Some(*value)))),
            (Input::Delete, None | Some(Output::Delete)) => Some(Step::Set(class(None))),
            (Input::Get, None) => None,
            (Input::Get, Some(Output::Get { value })) => Some(Step::Read(class(*value))),
            (Input::Cas { expected, new }, None) => {
                Some(Step::CasMaybe { expected: class(*expected), new: class(Some(*new)) })
            }
            (Input::Cas { expected, new }, Some(Output::Cas { ok: true })) => {
                Some(Step::CasOk { expected: class(*expected), new: class(Some(*new)) })
            }
            (Input::Cas { expected, .. }, Some(Output::Cas { ok: false })) => {
                Some(Step::CasFailed { expected: class(*expected) })
            }
            (_, Some(_)) => Some(Step::Impossible),
        }
    }

    /// The register after the step, or `None` if the step is illegal from
    /// `state`.
    fn apply(self, state: Class) -> Option<Class> {
        match self {
            Step::Set(value) => Some(value),
            Step::Read(value) => (state == value).then_some(state),
            Step::CasOk { expected, new } => (state == expected).then_some(new),
            Step::CasFailed { expected } => (state != expected).then_some(state),
            Step::CasMaybe { expected, new } => Some(if state == expected { new } else { state }),
            Step::Impossible => None,
        }
    }

    /// The class whose value the step compares the register against.
    fn distinguishes(self) -> Option<Class> {
        match self {
            Step::Read(class)
            | Step::CasOk { expected: class, .. }
            | Step::CasFailed { expected: class }
            | Step::CasMaybe { expected: class, .. } => Some(class),
            Step::Set(_) | Step::Impossible => None,
        }
    }

    /// Whether the step never changes the register, whatever its value.
    fn is_pure(self) -> bool {
        match self {
            Step::Read(_) | Step::CasFailed { .. } | Step::Impossible => true,
            Step::CasOk { expected, new } | Step::CasMaybe { expected, new } => expected == new,
            Step::Set(_) => false,
        }
    }
}

/// How often (in search steps) the search looks at the clock, when it has a
/// deadline: often enough to stop within a millisecond, rarely enough not to
/// show in profiles.
const DEADLINE_CHECK_STEPS: u64 = 4096;

/// Search steps without linearizing more operations than ever before after
/// which a search is deemed stuck (see [`check_key_ops`]): a fraction of a
/// second. Searching a linearizable history reaches a new depth every few
/// dozen steps.
const STUCK_STEPS: u64 = 1_000_000;

/// [`Search::run`] stopped because the search got stuck.
#[derive(Debug)]
struct Stuck;

/// Sentinel for "no node".
const NO_NODE: usize = usize::MAX;
/// Index of the list's head sentinel.
const HEAD: usize = 0;

/// Doubly linked list of call/return entries over index arrays, with
/// dancing-links style removal (a removed node remembers its neighbours, so
/// removals undone in reverse order restore the list exactly).
#[derive(Debug)]
struct EntryList {
    next: Vec<usize>,
    prev: Vec<usize>,
}

impl EntryList {
    /// A list `HEAD, 1, ..., entries, tail` with `tail = entries + 1`.
    fn new(entries: usize) -> Self {
        let len = entries + 2;
        EntryList { next: (1..=len).collect(), prev: (0..len).map(|i| i.wrapping_sub(1)).collect() }
    }

    fn unlink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = next;
        self.prev[next] = prev;
    }

    fn relink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = node;
        self.prev[next] = node;
    }
}

/// How to undo the change to the `missing` list made when a completed
/// operation was linearized.
#[derive(Debug, Clone, Copy)]
enum Undo {
    /// The operation was removed from `missing` at this position.
    Reinsert(usize),
    /// `missing` was extended from this length.
    Truncate(usize),
}

/// A linearization choice: a completed operation (by its number among the
/// completed operations) or an unknown-outcome one (by its number among
/// those), with its position in the list of alternatives it was taken from.
#[derive(Debug, Clone, Copy)]
enum Choice {
    Required { id: usize, undo: Undo, candidate_index: usize },
    Optional { id: usize, option_index: usize },
}

/// One linearization choice on the explicit search stack, with what is
/// needed to undo it.
#[derive(Debug, Clone, Copy)]
struct Frame {
    choice: Choice,
    /// Index of the operation in the checked history.
    global: usize,
    /// The register before it.
    state: Class,
    /// The run context before it.
    run_start: Option<Class>,
    /// `hi` before it.
    hi: u32,
    /// Whether this was a forced (dominating) choice: if it fails, so does
    /// the configuration it was made from.
    forced: bool,
}

/// The configuration that got furthest, kept incrementally: `prefix` shares
/// its first `common` elements with the current search stack, so recording a
/// new best copies only the frames pushed since the last divergence.
#[derive(Debug, Default)]
struct Best {
    found: bool,
    /// List position of the first pending return entry (later is further).
    node: usize,
    /// Indices in the history, in linearization order.
    prefix: Vec<usize>,
    common: usize,
    /// Index in the history of the operation whose return was reached.
    blocker: usize,
}

impl Best {
    fn consider(&mut self, node: usize, stack: &[Frame], blocker: usize) {
        if self.found && (node, stack.len()) <= (self.node, self.prefix.len()) {
            return;
        }
        self.found = true;
        self.node = node;
        self.blocker = blocker;
        self.prefix.truncate(self.common);
        self.prefix.extend(stack[self.common..].iter().map(|frame| frame.global));
        self.common = stack.len();
    }
}

/// FxHash-style hasher with a final avalanche; the cache keys are not
/// attacker-controlled, so a fast non-cryptographic hash is appropriate.
#[derive(Debug, Default, Clone, Copy)]
struct FastHasher {
    hash: u64,
}

impl FastHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 59));
        }
    }

    fn write_u32(&mut self, value: u32) {
        self.add(u64::from(value));
    }

    fn write_u64(&mut self, value: u64) {
        self.add(value);
    }

    fn write_usize(&mut self, value: usize) {
        self.add(value as u64);
    }

    fn finish(&self) -> u64 {
        // murmur3 fmix64, so that hashbrown's use of both the high and the
        // low bits sees well-mixed values.
        let mut h = self.hash;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// Memo cache of the configurations entered, with subsumption: each is
/// split by [`encode_config`] into a base, compared exactly, and a
/// dominance vector of counts of unknown-outcome operations used. Among
/// configurations with equal bases, one that used no more of any kind
/// dominates: it can do everything the other can.
///
/// Bases live in one arena and are found through an open-addressing table
/// of offsets, which keeps a configuration to a few dozen bytes.
#[derive(Debug, Default)]
struct Memo {
    /// Records `[base length, base.., vectors]`, where `vectors` is 0 for
    /// the usual single dominance vector [`Memo::NOTHING_USED`] (which
    /// dominates every other), or `1 + i` for the vectors in `vectors[i]`.
    arena: Vec<u32>,
    /// Offsets of records in `arena`, plus one; 0 marks an empty slot. The
    /// length is zero or a power of two.
    slots: Vec<u32>,
    /// Number of records.
    len: usize,
    /// The non-dominated dominance vectors entered with a base,
    /// concatenated, each preceded by its length.
    vectors: Vec<Vec<u32>>,
}

impl Memo {
    /// The dominance vector of a configuration that used no unknown-outcome
    /// put or delete.
    const NOTHING_USED: &'static [u32] = &[0];

    /// Whether `a` dominates `b`: `a[0] <= b[0]`, and every `(class, count)`
    /// pair of `a` (sorted by class) is matched in `b` by a count at least
    /// as large.
    fn dominates(a: &[u32], b: &[u32]) -> bool {
        let (Some((a_anonymous, a_pairs)), Some((b_anonymous, b_pairs))) = (a.split_first(), b.split_first())
        else {
            return a.is_empty();
        };
        if a_anonymous > b_anonymous {
            return false;
        }
        let mut b_pairs = b_pairs.chunks_exact(2);
        a_pairs.chunks_exact(2).all(|a_pair| loop {
            match b_pairs.next() {
                Some(b_pair) if b_pair[0] < a_pair[0] => continue,
                Some(b_pair) => break b_pair[0] == a_pair[0] && b_pair[1] >= a_pair[1],
                None => break false,
            }
        })
    }

    fn hash(base: &[u32]) -> u64 {
        let mut hasher = FastHasher::default();
        for &word in base {
            hasher.add(u64::from(word));
        }
        hasher.finish()
    }

    /// The base of the record at `offset`, and the index of its word
    /// locating its vectors.
    fn record(&self, offset: usize) -> (&[u32], usize) {
        let end = offset + 1 + self.arena[offset] as usize;
        (&self.arena[offset + 1..end], end)
    }

    /// The slot holding `base`, or the empty slot where it belongs.
    fn find(&self, base: &[u32]) -> (usize, Option<usize>) {
        let mask = self.slots.len() - 1;
        let mut index = Memo::hash(base) as usize & mask;
        loop {
            match self.slots[index] {
                0 => return (index, None),
                slot => {
                    let offset = slot as usize - 1;
                    if self.record(offset).0 == base {
                        return (index, Some(offset));
                    }
                }
            }
            index = (index + 1) & mask;
        }
    }

    /// Doubles the table.
    fn grow(&mut self) {
        let size = (self.slots.len() * 2).max(1 << 10);
        let old = std::mem::replace(&mut self.slots, vec![0; size]);
        for slot in old.into_iter().filter(|&slot| slot != 0) {
            let (index, _) = self.find(self.record(slot as usize - 1).0);
            self.slots[index] = slot;
        }
    }

    /// Records configuration (`base`, `dominance`) and returns true, unless
    /// it is dominated by one recorded before (then returns false).
    fn visit(&mut self, base: &[u32], dominance: &[u32]) -> bool {
        if 2 * (self.len + 1) > self.slots.len() {
            self.grow();
        }
        let (index, found) = self.find(base);
        let Some(offset) = found else {
            let offset = self.arena.len();
            // Offsets must fit the table; past that, stop recording (which
            // only costs pruning).
            let Some(slot) = u32::try_from(offset + 1).ok().filter(|&slot| slot < u32::MAX / 2) else {
                return true;
            };
            let vectors_slot = if dominance == Memo::NOTHING_USED {
                0
            } else {
                match u32::try_from(self.vectors.len() + 1) {
                    Ok(slot) => slot,
                    Err(_) => return true,
                }
            };
            self.arena.push(base.len() as u32);
            self.arena.extend_from_slice(base);
            self.arena.push(vectors_slot);
            if vectors_slot != 0 {
                let mut vectors = Vec::with_capacity(dominance.len() + 1);
                vectors.push(dominance.len() as u32);
                vectors.extend_from_slice(dominance);
                self.vectors.push(vectors);
            }
            self.slots[index] = slot;
            self.len += 1;
            return true;
        };
        let at = self.record(offset).1;
        let Some(vectors_index) = (self.arena[at] as usize).checked_sub(1) else {
            // It holds just [0], which dominates every vector.
            return false;
        };
        let recorded = &self.vectors[vectors_index];
        let vectors = || {
            let mut rest: &[u32] = recorded;
            std::iter::from_fn(move || {
                let (&len, tail) = rest.split_first()?;
                let (vector, tail) = tail.split_at((len as usize).min(tail.len()));
                rest = tail;
                Some(vector)
            })
        };
        if vectors().any(|vector| Memo::dominates(vector, dominance)) {
            return false;
        }
        if dominance == Memo::NOTHING_USED {
            self.arena[at] = 0;
            self.vectors[vectors_index] = Vec::new();
            return true;
        }
        let mut kept = Vec::with_capacity(recorded.len() + dominance.len() + 1);
        for vector in vectors().filter(|vector| !Memo::dominates(dominance, vector)) {
            kept.push(vector.len() as u32);
            kept.extend_from_slice(vector);
        }
        kept.push(dominance.len() as u32);
        kept.extend_from_slice(dominance);
        self.vectors[vectors_index] = kept;
        true
    }
}

/// SplitMix64 finaliser: a bijective 64-bit mix.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The 128-bit Zobrist code of an unknown-outcome operation; the set of the
/// cas of unknown outcome linearized is fingerprinted by XOR-ing the codes
/// of its members.
fn zobrist(id: usize) -> [u64; 2] {
    let id = id as u64;
    [mix64(id.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x243f_6a88_85a3_08d3), mix64(id ^ 0x1319_8a2e_0370_7344)]
}

/// XOR of two Zobrist codes.
fn xor(a: [u64; 2], b: [u64; 2]) -> [u64; 2] {
    [a[0] ^ b[0], a[1] ^ b[1]]
}

/// Encodes the base of a configuration into `buf`: the register's class,
/// the run context, `hi`, flags, the cas of unknown outcome linearized (as a
/// 128-bit Zobrist fingerprint of the set, if not empty), and the set of
/// completed operations linearized, given by `hi` and the sorted
/// unlinearized numbers below it (`missing`), which are written either as a
/// list or, if shorter, as a bitmask over `missing[0]..hi`.
fn encode_config(
    buf: &mut Vec<u32>,
    state: Class,
    run_start: Option<Class>,
    cas_used: [u64; 2],
    hi: u32,
    missing: &[u32],
) {
    const CAS_USED: u32 = 1;
    const BITMASK: u32 = 2;
    buf.clear();
    buf.extend_from_slice(&[state, run_start.map_or(0, |start| start + 1), hi, 0]);
    if cas_used != [0, 0] {
        buf[3] |= CAS_USED;
        for word in cas_used {
            buf.extend_from_slice(&[word as u32, (word >> 32) as u32]);
        }
    }
    let Some(&lo) = missing.first() else {
        return;
    };
    let words = (hi - lo).div_ceil(32) as usize;
    if words < missing.len() {
        buf[3] |= BITMASK;
        buf.push(lo);
        let start = buf.len();
        buf.resize(start + words, 0);
        for &id in missing {
            let bit = (id - lo) as usize;
            buf[start + bit / 32] |= 1 << (bit % 32);
        }
    } else {
        buf.extend_from_slice(missing);
    }
}

/// Why a search stopped early.
enum Abort {
    /// The step budget ran out.
    Budget,
    /// The deadline passed.
    Deadline,
    /// The search went [`Search::stuck_steps`] steps without linearizing more
    /// operations than it ever had.
    Stuck,
}

/// Where the search is within the current configuration.
#[derive(Debug, Clone, Copy)]
enum Cursor {
    /// Just entered: look for a forced choice first.
    Fresh,
    /// Trying completed operations, from this index of the candidate list.
    Scan(usize),
    /// Trying unknown-outcome operations, from this index of the option list.
    Options(usize),
    /// The configuration is exhausted: backtrack.
    Fail,
}

/// The unknown-outcome operations of a key, indexed for run generation.
#[derive(Debug, Default)]
struct OptionalOps {
    step: Vec<Step>,
    call: Vec<u64>,
    global: Vec<usize>,
    done: Vec<bool>,
    /// Puts and deletes by the class they write, each list in call order.
    set_by_class: FastMap<Class, Vec<usize>>,
    /// The keys of `set_by_class`, sorted.
    set_classes: Vec<Class>,
    /// State-changing cas by expected class, each list in call order.
    cas_by_expected: FastMap<Class, Vec<usize>>,
    /// State-changing cas by new class, each list in call order.
    cas_by_new: FastMap<Class, Vec<usize>>,
}

impl OptionalOps {
    /// `ops` are `(global index, call time, step)` in call order.
    fn new(ops: Vec<(usize, u64, Step)>) -> OptionalOps {
        let mut index = OptionalOps::default();
        for (id, (global, call, step)) in ops.into_iter().enumerate() {
            index.step.push(step);
            index.call.push(call);
            index.global.push(global);
            index.done.push(false);
            match step {
                Step::Set(class) => index.set_by_class.entry(class).or_default().push(id),
                Step::CasMaybe { expected, new } if expected != new => {
                    index.cas_by_expected.entry(expected).or_default().push(id);
                    index.cas_by_new.entry(new).or_default().push(id);
                }
                _ => {}
            }
        }
        index.set_classes = index.set_by_class.keys().copied().collect();
        index.set_classes.sort_unstable();
        index
    }

    /// The operations of `list` called by `frontier` and not yet linearized.
    fn available<'a>(&'a self, list: &'a [usize], frontier: u64) -> impl Iterator<Item = usize> + 'a {
        list.iter().copied().take_while(move |&id| self.call[id] <= frontier).filter(|&id| !self.done[id])
    }

    /// Adds to `classes` every class from which a chain of available cas
    /// leads to `target`, and `target` itself.
    fn chain_sources(&self, target: Class, frontier: u64, classes: &mut Vec<Class>) {
        let mut todo = vec![target];
        while let Some(class) = todo.pop() {
            if classes.contains(&class) {
                continue;
            }
            classes.push(class);
            if let Some(list) = self.cas_by_new.get(&class) {
                for id in self.available(list, frontier) {
                    if let Step::CasMaybe { expected, .. } = self.step[id] {
                        todo.push(expected);
                    }
                }
            }
        }
    }
}

/// The Wing & Gong search over one key's operations. See the module
/// documentation for the algorithm and the pruning rules.
#[derive(Debug)]
struct Search {
    // --- completed operations, numbered in call order -------------------
    steps_of: Vec<Step>,
    /// Completed operations that never change the register.
    pure: Vec<bool>,
    global_of: Vec<usize>,
    /// Order in which pending completed operations are tried: by the
    /// midpoint of their interval, the likeliest linearization order.
    priority: Vec<u64>,
    // --- unknown-outcome operations -------------------------------------
    optional: OptionalOps,
    // --- the entry list of completed operations --------------------------
    list: EntryList,
    tail: usize,
    node_op: Vec<usize>,
    node_time: Vec<u64>,
    node_is_return: Vec<bool>,
    call_node: Vec<usize>,
    return_node: Vec<usize>,
    /// The class of the initial value, `None`.
    initial: Class,
    // --- the current configuration -------------------------------------
    state: Class,
    /// `Some(start)` while in a run of unknown-outcome operations that began
    /// with the register in class `start`.
    run_start: Option<Class>,
    /// Fingerprint of the cas of unknown outcome linearized.
    cas_used: [u64; 2],
    /// Per class, how many puts and deletes of unknown outcome writing it
    /// are linearized. Equal operations are interchangeable and always used
    /// earliest call first, so the count identifies which.
    used_counts: Vec<u32>,
    /// The classes with such operations linearized that some operation left
    /// distinguishes.
    live_used: BTreeSet<Class>,
    /// How many of them write a class no operation left distinguishes: all
    /// such operations are interchangeable once called.
    anonymous: u32,
    /// Per class, how many operations not yet linearized compare the
    /// register against it. A class none of them does is, from then on,
    /// indistinguishable from [`ANON`] (see [`Search::canon`]).
    remaining: Vec<u32>,
    /// One past the highest linearized completed operation number.
    hi: u32,
    /// Sorted numbers below `hi` of completed operations not linearized.
    missing: Vec<u32>,
    stack: Vec<Frame>,
    required_left: usize,
    // --- bookkeeping -----------------------------------------------------
    memo: Memo,
    key_buf: Vec<u32>,
    dominance_buf: Vec<u32>,
    candidates_buf: Vec<usize>,
    options_buf: Vec<(usize, Class)>,
    steps: u64,
    max_steps: u64,
    deadline: Option<Instant>,
    /// Where [`Search::search`] resumes.
    cursor: Cursor,
    /// If set, the search stops with [`Abort::Stuck`] after this many steps
    /// without reaching a new depth.
    stuck_steps: Option<u64>,
    /// The most operations linearized at once so far, and the step it happened.
    deepest: usize,
    deepest_step: u64,
    best: Best,
}

impl Search {
    /// Prepares the search; `ops` are `(index in history, operation)`.
    fn new(ops: Vec<(usize, &Operation)>, budget: CheckBudget) -> Search {
        let classes = Classes::new(&ops);
        // (global index, call, return, step), in call order.
        let mut compiled: Vec<(usize, u64, Option<u64>, Step)> = ops
            .into_iter()
            .filter_map(|(global, op)| {
                let step = Step::compile(op, &classes)?;
                let ret = op.output.as_ref().map(|_| op.return_ns.unwrap_or(u64::MAX).max(op.call_ns));
                Some((global, op.call_ns, ret, step))
            })
            .collect();
        compiled.sort_by_key(|&(global, call, _, _)| (call, global));
        let mut required: Vec<(usize, u64, u64, Step)> = Vec::new();
        let mut optional: Vec<(usize, u64, Step)> = Vec::new();
        for (global, call, ret, step) in compiled {
            match ret {
                Some(ret) => required.push((global, call, ret, step)),
                None => optional.push((global, call, step)),
            }
        }
        // Unknown-outcome operations that can make no difference are left
        // out (each rule is exact):
        // * one called after every completed operation returned could only
        //   be linearized after all of them;
        // * one that leaves the register holding a value no operation reads
        //   or compares against ([`ANON`]) can only help a cas reported as
        //   not applied (the one step that needs the register to differ from
        //   a value), so without such a cas it is useless.
        let last_return = required.iter().map(|&(_, _, ret, _)| ret).max().unwrap_or(0);
        let has_failed_cas = required.iter().any(|&(.., step)| matches!(step, Step::CasFailed { .. }));
        optional.retain(|&(_, call, step)| {
            let writes_anonymous = matches!(step, Step::Set(ANON) | Step::CasMaybe { new: ANON, .. });
            call <= last_return && (has_failed_cas || !writes_anonymous)
        });
        let n = required.len();

        // Entries sorted by time; at equal times calls precede returns, so
        // touching intervals are concurrent. Node 0 is the head sentinel,
        // nodes 1..=entries.len() the entries, entries.len() + 1 the tail.
        let mut entries: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
        for (id, &(_, call, ret, _)) in required.iter().enumerate() {
            entries.push((call, false, id));
            entries.push((ret, true, id));
        }
        entries.sort_unstable();
        let tail = entries.len() + 1;
        let mut node_op = vec![0usize; tail + 1];
        let mut node_time = vec![u64::MAX; tail + 1];
        let mut node_is_return = vec![false; tail + 1];
        let mut call_node = vec![NO_NODE; n];
        let mut return_node = vec![NO_NODE; n];
        for (position, &(time, is_return, id)) in entries.iter().enumerate() {
            let node = position + 1;
            node_op[node] = id;
            node_time[node] = time;
            node_is_return[node] = is_return;
            if is_return {
                return_node[id] = node;
            } else {
                call_node[id] = node;
            }
        }
        let mut remaining = vec![0u32; classes.ids.len() + 1];
        for step in required.iter().map(|op| op.3).chain(optional.iter().map(|op| op.2)) {
            if let Some(class) = step.distinguishes() {
                remaining[class as usize] += 1;
            }
        }
        let initial = classes.of(None);
        Search {
            steps_of: required.iter().map(|op| op.3).collect(),
            pure: required.iter().map(|op| op.3.is_pure()).collect(),
            global_of: required.iter().map(|op| op.0).collect(),
            priority: required.iter().map(|&(_, call, ret, _)| call / 2 + ret / 2).collect(),
            required_left: n,
            optional: OptionalOps::new(optional),
            list: EntryList::new(entries.len()),
            tail,
            node_op,
            node_time,
            node_is_return,
            call_node,
            return_node,
            state: if remaining[initial as usize] == 0 { ANON } else { initial },
            initial,
            run_start: None,
            cas_used: [0, 0],
            used_counts: vec![0; remaining.len()],
            live_used: BTreeSet::new(),
            anonymous: 0,
            remaining,
            hi: 0,
            missing: Vec::new(),
            stack: Vec::new(),
            memo: Memo::default(),
            dominance_buf: Vec::new(),
            key_buf: Vec::new(),
            candidates_buf: Vec::new(),
            options_buf: Vec::new(),
            steps: 0,
            max_steps: budget.max_steps,
            deadline: budget.deadline,
            cursor: Cursor::Fresh,
            stuck_steps: None,
            deepest: 0,
            deepest_step: 0,
            best: Best::default(),
        }
    }

    /// Counts one search step.
    fn tick(&mut self) -> Result<(), Abort> {
        self.steps += 1;
        if self.steps > self.max_steps {
            Err(Abort::Budget)
        } else if self.stuck_steps.is_some_and(|stuck| self.steps - self.deepest_step > stuck) {
            Err(Abort::Stuck)
        } else if self.steps % DEADLINE_CHECK_STEPS == 0
            && self.deadline.is_some_and(|deadline| Instant::now() >= deadline)
        {
            Err(Abort::Deadline)
        } else {
            Ok(())
        }
    }

    /// The first pending return entry (or the tail).
    fn first_return(&self) -> usize {
        let mut node = self.list.next[HEAD];
        while node != self.tail && !self.node_is_return[node] {
            node = self.list.next[node];
        }
        node
    }

    /// The register after linearizing completed operation `id` next, if that
    /// is legal and, within a run, if the run was needed to enable it.
    fn successor(&self, id: usize) -> Option<Class> {
        let step = self.steps_of[id];
        let after = step.apply(self.state)?;
        if let Some(start) = self.run_start {
            if step.apply(start).is_some() {
                return None;
            }
        }
        Some(after)
    }

    /// `class`, or [`ANON`] if no operation left can tell it apart.
    fn canon(&self, class: Class) -> Class {
        if self.remaining[class as usize] == 0 {
            ANON
        } else {
            class
        }
    }

    /// Adjusts `remaining` for linearizing or un-linearizing a step. When a
    /// class becomes (or stops being) indistinguishable, the puts and deletes
    /// of unknown outcome writing it that were used join (or leave)
    /// `anonymous`.
    fn count(&mut self, step: Step, linearized: bool) {
        let Some(class) = step.distinguishes() else {
            return;
        };
        let class = class as usize;
        let before = self.remaining[class];
        self.remaining[class] = if linearized { before.saturating_sub(1) } else { before + 1 };
        if (before == 0) != (self.remaining[class] == 0) && self.used_counts[class] > 0 {
            if linearized {
                self.anonymous += self.used_counts[class];
                self.live_used.remove(&(class as Class));
            } else {
                self.anonymous -= self.used_counts[class];
                self.live_used.insert(class as Class);
            }
        }
    }

    /// Records linearizing (or un-linearizing, which must happen in the
    /// reverse order) unknown-outcome operation `id`.
    fn use_optional(&mut self, id: usize, linearized: bool) {
        let step = self.optional.step[id];
        if linearized {
            self.count(step, true);
        }
        match step {
            Step::Set(class) => {
                let dead = self.remaining[class as usize] == 0;
                let count = &mut self.used_counts[class as usize];
                if linearized {
                    *count += 1;
                } else {
                    *count = count.saturating_sub(1);
                }
                if dead {
                    if linearized {
                        self.anonymous += 1;
                    } else {
                        self.anonymous -= 1;
                    }
                } else if *count == 0 {
                    self.live_used.remove(&class);
                } else {
                    self.live_used.insert(class);
                }
            }
            _ => self.cas_used = xor(self.cas_used, zobrist(id)),
        }
        if !linearized {
            self.count(step, false);
        }
        self.optional.done[id] = linearized;
    }

    /// Enters a new configuration unless it was explored before; returns
    /// whether it did. `remaining` must already account for the operation.
    fn enter(&mut self, frame: Frame, after: Class, run_start: Option<Class>) -> bool {
        let after = self.canon(after);
        encode_config(&mut self.key_buf, after, run_start, self.cas_used, self.hi, &self.missing);
        // Dominance vector: the anonymous count, then (class, count) for the
        // distinguishable classes used.
        self.dominance_buf.clear();
        self.dominance_buf.push(self.anonymous);
        for &class in &self.live_used {
            self.dominance_buf.extend_from_slice(&[class, self.used_counts[class as usize]]);
        }
        if !self.memo.visit(&self.key_buf, &self.dominance_buf) {
            return false;
        }
        self.stack.push(frame);
        if self.stack.len() > self.deepest {
            self.deepest = self.stack.len();
            self.deepest_step = self.steps;
        }
        self.state = after;
        self.run_start = run_start;
        true
    }

    /// Linearizes completed operation `id`, leaving the register in class
    /// `after`, unless the resulting configuration was explored before;
    /// returns whether it did.
    fn push_required(&mut self, id: usize, after: Class, forced: bool, candidate_index: usize) -> bool {
        let id32 = id as u32;
        let old_hi = self.hi;
        let undo = if id32 < self.hi {
            match self.missing.binary_search(&id32) {
                Ok(position) => {
                    self.missing.remove(position);
                    Undo::Reinsert(position)
                }
                // Unreachable: an operation still in the list is not
                // linearized, so it is in `missing` when below `hi`.
                Err(_) => return false,
            }
        } else {
            let len = self.missing.len();
            self.missing.extend(self.hi..id32);
            self.hi = id32 + 1;
            Undo::Truncate(len)
        };
        let frame = Frame {
            choice: Choice::Required { id, undo, candidate_index },
            global: self.global_of[id],
            state: self.state,
            run_start: self.run_start,
            hi: old_hi,
            forced,
        };
        self.count(self.steps_of[id], true);
        if !self.enter(frame, after, None) {
            self.count(self.steps_of[id], false);
            self.undo_missing(id32, undo);
            self.hi = old_hi;
            return false;
        }
        self.list.unlink(self.call_node[id]);
        self.list.unlink(self.return_node[id]);
        self.required_left -= 1;
        true
    }

    /// Linearizes unknown-outcome operation `id` (option `option_index` of
    /// the current configuration), leaving the register in class `after`,
    /// unless the resulting configuration was explored before; returns
    /// whether it did.
    fn push_optional(&mut self, id: usize, after: Class, option_index: usize) -> bool {
        let frame = Frame {
            choice: Choice::Optional { id, option_index },
            global: self.optional.global[id],
            state: self.state,
            run_start: self.run_start,
            hi: self.hi,
            forced: false,
        };
        let run_start = Some(self.run_start.unwrap_or(self.state));
        self.use_optional(id, true);
        if !self.enter(frame, after, run_start) {
            self.use_optional(id, false);
            return false;
        }
        true
    }

    fn undo_missing(&mut self, id32: u32, undo: Undo) {
        match undo {
            Undo::Reinsert(position) => self.missing.insert(position, id32),
            Undo::Truncate(len) => self.missing.truncate(len),
        }
    }

    /// Undoes the last linearization.
    fn pop(&mut self) -> Option<Frame> {
        let frame = self.stack.pop()?;
        self.best.common = self.best.common.min(self.stack.len());
        self.state = frame.state;
        self.run_start = frame.run_start;
        self.hi = frame.hi;
        match frame.choice {
            Choice::Required { id, undo, .. } => {
                self.undo_missing(id as u32, undo);
                self.count(self.steps_of[id], false);
                self.list.relink(self.return_node[id]);
                self.list.relink(self.call_node[id]);
                self.required_left += 1;
            }
            Choice::Optional { id, .. } => self.use_optional(id, false),
        }
        Some(frame)
    }

    /// A pending completed operation that never changes the register and
    /// may be linearized now. Linearizing it dominates every alternative, so
    /// it is the only choice that needs exploring.
    fn forced_choice(&mut self) -> Result<Option<(usize, Class)>, Abort> {
        let mut node = self.list.next[HEAD];
        while node != self.tail && !self.node_is_return[node] {
            let id = self.node_op[node];
            if self.pure[id] {
                self.tick()?;
                if let Some(after) = self.successor(id) {
                    return Ok(Some((id, after)));
                }
            }
            node = self.list.next[node];
        }
        Ok(None)
    }

    /// The pending completed operations that may be linearized next (calls
    /// before the first pending response), except pure ones (which
    /// [`Search::forced_choice`] handles), in the order to try them.
    fn candidates(&self, out: &mut Vec<usize>) {
        out.clear();
        let mut node = self.list.next[HEAD];
        while node != self.tail && !self.node_is_return[node] {
            let id = self.node_op[node];
            if !self.pure[id] {
                out.push(id);
            }
            node = self.list.next[node];
        }
        out.sort_by_key(|&id| (self.priority[id], id));
    }

    /// The unknown-outcome operations worth linearizing next, with the class
    /// each leaves the register in, in a deterministic order. A run of them
    /// must enable a pending completed operation that is illegal in the
    /// state the run starts from, so only operations that lead towards what
    /// such an operation needs are offered: outside a run, a put or delete
    /// (one per class: equal ones are interchangeable, so the earliest
    /// available stands for all) or a cas from the current class; inside a
    /// run, a cas extending it (a put or delete would make the run's earlier
    /// operations pointless).
    fn options(&self, out: &mut Vec<(usize, Class)>) {
        out.clear();
        if self.optional.step.is_empty() {
            return;
        }
        let frontier_node = self.first_return();
        let frontier = self.node_time[frontier_node];
        let origin = self.run_start.unwrap_or(self.state);
        // Classes the run may usefully pass through, or all of them.
        let mut targets: Vec<Class> = Vec::new();
        let mut any = false;
        let mut node = self.list.next[HEAD];
        while node != frontier_node {
            let step = self.steps_of[self.node_op[node]];
            if step.apply(origin).is_none() {
                match step {
                    Step::Read(target) | Step::CasOk { expected: target, .. } => {
                        self.optional.chain_sources(target, frontier, &mut targets);
                    }
                    Step::CasFailed { .. } => any = true,
                    Step::Set(_) | Step::CasMaybe { .. } | Step::Impossible => {}
                }
            }
            node = self.list.next[node];
        }
        if self.run_start.is_none() {
            let classes = if any { &self.optional.set_classes } else { &targets };
            let mut anonymous_offered = false;
            for &class in classes {
                let canonical = self.canon(class);
                if canonical == self.state || (canonical == ANON && anonymous_offered) {
                    continue;
                }
                let first = self.optional.set_by_class.get(&class).and_then(|list| {
                    let mut available = self.optional.available(list, frontier);
                    available.next()
                });
                if let Some(id) = first {
                    anonymous_offered |= canonical == ANON;
                    out.push((id, canonical));
                }
            }
        }
        if let Some(list) = self.optional.cas_by_expected.get(&self.state) {
            let start = out.len();
            for id in self.optional.available(list, frontier) {
                if let Step::CasMaybe { new, .. } = self.optional.step[id] {
                    let new = self.canon(new);
                    let useful = any || targets.contains(&new);
                    if useful && !out[start..].iter().any(|&(_, after)| after == new) {
                        out.push((id, new));
                    }
                }
            }
        }
    }

    /// A completed operation that can never be linearized, whatever the
    /// order: one whose output does not match its input, or that reads (or
    /// successfully compares against) a value that is neither the initial
    /// one nor written by any operation.
    fn never_legal(&self) -> Option<usize> {
        let mut producible = vec![false; self.remaining.len()];
        producible[self.initial as usize] = true;
        for step in self.steps_of.iter().chain(&self.optional.step) {
            match *step {
                Step::Set(class) | Step::CasOk { new: class, .. } | Step::CasMaybe { new: class, .. } => {
                    producible[class as usize] = true;
                }
                Step::Read(_) | Step::CasFailed { .. } | Step::Impossible => {}
            }
        }
        let id = (0..self.steps_of.len()).find(|&id| match self.steps_of[id] {
            Step::Read(class) | Step::CasOk { expected: class, .. } => !producible[class as usize],
            Step::Impossible => true,
            Step::Set(_) | Step::CasFailed { .. } | Step::CasMaybe { .. } => false,
        })?;
        Some(self.global_of[id])
    }

    /// The verdict, or `Err(Stuck)` if [`Search::stuck_steps`] is set and
    /// the search got stuck (calling `run` again resumes it).
    fn run(&mut self) -> Result<KeyOutcome, Stuck> {
        if let Some(global) = self.never_legal() {
            return Ok(KeyOutcome::NotLinearizable(vec![global]));
        }
        Ok(match self.search() {
            Err(Abort::Stuck) => return Err(Stuck),
            Ok(true) => KeyOutcome::Linearizable,
            Ok(false) => {
                let mut witness = self.best.prefix.clone();
                if self.best.found {
                    witness.push(self.best.blocker);
                }
                KeyOutcome::NotLinearizable(witness)
            }
            Err(Abort::Budget) => KeyOutcome::Unknown(format!(
                "search budget of {} steps exhausted on {} operations (furthest partial \
                 linearization found: {} operations)",
                self.max_steps,
                self.steps_of.len() + self.optional.step.len(),
                self.best.prefix.len().max(self.stack.len())
            )),
            Err(Abort::Deadline) => KeyOutcome::Unknown(format!(
                "time limit reached after {} search steps on {} operations",
                self.steps,
                self.steps_of.len() + self.optional.step.len(),
            )),
        })
    }

    /// The search proper; `Ok(true)` if a linearization exists.
    fn search(&mut self) -> Result<bool, Abort> {
        loop {
            if self.required_left == 0 {
                return Ok(true);
            }
            // An abort (`?`) leaves `self.cursor` as it was: re-entering the
            // configuration repeats work but changes nothing.
            self.cursor = match self.cursor {
                Cursor::Fresh => match self.forced_choice()? {
                    Some((id, after)) => {
                        if self.push_required(id, after, true, 0) {
                            Cursor::Fresh
                        } else {
                            // The dominating successor was explored and failed.
                            Cursor::Fail
                        }
                    }
                    None => Cursor::Scan(0),
                },
                Cursor::Scan(mut index) => {
                    let mut candidates = std::mem::take(&mut self.candidates_buf);
                    self.candidates(&mut candidates);
                    let mut next = Cursor::Options(0);
                    while let Some(&id) = candidates.get(index) {
                        self.tick()?;
                        if let Some(after) = self.successor(id) {
                            if self.push_required(id, after, false, index) {
                                next = Cursor::Fresh;
                                break;
                            }
                        }
                        index += 1;
                    }
                    self.candidates_buf = candidates;
                    next
                }
                Cursor::Options(mut index) => {
                    let mut options = std::mem::take(&mut self.options_buf);
                    self.options(&mut options);
                    let mut next = Cursor::Fail;
                    while let Some(&(id, after)) = options.get(index) {
                        self.tick()?;
                        if self.push_optional(id, after, index) {
                            next = Cursor::Fresh;
                            break;
                        }
                        index += 1;
                    }
                    self.options_buf = options;
                    if matches!(next, Cursor::Fail) {
                        // Exhausted at the first pending response.
                        let node = self.first_return();
                        if node != self.tail {
                            self.best.consider(node, &self.stack, self.global_of[self.node_op[node]]);
                        }
                    }
                    next
                }
                Cursor::Fail => {
                    let Some(frame) = self.pop() else {
                        return Ok(false);
                    };
                    match frame.choice {
                        _ if frame.forced => Cursor::Fail,
                        Choice::Required { candidate_index, .. } => Cursor::Scan(candidate_index + 1),
                        Choice::Optional { option_index, .. } => Cursor::Options(option_index + 1),
                    }
                }
            };
        }
    }
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
    let mut search = Search::new(ops.clone(), budget);
    search.stuck_steps = Some(stuck_steps);
    loop {
        match search.run() {
            Ok(outcome) => return outcome,
            Err(Stuck) => {
                search.stuck_steps = None;
                let blocker = search.best.found.then_some(search.best.blocker);
                let refuted = blocker.and_then(|blocker| crate::minimize::refute_near(&ops, blocker, budget));
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
    Search::new(ops, budget).run().unwrap_or_else(|Stuck| KeyOutcome::Unknown("search stuck".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::{arb_small_history, brute_force_linearizable};
    use crate::{parse_jsonl, to_jsonl};
    use proptest::prelude::*;
    use std::time::Instant;

    // ----- builders -------------------------------------------------------

    fn op(key: &str, input: Input, output: Option<Output>, call: u64, ret: Option<u64>) -> Operation {
        Operation { process: 0, key: key.to_owned(), input, output, call_ns: call, return_ns: ret }
    }

    fn put(value: i64, call: u64, ret: u64) -> Operation {
        op("k", Input::Put { value }, Some(Output::Put), call, Some(ret))
    }

    fn get(value: Option<i64>, call: u64, ret: u64) -> Operation {
        op("k", Input::Get, Some(Output::Get { value }), call, Some(ret))
    }

    fn del(call: u64, ret: u64) -> Operation {
        op("k", Input::Delete, Some(Output::Delete), call, Some(ret))
    }

    fn cas(expected: Option<i64>, new: i64, ok: bool, call: u64, ret: u64) -> Operation {
        op("k", Input::Cas { expected, new }, Some(Output::Cas { ok }), call, Some(ret))
    }

    fn unknown(input: Input, call: u64) -> Operation {
        op("k", input, None, call, None)
    }

    fn on(key: &str, mut operation: Operation) -> Operation {
        operation.key = key.to_owned();
        operation
    }

    fn assert_linearizable(history: &[Operation]) {
        let result = check(history, CheckBudget::default());
        assert_eq!(result, CheckResult::Linearizable, "history: {history:#?}");
    }

    /// Asserts rejection on `key` with a witness ending in `offender`.
    fn assert_rejected(history: &[Operation], key: &str, offender: usize) {
        match check(history, CheckBudget::default()) {
            CheckResult::NotLinearizable { key: bad_key, witness } => {
                assert_eq!(bad_key, key);
                assert!(!witness.is_empty());
                assert!(witness.iter().all(|&i| i < history.len()));
                assert_eq!(
                    witness.last(),
                    Some(&offender),
                    "witness {witness:?} should end with op {offender}"
                );
            }
            other => panic!("expected NotLinearizable, got {other:?} for {history:#?}"),
        }
    }

    // ----- linearizable histories ----------------------------------------

    #[test]
    fn empty_history_is_linearizable() {
        assert_linearizable(&[]);
    }

    #[test]
    fn sequential_history_is_linearizable() {
        assert_linearizable(&[
            get(None, 0, 1),
            put(1, 2, 3),
            get(Some(1), 4, 5),
            put(2, 6, 7),
            get(Some(2), 8, 9),
            del(10, 11),
            get(None, 12, 13),
        ]);
    }

    #[test]
    fn concurrent_overlapping_writes_are_linearizable() {
        // Both orders of the overlapping puts are allowed; the read fixes one.
        assert_linearizable(&[put(1, 0, 10), put(2, 5, 15), get(Some(1), 20, 21)]);
        assert_linearizable(&[put(1, 0, 10), put(2, 5, 15), get(Some(2), 20, 21)]);
    }

    #[test]
    fn read_concurrent_with_two_writes_sees_either() {
        for seen in [None, Some(1), Some(2)] {
            assert_linearizable(&[put(1, 0, 10), put(2, 0, 10), get(seen, 0, 10)]);
        }
    }

    #[test]
    fn reads_concurrent_with_a_write_may_flip_once() {
        assert_linearizable(&[
            put(1, 0, 1),
            put(2, 10, 50),
            get(Some(1), 11, 12),
            get(Some(2), 13, 14),
            get(Some(2), 15, 16),
        ]);
    }

    #[test]
    fn touching_intervals_are_concurrent() {
        // The get returns exactly when the put is called: they may be ordered
        // either way.
        assert_linearizable(&[get(Some(1), 0, 5), put(1, 5, 6)]);
    }

    #[test]
    fn cas_chain_is_linearizable() {
        assert_linearizable(&[
            cas(None, 1, true, 0, 1),
            cas(Some(1), 2, true, 2, 3),
            cas(Some(1), 3, false, 4, 5),
            cas(Some(2), 3, true, 6, 7),
            get(Some(3), 8, 9),
        ]);
    }

    #[test]
    fn concurrent_cas_chain_is_linearizable() {
        // Listed in an order different from the only valid one.
        assert_linearizable(&[
            cas(Some(3), 4, true, 0, 100),
            cas(Some(1), 2, true, 0, 100),
            cas(Some(2), 3, true, 0, 100),
            cas(None, 1, true, 0, 100),
            cas(Some(1), 9, false, 0, 100),
            get(Some(4), 101, 102),
        ]);
    }

    #[test]
    fn unknown_write_that_happened_is_linearizable() {
        assert_linearizable(&[put(1, 0, 1), unknown(Input::Put { value: 2 }, 2), get(Some(2), 10, 11)]);
    }

    #[test]
    fn unknown_write_that_did_not_happen_is_linearizable() {
        assert_linearizable(&[
            put(1, 0, 1),
            unknown(Input::Put { value: 2 }, 2),
            get(Some(1), 10, 11),
            get(Some(1), 12, 13),
        ]);
    }

    #[test]
    fn unknown_write_may_take_effect_much_later() {
        assert_linearizable(&[
            unknown(Input::Put { value: 7 }, 0),
            put(1, 1, 2),
            get(Some(1), 3, 4),
            put(2, 5, 6),
            get(Some(2), 7, 8),
            get(Some(7), 9, 10),
            get(Some(7), 11, 12),
        ]);
    }

    #[test]
    fn unknown_cas_and_delete_are_optional() {
        assert_linearizable(&[
            put(1, 0, 1),
            unknown(Input::Cas { expected: Some(1), new: 5 }, 2),
            unknown(Input::Delete, 3),
            get(Some(1), 4, 5),
            get(Some(5), 6, 7),
            get(None, 8, 9),
        ]);
    }

    #[test]
    fn unknown_get_is_ignored() {
        assert_linearizable(&[put(1, 0, 1), unknown(Input::Get, 2), get(Some(1), 3, 4)]);
    }

    #[test]
    fn unknown_write_explains_failed_cas() {
        // The cas can only have failed if the unknown put happened first.
        assert_linearizable(&[
            put(1, 0, 1),
            unknown(Input::Put { value: 2 }, 2),
            cas(Some(1), 3, false, 3, 4),
            get(Some(2), 5, 6),
        ]);
    }

    #[test]
    fn chain_of_unknown_operations() {
        assert_linearizable(&[
            unknown(Input::Put { value: 5 }, 0),
            unknown(Input::Cas { expected: Some(5), new: 6 }, 0),
            get(Some(6), 10, 11),
            get(Some(6), 12, 13),
        ]);
    }

    #[test]
    fn completed_op_with_unknown_return_time_may_linearize_late() {
        assert_linearizable(&[
            op("k", Input::Put { value: 3 }, Some(Output::Put), 0, None),
            get(None, 1, 2),
            get(Some(3), 10, 11),
        ]);
    }

    #[test]
    fn deletes_are_linearizable() {
        assert_linearizable(&[
            put(1, 0, 1),
            del(2, 20),
            get(Some(1), 3, 4),
            get(None, 5, 6),
            del(21, 22),
            get(None, 23, 24),
            cas(None, 8, true, 25, 26),
            get(Some(8), 27, 28),
        ]);
    }

    #[test]
    fn keys_are_independent() {
        assert_linearizable(&[
            on("a", put(1, 0, 1)),
            on("b", put(2, 2, 3)),
            on("a", get(Some(1), 4, 5)),
            on("b", get(Some(2), 4, 5)),
            on("c", get(None, 6, 7)),
        ]);
    }

    // ----- non-linearizable histories ------------------------------------

    #[test]
    fn rejects_stale_read() {
        assert_rejected(&[put(1, 0, 1), put(2, 2, 3), get(Some(1), 4, 5)], "k", 2);
    }

    #[test]
    fn rejects_read_of_value_never_written() {
        assert_rejected(&[put(1, 0, 1), get(Some(5), 2, 3)], "k", 1);
        assert_rejected(&[get(Some(5), 0, 1)], "k", 0);
    }

    #[test]
    fn rejects_reads_in_impossible_order() {
        assert_rejected(&[put(1, 0, 10), put(2, 0, 10), get(Some(2), 11, 12), get(Some(1), 13, 14)], "k", 3);
        // Two writes ordered by real time, two concurrent readers that
        // observe them in opposite orders.
        assert_rejected(
            &[
                put(1, 0, 100),
                put(2, 0, 100),
                get(Some(1), 0, 10),
                get(Some(2), 11, 20),
                get(Some(2), 0, 10),
                get(Some(1), 11, 20),
            ],
            "k",
            5,
        );
    }

    #[test]
    fn rejects_cas_succeeding_against_wrong_value() {
        assert_rejected(&[put(1, 0, 1), cas(Some(2), 3, true, 2, 3)], "k", 1);
        assert_rejected(&[cas(Some(0), 3, true, 0, 1)], "k", 0);
    }

    #[test]
    fn rejects_cas_failing_against_matching_value() {
        assert_rejected(&[put(1, 0, 1), cas(Some(1), 3, false, 2, 3)], "k", 1);
    }

    #[test]
    fn rejects_two_successful_cas_from_same_value() {
        assert_rejected(&[put(1, 0, 1), cas(Some(1), 2, true, 2, 10), cas(Some(1), 3, true, 2, 10)], "k", 2);
    }

    #[test]
    fn rejects_lost_write() {
        assert_rejected(&[put(1, 0, 1), get(None, 2, 3)], "k", 1);
        assert_rejected(&[put(1, 0, 1), put(2, 2, 3), get(Some(2), 4, 5), get(Some(1), 6, 7)], "k", 3);
    }

    #[test]
    fn rejects_read_of_deleted_value() {
        assert_rejected(&[put(1, 0, 1), del(2, 3), get(Some(1), 4, 5)], "k", 2);
    }

    #[test]
    fn rejects_read_from_the_future() {
        assert_rejected(&[get(Some(1), 0, 1), put(1, 2, 3)], "k", 0);
    }

    #[test]
    fn rejects_read_before_unknown_write_was_invoked() {
        assert_rejected(&[get(Some(2), 0, 1), unknown(Input::Put { value: 2 }, 2)], "k", 0);
    }

    #[test]
    fn rejects_old_value_after_failed_cas_needing_unknown_write() {
        // The failed cas forces the unknown put of 2 before it, so 1 cannot
        // be read afterwards.
        assert_rejected(
            &[
                put(1, 0, 1),
                unknown(Input::Put { value: 2 }, 2),
                cas(Some(1), 3, false, 3, 4),
                get(Some(1), 5, 6),
            ],
            "k",
            3,
        );
    }

    #[test]
    fn rejects_unknown_write_used_twice() {
        // An unknown put takes effect at most once.
        assert_rejected(
            &[
                unknown(Input::Put { value: 5 }, 0),
                unknown(Input::Cas { expected: Some(5), new: 6 }, 0),
                get(Some(6), 10, 11),
                get(Some(5), 12, 13),
            ],
            "k",
            3,
        );
    }

    #[test]
    fn rejects_read_of_value_written_only_by_failed_op() {
        let text = r#"{"process":0,"type":"invoke","f":"put","key":"k","value":1,"time":0}
{"process":0,"type":"ok","f":"put","key":"k","value":1,"time":1}
{"process":1,"type":"invoke","f":"put","key":"k","value":2,"time":2}
{"process":1,"type":"fail","f":"put","key":"k","value":2,"time":3}
{"process":0,"type":"invoke","f":"get","key":"k","value":null,"time":4}
{"process":0,"type":"ok","f":"get","key":"k","value":2,"time":5}
"#;
        let history = parse_jsonl(text).expect("valid history");
        assert_eq!(history.len(), 2);
        assert_rejected(&history, "k", 1);
    }

    #[test]
    fn rejects_output_of_the_wrong_kind() {
        assert_rejected(&[op("k", Input::Get, Some(Output::Put), 0, Some(1))], "k", 0);
    }

    #[test]
    fn reports_the_failing_key() {
        assert_rejected(
            &[
                on("a", put(1, 0, 1)),
                on("b", put(2, 0, 1)),
                on("a", get(Some(1), 2, 3)),
                on("b", get(Some(1), 2, 3)),
            ],
            "b",
            3,
        );
    }

    #[test]
    fn witness_is_the_furthest_partial_linearization() {
        let history = [put(1, 0, 1), put(2, 2, 3), get(Some(2), 4, 5), put(3, 6, 7), get(Some(2), 8, 9)];
        assert_eq!(
            check(&history, CheckBudget::default()),
            CheckResult::NotLinearizable { key: "k".to_owned(), witness: vec![0, 1, 2, 3, 4] }
        );
    }

    #[test]
    fn a_search_deemed_stuck_resumes_or_refutes_locally() {
        use crate::generate::{self, Workload};
        for seed in 0..4 {
            let workload = Workload {
                duration_ns: 2_000_000_000,
                keys: 1,
                latency_ns: 20_000_000,
                think_ns: 1_000_000,
                info_per_mille: 20,
                ..Workload::ten_minutes(seed)
            };
            let mut ops = generate::generate(&workload).ops;
            // Deemed stuck after 50 steps without progress: the local check finds
            // nothing, and the search must resume where it was.
            assert_eq!(
                check_with(&ops, CheckBudget::default(), 50),
                CheckResult::Linearizable,
                "seed {seed}"
            );
            let victim =
                generate::stale_read(&mut ops, 7 * seed as usize + 100).expect("a read to make stale");
            match check_with(&ops, CheckBudget::default(), 50) {
                CheckResult::NotLinearizable { witness, .. } => {
                    assert_eq!(witness.last(), Some(&victim), "seed {seed}");
                }
                other => panic!("seed {seed}: {other:?}"),
            }
        }
    }

    #[test]
    fn exhausted_budget_reports_unknown() {
        let history = [put(1, 0, 10), put(2, 0, 10), put(3, 0, 10), get(Some(1), 11, 12)];
        match check(&history, CheckBudget { max_steps: 2, deadline: None }) {
            CheckResult::Unknown { key, reason } => {
                assert_eq!(key, "k");
                assert!(reason.contains("budget"), "{reason}");
            }
            other => panic!("expected Unknown, got {other:?}"),
        }
        // A violation on another key still wins over an unknown verdict.
        let mut both = history.to_vec();
        both.push(on("z", get(Some(9), 0, 1)));
        assert!(matches!(
            check(&both, CheckBudget { max_steps: 2, deadline: None }),
            CheckResult::NotLinearizable { key, .. } if key == "z"
        ));
    }

    // ----- randomized histories -------------------------------------------

    /// SplitMix64.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, bound: u64) -> u64 {
            self.next() % bound
        }
    }

    /// Simulates `processes` clients issuing `count` operations against an
    /// atomic key-value store with `keys` keys. Each process runs one
    /// operation at a time; each operation takes effect at a random instant
    /// inside its interval. About `unknown_per_mille`/1000 of the operations
    /// time out (unknown outcome; half of those really took effect).
    fn simulate(
        seed: u64,
        count: usize,
        keys: u64,
        processes: u64,
        unknown_per_mille: u64,
    ) -> Vec<Operation> {
        let mut rng = Rng(seed);
        // (process, call, linearization point, return)
        let mut free_at = vec![0u64; processes as usize];
        let mut slots = Vec::with_capacity(count);
        for _ in 0..count {
            let process = (0..processes as usize).min_by_key(|&p| (free_at[p], p)).unwrap_or(0);
            let call = free_at[process] + rng.below(20);
            let point = call + 1 + rng.below(60);
            let ret = point + 1 + rng.below(60);
            free_at[process] = ret;
            slots.push((process as u64, call, point, ret));
        }
        let mut by_point: Vec<usize> = (0..count).collect();
        by_point.sort_by_key(|&i| (slots[i].2, i));

        let mut store: HashMap<String, Option<i64>> = HashMap::new();
        let mut written: Vec<i64> = Vec::new();
        let mut next_value = 1i64;
        let mut ops: Vec<Option<Operation>> = vec![None; count];
        for i in by_point {
            let (process, call, _, ret) = slots[i];
            let key = format!("key{}", rng.below(keys));
            let current = store.get(&key).copied().flatten();
            let times_out = rng.below(1000) < unknown_per_mille;
            let takes_effect = !times_out || rng.below(2) == 0;
            let (input, output, new_state) = match rng.below(10) {
                0..=3 => (Input::Get, Output::Get { value: current }, current),
                4..=6 => {
                    next_value += 1;
                    (Input::Put { value: next_value }, Output::Put, Some(next_value))
                }
                7 => (Input::Delete, Output::Delete, None),
                _ => {
                    let expected = match rng.below(4) {
                        0 => None,
                        1 if !written.is_empty() => Some(written[rng.below(written.len() as u64) as usize]),
                        _ => current,
                    };
                    next_value += 1;
                    let ok = expected == current;
                    let after = if ok { Some(next_value) } else { current };
                    (Input::Cas { expected, new: next_value }, Output::Cas { ok }, after)
                }
            };
            if takes_effect {
                if let Some(value) = new_state {
                    written.push(value);
                }
                store.insert(key.clone(), new_state);
            }
            ops[i] = Some(Operation {
                process,
                key,
                input,
                output: (!times_out).then_some(output),
                call_ns: call,
                return_ns: (!times_out).then_some(ret),
            });
        }
        ops.into_iter().flatten().collect()
    }

    /// Index of a completed get, to corrupt.
    fn some_completed_get(history: &[Operation], pick: usize) -> Option<usize> {
        let gets: Vec<usize> = history
            .iter()
            .enumerate()
            .filter(|(_, op)| matches!(op.output, Some(Output::Get { .. })))
            .map(|(i, _)| i)
            .collect();
        (!gets.is_empty()).then(|| gets[pick % gets.len()])
    }

    /// Makes a completed get read a stale value: one written (only) by a
    /// completed put that was followed, in real time, by another completed
    /// put before the get was called. Returns the get's index.
    fn make_stale_read(history: &mut [Operation], pick: usize) -> Option<usize> {
        let completed_put = |op: &Operation| matches!((&op.input, &op.output), (Input::Put { .. }, Some(_)));
        let gets: Vec<usize> =
            (0..history.len()).filter(|&i| matches!(history[i].output, Some(Output::Get { .. }))).collect();
        for offset in 0..gets.len() {
            let victim = gets[(pick + offset) % gets.len()];
            let (key, call) = (history[victim].key.clone(), history[victim].call_ns);
            let before = |op: &Operation, time: u64| op.return_ns.is_some_and(|ret| ret < time);
            let overwrite =
                history.iter().filter(|op| op.key == key && completed_put(op) && before(op, call));
            let Some(overwrite_call) = overwrite.map(|op| op.call_ns).max() else {
                continue;
            };
            let stale = history
                .iter()
                .filter(|op| op.key == key && completed_put(op) && before(op, overwrite_call))
                .find_map(|op| match op.input {
                    Input::Put { value } => Some(value),
                    _ => None,
                });
            if let Some(value) = stale {
                history[victim].output = Some(Output::Get { value: Some(value) });
                return Some(victim);
            }
        }
        None
    }

    fn assert_rejected_at(history: &[Operation], victim: usize) {
        match check(history, CheckBudget::default()) {
            CheckResult::NotLinearizable { key, witness } => {
                assert_eq!(key, history[victim].key);
                assert_eq!(witness.last(), Some(&victim), "witness {witness:?}");
            }
            other => panic!("expected NotLinearizable at op {victim}, got {other:?}"),
        }
    }

    #[test]
    fn large_randomized_history_checks_quickly() {
        let history = simulate(42, 20_000, 5, 8, 5);
        let start = Instant::now();
        let result = check(&history, CheckBudget::default());
        eprintln!("20,000 ops / 5 keys / 8 processes checked in {:?}", start.elapsed());
        assert_eq!(result, CheckResult::Linearizable);

        let mut corrupted = history.clone();
        let victim = make_stale_read(&mut corrupted, 10_000).expect("a get to corrupt");
        let start = Instant::now();
        assert_rejected_at(&corrupted, victim);
        eprintln!("with a stale read: rejected in {:?}", start.elapsed());

        let mut corrupted = history;
        let victim = some_completed_get(&corrupted, 12_345).expect("history has gets");
        corrupted[victim].output = Some(Output::Get { value: Some(-1) });
        assert_rejected_at(&corrupted, victim);
    }

    #[test]
    fn hundred_thousand_ops_check_quickly() {
        let history = simulate(7, 100_000, 10, 10, 2);
        let start = Instant::now();
        let result = check(&history, CheckBudget::default());
        eprintln!("100,000 ops / 10 keys / 10 processes checked in {:?}", start.elapsed());
        assert_eq!(result, CheckResult::Linearizable);
    }

    #[test]
    fn hot_key_with_many_unknowns() {
        // One key, six processes, 5% of operations time out.
        let history = simulate(3, 5_000, 1, 6, 50);
        let start = Instant::now();
        assert_eq!(check(&history, CheckBudget::default()), CheckResult::Linearizable);
        eprintln!("5,000 ops / 1 key / 6 processes / 5% unknown checked in {:?}", start.elapsed());

        let mut corrupted = history;
        let victim = make_stale_read(&mut corrupted, 2_500).expect("a get to corrupt");
        let start = Instant::now();
        assert_rejected_at(&corrupted, victim);
        eprintln!("with a stale read: rejected in {:?}", start.elapsed());
    }

    /// Raw material for one operation of a proptest history.
    type OpSeed = (u8, u8, bool, u64, u64, u8);

    /// Builds a history by running the ops sequentially against a register,
    /// one linearization point every 100ns, then stretching each interval
    /// backwards by `pre` and forwards by `post` (so intervals overlap, but the
    /// points stay inside them and in order). A completed get of key 0 ends
    /// the history.
    fn build_history(seeds: &[OpSeed]) -> Vec<Operation> {
        let mut store: HashMap<String, Option<i64>> = HashMap::new();
        let mut next_value = 0i64;
        let mut history = Vec::new();
        let last = (0u8, 0u8, false, 0u64, 0u64, 2u8);
        for (i, &(key, kind, flag, pre, post, fate)) in seeds.iter().chain([&last]).enumerate() {
            let point = 1_000 + 100 * i as u64;
            let key = format!("k{key}");
            let current = store.get(&key).copied().flatten();
            next_value += 1;
            let (input, output, after) = match kind % 10 {
                0..=3 => (Input::Get, Output::Get { value: current }, current),
                4..=6 => (Input::Put { value: next_value }, Output::Put, Some(next_value)),
                7 => (Input::Delete, Output::Delete, None),
                _ => {
                    let expected = if flag { current } else { Some(next_value - 1) };
                    let ok = expected == current;
                    (
                        Input::Cas { expected, new: next_value },
                        Output::Cas { ok },
                        if ok { Some(next_value) } else { current },
                    )
                }
            };
            // fate 0: unknown outcome, took effect; 1: unknown, did not; else completed.
            let completed = fate >= 2;
            if fate != 1 {
                store.insert(key.clone(), after);
            }
            history.push(Operation {
                process: i as u64 % 5,
                key,
                input,
                output: completed.then_some(output),
                call_ns: point - pre,
                return_ns: completed.then_some(point + post),
            });
        }
        history
    }

    fn arb_seeds() -> impl Strategy<Value = Vec<OpSeed>> {
        prop::collection::vec((0u8..3, 0u8..10, any::<bool>(), 0u64..350, 0u64..350, 0u8..12), 0..60)
    }

    proptest! {
        #[test]
        fn prop_stretched_sequential_histories_are_linearizable(seeds in arb_seeds()) {
            let history = build_history(&seeds);
            prop_assert_eq!(check(&history, CheckBudget::default()), CheckResult::Linearizable);
        }

        #[test]
        fn prop_read_of_unwritten_value_is_rejected(seeds in arb_seeds(), pick in any::<usize>()) {
            let mut history = build_history(&seeds);
            let victim = some_completed_get(&history, pick).expect("the final get is completed");
            history[victim].output = Some(Output::Get { value: Some(-1) });
            match check(&history, CheckBudget::default()) {
                CheckResult::NotLinearizable { key, witness } => {
                    prop_assert_eq!(key, history[victim].key.clone());
                    prop_assert_eq!(witness.last(), Some(&victim));
                }
                other => prop_assert!(false, "expected NotLinearizable, got {:?}", other),
            }
        }

        #[test]
        fn prop_stale_read_is_rejected(seeds in arb_seeds(), pick in any::<usize>()) {
            let mut history = build_history(&seeds);
            if let Some(victim) = make_stale_read(&mut history, pick) {
                match check(&history, CheckBudget::default()) {
                    CheckResult::NotLinearizable { key, witness } => {
                        prop_assert_eq!(key, history[victim].key.clone());
                        prop_assert_eq!(witness.last(), Some(&victim));
                    }
                    other => prop_assert!(false, "expected NotLinearizable, got {:?}", other),
                }
            }
        }

        #[test]
        fn prop_simulated_histories_round_trip_and_are_linearizable(seed in any::<u64>()) {
            let history = simulate(seed, 60, 3, 4, 100);
            prop_assert_eq!(check(&history, CheckBudget::default()), CheckResult::Linearizable);
            let parsed = parse_jsonl(&to_jsonl(&history));
            prop_assert!(parsed.is_ok(), "{:?}", parsed);
            let mut parsed = parsed.unwrap_or_default();
            let mut expected = history.clone();
            parsed.sort_by_key(|op| (op.call_ns, op.process));
            expected.sort_by_key(|op| (op.call_ns, op.process));
            prop_assert_eq!(parsed, expected);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn prop_agrees_with_brute_force(history in arb_small_history()) {
            let expected = brute_force_linearizable(&history);
            // Deemed stuck at once: the local refutation runs, then the search resumes.
            let hurried = check_with(&history, CheckBudget::default(), 1);
            prop_assert_eq!(hurried.is_linearizable(), expected, "{:?}", hurried);
            let result = check(&history, CheckBudget::default());
            prop_assert_eq!(result.is_linearizable(), expected, "{:?}", result);
            if let CheckResult::NotLinearizable { key, witness } = result {
                prop_assert!(!witness.is_empty());
                let blocker = witness.last().copied().unwrap_or(usize::MAX);
                prop_assert!(blocker < history.len());
                prop_assert!(history[blocker].output.is_some());
                prop_assert!(witness.iter().all(|&i| history[i].key == key));
            }
        }
    }
}
