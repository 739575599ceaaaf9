//! Errors, one narrow enum per operation.

use std::sync::Arc;

use rsl_core::{NodeId, RingId, Slot};
use rsl_log::{CheckpointError, LogError};

/// Why a ring (or a runtime) could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Runtimes spawn tasks: they must be created inside a tokio runtime.
    #[error("no tokio runtime: create the rsl runtime from within a tokio runtime")]
    NoTokioRuntime,
    /// The configuration is invalid, or contradicts what the log recovered.
    #[error("ring {}: {source}", .ring.0)]
    Config {
        /// The ring.
        ring: RingId,
        /// What is wrong.
        #[source]
        source: rsl_core::ConfigError,
    },
    /// The ring's node is not the node of the runtime's transport endpoint.
    #[error("ring {} is configured for node {ring_node}, but this runtime is node {runtime_node}", .ring.0)]
    WrongNode {
        /// The ring.
        ring: RingId,
        /// `Config::node`.
        ring_node: NodeId,
        /// The runtime's node.
        runtime_node: NodeId,
    },
    /// A ring with this id already runs in this runtime.
    #[error("ring {} is already running in this runtime", .ring.0)]
    AlreadyRunning {
        /// The ring.
        ring: RingId,
    },
    /// The runtime was shut down.
    #[error("the runtime is shut down")]
    RuntimeShutDown,
    /// The log store could not be opened or recovered (corruption names file and offset).
    #[error("ring {}: cannot open the log: {source}", .ring.0)]
    Log {
        /// The ring.
        ring: RingId,
        /// The store's error.
        #[source]
        source: LogError,
    },
    /// The checkpoint store could not be opened, or its newest valid checkpoint read.
    #[error("ring {}: cannot open the checkpoints: {source}", .ring.0)]
    Checkpoint {
        /// The ring.
        ring: RingId,
        /// The store's error.
        #[source]
        source: CheckpointError,
    },
    /// The ring's apply thread could not be started.
    #[error("ring {}: cannot start the apply thread: {source}", .ring.0)]
    Thread {
        /// The ring.
        ring: RingId,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The state machine failed to load the newest checkpoint.
    #[error("ring {}: the state machine failed to load the checkpoint at slot {slot}: {source}", .ring.0)]
    LoadCheckpoint {
        /// The ring.
        ring: RingId,
        /// The checkpoint's slot.
        slot: Slot,
        /// The state machine's error.
        #[source]
        source: std::io::Error,
    },
}

/// Why `replicate` did not return the state machine's response.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplicateError {
    /// This replica is not the primary, stopped being primary before the request got a
    /// slot, or lost the slot to a new primary: the request certainly did not take effect.
    /// Retry at `hint`, the primary if known.
    #[error("not primary; primary is {hint:?}")]
    NotPrimary {
        /// The primary, if known.
        hint: Option<NodeId>,
    },
    /// The request's payload is larger than `Config::request_bytes_max`. It did not take
    /// effect and never will: split it, or raise the limit.
    #[error("request payload of {bytes} bytes exceeds request_bytes_max of {max} bytes")]
    TooLarge {
        /// The request's payload size.
        bytes: u64,
        /// The configured maximum, `request_bytes_max`.
        max: u64,
    },
    /// Large requests (over `Config::batch_bytes_max`) already wait at the primary for
    /// `Config::large_bytes_in_flight_max` bytes of slots. The request did not take effect;
    /// retry later.
    #[error(
        "primary busy with large requests: {queued_bytes} bytes queued, large_bytes_in_flight_max {max}"
    )]
    LargeBusy {
        /// Bytes of large values waiting.
        queued_bytes: u64,
        /// The configured maximum.
        max: u64,
    },
    /// The primary's proposal queue is full. The request did not take effect; retry later.
    #[error("primary busy: {queued} requests queued, maximum {max}")]
    Busy {
        /// Requests queued.
        queued: u64,
        /// The configured maximum.
        max: u64,
    },
    /// No response within the ring's request timeout. The request may or may not take
    /// effect.
    #[error("no response within {after_ms} ms; the request may or may not take effect")]
    Timeout {
        /// The timeout.
        after_ms: u64,
    },
    /// The replica skipped the request's slot by installing a checkpoint: the request may
    /// or may not have taken effect.
    #[error("outcome unknown: slot {slot} was covered by an installed checkpoint")]
    OutcomeUnknown {
        /// The request's slot.
        slot: Slot,
    },
    /// The ring was shut down (or failed) before answering. The request may or may not take
    /// effect.
    #[error("ring shut down before answering: {reason}")]
    Shutdown {
        /// Why the ring stopped.
        reason: String,
    },
    /// The ring's last request was chosen at `last_slot`
    /// ([`Ring::replicate_exclusive`](crate::Ring::replicate_exclusive) with `last`): it
    /// takes no more requests, ever. The request did not take effect; reads still work.
    #[error("the ring is closed: its last request was chosen at slot {last_slot}; it takes no more writes")]
    RingClosed {
        /// The slot of the last request.
        last_slot: Slot,
    },
}

/// Why a linearizable read (`read`, `read_with`) was not served. Nothing was read; every
/// case may be retried (at `hint` for `NotPrimary`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// This replica cannot serve the read as asked now: not primary (for a lease read, or a
    /// read index asked of a secondary's primary that turned out not to be primary), no
    /// primary known, the lease expired (a `Lease` read), or a new primary still recovering
    /// (a `Lease` read). `hint` names the primary if known.
    #[error("cannot serve a linearizable read here: {reason}")]
    NotPrimary {
        /// The core's reason.
        reason: rsl_core::ReadError,
        /// The primary, if known.
        hint: Option<NodeId>,
    },
    /// Too many reads wait for the state machine, or for a read index
    /// (`Config::read_index_pending_max`, here or at the primary).
    #[error("too many reads waiting ({max})")]
    Busy {
        /// The configured maximum.
        max: u64,
    },
    /// No answer in time: the read index was not confirmed (the primary is cut off from its
    /// quorum, or the primary a secondary asked did not answer), or the state machine did
    /// not reach the read's slot, within the ring's read timeout (or, for a secondary, the
    /// election delay it waits for the primary's answer).
    #[error("the read was not served within {after_ms} ms")]
    Timeout {
        /// The timeout.
        after_ms: u64,
    },
    /// The ring was shut down (or failed).
    #[error("ring shut down: {reason}")]
    Shutdown {
        /// Why the ring stopped.
        reason: String,
    },
}

/// Why a fast read (`read_fast`) was not served.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FastReadError {
    /// The replica had not applied `min_slot` within the wait allowed.
    #[error("slot {min_slot} not applied within {after_ms} ms (applied {applied})")]
    NotApplied {
        /// The slot the client asked for.
        min_slot: Slot,
        /// The slot applied when giving up.
        applied: Slot,
        /// The wait.
        after_ms: u64,
    },
    /// Too many reads wait for the state machine.
    #[error("too many reads waiting ({max})")]
    Busy {
        /// The configured maximum.
        max: u64,
    },
    /// The ring was shut down (or failed).
    #[error("ring shut down: {reason}")]
    Shutdown {
        /// Why the ring stopped.
        reason: String,
    },
}

/// Why `relinquish_primary` did not hand over.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RelinquishError {
    /// The replica refused (not primary, bad target, no live target).
    #[error(transparent)]
    Refused(#[from] rsl_core::RelinquishError),
    /// The ring was shut down (or failed).
    #[error("ring shut down: {reason}")]
    Shutdown {
        /// Why the ring stopped.
        reason: String,
    },
}

/// Why `change_configuration` did not complete.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChangeConfigurationError {
    /// The replica refused the change; nothing was proposed (not primary, a change in
    /// progress, an unusable member list).
    #[error(transparent)]
    Refused(#[from] rsl_core::ChangeError),
    /// This replica stopped being primary before the change was chosen. If it had already
    /// proposed the change, the next primary may still choose it: read the configuration
    /// from `status()` to know.
    #[error("interrupted: this replica stopped being primary before the change was chosen (primary now {primary:?}); it may still take effect")]
    Interrupted {
        /// The primary, if known.
        primary: Option<NodeId>,
    },
    /// Not chosen within the request timeout; it may still take effect.
    #[error("not chosen within {after_ms} ms; it may still take effect")]
    Timeout {
        /// The timeout.
        after_ms: u64,
    },
    /// The change makes a learner a voter, and the learner did not catch up to within the
    /// promotion bound in `waited_ms` (`RingOptions::learner_promotion_wait`); nothing was
    /// proposed.
    #[error(
        "learner {node} still holds the log only up to slot {holds}, {} slots behind the primary's chosen slot {chosen}, \
         after waiting {waited_ms} ms; promoting it needs it within learner_promotion_lag_slots_max = {lag_slots_max}",
        chosen.0.saturating_sub(holds.0)
    )]
    LearnerBehind {
        /// The learner.
        node: NodeId,
        /// Every slot up to here it holds, as far as the primary knows (0: nothing known).
        holds: rsl_core::Slot,
        /// The primary's chosen slot.
        chosen: rsl_core::Slot,
        /// The bound (`Config::learner_promotion_lag_slots_max`).
        lag_slots_max: u64,
        /// How long the change waited for the learner.
        waited_ms: u64,
    },
    /// The ring was shut down (or failed).
    #[error("ring shut down: {reason}")]
    Shutdown {
        /// Why the ring stopped.
        reason: String,
    },
}

/// Why `checkpoint_now` did not save a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointNowError {
    /// Nothing was applied yet: there is no state to save.
    #[error("nothing applied yet: no state to checkpoint")]
    NothingApplied,
    /// The state machine postponed it (`StateMachine::allow_save` returned false).
    #[error("the state machine refused to save a checkpoint at slot {slot} now")]
    Refused {
        /// The slot it would have reflected.
        slot: Slot,
    },
    /// Saving failed (the state machine's or the store's error); nothing was kept.
    #[error("saving the checkpoint at slot {slot} failed: {reason}")]
    Failed {
        /// The slot it would have reflected.
        slot: Slot,
        /// What failed.
        reason: String,
    },
    /// A checkpoint installed from a peer moved the state past the slot first.
    #[error("the state moved past slot {slot} (to {applied}) by installing a peer's checkpoint")]
    Superseded {
        /// The slot asked for.
        slot: Slot,
        /// The state's slot then.
        applied: Slot,
    },
    /// The ring was shut down (or failed) before the checkpoint was saved.
    #[error("ring shut down: {reason}")]
    Shutdown {
        /// Why the ring stopped.
        reason: String,
    },
}

/// Why `purge_log` purged nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PurgeLogError {
    /// The bound lies past the newest checkpoint (the replica's reason).
    #[error(transparent)]
    Refused(#[from] rsl_core::PurgeLogError),
    /// The ring was shut down (or failed).
    #[error("ring shut down: {reason}")]
    Shutdown {
        /// Why the ring stopped.
        reason: String,
    },
}

/// Why a ring stopped by itself: a local failure it cannot continue after.
#[derive(Clone, Debug, thiserror::Error)]
pub enum RingFailure {
    /// The log store failed: nothing after the last durable ticket is known durable, so the
    /// replica stops rather than risk answering for a vote it does not hold.
    #[error("log store failed: {0}")]
    Log(Arc<LogError>),
    /// The group committer stopped unexpectedly.
    #[error("group committer: {0}")]
    Commit(#[from] rsl_log::CommitError),
    /// The state machine stopped: its thread ended without a panic reported first.
    #[error("the state machine stopped (did it panic?)")]
    StateMachineStopped,
    /// The state machine panicked (on its thread, or on the ring task with
    /// [`ApplyOn::RingTask`](crate::ApplyOn::RingTask)); the ring stops at once, without
    /// waiting for the panic hook to finish and the thread to unwind.
    #[error("the state machine panicked: {message}")]
    StateMachinePanicked {
        /// The panic's message and where it was raised.
        message: String,
    },
    /// The state machine failed part-way through loading a fetched checkpoint, so its
    /// state is undefined.
    #[error("the state machine failed to load the fetched checkpoint at slot {slot}: {reason}")]
    LoadCheckpoint {
        /// The checkpoint's slot.
        slot: Slot,
        /// The state machine's error.
        reason: String,
    },
}

/// Why a checkpoint transfer failed: defined with the transfer seam in
/// [`rsl_transport::checkpoint`], since transports fetch and serve checkpoints.
pub use rsl_transport::checkpoint::TransferError;

/// A checkpoint store's error as a transfer error.
pub(crate) fn store_error(error: CheckpointError) -> TransferError {
    TransferError::Store { reason: error.to_string() }
}
