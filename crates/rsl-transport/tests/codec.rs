//! Protobuf codec: every message round-trips, and bytes from a peer never cause a panic.

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;
use prost::Message as _;
use rsl_core::{
    Ballot, Configuration, MemberAddress, Message, MessageBody, NodeId, Proposal, ReadId, ReadIndexRefusal,
    RejectReason, Request, RequestId, RingId, Slot, Time, Value,
};
use rsl_transport::codec::{
    decode_batch, decode_message, encode_batch, encode_message, encoded_len, message_from_proto, DecodeError,
};
use rsl_transport::proto;
use std::collections::BTreeSet;

fn node() -> impl Strategy<Value = NodeId> {
    prop_oneof![
        Just(NodeId(0)),
        Just(NodeId(u64::MAX)),
        (0u64..8).prop_map(NodeId),
        any::<u64>().prop_map(NodeId)
    ]
}

fn slot() -> impl Strategy<Value = Slot> {
    prop_oneof![Just(Slot::ZERO), Just(Slot(u64::MAX)), any::<u64>().prop_map(Slot)]
}

fn ballot() -> impl Strategy<Value = Ballot> {
    prop_oneof![Just(Ballot::ZERO), (any::<u64>(), node()).prop_map(|(round, node)| Ballot::new(round, node))]
}

fn request() -> impl Strategy<Value = Request> {
    (any::<u64>(), any::<u64>(), vec(any::<u8>(), 0..80)).prop_map(|(client, sequence, payload)| Request {
        id: RequestId { client, sequence },
        payload: Bytes::from(payload),
    })
}

fn configuration() -> impl Strategy<Value = Configuration> {
    let address = (any::<u64>(), "[a-z0-9:/.]{1,30}", "[a-z0-9:/.]{0,30}");
    (any::<u64>(), vec(any::<u64>(), 0..9), vec(any::<u64>(), 0..3), vec(address, 0..4), slot()).prop_map(
        |(number, members, learners, addresses, first_slot)| {
            let addresses: Vec<MemberAddress> = addresses
                .into_iter()
                .zip(members.iter().chain(&learners))
                .map(|((_, replica, client), &node)| MemberAddress { node: NodeId(node), replica, client })
                .collect();
            Configuration::new(number, members.into_iter().map(NodeId).collect(), first_slot)
                .with_learners(learners.into_iter().map(NodeId).collect())
                .with_addresses(addresses)
        },
    )
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Noop),
        vec(request(), 0..6).prop_map(Value::Batch),
        configuration().prop_map(Value::Configuration),
        request().prop_map(Value::Last),
    ]
}

fn proposal() -> impl Strategy<Value = Proposal> {
    (ballot(), slot(), value()).prop_map(|(ballot, slot, value)| Proposal { ballot, slot, value })
}

fn reject_reason() -> impl Strategy<Value = RejectReason> {
    prop_oneof![
        Just(RejectReason::Promised),
        Just(RejectReason::PrimaryAlive),
        slot().prop_map(|chosen| RejectReason::Behind { chosen }),
    ]
}

fn body() -> impl Strategy<Value = MessageBody> {
    prop_oneof![
        (ballot(), slot()).prop_map(|(ballot, chosen)| MessageBody::PreVote { ballot, chosen }),
        ballot().prop_map(|ballot| MessageBody::PreVoteGranted { ballot }),
        (ballot(), slot(), proptest::option::of(ballot())).prop_map(
            |(ballot, first_unchosen, transfer_from)| {
                MessageBody::Prepare { ballot, first_unchosen, transfer_from }
            }
        ),
        (ballot(), vec(proposal(), 0..4))
            .prop_map(|(ballot, accepted)| MessageBody::Promise { ballot, accepted }),
        (ballot(), ballot(), reject_reason()).prop_map(|(ballot, promised, reason)| MessageBody::Reject {
            ballot,
            promised,
            reason
        }),
        (ballot(), slot(), value(), slot()).prop_map(|(ballot, slot, value, chosen)| MessageBody::Accept {
            ballot,
            slot,
            value,
            chosen
        }),
        (ballot(), slot()).prop_map(|(ballot, slot)| MessageBody::Accepted { ballot, slot }),
        (ballot(), slot(), any::<u64>()).prop_map(|(ballot, chosen, sent_at)| MessageBody::Heartbeat {
            ballot,
            chosen,
            sent_at: Time(sent_at)
        }),
        (ballot(), any::<u64>(), slot()).prop_map(|(ballot, sent_at, chosen)| MessageBody::HeartbeatReply {
            ballot,
            sent_at: Time(sent_at),
            chosen
        }),
        Just(MessageBody::StatusQuery),
        (ballot(), slot()).prop_map(|(promised, chosen)| MessageBody::StatusReply { promised, chosen }),
        (slot(), slot()).prop_map(|(from, to)| MessageBody::Fetch { from, to }),
        vec(proposal(), 0..4).prop_map(|chosen_values| MessageBody::FetchReply { chosen_values }),
        slot().prop_map(|checkpoint| MessageBody::FetchTruncated { checkpoint }),
        ballot().prop_map(|ballot| MessageBody::TimeoutNow { ballot }),
        ballot().prop_map(|ballot| MessageBody::PromotionRequest { ballot }),
        any::<u64>().prop_map(|id| MessageBody::ReadIndexRequest { id: ReadId(id) }),
        (any::<u64>(), ballot(), slot()).prop_map(|(id, ballot, index)| MessageBody::ReadIndexReply {
            id: ReadId(id),
            ballot,
            index
        }),
        (any::<u64>(), proptest::option::of(node()), any::<bool>()).prop_map(|(id, hint, busy)| {
            let reason = if busy { ReadIndexRefusal::Busy } else { ReadIndexRefusal::NotPrimary { hint } };
            MessageBody::ReadIndexRefused { id: ReadId(id), reason }
        }),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    (any::<u64>(), node(), node(), any::<u64>(), body()).prop_map(|(ring, from, to, configuration, body)| {
        Message { ring: RingId(ring), from, to, configuration, body }
    })
}

/// One message of every body kind, so a variant missing from the codec fails here even if
/// the random strategy were to skip it.
fn one_of_each() -> Vec<Message> {
    let b = Ballot::new(4, NodeId(2));
    let proposals = vec![
        Proposal { ballot: b, slot: Slot(1), value: Value::Noop },
        Proposal {
            ballot: b,
            slot: Slot(2),
            value: Value::Batch(vec![Request {
                id: RequestId { client: 1, sequence: 9 },
                payload: "x".into(),
            }]),
        },
        Proposal {
            ballot: b,
            slot: Slot(3),
            value: Value::Configuration(Configuration::new(2, vec![NodeId(1), NodeId(3)], Slot(4))),
        },
        Proposal {
            ballot: b,
            slot: Slot(4),
            value: Value::Last(Request { id: RequestId { client: 2, sequence: 1 }, payload: "end".into() }),
        },
    ];
    let bodies = vec![
        MessageBody::PreVote { ballot: b, chosen: Slot(3) },
        MessageBody::PreVoteGranted { ballot: b },
        MessageBody::Prepare {
            ballot: b,
            first_unchosen: Slot(4),
            transfer_from: Some(Ballot::new(3, NodeId(1))),
        },
        MessageBody::Prepare { ballot: b, first_unchosen: Slot(4), transfer_from: None },
        MessageBody::Promise { ballot: b, accepted: proposals.clone() },
        MessageBody::Reject { ballot: b, promised: b, reason: RejectReason::Promised },
        MessageBody::Reject { ballot: b, promised: b, reason: RejectReason::PrimaryAlive },
        MessageBody::Reject { ballot: b, promised: b, reason: RejectReason::Behind { chosen: Slot(8) } },
        MessageBody::Accept { ballot: b, slot: Slot(5), value: proposals[1].value.clone(), chosen: Slot(4) },
        MessageBody::Accepted { ballot: b, slot: Slot(5) },
        MessageBody::Heartbeat { ballot: b, chosen: Slot(5), sent_at: Time(77) },
        MessageBody::HeartbeatReply { ballot: b, sent_at: Time(77), chosen: Slot(5) },
        MessageBody::StatusQuery,
        MessageBody::StatusReply { promised: b, chosen: Slot(5) },
        MessageBody::Fetch { from: Slot(1), to: Slot(3) },
        MessageBody::FetchReply { chosen_values: proposals },
        MessageBody::FetchTruncated { checkpoint: Slot(100) },
        MessageBody::TimeoutNow { ballot: b },
        MessageBody::PromotionRequest { ballot: b },
        MessageBody::ReadIndexRequest { id: ReadId(11) },
        MessageBody::ReadIndexReply { id: ReadId(11), ballot: b, index: Slot(5) },
        MessageBody::ReadIndexRefused {
            id: ReadId(12),
            reason: ReadIndexRefusal::NotPrimary { hint: Some(NodeId(3)) },
        },
        MessageBody::ReadIndexRefused { id: ReadId(13), reason: ReadIndexRefusal::NotPrimary { hint: None } },
        MessageBody::ReadIndexRefused { id: ReadId(14), reason: ReadIndexRefusal::Busy },
    ];
    bodies
        .into_iter()
        .map(|body| Message { ring: RingId(9), from: NodeId(2), to: NodeId(1), configuration: 2, body })
        .collect()
}

#[test]
fn every_body_kind_round_trips() {
    let messages = one_of_each();
    let kinds: BTreeSet<&str> = messages.iter().map(|m| m.body.kind()).collect();
    assert_eq!(kinds.len(), 19, "one message per MessageBody variant: {kinds:?}");
    for message in &messages {
        let bytes = encode_message(message);
        assert_eq!(bytes.len() as u64, encoded_len(message));
        assert_eq!(&decode_message(Bytes::from(bytes)).unwrap(), message);
    }
    let frame = encode_batch(NodeId(2), NodeId(1), &messages);
    let decoded = decode_batch(Bytes::from(frame)).unwrap();
    assert_eq!((decoded.from, decoded.to), (NodeId(2), NodeId(1)));
    assert_eq!(decoded.messages, messages);
}

#[test]
fn garbage_gives_a_protobuf_error() {
    // A field with wire type 7 (invalid) and a length prefix running past the end.
    for bytes in [&[0x0f_u8][..], &[0x1a, 0x05, 0x01], &[0xff; 11]] {
        let error = decode_batch(Bytes::copy_from_slice(bytes)).unwrap_err();
        assert!(matches!(error, DecodeError::Protobuf(_)), "{error}");
    }
}

#[test]
fn missing_body_inside_a_batch_names_the_index() {
    let good = encode_message(&one_of_each()[0]);
    let batch = proto::Batch {
        from: 1,
        to: 2,
        messages: vec![proto::Message::decode(good.as_slice()).unwrap(), proto::Message::default()],
        protocol_version: rsl_transport::PROTOCOL_VERSION,
        chunks: Vec::new(),
    };
    let error = decode_batch(Bytes::from(batch.encode_to_vec())).unwrap_err();
    assert_eq!(error, DecodeError::Missing { field: "Batch.messages[1].Message.body".to_owned() });
    assert_eq!(error.to_string(), "Batch.messages[1].Message.body: missing");
}

#[test]
fn a_read_index_refusal_without_its_reason_is_named() {
    let message = proto::Message {
        ring: 1,
        from: 2,
        to: 1,
        configuration: 1,
        body: Some(proto::message::Body::ReadIndexRefused(proto::ReadIndexRefused { id: 4, reason: None })),
    };
    let error = message_from_proto(message).unwrap_err();
    assert_eq!(error.to_string(), "Message.read_index_refused.reason: missing");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn messages_round_trip(message in message()) {
        let bytes = encode_message(&message);
        prop_assert_eq!(bytes.len() as u64, encoded_len(&message));
        prop_assert_eq!(decode_message(Bytes::from(bytes)).unwrap(), message.clone());
        prop_assert_eq!(message_from_proto(rsl_transport::codec::message_to_proto(&message)).unwrap(), message);
    }

    #[test]
    fn batches_round_trip(from in node(), to in node(), messages in vec(message(), 0..8)) {
        let decoded = decode_batch(Bytes::from(encode_batch(from, to, &messages))).unwrap();
        prop_assert_eq!(decoded.from, from);
        prop_assert_eq!(decoded.to, to);
        prop_assert_eq!(decoded.messages, messages);
    }

    #[test]
    fn random_bytes_never_panic(bytes in vec(any::<u8>(), 0..512)) {
        // Whatever comes out must be stable: anything accepted re-encodes to an equal value.
        if let Ok(batch) = decode_batch(Bytes::from(bytes.clone())) {
            let again = decode_batch(Bytes::from(encode_batch(batch.from, batch.to, &batch.messages))).unwrap();
            prop_assert_eq!(again, batch);
        }
        if let Ok(message) = decode_message(Bytes::from(bytes)) {
            prop_assert_eq!(decode_message(Bytes::from(encode_message(&message))).unwrap(), message);
        }
    }

    #[test]
    fn truncated_and_corrupted_frames_never_panic(
        messages in vec(message(), 1..6),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        mask in 1u8..,
    ) {
        let frame = encode_batch(NodeId(1), NodeId(2), &messages);
        let truncated = &frame[..cut.index(frame.len())];
        // A cut inside the last message must fail; a cut on a boundary decodes a prefix.
        match decode_batch(Bytes::copy_from_slice(truncated)) {
            Ok(batch) => prop_assert!(messages.starts_with(&batch.messages) || batch.messages.is_empty()),
            Err(error) => prop_assert!(!error.to_string().is_empty()),
        }
        let mut corrupted = frame.clone();
        let at = flip.index(corrupted.len());
        corrupted[at] ^= mask;
        let _ = decode_batch(Bytes::from(corrupted));
    }
}

/// The RDMA path's rkyv archives: the same messages round-trip, and no bytes panic.
#[cfg(feature = "rdma")]
mod archive {
    use super::*;
    use rsl_transport::rdma::archive::{archived_len, decode_batch, encode_batch, ArchiveError};

    #[test]
    fn every_body_kind_round_trips_through_rkyv() {
        let messages = one_of_each();
        let bytes = encode_batch(NodeId(2), NodeId(1), &messages);
        let (from, to, decoded) = decode_batch(&bytes).unwrap();
        assert_eq!((from, to), (NodeId(2), NodeId(1)));
        assert_eq!(decoded, messages);
        for message in &messages {
            let alone = encode_batch(message.from, message.to, std::slice::from_ref(message));
            assert_eq!(alone.len() as u64, archived_len(message), "{}", message.body.kind());
        }
    }

    #[test]
    fn unsorted_configuration_members_are_refused_with_the_field() {
        let mut message = one_of_each().into_iter().find(|m| m.body.kind() == "accept").unwrap();
        if let MessageBody::Accept { value, .. } = &mut message.body {
            *value = Value::Configuration(Configuration {
                members: vec![NodeId(3), NodeId(1)],
                ..Configuration::new(2, Vec::new(), Slot(4))
            });
        }
        let bytes = encode_batch(NodeId(2), NodeId(1), &[message]);
        let error = decode_batch(&bytes).unwrap_err();
        let ArchiveError::Field { field, problem } = error else { panic!("{error}") };
        assert_eq!(field, "Message.accept.value.configuration.members");
        assert!(problem.contains("strictly increasing"), "{problem}");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn batches_round_trip_through_rkyv(from in node(), to in node(), messages in vec(message(), 0..8)) {
            let bytes = encode_batch(from, to, &messages);
            prop_assert_eq!(decode_batch(&bytes).unwrap(), (from, to, messages.clone()));
            // A batch is no larger than its messages archived alone plus the batch overhead.
            let alone: u64 = messages.iter().map(archived_len).sum();
            prop_assert!(bytes.len() as u64 <= alone + rsl_transport::rdma::archive::BATCH_OVERHEAD_BYTES);
        }

        #[test]
        fn random_and_corrupted_archives_never_panic(
            messages in vec(message(), 1..6),
            random in vec(any::<u8>(), 0..512),
            flip in any::<prop::sample::Index>(),
            mask in 1u8..,
        ) {
            let mut buffer = encode_batch(NodeId(1), NodeId(2), &[]);
            buffer.clear();
            buffer.extend_from_slice(&random);
            let _ = decode_batch(&buffer);
            let mut corrupted = encode_batch(NodeId(1), NodeId(2), &messages);
            let at = flip.index(corrupted.len());
            corrupted[at] ^= mask;
            if let Ok((_, _, decoded)) = decode_batch(&corrupted) {
                prop_assert_eq!(decoded.len(), messages.len());
            }
        }
    }
}
