//! `rsl-check`: a linearizability checker for histories of a key-value store.
//!
//! A history records what clients asked of the store and what they heard back. It is
//! linearizable if every operation can be given one instant inside its interval
//! (between its invocation and its response) such that, taken in that order, the
//! operations are a legal run of a map of independent registers, each initially absent.
//!
//! * [`check()`] decides it: a Wing & Gong search with the porcupine / Knossos
//!   optimisations (per-key partitioning, a memo of explored configurations, pruning of
//!   unknown-outcome operations, reads linearized without branching). See the
//!   [`search`] module for the algorithm.
//! * [`minimize`] shrinks a violation to a 1-minimal witness: a few operations of one
//!   key that cannot be linearized, in a way that implies the whole history cannot be.
//! * [`parse_history`] reads the JSON-lines format below, with line numbers in every
//!   error and on every operation; [`to_jsonl`] and [`Event`] write it.
//! * [`generate`](mod@generate) makes large seeded histories of a simulated linearizable store, and
//!   mutations of them that are certainly not linearizable, for tests and benchmarks.
//!
//! The binary `rsl-check-history FILE` checks a file (`cargo xtask check-history FILE`).
//!
//! # The history format
//!
//! One JSON object per line, one event per object (Jepsen's format, so Jepsen-style
//! tools read it too):
//!
//! ```text
//! {"process":0,"type":"invoke","f":"put","key":"x","value":1,"time":1000}
//! {"process":0,"type":"ok","f":"put","key":"x","value":1,"time":2500}
//! ```
//!
//! * `process`: the client, a non-negative integer. A process has at most one operation
//!   outstanding: `invoke`, then exactly one of `ok`, `fail` or `info`.
//! * `type`: `invoke`; `ok` (it happened, with this result); `fail` (it certainly did
//!   not take effect); `info` (the outcome is unknown, e.g. a timeout: it may take effect
//!   at any time after its invocation, or never). An invocation left without completion
//!   at the end of the file counts as `info`.
//! * `f`: `put`, `get`, `cas` (compare-and-set) or `delete`.
//! * `key`: a string (an integer is accepted and read as its decimal string).
//! * `value`: for `put`, the value written; for `cas`, `[expected, new]` (`expected`
//!   null: the key must be absent); for a `get` invocation, null or absent; a `get`'s
//!   `ok` carries the value read, null for a missing key. A `cas` whose comparison failed
//!   is `fail`, or `ok` with value `false`. Values are integers or strings (two values
//!   are equal when their JSON is: `1` and `"1"` differ).
//! * `time`: nanoseconds, a non-negative integer, from any fixed origin.
//!
//! Other fields are ignored, and so are blank lines. See [`parse_history`] for every
//! rule a valid file follows.
//!
//! # Example
//!
//! ```
//! use rsl_check::{check, minimize, parse_history, CheckBudget, CheckResult};
//!
//! // Two puts, one after the other, then a read of the first: a stale read.
//! let text = r#"
//! {"process":1,"type":"invoke","f":"put","key":"x","value":1,"time":0}
//! {"process":1,"type":"ok","f":"put","key":"x","value":1,"time":10}
//! {"process":2,"type":"invoke","f":"put","key":"x","value":2,"time":20}
//! {"process":2,"type":"ok","f":"put","key":"x","value":2,"time":30}
//! {"process":1,"type":"invoke","f":"get","key":"x","time":40}
//! {"process":1,"type":"ok","f":"get","key":"x","value":1,"time":50}
//! "#;
//! let history = parse_history(text).expect("well-formed");
//! let result = check(&history.ops, CheckBudget::default());
//! let CheckResult::NotLinearizable { key, witness } = result else { panic!("{result:?}") };
//! let minimal = minimize(&history.ops, &key, &witness, CheckBudget::default());
//! // All three operations are needed to show the violation; the lines they came from:
//! let lines: Vec<usize> = minimal.operations.iter().map(|&i| history.origins[i].invoke_line).collect();
//! assert_eq!(lines, [2, 4, 6]);
//! assert!(minimal.minimal);
//! ```

pub mod generate;
mod jsonl;
mod minimize;
#[cfg(test)]
mod reference;
mod rng;
pub mod search;

pub use jsonl::{
    parse_history, parse_jsonl, to_jsonl, Completion, Event, EventType, Function, History, Origin, ParseError,
};
pub use minimize::{minimize, Witness};
pub use search::{check, CheckBudget, CheckResult};

/// The request of an operation on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Set the key to `value`.
    Put {
        /// The value written.
        value: i64,
    },
    /// Read the key.
    Get,
    /// Remove the key (it becomes absent, `None`).
    Delete,
    /// Compare-and-set: if the key currently holds `expected` (`None`: the key
    /// is absent), set it to `new`; otherwise leave it unchanged.
    Cas {
        /// The value the key must hold for the swap to happen.
        expected: Option<i64>,
        /// The value written if the comparison succeeds.
        new: i64,
    },
}

impl Input {
    /// Whether the operation can change the register (a put, delete or cas).
    pub fn is_write(&self) -> bool {
        !matches!(self, Input::Get)
    }
}

/// The response of a completed operation. Its variant must match the
/// operation's [`Input`]; an operation whose output does not match can never
/// be linearized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A put completed.
    Put,
    /// A get completed, reading `value` (`None`: the key was absent).
    Get {
        /// The value read.
        value: Option<i64>,
    },
    /// A delete completed.
    Delete,
    /// A compare-and-set completed: `ok` tells whether the swap happened.
    /// `ok: false` asserts that the key did not hold `expected` at the
    /// linearization point.
    Cas {
        /// Whether the comparison succeeded and the new value was written.
        ok: bool,
    },
}

/// One operation of a history: a call by `process` on `key` and, if known, its
/// response.
///
/// * `output: Some(_)` and `return_ns: Some(_)`: a completed operation, which
///   must be linearized somewhere in `[call_ns, return_ns]` (a `return_ns`
///   below `call_ns` is treated as `call_ns`).
/// * `output: None`: the outcome is unknown. The operation may have taken
///   effect at any time after `call_ns`, or never; `return_ns` is ignored.
/// * `output: Some(_)` with `return_ns: None`: the response is known but not
///   when it arrived; the operation must be linearized somewhere after
///   `call_ns`.
///
/// Operations known to have failed (the format's `fail`) are not operations of
/// the history at all. Values are integers; [`parse_history`] maps string values
/// to integers one to one (see [`History::value_names`]).
///
/// `process` is not used by [`check()`] (only real time matters); it is kept so
/// that histories round-trip through [`to_jsonl`] / [`parse_jsonl`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// The client process that issued the operation.
    pub process: u64,
    /// The key (register) the operation acts on.
    pub key: String,
    /// The request.
    pub input: Input,
    /// The response, or `None` if the outcome is unknown.
    pub output: Option<Output>,
    /// When the operation was invoked, in nanoseconds.
    pub call_ns: u64,
    /// When the response arrived, in nanoseconds, or `None` if it never did.
    pub return_ns: Option<u64>,
}

impl Operation {
    /// The same operation with its outcome unknown: it may take effect at any time after
    /// its call, or never. Every linearization of a history is also one of the history
    /// with any operation relaxed this way, which is what makes [`minimize`] sound.
    pub fn relaxed(&self) -> Operation {
        Operation { output: None, return_ns: None, ..self.clone() }
    }
}
