//! `cargo xtask fuzz`: the fuzz targets of `fuzz/` (a cargo-fuzz package outside the
//! workspace) under libFuzzer, with the nightly toolchain cargo-fuzz needs.
//!
//! `--smoke` runs every target for a short, bounded time (CI); otherwise one target
//! (`--target`) or all, for `--seconds` or `--runs` each (longer runs by hand). cargo-fuzz
//! is installed with `cargo install cargo-fuzz --locked` when missing; a missing nightly
//! toolchain is an error that says how to install it. Each target starts from its working
//! corpus (`fuzz/corpus/<target>`, not committed) and its committed seeds
//! (`fuzz/seeds/<target>`). A crash stops nothing else: every target runs, then the crashes
//! are listed with the command that reproduces each.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::process::{workspace_root, Cmd};

/// Seconds each target runs in `--smoke`.
pub const SMOKE_SECONDS: u64 = 20;
/// Seconds each target runs without `--smoke`, `--seconds` or `--runs`.
pub const DEFAULT_SECONDS: u64 = 600;
/// libFuzzer's bound on one input's run: a slower input is reported as a hang.
const INPUT_TIMEOUT_SECONDS: u64 = 20;
/// The toolchain cargo-fuzz builds with (`-Z` flags for the sanitizer coverage passes).
const TOOLCHAIN: &str = "+nightly";
/// Without a sanitizer: the targets run safe Rust decoders, where a bug is a panic, which
/// libFuzzer catches by itself; this keeps them several times faster. Overflow checks and
/// debug assertions stay on (cargo-fuzz's default build).
const SANITIZER: &str = "none";

#[derive(Debug, Clone, Default, Args)]
pub struct FuzzArgs {
    /// Every target for 20 seconds (as CI runs it); fails if any target crashes
    #[arg(long, conflicts_with_all = ["target", "seconds", "runs"])]
    pub smoke: bool,
    /// Run only this target (`cargo fuzz list --fuzz-dir fuzz` lists them) [default: all]
    #[arg(long, value_name = "NAME")]
    pub target: Option<String>,
    /// Seconds per target [default: 600]
    #[arg(long, value_name = "S", conflicts_with = "runs")]
    pub seconds: Option<u64>,
    /// Executions per target instead of a time bound
    #[arg(long, value_name = "N")]
    pub runs: Option<u64>,
}

/// How long each target runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bound {
    Seconds(u64),
    Runs(u64),
}

impl Bound {
    fn libfuzzer_flag(self) -> String {
        match self {
            Bound::Seconds(seconds) => format!("-max_total_time={seconds}"),
            Bound::Runs(runs) => format!("-runs={runs}"),
        }
    }
}

impl FuzzArgs {
    fn bound(&self) -> Bound {
        match (self.smoke, self.seconds, self.runs) {
            (true, _, _) => Bound::Seconds(SMOKE_SECONDS),
            (false, _, Some(runs)) => Bound::Runs(runs),
            (false, seconds, None) => Bound::Seconds(seconds.unwrap_or(DEFAULT_SECONDS)),
        }
    }
}

/// What one target's run printed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct RunReport {
    /// Executions, from libFuzzer's `Done N runs in S second(s)`.
    runs: Option<u64>,
    /// Where libFuzzer wrote the input that crashed (`Test unit written to PATH`).
    crash_input: Option<String>,
}

impl RunReport {
    /// Reads one line of libFuzzer's output.
    fn read_line(&mut self, line: &str) {
        if let Some(rest) = line.strip_prefix("Done ") {
            if let Some((runs, _)) = rest.split_once(" runs in ") {
                self.runs = runs.trim().parse().ok();
            }
        }
        if let Some((_, path)) = line.split_once("Test unit written to ") {
            self.crash_input = Some(path.trim().to_owned());
        }
    }
}

/// One target's outcome.
#[derive(Debug)]
struct Outcome {
    target: String,
    elapsed: Duration,
    report: RunReport,
    crashed: bool,
}

pub fn run(args: &FuzzArgs) -> Result<()> {
    let fuzz_dir = workspace_root().join("fuzz");
    ensure_nightly()?;
    ensure_cargo_fuzz()?;
    let targets = list_targets()?;
    let targets = match &args.target {
        None => targets,
        Some(name) if targets.contains(name) => vec![name.clone()],
        Some(name) => bail!("no fuzz target `{name}`; the targets are: {}", targets.join(", ")),
    };
    fuzz_cmd("build").run().context("building the fuzz targets")?;
    let bound = args.bound();
    let mut outcomes = Vec::new();
    for target in &targets {
        outcomes.push(run_target(&fuzz_dir, target, bound)?);
    }
    eprintln!();
    eprintln!("fuzz: {} target(s), {}", outcomes.len(), bound.libfuzzer_flag());
    for outcome in &outcomes {
        let runs = outcome.report.runs.map_or_else(|| "?".to_owned(), |runs| runs.to_string());
        let result = if outcome.crashed { "CRASHED" } else { "ok" };
        eprintln!(
            "  {:<22} {:>12} runs in {:>6.1}s  {result}",
            outcome.target,
            runs,
            outcome.elapsed.as_secs_f64()
        );
    }
    let crashed: Vec<&Outcome> = outcomes.iter().filter(|outcome| outcome.crashed).collect();
    if crashed.is_empty() {
        return Ok(());
    }
    eprintln!();
    for outcome in &crashed {
        match &outcome.report.crash_input {
            Some(input) => eprintln!(
                "fuzz: {} crashed; reproduce with:\n  {}",
                outcome.target,
                reproduce_command(&outcome.target, input)
            ),
            None => eprintln!(
                "fuzz: {} failed without writing a crashing input (see its output above)",
                outcome.target
            ),
        }
    }
    bail!("{} of {} fuzz target(s) crashed", crashed.len(), outcomes.len())
}

/// `cargo +nightly fuzz SUBCOMMAND --fuzz-dir fuzz`, run from the workspace root. The
/// fuzz package keeps its own target directory (`fuzz/target`), whatever the caller's
/// `CARGO_TARGET_DIR`; the rustup proxy picks the toolchain, not the cargo that runs xtask.
fn fuzz_cmd(subcommand: &str) -> Cmd {
    let cmd = Cmd::new("cargo").arg(TOOLCHAIN).args(["fuzz", subcommand, "--fuzz-dir", "fuzz"]);
    let cmd = match subcommand {
        "build" | "run" => cmd.args(["--sanitizer", SANITIZER]),
        _ => cmd,
    };
    cmd.env_remove("CARGO_TARGET_DIR").env_remove("RUSTC").env_remove("RUSTDOC")
}

/// The command that replays `input` on `target`.
fn reproduce_command(target: &str, input: &str) -> String {
    format!("cargo {TOOLCHAIN} fuzz run --fuzz-dir fuzz --sanitizer {SANITIZER} {target} {input}")
}

fn ensure_nightly() -> Result<()> {
    let found = Cmd::new("cargo").arg(TOOLCHAIN).arg("--version").env_remove("RUSTC").read();
    match found {
        Ok(version) => {
            eprintln!("fuzz: {}", version.trim());
            Ok(())
        }
        Err(error) => Err(error).context(
            "cargo-fuzz needs the nightly toolchain, and `cargo +nightly` does not run; install it with \
             `rustup toolchain install nightly --profile minimal` (rustup's `cargo` must be on PATH)",
        ),
    }
}

fn ensure_cargo_fuzz() -> Result<()> {
    if Cmd::new("cargo").args(["fuzz", "--version"]).succeeds() {
        return Ok(());
    }
    eprintln!("fuzz: cargo-fuzz is not installed; installing it");
    Cmd::new("cargo")
        .args(["install", "cargo-fuzz", "--locked"])
        .env_remove("CARGO_TARGET_DIR")
        .run()
        .context("installing cargo-fuzz (needs crates.io)")
}

/// The targets, as `cargo fuzz list` names them.
fn list_targets() -> Result<Vec<String>> {
    let listed = fuzz_cmd("list").read()?;
    let targets: Vec<String> =
        listed.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    if targets.is_empty() {
        bail!("`cargo fuzz list` found no fuzz targets in fuzz/");
    }
    Ok(targets)
}

/// Runs one target for `bound`, echoing libFuzzer's output (stderr) and reading it.
fn run_target(fuzz_dir: &Path, target: &str, bound: Bound) -> Result<Outcome> {
    let corpus = fuzz_dir.join("corpus").join(target);
    std::fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    let seeds = fuzz_dir.join("seeds").join(target);
    let mut dirs: Vec<PathBuf> = vec![corpus];
    if seeds.is_dir() {
        dirs.push(seeds);
    }
    let libfuzzer: Vec<OsString> = vec![
        bound.libfuzzer_flag().into(),
        format!("-timeout={INPUT_TIMEOUT_SECONDS}").into(),
        "-print_final_stats=1".into(),
    ];
    let cmd = fuzz_cmd("run").arg(target).args(dirs).arg("--").args(libfuzzer);
    eprintln!();
    eprintln!("==> fuzz {target}");
    eprintln!("$ {}", cmd.display());
    let started = Instant::now();
    let mut child = cmd
        .command()
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start `{}`", cmd.display()))?;
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut report = RunReport::default();
    for line in BufReader::new(stderr).lines() {
        let line = line.with_context(|| format!("reading the output of `{}`", cmd.display()))?;
        eprintln!("{line}");
        report.read_line(&line);
    }
    let status = child.wait().with_context(|| format!("waiting for `{}`", cmd.display()))?;
    Ok(Outcome { target: target.to_owned(), elapsed: started.elapsed(), report, crashed: !status.success() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_read_libfuzzer_output() {
        let mut report = RunReport::default();
        for line in [
            "#1048576\tpulse  cov: 1021 ft: 3610 corp: 342/26Kb exec/s: 52428 rss: 61Mb",
            "Done 1200345 runs in 21 second(s)",
        ] {
            report.read_line(line);
        }
        assert_eq!(report, RunReport { runs: Some(1_200_345), crash_input: None });
        report.read_line(
            "artifact_prefix='/w/fuzz/artifacts/kv_command/'; Test unit written to /w/fuzz/artifacts/kv_command/crash-0a1b",
        );
        assert_eq!(report.crash_input.as_deref(), Some("/w/fuzz/artifacts/kv_command/crash-0a1b"));
        assert_eq!(
            reproduce_command("kv_command", "/w/crash-0a1b"),
            "cargo +nightly fuzz run --fuzz-dir fuzz --sanitizer none kv_command /w/crash-0a1b"
        );
    }

    #[test]
    fn bounds_follow_the_flags() {
        let smoke = FuzzArgs { smoke: true, ..FuzzArgs::default() };
        assert_eq!(smoke.bound(), Bound::Seconds(SMOKE_SECONDS));
        assert_eq!(FuzzArgs::default().bound(), Bound::Seconds(DEFAULT_SECONDS));
        let runs = FuzzArgs { runs: Some(10_000_000), ..FuzzArgs::default() };
        assert_eq!(runs.bound().libfuzzer_flag(), "-runs=10000000");
        let seconds = FuzzArgs { seconds: Some(90), ..FuzzArgs::default() };
        assert_eq!(seconds.bound().libfuzzer_flag(), "-max_total_time=90");
    }
}
