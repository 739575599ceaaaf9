//! The protobuf codec names every missing field of a peer's message by its path, one
//! message kind at a time, and decodes nothing from it; the bytes of such a message, and
//! of a batch holding one, are refused the same way.

use bytes::Bytes;
use pb::message::Body;
use prost::Message as _;
use rsl_transport::codec::{decode_message, message_from_proto, DecodeError};
use rsl_transport::proto as pb;

fn ballot() -> Option<pb::Ballot> {
    Some(pb::Ballot { round: 1, node: 1 })
}

fn noop() -> Option<pb::Value> {
    Some(pb::Value { kind: Some(pb::value::Kind::Noop(pb::Noop {})) })
}

fn proposal(slot: u64) -> pb::Proposal {
    pb::Proposal { ballot: ballot(), slot, value: noop() }
}

fn promised_reason() -> Option<pb::reject::Reason> {
    Some(pb::reject::Reason::ReasonPromised(pb::Empty {}))
}

/// Checks that `body` is refused naming `field`, from the protobuf struct and from its bytes.
fn refused(body: Body, field: &str) {
    let message = pb::Message { ring: 1, from: 1, to: 2, configuration: 1, body: Some(body) };
    let expected = DecodeError::Missing { field: field.to_owned() };
    assert_eq!(message_from_proto(message.clone()).unwrap_err(), expected);
    let bytes = Bytes::from(message.encode_to_vec());
    assert_eq!(decode_message(bytes).unwrap_err(), expected);
}

#[test]
fn a_pre_vote_without_a_ballot_is_refused_naming_it() {
    refused(Body::PreVote(pb::PreVote { ballot: None, ..Default::default() }), "Message.pre_vote.ballot");
}

#[test]
fn a_pre_vote_granted_without_a_ballot_is_refused_naming_it() {
    refused(Body::PreVoteGranted(pb::PreVoteGranted { ballot: None }), "Message.pre_vote_granted.ballot");
}

#[test]
fn a_prepare_without_a_ballot_is_refused_naming_it() {
    refused(Body::Prepare(pb::Prepare { ballot: None, ..Default::default() }), "Message.prepare.ballot");
}

#[test]
fn a_promise_without_a_ballot_is_refused_naming_it() {
    refused(Body::Promise(pb::Promise { ballot: None, accepted: vec![] }), "Message.promise.ballot");
}

#[test]
fn a_promise_whose_proposal_has_no_ballot_is_refused_naming_it() {
    refused(
        Body::Promise(pb::Promise {
            ballot: ballot(),
            accepted: vec![pb::Proposal { ballot: None, slot: 1, value: noop() }],
        }),
        "Message.promise.accepted[0].ballot",
    );
}

#[test]
fn a_promise_whose_proposal_value_has_no_kind_is_refused_naming_it() {
    refused(
        Body::Promise(pb::Promise {
            ballot: ballot(),
            accepted: vec![
                proposal(1),
                pb::Proposal { ballot: ballot(), slot: 2, value: Some(pb::Value { kind: None }) },
            ],
        }),
        "Message.promise.accepted[1].value.kind",
    );
}

#[test]
fn a_reject_without_a_ballot_is_refused_naming_it() {
    refused(
        Body::Reject(pb::Reject { ballot: None, promised: ballot(), reason: promised_reason() }),
        "Message.reject.ballot",
    );
}

#[test]
fn a_reject_without_the_promise_is_refused_naming_it() {
    refused(
        Body::Reject(pb::Reject { ballot: ballot(), promised: None, reason: promised_reason() }),
        "Message.reject.promised",
    );
}

#[test]
fn a_accept_without_a_value_is_refused_naming_it() {
    refused(
        Body::Accept(pb::Accept { ballot: ballot(), value: None, ..Default::default() }),
        "Message.accept.value",
    );
}

#[test]
fn a_accepted_without_a_ballot_is_refused_naming_it() {
    refused(Body::Accepted(pb::Accepted { ballot: None, slot: 1 }), "Message.accepted.ballot");
}

#[test]
fn a_heartbeat_without_a_ballot_is_refused_naming_it() {
    refused(
        Body::Heartbeat(pb::Heartbeat { ballot: None, ..Default::default() }),
        "Message.heartbeat.ballot",
    );
}

#[test]
fn a_heartbeat_reply_without_a_ballot_is_refused_naming_it() {
    refused(
        Body::HeartbeatReply(pb::HeartbeatReply { ballot: None, ..Default::default() }),
        "Message.heartbeat_reply.ballot",
    );
}

#[test]
fn a_status_reply_without_the_promise_is_refused_naming_it() {
    refused(
        Body::StatusReply(pb::StatusReply { promised: None, chosen: 3 }),
        "Message.status_reply.promised",
    );
}

#[test]
fn a_fetch_reply_whose_value_has_no_ballot_is_refused_naming_it() {
    refused(
        Body::FetchReply(pb::FetchReply {
            chosen_values: vec![
                proposal(1),
                proposal(2),
                pb::Proposal { ballot: None, slot: 3, value: noop() },
            ],
        }),
        "Message.fetch_reply.chosen_values[2].ballot",
    );
}

#[test]
fn a_fetch_reply_whose_value_is_missing_is_refused_naming_it() {
    refused(
        Body::FetchReply(pb::FetchReply {
            chosen_values: vec![pb::Proposal { ballot: ballot(), slot: 1, value: None }],
        }),
        "Message.fetch_reply.chosen_values[0].value",
    );
}

#[test]
fn a_timeout_now_without_a_ballot_is_refused_naming_it() {
    refused(Body::TimeoutNow(pb::TimeoutNow { ballot: None }), "Message.timeout_now.ballot");
}

#[test]
fn a_promotion_request_without_a_ballot_is_refused_naming_it() {
    refused(
        Body::PromotionRequest(pb::PromotionRequest { ballot: None }),
        "Message.promotion_request.ballot",
    );
}

#[test]
fn a_message_without_a_body_is_refused_naming_it() {
    let message = pb::Message { ring: 1, from: 1, to: 2, configuration: 1, body: None };
    assert_eq!(message_from_proto(message).unwrap_err().field(), Some("Message.body"));
}

#[test]
fn the_reject_reasons_decode_to_their_variants() {
    let reject =
        |reason| Body::Reject(pb::Reject { ballot: ballot(), promised: ballot(), reason: Some(reason) });
    let reasons = [
        (pb::reject::Reason::ReasonPromised(pb::Empty {}), rsl_core::RejectReason::Promised),
        (pb::reject::Reason::ReasonPrimaryAlive(pb::Empty {}), rsl_core::RejectReason::PrimaryAlive),
        (
            pb::reject::Reason::ReasonBehind(pb::RejectBehind { chosen: 7 }),
            rsl_core::RejectReason::Behind { chosen: rsl_core::Slot(7) },
        ),
    ];
    for (proto, expected) in reasons {
        let message = pb::Message { ring: 1, from: 1, to: 2, configuration: 1, body: Some(reject(proto)) };
        match message_from_proto(message).unwrap().body {
            rsl_core::MessageBody::Reject { reason, .. } => assert_eq!(reason, expected),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn a_decode_error_names_its_field_in_its_message() {
    let error = DecodeError::Missing { field: "Message.accept.ballot".into() };
    assert!(error.to_string().contains("Message.accept.ballot"), "{error}");
    assert_eq!(error.field(), Some("Message.accept.ballot"));
}
