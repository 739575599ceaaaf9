//! Catch-up through the public `Replica` API: status queries answered with the replica's
//! promise and chosen watermark, a message from an older configuration answered with a
//! status reply and one from a newer configuration with a query (at most once per
//! heartbeat), and a failed checkpoint fetch that is asked for again.

use rsl_core::{Action, Ballot, DurableState, Message, MessageBody, NodeId, Replica, Slot, Time};
use rsl_testkit::{config, drain, message, sends, Cluster};

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
