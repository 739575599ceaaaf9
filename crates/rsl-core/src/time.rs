//! Caller-supplied time. The core never reads a clock: every input carries `now`.

use std::fmt;

/// A point in time in microseconds since an arbitrary, caller-chosen epoch. Only
/// differences matter; the caller must never move it backwards for one replica.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub u64);

impl Time {
    /// `self` plus `ms` milliseconds.
    #[must_use]
    pub fn plus_ms(self, ms: u64) -> Time {
        Time(self.0.saturating_add(ms.saturating_mul(1000)))
    }

    /// `self` plus `us` microseconds.
    #[must_use]
    pub fn plus_us(self, us: u64) -> Time {
        Time(self.0.saturating_add(us))
    }

    /// Microseconds from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Time) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}s", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_arithmetic_saturates() {
        assert_eq!(Time(5).plus_ms(2), Time(2005));
        assert_eq!(Time(5).plus_us(2), Time(7));
        assert_eq!(Time(u64::MAX).plus_ms(1), Time(u64::MAX));
        assert_eq!(Time(3).since(Time(5)), 0);
        assert_eq!(Time(5).since(Time(3)), 2);
        assert_eq!(Time(1_500_000).to_string(), "1.500000s");
    }
}
