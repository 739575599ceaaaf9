//! A peer's malformed message, one field at a time: each is refused with its named error
//! (the kind, the sender and what is wrong), counted, and changes nothing in the replica.

use rsl_core::{
    Ballot, Configuration, DurableState, Message, MessageBody, MessageError, NodeId, Proposal, Replica, Slot,
    Time, Value, CONFIGURATION_ROUND_BITS,
};
use rsl_testkit::{batch, config, drain, message};

/// Node 2 of a ring of three, booted at time zero, its boot actions drained.
fn receiver() -> Replica {
    let mut replica = Replica::new(config(2, 3), DurableState::default(), Time(0)).unwrap();
    drain(&mut replica);
    replica
}

fn ballot(round: u64, node: u64) -> Ballot {
    Ballot::new(round, NodeId(node))
}

/// Delivers `message` to a fresh node 2 and returns the refusal; checks that it was
/// counted and that the replica's status did not move.
fn refusal(message: Message) -> MessageError {
    let mut replica = receiver();
    let before = replica.status();
    let rejected = replica.statistics().messages_rejected;
    let error = replica.handle_message(Time(1_000), message).expect_err("refused");
    assert_eq!(replica.statistics().messages_rejected, rejected + 1, "counted");
    assert!(drain(&mut replica).is_empty(), "a refused message causes no action");
    let after = replica.status();
    assert_eq!((after.promised, after.chosen, after.role), (before.promised, before.chosen, before.role));
    error
}

/// The reason of a `Malformed` refusal of `kind` from node `from`.
fn malformed(message: Message, kind: &str, from: u64) -> String {
    match refusal(message) {
        MessageError::Malformed { kind: k, from: f, reason } => {
            assert_eq!((k, f), (kind, NodeId(from)));
            reason
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
}

fn accept(ballot: Ballot, slot: u64, value: Value) -> Message {
    message(1, 2, MessageBody::Accept { ballot, slot: Slot(slot), value, chosen: Slot::ZERO })
}

fn proposal(slot: u64) -> Proposal {
    Proposal { ballot: ballot(1, 1), slot: Slot(slot), value: batch(&["v"]) }
}

#[test]
fn a_heartbeat_whose_ballot_the_sender_does_not_own_is_malformed() {
    let body = MessageBody::Heartbeat { ballot: ballot(1, 3), chosen: Slot::ZERO, sent_at: Time(0) };
    assert!(malformed(message(1, 2, body), "heartbeat", 1).contains("not owned by the sender"));
}

#[test]
fn a_timeout_now_whose_ballot_the_sender_does_not_own_is_malformed() {
    let body = MessageBody::TimeoutNow { ballot: ballot(2, 3) };
    assert!(malformed(message(1, 2, body), "timeout_now", 1).contains("not owned by the sender"));
}

#[test]
fn a_promotion_request_for_another_receivers_ballot_is_malformed() {
    let body = MessageBody::PromotionRequest { ballot: ballot(2, 3) };
    assert!(malformed(message(1, 2, body), "promotion_request", 1).contains("not the receiver's"));
}

#[test]
fn a_prepare_past_the_configurations_rounds_is_malformed() {
    let round = 1 << CONFIGURATION_ROUND_BITS;
    let body =
        MessageBody::Prepare { ballot: ballot(round, 1), first_unchosen: Slot(1), transfer_from: None };
    assert!(malformed(message(1, 2, body), "prepare", 1).contains("outside configuration 1's rounds"));
}

#[test]
fn a_pre_vote_past_the_configurations_rounds_is_malformed() {
    let round = 1 << CONFIGURATION_ROUND_BITS;
    let body = MessageBody::PreVote { ballot: ballot(round, 1), chosen: Slot::ZERO };
    assert!(malformed(message(1, 2, body), "pre_vote", 1).contains("rounds"));
}

#[test]
fn a_prepare_with_first_unchosen_zero_is_malformed() {
    let body = MessageBody::Prepare { ballot: ballot(1, 1), first_unchosen: Slot::ZERO, transfer_from: None };
    assert_eq!(malformed(message(1, 2, body), "prepare", 1), "first_unchosen 0");
}

#[test]
fn an_accept_for_slot_zero_is_malformed() {
    assert_eq!(malformed(accept(ballot(1, 1), 0, batch(&["v"])), "accept", 1), "slot 0");
}

#[test]
fn an_accepted_for_slot_zero_is_malformed() {
    let body = MessageBody::Accepted { ballot: ballot(1, 2), slot: Slot::ZERO };
    assert_eq!(malformed(message(1, 2, body), "accepted", 1), "slot 0");
}

#[test]
fn an_accepted_configuration_that_skips_a_number_is_malformed() {
    let next = Configuration::new(3, vec![NodeId(1), NodeId(2)], Slot(6));
    let reason = malformed(accept(ballot(1, 1), 5, Value::Configuration(next)), "accept", 1);
    assert!(
        reason.contains("configuration 3 starting at 6 proposed at slot 5 in configuration 1"),
        "{reason}"
    );
}

#[test]
fn an_accepted_configuration_starting_elsewhere_than_the_next_slot_is_malformed() {
    let next = Configuration::new(2, vec![NodeId(1), NodeId(2)], Slot(9));
    let reason = malformed(accept(ballot(1, 1), 5, Value::Configuration(next)), "accept", 1);
    assert!(reason.contains("starting at 9 proposed at slot 5"), "{reason}");
}

#[test]
fn an_accepted_configuration_naming_node_zero_is_malformed() {
    let next = Configuration::new(2, vec![NodeId(0), NodeId(1)], Slot(6));
    let reason = malformed(accept(ballot(1, 1), 5, Value::Configuration(next)), "accept", 1);
    assert!(reason.contains("names node 0"), "{reason}");
}

#[test]
fn an_accepted_configuration_without_members_is_malformed() {
    let next = Configuration::new(2, Vec::new(), Slot(6));
    let reason = malformed(accept(ballot(1, 1), 5, Value::Configuration(next)), "accept", 1);
    assert!(reason.contains("has 0 members"), "{reason}");
}

#[test]
fn a_well_formed_configuration_accept_is_taken() {
    let mut replica = receiver();
    let next = Configuration::new(2, vec![NodeId(1), NodeId(2)], Slot(6));
    replica
        .handle_message(Time(1_000), accept(ballot(1, 1), 5, Value::Configuration(next)))
        .expect("accepted");
}

#[test]
fn a_promise_with_more_proposals_than_allowed_is_malformed() {
    let max = config(2, 3).promise_slots_max;
    let accepted: Vec<Proposal> = (1..=max + 1).map(proposal).collect();
    let body = MessageBody::Promise { ballot: ballot(1, 2), accepted };
    let reason = malformed(message(1, 2, body), "promise", 1);
    assert!(reason.contains(&format!("more than promise_slots_max {max}")), "{reason}");
}

#[test]
fn a_promise_with_a_proposal_for_slot_zero_is_malformed() {
    let body = MessageBody::Promise { ballot: ballot(1, 2), accepted: vec![proposal(0)] };
    assert_eq!(malformed(message(1, 2, body), "promise", 1), "proposal for slot 0");
}

#[test]
fn a_promise_with_proposals_out_of_order_is_malformed() {
    let body = MessageBody::Promise { ballot: ballot(1, 2), accepted: vec![proposal(3), proposal(2)] };
    assert_eq!(malformed(message(1, 2, body), "promise", 1), "proposals not in increasing slot order");
}

#[test]
fn a_promise_with_a_slot_twice_is_malformed() {
    let body = MessageBody::Promise { ballot: ballot(1, 2), accepted: vec![proposal(3), proposal(3)] };
    assert_eq!(malformed(message(1, 2, body), "promise", 1), "proposals not in increasing slot order");
}

#[test]
fn a_fetch_of_an_empty_range_is_malformed() {
    let body = MessageBody::Fetch { from: Slot(5), to: Slot(4) };
    assert!(malformed(message(1, 2, body), "fetch", 1).contains("empty or invalid range 5..=4"));
}

#[test]
fn a_fetch_from_slot_zero_is_malformed() {
    let body = MessageBody::Fetch { from: Slot::ZERO, to: Slot(4) };
    assert!(malformed(message(1, 2, body), "fetch", 1).contains("0..=4"));
}

#[test]
fn a_fetch_reply_with_a_gap_is_malformed() {
    let body = MessageBody::FetchReply { chosen_values: vec![proposal(1), proposal(3)] };
    assert_eq!(malformed(message(1, 2, body), "fetch_reply", 1), "chosen values not contiguous");
}

#[test]
fn a_fetch_reply_with_a_value_for_slot_zero_is_malformed() {
    let body = MessageBody::FetchReply { chosen_values: vec![proposal(0), proposal(1)] };
    assert_eq!(malformed(message(1, 2, body), "fetch_reply", 1), "value for slot 0");
}

#[test]
fn catch_up_messages_cross_configurations() {
    // A status query from a node in another configuration (or none) is answered.
    let mut replica = receiver();
    let query = Message { configuration: 7, ..message(9, 2, MessageBody::StatusQuery) };
    replica.handle_message(Time(1_000), query).expect("catch-up traffic crosses configurations");
}

#[test]
fn a_prepare_from_a_later_configuration_is_refused_as_the_wrong_configuration() {
    let body = MessageBody::Prepare { ballot: ballot(1, 1), first_unchosen: Slot(1), transfer_from: None };
    let mut replica = receiver();
    let error = replica.handle_message(Time(1_000), Message { configuration: 2, ..message(1, 2, body) });
    assert_eq!(error, Err(MessageError::WrongConfiguration { expected: 1, found: 2 }));
    assert_eq!(replica.status().promised, Ballot::ZERO, "no promise made");
    // A newer configuration exists: the replica asks the sender about it, nothing else.
    let sent = rsl_testkit::sends(&drain(&mut replica)).into_iter().cloned().collect::<Vec<_>>();
    assert!(sent.iter().all(|m| m.body == MessageBody::StatusQuery && m.to == NodeId(1)), "{sent:?}");
}

#[test]
fn every_message_kind_has_its_name() {
    let b = ballot(1, 1);
    let kinds = [
        (MessageBody::PreVote { ballot: b, chosen: Slot::ZERO }, "pre_vote"),
        (MessageBody::PreVoteGranted { ballot: b }, "pre_vote_granted"),
        (MessageBody::Prepare { ballot: b, first_unchosen: Slot(1), transfer_from: None }, "prepare"),
        (MessageBody::Promise { ballot: b, accepted: Vec::new() }, "promise"),
        (MessageBody::Reject { ballot: b, promised: b, reason: rsl_core::RejectReason::Promised }, "reject"),
        (MessageBody::Accept { ballot: b, slot: Slot(1), value: Value::Noop, chosen: Slot::ZERO }, "accept"),
        (MessageBody::Accepted { ballot: b, slot: Slot(1) }, "accepted"),
        (MessageBody::Heartbeat { ballot: b, chosen: Slot::ZERO, sent_at: Time(0) }, "heartbeat"),
        (MessageBody::HeartbeatReply { ballot: b, sent_at: Time(0), chosen: Slot::ZERO }, "heartbeat_reply"),
        (MessageBody::StatusQuery, "status_query"),
        (MessageBody::StatusReply { promised: b, chosen: Slot::ZERO }, "status_reply"),
        (MessageBody::Fetch { from: Slot(1), to: Slot(2) }, "fetch"),
        (MessageBody::FetchReply { chosen_values: Vec::new() }, "fetch_reply"),
        (MessageBody::FetchTruncated { checkpoint: Slot(1) }, "fetch_truncated"),
        (MessageBody::TimeoutNow { ballot: b }, "timeout_now"),
        (MessageBody::PromotionRequest { ballot: b }, "promotion_request"),
    ];
    for (body, name) in kinds {
        assert_eq!(body.kind(), name, "{body:?}");
    }
}
