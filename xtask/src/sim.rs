//! `cargo xtask sim`: build the simulator in release and run it, streaming its output.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::process::Cmd;

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
        let mut args: Vec<OsString> = vec!["--seeds".into(), seeds.to_string().into()];
        let mut push = |flag: &str, value: Option<String>| {
            if let Some(value) = value {
                args.push(flag.into());
                args.push(value.into());
            }
        };
        push("--seed", self.seed.map(|v| v.to_string()));
        push("--first-seed", self.first_seed.map(|v| v.to_string()));
        push("--replicas", self.replicas.map(|v| v.to_string()));
        push("--mutation", self.mutation.clone());
        push("--threads", self.threads.map(|v| v.to_string()));
        if self.until_caught {
            args.push("--until-caught".into());
        }
        args.extend(self.extra.iter().cloned());
        args
    }
}

/// Builds `rsl-sim` in release, then runs it with `args`. Its output streams to the
/// terminal; a failing run is a `CommandFailed` carrying the simulator's exit code.
pub fn run(args: &SimArgs) -> Result<()> {
    let binary = build()?;
    Cmd::new(&binary).args(args.to_args()).run().context("the simulator run failed (see its output above)")
}

/// Builds the `rsl-sim` binary in release and returns its path, as cargo reports it (so
/// `CARGO_TARGET_DIR` and `build.target-dir` are honoured).
fn build() -> Result<PathBuf> {
    let cmd = Cmd::cargo().args([
        "build",
        "--release",
        "-p",
        "rsl-sim",
        "--bin",
        "rsl-sim",
        "--message-format=json-render-diagnostics",
    ]);
    let mut executable = None;
    cmd.read_lines(|line| {
        if let Some(path) = executable_of(line, "rsl-sim")? {
            executable = Some(path);
        }
        Ok(())
    })
    .context("building the simulator (release)")?;
    match executable {
        Some(path) => Ok(path),
        None => bail!("`{}` succeeded but reported no rsl-sim executable", cmd.display()),
    }
}

/// The executable path in a cargo `compiler-artifact` message for binary `name`, if `line`
/// is one.
pub(crate) fn executable_of(line: &str, name: &str) -> Result<Option<PathBuf>> {
    if !line.starts_with('{') {
        return Ok(None);
    }
    let message: serde_json::Value = serde_json::from_str(line)
        .with_context(|| format!("cargo printed a malformed JSON message: {line}"))?;
    let is_our_binary = message["reason"] == "compiler-artifact"
        && message["target"]["name"] == name
        && message["target"]["kind"].as_array().is_some_and(|kinds| kinds.iter().any(|kind| kind == "bin"));
    Ok(message["executable"].as_str().filter(|_| is_our_binary).map(PathBuf::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &SimArgs) -> Vec<String> {
        args.to_args().into_iter().map(|arg| arg.into_string().unwrap()).collect()
    }

    #[test]
    fn passes_arguments_through() {
        assert_eq!(strings(&SimArgs::default()), ["--seeds", "1000"]);
        let replay = SimArgs { seed: Some(42), replicas: Some(5), ..SimArgs::default() };
        assert_eq!(strings(&replay), ["--seeds", "1", "--seed", "42", "--replicas", "5"]);
        let all = SimArgs {
            seeds: Some(10),
            seed: None,
            first_seed: Some(7),
            replicas: Some(3),
            mutation: Some("accept-below-promise".into()),
            threads: Some(2),
            until_caught: true,
            extra: vec!["--verbose".into()],
        };
        assert_eq!(
            strings(&all),
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
    fn replicas_are_three_or_five() {
        assert_eq!(parse_replicas("3"), Ok(3));
        assert_eq!(parse_replicas("5"), Ok(5));
        assert!(parse_replicas("4").unwrap_err().contains("expected 3 or 5"));
    }

    #[test]
    fn finds_the_executable_in_cargo_messages() {
        let artifact = r#"{"reason":"compiler-artifact","target":{"name":"rsl-sim","kind":["bin"]},"executable":"/t/release/rsl-sim"}"#;
        assert_eq!(executable_of(artifact, "rsl-sim").unwrap(), Some(PathBuf::from("/t/release/rsl-sim")));
        let library =
            r#"{"reason":"compiler-artifact","target":{"name":"rsl_sim","kind":["lib"]},"executable":null}"#;
        assert_eq!(executable_of(library, "rsl-sim").unwrap(), None);
        let finished = r#"{"reason":"build-finished","success":true}"#;
        assert_eq!(executable_of(finished, "rsl-sim").unwrap(), None);
        assert_eq!(executable_of("not json", "rsl-sim").unwrap(), None);
    }
}
