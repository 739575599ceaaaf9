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

/// Checks a precondition when contracts are enabled.
#[macro_export]
#[doc(hidden)]
macro_rules! precondition {
    ($cond:expr) => {
        if $crate::contracts::ENABLED {
            assert!($cond, concat!("precondition failed: ", stringify!($cond)));
        }
    };
    ($cond:expr, $($arg:tt)+) => {
        if $crate::contracts::ENABLED {
            assert!($cond, "precondition failed: {}", format_args!($($arg)+));
        }
    };
}

/// Checks a postcondition when contracts are enabled.
#[macro_export]
#[doc(hidden)]
macro_rules! postcondition {
    ($cond:expr) => {
        if $crate::contracts::ENABLED {
            assert!($cond, concat!("postcondition failed: ", stringify!($cond)));
        }
    };
    ($cond:expr, $($arg:tt)+) => {
        if $crate::contracts::ENABLED {
            assert!($cond, "postcondition failed: {}", format_args!($($arg)+));
        }
    };
}

/// Checks an invariant when contracts are enabled.
#[macro_export]
#[doc(hidden)]
macro_rules! invariant {
    ($cond:expr) => {
        if $crate::contracts::ENABLED {
            assert!($cond, concat!("invariant failed: ", stringify!($cond)));
        }
    };
    ($cond:expr, $($arg:tt)+) => {
        if $crate::contracts::ENABLED {
            assert!($cond, "invariant failed: {}", format_args!($($arg)+));
        }
    };
}
