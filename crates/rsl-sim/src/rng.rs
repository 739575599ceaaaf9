//! The simulator's only source of randomness: the project's seeded generator, so every run
//! replays, with the draws a simulation needs.

use rsl_core::SplitMix64;

/// A seeded generator for schedules, faults and options.
#[derive(Clone, Debug)]
pub struct Rng(SplitMix64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(SplitMix64::new(seed))
    }

    /// A uniformly random `u64`.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        self.0.between(low, high)
    }

    /// Uniform index below `n` (n > 0).
    pub fn index(&mut self, n: usize) -> usize {
        assert!(n > 0, "an index below 0");
        self.0.below(n as u64) as usize
    }

    /// True with probability `p` (0.0..=1.0).
    pub fn chance(&mut self, p: f64) -> bool {
        self.0.chance(p)
    }

    /// A random probability in `low..high`.
    pub fn probability(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.0.unit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_from_seed() {
        let draw = |seed| {
            let mut r = Rng::new(seed);
            (0..10).map(|_| r.next_u64()).collect::<Vec<_>>()
        };
        assert_eq!(draw(42), draw(42));
        assert_ne!(draw(42), draw(43));
    }

    #[test]
    fn draws_stay_in_range() {
        let mut r = Rng::new(1);
        for _ in 0..10_000 {
            assert!(r.index(3) < 3);
            let p = r.probability(0.1, 0.2);
            assert!((0.1..0.2).contains(&p), "{p}");
        }
    }
}
