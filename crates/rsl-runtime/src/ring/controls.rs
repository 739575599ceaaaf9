//! Operator controls and health on a running ring (RSL's names in brackets): a forced
//! election on this replica (`AttemptPromotion`), new election and heartbeat timing
//! (`ChangeElectionDelay`), re-seeding the state machine from a named peer's checkpoint
//! (`CopyStateFromReplica`), a request alone in its slot and the last one the ring accepts
//! (`ReplicateRequestExclusiveVote`, `isLastDecree`), every replica's health
//! (`GetReplicasInformation`) and this replica's readiness. The [`Ring`] methods send a
//! [`Control`] to the ring task, which performs it here; the protocol's side of each is in
//! `rsl_core`'s `replica/controls.rs`, `replica/exclusive.rs` and `replica/health.rs`.
//!
//! A re-seed reuses catch-up's checkpoint transfer: the task fetches the peer's newest
//! checkpoint at or above the slot the replica names (`Checkpoints::start_fetch`), the
//! apply thread loads it even when it is older than what was applied, drops the
//! checkpoints it saved from the state it replaced (`reseed.rs`), and the replica replays
//! its log from the checkpoint's slot.

use bytes::Bytes;
use rsl_core::{NodeId, Promotion, Role, Slot, Timing};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::checkpoints::FetchPurpose;
use super::handle::{Command, Unanswered};
use super::stop::Stop;
use super::task::RingTask;
use super::Ring;
use crate::error::{ReplicateError, RingFailure, TransferError};
use crate::framing::RingRecord;
use crate::health::{NotReady, ReadinessOptions, ReplicaHealth};
use crate::stats::RingCounters;
use crate::transfer::CheckpointRequest;

/// An operator control or health query for the ring task.
pub(crate) enum Control {
    Promote { reply: oneshot::Sender<Result<Promotion, PromotionError>> },
    ChangeTiming { timing: Timing, reply: oneshot::Sender<Result<(), TimingError>> },
    Reseed { from: NodeId, reply: oneshot::Sender<Result<Slot, ReseedError>> },
    Exclusive { payload: Bytes, last: bool, reply: oneshot::Sender<Result<Bytes, ReplicateError>> },
    Replicas { reply: oneshot::Sender<Vec<ReplicaHealth>> },
    Readiness { options: ReadinessOptions, reply: oneshot::Sender<Result<(), NotReady>> },
}

impl Control {
    /// Answers the caller of a control the stopping ring will never perform.
    pub(super) fn refuse(self, reason: &str) {
        let reason = reason.to_string();
        match self {
            Control::Promote { reply } => drop(reply.send(Err(PromotionError::Shutdown { reason }))),
            Control::ChangeTiming { reply, .. } => drop(reply.send(Err(TimingError::Shutdown { reason }))),
            Control::Reseed { reply, .. } => drop(reply.send(Err(ReseedError::Shutdown { reason }))),
            Control::Exclusive { reply, .. } => drop(reply.send(Err(ReplicateError::Shutdown { reason }))),
            Control::Replicas { .. } => {}
            Control::Readiness { reply, .. } => drop(reply.send(Err(NotReady::Stopped { reason }))),
        }
    }
}

/// Why [`Ring::attempt_promotion`] did not make this replica primary.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PromotionError {
    /// This replica may not stand for election (vetoed, not a member, behind).
    #[error(transparent)]
    Refused(#[from] rsl_core::PromotionError),
    /// It asked for primacy but was not elected within the bound; `primary` is who is, if
    /// known.
    #[error("not elected within {after_ms} ms; primary is {primary:?}")]
    NotElected {
        /// The primary now, if known.
        primary: Option<NodeId>,
        /// The bound ([`RingOptions::request_timeout`](crate::RingOptions::request_timeout)).
        after_ms: u64,
    },
    /// The ring was shut down (or failed).
    #[error("ring shut down: {reason}")]
    Shutdown {
        /// Why the ring stopped.
        reason: String,
    },
}

/// Why [`Ring::change_timing`] changed nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TimingError {
    /// The timing breaks a rule of [`rsl_core::Config::validate`]; the error names the field.
    #[error(transparent)]
    Invalid(#[from] rsl_core::ConfigError),
    /// The ring was shut down (or failed).
    #[error("ring shut down: {reason}")]
    Shutdown {
        /// Why the ring stopped.
        reason: String,
    },
}

/// Why [`Ring::reseed_from`] did not re-seed the state machine.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReseedError {
    /// The replica refused: re-seeding from itself, or a checkpoint fetch under way.
    #[error(transparent)]
    Refused(#[from] rsl_core::ReseedError),
    /// The peer's checkpoint could not be fetched (unreachable, none at or above the slot
    /// this replica can replay from, damaged in transfer). Nothing changed.
    #[error("fetching the checkpoint of {from}: {error}")]
    Transfer {
        /// The peer.
        from: NodeId,
        /// What failed.
        error: TransferError,
    },
    /// The fetched checkpoint could not be opened or is not one this runtime wrote.
    /// Nothing was loaded.
    #[error("the checkpoint fetched from {from} is unusable: {reason}")]
    Unusable {
        /// The peer.
        from: NodeId,
        /// What is wrong.
        reason: String,
    },
    /// The ring was shut down (or failed, e.g. the state machine failed to load it).
    #[error("ring shut down: {reason}")]
    Shutdown {
        /// Why the ring stopped.
        reason: String,
    },
}

impl From<Unanswered> for PromotionError {
    fn from(unanswered: Unanswered) -> PromotionError {
        match unanswered {
            Unanswered::Stopped(reason) => PromotionError::Shutdown { reason },
            Unanswered::TimedOut { after_ms } => PromotionError::NotElected { primary: None, after_ms },
        }
    }
}

impl From<Unanswered> for TimingError {
    fn from(unanswered: Unanswered) -> TimingError {
        match unanswered {
            Unanswered::Stopped(reason) => TimingError::Shutdown { reason },
            Unanswered::TimedOut { after_ms } => {
                TimingError::Shutdown { reason: format!("no answer within {after_ms} ms") }
            }
        }
    }
}

impl From<Unanswered> for ReseedError {
    fn from(unanswered: Unanswered) -> ReseedError {
        match unanswered {
            Unanswered::Stopped(reason) => ReseedError::Shutdown { reason },
            Unanswered::TimedOut { after_ms } => {
                ReseedError::Shutdown { reason: format!("no answer within {after_ms} ms") }
            }
        }
    }
}

impl Ring {
    /// Makes this replica the primary now [RSL's AttemptPromotion]: if it follows a live
    /// primary it asks it to hand over (the primary relinquishes to it, so lease reads stay
    /// linearizable); if it hears none it campaigns at once, skipping the pre-vote and the
    /// election delay. Returns once it is primary, or [`PromotionError::NotElected`] after
    /// [`RingOptions::request_timeout`](crate::RingOptions::request_timeout).
    pub async fn attempt_promotion(&self) -> Result<(), PromotionError> {
        let started = Instant::now();
        let timeout = self.shared.options.request_timeout;
        let promotion = self.ask(timeout, |reply| Command::Control(Control::Promote { reply })).await?;
        let (ring, node) = (self.shared.ring.0, self.shared.node);
        tracing::info!(ring, %node, ?promotion, "promotion asked for");
        if promotion == Promotion::AlreadyPrimary {
            return Ok(());
        }
        let mut status = self.status();
        let left = timeout.saturating_sub(started.elapsed());
        let elected = tokio::time::timeout(left, status.wait_for(|s| s.role == Role::Primary))
            .await
            .map(|waited| waited.is_ok());
        match elected {
            Ok(true) => Ok(()),
            Ok(false) => Err(PromotionError::Shutdown { reason: self.shared.stop_reason() }),
            Err(_) => Err(PromotionError::NotElected {
                primary: self.status.borrow().primary,
                after_ms: timeout.as_millis() as u64,
            }),
        }
    }

    /// This replica's election and heartbeat timing in force.
    pub fn timing(&self) -> Timing {
        *self.shared.timing.lock()
    }

    /// Changes this replica's election and heartbeat timing while it runs [RSL's
    /// ChangeElectionDelay], validated like [`rsl_core::Config`]. It applies to this replica
    /// only, until it restarts: change every replica (rsl-kv's `timing` command does). The
    /// read lease and its guard keep the timing the replica started with, so a ring whose
    /// replicas change one at a time never serves a stale read.
    pub async fn change_timing(&self, timing: Timing) -> Result<(), TimingError> {
        let timeout = self.shared.options.request_timeout;
        self.ask(timeout, |reply| Command::Control(Control::ChangeTiming { timing, reply })).await?;
        *self.shared.timing.lock() = timing;
        Ok(())
    }

    /// Replaces this replica's state machine with `from`'s newest checkpoint and replays
    /// the log after it [RSL's CopyStateFromReplica]: for a state suspected damaged, or to
    /// verify that a peer's state replays to the same. The checkpoint is the newest `from`
    /// keeps at or above the slot before this replica's log start (so every later slot is
    /// still in the log); it is verified in transfer, and checkpoints this replica saved
    /// after its slot are deleted. Returns the checkpoint's slot. Gives up after
    /// [`RingOptions::checkpoint_transfer_timeout`](crate::RingOptions::checkpoint_transfer_timeout)
    /// without progress.
    pub async fn reseed_from(&self, from: NodeId) -> Result<Slot, ReseedError> {
        self.call(|reply| Command::Control(Control::Reseed { from, reply }))
            .await
            .unwrap_or_else(|stopped| Err(ReseedError::Shutdown { reason: stopped.0 }))
    }

    /// Replicates `request` alone in a slot of its own [RSL's
    /// ReplicateRequestExclusiveVote], after the requests submitted before it. With `last`
    /// it is the last request the ring accepts (RSL's `isLastDecree`), for migrations: once
    /// it is chosen every replica refuses writes with [`ReplicateError::RingClosed`], for
    /// good (the closed state is chosen in the log and saved with checkpoints); reads still
    /// work. Returns the state machine's response, like [`Ring::replicate`].
    pub async fn replicate_exclusive(
        &self,
        request: impl Into<Bytes>,
        last: bool,
    ) -> Result<Bytes, ReplicateError> {
        let payload = request.into();
        self.replicate_through(|reply| Command::Control(Control::Exclusive { payload, last, reply })).await
    }

    /// Every replica of the configuration in force, as this replica sees it [RSL's
    /// GetReplicasInformation]: complete on the primary (each replica's acknowledged slot,
    /// lag in slots and time, when it was last heard, whether its connection is up), a
    /// partial view elsewhere (see [`ReplicaHealth::measured_by_primary`]). Empty once the
    /// ring stopped.
    pub async fn replicas(&self) -> Vec<ReplicaHealth> {
        self.call(|reply| Command::Control(Control::Replicas { reply })).await.unwrap_or_default()
    }

    /// Whether this replica is ready to serve: a member of the configuration in force,
    /// caught up (applied within `options.lag_slots_max` of the highest chosen slot it
    /// knows), and following a primary it heard within the election delay. The metrics
    /// endpoint answers `/readyz` with it.
    pub async fn readiness(&self, options: ReadinessOptions) -> Result<(), NotReady> {
        let timeout = self.shared.options.read_timeout;
        let answer =
            self.call_within(timeout, |reply| Command::Control(Control::Readiness { options, reply })).await;
        match answer {
            Ok(result) => result,
            Err(Unanswered::Stopped(reason)) => Err(NotReady::Stopped { reason }),
            Err(Unanswered::TimedOut { after_ms }) => Err(NotReady::Stopped {
                reason: format!("the ring task did not answer within {after_ms} ms"),
            }),
        }
    }
}

/// What the ring task keeps for a control in progress.
#[derive(Default)]
pub(crate) struct Controls {
    /// The re-seed in progress: from whom, and its caller.
    reseed: Option<(NodeId, oneshot::Sender<Result<Slot, ReseedError>>)>,
}

impl Controls {
    /// Whether a re-seed is fetching or loading its checkpoint.
    pub(super) fn reseeding(&self) -> bool {
        self.reseed.is_some()
    }

    fn finish_reseed(&mut self, result: impl FnOnce(NodeId) -> Result<Slot, ReseedError>) {
        if let Some((from, reply)) = self.reseed.take() {
            let _ = reply.send(result(from));
        }
    }
}

impl RingTask {
    /// Performs a control.
    pub(super) fn on_control(&mut self, control: Control) -> Result<(), Stop> {
        let now = self.clock.now();
        let (ring, node) = (self.shared.ring, self.shared.node);
        match control {
            Control::Promote { reply } => {
                let _ = reply.send(self.replica.handle_attempt_promotion(now).map_err(PromotionError::from));
            }
            Control::ChangeTiming { timing, reply } => {
                let result = self.replica.handle_change_timing(now, timing);
                if result.is_ok() {
                    tracing::info!(ring = ring.0, %node, ?timing, "timing changed");
                }
                let _ = reply.send(result.map_err(TimingError::from));
            }
            Control::Reseed { from, reply } => match self.replica.handle_reseed(now, from) {
                Ok(min_slot) => {
                    tracing::info!(ring = ring.0, %node, %from, %min_slot, "re-seeding from a peer's checkpoint");
                    let request = CheckpointRequest { ring, requester: node, min_slot };
                    let timeout = self.shared.options.checkpoint_transfer_timeout;
                    if self.checkpoints.start_fetch(FetchPurpose::Install, from, request, timeout) {
                        self.controls.reseed = Some((from, reply));
                    } else {
                        // A primary's copy of a secondary's checkpoint is under way.
                        self.replica.on_reseed_failed(now);
                        drop(reply.send(Err(rsl_core::ReseedError::InProgress.into())));
                    }
                }
                Err(error) => drop(reply.send(Err(error.into()))),
            },
            Control::Exclusive { payload, last, reply } => {
                self.requests.propose_exclusive(&mut self.replica, now, payload, last, reply);
            }
            Control::Replicas { reply } => {
                let _ = reply.send(self.replicas());
            }
            Control::Readiness { options, reply } => {
                let report = self.replica.health(now);
                let configuration = self.replica.status().configuration.number;
                let window_ms = self.replica.timing().election_delay_max_ms;
                let _ = reply.send(NotReady::check(&report, configuration, window_ms, options));
            }
        }
        self.drain()
    }

    /// Every replica's health as this one sees it.
    pub(super) fn replicas(&self) -> Vec<ReplicaHealth> {
        let report = self.replica.health(self.clock.now());
        ReplicaHealth::from_report(&report, |peer| self.network.peer_connected(peer))
    }

    /// The re-seed's fetch ended: load the checkpoint, or give up with nothing changed.
    pub(super) fn on_reseed_fetched(
        &mut self,
        fetched: Result<(Slot, u64), TransferError>,
    ) -> Result<(), Stop> {
        let now = self.clock.now();
        match fetched {
            Ok((slot, file_bytes)) => {
                RingCounters::add(&self.shared.counters.checkpoint_bytes_received, file_bytes);
                self.apply.send(super::apply::Job::Reseed(slot))?;
            }
            Err(error) => {
                RingCounters::bump(&self.shared.counters.checkpoint_fetch_failures);
                self.replica.on_reseed_failed(now);
                self.controls.finish_reseed(|from| Err(ReseedError::Transfer { from, error }));
            }
        }
        self.drain()
    }

    /// The apply thread loaded the re-seed's checkpoint at `slot`.
    pub(super) fn on_reseeded(&mut self, slot: Slot, record: RingRecord) -> Result<(), Stop> {
        let now = self.clock.now();
        self.requests.installed(slot);
        if let Err(error) = self.replica.on_checkpoint_reseeded(now, slot, record.configuration) {
            let reason = format!("re-seeding left the state machine unable to replay the log: {error}");
            self.controls.finish_reseed(|_| Err(ReseedError::Shutdown { reason: reason.clone() }));
            return Err(RingFailure::LoadCheckpoint { slot, reason }.into());
        }
        if let Some(last_slot) = record.last_slot {
            self.replica.on_last_slot_known(last_slot);
        }
        let (ring, node) = (self.shared.ring.0, self.shared.node);
        tracing::info!(ring, %node, %slot, "re-seeded from a peer's checkpoint; replaying the log after it");
        self.controls.finish_reseed(|_| Ok(slot));
        Ok(())
    }

    /// The apply thread could not use the re-seed's checkpoint; nothing was loaded.
    pub(super) fn on_reseed_unusable(&mut self, reason: String) {
        let now = self.clock.now();
        self.replica.on_reseed_failed(now);
        self.controls.finish_reseed(|from| Err(ReseedError::Unusable { from, reason }));
    }
}
