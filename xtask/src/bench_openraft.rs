//! `cargo xtask bench --peer openraft`: rsl's facade against openraft in one process.
//!
//! The comparison lives in its own package, `benches/openraft` (`rsl-bench-openraft`),
//! which the workspace excludes so that no workspace build, test or clippy run compiles
//! openraft. This builds it in release on demand, runs its sweep (three members per
//! system, in-memory network and logs, empty requests, C closed-loop client tasks; see
//! that package's documentation), and then treats its JSON as the other bench results:
//! compared with a saved baseline (`benches/baseline-openraft.json` unless `--baseline`
//! names another), written with `--json`, saved with `--save-baseline`.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::bench::{compare_with_baseline, BenchArgs};
use crate::build;
use crate::process::{workspace_root, Cmd};

/// The harness package's manifest, from the workspace root.
const MANIFEST: &str = "benches/openraft/Cargo.toml";
/// The baseline of this comparison when `--baseline` is not given.
const BASELINE_DEFAULT: &str = "benches/baseline-openraft.json";
/// Client tasks at each point when `--peer-clients` is not given.
const CLIENTS_DEFAULT: [u32; 5] = [1, 64, 256, 1024, 4096];
/// Requests per run with `--quick` (unless `--requests` asks for fewer).
const QUICK_REQUESTS: u64 = 20_000;

/// The harness's command line for `args`, writing its JSON to `json`.
fn harness_args(args: &BenchArgs, json: &Path) -> Result<Vec<OsString>> {
    let clients: Vec<u32> =
        if args.peer_clients.is_empty() { CLIENTS_DEFAULT.to_vec() } else { args.peer_clients.clone() };
    if clients.contains(&0) {
        bail!("--peer-clients: every point needs at least 1 client task, got {clients:?}");
    }
    if args.requests == 0 {
        bail!("--requests must be at least 1");
    }
    let (requests, runs) =
        if args.quick { (args.requests.min(QUICK_REQUESTS), 1) } else { (args.requests, args.runs) };
    let clients = clients.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let mut line: Vec<OsString> = ["--clients", &clients, "--requests", &requests.to_string()]
        .into_iter()
        .chain(["--runs", &runs.to_string(), "--json"])
        .map(OsString::from)
        .collect();
    line.push(json.as_os_str().to_owned());
    if let Some(apply_on) = &args.apply_on {
        line.extend(["--rsl-apply-on", apply_on].map(OsString::from));
    }
    line.extend(args.peer_args.iter().map(OsString::from));
    Ok(line)
}

/// Runs the comparison.
pub fn run(args: &BenchArgs) -> Result<()> {
    let root = workspace_root();
    let [harness] = build::release_binaries_of_manifest(&root.join(MANIFEST), ["rsl-bench-openraft"])?;
    // Absolute: the harness runs from the workspace root, this process maybe elsewhere.
    let json = match &args.json {
        Some(path) => std::path::absolute(path).with_context(|| format!("--json {}", path.display()))?,
        None => std::env::temp_dir().join(format!("rsl-bench-openraft-{}.json", std::process::id())),
    };
    let result = Cmd::new(&harness).args(harness_args(args, &json)?).run();
    let text =
        fs::read_to_string(&json).with_context(|| format!("reading the harness's report {}", json.display()));
    if args.json.is_none() {
        let _ = fs::remove_file(&json);
    }
    result?;
    let text = text?;
    let report: Value = serde_json::from_str(&text).with_context(|| format!("parsing {}", json.display()))?;
    let baseline_path: PathBuf = args.baseline.clone().unwrap_or_else(|| root.join(BASELINE_DEFAULT));
    compare_with_baseline(&report, &baseline_path, args.baseline.is_some())?;
    if args.save_baseline {
        fs::write(&baseline_path, &text).with_context(|| format!("writing {}", baseline_path.display()))?;
        eprintln!("bench: saved the baseline {}", baseline_path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn line(words: &[&str]) -> Result<Vec<String>> {
        let cli = Cli::try_parse_from(std::iter::once("bench").chain(words.iter().copied()))?;
        let line = harness_args(&cli.bench, Path::new("/tmp/out.json"))?;
        Ok(line.into_iter().map(|word| word.into_string().unwrap()).collect())
    }

    #[test]
    fn the_harness_gets_the_sweep_the_runs_and_the_extra_arguments() {
        assert_eq!(
            line(&["--peer", "openraft"]).unwrap(),
            [
                "--clients",
                "1,64,256,1024,4096",
                "--requests",
                "200000",
                "--runs",
                "3",
                "--json",
                "/tmp/out.json"
            ]
        );
        let quick =
            line(&["--peer", "openraft", "--quick", "--peer-clients", "1,8", "--", "--server-workers", "2"]);
        assert_eq!(
            quick.unwrap(),
            [
                "--clients",
                "1,8",
                "--requests",
                "20000",
                "--runs",
                "1",
                "--json",
                "/tmp/out.json",
                "--server-workers",
                "2"
            ]
        );
        let explicit = line(&["--peer", "openraft", "--requests", "5000", "--runs", "2"]).unwrap();
        assert_eq!(explicit[3], "5000");
        assert_eq!(explicit[5], "2");
        let ring_task =
            line(&["--peer", "openraft", "--apply-on", "ring-task", "--", "--server-workers", "2"]);
        assert_eq!(ring_task.unwrap()[8..], ["--rsl-apply-on", "ring-task", "--server-workers", "2"]);
    }

    #[test]
    fn an_empty_point_or_no_requests_is_refused() {
        let error = line(&["--peer", "openraft", "--peer-clients", "0"]).unwrap_err().to_string();
        assert!(error.contains("--peer-clients"), "{error}");
        let error = line(&["--peer", "openraft", "--requests", "0"]).unwrap_err().to_string();
        assert!(error.contains("--requests"), "{error}");
    }
}
