//! Configuration changes through the public `Replica` API on `rsl-testkit`'s cluster:
//! every refusal of `handle_change_configuration`, a change chosen and entered by every
//! member, a joining replica that enters the configuration naming it, a removed primary,
//! and a restart that recovers the configuration from the log.

use rsl_core::{Action, ChangeError, Configuration, NodeId, Role, Slot, Value};
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
