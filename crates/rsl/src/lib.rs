//! `rsl`: replicated state machines with pipelined multi-Paxos, a modern take on Azure's
//! Replicated State Library.
//!
//! You implement a [`StateMachine`]: deterministic execution of requests, reads, and saving
//! and loading checkpoints. rsl runs one replica of it per node; each replica executes the
//! same requests in the same order, so all replicas hold the same state, and the ring keeps
//! serving while a majority of its replicas is up.
//!
//! - [`Ring::builder`] assembles a ring replica from a [`Config`] (ring id, this node, the
//!   members, timing), a state machine, a log store choice ([`MemoryStorage`],
//!   [`FileStorage`], or any opened [`rsl_log::LogStore`]) and a transport, either its own
//!   or a shared [`Runtime`] that hosts many rings over one transport endpoint. The
//!   [`Ring`] it returns is the handle of the running replica; it is cheap to clone.
//! - [`Ring::replicate`] sends a request through consensus and returns the state machine's
//!   response; a replica that is not primary answers [`ReplicateError::NotPrimary`] naming
//!   the primary. [`Ring::read`] is a linearizable read on the primary (no log slot) under
//!   its lease, or through a read index confirmed by a round of heartbeats when the lease
//!   cannot be used; [`Ring::read_with`] chooses per call ([`ReadConsistency`]), including
//!   linearizable reads on a secondary; [`Ring::read_fast`] reads on any replica that has
//!   applied a given slot. A state machine with a [`ConcurrentReader`] serves reads while it
//!   executes requests.
//! - [`Ring::relinquish_primary`] hands primacy over; [`Ring::status`] follows role, ballot,
//!   chosen and applied slots; [`Ring::statistics`] reports counters and latencies
//!   ([`render_prometheus`] turns them into Prometheus text).
//!
//! This crate adds no code of its own: it gathers the API of the crates underneath, which
//! are re-exported for those who need more: [`core`] (the sans-IO replica), [`log`] (log
//! stores and checkpoints), [`transport`] (in-memory and gRPC) and [`runtime`] (the tokio
//! glue, where [`Ring`] and its builder live).
//!
//! # Example
//!
//! Three replicas of a counter in one process, over the in-memory network and memory logs:
//!
//! ```
//! use std::io::{Read, Write};
//! use std::sync::Arc;
//!
//! use rsl::{
//!     Bytes, Config, LocalCheckpointNetwork, MemoryNetwork, MemoryStorage, NodeId, ReplicateError, Ring,
//!     RingId, Runtime, RuntimeOptions, Slot, StateMachine,
//! };
//!
//! /// Adds the 8-byte little-endian number in each request; reads return the total.
//! #[derive(Default)]
//! struct Counter {
//!     total: u64,
//! }
//!
//! impl StateMachine for Counter {
//!     fn execute(&mut self, _slot: Slot, request: &[u8]) -> Bytes {
//!         let add = request.try_into().map(u64::from_le_bytes).unwrap_or(0);
//!         self.total += add;
//!         Bytes::copy_from_slice(&self.total.to_le_bytes())
//!     }
//!
//!     fn read(&self, _request: &[u8]) -> Bytes {
//!         Bytes::copy_from_slice(&self.total.to_le_bytes())
//!     }
//!
//!     fn save_checkpoint(&self, _slot: Slot, writer: &mut dyn Write) -> std::io::Result<()> {
//!         writer.write_all(&self.total.to_le_bytes())
//!     }
//!
//!     fn load_checkpoint(&mut self, _slot: Slot, reader: &mut dyn Read) -> std::io::Result<()> {
//!         let mut bytes = [0; 8];
//!         reader.read_exact(&mut bytes)?;
//!         self.total = u64::from_le_bytes(bytes);
//!         Ok(())
//!     }
//! }
//!
//! fn number(bytes: &[u8]) -> u64 {
//!     u64::from_le_bytes(bytes.try_into().expect("8 bytes"))
//! }
//!
//! /// Replicates at whichever replica is primary, following the hints.
//! async fn replicate(rings: &[Ring], request: u64) -> Result<Bytes, ReplicateError> {
//!     let mut at = 0;
//!     loop {
//!         match rings[at].replicate(request.to_le_bytes().to_vec()).await {
//!             Err(ReplicateError::NotPrimary { hint: Some(primary) }) => {
//!                 at = rings.iter().position(|r| r.node() == primary).expect("a member");
//!             }
//!             Err(ReplicateError::NotPrimary { hint: None }) => {
//!                 // No primary known yet: wait until this replica learns something new.
//!                 let _ = rings[at].status().changed().await;
//!             }
//!             other => return other,
//!         }
//!     }
//! }
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let network = MemoryNetwork::new(1);
//! let checkpoints = LocalCheckpointNetwork::new();
//! let members = vec![NodeId(1), NodeId(2), NodeId(3)];
//! let mut runtimes = Vec::new();
//! let mut rings = Vec::new();
//! for &node in &members {
//!     // One runtime per node (one per process in production), on its transport endpoint.
//!     let (endpoint, inbound) = network.endpoint(node)?;
//!     let runtime = Runtime::new(Arc::new(endpoint), inbound, RuntimeOptions::default())?;
//!     // In one process checkpoints move through a local network; over the gRPC transport
//!     // the runtime serves and fetches them on the replica port by itself.
//!     checkpoints.join(&runtime);
//!
//!     let mut config = Config::new(RingId(1), node, members.clone());
//!     config.heartbeat_interval_ms = 10;
//!     config.election_delay_min_ms = 100;
//!     config.election_delay_max_ms = 200;
//!     let ring = Ring::builder(config)
//!         .state_machine(Counter::default())
//!         .storage(MemoryStorage::new())
//!         .runtime(&runtime)
//!         .start()
//!         .await?;
//!     runtimes.push(runtime);
//!     rings.push(ring);
//! }
//!
//! // Every response is the total after that request.
//! assert_eq!(number(&replicate(&rings, 1).await?), 1);
//! assert_eq!(number(&replicate(&rings, 2).await?), 3);
//! let response = replicate(&rings, 39).await?;
//! assert_eq!(number(&response), 42);
//!
//! // A linearizable read at the primary, and a fast read on every replica once it has
//! // applied the slot of the last write.
//! let primary = rings.iter().find(|r| r.status().borrow().role == rsl::Role::Primary).expect("a primary");
//! assert_eq!(number(&primary.read(Vec::new()).await?), 42);
//! let last_slot = primary.status().borrow().chosen;
//! for ring in &rings {
//!     assert_eq!(number(&ring.read_fast(Vec::new(), last_slot).await?), 42);
//! }
//!
//! for runtime in &runtimes {
//!     runtime.shutdown().await;
//! }
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use bytes::Bytes;
pub use rsl_core::{
    Ballot, Config, ConfigError, Configuration, MemberAddress, MembershipChange, NodeId, RingId, Role, Slot,
    Status, Timing,
};
pub use rsl_runtime::metrics::{serve_metrics, serve_metrics_with};
pub use rsl_runtime::{
    render_prometheus, BuildError, ChangeConfigurationError, CheckpointFetcher, CheckpointNowError,
    CheckpointServer, ConcurrentReader, FastReadError, FileStorage, LocalCheckpointNetwork, MemoryStorage,
    NotReady, PromotionError, PurgeLogError, ReadConsistency, ReadError, ReadinessOptions, Recovery,
    RelinquishError, ReplicaHealth, ReplicateError, ReseedError, Ring, RingBuilder, RingFailure, RingOptions,
    RingSpec, RingStatistics, RoleChange, Runtime, RuntimeOptions, StartError, StateMachine, Storage,
    TimingError, TransferError,
};
pub use rsl_transport::{Inbound, MemoryNetwork, Transport};

/// The sans-IO consensus core.
pub use rsl_core as core;
/// Log stores and checkpoints.
pub use rsl_log as log;
/// The tokio runtime that drives replicas.
pub use rsl_runtime as runtime;
/// Transports: the trait, the in-memory network, gRPC.
pub use rsl_transport as transport;
