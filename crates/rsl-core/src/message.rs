//! Messages between replicas of one ring. Every message names its ring, sender,
//! receiver and the configuration number the sender is in, so a transport can route many
//! rings over one connection and a receiver can reject strangers.

use crate::time::Time;
use crate::types::{Ballot, NodeId, Proposal, ReadId, RingId, Slot, Value};

/// A protocol message and its envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The ring this message belongs to.
    pub ring: RingId,
    /// Sender.
    pub from: NodeId,
    /// Receiver.
    pub to: NodeId,
    /// The sender's configuration number.
    pub configuration: u64,
    /// What is said.
    pub body: MessageBody,
}

/// Why an acceptor refused a pre-vote, a prepare or an accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectReason {
    /// The acceptor promised a higher ballot (carried in `Reject::promised`).
    Promised,
    /// The acceptor heard a live primary (or just booted) less than one election delay
    /// ago; electing someone else now could break that primary's read lease.
    PrimaryAlive,
    /// The candidate is too far behind to be recovered through a promise: it must catch
    /// up (fetch chosen slots or a checkpoint) first. Carries the acceptor's chosen slot.
    Behind {
        /// The acceptor's chosen watermark.
        chosen: Slot,
    },
}

/// The body of a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageBody {
    /// "Would you vote for me at `ballot`?" Changes no state on the receiver.
    PreVote {
        /// The ballot the candidate would prepare with.
        ballot: Ballot,
        /// The candidate's chosen watermark.
        chosen: Slot,
    },
    /// Answer to [`MessageBody::PreVote`].
    PreVoteGranted {
        /// The ballot being granted.
        ballot: Ballot,
    },
    /// Phase 1a.
    Prepare {
        /// The candidate's ballot.
        ballot: Ballot,
        /// Acceptors answer with every proposal they accepted from this slot on.
        first_unchosen: Slot,
        /// Set when the candidate was asked to take over by the primary of this ballot
        /// (leader transfer); acceptors following that primary then skip the lease guard.
        transfer_from: Option<Ballot>,
    },
    /// Phase 1b: the acceptor promised `ballot` (durably, before this was sent).
    Promise {
        /// The promised ballot.
        ballot: Ballot,
        /// Every proposal the acceptor holds at or above the prepare's `first_unchosen`.
        accepted: Vec<Proposal>,
    },
    /// A refusal of a pre-vote, prepare or accept at `ballot`.
    Reject {
        /// The ballot refused.
        ballot: Ballot,
        /// The acceptor's current promise.
        promised: Ballot,
        /// Why.
        reason: RejectReason,
    },
    /// Phase 2a, pipelined: one slot per message, many in flight.
    Accept {
        /// The primary's ballot.
        ballot: Ballot,
        /// The slot.
        slot: Slot,
        /// The value proposed.
        value: Value,
        /// The primary's chosen watermark (piggybacked).
        chosen: Slot,
    },
    /// Phase 2b: the acceptor durably accepted `(ballot, slot)`.
    Accepted {
        /// The ballot accepted.
        ballot: Ballot,
        /// The slot accepted.
        slot: Slot,
    },
    /// The primary's liveness signal and chosen watermark.
    Heartbeat {
        /// The primary's ballot.
        ballot: Ballot,
        /// The primary's chosen watermark.
        chosen: Slot,
        /// The primary's clock when sent, echoed back to measure its read lease.
        sent_at: Time,
    },
    /// Answer to a heartbeat.
    HeartbeatReply {
        /// The ballot of the heartbeat.
        ballot: Ballot,
        /// The heartbeat's `sent_at`, echoed.
        sent_at: Time,
        /// The replier's chosen watermark (lets the primary pick a relinquish target).
        chosen: Slot,
    },
    /// "What do you know?" Sent by a replica that has no primary to follow.
    StatusQuery,
    /// Answer to [`MessageBody::StatusQuery`]. The receiver fetches the slots up to
    /// `chosen` from the replier; a newer configuration is learned from those slots (or a
    /// checkpoint), never from the reply itself.
    StatusReply {
        /// The replier's promise.
        promised: Ballot,
        /// The replier's chosen watermark.
        chosen: Slot,
    },
    /// A request for chosen values in `[from, to]`.
    Fetch {
        /// First slot wanted.
        from: Slot,
        /// Last slot wanted (inclusive).
        to: Slot,
    },
    /// Chosen values, in slot order, contiguous from the fetch's `from`.
    FetchReply {
        /// Chosen proposals (ballot as accepted by the sender).
        chosen_values: Vec<Proposal>,
    },
    /// The fetch asked for slots below the sender's log start: install a checkpoint.
    FetchTruncated {
        /// The slot of the sender's newest checkpoint.
        checkpoint: Slot,
    },
    /// The primary of `ballot` hands over: campaign now, skipping pre-vote.
    TimeoutNow {
        /// The relinquishing primary's ballot.
        ballot: Ballot,
    },
    /// A member asks the primary of `ballot` to hand primacy over to it (an operator's
    /// forced election, RSL's AttemptPromotion): the primary relinquishes to the sender as
    /// it would for [`crate::Replica::handle_relinquish`], so the lease stays safe.
    PromotionRequest {
        /// The ballot of the primary asked.
        ballot: Ballot,
    },
    /// A secondary asks the primary it follows for a read index (a linearizable read
    /// served on the secondary; PROTOCOL.md, "Read index").
    ReadIndexRequest {
        /// The secondary's name for the read, echoed in the answer.
        id: ReadId,
    },
    /// The primary of `ballot` confirmed its primacy with a quorum after the request
    /// arrived: a read served once `index` is applied is linearizable.
    ReadIndexReply {
        /// The request's id.
        id: ReadId,
        /// The confirming primary's ballot.
        ballot: Ballot,
        /// Every slot up to here was chosen when primacy was confirmed.
        index: Slot,
    },
    /// The replica asked cannot give a read index.
    ReadIndexRefused {
        /// The request's id.
        id: ReadId,
        /// Why.
        reason: ReadIndexRefusal,
    },
}

/// Why a primary refused a [`MessageBody::ReadIndexRequest`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadIndexRefusal {
    /// It is not the primary (or is handing over); the primary it knows of, if any.
    NotPrimary {
        /// The primary, if known.
        hint: Option<NodeId>,
    },
    /// Too many read-index reads wait at the primary (`Config::read_index_pending_max`).
    Busy,
}

impl MessageBody {
    /// A short name, for counters and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            MessageBody::PreVote { .. } => "pre_vote",
            MessageBody::PreVoteGranted { .. } => "pre_vote_granted",
            MessageBody::Prepare { .. } => "prepare",
            MessageBody::Promise { .. } => "promise",
            MessageBody::Reject { .. } => "reject",
            MessageBody::Accept { .. } => "accept",
            MessageBody::Accepted { .. } => "accepted",
            MessageBody::Heartbeat { .. } => "heartbeat",
            MessageBody::HeartbeatReply { .. } => "heartbeat_reply",
            MessageBody::StatusQuery => "status_query",
            MessageBody::StatusReply { .. } => "status_reply",
            MessageBody::Fetch { .. } => "fetch",
            MessageBody::FetchReply { .. } => "fetch_reply",
            MessageBody::FetchTruncated { .. } => "fetch_truncated",
            MessageBody::TimeoutNow { .. } => "timeout_now",
            MessageBody::PromotionRequest { .. } => "promotion_request",
            MessageBody::ReadIndexRequest { .. } => "read_index_request",
            MessageBody::ReadIndexReply { .. } => "read_index_reply",
            MessageBody::ReadIndexRefused { .. } => "read_index_refused",
        }
    }
}
