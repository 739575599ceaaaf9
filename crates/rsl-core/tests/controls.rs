//! Operator controls and replica health through the public `Replica` API: exclusive and
//! last requests, forced elections, timing changes, re-seeding from a peer's checkpoint,
//! and what a primary knows of each member (see `replica/{exclusive,controls,health}.rs`).

use rsl_core::{
    Action, ConfigError, Micros, Promotion, PromotionError, ProposeError, ReseedError, Role, Slot, Timing,
    Value,
};
use rsl_testkit::{payloads, request, Cluster};

/// The payloads each applied slot of node `id` held, in slot order (a last request shows
/// as `last:<payload>`).
fn slots_of(cluster: &Cluster, id: u64) -> Vec<Vec<String>> {
    let node = cluster.node(id);
    node.applied
        .iter()
        .map(|(_, value)| match value {
            Value::Last(request) => vec![format!("last:{}", String::from_utf8_lossy(&request.payload))],
            other => payloads(other),
        })
        .filter(|payloads| !payloads.is_empty())
        .collect()
}

/// Three replicas that save a checkpoint every four slots and keep `log_retain_slots`
/// slots of log below it.
fn checkpointing_every_four_slots(log_retain_slots: u64) -> Cluster {
    Cluster::new(3, move |c| {
        c.checkpoint_interval_slots = 4;
        c.log_retain_slots = log_retain_slots;
    })
}

fn secondaries(cluster: &Cluster, primary: u64) -> Vec<u64> {
    cluster.ids().filter(|&id| id != primary).collect()
}

#[test]
fn an_exclusive_request_takes_a_slot_alone_after_the_requests_before_it() {
    let mut cluster = Cluster::new(3, |c| c.pipeline_depth = 1);
    let primary = cluster.elect();
    let now = cluster.now;
    cluster.propose(primary, request(1, "a")).unwrap();
    // The pipeline is full: the rest waits in the queue.
    cluster.propose(primary, request(2, "b")).unwrap();
    cluster.replica_mut(primary).handle_propose_exclusive(now, request(3, "x"), false).unwrap();
    cluster.propose(primary, request(4, "c")).unwrap();
    cluster.propose(primary, request(5, "d")).unwrap();
    cluster.drain((primary - 1) as usize);
    cluster.run_until_applied(&[4, 4, 4]);
    for id in cluster.ids() {
        assert_eq!(
            slots_of(&cluster, id),
            vec![vec!["a"], vec!["b"], vec!["x"], vec!["c", "d"]],
            "node {id}"
        );
    }
    assert_eq!(cluster.replica(primary).last_slot(), None, "an exclusive request does not close the ring");
}

#[test]
fn a_last_request_closes_the_ring_on_every_replica_and_survives_a_restart() {
    let mut cluster = Cluster::new(3, |c| c.pipeline_depth = 1);
    let primary = cluster.elect();
    let now = cluster.now;
    cluster.propose(primary, request(1, "a")).unwrap();
    cluster.replica_mut(primary).handle_propose_exclusive(now, request(2, "end"), true).unwrap();
    // Behind the last request: it never gets a slot.
    cluster.propose(primary, request(3, "late")).unwrap();
    cluster.drain((primary - 1) as usize);
    cluster.advance_ms(200);
    let last = Slot(2);
    for id in cluster.ids() {
        assert_eq!(
            slots_of(&cluster, id),
            vec![vec!["a".to_owned()], vec!["last:end".to_owned()]],
            "node {id}"
        );
        assert_eq!(cluster.replica(id).last_slot(), Some(last), "node {id}");
        assert_eq!(cluster.replica(id).status().last_slot, Some(last));
        assert_eq!(cluster.propose(id, request(9, "refused")), Err(ProposeError::Closed { last_slot: last }));
    }
    assert_eq!(cluster.node(primary).requests_dropped, 1, "the request queued behind it is dropped");
    // The replicated state: a replica restarted from its log knows it once it knows the
    // slot chosen again (the chosen hint on disk may lag).
    let secondary = secondaries(&cluster, primary)[0];
    cluster.restart(secondary);
    cluster.advance_ms(100);
    assert_eq!(cluster.replica(secondary).last_slot(), Some(last));
    assert_eq!(
        cluster.propose(secondary, request(9, "refused")),
        Err(ProposeError::Closed { last_slot: last })
    );
    // A new primary opens no slot: nothing beyond the last request is ever chosen.
    let chosen = cluster.replica(primary).chosen();
    cluster.isolate(primary);
    cluster.advance_ms(3_000);
    let others = secondaries(&cluster, primary);
    assert!(others.iter().any(|&id| cluster.replica(id).role() == Role::Primary), "a new primary");
    for id in others {
        assert_eq!(cluster.replica(id).chosen(), chosen, "node {id} chose nothing after the last request");
    }
    // And a checkpoint that says so closes a replica that never saw the slot.
    let mut fresh = Cluster::new(1, |_| {});
    fresh.replica_mut(1).on_last_slot_known(Slot(40));
    assert_eq!(fresh.replica(1).last_slot(), Some(Slot(40)));
    assert_eq!(fresh.propose(1, request(1, "x")), Err(ProposeError::Closed { last_slot: Slot(40) }));
}

#[test]
fn a_forced_election_hands_primacy_over_or_campaigns_at_once() {
    let mut cluster = Cluster::new(3, |c| c.election_delay_max_ms = 5_000);
    let primary = cluster.elect();
    let chosen = secondaries(&cluster, primary)[0];
    let now = cluster.now;
    assert_eq!(cluster.replica_mut(primary).handle_attempt_promotion(now), Ok(Promotion::AlreadyPrimary));
    // Following a live primary: ask it to hand over.
    let asked = cluster.replica_mut(chosen).handle_attempt_promotion(now);
    assert_eq!(asked, Ok(Promotion::AskedPrimary { primary: rsl_core::NodeId(primary) }));
    cluster.drain((chosen - 1) as usize);
    cluster.settle();
    assert_eq!(cluster.agreed_primary(), Some(chosen), "the old primary relinquished to it");

    // No live primary heard: campaign now, without waiting for the election delay.
    let next = secondaries(&cluster, chosen)[0];
    cluster.isolate(chosen);
    cluster.advance_ms(510);
    cluster.clear_drop();
    cluster.isolate(chosen);
    let now = cluster.now;
    assert_eq!(cluster.replica_mut(next).handle_attempt_promotion(now), Ok(Promotion::Campaigning));
    cluster.drain((next - 1) as usize);
    cluster.settle();
    assert_eq!(cluster.replica(next).role(), Role::Primary);

    // A vetoed replica refuses.
    let third = cluster.ids().find(|&id| id != chosen && id != next).unwrap();
    cluster.replica_mut(third).set_can_become_primary(false);
    let now = cluster.now;
    assert_eq!(cluster.replica_mut(third).handle_attempt_promotion(now), Err(PromotionError::Vetoed));
}

#[test]
fn timing_changes_are_validated_and_rearm_the_timers() {
    let mut cluster = Cluster::new(3, |_| {});
    let primary = cluster.elect();
    let now = cluster.now;
    let before = cluster.replica(primary).timing();
    let bad = Timing { heartbeat_interval_ms: 100, election_delay_min_ms: 150, election_delay_max_ms: 300 };
    match cluster.replica_mut(primary).handle_change_timing(now, bad) {
        Err(ConfigError::Invalid { field, .. }) => assert_eq!(field, "election_delay_min_ms"),
        other => panic!("expected a refusal naming the field, got {other:?}"),
    }
    assert_eq!(cluster.replica(primary).timing(), before, "a refused change changes nothing");
    let fast = Timing { heartbeat_interval_ms: 7, election_delay_min_ms: 40, election_delay_max_ms: 60 };
    for id in cluster.ids().collect::<Vec<_>>() {
        cluster.replica_mut(id).handle_change_timing(now, fast).unwrap();
        assert_eq!(cluster.replica(id).timing(), fast);
    }
    assert!(cluster.replica(primary).poll_timeout().unwrap() <= now.plus_ms(7), "the heartbeat is re-armed");
    let secondary = secondaries(&cluster, primary)[0];
    assert!(
        cluster.replica(secondary).poll_timeout().unwrap() <= now.plus_ms(60),
        "so is the election timer"
    );
    // The primary heartbeats at the new rate.
    let since = cluster.now;
    cluster.advance_ms(70);
    assert!(
        cluster.sent_since(since, "heartbeat").len() >= 2 * 10,
        "about ten heartbeats to each of two peers"
    );
}

#[test]
fn a_reseed_replays_the_log_from_a_peers_older_checkpoint() {
    let mut cluster = checkpointing_every_four_slots(100);
    let primary = cluster.elect();
    let (target, peer) = {
        let others = secondaries(&cluster, primary);
        (others[0], others[1])
    };
    // At least ten requests, and until the peer's newest checkpoint (saved at its own
    // staggered slots) is older than what the target applied.
    let mut i = 0;
    while i < 10 || cluster.node(peer).disk.checkpoint >= cluster.replica(target).applied() {
        cluster.propose_and_apply(vec![request(i, &format!("r{i}"))]);
        i += 1;
    }
    let now = cluster.now;
    let node = rsl_core::NodeId(target);
    assert_eq!(cluster.replica_mut(target).handle_reseed(now, node), Err(ReseedError::FromSelf { node }));
    let min_slot = cluster.replica_mut(target).handle_reseed(now, rsl_core::NodeId(peer)).unwrap();
    assert_eq!(min_slot, Slot(1), "nothing truncated yet");
    assert_eq!(
        cluster.replica_mut(target).handle_reseed(now, rsl_core::NodeId(peer)),
        Err(ReseedError::InProgress)
    );

    // The peer's checkpoint is older than what the target applied.
    let checkpoint = cluster.node(peer).disk.checkpoint;
    let state = cluster.node(peer).disk.checkpoint_state.clone();
    let configuration = cluster.replica(peer).status().configuration;
    let applied_before = cluster.replica(target).applied();
    assert!(checkpoint < applied_before && checkpoint > Slot::ZERO, "{checkpoint} vs {applied_before}");
    let expected = cluster.node(target).applied.clone();
    let target_node = cluster.node_mut(target);
    target_node.load_state(state);
    target_node.replica.on_checkpoint_reseeded(now, checkpoint, configuration.clone()).unwrap();
    let status = target_node.replica.status();
    assert_eq!((status.applied, status.checkpoint), (checkpoint, checkpoint), "back at the checkpoint");
    cluster.drain((target - 1) as usize);
    assert_eq!(cluster.node(target).applied, expected, "the log replays to the same state");
    assert_eq!(cluster.replica(target).applied(), applied_before);

    // A failed re-seed changes nothing and lets another start.
    cluster.replica_mut(target).handle_reseed(now, rsl_core::NodeId(peer)).unwrap();
    cluster.replica_mut(target).on_reseed_failed(now);
    assert!(cluster.replica_mut(target).handle_reseed(now, rsl_core::NodeId(peer)).is_ok());
}

#[test]
fn a_reseed_refuses_a_checkpoint_the_log_cannot_replay_from() {
    let mut cluster = checkpointing_every_four_slots(1);
    let primary = cluster.elect();
    let target = secondaries(&cluster, primary)[0];
    for i in 0..13 {
        cluster.propose_and_apply(vec![request(i, "r")]);
    }
    let log_start = cluster.replica(target).status().log_start;
    assert!(log_start > Slot(5), "the log was truncated: it starts at {log_start}");
    let now = cluster.now;
    let min_slot = cluster.replica_mut(target).handle_reseed(now, rsl_core::NodeId(primary)).unwrap();
    assert_eq!(min_slot, log_start.prev(), "only a checkpoint the log continues from");
    let configuration = cluster.replica(target).status().configuration;
    let result = cluster.replica_mut(target).on_checkpoint_reseeded(now, Slot(4), configuration);
    assert_eq!(result, Err(ReseedError::Gap { slot: Slot(4), log_start }));
}

#[test]
fn the_primary_sees_a_cut_off_member_fall_behind_and_catch_up() {
    let mut cluster = Cluster::new(3, |_| {});
    let primary = cluster.elect();
    cluster.propose_and_apply(vec![request(1, "a")]);
    cluster.advance_ms(100);
    let report = cluster.replica(primary).health(cluster.now);
    assert_eq!(report.role, Role::Primary);
    assert_eq!(report.members.len(), 3);
    for member in &report.members {
        assert_eq!(member.lag_slots, Some(0), "{member:?}");
        assert_eq!(member.lag, Some(Micros::ZERO), "{member:?}");
        assert!(
            member.is_self || member.last_heard.is_some_and(|ago| ago <= Micros::from_ms(60)),
            "{member:?}"
        );
    }
    let behind = secondaries(&cluster, primary)[0];
    let cut = rsl_core::NodeId(behind);
    cluster.set_drop(move |m| m.to == cut || m.from == cut);
    for i in 0..5 {
        let now = cluster.now;
        cluster.replica_mut(primary).handle_propose(now, request(10 + i, "b")).unwrap();
        cluster.drain((primary - 1) as usize);
        cluster.advance_ms(100);
    }
    let report = cluster.replica(primary).health(cluster.now);
    let member = report.members.iter().find(|m| m.node == cut).unwrap();
    assert_eq!(member.lag_slots, Some(5), "{member:?}");
    assert!(member.lag.is_some_and(|lag| lag >= Micros::from_ms(400)), "{member:?}");
    assert!(member.last_heard.is_some_and(|ago| ago >= Micros::from_ms(400)), "{member:?}");
    assert!(member.acknowledged < report.members.iter().find(|m| m.is_self).unwrap().acknowledged);
    // Its own view: a secondary knows itself and its primary only.
    let secondary = secondaries(&cluster, primary)[1];
    let view = cluster.replica(secondary).health(cluster.now);
    assert_eq!(view.role, Role::Secondary);
    assert!(view
        .members
        .iter()
        .all(|m| m.node == rsl_core::NodeId(secondary) || m.is_primary || m.holds.is_none()));
    assert!(view.primary_heard.is_some_and(|ago| ago <= Micros::from_ms(60)));

    cluster.clear_drop();
    cluster.advance_ms(300);
    let report = cluster.replica(primary).health(cluster.now);
    let member = report.members.iter().find(|m| m.node == cut).unwrap();
    assert_eq!((member.lag_slots, member.lag), (Some(0), Some(Micros::ZERO)), "caught up: {member:?}");
    assert!(cluster.node(behind).actions.iter().any(|(_, a)| matches!(a, Action::Apply { .. })));
}

#[test]
fn a_reseed_from_a_newer_checkpoint_moves_forward_like_a_catch_up_install() {
    let mut cluster = checkpointing_every_four_slots(100);
    let primary = cluster.elect();
    let [target, peer] = secondaries(&cluster, primary)[..] else { panic!("two secondaries") };
    cluster.isolate(target);
    for i in 0..40 {
        if cluster.node(peer).disk.checkpoint > Slot::ZERO {
            break;
        }
        cluster.propose(primary, request(i, &format!("r{i}"))).expect("proposed");
        cluster.advance_ms(5);
    }
    assert!(cluster.node(peer).disk.checkpoint > Slot::ZERO, "the peer saved a checkpoint");
    let now = cluster.now;
    assert_eq!(cluster.replica(target).applied(), Slot::ZERO, "cut off, it applied nothing");
    cluster.replica_mut(target).handle_reseed(now, rsl_core::NodeId(peer)).unwrap();
    let checkpoint = cluster.node(peer).disk.checkpoint;
    let state = cluster.node(peer).disk.checkpoint_state.clone();
    let configuration = cluster.replica(peer).status().configuration;
    let target_node = cluster.node_mut(target);
    target_node.load_state(state);
    target_node.replica.on_checkpoint_reseeded(now, checkpoint, configuration).unwrap();
    let status = cluster.replica(target).status();
    assert_eq!((status.applied, status.checkpoint, status.chosen), (checkpoint, checkpoint, checkpoint));
    // Reconnected, it catches up from there to the others.
    cluster.clear_drop();
    cluster.advance_ms(500);
    assert_eq!(cluster.replica(target).applied(), cluster.replica(primary).applied());
    cluster.assert_agreement();
}

#[test]
fn a_promotion_is_refused_after_hearing_of_a_ballot_of_a_later_configuration() {
    let mut cluster = Cluster::new(3, |_| {});
    let primary = cluster.elect();
    let secondary = secondaries(&cluster, primary)[0];
    let later = rsl_core::Configuration::new(2, vec![rsl_core::NodeId(1)], Slot(9)).round_floor() + 1;
    let reply = rsl_core::MessageBody::StatusReply {
        promised: rsl_core::Ballot::new(later, rsl_core::NodeId(primary)),
        chosen: Slot::ZERO,
    };
    cluster.inject(rsl_testkit::message(primary, secondary, reply)).expect("a valid message");
    let now = cluster.now;
    assert_eq!(
        cluster.replica_mut(secondary).handle_attempt_promotion(now),
        Err(PromotionError::NewerConfiguration { configuration: 1 })
    );
}

#[test]
fn a_promotion_is_refused_while_behind_the_configurations_first_slot() {
    let durable = rsl_core::DurableState {
        configuration: Some(rsl_core::Configuration::new(2, rsl_testkit::members(3), Slot(8))),
        ..rsl_core::DurableState::default()
    };
    let mut replica = rsl_core::Replica::new(rsl_testkit::config(2, 3), durable, rsl_core::Time(0)).unwrap();
    assert_eq!(
        replica.handle_attempt_promotion(rsl_core::Time(1_000)),
        Err(PromotionError::Behind { chosen: Slot::ZERO, first_slot: Slot(8) })
    );
    assert_eq!(replica.role(), Role::Secondary);
}
