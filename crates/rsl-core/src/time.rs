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
        self.plus(Micros::from_ms(ms))
    }

    /// `self` plus `us` microseconds.
    #[must_use]
    pub fn plus_us(self, us: u64) -> Time {
        self.plus(Micros(us))
    }

    /// `self` plus `length`, saturating.
    #[must_use]
    pub fn plus(self, length: Micros) -> Time {
        Time(self.0.saturating_add(length.0))
    }

    /// `self` minus `length`, saturating at the epoch.
    #[must_use]
    pub fn minus(self, length: Micros) -> Time {
        Time(self.0.saturating_sub(length.0))
    }

    /// The time from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Time) -> Micros {
        Micros(self.0.saturating_sub(earlier.0))
    }
}

/// A length of time in microseconds: the difference of two [`Time`]s, a timer's delay, a
/// lease.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Micros(pub u64);

impl Micros {
    /// No time at all.
    pub const ZERO: Micros = Micros(0);

    /// `ms` milliseconds, saturating.
    pub fn from_ms(ms: u64) -> Micros {
        Micros(ms.saturating_mul(1000))
    }
}

impl fmt::Display for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}us", self.0)
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
        assert_eq!(Time(3).since(Time(5)), Micros::ZERO);
        assert_eq!(Time(5).since(Time(3)), Micros(2));
        assert_eq!(Time(5).minus(Micros(7)), Time(0));
        assert_eq!(Time(5).minus(Micros::from_ms(0)).plus(Micros(1)), Time(6));
        assert_eq!(Time(1_500_000).to_string(), "1.500000s");
    }
}
