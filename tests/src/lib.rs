//! Cluster-level integration tests for rsl. The tests live in `tests/`; this library only
//! holds what they share: the simulator's smoke-test size and [`process::ProcessCluster`],
//! a ring of real `rsl-kv-server` processes, and [`fault`], the fault-injection runs of the
//! `rsl-fault` binary (`cargo xtask fault`).

pub mod fault;
pub mod process;

/// Seeds every cluster-level simulator test runs, enough to cover a spread of swarm options.
pub const SMOKE_SEEDS: u64 = 8;
