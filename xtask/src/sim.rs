//! `cargo xtask sim`: build the simulator in release and run it, streaming its output.

use std::ffi::OsString;

use anyhow::{Context, Result};
use clap::Args;

use crate::build;
use crate::process::{ArgList, Cmd};

/// Seeds run when `--seeds` is not given.
pub const DEFAULT_SEEDS: u64 = 1000;

/// Arguments passed through to `rsl-sim`.
#[derive(Debug, Clone, Default, Args)]
pub struct SimArgs {
    /// Number of seeds to run [default: 1000; 1 when only --seed is given]
    #[arg(long, value_name = "N")]
    pub seeds: Option<u64>,
    /// Run this seed (to replay a failure, use the command the failure printed)
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// First seed of the range of --seeds seeds
    #[arg(long, value_name = "F")]
    pub first_seed: Option<u64>,
    /// Cluster size
    #[arg(long, value_name = "3|5", value_parser = parse_replicas)]
    pub replicas: Option<u8>,
    /// Switch on a seeded protocol bug in every replica, to check that the checkers catch it
    #[arg(long, value_name = "NAME")]
    pub mutation: Option<String>,
    /// Worker threads running seeds in parallel (each seed is still single-threaded)
    #[arg(long, value_name = "T")]
    pub threads: Option<u32>,
    /// With --mutation (a name or `all`): stop at the first seed a checker fails and
    /// succeed only if one does within --seeds
    #[arg(long)]
    pub until_caught: bool,
    /// Every seed tests the read lease: long leases, clocks at the drift bound, the primary
    /// isolated with the clocks skewed against it (the within-bound counterpart of
    /// --drift-beyond-bound; run 100,000 seeds of it by hand)
    #[arg(long, conflicts_with_all = ["mutation", "drift_beyond_bound"])]
    pub press_lease: bool,
    /// The negative control: as --press-lease with clocks drifting beyond the bound the
    /// replicas assume; with --until-caught it succeeds only on a linearizability violation
    #[arg(long, conflicts_with = "mutation")]
    pub drift_beyond_bound: bool,
    /// Further arguments, after `--`, passed to rsl-sim unchanged
    #[arg(last = true, value_name = "RSL_SIM_ARGS")]
    pub extra: Vec<OsString>,
}

fn parse_replicas(value: &str) -> Result<u8, String> {
    match value {
        "3" => Ok(3),
        "5" => Ok(5),
        _ => Err(format!("expected 3 or 5 replicas, found `{value}`")),
    }
}

impl SimArgs {
    /// The command line for `rsl-sim`.
    pub fn to_args(&self) -> Vec<OsString> {
        let seeds = match (self.seeds, self.seed) {
            (Some(seeds), _) => seeds,
            (None, Some(_)) => 1,
            (None, None) => DEFAULT_SEEDS,
        };
        ArgList::new()
            .arg("--seeds")
            .arg(seeds.to_string())
            .value("--seed", self.seed)
            .value("--first-seed", self.first_seed)
            .value("--replicas", self.replicas)
            .value("--mutation", self.mutation.as_ref())
            .value("--threads", self.threads)
            .switch("--until-caught", self.until_caught)
            .switch("--press-lease", self.press_lease)
            .switch("--drift-beyond-bound", self.drift_beyond_bound)
            .args(self.extra.iter().cloned())
            .into_vec()
    }
}

/// Builds `rsl-sim` in release, then runs it with `args`. Its output streams to the
/// terminal; a failing run is a `CommandFailed` carrying the simulator's exit code.
pub fn run(args: &SimArgs) -> Result<()> {
    let [binary] = build::release_binaries("rsl-sim", ["rsl-sim"])?;
    Cmd::new(&binary).args(args.to_args()).run().context("the simulator run failed (see its output above)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_arguments_through() {
        assert_eq!(SimArgs::default().to_args(), ["--seeds", "1000"]);
        let replay = SimArgs { seed: Some(42), replicas: Some(5), ..SimArgs::default() };
        assert_eq!(replay.to_args(), ["--seeds", "1", "--seed", "42", "--replicas", "5"]);
        let all = SimArgs {
            seeds: Some(10),
            seed: None,
            first_seed: Some(7),
            replicas: Some(3),
            mutation: Some("accept-below-promise".into()),
            threads: Some(2),
            until_caught: true,
            extra: vec!["--verbose".into()],
            ..SimArgs::default()
        };
        assert_eq!(
            all.to_args(),
            [
                "--seeds",
                "10",
                "--first-seed",
                "7",
                "--replicas",
                "3",
                "--mutation",
                "accept-below-promise",
                "--threads",
                "2",
                "--until-caught",
                "--verbose"
            ]
        );
    }

    #[test]
    fn the_lease_runs_pass_their_switches() {
        let control = SimArgs { drift_beyond_bound: true, until_caught: true, ..SimArgs::default() };
        assert_eq!(control.to_args(), ["--seeds", "1000", "--until-caught", "--drift-beyond-bound"]);
        let pressed = SimArgs { press_lease: true, seeds: Some(100_000), ..SimArgs::default() };
        assert_eq!(pressed.to_args(), ["--seeds", "100000", "--press-lease"]);
    }

    #[test]
    fn replicas_are_three_or_five() {
        assert_eq!(parse_replicas("3"), Ok(3));
        assert_eq!(parse_replicas("5"), Ok(5));
        assert!(parse_replicas("4").unwrap_err().contains("expected 3 or 5"));
    }
}
