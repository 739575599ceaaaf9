//! The consensus core's throughput: three in-memory replicas on one thread (rsl-testkit's
//! cluster, recording counters only: persists complete at once, messages are delivered in
//! FIFO order), after a primary is elected.
//!
//! Each iteration proposes 10,000 requests of 64 bytes at the primary and runs until every
//! one of them was applied on all three replicas; the assertion that they were is inside
//! the timed region. `batched` lets the primary batch up to 1024 requests per slot
//! (throughput in requests/s); `one_request_per_slot` caps batches at one request, so its
//! throughput is in slots/s.
//!
//! Run with `cargo bench -p rsl-benches -- --warm-up-time 1 --measurement-time 5`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rsl_testkit::{payload_requests, Cluster, Recording};

/// Requests per iteration.
const REQUESTS: u64 = 10_000;
/// Bytes of each request's payload.
const PAYLOAD_BYTES: usize = 64;
/// Unchosen slots in flight at the primary.
const PIPELINE_DEPTH: u64 = 64;

/// Requests applied, per replica.
fn applied_requests(cluster: &Cluster) -> Vec<u64> {
    cluster.nodes.iter().map(|node| node.applied_requests).collect()
}

/// Slots applied, per replica.
fn applied_slots(cluster: &Cluster) -> Vec<u64> {
    cluster.nodes.iter().map(|node| node.applied_slots).collect()
}

fn elected_cluster(batch_requests_max: u32) -> Cluster {
    // Counters only: the driver keeps no history, so the time is the core's.
    let mut cluster = Cluster::with_recording(3, Recording::Counters, move |config| {
        config.pipeline_depth = PIPELINE_DEPTH;
        config.batch_requests_max = batch_requests_max;
        // Checkpoint (and truncate the logs) as a runtime would, so that the logs stay
        // bounded however many iterations criterion runs.
        config.checkpoint_interval_slots = 1024;
        config.log_retain_slots = 64;
    });
    cluster.elect();
    cluster
}

/// Times `REQUESTS` requests from proposal to `Apply` on all three replicas, per iteration.
fn measure(cluster: &mut Cluster, next_sequence: &mut u64, iterations: u64) -> Duration {
    let mut elapsed = Duration::ZERO;
    for _ in 0..iterations {
        // Building the requests is the client's work, not the core's: outside the timing.
        let requests = payload_requests(*next_sequence, REQUESTS, PAYLOAD_BYTES);
        *next_sequence += REQUESTS;
        let expected: Vec<u64> =
            applied_requests(cluster).iter().map(|&applied| applied + REQUESTS).collect();
        let start = Instant::now();
        let slots = cluster.propose_and_apply(black_box(requests));
        assert_eq!(applied_requests(cluster), expected, "every request applied on every replica");
        elapsed += start.elapsed();
        black_box(slots);
    }
    elapsed
}

fn propose_and_apply(c: &mut Criterion) {
    let mut group = c.benchmark_group("core_3_replicas");
    group.throughput(Throughput::Elements(REQUESTS));

    let mut cluster = elected_cluster(1024);
    let mut next_sequence = 0;
    group.bench_function("batched_10k_requests_64B", |b| {
        b.iter_custom(|iterations| measure(&mut cluster, &mut next_sequence, iterations))
    });

    // One request per slot: every element is a slot, so the throughput reads as slots/s.
    let mut cluster = elected_cluster(1);
    let mut next_sequence = 0;
    group.bench_function("one_request_per_slot_10k_slots", |b| {
        b.iter_custom(|iterations| {
            let slots_before = applied_slots(&cluster);
            let elapsed = measure(&mut cluster, &mut next_sequence, iterations);
            let expected: Vec<u64> =
                slots_before.iter().map(|&slots| slots + iterations * REQUESTS).collect();
            assert_eq!(applied_slots(&cluster), expected, "one slot per request");
            elapsed
        })
    });
    group.finish();
}

criterion_group!(benches, propose_and_apply);
criterion_main!(benches);
