//! `rsl-runtime`: the tokio runtime that drives [`rsl_core::Replica`]s.
//!
//! The consensus core performs no I/O; this crate gives it a clock, a disk, a network and a
//! state machine:
//!
//! - **One task per ring** owns the ring's replica. It waits on inbound messages, client
//!   commands, the replica's next timer (`poll_timeout`, mapped from the core's
//!   microseconds onto a monotonic epoch taken when the [`Runtime`] starts) and durability
//!   and apply notifications; after every input it drains `poll_action` and performs the
//!   actions in order, sending messages in per-peer batches at the end of each wake-up.
//! - **Persist** goes through a [`rsl_log::GroupCommitter`] per ring: a thread that takes
//!   every append queued while the previous sync ran and makes them durable with one sync.
//!   Its callback publishes the durable ticket to the ring task, and only such a ticket is
//!   ever passed to `on_persisted`.
//! - **Apply** runs on a dedicated thread per ring that owns the user's [`StateMachine`]
//!   (why: see the design notes below). Responses go back to the waiting `replicate`
//!   callers by request id; a request whose slot was applied without it (a new primary
//!   filled the slot) is answered [`ReplicateError::NotPrimary`]. Linearizable reads
//!   (under the lease, or through a read index confirmed by a round of heartbeats; see
//!   [`ReadConsistency`]) wait there for their index, fast reads for the slot the client
//!   names; a state machine with a [`ConcurrentReader`] serves them on the callers' tasks
//!   instead, once the slot is applied, while execution goes on.
//! - **Checkpoints** are saved by the state machine into a [`rsl_log::CheckpointStore`] on
//!   the secondaries (staggered, so they do not all pause at once); a primary copies the
//!   newest one from a secondary in the background instead of saving, so its execution never
//!   waits for a save (docs/PROTOCOL.md, "Checkpoints never stall the primary"). The log is
//!   truncated no further than the oldest kept checkpoint. A replica that fell
//!   behind a truncated log fetches a peer's checkpoint over the checkpoint transfer path
//!   ([`transfer`]), verifies it, installs it, and replays from there.
//! - **Recovery**: a ring opens its log (recovering the durable promise, proposals and
//!   chosen hint), loads the newest checkpoint that verifies into the state machine, and
//!   builds its replica from both. A damaged log refuses to start with an error naming
//!   file and byte offset.
//! - **Many rings per process** share one [`Runtime`] and one transport endpoint; inbound
//!   messages are demultiplexed by ring id.
//! - **Statistics**: [`RingStatistics`] per ring (RSL's RSLStats: log bytes, appends and
//!   syncs, latency histograms, slot counters, role), a periodic `tracing` line, and
//!   [`render_prometheus`] / [`metrics::serve_metrics`] for scrapes.
//! - **A [`Ring`]** is the one handle of a running ring replica: cheap to clone, from
//!   [`Ring::builder`] or [`Runtime::start_ring`]. The runtime keeps routing (inbound
//!   messages by ring id, the transport endpoint) and the lifecycle of its rings; a ring's
//!   task never reaches back into the runtime (see the `ring` module's notes).
//!
//! Applications normally use the `rsl` facade crate, which re-exports this crate's API with
//! the layers underneath; its documentation has a three-replica example built with
//! [`Ring::builder`]. Driving the runtime directly:
//!
//! ```
//! use std::io::{Read, Write};
//! use std::sync::Arc;
//!
//! use bytes::Bytes;
//! use rsl_core::{Config, NodeId, RingId, Role, Slot};
//! use rsl_runtime::{MemoryStorage, RingSpec, Runtime, RuntimeOptions, StateMachine, Storage};
//! use rsl_transport::MemoryNetwork;
//!
//! /// Answers every request with itself.
//! struct Echo;
//!
//! impl StateMachine for Echo {
//!     fn execute(&mut self, _slot: Slot, request: &[u8]) -> Bytes {
//!         Bytes::copy_from_slice(request)
//!     }
//!     fn read(&self, request: &[u8]) -> Bytes {
//!         Bytes::copy_from_slice(request)
//!     }
//!     fn save_checkpoint(&self, _slot: Slot, _writer: &mut dyn Write) -> std::io::Result<()> {
//!         Ok(())
//!     }
//!     fn load_checkpoint(&mut self, _slot: Slot, _reader: &mut dyn Read) -> std::io::Result<()> {
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let network = MemoryNetwork::new(1);
//! let (endpoint, inbound) = network.endpoint(NodeId(1))?;
//! let runtime = Runtime::new(Arc::new(endpoint), inbound, RuntimeOptions::default())?;
//!
//! // A ring of one member elects itself.
//! let mut config = Config::new(RingId(7), NodeId(1), vec![NodeId(1)]);
//! config.heartbeat_interval_ms = 10;
//! config.election_delay_min_ms = 50;
//! config.election_delay_max_ms = 100;
//! let storage = Storage::Memory(MemoryStorage::new());
//! let ring = runtime.start_ring(RingSpec::new(config, Echo, storage)).await?;
//! ring.status().wait_for(|status| status.role == Role::Primary).await?;
//!
//! assert_eq!(ring.replicate("hello").await?, "hello");
//! assert_eq!(ring.read("world").await?, "world");
//! runtime.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Design notes
//!
//! - **Why an apply thread.** User code may block (disk, locks, serialising a large
//!   checkpoint). A ring task blocked in it would stop answering heartbeats and accepts, its
//!   peers would elect someone else, and every other ring scheduled on the same tokio worker
//!   would stall too. On its own thread a slow state machine only delays responses and lets
//!   `applied` lag `chosen`; consensus keeps running. Ordering stays exact because one FIFO
//!   queue carries applies, checkpoint saves and installs, reads and notifications: a
//!   linearizable read waits there until every apply up to its index is done, and a
//!   checkpoint request sits right behind the apply of its slot. (A state machine with a
//!   [`ConcurrentReader`] serves reads on the callers' tasks instead, once the apply
//!   thread published the slot applied.) Checkpoints are saved synchronously on that
//!   thread (applies pause meanwhile, as in RSL), which is why the primary leaves saving to
//!   the secondaries.
//! - **Why checkpoint transfer has its own path.** The protocol's messages are small and
//!   latency-sensitive; a checkpoint is a file of any size. [`transfer`] holds the
//!   runtime's halves of a request/response seam ([`CheckpointFetcher`] on the client
//!   side, [`CheckpointServer`] on the serving side) that streams the raw file in chunks;
//!   the receiver verifies every block checksum and the trailer before publishing it. The
//!   runtime hands its server to its transport, and the gRPC transport serves it on the
//!   replica port under the same mutual TLS and membership checks as messages, and fetches
//!   from peers the same way; [`LocalCheckpointNetwork`] connects runtimes in one process.
//! - **Why the log is truncated less than asked.** `TruncateLog{below}` is capped at the
//!   slot after the oldest checkpoint kept, so falling back to an older checkpoint (when
//!   the newest fails to verify at restart) still finds every later slot in the log.
//! - **Why a tiny HTTP responder.** [`metrics::serve_metrics`] answers scrapes with a few
//!   lines of tokio, so embedding rsl does not pull in an HTTP framework; a service with its
//!   own server calls [`Runtime::render_prometheus`] from its handler instead.
//! - **Failure policy.** A log error stops the ring ([`RingFailure`]): after a failed sync
//!   nothing later is known durable, and answering for a vote that may not be on disk
//!   would break Paxos. Reopening recovers exactly what is durable.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod builder;
mod error;
pub mod framing;
pub mod health;
pub mod metrics;
mod reads;
mod ring;
mod runtime;
mod state_machine;
pub mod stats;
mod storage;
pub mod transfer;

pub use builder::{BuildError, RingBuilder};
pub use error::{
    ChangeConfigurationError, CheckpointNowError, FastReadError, PurgeLogError, ReadError, RelinquishError,
    ReplicateError, RingFailure, StartError, TransferError,
};
pub use health::{NotReady, ReadinessOptions, ReplicaHealth};
pub use reads::{ConcurrentReader, ReadConsistency};
pub use ring::controls::{PromotionError, ReseedError, TimingError};
pub use ring::{Recovery, Ring, RingOptions, RingSpec};
pub use runtime::{Runtime, RuntimeOptions};
pub use state_machine::{RoleChange, StateMachine};
pub use stats::{render_prometheus, HistogramSnapshot, RingStatistics};
pub use storage::{FileStorage, MemoryStorage, Storage};
pub use transfer::{
    CheckpointFetcher, CheckpointRequest, CheckpointServer, CheckpointSource, CheckpointStream,
    LocalCheckpointNetwork, NoCheckpointTransfer,
};

/// 64 bits that differ between processes and between calls: the one entropy source of the
/// runtime and the services built on it (replica seeds, client ids, load keys). A clock
/// reading, the process id and a counter, mixed; not cryptographic.
pub fn entropy() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    rsl_core::mix64(
        nanos
            ^ u64::from(std::process::id()).rotate_left(32)
            ^ COUNTER.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    )
}
