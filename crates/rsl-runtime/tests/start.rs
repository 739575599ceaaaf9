//! What starting a ring refuses, with the error a user sees.

use std::io::{Read, Write};
use std::sync::Arc;

use bytes::Bytes;
use rsl_core::{Config, NodeId, RingId, Slot};
use rsl_runtime::{MemoryStorage, RingSpec, Runtime, RuntimeOptions, StartError, StateMachine, Storage};
use rsl_transport::MemoryNetwork;

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
