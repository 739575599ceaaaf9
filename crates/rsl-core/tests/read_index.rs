//! Read-index reads through the public `Replica` API: the primary confirms its primacy with
//! a round of heartbeats before it answers, a secondary asks the primary, and a primary cut
//! off from its quorum never answers (its reads fail when it steps down).

use rsl_core::{Action, MessageBody, NodeId, ReadError, ReadId, Role, Slot};
use rsl_testkit::{request, Cluster};

/// What node `id` was told about read `read`, in order: `Ok(index)` or the error.
fn outcomes(cluster: &Cluster, id: u64, read: ReadId) -> Vec<Result<Slot, ReadError>> {
    cluster
        .node(id)
        .actions
        .iter()
        .filter_map(|(_, action)| match action {
            Action::ReadIndexReady { id, index } if *id == read => Some(Ok(*index)),
            Action::ReadIndexFailed { id, error } if *id == read => Some(Err(error.clone())),
            _ => None,
        })
        .collect()
}

fn read_index(cluster: &mut Cluster, id: u64, read: u64) -> Result<(), ReadError> {
    let now = cluster.now;
    let result = cluster.replica_mut(id).handle_read_index(now, ReadId(read));
    cluster.drain((id - 1) as usize);
    result
}

fn write(cluster: &mut Cluster, count: u64) {
    let requests = (0..count).map(|i| request(1_000 + i, &format!("w{i}"))).collect();
    cluster.propose_and_apply(requests);
    // Reads come a little later than the heartbeat that carried the last watermark (one
    // sent at the very time a read arrives proves nothing for it).
    cluster.advance_ms(1);
}

fn others(cluster: &Cluster, primary: u64) -> Vec<u64> {
    cluster.ids().filter(|&id| id != primary).collect()
}

#[test]
fn the_primary_answers_only_after_a_quorum_echoed_a_later_heartbeat() {
    // No lease at all: heartbeats are the only proof, and the lease never covers a read.
    let mut cluster = Cluster::new(3, |c| c.clock_drift_max_ppm = 499_999);
    let primary = cluster.elect();
    write(&mut cluster, 3);
    let chosen = cluster.replica(primary).chosen();
    let since = cluster.now;
    read_index(&mut cluster, primary, 1).unwrap();
    assert_eq!(outcomes(&cluster, primary, ReadId(1)), vec![], "not before the round");
    let round = cluster.sent_since(since, "heartbeat");
    assert_eq!(round.len(), 2, "one heartbeat to each secondary, at once");
    cluster.settle();
    assert_eq!(outcomes(&cluster, primary, ReadId(1)), vec![Ok(chosen)]);
    assert_eq!(cluster.replica(primary).pending_read_indexes(), 0);
}

#[test]
fn concurrent_reads_share_one_round() {
    let mut cluster = Cluster::new(3, |_| {});
    let primary = cluster.elect();
    write(&mut cluster, 2);
    let rounds_before = cluster.replica(primary).statistics().read_index_rounds_confirmed;
    let since = cluster.now;
    let now = cluster.now;
    let results = cluster.replica_mut(primary).handle_read_index_many(now, (1..=10).map(ReadId));
    assert!(results.iter().all(Result::is_ok));
    cluster.drain((primary - 1) as usize);
    assert_eq!(cluster.sent_since(since, "heartbeat").len(), 2, "ten reads, one round");
    cluster.settle();
    let chosen = cluster.replica(primary).chosen();
    for read in 1..=10 {
        assert_eq!(outcomes(&cluster, primary, ReadId(read)), vec![Ok(chosen)]);
    }
    assert_eq!(cluster.replica(primary).statistics().read_index_rounds_confirmed, rounds_before + 1);
}

#[test]
fn a_read_that_arrives_during_a_round_waits_for_the_next() {
    let mut cluster = Cluster::new(3, |_| {});
    let primary = cluster.elect();
    write(&mut cluster, 1);
    read_index(&mut cluster, primary, 1).unwrap();
    // A write is chosen while the first round is in flight; the second read must see it.
    cluster.propose(primary, request(5_000, "later")).unwrap();
    read_index(&mut cluster, primary, 2).unwrap();
    cluster.settle();
    assert_eq!(outcomes(&cluster, primary, ReadId(1)), vec![Ok(Slot(1))]);
    assert_eq!(outcomes(&cluster, primary, ReadId(2)), vec![], "it needs a heartbeat sent after it arrived");
    cluster.advance_ms(1);
    assert_eq!(outcomes(&cluster, primary, ReadId(2)), vec![Ok(Slot(2))]);
    let rounds = cluster.replica(primary).statistics().read_index_rounds_confirmed;
    assert_eq!(rounds, 2);
}

#[test]
fn a_primary_cut_off_from_its_quorum_never_answers_and_fails_its_reads_when_it_steps_down() {
    let mut cluster = Cluster::new(3, |_| {});
    let primary = cluster.elect();
    write(&mut cluster, 2);
    cluster.isolate(primary);
    read_index(&mut cluster, primary, 1).unwrap();
    // Well past the lease and several heartbeats: still no answer while it is primary.
    cluster.advance_ms(400);
    assert_eq!(cluster.replica(primary).role(), Role::Primary);
    assert_eq!(outcomes(&cluster, primary, ReadId(1)), vec![]);
    cluster.advance_ms(2_000);
    assert_ne!(cluster.replica(primary).role(), Role::Primary, "check-quorum stepped it down");
    assert!(matches!(outcomes(&cluster, primary, ReadId(1))[..], [Err(ReadError::NotPrimary { .. })]));
    assert_eq!(cluster.replica(primary).pending_read_indexes(), 0);
}

#[test]
fn a_secondary_reads_at_the_index_the_primary_confirmed() {
    let mut cluster = Cluster::new(3, |_| {});
    let primary = cluster.elect();
    write(&mut cluster, 4);
    let secondary = others(&cluster, primary)[0];
    let since = cluster.now;
    read_index(&mut cluster, secondary, 7).unwrap();
    assert_eq!(cluster.sent_since(since, "read_index_request").len(), 1);
    cluster.settle();
    let chosen = cluster.replica(primary).chosen();
    assert_eq!(outcomes(&cluster, secondary, ReadId(7)), vec![Ok(chosen)]);
    assert_eq!(cluster.sent_since(since, "read_index_reply").len(), 1);
    assert_eq!(cluster.replica(secondary).pending_read_indexes(), 0);
}

#[test]
fn a_secondary_with_no_primary_refuses_and_an_unanswered_read_expires() {
    let mut cluster = Cluster::new(3, |_| {});
    assert_eq!(read_index(&mut cluster, 2, 1), Err(ReadError::NotPrimary { hint: None }));
    let primary = cluster.elect();
    let secondary = others(&cluster, primary)[0];
    // The request never reaches the primary.
    cluster.set_drop(|m| matches!(m.body, MessageBody::ReadIndexRequest { .. }));
    read_index(&mut cluster, secondary, 2).unwrap();
    cluster.advance_ms(499);
    assert_eq!(outcomes(&cluster, secondary, ReadId(2)), vec![]);
    cluster.advance_ms(2);
    assert_eq!(
        outcomes(&cluster, secondary, ReadId(2)),
        vec![Err(ReadError::NoAnswer { primary: NodeId(primary), after_ms: 500 })]
    );
}

#[test]
fn a_replica_that_is_not_primary_refuses_a_forwarded_read() {
    let mut cluster = Cluster::new(3, |_| {});
    let primary = cluster.elect();
    let [a, b] = others(&cluster, primary)[..] else { panic!("two secondaries") };
    // b asks a, which is no primary, as if it still followed an old one.
    let message = rsl_core::Message {
        ring: cluster.sent[0].1.ring,
        from: NodeId(b),
        to: NodeId(a),
        configuration: 1,
        body: MessageBody::ReadIndexRequest { id: ReadId(3) },
    };
    let since = cluster.now;
    cluster.inject(message).expect("a valid message");
    let refused = cluster.sent_since(since, "read_index_refused");
    assert!(matches!(
        refused[..],
        [m] if m.body == MessageBody::ReadIndexRefused {
            id: ReadId(3),
            reason: rsl_core::ReadIndexRefusal::NotPrimary { hint: Some(NodeId(primary)) }
        }
    ));
}

#[test]
fn reads_beyond_the_pending_maximum_are_refused_as_busy() {
    let mut cluster = Cluster::new(3, |c| c.read_index_pending_max = 2);
    let primary = cluster.elect();
    cluster.isolate(primary);
    read_index(&mut cluster, primary, 1).unwrap();
    read_index(&mut cluster, primary, 2).unwrap();
    assert_eq!(read_index(&mut cluster, primary, 3), Err(ReadError::Busy { pending: 2, max: 2 }));
}

#[test]
fn a_new_primary_answers_only_once_it_chose_what_it_inherited() {
    let mut cluster = Cluster::new(3, |_| {});
    let first = cluster.elect();
    write(&mut cluster, 1);
    // A slot the secondaries accept but the primary never learns is chosen.
    cluster.set_drop(move |m| m.to == NodeId(first) && matches!(m.body, MessageBody::Accepted { .. }));
    cluster.propose(first, request(9_000, "inherited")).unwrap();
    cluster.settle();
    let inherited = cluster.replica(first).chosen().next();
    // Cut the old primary off, and keep the next one from choosing the inherited slot.
    let cut_off = move |m: &rsl_core::Message| m.from == NodeId(first) || m.to == NodeId(first);
    cluster.set_drop(move |m| cut_off(m) || matches!(m.body, MessageBody::Accepted { .. }));
    let mut primary = None;
    for _ in 0..500 {
        cluster.advance_ms(10);
        primary = cluster.primaries().into_iter().find(|&p| p != first);
        if primary.is_some() {
            break;
        }
    }
    let primary = primary.expect("a new primary");
    assert!(cluster.replica(primary).chosen() < inherited, "still recovering");
    read_index(&mut cluster, primary, 1).unwrap();
    cluster.advance_ms(200);
    assert_eq!(outcomes(&cluster, primary, ReadId(1)), vec![], "no answer before the takeover is complete");
    // Accepts flow again: the inherited slot is chosen, then a round confirms the read.
    cluster.set_drop(cut_off);
    cluster.advance_ms(200);
    assert!(cluster.replica(primary).chosen() >= inherited);
    assert_eq!(outcomes(&cluster, primary, ReadId(1)), vec![Ok(inherited)]);
}

#[test]
fn a_deposed_primary_reads_through_the_new_one_once_the_partition_heals() {
    let mut cluster = Cluster::new(3, |_| {});
    let old = cluster.elect();
    write(&mut cluster, 2);
    cluster.isolate(old);
    read_index(&mut cluster, old, 1).unwrap();
    cluster.advance_ms(3_000);
    assert!(matches!(outcomes(&cluster, old, ReadId(1))[..], [Err(ReadError::NotPrimary { .. })]));
    assert_eq!(read_index(&mut cluster, old, 2), Err(ReadError::NotPrimary { hint: None }));
    let new = cluster.primaries().into_iter().find(|&p| p != old).expect("the majority elected a primary");
    cluster.propose(new, request(7_000, "after")).unwrap();
    cluster.advance_ms(100);
    cluster.clear_drop();
    cluster.advance_ms(200);
    assert_eq!(cluster.replica(old).primary_hint(), Some(NodeId(new)));
    read_index(&mut cluster, old, 3).unwrap();
    cluster.advance_ms(100);
    let chosen = cluster.replica(new).chosen();
    assert_eq!(outcomes(&cluster, old, ReadId(3)), vec![Ok(chosen)]);
    assert!(cluster.replica(old).chosen() >= chosen);
}

#[test]
fn a_replica_removed_from_the_configuration_refuses_rather_than_forwards() {
    let mut cluster = Cluster::new(3, |_| {});
    let primary = cluster.elect();
    let removed = others(&cluster, primary)[0];
    let members: Vec<NodeId> = cluster.ids().filter(|&id| id != removed).map(NodeId).collect();
    let now = cluster.now;
    cluster.replica_mut(primary).handle_change_configuration(now, members).unwrap();
    cluster.drain((primary - 1) as usize);
    cluster.advance_ms(200);
    let status = cluster.replica(removed).status();
    assert!(!status.member && status.configuration.number == 2, "{status:?}");
    assert_eq!(cluster.replica(removed).primary_hint(), Some(NodeId(primary)));
    // The primary would drop a request from a non-member, and the replica would never
    // apply the index: it names the primary instead.
    assert_eq!(
        read_index(&mut cluster, removed, 1),
        Err(ReadError::NotPrimary { hint: Some(NodeId(primary)) })
    );
}

/// A primary with one request in flight that was asked to hand over to `target`: it stays
/// relinquishing until that slot is chosen (nothing is delivered yet).
fn relinquishing(cluster: &mut Cluster, primary: u64, target: u64) {
    cluster.propose(primary, request(8_000, "in flight")).expect("proposed");
    let now = cluster.now;
    cluster.replica_mut(primary).handle_relinquish(now, Some(NodeId(target))).expect("relinquish");
    cluster.drain((primary - 1) as usize);
}

#[test]
fn a_relinquishing_primary_refuses_reads_naming_its_successor() {
    let mut cluster = Cluster::new(3, |_| {});
    let primary = cluster.elect();
    let [target, asker] = others(&cluster, primary)[..] else { panic!("two secondaries") };
    // The secondary's request is queued ahead of everything the handover sends.
    read_index(&mut cluster, asker, 4).unwrap();
    relinquishing(&mut cluster, primary, target);
    assert_eq!(
        read_index(&mut cluster, primary, 1),
        Err(ReadError::NotPrimary { hint: Some(NodeId(target)) })
    );
    let since = cluster.now;
    cluster.settle();
    assert!(cluster.sent_since(since, "read_index_refused").iter().any(|m| m.to == NodeId(asker)));
    assert_eq!(
        outcomes(&cluster, asker, ReadId(4)),
        vec![Err(ReadError::NotPrimary { hint: Some(NodeId(target)) })]
    );
    assert_eq!(cluster.replica(asker).pending_read_indexes(), 0);
}

/// A primary whose heartbeats go unanswered, so its reads stay pending.
fn unconfirmed_primary(cluster: &mut Cluster) -> u64 {
    let primary = cluster.elect();
    cluster.set_drop(|m| matches!(m.body, MessageBody::HeartbeatReply { .. }));
    primary
}

#[test]
fn a_primary_at_its_pending_maximum_refuses_a_forwarded_read_as_busy() {
    let mut cluster = Cluster::new(3, |c| c.read_index_pending_max = 1);
    let primary = unconfirmed_primary(&mut cluster);
    read_index(&mut cluster, primary, 1).unwrap();
    let secondary = others(&cluster, primary)[0];
    read_index(&mut cluster, secondary, 2).unwrap();
    cluster.settle();
    assert_eq!(outcomes(&cluster, secondary, ReadId(2)), vec![Err(ReadError::Busy { pending: 1, max: 1 })]);
    assert_eq!(cluster.replica(primary).pending_read_indexes(), 1, "only its own read waits");
}

#[test]
fn a_secondary_at_its_pending_maximum_refuses_before_forwarding() {
    let mut cluster = Cluster::new(3, |c| c.read_index_pending_max = 2);
    let primary = cluster.elect();
    let secondary = others(&cluster, primary)[0];
    cluster.set_drop(|m| matches!(m.body, MessageBody::ReadIndexRequest { .. }));
    let since = cluster.now;
    read_index(&mut cluster, secondary, 1).unwrap();
    read_index(&mut cluster, secondary, 2).unwrap();
    assert_eq!(read_index(&mut cluster, secondary, 3), Err(ReadError::Busy { pending: 2, max: 2 }));
    assert_eq!(cluster.sent_since(since, "read_index_request").len(), 2, "the third was not forwarded");
    assert_eq!(cluster.replica(secondary).pending_read_indexes(), 2);
}

#[test]
fn answers_from_a_replica_the_read_was_not_asked_of_are_ignored() {
    let mut cluster = Cluster::new(3, |_| {});
    let primary = unconfirmed_primary(&mut cluster);
    let [secondary, other] = others(&cluster, primary)[..] else { panic!("two secondaries") };
    read_index(&mut cluster, secondary, 5).unwrap();
    cluster.settle();
    let refusal = MessageBody::ReadIndexRefused { id: ReadId(5), reason: rsl_core::ReadIndexRefusal::Busy };
    cluster.inject(rsl_testkit::message(other, secondary, refusal)).expect("a valid message");
    assert_eq!(outcomes(&cluster, secondary, ReadId(5)), vec![], "the read is still the primary's to answer");
    assert_eq!(cluster.replica(secondary).pending_read_indexes(), 1);
    // The primary's own refusal does end it.
    let refusal = MessageBody::ReadIndexRefused {
        id: ReadId(5),
        reason: rsl_core::ReadIndexRefusal::NotPrimary { hint: Some(NodeId(other)) },
    };
    cluster.inject(rsl_testkit::message(primary, secondary, refusal)).expect("a valid message");
    assert_eq!(
        outcomes(&cluster, secondary, ReadId(5)),
        vec![Err(ReadError::NotPrimary { hint: Some(NodeId(other)) })]
    );
}

#[test]
fn a_primary_that_steps_down_refuses_the_reads_secondaries_forwarded() {
    let mut cluster = Cluster::new(3, |_| {});
    let primary = unconfirmed_primary(&mut cluster);
    let secondary = others(&cluster, primary)[0];
    read_index(&mut cluster, secondary, 6).unwrap();
    cluster.settle();
    assert_eq!(cluster.replica(primary).pending_read_indexes(), 1);
    // No heartbeat reply ever arrives: check-quorum steps it down.
    let since = cluster.now;
    for _ in 0..300 {
        cluster.advance_ms(10);
        if cluster.replica(primary).role() != Role::Primary {
            break;
        }
    }
    assert_ne!(cluster.replica(primary).role(), Role::Primary);
    let refused = cluster.sent_since(since, "read_index_refused");
    assert!(
        refused.iter().any(|m| m.from == NodeId(primary)
            && m.to == NodeId(secondary)
            && matches!(
                m.body,
                MessageBody::ReadIndexRefused {
                    id: ReadId(6),
                    reason: rsl_core::ReadIndexRefusal::NotPrimary { .. }
                }
            )),
        "{refused:?}"
    );
    assert_eq!(cluster.replica(primary).pending_read_indexes(), 0);
}

#[test]
fn many_reads_at_a_secondary_are_forwarded_up_to_the_maximum_and_all_answered() {
    let mut cluster = Cluster::new(3, |c| c.read_index_pending_max = 3);
    let primary = cluster.elect();
    write(&mut cluster, 2);
    let secondary = others(&cluster, primary)[0];
    let now = cluster.now;
    let results = cluster.replica_mut(secondary).handle_read_index_many(now, (1..=4).map(ReadId));
    assert_eq!(results, vec![Ok(()), Ok(()), Ok(()), Err(ReadError::Busy { pending: 3, max: 3 })]);
    cluster.drain((secondary - 1) as usize);
    let rounds_before = cluster.replica(primary).statistics().read_index_rounds_confirmed;
    // The requests reach the primary one by one: the first gets a round at once, the two
    // that arrive while it is in flight share the next one.
    cluster.advance_ms(1);
    let chosen = cluster.replica(primary).chosen();
    for read in 1..=3 {
        assert_eq!(outcomes(&cluster, secondary, ReadId(read)), vec![Ok(chosen)], "read {read}");
    }
    assert_eq!(outcomes(&cluster, secondary, ReadId(4)), vec![], "the refused read was never started");
    assert_eq!(
        cluster.replica(primary).statistics().read_index_rounds_confirmed,
        rounds_before + 2,
        "two rounds for three reads"
    );
}
