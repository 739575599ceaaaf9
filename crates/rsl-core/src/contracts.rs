//! Checks in two tiers, after TigerBeetle's: always-on safety assertions, and contracts
//! that only tests, the simulator and `cargo xtask contracts` pay for.
//!
//! - Tier 1, `safety!(Rule, cond, "...")`: the rules whose violation loses or forks data
//!   (the five [`Rule`]s). Checked in every build, release included, so a bug (or a caller
//!   that breaks the call order) stops the replica before it writes or answers something
//!   wrong. Each check is O(1), at the write and, where there is one, at the read; the
//!   panic names the rule.
//! - Tier 2, under the `contracts` feature (and in this crate's unit tests): three macros,
//!   one meaning each, so `cargo xtask contracts` can count the sites per module:
//!   - `precondition!(cond, "...")`: what a handler requires of its input and state;
//!   - `postcondition!(cond, "...")`: what a handler guarantees when it returns;
//!   - `invariant!(cond, "...")`: what holds between any two steps (the O(n) checks of
//!     the log, the persistence queue and the role run after every input).
//!
//!   In a build without the feature they compile to nothing.

use std::fmt;

/// Whether the tier-2 contracts are compiled into this build.
pub const ENABLED: bool = cfg!(any(test, feature = "contracts"));

/// A rule whose violation loses or forks data; each is checked by always-on assertions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Only chosen slots are truncated from the log.
    TruncateOnlyChosen,
    /// An acceptor holds at most one value per `(ballot, slot)`.
    OneValuePerBallotAndSlot,
    /// A promise never decreases, and nothing is accepted below it.
    PromiseNeverDecreases,
    /// Nothing is answered, counted or applied before the write it depends on is durable.
    DurableBeforeAnswered,
    /// A chosen value never changes.
    ChosenValueImmutable,
}

impl Rule {
    /// The rule as a sentence.
    pub const fn statement(self) -> &'static str {
        match self {
            Rule::TruncateOnlyChosen => "only chosen slots are truncated",
            Rule::OneValuePerBallotAndSlot => "one value per (ballot, slot)",
            Rule::PromiseNeverDecreases => "a promise never decreases, and nothing is accepted below it",
            Rule::DurableBeforeAnswered => "nothing is answered or applied before it is durable",
            Rule::ChosenValueImmutable => "a chosen value never changes",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.statement())
    }
}

/// Stops the replica: `rule` was about to be broken. Out of line and cold, so a check
/// costs a compare and a branch on the hot path.
#[cold]
#[inline(never)]
#[track_caller]
#[doc(hidden)]
pub fn violated(rule: Rule, details: fmt::Arguments<'_>) -> ! {
    panic!("safety rule violated ({rule}): {details}")
}

/// Checks a tier-1 rule in every build: `safety!(RuleName, cond, "details {}", x)`.
#[macro_export]
#[doc(hidden)]
macro_rules! safety {
    ($rule:ident, $cond:expr, $($arg:tt)+) => {
        if !$cond {
            $crate::contracts::violated($crate::contracts::Rule::$rule, format_args!($($arg)+))
        }
    };
}

/// Checks one contract of kind `$kind` when contracts are enabled: the body of the three
/// macros below.
#[macro_export]
#[doc(hidden)]
macro_rules! contract {
    ($kind:literal, $cond:expr) => {
        if $crate::contracts::ENABLED {
            assert!($cond, concat!($kind, " failed: ", stringify!($cond)));
        }
    };
    ($kind:literal, $cond:expr, $($arg:tt)+) => {
        if $crate::contracts::ENABLED {
            assert!($cond, "{} failed: {}", $kind, format_args!($($arg)+));
        }
    };
}

/// Checks a precondition when contracts are enabled.
#[macro_export]
#[doc(hidden)]
macro_rules! precondition {
    ($($contract:tt)+) => {
        $crate::contract!("precondition", $($contract)+)
    };
}

/// Checks a postcondition when contracts are enabled.
#[macro_export]
#[doc(hidden)]
macro_rules! postcondition {
    ($($contract:tt)+) => {
        $crate::contract!("postcondition", $($contract)+)
    };
}

/// Checks an invariant when contracts are enabled.
#[macro_export]
#[doc(hidden)]
macro_rules! invariant {
    ($($contract:tt)+) => {
        $crate::contract!("invariant", $($contract)+)
    };
}

#[cfg(test)]
mod tests {
    #[test]
    #[should_panic(expected = "safety rule violated (only chosen slots are truncated): below 7")]
    fn a_violation_names_its_rule() {
        let below = 7;
        safety!(TruncateOnlyChosen, below < 3, "below {below}");
    }

    #[test]
    fn a_kept_rule_is_silent() {
        safety!(ChosenValueImmutable, 1 + 1 == 2, "arithmetic");
    }
}
