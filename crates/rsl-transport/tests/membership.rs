//! The membership table every endpoint checks inbound messages against: who is admitted to
//! which ring, and how changes to the table take effect (a property test checks `check`
//! against a plain model of the table).

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use rsl_core::{NodeId, RingId};
use rsl_transport::{Admission, Membership};

fn nodes(ids: &[u64]) -> Vec<NodeId> {
    ids.iter().copied().map(NodeId).collect()
}

#[test]
fn an_empty_table_knows_no_ring() {
    let membership = Membership::new();
    assert_eq!(membership.check(RingId(1), NodeId(1)), Admission::UnknownRing);
    assert!(membership.rings().is_empty());
    assert_eq!(membership.members(RingId(1)), None);
}

#[test]
fn members_are_admitted_and_strangers_are_not() {
    let membership = Membership::new();
    membership.set_members(RingId(1), nodes(&[3, 1, 2]));
    assert_eq!(membership.check(RingId(1), NodeId(2)), Admission::Allowed);
    assert_eq!(membership.check(RingId(1), NodeId(9)), Admission::NotAMember);
    assert_eq!(membership.check(RingId(2), NodeId(2)), Admission::UnknownRing);
}

#[test]
fn members_are_kept_sorted_without_duplicates() {
    let membership = Membership::new();
    membership.set_members(RingId(1), nodes(&[3, 1, 3, 2, 1]));
    assert_eq!(membership.members(RingId(1)), Some(nodes(&[1, 2, 3])));
}

#[test]
fn setting_members_again_replaces_them() {
    let membership = Membership::new();
    membership.set_members(RingId(1), nodes(&[1, 2, 3]));
    membership.set_members(RingId(1), nodes(&[2, 3, 4]));
    assert_eq!(membership.check(RingId(1), NodeId(1)), Admission::NotAMember);
    assert_eq!(membership.check(RingId(1), NodeId(4)), Admission::Allowed);
}

#[test]
fn a_removed_ring_is_unknown_again() {
    let membership = Membership::new();
    membership.set_members(RingId(1), nodes(&[1]));
    membership.set_members(RingId(2), nodes(&[1]));
    membership.remove_ring(RingId(1));
    assert_eq!(membership.check(RingId(1), NodeId(1)), Admission::UnknownRing);
    assert_eq!(membership.rings(), vec![RingId(2)]);
}

#[test]
fn a_ring_without_members_admits_nobody() {
    let membership = Membership::new();
    membership.set_members(RingId(1), Vec::new());
    assert_eq!(membership.check(RingId(1), NodeId(1)), Admission::NotAMember);
    assert_eq!(membership.rings(), vec![RingId(1)]);
}

#[test]
fn rings_are_listed_in_order() {
    let membership = Membership::new();
    for ring in [5, 1, 3] {
        membership.set_members(RingId(ring), nodes(&[1]));
    }
    assert_eq!(membership.rings(), vec![RingId(1), RingId(3), RingId(5)]);
}

#[derive(Clone, Debug)]
enum Change {
    Set(u64, Vec<u64>),
    Remove(u64),
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        (0u64..4, proptest::collection::vec(0u64..6, 0..5))
            .prop_map(|(ring, members)| Change::Set(ring, members)),
        (0u64..4).prop_map(Change::Remove),
    ]
}

proptest! {
    #[test]
    fn check_agrees_with_a_model_of_the_table(changes in proptest::collection::vec(change(), 0..20)) {
        let membership = Membership::new();
        let mut model: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
        for change in changes {
            match change {
                Change::Set(ring, members) => {
                    membership.set_members(RingId(ring), nodes(&members));
                    model.insert(ring, members.into_iter().collect());
                }
                Change::Remove(ring) => {
                    membership.remove_ring(RingId(ring));
                    model.remove(&ring);
                }
            }
        }
        for ring in 0..4 {
            for node in 0..6 {
                let expected = match model.get(&ring) {
                    None => Admission::UnknownRing,
                    Some(members) if members.contains(&node) => Admission::Allowed,
                    Some(_) => Admission::NotAMember,
                };
                prop_assert_eq!(membership.check(RingId(ring), NodeId(node)), expected);
            }
        }
        let rings: Vec<RingId> = model.keys().copied().map(RingId).collect();
        prop_assert_eq!(membership.rings(), rings);
    }
}
