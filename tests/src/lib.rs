//! Cluster-level integration tests for rsl. The tests live in `tests/`; this library only
//! holds what they share.

/// Seeds every cluster-level simulator test runs, enough to cover a spread of swarm options.
pub const SMOKE_SEEDS: u64 = 8;
