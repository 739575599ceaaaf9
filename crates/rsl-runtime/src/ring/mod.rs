//! One ring replica: the task that owns its [`Replica`](rsl_core::Replica), the threads it
//! feeds, and [`Ring`], how clients reach it.
//!
//! # Dependency direction
//!
//! The runtime ([`crate::Runtime`]) knows the ring; the ring knows nothing of the runtime.
//! The runtime builds a ring with [`RingTask::start`] from a few parts (the [`RingSpec`],
//! the transport endpoint, the runtime's current checkpoint fetcher and its clock), routes
//! inbound messages into the [`Inbox`] it gets back, and owns the lifecycle: it spawns
//! [`RingTask::run`], takes the ring out of its routing table when the loop ends, then
//! lets [`Stopping::finish`](stop::Stopping::finish) release the storage. The ring sends
//! through the endpoint it was given, and tells nobody when it stops: whoever spawned it
//! awaits it.
//!
//! # Layout
//!
//! - `start`: opening the storage (recovery), and wiring a new ring's parts.
//! - `task`: the task's loop and its inputs (messages, client commands, timers, durability,
//!   apply events, fetched checkpoints).
//! - `actions`: performing what the replica asks (persist, send, apply, checkpoint,
//!   truncate, fetch) and flushing a wake-up's output.
//! - `persist`: where a persist goes to the log (the group committer) and which tickets are
//!   durable.
//! - `network`: outbound messages batched per peer, and who the transport admits.
//! - `checkpoints`: the checkpoint store as the task uses it (truncation floor, fetching).
//! - `checkpointing`: save outcomes, fetched and copied checkpoints, `checkpoint_now` and
//!   `purge_log`.
//! - `requests`: client requests waiting for their outcome, and where each is answered.
//! - `reads`: linearizable reads (the lease or a read index) and where they are served.
//! - `apply`: the apply thread that owns the state machine, and the task's queue to it
//!   (which, with [`ApplyOn::RingTask`], runs the state machine on the task instead);
//!   `panicked`: a state machine's panic reported to the task before the panic hook runs.
//! - `handle`: [`Ring`], the public handle, and the commands it sends to the task.
//! - `stop`: stopping in an order that loses nothing durable.
//! - `controls` (and `reseed`, the apply thread's part): operator controls and health
//!   (forced election, timing, re-seed, exclusive and last requests, replica health,
//!   readiness).

mod actions;
mod apply;
mod checkpointing;
mod checkpoints;
pub(crate) mod controls;
mod handle;
mod network;
mod panicked;
mod persist;
mod reads;
mod requests;
mod reseed;
mod start;
mod stop;
mod task;

use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rsl_core::{Config, NodeId, RingId, Slot};
use rsl_log::GroupCommitOptions;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::state_machine::StateMachine;
use crate::stats::{RingCounters, RingLatencies};
use crate::storage::Storage;

pub use handle::Ring;
pub(crate) use handle::WeakRing;
pub(crate) use start::Started;
pub(crate) use task::{Inbox, RingTask};

/// What starting a ring needs: its configuration, the application, and its storage.
pub struct RingSpec {
    /// The replica's configuration (ring, node, members, timing, bounds).
    pub config: Config,
    /// The application.
    pub state_machine: Box<dyn StateMachine>,
    /// Where the log and the checkpoints live.
    pub storage: Storage,
    /// The runtime's per-ring options.
    pub options: RingOptions,
}

impl RingSpec {
    /// A spec with default [`RingOptions`].
    pub fn new(config: Config, state_machine: impl StateMachine, storage: Storage) -> RingSpec {
        RingSpec { config, state_machine: Box::new(state_machine), storage, options: RingOptions::default() }
    }
}

impl fmt::Debug for RingSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingSpec")
            .field("config", &self.config)
            .field("storage", &self.storage)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Per-ring options of the runtime (the protocol's options are in [`rsl_core::Config`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingOptions {
    /// How long `replicate` waits for the response before
    /// [`ReplicateError::Timeout`](crate::ReplicateError::Timeout).
    pub request_timeout: Duration,
    /// How long `read` waits for the state machine to reach the read index.
    pub read_timeout: Duration,
    /// How long `read_fast` waits for the replica to apply the slot the client names.
    pub fast_read_wait_max: Duration,
    /// Reads that may wait for the state machine at once; more are refused as busy.
    pub reads_waiting_max: u64,
    /// Client commands queued for the ring task; `replicate` waits for room beyond this.
    pub commands_max: usize,
    /// Inbound messages queued for the ring task; more are dropped (and counted).
    pub inbound_messages_max: usize,
    /// Options of the ring's group committer (queue depth, requests per sync).
    pub group_commit: GroupCommitOptions,
    /// A checkpoint transfer gives up when no progress is made for this long.
    pub checkpoint_transfer_timeout: Duration,
    /// Log a statistics line (at `info`) this often; `None` never.
    pub statistics_log_interval: Option<Duration>,
    /// How long `change_configuration` waits for a learner it would promote to catch up
    /// (to within `Config::learner_promotion_lag_slots_max`) before it gives up with
    /// [`ChangeConfigurationError::LearnerBehind`](crate::ChangeConfigurationError::LearnerBehind).
    /// Zero refuses at once.
    pub learner_promotion_wait: Duration,
    /// Where the state machine runs: on a thread of its own (the default) or on the ring
    /// task. See [`ApplyOn`] for the trade-off.
    pub apply_on: ApplyOn,
}

/// Where a ring runs its [`StateMachine`] (every call: `execute`, reads served in order
/// with it, checkpoints, notifications).
///
/// On its own thread (the default), a slow call delays only the answers: consensus goes on
/// choosing slots meanwhile. On the ring task, a chosen request is executed and answered in
/// the same wake-up that learnt it chosen, which saves two hand-offs between threads per
/// batch of slots (the values to the thread, the answers back) and a thread per ring; but
/// while the state machine works the ring task does nothing else: no messages, heartbeats,
/// proposals or durable writes are handled, so a slow `execute`, `save_checkpoint` or
/// `load_checkpoint` stalls consensus (and a long one looks like a dead primary to the
/// other replicas). Choose [`ApplyOn::RingTask`] only for a state machine whose every call
/// is short (microseconds, no blocking I/O): an in-memory map, a counter.
///
/// Either way the state machine sees the same calls in the same order, and a panic in it
/// stops the ring with [`RingFailure::StateMachinePanicked`](crate::RingFailure::StateMachinePanicked).
/// With [`ApplyOn::RingTask`], [`StateMachine::can_become_primary`] is polled when the ring
/// task wakes (at least once per heartbeat interval while the ring is active) instead of on
/// the thread's own clock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ApplyOn {
    /// A thread of its own per ring (`rsl-apply-<ring>`).
    #[default]
    Thread,
    /// The ring task: fewer hand-offs per request, but the state machine's time is taken
    /// from consensus.
    RingTask,
}

impl ApplyOn {
    /// The names [`ApplyOn`] displays as and parses from (config files, flags):
    /// `thread` and `ring-task`.
    pub const NAMES: [&'static str; 2] = ["thread", "ring-task"];

    fn name(self) -> &'static str {
        match self {
            ApplyOn::Thread => Self::NAMES[0],
            ApplyOn::RingTask => Self::NAMES[1],
        }
    }
}

impl std::fmt::Display for ApplyOn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ApplyOn {
    type Err = String;

    fn from_str(text: &str) -> Result<ApplyOn, String> {
        [ApplyOn::Thread, ApplyOn::RingTask]
            .into_iter()
            .find(|choice| choice.name() == text)
            .ok_or_else(|| format!("unknown place to apply {text:?}; expected thread or ring-task"))
    }
}

impl Default for RingOptions {
    fn default() -> Self {
        RingOptions {
            request_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(5),
            fast_read_wait_max: Duration::from_secs(1),
            reads_waiting_max: 10_000,
            commands_max: 4096,
            inbound_messages_max: 8192,
            group_commit: GroupCommitOptions { queue_depth_max: 65_536, ..GroupCommitOptions::default() },
            checkpoint_transfer_timeout: Duration::from_secs(10),
            statistics_log_interval: Some(Duration::from_secs(60)),
            learner_promotion_wait: Duration::from_secs(30),
            apply_on: ApplyOn::Thread,
        }
    }
}

/// What a ring found in its storage when it started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Log records replayed (zero for a store opened by the caller).
    pub log_records: u64,
    /// Bytes of valid log records read.
    pub log_bytes: u64,
    /// A torn tail the log recovery cut (the unsynced last write of a crash).
    pub torn_tail: Option<rsl_log::Cut>,
    /// The durable promise.
    pub promise: rsl_core::Ballot,
    /// Proposals the log held.
    pub proposals: u64,
    /// The durable chosen-watermark hint.
    pub chosen_hint: Slot,
    /// The checkpoint loaded into the state machine (zero: none).
    pub checkpoint: Slot,
    /// Newer checkpoints that failed to verify and were skipped, with the reason.
    pub skipped_checkpoints: Vec<String>,
}

/// What a ring's handles, its task and its apply thread share.
#[derive(Debug)]
struct RingShared {
    ring: RingId,
    node: NodeId,
    /// Shared with the checkpoint server too, which counts the transfers it serves.
    counters: Arc<RingCounters>,
    latencies: RingLatencies,
    /// Every slot up to here has been executed by the state machine (set by the apply
    /// thread).
    applied: AtomicU64,
    /// The same, for callers that wait for a slot to be applied (published only when the
    /// state machine has a concurrent reader, the only such callers).
    applied_changed: watch::Sender<Slot>,
    /// The state machine's concurrent reader, if it has one.
    reader: Option<reads::SharedReader>,
    /// Why the ring stopped, once it is stopping.
    stop_reason: Mutex<Option<String>>,
    /// Turns true once the ring stopped and released its storage.
    finished: watch::Receiver<bool>,
    options: RingOptions,
    recovery: Recovery,
    /// The election and heartbeat timing in force (changed by `Ring::change_timing`).
    timing: Mutex<rsl_core::Timing>,
}

impl RingShared {
    /// Why the ring stopped, for an error answering a call it can no longer serve.
    fn stop_reason(&self) -> String {
        self.stop_reason.lock().clone().unwrap_or_else(|| "the ring stopped".into())
    }
}

/// Maps the core's microsecond clock to tokio's monotonic clock. One per runtime: every ring
/// of it counts from the same epoch.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    epoch: Instant,
}

impl Clock {
    /// A clock whose zero is now.
    pub(crate) fn start() -> Clock {
        Clock { epoch: Instant::now() }
    }

    fn now(&self) -> rsl_core::Time {
        rsl_core::Time(u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX))
    }

    fn instant(&self, time: rsl_core::Time) -> Instant {
        self.epoch + Duration::from_micros(time.0)
    }
}
