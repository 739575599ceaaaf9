//! `rsl-bench-openraft`: rsl's facade against openraft on one workload, in one process.
//!
//! Both systems run three members in this process over an in-memory network with
//! in-memory logs, and C client tasks each send empty requests one after another to the
//! leader (the primary) until N requests are done: openraft driven the way its
//! `benchmarks/minimal` drives it (`Raft::client_write`), rsl through the facade a user
//! gets (`Ring::replicate`). For each C it prints requests per second and latency (mean,
//! p50, p99) of both and their ratio, and writes the points as JSON in the shape
//! `cargo xtask bench` uses (`--json`).
//!
//! Each run starts fresh clusters on fresh tokio runtimes: one for the members (16
//! workers by default, as in openraft's benchmark) and one for the client tasks (2). A
//! point's figures are the medians of its runs.
//!
//! Not part of the workspace: `cargo xtask bench --peer openraft` builds and runs it.

mod drive;
mod figures;
mod openraft_side;
mod rsl_side;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::{json, Value};
use tokio::runtime::Runtime;

use crate::drive::closed_loop;
use crate::figures::{Figures, Point};

/// The openraft release this package is built against (see Cargo.toml).
const OPENRAFT_VERSION: &str = "0.9.25";
/// The systems, as they are named in the output.
const RSL: &str = "rsl-facade";
const OPENRAFT: &str = "openraft";

/// rsl's facade against openraft: three members in one process, in-memory network and
/// logs, empty requests, C closed-loop client tasks sending to the leader.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Client tasks at each point of the sweep (comma-separated)
    #[arg(long, value_delimiter = ',', default_value = "1,64,256,1024,4096")]
    clients: Vec<u32>,
    /// Requests per run, shared evenly by the client tasks (each sends N / C, at least 1)
    #[arg(long, default_value_t = 200_000)]
    requests: u64,
    /// Runs per point and system (the figures are their medians)
    #[arg(long, default_value_t = 3)]
    runs: u32,
    /// Worker threads of the members' tokio runtime
    #[arg(long, default_value_t = 16)]
    server_workers: usize,
    /// Worker threads of the client tasks' tokio runtime
    #[arg(long, default_value_t = 2)]
    client_workers: usize,
    /// Systems to measure (comma-separated: rsl, openraft)
    #[arg(long, value_delimiter = ',', default_value = "rsl,openraft")]
    systems: Vec<String>,
    /// Write the points as JSON here
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
}

impl Args {
    /// Refuses a sweep or setting that cannot run, saying which.
    fn check(&self) -> Result<()> {
        if self.clients.is_empty() || self.clients.contains(&0) {
            bail!("--clients: every point needs at least 1 client task, got {:?}", self.clients);
        }
        if self.requests == 0 || self.runs == 0 {
            bail!("--requests and --runs must be at least 1, got {} and {}", self.requests, self.runs);
        }
        if self.server_workers == 0 || self.client_workers == 0 {
            bail!("--server-workers and --client-workers must be at least 1");
        }
        if self.systems.is_empty() {
            bail!("--systems: name at least one of rsl, openraft");
        }
        for system in &self.systems {
            if !["rsl", "openraft"].contains(&system.as_str()) {
                bail!("--systems: unknown system {system:?}; expected rsl or openraft");
            }
        }
        Ok(())
    }

    fn measures(&self, system: &str) -> bool {
        self.systems.iter().any(|s| s == system)
    }
}

fn runtime(name: &str, workers: usize) -> Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name(name)
        .enable_all()
        .build()
        .with_context(|| format!("building the {name} runtime"))
}

/// One run of rsl's facade: fresh rings, `clients` tasks, `per_client` requests each.
fn run_rsl(args: &Args, clients: u32, per_client: u64) -> Result<Figures> {
    let (servers, client_runtime) =
        (runtime("rsl-member", args.server_workers)?, runtime("client", args.client_workers)?);
    let cluster = servers.block_on(rsl_side::Cluster::start())?;
    let result = servers.block_on(cluster.primary()).and_then(|primary| {
        let before = servers.block_on(primary.slots_chosen());
        let figures = closed_loop(&client_runtime, &primary, clients, per_client)?;
        servers.block_on(cluster.applied_everywhere())?;
        let slots = servers.block_on(primary.slots_chosen()) - before;
        eprintln!(
            "  rsl        {clients:>5} tasks: {} requests in {slots} slots ({:.1} per slot)",
            figures.requests,
            figures.requests as f64 / slots.max(1) as f64
        );
        Ok(figures)
    });
    servers.block_on(cluster.shutdown());
    result
}

/// One run of openraft: fresh members, `clients` tasks, `per_client` requests each.
fn run_openraft(args: &Args, clients: u32, per_client: u64) -> Result<Figures> {
    let (servers, client_runtime) =
        (runtime("openraft-member", args.server_workers)?, runtime("client", args.client_workers)?);
    let cluster = servers.block_on(openraft_side::Cluster::start())?;
    let result = servers.block_on(cluster.leader()).and_then(|leader| {
        let before = cluster.applied_at(&leader);
        let figures = closed_loop(&client_runtime, &leader, clients, per_client)?;
        servers.block_on(cluster.applied_everywhere(before + figures.requests))?;
        Ok(figures)
    });
    servers.block_on(cluster.shutdown());
    result
}

/// `new / old`, or `None` when `old` is 0.
fn ratio(new: f64, old: f64) -> Option<f64> {
    (old > 0.0).then(|| new / old)
}

fn show(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"))
}

/// The table: one row per concurrency, both systems and the ratios.
fn print_table(args: &Args, points: &[Point]) {
    let find =
        |system: &str, clients: u32| points.iter().find(|p| p.system == system && p.clients == clients);
    println!(
        "rsl facade vs openraft {OPENRAFT_VERSION}: 3 members in one process, in-memory network and logs, empty requests, \
         {} requests per run, medians of {} run(s); latency in µs",
        args.requests, args.runs
    );
    println!(
        "{:>7} | {:>10} {:>8} {:>8} {:>8} | {:>10} {:>8} {:>8} {:>8} | {:>11} {:>10}",
        "clients",
        "rsl req/s",
        "mean",
        "p50",
        "p99",
        "openraft",
        "mean",
        "p50",
        "p99",
        "req/s ratio",
        "mean ratio"
    );
    let cells = |point: Option<&Point>| match point {
        Some(p) => format!(
            "{:>10.0} {:>8.1} {:>8.1} {:>8.1}",
            p.ops_per_sec(),
            p.mean_us(),
            p.median(|r| r.p50_us),
            p.median(|r| r.p99_us)
        ),
        None => format!("{:>10} {:>8} {:>8} {:>8}", "-", "-", "-", "-"),
    };
    for &clients in &args.clients {
        let (ours, theirs) = (find(RSL, clients), find(OPENRAFT, clients));
        let both = ours.zip(theirs);
        println!(
            "{clients:>7} | {} | {} | {:>11} {:>10}",
            cells(ours),
            cells(theirs),
            show(both.and_then(|(o, t)| ratio(o.ops_per_sec(), t.ops_per_sec()))),
            show(both.and_then(|(o, t)| ratio(o.mean_us(), t.mean_us()))),
        );
    }
}

fn machine_description() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cpus} CPUs ({model})")
}

/// The JSON report: conditions, points, and the ratio at each concurrency.
fn report(args: &Args, points: &[Point], load_average: &str) -> Value {
    let ratios: Vec<Value> = args
        .clients
        .iter()
        .filter_map(|&clients| {
            let ours = points.iter().find(|p| p.system == RSL && p.clients == clients)?;
            let theirs = points.iter().find(|p| p.system == OPENRAFT && p.clients == clients)?;
            Some(json!({
                "clients": clients,
                "ops_per_sec_ratio": ratio(ours.ops_per_sec(), theirs.ops_per_sec()),
                "mean_latency_ratio": ratio(ours.mean_us(), theirs.mean_us()),
            }))
        })
        .collect();
    json!({
        "conditions": {
            "machine": machine_description(),
            "load_average_at_start": load_average,
            "replicas": 3,
            "transport": "in one process: rsl's MemoryNetwork; openraft's calls to the target member",
            "log": "in memory (rsl MemoryStorage; openraft a map of entries)",
            "payload_bytes": 0,
            "openraft_version": OPENRAFT_VERSION,
            "requests_per_run": args.requests,
            "runs_per_point": args.runs,
            "server_workers": args.server_workers,
            "client_workers": args.client_workers,
        },
        "runs": points.iter().map(Point::to_json).collect::<Vec<_>>(),
        "ratios": ratios,
    })
}

fn main() -> Result<()> {
    let args = Args::parse();
    args.check()?;
    let started = Instant::now();
    let load_average = std::fs::read_to_string("/proc/loadavg")
        .map(|line| line.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    eprintln!(
        "bench: {:?} client tasks, {} requests per run, {} run(s), {} member / {} client workers, load average {load_average}",
        args.clients, args.requests, args.runs, args.server_workers, args.client_workers
    );
    let mut points = Vec::new();
    for &clients in &args.clients {
        let per_client = (args.requests / u64::from(clients)).max(1);
        let mut ours = Point { system: RSL, clients, runs: Vec::new() };
        let mut theirs = Point { system: OPENRAFT, clients, runs: Vec::new() };
        for run in 1..=args.runs {
            // Alternate which system goes first, so neither always runs on a warmer machine.
            let rsl_first = run % 2 == 1;
            for turn in 0..2 {
                let (point, system) =
                    if (turn == 0) == rsl_first { (&mut ours, "rsl") } else { (&mut theirs, "openraft") };
                if !args.measures(system) {
                    continue;
                }
                let figures = match system {
                    "rsl" => run_rsl(&args, clients, per_client),
                    _ => run_openraft(&args, clients, per_client),
                }
                .with_context(|| format!("{} at {clients} client task(s), run {run}", point.system))?;
                eprintln!(
                    "  {:<10} {clients:>5} tasks run {run}: {:>9.0} req/s  mean {:>8.1}  p50 {:>8.1}  p99 {:>8.1} µs  errors {}",
                    point.system, figures.ops_per_sec, figures.mean_us, figures.p50_us, figures.p99_us, figures.errors
                );
                point.runs.push(figures);
            }
        }
        points.extend([ours, theirs].into_iter().filter(|p| !p.runs.is_empty()));
    }
    print_table(&args, &points);
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report(&args, &points, &load_average))? + "\n";
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("bench: wrote {}", path.display());
    }
    eprintln!("bench: finished in {:.1} s", started.elapsed().as_secs_f64());
    let errors: u64 = points.iter().map(Point::errors).sum();
    if errors > 0 {
        bail!("{errors} request(s) failed; the figures count only answered requests");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &[&str]) -> Result<Args> {
        let args = Args::try_parse_from(std::iter::once("rsl-bench-openraft").chain(line.iter().copied()))?;
        args.check()?;
        Ok(args)
    }

    #[test]
    fn the_defaults_are_the_issue_sweep() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.clients, [1, 64, 256, 1024, 4096]);
        assert!(args.measures("rsl") && args.measures("openraft"));
        let args = parse(&["--clients", "8,16", "--systems", "openraft", "--requests", "50"]).unwrap();
        assert_eq!((args.clients.as_slice(), args.requests), (&[8, 16][..], 50));
        assert!(!args.measures("rsl"));
    }

    #[test]
    fn bad_settings_are_refused_by_name() {
        for (line, names) in [
            (&["--clients", "1,0"][..], "--clients"),
            (&["--requests", "0"][..], "--requests"),
            (&["--server-workers", "0"][..], "--server-workers"),
            (&["--systems", "etcd"][..], "etcd"),
        ] {
            let error = parse(line).unwrap_err().to_string();
            assert!(error.contains(names), "{line:?}: {error}");
        }
    }

    #[test]
    fn the_report_pairs_the_systems_at_each_concurrency() {
        let run = |ops: f64, mean: f64| Figures::flat(ops, mean, 0);
        let args = parse(&["--clients", "1,64", "--runs", "1"]).unwrap();
        let points = [
            Point { system: RSL, clients: 1, runs: vec![run(300.0, 10.0)] },
            Point { system: OPENRAFT, clients: 1, runs: vec![run(100.0, 40.0)] },
            Point { system: RSL, clients: 64, runs: vec![run(500.0, 5.0)] },
        ];
        let report = report(&args, &points, "0.5 0.4 0.3");
        assert_eq!(report["runs"].as_array().unwrap().len(), 3);
        let ratios = report["ratios"].as_array().unwrap();
        assert_eq!(ratios.len(), 1, "64 tasks has no openraft point: {ratios:?}");
        assert_eq!(ratios[0]["ops_per_sec_ratio"], 3.0);
        assert_eq!(ratios[0]["mean_latency_ratio"], 0.25);
        assert_eq!(report["conditions"]["openraft_version"], OPENRAFT_VERSION);
        assert_eq!(ratio(1.0, 0.0), None);
    }
}
