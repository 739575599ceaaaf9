//! Whole rings in the deterministic simulator, as a cargo test: a few seeds of each ring
//! size must keep every property, and a seeded bug must be caught.

use rsl_sim::options::Options;
use rsl_sim::run_seed;
use rsl_tests::SMOKE_SEEDS;

fn assert_seeds_pass(replicas: usize) {
    for seed in 0..SMOKE_SEEDS {
        let outcome = run_seed(seed, Options::from_seed(seed, replicas, None));
        assert!(
            outcome.failure.is_none(),
            "seed {seed} with {replicas} replicas failed: {:?}; replay: {}",
            outcome.failure,
            rsl_sim::replay_command(seed, replicas, None)
        );
        assert!(outcome.stats.ops_ok > 0, "seed {seed}: no client operation succeeded");
        assert!(outcome.stats.elections_won > 0, "seed {seed}: nobody was ever elected");
    }
}

#[test]
fn three_replica_rings_keep_every_property() {
    assert_seeds_pass(3);
}

#[test]
fn five_replica_rings_keep_every_property() {
    assert_seeds_pass(5);
}

/// The first failure of a few seeds with `mutation` switched on must come from the checker
/// the mutation matrix names for it.
fn assert_caught_by_its_checker(mutation: rsl_core::Mutation) {
    let caught =
        (0..SMOKE_SEEDS).find_map(|seed| run_seed(seed, Options::from_seed(seed, 3, Some(mutation))).failure);
    let failure = caught.expect("the seeded bug went unnoticed");
    assert_eq!(failure.checker, rsl_sim::matrix::seeded_bug(mutation).checker, "{failure}");
}

#[test]
fn applying_out_of_order_is_caught_by_the_agreement_checker() {
    assert_caught_by_its_checker(rsl_core::Mutation::ApplyOutOfOrder);
}

#[test]
fn an_acknowledged_write_that_is_lost_is_caught_by_the_durability_checker() {
    assert_caught_by_its_checker(rsl_core::Mutation::AcknowledgeBeforeChosen);
}

#[test]
fn a_seed_replays_exactly() {
    let first = run_seed(3, Options::from_seed(3, 3, None));
    let second = run_seed(3, Options::from_seed(3, 3, None));
    assert_eq!(format!("{:?}", first.stats), format!("{:?}", second.stats));
}
