//! Starting a ring: what it refuses, with the error a user sees; the parts the builder
//! requires; and a ring hosted in a runtime of its own, which stops with it.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rsl_core::{Config, NodeId, RingId, Role, Slot};
use rsl_runtime::{
    BuildError, MemoryStorage, Ring, RingSpec, Runtime, RuntimeOptions, StartError, StateMachine, Storage,
};
use rsl_transport::MemoryNetwork;
use tokio::sync::mpsc;

/// How long any awaited condition may take before the test fails.
const WAIT: Duration = Duration::from_secs(20);

struct Echo;

impl StateMachine for Echo {
    fn execute(&mut self, _slot: Slot, request: &[u8]) -> Bytes {
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

fn spec(ring: u64, node: u64, storage: &MemoryStorage) -> RingSpec {
    let config = Config::new(RingId(ring), NodeId(node), vec![NodeId(1), NodeId(2), NodeId(3)]);
    RingSpec::new(config, Echo, Storage::Memory(storage.clone()))
}

#[test]
fn a_runtime_needs_tokio() {
    let network = MemoryNetwork::new(1);
    let (endpoint, inbound) = network.endpoint(NodeId(1)).unwrap();
    let error = Runtime::new(Arc::new(endpoint), inbound, RuntimeOptions::default()).expect_err("no tokio");
    assert!(matches!(error, StartError::NoTokioRuntime), "{error}");
}

#[tokio::test]
async fn start_refuses_a_wrong_node_a_duplicate_an_invalid_config_and_a_stopped_runtime() {
    let network = MemoryNetwork::new(1);
    let (endpoint, inbound) = network.endpoint(NodeId(1)).unwrap();
    let runtime = Runtime::new(Arc::new(endpoint), inbound, RuntimeOptions::default()).unwrap();
    let storage = MemoryStorage::new();

    let error = runtime.start_ring(spec(1, 2, &storage)).await.expect_err("wrong node");
    assert!(
        matches!(error, StartError::WrongNode { ring_node: NodeId(2), runtime_node: NodeId(1), .. }),
        "{error}"
    );
    assert_eq!(error.to_string(), "ring 1 is configured for node n2, but this runtime is node n1");

    let mut invalid = spec(1, 1, &storage);
    invalid.config.pipeline_depth = 0;
    let error = runtime.start_ring(invalid).await.expect_err("invalid config");
    assert!(error.to_string().contains("pipeline_depth"), "{error}");

    let ring = runtime.start_ring(spec(1, 1, &storage)).await.expect("start");
    assert_eq!(runtime.rings(), vec![RingId(1)]);
    let error = runtime.start_ring(spec(1, 1, &MemoryStorage::new())).await.expect_err("duplicate");
    assert!(matches!(error, StartError::AlreadyRunning { ring: RingId(1) }), "{error}");

    // The storage is locked while the ring runs, and free once it stopped.
    ring.shutdown().await;
    assert!(ring.is_stopped());
    assert_eq!(ring.stop_reason().as_deref(), Some("shut down"));
    assert!(runtime.rings().is_empty());
    let again = runtime.start_ring(spec(1, 1, &storage)).await.expect("restart on the same storage");
    let error = again.replicate(&b"x"[..]).await.expect_err("a lone replica of three is not primary");
    assert!(matches!(error, rsl_runtime::ReplicateError::NotPrimary { .. }), "{error}");

    runtime.shutdown().await;
    assert!(again.is_stopped());
    let error = runtime.start_ring(spec(2, 1, &storage)).await.expect_err("shut down");
    assert!(matches!(error, StartError::RuntimeShutDown), "{error}");
}

/// A ring of one member, which elects itself quickly.
fn lone(ring: u64) -> Config {
    let mut config = Config::new(RingId(ring), NodeId(1), vec![NodeId(1)]);
    config.heartbeat_interval_ms = 10;
    config.election_delay_min_ms = 50;
    config.election_delay_max_ms = 100;
    config
}

/// Builds a lone ring in a runtime of its own on node 1 of `network`. The runtime reads
/// inbound messages from a channel whose sender is returned: it closes when the runtime
/// stops listening.
async fn own_runtime(network: &MemoryNetwork, ring: u64) -> (Ring, mpsc::Sender<rsl_transport::Inbound>) {
    let (endpoint, _unread) = network.endpoint(NodeId(1)).unwrap();
    let (listening, inbound) = mpsc::channel(16);
    let ring = Ring::builder(lone(ring))
        .state_machine(Echo)
        .storage(MemoryStorage::new())
        .transport(Arc::new(endpoint), inbound, RuntimeOptions::default())
        .start()
        .await
        .expect("start");
    let mut status = ring.status();
    let elected = tokio::time::timeout(WAIT, status.wait_for(|status| status.role == Role::Primary)).await;
    assert!(matches!(elected, Ok(Ok(_))), "a lone replica elects itself in time");
    (ring, listening)
}

#[tokio::test]
async fn the_builder_names_what_is_missing() {
    let error =
        Ring::builder(lone(1)).storage(MemoryStorage::new()).start().await.expect_err("no state machine");
    assert!(matches!(error, BuildError::Missing { what: "a state machine" }), "{error}");
    let error = Ring::builder(lone(1)).state_machine(Echo).start().await.expect_err("no storage");
    assert_eq!(error.to_string(), "the ring builder needs a storage choice");
    let error = Ring::builder(lone(1))
        .state_machine(Echo)
        .storage(MemoryStorage::new())
        .start()
        .await
        .expect_err("no host");
    assert!(matches!(error, BuildError::Missing { what: "a runtime or a transport" }), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_of_its_own_shuts_down_with_the_ring() {
    let network = MemoryNetwork::new(1);
    let (ring, listening) = own_runtime(&network, 1).await;
    assert_eq!(ring.replicate("hello").await.expect("replicate"), "hello");
    assert!(!listening.is_closed(), "the runtime listens while its ring runs");
    // A clone is the same replica; stopping through it stops the runtime too.
    ring.clone().shutdown().await;
    assert!(ring.is_stopped());
    assert_eq!(ring.stop_reason().as_deref(), Some("shut down"));
    assert!(listening.is_closed(), "the ring's runtime stopped with it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_handle_stops_the_ring_and_its_runtime() {
    let network = MemoryNetwork::new(1);
    let (ring, listening) = own_runtime(&network, 2).await;
    let clone = ring.clone();
    drop(ring);
    assert_eq!(clone.replicate("still here").await.expect("a clone keeps it running"), "still here");
    drop(clone);
    tokio::time::timeout(WAIT, listening.closed()).await.expect("the runtime stops in the background");
}
