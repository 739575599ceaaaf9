//! Cluster-level integration tests for rsl. The tests live in `tests/`; this library only
//! holds what they share: the simulator's smoke-test size and [`process::ProcessCluster`],
//! a ring of real `rsl-kv-server` processes.

pub mod process;

/// Seeds every cluster-level simulator test runs, enough to cover a spread of swarm options.
pub const SMOKE_SEEDS: u64 = 8;
