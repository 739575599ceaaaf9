//! The figures of a fault run ([`Report`]): operations by outcome, what the checks found
//! in the history, failover times and unavailability windows; and their sum over runs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::fault::history::{check_linearizable, lost_writes, Function, History, Outcome, Verdict};

/// A gap without any committed write longer than this is an unavailability window.
pub const UNAVAILABLE_AFTER: Duration = Duration::from_secs(1);

/// The figures of a run.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Operations by outcome.
    pub ok: u64,
    /// See `ok`.
    pub fail: u64,
    /// See `ok`.
    pub info: u64,
    /// Linearizability violations found (0 or 1: the checker stops at the first key).
    pub violations: u64,
    /// Acknowledged writes, and those the final state contradicts.
    pub acknowledged_writes: u64,
    /// See `acknowledged_writes`.
    pub lost_writes: u64,
    /// Primary killed -> next committed write, one per primary kill that was followed by one.
    pub failovers: Vec<Duration>,
    /// Gaps without a committed write longer than [`UNAVAILABLE_AFTER`].
    pub unavailable: Vec<Duration>,
    /// Faults injected, by name.
    pub faults: BTreeMap<&'static str, u64>,
    /// Everything that went wrong (empty: the run passed).
    pub problems: Vec<String>,
    /// Where the history (and on failure the logs) were saved.
    pub saved: Option<PathBuf>,
    /// Seconds the run took, setup to checks.
    pub seconds: f64,
}

impl Report {
    /// Whether the run passed.
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }

    /// The figures of `history`: operations by outcome; with the `final_values` every key
    /// was read at the end (none: the run did not get that far) whether the history is
    /// linearizable and which acknowledged writes were lost; the time from each of
    /// `primary_kills` (ns since the start) to the next committed write, and the gaps
    /// between committed writes. What the checks found is in `problems`.
    pub fn of_history(
        history: &History,
        final_values: &[(String, Option<i64>)],
        primary_kills: &[u64],
    ) -> Report {
        let operations = history.operations();
        let mut report = Report::default();
        for op in &operations {
            match op.outcome {
                Some(Outcome::Ok) => report.ok += 1,
                Some(Outcome::Fail) => report.fail += 1,
                Some(Outcome::Info) | None => report.info += 1,
            }
        }
        if !final_values.is_empty() {
            match check_linearizable(&history.jsonl()) {
                Verdict::Linearizable => {}
                Verdict::Violation(witness) => {
                    report.violations = 1;
                    report.problems.push(format!("linearizability violation: {witness}"));
                }
                Verdict::Unchecked(reason) => {
                    report.problems.push(format!("the history could not be checked: {reason}"))
                }
            }
            report.acknowledged_writes =
                operations.iter().filter(|op| op.acknowledged_write()).count() as u64;
            let lost = lost_writes(&operations, final_values);
            report.lost_writes = lost.len() as u64;
            for problem in lost {
                report.problems.push(format!("acknowledged write lost: {problem}"));
            }
        }
        // Committed writes in time order: failovers and unavailability.
        let mut commits: Vec<u64> = operations
            .iter()
            .filter(|op| op.outcome == Some(Outcome::Ok) && op.f != Function::Get)
            .filter_map(|op| op.complete_ns)
            .collect();
        commits.sort_unstable();
        for &killed in primary_kills {
            if let Some(&next) = commits.iter().find(|&&t| t > killed) {
                report.failovers.push(Duration::from_nanos(next - killed));
            }
        }
        for pair in commits.windows(2) {
            let gap = Duration::from_nanos(pair[1] - pair[0]);
            if gap > UNAVAILABLE_AFTER {
                report.unavailable.push(gap);
            }
        }
        report
    }

    /// Adds the figures of another run (its problems and where it was saved are its own).
    pub fn add(&mut self, run: Report) {
        self.ok += run.ok;
        self.fail += run.fail;
        self.info += run.info;
        self.violations += run.violations;
        self.acknowledged_writes += run.acknowledged_writes;
        self.lost_writes += run.lost_writes;
        self.failovers.extend(run.failovers);
        self.unavailable.extend(run.unavailable);
        self.seconds += run.seconds;
        for (name, n) in run.faults {
            *self.faults.entry(name).or_default() += n;
        }
    }
}

/// Percentile `p` (0..=100) of sorted `values`.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64)).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| format!("{}ms", d.as_millis());
        writeln!(f, "  operations: ok={} fail={} info={}", self.ok, self.fail, self.info)?;
        writeln!(f, "  linearizability violations: {}", self.violations)?;
        writeln!(
            f,
            "  acknowledged writes: {}, lost: {} (every acknowledged write present at the end: {})",
            self.acknowledged_writes,
            self.lost_writes,
            if self.lost_writes == 0 { "yes" } else { "NO" }
        )?;
        let mut failovers = self.failovers.clone();
        failovers.sort();
        writeln!(
            f,
            "  failover (primary killed -> next committed write): n={} p50={} p99={} max={}",
            failovers.len(),
            ms(percentile(&failovers, 50.0)),
            ms(percentile(&failovers, 99.0)),
            ms(failovers.last().copied().unwrap_or_default())
        )?;
        let total: Duration = self.unavailable.iter().sum();
        writeln!(
            f,
            "  unavailability (no write committed for >{}s): windows={} total={} longest={}",
            UNAVAILABLE_AFTER.as_secs(),
            self.unavailable.len(),
            ms(total),
            ms(self.unavailable.iter().max().copied().unwrap_or_default())
        )?;
        let faults: Vec<String> = self.faults.iter().map(|(name, n)| format!("{name}={n}")).collect();
        write!(f, "  faults: {}", faults.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_ranks() {
        let values: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&values, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&values, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }

    #[test]
    fn totals_add_the_figures_of_each_run() {
        let run = |ok, kills| Report {
            ok,
            failovers: vec![Duration::from_millis(ok)],
            faults: BTreeMap::from([("kill", kills)]),
            problems: vec!["lost".into()],
            seconds: 1.5,
            ..Report::default()
        };
        let mut totals = Report::default();
        totals.add(run(10, 2));
        totals.add(run(20, 3));
        assert_eq!((totals.ok, totals.failovers.len(), totals.faults["kill"]), (30, 2, 5));
        assert_eq!(totals.seconds, 3.0);
        assert!(totals.passed(), "a run's problems stay its own");
    }
}
