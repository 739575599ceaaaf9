//! Contracts: pre/postconditions and invariants that are checked in tests, in the
//! simulator and under the `contracts` feature, and compile to nothing in release.
//!
//! Three macros, one meaning each, so `cargo xtask contracts` can count the sites per
//! module:
//! - `precondition!(cond, "...")`: what a handler requires of its input and state;
//! - `postcondition!(cond, "...")`: what a handler guarantees when it returns;
//! - `invariant!(cond, "...")`: what holds between any two steps.
//!
//! Invariants whose violation means lost or divergent data (a promise going down, a chosen
//! value changing, a second value for one `(ballot, slot)`) are plain always-on `assert!`s
//! instead, at the write and again at the read.

/// Whether contracts are compiled into this build.
pub const ENABLED: bool = cfg!(any(test, feature = "contracts"));

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
