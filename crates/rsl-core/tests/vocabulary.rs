//! The core's vocabulary types and helpers, each with the property callers rely on: slot
//! arithmetic, ballot order and successors, configurations (sorted members, quorum, round
//! floors), saturating time, and the seeded generator's ranges (property tests).

use proptest::prelude::*;
use rsl_core::{
    mix64, Ballot, Batch, Configuration, MemberAddress, Micros, NodeId, ReadId, Slot, SplitMix64, Time,
    CONFIGURATION_ROUND_BITS,
};
use rsl_testkit::request;

#[test]
fn a_slot_steps_forward_and_back_saturating_at_zero() {
    assert_eq!(Slot(4).next(), Slot(5));
    assert_eq!(Slot(4).prev(), Slot(3));
    assert_eq!(Slot::ZERO.prev(), Slot::ZERO);
    assert_eq!(Slot(7).to_string(), "7");
}

#[test]
#[should_panic(expected = "slot number overflow")]
fn the_slot_after_the_last_is_a_bug() {
    let _ = Slot(u64::MAX).next();
}

#[test]
fn ballots_order_by_round_then_node() {
    assert!(Ballot::new(2, NodeId(1)) > Ballot::new(1, NodeId(9)));
    assert!(Ballot::new(2, NodeId(2)) > Ballot::new(2, NodeId(1)));
    assert_eq!(Ballot::ZERO, Ballot::new(0, NodeId(0)));
}

#[test]
fn a_successor_outranks_its_ballot_for_any_node() {
    let ballot = Ballot::new(5, NodeId(3));
    for node in [1, 3, 9] {
        let next = ballot.successor_for(NodeId(node));
        assert!(next > ballot);
        assert_eq!(next.node, NodeId(node));
    }
}

#[test]
fn a_configuration_sorts_and_deduplicates_its_members() {
    let configuration = Configuration::new(1, vec![NodeId(3), NodeId(1), NodeId(3)], Slot(1));
    assert_eq!(configuration.members, vec![NodeId(1), NodeId(3)]);
    assert!(configuration.contains(NodeId(3)));
    assert!(!configuration.contains(NodeId(2)));
}

fn address(node: u64, replica: &str) -> MemberAddress {
    MemberAddress { node: NodeId(node), replica: replica.into(), client: String::new() }
}

#[test]
fn learners_are_included_but_do_not_vote() {
    let configuration = Configuration::new(1, vec![NodeId(1), NodeId(2)], Slot(1)).with_learners(vec![
        NodeId(4),
        NodeId(2),
        NodeId(4),
    ]);
    assert_eq!(configuration.learners, vec![NodeId(4)], "sorted, once, and never a voter");
    assert!(configuration.includes(NodeId(4)) && configuration.includes(NodeId(1)));
    assert!(!configuration.includes(NodeId(3)));
    assert!(configuration.is_learner(NodeId(4)) && !configuration.contains(NodeId(4)));
    assert_eq!(configuration.followers().collect::<Vec<_>>(), vec![NodeId(1), NodeId(2), NodeId(4)]);
    assert_eq!(configuration.quorum(), 2, "learners never count");
}

#[test]
fn addresses_are_sorted_the_last_given_wins_and_strangers_are_dropped() {
    let configuration = Configuration::new(1, vec![NodeId(1), NodeId(2)], Slot(1))
        .with_learners(vec![NodeId(3)])
        .with_addresses(vec![
            address(3, "http://c"),
            address(1, "http://old"),
            address(9, "http://i"),
            address(1, "http://a"),
        ]);
    assert_eq!(configuration.addresses, vec![address(1, "http://a"), address(3, "http://c")]);
    assert_eq!(configuration.address(NodeId(1)), Some(&address(1, "http://a")));
    assert_eq!(configuration.address(NodeId(2)), None);
    assert_eq!(configuration.address(NodeId(9)), None);
    let bare = Configuration::new(1, vec![NodeId(1)], Slot(1)).size_bytes();
    assert_eq!(
        Configuration::new(1, vec![NodeId(1)], Slot(1))
            .with_addresses(vec![address(1, "http://a")])
            .size_bytes(),
        bare + 16 + 8,
        "an address counts its strings and a fixed overhead"
    );
}

#[test]
fn a_batch_is_shared_on_clone_and_copied_only_when_shared() {
    let batch: Batch = (0..3).map(|i| request(i, "p")).collect();
    let clone = batch.clone();
    assert!(batch.shares(&clone), "a clone shares the requests");
    let equal = Batch::new(batch.to_vec());
    assert_eq!(equal, batch);
    assert!(!equal.shares(&batch), "equal is not shared");
    assert_eq!((&batch).into_iter().map(|r| r.id.sequence).collect::<Vec<_>>(), vec![0, 1, 2]);
    assert_eq!(format!("{batch:?}"), format!("{:?}", batch.to_vec()), "debug shows the requests");
    drop(clone);
    assert_eq!(batch.into_vec(), equal.to_vec());
}

#[test]
fn a_read_id_displays_as_a_read() {
    assert_eq!(ReadId(42).to_string(), "read 42");
}

#[test]
fn a_configurations_quorum_is_a_majority() {
    for (members, quorum) in [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3)] {
        let configuration = Configuration::new(1, (1..=members).map(NodeId).collect(), Slot(1));
        assert_eq!(configuration.quorum(), quorum, "{members} members");
    }
}

#[test]
fn later_configurations_own_higher_rounds() {
    let first = Configuration::new(1, vec![NodeId(1)], Slot(1));
    let third = Configuration::new(3, vec![NodeId(1)], Slot(9));
    assert_eq!(first.round_floor(), 0);
    assert_eq!(third.round_floor(), 2 << CONFIGURATION_ROUND_BITS);
}

#[test]
fn time_saturates_at_both_ends() {
    assert_eq!(Time(5).minus(Micros(10)), Time(0));
    assert_eq!(Time(u64::MAX - 1).plus(Micros(10)), Time(u64::MAX));
    assert_eq!(Time(5).since(Time(10)), Micros::ZERO);
    assert_eq!(Time(10).since(Time(4)), Micros(6));
    assert_eq!(Time(1).plus_ms(2), Time(2_001));
    assert_eq!(Time(1).plus_us(2), Time(3));
}

#[test]
fn the_generator_replays_from_its_seed() {
    let (mut a, mut b) = (SplitMix64::new(42), SplitMix64::new(42));
    let first: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
    let second: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
    assert_eq!(first, second);
    let mut other = SplitMix64::new(43);
    assert_ne!(first[0], other.next_u64());
}

#[test]
fn below_zero_is_zero_and_chance_respects_its_extremes() {
    let mut rng = SplitMix64::new(7);
    assert_eq!(rng.below(0), 0);
    assert!((0..100).all(|_| !rng.chance(0.0)));
    assert!((0..100).all(|_| rng.chance(1.0)));
    assert_eq!(rng.between(3, 3), 3);
}

#[test]
#[should_panic(expected = "empty range")]
fn an_empty_range_is_a_bug() {
    SplitMix64::new(1).between(5, 4);
}

#[test]
fn mix64_is_a_bijection_on_nearby_inputs() {
    let outputs: std::collections::HashSet<u64> = (0..1000u64).map(mix64).collect();
    assert_eq!(outputs.len(), 1000);
}

proptest! {
    #[test]
    fn below_stays_below(seed in any::<u64>(), bound in 1u64..) {
        let mut rng = SplitMix64::new(seed);
        for _ in 0..16 {
            prop_assert!(rng.below(bound) < bound);
        }
    }

    #[test]
    fn between_stays_between(seed in any::<u64>(), low in 0u64..1_000_000, span in 0u64..1_000_000) {
        let mut rng = SplitMix64::new(seed);
        let value = rng.between(low, low + span);
        prop_assert!(value >= low && value <= low + span);
    }

    #[test]
    fn unit_is_in_the_unit_interval(seed in any::<u64>()) {
        let mut rng = SplitMix64::new(seed);
        for _ in 0..16 {
            let value = rng.unit();
            prop_assert!((0.0..1.0).contains(&value));
        }
    }

    #[test]
    fn time_since_undoes_plus(start in 0u64..u64::MAX / 2, length in 0u64..u64::MAX / 2) {
        let later = Time(start).plus(Micros(length));
        prop_assert_eq!(later.since(Time(start)), Micros(length));
        prop_assert_eq!(later.minus(Micros(length)), Time(start));
    }
}
