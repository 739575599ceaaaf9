//! `cargo xtask check-history`: build the linearizability checker in release and run it on
//! a history file, passing its exit code through.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::build;
use crate::process::{ArgList, Cmd};

/// Arguments of `cargo xtask check-history`.
#[derive(Debug, Clone, Default, Args)]
pub struct CheckHistoryArgs {
    /// The history: JSON lines, one event per line (see docs/TESTING.md)
    #[arg(value_name = "FILE", required_unless_present = "self_test")]
    pub file: Option<PathBuf>,
    /// Print the verdict as one JSON object on stdout
    #[arg(long)]
    pub json: bool,
    /// Give up after this many seconds (exit code 3, "unknown")
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,
    /// Give up on a key after this many search steps (exit code 3, "unknown")
    #[arg(long, value_name = "N")]
    pub max_steps: Option<u64>,
    /// Instead of checking a file, test the checker in release: generated ten-minute
    /// histories of ten clients must check within a minute, and a stale read planted
    /// in each must be caught (the figures are printed)
    #[arg(long, conflicts_with_all = ["file", "json", "timeout", "max_steps"])]
    pub self_test: bool,
}

impl CheckHistoryArgs {
    /// The command line for `rsl-check-history`, with FILE made absolute (the checker
    /// runs from the workspace root, the user may not).
    pub fn to_args(&self) -> Result<Vec<OsString>> {
        let Some(file) = &self.file else {
            bail!("no history FILE given");
        };
        let file = std::path::absolute(file).with_context(|| format!("resolving {}", file.display()))?;
        Ok(ArgList::new()
            .arg(file)
            .switch("--json", self.json)
            .value("--timeout", self.timeout)
            .value("--max-steps", self.max_steps)
            .into_vec())
    }
}

/// Builds `rsl-check-history` in release and runs it; a verdict other than
/// "linearizable" is a `CommandFailed` carrying the checker's exit code (1 not
/// linearizable, 2 malformed, 3 unknown).
pub fn run(args: &CheckHistoryArgs) -> Result<()> {
    if args.self_test {
        return Cmd::cargo()
            .args(["test", "--release", "-p", "rsl-check", "--test", "generated", "--", "--nocapture"])
            .run()
            .context("the checker's release test failed");
    }
    let command_line = args.to_args()?;
    let [binary] = build::release_binaries("rsl-check", ["rsl-check-history"])?;
    Cmd::new(&binary).args(command_line).run().context("the checker did not find the history linearizable (exit code 1: not linearizable, 2: malformed, 3: unknown)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_arguments_through_with_an_absolute_file() {
        let plain = CheckHistoryArgs { file: Some("h.jsonl".into()), ..CheckHistoryArgs::default() };
        let expected = std::env::current_dir().unwrap().join("h.jsonl");
        assert_eq!(plain.to_args().unwrap(), [expected.to_str().unwrap()]);
        let all = CheckHistoryArgs {
            file: Some("/tmp/h.jsonl".into()),
            json: true,
            timeout: Some(2.5),
            max_steps: Some(1000),
            self_test: false,
        };
        assert_eq!(
            all.to_args().unwrap(),
            ["/tmp/h.jsonl", "--json", "--timeout", "2.5", "--max-steps", "1000"]
        );
        assert!(CheckHistoryArgs::default().to_args().is_err());
    }
}
