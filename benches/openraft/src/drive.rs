//! The closed-loop load both systems get: C client tasks, each sending one request after
//! another to the leader (the primary) until the point's N requests are done, each
//! request timed from its submission to its answer.
//!
//! The clients run on a runtime of their own, apart from the one the members run on, as
//! openraft's `benchmarks/minimal` does, so neither system's workers also carry the load
//! generator's tasks.

use std::future::Future;
use std::time::Instant;

use anyhow::{Context, Result};
use tokio::runtime::Runtime;

use crate::figures::Figures;

/// Where the client tasks send their requests: one member's handle, cloned into each task.
pub trait Leader: Clone + Send + Sync + 'static {
    /// Submits one empty request and waits for its answer (`Err` when it was refused or
    /// failed; the request is then counted as an error, not as done).
    fn submit(&self) -> impl Future<Output = Result<()>> + Send;
}

/// What one client task brings back.
struct TaskResult {
    /// Nanoseconds of each answered request, in order. A plain vector: the task only
    /// appends, and its few hundred bytes cost far less per request than a histogram's
    /// hundreds of kilobytes per task (zeroed on creation, missed in cache on each record).
    latencies: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

/// Runs `clients` tasks on `client_runtime`, each submitting `requests_per_client`
/// requests one after another through `leader`; returns the figures of the whole run
/// (throughput over the time from the first submission to the last answer).
pub fn closed_loop<L: Leader>(
    client_runtime: &Runtime,
    leader: &L,
    clients: u32,
    requests_per_client: u64,
) -> Result<Figures> {
    client_runtime.block_on(async {
        let started = Instant::now();
        let mut tasks = Vec::with_capacity(clients as usize);
        for _ in 0..clients {
            let leader = leader.clone();
            tasks.push(tokio::spawn(async move {
                let mut result = TaskResult {
                    latencies: Vec::with_capacity(requests_per_client as usize),
                    errors: 0,
                    first_error: None,
                };
                for _ in 0..requests_per_client {
                    let sent = Instant::now();
                    match leader.submit().await {
                        Ok(()) => result.latencies.push(sent.elapsed().as_nanos() as u64),
                        Err(error) => {
                            result.errors += 1;
                            result.first_error.get_or_insert_with(|| format!("{error:#}"));
                        }
                    }
                }
                result
            }));
        }
        let mut results = Vec::with_capacity(tasks.len());
        for task in tasks {
            results.push(task.await.context("a client task panicked")?);
        }
        let elapsed = started.elapsed();
        let mut latencies = Vec::with_capacity(results.iter().map(|r| r.latencies.len()).sum());
        let mut errors = 0;
        let mut first_error = None;
        for result in results {
            latencies.extend(result.latencies);
            errors += result.errors;
            first_error = first_error.or(result.first_error);
        }
        if let Some(error) = first_error {
            eprintln!("  {errors} request(s) failed; the first: {error}");
        }
        Ok(Figures::from_run(latencies, errors, elapsed))
    })
}
