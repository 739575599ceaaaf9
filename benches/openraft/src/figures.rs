//! The figures of a run (throughput, mean and percentile latency) and of a point (the
//! medians of its runs), in the JSON shape `cargo xtask bench` writes for its own points.

use std::time::Duration;

use serde_json::{json, Value};

/// The figures of one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figures {
    /// Requests answered successfully.
    pub requests: u64,
    /// Requests that failed.
    pub errors: u64,
    /// Successful requests per second of the run's wall-clock time.
    pub ops_per_sec: f64,
    /// Mean latency, µs.
    pub mean_us: f64,
    /// Median latency, µs.
    pub p50_us: f64,
    /// 90th percentile, µs.
    pub p90_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
    /// 99.9th percentile, µs.
    pub p999_us: f64,
    /// Longest, µs.
    pub max_us: f64,
}

impl Figures {
    /// The figures of a run that took `elapsed` and answered the requests whose latencies
    /// (in nanoseconds, any order) are `latencies`, with `errors` failed requests beside
    /// them. Percentiles are exact (nearest rank).
    pub fn from_run(mut latencies: Vec<u64>, errors: u64, elapsed: Duration) -> Figures {
        latencies.sort_unstable();
        let requests = latencies.len() as u64;
        let us = |ns: u64| ns as f64 / 1000.0;
        // The nearest rank: the smallest latency at or above which a fraction q lies.
        let quantile = |q: f64| {
            let rank = (q * latencies.len() as f64).ceil() as usize;
            latencies.get(rank.clamp(1, latencies.len().max(1)) - 1).map_or(0.0, |&ns| us(ns))
        };
        let seconds = elapsed.as_secs_f64();
        let total_ns: u128 = latencies.iter().map(|&ns| u128::from(ns)).sum();
        Figures {
            requests,
            errors,
            ops_per_sec: if seconds > 0.0 { requests as f64 / seconds } else { 0.0 },
            mean_us: if requests > 0 { total_ns as f64 / requests as f64 / 1000.0 } else { 0.0 },
            p50_us: quantile(0.50),
            p90_us: quantile(0.90),
            p99_us: quantile(0.99),
            p999_us: quantile(0.999),
            max_us: latencies.last().map_or(0.0, |&ns| us(ns)),
        }
    }
}

/// The median of `values` (0 when empty).
pub fn median(mut values: Vec<f64>) -> f64 {
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

/// One system at one concurrency: its runs.
#[derive(Debug, Clone)]
pub struct Point {
    /// `rsl-facade` or `openraft`.
    pub system: &'static str,
    /// Client tasks.
    pub clients: u32,
    /// Each run's figures.
    pub runs: Vec<Figures>,
}

impl Point {
    /// The median over the runs of the figure `pick` takes.
    pub fn median(&self, pick: impl Fn(&Figures) -> f64) -> f64 {
        median(self.runs.iter().map(pick).collect())
    }

    /// Median requests per second.
    pub fn ops_per_sec(&self) -> f64 {
        self.median(|run| run.ops_per_sec)
    }

    /// Median mean latency, µs.
    pub fn mean_us(&self) -> f64 {
        self.median(|run| run.mean_us)
    }

    /// Failed requests over every run.
    pub fn errors(&self) -> u64 {
        self.runs.iter().map(|run| run.errors).sum()
    }

    /// The point as `cargo xtask bench` writes its points (the fields its baseline
    /// comparison keys on: system, backend, mode, payload_bytes, read_percent, clients,
    /// in_flight), with the mean latency added.
    pub fn to_json(&self) -> Value {
        json!({
            "system": self.system,
            "backend": "memory",
            "mode": "closed",
            "payload_bytes": 0,
            "read_percent": 0,
            "clients": self.clients,
            "in_flight": 1,
            "concurrency": self.clients,
            "rate_ops_per_s": null,
            "runs": self.runs.len(),
            "requests_each": self.runs.iter().map(|run| run.requests + run.errors).collect::<Vec<_>>(),
            "ops_per_sec": self.ops_per_sec().round(),
            "ops_per_sec_each": self.runs.iter().map(|run| run.ops_per_sec.round()).collect::<Vec<_>>(),
            "mean_us": round2(self.mean_us()),
            "p50_us": self.median(|run| run.p50_us),
            "p90_us": self.median(|run| run.p90_us),
            "p99_us": self.median(|run| run.p99_us),
            "p999_us": self.median(|run| run.p999_us),
            "max_us": self.median(|run| run.max_us),
            "errors": self.errors(),
        })
    }
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

#[cfg(test)]
impl Figures {
    /// A run of 10 answered requests and `errors` failed ones, at `ops_per_sec`, every
    /// latency figure `latency_us`.
    pub fn flat(ops_per_sec: f64, latency_us: f64, errors: u64) -> Figures {
        let l = latency_us;
        Figures {
            requests: 10,
            errors,
            ops_per_sec,
            mean_us: l,
            p50_us: l,
            p90_us: l,
            p99_us: l,
            p999_us: l,
            max_us: l,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_reports_throughput_and_percentiles_in_microseconds() {
        // 1..=1000 µs, shuffled.
        let latencies: Vec<u64> = (1..=1000u64).map(|i| (i * 7919 % 1000 + 1) * 1000).collect();
        let figures = Figures::from_run(latencies, 2, Duration::from_millis(500));
        assert_eq!((figures.requests, figures.errors), (1000, 2));
        assert_eq!(figures.ops_per_sec, 2000.0);
        assert_eq!(figures.mean_us, 500.5);
        assert_eq!((figures.p50_us, figures.p90_us, figures.p99_us), (500.0, 900.0, 990.0));
        assert_eq!((figures.p999_us, figures.max_us), (999.0, 1000.0));
        let one = Figures::from_run(vec![1500], 0, Duration::from_secs(1));
        assert_eq!((one.p50_us, one.p999_us, one.mean_us), (1.5, 1.5, 1.5));
    }

    #[test]
    fn an_empty_run_has_zero_figures() {
        let figures = Figures::from_run(Vec::new(), 5, Duration::ZERO);
        assert_eq!((figures.requests, figures.ops_per_sec, figures.mean_us), (0, 0.0, 0.0));
    }

    #[test]
    fn a_point_is_the_median_of_its_runs() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(Vec::new()), 0.0);
        let run = |ops: f64, mean: f64| Figures::flat(ops, mean, 1);
        let point = Point {
            system: "openraft",
            clients: 64,
            runs: vec![run(300.0, 9.0), run(100.0, 1.0), run(200.0, 5.0)],
        };
        assert_eq!((point.ops_per_sec(), point.mean_us(), point.errors()), (200.0, 5.0, 3));
        let json = point.to_json();
        assert_eq!(json["clients"], 64);
        assert_eq!(json["ops_per_sec"], 200.0);
        assert_eq!(json["ops_per_sec_each"], json!([300.0, 100.0, 200.0]));
        assert_eq!(json["requests_each"], json!([11, 11, 11]));
        assert_eq!((json["mode"].as_str(), json["in_flight"].as_u64()), (Some("closed"), Some(1)));
    }
}
