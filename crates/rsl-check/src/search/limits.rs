//! The search's limits and the statistics they are judged by: steps taken against the
//! step budget, the deadline, and steps since the search last reached a new depth (a
//! search that stops getting deeper is deemed stuck).

use std::time::Instant;

use super::CheckBudget;

/// How often (in search steps) the search looks at the clock, when it has a
/// deadline: often enough to stop within a millisecond, rarely enough not to
/// show in profiles.
const DEADLINE_CHECK_STEPS: u64 = 4096;

/// Search steps without linearizing more operations than ever before after
/// which a search is deemed stuck (see [`super::check_key_ops`]): a fraction of a
/// second. Searching a linearizable history reaches a new depth every few
/// dozen steps.
pub(super) const STUCK_STEPS: u64 = 1_000_000;

/// The search stopped because it got stuck.
#[derive(Debug)]
pub(super) struct Stuck;

/// Why a search stopped early.
#[derive(Debug)]
pub(super) enum Abort {
    /// The step budget ran out.
    Budget,
    /// The deadline passed.
    Deadline,
    /// The search went [`Limits::stuck_steps`] steps without linearizing more
    /// operations than it ever had.
    Stuck,
}

/// Steps counted against the budget, and the depth reached.
#[derive(Debug)]
pub(super) struct Limits {
    /// Search steps taken.
    steps: u64,
    max_steps: u64,
    deadline: Option<Instant>,
    /// If set, the search stops with [`Abort::Stuck`] after this many steps
    /// without reaching a new depth.
    stuck_steps: Option<u64>,
    /// The most operations linearized at once so far, and the step it happened.
    deepest: usize,
    deepest_step: u64,
}

impl Limits {
    pub(super) fn new(budget: CheckBudget) -> Limits {
        Limits {
            steps: 0,
            max_steps: budget.max_steps,
            deadline: budget.deadline,
            stuck_steps: None,
            deepest: 0,
            deepest_step: 0,
        }
    }

    /// Deems the search stuck after `stuck_steps` steps without reaching a new depth
    /// (`None`: never).
    pub(super) fn set_stuck_steps(&mut self, stuck_steps: Option<u64>) {
        self.stuck_steps = stuck_steps;
    }

    /// Search steps taken.
    pub(super) fn steps(&self) -> u64 {
        self.steps
    }

    /// The step budget.
    pub(super) fn max_steps(&self) -> u64 {
        self.max_steps
    }

    /// Counts one search step.
    #[inline]
    pub(super) fn tick(&mut self) -> Result<(), Abort> {
        self.steps += 1;
        if self.steps > self.max_steps {
            Err(Abort::Budget)
        } else if self.stuck_steps.is_some_and(|stuck| self.steps - self.deepest_step > stuck) {
            Err(Abort::Stuck)
        } else if self.steps % DEADLINE_CHECK_STEPS == 0
            && self.deadline.is_some_and(|deadline| Instant::now() >= deadline)
        {
            Err(Abort::Deadline)
        } else {
            Ok(())
        }
    }

    /// Notes that `depth` operations are linearized at once.
    #[inline]
    pub(super) fn reached(&mut self, depth: usize) {
        if depth > self.deepest {
            self.deepest = depth;
            self.deepest_step = self.steps;
        }
    }
}
