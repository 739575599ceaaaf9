//! A simulated replica's clock: true time read at a rate some parts per million off, a rate
//! that may change at any moment (drift) without the reading ever jumping or going back.
//!
//! Within a run's drift bound every rate stays within half the bound either way, so any two
//! clocks differ in rate by at most the bound the replicas assume (`clock_drift_max_ppm`);
//! the negative control (`Options::drift_beyond_bound`) breaks exactly that.

use rsl_core::Time;

/// One replica's clock, piecewise linear in true time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Clock {
    /// True time (microseconds) of the last rate change.
    since_true: u64,
    /// The clock's reading then.
    since_local: u64,
    /// Parts per million the clock runs fast (negative: slow) since then.
    rate_ppm: i64,
}

impl Clock {
    /// A clock that has run at `rate_ppm` since true time zero.
    pub(super) fn at_rate(rate_ppm: i64) -> Clock {
        Clock { since_true: 0, since_local: 0, rate_ppm }
    }

    /// The reading at true time `now` (never before the last rate change).
    pub(super) fn local(&self, now: u64) -> Time {
        let elapsed = now.saturating_sub(self.since_true) as i128;
        let local = self.since_local as i128 + elapsed + elapsed * self.rate_ppm as i128 / 1_000_000;
        Time(local.max(0) as u64)
    }

    /// The earliest true time at which the clock reads `local` or later (the last rate
    /// change, for a reading already passed then).
    pub(super) fn global(&self, local: Time) -> u64 {
        if local.0 <= self.since_local {
            return self.since_true;
        }
        let ahead = (local.0 - self.since_local) as i128;
        let scale = 1_000_000 + self.rate_ppm as i128;
        let mut global = self.since_true + (ahead * 1_000_000 / scale).max(0) as u64;
        while self.local(global) < local {
            global += 1;
        }
        global
    }

    /// From true time `now` on, the clock runs at `rate_ppm`; its reading is continuous.
    pub(super) fn set_rate(&mut self, now: u64, rate_ppm: i64) {
        let now = now.max(self.since_true);
        self.since_local = self.local(now).0;
        self.since_true = now;
        self.rate_ppm = rate_ppm;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_runs_at_its_rate_and_never_jumps_when_the_rate_changes() {
        let mut clock = Clock::at_rate(100_000);
        assert_eq!(clock.local(1_000_000), Time(1_100_000));
        assert_eq!(clock.global(Time(1_100_000)), 1_000_000);
        clock.set_rate(1_000_000, -200_000);
        assert_eq!(clock.local(1_000_000), Time(1_100_000));
        assert_eq!(clock.local(2_000_000), Time(1_900_000));
        assert_eq!(clock.global(Time(1_900_000)), 2_000_000);
        // A reading already passed at the change maps to the change.
        assert_eq!(clock.global(Time(5)), 1_000_000);
    }

    #[test]
    fn global_is_the_earliest_true_time_with_that_reading() {
        for rate in [-300_000, -7, 0, 13, 250_000] {
            let mut clock = Clock::at_rate(rate);
            clock.set_rate(777, rate / 2);
            for local in [1_000u64, 123_457, 9_999_999] {
                let global = clock.global(Time(local));
                assert!(clock.local(global) >= Time(local), "rate {rate} local {local}");
                assert!(global == 777 || clock.local(global - 1) < Time(local), "rate {rate} local {local}");
            }
        }
    }
}
