//! Write latency of rsl-kv's state machine while a checkpoint of a large state is saved.
//!
//! Three replicas of one ring run in this process over the in-memory network, each with
//! file storage (journal and checkpoints) under a scratch directory and rsl-kv's
//! `KvStateMachine`. The bulk phase fills the map with `STATE_MIB` MiB of 64 KiB values;
//! then `WRITERS` clients put small values in a closed loop, timing every write, while the
//! slot count crosses `checkpoint_interval_slots` (four times the bulk phase's slots, so
//! every replica's first checkpoint holds the whole state). The state machine is wrapped to
//! time each `save_checkpoint`. The writers stop once every replica has a checkpoint of the
//! full state (saved, or on a primary that leaves saving to the secondaries, copied). It
//! prints the writes' latency in the checkpoint window (from the first save's start until
//! then) and before it.
//!
//! ```text
//! cargo run --release -p rsl-benches --example checkpoint_stall -- [STATE_MIB] [DIR]
//! ```

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rsl::{
    Config, FileStorage, LocalCheckpointNetwork, MemoryNetwork, NodeId, Ring, RingId, Role, Runtime,
    RuntimeOptions, Slot, StateMachine,
};
use rsl_kv::command::{Write, WriteId};
use rsl_kv::KvStateMachine;

const VALUE_BYTES: usize = 64 << 10;
const VALUES_PER_SLOT: usize = 4;
const WRITERS: u64 = 8;

/// One `save_checkpoint`: which replica, its slot, when it ran.
#[derive(Clone, Copy, Debug)]
struct Save {
    node: u64,
    slot: Slot,
    start: Instant,
    end: Instant,
}

/// rsl-kv's machine, timing its saves.
struct Timed {
    inner: KvStateMachine,
    node: u64,
    saves: Arc<Mutex<Vec<Save>>>,
}

impl StateMachine for Timed {
    fn execute(&mut self, slot: Slot, request: &[u8]) -> Bytes {
        self.inner.execute(slot, request)
    }

    fn read(&self, request: &[u8]) -> Bytes {
        self.inner.read(request)
    }

    fn save_checkpoint(&self, slot: Slot, writer: &mut dyn std::io::Write) -> std::io::Result<()> {
        let start = Instant::now();
        let result = self.inner.save_checkpoint(slot, writer);
        self.saves.lock().unwrap().push(Save { node: self.node, slot, start, end: Instant::now() });
        result
    }

    fn load_checkpoint(&mut self, slot: Slot, reader: &mut dyn std::io::Read) -> std::io::Result<()> {
        self.inner.load_checkpoint(slot, reader)
    }
}

fn put(client: u64, sequence: u64, key: String, value: Bytes) -> Bytes {
    Write::Put { id: WriteId { client, sequence }, key, value }.encode()
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn describe(label: &str, mut latencies: Vec<Duration>) {
    latencies.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{label}: {} writes, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latencies.len(),
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(latencies.last().copied().unwrap_or_default()),
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let state_mib: usize = args.next().map_or(1024, |a| a.parse().expect("STATE_MIB is a number"));
    let scratch = tempfile::tempdir_in(args.next().unwrap_or_else(|| "/tmp".into())).expect("scratch dir");
    let values = state_mib * (1 << 20) / VALUE_BYTES;
    let bulk_slots = (values / VALUES_PER_SLOT) as u64;
    let interval = 4 * bulk_slots;

    let members: Vec<NodeId> = (1..=3).map(NodeId).collect();
    let network = MemoryNetwork::new(1);
    let checkpoints = LocalCheckpointNetwork::new();
    let saves = Arc::new(Mutex::new(Vec::new()));
    let mut rings = Vec::new();
    let mut runtimes = Vec::new();
    for &node in &members {
        let (endpoint, inbound) = network.endpoint(node).expect("attach");
        let runtime = Runtime::new(Arc::new(endpoint), inbound, RuntimeOptions::default()).expect("runtime");
        checkpoints.join(&runtime);
        let mut config = Config::new(RingId(1), node, members.clone());
        config.heartbeat_interval_ms = 20;
        config.election_delay_min_ms = 200;
        config.election_delay_max_ms = 400;
        config.pipeline_depth = 16;
        config.batch_bytes_max = (VALUES_PER_SLOT * (VALUE_BYTES + 512)) as u64;
        config.message_bytes_max = 2 * config.pipeline_depth * config.batch_bytes_max;
        config.checkpoint_interval_slots = interval;
        // Only the slot trigger, so both builds checkpoint at the same points.
        config.checkpoint_interval_bytes = 0;
        let machine = Timed { inner: KvStateMachine::new(), node: node.0, saves: saves.clone() };
        let ring = Ring::builder(config)
            .state_machine(machine)
            .storage(FileStorage::new(scratch.path().join(format!("node-{}", node.0))))
            .runtime(&runtime)
            .start()
            .await
            .expect("start");
        rings.push(ring);
        runtimes.push(runtime);
    }
    let primary = loop {
        if let Some(ring) = rings.iter().find(|r| r.status().borrow().role == Role::Primary) {
            break ring.clone();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!(
        "state {state_mib} MiB in {values} values of {VALUE_BYTES} B; checkpoint every {interval} slots; primary {}",
        primary.node()
    );

    let filled = Instant::now();
    let value = Bytes::from(vec![7u8; VALUE_BYTES]);
    for group in 0..values / VALUES_PER_SLOT {
        let writes = (0..VALUES_PER_SLOT)
            .map(|i| {
                let n = (group * VALUES_PER_SLOT + i) as u64;
                put(1, n + 1, format!("bulk-{n:08}"), value.clone())
            })
            .collect();
        for result in primary.replicate_many(writes).await {
            result.expect("bulk write");
        }
    }
    let applied = primary.status().borrow().applied;
    println!("filled in {:.1} s, applied {applied}", filled.elapsed().as_secs_f64());

    let latencies = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for client in 0..WRITERS {
        let (primary, latencies, stop) = (primary.clone(), latencies.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut sequence = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                sequence += 1;
                let write =
                    put(100 + client, sequence, format!("small-{client}"), Bytes::from_static(b"12345678"));
                let start = Instant::now();
                primary.replicate(write).await.expect("small write");
                latencies.lock().unwrap().push((start, start.elapsed()));
            }
        }));
    }
    // Until every replica has a checkpoint of the full state (saved or, on a primary,
    // copied).
    let covered = loop {
        let done = rings.iter().all(|r| r.status().borrow().checkpoint >= Slot(bulk_slots));
        if done {
            break Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for writer in writers {
        writer.await.expect("writer");
    }

    let saves = saves.lock().unwrap().clone();
    for save in &saves {
        println!(
            "node {} saved slot {} in {:.2} s",
            save.node,
            save.slot,
            save.end.duration_since(save.start).as_secs_f64()
        );
    }
    let begin = saves.iter().map(|s| s.start).min().expect("a save");
    let end = saves.iter().map(|s| s.end).max().expect("a save").max(covered);
    println!("checkpoint window {:.2} s", end.duration_since(begin).as_secs_f64());
    let latencies = latencies.lock().unwrap().clone();
    let (inside, before): (Vec<_>, Vec<_>) =
        latencies.iter().partition(|(start, latency)| *start + *latency >= begin);
    describe("during the checkpoint", inside.into_iter().map(|(_, l)| l).collect());
    describe("before it", before.into_iter().map(|(_, l)| l).collect());
    for runtime in runtimes {
        runtime.shutdown().await;
    }
}
