//! A closed-loop load generator: `clients` sessions, each issuing its next operation as
//! soon as the previous one returns, for a fixed duration; latencies in HDR histograms.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::client::{Client, ClientOptions};

/// What to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadOptions {
    /// Server client addresses.
    pub servers: Vec<String>,
    /// Concurrent sessions.
    pub clients: u32,
    /// How long to run.
    pub duration: Duration,
    /// Distinct keys written and read.
    pub keys: u64,
    /// Bytes per written value.
    pub value_bytes: usize,
    /// Percent of operations that are (linearizable) reads; the rest are puts.
    pub read_percent: u8,
    /// Options of each session's client.
    pub client: ClientOptions,
}

impl Default for LoadOptions {
    fn default() -> LoadOptions {
        LoadOptions {
            servers: Vec::new(),
            clients: 16,
            duration: Duration::from_secs(10),
            keys: 1000,
            value_bytes: 64,
            read_percent: 50,
            client: ClientOptions::default(),
        }
    }
}

/// Counters shared with whoever watches the run (progress lines).
#[derive(Debug, Default)]
pub struct LoadCounters {
    /// Operations that succeeded.
    pub ops: AtomicU64,
    /// Operations that failed (after the client's retries).
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
    /// Sessions.
    pub clients: u32,
    /// Seconds the run took.
    pub duration_s: f64,
    /// Operations that succeeded.
    pub ops: u64,
    /// Writes (puts) that succeeded.
    pub writes: u64,
    /// Reads that succeeded.
    pub reads: u64,
    /// Operations that failed after retries.
    pub errors: u64,
    /// Successful operations per second.
    pub throughput_ops_per_s: f64,
    /// Latency of every successful operation.
    pub latency: Latency,
    /// Latency of writes.
    pub write_latency: Latency,
    /// Latency of reads.
    pub read_latency: Latency,
    /// The first few distinct errors, for diagnosis.
    pub error_samples: Vec<String>,
}

/// Histograms range from 1 µs to 60 s with 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant bounds are valid")
}

const ERROR_SAMPLES_MAX: usize = 5;

/// Runs the load; `counters` are updated as operations complete.
pub async fn run(
    options: LoadOptions,
    counters: Arc<LoadCounters>,
) -> Result<LoadReport, crate::ClientError> {
    let started = Instant::now();
    let stop_at = started + options.duration;
    let mut tasks = Vec::new();
    for index in 0..options.clients.max(1) {
        let client = Client::new(options.servers.clone(), options.client.clone())?;
        let options = options.clone();
        let counters = counters.clone();
        tasks.push(tokio::spawn(session(index, client, options, counters, stop_at)));
    }
    let mut writes = histogram();
    let mut reads = histogram();
    let mut errors = 0;
    let mut error_samples: Vec<String> = Vec::new();
    for task in tasks {
        let Ok(outcome) = task.await else {
            errors += 1;
            continue;
        };
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = writes.add(&outcome.writes);
        let _ = reads.add(&outcome.reads);
        errors += outcome.errors;
        for sample in outcome.error_samples {
            if error_samples.len() < ERROR_SAMPLES_MAX && !error_samples.contains(&sample) {
                error_samples.push(sample);
            }
        }
    }
    let duration_s = started.elapsed().as_secs_f64();
    let mut all = writes.clone();
    let _ = all.add(&reads);
    let ops = all.len();
    Ok(LoadReport {
        clients: options.clients.max(1),
        duration_s: (duration_s * 1000.0).round() / 1000.0,
        ops,
        writes: writes.len(),
        reads: reads.len(),
        errors,
        throughput_ops_per_s: if duration_s > 0.0 { (ops as f64 / duration_s).round() } else { 0.0 },
        latency: Latency::of(&all),
        write_latency: Latency::of(&writes),
        read_latency: Latency::of(&reads),
        error_samples,
    })
}

struct SessionOutcome {
    writes: Histogram<u64>,
    reads: Histogram<u64>,
    errors: u64,
    error_samples: Vec<String>,
}

async fn session(
    index: u32,
    mut client: Client,
    options: LoadOptions,
    counters: Arc<LoadCounters>,
    stop_at: Instant,
) -> SessionOutcome {
    let mut random = SplitMix64(crate::random_u64() ^ u64::from(index));
    let mut outcome =
        SessionOutcome { writes: histogram(), reads: histogram(), errors: 0, error_samples: Vec::new() };
    let mut value = vec![0u8; options.value_bytes];
    while Instant::now() < stop_at {
        let key = format!("key-{}", random.next() % options.keys.max(1));
        let read = random.next() % 100 < u64::from(options.read_percent);
        let started = Instant::now();
        let result = if read {
            client.get(&key).await.map(|_| ())
        } else {
            for chunk in value.chunks_mut(8) {
                let word = random.next().to_le_bytes();
                chunk.copy_from_slice(&word[..chunk.len()]);
            }
            client.put(&key, Bytes::copy_from_slice(&value)).await.map(|_| ())
        };
        let micros = (started.elapsed().as_micros() as u64).clamp(1, 60_000_000);
        match result {
            Ok(()) => {
                let histogram = if read { &mut outcome.reads } else { &mut outcome.writes };
                histogram.saturating_record(micros);
                counters.ops.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                outcome.errors += 1;
                counters.errors.fetch_add(1, Ordering::Relaxed);
                if outcome.error_samples.len() < ERROR_SAMPLES_MAX {
                    outcome.error_samples.push(error.to_string());
                }
            }
        }
    }
    outcome
}

/// A small, fast generator for keys and values (not cryptographic).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
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
        assert_eq!(latency.p99_us, 990);
        assert_eq!(latency.max_us, 1000);
        assert_eq!(Latency::of(&super::histogram()), Latency::default());
    }
}
