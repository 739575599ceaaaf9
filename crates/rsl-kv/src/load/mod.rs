//! The load generator behind `rsl-kv load`: `clients` sessions, each keeping up to
//! `in_flight` operations outstanding, closed-loop (the next operation leaves as soon as one
//! returns) or open-loop (operations leave at a fixed rate, whether or not earlier ones
//! returned), for a warm-up and then a measured duration; latencies go into HDR histograms.
//!
//! Three ways to reach the servers ([`Protocol`]):
//! - [`Protocol::Stream`]: rsl-kv's `Stream` RPC, one bidirectional stream per client;
//!   every operation ready at once leaves in one message, answers are matched by id. The
//!   writes travel as [`ClientOptions::wire`] says: by default encoded whole into write
//!   batches (one per message, answered by one encoded list), or one protobuf operation
//!   each ([`Wire::PerOp`], the path of servers before encoded batches).
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

mod protocols;
mod session;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use crate::client::{Client, ClientOptions, Wire};
use crate::config::parse_choice;
use session::{Session, Window};

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
        parse_choice("protocol", text, &[Protocol::Stream, Protocol::Unary, Protocol::Etcd])
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Stream => "stream",
            Protocol::Unary => "unary",
            Protocol::Etcd => "etcd",
        })
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
    /// How the stream's writes travelled (the stream protocol only).
    pub wire: Option<Wire>,
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
        wire: (options.protocol == Protocol::Stream).then_some(options.client.wire),
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

/// The endpoint of `server` with the clients' TLS, and windows for many operations in
/// flight.
fn endpoint(server: &str, options: &ClientOptions) -> Result<Endpoint, LoadError> {
    let endpoint = crate::connection::endpoint(server, &options.security)?;
    Ok(endpoint
        .connect_timeout(options.connect_timeout)
        .tcp_nodelay(true)
        .http2_adaptive_window(true)
        .initial_connection_window_size(Some(8 << 20))
        .initial_stream_window_size(Some(4 << 20)))
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

    #[test]
    fn protocols_parse() {
        assert_eq!("stream".parse(), Ok(Protocol::Stream));
        assert_eq!("etcd".parse(), Ok(Protocol::Etcd));
        assert_eq!("unary".parse(), Ok(Protocol::Unary));
        assert_eq!(
            "grpc".parse::<Protocol>(),
            Err(r#"unknown protocol "grpc"; expected stream, unary or etcd"#.to_owned())
        );
        for protocol in [Protocol::Stream, Protocol::Unary, Protocol::Etcd] {
            let json = serde_json::to_string(&protocol).unwrap();
            assert_eq!(json, format!("\"{protocol}\""), "the report names it as it parses");
        }
    }
}
