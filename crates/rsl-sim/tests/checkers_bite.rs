//! The checkers this crate added prove they bite: the lease's negative control (clocks
//! beyond the drift bound) ends in a linearizability violation, while the same runs
//! within the bound pass; each seeded bug of the lease, fast reads and checkpoints is
//! caught by the checker named for it, with 3 and with 5 replicas; fast reads and
//! checkpoint installs that crash half way happen in ordinary runs and keep every
//! property; the takeover nemesis brings a stale primary back to take over slots a later
//! primary chose, which the correct phase 1 survives and the lowest-ballot pick does not;
//! configuration changes add, promote and drop learners.

use rsl_core::Mutation;
use rsl_sim::options::Options;
use rsl_sim::{mutation_name, replay_command, run_seed};

/// Seeds a caught bug may take at most: each is caught at the first seed today, so this
/// leaves room for the options to shift without letting a blunted checker through.
const SEEDS_TO_CATCH: u64 = 8;

/// The first failure among the first `SEEDS_TO_CATCH` seeds of `options`.
fn first_failure(options: impl Fn(u64) -> Options) -> Option<(u64, rsl_sim::checkers::Failure)> {
    (0..SEEDS_TO_CATCH).find_map(|seed| run_seed(seed, options(seed)).failure.map(|failure| (seed, failure)))
}

#[test]
fn clocks_beyond_the_drift_bound_break_lease_reads() {
    for replicas in [3, 5] {
        let (seed, failure) = first_failure(|seed| Options::drift_beyond_bound(seed, replicas))
            .unwrap_or_else(|| panic!("{replicas} replicas: no violation in {SEEDS_TO_CATCH} seeds"));
        assert_eq!(failure.checker, "linearizability", "seed {seed}, {replicas} replicas: {failure}");
    }
}

#[test]
fn the_same_runs_within_the_bound_keep_every_property() {
    for replicas in [3, 5] {
        for seed in 0..SEEDS_TO_CATCH {
            let outcome = run_seed(seed, Options::pressing_the_lease(seed, replicas));
            assert!(outcome.failure.is_none(), "seed {seed}, {replicas} replicas: {:?}", outcome.failure);
            // The scenario happened: the primary was cut off and another was elected.
            assert!(outcome.stats.primary_isolations > 0, "seed {seed}: {:?}", outcome.stats);
            assert!(outcome.stats.elections_won > 1, "seed {seed}: {:?}", outcome.stats);
        }
    }
}

#[test]
fn each_seeded_bug_is_caught_by_its_checker() {
    let table = [
        (Mutation::LeaseIgnoresDrift, "linearizability"),
        (Mutation::LeaseWithoutQuorumEcho, "linearizability"),
        (Mutation::FastReadIgnoresMinSlot, "fast-read-staleness"),
        (Mutation::CheckpointWrongSlot, "state-digest"),
    ];
    for (mutation, checker) in table {
        for replicas in [3, 5] {
            let name = mutation_name(mutation);
            let (seed, failure) = first_failure(|seed| Options::from_seed(seed, replicas, Some(mutation)))
                .unwrap_or_else(|| panic!("{name} with {replicas} replicas went unnoticed"));
            assert_eq!(
                failure.checker,
                checker,
                "{name}: {failure}; replay: {}",
                replay_command(seed, replicas, Some(mutation))
            );
        }
    }
}

#[test]
fn fast_reads_and_crashed_installs_happen_and_keep_every_property() {
    let (mut fast_reads, mut install_crashes, mut installs) = (0, 0, 0);
    for seed in 0..24 {
        let mut options = Options::from_seed(seed, 3, None);
        if seed % 2 == 1 {
            // Installs that crash are rare in drawn runs: aim at them in every other seed.
            options.checkpoint_interval_slots = 10;
            options.install_crash_probability = options.install_crash_probability.max(0.5);
        }
        let outcome = run_seed(seed, options);
        assert!(outcome.failure.is_none(), "seed {seed}: {:?}", outcome.failure);
        fast_reads += outcome.stats.fast_reads;
        install_crashes += outcome.stats.install_crashes;
        installs += outcome.stats.checkpoint_installs;
    }
    assert!(fast_reads > 100, "{fast_reads} fast reads");
    assert!(installs > 0, "{installs} installs");
    assert!(install_crashes > 0, "{install_crashes} crashes during installs");
}

#[test]
fn a_stale_primary_taking_over_keeps_the_chosen_values() {
    for replicas in [3, 5] {
        let (mut swaps, mut wins) = (0, 0);
        for seed in 0..SEEDS_TO_CATCH {
            let outcome = run_seed(seed, Options::pressing_takeovers(seed, replicas));
            assert!(outcome.failure.is_none(), "seed {seed}, {replicas} replicas: {:?}", outcome.failure);
            assert!(outcome.stats.takeover_rounds > 0, "seed {seed}: {:?}", outcome.stats);
            swaps += outcome.stats.takeover_swaps;
            wins += outcome.stats.takeover_wins;
        }
        // The interleaving happened: the next primary applied the stale one's slots, and
        // the stale one was elected with both proposals in its phase 1.
        assert!(swaps >= SEEDS_TO_CATCH / 2, "{replicas} replicas: {swaps} swaps");
        assert!(wins >= SEEDS_TO_CATCH / 2, "{replicas} replicas: {wins} wins");
    }
}

#[test]
fn a_takeover_that_picks_the_lowest_ballot_is_caught_by_agreement_in_many_seeds() {
    let mutation = Mutation::TakeoverPicksLowestBallot;
    for replicas in [3, 5] {
        let caught: Vec<u64> = (0..SEEDS_TO_CATCH)
            .filter(|&seed| {
                let outcome = run_seed(seed, Options::from_seed(seed, replicas, Some(mutation)));
                outcome.failure.is_some_and(|failure| failure.checker == "agreement")
            })
            .collect();
        // Not one lucky seed: about half of them show it.
        assert!(
            caught.len() as u64 >= SEEDS_TO_CATCH / 4,
            "{replicas} replicas: agreement caught it only in seeds {caught:?}; replay: {}",
            replay_command(0, replicas, Some(mutation))
        );
    }
}

#[test]
fn configuration_changes_add_promote_and_drop_learners_and_keep_every_property() {
    let (mut with_learners, mut promoted) = (0, 0);
    for seed in 0..20 {
        let outcome = run_seed(seed, Options::from_seed(seed, 3, None));
        assert!(
            outcome.failure.is_none(),
            "seed {seed}: {:?}; replay: {}",
            outcome.failure,
            replay_command(seed, 3, None)
        );
        with_learners += outcome.stats.configurations_with_learners;
        promoted += outcome.stats.learners_promoted;
    }
    // Learners were there to follow the log, and some were made voters later.
    assert!(with_learners >= 3, "{with_learners} configurations with learners chosen");
    assert!(promoted >= 2, "{promoted} learners promoted");
}
