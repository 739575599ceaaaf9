//! Catch-up through the public `Replica` API: status queries answered with the replica's
//! promise and chosen watermark, a message from an older configuration answered with a
//! status reply and one from a newer configuration with a query (at most once per
//! heartbeat), and a failed checkpoint fetch that is asked for again.

use rsl_core::{Action, Ballot, DurableState, Message, MessageBody, NodeId, Proposal, Replica, Slot, Time};
use rsl_testkit::{batch, config, drain, message, persists, sends, Cluster};

fn replica(node: u64) -> Replica {
    let mut replica = Replica::new(config(node, 3), DurableState::default(), Time(0)).unwrap();
    drain(&mut replica);
    replica
}

fn sent(actions: &[Action]) -> Vec<Message> {
    sends(actions).into_iter().cloned().collect()
}

#[test]
fn a_status_query_is_answered_with_the_promise_and_the_chosen_watermark() {
    let mut replica = replica(2);
    replica.handle_message(Time(1_000), message(1, 2, MessageBody::StatusQuery)).unwrap();
    let replies = sent(&drain(&mut replica));
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(replies[0].to, NodeId(1));
    assert_eq!(replies[0].body, MessageBody::StatusReply { promised: Ballot::ZERO, chosen: Slot::ZERO });
}

#[test]
fn a_status_query_from_an_older_configuration_is_answered_too() {
    let mut replica = replica(2);
    let query = Message { configuration: 0, ..message(9, 2, MessageBody::StatusQuery) };
    replica.handle_message(Time(1_000), query).unwrap();
    let replies = sent(&drain(&mut replica));
    assert!(replies.iter().any(|m| m.to == NodeId(9) && matches!(m.body, MessageBody::StatusReply { .. })));
}

#[test]
fn a_message_from_a_newer_configuration_is_queried_at_most_once_per_heartbeat() {
    let mut replica = replica(2);
    let heartbeat = |at| MessageBody::Heartbeat {
        ballot: Ballot::new(1, NodeId(1)),
        chosen: Slot::ZERO,
        sent_at: Time(at),
    };
    let newer = |at| Message { configuration: 2, ..message(1, 2, heartbeat(at)) };
    let _ = replica.handle_message(Time(1_000), newer(1_000));
    let _ = replica.handle_message(Time(1_001), newer(1_001));
    let queries =
        sent(&drain(&mut replica)).into_iter().filter(|m| m.body == MessageBody::StatusQuery).count();
    assert_eq!(queries, 1, "one query within a heartbeat interval");
    let later = Time(1_000 + config(2, 3).heartbeat_interval_ms * 1_000 + 1);
    let _ = replica.handle_message(later, newer(later.0));
    assert!(sent(&drain(&mut replica)).iter().any(|m| m.body == MessageBody::StatusQuery));
}

#[test]
fn a_message_from_an_older_configuration_gets_a_status_reply() {
    let mut replica = Replica::new(
        config(2, 3),
        DurableState {
            configuration: Some(rsl_core::Configuration::new(
                2,
                vec![NodeId(1), NodeId(2), NodeId(3)],
                Slot(5),
            )),
            checkpoint: Slot(4),
            chosen: Slot(4),
            ..DurableState::default()
        },
        Time(0),
    )
    .unwrap();
    drain(&mut replica);
    let old = Message {
        configuration: 1,
        ..message(1, 2, MessageBody::Accepted { ballot: Ballot::new(1, NodeId(2)), slot: Slot(1) })
    };
    let _ = replica.handle_message(Time(1_000), old);
    let replies = sent(&drain(&mut replica));
    assert!(
        replies.iter().any(|m| m.to == NodeId(1) && matches!(m.body, MessageBody::StatusReply { .. })),
        "{replies:?}"
    );
}

#[test]
fn a_failed_checkpoint_fetch_is_asked_for_again() {
    let mut cluster = Cluster::new(3, |c| {
        c.checkpoint_interval_slots = 4;
        c.log_retain_slots = 1;
    });
    let primary = cluster.elect();
    let lagging = cluster.ids().find(|&id| id != primary).unwrap();
    cluster.isolate(lagging);
    let others: Vec<u64> = cluster.ids().filter(|&id| id != lagging).collect();
    for i in 0..20 {
        cluster.propose(primary, rsl_testkit::request(i, &format!("v{i}"))).expect("proposed");
        cluster.settle();
        cluster.advance_ms(5);
    }
    assert!(others.iter().all(|&id| cluster.node(id).applied_slots > 0));
    // The harness never completes a fetch: while one is pending no other is asked for, and
    // only the failure report lets the replica ask again.
    cluster.clear_drop();
    let fetches = |cluster: &Cluster| {
        cluster
            .node(lagging)
            .actions
            .iter()
            .filter(|(_, a)| matches!(a, Action::FetchCheckpoint { .. }))
            .count()
    };
    for _ in 0..400 {
        if fetches(&cluster) > 0 {
            break;
        }
        cluster.advance_ms(5);
    }
    let first = fetches(&cluster);
    assert!(first > 0, "the lagging replica asked for a checkpoint");
    cluster.advance_ms(200);
    assert_eq!(fetches(&cluster), first, "no second fetch while one is pending");
    let now = cluster.now;
    cluster.replica_mut(lagging).on_checkpoint_fetch_failed(now);
    for _ in 0..400 {
        if fetches(&cluster) > first {
            break;
        }
        cluster.advance_ms(5);
    }
    assert!(fetches(&cluster) > first, "asked again after the failure");
}

/// Node 2 of three restarted from a checkpoint at `slot` with nothing above it.
fn at_checkpoint(slot: u64) -> Replica {
    let durable = DurableState { checkpoint: Slot(slot), chosen: Slot(slot), ..DurableState::default() };
    let mut replica = Replica::new(config(2, 3), durable, Time(0)).unwrap();
    drain(&mut replica);
    replica
}

fn fetches(actions: &[Action]) -> Vec<(NodeId, Slot, Slot)> {
    sends(actions)
        .into_iter()
        .filter_map(|m| match m.body {
            MessageBody::Fetch { from, to } => Some((m.to, from, to)),
            _ => None,
        })
        .collect()
}

fn chosen_proposal(slot: u64, payload: &str) -> Proposal {
    Proposal { ballot: Ballot::new(1, NodeId(1)), slot: Slot(slot), value: batch(&[payload]) }
}

#[test]
fn a_fetch_truncated_asks_for_the_checkpoint_once_and_only_when_it_is_newer() {
    let mut replica = at_checkpoint(10);
    let truncated = |checkpoint| message(3, 2, MessageBody::FetchTruncated { checkpoint: Slot(checkpoint) });
    replica.handle_message(Time(1_000), truncated(8)).unwrap();
    assert!(drain(&mut replica).is_empty(), "an older checkpoint than the one installed is no use");
    replica.handle_message(Time(1_000), truncated(20)).unwrap();
    let actions = drain(&mut replica);
    assert!(actions.contains(&Action::FetchCheckpoint { from: NodeId(3), slot: Slot(20) }), "{actions:?}");
    replica
        .handle_message(Time(1_001), message(1, 2, MessageBody::FetchTruncated { checkpoint: Slot(30) }))
        .unwrap();
    let actions = drain(&mut replica);
    assert!(
        !actions.iter().any(|a| matches!(a, Action::FetchCheckpoint { .. })),
        "one checkpoint fetch at a time: {actions:?}"
    );
}

#[test]
fn a_checkpoint_installed_below_what_was_applied_changes_nothing() {
    let mut replica = at_checkpoint(10);
    let before = replica.status();
    let configuration = before.configuration.clone();
    replica.on_checkpoint_installed(Time(1_000), Slot(6), configuration.clone());
    assert!(drain(&mut replica).iter().all(|a| !matches!(a, Action::TruncateLog { .. })));
    assert_eq!(replica.status(), before);
    // A newer one moves the checkpoint and the applied slot.
    replica.on_checkpoint_installed(Time(1_000), Slot(12), configuration);
    let status = replica.status();
    assert_eq!((status.checkpoint, status.applied, status.chosen), (Slot(12), Slot(12), Slot(12)));
}

#[test]
fn a_partial_fetch_reply_is_followed_by_a_fetch_of_the_gap_from_the_replica_that_reported() {
    let mut replica = replica(2);
    let status = MessageBody::StatusReply { promised: Ballot::new(1, NodeId(1)), chosen: Slot(5) };
    replica.handle_message(Time(1_000), message(3, 2, status)).unwrap();
    assert_eq!(fetches(&drain(&mut replica)), vec![(NodeId(3), Slot(1), Slot(5))]);
    let reply =
        MessageBody::FetchReply { chosen_values: vec![chosen_proposal(1, "a"), chosen_proposal(2, "b")] };
    replica.handle_message(Time(1_001), message(3, 2, reply)).unwrap();
    let actions = drain(&mut replica);
    assert_eq!(
        fetches(&actions),
        vec![(NodeId(3), Slot(3), Slot(5))],
        "no primary is known: ask the reporter"
    );
    let written: Vec<Slot> =
        persists(&actions).iter().flat_map(|p| p.proposals.iter().map(|p| p.slot)).collect();
    assert_eq!(written, vec![Slot(1), Slot(2)]);
}

#[test]
fn a_primary_ignores_fetch_replies_and_status_replies() {
    let mut cluster = Cluster::new(3, |_| {});
    let primary = cluster.elect();
    let other = cluster.ids().find(|&id| id != primary).unwrap();
    let before = cluster.replica(primary).status();
    let since = cluster.now;
    let reply = MessageBody::FetchReply { chosen_values: vec![chosen_proposal(1, "stale")] };
    cluster.inject(message(other, primary, reply)).expect("a valid message");
    let status = MessageBody::StatusReply { promised: before.promised, chosen: Slot(9) };
    cluster.inject(message(other, primary, status)).expect("a valid message");
    assert_eq!(cluster.replica(primary).status(), before);
    assert!(cluster.sent_since(since, "fetch").is_empty());
    let node = cluster.node(primary);
    assert!(!node.actions.iter().any(|(at, a)| *at >= since && matches!(a, Action::Persist(_))));
}
