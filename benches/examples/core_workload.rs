//! A fixed workload of the consensus core, for instruction counts that do not depend on the
//! machine's noise: three in-memory replicas (rsl-testkit's cluster, counters only), a
//! primary elected, then `ROUNDS` rounds of 10,000 requests of 64 bytes proposed and applied
//! on every replica, first batched (up to 1024 requests per slot), then one request per slot.
//! The same work as the `core` criterion bench, without criterion's timing loop, so the
//! count is the same on every run:
//!
//! ```text
//! cargo build --release -p rsl-benches --example core_workload
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/core_workload
//! ```
//!
//! (the total is the `Collected` line of the summary; with `CARGO_TARGET_DIR` set the binary
//! is under that directory).

use rsl_testkit::{payload_requests, Cluster, Recording};

/// Rounds per batch size.
const ROUNDS: u64 = 5;
/// Requests per round.
const REQUESTS: u64 = 10_000;
/// Bytes of each request's payload.
const PAYLOAD_BYTES: usize = 64;

fn main() {
    for batch_requests_max in [1024, 1] {
        let mut cluster = Cluster::with_recording(3, Recording::Counters, move |config| {
            config.pipeline_depth = 64;
            config.batch_requests_max = batch_requests_max;
            config.checkpoint_interval_slots = 1024;
            config.log_retain_slots = 64;
        });
        cluster.elect();
        let mut slots = 0;
        for round in 0..ROUNDS {
            slots += cluster.propose_and_apply(payload_requests(round * REQUESTS, REQUESTS, PAYLOAD_BYTES));
        }
        let applied: Vec<u64> = cluster.nodes.iter().map(|node| node.applied_requests).collect();
        assert_eq!(applied, [ROUNDS * REQUESTS; 3], "every request applied on every replica");
        println!("batch_requests_max={batch_requests_max}: {} requests in {slots} slots", ROUNDS * REQUESTS);
    }
}
