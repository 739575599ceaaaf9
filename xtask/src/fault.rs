//! `cargo xtask fault`: build the fault-injection runner (`rsl-fault`, a binary of the
//! rsl-tests package) and the shipped replica server (`rsl-kv-server` of rsl-kv) in release,
//! each in a cargo invocation of its own, then run it, streaming its output.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::build;
use crate::process::{ArgList, Cmd};

/// Arguments passed through to `rsl-fault`.
#[derive(Debug, Clone, Default, Args)]
pub struct FaultArgs {
    /// How long faults are injected per run, e.g. 90s or 10m [default: 60s; 6s per nemesis with --quick]
    #[arg(long, value_name = "D")]
    pub duration: Option<String>,
    /// Seed of the (first) run; a failing run prints the command that replays its schedule
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// Runs with seeds S, S+1, ...
    #[arg(long, value_name = "N")]
    pub runs: Option<u64>,
    /// The short variant CI runs: every nemesis in turn, 6 seconds each (at least 90)
    #[arg(long)]
    pub quick: bool,
    /// Keep every run's history (JSON lines) and report in DIR
    #[arg(long, value_name = "DIR")]
    pub history_dir: Option<PathBuf>,
    /// Comma-separated faults or `all` (see `--help` of rsl-fault)
    #[arg(long, value_name = "LIST")]
    pub nemesis: Option<String>,
    /// auto (netns as root, else loopback), netns or loopback
    #[arg(long, value_name = "MODE")]
    pub network: Option<String>,
    /// Further arguments, after `--`, passed to rsl-fault unchanged
    #[arg(last = true, value_name = "RSL_FAULT_ARGS")]
    pub extra: Vec<OsString>,
}

impl FaultArgs {
    /// The command line for `rsl-fault`.
    pub fn to_args(&self) -> Vec<OsString> {
        ArgList::new()
            .value("--duration", self.duration.as_ref())
            .value("--seed", self.seed)
            .value("--runs", self.runs)
            .value("--history-dir", self.history_dir.as_ref().map(|dir| dir.display()))
            .value("--nemesis", self.nemesis.as_ref())
            .value("--network", self.network.as_ref())
            .switch("--quick", self.quick)
            .args(self.extra.iter().cloned())
            .into_vec()
    }
}

/// Builds `rsl-kv-server` and `rsl-fault` in release, then runs `rsl-fault` against that
/// server (unless the arguments name another with `--server`); its exit code is passed on.
pub fn run(args: &FaultArgs) -> Result<()> {
    let server = build::shipped_server()?;
    let [binary] = build::release_binaries("rsl-tests", ["rsl-fault"])?;
    let mut cmd = Cmd::new(&binary);
    if !args
        .extra
        .iter()
        .any(|arg| arg.to_str().is_some_and(|arg| arg == "--server" || arg.starts_with("--server=")))
    {
        cmd = cmd.arg("--server").arg(&server);
    }
    cmd.args(args.to_args()).run().context("the fault run failed (see its output above)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_arguments_through() {
        assert!(FaultArgs::default().to_args().is_empty());
        let long = FaultArgs { duration: Some("10m".into()), seed: Some(7), ..FaultArgs::default() };
        assert_eq!(long.to_args(), ["--duration", "10m", "--seed", "7"]);
        let all = FaultArgs {
            duration: Some("90s".into()),
            seed: Some(1),
            runs: Some(3),
            quick: true,
            history_dir: Some(PathBuf::from("/tmp/h")),
            nemesis: Some("kill,pause".into()),
            network: Some("loopback".into()),
            extra: vec!["--clients".into(), "3".into()],
        };
        assert_eq!(
            all.to_args(),
            [
                "--duration",
                "90s",
                "--seed",
                "1",
                "--runs",
                "3",
                "--history-dir",
                "/tmp/h",
                "--nemesis",
                "kill,pause",
                "--network",
                "loopback",
                "--quick",
                "--clients",
                "3"
            ]
        );
    }
}
