//! Fault-injection runs against a ring of five real `rsl-kv-server` processes: clients
//! record a history while nemeses, scheduled from a seed, partition, kill, pause, slow
//! down, corrupt and fill up the replicas; at the end everything is healed and the history
//! is checked for linearizability, acknowledged writes and agreement of the replicas.
//!
//! [`run`] does one run; the `rsl-fault` binary (and `cargo xtask fault`) drive it. See
//! [`net`] for how replicas are separated (network namespaces as root, loopback and
//! proxies otherwise) and [`Nemesis`] for each fault.

pub mod history;
pub mod net;
pub mod proxy;
pub mod stream;
pub mod workload;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rsl_core::SplitMix64;
use rsl_kv::Client;

use crate::fault::history::{check_linearizable, lost_writes, Function, History, Outcome, Verdict};
use crate::fault::net::{Mode, Network};
use crate::fault::workload::{client_options, parse_value, Workload, WorkloadOptions};
use crate::process::{ClusterOptions, ProcessCluster};

/// Replicas in a fault run.
pub const REPLICAS: u64 = 5;
/// A gap without any committed write longer than this is an unavailability window.
pub const UNAVAILABLE_AFTER: Duration = Duration::from_secs(1);
/// Longest wait for the healed ring to elect, serve and converge.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the runner looks at the replicas while it waits.
const TICK: Duration = Duration::from_millis(100);

/// One kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Nemesis {
    /// Two replicas cut off from the other three, both ways.
    PartitionMajority,
    /// The primary cut off from everyone, both ways.
    IsolatePrimary,
    /// Two pairs that cannot reach each other, and a fifth replica that reaches all.
    Bridge,
    /// The primary stops hearing the others, or the others stop hearing it.
    OneWay,
    /// SIGKILL one or two random replicas; restart them when the fault ends.
    Kill,
    /// SIGKILL the primary; restart it when the fault ends.
    KillPrimary,
    /// SIGSTOP one or two replicas (the primary half the time); SIGCONT when it ends.
    Pause,
    /// Every replica link delays its bytes by tens of milliseconds.
    Delay,
    /// Messages between replicas are lost (packets in namespaces, connections on loopback).
    Loss,
    /// SIGKILL a replica, leave a torn write after the end of its log, restart it: the
    /// recovery must cut it and report it.
    TornTail,
    /// SIGKILL a replica, flip a byte in a record of its log that was synced before later
    /// ones, restart it: it must refuse to start, naming the file and offset. The byte is
    /// then restored and it starts.
    Corrupt,
    /// Fill a replica's disk to the last byte (half the time also SIGKILL and restart it:
    /// it must start or refuse, saying why), then free it; a replica that stopped is
    /// restarted, one that kept running must go on by itself (namespace mode only: each
    /// replica has a bounded tmpfs).
    DiskFull,
}

impl Nemesis {
    /// Every nemesis.
    pub const ALL: [Nemesis; 12] = [
        Nemesis::PartitionMajority,
        Nemesis::IsolatePrimary,
        Nemesis::Bridge,
        Nemesis::OneWay,
        Nemesis::Kill,
        Nemesis::KillPrimary,
        Nemesis::Pause,
        Nemesis::Delay,
        Nemesis::Loss,
        Nemesis::TornTail,
        Nemesis::Corrupt,
        Nemesis::DiskFull,
    ];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Nemesis::PartitionMajority => "partition",
            Nemesis::IsolatePrimary => "isolate-primary",
            Nemesis::Bridge => "bridge",
            Nemesis::OneWay => "one-way",
            Nemesis::Kill => "kill",
            Nemesis::KillPrimary => "kill-primary",
            Nemesis::Pause => "pause",
            Nemesis::Delay => "delay",
            Nemesis::Loss => "loss",
            Nemesis::TornTail => "torn-tail",
            Nemesis::Corrupt => "corrupt",
            Nemesis::DiskFull => "disk-full",
        }
    }

    /// Parses a comma-separated list of names (or `all`).
    pub fn parse_list(text: &str) -> Result<Vec<Nemesis>, String> {
        let mut list = Vec::new();
        for name in text.split(',').map(str::trim).filter(|name| !name.is_empty()) {
            if name == "all" {
                list.extend(Nemesis::ALL);
                continue;
            }
            let nemesis = Nemesis::ALL.into_iter().find(|n| n.name() == name).ok_or_else(|| {
                let names: Vec<&str> = Nemesis::ALL.iter().map(|n| n.name()).collect();
                format!("unknown nemesis `{name}`; expected `all` or some of {}", names.join(", "))
            })?;
            list.push(nemesis);
        }
        list.sort();
        list.dedup();
        if list.is_empty() {
            return Err("no nemesis given".into());
        }
        Ok(list)
    }
}

/// How to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The `rsl-kv-server` binary.
    pub server: PathBuf,
    /// Seeds the schedule, the clients' choices and the proxies.
    pub seed: u64,
    /// How long faults are injected (the healed recovery and checks come after).
    pub duration: Duration,
    /// Which faults.
    pub nemeses: Vec<Nemesis>,
    /// Namespaces or loopback.
    pub mode: Mode,
    /// Cycle through every nemesis in a seeded order, so a short run sees each kind.
    pub round_robin: bool,
    /// Keep the history (and, on failure, the replica logs) here.
    pub history_dir: Option<PathBuf>,
    /// Where a failing run saves its history and logs when `history_dir` is not given.
    pub failure_dir: PathBuf,
    /// Concurrent client sessions.
    pub clients: u64,
    /// Keys.
    pub keys: u64,
    /// Clients read with fast reads from any replica, which are not linearizable: the run
    /// must then find a violation (a check of the checking).
    pub fast_reads: bool,
    /// Clients share one batched `Stream` call instead of unary calls.
    pub stream: bool,
    /// Set on Ctrl-C: the run stops injecting faults, cleans up and fails.
    pub interrupted: Arc<AtomicBool>,
}

/// The figures of a run.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Operations by outcome.
    pub ok: u64,
    /// See `ok`.
    pub fail: u64,
    /// See `ok`.
    pub info: u64,
    /// Linearizability violations found (0 or 1: the checker stops at the first key).
    pub violations: u64,
    /// Acknowledged writes, and those the final state contradicts.
    pub acknowledged_writes: u64,
    /// See `acknowledged_writes`.
    pub lost_writes: u64,
    /// Primary killed -> next committed write, one per primary kill that was followed by one.
    pub failovers: Vec<Duration>,
    /// Gaps without a committed write longer than [`UNAVAILABLE_AFTER`].
    pub unavailable: Vec<Duration>,
    /// Faults injected, by name.
    pub faults: BTreeMap<&'static str, u64>,
    /// Everything that went wrong (empty: the run passed).
    pub problems: Vec<String>,
    /// Where the history (and on failure the logs) were saved.
    pub saved: Option<PathBuf>,
    /// Seconds the run took, setup to checks.
    pub seconds: f64,
}

impl Report {
    /// Whether the run passed.
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Percentile `p` (0..=100) of sorted `values`.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64)).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| format!("{}ms", d.as_millis());
        writeln!(f, "  operations: ok={} fail={} info={}", self.ok, self.fail, self.info)?;
        writeln!(f, "  linearizability violations: {}", self.violations)?;
        writeln!(
            f,
            "  acknowledged writes: {}, lost: {} (every acknowledged write present at the end: {})",
            self.acknowledged_writes,
            self.lost_writes,
            if self.lost_writes == 0 { "yes" } else { "NO" }
        )?;
        let mut failovers = self.failovers.clone();
        failovers.sort();
        writeln!(
            f,
            "  failover (primary killed -> next committed write): n={} p50={} p99={} max={}",
            failovers.len(),
            ms(percentile(&failovers, 50.0)),
            ms(percentile(&failovers, 99.0)),
            ms(failovers.last().copied().unwrap_or_default())
        )?;
        let total: Duration = self.unavailable.iter().sum();
        writeln!(
            f,
            "  unavailability (no write committed for >{}s): windows={} total={} longest={}",
            UNAVAILABLE_AFTER.as_secs(),
            self.unavailable.len(),
            ms(total),
            ms(self.unavailable.iter().max().copied().unwrap_or_default())
        )?;
        let faults: Vec<String> = self.faults.iter().map(|(name, n)| format!("{name}={n}")).collect();
        write!(f, "  faults: {}", faults.join(" "))
    }
}

/// What to undo when a fault ends.
#[derive(Debug)]
enum Undo {
    Nothing,
    Network,
    Restart(Vec<u64>),
    Resume(Vec<u64>),
    /// The replica, and how much of its stderr was written before its disk filled.
    FreeDiskAndRestart(u64, usize),
}

/// One run in progress.
struct Runner {
    options: RunOptions,
    rng: SplitMix64,
    cluster: ProcessCluster,
    network: Network,
    history: History,
    /// For status polls: short timeouts.
    status_client: Client,
    paused: BTreeSet<u64>,
    /// Replicas allowed to exit on their own now (the disk-full victim).
    may_exit: BTreeSet<u64>,
    /// When a primary was killed, ns since the start.
    primary_kills: Vec<u64>,
    faults: BTreeMap<&'static str, u64>,
    problems: Vec<String>,
    /// The schedule as it happened, for the failure report.
    events: Vec<String>,
}

/// Runs one fault run and returns its figures (a failure is a report with problems; an
/// `Err` is a run that could not be set up).
pub fn run(options: &RunOptions) -> Result<Report, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start a tokio runtime: {error}"))?;
    let result = runtime.block_on(run_async(options));
    runtime.shutdown_timeout(Duration::from_secs(2));
    result
}

async fn run_async(options: &RunOptions) -> Result<Report, String> {
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("rsl-fault-")
        .tempdir()
        .map_err(|error| format!("making a temporary directory: {error}"))?;
    let network =
        Network::create(options.mode, &(1..=REPLICAS).collect::<Vec<_>>(), options.seed, dir.path())?;
    let mut args = vec![
        "--heartbeat-interval-ms=25".to_owned(),
        "--election-delay-min-ms=250".to_owned(),
        "--election-delay-max-ms=500".to_owned(),
        "--checkpoint-interval-slots=300".to_owned(),
        "--log-retain-slots=100".to_owned(),
    ];
    args.push("--pipeline-depth=16".to_owned());
    let cluster_options = ClusterOptions { replicas: REPLICAS, log: "file".into(), args, metrics: false };
    let cluster = ProcessCluster::create_with_layout(&options.server, cluster_options, network.layouts());
    let history_path = match &options.history_dir {
        Some(dir) => {
            fs::create_dir_all(dir).map_err(|error| format!("creating {}: {error}", dir.display()))?;
            Some(dir.join(format!("history-seed-{}.jsonl", options.seed)))
        }
        None => None,
    };
    let history = History::new(started, history_path.as_deref())
        .map_err(|error| format!("creating the history file: {error}"))?;
    let status_client = Client::new(
        cluster.client_addresses(),
        rsl_kv::ClientOptions {
            attempt_timeout: Duration::from_millis(500),
            ..client_options(Duration::from_secs(1))
        },
    )
    .map_err(|error| error.to_string())?;
    let mut runner = Runner {
        options: options.clone(),
        rng: SplitMix64::new(options.seed),
        cluster,
        network,
        history,
        status_client,
        paused: BTreeSet::new(),
        may_exit: BTreeSet::new(),
        primary_kills: Vec::new(),
        faults: BTreeMap::new(),
        problems: Vec::new(),
        events: Vec::new(),
    };
    let mut report = runner.run().await;
    report.seconds = started.elapsed().as_secs_f64();
    if let Err(error) = runner.history.flush() {
        report.problems.push(format!("writing the history: {error}"));
    }
    if !report.passed() || options.history_dir.is_some() {
        report.saved = Some(runner.save(&report)?);
    }
    // Dropping the runner kills every replica, then removes the namespaces and disks.
    drop(runner);
    drop(dir);
    Ok(report)
}

impl Runner {
    fn now_ns(&self) -> u64 {
        self.history.now_ns()
    }

    fn note(&mut self, event: String) {
        let line = format!("{:>9.3}s {event}", self.now_ns() as f64 / 1e9);
        eprintln!("fault: {line}");
        self.events.push(line);
    }

    fn problem(&mut self, problem: String) {
        self.note(format!("PROBLEM: {problem}"));
        self.problems.push(problem);
    }

    async fn run(&mut self) -> Report {
        for id in self.cluster.ids() {
            if let Err(problem) = self.cluster.try_spawn(id, &[]) {
                self.problem(format!("replica {id} did not start: {problem}"));
                return self.report(Vec::new());
            }
        }
        if self.primary(Duration::from_secs(30)).await.is_none() {
            self.problem("no primary was elected within 30s of the start".into());
            return self.report(Vec::new());
        }
        self.note(format!("{} replicas up ({})", REPLICAS, self.network.mode().name()));

        let workload = Workload::start(
            self.cluster.client_addresses(),
            self.history.clone(),
            WorkloadOptions {
                clients: self.options.clients,
                keys: self.options.keys,
                operation_timeout: Duration::from_millis(2000),
                think_ms_max: 10,
                fast_reads: self.options.fast_reads,
                stream: self.options.stream,
            },
            self.options.seed,
        );

        self.inject().await;
        self.heal_all().await;
        let healed_ns = self.now_ns();
        self.note("healed: no faults from now on".into());
        // Liveness: the healed ring commits writes again.
        let deadline = Instant::now() + RECOVERY_TIMEOUT;
        loop {
            let committed = self.history.operations().iter().any(|op| {
                op.acknowledged_write() && op.complete_ns.is_some_and(|t| t > healed_ns + 1_000_000_000)
            });
            if committed {
                break;
            }
            if Instant::now() > deadline {
                self.problem(format!("no write committed within {RECOVERY_TIMEOUT:?} after healing"));
                break;
            }
            self.watch_exits();
            tokio::time::sleep(TICK).await;
        }
        workload.stop().await;
        let final_values = self.final_reads().await;
        self.check_convergence().await;
        self.report(final_values)
    }

    /// Injects faults until the duration is over (or Ctrl-C).
    async fn inject(&mut self) {
        let end = Instant::now() + self.options.duration;
        let mut order: Vec<Nemesis> = self.options.nemeses.clone();
        if self.network.mode() == Mode::Loopback && order.contains(&Nemesis::DiskFull) {
            order.retain(|&n| n != Nemesis::DiskFull);
            self.note("disk-full skipped: it needs a bounded disk per replica (root, namespace mode)".into());
        }
        if order.is_empty() {
            self.sleep_until(end).await;
            return;
        }
        // A seeded shuffle; round-robin walks it, otherwise each pick is random.
        for i in (1..order.len()).rev() {
            let j = self.rng.below(i as u64 + 1) as usize;
            order.swap(i, j);
        }
        let mut next = 0;
        while Instant::now() < end && !self.interrupted() {
            let calm = Duration::from_millis(self.rng.between(1000, 2500));
            self.sleep_until((Instant::now() + calm).min(end)).await;
            if Instant::now() >= end || self.interrupted() {
                break;
            }
            let nemesis = if self.options.round_robin {
                next += 1;
                order[(next - 1) % order.len()]
            } else {
                order[self.rng.below(order.len() as u64) as usize]
            };
            let hold = Duration::from_millis(self.rng.between(2000, 5000));
            let undo = self.start_fault(nemesis).await;
            *self.faults.entry(nemesis.name()).or_default() += 1;
            self.sleep_until(Instant::now() + hold).await;
            self.end_fault(undo).await;
        }
        if self.interrupted() {
            self.problem("interrupted (Ctrl-C)".into());
        }
    }

    fn interrupted(&self) -> bool {
        self.options.interrupted.load(Ordering::Relaxed)
    }

    /// Sleeps until `until`, watching for replicas that exit on their own.
    async fn sleep_until(&mut self, until: Instant) {
        while Instant::now() < until && !self.interrupted() {
            self.watch_exits();
            tokio::time::sleep(TICK.min(until.saturating_duration_since(Instant::now()))).await;
        }
    }

    /// Records replicas that exited without being told to.
    fn watch_exits(&mut self) {
        for id in self.cluster.ids() {
            if let Some(status) = self.cluster.exited(id) {
                let tail = tail(&self.cluster.stderr(id), 5);
                if self.may_exit.contains(&id) {
                    self.note(format!("replica {id} exited ({status}) with its disk full:\n{tail}"));
                } else {
                    self.problem(format!(
                        "replica {id} exited on its own ({status}); its last lines:\n{tail}"
                    ));
                }
            }
        }
    }

    /// The current primary among running, unpaused replicas (the highest ballot that says
    /// so), waiting up to `timeout` for one.
    async fn primary(&mut self, timeout: Duration) -> Option<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut best: Option<(u64, u64, u64)> = None;
            for id in self.cluster.ids() {
                if !self.cluster.is_running(id) || self.paused.contains(&id) {
                    continue;
                }
                let address = self.cluster.client_address(id).to_owned();
                if let Ok(status) = self.status_client.status_of(&address).await {
                    let ballot = (status.ballot_round, status.ballot_node);
                    if status.role == "primary" && best.is_none_or(|(r, n, _)| (r, n) < ballot) {
                        best = Some((ballot.0, ballot.1, id));
                    }
                }
            }
            if let Some((_, _, id)) = best {
                return Some(id);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(TICK).await;
        }
    }

    /// The primary if one is known right now, else a random running replica.
    async fn primary_or_any(&mut self) -> u64 {
        match self.primary(Duration::ZERO).await {
            Some(id) => id,
            None => self.pick(1)[0],
        }
    }

    /// `n` distinct random replica ids.
    fn pick(&mut self, n: usize) -> Vec<u64> {
        let mut ids = self.cluster.ids();
        for i in (1..ids.len()).rev() {
            let j = self.rng.below(i as u64 + 1) as usize;
            ids.swap(i, j);
        }
        ids.truncate(n);
        ids
    }

    fn cut_between(&mut self, a: &[u64], b: &[u64]) -> BTreeSet<(u64, u64)> {
        let mut cuts = BTreeSet::new();
        for &x in a {
            for &y in b {
                cuts.insert((x, y));
                cuts.insert((y, x));
            }
        }
        cuts
    }

    fn set_cuts(&mut self, cuts: &BTreeSet<(u64, u64)>) -> Undo {
        match self.network.set_cuts(cuts) {
            Ok(()) => Undo::Network,
            Err(error) => {
                self.problem(format!("cutting links: {error}"));
                Undo::Network
            }
        }
    }

    async fn start_fault(&mut self, nemesis: Nemesis) -> Undo {
        match nemesis {
            Nemesis::PartitionMajority => {
                let ids = self.pick(REPLICAS as usize);
                let (minority, majority) = ids.split_at(2);
                let cuts = self.cut_between(minority, majority);
                self.note(format!("partition {minority:?} | {majority:?}"));
                self.set_cuts(&cuts)
            }
            Nemesis::IsolatePrimary => {
                let primary = self.primary_or_any().await;
                let others: Vec<u64> = self.cluster.ids().into_iter().filter(|&id| id != primary).collect();
                let cuts = self.cut_between(&[primary], &others);
                self.note(format!("isolate the primary {primary}"));
                self.set_cuts(&cuts)
            }
            Nemesis::Bridge => {
                let ids = self.pick(REPLICAS as usize);
                let cuts = self.cut_between(&ids[0..2], &ids[3..5]);
                self.note(format!("bridge {:?} - {} - {:?}", &ids[0..2], ids[2], &ids[3..5]));
                self.set_cuts(&cuts)
            }
            Nemesis::OneWay => {
                let primary = self.primary_or_any().await;
                let others: Vec<u64> = self.cluster.ids().into_iter().filter(|&id| id != primary).collect();
                let deaf = self.rng.below(2) == 0;
                let cuts: BTreeSet<(u64, u64)> = others
                    .iter()
                    .map(|&other| if deaf { (other, primary) } else { (primary, other) })
                    .collect();
                self.note(if deaf {
                    format!("one-way: the primary {primary} hears nobody")
                } else {
                    format!("one-way: nobody hears the primary {primary}")
                });
                self.set_cuts(&cuts)
            }
            Nemesis::Kill => {
                let n = 1 + self.rng.below(2) as usize;
                let victims = self.pick(n);
                let primary = self.primary(Duration::ZERO).await;
                self.note(format!("SIGKILL {victims:?}"));
                for &id in &victims {
                    self.kill(id, primary == Some(id));
                }
                Undo::Restart(victims)
            }
            Nemesis::KillPrimary => {
                let primary = self.primary_or_any().await;
                self.note(format!("SIGKILL the primary {primary}"));
                self.kill(primary, true);
                Undo::Restart(vec![primary])
            }
            Nemesis::Pause => {
                let n = 1 + self.rng.below(2) as usize;
                let mut victims = self.pick(n);
                if self.rng.below(2) == 0 {
                    let primary = self.primary_or_any().await;
                    if !victims.contains(&primary) {
                        victims[0] = primary;
                    }
                }
                self.note(format!("SIGSTOP {victims:?}"));
                for &id in &victims {
                    if self.cluster.is_running(id) {
                        self.cluster.pause(id);
                        self.paused.insert(id);
                    }
                }
                Undo::Resume(victims)
            }
            Nemesis::Delay => {
                let min = self.rng.between(5, 30);
                let max = min + self.rng.between(10, 120);
                self.note(format!("delay every replica link by {min}..{max} ms"));
                if let Err(error) = self.network.set_delay(min, max) {
                    self.problem(format!("delaying links: {error}"));
                }
                Undo::Network
            }
            Nemesis::Loss => {
                let percent = self.rng.between(5, 30);
                self.note(format!("lose {percent}% of the messages between replicas"));
                if let Err(error) = self.network.set_loss(percent) {
                    self.problem(format!("making links lossy: {error}"));
                }
                Undo::Network
            }
            Nemesis::TornTail => {
                let victim = self.pick(1)[0];
                self.torn_tail(victim).await;
                Undo::Nothing
            }
            Nemesis::Corrupt => {
                let victim = self.pick(1)[0];
                self.corrupt(victim).await;
                Undo::Nothing
            }
            Nemesis::DiskFull => {
                let victim = self.pick(1)[0];
                let said_before = self.cluster.stderr(victim).len();
                match self.network.fill_disk(victim) {
                    Ok(bytes) => {
                        self.note(format!("filled replica {victim}'s disk ({} MiB)", bytes >> 20));
                        self.may_exit.insert(victim);
                        if self.rng.below(2) == 0 {
                            self.restart_on_full_disk(victim).await;
                        }
                    }
                    Err(error) => self.problem(format!("filling replica {victim}'s disk: {error}")),
                }
                Undo::FreeDiskAndRestart(victim, said_before)
            }
        }
    }

    async fn end_fault(&mut self, undo: Undo) {
        match undo {
            Undo::Nothing => {}
            Undo::Network => {
                if let Err(error) = self.network.heal() {
                    self.problem(format!("healing the network: {error}"));
                }
                self.note("network healed".into());
            }
            Undo::Restart(ids) => {
                for id in ids {
                    self.restart(id);
                }
            }
            Undo::Resume(ids) => {
                for id in ids {
                    if self.paused.remove(&id) && self.cluster.is_running(id) {
                        self.cluster.resume(id);
                    }
                }
                self.note("SIGCONT".into());
            }
            Undo::FreeDiskAndRestart(id, said_before) => {
                if let Err(error) = self.network.free_disk(id) {
                    self.problem(format!("freeing replica {id}'s disk: {error}"));
                }
                self.watch_exits();
                let said = self.cluster.stderr(id);
                let full: Vec<&str> = said
                    .get(said_before..)
                    .unwrap_or_default()
                    .lines()
                    .filter(|line| line.contains("No space left") || line.contains("ERROR"))
                    .take(2)
                    .collect();
                if full.is_empty() {
                    self.note(format!("replica {id} reported no error while its disk was full"));
                } else {
                    self.note(format!("replica {id} while its disk was full: {}", full.join(" | ")));
                }
                self.may_exit.remove(&id);
                if self.cluster.is_running(id) {
                    // It must go on by itself (the end checks that it converges).
                    self.note(format!("freed replica {id}'s disk; it kept running"));
                } else {
                    self.note(format!("freed replica {id}'s disk; restarting it"));
                    self.restart(id);
                }
            }
        }
    }

    fn kill(&mut self, id: u64, was_primary: bool) {
        if !self.cluster.is_running(id) {
            return;
        }
        if was_primary {
            let now = self.now_ns();
            self.primary_kills.push(now);
        }
        self.cluster.kill(id);
        self.paused.remove(&id);
    }

    fn restart(&mut self, id: u64) {
        if self.cluster.is_running(id) {
            return;
        }
        match self.cluster.try_spawn(id, &[]) {
            Ok(()) => self.note(format!("replica {id} restarted")),
            Err(problem) => self.problem(format!("restarting replica {id}: {}", last_lines(&problem, 10))),
        }
    }

    /// Kills `victim` while its disk is full and starts it again: it must either start or
    /// refuse, saying the disk is full.
    async fn restart_on_full_disk(&mut self, victim: u64) {
        let primary = self.primary(Duration::ZERO).await;
        self.kill(victim, primary == Some(victim));
        let (status, said) = self.cluster.spawn_expecting_failure_or_start(victim, Duration::from_secs(30));
        match status {
            None => self.note(format!("SIGKILL {victim} and restart on its full disk: it started")),
            Some(status) if said.contains("No space left") => self.note(format!(
                "SIGKILL {victim} and restart on its full disk: refused ({status}): {}",
                last_lines(&said, 1)
            )),
            Some(status) => self.problem(format!(
                "replica {victim} exited ({status}) on a full disk without saying so:\n{}",
                last_lines(&said, 10)
            )),
        }
    }

    /// Kills `victim`, writes a torn record after the end of its newest log segment, and
    /// restarts it: it must start and report the cut.
    async fn torn_tail(&mut self, victim: u64) {
        let primary = self.primary(Duration::ZERO).await;
        self.kill(victim, primary == Some(victim));
        let segment = match newest_segment(self.cluster.data_dir(victim)) {
            Ok(segment) => segment,
            Err(error) => {
                self.note(format!("torn-tail on {victim} skipped: {error}"));
                self.restart(victim);
                return;
            }
        };
        let garbage: Vec<u8> = (0..1 + self.rng.below(300)).map(|_| self.rng.next_u64() as u8 | 1).collect();
        match write_torn_tail(&segment, &garbage) {
            Ok(offset) => self.note(format!(
                "SIGKILL {victim}, {} torn bytes at {} byte {offset}",
                garbage.len(),
                segment.display()
            )),
            Err(error) => {
                self.problem(format!("writing a torn tail into {}: {error}", segment.display()));
                self.restart(victim);
                return;
            }
        }
        let before = self.cluster.stderr(victim).len();
        self.restart(victim);
        let said = self.cluster.stderr(victim)[before..].to_owned();
        let name = segment.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if self.cluster.is_running(victim) && !(said.contains("cut a torn tail") && said.contains(&name)) {
            self.problem(format!(
                "replica {victim} started after a torn tail in {name} without reporting the cut:\n{}",
                last_lines(&said, 10)
            ));
        }
    }

    /// Kills `victim`, flips a byte in the first record of its newest segment (synced
    /// before the records after it), and restarts it: it must refuse, naming the file and
    /// offset. Then the byte is restored and it must start.
    async fn corrupt(&mut self, victim: u64) {
        let primary = self.primary(Duration::ZERO).await;
        self.kill(victim, primary == Some(victim));
        let segment = match newest_segment(self.cluster.data_dir(victim)) {
            Ok(segment) => segment,
            Err(error) => {
                self.note(format!("corrupt on {victim} skipped: {error}"));
                self.restart(victim);
                return;
            }
        };
        let offset = SEGMENT_HEADER_BYTES + self.rng.below(CORRUPT_SPAN_BYTES);
        let flip = 1u8 << self.rng.below(8);
        let original = match corrupt_byte(&segment, offset, flip) {
            Ok(Some(original)) => original,
            Ok(None) => {
                self.note(format!("corrupt on {victim} skipped: {} holds too little", segment.display()));
                self.restart(victim);
                return;
            }
            Err(error) => {
                self.problem(format!("corrupting {}: {error}", segment.display()));
                self.restart(victim);
                return;
            }
        };
        self.note(format!("SIGKILL {victim}, flipped byte {offset} of {}", segment.display()));
        let (status, said) = self.cluster.spawn_expecting_failure_or_start(victim, Duration::from_secs(30));
        let name = segment.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        match status {
            Some(status) if !status.success() && said.contains("corrupt log") && said.contains(&name) => {
                self.note(format!("replica {victim} refused its corrupt log ({status})"));
            }
            Some(status) => self.problem(format!(
                "replica {victim} exited ({status}) on a corrupt log without naming it:\n{}",
                last_lines(&said, 10)
            )),
            None => {
                self.problem(format!(
                    "replica {victim} started on a log with byte {offset} of {name} flipped:\n{}",
                    last_lines(&said, 10)
                ));
                self.kill(victim, false);
            }
        }
        if let Err(error) = restore_byte(&segment, offset, original) {
            self.problem(format!("restoring {}: {error}", segment.display()));
        }
        self.restart(victim);
    }

    /// Heals the network, resumes paused replicas, frees disks, restarts every replica.
    async fn heal_all(&mut self) {
        if let Err(error) = self.network.heal() {
            self.problem(format!("healing the network: {error}"));
        }
        for id in std::mem::take(&mut self.paused) {
            if self.cluster.is_running(id) {
                self.cluster.resume(id);
            }
        }
        self.watch_exits();
        for id in self.cluster.ids() {
            if self.network.has_bounded_disks() {
                let _ = self.network.free_disk(id);
            }
            self.may_exit.remove(&id);
            self.restart(id);
        }
    }

    /// Reads every key linearizably (recorded in the history); returns the values.
    async fn final_reads(&mut self) -> Vec<(String, Option<i64>)> {
        let mut client = Client::new(self.cluster.client_addresses(), client_options(Duration::from_secs(5)))
            .expect("the cluster's addresses are valid");
        let process = 1_000_000;
        let mut values = Vec::new();
        for key in (0..self.options.keys).map(|k| format!("k{k}")) {
            let deadline = Instant::now() + RECOVERY_TIMEOUT;
            loop {
                let pending = self.history.invoke(process, Function::Get, &key, 0, serde_json::Value::Null);
                match client.get(&key).await {
                    Ok(read) => {
                        let read = read.map(|bytes| parse_value(&key, &bytes));
                        self.history.complete(pending, Outcome::Ok, serde_json::json!(read), read);
                        values.push((key.clone(), read));
                        break;
                    }
                    Err(error) => {
                        self.history.complete(pending, Outcome::Fail, serde_json::Value::Null, None);
                        if Instant::now() > deadline {
                            self.problem(format!("the final read of {key} failed: {error}"));
                            break;
                        }
                    }
                }
            }
        }
        values
    }

    /// Waits until every replica reports the same state digest at the same slot.
    async fn check_convergence(&mut self) {
        let deadline = Instant::now() + RECOVERY_TIMEOUT;
        let mut last;
        loop {
            self.watch_exits();
            let mut states = BTreeMap::new();
            for id in self.cluster.ids() {
                let address = self.cluster.client_address(id).to_owned();
                if let Ok(status) = self.status_client.status_of(&address).await {
                    states.insert(id, (status.digest_slot, status.digest, status.keys));
                }
            }
            let agreed: BTreeSet<_> = states.values().collect();
            if states.len() == REPLICAS as usize && agreed.len() == 1 {
                let (slot, digest, keys) = states[&1];
                self.note(format!(
                    "all {REPLICAS} replicas agree: digest {digest:08x} of {keys} keys at slot {slot}"
                ));
                return;
            }
            last = format!("{states:?}");
            if Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(TICK).await;
        }
        self.problem(format!(
            "the replicas did not converge within {RECOVERY_TIMEOUT:?}; (slot, digest, keys) per replica: {last}"
        ));
    }

    fn report(&mut self, final_values: Vec<(String, Option<i64>)>) -> Report {
        let operations = self.history.operations();
        let mut report = Report { faults: self.faults.clone(), ..Report::default() };
        for op in &operations {
            match op.outcome {
                Some(Outcome::Ok) => report.ok += 1,
                Some(Outcome::Fail) => report.fail += 1,
                Some(Outcome::Info) | None => report.info += 1,
            }
        }
        if !final_values.is_empty() {
            match check_linearizable(&self.history.jsonl()) {
                Verdict::Linearizable => {}
                Verdict::Violation(witness) => {
                    report.violations = 1;
                    self.problem(format!("linearizability violation: {witness}"));
                }
                Verdict::Unchecked(reason) => {
                    self.problem(format!("the history could not be checked: {reason}"))
                }
            }
            report.acknowledged_writes =
                operations.iter().filter(|op| op.acknowledged_write()).count() as u64;
            let lost = lost_writes(&operations, &final_values);
            report.lost_writes = lost.len() as u64;
            for problem in lost {
                self.problem(format!("acknowledged write lost: {problem}"));
            }
        }
        // Committed writes in time order: failovers and unavailability.
        let mut commits: Vec<u64> = operations
            .iter()
            .filter(|op| op.outcome == Some(Outcome::Ok) && op.f != Function::Get)
            .filter_map(|op| op.complete_ns)
            .collect();
        commits.sort_unstable();
        for &killed in &self.primary_kills {
            if let Some(&next) = commits.iter().find(|&&t| t > killed) {
                report.failovers.push(Duration::from_nanos(next - killed));
            }
        }
        for pair in commits.windows(2) {
            let gap = Duration::from_nanos(pair[1] - pair[0]);
            if gap > UNAVAILABLE_AFTER {
                report.unavailable.push(gap);
            }
        }
        report.problems = self.problems.clone();
        report
    }

    /// Saves the history, the schedule, the report and (on failure) every replica's log;
    /// returns the directory.
    fn save(&self, report: &Report) -> Result<PathBuf, String> {
        let dir = match &self.options.history_dir {
            Some(dir) => dir.clone(),
            None => self.options.failure_dir.join(format!("seed-{}", self.options.seed)),
        };
        fs::create_dir_all(&dir).map_err(|error| format!("creating {}: {error}", dir.display()))?;
        let seed = self.options.seed;
        let write = |name: String, text: &str| {
            let path = dir.join(name);
            fs::write(&path, text).map_err(|error| format!("writing {}: {error}", path.display()))
        };
        if self.options.history_dir.is_none() {
            write(format!("history-seed-{seed}.jsonl"), &self.history.jsonl())?;
        }
        let mut summary = String::new();
        let _ = writeln!(summary, "seed {seed}\n{report}\nschedule:");
        for event in &self.events {
            let _ = writeln!(summary, "  {event}");
        }
        for problem in &report.problems {
            let _ = writeln!(summary, "problem: {problem}");
        }
        write(format!("report-seed-{seed}.txt"), &summary)?;
        if !report.passed() {
            for id in self.cluster.ids() {
                write(format!("seed-{seed}-replica-{id}.log"), &self.cluster.stderr(id))?;
            }
        }
        Ok(dir)
    }
}

/// The segment header's size: the first record starts here.
const SEGMENT_HEADER_BYTES: u64 = 64;
/// The corrupt nemesis flips a byte among this many from the first record's start.
const CORRUPT_SPAN_BYTES: u64 = 24;
/// A segment needs this many bytes of records after its first before it is corrupted, so
/// later batches prove the first record was synced.
const CORRUPT_MIN_BYTES: u64 = 4096;

/// The newest segment of a replica's file journal.
fn newest_segment(data_dir: &Path) -> Result<PathBuf, String> {
    let log = data_dir.join("log");
    let mut segments: Vec<PathBuf> = fs::read_dir(&log)
        .map_err(|error| format!("reading {}: {error}", log.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    segments.pop().ok_or_else(|| format!("no segment in {}", log.display()))
}

/// One past the last non-zero byte of `file` (the end of its records, in a preallocated,
/// zero-filled segment).
fn data_end(file: &mut fs::File) -> std::io::Result<u64> {
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0))?;
    file.read_to_end(&mut bytes)?;
    Ok(bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i as u64 + 1))
}

/// Writes `garbage` (no zero bytes) a page past the end of `segment`'s records, as a write
/// torn by a crash leaves it; returns the offset written at.
fn write_torn_tail(segment: &Path, garbage: &[u8]) -> std::io::Result<u64> {
    let mut file = fs::OpenOptions::new().read(true).write(true).open(segment)?;
    let end = data_end(&mut file)?;
    // Past a gap, so a last record that happens to end in zero bytes stays whole.
    let offset = end.next_multiple_of(4096) + 4096;
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(garbage)?;
    file.sync_all()?;
    Ok(offset)
}

/// XORs byte `offset` of `segment` with `flip`; returns the original byte, or `None` when
/// the segment holds fewer than [`CORRUPT_MIN_BYTES`] of records.
fn corrupt_byte(segment: &Path, offset: u64, flip: u8) -> std::io::Result<Option<u8>> {
    let mut file = fs::OpenOptions::new().read(true).write(true).open(segment)?;
    if data_end(&mut file)? < SEGMENT_HEADER_BYTES + CORRUPT_MIN_BYTES {
        return Ok(None);
    }
    let mut byte = [0u8];
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(&mut byte)?;
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(&[byte[0] ^ flip])?;
    file.sync_all()?;
    Ok(Some(byte[0]))
}

fn restore_byte(segment: &Path, offset: u64, original: u8) -> std::io::Result<()> {
    let mut file = fs::OpenOptions::new().write(true).open(segment)?;
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(&[original])?;
    file.sync_all()
}

/// The last `n` lines of `text`.
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn tail(text: &str, n: usize) -> String {
    last_lines(text, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nemesis_lists_parse() {
        assert_eq!(Nemesis::parse_list("all").unwrap().len(), Nemesis::ALL.len());
        assert_eq!(Nemesis::parse_list("kill, pause,kill").unwrap(), vec![Nemesis::Kill, Nemesis::Pause]);
        assert!(Nemesis::parse_list("kill,fire").unwrap_err().contains("unknown nemesis `fire`"));
        assert!(Nemesis::parse_list("").is_err());
        for nemesis in Nemesis::ALL {
            assert_eq!(Nemesis::parse_list(nemesis.name()).unwrap(), vec![nemesis]);
        }
    }

    #[test]
    fn percentiles_pick_ranks() {
        let values: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&values, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&values, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }

    #[test]
    fn torn_tails_go_past_the_records_and_corruption_is_undone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0001.seg");
        let mut bytes = vec![7u8; 5000];
        bytes.resize(3 * 4096 + 100, 0);
        fs::write(&path, &bytes).unwrap();
        let offset = write_torn_tail(&path, &[1, 2, 3]).unwrap();
        assert_eq!(offset, 8192 + 4096);
        let after = fs::read(&path).unwrap();
        assert_eq!(&after[..5000], &bytes[..5000]);
        assert_eq!(&after[offset as usize..offset as usize + 3], &[1, 2, 3]);

        let original = corrupt_byte(&path, 70, 0x10).unwrap().unwrap();
        assert_eq!(fs::read(&path).unwrap()[70], 7 ^ 0x10);
        restore_byte(&path, 70, original).unwrap();
        assert_eq!(fs::read(&path).unwrap()[70], 7);
        let short = dir.path().join("0002.seg");
        fs::write(&short, [1u8; 100]).unwrap();
        assert_eq!(corrupt_byte(&short, 70, 1).unwrap(), None);
    }
}
