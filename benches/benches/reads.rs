//! Read throughput with 1, 2 and 4 reader threads against a three-replica rsl-kv ring in
//! one process (in-memory network and logs) while a writer keeps the ring busy: with the
//! state machine's concurrent reader (`SharedKvStateMachine`, reads served on the readers'
//! own threads while the apply thread executes) and without it (`KvStateMachine`, every
//! read queued on the apply thread behind execution).
//!
//! Each reader thread issues linearizable gets on the primary (`Ring::read`, the lease or
//! a read index) back to back; the figure is gets per second over all readers, the median
//! of `--runs` runs of `--seconds` each. Prints one line per configuration.
//!
//! Run with `cargo bench -p rsl-benches --bench reads -- --seconds 2 --runs 3`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rsl::{
    Config, MemoryNetwork, MemoryStorage, NodeId, Ring, RingId, Role, Runtime, RuntimeOptions, StateMachine,
};
use rsl_kv::command::{Read, Write, WriteId};
use rsl_kv::{KvStateMachine, SharedKvStateMachine};

const RING: RingId = RingId(1);
/// Keys loaded before measuring, and read at random.
const KEYS: u64 = 10_000;
const VALUE_BYTES: usize = 100;
/// Puts per `replicate_many` of the writer.
const WRITE_BATCH: u64 = 64;

struct Settings {
    seconds: f64,
    runs: usize,
}

fn settings() -> Settings {
    let mut settings = Settings { seconds: 2.0, runs: 3 };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => settings.seconds = args.next().and_then(|v| v.parse().ok()).expect("--seconds S"),
            "--runs" => settings.runs = args.next().and_then(|v| v.parse().ok()).expect("--runs N"),
            // `cargo bench` passes `--bench`; anything else is a filter we do not use.
            _ => {}
        }
    }
    settings
}

fn put(key: u64, client: u64, sequence: u64) -> Bytes {
    let id = WriteId { client, sequence };
    Write::Put { id, key: format!("key-{key}"), value: Bytes::from(vec![key as u8; VALUE_BYTES]) }.encode()
}

/// Three replicas of a ring of `machine`s; returns the runtimes, every replica (a replica
/// stops once its last handle is dropped) and the primary.
async fn start<M: StateMachine>(machine: impl Fn() -> M) -> (Vec<Runtime>, Vec<Ring>, Ring) {
    let network = MemoryNetwork::new(1);
    let members: Vec<NodeId> = (1..=3).map(NodeId).collect();
    let mut runtimes = Vec::new();
    let mut rings = Vec::new();
    for &node in &members {
        let (endpoint, inbound) = network.endpoint(node).expect("attach");
        let runtime = Runtime::new(Arc::new(endpoint), inbound, RuntimeOptions::default()).expect("runtime");
        let mut config = Config::new(RING, node, members.clone());
        config.heartbeat_interval_ms = 20;
        config.election_delay_min_ms = 200;
        config.election_delay_max_ms = 400;
        config.checkpoint_interval_slots = 0;
        let ring = Ring::builder(config)
            .state_machine(machine())
            .storage(MemoryStorage::new())
            .runtime(&runtime)
            .start()
            .await
            .expect("start");
        runtimes.push(runtime);
        rings.push(ring);
    }
    let primary = loop {
        if let Some(primary) = rings.iter().find(|r| r.status().borrow().role == Role::Primary) {
            break primary.clone();
        }
        let mut status = rings[0].status();
        let _ = tokio::time::timeout(Duration::from_millis(100), status.changed()).await;
    };
    (runtimes, rings, primary)
}

/// Gets per second with `readers` threads for `seconds`, while a writer replicates.
fn measure(runtime: &tokio::runtime::Runtime, primary: &Ring, readers: usize, seconds: f64) -> (f64, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let writer = {
        let (primary, stop, writes) = (primary.clone(), stop.clone(), writes.clone());
        runtime.spawn(async move {
            let client = rsl::runtime::entropy() | 1;
            let mut sequence = 0;
            while !stop.load(Ordering::Relaxed) {
                let batch: Vec<Bytes> = (0..WRITE_BATCH)
                    .map(|i| {
                        sequence += 1;
                        put((sequence * 7919 + i) % KEYS, client + i, sequence)
                    })
                    .collect();
                let done = primary.replicate_many(batch).await.iter().filter(|r| r.is_ok()).count();
                writes.fetch_add(done as u64, Ordering::Relaxed);
            }
        })
    };
    let reads = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    std::thread::scope(|scope| {
        for reader in 0..readers {
            let (primary, stop, reads) = (primary.clone(), stop.clone(), reads.clone());
            let handle = runtime.handle().clone();
            scope.spawn(move || {
                let mut key = reader as u64 * 1_000_003;
                while !stop.load(Ordering::Relaxed) {
                    key = key.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1) % KEYS;
                    let get = Read::Get { key: format!("key-{key}") }.encode();
                    // The read (and, with a concurrent reader, the state machine's part of
                    // it) runs on this thread.
                    if handle.block_on(primary.read(get)).is_ok() {
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        std::thread::sleep(Duration::from_secs_f64(seconds));
        stop.store(true, Ordering::Relaxed);
    });
    let elapsed = started.elapsed().as_secs_f64();
    runtime.block_on(writer).expect("writer");
    (reads.load(Ordering::Relaxed) as f64 / elapsed, writes.load(Ordering::Relaxed) as f64 / elapsed)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn bench<M: StateMachine>(name: &str, machine: impl Fn() -> M, settings: &Settings) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (runtimes, _replicas, primary) = runtime.block_on(start(machine));
    runtime.block_on(async {
        let client = rsl::runtime::entropy() | 1;
        for chunk in (0..KEYS).collect::<Vec<_>>().chunks(500) {
            let batch = chunk.iter().map(|&key| put(key, client + key, 1)).collect();
            for result in primary.replicate_many(batch).await {
                result.expect("load");
            }
        }
    });
    for readers in [1, 2, 4] {
        let runs: Vec<(f64, f64)> =
            (0..settings.runs).map(|_| measure(&runtime, &primary, readers, settings.seconds)).collect();
        let reads = median(runs.iter().map(|r| r.0).collect());
        let writes = median(runs.iter().map(|r| r.1).collect());
        println!("{name:<28} readers {readers}  gets/s {reads:>10.0}  puts/s {writes:>8.0}");
    }
    runtime.block_on(async {
        for runtime in &runtimes {
            runtime.shutdown().await;
        }
    });
}

fn main() {
    let settings = settings();
    println!(
        "read throughput, {} run(s) of {} s each (median), 3 replicas in process, writer of {WRITE_BATCH}-put batches",
        settings.runs, settings.seconds
    );
    bench("concurrent reader", SharedKvStateMachine::default, &settings);
    bench("apply thread (no reader)", KvStateMachine::new, &settings);
}
