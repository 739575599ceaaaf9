//! Configuration changes through the public `Replica` API on `rsl-testkit`'s cluster:
//! every refusal of `handle_change_configuration`, a change chosen and entered by every
//! member, a joining replica that enters the configuration naming it, a removed primary,
//! and a restart that recovers the configuration from the log.

use rsl_core::{
    Action, ChangeError, Configuration, MemberAddress, MembershipChange, NodeId, Role, Slot, Value,
};
use rsl_testkit::{request, Cluster};

fn nodes(ids: &[u64]) -> Vec<NodeId> {
    ids.iter().copied().map(NodeId).collect()
}

/// Changes the members at the agreed primary and runs until every node in `wait_for` is
/// in the new configuration.
fn change_and_settle(cluster: &mut Cluster, members: &[u64], wait_for: &[u64]) -> u64 {
    let primary = elect_among(cluster, &[1, 2, 3]);
    let now = cluster.now;
    cluster
        .replica_mut(primary)
        .handle_change_configuration(now, nodes(members))
        .expect("the change is taken");
    cluster.drain((primary - 1) as usize);
    for _ in 0..2_000 {
        cluster.settle();
        if wait_for.iter().all(|&id| cluster.replica(id).status().configuration.members == nodes(members)) {
            return primary;
        }
        cluster.advance_ms(5);
    }
    panic!("the change to {members:?} was not entered by {wait_for:?}");
}

/// Lets time pass until one of `voters` is primary and the others follow it.
fn elect_among(cluster: &mut Cluster, voters: &[u64]) -> u64 {
    for _ in 0..1_000 {
        let primaries: Vec<u64> =
            voters.iter().copied().filter(|&id| cluster.replica(id).role() == Role::Primary).collect();
        if let [primary] = primaries[..] {
            if voters.iter().all(|&id| cluster.replica(id).primary_hint() == Some(NodeId(primary))) {
                return primary;
            }
        }
        cluster.advance_ms(10);
    }
    panic!("no primary among {voters:?}");
}

fn configurations_told(cluster: &Cluster, id: u64) -> Vec<(Slot, Configuration)> {
    cluster
        .node(id)
        .actions
        .iter()
        .filter_map(|(_, action)| match action {
            Action::Apply { slot, value: Value::Configuration(c) } => Some((*slot, c.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_secondary_refuses_a_change_naming_the_primary() {
    let mut cluster = Cluster::new(3, |_| {});
    let primary = cluster.elect();
    let secondary = cluster.ids().find(|&id| id != primary).unwrap();
    let now = cluster.now;
    let error = cluster.replica_mut(secondary).handle_change_configuration(now, nodes(&[1, 2])).unwrap_err();
    assert_eq!(error, ChangeError::NotPrimary { hint: Some(NodeId(primary)) });
}

#[test]
fn a_replica_that_knows_no_primary_refuses_without_a_hint() {
    let mut cluster = Cluster::new(3, |_| {});
    let now = cluster.now;
    let error = cluster.replica_mut(1).handle_change_configuration(now, nodes(&[1, 2])).unwrap_err();
    assert_eq!(error, ChangeError::NotPrimary { hint: None });
}

fn refused(members: &[u64]) -> ChangeError {
    let mut cluster = Cluster::new(3, |_| {});
    let primary = cluster.elect();
    let now = cluster.now;
    let error = cluster.replica_mut(primary).handle_change_configuration(now, nodes(members)).unwrap_err();
    assert_eq!(cluster.replica(primary).status().configuration.number, 1, "nothing changed");
    error
}

fn reason(error: ChangeError) -> String {
    match error {
        ChangeError::Invalid { reason, .. } => reason,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn a_member_named_twice_is_refused() {
    assert!(reason(refused(&[1, 2, 2])).contains("named twice"));
}

#[test]
fn an_empty_member_list_is_refused() {
    let error = refused(&[]);
    assert!(matches!(&error, ChangeError::Invalid { members, .. } if members.is_empty()), "{error:?}");
    assert!(reason(error).contains("at least one of them a member"), "the reason says what is missing");
}

#[test]
fn too_many_members_are_refused() {
    let many: Vec<u64> = (1..=(rsl_core::MEMBERS_MAX as u64 + 1)).collect();
    assert!(reason(refused(&many)).contains(&format!("1..={}", rsl_core::MEMBERS_MAX)));
}

#[test]
fn node_zero_is_refused_as_reserved() {
    assert!(reason(refused(&[0, 1, 2])).contains("node 0"));
}

#[test]
fn the_same_members_are_refused_as_no_change() {
    assert!(reason(refused(&[3, 1, 2])).contains("already has exactly these members"));
}

#[test]
fn a_second_change_while_the_first_waits_is_refused_in_progress() {
    let mut cluster = Cluster::new(3, |_| {});
    let primary = cluster.elect();
    let now = cluster.now;
    let replica = cluster.replica_mut(primary);
    replica.handle_change_configuration(now, nodes(&[1, 2])).expect("first");
    let error = replica.handle_change_configuration(now, nodes(&[2, 3])).unwrap_err();
    assert_eq!(error, ChangeError::InProgress { members: nodes(&[1, 2]) });
}

#[test]
fn a_relinquishing_primary_refuses_a_change() {
    let mut cluster = Cluster::new(3, |_| {});
    let primary = cluster.elect();
    let target = cluster.ids().find(|&id| id != primary).unwrap();
    // Hold the primary's in-flight slot so the handover waits.
    cluster.propose(primary, request(1, "in flight")).expect("proposed");
    let now = cluster.now;
    let replica = cluster.replica_mut(primary);
    replica.handle_relinquish(now, Some(NodeId(target))).expect("relinquish");
    let error = replica.handle_change_configuration(now, nodes(&[1, 2])).unwrap_err();
    assert_eq!(error, ChangeError::Relinquishing { target: NodeId(target) });
}

#[test]
fn removing_a_secondary_is_chosen_and_entered_by_every_remaining_member() {
    let mut cluster = Cluster::new(3, |_| {});
    let primary = cluster.elect();
    let removed = cluster.ids().find(|&id| id != primary).unwrap();
    let keep: Vec<u64> = cluster.ids().filter(|&id| id != removed).collect();
    change_and_settle(&mut cluster, &keep, &keep);
    for &id in &keep {
        let status = cluster.replica(id).status();
        assert_eq!(status.configuration.number, 2);
        assert_eq!(status.configuration.members, nodes(&keep));
        let told = configurations_told(&cluster, id);
        assert_eq!(told.len(), 1, "{told:?}");
        assert_eq!(status.configuration.first_slot, told[0].0.next(), "in force from the next slot");
        assert_eq!(cluster.replica(id).statistics().configurations_entered, 1);
    }
    // The two left choose requests between them.
    let primary = cluster.elect();
    assert!(keep.contains(&primary));
    let now = cluster.now;
    cluster.replica_mut(primary).handle_propose(now, request(7, "after")).expect("proposed");
    cluster.drain((primary - 1) as usize);
    for _ in 0..200 {
        cluster.settle();
        cluster.advance_ms(5);
    }
    for &id in &keep {
        assert!(cluster.node(id).applied_payloads().contains(&"after".to_owned()));
    }
    cluster.assert_agreement();
}

#[test]
fn a_removed_primary_steps_down_and_the_rest_elect_another() {
    let mut cluster = Cluster::new(3, |_| {});
    let primary = cluster.elect();
    let keep: Vec<u64> = cluster.ids().filter(|&id| id != primary).collect();
    change_and_settle(&mut cluster, &keep, &keep);
    for _ in 0..2_000 {
        if keep.iter().any(|&id| cluster.replica(id).role() == Role::Primary) {
            break;
        }
        cluster.advance_ms(5);
    }
    let new = keep.iter().copied().find(|&id| cluster.replica(id).role() == Role::Primary);
    assert!(new.is_some(), "one of {keep:?} took over");
    assert_ne!(cluster.replica(primary).role(), Role::Primary, "the removed primary stepped down");
    assert!(
        !cluster.replica(primary).status().member
            || cluster.replica(primary).status().configuration.number == 1
    );
}

#[test]
fn a_joining_replica_enters_the_configuration_that_names_it() {
    let mut cluster = Cluster::new(4, |config| {
        config.members = nodes(&[1, 2, 3]);
        config.joining = config.node == NodeId(4);
    });
    assert!(!cluster.replica(4).status().member, "joining: not a member yet");
    change_and_settle(&mut cluster, &[1, 2, 3, 4], &[1, 2, 3, 4]);
    let status = cluster.replica(4).status();
    assert!(status.member);
    assert_eq!(status.configuration.members, nodes(&[1, 2, 3, 4]));
    cluster.assert_agreement();
}

#[test]
fn a_restarted_replica_recovers_the_configuration_from_its_log() {
    let mut cluster = Cluster::new(3, |_| {});
    cluster.elect();
    change_and_settle(&mut cluster, &[1, 2], &[1, 2]);
    let before = cluster.replica(2).status().configuration;
    cluster.restart(2);
    assert_eq!(cluster.replica(2).status().configuration, before);
    assert!(cluster.replica(2).status().member);
}

#[test]
fn a_closed_ring_refuses_a_change_as_invalid() {
    let mut cluster = Cluster::new(1, |_| {});
    let primary = cluster.elect();
    let now = cluster.now;
    cluster.replica_mut(primary).handle_propose_exclusive(now, request(1, "last"), true).expect("last");
    cluster.drain(0);
    for _ in 0..100 {
        cluster.settle();
        if cluster.replica(primary).status().last_slot.is_some() {
            break;
        }
        cluster.advance_ms(5);
    }
    let now = cluster.now;
    let error = cluster.replica_mut(primary).handle_change_configuration(now, nodes(&[1, 2])).unwrap_err();
    assert!(reason(error).contains("closed"));
}

/// What node `id` was told of changes its primacy interrupted.
fn interruptions(cluster: &Cluster, id: u64) -> Vec<(Vec<NodeId>, Option<NodeId>)> {
    cluster
        .node(id)
        .actions
        .iter()
        .filter_map(|(_, action)| match action {
            Action::ConfigurationChangeInterrupted { members, primary } => Some((members.clone(), *primary)),
            _ => None,
        })
        .collect()
}

/// Runs until `old` is no longer primary and another node is; returns the new primary.
fn run_until_deposed(cluster: &mut Cluster, old: u64) -> u64 {
    for _ in 0..500 {
        cluster.advance_ms(10);
        if cluster.replica(old).role() != Role::Primary {
            if let Some(new) = cluster.primaries().into_iter().find(|&p| p != old) {
                return new;
            }
        }
    }
    panic!("node {old} was never deposed");
}

#[test]
fn a_change_waiting_for_pipeline_room_is_refused_again_and_interrupted_when_the_primary_steps_down() {
    let mut cluster = Cluster::new(3, |c| c.pipeline_depth = 1);
    let primary = cluster.elect();
    // The one pipeline slot stays in flight: the change waits for room.
    cluster.set_drop(move |m| {
        m.to == NodeId(primary) && matches!(m.body, rsl_core::MessageBody::Accepted { .. })
    });
    cluster.propose(primary, request(1, "in flight")).expect("proposed");
    let now = cluster.now;
    let replica = cluster.replica_mut(primary);
    replica.handle_change_configuration(now, nodes(&[1, 2])).expect("taken, waiting");
    let error = replica.handle_change_configuration(now, nodes(&[2, 3])).unwrap_err();
    assert_eq!(error, ChangeError::InProgress { members: nodes(&[1, 2]) });
    cluster.drain((primary - 1) as usize);
    // Cut off, the primary steps down on check-quorum, knowing no successor.
    cluster.isolate(primary);
    cluster.advance_ms(3_000);
    assert_ne!(cluster.replica(primary).role(), Role::Primary);
    assert_eq!(interruptions(&cluster, primary), vec![(nodes(&[1, 2]), None)]);
    assert_eq!(cluster.replica(primary).status().configuration.number, 1, "the change was never proposed");
}

#[test]
fn a_proposed_change_is_reported_interrupted_naming_the_new_primary() {
    let mut cluster = Cluster::new(3, |_| {});
    let old = cluster.elect();
    // Nothing the old primary sends arrives: its change is proposed but never chosen.
    cluster.set_drop(move |m| m.from == NodeId(old));
    let now = cluster.now;
    cluster.replica_mut(old).handle_change_configuration(now, nodes(&[1, 2])).expect("taken");
    cluster.drain((old - 1) as usize);
    let new = run_until_deposed(&mut cluster, old);
    // Once it hears the new primary, it steps down following it.
    cluster.clear_drop();
    for _ in 0..100 {
        cluster.advance_ms(10);
        if !interruptions(&cluster, old).is_empty() {
            break;
        }
    }
    let told = interruptions(&cluster, old);
    assert!(matches!(&told[..], [(members, _)] if *members == nodes(&[1, 2])), "{told:?}");
    assert_ne!(cluster.replica(old).role(), Role::Primary);
    assert_eq!(cluster.replica(old).primary_hint(), Some(NodeId(new)));
}

fn address(node: u64, replica: &str) -> MemberAddress {
    MemberAddress { node: NodeId(node), replica: replica.into(), client: format!("{replica}/client") }
}

#[test]
fn a_change_of_addresses_alone_is_chosen_and_carried_by_the_configuration() {
    let mut cluster = Cluster::new(3, |_| {});
    let primary = cluster.elect();
    let now = cluster.now;
    let change = MembershipChange::new(nodes(&[1, 2, 3]), Vec::new())
        .with_addresses(vec![address(2, "http://two"), address(3, "http://three")]);
    cluster.replica_mut(primary).handle_change_configuration(now, change).expect("a new address is a change");
    cluster.drain((primary - 1) as usize);
    cluster.advance_ms(100);
    for id in cluster.ids() {
        let configuration = cluster.replica(id).status().configuration;
        assert_eq!(configuration.number, 2, "node {id}");
        assert_eq!(configuration.address(NodeId(2)), Some(&address(2, "http://two")));
        assert_eq!(configuration.address(NodeId(1)), None);
    }
    // The same addresses again are no change.
    let now = cluster.now;
    let again =
        MembershipChange::new(nodes(&[1, 2, 3]), Vec::new()).with_addresses(vec![address(3, "http://three")]);
    let error = cluster.replica_mut(primary).handle_change_configuration(now, again).unwrap_err();
    assert!(reason(error).contains("already has exactly these"));
}

#[test]
fn a_change_with_an_unusable_address_is_refused_naming_the_node() {
    let mut cluster = Cluster::new(3, |_| {});
    let primary = cluster.elect();
    let now = cluster.now;
    let empty = MembershipChange::from(nodes(&[1, 2, 3])).with_addresses(vec![address(2, "")]);
    let error = cluster.replica_mut(primary).handle_change_configuration(now, empty).unwrap_err();
    assert!(matches!(&error, ChangeError::Invalid { members, .. } if *members == nodes(&[1, 2, 3])));
    assert!(reason(error).contains("n2's replica address is empty"));
    let long = MembershipChange::from(nodes(&[1, 2])).with_addresses(vec![address(1, &"x".repeat(300))]);
    let error = cluster.replica_mut(primary).handle_change_configuration(now, long).unwrap_err();
    assert!(reason(error).contains("n1's address is longer than"));
}

#[test]
fn a_ring_at_the_last_configuration_number_refuses_any_change() {
    let last = rsl_core::CONFIGURATION_NUMBER_MAX - 1;
    let durable = rsl_core::DurableState {
        configuration: Some(Configuration::new(last, nodes(&[1]), Slot(1))),
        ..rsl_core::DurableState::default()
    };
    let mut replica = rsl_core::Replica::new(rsl_testkit::config(1, 1), durable, rsl_core::Time(0)).unwrap();
    // Alone, it elects itself once its timers fire and its promise is durable.
    let mut now = rsl_core::Time(0);
    for _ in 0..100 {
        if replica.role() == Role::Primary {
            break;
        }
        now = replica.poll_timeout().expect("a timer is armed");
        replica.handle_timeout(now);
        for write in rsl_testkit::persists(&rsl_testkit::drain(&mut replica)) {
            replica.on_persisted(now, write.ticket);
        }
    }
    assert_eq!(replica.role(), Role::Primary);
    assert!(replica.status().promised.round > Configuration::new(last, nodes(&[1]), Slot(1)).round_floor());
    let error = replica.handle_change_configuration(now, nodes(&[1, 2])).unwrap_err();
    assert_eq!(reason(error), format!("configuration numbers are exhausted at {last}"));
}
