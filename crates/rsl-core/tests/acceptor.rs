//! One replica driven by hand-crafted messages: the acceptor contract, the checks on
//! peers' messages, phase 1 recovery, the lease guard, restart from durable state and
//! configuration errors.

use proptest::prelude::*;
use rsl_core::{
    Action, Ballot, Config, ConfigError, DurableState, Message, MessageBody, MessageError, NodeId, Proposal,
    ReadError, RejectReason, Replica, RingId, Role, Slot, Time, Value,
};
use rsl_testkit::{batch, config, drain, message, payloads, persists, sends, RING};

/// Past the boot lease guard (election_delay_min_ms = 500 by default).
const AFTER_BOOT: Time = Time(600_000);

fn ballot(round: u64, node: u64) -> Ballot {
    Ballot::new(round, NodeId(node))
}

/// Node `node` of a ring of `count`, booted at time zero, its boot actions drained.
fn lone(node: u64, count: u64) -> Replica {
    lone_with(node, count, |_| {})
}

/// Like [`lone`], with `tweak` applied to the configuration.
fn lone_with(node: u64, count: u64, tweak: impl FnOnce(&mut Config)) -> Replica {
    let mut config = config(node, count);
    tweak(&mut config);
    let mut replica = Replica::new(config, DurableState::default(), Time(0)).unwrap();
    drain(&mut replica);
    replica
}

/// Delivers `message` at `now`, expecting it to be accepted, and returns the actions.
fn deliver(replica: &mut Replica, now: Time, message: Message) -> Vec<Action> {
    replica.handle_message(now, message).expect("a well-formed message");
    drain(replica)
}

/// Completes every persist among `actions` and returns what that released.
fn persist(replica: &mut Replica, now: Time, actions: &[Action]) -> Vec<Action> {
    let ticket = persists(actions).iter().map(|p| p.ticket).max().expect("a persist was requested");
    replica.on_persisted(now, ticket);
    drain(replica)
}

fn prepare(from: u64, to: u64, ballot: Ballot, first_unchosen: u64) -> Message {
    message(
        from,
        to,
        MessageBody::Prepare { ballot, first_unchosen: Slot(first_unchosen), transfer_from: None },
    )
}

fn accept(from: u64, to: u64, ballot: Ballot, slot: u64, value: Value) -> Message {
    message(from, to, MessageBody::Accept { ballot, slot: Slot(slot), value, chosen: Slot::ZERO })
}

fn proposal(ballot: Ballot, slot: u64, value: Value) -> Proposal {
    Proposal { ballot, slot: Slot(slot), value }
}

/// The single message among `actions`, which must be the only send.
fn only_send(actions: &[Action]) -> &Message {
    let sends = sends(actions);
    assert_eq!(sends.len(), 1, "expected exactly one send in {actions:?}");
    sends[0]
}

fn accepted_sends(actions: &[Action]) -> Vec<(Ballot, Slot)> {
    sends(actions)
        .into_iter()
        .filter_map(|m| match m.body {
            MessageBody::Accepted { ballot, slot } => Some((ballot, slot)),
            _ => None,
        })
        .collect()
}

// ----- The acceptor contract -----

#[test]
fn an_accept_below_the_promise_is_rejected_and_changes_nothing() {
    let mut replica = lone(2, 3);
    let promise = deliver(&mut replica, AFTER_BOOT, prepare(3, 2, ballot(5, 3), 1));
    persist(&mut replica, AFTER_BOOT, &promise);
    let status_before = replica.status();
    let refused_before = replica.statistics().accepts_refused;

    let actions = deliver(&mut replica, AFTER_BOOT, accept(1, 2, ballot(3, 1), 1, batch(&["late"])));
    assert!(persists(&actions).is_empty(), "a refused accept writes nothing: {actions:?}");
    let reply = only_send(&actions);
    assert_eq!(reply.to, NodeId(1));
    assert_eq!(
        reply.body,
        MessageBody::Reject { ballot: ballot(3, 1), promised: ballot(5, 3), reason: RejectReason::Promised }
    );
    assert_eq!(replica.status(), status_before);
    assert_eq!(replica.statistics().accepts_refused, refused_before + 1);

    // Nothing was recorded for slot 1: a later promise reports no proposal there.
    let later = AFTER_BOOT.plus_ms(1);
    let actions = deliver(&mut replica, later, prepare(3, 2, ballot(6, 3), 1));
    let released = persist(&mut replica, later, &actions);
    match &only_send(&released).body {
        MessageBody::Promise { ballot: b, accepted, .. } => {
            assert_eq!(*b, ballot(6, 3));
            assert!(accepted.is_empty(), "the refused accept left a trace: {accepted:?}");
        }
        other => panic!("expected a promise, got {other:?}"),
    }
}

#[test]
fn a_duplicate_accept_is_answered_again_without_a_second_write() {
    let mut replica = lone(2, 3);
    let b = ballot(1, 1);
    let first = deliver(&mut replica, AFTER_BOOT, accept(1, 2, b, 1, batch(&["x"])));
    assert_eq!(persists(&first).len(), 1);
    assert!(accepted_sends(&first).is_empty());
    let released = persist(&mut replica, AFTER_BOOT, &first);
    assert_eq!(accepted_sends(&released), vec![(b, Slot(1))]);
    let persists_before = replica.statistics().persists;

    for _ in 0..3 {
        let again = deliver(&mut replica, AFTER_BOOT, accept(1, 2, b, 1, batch(&["x"])));
        assert!(persists(&again).is_empty(), "a duplicate writes nothing: {again:?}");
        assert_eq!(accepted_sends(&again), vec![(b, Slot(1))], "a duplicate is answered again");
    }
    assert_eq!(replica.statistics().persists, persists_before);
    assert_eq!(replica.statistics().accepts_refused, 0);
}

#[test]
fn a_duplicate_accept_before_the_write_is_durable_is_answered_after_it() {
    let mut replica = lone(2, 3);
    let b = ballot(1, 1);
    let first = deliver(&mut replica, AFTER_BOOT, accept(1, 2, b, 1, batch(&["x"])));
    let again = deliver(&mut replica, AFTER_BOOT, accept(1, 2, b, 1, batch(&["x"])));
    assert!(accepted_sends(&again).is_empty(), "not durable yet: {again:?}");
    assert!(persists(&again).is_empty());
    let released = persist(&mut replica, AFTER_BOOT, &first);
    assert_eq!(accepted_sends(&released), vec![(b, Slot(1)), (b, Slot(1))]);
}

#[test]
fn a_second_value_for_one_ballot_and_slot_is_refused() {
    let mut replica = lone(2, 3);
    let b = ballot(1, 1);
    let first = deliver(&mut replica, AFTER_BOOT, accept(1, 2, b, 1, batch(&["first"])));
    persist(&mut replica, AFTER_BOOT, &first);

    let second = deliver(&mut replica, AFTER_BOOT, accept(1, 2, b, 1, batch(&["second"])));
    assert!(persists(&second).is_empty(), "the second value is never written: {second:?}");
    assert!(accepted_sends(&second).is_empty(), "the second value is never acknowledged");
    assert_eq!(replica.statistics().accepts_refused, 1);

    // The acceptor still holds the first value.
    let later = AFTER_BOOT.plus_ms(500);
    let actions = deliver(&mut replica, later, prepare(3, 2, ballot(2, 3), 1));
    let released = persist(&mut replica, later, &actions);
    match &only_send(&released).body {
        MessageBody::Promise { accepted, .. } => {
            assert_eq!(accepted, &vec![proposal(b, 1, batch(&["first"]))]);
        }
        other => panic!("expected a promise, got {other:?}"),
    }
}

#[test]
fn accepted_is_sent_only_after_the_write_that_carried_the_accept_is_durable() {
    let mut replica = lone(2, 3);
    let b = ballot(1, 1);
    let one = deliver(&mut replica, AFTER_BOOT, accept(1, 2, b, 1, batch(&["a"])));
    let two = deliver(&mut replica, AFTER_BOOT, accept(1, 2, b, 2, batch(&["b"])));
    for actions in [&one, &two] {
        assert!(accepted_sends(actions).is_empty(), "accepted before its write: {actions:?}");
    }
    let ticket_one = persists(&one)[0].ticket;
    let ticket_two = persists(&two)[0].ticket;
    assert!(ticket_one < ticket_two);
    assert_eq!(persists(&one)[0].proposals, vec![proposal(b, 1, batch(&["a"]))]);
    assert_eq!(persists(&one)[0].promise, Some(b), "accepting a higher ballot records the promise");

    // An old ticket releases nothing.
    replica.on_persisted(AFTER_BOOT, 0);
    assert!(drain(&mut replica).is_empty());
    // The first write releases exactly the first answer.
    replica.on_persisted(AFTER_BOOT, ticket_one);
    assert_eq!(accepted_sends(&drain(&mut replica)), vec![(b, Slot(1))]);
    replica.on_persisted(AFTER_BOOT, ticket_two);
    assert_eq!(accepted_sends(&drain(&mut replica)), vec![(b, Slot(2))]);
}

#[test]
fn a_prepare_below_the_promise_is_rejected() {
    let mut replica = lone(2, 3);
    let actions = deliver(&mut replica, AFTER_BOOT, prepare(3, 2, ballot(5, 3), 1));
    persist(&mut replica, AFTER_BOOT, &actions);
    for (lower, from) in [(ballot(4, 1), 1), (ballot(5, 1), 1), (ballot(1, 3), 3)] {
        let actions = deliver(&mut replica, AFTER_BOOT, prepare(from, 2, lower, 1));
        assert!(persists(&actions).is_empty());
        assert_eq!(
            only_send(&actions).body,
            MessageBody::Reject { ballot: lower, promised: ballot(5, 3), reason: RejectReason::Promised }
        );
        assert_eq!(replica.status().promised, ballot(5, 3));
    }
}

#[test]
fn a_promise_is_released_only_after_it_is_persisted() {
    let mut replica = lone(2, 3);
    let b1 = ballot(1, 1);
    let first = deliver(&mut replica, AFTER_BOOT, accept(1, 2, b1, 1, batch(&["a"])));
    let second = deliver(&mut replica, AFTER_BOOT, accept(1, 2, b1, 2, batch(&["b"])));
    persist(&mut replica, AFTER_BOOT, &first);
    persist(&mut replica, AFTER_BOOT, &second);

    // Past the window in which the primary of b1 is considered alive.
    let later = AFTER_BOOT.plus_ms(500);
    let b2 = ballot(2, 3);
    let actions = deliver(&mut replica, later, prepare(3, 2, b2, 2));
    let writes = persists(&actions);
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0].promise, Some(b2));
    assert!(sends(&actions).is_empty(), "the promise left before it was durable: {actions:?}");
    assert_eq!(replica.status().promised, b2);

    let released = persist(&mut replica, later, &actions);
    let reply = only_send(&released);
    assert_eq!(reply.to, NodeId(3));
    assert_eq!(
        reply.body,
        MessageBody::Promise { ballot: b2, accepted: vec![proposal(b1, 2, batch(&["b"]))] }
    );
}

#[derive(Clone, Debug)]
enum Event {
    Prepare { round: u64, node: u64 },
    Accept { round: u64, node: u64, slot: u64 },
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (0u64..8, prop_oneof![Just(1u64), Just(3u64)])
            .prop_map(|(round, node)| Event::Prepare { round, node }),
        (0u64..8, prop_oneof![Just(1u64), Just(3u64)], 1u64..5)
            .prop_map(|(round, node, slot)| Event::Accept { round, node, slot }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever prepares and accepts arrive, the promise never goes down, a ballot at or
    /// above the promise is granted and one below it is refused.
    #[test]
    fn the_promise_never_decreases(events in proptest::collection::vec(event(), 1..40)) {
        let mut replica = lone(2, 3);
        let mut now = AFTER_BOOT;
        let mut model = Ballot::ZERO;
        for event in events {
            // Each event a full election delay after the previous: no lease guard applies.
            now = now.plus_ms(500);
            let before = replica.status().promised;
            prop_assert_eq!(before, model);
            let (b, message) = match event {
                Event::Prepare { round, node } => (ballot(round, node), prepare(node, 2, ballot(round, node), 1)),
                Event::Accept { round, node, slot } => {
                    let value = batch(&[&format!("{round}.{node}.{slot}")]);
                    (ballot(round, node), accept(node, 2, ballot(round, node), slot, value))
                }
            };
            let mut actions = deliver(&mut replica, now, message.clone());
            if !persists(&actions).is_empty() {
                actions.extend(persist(&mut replica, now, &actions));
            }
            let after = replica.status().promised;
            prop_assert!(after >= before, "promise went down: {} -> {}", before, after);
            let reply = only_send(&actions);
            if b >= before {
                model = b;
                let granted = matches!(
                    (&message.body, &reply.body),
                    (MessageBody::Prepare { .. }, MessageBody::Promise { .. })
                        | (MessageBody::Accept { .. }, MessageBody::Accepted { .. })
                );
                prop_assert!(granted, "{:?} at promise {} got {:?}", message.body, before, reply.body);
            } else {
                let refused = matches!(
                    reply.body,
                    MessageBody::Reject { reason: RejectReason::Promised, promised, .. } if promised == before
                );
                prop_assert!(refused, "{:?} at promise {} got {:?}", message.body, before, reply.body);
            }
            prop_assert_eq!(after, model);
        }
    }

    /// Ballots order by round, then node; the successor for any node is strictly greater
    /// and owned by that node.
    #[test]
    fn ballots_order_by_round_then_node(
        a in (0u64..u64::MAX, any::<u64>()),
        b in (0u64..u64::MAX, any::<u64>()),
        successor_node in any::<u64>(),
    ) {
        let x = ballot(a.0, a.1);
        let y = ballot(b.0, b.1);
        prop_assert_eq!(x.cmp(&y), a.cmp(&b));
        let next = x.successor_for(NodeId(successor_node));
        prop_assert!(next > x);
        prop_assert_eq!(next.node, NodeId(successor_node));
        prop_assert!(next > ballot(a.0, u64::MAX), "the successor beats every ballot of x's round");
        prop_assert!(Ballot::ZERO <= x);
    }
}

// ----- Peers' bad messages -----

#[test]
fn malformed_and_foreign_messages_are_rejected_counted_and_change_nothing() {
    let value = batch(&["v"]);
    let owned = ballot(1, 1);
    let foreign = Message { ring: RingId(RING.0 + 1), ..accept(1, 2, owned, 1, value.clone()) };
    let other_configuration = Message { configuration: 2, ..accept(1, 2, owned, 1, value.clone()) };
    let malformed = |kind: &'static str, from: u64| move |error: &MessageError| matches!(error, MessageError::Malformed { kind: k, from: f, .. } if *k == kind && *f == NodeId(from));
    type Check = Box<dyn Fn(&MessageError) -> bool>;
    let cases: Vec<(&str, Message, Check)> = vec![
        (
            "wrong ring",
            foreign,
            Box::new(|e| *e == MessageError::WrongRing { expected: RING.0, found: RING.0 + 1 }),
        ),
        (
            "wrong receiver",
            accept(1, 3, owned, 1, value.clone()),
            Box::new(|e| *e == MessageError::WrongReceiver { expected: NodeId(2), found: NodeId(3) }),
        ),
        (
            "non-member sender",
            accept(9, 2, ballot(1, 9), 1, value.clone()),
            Box::new(|e| *e == MessageError::NotAMember { from: NodeId(9), configuration: 1 }),
        ),
        (
            "sender is the receiver itself",
            accept(2, 2, ballot(1, 2), 1, value.clone()),
            Box::new(|e| *e == MessageError::NotAMember { from: NodeId(2), configuration: 1 }),
        ),
        (
            "wrong configuration",
            other_configuration,
            Box::new(|e| *e == MessageError::WrongConfiguration { expected: 1, found: 2 }),
        ),
        (
            "accept ballot not owned",
            accept(1, 2, ballot(1, 3), 1, value.clone()),
            Box::new(malformed("accept", 1)),
        ),
        ("prepare ballot not owned", prepare(1, 2, ballot(4, 3), 1), Box::new(malformed("prepare", 1))),
        (
            "pre-vote ballot not owned",
            message(3, 2, MessageBody::PreVote { ballot: ballot(4, 1), chosen: Slot::ZERO }),
            Box::new(malformed("pre_vote", 3)),
        ),
        (
            "heartbeat ballot not owned",
            message(
                1,
                2,
                MessageBody::Heartbeat { ballot: ballot(4, 3), chosen: Slot::ZERO, sent_at: Time(0) },
            ),
            Box::new(malformed("heartbeat", 1)),
        ),
        (
            "timeout-now ballot not owned",
            message(1, 2, MessageBody::TimeoutNow { ballot: ballot(4, 3) }),
            Box::new(malformed("timeout_now", 1)),
        ),
        ("accept for slot 0", accept(1, 2, owned, 0, value.clone()), Box::new(malformed("accept", 1))),
        (
            "accepted for slot 0",
            message(1, 2, MessageBody::Accepted { ballot: ballot(1, 2), slot: Slot::ZERO }),
            Box::new(malformed("accepted", 1)),
        ),
        ("prepare from slot 0", prepare(3, 2, ballot(4, 3), 0), Box::new(malformed("prepare", 3))),
        (
            "promise proposals out of order",
            message(
                3,
                2,
                MessageBody::Promise {
                    ballot: ballot(1, 2),
                    accepted: vec![proposal(owned, 2, value.clone()), proposal(owned, 1, value.clone())],
                },
            ),
            Box::new(malformed("promise", 3)),
        ),
        (
            "promise proposals repeat a slot",
            message(
                3,
                2,
                MessageBody::Promise {
                    ballot: ballot(1, 2),
                    accepted: vec![proposal(owned, 1, value.clone()), proposal(owned, 1, value.clone())],
                },
            ),
            Box::new(malformed("promise", 3)),
        ),
        (
            "promise proposal for slot 0",
            message(
                3,
                2,
                MessageBody::Promise {
                    ballot: ballot(1, 2),
                    accepted: vec![proposal(owned, 0, value.clone())],
                },
            ),
            Box::new(malformed("promise", 3)),
        ),
        (
            "fetch reply not contiguous",
            message(
                1,
                2,
                MessageBody::FetchReply {
                    chosen_values: vec![proposal(owned, 1, value.clone()), proposal(owned, 3, value.clone())],
                },
            ),
            Box::new(malformed("fetch_reply", 1)),
        ),
        (
            "fetch of an empty range",
            message(3, 2, MessageBody::Fetch { from: Slot(5), to: Slot(4) }),
            Box::new(malformed("fetch", 3)),
        ),
        (
            "fetch from slot 0",
            message(3, 2, MessageBody::Fetch { from: Slot(0), to: Slot(4) }),
            Box::new(malformed("fetch", 3)),
        ),
    ];
    for (name, bad, check) in cases {
        let mut replica = lone(2, 3);
        let status = replica.status();
        let statistics = replica.statistics().clone();
        let error = replica.handle_message(AFTER_BOOT, bad).expect_err(name);
        assert!(check(&error), "{name}: unexpected error {error:?}");
        assert!(!error.to_string().is_empty());
        assert_eq!(replica.statistics().messages_rejected, statistics.messages_rejected + 1, "{name}");
        assert_eq!(replica.statistics().messages_received, statistics.messages_received + 1, "{name}");
        assert_eq!(replica.status(), status, "{name}: state changed");
        if name == "wrong configuration" {
            // A sender in a newer configuration is asked for it (catch-up); nothing else.
            match replica.poll_action() {
                Some(Action::Send(m)) => assert_eq!((m.to, m.body), (NodeId(1), MessageBody::StatusQuery)),
                other => panic!("{name}: expected a status query, got {other:?}"),
            }
        }
        assert_eq!(replica.poll_action(), None, "{name}: a rejected message caused an action");
    }
}

// ----- Phase 1 recovery -----

/// Lets a lone replica's timers fire until it is a candidate; returns the pre-vote ballot.
fn campaign(replica: &mut Replica) -> (Time, Ballot) {
    campaign_after(replica, Time(0))
}

/// Like [`campaign`], for a replica whose clock already reached `floor`.
fn campaign_after(replica: &mut Replica, floor: Time) -> (Time, Ballot) {
    for _ in 0..100 {
        let now = replica.poll_timeout().expect("a timer is armed").max(floor);
        replica.handle_timeout(now);
        for action in drain(replica) {
            if let Action::Send(Message { body: MessageBody::PreVote { ballot, .. }, .. }) = action {
                assert_eq!(replica.role(), Role::Candidate);
                return (now, ballot);
            }
        }
    }
    panic!("the replica never campaigned");
}

#[test]
fn a_new_primary_re_proposes_the_highest_ballot_value_of_each_slot_and_fills_holes() {
    // Node 1 of five restarts having promised 3.1, so it campaigns at 4.1.
    let durable = DurableState { promise: ballot(3, 1), ..DurableState::default() };
    let mut replica = Replica::new(config(1, 5), durable, Time(0)).unwrap();
    drain(&mut replica);
    let (now, b) = campaign(&mut replica);
    assert_eq!(b, ballot(4, 1));

    // Two pre-votes and its own make three of five: phase 1 starts.
    deliver(&mut replica, now, message(2, 1, MessageBody::PreVoteGranted { ballot: b }));
    let actions = deliver(&mut replica, now, message(3, 1, MessageBody::PreVoteGranted { ballot: b }));
    assert_eq!(persists(&actions)[0].promise, Some(b));
    let prepares: Vec<_> = sends(&actions)
        .into_iter()
        .filter(|m| matches!(m.body, MessageBody::Prepare { ballot, first_unchosen: Slot(1), transfer_from: None } if ballot == b))
        .map(|m| m.to)
        .collect();
    assert_eq!(prepares, vec![NodeId(2), NodeId(3), NodeId(4), NodeId(5)]);
    persist(&mut replica, now, &actions);
    assert_eq!(replica.role(), Role::Candidate, "its own promise alone is no quorum");

    let promise =
        |from: u64, accepted: Vec<Proposal>| message(from, 1, MessageBody::Promise { ballot: b, accepted });
    let actions = deliver(
        &mut replica,
        now,
        promise(
            2,
            vec![proposal(ballot(1, 2), 1, batch(&["a"])), proposal(ballot(1, 2), 3, batch(&["c-old"]))],
        ),
    );
    assert!(sends(&actions).is_empty());
    assert_eq!(replica.role(), Role::Candidate);
    let actions = deliver(
        &mut replica,
        now,
        promise(
            3,
            vec![proposal(ballot(2, 3), 3, batch(&["c-new"])), proposal(ballot(2, 3), 5, batch(&["e"]))],
        ),
    );
    assert_eq!(replica.role(), Role::Primary);
    assert!(actions.contains(&Action::RoleChanged {
        role: Role::Primary,
        ballot: b,
        primary: Some(NodeId(1))
    }));

    let expected = vec![
        proposal(b, 1, batch(&["a"])),
        proposal(b, 2, Value::Noop),
        proposal(b, 3, batch(&["c-new"])),
        proposal(b, 4, Value::Noop),
        proposal(b, 5, batch(&["e"])),
    ];
    let written: Vec<Proposal> = persists(&actions).iter().flat_map(|p| p.proposals.clone()).collect();
    assert_eq!(written, expected);
    for peer in 2..=5 {
        let accepts: Vec<Proposal> = sends(&actions)
            .into_iter()
            .filter(|m| m.to == NodeId(peer))
            .filter_map(|m| match &m.body {
                MessageBody::Accept { ballot, slot, value, .. } => {
                    Some(Proposal { ballot: *ballot, slot: *slot, value: value.clone() })
                }
                _ => None,
            })
            .collect();
        assert_eq!(accepts, expected, "accepts to node {peer}");
    }
    assert_eq!(replica.in_flight_slots(), 5);
    assert_eq!(replica.handle_read(now), Err(ReadError::Recovering { recovering_to: Slot(5) }));

    // New requests go after the inherited slots; once a quorum accepts, all apply in order.
    replica.handle_propose(now, rsl_testkit::request(9, "f")).unwrap();
    let actions = drain(&mut replica);
    assert!(sends(&actions).iter().all(|m| matches!(m.body, MessageBody::Accept { slot: Slot(6), .. })));
    persist(&mut replica, now, &actions);
    let mut applied = Vec::new();
    for slot in 1..=6 {
        for from in [2, 3] {
            let accepted = message(from, 1, MessageBody::Accepted { ballot: b, slot: Slot(slot) });
            for action in deliver(&mut replica, now, accepted) {
                if let Action::Apply { slot, value } = action {
                    applied.push((slot.0, value));
                    replica.on_applied(slot);
                }
            }
        }
    }
    let applied_slots: Vec<u64> = applied.iter().map(|(s, _)| *s).collect();
    assert_eq!(applied_slots, vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(applied[1].1, Value::Noop);
    assert_eq!(payloads(&applied[2].1), vec!["c-new"]);
    assert_eq!(payloads(&applied[5].1), vec!["f"]);
}

#[test]
fn a_promise_for_another_ballot_does_not_count() {
    let mut replica = Replica::new(config(1, 3), DurableState::default(), Time(0)).unwrap();
    drain(&mut replica);
    let (now, b) = campaign(&mut replica);
    let actions = deliver(&mut replica, now, message(2, 1, MessageBody::PreVoteGranted { ballot: b }));
    persist(&mut replica, now, &actions);
    // A promise for another ballot does not count.
    let stale = MessageBody::Promise { ballot: Ballot::new(b.round - 1, NodeId(1)), accepted: vec![] };
    deliver(&mut replica, now, message(2, 1, stale));
    assert_eq!(replica.role(), Role::Candidate);
    // The matching one does.
    deliver(&mut replica, now, message(2, 1, MessageBody::Promise { ballot: b, accepted: vec![] }));
    assert_eq!(replica.role(), Role::Primary);
    assert_eq!(replica.status().promised, b);
}

// ----- Pre-vote and the lease guard -----

#[test]
fn a_freshly_booted_replica_refuses_to_elect_anyone_for_one_election_delay() {
    let mut replica = lone(2, 3);
    let early = Time(499_999);
    for body in [
        MessageBody::PreVote { ballot: ballot(1, 3), chosen: Slot::ZERO },
        MessageBody::Prepare { ballot: ballot(1, 3), first_unchosen: Slot(1), transfer_from: None },
    ] {
        let actions = deliver(&mut replica, early, message(3, 2, body));
        assert!(persists(&actions).is_empty());
        assert_eq!(
            only_send(&actions).body,
            MessageBody::Reject {
                ballot: ballot(1, 3),
                promised: Ballot::ZERO,
                reason: RejectReason::PrimaryAlive
            }
        );
    }
    let actions = deliver(
        &mut replica,
        Time(500_000),
        message(3, 2, MessageBody::PreVote { ballot: ballot(1, 3), chosen: Slot::ZERO }),
    );
    assert_eq!(only_send(&actions).body, MessageBody::PreVoteGranted { ballot: ballot(1, 3) });
}

#[test]
fn a_secondary_that_heard_the_primary_refuses_pre_votes_and_prepares_until_the_window_passes() {
    let mut replica = lone(2, 3);
    let heard = AFTER_BOOT;
    let heartbeat = MessageBody::Heartbeat { ballot: ballot(1, 1), chosen: Slot::ZERO, sent_at: heard };
    let actions = deliver(&mut replica, heard, message(1, 2, heartbeat));
    assert!(
        matches!(only_send(&actions).body, MessageBody::HeartbeatReply { sent_at, .. } if sent_at == heard)
    );
    assert_eq!(replica.primary_hint(), Some(NodeId(1)));

    let candidate = ballot(2, 3);
    let pre_vote = || message(3, 2, MessageBody::PreVote { ballot: candidate, chosen: Slot::ZERO });
    let prepare = || prepare(3, 2, candidate, 1);
    let alive =
        MessageBody::Reject { ballot: candidate, promised: Ballot::ZERO, reason: RejectReason::PrimaryAlive };

    let inside = heard.plus_us(499_999);
    assert_eq!(only_send(&deliver(&mut replica, inside, pre_vote())).body, alive);
    let actions = deliver(&mut replica, inside, prepare());
    assert_eq!(only_send(&actions).body, alive);
    assert!(persists(&actions).is_empty(), "a refused prepare writes nothing");
    assert_eq!(replica.status().promised, Ballot::ZERO);

    let outside = heard.plus_ms(500);
    assert_eq!(
        only_send(&deliver(&mut replica, outside, pre_vote())).body,
        MessageBody::PreVoteGranted { ballot: candidate }
    );
    assert_eq!(replica.status().promised, Ballot::ZERO, "a pre-vote changes nothing");
    let actions = deliver(&mut replica, outside, prepare());
    let released = persist(&mut replica, outside, &actions);
    assert!(matches!(only_send(&released).body, MessageBody::Promise { ballot, .. } if ballot == candidate));
    assert_eq!(replica.status().promised, candidate);
}

#[test]
fn a_pre_vote_at_or_below_the_promise_is_refused_as_promised() {
    let mut replica = lone(2, 3);
    let actions = deliver(&mut replica, AFTER_BOOT, prepare(3, 2, ballot(4, 3), 1));
    persist(&mut replica, AFTER_BOOT, &actions);
    let later = AFTER_BOOT.plus_ms(500);
    let actions = deliver(
        &mut replica,
        later,
        message(1, 2, MessageBody::PreVote { ballot: ballot(4, 1), chosen: Slot::ZERO }),
    );
    assert_eq!(
        only_send(&actions).body,
        MessageBody::Reject { ballot: ballot(4, 1), promised: ballot(4, 3), reason: RejectReason::Promised }
    );
}

// ----- Restart from durable state -----

fn recovered() -> DurableState {
    let b = ballot(7, 1);
    DurableState {
        promise: b,
        proposals: (1..=5).rev().map(|slot| proposal(b, slot, batch(&[&format!("s{slot}")]))).collect(),
        chosen: Slot(4),
        checkpoint: Slot(2),
        configuration: None,
    }
}

#[test]
fn a_restarted_replica_re_applies_chosen_slots_above_its_checkpoint() {
    let mut replica = Replica::new(config(2, 3), recovered(), Time(0)).unwrap();
    let actions = drain(&mut replica);
    let applies: Vec<(Slot, Vec<String>)> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Apply { slot, value } => Some((*slot, payloads(value))),
            _ => None,
        })
        .collect();
    assert_eq!(applies, vec![(Slot(3), vec!["s3".to_string()]), (Slot(4), vec!["s4".to_string()])]);
    assert!(persists(&actions).is_empty(), "recovery writes nothing");
    let status = replica.status();
    assert_eq!((status.chosen, status.applied, status.checkpoint), (Slot(4), Slot(2), Slot(2)));
    assert_eq!(status.promised, ballot(7, 1));
    assert_eq!(status.role, Role::Secondary);
    replica.on_applied(Slot(4));
    assert_eq!(replica.applied(), Slot(4));
}

#[test]
fn a_restarted_replica_keeps_its_promise() {
    let mut replica = Replica::new(config(2, 3), recovered(), Time(0)).unwrap();
    drain(&mut replica);
    // Below the durable promise: refused, even long after boot.
    let actions = deliver(&mut replica, AFTER_BOOT, prepare(3, 2, ballot(6, 3), 5));
    assert_eq!(
        only_send(&actions).body,
        MessageBody::Reject { ballot: ballot(6, 3), promised: ballot(7, 1), reason: RejectReason::Promised }
    );
    let actions = deliver(&mut replica, AFTER_BOOT, accept(3, 2, ballot(6, 3), 5, batch(&["other"])));
    assert!(matches!(only_send(&actions).body, MessageBody::Reject { reason: RejectReason::Promised, .. }));
    // Above it: promised, reporting the unchosen slot it holds.
    let actions = deliver(&mut replica, AFTER_BOOT, prepare(3, 2, ballot(8, 3), 5));
    let released = persist(&mut replica, AFTER_BOOT, &actions);
    assert_eq!(
        only_send(&released).body,
        MessageBody::Promise {
            ballot: ballot(8, 3),
            accepted: vec![proposal(ballot(7, 1), 5, batch(&["s5"]))]
        }
    );
}

#[test]
fn an_accept_for_a_slot_only_the_checkpoint_holds_records_nothing() {
    // Crashed after publishing a fetched checkpoint at 10, before truncating its log:
    // entries 1..=3, then a hole up to the checkpoint.
    let b = ballot(7, 1);
    let durable = DurableState {
        promise: b,
        proposals: (1..=3).map(|slot| proposal(b, slot, batch(&[&format!("s{slot}")]))).collect(),
        chosen: Slot(3),
        checkpoint: Slot(10),
        configuration: None,
    };
    let mut replica = Replica::new(config(2, 3), durable, Time(0)).unwrap();
    drain(&mut replica);
    assert_eq!(replica.status().chosen, Slot(10));
    // A long-delayed accept of the old primary for a slot in the hole.
    let actions = deliver(&mut replica, AFTER_BOOT, accept(1, 2, b, 6, batch(&["s6"])));
    assert!(persists(&actions).is_empty(), "nothing written: {actions:?}");
    assert!(accepted_sends(&actions).is_empty(), "nothing answered: {actions:?}");
    assert_eq!(replica.status().chosen, Slot(10));
    // Above the checkpoint it is accepted as usual.
    let actions = deliver(&mut replica, AFTER_BOOT, accept(1, 2, b, 11, batch(&["s11"])));
    let released = persist(&mut replica, AFTER_BOOT, &actions);
    assert_eq!(accepted_sends(&released), vec![(b, Slot(11))]);
}

#[test]
fn a_durable_accept_above_the_durable_promise_raises_the_promise() {
    let durable = DurableState {
        promise: ballot(2, 1),
        proposals: vec![proposal(ballot(5, 3), 1, batch(&["a"]))],
        ..DurableState::default()
    };
    let mut replica = Replica::new(config(2, 3), durable, Time(0)).unwrap();
    drain(&mut replica);
    assert_eq!(replica.status().promised, ballot(5, 3));
    let actions = deliver(&mut replica, AFTER_BOOT, prepare(1, 2, ballot(4, 1), 1));
    assert!(matches!(only_send(&actions).body, MessageBody::Reject { reason: RejectReason::Promised, .. }));
}

#[test]
fn inconsistent_durable_state_is_refused() {
    let b = ballot(1, 1);
    let cases = [
        (
            "two proposals for one slot",
            DurableState {
                proposals: vec![proposal(b, 3, batch(&["x"])), proposal(b, 3, batch(&["y"]))],
                ..DurableState::default()
            },
        ),
        (
            "a proposal for slot 0",
            DurableState { proposals: vec![proposal(b, 0, Value::Noop)], ..DurableState::default() },
        ),
    ];
    for (name, durable) in cases {
        match Replica::new(config(2, 3), durable, Time(0)) {
            Err(ConfigError::Durable { reason }) => assert!(!reason.is_empty(), "{name}"),
            other => panic!("{name}: expected ConfigError::Durable, got {other:?}"),
        }
    }
}

// ----- Configuration errors -----

#[test]
fn invalid_configurations_are_refused_by_new() {
    type Breaker = fn(&mut Config);
    let cases: [(&str, Breaker); 8] = [
        ("members", |c| c.members = vec![]),
        ("members", |c| c.members = vec![NodeId(1), NodeId(2), NodeId(2)]),
        ("node", |c| c.node = NodeId(4)),
        ("election_delay_min_ms", |c| c.election_delay_min_ms = c.heartbeat_interval_ms),
        ("pipeline_depth", |c| c.pipeline_depth = rsl_core::PIPELINE_DEPTH_MAX + 1),
        ("batch_requests_max", |c| c.batch_requests_max = rsl_core::BATCH_REQUESTS_MAX + 1),
        ("batch_bytes_max", |c| c.batch_bytes_max = rsl_core::BATCH_BYTES_MAX + 1),
        ("promise_slots_max", |c| c.promise_slots_max = 2 * c.pipeline_depth - 1),
    ];
    for (field, break_it) in cases {
        let mut config = config(2, 3);
        break_it(&mut config);
        match Replica::new(config, DurableState::default(), Time(0)) {
            Err(ConfigError::Invalid { field: found, reason }) => {
                assert_eq!(found, field);
                assert!(!reason.is_empty());
            }
            other => panic!("{field}: expected ConfigError::Invalid, got {other:?}"),
        }
    }
    // And the defaults are fine.
    Replica::new(config(2, 3), DurableState::default(), Time(0)).unwrap();
}

// ----- Learning chosen slots -----

// A peer's status reply says a slot is chosen, not with which value: it must not let a
// replica conclude that the proposal it holds from an older ballot is the chosen one.
#[test]
fn a_status_reply_watermark_does_not_choose_a_value_accepted_at_an_older_ballot() {
    // Node 2 accepted "stale" for slot 1 from the primary of 1.1, which failed before a
    // quorum accepted it. Meanwhile 1.3 chose "fresh" for slot 1 with nodes 1 and 3.
    let mut replica = lone(2, 3);
    let actions = deliver(&mut replica, AFTER_BOOT, accept(1, 2, ballot(1, 1), 1, batch(&["stale"])));
    persist(&mut replica, AFTER_BOOT, &actions);

    // Node 2 hears nothing more, campaigns at 2.2 and enters phase 1.
    let (now, b) = campaign_after(&mut replica, AFTER_BOOT);
    assert_eq!(b, ballot(2, 2));
    let prepare = deliver(&mut replica, now, message(3, 2, MessageBody::PreVoteGranted { ballot: b }));
    assert_eq!(persists(&prepare)[0].promise, Some(b));

    // A status reply from node 3 says slot 1 is chosen: it does not say with which value.
    let status_reply = MessageBody::StatusReply { promised: ballot(1, 3), chosen: Slot(1) };
    let actions = deliver(&mut replica, now, message(3, 2, status_reply));
    assert!(
        sends(&actions).iter().any(|m| matches!(m.body, MessageBody::Fetch { from: Slot(1), .. })),
        "the replica asks for the chosen value: {actions:?}"
    );

    // Its own promise becomes durable. It must not conclude that "stale" was chosen.
    let released = persist(&mut replica, now, &prepare);
    let applied: Vec<_> = released.iter().filter(|a| matches!(a, Action::Apply { .. })).collect();
    assert!(applied.is_empty(), "applied a value nobody chose: {applied:?}");
    assert_eq!(replica.chosen(), Slot::ZERO);

    // The fetched chosen value is the one it applies.
    let reply = MessageBody::FetchReply { chosen_values: vec![proposal(ballot(1, 3), 1, batch(&["fresh"]))] };
    let actions = deliver(&mut replica, now, message(3, 2, reply));
    let actions = persist(&mut replica, now, &actions);
    let applied: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Apply { slot, value } => Some((*slot, payloads(value))),
            _ => None,
        })
        .collect();
    assert_eq!(applied, vec![(Slot(1), vec!["fresh".to_string()])]);
}

// ----- Phase 1 refusals and stale answers -----

/// Node 2 of three restarted from a checkpoint at slot 10 and nothing above it: its log
/// starts at slot 11.
fn restarted_at_checkpoint_ten() -> Replica {
    let durable = DurableState { checkpoint: Slot(10), chosen: Slot(10), ..DurableState::default() };
    let mut replica = Replica::new(config(2, 3), durable, Time(0)).unwrap();
    drain(&mut replica);
    replica
}

#[test]
fn a_prepare_from_below_the_log_start_is_rejected_as_behind() {
    let mut replica = restarted_at_checkpoint_ten();
    let actions = deliver(&mut replica, AFTER_BOOT, prepare(3, 2, ballot(1, 3), 5));
    assert!(persists(&actions).is_empty(), "a refused prepare promises nothing");
    assert_eq!(
        only_send(&actions).body,
        MessageBody::Reject {
            ballot: ballot(1, 3),
            promised: Ballot::ZERO,
            reason: RejectReason::Behind { chosen: Slot(10) }
        }
    );
    assert_eq!(replica.status().promised, Ballot::ZERO);
    // From the log start on, it promises.
    let actions = deliver(&mut replica, AFTER_BOOT, prepare(3, 2, ballot(1, 3), 11));
    assert_eq!(persists(&actions)[0].promise, Some(ballot(1, 3)));
}

#[test]
fn a_prepare_whose_promise_would_carry_too_many_slots_is_rejected_as_behind() {
    let mut replica = lone_with(2, 3, |c| {
        c.pipeline_depth = 1;
        c.promise_slots_max = 2;
    });
    for slot in 1..=3 {
        let actions = deliver(&mut replica, AFTER_BOOT, accept(1, 2, ballot(1, 1), slot, batch(&["v"])));
        persist(&mut replica, AFTER_BOOT, &actions);
    }
    // Once the primary that sent them has been silent for an election delay:
    let later = AFTER_BOOT.plus_ms(500);
    let actions = deliver(&mut replica, later, prepare(3, 2, ballot(2, 3), 1));
    assert_eq!(
        only_send(&actions).body,
        MessageBody::Reject {
            ballot: ballot(2, 3),
            promised: ballot(1, 1),
            reason: RejectReason::Behind { chosen: Slot::ZERO }
        }
    );
    // A candidate that already has slot 1 gets the two others in its promise.
    let actions = deliver(&mut replica, later, prepare(3, 2, ballot(2, 3), 2));
    let released = persist(&mut replica, later, &actions);
    assert!(
        matches!(&only_send(&released).body, MessageBody::Promise { accepted, .. } if accepted.len() == 2),
        "{released:?}"
    );
}

#[test]
fn a_prepare_handing_over_from_the_followed_primary_passes_the_lease_guard() {
    let mut replica = lone(2, 3);
    let primary = ballot(1, 1);
    let heartbeat = MessageBody::Heartbeat { ballot: primary, chosen: Slot::ZERO, sent_at: AFTER_BOOT };
    deliver(&mut replica, AFTER_BOOT, message(1, 2, heartbeat));
    let candidate = ballot(2, 3);
    let handover = |transfer_from| {
        message(3, 2, MessageBody::Prepare { ballot: candidate, first_unchosen: Slot(1), transfer_from })
    };
    // Naming a primary it does not follow is no handover: the primary it heard is alive.
    let actions = deliver(&mut replica, AFTER_BOOT, handover(Some(ballot(1, 3))));
    assert!(matches!(
        only_send(&actions).body,
        MessageBody::Reject { reason: RejectReason::PrimaryAlive, .. }
    ));
    let actions = deliver(&mut replica, AFTER_BOOT, handover(Some(primary)));
    let released = persist(&mut replica, AFTER_BOOT, &actions);
    assert!(matches!(only_send(&released).body, MessageBody::Promise { ballot, .. } if ballot == candidate));
    assert_eq!(replica.status().promised, candidate);
}

/// A lone node 1 of three that campaigned and started phase 1 with node 2's pre-vote;
/// returns the time and its ballot.
fn in_phase_one(replica: &mut Replica) -> (Time, Ballot) {
    let (now, b) = campaign(replica);
    let actions = deliver(replica, now, message(2, 1, MessageBody::PreVoteGranted { ballot: b }));
    persist(replica, now, &actions);
    assert_eq!(replica.role(), Role::Candidate);
    (now, b)
}

#[test]
fn a_promise_carrying_slots_below_the_candidates_first_unchosen_is_ignored() {
    let mut replica = Replica::new(config(1, 3), recovered(), Time(0)).unwrap();
    drain(&mut replica);
    let (now, b) = in_phase_one(&mut replica);
    // The candidate asked from slot 5 (it knows 4 chosen); slot 3 is below that.
    let early = vec![proposal(ballot(7, 1), 3, batch(&["s3"])), proposal(ballot(7, 1), 5, batch(&["s5"]))];
    deliver(&mut replica, now, message(2, 1, MessageBody::Promise { ballot: b, accepted: early }));
    assert_eq!(replica.role(), Role::Candidate, "the malformed promise did not count");
    let actions =
        deliver(&mut replica, now, message(3, 1, MessageBody::Promise { ballot: b, accepted: vec![] }));
    assert_eq!(replica.role(), Role::Primary);
    let written: Vec<Slot> =
        persists(&actions).iter().flat_map(|p| p.proposals.iter().map(|p| p.slot)).collect();
    assert_eq!(written, vec![Slot(5)], "only its own unchosen slot 5 is re-proposed");
}

/// An acceptor's refusal of `ballot`: it has chosen up to slot 8, beyond the candidate.
fn behind_at_eight(ballot: Ballot) -> MessageBody {
    MessageBody::Reject { ballot, promised: Ballot::ZERO, reason: RejectReason::Behind { chosen: Slot(8) } }
}

#[test]
fn a_candidate_told_it_is_behind_steps_down_and_fetches_from_the_acceptor() {
    let mut replica = lone(1, 3);
    let (now, b) = in_phase_one(&mut replica);
    let actions = deliver(&mut replica, now, message(3, 1, behind_at_eight(b)));
    assert_eq!(replica.role(), Role::Secondary);
    let fetches: Vec<(NodeId, Slot)> = sends(&actions)
        .into_iter()
        .filter_map(|m| match m.body {
            MessageBody::Fetch { from, .. } => Some((m.to, from)),
            _ => None,
        })
        .collect();
    assert_eq!(
        fetches.first(),
        Some(&(NodeId(3), Slot(1))),
        "it fetches what it lacks from the acceptor: {actions:?}"
    );
    assert!(actions.iter().any(|a| matches!(a, Action::RoleChanged { role: Role::Secondary, .. })));
}

#[test]
fn a_behind_reject_for_another_ballot_changes_nothing() {
    let mut replica = lone(1, 3);
    let (now, b) = in_phase_one(&mut replica);
    let other = Ballot::new(b.round + 1, NodeId(1));
    let actions = deliver(&mut replica, now, message(3, 1, behind_at_eight(other)));
    assert_eq!(replica.role(), Role::Candidate);
    assert!(sends(&actions).is_empty(), "{actions:?}");
}

#[test]
fn an_accept_of_another_value_for_a_slot_chosen_here_is_refused_and_the_same_value_is_answered() {
    let mut replica = lone(2, 3);
    let first = deliver(&mut replica, AFTER_BOOT, accept(1, 2, ballot(1, 1), 1, batch(&["a"])));
    persist(&mut replica, AFTER_BOOT, &first);
    let heartbeat = MessageBody::Heartbeat { ballot: ballot(1, 1), chosen: Slot(1), sent_at: AFTER_BOOT };
    deliver(&mut replica, AFTER_BOOT, message(1, 2, heartbeat));
    assert_eq!(replica.chosen(), Slot(1));
    // A later primary re-proposing slot 1 can only carry the chosen value.
    let later = AFTER_BOOT.plus_ms(600);
    let actions = deliver(&mut replica, later, accept(3, 2, ballot(2, 3), 1, batch(&["b"])));
    assert!(accepted_sends(&actions).is_empty() && persists(&actions).is_empty(), "{actions:?}");
    assert_eq!(replica.statistics().accepts_refused, 1);
    let actions = deliver(&mut replica, later, accept(3, 2, ballot(2, 3), 1, batch(&["a"])));
    assert_eq!(accepted_sends(&actions), vec![(ballot(2, 3), Slot(1))]);
    assert!(persists(&actions).is_empty(), "the chosen value is not written again");
    assert_eq!(replica.statistics().accepts_refused, 1);
}

#[test]
fn a_write_completing_during_pre_vote_does_not_start_phase_one() {
    let mut replica = lone(1, 3);
    let write = deliver(&mut replica, AFTER_BOOT, accept(2, 1, ballot(1, 2), 1, batch(&["x"])));
    let (now, b) = campaign_after(&mut replica, AFTER_BOOT);
    assert_eq!(replica.role(), Role::Candidate);
    let released = persist(&mut replica, now, &write);
    assert_eq!(accepted_sends(&released), vec![(ballot(1, 2), Slot(1))], "the accept is answered");
    assert!(
        !sends(&released).iter().any(|m| matches!(m.body, MessageBody::Prepare { .. })),
        "no prepare before a quorum granted the pre-vote: {released:?}"
    );
    assert_eq!(replica.role(), Role::Candidate);
    assert!(replica.status().promised < b, "nothing promised at the pre-vote ballot");
}

#[test]
fn a_heartbeat_from_a_deposed_primary_is_rejected_and_teaches_nothing() {
    let mut replica = lone(2, 3);
    let promise = deliver(&mut replica, AFTER_BOOT, prepare(3, 2, ballot(5, 3), 1));
    persist(&mut replica, AFTER_BOOT, &promise);
    let stale = MessageBody::Heartbeat { ballot: ballot(2, 1), chosen: Slot(7), sent_at: AFTER_BOOT };
    let actions = deliver(&mut replica, AFTER_BOOT, message(1, 2, stale));
    assert_eq!(
        only_send(&actions).body,
        MessageBody::Reject { ballot: ballot(2, 1), promised: ballot(5, 3), reason: RejectReason::Promised }
    );
    assert_ne!(replica.primary_hint(), Some(NodeId(1)), "it does not follow the deposed primary");
    assert_eq!(replica.chosen(), Slot::ZERO);
    assert_eq!(replica.status().promised, ballot(5, 3));
}
