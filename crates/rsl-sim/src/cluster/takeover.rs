//! The takeover nemesis: a stale primary comes back to take over slots a later primary
//! chose. It is the interleaving phase 1 exists for, and the one random partitions
//! produce only by luck:
//!
//! 1. the primary is cut off from every replica (clients still reach it), so the writes
//!    it still takes are accepted in its own log alone, at its ballot;
//! 2. once another replica leads and has applied every slot the stale primary holds
//!    unchosen (other values, at a higher ballot), that primary is cut off in turn and
//!    the stale one rejoins the rest;
//! 3. the stale primary, which never learned those slots were chosen, stands for election
//!    at once and again until it wins or the round ends (RSL's `AttemptPromotion`); its
//!    phase 1 sees both proposals for those slots and must re-propose the higher ballot's
//!    value, the one already chosen and applied;
//! 4. the round ends and the network heals.
//!
//! While a round runs, random partitions wait and a partition's heal keeps the round's
//! cut, so the round's shape holds.

use rsl_core::{Role, Slot};

use super::{Event, Simulation};

/// Polls of a round's condition, microseconds apart.
const POLL_US: u64 = 10_000;

/// A step of a takeover round; `round` tells a late step of an ended round apart.
#[derive(Clone, Copy, Debug)]
pub(super) enum TakeoverStep {
    /// Starts a round (and schedules the next one).
    Start,
    /// Starts a round in place of one that came to nothing.
    Retry,
    /// Checks whether the new primary applied the stale primary's slots.
    Poll { round: u64 },
    /// The stale primary stands for election.
    Campaign { round: u64 },
    /// The round ends: the network heals.
    End { round: u64 },
}

/// The round under way.
#[derive(Clone, Copy, Debug)]
pub(super) struct TakeoverRound {
    round: u64,
    /// The primary cut off first, which later comes back.
    stale: usize,
    /// The primary cut off second, once it applied the stale primary's slots.
    successor: Option<usize>,
    /// When the round ends at the latest.
    deadline: u64,
}

impl Simulation {
    pub(super) fn takeover_step(&mut self, step: TakeoverStep) {
        match step {
            TakeoverStep::Start => {
                if self.healed {
                    return;
                }
                let every_us = self.options.takeover_every_us;
                let next = self.rng.between(every_us / 2, every_us * 3 / 2);
                self.schedule(self.now + next, Event::Takeover(TakeoverStep::Start));
                self.start_takeover();
            }
            TakeoverStep::Retry => self.start_takeover(),
            TakeoverStep::Poll { round } => self.poll_takeover(round),
            TakeoverStep::Campaign { round } => self.campaign_stale(round),
            TakeoverStep::End { round } => {
                if self.takeover.is_some_and(|r| r.round == round) {
                    self.end_takeover();
                }
            }
        }
    }

    /// Whether a takeover round holds the network in its shape.
    pub(super) fn takeover_running(&self) -> bool {
        self.takeover.is_some()
    }

    /// Blocks every message to and from `victim` and no other (the round's cut, which a
    /// partition's heal puts back while the round runs).
    pub(super) fn cut_off(&mut self, victim: usize) {
        for (a, row) in self.blocked.iter_mut().enumerate() {
            for (b, blocked) in row.iter_mut().enumerate() {
                *blocked = a != b && (a == victim || b == victim);
            }
        }
    }

    /// Heals every partition, except the cut of a takeover round under way.
    pub(super) fn heal_partitions(&mut self) {
        for row in &mut self.blocked {
            row.iter_mut().for_each(|b| *b = false);
        }
        if let Some(round) = self.takeover {
            self.cut_off(round.successor.unwrap_or(round.stale));
        }
    }

    fn start_takeover(&mut self) {
        if self.healed || self.takeover.is_some() {
            return;
        }
        let Some(stale) = self.primary_other_than(None) else { return };
        self.stats.takeover_rounds += 1;
        let round = self.stats.takeover_rounds;
        let deadline = self.now + 10 * self.options.election_delay_min_ms * 1000 + 2_000_000;
        self.takeover = Some(TakeoverRound { round, stale, successor: None, deadline });
        self.cut_off(stale);
        self.schedule(self.now + POLL_US, Event::Takeover(TakeoverStep::Poll { round }));
    }

    /// The first replica other than `not` that believes it is primary.
    pub(super) fn primary_other_than(&self, not: Option<usize>) -> Option<usize> {
        self.nodes.iter().enumerate().position(|(i, n)| {
            Some(i) != not && n.replica.as_ref().is_some_and(|r| r.role() == Role::Primary)
        })
    }

    /// The highest slot the stale primary holds durably above what it knows chosen.
    fn stale_high_slot(&self, stale: usize) -> Option<Slot> {
        let node = &self.nodes[stale];
        let chosen = node.replica.as_ref()?.chosen();
        node.disk.proposals.range(chosen.next()..).next_back().map(|(slot, _)| *slot)
    }

    fn poll_takeover(&mut self, round: u64) {
        let Some(state) = self.takeover.filter(|r| r.round == round && r.successor.is_none()) else {
            return;
        };
        if self.healed || self.now >= state.deadline {
            self.end_takeover();
            return;
        }
        let high = self.stale_high_slot(state.stale);
        let stale_leads = self.nodes[state.stale].replica.as_ref().is_some_and(|r| r.role() == Role::Primary);
        if high.is_none() && !stale_leads {
            // It stepped down without taking a write of its own: nothing to come back
            // with. Another round starts once the ring has settled.
            self.end_takeover();
            let at = self.now + self.rng.between(500_000, 1_500_000);
            self.schedule(at, Event::Takeover(TakeoverStep::Retry));
            return;
        }
        let ready = high.and_then(|high| {
            let successor = self.primary_other_than(Some(state.stale))?;
            let applied = self.nodes[successor].replica.as_ref()?.applied();
            (applied >= high).then_some(successor)
        });
        let Some(successor) = ready else {
            self.schedule(self.now + POLL_US, Event::Takeover(TakeoverStep::Poll { round }));
            return;
        };
        self.stats.takeover_swaps += 1;
        let deadline = self.now + 4 * self.options.election_delay_min_ms * 1000 + 1_000_000;
        self.takeover = Some(TakeoverRound { successor: Some(successor), deadline, ..state });
        self.cut_off(successor);
        let at = self.now + self.rng.between(0, 3 * POLL_US);
        self.schedule(at, Event::Takeover(TakeoverStep::Campaign { round }));
        self.schedule(deadline, Event::Takeover(TakeoverStep::End { round }));
    }

    /// The stale primary asks to be elected until it is primary or the round ends.
    fn campaign_stale(&mut self, round: u64) {
        let Some(state) = self.takeover.filter(|r| r.round == round) else { return };
        if self.healed {
            return;
        }
        let stale = state.stale;
        let now = self.local_time(stale);
        let paused = self.nodes[stale].paused_until > self.now;
        match self.nodes[stale].replica.as_mut() {
            Some(replica) if replica.role() == Role::Primary => {
                self.stats.takeover_wins += 1;
                return;
            }
            Some(replica) if !paused => {
                // Refused while it is not a member or knows a newer configuration: it
                // tries again.
                let _ = replica.handle_attempt_promotion(now);
                self.drain(stale);
            }
            // Crashed or frozen meanwhile: it tries again once it may be back.
            _ => {}
        }
        let again = self.now + self.rng.between(2 * POLL_US, 6 * POLL_US);
        self.schedule(again, Event::Takeover(TakeoverStep::Campaign { round }));
    }

    fn end_takeover(&mut self) {
        self.takeover = None;
        self.heal_partitions();
    }
}
