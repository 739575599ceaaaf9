//! The mutation matrix: every seeded bug ([`rsl_core::Mutation`]) names the checker that
//! must catch it, and a run with `--mutation NAME|all --until-caught` passes only if that
//! checker does, within the seeds given.
//!
//! A checker is trusted only once a seeded bug has been caught by it, so a safety bug
//! caught only by liveness (the run stalled), only by an assertion inside the core (a
//! contract, not a checker), or only by another checker than its own, fails the matrix:
//! the named checker did not prove that it bites. What the other checkers found before the
//! named one caught the bug is reported beside it. A bug that cannot break safety names
//! liveness (docs/TESTING.md says why, bug by bug).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use rsl_core::Mutation;

/// A seeded bug, its command-line name, and the checker that must catch it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeededBug {
    /// The bug.
    pub mutation: Mutation,
    /// Its command-line name.
    pub name: &'static str,
    /// The checker that must catch it (`Failure::checker`).
    pub checker: &'static str,
}

const fn bug(mutation: Mutation, name: &'static str, checker: &'static str) -> SeededBug {
    SeededBug { mutation, name, checker }
}

/// Every seeded bug, in the order `--mutation all` runs them.
pub const SEEDED_BUGS: [SeededBug; 16] = [
    bug(Mutation::AcceptBelowPromise, "accept-below-promise", "agreement"),
    bug(Mutation::CountVoteBeforePersist, "count-vote-before-persist", "agreement"),
    bug(Mutation::ApplyOutOfOrder, "apply-out-of-order", "agreement"),
    bug(Mutation::ForgetPromiseOnRestart, "forget-promise-on-restart", "agreement"),
    bug(Mutation::EnterConfigurationEarly, "enter-configuration-early", "configuration"),
    bug(Mutation::TruncateUnchosen, "truncate-unchosen", "agreement"),
    bug(Mutation::FetchServesUnchosen, "fetch-serves-unchosen", "agreement"),
    bug(Mutation::TakeoverPicksLowestBallot, "takeover-picks-lowest-ballot", "agreement"),
    bug(Mutation::SkipRoundFloor, "skip-round-floor", "liveness"),
    bug(Mutation::AcknowledgeBeforeChosen, "acknowledge-before-chosen", "durability"),
    bug(Mutation::LeaseIgnoresDrift, "lease-ignores-drift", "linearizability"),
    bug(Mutation::LeaseWithoutQuorumEcho, "lease-without-quorum-echo", "linearizability"),
    bug(Mutation::FastReadIgnoresMinSlot, "fast-read-ignores-min-slot", "fast-read-staleness"),
    bug(Mutation::CheckpointWrongSlot, "checkpoint-wrong-slot", "state-digest"),
    bug(Mutation::ReadIndexWithoutConfirmation, "read-index-without-confirmation", "linearizability"),
    bug(Mutation::LearnerVotes, "learner-votes", "agreement"),
];

/// Every mutation, for the command line and the mutation test.
pub const MUTATIONS: [Mutation; SEEDED_BUGS.len()] = {
    let mut all = [Mutation::AcceptBelowPromise; SEEDED_BUGS.len()];
    let mut i = 0;
    while i < SEEDED_BUGS.len() {
        all[i] = SEEDED_BUGS[i].mutation;
        i += 1;
    }
    all
};

/// The entry of `mutation` in [`SEEDED_BUGS`].
pub fn seeded_bug(mutation: Mutation) -> SeededBug {
    *SEEDED_BUGS.iter().find(|b| b.mutation == mutation).expect("every mutation is in SEEDED_BUGS")
}

/// The command-line name of a mutation.
pub fn mutation_name(mutation: Mutation) -> &'static str {
    seeded_bug(mutation).name
}

/// The mutation named `name` on the command line.
pub fn mutation_by_name(name: &str) -> Option<Mutation> {
    SEEDED_BUGS.iter().find(|b| b.name == name).map(|b| b.mutation)
}

/// What an `--until-caught` run of one seeded bug found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MatrixRow {
    /// The bug.
    pub bug: SeededBug,
    /// Ring size.
    pub replicas: usize,
    /// First seed of the range.
    pub first_seed: u64,
    /// Seeds in the range.
    pub seeds: u64,
    /// The first seed the named checker failed, if any did.
    pub caught_at: Option<u64>,
    /// For every other checker that failed a seed (below `caught_at`, when it is set): the
    /// first such seed.
    pub others: BTreeMap<&'static str, u64>,
}

impl MatrixRow {
    /// Sorts the failing seeds of a run of `bug` (seed, checker) into a row.
    pub fn new(
        bug: SeededBug,
        replicas: usize,
        first_seed: u64,
        seeds: u64,
        failures: &[(u64, &'static str)],
    ) -> MatrixRow {
        let caught_at = failures.iter().filter(|(_, c)| *c == bug.checker).map(|(s, _)| *s).min();
        let mut others = BTreeMap::new();
        for &(seed, checker) in failures {
            if checker != bug.checker && caught_at.is_none_or(|caught| seed < caught) {
                let first = others.entry(checker).or_insert(seed);
                *first = (*first).min(seed);
            }
        }
        MatrixRow { bug, replicas, first_seed, seeds, caught_at, others }
    }

    /// Seeds run until the named checker caught the bug (counting the one that did).
    pub fn seeds_needed(&self) -> Option<u64> {
        self.caught_at.map(|seed| seed - self.first_seed + 1)
    }

    /// Whether the named checker caught the bug.
    pub fn passed(&self) -> bool {
        self.caught_at.is_some()
    }

    /// One line saying what the run found, and why it fails when it does.
    pub fn verdict(&self) -> String {
        let name = self.bug.name;
        let others = self.describe_others();
        match self.caught_at {
            Some(seed) => format!(
                "mutation={name} caught by {} at seed {seed} ({} seeds from {}){}",
                self.bug.checker,
                self.seeds_needed().unwrap_or_default(),
                self.first_seed,
                if others.is_empty() { String::new() } else { format!("; before it: {others}") }
            ),
            None if self.others.is_empty() => format!(
                "mutation={name} NOT caught in {} seeds from {}: its checker, {}, never failed",
                self.seeds, self.first_seed, self.bug.checker
            ),
            None => {
                let how = if self.others.keys().all(|c| *c == "liveness") {
                    "only by liveness"
                } else if self.others.keys().all(|c| *c == "assertion") {
                    "only by an assertion in the core (a contract, not a checker)"
                } else {
                    "only by other checkers"
                };
                format!(
                    "mutation={name} caught {how} in {} seeds from {} ({others}), never by its checker, {}",
                    self.seeds, self.first_seed, self.bug.checker
                )
            }
        }
    }

    fn describe_others(&self) -> String {
        let others: Vec<String> =
            self.others.iter().map(|(checker, seed)| format!("{checker} at seed {seed}")).collect();
        others.join(", ")
    }
}

/// The matrix as a Markdown table: bug, checker, seeds needed (or what caught it instead).
pub fn table(rows: &[MatrixRow]) -> String {
    let mut out = String::new();
    let replicas = rows.first().map_or(0, |r| r.replicas);
    let _ = writeln!(out, "| seeded bug | checker | seeds needed ({replicas} replicas) | caught first by |");
    let _ = writeln!(out, "|---|---|---|---|");
    for row in rows {
        let needed = match row.seeds_needed() {
            Some(n) => n.to_string(),
            None => format!("NOT caught in {}", row.seeds),
        };
        let first = if row.others.is_empty() { "-".to_string() } else { row.describe_others() };
        let _ = writeln!(out, "| `{}` | {} | {needed} | {first} |", row.bug.name, row.bug.checker);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(mutation: Mutation, failures: &[(u64, &'static str)]) -> MatrixRow {
        MatrixRow::new(seeded_bug(mutation), 3, 100, 1000, failures)
    }

    #[test]
    fn every_mutation_has_one_entry_with_a_unique_name() {
        for (i, a) in SEEDED_BUGS.iter().enumerate() {
            assert_eq!(MUTATIONS[i], a.mutation);
            assert_eq!(mutation_by_name(a.name), Some(a.mutation));
            assert_eq!(mutation_name(a.mutation), a.name);
            for b in &SEEDED_BUGS[i + 1..] {
                assert!(a.mutation != b.mutation && a.name != b.name, "{a:?} and {b:?}");
            }
            assert_ne!(a.checker, "assertion", "{}: a checker, not a contract", a.name);
        }
        assert_eq!(mutation_by_name("no-such-bug"), None);
    }

    #[test]
    fn the_named_checker_passes_and_counts_the_seeds_it_needed() {
        let row = row(Mutation::AcceptBelowPromise, &[(140, "agreement"), (150, "agreement")]);
        assert!(row.passed());
        assert_eq!(row.seeds_needed(), Some(41));
        assert!(
            row.verdict().contains("caught by agreement at seed 140 (41 seeds from 100)"),
            "{}",
            row.verdict()
        );
    }

    #[test]
    fn liveness_before_the_named_checker_is_reported_but_passes() {
        let row =
            row(Mutation::AcceptBelowPromise, &[(103, "liveness"), (120, "agreement"), (130, "assertion")]);
        assert!(row.passed());
        assert_eq!(row.others, BTreeMap::from([("liveness", 103)]), "later seeds are not compared");
        assert!(row.verdict().contains("before it: liveness at seed 103"), "{}", row.verdict());
    }

    #[test]
    fn a_safety_bug_caught_only_by_liveness_fails() {
        let row = row(Mutation::ForgetPromiseOnRestart, &[(104, "liveness"), (190, "liveness")]);
        assert!(!row.passed());
        assert_eq!(row.seeds_needed(), None);
        assert!(row.verdict().contains("caught only by liveness"), "{}", row.verdict());
        assert!(row.verdict().contains("never by its checker, agreement"), "{}", row.verdict());
    }

    #[test]
    fn a_bug_caught_only_by_an_assertion_or_another_checker_fails() {
        let assertion = row(Mutation::TruncateUnchosen, &[(101, "assertion")]);
        assert!(!assertion.passed());
        assert!(assertion.verdict().contains("only by an assertion"), "{}", assertion.verdict());
        let other = row(Mutation::AcknowledgeBeforeChosen, &[(107, "linearizability"), (108, "liveness")]);
        assert!(!other.passed(), "durability is the checker this control must prove");
        assert!(other.verdict().contains("only by other checkers"), "{}", other.verdict());
        assert!(other.verdict().contains("linearizability at seed 107"), "{}", other.verdict());
    }

    #[test]
    fn a_bug_classified_as_a_liveness_bug_passes_when_liveness_catches_it() {
        let row = row(Mutation::SkipRoundFloor, &[(102, "liveness")]);
        assert!(row.passed(), "{}", row.verdict());
        assert_eq!(row.seeds_needed(), Some(3));
    }

    #[test]
    fn an_uncaught_bug_fails() {
        let row = row(Mutation::SkipRoundFloor, &[]);
        assert!(!row.passed());
        assert!(row.verdict().contains("NOT caught in 1000 seeds from 100"), "{}", row.verdict());
    }

    #[test]
    fn the_table_has_a_line_per_bug() {
        let rows = [
            row(Mutation::ApplyOutOfOrder, &[(100, "agreement")]),
            row(Mutation::ForgetPromiseOnRestart, &[(104, "liveness")]),
        ];
        let table = table(&rows);
        assert!(table.starts_with("| seeded bug | checker | seeds needed (3 replicas) |"), "{table}");
        assert!(table.contains("| `apply-out-of-order` | agreement | 1 | - |"), "{table}");
        assert!(
            table.contains(
                "| `forget-promise-on-restart` | agreement | NOT caught in 1000 | liveness at seed 104 |"
            ),
            "{table}"
        );
    }
}
