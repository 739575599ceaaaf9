//! Checkpoints: when one is due (every `checkpoint_interval_slots` slots, every
//! `checkpoint_interval_bytes` bytes of applied values, every `checkpoint_interval_ms`),
//! staggered so the replicas of a ring do not all save at the same slot; who saves it (a
//! secondary saves; a primary with other members copies the newest checkpoint of a
//! secondary instead, as RSL's does, so its execution never waits for a save, and saves
//! itself only when no secondary has a newer one); saves that were refused or failed (tried
//! again after `checkpoint_retry_ms`); checkpoints on demand, explicit log purges, and
//! truncating the log once a checkpoint is durable.

use crate::action::{Action, CheckpointNowError, PurgeLogError};
use crate::config::{Config, CHECKPOINT_COPY_ROUNDS_MAX};
use crate::time::Time;
use crate::types::{NodeId, Slot};

use super::{Replica, Timer};

/// The checkpoint under way, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pending {
    /// A scheduled save at `slot`, where `bytes` values bytes had been applied in total.
    Save { slot: Slot, bytes: u64 },
    /// A primary copying a secondary's checkpoint, asked when it had applied up to `slot`
    /// (`bytes` in total); `tried` has a bit per member index asked in this round;
    /// `counted` when a due checkpoint started the round (not a retry between due points).
    Copy { slot: Slot, bytes: u64, tried: u64, counted: bool },
}

/// When the next checkpoint is due, and the one under way.
#[derive(Debug)]
pub(super) struct CheckpointSchedule {
    /// Where this replica had applied up to when it last got a checkpoint (saved, copied or
    /// installed): the schedule counts from here.
    last_slot: Slot,
    /// Value bytes applied in total at `last_slot`.
    last_bytes: u64,
    /// When it got that checkpoint (or started).
    last_at: Time,
    /// Value bytes applied since the replica started.
    bytes_applied: u64,
    /// No checkpoint since start: the byte and time goals are staggered by member rank.
    first: bool,
    pending: Option<Pending>,
    /// After a refused or failed save, or a round of copies that found nothing newer: not
    /// before then.
    retry_at: Option<Time>,
    /// Due checkpoints in a row at which no secondary had a newer one to copy.
    copy_rounds_failed: u32,
    /// After such a round, when a primary asks the secondaries again (before the next due
    /// checkpoint).
    copy_retry_at: Option<Time>,
}

impl CheckpointSchedule {
    /// Counting from the checkpoint the replica started from, at `now`.
    pub(super) fn new(checkpoint: Slot, now: Time) -> CheckpointSchedule {
        CheckpointSchedule {
            last_slot: checkpoint,
            last_bytes: 0,
            last_at: now,
            bytes_applied: 0,
            first: true,
            pending: None,
            retry_at: None,
            copy_rounds_failed: 0,
            copy_retry_at: None,
        }
    }

    /// A value of `bytes` was handed to the state machine.
    pub(super) fn applied(&mut self, bytes: u64) {
        self.bytes_applied = self.bytes_applied.saturating_add(bytes);
    }

    /// A checkpoint at `slot` was installed from a peer: count from there.
    pub(super) fn installed(&mut self, slot: Slot, now: Time) {
        if slot > self.last_slot {
            self.last_slot = slot;
            self.last_bytes = self.bytes_applied;
            self.last_at = now;
        }
    }

    /// Whether a checkpoint of the state at `slot` is due at `now`, for the member of
    /// `rank` among `members`.
    fn due(&self, config: &Config, slot: Slot, now: Time, rank: u64, members: u64) -> bool {
        if self.pending.is_some() || slot <= self.last_slot || self.retry_at.is_some_and(|at| now < at) {
            return false;
        }
        let interval = config.checkpoint_interval_slots;
        if interval > 0 {
            // Fixed boundaries, shifted by the rank: each member saves at its own slots.
            let phase = stagger(interval, rank, members);
            let period = |s: Slot| s.0.saturating_add(interval - phase) / interval;
            if period(slot) > period(self.last_slot) {
                return true;
            }
        }
        let bytes = config.checkpoint_interval_bytes;
        if bytes > 0 {
            let goal = bytes.saturating_add(if self.first { stagger(bytes, rank, members) } else { 0 });
            if self.bytes_applied - self.last_bytes >= goal {
                return true;
            }
        }
        self.time_due(config, rank, members).is_some_and(|at| now >= at)
    }

    /// When the time trigger fires, if it is on.
    fn time_due(&self, config: &Config, rank: u64, members: u64) -> Option<Time> {
        let interval = config.checkpoint_interval_ms;
        if interval == 0 {
            return None;
        }
        let goal = interval.saturating_add(if self.first { stagger(interval, rank, members) } else { 0 });
        Some(self.last_at.plus_ms(goal))
    }

    /// A checkpoint covering this replica's state at `slot` (`bytes` applied then) is
    /// durable here.
    fn done(&mut self, slot: Slot, bytes: u64, now: Time) {
        if slot >= self.last_slot {
            self.last_slot = slot;
            self.last_bytes = bytes.min(self.bytes_applied);
            self.last_at = now;
        }
        self.first = false;
        self.retry_at = None;
        self.copy_retry_at = None;
    }
}

/// `amount x rank / members`: the offset of a member's goals within an interval.
fn stagger(amount: u64, rank: u64, members: u64) -> u64 {
    if members == 0 {
        return 0;
    }
    (u128::from(amount) * u128::from(rank) / u128::from(members)) as u64
}

impl Replica {
    /// The checkpoint at `slot` is durable: the log may be truncated below it.
    pub fn on_checkpoint_saved(&mut self, slot: Slot) {
        precondition!(
            slot <= self.apply_emitted,
            "checkpoint at {slot} beyond applied {}",
            self.apply_emitted
        );
        let now = self.now;
        let bytes = match self.checkpoints.pending {
            Some(Pending::Save { slot: asked, bytes }) if slot >= asked => {
                self.checkpoints.pending = None;
                self.checkpoints.copy_rounds_failed = 0;
                bytes
            }
            // An on-demand checkpoint: the bytes applied by then are not known exactly.
            _ => self.checkpoints.bytes_applied,
        };
        self.checkpoints.done(slot, bytes, now);
        self.record_checkpoint(slot);
        // A checkpoint that fell due while this one was saved starts now, not at the next
        // apply, which may never come (a closed ring, an idle one).
        self.checkpoint_if_due();
        self.arm_checkpoint_timer();
        self.finish();
    }

    /// Saving the checkpoint at `slot` failed, or the state machine refused it; nothing was
    /// kept. A scheduled one is tried again after `checkpoint_retry_ms`.
    pub fn on_checkpoint_failed(&mut self, now: Time, slot: Slot) {
        self.advance_clock(now);
        self.stats.checkpoints_failed += 1;
        if matches!(self.checkpoints.pending, Some(Pending::Save { slot: asked, .. }) if asked <= slot) {
            self.checkpoints.pending = None;
            self.checkpoints.retry_at = Some(now.plus_ms(self.config.checkpoint_retry_ms));
        }
        self.arm_checkpoint_timer();
        self.finish();
    }

    /// The checkpoint asked for by `Action::CopyCheckpoint` was copied into this replica's
    /// store at `slot`: the log may be truncated below it (or below what this replica
    /// applied, if the copy is newer).
    pub fn on_checkpoint_copied(&mut self, now: Time, slot: Slot) {
        self.advance_clock(now);
        self.stats.checkpoints_copied += 1;
        if let Some(Pending::Copy { slot: asked, bytes, .. }) = self.checkpoints.pending {
            self.checkpoints.pending = None;
            self.checkpoints.copy_rounds_failed = 0;
            self.checkpoints.done(asked, bytes, now);
        }
        // Only applied slots may count as covered here: this replica's own state reaches
        // them, and its log still holds every later slot it has to apply.
        self.record_checkpoint(slot.min(self.apply_emitted));
        self.checkpoint_if_due();
        self.arm_checkpoint_timer();
        self.finish();
    }

    /// The secondary asked by `Action::CopyCheckpoint` had no newer checkpoint or could not
    /// be reached: ask the next one. Once every one was asked, the round failed: ask again
    /// every `checkpoint_retry_ms` until the next due checkpoint, and once
    /// `CHECKPOINT_COPY_ROUNDS_MAX` due checkpoints in a row found nothing, save here.
    pub fn on_checkpoint_copy_failed(&mut self, now: Time) {
        self.advance_clock(now);
        if let Some(Pending::Copy { slot, bytes, tried, counted }) = self.checkpoints.pending {
            match self.copy_source(tried) {
                Some(from) => {
                    let tried = tried | self.member_bit(from);
                    self.checkpoints.pending = Some(Pending::Copy { slot, bytes, tried, counted });
                    self.ask_copy(from);
                }
                None => {
                    let schedule = &mut self.checkpoints;
                    schedule.pending = None;
                    if counted {
                        // This due checkpoint is spent: the next one comes an interval on.
                        schedule.copy_rounds_failed += 1;
                        schedule.last_slot = schedule.last_slot.max(slot);
                        schedule.last_bytes = bytes;
                        schedule.last_at = now;
                        schedule.first = false;
                    }
                    if self.role.is_primary() {
                        self.checkpoints.copy_retry_at = Some(now.plus_ms(self.config.checkpoint_retry_ms));
                    }
                }
            }
        }
        self.arm_checkpoint_timer();
        self.finish();
    }

    /// Asks for a checkpoint of everything handed to the state machine so far, now, on
    /// this replica whatever its role (RSL has no equivalent; `Ring::checkpoint_now`).
    /// Returns its slot; when that slot is already the newest checkpoint, nothing is asked.
    pub fn handle_checkpoint_now(&mut self, now: Time) -> Result<Slot, CheckpointNowError> {
        self.advance_clock(now);
        let slot = self.apply_emitted;
        if slot == Slot::ZERO {
            return Err(CheckpointNowError::NothingApplied);
        }
        if slot > self.checkpoint {
            self.request_save(slot);
        }
        self.finish();
        Ok(slot)
    }

    /// Forgets the log below `below` now, ignoring `log_retain_slots`, never past the newest
    /// checkpoint. Returns the log's first slot afterwards.
    pub fn handle_purge_log(&mut self, now: Time, below: Slot) -> Result<Slot, PurgeLogError> {
        self.advance_clock(now);
        let first_kept = self.checkpoint.next();
        if below > first_kept {
            return Err(PurgeLogError::BeyondCheckpoint { below, checkpoint: self.checkpoint, first_kept });
        }
        self.truncate_below(below);
        self.finish();
        Ok(self.log.start())
    }

    /// Asks for a checkpoint if one is due at the state handed out so far.
    pub(super) fn checkpoint_if_due(&mut self) {
        let slot = self.apply_emitted;
        let (rank, members) = self.checkpoint_rank();
        if !self.checkpoints.due(&self.config, slot, self.now, rank, members) {
            return;
        }
        let bytes = self.checkpoints.bytes_applied;
        if let Some(from) = self.copy_source(0) {
            let tried = self.member_bit(from);
            self.checkpoints.pending = Some(Pending::Copy { slot, bytes, tried, counted: true });
            self.ask_copy(from);
        } else {
            self.checkpoints.pending = Some(Pending::Save { slot, bytes });
            self.request_save(slot);
        }
    }

    pub(super) fn on_checkpoint_timer(&mut self) {
        let now = self.now;
        if self.checkpoints.retry_at.is_some_and(|at| at <= now) {
            self.checkpoints.retry_at = None;
        }
        self.checkpoint_if_due();
        if self.checkpoints.copy_retry_at.is_some_and(|at| at <= now) {
            self.checkpoints.copy_retry_at = None;
            self.retry_copy();
        }
        self.arm_checkpoint_timer();
    }

    /// Asks the secondaries again for a checkpoint newer than this primary's, between due
    /// checkpoints (not counted as a round).
    fn retry_copy(&mut self) {
        if self.checkpoints.pending.is_some() || self.apply_emitted <= self.checkpoint {
            return;
        }
        if let Some(from) = self.copy_source(0) {
            let (slot, bytes) = (self.apply_emitted, self.checkpoints.bytes_applied);
            let tried = self.member_bit(from);
            self.checkpoints.pending = Some(Pending::Copy { slot, bytes, tried, counted: false });
            self.ask_copy(from);
        }
    }

    /// Arms the checkpoint timer for the next time-driven check: a retry, or else the time
    /// goal. A goal already past needs no timer: the next apply checks it.
    pub(super) fn arm_checkpoint_timer(&mut self) {
        let (rank, members) = self.checkpoint_rank();
        let schedule = &self.checkpoints;
        let goal = match schedule.retry_at {
            Some(retry) => Some(retry),
            None => schedule.time_due(&self.config, rank, members).filter(|&at| at > self.now),
        };
        let next = match (goal, schedule.copy_retry_at) {
            _ if schedule.pending.is_some() => None,
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match next {
            Some(at) => self.timers.set(Timer::Checkpoint, at),
            None => self.timers.cancel(Timer::Checkpoint),
        }
    }

    /// Takes `slot` as the newest checkpoint and truncates the log below it, keeping
    /// `log_retain_slots` for lagging replicas.
    fn record_checkpoint(&mut self, slot: Slot) {
        if slot <= self.checkpoint {
            return;
        }
        self.checkpoint = slot;
        self.membership.prune(slot.next());
        let below = Slot(slot.0.saturating_sub(self.config.log_retain_slots).max(1));
        self.truncate_below(below);
    }

    fn request_save(&mut self, slot: Slot) {
        self.stats.checkpoints_requested += 1;
        // Exactly the configuration in force after the slot: a newer one would leave a
        // replica restarted from it unable to learn the slots in between.
        let configuration = self.membership.configuration_at(slot.next());
        self.actions.push_back(Action::TakeCheckpoint { slot, configuration });
    }

    fn ask_copy(&mut self, from: NodeId) {
        self.stats.checkpoint_copies_requested += 1;
        let slot = self.checkpoint.next();
        self.actions.push_back(Action::CopyCheckpoint { from, slot });
    }

    /// The secondary to copy a checkpoint from, other than those in `tried`: `None` when
    /// this replica saves its own (not primary, alone, configured to, or copies kept
    /// finding nothing), or when every other member was tried.
    fn copy_source(&self, tried: u64) -> Option<NodeId> {
        if !self.role.is_primary()
            || self.config.primary_saves_checkpoints
            || self.checkpoints.copy_rounds_failed >= CHECKPOINT_COPY_ROUNDS_MAX
        {
            return None;
        }
        let members = &self.membership.configuration.members;
        let me = self.membership.member_index()?;
        let progress = &self.role.primary()?.progress;
        let live_since = self.now.minus(self.config.election_delay_min());
        // Start after this replica, so successive primaries spread their copies; ask the
        // members heard from recently first (a dead one only answers with a timeout).
        let untried: Vec<usize> = (1..members.len())
            .map(|offset| (me + offset) % members.len())
            .filter(|&index| tried & (1 << index) == 0)
            .collect();
        let live = untried.iter().copied().find(|&index| progress.is_live(index, live_since));
        live.or(untried.first().copied()).map(|index| members[index])
    }

    fn member_bit(&self, node: NodeId) -> u64 {
        self.membership.index_of(node).map_or(0, |index| 1 << index)
    }

    /// This replica's rank among the members and their number, for staggering.
    fn checkpoint_rank(&self) -> (u64, u64) {
        match self.membership.member_index() {
            Some(index) => (index as u64, self.membership.configuration.members.len() as u64),
            None => (0, 1),
        }
    }

    /// Once a new primary handed out every slot it inherited, tells the caller (once per
    /// ballot).
    pub(super) fn report_primary_recovered(&mut self) {
        let Some(primary) = self.role.primary() else { return };
        let (ballot, slot) = (primary.ballot, primary.recovery_end);
        if self.primary_recovered == ballot || self.apply_emitted < slot {
            return;
        }
        self.primary_recovered = ballot;
        self.actions.push_back(Action::PrimaryRecovered { ballot, slot });
    }
}
