//! What a replica asks its caller to do, and the errors of its inputs.

use crate::message::Message;
use crate::types::{Ballot, Configuration, NodeId, Proposal, ReadId, RequestId, Slot, Value};

/// The role a replica plays in its ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Accepts and applies what the primary proposes.
    Secondary,
    /// Runs an election (pre-vote or phase 1).
    Candidate,
    /// Proposes values and serves requests.
    Primary,
}

/// A batch of writes to make durable, in ticket order. `on_persisted(ticket)` tells the
/// replica that this request and every earlier one are on stable storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersistRequest {
    /// Increasing by one per request.
    pub ticket: u64,
    /// A new promise to record (always higher than the previous one).
    pub promise: Option<Ballot>,
    /// Proposals to record, replacing any earlier proposal for the same slot.
    pub proposals: Vec<Proposal>,
    /// A hint: every slot up to here is chosen (speeds up recovery; may lag).
    pub chosen: Option<Slot>,
}

impl PersistRequest {
    /// Whether the request writes nothing.
    pub fn is_empty(&self) -> bool {
        self.promise.is_none() && self.proposals.is_empty() && self.chosen.is_none()
    }
}

/// An output of [`crate::Replica::poll_action`]. Perform them in the order given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Write to the log store, then call `on_persisted(ticket)`.
    Persist(PersistRequest),
    /// Send a message. Messages that needed a durable write are only released after it.
    Send(Message),
    /// Apply a chosen value to the state machine, strictly in slot order, then call
    /// `on_applied(slot)`.
    Apply {
        /// The slot.
        slot: Slot,
        /// The chosen value.
        value: Value,
    },
    /// Save a checkpoint of the state machine as of `slot` (every earlier `Apply` done,
    /// no later one), then call `on_checkpoint_saved(slot)`.
    TakeCheckpoint {
        /// The slot the checkpoint reflects.
        slot: Slot,
        /// The configuration in force for the slots after `slot`: saved with the
        /// checkpoint, and handed back to [`crate::Replica::on_checkpoint_installed`] or in
        /// [`crate::DurableState::configuration`].
        configuration: Configuration,
    },
    /// A checkpoint is due and this replica is a primary that leaves saving to the
    /// secondaries: copy `from`'s newest checkpoint at `slot` or newer into this replica's
    /// checkpoint store (without loading it into the state machine), then call
    /// `on_checkpoint_copied` with its slot, or `on_checkpoint_copy_failed`.
    CopyCheckpoint {
        /// The secondary to copy from.
        from: NodeId,
        /// The oldest slot worth copying (one past this replica's newest checkpoint).
        slot: Slot,
    },
    /// This replica is primary and every slot its predecessors may have chosen has been
    /// handed to `Apply` (RSL's `NotifyPrimaryRecovered`): once those applies are done, the
    /// state machine reflects everything chosen before this primary's own requests.
    PrimaryRecovered {
        /// The primary's ballot.
        ballot: Ballot,
        /// The last inherited slot.
        slot: Slot,
    },
    /// Slots below `below` are no longer needed: the log store may delete them.
    TruncateLog {
        /// The new first slot of the log.
        below: Slot,
    },
    /// The slots this replica needs were truncated on `from`: fetch its checkpoint at
    /// `slot` (or newer), load it into the state machine and call
    /// `on_checkpoint_installed`.
    FetchCheckpoint {
        /// Who has it.
        from: NodeId,
        /// The slot of the checkpoint `from` advertised.
        slot: Slot,
    },
    /// A configuration change this replica accepted as primary
    /// ([`crate::Replica::handle_change_configuration`]) will not be completed by it: it
    /// stopped being primary first. If the change was already proposed its outcome is
    /// unknown (the next primary may still choose it); the configuration in
    /// [`Status`] tells.
    ConfigurationChangeInterrupted {
        /// The members the change asked for.
        members: Vec<NodeId>,
        /// The primary it follows now, if known.
        primary: Option<NodeId>,
    },
    /// The replica's role or ballot changed.
    RoleChanged {
        /// The new role.
        role: Role,
        /// The ballot of the primary now followed (or owned, or campaigned for).
        ballot: Ballot,
        /// The primary, if known.
        primary: Option<NodeId>,
    },
    /// A read-index read ([`crate::Replica::handle_read_index`]) may be served: once the
    /// state machine has applied every slot up to `index`, a read against it is
    /// linearizable.
    ReadIndexReady {
        /// The read.
        id: ReadId,
        /// The slot the state machine must have applied first.
        index: Slot,
    },
    /// A read-index read cannot be served; it read nothing, and may be retried.
    ReadIndexFailed {
        /// The read.
        id: ReadId,
        /// Why.
        error: ReadError,
    },
    /// Queued requests that were never given a slot: this replica stopped being primary.
    /// They certainly did not take effect; the client may retry at `primary`.
    RequestsDropped {
        /// The dropped requests.
        ids: Vec<RequestId>,
        /// Who is primary now, if known.
        primary: Option<NodeId>,
    },
}

/// Why a proposal was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// Only the primary proposes.
    #[error("not primary; primary is {hint:?}")]
    NotPrimary {
        /// The primary, if this replica knows it.
        hint: Option<NodeId>,
    },
    /// The primary is handing over and takes no new requests.
    #[error("primary is relinquishing to {target}")]
    Relinquishing {
        /// The replica taking over.
        target: NodeId,
    },
    /// The proposal queue is full.
    #[error("proposal queue full: {queued} requests queued, maximum {max}")]
    Busy {
        /// Requests queued.
        queued: u64,
        /// The configured maximum.
        max: u64,
    },
    /// The request's payload is larger than `Config::request_bytes_max`.
    #[error("request payload of {bytes} bytes exceeds request_bytes_max {max}")]
    TooLarge {
        /// The request's payload size.
        bytes: u64,
        /// The configured maximum, `request_bytes_max`.
        max: u64,
    },
    /// Large requests already wait for `large_bytes_in_flight_max` bytes of slots.
    #[error("large requests queue full: {queued_bytes} bytes queued, large_bytes_in_flight_max {max}")]
    LargeBusy {
        /// Bytes of large values waiting.
        queued_bytes: u64,
        /// The configured maximum, `large_bytes_in_flight_max`.
        max: u64,
    },
    /// The ring's last request was chosen at `last_slot`: it takes no more requests.
    #[error("the ring is closed: its last request was chosen at slot {last_slot}")]
    Closed {
        /// The slot of the last request.
        last_slot: Slot,
    },
}

/// Why a configuration change was refused. Nothing was proposed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    /// Only the primary changes the configuration.
    #[error("not primary; primary is {hint:?}")]
    NotPrimary {
        /// The primary, if known.
        hint: Option<NodeId>,
    },
    /// The primary is handing over and takes no new requests.
    #[error("primary is relinquishing to {target}")]
    Relinquishing {
        /// The replica taking over.
        target: NodeId,
    },
    /// One change at a time: another is waiting to be chosen.
    #[error("a change to {members:?} is in progress")]
    InProgress {
        /// The members of the change in progress.
        members: Vec<NodeId>,
    },
    /// The new member list is unusable.
    #[error("invalid members {members:?}: {reason}")]
    Invalid {
        /// The members asked for.
        members: Vec<NodeId>,
        /// What is wrong.
        reason: String,
    },
    /// The change makes a learner a voter, but the learner is too far behind: promote it
    /// once it caught up (nothing was proposed).
    #[error(
        "learner {node} holds the log up to slot {holds}, {} slots behind the primary's chosen slot {chosen}; \
         promoting it needs it within learner_promotion_lag_slots_max = {lag_slots_max}",
        chosen.0.saturating_sub(holds.0)
    )]
    LearnerBehind {
        /// The learner.
        node: NodeId,
        /// Every slot up to here it holds, as far as the primary knows (0: nothing known).
        holds: Slot,
        /// The primary's chosen slot.
        chosen: Slot,
        /// The bound (`Config::learner_promotion_lag_slots_max`).
        lag_slots_max: u64,
    },
}

/// Why a linearizable read (a lease read, or a read-index read) cannot be served here now.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// Only the primary serves lease reads and confirms read indexes; a secondary asks the
    /// primary it follows, and has none to ask (`hint` is `None`), or that primary
    /// answered it is not primary any more.
    #[error("not primary; primary is {hint:?}")]
    NotPrimary {
        /// The primary, if known.
        hint: Option<NodeId>,
    },
    /// Too many read-index reads wait for a confirmation already.
    #[error("{pending} read-index reads pending, maximum {max}")]
    Busy {
        /// Reads pending (here, or at the primary when it refused).
        pending: u64,
        /// `Config::read_index_pending_max`.
        max: u64,
    },
    /// The primary asked for a read index did not answer in time (it may have crashed, or
    /// a partition may cut it off): nothing was read.
    #[error("no read index from primary {primary} within {after_ms} ms")]
    NoAnswer {
        /// The primary asked.
        primary: NodeId,
        /// How long the secondary waited.
        after_ms: u64,
    },
    /// The primary has not heard from a quorum recently enough to be sure it still is.
    #[error("primary lease expired")]
    LeaseExpired,
    /// The new primary has not yet re-proposed the slots it inherited.
    #[error("primary still recovering slots up to {recovering_to}")]
    Recovering {
        /// The last inherited slot.
        recovering_to: Slot,
    },
}

/// Why an on-demand checkpoint ([`crate::Replica::handle_checkpoint_now`]) was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointNowError {
    /// Nothing was applied yet: there is no state to save.
    #[error("nothing applied yet: no state to checkpoint")]
    NothingApplied,
}

/// Why an explicit log purge ([`crate::Replica::handle_purge_log`]) was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PurgeLogError {
    /// The bound lies past the slot after the newest checkpoint: the slots in between are
    /// in no checkpoint, so a restart could not rebuild the state without them.
    #[error(
        "cannot purge the log below slot {below}: the newest checkpoint is at slot {checkpoint}, \
         so slot {first_kept} is the highest purge bound"
    )]
    BeyondCheckpoint {
        /// The bound asked for.
        below: Slot,
        /// The newest checkpoint.
        checkpoint: Slot,
        /// The highest bound allowed (one past the checkpoint).
        first_kept: Slot,
    },
}

/// Why a relinquish request was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RelinquishError {
    /// Only the primary can relinquish.
    #[error("not primary; primary is {hint:?}")]
    NotPrimary {
        /// The primary, if known.
        hint: Option<NodeId>,
    },
    /// The named target is not another member of the configuration.
    #[error("{target} is not another member of configuration {configuration}")]
    NotAMember {
        /// The target named.
        target: NodeId,
        /// The configuration number.
        configuration: u64,
    },
    /// No other member has been heard from recently.
    #[error("no live replica to hand over to")]
    NoLiveTarget,
}

/// Why a peer's message was dropped. Counted in statistics; never a panic.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// Addressed to another ring.
    #[error("message for ring {found}, this is ring {expected}")]
    WrongRing {
        /// This ring.
        expected: u64,
        /// The message's ring.
        found: u64,
    },
    /// Addressed to another node.
    #[error("message addressed to {found}, this is {expected}")]
    WrongReceiver {
        /// This node.
        expected: NodeId,
        /// The addressee.
        found: NodeId,
    },
    /// From a node outside the configuration.
    #[error("message from {from}, not a member of configuration {configuration}")]
    NotAMember {
        /// The sender.
        from: NodeId,
        /// This replica's configuration number.
        configuration: u64,
    },
    /// From another configuration.
    #[error("message in configuration {found}, this replica is in {expected}")]
    WrongConfiguration {
        /// This replica's configuration number.
        expected: u64,
        /// The message's configuration number.
        found: u64,
    },
    /// Well-formed but impossible (e.g. a ballot owned by someone else than the sender).
    #[error("malformed {kind} from {from}: {reason}")]
    Malformed {
        /// Message kind.
        kind: &'static str,
        /// The sender.
        from: NodeId,
        /// What is wrong.
        reason: String,
    },
}

/// A snapshot of a replica's state, for `status()` and notifications.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// This replica.
    pub node: NodeId,
    /// Its role.
    pub role: Role,
    /// The highest ballot promised.
    pub promised: Ballot,
    /// The primary it follows (itself when primary), if known.
    pub primary: Option<NodeId>,
    /// Every slot up to here is chosen and durable here.
    pub chosen: Slot,
    /// Every slot up to here has been applied.
    pub applied: Slot,
    /// The first slot still held in the log.
    pub log_start: Slot,
    /// The newest durable checkpoint.
    pub checkpoint: Slot,
    /// The configuration in force.
    pub configuration: Configuration,
    /// Whether this replica votes in `configuration` (false while joining and once
    /// removed).
    pub member: bool,
    /// The slot of the ring's last request, once chosen: the ring takes no more requests
    /// (see [`crate::Replica::handle_propose_exclusive`]).
    pub last_slot: Option<Slot>,
}

/// Counters, monotonically increasing (RSL's statistics).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Statistics {
    /// Messages handled.
    pub messages_received: u64,
    /// Messages dropped for a [`MessageError`].
    pub messages_rejected: u64,
    /// Messages produced.
    pub messages_sent: u64,
    /// Requests accepted by `handle_propose`.
    pub requests_proposed: u64,
    /// Slots this replica proposed as primary (including re-proposals).
    pub slots_proposed: u64,
    /// Slots learned chosen.
    pub slots_chosen: u64,
    /// Slots handed to `Apply`.
    pub slots_applied: u64,
    /// Elections started (pre-vote or transfer).
    pub elections_started: u64,
    /// Times this replica became primary.
    pub elections_won: u64,
    /// Times this replica stopped being primary.
    pub primary_step_downs: u64,
    /// Persist requests produced.
    pub persists: u64,
    /// Accepts retransmitted by the primary.
    pub accepts_retransmitted: u64,
    /// Fetches sent.
    pub fetches_sent: u64,
    /// Checkpoints requested (`TakeCheckpoint`).
    pub checkpoints_requested: u64,
    /// Checkpoint saves that failed or that the state machine refused.
    pub checkpoints_failed: u64,
    /// Checkpoints a primary asked a secondary for (`CopyCheckpoint`).
    pub checkpoint_copies_requested: u64,
    /// Checkpoints copied from a secondary.
    pub checkpoints_copied: u64,
    /// Accepts refused (below the promise, or conflicting with a durable accept).
    pub accepts_refused: u64,
    /// Read-index rounds a quorum confirmed (each answers every read that shared it).
    pub read_index_rounds_confirmed: u64,
    /// Configurations entered (learned chosen, or adopted from a newer replica).
    pub configurations_entered: u64,
    /// Configuration changes proposed as primary.
    pub configuration_changes_proposed: u64,
    /// Large requests (over `batch_bytes_max`) given a slot of their own as primary.
    pub large_requests_proposed: u64,
}
