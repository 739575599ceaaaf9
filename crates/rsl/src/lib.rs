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
//!   or a shared [`Runtime`] that hosts many rings over one transport endpoint.
//! - [`Ring::replicate`] sends a request through consensus and returns the state machine's
//!   response; a replica that is not primary answers [`ReplicateError::NotPrimary`] naming
//!   the primary. [`Ring::read`] is a linearizable read under the primary's lease (no log
//!   slot); [`Ring::read_fast`] reads on any replica that has applied a given slot.
//! - [`Ring::relinquish_primary`] hands primacy over; [`Ring::status`] follows role, ballot,
//!   chosen and applied slots; [`Ring::statistics`] reports counters and latencies
//!   ([`render_prometheus`] turns them into Prometheus text).
//!
//! The layers underneath are re-exported for those who need them: [`core`] (the sans-IO
//! replica), [`log`] (log stores and checkpoints), [`transport`] (in-memory and gRPC) and
//! [`runtime`] (the tokio glue).
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

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use bytes::Bytes;
pub use rsl_core::{Ballot, Config, ConfigError, Configuration, NodeId, RingId, Role, Slot, Status};
pub use rsl_runtime::metrics::serve_metrics;
pub use rsl_runtime::{
    render_prometheus, ChangeConfigurationError, CheckpointFetcher, CheckpointServer, FastReadError,
    FileStorage, LocalCheckpointNetwork, MemoryStorage, ReadError, Recovery, RelinquishError, ReplicateError,
    RingFailure, RingHandle, RingOptions, RingSpec, RingStatistics, RoleChange, Runtime, RuntimeOptions,
    StartError, StateMachine, Storage, TransferError,
};
pub use rsl_transport::{Inbound, MemoryNetwork, Transport};
use tokio::sync::{mpsc, watch};

/// The sans-IO consensus core.
pub use rsl_core as core;
/// Log stores and checkpoints.
pub use rsl_log as log;
/// The tokio runtime that drives replicas.
pub use rsl_runtime as runtime;
/// Transports: the trait, the in-memory network, gRPC.
pub use rsl_transport as transport;

/// Why a ring could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A required part was not given to the builder.
    #[error("the ring builder needs {what}")]
    Missing {
        /// What is missing.
        what: &'static str,
    },
    /// The ring (or its runtime) failed to start.
    #[error(transparent)]
    Start(#[from] StartError),
}

enum Host {
    Shared(Runtime),
    Own { transport: Arc<dyn Transport>, inbound: mpsc::Receiver<Inbound>, options: RuntimeOptions },
}

/// Assembles a ring replica; see [`Ring::builder`].
pub struct RingBuilder {
    config: Config,
    state_machine: Option<Box<dyn StateMachine>>,
    storage: Option<Storage>,
    host: Option<Host>,
    options: RingOptions,
}

impl std::fmt::Debug for RingBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingBuilder")
            .field("config", &self.config)
            .field("state_machine", &self.state_machine.is_some())
            .field("storage", &self.storage)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl RingBuilder {
    /// The application (required).
    pub fn state_machine(mut self, state_machine: impl StateMachine) -> RingBuilder {
        self.state_machine = Some(Box::new(state_machine));
        self
    }

    /// Where the log and checkpoints live (required): [`MemoryStorage`], [`FileStorage`],
    /// or [`Storage::Opened`] for a store opened by hand.
    pub fn storage(mut self, storage: impl Into<Storage>) -> RingBuilder {
        self.storage = Some(storage.into());
        self
    }

    /// File storage in `dir` with default options (the journal in `dir/log`, checkpoints
    /// in `dir/checkpoints`).
    pub fn file_storage(self, dir: impl Into<PathBuf>) -> RingBuilder {
        self.storage(FileStorage::new(dir))
    }

    /// Host the ring in a shared runtime (one per node, many rings, one transport endpoint).
    pub fn runtime(mut self, runtime: &Runtime) -> RingBuilder {
        self.host = Some(Host::Shared(runtime.clone()));
        self
    }

    /// Host the ring in a runtime of its own on this transport endpoint and its inbound
    /// receiver; the runtime stops with the ring.
    pub fn transport(
        mut self,
        transport: Arc<dyn Transport>,
        inbound: mpsc::Receiver<Inbound>,
        options: RuntimeOptions,
    ) -> RingBuilder {
        self.host = Some(Host::Own { transport, inbound, options });
        self
    }

    /// The runtime's per-ring options (timeouts, queue bounds, group commit).
    pub fn options(mut self, options: RingOptions) -> RingBuilder {
        self.options = options;
        self
    }

    /// Recovers the storage, loads the newest checkpoint and starts the replica. Must be
    /// awaited within a tokio runtime.
    pub async fn start(self) -> Result<Ring, BuildError> {
        let state_machine = self.state_machine.ok_or(BuildError::Missing { what: "a state machine" })?;
        let storage = self.storage.ok_or(BuildError::Missing { what: "a storage choice" })?;
        let host = self.host.ok_or(BuildError::Missing { what: "a runtime or a transport" })?;
        let (runtime, owned) = match host {
            Host::Shared(runtime) => (runtime, false),
            Host::Own { transport, inbound, options } => (Runtime::new(transport, inbound, options)?, true),
        };
        let spec = RingSpec { config: self.config, state_machine, storage, options: self.options };
        let handle = runtime.start_ring(spec).await?;
        Ok(Ring { handle, owned_runtime: owned.then_some(runtime) })
    }
}

/// One replica of a running ring.
///
/// Runs until [`Ring::shutdown`], until its runtime shuts down, or until dropped (it then
/// stops in the background; a ring built with [`RingBuilder::transport`] also stops its
/// runtime).
#[derive(Debug)]
pub struct Ring {
    handle: RingHandle,
    owned_runtime: Option<Runtime>,
}

impl Ring {
    /// A builder for a replica of the ring `config` describes.
    pub fn builder(config: Config) -> RingBuilder {
        RingBuilder {
            config,
            state_machine: None,
            storage: None,
            host: None,
            options: RingOptions::default(),
        }
    }

    /// The ring.
    pub fn ring(&self) -> RingId {
        self.handle.ring()
    }

    /// This replica's node.
    pub fn node(&self) -> NodeId {
        self.handle.node()
    }

    /// Replicates `request` and returns the state machine's response [RSL's
    /// ReplicateRequest]. See [`RingHandle::replicate`].
    pub async fn replicate(&self, request: impl Into<Bytes>) -> Result<Bytes, ReplicateError> {
        self.handle.replicate(request).await
    }

    /// A linearizable read under the primary's lease. See [`RingHandle::read`].
    pub async fn read(&self, request: impl Into<Bytes>) -> Result<Bytes, ReadError> {
        self.handle.read(request).await
    }

    /// A read on this replica once it applied `min_slot` (RSL: `FastRead`). See
    /// [`RingHandle::read_fast`].
    pub async fn read_fast(&self, request: impl Into<Bytes>, min_slot: Slot) -> Result<Bytes, FastReadError> {
        self.handle.read_fast(request, min_slot).await
    }

    /// [`Ring::read_fast`] with an explicit bound on the wait for `min_slot`.
    pub async fn read_fast_within(
        &self,
        request: impl Into<Bytes>,
        min_slot: Slot,
        wait: Duration,
    ) -> Result<Bytes, FastReadError> {
        self.handle.read_fast_within(request, min_slot, wait).await
    }

    /// Every slot up to here was executed by this replica's state machine.
    pub fn applied(&self) -> Slot {
        self.handle.applied()
    }

    /// Hands primacy to `target` (or the most up-to-date live replica) [RSL's
    /// RelinquishPrimary]. Returns the target.
    pub async fn relinquish_primary(&self, target: Option<NodeId>) -> Result<NodeId, RelinquishError> {
        self.handle.relinquish_primary(target).await
    }

    /// Changes the ring's members [RSL's ChangeConfiguration]: add, remove, replace, grow
    /// or shrink. On the primary only; returns the new configuration once the change is
    /// chosen (it governs every slot after the change's slot), and the state machine hears
    /// of it through [`StateMachine::configuration_changed`]. Start new members first, as
    /// joining replicas ([`Config::joining`]): they catch up from a checkpoint and slots.
    pub async fn change_configuration(
        &self,
        members: Vec<NodeId>,
    ) -> Result<Configuration, ChangeConfigurationError> {
        self.handle.change_configuration(members).await
    }

    /// The replica's status, kept current.
    pub fn status(&self) -> watch::Receiver<Status> {
        self.handle.status()
    }

    /// Counters and latencies of this replica; `None` once it stopped.
    pub async fn statistics(&self) -> Option<RingStatistics> {
        self.handle.statistics().await
    }

    /// What the replica recovered from its storage when it started.
    pub fn recovery(&self) -> &Recovery {
        self.handle.recovery()
    }

    /// Whether the ring stopped.
    pub fn is_stopped(&self) -> bool {
        self.handle.is_stopped()
    }

    /// The underlying runtime handle (cheap to clone, e.g. into tasks).
    pub fn handle(&self) -> &RingHandle {
        &self.handle
    }

    /// Stops the replica and releases its storage; a ring built with
    /// [`RingBuilder::transport`] also shuts its runtime down.
    pub async fn shutdown(&self) {
        self.handle.shutdown().await;
        if let Some(runtime) = &self.owned_runtime {
            runtime.shutdown().await;
        }
    }
}
