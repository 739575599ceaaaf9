//! `rsl-sim`: a deterministic, single-threaded simulator of whole rsl rings.
//!
//! Each run is one seed: it draws its options (cluster size aside, every fault mix and
//! protocol setting), builds replicas of the real `rsl-core` (with contracts on), and
//! drives them through a simulated network, simulated disks, crashes and restarts, and
//! clients issuing reads and writes against a key-value state machine. Nothing reads a
//! clock or the operating system's entropy, so a failing seed replays exactly.
//!
//! ```
//! use rsl_sim::{options::Options, run_seed};
//!
//! let outcome = run_seed(1, Options::from_seed(1, 3, None));
//! assert!(outcome.failure.is_none(), "{:?}", outcome.failure);
//! ```

pub mod checkers;
pub mod cluster;
pub mod kv;
pub mod matrix;
pub mod options;
pub mod rng;

use cluster::{Outcome, Simulation};
pub use matrix::{mutation_name, MUTATIONS};
use options::Options;

/// Runs one seed with the given options, catching a panic (a failed assertion or
/// contract inside the core) as a failure of the `assertion` checker.
pub fn run_seed(seed: u64, options: Options) -> Outcome {
    let result =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Simulation::new(seed, options).run()));
    match result {
        Ok(outcome) => outcome,
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "non-string panic".into());
            Outcome {
                seed,
                failure: Some(checkers::Failure::new("assertion", 0, message)),
                stats: cluster::RunStats::default(),
            }
        }
    }
}

/// The command that replays `seed`.
pub fn replay_command(seed: u64, replicas: usize, mutation: Option<rsl_core::Mutation>) -> String {
    let mut command = format!("cargo xtask sim --seed {seed} --replicas {replicas}");
    if let Some(mutation) = mutation {
        command.push_str(&format!(" --mutation {}", mutation_name(mutation)));
    }
    command
}
