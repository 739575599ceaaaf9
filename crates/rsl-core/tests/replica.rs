//! Rings of 1, 3 and 5 replicas driven through the public `Replica` API by a harness that
//! owns the clock, the network and the disks (see `harness/mod.rs`).

use rsl_core::SplitMix64;
use rsl_core::{
    Action, Ballot, MessageBody, NodeId, ProposeError, ReadError, RelinquishError, Replica, Role, Slot, Time,
    Value,
};
use rsl_testkit::{payloads, request, Cluster};

/// The payloads `prefix0 .. prefix{count-1}`.
fn numbered(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}{i}")).collect()
}

/// Proposes `count` numbered requests at `id`, each expected to be taken.
fn propose_numbered(cluster: &mut Cluster, id: u64, prefix: &str, first_sequence: u64, count: usize) {
    for (i, payload) in numbered(prefix, count).iter().enumerate() {
        cluster.propose(id, request(first_sequence + i as u64, payload)).expect("the primary takes it");
    }
}

fn other_than(cluster: &Cluster, excluded: &[u64]) -> Vec<u64> {
    cluster.ids().filter(|id| !excluded.contains(id)).collect()
}

// ----- One replica -----

#[test]
fn a_single_replica_elects_itself_and_applies_proposals_in_order() {
    let mut cluster = Cluster::new(1, |_| {});
    assert_eq!(cluster.propose(1, request(0, "early")), Err(ProposeError::NotPrimary { hint: None }));
    let primary = cluster.elect();
    assert_eq!(primary, 1);
    let b = Ballot::new(1, NodeId(1));
    let roles: Vec<_> = cluster.node(1).role_changes().into_iter().map(|(_, r, b, p)| (r, b, p)).collect();
    assert_eq!(roles, vec![(Role::Candidate, b, None), (Role::Primary, b, Some(NodeId(1)))]);
    let elected_at = cluster.node(1).role_changes()[1].0;
    assert!(elected_at >= Time(500_000), "elected at {elected_at}, before the election delay");

    propose_numbered(&mut cluster, 1, "r", 0, 5);
    cluster.settle();
    let node = cluster.node(1);
    assert_eq!(node.applied_slots(), vec![1, 2, 3, 4, 5]);
    assert_eq!(node.applied_payloads(), numbered("r", 5));
    assert_eq!(node.replica.chosen(), Slot(5));
    assert_eq!(node.replica.applied(), Slot(5));
    let statistics = node.replica.statistics();
    assert_eq!((statistics.requests_proposed, statistics.slots_applied, statistics.elections_won), (5, 5, 1));
    assert_eq!(statistics.messages_sent, 0, "a ring of one talks to nobody");
}

/// The flow of the crate-level example, step by step.
#[test]
fn the_crate_example_flow_applies_one_request() {
    use rsl_core::{Config, DurableState, RingId};
    let config = Config::new(RingId(1), NodeId(1), vec![NodeId(1)]);
    let mut replica = Replica::new(config, DurableState::default(), Time(0)).unwrap();
    let mut now = Time(0);
    let mut applied = Vec::new();
    let mut rounds = 0;
    while applied.is_empty() {
        rounds += 1;
        assert!(rounds < 100, "nothing applied after 100 rounds");
        if let Some(deadline) = replica.poll_timeout() {
            now = now.max(deadline);
            replica.handle_timeout(now);
        }
        if replica.role() == Role::Primary {
            replica.handle_propose(now, request(0, "hello")).unwrap();
        }
        while let Some(action) = replica.poll_action() {
            match action {
                Action::Persist(write) => replica.on_persisted(now, write.ticket),
                Action::Apply { slot, value } => {
                    applied.push((slot, value));
                    replica.on_applied(slot);
                }
                _ => {}
            }
        }
    }
    assert_eq!(applied.len(), 1);
    assert_eq!(applied[0].0, Slot(1));
    assert_eq!(payloads(&applied[0].1), vec!["hello"]);
    assert!(now >= Time(500_000));
}

/// `update_status` keeps a published status equal to `status()` through an election and
/// an applied request, and says exactly when it changed something.
#[test]
fn update_status_follows_status_and_reports_each_change() {
    use rsl_core::{Config, Configuration, DurableState, RingId};
    let config = Config::new(RingId(1), NodeId(1), vec![NodeId(1)]);
    let mut replica = Replica::new(config, DurableState::default(), Time(0)).unwrap();
    let mut published = replica.status();
    // A stale configuration is replaced.
    published.configuration = Configuration::new(0, vec![NodeId(7)], Slot::ZERO);
    assert!(replica.update_status(&mut published));
    assert_eq!(published, replica.status());
    assert!(!replica.update_status(&mut published), "nothing changed since");
    let mut now = Time(0);
    let (mut changes, mut proposed) = (0, false);
    while replica.applied() < Slot(1) {
        if let Some(deadline) = replica.poll_timeout() {
            now = now.max(deadline);
            replica.handle_timeout(now);
        }
        if replica.role() == Role::Primary && !proposed {
            replica.handle_propose(now, request(0, "hello")).unwrap();
            proposed = true;
        }
        while let Some(action) = replica.poll_action() {
            match action {
                Action::Persist(write) => replica.on_persisted(now, write.ticket),
                Action::Apply { slot, .. } => replica.on_applied(slot),
                _ => {}
            }
        }
        let before = published.clone();
        let changed = replica.update_status(&mut published);
        assert_eq!(published, replica.status());
        assert_eq!(changed, before != published, "reported a change exactly when there was one");
        changes += usize::from(changed);
    }
    assert_eq!((published.role, published.chosen, published.applied), (Role::Primary, Slot(1), Slot(1)));
    assert!(changes >= 2, "the election and the apply each changed the status ({changes} changes)");
}

// ----- Three replicas: election and replication -----

#[test]
fn three_replicas_elect_exactly_one_primary_after_the_election_delay() {
    let mut cluster = Cluster::new(3, |_| {});
    // A pre-vote during the boot lease guard is refused.
    let pre_vote = rsl_testkit::message(
        3,
        1,
        MessageBody::PreVote { ballot: Ballot::new(1, NodeId(3)), chosen: Slot::ZERO },
    );
    cluster.inject(pre_vote).unwrap();
    let reply = cluster.network.pop_back().expect("a reply");
    assert!(matches!(reply.body, MessageBody::Reject { reason: rsl_core::RejectReason::PrimaryAlive, .. }));

    cluster.advance_to(Time(499_999));
    for id in cluster.ids() {
        let replica = cluster.replica(id);
        assert_eq!(replica.role(), Role::Secondary, "node {id} campaigned before the election delay");
        assert_eq!(replica.statistics().elections_started, 0);
    }
    let primary = cluster.elect();
    assert_eq!(cluster.primaries(), vec![primary]);
    let (elected_at, _, b, _) = *cluster.node(primary).role_changes().last().unwrap();
    assert!(elected_at >= Time(500_000) && elected_at <= Time(1_000_000), "elected at {elected_at}");
    assert_eq!(b.node, NodeId(primary));
    for id in other_than(&cluster, &[primary]) {
        let replica = cluster.replica(id);
        assert_eq!(replica.role(), Role::Secondary);
        assert_eq!(replica.primary_hint(), Some(NodeId(primary)));
        assert_eq!(replica.status().promised, b);
        assert_eq!(replica.statistics().elections_won, 0);
    }
    // And it stays that way while the primary heartbeats.
    cluster.advance_ms(5_000);
    assert_eq!(cluster.agreed_primary(), Some(primary));
    assert_eq!(cluster.replica(primary).status().promised, b);
}

#[test]
fn five_replicas_elect_one_primary_and_replicate() {
    let mut cluster = Cluster::new(5, |_| {});
    let primary = cluster.elect();
    propose_numbered(&mut cluster, primary, "q", 0, 7);
    cluster.settle();
    cluster.advance_ms(50);
    for id in cluster.ids() {
        assert_eq!(cluster.node(id).applied_payloads(), numbered("q", 7), "node {id}");
    }
    cluster.assert_agreement();
}

#[test]
fn proposals_are_chosen_and_applied_in_slot_order_on_all_three() {
    let mut cluster = Cluster::new(3, |_| {});
    let primary = cluster.elect();
    propose_numbered(&mut cluster, primary, "r", 0, 10);
    cluster.settle();
    cluster.advance_ms(50);
    for id in cluster.ids() {
        let node = cluster.node(id);
        assert_eq!(node.applied_slots(), (1..=10).collect::<Vec<_>>(), "node {id}");
        assert_eq!(node.applied_payloads(), numbered("r", 10), "node {id}");
        assert_eq!(node.replica.chosen(), Slot(10));
    }
    cluster.assert_agreement();
    assert!(cluster.rejected.is_empty(), "{:?}", cluster.rejected);
}

#[test]
fn the_chosen_watermark_reaches_secondaries_on_accepts_and_heartbeats() {
    let mut cluster = Cluster::new(3, |_| {});
    let primary = cluster.elect();
    let secondaries = other_than(&cluster, &[primary]);
    let start = cluster.now;

    cluster.propose(primary, request(0, "a")).unwrap();
    cluster.settle();
    assert_eq!(cluster.replica(primary).chosen(), Slot(1));
    assert_eq!(cluster.node(primary).applied_payloads(), vec!["a"]);
    for &id in &secondaries {
        assert_eq!(cluster.replica(id).chosen(), Slot::ZERO, "node {id} cannot know yet");
        assert!(cluster.node(id).applied.is_empty());
    }

    // The next accept carries the watermark.
    cluster.propose(primary, request(1, "b")).unwrap();
    let accepts = cluster.sent_since(start, "accept");
    assert!(accepts
        .iter()
        .any(|m| matches!(m.body, MessageBody::Accept { slot: Slot(2), chosen: Slot(1), .. })));
    cluster.settle();
    for &id in &secondaries {
        assert_eq!(cluster.replica(id).chosen(), Slot(1), "node {id}");
        assert_eq!(cluster.node(id).applied_payloads(), vec!["a"]);
    }

    // The next heartbeat carries the rest.
    let before_heartbeat = cluster.now;
    cluster.advance_ms(50);
    let heartbeats = cluster.sent_since(before_heartbeat, "heartbeat");
    assert!(!heartbeats.is_empty());
    assert!(heartbeats.iter().all(|m| matches!(m.body, MessageBody::Heartbeat { chosen: Slot(2), .. })));
    for &id in &secondaries {
        assert_eq!(cluster.replica(id).chosen(), Slot(2), "node {id}");
        assert_eq!(cluster.node(id).applied_payloads(), vec!["a", "b"]);
    }
}

// ----- Pipelining and batching -----

#[test]
fn pipelining_keeps_exactly_pipeline_depth_slots_in_flight() {
    let mut cluster = Cluster::new(3, |c| {
        c.pipeline_depth = 4;
        c.promise_slots_max = 8;
        c.batch_requests_max = 1;
    });
    let primary = cluster.elect();
    let secondaries = other_than(&cluster, &[primary]);
    for id in cluster.ids() {
        cluster.node_mut(id).auto_persist = false;
    }
    let start = cluster.now;
    propose_numbered(&mut cluster, primary, "p", 0, 10);
    assert_eq!(cluster.replica(primary).in_flight_slots(), 4);
    assert_eq!(cluster.replica(primary).queued_requests(), 6);
    cluster.settle();
    let accepted_slots = |cluster: &Cluster| {
        let mut slots: Vec<u64> = cluster
            .sent_since(start, "accept")
            .iter()
            .filter_map(|m| match m.body {
                MessageBody::Accept { slot, .. } => Some(slot.0),
                _ => None,
            })
            .collect();
        slots.sort_unstable();
        slots.dedup();
        slots
    };
    assert_eq!(accepted_slots(&cluster), vec![1, 2, 3, 4]);
    assert!(cluster.sent_since(start, "accepted").is_empty(), "accepted before any write was durable");

    // Both secondaries' votes are durable, but the primary's own write is not: a quorum
    // of others does not make a slot chosen at a primary that has not persisted it.
    for &id in &secondaries {
        cluster.release(id);
    }
    cluster.settle();
    assert_eq!(cluster.sent_since(start, "accepted").len(), 8);
    assert_eq!(cluster.replica(primary).chosen(), Slot::ZERO);
    assert_eq!(cluster.replica(primary).in_flight_slots(), 4);

    // The primary's write completes: four slots chosen, four more open.
    cluster.release(primary);
    assert_eq!(cluster.replica(primary).chosen(), Slot(4));
    assert_eq!(cluster.replica(primary).in_flight_slots(), 4);
    assert_eq!(cluster.replica(primary).queued_requests(), 2);
    assert_eq!(accepted_slots(&cluster), vec![1, 2, 3, 4, 5, 6, 7, 8]);

    for id in cluster.ids() {
        cluster.node_mut(id).auto_persist = true;
        cluster.release(id);
    }
    cluster.settle();
    cluster.advance_ms(50);
    for id in cluster.ids() {
        assert_eq!(cluster.node(id).applied_payloads(), numbered("p", 10), "node {id}");
    }
    assert_eq!(cluster.replica(primary).in_flight_slots(), 0);
}

/// Proposes `count` requests at a primary whose pipeline (depth 1) is blocked by an
/// unpersisted slot, then lets it drain; returns the batch sizes applied.
fn batch_sizes_after_backlog(
    cluster: &mut Cluster,
    payload: impl Fn(usize) -> String,
    count: usize,
) -> Vec<usize> {
    let primary = cluster.elect();
    cluster.node_mut(primary).auto_persist = false;
    cluster.propose(primary, request(1_000, "first")).unwrap();
    for i in 0..count {
        cluster.propose(primary, request(i as u64, &payload(i))).unwrap();
    }
    assert_eq!(cluster.replica(primary).in_flight_slots(), 1);
    assert_eq!(cluster.replica(primary).queued_requests(), count as u64);
    cluster.node_mut(primary).auto_persist = true;
    cluster.release(primary);
    cluster.settle();
    cluster.advance_ms(50);
    let mut expected = vec!["first".to_string()];
    expected.extend((0..count).map(payload));
    for id in cluster.ids() {
        assert_eq!(cluster.node(id).applied_payloads(), expected, "node {id}: order of requests");
    }
    cluster.assert_agreement();
    cluster.node(primary).applied.iter().map(|(_, v)| payloads(v).len()).collect()
}

#[test]
fn queued_requests_become_batches_bounded_by_batch_requests_max() {
    let mut cluster = Cluster::new(3, |c| {
        c.pipeline_depth = 1;
        c.batch_requests_max = 10;
    });
    let sizes = batch_sizes_after_backlog(&mut cluster, |i| format!("r{i}"), 25);
    assert_eq!(sizes, vec![1, 10, 10, 5]);
}

#[test]
fn queued_requests_become_batches_bounded_by_batch_bytes_max() {
    // Ten-byte payloads count 34 bytes each: three fit in 102 bytes, four do not.
    let mut cluster = Cluster::new(3, |c| {
        c.pipeline_depth = 1;
        c.batch_requests_max = 100;
        c.batch_bytes_max = 3 * (10 + rsl_core::REQUEST_OVERHEAD_BYTES);
    });
    let sizes = batch_sizes_after_backlog(&mut cluster, |i| format!("payload-{i:02}"), 10);
    assert_eq!(sizes, vec![1, 3, 3, 3, 1]);
}

#[test]
fn a_partial_batch_waits_for_the_linger_and_a_full_one_does_not() {
    let mut cluster = Cluster::new(3, |c| {
        c.batch_linger_us = 2_000;
        c.batch_requests_max = 3;
    });
    let primary = cluster.elect();
    let start = cluster.now;
    propose_numbered(&mut cluster, primary, "a", 0, 2);
    cluster.advance_to(start.plus_us(1_999));
    assert_eq!(cluster.replica(primary).in_flight_slots(), 0);
    assert_eq!(cluster.replica(primary).queued_requests(), 2);
    cluster.advance_to(start.plus_us(2_000));
    assert_eq!(cluster.replica(primary).chosen(), Slot(1), "the partial batch went out after the linger");

    // Three requests fill a batch: it goes out at once.
    propose_numbered(&mut cluster, primary, "b", 10, 3);
    assert_eq!(cluster.replica(primary).queued_requests(), 0);
    cluster.settle();
    assert_eq!(cluster.replica(primary).chosen(), Slot(2));
    cluster.advance_ms(50);
    for id in cluster.ids() {
        let sizes: Vec<usize> = cluster.node(id).applied.iter().map(|(_, v)| payloads(v).len()).collect();
        assert_eq!(sizes, vec![2, 3], "node {id}");
    }
}

#[test]
fn proposals_are_refused_when_busy_too_large_or_not_primary() {
    let mut cluster = Cluster::new(3, |c| {
        c.pipeline_depth = 1;
        c.proposal_queue_max = 3;
        c.batch_bytes_max = 100;
        c.request_bytes_max = 200;
    });
    for id in cluster.ids() {
        assert_eq!(cluster.propose(id, request(0, "x")), Err(ProposeError::NotPrimary { hint: None }));
    }
    let primary = cluster.elect();
    for id in other_than(&cluster, &[primary]) {
        assert_eq!(
            cluster.propose(id, request(0, "x")),
            Err(ProposeError::NotPrimary { hint: Some(NodeId(primary)) })
        );
    }
    let too_large = "x".repeat(201);
    assert_eq!(
        cluster.propose(primary, request(0, &too_large)),
        Err(ProposeError::TooLarge { bytes: 201, max: 200 })
    );

    cluster.node_mut(primary).auto_persist = false;
    cluster.propose(primary, request(1, &"y".repeat(76))).expect("exactly batch_bytes_max fits");
    for sequence in 2..5 {
        cluster.propose(primary, request(sequence, "q")).unwrap();
    }
    assert_eq!(cluster.propose(primary, request(5, "q")), Err(ProposeError::Busy { queued: 3, max: 3 }));
    assert_eq!(cluster.replica(primary).statistics().requests_proposed, 4);
}

// ----- Leases and check-quorum -----

#[test]
fn lease_reads_need_a_quorum_echo_and_expire() {
    // A lease of 300 ms, well inside the 500 ms after which the primary steps down.
    let mut cluster = Cluster::new(3, |c| c.clock_drift_max_ppm = 400_000);
    cluster.set_drop(|m| matches!(m.body, MessageBody::HeartbeatReply { .. }));
    let primary = cluster.elect();
    let secondary = other_than(&cluster, &[primary])[0];
    let now = cluster.now;
    assert_eq!(cluster.replica_mut(primary).handle_read(now), Err(ReadError::LeaseExpired));
    assert_eq!(
        cluster.replica_mut(secondary).handle_read(now),
        Err(ReadError::NotPrimary { hint: Some(NodeId(primary)) })
    );

    cluster.clear_drop();
    cluster.advance_ms(50);
    propose_numbered(&mut cluster, primary, "w", 0, 3);
    cluster.settle();
    let now = cluster.now;
    assert_eq!(cluster.replica_mut(primary).handle_read(now), Ok(Slot(3)));
    assert_eq!(cluster.replica(primary).chosen(), Slot(3));

    // Cut the primary off. Its last echoed heartbeat went out at most 50 ms ago.
    let cut = cluster.now;
    cluster.isolate(primary);
    cluster.advance_to(cut.plus_ms(200));
    let now = cluster.now;
    assert_eq!(cluster.replica_mut(primary).handle_read(now), Ok(Slot(3)), "the lease still holds");
    cluster.advance_to(cut.plus_ms(301));
    assert_eq!(cluster.replica(primary).role(), Role::Primary, "not yet stepped down");
    let now = cluster.now;
    assert_eq!(cluster.replica_mut(primary).handle_read(now), Err(ReadError::LeaseExpired));
}

#[test]
fn a_primary_that_cannot_hear_a_quorum_steps_down() {
    let mut cluster = Cluster::new(3, |_| {});
    let primary = cluster.elect();
    cluster.advance_ms(2_000);
    assert_eq!(cluster.agreed_primary(), Some(primary), "a healthy primary stays");
    assert_eq!(cluster.replica(primary).statistics().primary_step_downs, 0);

    let cut = cluster.now;
    cluster.isolate(primary);
    cluster.advance_ms(3_000);
    let changes = cluster.node(primary).role_changes();
    let (stepped_down_at, role, _, _) = *changes.iter().find(|(t, ..)| *t >= cut).expect("a role change");
    assert_eq!(role, Role::Secondary);
    assert!(
        stepped_down_at >= cut.plus_ms(450) && stepped_down_at <= cut.plus_ms(1_000),
        "stepped down at {stepped_down_at}, cut at {cut}"
    );
    let replica = cluster.replica(primary);
    assert_ne!(replica.role(), Role::Primary);
    assert_eq!(replica.statistics().primary_step_downs, 1);
    // Meanwhile the other two elected one of themselves at a higher ballot.
    let others = other_than(&cluster, &[primary]);
    let new_primary = cluster.primaries().into_iter().find(|id| others.contains(id)).expect("a new primary");
    assert!(cluster.replica(new_primary).status().promised > cluster.node(primary).role_changes()[0].2);
}

// ----- Relinquish and the veto -----

#[test]
fn relinquish_hands_over_after_in_flight_slots_drain() {
    let mut cluster = Cluster::new(3, |c| c.pipeline_depth = 1);
    let primary = cluster.elect();
    let old_ballot = cluster.replica(primary).status().promised;
    let others = other_than(&cluster, &[primary]);
    let (target, third) = (others[0], others[1]);

    cluster.node_mut(primary).auto_persist = false;
    cluster.propose(primary, request(0, "in-flight")).unwrap();
    cluster.propose(primary, request(1, "queued")).unwrap();
    cluster.settle();
    let start = cluster.now;
    let now = cluster.now;
    assert_eq!(cluster.replica_mut(primary).handle_relinquish(now, Some(NodeId(target))), Ok(NodeId(target)));
    cluster.drain((primary - 1) as usize);
    let dropped = cluster.node(primary).actions.iter().rev().find_map(|(_, a)| match a {
        Action::RequestsDropped { ids, primary } => Some((ids.clone(), *primary)),
        _ => None,
    });
    assert_eq!(dropped, Some((vec![request(1, "queued").id], Some(NodeId(target)))));
    assert!(cluster.sent_since(start, "timeout_now").is_empty(), "handed over with a slot in flight");
    assert_eq!(
        cluster.propose(primary, request(2, "refused")),
        Err(ProposeError::Relinquishing { target: NodeId(target) })
    );
    let now = cluster.now;
    assert_eq!(
        cluster.replica_mut(primary).handle_read(now),
        Err(ReadError::NotPrimary { hint: Some(NodeId(target)) })
    );
    assert_eq!(cluster.replica(primary).role(), Role::Primary);

    // The in-flight slot becomes durable and chosen: now the target is told to campaign.
    cluster.node_mut(primary).auto_persist = true;
    cluster.release(primary);
    let timeout_now = cluster.sent_since(start, "timeout_now");
    assert_eq!(timeout_now.len(), 1);
    assert_eq!(timeout_now[0].to, NodeId(target));
    assert_eq!(timeout_now[0].body, MessageBody::TimeoutNow { ballot: old_ballot });
    assert_eq!(cluster.replica(primary).chosen(), Slot(1));
    cluster.settle();

    assert_eq!(cluster.agreed_primary(), Some(target), "handed over at once, without an election delay");
    let new_ballot = cluster.replica(target).status().promised;
    assert!(new_ballot > old_ballot);
    assert_eq!(new_ballot.node, NodeId(target));
    assert_eq!(cluster.replica(third).primary_hint(), Some(NodeId(target)));
    assert_eq!(cluster.replica(primary).role(), Role::Secondary);
    assert_eq!(cluster.now, start, "no time passed");

    cluster.propose(target, request(3, "after")).unwrap();
    cluster.settle();
    cluster.advance_ms(50);
    for id in cluster.ids() {
        assert_eq!(cluster.node(id).applied_payloads(), vec!["in-flight", "after"], "node {id}");
    }
    cluster.assert_agreement();
}

#[test]
fn relinquish_gives_up_when_in_flight_slots_do_not_drain_in_time() {
    let mut cluster = Cluster::new(3, |_| {});
    let primary = cluster.elect();
    let target = other_than(&cluster, &[primary])[0];
    cluster.node_mut(primary).auto_persist = false;
    cluster.propose(primary, request(0, "stuck")).unwrap();
    let start = cluster.now;
    assert_eq!(
        cluster.replica_mut(primary).handle_relinquish(start, Some(NodeId(target))),
        Ok(NodeId(target))
    );
    cluster.advance_to(start.plus_us(499_999));
    assert_eq!(
        cluster.propose(primary, request(1, "refused")),
        Err(ProposeError::Relinquishing { target: NodeId(target) })
    );
    cluster.advance_to(start.plus_ms(500));
    cluster.propose(primary, request(2, "taken again")).expect("the hand-over was abandoned");
    assert!(cluster.sent_since(start, "timeout_now").is_empty());
    assert_eq!(cluster.agreed_primary(), Some(primary));

    cluster.node_mut(primary).auto_persist = true;
    cluster.release(primary);
    cluster.advance_ms(50);
    for id in cluster.ids() {
        assert_eq!(cluster.node(id).applied_payloads(), vec!["stuck", "taken again"], "node {id}");
    }
}

#[test]
fn relinquish_without_a_target_picks_a_live_member() {
    let mut cluster = Cluster::new(3, |_| {});
    let primary = cluster.elect();
    let others = other_than(&cluster, &[primary]);
    let now = cluster.now;
    for bad in [primary, 9] {
        assert_eq!(
            cluster.replica_mut(primary).handle_relinquish(now, Some(NodeId(bad))),
            Err(RelinquishError::NotAMember { target: NodeId(bad), configuration: 1 })
        );
    }
    assert_eq!(
        cluster.replica_mut(others[0]).handle_relinquish(now, None),
        Err(RelinquishError::NotPrimary { hint: Some(NodeId(primary)) })
    );

    // One secondary goes silent for longer than an election delay.
    let (silent, live) = (others[0], others[1]);
    let silent_node = NodeId(silent);
    cluster.set_drop(move |m| m.from == silent_node || m.to == silent_node);
    cluster.advance_ms(600);
    assert_eq!(cluster.replica(primary).role(), Role::Primary);
    let now = cluster.now;
    assert_eq!(cluster.replica_mut(primary).handle_relinquish(now, None), Ok(NodeId(live)));
    cluster.settle();
    assert_eq!(cluster.primaries(), vec![live]);
}

#[test]
fn a_vetoed_replica_never_campaigns() {
    let mut cluster = Cluster::new(3, |_| {});
    for id in [1, 2] {
        cluster.replica_mut(id).set_can_become_primary(false);
    }
    assert_eq!(cluster.elect(), 3);
    cluster.advance_ms(3_000);
    for id in [1, 2] {
        assert_eq!(cluster.replica(id).statistics().elections_started, 0, "node {id}");
    }

    // A hand-over to a vetoed replica: it ignores TimeoutNow, and the only replica allowed
    // to campaign is elected again once the old primary's lease guard has passed.
    let now = cluster.now;
    assert_eq!(cluster.replica_mut(3).handle_relinquish(now, Some(NodeId(1))), Ok(NodeId(1)));
    cluster.settle();
    assert_eq!(cluster.sent_since(now, "timeout_now").len(), 1);
    assert!(cluster.primaries().is_empty());
    cluster.advance_ms(5_000);
    assert_eq!(cluster.agreed_primary(), Some(3));
    for id in [1, 2] {
        assert_eq!(cluster.replica(id).statistics().elections_started, 0, "node {id}");
        assert_eq!(cluster.replica(id).statistics().elections_won, 0, "node {id}");
    }
}

#[test]
fn a_single_vetoed_replica_stays_secondary() {
    let mut cluster = Cluster::new(1, |_| {});
    cluster.replica_mut(1).set_can_become_primary(false);
    cluster.advance_ms(10_000);
    assert_eq!(cluster.replica(1).role(), Role::Secondary);
    cluster.replica_mut(1).set_can_become_primary(true);
    assert_eq!(cluster.elect(), 1);
}

// ----- Catch-up -----

#[test]
fn a_replica_that_missed_slots_fetches_them_and_applies_in_order() {
    let mut cluster = Cluster::new(3, |c| {
        c.batch_requests_max = 1;
        c.fetch_slots_max = 8;
    });
    let primary = cluster.elect();
    let lagging = other_than(&cluster, &[primary])[0];
    cluster.isolate(lagging);
    propose_numbered(&mut cluster, primary, "m", 0, 20);
    cluster.settle();
    cluster.advance_ms(50);
    assert_eq!(cluster.node(primary).applied_payloads(), numbered("m", 20));
    assert!(cluster.node(lagging).applied.is_empty());

    cluster.clear_drop();
    let healed = cluster.now;
    cluster.advance_ms(100);
    assert_eq!(cluster.node(lagging).applied_slots(), (1..=20).collect::<Vec<_>>());
    assert_eq!(cluster.node(lagging).applied_payloads(), numbered("m", 20));
    let fetches = cluster.sent_since(healed, "fetch");
    assert!(fetches.len() >= 3, "20 slots at 8 per fetch: {fetches:?}");
    assert!(fetches.iter().all(|m| m.from == NodeId(lagging)));
    assert!(cluster.replica(lagging).statistics().fetches_sent >= 3);
    cluster.assert_agreement();
}

#[test]
fn a_replica_behind_a_truncated_log_installs_a_checkpoint_then_applies_from_there() {
    let mut cluster = Cluster::new(3, |c| {
        c.batch_requests_max = 1;
        c.checkpoint_interval_slots = 5;
        c.log_retain_slots = 2;
        // The primary's own checkpoint at 20 is the one the lagging replica fetches.
        c.primary_saves_checkpoints = true;
    });
    let primary = cluster.elect();
    let lagging = other_than(&cluster, &[primary])[0];
    cluster.isolate(lagging);
    propose_numbered(&mut cluster, primary, "c", 0, 20);
    cluster.settle();
    cluster.advance_ms(50);
    let status = cluster.replica(primary).status();
    assert_eq!((status.checkpoint, status.log_start), (Slot(20), Slot(18)));

    cluster.clear_drop();
    let healed = cluster.now;
    cluster.advance_ms(100);
    let fetch_checkpoint: Vec<_> = cluster
        .node(lagging)
        .actions
        .iter()
        .filter_map(|(_, a)| match a {
            Action::FetchCheckpoint { from, slot } => Some((*from, *slot)),
            _ => None,
        })
        .collect();
    assert_eq!(fetch_checkpoint, vec![(NodeId(primary), Slot(20))]);
    assert!(!cluster.sent_since(healed, "fetch_truncated").is_empty());
    assert!(cluster.node(lagging).applied.is_empty(), "nothing to apply without the checkpoint");

    // Load the primary's state as of slot 20 into the lagging state machine.
    let state: Vec<(Slot, Value)> =
        cluster.node(primary).applied.iter().filter(|(s, _)| *s <= Slot(20)).cloned().collect();
    let now = cluster.now;
    let node = cluster.node_mut(lagging);
    node.load_state(state);
    let configuration = node.replica.status().configuration;
    node.replica.on_checkpoint_installed(now, Slot(20), configuration);
    cluster.drain((lagging - 1) as usize);
    let status = cluster.replica(lagging).status();
    assert_eq!((status.applied, status.checkpoint, status.chosen), (Slot(20), Slot(20), Slot(20)));

    let mark = cluster.node(lagging).applied.len();
    propose_numbered(&mut cluster, primary, "d", 100, 3);
    cluster.settle();
    cluster.advance_ms(50);
    let after: Vec<u64> = cluster.node(lagging).applied[mark..].iter().map(|(s, _)| s.0).collect();
    assert_eq!(after, vec![21, 22, 23]);
    let expected: Vec<String> = numbered("c", 20).into_iter().chain(numbered("d", 3)).collect();
    for id in cluster.ids() {
        assert_eq!(cluster.node(id).applied_payloads(), expected, "node {id}");
    }
    cluster.assert_agreement();
}

// ----- Checkpoints -----

#[test]
fn take_checkpoint_follows_the_apply_of_every_interval_and_truncation_keeps_the_retained_slots() {
    let mut cluster = Cluster::new(1, |c| {
        c.checkpoint_interval_slots = 3;
        c.log_retain_slots = 2;
    });
    cluster.node_mut(1).auto_checkpoint = false;
    cluster.elect();
    let sequence = |cluster: &Cluster| -> Vec<String> {
        cluster
            .node(1)
            .actions
            .iter()
            .filter_map(|(_, a)| match a {
                Action::Apply { slot, .. } => Some(format!("apply {slot}")),
                Action::TakeCheckpoint { slot, .. } => Some(format!("checkpoint {slot}")),
                Action::TruncateLog { below } => Some(format!("truncate {below}")),
                _ => None,
            })
            .collect()
    };
    propose_numbered(&mut cluster, 1, "k", 0, 4);
    assert_eq!(sequence(&cluster), ["apply 1", "apply 2", "apply 3", "checkpoint 3", "apply 4"]);
    // Keeping two slots below checkpoint 3 keeps everything from slot 1.
    let replica = cluster.replica_mut(1);
    replica.on_checkpoint_saved(Slot(3));
    assert_eq!(rsl_testkit::drain(replica), vec![]);
    assert_eq!((replica.status().checkpoint, replica.status().log_start), (Slot(3), Slot(1)));

    propose_numbered(&mut cluster, 1, "k", 4, 3);
    assert_eq!(sequence(&cluster)[5..], ["apply 5", "apply 6", "checkpoint 6", "apply 7"]);
    assert_eq!(cluster.replica(1).statistics().checkpoints_requested, 2);
    let replica = cluster.replica_mut(1);
    replica.on_checkpoint_saved(Slot(6));
    assert_eq!(rsl_testkit::drain(replica), vec![Action::TruncateLog { below: Slot(4) }]);
    assert_eq!((replica.status().checkpoint, replica.status().log_start), (Slot(6), Slot(4)));
    // An older checkpoint changes nothing.
    replica.on_checkpoint_saved(Slot(3));
    assert_eq!(rsl_testkit::drain(replica), vec![]);
    assert_eq!(replica.status().log_start, Slot(4));
}

// ----- Restart -----

#[test]
fn a_restarted_secondary_re_applies_from_its_disk_and_catches_up() {
    let mut cluster = Cluster::new(3, |_| {});
    let primary = cluster.elect();
    let secondary = other_than(&cluster, &[primary])[0];
    // One at a time: each accept carries the previous slot's chosen watermark, which the
    // secondary records as its chosen hint together with the accepted proposal.
    for (i, payload) in numbered("s", 6).iter().enumerate() {
        cluster.propose(primary, request(i as u64, payload)).unwrap();
        cluster.settle();
    }
    cluster.advance_ms(50);
    assert_eq!(cluster.node(secondary).applied.len(), 6);
    assert_eq!(cluster.node(secondary).disk.chosen, Slot(5), "the durable chosen hint lags one slot");
    let promised = cluster.replica(secondary).status().promised;

    cluster.restart(secondary);
    let replica = cluster.replica(secondary);
    assert_eq!(replica.status().promised, promised, "the promise survives a restart");
    assert_eq!(replica.role(), Role::Secondary);
    assert_eq!(replica.chosen(), Slot(5));
    assert_eq!(cluster.node(secondary).applied_payloads(), numbered("s", 5), "re-applied up to the hint");

    cluster.advance_ms(100);
    assert_eq!(cluster.node(secondary).applied_payloads(), numbered("s", 6));
    cluster.assert_agreement();
}

#[test]
fn a_restarted_primary_loses_primacy_and_nothing_chosen_is_lost() {
    let mut cluster = Cluster::new(3, |_| {});
    let primary = cluster.elect();
    propose_numbered(&mut cluster, primary, "t", 0, 4);
    cluster.settle();
    cluster.restart(primary);
    assert_eq!(cluster.replica(primary).role(), Role::Secondary);
    let new_primary = cluster.elect();
    propose_numbered(&mut cluster, new_primary, "u", 10, 2);
    cluster.settle();
    cluster.advance_ms(100);
    let expected: Vec<String> = numbered("t", 4).into_iter().chain(numbered("u", 2)).collect();
    for id in cluster.ids() {
        assert_eq!(cluster.node(id).applied_payloads(), expected, "node {id}");
    }
    cluster.assert_agreement();
}

// ----- Random schedules -----

/// Runs three replicas through a random schedule: random delivery order (and, when
/// `lossy`, a few messages lost or delivered twice), persists completed late and in
/// random-sized groups, time advanced in random steps, proposals at whichever replica is
/// primary. Then heals (FIFO, immediate persists) and lets time pass
/// until the ring converges. Returns every node's applied values.
fn random_schedule(seed: u64, lossy: bool) -> Vec<Vec<(Slot, Value)>> {
    let mut rng = SplitMix64::new(seed);
    let mut cluster = Cluster::new(3, move |c| {
        c.pipeline_depth = 4;
        c.promise_slots_max = 8;
        c.batch_requests_max = 2;
        c.seed = c.seed.wrapping_mul(31).wrapping_add(seed);
    });
    for id in cluster.ids() {
        cluster.node_mut(id).auto_persist = false;
    }
    let mut sequence = 0;
    for _ in 0..1_000 {
        match rng.below(100) {
            0..=54 => {
                if !cluster.network.is_empty() {
                    let position = rng.below(cluster.network.len() as u64) as usize;
                    match rng.below(100) {
                        0..=2 if lossy => cluster.lose_at(position),
                        3..=5 if lossy => cluster.duplicate_at(position),
                        _ => cluster.deliver_at(position),
                    }
                }
            }
            55..=74 => {
                let id = 1 + rng.below(3);
                let withheld = cluster.node(id).withheld.len() as u64;
                if withheld > 0 {
                    cluster.release_some(id, 1 + rng.below(withheld) as usize);
                }
            }
            75..=89 => {
                cluster.now = cluster.now.plus_us(rng.below(150_000));
                cluster.fire_timers();
            }
            _ => {
                let primaries = cluster.primaries();
                if !primaries.is_empty() {
                    let id = primaries[rng.below(primaries.len() as u64) as usize];
                    let next = request(sequence, &format!("req{sequence}"));
                    sequence += 1;
                    // Refusals (a full queue, a primary handing over) are part of the game.
                    let _ = cluster.propose(id, next);
                }
            }
        }
    }
    for id in cluster.ids() {
        cluster.node_mut(id).auto_persist = true;
        cluster.release(id);
    }
    cluster.settle();
    let converged = |cluster: &Cluster| {
        let Some(primary) = cluster.agreed_primary() else { return false };
        let chosen = cluster.replica(primary).chosen();
        cluster
            .ids()
            .all(|id| cluster.replica(id).chosen() == chosen && cluster.node(id).state_slot() == chosen)
    };
    for _ in 0..200 {
        if converged(&cluster) {
            break;
        }
        cluster.advance_ms(50);
    }
    assert!(converged(&cluster), "seed {seed}: no convergence: {cluster:?}");
    cluster.assert_agreement();
    // A request proposed once is applied at most once.
    let applied = cluster.node(1).applied_payloads();
    let mut unique = applied.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), applied.len(), "seed {seed}: a request applied twice");
    // And only proposed requests are applied.
    for payload in &applied {
        let number: u64 =
            payload.strip_prefix("req").and_then(|n| n.parse().ok()).expect("a proposed payload");
        assert!(number < sequence, "seed {seed}: {payload} was never proposed");
    }
    cluster.ids().map(|id| cluster.node(id).applied.clone()).collect()
}

#[test]
fn random_delivery_orders_never_produce_different_applied_sequences() {
    let mut applied_slots = 0;
    for seed in 0..200 {
        let applied = random_schedule(seed, false);
        assert!(applied.iter().all(|a| *a == applied[0]), "seed {seed}: applied sequences differ");
        applied_slots += applied[0].len();
    }
    // The schedules did real work, not just elections.
    assert!(applied_slots > 200, "only {applied_slots} slots applied over 200 schedules");
}

#[test]
fn random_schedules_with_lost_and_duplicated_messages_never_diverge() {
    for seed in 1_000..1_200 {
        let applied = random_schedule(seed, true);
        assert!(applied.iter().all(|a| *a == applied[0]), "seed {seed}: applied sequences differ");
    }
}

#[test]
fn relinquish_without_a_target_is_refused_when_no_member_is_live() {
    let mut cluster = Cluster::new(3, |_| {});
    let primary = cluster.elect();
    cluster.isolate(primary);
    cluster.advance_ms(300);
    // Setting the timing re-arms check-quorum an election delay (500 ms) from now, so the
    // primary is still in office once every member has been silent for that long.
    let (now, timing) = (cluster.now, cluster.replica(primary).timing());
    cluster.replica_mut(primary).handle_change_timing(now, timing).unwrap();
    cluster.advance_ms(300);
    assert_eq!(cluster.replica(primary).role(), Role::Primary, "check-quorum has not stepped it down yet");
    let now = cluster.now;
    assert_eq!(cluster.replica_mut(primary).handle_relinquish(now, None), Err(RelinquishError::NoLiveTarget));
    // Nothing changed: it still takes requests.
    assert_eq!(cluster.propose(primary, request(1, "still primary")), Ok(()));
}

/// Cuts `primary` off from `cut` (both directions); the others still reach it.
fn cut_off_from(cluster: &mut Cluster, primary: u64, cut: Vec<u64>) {
    let p = NodeId(primary);
    let cut: Vec<NodeId> = cut.into_iter().map(NodeId).collect();
    cluster.set_drop(move |m| (m.from == p && cut.contains(&m.to)) || (m.to == p && cut.contains(&m.from)));
}

#[test]
fn check_quorum_counts_the_primary_and_the_members_it_hears_against_a_majority() {
    // Five members: hearing two secondaries (three with itself) keeps it in office.
    let mut cluster = Cluster::new(5, |_| {});
    let primary = cluster.elect();
    let others = other_than(&cluster, &[primary]);
    cut_off_from(&mut cluster, primary, others[..2].to_vec());
    cluster.advance_ms(3_000);
    assert_eq!(cluster.replica(primary).role(), Role::Primary);
    assert_eq!(cluster.replica(primary).statistics().primary_step_downs, 0);
    propose_numbered(&mut cluster, primary, "with three of five", 0, 1);
    cluster.advance_ms(50);
    assert_eq!(cluster.replica(primary).chosen(), Slot(1), "three of five choose");

    // Hearing only one (two of five) it steps down.
    cut_off_from(&mut cluster, primary, others[..3].to_vec());
    cluster.advance_ms(1_100);
    assert_ne!(cluster.replica(primary).role(), Role::Primary);
    assert_eq!(cluster.replica(primary).statistics().primary_step_downs, 1);
}

#[test]
fn acknowledgements_for_an_older_ballot_do_not_choose_a_slot() {
    let mut cluster = Cluster::new(3, |_| {});
    let primary = cluster.elect();
    let ballot = cluster.replica(primary).status().promised;
    cluster.set_drop(|m| matches!(m.body, MessageBody::Accepted { .. }));
    propose_numbered(&mut cluster, primary, "in flight", 0, 1);
    cluster.settle();
    assert_eq!(cluster.replica(primary).chosen(), Slot::ZERO);
    let older = Ballot::new(ballot.round - 1, NodeId(primary));
    for from in other_than(&cluster, &[primary]) {
        let stale = MessageBody::Accepted { ballot: older, slot: Slot(1) };
        cluster.inject(rsl_testkit::message(from, primary, stale)).expect("a well-formed message");
    }
    assert_eq!(cluster.replica(primary).chosen(), Slot::ZERO, "votes for another ballot do not count");
    let from = other_than(&cluster, &[primary])[0];
    cluster
        .inject(rsl_testkit::message(from, primary, MessageBody::Accepted { ballot, slot: Slot(1) }))
        .unwrap();
    assert_eq!(cluster.replica(primary).chosen(), Slot(1), "one current vote and its own make a quorum");
}
