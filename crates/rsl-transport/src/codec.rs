//! Conversion between core messages and their protobuf form, and batch framing helpers.
//!
//! Encoding cannot fail. Decoding validates everything a peer could get wrong and names the
//! field: a required submessage or oneof that is absent, configuration members that are not
//! strictly increasing or too many. It checks structure, not protocol: whether a ballot
//! or slot makes sense is the replica's business. Nothing here panics on peer bytes.

use crate::proto as pb;
use bytes::Bytes;
use prost::Message as _;
use rsl_core::{
    Ballot, Configuration, MemberAddress, Message, MessageBody, NodeId, Proposal, ReadId, ReadIndexRefusal,
    RejectReason, Request, RequestId, RingId, Slot, Time, Value, ADDRESS_BYTES_MAX, MEMBERS_MAX,
};

/// Bytes a frame adds around its messages, at most: the batch's `from` and `to` fields
/// (a tag and a ten-byte varint each), its protocol version (a tag and a one-byte varint),
/// plus one message's tag and five-byte length prefix, rounded up. A message of up to
/// `frame_bytes_max - FRAME_OVERHEAD_BYTES` encoded bytes always fits in a frame on its own.
pub const FRAME_OVERHEAD_BYTES: u64 = 32;

/// The newest protocol version this build speaks: what a frame's `protocol_version`
/// states unless the endpoint is told to speak an older one
/// ([`GrpcConfig::protocol_version`](crate::GrpcConfig::protocol_version)). Version 1 is the
/// wire format before frames stated a version; version 2 states it in every frame (the
/// messages are the same); version 3 adds learners and addresses to configurations, which
/// a peer spoken to in an older version never receives ([`message_version`]).
/// docs/PROTOCOL.md gives the compatibility rule.
pub const PROTOCOL_VERSION: u32 = 3;

/// The protocol version that first carries configurations with learners or addresses.
pub const MEMBERSHIP_PROTOCOL_VERSION: u32 = 3;

/// The oldest protocol version this build speaks, and the version a frame without a
/// `protocol_version` field is in.
pub const PROTOCOL_VERSION_MIN: u32 = 1;

const _: () = assert!(PROTOCOL_VERSION_MIN <= PROTOCOL_VERSION && PROTOCOL_VERSION < 128);
const _: () = assert!(MEMBERSHIP_PROTOCOL_VERSION <= PROTOCOL_VERSION);
const _: () = assert!(FRAME_OVERHEAD_BYTES >= 2 * (1 + 10) + 2 + 1 + 5);

/// The oldest protocol version that carries `message` whole. Version 2 added forced
/// elections (`PromotionRequest`) and read-index reads (`ReadIndexRequest`,
/// `ReadIndexReply`, `ReadIndexRefused`); version 3 added a configuration's learners and
/// addresses, which an older receiver would drop without a word. Such a message is not
/// sent to a peer spoken to in an older version (docs/PROTOCOL.md, "Versions").
pub fn message_version(message: &pb::Message) -> u32 {
    use pb::message::Body;
    let extended = |value: &Option<pb::Value>| {
        matches!(value, Some(pb::Value { kind: Some(pb::value::Kind::Configuration(c)) })
            if !c.learners.is_empty() || !c.addresses.is_empty())
    };
    let carries = match &message.body {
        Some(Body::Accept(accept)) => extended(&accept.value),
        Some(Body::Promise(promise)) => promise.accepted.iter().any(|p| extended(&p.value)),
        Some(Body::FetchReply(reply)) => reply.chosen_values.iter().any(|p| extended(&p.value)),
        _ => false,
    };
    match &message.body {
        _ if carries => MEMBERSHIP_PROTOCOL_VERSION,
        Some(
            Body::PromotionRequest(_)
            | Body::ReadIndexRequest(_)
            | Body::ReadIndexReply(_)
            | Body::ReadIndexRefused(_),
        ) => 2,
        _ => PROTOCOL_VERSION_MIN,
    }
}

/// The oldest protocol version that carries chunks of messages too large for a frame.
pub const CHUNKS_VERSION: u32 = 2;
/// The protocol version of a frame whose `protocol_version` field holds `stated`.
pub fn frame_version(stated: u32) -> u32 {
    if stated == 0 {
        PROTOCOL_VERSION_MIN
    } else {
        stated
    }
}

/// Why protobuf bytes or a decoded protobuf message could not become a core [`Message`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not a valid protobuf encoding of the expected message.
    #[error("malformed protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// A field the core type requires is absent.
    #[error("{field}: missing")]
    Missing {
        /// Path of the field, e.g. `Message.accept.value.kind`.
        field: String,
    },
    /// A field is present but its content is not acceptable.
    #[error("{field}: {problem}")]
    Invalid {
        /// Path of the field.
        field: String,
        /// What was expected and what was found.
        problem: String,
    },
}

impl DecodeError {
    fn missing(field: &str) -> DecodeError {
        DecodeError::Missing { field: field.to_owned() }
    }

    /// Prefixes the field path with `outer` (called on the way out of nested decoders).
    fn within(self, outer: &str) -> DecodeError {
        match self {
            DecodeError::Protobuf(error) => DecodeError::Protobuf(error),
            DecodeError::Missing { field } => DecodeError::Missing { field: format!("{outer}.{field}") },
            DecodeError::Invalid { field, problem } => {
                DecodeError::Invalid { field: format!("{outer}.{field}"), problem }
            }
        }
    }

    /// The path of the offending field, if the error is about one field.
    pub fn field(&self) -> Option<&str> {
        match self {
            DecodeError::Protobuf(_) => None,
            DecodeError::Missing { field } | DecodeError::Invalid { field, .. } => Some(field),
        }
    }
}

/// A decoded frame: who sent it, to whom, and its messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedBatch {
    /// The sender named in the frame.
    pub from: NodeId,
    /// The receiver named in the frame.
    pub to: NodeId,
    /// The messages, in order.
    pub messages: Vec<Message>,
}

// ---------------------------------------------------------------------------------------
// Encoding.

fn ballot_to_proto(ballot: Ballot) -> pb::Ballot {
    pb::Ballot { round: ballot.round, node: ballot.node.0 }
}

fn request_to_proto(request: &Request) -> pb::Request {
    pb::Request { client: request.id.client, sequence: request.id.sequence, payload: request.payload.clone() }
}

fn value_to_proto(value: &Value) -> pb::Value {
    let kind = match value {
        Value::Noop => pb::value::Kind::Noop(pb::Noop {}),
        Value::Batch(requests) => pb::value::Kind::Batch(pb::RequestBatch {
            requests: requests.iter().map(request_to_proto).collect(),
        }),
        Value::Configuration(configuration) => {
            pb::value::Kind::Configuration(configuration_to_proto(configuration))
        }
        Value::Last(request) => pb::value::Kind::Last(request_to_proto(request)),
    };
    pb::Value { kind: Some(kind) }
}

fn proposal_to_proto(proposal: &Proposal) -> pb::Proposal {
    pb::Proposal {
        ballot: Some(ballot_to_proto(proposal.ballot)),
        slot: proposal.slot.0,
        value: Some(value_to_proto(&proposal.value)),
    }
}

fn body_to_proto(body: &MessageBody) -> pb::message::Body {
    use pb::message::Body;
    let ballot = |ballot: &Ballot| Some(ballot_to_proto(*ballot));
    match body {
        MessageBody::PreVote { ballot: b, chosen } => {
            Body::PreVote(pb::PreVote { ballot: ballot(b), chosen: chosen.0 })
        }
        MessageBody::PreVoteGranted { ballot: b } => {
            Body::PreVoteGranted(pb::PreVoteGranted { ballot: ballot(b) })
        }
        MessageBody::Prepare { ballot: b, first_unchosen, transfer_from } => Body::Prepare(pb::Prepare {
            ballot: ballot(b),
            first_unchosen: first_unchosen.0,
            transfer_from: transfer_from.map(ballot_to_proto),
        }),
        MessageBody::Promise { ballot: b, accepted } => Body::Promise(pb::Promise {
            ballot: ballot(b),
            accepted: accepted.iter().map(proposal_to_proto).collect(),
        }),
        MessageBody::Reject { ballot: b, promised, reason } => {
            let reason = match reason {
                RejectReason::Promised => pb::reject::Reason::ReasonPromised(pb::Empty {}),
                RejectReason::PrimaryAlive => pb::reject::Reason::ReasonPrimaryAlive(pb::Empty {}),
                RejectReason::Behind { chosen } => {
                    pb::reject::Reason::ReasonBehind(pb::RejectBehind { chosen: chosen.0 })
                }
            };
            Body::Reject(pb::Reject { ballot: ballot(b), promised: ballot(promised), reason: Some(reason) })
        }
        MessageBody::Accept { ballot: b, slot, value, chosen } => Body::Accept(pb::Accept {
            ballot: ballot(b),
            slot: slot.0,
            value: Some(value_to_proto(value)),
            chosen: chosen.0,
        }),
        MessageBody::Accepted { ballot: b, slot } => {
            Body::Accepted(pb::Accepted { ballot: ballot(b), slot: slot.0 })
        }
        MessageBody::Heartbeat { ballot: b, chosen, sent_at } => {
            Body::Heartbeat(pb::Heartbeat { ballot: ballot(b), chosen: chosen.0, sent_at: sent_at.0 })
        }
        MessageBody::HeartbeatReply { ballot: b, sent_at, chosen } => {
            Body::HeartbeatReply(pb::HeartbeatReply {
                ballot: ballot(b),
                sent_at: sent_at.0,
                chosen: chosen.0,
            })
        }
        MessageBody::StatusQuery => Body::StatusQuery(pb::StatusQuery {}),
        MessageBody::StatusReply { promised, chosen } => {
            Body::StatusReply(pb::StatusReply { promised: ballot(promised), chosen: chosen.0 })
        }
        MessageBody::Fetch { from, to } => Body::Fetch(pb::Fetch { from: from.0, to: to.0 }),
        MessageBody::FetchReply { chosen_values } => Body::FetchReply(pb::FetchReply {
            chosen_values: chosen_values.iter().map(proposal_to_proto).collect(),
        }),
        MessageBody::FetchTruncated { checkpoint } => {
            Body::FetchTruncated(pb::FetchTruncated { checkpoint: checkpoint.0 })
        }
        MessageBody::TimeoutNow { ballot: b } => Body::TimeoutNow(pb::TimeoutNow { ballot: ballot(b) }),
        MessageBody::PromotionRequest { ballot: b } => {
            Body::PromotionRequest(pb::PromotionRequest { ballot: ballot(b) })
        }
        MessageBody::ReadIndexRequest { id } => Body::ReadIndexRequest(pb::ReadIndexRequest { id: id.0 }),
        MessageBody::ReadIndexReply { id, ballot: b, index } => {
            Body::ReadIndexReply(pb::ReadIndexReply { id: id.0, ballot: ballot(b), index: index.0 })
        }
        MessageBody::ReadIndexRefused { id, reason } => {
            use pb::read_index_refused::Reason;
            let reason = match reason {
                ReadIndexRefusal::NotPrimary { hint } => {
                    Reason::NotPrimary(pb::ReadIndexNotPrimary { hint: hint.map(|node| node.0) })
                }
                ReadIndexRefusal::Busy => Reason::Busy(pb::Empty {}),
            };
            Body::ReadIndexRefused(pb::ReadIndexRefused { id: id.0, reason: Some(reason) })
        }
    }
}

/// The protobuf form of `message`. Request payloads are shared, not copied.
pub fn message_to_proto(message: &Message) -> pb::Message {
    pb::Message {
        ring: message.ring.0,
        from: message.from.0,
        to: message.to.0,
        configuration: message.configuration,
        body: Some(body_to_proto(&message.body)),
    }
}

/// Encoded size of `message` on its own (without the frame's length prefix).
pub fn encoded_len(message: &Message) -> u64 {
    message_to_proto(message).encoded_len() as u64
}

/// Bytes one message of `encoded_len` bytes adds to a frame: its tag, length prefix and body.
pub fn framed_len(encoded_len: u64) -> u64 {
    1 + prost::length_delimiter_len(encoded_len as usize) as u64 + encoded_len
}

/// Bytes a frame's header (its `from`, `to` and protocol version fields) takes.
pub fn batch_header_len(from: NodeId, to: NodeId) -> u64 {
    let field =
        |value: u64| if value == 0 { 0 } else { 1 + prost::encoding::encoded_len_varint(value) as u64 };
    field(from.0) + field(to.0) + field(u64::from(PROTOCOL_VERSION))
}

/// Encodes a frame of `messages` from `from` to `to`, in [`PROTOCOL_VERSION`].
pub fn encode_batch(from: NodeId, to: NodeId, messages: &[Message]) -> Vec<u8> {
    let batch = pb::Batch {
        from: from.0,
        to: to.0,
        messages: messages.iter().map(message_to_proto).collect(),
        protocol_version: PROTOCOL_VERSION,
        chunks: Vec::new(),
    };
    batch.encode_to_vec()
}

/// Decodes and validates a frame. `bytes` is sliced, not copied, for request payloads.
pub fn decode_batch(bytes: Bytes) -> Result<DecodedBatch, DecodeError> {
    let batch = pb::Batch::decode(bytes)?;
    let messages = batch
        .messages
        .into_iter()
        .enumerate()
        .map(|(index, message)| {
            message_from_proto(message).map_err(|e| e.within(&format!("Batch.messages[{index}]")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(DecodedBatch { from: NodeId(batch.from), to: NodeId(batch.to), messages })
}

// ---------------------------------------------------------------------------------------
// Decoding.

fn ballot_from_proto(ballot: Option<pb::Ballot>, field: &str) -> Result<Ballot, DecodeError> {
    let ballot = ballot.ok_or_else(|| DecodeError::missing(field))?;
    Ok(Ballot { round: ballot.round, node: NodeId(ballot.node) })
}

fn request_from_proto(request: pb::Request) -> Request {
    Request { id: RequestId { client: request.client, sequence: request.sequence }, payload: request.payload }
}

fn configuration_to_proto(configuration: &Configuration) -> pb::Configuration {
    pb::Configuration {
        number: configuration.number,
        members: configuration.members.iter().map(|node| node.0).collect(),
        first_slot: configuration.first_slot.0,
        learners: configuration.learners.iter().map(|node| node.0).collect(),
        addresses: configuration
            .addresses
            .iter()
            .map(|a| pb::MemberAddress {
                node: a.node.0,
                replica: a.replica.clone(),
                client: a.client.clone(),
            })
            .collect(),
    }
}

/// Checks that `nodes` is strictly increasing.
fn strictly_increasing(nodes: &[u64], field: &str) -> Result<(), DecodeError> {
    if let Some(index) = nodes.windows(2).position(|pair| pair[0] >= pair[1]) {
        let (before, after) = (nodes[index], nodes[index + 1]);
        return Err(DecodeError::Invalid {
            field: field.to_owned(),
            problem: format!(
                "must be strictly increasing, found {before} then {after} at positions {index} and {}",
                index + 1
            ),
        });
    }
    Ok(())
}

fn configuration_from_proto(configuration: pb::Configuration) -> Result<Configuration, DecodeError> {
    let addresses = configuration
        .addresses
        .into_iter()
        .map(|a| MemberAddress { node: NodeId(a.node), replica: a.replica, client: a.client })
        .collect();
    let pb::Configuration { number, members, first_slot, learners, .. } = configuration;
    checked_configuration(number, members, learners, addresses, Slot(first_slot))
}

/// A configuration from a peer's fields, once its lists are well formed: members and
/// learners each strictly increasing, disjoint and at most `MEMBERS_MAX` together;
/// addresses strictly increasing by node, for members or learners, within
/// `ADDRESS_BYTES_MAX`. The error names the field (relative to the configuration).
pub(crate) fn checked_configuration(
    number: u64,
    members: Vec<u64>,
    learners: Vec<u64>,
    addresses: Vec<MemberAddress>,
    first_slot: Slot,
) -> Result<Configuration, DecodeError> {
    let invalid = |field: String, problem: String| Err(DecodeError::Invalid { field, problem });
    let nodes = members.len() + learners.len();
    if nodes > MEMBERS_MAX {
        let field = if learners.is_empty() { "members" } else { "learners" };
        return invalid(
            field.into(),
            format!("at most {MEMBERS_MAX} members and learners allowed, found {nodes}"),
        );
    }
    strictly_increasing(&members, "members")?;
    strictly_increasing(&learners, "learners")?;
    if let Some(both) = learners.iter().find(|node| members.binary_search(node).is_ok()) {
        return invalid("learners".into(), format!("node {both} is also a member"));
    }
    let address_nodes: Vec<u64> = addresses.iter().map(|a| a.node.0).collect();
    strictly_increasing(&address_nodes, "addresses")?;
    for (index, address) in addresses.iter().enumerate() {
        let node = address.node.0;
        if members.binary_search(&node).is_err() && learners.binary_search(&node).is_err() {
            return invalid(
                format!("addresses[{index}]"),
                format!("node {node} is neither a member nor a learner"),
            );
        }
        if address.replica.len() > ADDRESS_BYTES_MAX || address.client.len() > ADDRESS_BYTES_MAX {
            return invalid(format!("addresses[{index}]"), format!("longer than {ADDRESS_BYTES_MAX} bytes"));
        }
    }
    Ok(Configuration {
        number,
        members: members.into_iter().map(NodeId).collect(),
        learners: learners.into_iter().map(NodeId).collect(),
        addresses,
        first_slot,
    })
}

fn value_from_proto(value: Option<pb::Value>, field: &str) -> Result<Value, DecodeError> {
    let value = value.ok_or_else(|| DecodeError::missing(field))?;
    match value.kind {
        None => Err(DecodeError::missing(&format!("{field}.kind"))),
        Some(pb::value::Kind::Noop(pb::Noop {})) => Ok(Value::Noop),
        Some(pb::value::Kind::Batch(batch)) => {
            Ok(Value::Batch(batch.requests.into_iter().map(request_from_proto).collect()))
        }
        Some(pb::value::Kind::Configuration(configuration)) => configuration_from_proto(configuration)
            .map(Value::Configuration)
            .map_err(|e| e.within(&format!("{field}.configuration"))),
        Some(pb::value::Kind::Last(request)) => Ok(Value::Last(request_from_proto(request))),
    }
}

fn proposal_from_proto(proposal: pb::Proposal) -> Result<Proposal, DecodeError> {
    Ok(Proposal {
        ballot: ballot_from_proto(proposal.ballot, "ballot")?,
        slot: Slot(proposal.slot),
        value: value_from_proto(proposal.value, "value")?,
    })
}

fn proposals_from_proto(proposals: Vec<pb::Proposal>, field: &str) -> Result<Vec<Proposal>, DecodeError> {
    proposals
        .into_iter()
        .enumerate()
        .map(|(index, proposal)| {
            proposal_from_proto(proposal).map_err(|e| e.within(&format!("{field}[{index}]")))
        })
        .collect()
}

fn body_from_proto(body: pb::message::Body) -> Result<MessageBody, DecodeError> {
    use pb::message::Body;
    let body = match body {
        Body::PreVote(m) => MessageBody::PreVote {
            ballot: ballot_from_proto(m.ballot, "pre_vote.ballot")?,
            chosen: Slot(m.chosen),
        },
        Body::PreVoteGranted(m) => {
            MessageBody::PreVoteGranted { ballot: ballot_from_proto(m.ballot, "pre_vote_granted.ballot")? }
        }
        Body::Prepare(m) => MessageBody::Prepare {
            ballot: ballot_from_proto(m.ballot, "prepare.ballot")?,
            first_unchosen: Slot(m.first_unchosen),
            transfer_from: m
                .transfer_from
                .map(|ballot| Ballot { round: ballot.round, node: NodeId(ballot.node) }),
        },
        Body::Promise(m) => MessageBody::Promise {
            ballot: ballot_from_proto(m.ballot, "promise.ballot")?,
            accepted: proposals_from_proto(m.accepted, "promise.accepted")?,
        },
        Body::Reject(m) => {
            let reason = match m.reason {
                None => return Err(DecodeError::missing("reject.reason")),
                Some(pb::reject::Reason::ReasonPromised(pb::Empty {})) => RejectReason::Promised,
                Some(pb::reject::Reason::ReasonPrimaryAlive(pb::Empty {})) => RejectReason::PrimaryAlive,
                Some(pb::reject::Reason::ReasonBehind(behind)) => {
                    RejectReason::Behind { chosen: Slot(behind.chosen) }
                }
            };
            MessageBody::Reject {
                ballot: ballot_from_proto(m.ballot, "reject.ballot")?,
                promised: ballot_from_proto(m.promised, "reject.promised")?,
                reason,
            }
        }
        Body::Accept(m) => MessageBody::Accept {
            ballot: ballot_from_proto(m.ballot, "accept.ballot")?,
            slot: Slot(m.slot),
            value: value_from_proto(m.value, "accept.value")?,
            chosen: Slot(m.chosen),
        },
        Body::Accepted(m) => MessageBody::Accepted {
            ballot: ballot_from_proto(m.ballot, "accepted.ballot")?,
            slot: Slot(m.slot),
        },
        Body::Heartbeat(m) => MessageBody::Heartbeat {
            ballot: ballot_from_proto(m.ballot, "heartbeat.ballot")?,
            chosen: Slot(m.chosen),
            sent_at: Time(m.sent_at),
        },
        Body::HeartbeatReply(m) => MessageBody::HeartbeatReply {
            ballot: ballot_from_proto(m.ballot, "heartbeat_reply.ballot")?,
            sent_at: Time(m.sent_at),
            chosen: Slot(m.chosen),
        },
        Body::StatusQuery(pb::StatusQuery {}) => MessageBody::StatusQuery,
        Body::StatusReply(m) => MessageBody::StatusReply {
            promised: ballot_from_proto(m.promised, "status_reply.promised")?,
            chosen: Slot(m.chosen),
        },
        Body::Fetch(m) => MessageBody::Fetch { from: Slot(m.from), to: Slot(m.to) },
        Body::FetchReply(m) => MessageBody::FetchReply {
            chosen_values: proposals_from_proto(m.chosen_values, "fetch_reply.chosen_values")?,
        },
        Body::FetchTruncated(m) => MessageBody::FetchTruncated { checkpoint: Slot(m.checkpoint) },
        Body::TimeoutNow(m) => {
            MessageBody::TimeoutNow { ballot: ballot_from_proto(m.ballot, "timeout_now.ballot")? }
        }
        Body::PromotionRequest(m) => {
            MessageBody::PromotionRequest { ballot: ballot_from_proto(m.ballot, "promotion_request.ballot")? }
        }
        Body::ReadIndexRequest(m) => MessageBody::ReadIndexRequest { id: ReadId(m.id) },
        Body::ReadIndexReply(m) => MessageBody::ReadIndexReply {
            id: ReadId(m.id),
            ballot: ballot_from_proto(m.ballot, "read_index_reply.ballot")?,
            index: Slot(m.index),
        },
        Body::ReadIndexRefused(m) => {
            use pb::read_index_refused::Reason;
            let reason = match m.reason {
                None => return Err(DecodeError::missing("read_index_refused.reason")),
                Some(Reason::NotPrimary(not_primary)) => {
                    ReadIndexRefusal::NotPrimary { hint: not_primary.hint.map(NodeId) }
                }
                Some(Reason::Busy(pb::Empty {})) => ReadIndexRefusal::Busy,
            };
            MessageBody::ReadIndexRefused { id: ReadId(m.id), reason }
        }
    };
    Ok(body)
}

/// Validates a protobuf message from a peer and converts it to a core [`Message`].
/// Error fields are paths from the message, e.g. `Message.promise.accepted[3].value.kind`.
pub fn message_from_proto(message: pb::Message) -> Result<Message, DecodeError> {
    let body = message.body.ok_or_else(|| DecodeError::missing("Message.body"))?;
    let body = body_from_proto(body).map_err(|e| e.within("Message"))?;
    Ok(Message {
        ring: RingId(message.ring),
        from: NodeId(message.from),
        to: NodeId(message.to),
        configuration: message.configuration,
        body,
    })
}

/// Decodes and validates one message encoded on its own.
pub fn decode_message(bytes: Bytes) -> Result<Message, DecodeError> {
    message_from_proto(pb::Message::decode(bytes)?)
}

/// Encodes one message on its own.
pub fn encode_message(message: &Message) -> Vec<u8> {
    message_to_proto(message).encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(body: MessageBody) -> Message {
        Message { ring: RingId(1), from: NodeId(1), to: NodeId(2), configuration: 3, body }
    }

    #[test]
    fn missing_fields_are_named() {
        let cases: Vec<(pb::Message, &str)> = vec![
            (pb::Message { body: None, ..Default::default() }, "Message.body"),
            (
                pb::Message {
                    body: Some(pb::message::Body::Accept(pb::Accept { ballot: None, ..Default::default() })),
                    ..Default::default()
                },
                "Message.accept.ballot",
            ),
            (
                pb::Message {
                    body: Some(pb::message::Body::Accept(pb::Accept {
                        ballot: Some(pb::Ballot::default()),
                        value: Some(pb::Value { kind: None }),
                        ..Default::default()
                    })),
                    ..Default::default()
                },
                "Message.accept.value.kind",
            ),
            (
                pb::Message {
                    body: Some(pb::message::Body::Promise(pb::Promise {
                        ballot: Some(pb::Ballot::default()),
                        accepted: vec![
                            proposal_to_proto(&Proposal {
                                ballot: Ballot::ZERO,
                                slot: Slot(1),
                                value: Value::Noop,
                            }),
                            pb::Proposal { ballot: Some(pb::Ballot::default()), slot: 2, value: None },
                        ],
                    })),
                    ..Default::default()
                },
                "Message.promise.accepted[1].value",
            ),
            (
                pb::Message {
                    body: Some(pb::message::Body::Reject(pb::Reject {
                        ballot: Some(pb::Ballot::default()),
                        promised: Some(pb::Ballot::default()),
                        reason: None,
                    })),
                    ..Default::default()
                },
                "Message.reject.reason",
            ),
        ];
        for (proto, field) in cases {
            let error = message_from_proto(proto).expect_err(field);
            assert_eq!(error, DecodeError::Missing { field: field.to_owned() }, "{error}");
        }
    }

    #[test]
    fn configuration_members_must_be_strictly_increasing_and_bounded() {
        let accept = |members: Vec<u64>| pb::Message {
            body: Some(pb::message::Body::Accept(pb::Accept {
                ballot: Some(pb::Ballot::default()),
                value: Some(pb::Value {
                    kind: Some(pb::value::Kind::Configuration(pb::Configuration {
                        number: 2,
                        members,
                        first_slot: 9,
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            })),
            ..Default::default()
        };
        let error = message_from_proto(accept(vec![1, 3, 3])).unwrap_err();
        assert_eq!(error.field(), Some("Message.accept.value.configuration.members"));
        assert!(error.to_string().contains("found 3 then 3"), "{error}");
        let error = message_from_proto(accept((1..=MEMBERS_MAX as u64 + 1).collect())).unwrap_err();
        assert!(error.to_string().contains("at most"), "{error}");
        let decoded = message_from_proto(accept(vec![1, 2, 5])).unwrap();
        let expected = Configuration::new(2, vec![NodeId(1), NodeId(2), NodeId(5)], Slot(9));
        assert!(
            matches!(decoded.body, MessageBody::Accept { value: Value::Configuration(c), .. } if c == expected)
        );
    }

    #[test]
    fn only_configurations_with_learners_or_addresses_need_version_3() {
        let accept = |configuration: Configuration| {
            message_to_proto(&message(MessageBody::Accept {
                ballot: Ballot::new(1, NodeId(1)),
                slot: Slot(4),
                value: Value::Configuration(configuration),
                chosen: Slot(3),
            }))
        };
        let plain = Configuration::new(2, vec![NodeId(1), NodeId(2)], Slot(5));
        assert_eq!(message_version(&accept(plain.clone())), PROTOCOL_VERSION_MIN);
        assert_eq!(message_version(&accept(plain.clone().with_learners(vec![NodeId(3)]))), 3);
        let address = MemberAddress { node: NodeId(1), replica: "r:1".into(), client: String::new() };
        assert_eq!(message_version(&accept(plain.clone().with_addresses(vec![address]))), 3);
        let fetched = Proposal {
            ballot: Ballot::new(1, NodeId(1)),
            slot: Slot(4),
            value: Value::Configuration(plain.with_learners(vec![NodeId(3)])),
        };
        let reply = message_to_proto(&message(MessageBody::FetchReply { chosen_values: vec![fetched] }));
        assert_eq!(message_version(&reply), 3, "a fetched configuration too");
    }

    #[test]
    fn payload_is_a_slice_of_the_frame() {
        let payload = Bytes::from(vec![7u8; 256]);
        let request = Request { id: RequestId { client: 1, sequence: 2 }, payload: payload.clone() };
        let sent = message(MessageBody::Accept {
            ballot: Ballot::new(1, NodeId(1)),
            slot: Slot(1),
            value: Value::Batch(vec![request]),
            chosen: Slot::ZERO,
        });
        let frame = Bytes::from(encode_batch(NodeId(1), NodeId(2), std::slice::from_ref(&sent)));
        let range = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
        let decoded = decode_batch(frame.clone()).unwrap();
        assert_eq!(decoded.messages, vec![sent]);
        let MessageBody::Accept { value: Value::Batch(requests), .. } = &decoded.messages[0].body else {
            panic!("not an accept: {:?}", decoded.messages[0]);
        };
        assert!(range.contains(&(requests[0].payload.as_ptr() as usize)), "payload was copied");
    }

    #[test]
    fn framed_len_matches_prost() {
        for size in [0u64, 1, 127, 128, 16_383, 16_384, 1 << 21] {
            let message = message(MessageBody::Accept {
                ballot: Ballot::new(1, NodeId(1)),
                slot: Slot(1),
                value: Value::Batch(vec![Request {
                    id: RequestId::default(),
                    payload: Bytes::from(vec![0u8; size as usize]),
                }]),
                chosen: Slot::ZERO,
            });
            let alone = encoded_len(&message);
            let frame = encode_batch(NodeId(0), NodeId(0), std::slice::from_ref(&message));
            assert_eq!(frame.len() as u64, batch_header_len(NodeId(0), NodeId(0)) + framed_len(alone));
            let frame = encode_batch(NodeId(u64::MAX), NodeId(u64::MAX), std::slice::from_ref(&message));
            assert!(frame.len() as u64 <= alone + FRAME_OVERHEAD_BYTES);
            assert_eq!(
                frame.len() as u64,
                batch_header_len(NodeId(u64::MAX), NodeId(u64::MAX)) + framed_len(alone)
            );
        }
    }
}
