//! `cargo xtask bench`: whole-cluster throughput and latency of rsl-kv, and of etcd beside it.
//!
//! For each log backend it starts a three-replica rsl-kv ring as real processes on
//! 127.0.0.1 (as `cargo xtask demo` does), waits for a primary, and runs `rsl-kv load` at
//! each point of a concurrency sweep (clients × operations in flight per client),
//! closed-loop, several times; a point's figures are the medians of its runs. Then an
//! open-loop run at half the backend's best throughput gives the latency at half load, and
//! `--rates` adds open-loop points at fixed offered loads (`crate::bench_rates`; with
//! `--rates` alone, only those run). `--pmem-dir` adds a run of the persistent-memory log
//! with its files there and cache-line flushes (`crate::bench_pmem`).
//! With `--peer etcd` the same sweep runs against a three-member etcd cluster (the
//! `etcd` binary; installed with apt when missing and running as root) through the same
//! load generator speaking etcd's v3 API. `--peer openraft` instead runs rsl's facade
//! against openraft in one process (`crate::bench_openraft`).
//!
//! It prints a table, a comparison with a saved baseline (ratios), the ratio to etcd, and
//! writes JSON (`--json`) and a throughput–latency plot (`--plot`, SVG). Every process
//! and directory it made is removed at the end, on failure and on Ctrl-C.

use std::fs;
use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use plotters::prelude::*;
use serde_json::{json, Value};

use crate::bench_pmem::PmemRun;
use crate::bench_rates::{self, RATE_MODE};
use crate::demo::{self, Cluster, KillOnDrop};
use crate::process::workspace_root;

/// Longest wait for a primary (or an etcd leader) after start.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// The concurrency sweep when `--in-flight` is not given (and `--rates` is not either).
const SWEEP_DEFAULT: [u32; 5] = [1, 4, 16, 64, 256];
/// Operations in flight per client at a rate point when `--in-flight` is not given: lanes
/// enough that the offered load, not the lanes, sets the pace.
const RATE_IN_FLIGHT_DEFAULT: u32 = 256;
/// etcd's clients (one call in flight each) at a rate point when `--peer-clients` is not
/// given: its best closed-loop concurrency on the 2-core machine (docs/PERFORMANCE.md).
const PEER_RATE_CLIENTS_DEFAULT: u32 = 512;
/// The baseline compared against when `--baseline` is not given.
const BASELINE_DEFAULT: &str = "benches/baseline.json";

/// Options of `cargo xtask bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// A short run (under a minute once built): two sweep points, one run each, 2 s each
    #[arg(long)]
    pub quick: bool,
    /// Log backends to measure (comma-separated: file, pmem, memory)
    #[arg(long, value_delimiter = ',', default_value = "file,pmem,memory")]
    pub backends: Vec<String>,
    /// Client sessions (streams) at every sweep point
    #[arg(long, default_value_t = 16)]
    pub clients: u32,
    /// The sweep: operations in flight per client at each point (comma-separated)
    /// [default: 1,4,16,64,256; with --rates, no closed-loop sweep unless given]
    #[arg(long, value_delimiter = ',')]
    pub in_flight: Vec<u32>,
    /// Open-loop points at these offered loads, ops/s (comma-separated, `k` for
    /// thousands): for rsl and, with --peer etcd, for etcd; each with --clients × the
    /// largest --in-flight lanes (256 by default), etcd with the largest --peer-clients (512)
    #[arg(long, value_delimiter = ',', value_parser = bench_rates::parse_rate)]
    pub rates: Vec<f64>,
    /// Also run the pmem backend with its log files in this directory (tmpfs such as
    /// /dev/shm, or a DAX mount) and cache-line flushes, beside the msync run in the data
    /// directories
    #[arg(long, value_name = "DIR")]
    pub pmem_dir: Option<PathBuf>,
    /// Bytes per written value
    #[arg(long, default_value_t = 64)]
    pub payload_bytes: usize,
    /// Percent of operations that are linearizable reads (the rest are puts)
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub read_percent: u8,
    /// Seconds measured per run
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Seconds of warm-up before each run's measurement
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Runs per point (the figures are their medians)
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub runs: u32,
    /// How the load generator reaches rsl-kv: stream (batched) or unary (one call per op)
    #[arg(long, default_value = "stream", value_parser = ["stream", "unary"])]
    pub protocol: String,
    /// Connections the load generator's clients share
    #[arg(long, default_value_t = 4)]
    pub connections: u32,
    /// Also run the open-loop point at half the best throughput (latency at half load)
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub half_load: bool,
    /// Run the same workload against another system: etcd; or openraft, which instead
    /// compares rsl's facade with openraft in one process (3 members each, in-memory
    /// network and logs, empty requests, --peer-clients closed-loop tasks; the rsl-kv
    /// sweep is not run)
    #[arg(long, value_parser = ["etcd", "openraft"])]
    pub peer: Option<String>,
    /// Also measure rsl-kv over this replica transport, beside gRPC: rdma-emu (the RDMA
    /// ring protocol on the emulated provider: its CPU cost, not a NIC's) or rdma (the
    /// host's verbs device)
    #[arg(long, value_parser = ["rdma-emu", "rdma"])]
    pub transport: Option<String>,
    /// The peer's sweep: its clients at each point (default: the same total concurrency
    /// as ours, clients × in-flight, one unary call in flight per client; with --peer
    /// openraft the client tasks of both systems, default 1,64,256,1024,4096)
    #[arg(long, value_delimiter = ',')]
    pub peer_clients: Vec<u32>,
    /// With --peer openraft: requests per run, shared by the client tasks (--quick: at most 20,000)
    #[arg(long, default_value_t = 200_000)]
    pub requests: u64,
    /// Where rsl's state machine runs: thread (the default) or ring-task (the servers'
    /// `--apply-on ring-task`; with --peer openraft, the harness's `--rsl-apply-on ring-task`)
    #[arg(long, value_name = "WHERE", value_parser = ["thread", "ring-task"])]
    pub apply_on: Option<String>,
    /// With --peer openraft: more arguments for the harness, after `--` (for example
    /// `-- --server-workers 2 --client-workers 1`; see `rsl-bench-openraft --help`)
    #[arg(last = true)]
    pub peer_args: Vec<String>,
    /// Write the figures as JSON here
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Draw the throughput–latency curves here (SVG)
    #[arg(long, value_name = "PATH")]
    pub plot: Option<PathBuf>,
    /// Compare with this earlier JSON [default: benches/baseline.json when it exists]
    #[arg(long, value_name = "PATH")]
    pub baseline: Option<PathBuf>,
    /// Save this run's JSON as the baseline (the --baseline path or benches/baseline.json)
    #[arg(long)]
    pub save_baseline: bool,
}

/// One measured point: the medians over its runs.
#[derive(Debug, Clone)]
struct Point {
    system: String,
    backend: String,
    mode: &'static str,
    clients: u32,
    in_flight: u32,
    rate_ops_per_s: Option<f64>,
    runs: Vec<Value>,
    /// What a persistent-memory log used (`crate::bench_pmem`).
    pmem: Option<Value>,
}

impl Point {
    fn concurrency(&self) -> u64 {
        u64::from(self.clients) * u64::from(self.in_flight)
    }

    fn median(&self, pick: impl Fn(&Value) -> Option<f64>) -> f64 {
        let mut values: Vec<f64> = self.runs.iter().filter_map(&pick).collect();
        median(&mut values)
    }

    fn ops_per_sec(&self) -> f64 {
        self.median(|run| run["throughput_ops_per_s"].as_f64())
    }

    fn latency(&self, field: &str) -> f64 {
        self.median(|run| run["latency"][field].as_f64())
    }

    fn errors(&self) -> u64 {
        self.runs.iter().filter_map(|run| run["errors"].as_u64()).sum()
    }

    fn to_json(&self, payload_bytes: usize, read_percent: u8) -> Value {
        json!({
            "system": self.system,
            "backend": self.backend,
            "mode": self.mode,
            "payload_bytes": payload_bytes,
            "read_percent": read_percent,
            "clients": self.clients,
            "in_flight": self.in_flight,
            "concurrency": self.concurrency(),
            "rate_ops_per_s": self.rate_ops_per_s,
            "runs": self.runs.len(),
            "ops_per_sec": self.ops_per_sec().round(),
            "ops_per_sec_each": self.runs.iter().map(|r| r["throughput_ops_per_s"].clone()).collect::<Vec<_>>(),
            "p50_us": self.latency("p50_us"),
            "p90_us": self.latency("p90_us"),
            "p99_us": self.latency("p99_us"),
            "p999_us": self.latency("p999_us"),
            "max_us": self.latency("max_us"),
            "errors": self.errors(),
            "server_cpu_us_per_op": self.median(|run| run["server_cpu_us_per_op"].as_f64()),
            "backlog": self.median(|run| run["backlog"].as_f64()),
            "pmem": self.pmem,
        })
    }
}

/// The median of `values` (0 when empty).
fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    }
}

/// What one load run asks for.
#[derive(Debug, Clone)]
struct LoadSpec {
    protocol: &'static str,
    servers: String,
    clients: u32,
    in_flight: u32,
    rate_ops_per_s: Option<f64>,
}

/// The settings shared by every run.
#[derive(Debug, Clone)]
struct Settings {
    duration: f64,
    warmup: f64,
    runs: u32,
    payload_bytes: usize,
    read_percent: u8,
    connections: u32,
    sweep: Vec<u32>,
    clients: u32,
    /// The open-loop offered loads, ascending.
    rates: Vec<f64>,
    /// Operations in flight per client at a rate point.
    rate_in_flight: u32,
}

impl Settings {
    fn from(args: &BenchArgs) -> Result<Settings> {
        let mut settings = Settings {
            duration: args.duration,
            warmup: args.warmup,
            runs: args.runs,
            payload_bytes: args.payload_bytes,
            read_percent: args.read_percent,
            connections: args.connections,
            sweep: args.in_flight.clone(),
            clients: args.clients,
            rates: bench_rates::normalise_rates(&args.rates),
            rate_in_flight: args.in_flight.iter().copied().max().unwrap_or(RATE_IN_FLIGHT_DEFAULT),
        };
        if settings.sweep.is_empty() && settings.rates.is_empty() {
            settings.sweep = SWEEP_DEFAULT.to_vec();
        }
        if args.quick {
            settings.duration = settings.duration.min(2.0);
            settings.warmup = settings.warmup.min(0.5);
            settings.runs = 1;
            if !settings.sweep.is_empty() {
                settings.sweep = vec![1, 64];
            }
        }
        if !(settings.duration.is_finite() && settings.duration > 0.0) {
            bail!("--duration must be a positive number of seconds, got {}", settings.duration);
        }
        if !(settings.warmup.is_finite() && settings.warmup >= 0.0) {
            bail!("--warmup must be zero or a positive number of seconds, got {}", settings.warmup);
        }
        if settings.sweep.contains(&0) || settings.clients == 0 {
            bail!("--clients and every --in-flight value must be at least 1");
        }
        Ok(settings)
    }

    /// Seconds one load run takes, start-up and drain included (for the progress bar).
    fn run_seconds(&self) -> f64 {
        self.duration + self.warmup + 0.5
    }
}

/// Drives the load generator and the progress bar.
struct Runner<'a> {
    cli: PathBuf,
    /// rsl-kv through unary calls instead of streams.
    unary: bool,
    settings: &'a Settings,
    bar: ProgressBar,
}

impl Runner<'_> {
    /// The name rsl-kv's points carry: `rsl` (streams) or `rsl-unary`.
    fn system(&self) -> &'static str {
        if self.unary {
            "rsl-unary"
        } else {
            "rsl"
        }
    }

    /// One `rsl-kv load` run; returns its JSON report, with `server_cpu_us_per_op` (CPU
    /// time of the server processes `pids` over the run, per successful operation) added
    /// when `pids` are known.
    fn load(&self, spec: &LoadSpec, label: &str, pids: &[u32]) -> Result<Value> {
        let cpu_before = cpu_us(pids);
        let mut report = self.load_run(spec, label)?;
        if let (Some(before), Some(after)) = (cpu_before, cpu_us(pids)) {
            let ops = report["ops_total"].as_u64().unwrap_or(0).max(1);
            report["server_cpu_us_per_op"] =
                json!(((after - before) as f64 / ops as f64 * 100.0).round() / 100.0);
        }
        Ok(report)
    }

    fn load_run(&self, spec: &LoadSpec, label: &str) -> Result<Value> {
        let settings = self.settings;
        let mut command = Command::new(&self.cli);
        command
            .args(["--servers", &spec.servers, "load", "--protocol", spec.protocol])
            .args(["--clients", &spec.clients.to_string(), "--in-flight", &spec.in_flight.to_string()])
            .args(["--connections", &settings.connections.to_string()])
            .args(["--duration", &settings.duration.to_string(), "--warmup", &settings.warmup.to_string()])
            .args(["--value-bytes", &settings.payload_bytes.to_string()])
            .args(["--read-percent", &settings.read_percent.to_string(), "--progress-ms", "250"]);
        if let Some(rate) = spec.rate_ops_per_s {
            command.args(["--rate", &format!("{rate:.0}")]);
        }
        let child =
            command.stdin(Stdio::null()).stdout(Stdio::piped()).spawn().context("starting `rsl-kv load`")?;
        demo::register_pid(child.id());
        let mut load = KillOnDrop(child);
        let stdout =
            load.0.stdout.take().ok_or_else(|| anyhow!("the load generator's stdout is not piped"))?;
        let position = self.bar.position();
        let mut report = None;
        for line in BufReader::new(stdout).lines() {
            let line = line.context("reading the load generator's output")?;
            let Ok(message) = serde_json::from_str::<Value>(&line) else {
                self.bar.suspend(|| eprintln!("  load: {line}"));
                continue;
            };
            match message["type"].as_str() {
                Some("progress") => {
                    let elapsed_ms = message["elapsed_ms"].as_u64().unwrap_or(0);
                    let ops = message["ops"].as_u64().unwrap_or(0);
                    let rate = ops as f64 / (elapsed_ms.max(1) as f64 / 1000.0);
                    let run_ms = (settings.run_seconds() * 1000.0) as u64;
                    self.bar.set_position(position + elapsed_ms.min(run_ms));
                    self.bar.set_message(format!("{label}: {rate:.0} ops/s"));
                }
                Some("result") => report = Some(message),
                _ => {}
            }
        }
        let status = load.0.wait().context("waiting for the load generator")?;
        if !status.success() {
            bail!("the load generator failed ({status}) at {label}");
        }
        self.bar.set_position(position + (settings.run_seconds() * 1000.0) as u64);
        report.ok_or_else(|| anyhow!("the load generator printed no result at {label}"))
    }

    /// Runs one point `runs` times; `pids` are the server processes.
    fn point(&self, system: &str, backend: &str, spec: &LoadSpec, pids: &[u32]) -> Result<Point> {
        let mode = if spec.rate_ops_per_s.is_some() { "open" } else { "closed" };
        self.point_in_mode(system, backend, mode, spec, pids)
    }

    /// [`Runner::point`] with its mode named (`open-rate` for the rate sweep).
    fn point_in_mode(
        &self,
        system: &str,
        backend: &str,
        mode: &'static str,
        spec: &LoadSpec,
        pids: &[u32],
    ) -> Result<Point> {
        let label = format!("{system}/{backend} {}×{} {mode}", spec.clients, spec.in_flight);
        let mut runs = Vec::new();
        for run in 0..self.settings.runs {
            let report = self.load(spec, &format!("{label} run {}", run + 1), pids)?;
            runs.push(report);
        }
        let point = Point {
            system: system.to_owned(),
            backend: backend.to_owned(),
            mode,
            clients: spec.clients,
            in_flight: spec.in_flight,
            rate_ops_per_s: spec.rate_ops_per_s,
            runs,
            pmem: None,
        };
        self.bar.suspend(|| eprintln!("  {}", row(&point)));
        Ok(point)
    }
}

fn row(point: &Point) -> String {
    let rate = point.rate_ops_per_s.map_or(String::new(), |rate| format!(" at {rate:.0}/s"));
    format!(
        "{:<9} {:<7} {:<9} {:>4} × {:<4} {:>9.0} ops/s  p50 {:>7.0}  p90 {:>7.0}  p99 {:>7.0}  p99.9 {:>7.0} µs  cpu {:>5.1} µs/op  errors {}{rate}",
        point.system,
        point.backend,
        point.mode,
        point.clients,
        point.in_flight,
        point.ops_per_sec(),
        point.latency("p50_us"),
        point.latency("p90_us"),
        point.latency("p99_us"),
        point.latency("p999_us"),
        point.median(|run| run["server_cpu_us_per_op"].as_f64()),
        point.errors(),
    )
}

/// Runs the benchmark.
pub fn run(args: &BenchArgs) -> Result<()> {
    if args.peer.as_deref() == Some("openraft") {
        return crate::bench_openraft::run(args);
    }
    let started = Instant::now();
    let settings = Settings::from(args)?;
    let load_average = fs::read_to_string("/proc/loadavg")
        .map(|line| line.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    if let Some(one_minute) = load_average.split_whitespace().next().and_then(|l| l.parse::<f64>().ok()) {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from) as f64;
        if one_minute > cpus / 2.0 {
            eprintln!("bench: warning: the load average is {load_average} on {cpus} CPUs; other work skews the figures");
        }
    }
    for backend in &args.backends {
        if !["file", "pmem", "memory"].contains(&backend.as_str()) {
            bail!("--backends: unknown backend {backend:?}; expected file, pmem or memory");
        }
    }
    let etcd = match args.peer.as_deref() {
        Some("etcd") => Some(find_or_install_etcd()?),
        Some(other) => bail!("--peer: unknown system {other:?}; expected etcd or openraft"),
        None => None,
    };
    // gRPC always; the RDMA transport beside it when asked (one binary serves both).
    let transports: Vec<&str> = std::iter::once("grpc").chain(args.transport.as_deref()).collect();
    let features: &[&str] = match args.transport.as_deref() {
        Some("rdma-emu") => &["rdma"],
        Some(_) => &["rdma-verbs"],
        None => &[],
    };
    let binaries = demo::build_with_features(features)?;
    demo::install_interrupt_handler()?;
    let cli = binaries.cli.clone();

    let peer_sweep: Vec<u32> = if args.peer_clients.is_empty() {
        settings.sweep.iter().map(|in_flight| settings.clients * in_flight).collect()
    } else {
        args.peer_clients.clone()
    };
    let peer_rate_clients = args.peer_clients.iter().copied().max().unwrap_or(PEER_RATE_CLIENTS_DEFAULT);
    // The pmem backend runs once per way of keeping its files (`crate::bench_pmem`).
    if args.pmem_dir.is_some() && !args.backends.iter().any(|b| b == "pmem") {
        bail!("--pmem-dir places the pmem backend's files, but --backends does not include pmem");
    }
    let pmem_runs = if args.backends.iter().any(|b| b == "pmem") {
        PmemRun::all(args.pmem_dir.as_deref())?
    } else {
        Vec::new()
    };
    let mut variants: Vec<(&str, &str, Option<&PmemRun>)> = Vec::new();
    for backend in &args.backends {
        match backend.as_str() {
            "pmem" => variants.extend(pmem_runs.iter().map(|run| ("pmem", run.backend, Some(run)))),
            other => variants.push((other, other, None)),
        }
    }
    let points_per_system = |sweep: usize| {
        let half = u64::from(args.half_load && sweep > 0);
        sweep as u64 + half + settings.rates.len() as u64
    };
    let mut total_runs = (transports.len() * variants.len()) as u64 * points_per_system(settings.sweep.len());
    if etcd.is_some() {
        total_runs += points_per_system(peer_sweep.len());
    }
    total_runs *= u64::from(settings.runs);
    let bar = ProgressBar::new((total_runs as f64 * settings.run_seconds() * 1000.0) as u64);
    let style = ProgressStyle::with_template("  {spinner} [{elapsed:>3}] {wide_bar} {percent:>3}% {msg}")
        .map_err(|error| anyhow!("progress bar template: {error}"))?;
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(120));
    let runner = Runner { cli, unary: args.protocol == "unary", settings: &settings, bar: bar.clone() };

    eprintln!(
        "bench: {} clients × in-flight {:?}, {} B puts, {}% reads, {} s measured after {} s warm-up, {} run(s) per point",
        settings.clients, settings.sweep, settings.payload_bytes, settings.read_percent, settings.duration, settings.warmup, settings.runs
    );
    if !settings.rates.is_empty() {
        eprintln!(
            "bench: open loop at {:?} ops/s offered, {} clients × {} lanes (etcd: {peer_rate_clients} clients)",
            settings.rates, settings.clients, settings.rate_in_flight
        );
    }
    let mut points = Vec::new();
    let mut binaries = Some(binaries);
    for (transport, (log, backend, pmem)) in
        transports.iter().flat_map(|t| variants.iter().map(move |variant| (*t, *variant)))
    {
        let Some(built) = binaries.take() else {
            unreachable!("binaries are handed back after each backend")
        };
        let mut cluster = Cluster::create_named(built, log, "rsl-kv-bench")?;
        if let Some(pmem) = pmem {
            cluster.server_args = pmem.server_args.clone();
        }
        if let Some(apply_on) = &args.apply_on {
            cluster.server_args.extend(["--apply-on".to_owned(), apply_on.clone()]);
        }
        let system = match transport {
            "grpc" => runner.system().to_owned(),
            _ => {
                cluster.server_args.extend(["--transport".to_owned(), transport.to_owned()]);
                format!("{}-{transport}", runner.system())
            }
        };
        let result = bench_backend(&mut cluster, &runner, &system, backend, args.half_load);
        if result.is_err() {
            bar.suspend(|| {
                eprintln!("bench: failed; the last lines of each replica's log:\n{}", cluster.log_tails(15))
            });
        }
        cluster.stop_all();
        let described = pmem.map(|pmem| pmem.describe(&cluster.root.join("node-1.log"), &cluster.root));
        binaries = Some(take_binaries(cluster));
        let mut result = result?;
        if let Some(described) = described {
            bar.suspend(|| eprintln!("  {backend}: {described}"));
            result.iter_mut().for_each(|point| point.pmem = Some(described.clone()));
        }
        points.extend(result);
    }
    if let Some(etcd) = &etcd {
        points.extend(bench_etcd(etcd, &runner, &peer_sweep, peer_rate_clients, args.half_load)?);
    }
    bar.finish_and_clear();

    let runs: Vec<Value> =
        points.iter().map(|p| p.to_json(settings.payload_bytes, settings.read_percent)).collect();
    let curves = bench_rates::curves(&runs);
    let report = json!({
        "conditions": {
            "machine": machine_description(),
            "load_average_at_start": load_average,
            "replicas": 3,
            "apply_on": args.apply_on.as_deref().unwrap_or("thread"),
            "transport": match args.transport.as_deref() {
                None => "gRPC over 127.0.0.1".to_owned(),
                Some(other) => format!("gRPC over 127.0.0.1, and {other} (rsl-{other} points)"),
            },
            "payload_bytes": settings.payload_bytes,
            "read_percent": settings.read_percent,
            "duration_s": settings.duration,
            "warmup_s": settings.warmup,
            "runs_per_point": settings.runs,
            "connections": settings.connections,
            "protocol": args.protocol,
            "quick": args.quick,
            "rate_lanes": {"clients": settings.clients, "in_flight": settings.rate_in_flight, "etcd_clients": peer_rate_clients},
        },
        "runs": runs,
        "curves": bench_rates::curves_json(&curves),
    });
    print_summary(&points);
    bench_rates::print_curves(&curves);
    if let Some(etcd_points) = etcd.as_ref().map(|_| &points) {
        print_peer_ratio(etcd_points);
    }
    let baseline_path = args.baseline.clone().unwrap_or_else(|| workspace_root().join(BASELINE_DEFAULT));
    compare_with_baseline(&report, &baseline_path, args.baseline.is_some())?;
    let text = serde_json::to_string_pretty(&report)? + "\n";
    if let Some(path) = &args.json {
        fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("bench: wrote {}", path.display());
    }
    if args.save_baseline {
        fs::write(&baseline_path, &text).with_context(|| format!("writing {}", baseline_path.display()))?;
        eprintln!("bench: saved the baseline {}", baseline_path.display());
    }
    if let Some(path) = &args.plot {
        plot(&points, &curves, path, &settings)?;
        eprintln!("bench: drew {}", path.display());
    }
    eprintln!("bench: finished in {}", demo::seconds(started.elapsed()));
    Ok(())
}

/// Hands the built binaries back from a finished cluster (its processes are stopped and its
/// directory is removed when the rest of it drops).
fn take_binaries(mut cluster: Cluster) -> demo::Binaries {
    let placeholder = demo::Binaries { server: PathBuf::new(), cli: PathBuf::new() };
    std::mem::replace(&mut cluster.binaries, placeholder)
}

fn bench_backend(
    cluster: &mut Cluster,
    runner: &Runner<'_>,
    system: &str,
    backend: &str,
    half_load: bool,
) -> Result<Vec<Point>> {
    for id in 1..=3 {
        cluster.start(id)?;
    }
    cluster.wait_for(SETTLE_TIMEOUT, "a primary", |statuses| {
        (statuses.len() == 3).then(|| demo::primary_of(statuses).map(|p| p.node)).flatten()
    })?;
    let settings = runner.settings;
    let servers = cluster.servers();
    let pids: Vec<u32> = cluster.nodes.iter().filter_map(demo::Node::pid).collect();
    let mut points = Vec::new();
    for &in_flight in &settings.sweep {
        let spec = LoadSpec {
            protocol: if runner.unary { "unary" } else { "stream" },
            servers: servers.clone(),
            clients: settings.clients,
            in_flight,
            rate_ops_per_s: None,
        };
        points.push(runner.point(system, backend, &spec, &pids)?);
    }
    let protocol = if runner.unary { "unary" } else { "stream" };
    if half_load && !points.is_empty() {
        points.push(half_load_point(runner, system, backend, protocol, &servers, &points, &pids)?);
    }
    let lanes = (settings.clients, settings.rate_in_flight);
    points.extend(rate_points(runner, system, backend, protocol, &servers, lanes, &pids)?);
    // Every replica must still agree after the load (a benchmark of a broken ring is void).
    cluster.wait_for(SETTLE_TIMEOUT, "all replicas to apply every chosen slot", |statuses| {
        let primary = demo::primary_of(statuses)?;
        (statuses.len() == 3 && statuses.iter().all(|s| s.applied == primary.chosen)).then_some(())
    })?;
    Ok(points)
}

/// The open-loop points at the offered loads of `--rates`, with `lanes` (clients, in
/// flight per client).
fn rate_points(
    runner: &Runner<'_>,
    system: &str,
    backend: &str,
    protocol: &'static str,
    servers: &str,
    lanes: (u32, u32),
    pids: &[u32],
) -> Result<Vec<Point>> {
    let mut points = Vec::new();
    for &rate in &runner.settings.rates {
        let spec = LoadSpec {
            protocol,
            servers: servers.to_owned(),
            clients: lanes.0,
            in_flight: lanes.1,
            rate_ops_per_s: Some(rate),
        };
        points.push(runner.point_in_mode(system, backend, RATE_MODE, &spec, pids)?);
    }
    Ok(points)
}

/// An open-loop point at half the best closed-loop throughput, with the concurrency of
/// the point that reached it (so lanes never run out at half that rate).
fn half_load_point(
    runner: &Runner<'_>,
    system: &str,
    backend: &str,
    protocol: &'static str,
    servers: &str,
    points: &[Point],
    pids: &[u32],
) -> Result<Point> {
    let best = points
        .iter()
        .max_by(|a, b| a.ops_per_sec().total_cmp(&b.ops_per_sec()))
        .ok_or_else(|| anyhow!("no closed-loop point to take half of"))?;
    let spec = LoadSpec {
        protocol,
        servers: servers.to_owned(),
        clients: best.clients,
        in_flight: best.in_flight,
        rate_ops_per_s: Some((best.ops_per_sec() / 2.0).max(1.0)),
    };
    runner.point(system, backend, &spec, pids)
}

/// User plus system CPU time of the processes `pids`, in microseconds (Linux /proc);
/// `None` when any is unreadable.
fn cpu_us(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    // SAFETY: sysconf(3) has no preconditions.
    let ticks_per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks_per_s = u64::try_from(ticks_per_s).ok().filter(|&t| t > 0)?;
    let mut total = 0;
    for pid in pids {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name (which may hold spaces) start after the last ')'.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
        let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        total += ticks * 1_000_000 / ticks_per_s;
    }
    Some(total)
}

/// The path of the `etcd` binary; installs Debian's `etcd-server` when it is missing and
/// this process runs as root.
fn find_or_install_etcd() -> Result<PathBuf> {
    if let Some(path) = which("etcd") {
        return Ok(path);
    }
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        bail!("--peer etcd needs the `etcd` binary (Debian: apt-get install etcd-server); not found in PATH");
    }
    eprintln!("bench: etcd is not installed; installing Debian's etcd-server");
    for args in [vec!["update", "-qq"], vec!["install", "-y", "-qq", "etcd-server"]] {
        let status = Command::new("apt-get")
            .args(&args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .status()
            .context("running apt-get")?;
        if !status.success() {
            bail!("`apt-get {}` failed: {status}", args.join(" "));
        }
    }
    which("etcd").ok_or_else(|| anyhow!("etcd-server was installed but `etcd` is not in PATH"))
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|candidate| candidate.is_file())
}

/// Three etcd members on 127.0.0.1; dropping it kills them and removes their directory.
struct EtcdCluster {
    root: PathBuf,
    children: Vec<Child>,
    client_addresses: Vec<String>,
}

impl EtcdCluster {
    fn start(etcd: &Path) -> Result<EtcdCluster> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let root = std::env::temp_dir().join(format!("etcd-bench-{}-{nanos:08x}", std::process::id()));
        fs::create_dir(&root).with_context(|| format!("creating {}", root.display()))?;
        let mut cluster =
            EtcdCluster { root: root.clone(), children: Vec::new(), client_addresses: Vec::new() };
        let mut peers = Vec::new();
        let mut ports = Vec::new();
        for id in 1..=3 {
            let (client, peer) = (demo::free_port()?, demo::free_port()?);
            peers.push(format!("m{id}=http://127.0.0.1:{peer}"));
            ports.push((client, peer));
        }
        let initial_cluster = peers.join(",");
        for (index, (client, peer)) in ports.into_iter().enumerate() {
            let name = format!("m{}", index + 1);
            let output = fs::File::create(root.join(format!("{name}.log")))?;
            let child = Command::new(etcd)
                .args(["--name", &name])
                .arg("--data-dir")
                .arg(root.join(&name))
                .args(["--listen-client-urls", &format!("http://127.0.0.1:{client}")])
                .args(["--advertise-client-urls", &format!("http://127.0.0.1:{client}")])
                .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
                .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{peer}")])
                .args(["--initial-cluster", &initial_cluster, "--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", "rsl-bench", "--log-level", "warn"])
                .stdin(Stdio::null())
                .stdout(output.try_clone()?)
                .stderr(output)
                .spawn()
                .with_context(|| format!("starting {}", etcd.display()))?;
            demo::register_pid(child.id());
            cluster.children.push(child);
            cluster.client_addresses.push(format!("127.0.0.1:{client}"));
        }
        cluster.wait_healthy()?;
        Ok(cluster)
    }

    /// Waits until every member's `/health` says true (a leader is elected).
    fn wait_healthy(&self) -> Result<()> {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        for address in &self.client_addresses {
            loop {
                if health(address).unwrap_or(false) {
                    break;
                }
                if Instant::now() >= deadline {
                    bail!("etcd member {address} did not report healthy within {SETTLE_TIMEOUT:?}");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }
}

/// GET /health of an etcd member: whether it answers `"health":"true"`.
fn health(address: &str) -> Result<bool> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(stream, "GET /health HTTP/1.0\r\nHost: {address}\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer.contains("\"health\":\"true\""))
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let pid = child.id();
            let _ = child.kill();
            let _ = child.wait();
            demo::unregister_pid(pid);
        }
        let _ = fs::remove_dir_all(&self.root);
    }
}

fn bench_etcd(
    etcd: &Path,
    runner: &Runner<'_>,
    sweep: &[u32],
    rate_clients: u32,
    half_load: bool,
) -> Result<Vec<Point>> {
    let cluster = EtcdCluster::start(etcd)?;
    let servers = cluster.client_addresses.join(",");
    let pids: Vec<u32> = cluster.children.iter().map(Child::id).collect();
    let mut points = Vec::new();
    for &clients in sweep {
        let spec = LoadSpec {
            protocol: "etcd",
            servers: servers.clone(),
            clients,
            in_flight: 1,
            rate_ops_per_s: None,
        };
        points.push(runner.point("etcd", "etcd", &spec, &pids)?);
    }
    if half_load && !points.is_empty() {
        points.push(half_load_point(runner, "etcd", "etcd", "etcd", &servers, &points, &pids)?);
    }
    points.extend(rate_points(runner, "etcd", "etcd", "etcd", &servers, (rate_clients, 1), &pids)?);
    drop(cluster);
    Ok(points)
}

fn machine_description() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let model = fs::read_to_string("/proc/cpuinfo")
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

fn print_summary(points: &[Point]) {
    println!("bench summary (medians; latency measured at the client)");
    for point in points {
        println!("  {}", row(point));
    }
    let mut systems: Vec<(&str, &str)> =
        points.iter().map(|p| (p.system.as_str(), p.backend.as_str())).collect();
    systems.dedup();
    for (system, backend) in systems {
        let best = points
            .iter()
            .filter(|p| p.system == system && p.backend == backend && p.mode == "closed")
            .max_by(|a, b| a.ops_per_sec().total_cmp(&b.ops_per_sec()));
        let half = points.iter().find(|p| p.system == system && p.backend == backend && p.mode == "open");
        if let Some(best) = best {
            let half = half.map_or(String::new(), |h| {
                format!(
                    "; at half that load ({:.0}/s) p99 {:.0} µs",
                    h.rate_ops_per_s.unwrap_or(0.0),
                    h.latency("p99_us")
                )
            });
            println!(
                "  best {system}/{backend}: {:.0} ops/s at {}×{} (p99 {:.0} µs){half}",
                best.ops_per_sec(),
                best.clients,
                best.in_flight,
                best.latency("p99_us")
            );
        }
    }
}

/// rsl against etcd: best throughput of each rsl backend over etcd's best, and point by
/// point at equal total concurrency.
fn print_peer_ratio(points: &[Point]) {
    let best = |system: &str, backend: &str| {
        points
            .iter()
            .filter(|p| p.system == system && p.backend == backend && p.mode == "closed")
            .map(Point::ops_per_sec)
            .fold(0.0, f64::max)
    };
    let etcd = best("etcd", "etcd");
    if etcd <= 0.0 {
        return;
    }
    println!("rsl / etcd (same workload and machine; best closed-loop throughput):");
    let mut backends: Vec<&str> =
        points.iter().filter(|p| p.system == "rsl").map(|p| p.backend.as_str()).collect();
    backends.dedup();
    for backend in backends {
        let ours = best("rsl", backend);
        println!("  {backend:<7} {ours:>10.0} ops/s vs etcd {etcd:>8.0} ops/s = {:.1}×", ours / etcd);
    }
    for point in points.iter().filter(|p| p.system == "etcd" && p.mode == "closed") {
        for ours in points
            .iter()
            .filter(|p| p.system == "rsl" && p.mode == "closed" && p.concurrency() == point.concurrency())
        {
            println!(
                "  concurrency {:>5}: rsl/{} {:.0} vs etcd {:.0} ops/s = {:.1}×; p99 {:.0} vs {:.0} µs",
                point.concurrency(),
                ours.backend,
                ours.ops_per_sec(),
                point.ops_per_sec(),
                ours.ops_per_sec() / point.ops_per_sec().max(1.0),
                ours.latency("p99_us"),
                point.latency("p99_us"),
            );
        }
    }
}

/// The key a point is matched on across runs of the benchmark (a rate-sweep point also by
/// its offered load; the half-load point's rate follows the best point, so not by it).
fn key_of(run: &Value) -> String {
    let rate = match run["rate_ops_per_s"].as_f64() {
        Some(rate) if run["mode"] == RATE_MODE => format!(" @{rate:.0}/s"),
        _ => String::new(),
    };
    format!(
        "{}/{} {} {}B r{}% {}×{}{rate}",
        run["system"].as_str().unwrap_or("?"),
        run["backend"].as_str().unwrap_or("?"),
        run["mode"].as_str().unwrap_or("?"),
        run["payload_bytes"],
        run["read_percent"],
        run["clients"],
        run["in_flight"],
    )
}

/// Prints this run against the baseline as ratios (> 1 is faster / slower latency).
pub(crate) fn compare_with_baseline(report: &Value, path: &Path, explicit: bool) -> Result<()> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if !explicit && error.kind() == std::io::ErrorKind::NotFound => {
            println!("no baseline at {} (save one with --save-baseline)", path.display());
            return Ok(());
        }
        Err(error) => return Err(error).with_context(|| format!("reading the baseline {}", path.display())),
    };
    let baseline: Value =
        serde_json::from_str(&text).with_context(|| format!("parsing the baseline {}", path.display()))?;
    let old =
        baseline["runs"].as_array().ok_or_else(|| anyhow!("baseline {}: no `runs` array", path.display()))?;
    println!("this run / baseline {} (ops/s ratio > 1 is faster; p99 ratio < 1 is better):", path.display());
    let mut matched = 0;
    for run in report["runs"].as_array().into_iter().flatten() {
        let key = key_of(run);
        // Open-loop points are matched by shape only: their rate follows the best point.
        let Some(before) = old.iter().find(|b| key_of(b) == key) else { continue };
        matched += 1;
        let ratio = |field: &str| {
            let (now, then) = (run[field].as_f64().unwrap_or(0.0), before[field].as_f64().unwrap_or(0.0));
            if then > 0.0 {
                format!("{:.2}", now / then)
            } else {
                "-".into()
            }
        };
        let flag = match (run["ops_per_sec"].as_f64(), before["ops_per_sec"].as_f64()) {
            (Some(now), Some(then)) if then > 0.0 && now / then < 0.9 => "  <- slower",
            _ => "",
        };
        println!(
            "  {key:<40} ops/s {:>6}  p50 {:>6}  p99 {:>6}{flag}",
            ratio("ops_per_sec"),
            ratio("p50_us"),
            ratio("p99_us")
        );
    }
    if matched == 0 {
        println!("  (no point of this run matches one in the baseline)");
    }
    Ok(())
}

/// Draws p99 latency against throughput, one curve per system and backend (closed-loop
/// sweep points, in order of concurrency), and beside it the open-loop rate sweep's
/// curves (`crate::bench_rates`), as SVG; a panel without points is left out.
fn plot(points: &[Point], curves: &[bench_rates::Curve], path: &Path, settings: &Settings) -> Result<()> {
    let draw = |error: &dyn std::fmt::Display| anyhow!("drawing {}: {error}", path.display());
    let closed = points.iter().any(|p| p.mode == "closed");
    let width = if closed && !curves.is_empty() { 1600 } else { 900 };
    let root = SVGBackend::new(path, (width, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw(&e))?;
    let (left, right) = if closed && !curves.is_empty() {
        let (left, right) = root.split_horizontally(800);
        (Some(left), Some(right))
    } else if closed {
        (Some(root.clone()), None)
    } else {
        (None, Some(root.clone()))
    };
    if let Some(area) = left {
        plot_sweep(points, &area, settings)?;
    }
    if let Some(area) = right {
        let caption = format!(
            "open loop at fixed offered loads, {} B puts: p50 (thin) and p99 (thick)",
            settings.payload_bytes
        );
        bench_rates::draw_curves(&area, curves, &caption)?;
    }
    root.present().map_err(|e| draw(&e))?;
    Ok(())
}

/// The closed-loop sweep's panel: p99 latency against throughput.
fn plot_sweep<DB: DrawingBackend>(
    points: &[Point],
    area: &DrawingArea<DB, plotters::coord::Shift>,
    settings: &Settings,
) -> Result<()> {
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for point in points.iter().filter(|p| p.mode == "closed") {
        let name = format!("{}/{}", point.system, point.backend);
        let xy = (point.ops_per_sec() / 1000.0, point.latency("p99_us") / 1000.0);
        match series.iter_mut().find(|(n, _)| *n == name) {
            Some((_, values)) => values.push(xy),
            None => series.push((name, vec![xy])),
        }
    }
    let x_max = series.iter().flat_map(|(_, v)| v.iter().map(|p| p.0)).fold(1.0, f64::max) * 1.1;
    let y_max = series.iter().flat_map(|(_, v)| v.iter().map(|p| p.1)).fold(0.1, f64::max) * 1.1;
    let draw = |error: &dyn std::fmt::Display| anyhow!("drawing the sweep: {error}");
    let caption = format!(
        "3 replicas on 127.0.0.1, {} B puts, {}% reads: p99 latency vs throughput (sweep of concurrency)",
        settings.payload_bytes, settings.read_percent
    );
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(|e| draw(&e))?;
    chart
        .configure_mesh()
        .x_desc("committed operations per second (thousands)")
        .y_desc("p99 latency at the client (ms)")
        .draw()
        .map_err(|e| draw(&e))?;
    for (index, (name, values)) in series.iter().enumerate() {
        bench_rates::draw_line(&mut chart, name.clone(), values, Palette99::pick(index).to_rgba(), 2)?;
    }
    bench_rates::draw_legend(&mut chart)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(system: &str, ops: &[f64], p99: &[f64]) -> Point {
        Point {
            system: system.into(),
            backend: "file".into(),
            mode: "closed",
            clients: 4,
            in_flight: 8,
            rate_ops_per_s: None,
            pmem: None,
            runs: ops
                .iter()
                .zip(p99)
                .map(|(o, p)| json!({"throughput_ops_per_s": o, "errors": 1, "latency": {"p99_us": p}}))
                .collect(),
        }
    }

    #[test]
    fn figures_are_medians_of_the_runs() {
        let p = point("rsl", &[300.0, 100.0, 200.0], &[9.0, 1.0, 5.0]);
        assert_eq!(p.ops_per_sec(), 200.0);
        assert_eq!(p.latency("p99_us"), 5.0);
        assert_eq!(p.errors(), 3);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
        let json = p.to_json(64, 0);
        assert_eq!(json["concurrency"], 32);
        assert_eq!(json["ops_per_sec"], 200.0);
        assert_eq!(json["payload_bytes"], 64);
    }

    /// `cargo xtask bench` with these arguments, parsed as the command line is.
    fn parse(args: &[&str]) -> Result<BenchArgs, clap::Error> {
        #[derive(clap::Parser)]
        struct Command {
            #[command(flatten)]
            bench: BenchArgs,
        }
        <Command as clap::Parser>::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))
            .map(|command| command.bench)
    }

    #[test]
    fn quick_settings_are_short() {
        let args = parse(&["--quick", "--backends", "file", "--in-flight", "1,4,16"]).unwrap();
        let settings = Settings::from(&args).unwrap();
        assert_eq!((settings.runs, settings.sweep.len()), (1, 2));
        assert!(settings.run_seconds() <= 3.0);
        let bad = BenchArgs { quick: false, in_flight: vec![0], ..args };
        assert!(Settings::from(&bad).is_err());
    }

    #[test]
    fn rates_replace_the_default_sweep_unless_it_is_given() {
        let plain = Settings::from(&parse(&[]).unwrap()).unwrap();
        assert_eq!((plain.sweep, plain.rates.len()), (SWEEP_DEFAULT.to_vec(), 0));
        let args = parse(&["--rates", "20000,1000,5k,10000", "--peer", "etcd"]).unwrap();
        let settings = Settings::from(&args).unwrap();
        assert!(settings.sweep.is_empty(), "--rates alone runs no closed-loop sweep");
        assert_eq!(settings.rates, [1000.0, 5000.0, 10000.0, 20000.0]);
        assert_eq!((settings.clients, settings.rate_in_flight), (16, RATE_IN_FLIGHT_DEFAULT));
        let both = Settings::from(&parse(&["--rates", "1000", "--in-flight", "4,64"]).unwrap()).unwrap();
        assert_eq!((both.sweep, both.rate_in_flight), (vec![4, 64], 64));
        let quick = Settings::from(&parse(&["--rates", "1000", "--quick"]).unwrap()).unwrap();
        assert!(quick.sweep.is_empty() && quick.rates == [1000.0] && quick.runs == 1);
        for bad in [&["--rates", "fast"][..], &["--rates", "0"], &["--rates", "1000,,2000"]] {
            let error = parse(bad).unwrap_err().to_string();
            assert!(error.contains("--rates"), "{bad:?}: {error}");
        }
        let args = parse(&["--backends", "pmem", "--pmem-dir", "/dev/shm"]).unwrap();
        assert_eq!(args.pmem_dir.as_deref(), Some(Path::new("/dev/shm")));
    }

    #[test]
    fn rate_points_carry_their_offered_load_into_the_json_and_the_key() {
        let mut p = point("rsl", &[9900.0, 9950.0, 10010.0], &[2100.0, 2500.0, 2300.0]);
        p.mode = RATE_MODE;
        p.rate_ops_per_s = Some(10_000.0);
        p.pmem = Some(json!({"requested": "cache-lines", "flush": "CacheLines(Clwb)"}));
        let json = p.to_json(64, 0);
        assert_eq!(
            (json["mode"].as_str(), json["rate_ops_per_s"].as_f64()),
            (Some(RATE_MODE), Some(10_000.0))
        );
        assert_eq!((json["ops_per_sec"].as_f64(), json["p99_us"].as_f64()), (Some(9950.0), Some(2300.0)));
        assert_eq!(json["pmem"]["flush"], "CacheLines(Clwb)");
        let mut other = p.clone();
        other.rate_ops_per_s = Some(20_000.0);
        assert_ne!(key_of(&json), key_of(&other.to_json(64, 0)), "rate points are told apart by rate");
        let curves = bench_rates::curves(&[json]);
        assert_eq!(curves[0].points[0].offered_ops_per_s, 10_000.0);
    }

    #[test]
    fn baseline_keys_ignore_the_figures() {
        let a = point("rsl", &[1.0], &[1.0]).to_json(64, 0);
        let b = point("rsl", &[2.0], &[3.0]).to_json(64, 0);
        assert_eq!(key_of(&a), key_of(&b));
        assert_ne!(key_of(&a), key_of(&point("etcd", &[1.0], &[1.0]).to_json(64, 0)));
    }

    #[test]
    fn the_plot_is_an_svg_with_every_series() {
        let dir = std::env::temp_dir().join(format!("xtask-plot-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let settings = Settings::from(&parse(&["--in-flight", "1"]).unwrap()).unwrap();
        let closed = [point("rsl", &[1000.0], &[900.0]), point("etcd", &[500.0], &[1500.0])];
        let path = dir.join("plot.svg");
        plot(&closed, &[], &path, &settings).unwrap();
        let svg = fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("rsl/file") && svg.contains("etcd/file"), "{svg}");
        assert!(!svg.contains("p50"), "no rate panel without rate points");
        let mut rated = Vec::new();
        for (system, rate, p99) in
            [("rsl", 1000.0, 1500.0), ("rsl", 5000.0, 2500.0), ("etcd", 1000.0, 9000.0)]
        {
            let mut p = point(system, &[rate], &[p99]);
            (p.mode, p.rate_ops_per_s) = (RATE_MODE, Some(rate));
            rated.push(p.to_json(64, 0));
        }
        let curves = bench_rates::curves(&rated);
        plot(&closed, &curves, &path, &settings).unwrap();
        let svg = fs::read_to_string(&path).unwrap();
        for label in ["rsl/file p50", "rsl/file p99", "etcd/file p99", "open loop at fixed offered loads"] {
            assert!(svg.contains(label), "{label} missing");
        }
        plot(&[], &curves, &path, &settings).unwrap();
        let svg = fs::read_to_string(&path).unwrap();
        assert!(
            svg.contains("rsl/file p99") && !svg.contains("sweep of concurrency"),
            "the rate panel alone"
        );
        fs::remove_dir_all(dir).unwrap();
    }
}
