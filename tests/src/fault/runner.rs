//! One fault run from start to verdict: start the replicas and wait for a primary, start
//! the clients, inject faults for the run's duration (`runner/inject.rs`: the fault loop
//! and what each nemesis does), heal, wait for writes to commit again, read every key, wait
//! for the replicas to agree, then check the history and save what a failure needs to be
//! understood. The membership nemesis gives the ring a spare replica, started joining, and
//! the end then checks the members of the final configuration.

mod compose;
mod inject;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rsl_core::SplitMix64;
use rsl_kv::Client;

use crate::fault::history::{Function, History, Outcome};
use crate::fault::nemesis::{shuffle, Nemesis};
use crate::fault::net::{Mode, Network};
use crate::fault::report::Report;
use crate::fault::skew::Faketime;
use crate::fault::workload::{client_options, parse_value, SessionPauser, Workload, WorkloadOptions};
use crate::process::{ClusterOptions, ProcessCluster};

/// Replicas in a fault run (the members of its first configuration).
pub const REPLICAS: u64 = 5;
/// Further replicas, started joining, when the membership nemesis runs: ids after
/// [`REPLICAS`].
pub const SPARE_REPLICAS: u64 = 1;
/// Longest wait for the healed ring to elect, serve and converge.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the runner looks at the replicas while it waits.
const TICK: Duration = Duration::from_millis(100);

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
    /// Further flags every replica gets (`--transport rdma-emu`).
    pub server_args: Vec<String>,
    /// Set on Ctrl-C: the run stops injecting faults, cleans up and fails.
    pub interrupted: Arc<AtomicBool>,
    /// libfaketime for the clock-skew nemesis, or why it cannot be had (the nemesis is then
    /// skipped, saying so).
    pub faketime: Result<Faketime, String>,
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
    /// The members of the newest configuration known (sorted).
    members: Vec<u64>,
    /// Freezes client sessions, once they run.
    pauser: Option<SessionPauser>,
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
    let spares = if options.nemeses.contains(&Nemesis::Membership) { SPARE_REPLICAS } else { 0 };
    let nodes = REPLICAS + spares;
    let network = Network::create(options.mode, &(1..=nodes).collect::<Vec<_>>(), options.seed, dir.path())?;
    let mut args = vec![
        "--heartbeat-interval-ms=25".to_owned(),
        "--election-delay-min-ms=250".to_owned(),
        "--election-delay-max-ms=500".to_owned(),
        "--checkpoint-interval-slots=300".to_owned(),
        "--log-retain-slots=100".to_owned(),
    ];
    args.push("--pipeline-depth=16".to_owned());
    if spares > 0 {
        let initial: Vec<String> = (1..=REPLICAS).map(|id| id.to_string()).collect();
        args.push(format!("--initial-members={}", initial.join(",")));
    }
    args.extend(options.server_args.iter().cloned());
    let cluster_options =
        ClusterOptions { replicas: nodes, log: "file".into(), args, metrics: false, auth: true };
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
            ..client_options(&cluster.security(), Duration::from_secs(1))
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
        members: (1..=REPLICAS).collect(),
        pauser: None,
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
            let join: &[&str] = if id > REPLICAS { &["--join"] } else { &[] };
            if let Err(problem) = self.cluster.try_spawn(id, join) {
                self.problem(format!("replica {id} did not start: {problem}"));
                return self.report(Vec::new());
            }
        }
        if self.primary(Duration::from_secs(30)).await.is_none() {
            self.problem("no primary was elected within 30s of the start".into());
            return self.report(Vec::new());
        }
        let spares = self.cluster.ids().len() as u64 - REPLICAS;
        self.note(format!(
            "{REPLICAS} replicas up ({}){}",
            self.network.mode().name(),
            if spares > 0 { format!(" and {spares} spare, joining") } else { String::new() }
        ));

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
                security: self.cluster.security(),
            },
            self.options.seed,
        );
        self.pauser = Some(workload.pauser());

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
                let tail = last_lines(&self.cluster.stderr(id), 5);
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
        shuffle(&mut ids, &mut self.rng);
        ids.truncate(n);
        ids
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

    /// Heals the network, releases frozen clients, resumes paused replicas, frees disks,
    /// restarts every replica.
    async fn heal_all(&mut self) {
        if let Some(pauser) = &self.pauser {
            pauser.resume_all();
        }
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
        let options = client_options(&self.cluster.security(), Duration::from_secs(5));
        let mut client =
            Client::new(self.cluster.client_addresses(), options).expect("the cluster's addresses are valid");
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

    /// The members of the newest configuration a running, unpaused replica reports (the
    /// last known when none answers); remembered for the faults that pick members.
    async fn refresh_members(&mut self) -> Vec<u64> {
        let mut newest: Option<(u64, Vec<u64>)> = None;
        for id in self.cluster.ids() {
            if !self.cluster.is_running(id) || self.paused.contains(&id) {
                continue;
            }
            let address = self.cluster.client_address(id).to_owned();
            if let Ok(status) = self.status_client.status_of(&address).await {
                if !status.configuration_members.is_empty()
                    && newest.as_ref().is_none_or(|(number, _)| status.configuration > *number)
                {
                    newest = Some((status.configuration, status.configuration_members));
                }
            }
        }
        if let Some((_, mut members)) = newest {
            members.sort_unstable();
            self.members = members;
        }
        self.members.clone()
    }

    /// Waits until every member of the newest configuration reports that configuration and
    /// the same state digest at the same slot (replicas outside it are not waited for).
    async fn check_convergence(&mut self) {
        let deadline = Instant::now() + RECOVERY_TIMEOUT;
        let mut last;
        loop {
            self.watch_exits();
            let mut states = BTreeMap::new();
            for id in self.cluster.ids() {
                let address = self.cluster.client_address(id).to_owned();
                if let Ok(status) = self.status_client.status_of(&address).await {
                    states.insert(id, status);
                }
            }
            let newest = states.values().max_by_key(|status| status.configuration);
            let members = newest.map(|status| status.configuration_members.clone()).unwrap_or_default();
            let state = |id: &u64| {
                states.get(id).map(|s| (s.configuration, s.member, s.digest_slot, s.digest, s.keys))
            };
            let agreed: BTreeSet<_> = members.iter().map(state).collect();
            if !members.is_empty() && agreed.len() == 1 && agreed.iter().all(|s| s.is_some_and(|s| s.1)) {
                let status = &states[&members[0]];
                self.note(format!(
                    "all {} members {members:?} of configuration {} agree: digest {:08x} of {} keys at slot {}",
                    members.len(),
                    status.configuration,
                    status.digest,
                    status.keys,
                    status.digest_slot
                ));
                self.members = members;
                return;
            }
            let summary: BTreeMap<u64, _> = self.cluster.ids().iter().map(|id| (*id, state(id))).collect();
            last = format!(
                "members {members:?}; (configuration, member, slot, digest, keys) per replica: {summary:?}"
            );
            if Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(TICK).await;
        }
        self.problem(format!("the replicas did not converge within {RECOVERY_TIMEOUT:?}; {last}"));
    }

    fn report(&mut self, final_values: Vec<(String, Option<i64>)>) -> Report {
        let mut report = Report::of_history(&self.history, &final_values, &self.primary_kills);
        for problem in std::mem::take(&mut report.problems) {
            self.problem(problem);
        }
        report.faults = self.faults.clone();
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

/// The last `n` lines of `text`.
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
