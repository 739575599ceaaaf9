//! The load generator behind `rsl-kv load`: `clients` sessions, each keeping up to
//! `in_flight` operations outstanding, closed-loop (the next operation leaves as soon as one
//! returns) or open-loop (operations leave at a fixed rate, whether or not earlier ones
//! returned), for a warm-up and then a measured duration; latencies go into HDR histograms.
//!
//! Three ways to reach the servers ([`Protocol`]):
//! - [`Protocol::Stream`]: rsl-kv's `Stream` RPC, one bidirectional stream per client;
//!   every operation ready at once leaves in one message, answers are matched by id.
//! - [`Protocol::Unary`]: one rsl-kv unary call (`Put`, `Get`) per operation.
//! - [`Protocol::Etcd`]: one etcd v3 unary call (`KV/Put`, `KV/Range`) per operation, to
//!   run the same workload against an etcd cluster.
//!
//! Every write of rsl-kv carries a (client id, sequence) pair and the server refuses a
//! sequence older than the newest its client id used, so each of a client's in-flight
//! slots ("lanes") is its own session with its own random client id and one write at a
//! time.
//!
//! Clients share `connections` HTTP/2 connections (client `i` uses connection
//! `i % connections`) to the primary (rsl-kv) or to the endpoints in turn (etcd). When a
//! server fails or refuses as not primary, a client moves to the primary it names (or the
//! next server) on a connection of its own and sends its outstanding operations again,
//! until they have been outstanding for the client deadline; a write keeps its session and
//! sequence, so it still executes at most once. Latency is measured at the client: from when the operation was
//! sent (closed loop) or was due to be sent (open loop, so queueing behind a slow server
//! counts), to when its answer arrived. Only operations that finish after the warm-up and
//! before the end are measured.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use hdrhistogram::Histogram;
use rsl::core::SplitMix64;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use crate::client::{Client, ClientOptions};
use crate::etcd_proto;
use crate::proto as pb;

/// How the load generator talks to the servers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// rsl-kv's batched bidirectional `Stream` RPC.
    Stream,
    /// rsl-kv's unary `Put`/`Get` RPCs, one call per operation.
    Unary,
    /// etcd's v3 `KV/Put` and `KV/Range` unary RPCs.
    Etcd,
}

impl std::str::FromStr for Protocol {
    type Err = String;

    fn from_str(text: &str) -> Result<Protocol, String> {
        match text {
            "stream" => Ok(Protocol::Stream),
            "unary" => Ok(Protocol::Unary),
            "etcd" => Ok(Protocol::Etcd),
            other => Err(format!("unknown protocol {other:?}; expected stream, unary or etcd")),
        }
    }
}

/// What to run.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadOptions {
    /// Server client addresses (rsl-kv servers, or etcd client URLs' `host:port`).
    pub servers: Vec<String>,
    /// How to talk to them.
    pub protocol: Protocol,
    /// Concurrent client sessions.
    pub clients: u32,
    /// Operations each client keeps outstanding at most.
    pub in_flight: u32,
    /// HTTP/2 connections the clients share.
    pub connections: u32,
    /// Open loop: operations per second over all clients; `None`: closed loop.
    pub rate_ops_per_s: Option<f64>,
    /// Run this long before measuring.
    pub warmup: Duration,
    /// How long to measure.
    pub duration: Duration,
    /// Distinct keys written and read.
    pub keys: u64,
    /// Bytes per written value.
    pub value_bytes: usize,
    /// Percent of operations that are (linearizable) reads; the rest are puts.
    pub read_percent: u8,
    /// Options of the clients (timeouts; rsl-kv's primary discovery).
    pub client: ClientOptions,
}

impl Default for LoadOptions {
    fn default() -> LoadOptions {
        LoadOptions {
            servers: Vec::new(),
            protocol: Protocol::Stream,
            clients: 16,
            in_flight: 1,
            connections: 4,
            rate_ops_per_s: None,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(10),
            keys: 1000,
            value_bytes: 64,
            read_percent: 50,
            client: ClientOptions::default(),
        }
    }
}

/// Counters shared with whoever watches the run (progress lines); they count from the
/// start, warm-up included.
#[derive(Debug, Default)]
pub struct LoadCounters {
    /// Operations that succeeded.
    pub ops: AtomicU64,
    /// Operations that failed.
    pub errors: AtomicU64,
}

/// Latency percentiles, in microseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Operations measured.
    pub count: u64,
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest.
    pub max_us: u64,
}

impl Latency {
    fn of(histogram: &Histogram<u64>) -> Latency {
        if histogram.is_empty() {
            return Latency::default();
        }
        Latency {
            count: histogram.len(),
            mean_us: (histogram.mean() * 10.0).round() / 10.0,
            p50_us: histogram.value_at_quantile(0.50),
            p90_us: histogram.value_at_quantile(0.90),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
            max_us: histogram.max(),
        }
    }
}

/// The outcome of a run, printed as JSON by `rsl-kv load`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LoadReport {
    /// How the servers were reached.
    pub protocol: Option<Protocol>,
    /// Sessions.
    pub clients: u32,
    /// Operations outstanding per session at most.
    pub in_flight: u32,
    /// Connections shared by the sessions.
    pub connections: u32,
    /// The open-loop target rate, if any.
    pub rate_ops_per_s: Option<f64>,
    /// Bytes per written value.
    pub value_bytes: usize,
    /// Percent of reads asked for.
    pub read_percent: u8,
    /// Seconds of warm-up (not measured).
    pub warmup_s: f64,
    /// Seconds measured.
    pub duration_s: f64,
    /// Operations that succeeded within the measured window.
    pub ops: u64,
    /// Writes (puts) among them.
    pub writes: u64,
    /// Reads among them.
    pub reads: u64,
    /// Operations that failed within the measured window.
    pub errors: u64,
    /// Operations that succeeded over the whole run (warm-up and drain included), to
    /// divide the servers' CPU time by.
    pub ops_total: u64,
    /// Successful operations per second of the measured window.
    pub throughput_ops_per_s: f64,
    /// Latency of every successful measured operation.
    pub latency: Latency,
    /// Latency of writes.
    pub write_latency: Latency,
    /// Latency of reads.
    pub read_latency: Latency,
    /// Open loop: operations that were due but never sent because every lane was busy
    /// until the end (the server fell behind the offered rate).
    pub backlog: u64,
    /// The first few distinct errors, for diagnosis.
    pub error_samples: Vec<String>,
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The options are inconsistent.
    #[error("load options: {0}")]
    Options(String),
    /// A server address is not usable.
    #[error(transparent)]
    Client(#[from] crate::ClientError),
    /// No server could be reached, or no primary found.
    #[error("cannot reach the servers: {0}")]
    Unreachable(String),
}

/// Histograms range from 1 µs to 60 s with 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant bounds are valid")
}

const ERROR_SAMPLES_MAX: usize = 5;
/// Operations one stream message carries at most.
const STREAM_BATCH_OPS_MAX: usize = 4096;
/// Pause before a client reconnects after its stream failed.
const RECONNECT_PAUSE: Duration = Duration::from_millis(50);
/// After the end, how long in-flight operations get to finish (they are not measured;
/// waiting only lets the servers drain before the next run).
const DRAIN_WAIT: Duration = Duration::from_secs(2);

/// Runs the load; `counters` are updated as operations complete.
pub async fn run(options: LoadOptions, counters: Arc<LoadCounters>) -> Result<LoadReport, LoadError> {
    if options.servers.is_empty() {
        return Err(LoadError::Options("no servers".into()));
    }
    if options.clients == 0 || options.in_flight == 0 || options.connections == 0 {
        return Err(LoadError::Options("clients, in_flight and connections must be at least 1".into()));
    }
    if let Some(rate) = options.rate_ops_per_s {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(LoadError::Options(format!("the open-loop rate must be positive, got {rate}")));
        }
    }
    let channels = connect(&options).await?;
    let started = Instant::now();
    let window =
        Window { measure_from: started + options.warmup, end: started + options.warmup + options.duration };
    let mut tasks = Vec::new();
    for index in 0..options.clients {
        let channel = channels[index as usize % channels.len()].clone();
        let session = Session::new(index, &options, window, counters.clone());
        tasks.push(tokio::spawn(session.run(channel, options.clone())));
    }
    let mut writes = histogram();
    let mut reads = histogram();
    let (mut errors, mut backlog) = (0, 0);
    let mut error_samples: Vec<String> = Vec::new();
    for task in tasks {
        let Ok(outcome) = task.await else {
            errors += 1;
            continue;
        };
        // Every histogram has the same bounds, so adding cannot fail.
        let _ = writes.add(&outcome.writes);
        let _ = reads.add(&outcome.reads);
        errors += outcome.errors;
        backlog += outcome.backlog;
        for sample in outcome.error_samples {
            if error_samples.len() < ERROR_SAMPLES_MAX && !error_samples.contains(&sample) {
                error_samples.push(sample);
            }
        }
    }
    let duration_s = options.duration.as_secs_f64();
    let mut all = writes.clone();
    let _ = all.add(&reads);
    let ops = all.len();
    Ok(LoadReport {
        protocol: Some(options.protocol),
        clients: options.clients,
        in_flight: options.in_flight,
        connections: channels.len() as u32,
        rate_ops_per_s: options.rate_ops_per_s,
        value_bytes: options.value_bytes,
        read_percent: options.read_percent,
        warmup_s: options.warmup.as_secs_f64(),
        duration_s,
        ops,
        writes: writes.len(),
        reads: reads.len(),
        errors,
        ops_total: counters.ops.load(Ordering::Relaxed),
        throughput_ops_per_s: if duration_s > 0.0 { (ops as f64 / duration_s).round() } else { 0.0 },
        latency: Latency::of(&all),
        write_latency: Latency::of(&writes),
        read_latency: Latency::of(&reads),
        backlog,
        error_samples,
    })
}

/// The connections: to the rsl-kv primary (found through the servers' status), or
/// round-robin over the etcd endpoints.
async fn connect(options: &LoadOptions) -> Result<Vec<Channel>, LoadError> {
    let targets: Vec<String> = match options.protocol {
        Protocol::Etcd => options.servers.clone(),
        Protocol::Stream | Protocol::Unary => vec![find_primary(options).await?],
    };
    let mut channels = Vec::new();
    for index in 0..options.connections as usize {
        let target = &targets[index % targets.len()];
        let endpoint = endpoint(target, &options.client)?;
        let channel = endpoint
            .connect()
            .await
            .map_err(|error| LoadError::Unreachable(format!("connecting to {target}: {error}")))?;
        channels.push(channel);
    }
    Ok(channels)
}

/// The client address of the rsl-kv primary, asking each server's status until one names it.
async fn find_primary(options: &LoadOptions) -> Result<String, LoadError> {
    let deadline = Instant::now() + options.client.deadline;
    let mut client = Client::new(options.servers.clone(), options.client.clone())?;
    let mut last = String::from("no server answered");
    loop {
        for (server, status) in client.statuses().await {
            match status {
                Ok(status) if status.role == "primary" => return Ok(server),
                Ok(status) => last = format!("{server} is {} (primary node {})", status.role, status.primary),
                Err(error) => last = format!("{server}: {error}"),
            }
        }
        if Instant::now() >= deadline {
            return Err(LoadError::Unreachable(format!("no primary found; last: {last}")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn endpoint(server: &str, options: &ClientOptions) -> Result<Endpoint, LoadError> {
    let uri = if server.contains("://") { server.to_owned() } else { format!("http://{server}") };
    let endpoint = Endpoint::from_shared(uri).map_err(|error| {
        LoadError::Client(crate::ClientError::InvalidAddress {
            address: server.to_owned(),
            problem: error.to_string(),
        })
    })?;
    Ok(endpoint
        .connect_timeout(options.connect_timeout)
        .tcp_nodelay(true)
        .http2_adaptive_window(true)
        .initial_connection_window_size(Some(8 << 20))
        .initial_stream_window_size(Some(4 << 20)))
}

/// When measuring starts and the run ends.
#[derive(Clone, Copy, Debug)]
struct Window {
    measure_from: Instant,
    end: Instant,
}

/// One in-flight slot of a client: its own write session.
#[derive(Debug)]
struct Lane {
    /// The write session's client id (random, non-zero).
    session: u64,
    /// The session's last write number.
    sequence: u64,
    /// The outstanding operation: when it was due and whether it is a read.
    busy: Option<(Instant, bool)>,
    /// The outstanding operation itself, to send again after a failover.
    op: Option<Op>,
}

/// An operation to send.
#[derive(Clone, Debug)]
struct Op {
    lane: usize,
    read: bool,
    key: String,
    value: Bytes,
    sequence: u64,
    session: u64,
}

struct SessionOutcome {
    writes: Histogram<u64>,
    reads: Histogram<u64>,
    errors: u64,
    backlog: u64,
    error_samples: Vec<String>,
}

/// One client: its lanes, its schedule, its measurements.
struct Session {
    random: SplitMix64,
    lanes: Vec<Lane>,
    free: Vec<usize>,
    /// Open loop: when the next operation is due, and the spacing.
    next_due: Option<(Instant, Duration)>,
    /// Open loop: due times of operations waiting for a free lane.
    waiting: VecDeque<Instant>,
    window: Window,
    counters: Arc<LoadCounters>,
    keys: u64,
    value_bytes: usize,
    read_percent: u8,
    failover: Failover,
    outcome: SessionOutcome,
}

/// Where a session goes when its server fails or refuses as not primary.
#[derive(Debug)]
struct Failover {
    servers: Vec<String>,
    next: usize,
    /// An operation is retried on other servers until it has been outstanding this long.
    deadline: Duration,
    connect_timeout: Duration,
}

impl Session {
    fn new(index: u32, options: &LoadOptions, window: Window, counters: Arc<LoadCounters>) -> Session {
        let mut random = SplitMix64::new(rsl::runtime::entropy() ^ u64::from(index));
        let lanes: Vec<Lane> = (0..options.in_flight)
            .map(|_| Lane { session: random.next_u64() | 1, sequence: 0, busy: None, op: None })
            .collect();
        let free = (0..lanes.len()).rev().collect();
        let next_due = options.rate_ops_per_s.map(|rate| {
            let spacing = Duration::from_secs_f64(f64::from(options.clients) / rate);
            // Spread the clients' schedules over one spacing.
            let offset = spacing.mul_f64(f64::from(index) / f64::from(options.clients));
            (Instant::now() + offset, spacing)
        });
        Session {
            random,
            lanes,
            free,
            next_due,
            waiting: VecDeque::new(),
            window,
            counters,
            keys: options.keys.max(1),
            value_bytes: options.value_bytes,
            read_percent: options.read_percent,
            failover: Failover {
                servers: options.servers.clone(),
                next: index as usize,
                deadline: options.client.deadline,
                connect_timeout: options.client.connect_timeout,
            },
            outcome: SessionOutcome {
                writes: histogram(),
                reads: histogram(),
                errors: 0,
                backlog: 0,
                error_samples: Vec::new(),
            },
        }
    }

    /// Takes the operations to send now: every free lane in a closed loop; the due ones
    /// (as lanes allow) in an open loop.
    fn ready(&mut self, now: Instant) -> Vec<Op> {
        let mut ops = Vec::new();
        if now >= self.window.end {
            return ops;
        }
        match self.next_due {
            None => {
                while let Some(lane) = self.free.pop() {
                    ops.push(self.start(lane, now));
                }
            }
            Some((mut due, spacing)) => {
                while due <= now {
                    self.waiting.push_back(due);
                    due += spacing;
                }
                self.next_due = Some((due, spacing));
                while !self.waiting.is_empty() && !self.free.is_empty() {
                    let (due, lane) =
                        (self.waiting.pop_front().expect("checked"), self.free.pop().expect("checked"));
                    ops.push(self.start(lane, due));
                }
            }
        }
        ops
    }

    fn start(&mut self, lane: usize, due: Instant) -> Op {
        let key = format!("key-{}", self.random.below(self.keys));
        let read = self.random.below(100) < u64::from(self.read_percent);
        let value = if read {
            Bytes::new()
        } else {
            let mut value = vec![0u8; self.value_bytes];
            for chunk in value.chunks_mut(8) {
                let word = self.random.next_u64().to_le_bytes();
                chunk.copy_from_slice(&word[..chunk.len()]);
            }
            Bytes::from(value)
        };
        let state = &mut self.lanes[lane];
        if !read {
            state.sequence += 1;
        }
        state.busy = Some((due, read));
        let op = Op { lane, read, key, value, sequence: state.sequence, session: state.session };
        state.op = Some(op.clone());
        op
    }

    /// When the next open-loop operation is due (`None` in a closed loop).
    fn next_wake(&self) -> Option<Instant> {
        self.next_due.map(|(due, _)| due.min(self.window.end))
    }

    /// Records the end of the operation on `lane`.
    fn finish(&mut self, lane: usize, result: Result<(), String>) {
        let Some(state) = self.lanes.get_mut(lane) else { return };
        state.op = None;
        let Some((due, read)) = state.busy.take() else { return };
        self.free.push(lane);
        let now = Instant::now();
        let measured = now >= self.window.measure_from && now <= self.window.end;
        match result {
            Ok(()) => {
                self.counters.ops.fetch_add(1, Ordering::Relaxed);
                if measured {
                    let micros = (now.duration_since(due).as_micros() as u64).clamp(1, 60_000_000);
                    let histogram = if read { &mut self.outcome.reads } else { &mut self.outcome.writes };
                    histogram.saturating_record(micros);
                }
            }
            Err(error) => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                if measured {
                    self.outcome.errors += 1;
                }
                if self.outcome.error_samples.len() < ERROR_SAMPLES_MAX {
                    self.outcome.error_samples.push(error);
                }
            }
        }
    }

    /// The outstanding operations to send again after a failover; those outstanding for
    /// longer than the operation deadline fail with `error` instead.
    fn resend(&mut self, error: &str) -> Vec<Op> {
        let now = Instant::now();
        let mut again = Vec::new();
        for lane in 0..self.lanes.len() {
            let Some((due, _)) = self.lanes[lane].busy else { continue };
            match &self.lanes[lane].op {
                Some(op) if now.duration_since(due) < self.failover.deadline => again.push(op.clone()),
                _ => self.finish(lane, Err(format!("{error} (given up after the operation deadline)"))),
            }
        }
        again
    }

    /// Moves to another server after a failure: the primary named in a refusal, else the
    /// next server in the list. Returns a (lazily connecting) channel to it.
    fn retarget(&mut self, hint: Option<&str>) -> Option<Channel> {
        let servers = &self.failover.servers;
        let target = match hint.filter(|h| !h.is_empty()) {
            Some(hint) => hint.to_owned(),
            None => {
                self.failover.next = (self.failover.next + 1) % servers.len().max(1);
                servers.get(self.failover.next)?.clone()
            }
        };
        let options =
            ClientOptions { connect_timeout: self.failover.connect_timeout, ..ClientOptions::default() };
        endpoint(&target, &options).ok().map(|endpoint| endpoint.connect_lazy())
    }

    fn busy(&self) -> usize {
        self.lanes.len() - self.free.len()
    }

    fn done(mut self) -> SessionOutcome {
        self.outcome.backlog = self.waiting.len() as u64;
        self.outcome
    }

    async fn run(self, channel: Channel, options: LoadOptions) -> SessionOutcome {
        match options.protocol {
            Protocol::Stream => self.run_stream(channel).await,
            Protocol::Unary | Protocol::Etcd => self.run_unary(channel, options).await,
        }
    }

    /// Sleeps until `wake` (forever when `None`).
    async fn sleep_until(wake: Option<Instant>) {
        match wake {
            Some(at) => tokio::time::sleep_until(at.into()).await,
            None => std::future::pending().await,
        }
    }

    /// rsl-kv's `Stream`: what is ready leaves in one message; answers come in batches.
    /// When the stream fails or the server says it is not the primary, the session moves
    /// to the primary it names (or the next server) and sends its outstanding operations
    /// again (a write keeps its session and sequence, so it executes at most once).
    async fn run_stream(mut self, channel: Channel) -> SessionOutcome {
        let mut client = pb::kv_client::KvClient::new(channel);
        let mut again: Vec<Op> = Vec::new();
        'connect: while Instant::now() < self.window.end || (self.busy() > 0 && !again.is_empty()) {
            if Instant::now() >= self.window.end + DRAIN_WAIT {
                break;
            }
            let (sender, receiver) = mpsc::channel::<pb::OpBatch>(64);
            let mut answers = match client.stream(ReceiverStream::new(receiver)).await {
                Ok(response) => response.into_inner(),
                Err(status) => {
                    self.note_error(format!("opening the stream: {:?}: {}", status.code(), status.message()));
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                    if let Some(channel) = self.retarget(None) {
                        client = pb::kv_client::KvClient::new(channel);
                    }
                    continue 'connect;
                }
            };
            loop {
                let mut ops = std::mem::take(&mut again);
                ops.extend(self.ready(Instant::now()));
                for chunk in ops.chunks(STREAM_BATCH_OPS_MAX) {
                    let batch = pb::OpBatch { ops: chunk.iter().map(stream_op).collect() };
                    if sender.send(batch).await.is_err() {
                        again = self.resend("the stream closed");
                        continue 'connect;
                    }
                }
                if Instant::now() >= self.window.end && self.busy() == 0 {
                    break 'connect;
                }
                let wake = if Instant::now() >= self.window.end {
                    Some(self.window.end + DRAIN_WAIT)
                } else {
                    self.next_wake()
                };
                let failed = tokio::select! {
                    message = answers.message() => match message {
                        Ok(Some(batch)) => {
                            let mut redirect = None;
                            for result in batch.results {
                                match result.result {
                                    // Not the primary, or not ready: did not take effect.
                                    Some(pb::op_result::Result::Error(error))
                                        if error.code == Code::FailedPrecondition as u32
                                            || error.code == Code::Unavailable as u32 =>
                                    {
                                        redirect.get_or_insert(error.primary_address);
                                    }
                                    other => self.finish(result.id as usize, stream_outcome(other)),
                                }
                            }
                            redirect.map(|hint| (hint, "the server is not the primary".to_owned()))
                        }
                        Ok(None) => Some((String::new(), "the server closed the stream".to_owned())),
                        Err(status) => Some((String::new(), format!("stream: {:?}: {}", status.code(), status.message()))),
                    },
                    () = Session::sleep_until(wake) => {
                        if Instant::now() >= self.window.end + DRAIN_WAIT {
                            break 'connect;
                        }
                        None
                    }
                };
                if let Some((hint, error)) = failed {
                    again = self.resend(&error);
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                    if let Some(channel) = self.retarget(Some(&hint)) {
                        client = pb::kv_client::KvClient::new(channel);
                    }
                    continue 'connect;
                }
            }
        }
        self.done()
    }

    /// One unary call per operation (rsl-kv's or etcd's), up to `in_flight` at once.
    async fn run_unary(mut self, channel: Channel, options: LoadOptions) -> SessionOutcome {
        let mut rsl = pb::kv_client::KvClient::new(channel.clone());
        let mut etcd = etcd_proto::kv_client::KvClient::new(channel);
        let timeout = options.client.attempt_timeout;
        let mut calls = FuturesUnordered::new();
        let mut again: Vec<Op> = Vec::new();
        loop {
            let retries = again.len();
            let mut ops = std::mem::take(&mut again);
            ops.extend(self.ready(Instant::now()));
            for (index, op) in ops.into_iter().enumerate() {
                let (rsl, etcd) = (rsl.clone(), etcd.clone());
                let protocol = options.protocol;
                let pause = if index < retries { RECONNECT_PAUSE } else { Duration::ZERO };
                calls.push(async move {
                    tokio::time::sleep(pause).await;
                    let lane = op.lane;
                    let call = unary_call(protocol, rsl, etcd, op);
                    let result = match tokio::time::timeout(timeout, call).await {
                        Ok(result) => result,
                        Err(_) => {
                            Err(CallError::retry(format!("no answer within {} ms", timeout.as_millis())))
                        }
                    };
                    (lane, result)
                });
            }
            if Instant::now() >= self.window.end && calls.is_empty() {
                break;
            }
            let wake = if Instant::now() >= self.window.end {
                Some(self.window.end + DRAIN_WAIT)
            } else {
                self.next_wake()
            };
            tokio::select! {
                Some((lane, result)) = calls.next(), if !calls.is_empty() => match result {
                    Ok(()) => self.finish(lane, Ok(())),
                    Err(error) => {
                        let outstanding = self.lanes[lane].busy.map(|(due, _)| due.elapsed());
                        let op = self.lanes[lane].op.clone();
                        match (error.retry, op, outstanding) {
                            (true, Some(op), Some(outstanding)) if outstanding < self.failover.deadline => {
                                // Move to the primary named, or the next server, and try again.
                                if let Some(channel) = self.retarget(error.hint.as_deref()) {
                                    rsl = pb::kv_client::KvClient::new(channel.clone());
                                    etcd = etcd_proto::kv_client::KvClient::new(channel);
                                }
                                again.push(op);
                            }
                            _ => self.finish(lane, Err(error.message)),
                        }
                    }
                },
                () = Session::sleep_until(wake) => {
                    if Instant::now() >= self.window.end + DRAIN_WAIT {
                        break;
                    }
                }
            }
        }
        self.done()
    }

    /// Keeps a sample of a failure that is not an operation's (a connection attempt).
    fn note_error(&mut self, error: String) {
        if self.outcome.error_samples.len() < ERROR_SAMPLES_MAX {
            self.outcome.error_samples.push(error);
        }
    }
}

fn stream_op(op: &Op) -> pb::Op {
    let kind = if op.read {
        pb::op::Op::Get(pb::GetRequest { key: op.key.clone(), fast: false, min_slot: 0 })
    } else {
        pb::op::Op::Put(pb::PutRequest {
            id: Some(pb::WriteId { client: op.session, sequence: op.sequence }),
            key: op.key.clone(),
            value: op.value.clone(),
        })
    };
    pb::Op { id: op.lane as u64, op: Some(kind) }
}

fn stream_outcome(result: Option<pb::op_result::Result>) -> Result<(), String> {
    match result {
        Some(pb::op_result::Result::Error(error)) => {
            Err(format!("{:?}: {}", Code::from_i32(error.code as i32), error.message))
        }
        Some(_) => Ok(()),
        None => Err("an empty result".into()),
    }
}

/// Why a unary call failed, and whether another server may succeed.
#[derive(Debug)]
struct CallError {
    message: String,
    /// The call did not take effect or may be repeated safely (a write keeps its id).
    retry: bool,
    /// The primary a refusal named.
    hint: Option<String>,
}

impl CallError {
    fn retry(message: String) -> CallError {
        CallError { message, retry: true, hint: None }
    }
}

async fn unary_call(
    protocol: Protocol,
    mut rsl: pb::kv_client::KvClient<Channel>,
    mut etcd: etcd_proto::kv_client::KvClient<Channel>,
    op: Op,
) -> Result<(), CallError> {
    let status = |status: tonic::Status| CallError {
        message: format!("{:?}: {}", status.code(), status.message()),
        retry: matches!(
            status.code(),
            Code::FailedPrecondition
                | Code::Unavailable
                | Code::Cancelled
                | Code::Unknown
                | Code::ResourceExhausted
        ),
        hint: status
            .metadata()
            .get(crate::PRIMARY_ADDRESS_METADATA)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned),
    };
    match (protocol, op.read) {
        (Protocol::Etcd, false) => {
            let request = etcd_proto::PutRequest {
                key: Bytes::from(op.key),
                value: op.value,
                lease: 0,
                prev_kv: false,
            };
            etcd.put(request).await.map(drop).map_err(status)
        }
        (Protocol::Etcd, true) => {
            let request = etcd_proto::RangeRequest {
                key: Bytes::from(op.key),
                range_end: Bytes::new(),
                limit: 0,
                revision: 0,
                serializable: false,
            };
            etcd.range(request).await.map(drop).map_err(status)
        }
        (_, false) => {
            let request = pb::PutRequest {
                id: Some(pb::WriteId { client: op.session, sequence: op.sequence }),
                key: op.key,
                value: op.value,
            };
            rsl.put(request).await.map(drop).map_err(status)
        }
        (_, true) => {
            let request = pb::GetRequest { key: op.key, fast: false, min_slot: 0 };
            rsl.get(request).await.map(drop).map_err(status)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_percentiles_come_from_the_histogram() {
        let mut histogram = histogram();
        for micros in 1..=1000 {
            histogram.record(micros).unwrap();
        }
        let latency = Latency::of(&histogram);
        assert_eq!(latency.count, 1000);
        assert_eq!(latency.p50_us, 500);
        assert_eq!(latency.p90_us, 900);
        assert_eq!(latency.p99_us, 990);
        assert_eq!(latency.p999_us, 999);
        assert_eq!(latency.max_us, 1000);
        assert_eq!(Latency::of(&super::histogram()), Latency::default());
    }

    fn options(rate: Option<f64>) -> LoadOptions {
        LoadOptions {
            clients: 2,
            in_flight: 3,
            rate_ops_per_s: rate,
            read_percent: 0,
            ..LoadOptions::default()
        }
    }

    fn window(from_now: Duration) -> Window {
        let now = Instant::now();
        Window { measure_from: now, end: now + from_now }
    }

    #[test]
    fn a_closed_loop_fills_every_lane_and_lanes_are_separate_sessions() {
        let mut session =
            Session::new(0, &options(None), window(Duration::from_secs(60)), Default::default());
        let ops = session.ready(Instant::now());
        assert_eq!(ops.len(), 3);
        let mut sessions: Vec<u64> = ops.iter().map(|op| op.session).collect();
        sessions.dedup();
        assert_eq!(sessions.len(), 3, "each lane writes as its own session");
        assert!(ops.iter().all(|op| op.sequence == 1 && op.value.len() == 64));
        assert!(session.ready(Instant::now()).is_empty(), "no lane is free");
        session.finish(ops[1].lane, Ok(()));
        let next = session.ready(Instant::now());
        assert_eq!(next.len(), 1);
        assert_eq!((next[0].lane, next[0].sequence), (ops[1].lane, 2));
        assert_eq!(session.outcome.writes.len(), 1);
    }

    #[test]
    fn an_open_loop_sends_what_is_due_and_keeps_the_rest_waiting() {
        // 2 clients at 2000 ops/s: one operation per client every millisecond.
        let mut session =
            Session::new(0, &options(Some(2000.0)), window(Duration::from_secs(60)), Default::default());
        let start = session.next_due.unwrap().0;
        let first = session.ready(start);
        assert_eq!(first.len(), 1);
        // Five more are due; only two lanes are free.
        let ops = session.ready(start + Duration::from_micros(5500));
        assert_eq!(ops.len(), 2);
        assert_eq!(session.waiting.len(), 3);
        // An operation is timed from when it was due, however late its answer.
        std::thread::sleep(Duration::from_millis(3));
        session.finish(first[0].lane, Ok(()));
        assert!(session.outcome.writes.max() >= 3000, "{}", session.outcome.writes.max());
        let waited = session.ready(start + Duration::from_micros(5500));
        assert_eq!(waited.len(), 1);
        assert_eq!(session.done().backlog, 2);
    }

    #[test]
    fn failures_and_late_answers_are_not_measured_as_successes() {
        let mut session = Session::new(0, &options(None), window(Duration::ZERO), Default::default());
        // The window already ended: nothing is sent.
        assert!(session.ready(Instant::now()).is_empty());
        let mut session =
            Session::new(0, &options(None), window(Duration::from_secs(60)), Default::default());
        let ops = session.ready(Instant::now());
        session.finish(ops[0].lane, Err("boom".into()));
        session.finish(ops[0].lane, Ok(()));
        assert_eq!(session.outcome.errors, 1);
        assert_eq!(session.outcome.writes.len(), 0, "a lane answers once");
        assert_eq!(session.outcome.error_samples, ["boom"]);
    }

    #[test]
    fn protocols_parse() {
        assert_eq!("stream".parse(), Ok(Protocol::Stream));
        assert_eq!("etcd".parse(), Ok(Protocol::Etcd));
        assert!("grpc".parse::<Protocol>().is_err());
    }
}
