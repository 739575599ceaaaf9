//! The RDMA path's message format: rkyv archives of types that mirror rsl-core's messages
//! (rsl-core stays free of rkyv), and the conversion from the archived form.
//!
//! The sender serializes a [`WireBatch`] (borrowing the messages it sends: request payloads
//! are not copied before serialization) straight into its staging buffer, at the offset
//! where the record will land in the receiver's ring. The receiver validates the archive
//! once, in place in the ring ([`access_batch`], rkyv's `bytecheck` validation: every
//! relative pointer, length and enum tag is checked, so no later access can go out of
//! bounds), checks each message's envelope against the membership gate while it is still
//! archived, and builds the core's `Message` directly from the archived fields
//! ([`message_from_archived`]): the only copy is each request payload into its own `Bytes`,
//! which the consensus core keeps after the ring slot is reused. There is no intermediate
//! encoding.

// rkyv derives an `Archived*` type for each wire type; their fields mirror the documented
// fields above.
#![allow(missing_docs)]

use bytes::Bytes;
use rkyv::rancor;
use rkyv::with::InlineAsBox;
use rsl_core::{
    Ballot, MemberAddress, Message, MessageBody, NodeId, Proposal, ReadId, ReadIndexRefusal, RejectReason,
    Request, RequestId, RingId, Slot, Time, Value,
};

use crate::codec::{checked_configuration, DecodeError};

/// A frame: the messages of one send, from one node to another.
#[derive(Debug, rkyv::Archive, rkyv::Serialize)]
pub struct WireBatch<'a> {
    /// The sender.
    pub from: u64,
    /// The receiver.
    pub to: u64,
    /// The messages, in order.
    pub messages: Vec<WireMessage<'a>>,
}

/// Mirrors `rsl_core::Message`.
#[derive(Debug, rkyv::Archive, rkyv::Serialize)]
pub struct WireMessage<'a> {
    /// Ring id.
    pub ring: u64,
    /// Sender.
    pub from: u64,
    /// Receiver.
    pub to: u64,
    /// The sender's configuration number.
    pub configuration: u64,
    /// What is said.
    pub body: WireBody<'a>,
}

/// Mirrors `rsl_core::Ballot`.
#[derive(Clone, Copy, Debug, rkyv::Archive, rkyv::Serialize)]
pub struct WireBallot {
    /// Round.
    pub round: u64,
    /// Node.
    pub node: u64,
}

/// Mirrors `rsl_core::RejectReason`.
#[derive(Clone, Copy, Debug, rkyv::Archive, rkyv::Serialize)]
#[allow(missing_docs)]
pub enum WireReject {
    Promised,
    PrimaryAlive,
    Behind { chosen: u64 },
}

/// Mirrors `rsl_core::ReadIndexRefusal`.
#[derive(Clone, Copy, Debug, rkyv::Archive, rkyv::Serialize)]
#[allow(missing_docs)]
pub enum WireReadIndexRefusal {
    NotPrimary { hint: Option<u64> },
    Busy,
}

/// Mirrors `rsl_core::Request`; the payload is borrowed when serializing.
#[derive(Debug, rkyv::Archive, rkyv::Serialize)]
pub struct WireRequest<'a> {
    /// Client id.
    pub client: u64,
    /// The client's sequence number.
    pub sequence: u64,
    /// The command bytes.
    #[rkyv(with = InlineAsBox)]
    pub payload: &'a [u8],
}

/// Mirrors `rsl_core::Value`.
#[derive(Debug, rkyv::Archive, rkyv::Serialize)]
#[allow(missing_docs)]
pub enum WireValue<'a> {
    Noop,
    Batch(Vec<WireRequest<'a>>),
    Configuration {
        number: u64,
        members: Vec<u64>,
        first_slot: u64,
        learners: Vec<u64>,
        addresses: Vec<WireAddress>,
    },
    Last(WireRequest<'a>),
}

/// Mirrors `rsl_core::MemberAddress`.
#[derive(Debug, rkyv::Archive, rkyv::Serialize)]
#[allow(missing_docs)]
pub struct WireAddress {
    pub node: u64,
    pub replica: String,
    pub client: String,
}

/// Mirrors `rsl_core::Proposal`.
#[derive(Debug, rkyv::Archive, rkyv::Serialize)]
#[allow(missing_docs)]
pub struct WireProposal<'a> {
    pub ballot: WireBallot,
    pub slot: u64,
    pub value: WireValue<'a>,
}

/// Mirrors `rsl_core::MessageBody`, variant for variant.
#[derive(Debug, rkyv::Archive, rkyv::Serialize)]
#[allow(missing_docs)]
pub enum WireBody<'a> {
    PreVote { ballot: WireBallot, chosen: u64 },
    PreVoteGranted { ballot: WireBallot },
    Prepare { ballot: WireBallot, first_unchosen: u64, transfer_from: Option<WireBallot> },
    Promise { ballot: WireBallot, accepted: Vec<WireProposal<'a>> },
    Reject { ballot: WireBallot, promised: WireBallot, reason: WireReject },
    Accept { ballot: WireBallot, slot: u64, value: WireValue<'a>, chosen: u64 },
    Accepted { ballot: WireBallot, slot: u64 },
    Heartbeat { ballot: WireBallot, chosen: u64, sent_at: u64 },
    HeartbeatReply { ballot: WireBallot, sent_at: u64, chosen: u64 },
    StatusQuery,
    StatusReply { promised: WireBallot, chosen: u64 },
    Fetch { from: u64, to: u64 },
    FetchReply { chosen_values: Vec<WireProposal<'a>> },
    FetchTruncated { checkpoint: u64 },
    TimeoutNow { ballot: WireBallot },
    PromotionRequest { ballot: WireBallot },
    ReadIndexRequest { id: u64 },
    ReadIndexReply { id: u64, ballot: WireBallot, index: u64 },
    ReadIndexRefused { id: u64, reason: WireReadIndexRefusal },
}

// ---------------------------------------------------------------------------------------
// From the core's types (sending).

fn ballot(ballot: Ballot) -> WireBallot {
    WireBallot { round: ballot.round, node: ballot.node.0 }
}

fn wire_request(request: &Request) -> WireRequest<'_> {
    WireRequest { client: request.id.client, sequence: request.id.sequence, payload: &request.payload }
}

fn value(value: &Value) -> WireValue<'_> {
    match value {
        Value::Noop => WireValue::Noop,
        Value::Batch(requests) => WireValue::Batch(requests.iter().map(wire_request).collect()),
        Value::Last(request) => WireValue::Last(wire_request(request)),
        Value::Configuration(configuration) => WireValue::Configuration {
            number: configuration.number,
            members: configuration.members.iter().map(|node| node.0).collect(),
            first_slot: configuration.first_slot.0,
            learners: configuration.learners.iter().map(|node| node.0).collect(),
            addresses: configuration
                .addresses
                .iter()
                .map(|a| WireAddress { node: a.node.0, replica: a.replica.clone(), client: a.client.clone() })
                .collect(),
        },
    }
}

fn proposals(proposals: &[Proposal]) -> Vec<WireProposal<'_>> {
    proposals
        .iter()
        .map(|proposal| WireProposal {
            ballot: ballot(proposal.ballot),
            slot: proposal.slot.0,
            value: value(&proposal.value),
        })
        .collect()
}

impl<'a> WireMessage<'a> {
    /// The wire form of `message`, borrowing its payloads.
    pub fn new(message: &'a Message) -> WireMessage<'a> {
        use MessageBody as B;
        let body = match &message.body {
            B::PreVote { ballot: b, chosen } => WireBody::PreVote { ballot: ballot(*b), chosen: chosen.0 },
            B::PreVoteGranted { ballot: b } => WireBody::PreVoteGranted { ballot: ballot(*b) },
            B::Prepare { ballot: b, first_unchosen, transfer_from } => WireBody::Prepare {
                ballot: ballot(*b),
                first_unchosen: first_unchosen.0,
                transfer_from: transfer_from.map(ballot),
            },
            B::Promise { ballot: b, accepted } => {
                WireBody::Promise { ballot: ballot(*b), accepted: proposals(accepted) }
            }
            B::Reject { ballot: b, promised, reason } => WireBody::Reject {
                ballot: ballot(*b),
                promised: ballot(*promised),
                reason: match reason {
                    RejectReason::Promised => WireReject::Promised,
                    RejectReason::PrimaryAlive => WireReject::PrimaryAlive,
                    RejectReason::Behind { chosen } => WireReject::Behind { chosen: chosen.0 },
                },
            },
            B::Accept { ballot: b, slot, value: v, chosen } => {
                WireBody::Accept { ballot: ballot(*b), slot: slot.0, value: value(v), chosen: chosen.0 }
            }
            B::Accepted { ballot: b, slot } => WireBody::Accepted { ballot: ballot(*b), slot: slot.0 },
            B::Heartbeat { ballot: b, chosen, sent_at } => {
                WireBody::Heartbeat { ballot: ballot(*b), chosen: chosen.0, sent_at: sent_at.0 }
            }
            B::HeartbeatReply { ballot: b, sent_at, chosen } => {
                WireBody::HeartbeatReply { ballot: ballot(*b), sent_at: sent_at.0, chosen: chosen.0 }
            }
            B::StatusQuery => WireBody::StatusQuery,
            B::StatusReply { promised, chosen } => {
                WireBody::StatusReply { promised: ballot(*promised), chosen: chosen.0 }
            }
            B::Fetch { from, to } => WireBody::Fetch { from: from.0, to: to.0 },
            B::FetchReply { chosen_values } => {
                WireBody::FetchReply { chosen_values: proposals(chosen_values) }
            }
            B::FetchTruncated { checkpoint } => WireBody::FetchTruncated { checkpoint: checkpoint.0 },
            B::TimeoutNow { ballot: b } => WireBody::TimeoutNow { ballot: ballot(*b) },
            B::PromotionRequest { ballot: b } => WireBody::PromotionRequest { ballot: ballot(*b) },
            B::ReadIndexRequest { id } => WireBody::ReadIndexRequest { id: id.0 },
            B::ReadIndexReply { id, ballot: b, index } => {
                WireBody::ReadIndexReply { id: id.0, ballot: ballot(*b), index: index.0 }
            }
            B::ReadIndexRefused { id, reason } => WireBody::ReadIndexRefused {
                id: id.0,
                reason: match reason {
                    ReadIndexRefusal::NotPrimary { hint } => {
                        WireReadIndexRefusal::NotPrimary { hint: hint.map(|node| node.0) }
                    }
                    ReadIndexRefusal::Busy => WireReadIndexRefusal::Busy,
                },
            },
        };
        WireMessage {
            ring: message.ring.0,
            from: message.from.0,
            to: message.to.0,
            configuration: message.configuration,
            body,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Serializing.

/// A writer that only counts: the archived size of a value without writing it.
#[derive(Debug, Default)]
struct Counter {
    position: usize,
}

impl rkyv::ser::Positional for Counter {
    fn pos(&self) -> usize {
        self.position
    }
}

impl<E> rkyv::ser::Writer<E> for Counter {
    fn write(&mut self, bytes: &[u8]) -> Result<(), E> {
        self.position += bytes.len();
        Ok(())
    }
}

/// Bytes a batch of `messages` takes at most beyond the sum of [`archived_len`] of each:
/// the batch's root and vector, and alignment padding.
pub const BATCH_OVERHEAD_BYTES: u64 = 64;

/// The archived size of a batch holding only `message` (what `send` checks against the
/// frame limit).
pub fn archived_len(message: &Message) -> u64 {
    let batch =
        WireBatch { from: message.from.0, to: message.to.0, messages: vec![WireMessage::new(message)] };
    match rkyv::api::high::to_bytes_in::<_, rancor::Error>(&batch, Counter::default()) {
        Ok(counter) => counter.position as u64,
        // A counting writer cannot fail; were it to, the real serialization reports it.
        Err(_) => u64::MAX,
    }
}

/// Serializes `batch` into `buffer` (aligned to 16 bytes, as ring payloads are) and
/// returns the bytes used, or `None` when it does not fit.
pub fn serialize_into(batch: &WireBatch<'_>, buffer: &mut [u8]) -> Option<usize> {
    let writer = rkyv::ser::writer::Buffer::from(buffer);
    rkyv::api::high::to_bytes_in::<_, rancor::Error>(batch, writer).ok().map(|written| written.len())
}

// ---------------------------------------------------------------------------------------
// Receiving.

/// Why a received archive was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ArchiveError {
    /// rkyv's validation failed: the bytes are not an archived batch.
    #[error("invalid archived batch: {0}")]
    Invalid(String),
    /// A field is well-formed but not acceptable.
    #[error("{field}: {problem}")]
    Field {
        /// Path of the field.
        field: String,
        /// What was expected and what was found.
        problem: String,
    },
}

/// Validates `bytes` (once) as an archived batch and returns it, read in place.
pub fn access_batch(bytes: &[u8]) -> Result<&ArchivedWireBatch<'static>, ArchiveError> {
    rkyv::access::<ArchivedWireBatch<'static>, rancor::Error>(bytes)
        .map_err(|error| ArchiveError::Invalid(error.to_string()))
}

fn ballot_from(ballot: &ArchivedWireBallot) -> Ballot {
    Ballot { round: ballot.round.to_native(), node: NodeId(ballot.node.to_native()) }
}

fn request_from(request: &ArchivedWireRequest<'_>) -> Request {
    Request {
        id: RequestId { client: request.client.to_native(), sequence: request.sequence.to_native() },
        payload: Bytes::copy_from_slice(&request.payload),
    }
}

fn value_from(value: &ArchivedWireValue<'_>, field: &str) -> Result<Value, ArchiveError> {
    Ok(match value {
        ArchivedWireValue::Noop => Value::Noop,
        ArchivedWireValue::Batch(requests) => Value::Batch(requests.iter().map(request_from).collect()),
        ArchivedWireValue::Last(request) => Value::Last(request_from(request)),
        ArchivedWireValue::Configuration { number, members, first_slot, learners, addresses } => {
            let nodes = |list: &rkyv::vec::ArchivedVec<rkyv::rend::u64_le>| {
                list.iter().map(|node| node.to_native()).collect::<Vec<u64>>()
            };
            let addresses = addresses
                .iter()
                .map(|a| MemberAddress {
                    node: NodeId(a.node.to_native()),
                    replica: a.replica.as_str().to_owned(),
                    client: a.client.as_str().to_owned(),
                })
                .collect();
            let (number, first_slot) = (number.to_native(), Slot(first_slot.to_native()));
            match checked_configuration(number, nodes(members), nodes(learners), addresses, first_slot) {
                Ok(configuration) => Value::Configuration(configuration),
                Err(DecodeError::Invalid { field: inner, problem }) => {
                    return Err(ArchiveError::Field {
                        field: format!("{field}.configuration.{inner}"),
                        problem,
                    })
                }
                Err(other) => {
                    return Err(ArchiveError::Field {
                        field: format!("{field}.configuration"),
                        problem: other.to_string(),
                    })
                }
            }
        }
    })
}

fn proposals_from(
    proposals: &[ArchivedWireProposal<'_>],
    field: &str,
) -> Result<Vec<Proposal>, ArchiveError> {
    proposals
        .iter()
        .enumerate()
        .map(|(index, proposal)| {
            Ok(Proposal {
                ballot: ballot_from(&proposal.ballot),
                slot: Slot(proposal.slot.to_native()),
                value: value_from(&proposal.value, &format!("{field}[{index}].value"))?,
            })
        })
        .collect()
}

/// Builds the core's message from its archived form (validated by [`access_batch`]),
/// checking what the archive's structure cannot: configuration members strictly
/// increasing and at most `MEMBERS_MAX`.
pub fn message_from_archived(message: &ArchivedWireMessage<'_>) -> Result<Message, ArchiveError> {
    use ArchivedWireBody as W;
    let slot = |slot: &rkyv::rend::u64_le| Slot(slot.to_native());
    let body = match &message.body {
        W::PreVote { ballot, chosen } => {
            MessageBody::PreVote { ballot: ballot_from(ballot), chosen: slot(chosen) }
        }
        W::PreVoteGranted { ballot } => MessageBody::PreVoteGranted { ballot: ballot_from(ballot) },
        W::Prepare { ballot, first_unchosen, transfer_from } => MessageBody::Prepare {
            ballot: ballot_from(ballot),
            first_unchosen: slot(first_unchosen),
            transfer_from: transfer_from.as_ref().map(ballot_from),
        },
        W::Promise { ballot, accepted } => MessageBody::Promise {
            ballot: ballot_from(ballot),
            accepted: proposals_from(accepted, "Message.promise.accepted")?,
        },
        W::Reject { ballot, promised, reason } => MessageBody::Reject {
            ballot: ballot_from(ballot),
            promised: ballot_from(promised),
            reason: match reason {
                ArchivedWireReject::Promised => RejectReason::Promised,
                ArchivedWireReject::PrimaryAlive => RejectReason::PrimaryAlive,
                ArchivedWireReject::Behind { chosen } => RejectReason::Behind { chosen: slot(chosen) },
            },
        },
        W::Accept { ballot, slot: at, value, chosen } => MessageBody::Accept {
            ballot: ballot_from(ballot),
            slot: slot(at),
            value: value_from(value, "Message.accept.value")?,
            chosen: slot(chosen),
        },
        W::Accepted { ballot, slot: at } => {
            MessageBody::Accepted { ballot: ballot_from(ballot), slot: slot(at) }
        }
        W::Heartbeat { ballot, chosen, sent_at } => MessageBody::Heartbeat {
            ballot: ballot_from(ballot),
            chosen: slot(chosen),
            sent_at: Time(sent_at.to_native()),
        },
        W::HeartbeatReply { ballot, sent_at, chosen } => MessageBody::HeartbeatReply {
            ballot: ballot_from(ballot),
            sent_at: Time(sent_at.to_native()),
            chosen: slot(chosen),
        },
        W::StatusQuery => MessageBody::StatusQuery,
        W::StatusReply { promised, chosen } => {
            MessageBody::StatusReply { promised: ballot_from(promised), chosen: slot(chosen) }
        }
        W::Fetch { from, to } => MessageBody::Fetch { from: slot(from), to: slot(to) },
        W::FetchReply { chosen_values } => MessageBody::FetchReply {
            chosen_values: proposals_from(chosen_values, "Message.fetch_reply.chosen_values")?,
        },
        W::FetchTruncated { checkpoint } => MessageBody::FetchTruncated { checkpoint: slot(checkpoint) },
        W::TimeoutNow { ballot } => MessageBody::TimeoutNow { ballot: ballot_from(ballot) },
        W::PromotionRequest { ballot } => MessageBody::PromotionRequest { ballot: ballot_from(ballot) },
        W::ReadIndexRequest { id } => MessageBody::ReadIndexRequest { id: ReadId(id.to_native()) },
        W::ReadIndexReply { id, ballot, index } => MessageBody::ReadIndexReply {
            id: ReadId(id.to_native()),
            ballot: ballot_from(ballot),
            index: slot(index),
        },
        W::ReadIndexRefused { id, reason } => MessageBody::ReadIndexRefused {
            id: ReadId(id.to_native()),
            reason: match reason {
                ArchivedWireReadIndexRefusal::NotPrimary { hint } => {
                    ReadIndexRefusal::NotPrimary { hint: hint.as_ref().map(|node| NodeId(node.to_native())) }
                }
                ArchivedWireReadIndexRefusal::Busy => ReadIndexRefusal::Busy,
            },
        },
    };
    Ok(Message {
        ring: RingId(message.ring.to_native()),
        from: NodeId(message.from.to_native()),
        to: NodeId(message.to.to_native()),
        configuration: message.configuration.to_native(),
        body,
    })
}

/// The archived batch of `messages` in a fresh buffer aligned as ring payloads are (for
/// tools, tests and benchmarks; the transport serializes into its staging buffer instead).
pub fn encode_batch(from: NodeId, to: NodeId, messages: &[Message]) -> rkyv::util::AlignedVec<16> {
    let batch =
        WireBatch { from: from.0, to: to.0, messages: messages.iter().map(WireMessage::new).collect() };
    // Serializing into a growable buffer only fails on allocation failure, which aborts.
    rkyv::api::high::to_bytes_in::<_, rancor::Panic>(&batch, rkyv::util::AlignedVec::<16>::new())
        .unwrap_or_else(|never| match never {})
}

/// Validates `bytes` as an archived batch and converts every message: the sender, the
/// receiver and the messages. `bytes` must be 16-byte aligned, as a ring payload is.
pub fn decode_batch(bytes: &[u8]) -> Result<(NodeId, NodeId, Vec<Message>), ArchiveError> {
    let batch = access_batch(bytes)?;
    let messages = batch.messages.iter().map(message_from_archived).collect::<Result<_, _>>()?;
    Ok((NodeId(batch.from.to_native()), NodeId(batch.to.to_native()), messages))
}
