//! `Ring::replicate` on one replica: the ring task itself answers a call whose deadline
//! passed (and drops the late outcome), and a lone ring answers its first request as soon
//! as it is primary, start after start.

use std::io::{Read, Write};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use rsl_core::{Config, NodeId, RingId, Role, Slot};
use rsl_runtime::{
    MemoryStorage, ReplicateError, Ring, RingOptions, RingSpec, Runtime, RuntimeOptions, StateMachine,
    Storage,
};
use rsl_transport::MemoryNetwork;

/// How long any awaited condition may take before the test fails.
const WAIT: Duration = Duration::from_secs(20);

/// Echoes each request; with a gate, executing waits until the test opens it.
struct Echo {
    gate: Option<Arc<Mutex<std_mpsc::Receiver<()>>>>,
}

impl StateMachine for Echo {
    fn execute(&mut self, _slot: Slot, request: &[u8]) -> Bytes {
        if let Some(gate) = &self.gate {
            let _ = gate.lock().recv();
        }
        Bytes::copy_from_slice(request)
    }
    fn read(&self, request: &[u8]) -> Bytes {
        Bytes::copy_from_slice(request)
    }
    fn save_checkpoint(&self, _slot: Slot, _writer: &mut dyn Write) -> std::io::Result<()> {
        Ok(())
    }
    fn load_checkpoint(&mut self, _slot: Slot, _reader: &mut dyn Read) -> std::io::Result<()> {
        Ok(())
    }
}

/// A ring of one member, which elects itself quickly.
fn lone() -> Config {
    let mut config = Config::new(RingId(1), NodeId(1), vec![NodeId(1)]);
    config.heartbeat_interval_ms = 10;
    config.election_delay_min_ms = 20;
    config.election_delay_max_ms = 40;
    config
}

async fn start(runtime: &Runtime, echo: Echo, storage: &MemoryStorage, timeout: Duration) -> Ring {
    let mut spec = RingSpec::new(lone(), echo, Storage::Memory(storage.clone()));
    spec.options = RingOptions { request_timeout: timeout, ..RingOptions::default() };
    let ring = runtime.start_ring(spec).await.expect("start");
    let mut status = ring.status();
    let elected = tokio::time::timeout(WAIT, status.wait_for(|status| status.role == Role::Primary)).await;
    assert!(matches!(elected, Ok(Ok(_))), "a lone replica elects itself in time");
    ring
}

fn runtime(seed: u64) -> Runtime {
    let network = MemoryNetwork::new(seed);
    let (endpoint, inbound) = network.endpoint(NodeId(1)).unwrap();
    Runtime::new(Arc::new(endpoint), inbound, RuntimeOptions::default()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_an_outcome_by_its_deadline_times_out_and_the_ring_goes_on() {
    let runtime = runtime(1);
    let (open, gate) = std_mpsc::channel();
    let echo = Echo { gate: Some(Arc::new(Mutex::new(gate))) };
    let ring = start(&runtime, echo, &MemoryStorage::new(), Duration::from_millis(300)).await;

    // The state machine holds the request: no outcome, so the ring's timer answers.
    let started = Instant::now();
    let error = ring.replicate("held").await.expect_err("no outcome within the deadline");
    let waited = started.elapsed();
    assert!(matches!(error, ReplicateError::Timeout { after_ms: 300 }), "{error}");
    assert!(waited >= Duration::from_millis(300) && waited < WAIT, "answered after {waited:?}");

    // Once the state machine moves on, the held request's late outcome is dropped and the
    // next request is answered.
    open.send(()).unwrap();
    open.send(()).unwrap();
    assert_eq!(ring.replicate("next").await.expect("replicate"), "next");
    let statistics = ring.statistics().await.expect("running");
    assert_eq!((statistics.runtime.requests_replicated, statistics.runtime.requests_failed), (1, 1));
    assert_eq!(statistics.pending_requests, 0);
    runtime.shutdown().await;
}

/// Starts a lone ring on fresh memory storage `rounds` times, then restarts it on the same
/// storage, and replicates one request as soon as each start is primary.
async fn first_requests(rounds: u64) {
    for round in 0..rounds {
        let runtime = runtime(round);
        let storage = MemoryStorage::new();
        for start_index in 0..2 {
            let ring = start(&runtime, Echo { gate: None }, &storage, WAIT).await;
            let answer = ring.replicate("first").await;
            assert_eq!(
                answer.as_deref().ok(),
                Some(&b"first"[..]),
                "round {round} start {start_index}: {answer:?}"
            );
            ring.shutdown().await;
        }
        runtime.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_ring_answers_its_first_request_multi_thread() {
    first_requests(25).await;
}

#[tokio::test]
async fn a_lone_ring_answers_its_first_request_current_thread() {
    first_requests(25).await;
}
