//! Cluster-level integration tests for rsl. The tests live in `tests/`; this library only
//! holds what they share: the simulator's smoke-test size, [`process::ProcessCluster`], a
//! ring of real `rsl-kv-server` processes, [`server`], which finds the shipped
//! `rsl-kv-server` they run, and [`fault`], the fault-injection runs of the `rsl-fault`
//! binary (`cargo xtask fault`).

pub mod fault;
pub mod process;
pub mod server;

/// Seeds every cluster-level simulator test runs, enough to cover a spread of swarm options.
pub const SMOKE_SEEDS: u64 = 8;
