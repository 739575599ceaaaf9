//! The faults of the fault phase, each rescheduling itself: crashes (one replica, often the
//! primary, or a power loss taking a majority or everyone), partitions (two sides, one
//! isolated node, a bridge, one-way cuts), pauses, leader transfers, configuration
//! changes, clock rates that change (within the drift bound, or beyond it for the negative
//! control), and the lease's nemesis: the primary isolated while its clock runs as slow
//! as allowed and every other as fast, so its lease lasts as long as the bound lets it
//! while the others' lease guards end as early as it lets them. The takeover nemesis,
//! which spans several steps, is in `takeover`.

use rsl_core::{MembershipChange, NodeId};

use super::{node_id, Event, Simulation};

impl Simulation {
    /// Schedules `event` again in about `every_us` (half to one and a half times).
    fn reschedule(&mut self, every_us: u64, event: Event) {
        let next = self.rng.between(every_us / 2, every_us * 3 / 2);
        self.schedule(self.now + next, event);
    }

    /// The replica that is primary now, if any (the first, if several believe they are).
    fn primary_index(&self) -> Option<usize> {
        self.primary_other_than(None)
    }

    /// The primary with probability `probability` (when there is one), otherwise any
    /// replica.
    fn often_the_primary(&mut self, probability: f64) -> usize {
        match self.primary_index() {
            Some(primary) if self.rng.chance(probability) => primary,
            _ => self.rng.index(self.nodes.len()),
        }
    }

    pub(super) fn crash_random(&mut self) {
        if self.healed {
            return;
        }
        self.reschedule(self.options.crash_every_us, Event::Crash);
        // Sometimes aim at the primary: that is where crashes hurt.
        let index = self.often_the_primary(0.5);
        let mut victims = vec![index];
        if self.rng.chance(self.options.correlated_crash_probability) {
            // Power loss: a majority (or everyone) at once.
            let n = self.nodes.len();
            let count = if self.rng.chance(0.5) { n } else { n / 2 + 1 };
            victims = (0..n).collect();
            while victims.len() > count {
                let drop = self.rng.index(victims.len());
                victims.swap_remove(drop);
            }
        }
        for index in victims {
            self.crash(index);
        }
    }

    pub(super) fn crash(&mut self, index: usize) {
        let torn = self.options.torn_writes;
        let node = &mut self.nodes[index];
        if node.replica.is_none() {
            return;
        }
        self.stats.crashes += 1;
        node.replica = None;
        node.epoch += 1;
        node.disk.crash(&mut self.rng, torn);
        node.disk.last_completion = 0;
        node.waiting_writes.clear();
        node.waiting_reads.clear();
        node.waiting_fast_reads.clear();
        node.read_indexes.clear();
        node.crashed_at = Some(self.now);
        node.paused_until = 0;
        let down = self.rng.between(50_000, 3_000_000);
        self.schedule(self.now + down, Event::Restart { node: index });
    }

    pub(super) fn partition(&mut self) {
        if self.healed {
            return;
        }
        let n = self.nodes.len();
        self.reschedule(self.options.partition_every_us, Event::Partition);
        if self.takeover_running() {
            return;
        }
        self.stats.partitions += 1;
        for row in &mut self.blocked {
            row.iter_mut().for_each(|b| *b = false);
        }
        match self.rng.between(0, 3) {
            0 => {
                // Two sides.
                let side: Vec<bool> = (0..n).map(|_| self.rng.chance(0.5)).collect();
                for a in 0..n {
                    for b in 0..n {
                        self.blocked[a][b] = side[a] != side[b];
                    }
                }
            }
            1 => {
                // Isolate one node, often the primary.
                let victim = self.often_the_primary(0.7);
                for other in 0..n {
                    if other != victim {
                        self.blocked[victim][other] = true;
                        self.blocked[other][victim] = true;
                    }
                }
            }
            2 => {
                // A bridge: two sides that only one node hears both of.
                let bridge = self.rng.index(n);
                let side: Vec<bool> = (0..n).map(|_| self.rng.chance(0.5)).collect();
                for a in 0..n {
                    for b in 0..n {
                        self.blocked[a][b] = a != bridge && b != bridge && side[a] != side[b];
                    }
                }
            }
            _ => {
                // One-way cuts.
                for _ in 0..self.rng.between(1, n as u64) {
                    let (a, b) = (self.rng.index(n), self.rng.index(n));
                    if a != b {
                        self.blocked[a][b] = true;
                    }
                }
            }
        }
        let length = self.rng.between(200_000, 3_000_000);
        self.schedule(self.now + length, Event::Heal);
    }

    /// Freezes a replica (often the primary) as a long garbage-collection pause or a
    /// SIGSTOP would: it keeps its state and wakes up believing it is still whatever
    /// it was.
    pub(super) fn pause(&mut self) {
        if self.healed {
            return;
        }
        self.reschedule(self.options.pause_every_us, Event::Pause);
        let index = self.often_the_primary(0.7);
        if self.nodes[index].replica.is_none() || self.nodes[index].paused_until > self.now {
            return;
        }
        self.stats.pauses += 1;
        self.nodes[index].paused_until = self.now + self.rng.between(300_000, 3_000_000);
    }

    /// A clock rate for one replica: often the fastest or slowest allowed, otherwise any
    /// rate between.
    pub(super) fn draw_clock_rate(&mut self) -> i64 {
        let max = self.options.clock_rate_max_ppm as i64;
        if self.rng.chance(0.5) {
            if self.rng.chance(0.5) {
                max
            } else {
                -max
            }
        } else {
            self.rng.between(0, 2 * max as u64) as i64 - max
        }
    }

    /// One replica's clock changes rate (its reading stays continuous).
    pub(super) fn drift(&mut self) {
        if self.healed {
            return;
        }
        self.reschedule(self.options.drift_every_us, Event::Drift);
        let index = self.rng.index(self.nodes.len());
        let rate = self.draw_clock_rate();
        self.nodes[index].clock.set_rate(self.now, rate);
    }

    /// Cuts the primary off from every replica (clients still reach it) with its clock as
    /// slow as allowed and every other clock as fast, for about two election delays: long
    /// enough for the others to elect a new primary and take writes while a lease reader
    /// stays with the old one.
    pub(super) fn isolate_primary(&mut self) {
        if self.healed {
            return;
        }
        self.reschedule(self.options.isolate_primary_every_us, Event::IsolatePrimary);
        let Some(victim) = self.primary_index() else { return };
        if self.takeover_running() {
            return;
        }
        self.stats.primary_isolations += 1;
        let n = self.nodes.len();
        self.cut_off(victim);
        let max = self.options.clock_rate_max_ppm as i64;
        for index in 0..n {
            let rate = if index == victim { -max } else { max };
            self.nodes[index].clock.set_rate(self.now, rate);
        }
        let length = 2 * self.options.election_delay_min_ms * 1000 + self.rng.between(0, 1_000_000);
        self.schedule(self.now + length, Event::Heal);
    }

    pub(super) fn relinquish(&mut self) {
        if self.healed {
            return;
        }
        self.reschedule(self.options.relinquish_every_us, Event::Relinquish);
        let target =
            if self.rng.chance(0.5) { Some(node_id(self.rng.index(self.nodes.len()))) } else { None };
        let Some(index) = self.primary_index() else { return };
        let now = self.local_time(index);
        if self.nodes[index].replica.as_mut().expect("alive").handle_relinquish(now, target).is_ok() {
            self.stats.relinquishes += 1;
        }
        self.drain(index);
    }

    /// Asks the primary to change the members to a random non-empty subset of every
    /// replica: grows, shrinks, replacements, and down to one member and back. In some of
    /// the changes (`learner_probability`) some of the other replicas become (or stay) learners, which follow the
    /// log without voting; a learner named among the members of a later change is
    /// promoted (refused while it lags, as the core's rule says), one left out is dropped.
    pub(super) fn reconfigure(&mut self) {
        if self.healed {
            return;
        }
        self.reschedule(self.options.reconfigure_every_us, Event::Reconfigure);
        let Some(index) = self.primary_index() else { return };
        let n = self.nodes.len();
        let size = self.rng.between(1, n as u64) as usize;
        let mut members: Vec<NodeId> = (0..n).map(node_id).collect();
        while members.len() > size {
            let drop = self.rng.index(members.len());
            members.swap_remove(drop);
        }
        members.sort_unstable();
        let mut learners = Vec::new();
        if self.rng.chance(self.options.learner_probability) {
            for node in (0..n).map(node_id).filter(|node| !members.contains(node)) {
                if self.rng.chance(0.5) {
                    learners.push(node);
                }
            }
        }
        self.changes_requested.insert((members.clone(), learners.clone()));
        let now = self.local_time(index);
        if self.nodes[index]
            .replica
            .as_mut()
            .expect("alive")
            .handle_change_configuration(now, MembershipChange::new(members, learners))
            .is_ok()
        {
            self.stats.reconfigurations += 1;
        }
        self.drain(index);
    }
}
