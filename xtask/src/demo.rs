//! `cargo xtask demo`: a three-replica rsl-kv ring as real processes on 127.0.0.1.
//!
//! Builds `rsl-kv-server` and `rsl-kv` in release, starts three servers with file logs in
//! a fresh temporary directory, waits for a primary, and runs `rsl-kv load` (a closed-loop
//! put/get workload) with a progress bar. Meanwhile it kills the primary with SIGKILL,
//! times the failover (new primary, first successful write after the kill), restarts the
//! killed replica and waits until it has caught up. After the load it checks that every
//! replica reports the same state digest at the same applied slot, prints throughput and
//! latency percentiles, and stops everything. Every process it started and the directory it
//! made are removed at the end, on failure (a guard's `Drop`) and on Ctrl-C (a handler).
//!
//! xtask depends on no rsl crate: it drives the binaries as processes and reads their JSON.

use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::build;

/// Replicas in the demo ring.
const REPLICAS: u64 = 3;
/// Longest wait for the first primary, and for the replicas to agree after the load.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest wait for a replica to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the cluster's status is polled while waiting for something.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Options of `cargo xtask demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Seconds of load (the primary is killed at 30% of it, restarted at 50%)
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(10..=600))]
    pub duration: u64,
    /// Concurrent client sessions of the load
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub clients: u32,
    /// Percent of operations that are linearizable gets (the rest are puts)
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub read_percent: u8,
    /// Log store of the replicas
    #[arg(long, default_value = "file", value_parser = ["file", "pmem"])]
    pub log: String,
}

/// What Ctrl-C must clean up: the processes started and the directory made.
struct Cleanup {
    pids: Vec<u32>,
    dir: Option<PathBuf>,
    /// More directories to remove (the benchmark's persistent-memory files elsewhere).
    more_dirs: Vec<PathBuf>,
}

static CLEANUP: Mutex<Cleanup> = Mutex::new(Cleanup { pids: Vec::new(), dir: None, more_dirs: Vec::new() });

/// Removes `dir` on Ctrl-C too, until [`unregister_dir`].
pub(crate) fn register_dir(dir: &Path) {
    if let Ok(mut cleanup) = CLEANUP.lock() {
        cleanup.more_dirs.push(dir.to_owned());
    }
}

pub(crate) fn unregister_dir(dir: &Path) {
    if let Ok(mut cleanup) = CLEANUP.lock() {
        cleanup.more_dirs.retain(|d| d != dir);
    }
}

pub(crate) fn register_pid(pid: u32) {
    if let Ok(mut cleanup) = CLEANUP.lock() {
        cleanup.pids.push(pid);
    }
}

pub(crate) fn unregister_pid(pid: u32) {
    if let Ok(mut cleanup) = CLEANUP.lock() {
        cleanup.pids.retain(|&p| p != pid);
    }
}

/// Sends `signal` to `pid`.
pub(crate) fn signal(pid: u32, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return };
    // SAFETY: kill(2) only sends a signal; `pid` is a child this process started and has
    // not reaped yet (reaped children are unregistered first), so it names that child.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// Installs the Ctrl-C handler once: kill every registered process, remove the directory,
/// exit with 130.
pub(crate) fn install_interrupt_handler() -> Result<()> {
    ctrlc::set_handler(|| {
        eprintln!("\ninterrupted; stopping every process started and removing the temporary directory");
        let mut cleanup = match CLEANUP.lock() {
            Ok(cleanup) => cleanup,
            Err(poisoned) => poisoned.into_inner(),
        };
        for &pid in &cleanup.pids {
            signal(pid, libc::SIGKILL);
        }
        for dir in cleanup.dir.take().into_iter().chain(cleanup.more_dirs.drain(..)) {
            let _ = fs::remove_dir_all(dir);
        }
        std::process::exit(130);
    })
    .context("installing the Ctrl-C handler")
}

/// The built binaries.
pub(crate) struct Binaries {
    pub(crate) server: PathBuf,
    pub(crate) cli: PathBuf,
}

/// Builds rsl-kv's binaries in release and returns their paths.
pub(crate) fn build() -> Result<Binaries> {
    build_with_features(&[])
}

/// Builds rsl-kv's binaries in release with rsl-kv's cargo `features`.
pub(crate) fn build_with_features(features: &[&str]) -> Result<Binaries> {
    let [server, cli] =
        build::release_binaries_with_features("rsl-kv", features, ["rsl-kv-server", "rsl-kv"])?;
    Ok(Binaries { server, cli })
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub(crate) fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port on 127.0.0.1")?;
    Ok(listener.local_addr()?.port())
}

/// One replica process.
pub(crate) struct Node {
    id: u64,
    client_address: String,
    dir: PathBuf,
    log_file: PathBuf,
    child: Option<Child>,
}

impl Node {
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// The demo's processes and directory; dropping it kills and removes them.
pub(crate) struct Cluster {
    pub(crate) binaries: Binaries,
    pub(crate) root: PathBuf,
    pub(crate) nodes: Vec<Node>,
    members: String,
    clients: String,
    log: String,
    /// More `rsl-kv-server` flags for every replica.
    pub(crate) server_args: Vec<String>,
}

impl Cluster {
    /// Makes the temporary directory and picks the ports; starts nothing yet.
    fn create(binaries: Binaries, log: &str) -> Result<Cluster> {
        Cluster::create_named(binaries, log, "rsl-kv-demo")
    }

    /// [`Cluster::create`] with the temporary directory's name starting with `prefix`.
    pub(crate) fn create_named(binaries: Binaries, log: &str, prefix: &str) -> Result<Cluster> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let root = std::env::temp_dir().join(format!("{prefix}-{}-{nanos:08x}", std::process::id()));
        fs::create_dir(&root).with_context(|| format!("creating {}", root.display()))?;
        if let Ok(mut cleanup) = CLEANUP.lock() {
            cleanup.dir = Some(root.clone());
        }
        let mut cluster = Cluster {
            binaries,
            root: root.clone(),
            nodes: Vec::new(),
            members: String::new(),
            clients: String::new(),
            log: log.to_owned(),
            server_args: Vec::new(),
        };
        let mut members = Vec::new();
        let mut clients = Vec::new();
        for id in 1..=REPLICAS {
            let (replica_port, client_port) = (free_port()?, free_port()?);
            members.push(format!("{id}=127.0.0.1:{replica_port}"));
            clients.push(format!("{id}=127.0.0.1:{client_port}"));
            cluster.nodes.push(Node {
                id,
                client_address: format!("127.0.0.1:{client_port}"),
                dir: root.join(format!("node-{id}")),
                log_file: root.join(format!("node-{id}.log")),
                child: None,
            });
        }
        cluster.members = members.join(",");
        cluster.clients = clients.join(",");
        Ok(cluster)
    }

    pub(crate) fn servers(&self) -> String {
        self.nodes.iter().map(|n| n.client_address.as_str()).collect::<Vec<_>>().join(",")
    }

    fn node(&mut self, id: u64) -> Result<&mut Node> {
        self.nodes.iter_mut().find(|n| n.id == id).ok_or_else(|| anyhow!("no node {id} in the demo"))
    }

    /// Starts (or restarts) node `id`; its output is appended to its log file.
    pub(crate) fn start(&mut self, id: u64) -> Result<u32> {
        let (server, members, clients, log) =
            (self.binaries.server.clone(), self.members.clone(), self.clients.clone(), self.log.clone());
        let extra = self.server_args.clone();
        let node = self.node(id)?;
        let output = File::options()
            .create(true)
            .append(true)
            .open(&node.log_file)
            .with_context(|| format!("opening {}", node.log_file.display()))?;
        let child = Command::new(&server)
            .args(["--node", &id.to_string(), "--members", &members, "--clients", &clients, "--log", &log])
            .arg("--data-dir")
            .arg(&node.dir)
            .args(&extra)
            .env("RUST_LOG", "warn,rsl_kv=info")
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output)
            .spawn()
            .with_context(|| format!("starting {}", server.display()))?;
        let pid = child.id();
        register_pid(pid);
        node.child = Some(child);
        Ok(pid)
    }

    /// Kills node `id` with SIGKILL and reaps it.
    fn kill(&mut self, id: u64) -> Result<u32> {
        let node = self.node(id)?;
        let mut child = node.child.take().ok_or_else(|| anyhow!("node {id} is not running"))?;
        let pid = child.id();
        child.kill().with_context(|| format!("killing node {id} (pid {pid})"))?;
        child.wait().with_context(|| format!("reaping node {id} (pid {pid})"))?;
        unregister_pid(pid);
        Ok(pid)
    }

    /// Asks every replica to stop (SIGTERM), waits, kills whatever is left. Returns how
    /// many stopped by themselves.
    pub(crate) fn stop_all(&mut self) -> usize {
        for node in &self.nodes {
            if let Some(pid) = node.pid() {
                signal(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        let mut graceful = 0;
        for node in &mut self.nodes {
            let Some(mut child) = node.child.take() else { continue };
            let pid = child.id();
            loop {
                match child.try_wait() {
                    Ok(Some(status)) => {
                        graceful += usize::from(status.success());
                        break;
                    }
                    Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
            unregister_pid(pid);
        }
        graceful
    }

    /// The last lines of every replica's log, for a failure report.
    pub(crate) fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            let text = fs::read_to_string(&node.log_file).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- node {} ({}) ---\n", node.id, node.log_file.display()));
            for line in &all[all.len().saturating_sub(lines)..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// One `rsl-kv status --json` over every replica: the reachable ones' statuses.
    pub(crate) fn statuses(&self) -> Result<Vec<Status>> {
        let output = Command::new(&self.binaries.cli)
            .args(["--servers", &self.servers(), "--timeout-ms", "2000", "status", "--json"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .context("running `rsl-kv status`")?;
        let rows: Value = serde_json::from_slice(&output.stdout).with_context(|| {
            format!("`rsl-kv status --json` printed: {}", String::from_utf8_lossy(&output.stdout))
        })?;
        Ok(rows
            .as_array()
            .map(|rows| rows.iter().filter_map(Status::from_json).collect())
            .unwrap_or_default())
    }

    /// Polls until `found` returns something or `timeout` passes.
    pub(crate) fn wait_for<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut found: impl FnMut(&[Status]) -> Option<T>,
    ) -> Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            let statuses = self.statuses()?;
            if let Some(value) = found(&statuses) {
                return Ok(value);
            }
            if Instant::now() >= deadline {
                let seen: Vec<String> = statuses.iter().map(Status::summary).collect();
                bail!(
                    "timed out after {:?} waiting for {what}; last statuses: [{}]",
                    timeout,
                    seen.join("; ")
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let pid = child.id();
                let _ = child.kill();
                let _ = child.wait();
                unregister_pid(pid);
            }
        }
        let _ = fs::remove_dir_all(&self.root);
        if let Ok(mut cleanup) = CLEANUP.lock() {
            cleanup.dir = None;
        }
    }
}

/// A child process killed and reaped when dropped (the load generator).
pub(crate) struct KillOnDrop(pub(crate) Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let pid = self.0.id();
        let _ = self.0.kill();
        let _ = self.0.wait();
        unregister_pid(pid);
    }
}

/// One replica's status, from `rsl-kv status --json`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Status {
    pub(crate) node: u64,
    pub(crate) role: String,
    primary: u64,
    ballot: String,
    pub(crate) chosen: u64,
    pub(crate) applied: u64,
    checkpoint: u64,
    checkpoints_installed: u64,
    digest: String,
    keys: u64,
}

impl Status {
    fn from_json(row: &Value) -> Option<Status> {
        Some(Status {
            node: row["node"].as_u64()?,
            role: row["role"].as_str()?.to_owned(),
            primary: row["primary"].as_u64()?,
            ballot: row["ballot"].as_str()?.to_owned(),
            chosen: row["chosen"].as_u64()?,
            applied: row["applied"].as_u64()?,
            checkpoint: row["checkpoint"].as_u64()?,
            checkpoints_installed: row["checkpoints_installed"].as_u64().unwrap_or(0),
            digest: row["digest"].as_str()?.to_owned(),
            keys: row["keys"].as_u64()?,
        })
    }

    fn summary(&self) -> String {
        format!("node {} {} applied {} digest {}", self.node, self.role, self.applied, self.digest)
    }
}

/// The primary among `statuses`, if exactly one replica says it is.
pub(crate) fn primary_of(statuses: &[Status]) -> Option<&Status> {
    let mut primaries = statuses.iter().filter(|s| s.role == "primary");
    match (primaries.next(), primaries.next()) {
        (Some(primary), None) => Some(primary),
        _ => None,
    }
}

/// What the fault scenario observed.
struct Scenario {
    killed: u64,
    new_primary: u64,
    new_ballot: String,
    failover: Duration,
    caught_up_slot: u64,
    catch_up: Duration,
    how: String,
}

pub(crate) fn seconds(duration: Duration) -> String {
    format!("{:.2} s", duration.as_secs_f64())
}

/// Prints above the progress bar (or plainly when there is none).
fn say(bar: &ProgressBar, elapsed: Duration, text: &str) {
    bar.suspend(|| eprintln!("  [{:>5.1} s] {text}", elapsed.as_secs_f64()));
}

/// Kills the primary at 30% of the load, times the failover, restarts it at 50% (or two
/// seconds after the failover, if later) and waits until it caught up.
fn scenario(
    cluster: &mut Cluster,
    bar: &ProgressBar,
    started: Instant,
    duration: Duration,
) -> Result<Scenario> {
    std::thread::sleep((started + duration.mul_f64(0.3)).saturating_duration_since(Instant::now()));
    let primary = cluster.wait_for(SETTLE_TIMEOUT, "a primary to kill", |s| primary_of(s).map(|p| p.node))?;
    let pid = cluster.kill(primary)?;
    let killed_at = Instant::now();
    say(bar, started.elapsed(), &format!("killed node {primary} (the primary, pid {pid}) with SIGKILL"));

    // The first successful write after the kill, through a fresh client that knows
    // nothing: it finds the new primary the way any client would.
    let probe = Command::new(&cluster.binaries.cli)
        .args(["--servers", &cluster.servers(), "--timeout-ms", "20000", "put", "demo:failover", "probe"])
        .stdin(Stdio::null())
        .output()
        .context("running the failover probe `rsl-kv put`")?;
    let failover = killed_at.elapsed();
    if !probe.status.success() {
        bail!(
            "no write succeeded after the primary was killed: {}",
            String::from_utf8_lossy(&probe.stderr).trim()
        );
    }
    let (new_primary, new_ballot) = cluster.wait_for(SETTLE_TIMEOUT, "the new primary", |s| {
        primary_of(s).filter(|p| p.node != primary).map(|p| (p.node, p.ballot.clone()))
    })?;
    say(
        bar,
        started.elapsed(),
        &format!("node {new_primary} is the new primary (ballot {new_ballot}); first write succeeded {} after the kill", seconds(failover)),
    );

    let restart_at = (started + duration.mul_f64(0.5)).max(Instant::now() + Duration::from_secs(2));
    std::thread::sleep(restart_at.saturating_duration_since(Instant::now()));
    let target =
        cluster.wait_for(SETTLE_TIMEOUT, "the primary's chosen slot", |s| primary_of(s).map(|p| p.chosen))?;
    let pid = cluster.start(primary)?;
    let restarted_at = Instant::now();
    say(
        bar,
        started.elapsed(),
        &format!("restarted node {primary} (pid {pid}); the primary has chosen slot {target}"),
    );
    let caught_up =
        cluster.wait_for(SETTLE_TIMEOUT + duration, "the restarted replica to catch up", |s| {
            s.iter().find(|s| s.node == primary && s.applied >= target).cloned()
        })?;
    let catch_up = restarted_at.elapsed();
    let how = match caught_up.checkpoints_installed {
        0 => "by fetching the slots it missed".to_owned(),
        _ => format!(
            "by installing a checkpoint fetched from a peer (slot {}) and replaying the slots after it",
            caught_up.checkpoint
        ),
    };
    say(
        bar,
        started.elapsed(),
        &format!(
            "node {primary} caught up in {}: applied slot {} >= {target}, {how}",
            seconds(catch_up),
            caught_up.applied
        ),
    );
    Ok(Scenario {
        killed: primary,
        new_primary,
        new_ballot,
        failover,
        caught_up_slot: caught_up.applied,
        catch_up,
        how,
    })
}

/// Reads the load generator's JSON lines, moving the bar; returns the final report.
fn follow_load(load: &mut KillOnDrop, bar: &ProgressBar, started: Instant) -> Result<Value> {
    let stdout = load.0.stdout.take().ok_or_else(|| anyhow!("the load generator's stdout is not piped"))?;
    let mut report = None;
    let mut last_plain = Instant::now();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading the load generator's output")?;
        let Ok(message) = serde_json::from_str::<Value>(&line) else {
            bar.suspend(|| eprintln!("  load: {line}"));
            continue;
        };
        match message["type"].as_str() {
            Some("progress") => {
                let elapsed_ms = message["elapsed_ms"].as_u64().unwrap_or(0);
                let ops = message["ops"].as_u64().unwrap_or(0);
                let errors = message["errors"].as_u64().unwrap_or(0);
                let rate = ops as f64 / (elapsed_ms.max(1) as f64 / 1000.0);
                bar.set_position(elapsed_ms.min(bar.length().unwrap_or(u64::MAX)));
                bar.set_message(format!("{ops} ops, {rate:.0} ops/s, {errors} errors"));
                if bar.is_hidden() && last_plain.elapsed() >= Duration::from_secs(5) {
                    last_plain = Instant::now();
                    eprintln!(
                        "  [{:>5.1} s] {ops} ops, {rate:.0} ops/s, {errors} errors",
                        started.elapsed().as_secs_f64()
                    );
                }
            }
            Some("result") => report = Some(message),
            _ => {}
        }
    }
    let status = load.0.wait().context("waiting for the load generator")?;
    if !status.success() {
        bail!("the load generator (`rsl-kv load`) failed: {status}");
    }
    report.ok_or_else(|| anyhow!("the load generator printed no result"))
}

fn latency_line(latency: &Value) -> String {
    let field = |name: &str| latency[name].as_u64().unwrap_or(0);
    format!(
        "p50 {:>7}  p90 {:>7}  p99 {:>7}  p99.9 {:>7}  max {:>8}",
        field("p50_us"),
        field("p90_us"),
        field("p99_us"),
        field("p999_us"),
        field("max_us")
    )
}

/// Runs the demo.
pub fn run(args: &DemoArgs) -> Result<()> {
    let demo_started = Instant::now();
    let binaries = build()?;
    install_interrupt_handler()?;
    let mut cluster = Cluster::create(binaries, &args.log)?;
    let result = run_on(&mut cluster, args);
    if result.is_err() {
        eprintln!("demo: failed; the last lines of each replica's log:\n{}", cluster.log_tails(15));
    }
    let graceful = cluster.stop_all();
    let root = cluster.root.clone();
    drop(cluster);
    let report = result?;
    eprintln!(
        "demo: stopped {graceful} of {REPLICAS} replicas with SIGTERM, removed {}; finished in {}",
        root.display(),
        seconds(demo_started.elapsed())
    );
    println!("{report}");
    Ok(())
}

/// The demo proper; returns the summary to print.
fn run_on(cluster: &mut Cluster, args: &DemoArgs) -> Result<String> {
    eprintln!("demo: data and logs in {}", cluster.root.display());
    for id in 1..=REPLICAS {
        let pid = cluster.start(id)?;
        let node = cluster.node(id)?;
        eprintln!(
            "  node {id}: pid {pid}, clients on {}, {} log in {}",
            node.client_address,
            args.log,
            node.dir.display()
        );
    }
    let waiting = Instant::now();
    let (primary, ballot) = cluster.wait_for(SETTLE_TIMEOUT, "a primary", |s| {
        (s.len() as u64 == REPLICAS).then(|| primary_of(s).map(|p| (p.node, p.ballot.clone()))).flatten()
    })?;
    eprintln!("demo: node {primary} is primary (ballot {ballot}) after {}", seconds(waiting.elapsed()));

    let duration = Duration::from_secs(args.duration);
    eprintln!(
        "demo: load: {} clients for {} s, {}% linearizable gets, the rest 64-byte puts over 1000 keys",
        args.clients, args.duration, args.read_percent
    );
    let load = Command::new(&cluster.binaries.cli)
        .args(["--servers", &cluster.servers(), "load"])
        .args(["--clients", &args.clients.to_string(), "--duration", &args.duration.to_string()])
        .args(["--read-percent", &args.read_percent.to_string(), "--progress-ms", "250"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting `rsl-kv load`")?;
    register_pid(load.id());
    let mut load = KillOnDrop(load);
    let started = Instant::now();
    let bar = ProgressBar::new(duration.as_millis() as u64);
    let style = ProgressStyle::with_template("  {spinner} [{elapsed:>3}] {wide_bar} {msg}")
        .map_err(|error| anyhow!("progress bar template: {error}"))?;
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(120));

    let (report, scenario) = std::thread::scope(|scope| {
        let events = scope.spawn(|| scenario(cluster, &bar, started, duration));
        let report = follow_load(&mut load, &bar, started);
        let scenario = events.join().unwrap_or_else(|_| Err(anyhow!("the fault scenario thread panicked")));
        (report, scenario)
    });
    bar.finish_and_clear();
    let (report, scenario) = (report?, scenario?);

    // After the load: every replica at the same slot with the same digest.
    let agreed = cluster.wait_for(SETTLE_TIMEOUT, "all replicas to agree", |s| {
        let first = s.first()?;
        let primary = primary_of(s)?;
        let same = s.len() as u64 == REPLICAS
            && s.iter()
                .all(|x| x.applied == primary.chosen && x.digest == first.digest && x.keys == first.keys);
        same.then(|| s.to_vec())
    })?;
    eprintln!("demo: replicas after the load:");
    for status in &agreed {
        eprintln!(
            "  node {} {:<9} applied {:>8}  checkpoint {:>8}  keys {:>5}  digest {}",
            status.node, status.role, status.applied, status.checkpoint, status.keys, status.digest
        );
    }

    let number = |key: &str| report[key].as_u64().unwrap_or(0);
    let mut summary = String::new();
    summary.push_str("demo summary\n");
    summary.push_str(&format!(
        "  replicas     {REPLICAS} rsl-kv-server processes, {} logs, gRPC on 127.0.0.1\n",
        args.log
    ));
    summary.push_str(&format!(
        "  load         {} clients, {:.1} s, {}% linearizable gets / 64-byte puts\n",
        args.clients,
        report["duration_s"].as_f64().unwrap_or(0.0),
        args.read_percent
    ));
    summary.push_str(&format!(
        "  throughput   {:.0} ops/s ({} ops: {} puts, {} gets), {} errors\n",
        report["throughput_ops_per_s"].as_f64().unwrap_or(0.0),
        number("ops"),
        number("writes"),
        number("reads"),
        number("errors"),
    ));
    summary.push_str(&format!("  latency µs   all   {}\n", latency_line(&report["latency"])));
    summary.push_str(&format!("               puts  {}\n", latency_line(&report["write_latency"])));
    summary.push_str(&format!("               gets  {}\n", latency_line(&report["read_latency"])));
    summary.push_str(&format!(
        "  failover     killed primary node {}; node {} took over (ballot {}); first write {} after the kill\n",
        scenario.killed,
        scenario.new_primary,
        scenario.new_ballot,
        seconds(scenario.failover)
    ));
    summary.push_str(&format!(
        "  catch-up     node {} restarted and reached slot {} within {},\n               {}\n",
        scenario.killed,
        scenario.caught_up_slot,
        seconds(scenario.catch_up),
        scenario.how
    ));
    let first = &agreed[0];
    summary.push_str(&format!(
        "  agreement    all {REPLICAS} replicas at slot {} with digest {} ({} keys)",
        first.applied, first.digest, first.keys
    ));
    if let Some(samples) = report["error_samples"].as_array().filter(|s| !s.is_empty()) {
        summary.push_str("\n  load errors (samples):");
        for sample in samples {
            summary.push_str(&format!("\n    {}", sample.as_str().unwrap_or_default()));
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_parse_and_the_primary_must_be_unique() {
        let rows: Value = serde_json::from_str(
            r#"[{"server":"a","node":1,"role":"primary","primary":1,"ballot":"2.1","chosen":10,"applied":10,
                 "checkpoint":0,"digest":"0000abcd","keys":3},
                {"server":"b","error":"unreachable"},
                {"server":"c","node":3,"role":"secondary","primary":1,"ballot":"2.1","chosen":9,"applied":9,
                 "checkpoint":0,"digest":"0000abcd","keys":3}]"#,
        )
        .unwrap();
        let statuses: Vec<Status> = rows.as_array().unwrap().iter().filter_map(Status::from_json).collect();
        assert_eq!(statuses.len(), 2);
        assert_eq!(primary_of(&statuses).map(|p| p.node), Some(1));
        let mut two = statuses.clone();
        two[1].role = "primary".into();
        assert_eq!(primary_of(&two), None);
        assert_eq!(primary_of(&[]), None);
    }

    #[test]
    fn free_ports_are_real_ports() {
        let ports: Vec<u16> = (0..4).map(|_| free_port().unwrap()).collect();
        assert!(ports.iter().all(|&p| p > 0));
    }

    #[test]
    fn latency_lines_name_every_percentile() {
        let latency = serde_json::json!({"p50_us": 1, "p90_us": 2, "p99_us": 3, "p999_us": 4, "max_us": 5});
        let line = latency_line(&latency);
        for part in ["p50", "p90", "p99 ", "p99.9", "max"] {
            assert!(line.contains(part), "{line}");
        }
    }
}
