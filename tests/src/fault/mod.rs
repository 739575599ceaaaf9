//! Fault-injection runs against a ring of five real `rsl-kv-server` processes: clients
//! record a history while nemeses, scheduled from a seed, partition, kill, pause, slow
//! down, corrupt and fill up the replicas, change the members, skew clocks, cut off and
//! freeze the clients; at the end everything is healed and the history is checked for
//! linearizability, acknowledged writes and agreement of the members.
//!
//! [`run`] does one run; the `rsl-fault` binary (and `cargo xtask fault`) drive it.
//! - [`nemesis`]: each kind of fault and the seeded schedule that picks the next one;
//! - [`runner`]: the run loop (start, inject, heal, final reads, convergence), and in
//!   `runner/inject.rs` and `runner/compose.rs` what starting and ending each fault does;
//! - [`skew`]: libfaketime, which runs a replica's clocks fast or slow;
//! - [`segment`]: the torn tails and flipped bytes the log nemeses leave in a journal;
//! - [`net`] (and [`proxy`]): how replicas are separated and cut apart (network namespaces
//!   as root, loopback and fault-injecting proxies otherwise);
//! - [`workload`] (and [`stream`]): the clients, and [`history`]: what they record and how
//!   it is checked;
//! - [`report`]: the figures of a run.

pub mod history;
pub mod nemesis;
pub mod net;
pub mod proxy;
pub mod report;
pub mod runner;
pub mod segment;
pub mod skew;
pub mod stream;
pub mod workload;

pub use nemesis::Nemesis;
pub use report::{percentile, Report, UNAVAILABLE_AFTER};
pub use runner::{run, RunOptions, REPLICAS};
