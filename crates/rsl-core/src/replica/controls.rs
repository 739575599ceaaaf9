//! Operator controls (RSL's names in brackets): a forced election on this replica
//! (`AttemptPromotion`), new election and heartbeat timing on a running replica
//! (`ChangeElectionDelay`), and re-seeding the state machine from a named peer's checkpoint
//! (`CopyStateFromReplica`).
//!
//! A forced election never breaks the read lease. A replica that follows a live primary
//! asks it to hand over ([`MessageBody::PromotionRequest`]): the primary relinquishes to
//! it exactly as `handle_relinquish` would, stepping down before the new candidate's
//! prepare skips its followers' lease guard. A replica that hears no live primary
//! campaigns at once, skipping the pre-vote and the election delay; its peers still refuse
//! it while they heard a primary within the guard window.
//!
//! A timing change applies to this replica only (apply it to every replica). The read
//! lease and the lease guard keep the `election_delay_min_ms` the replica started with:
//! replicas change one at a time, and a primary whose lease grew before its followers'
//! guard did could serve a stale read.
//!
//! A re-seed fetches the peer's newest checkpoint at or above the slot before this
//! replica's log start (so every slot after it is still in the log), loads it into the
//! state machine, and replays the log from there: the state machine goes back to the
//! checkpoint's slot when it is older than what was applied, and forward like a catch-up
//! install when it is newer. The log is not truncated while a re-seed is in progress.

use crate::config::{Config, ConfigError};
use crate::message::MessageBody;
use crate::time::Time;
use crate::types::{Ballot, Configuration, NodeId, Slot};

use super::role::RoleState;
use super::{Replica, Timer};

/// What [`Replica::handle_attempt_promotion`] started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Promotion {
    /// This replica is the primary already.
    AlreadyPrimary,
    /// No live primary is known: this replica campaigns now.
    Campaigning,
    /// This replica asked the live primary it follows to hand over to it.
    AskedPrimary {
        /// The primary asked.
        primary: NodeId,
    },
}

/// Why this replica cannot stand for election now.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PromotionError {
    /// The state machine's `can_become_primary` veto is set.
    #[error("the state machine vetoes this replica becoming primary (can_become_primary is false)")]
    Vetoed,
    /// This replica does not vote in the configuration in force.
    #[error("this replica is not a member of configuration {configuration}")]
    NotAMember {
        /// The configuration number.
        configuration: u64,
    },
    /// This replica has not caught up to the configuration's first slot.
    #[error("this replica is behind: chosen up to slot {chosen}, configuration starts at slot {first_slot}")]
    Behind {
        /// Its chosen watermark.
        chosen: Slot,
        /// The configuration's first slot.
        first_slot: Slot,
    },
    /// A newer configuration exists that this replica has not entered yet.
    #[error("a newer configuration than {configuration} exists; this replica has not entered it yet")]
    NewerConfiguration {
        /// The configuration it is in.
        configuration: u64,
    },
}

/// Why a re-seed from a peer's checkpoint cannot start (or finish).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReseedError {
    /// A replica cannot re-seed from itself.
    #[error("{node} cannot re-seed from itself")]
    FromSelf {
        /// This replica.
        node: NodeId,
    },
    /// A checkpoint fetch (catch-up's or another re-seed) is already under way.
    #[error("a checkpoint fetch is already under way")]
    InProgress,
    /// The checkpoint installed is older than the slot before the log start: the slots in
    /// between cannot be replayed.
    #[error("the checkpoint at slot {slot} is older than the log, which starts at slot {log_start}")]
    Gap {
        /// The checkpoint's slot.
        slot: Slot,
        /// The first slot of the log.
        log_start: Slot,
    },
}

/// A replica's election and heartbeat timing: the fields of [`Config`] that
/// [`Replica::handle_change_timing`] changes on a running replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// [`Config::heartbeat_interval_ms`].
    pub heartbeat_interval_ms: u64,
    /// [`Config::election_delay_min_ms`].
    pub election_delay_min_ms: u64,
    /// [`Config::election_delay_max_ms`].
    pub election_delay_max_ms: u64,
}

impl Timing {
    /// The timing of `config`.
    pub fn of(config: &Config) -> Timing {
        Timing {
            heartbeat_interval_ms: config.heartbeat_interval_ms,
            election_delay_min_ms: config.election_delay_min_ms,
            election_delay_max_ms: config.election_delay_max_ms,
        }
    }

    /// `config` with this timing.
    pub fn apply_to(self, config: &Config) -> Config {
        Config {
            heartbeat_interval_ms: self.heartbeat_interval_ms,
            election_delay_min_ms: self.election_delay_min_ms,
            election_delay_max_ms: self.election_delay_max_ms,
            ..config.clone()
        }
    }
}

impl Replica {
    /// Stands for election now [RSL's AttemptPromotion]: a replica that follows a live
    /// primary asks it to hand over (it relinquishes to this replica, keeping its lease
    /// safe); one that hears none campaigns at once, skipping the pre-vote and the election
    /// delay. Whether it wins shows in its role.
    pub fn handle_attempt_promotion(&mut self, now: Time) -> Result<Promotion, PromotionError> {
        self.advance_clock(now);
        if self.role.is_primary() {
            return Ok(Promotion::AlreadyPrimary);
        }
        self.promotion_problem()?;
        let window = self.config.election_delay_min();
        let live = self.primary.filter(|p| {
            p.node != self.config.node && self.primary_heard_at.is_some_and(|t| now.since(t) < window)
        });
        let promotion = match live {
            Some(primary) => {
                self.send(primary.node, MessageBody::PromotionRequest { ballot: primary.ballot });
                Promotion::AskedPrimary { primary: primary.node }
            }
            None => {
                self.role = RoleState::Secondary;
                self.start_prepare(None);
                Promotion::Campaigning
            }
        };
        self.finish();
        Ok(promotion)
    }

    /// Why this replica may not campaign, if it may not.
    fn promotion_problem(&self) -> Result<(), PromotionError> {
        let configuration = &self.membership.configuration;
        if !self.can_become_primary {
            return Err(PromotionError::Vetoed);
        }
        if !self.membership.is_member() {
            return Err(PromotionError::NotAMember { configuration: configuration.number });
        }
        if self.log.chosen().next() < configuration.first_slot {
            return Err(PromotionError::Behind {
                chosen: self.log.chosen(),
                first_slot: configuration.first_slot,
            });
        }
        if self.knows_of_newer_configuration() {
            return Err(PromotionError::NewerConfiguration { configuration: configuration.number });
        }
        Ok(())
    }

    /// A member asks this primary (of `ballot`) to hand over to it.
    pub(super) fn on_promotion_request(&mut self, from: NodeId, ballot: Ballot) {
        let owns = self.role.primary().is_some_and(|p| p.ballot == ballot && p.relinquish_to.is_none());
        if owns {
            // Refused only for a target outside the configuration, which validation ruled out.
            let _ = self.handle_relinquish(self.now, Some(from));
        }
    }

    /// The election and heartbeat timing in force.
    pub fn timing(&self) -> Timing {
        Timing::of(&self.config)
    }

    /// Changes the election and heartbeat timing of this replica [RSL's
    /// ChangeElectionDelay], validated like [`Config`]; the timers in flight are re-armed
    /// with it. The read lease and the lease guard keep the timing the replica started
    /// with (see the module notes).
    pub fn handle_change_timing(&mut self, now: Time, timing: Timing) -> Result<(), ConfigError> {
        self.advance_clock(now);
        let config = timing.apply_to(&self.config);
        config.validate()?;
        self.config = config;
        if self.role.is_primary() {
            self.timers.set(Timer::Heartbeat, now.plus(self.config.heartbeat_interval()));
            self.timers.set(Timer::CheckQuorum, now.plus(self.config.election_delay_min()));
        } else {
            self.reset_election_timer();
        }
        self.finish();
        Ok(())
    }

    /// Starts re-seeding from `from`'s checkpoint [RSL's CopyStateFromReplica]: returns the
    /// lowest checkpoint slot it can replay the log from, which the caller fetches from
    /// `from` (the newest at or above it), installs, and reports with
    /// [`Replica::on_checkpoint_reseeded`] (or [`Replica::on_reseed_failed`]).
    pub fn handle_reseed(&mut self, now: Time, from: NodeId) -> Result<Slot, ReseedError> {
        self.advance_clock(now);
        if from == self.config.node {
            return Err(ReseedError::FromSelf { node: from });
        }
        if self.catch_up.checkpoint_fetch_pending {
            return Err(ReseedError::InProgress);
        }
        let min_slot = Slot(self.log.start().0.saturating_sub(1).max(1));
        self.catch_up.checkpoint_fetch_pending = true;
        self.reseeding = Some(min_slot);
        Ok(min_slot)
    }

    /// The re-seed could not fetch or install the checkpoint; nothing changed.
    pub fn on_reseed_failed(&mut self, now: Time) {
        self.advance_clock(now);
        self.reseeding = None;
        self.catch_up.checkpoint_fetch_pending = false;
        self.finish();
    }

    /// The state machine loaded the re-seed's checkpoint at `slot` (saved with
    /// `configuration`): the replica applies the log from the slot after it, going back
    /// when it was ahead.
    pub fn on_checkpoint_reseeded(
        &mut self,
        now: Time,
        slot: Slot,
        configuration: Configuration,
    ) -> Result<(), ReseedError> {
        self.advance_clock(now);
        self.reseeding = None;
        if slot >= self.applied {
            // Forward (or in place): exactly a catch-up install.
            self.on_checkpoint_installed(now, slot, configuration);
            self.checkpoint = slot;
            return Ok(());
        }
        self.catch_up.checkpoint_fetch_pending = false;
        if self.log.start() > slot.next() {
            return Err(ReseedError::Gap { slot, log_start: self.log.start() });
        }
        self.enter_configuration(configuration);
        self.applied = slot;
        self.apply_emitted = slot;
        self.checkpoint = slot;
        self.emit_applies();
        self.finish();
        Ok(())
    }
}
