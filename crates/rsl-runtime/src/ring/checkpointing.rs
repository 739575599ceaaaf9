//! Checkpoints as the ring task drives them: what the apply thread reports about a save
//! (durable, refused, failed), a fetch that ended (installed for catch-up, or, on a primary,
//! copied into the store only), and the on-demand operations of [`Ring`]:
//! [`Ring::checkpoint_now`] and [`Ring::purge_log`]. When a checkpoint is due and who saves
//! it is the replica's decision (`rsl_core`'s `checkpointing`); this module performs it.

use rsl_core::{NodeId, Slot};
use tokio::sync::oneshot;

use super::apply::{CheckpointFailure, Job};
use super::checkpoints::{CheckpointNowReply, FetchPurpose, Fetched};
use super::handle::{Command, Ring, Stopped};
use super::stop::Stop;
use super::task::RingTask;
use crate::error::{CheckpointNowError, PurgeLogError};
use crate::stats::RingCounters;
use crate::transfer::CheckpointRequest;

impl Ring {
    /// Saves a checkpoint of everything this replica has applied, now, whatever its role,
    /// and returns its slot once it is durable (RSL has no equivalent; its checkpoints
    /// follow `m_maxLogLenMB` only). When the newest checkpoint already reflects every
    /// applied slot, returns at once. The save runs on the state machine's thread like any
    /// other, so on a primary it delays execution for its duration; the state machine may
    /// refuse ([`CheckpointNowError::Refused`]).
    pub async fn checkpoint_now(&self) -> Result<Slot, CheckpointNowError> {
        self.call(|reply| Command::CheckpointNow { reply })
            .await
            .unwrap_or_else(|Stopped(reason)| Err(CheckpointNowError::Shutdown { reason }))
    }

    /// Deletes the log below `below` now, ignoring
    /// [`Config::log_retain_slots`](rsl_core::Config::log_retain_slots): a lagging replica that
    /// needs those slots then installs a checkpoint instead. Refused past the slot after the
    /// newest checkpoint, and never past the slot after the oldest checkpoint the store keeps
    /// (falling back to it must find every later slot). Returns the bound actually purged
    /// below.
    pub async fn purge_log(&self, below: Slot) -> Result<Slot, PurgeLogError> {
        self.call(|reply| Command::PurgeLog { below, reply })
            .await
            .unwrap_or_else(|Stopped(reason)| Err(PurgeLogError::Shutdown { reason }))
    }
}

impl RingTask {
    pub(super) fn on_checkpoint_now(&mut self, reply: CheckpointNowReply) -> Result<(), Stop> {
        let now = self.clock.now();
        match self.replica.handle_checkpoint_now(now) {
            Err(rsl_core::CheckpointNowError::NothingApplied) => {
                let _ = reply.send(Err(CheckpointNowError::NothingApplied));
            }
            Ok(slot) if slot <= self.replica.status().checkpoint => drop(reply.send(Ok(slot))),
            Ok(slot) => {
                tracing::info!(ring = self.shared.ring.0, node = %self.shared.node, %slot, "checkpoint asked for");
                self.checkpoints.await_saved(slot, reply);
            }
        }
        self.drain()
    }

    pub(super) fn on_purge_log(
        &mut self,
        below: Slot,
        reply: oneshot::Sender<Result<Slot, PurgeLogError>>,
    ) -> Result<(), Stop> {
        let now = self.clock.now();
        match self.replica.handle_purge_log(now, below) {
            Ok(_) => {
                // The truncation the replica asks for goes to the store in `drain`, bounded
                // by the oldest kept checkpoint.
                self.drain()?;
                let floor = self.checkpoints.truncation_floor(below).unwrap_or(Slot(1));
                tracing::info!(ring = self.shared.ring.0, node = %self.shared.node, %below, %floor, "log purged");
                let _ = reply.send(Ok(floor));
                Ok(())
            }
            Err(error) => {
                let _ = reply.send(Err(error.into()));
                Ok(())
            }
        }
    }

    /// The apply thread saved the checkpoint at `slot`.
    pub(super) fn on_checkpoint_saved(&mut self, slot: Slot) {
        self.replica.on_checkpoint_saved(slot);
        // Before the answer, so a caller of `checkpoint_now` finds the slot in the status.
        self.publish_status();
        self.checkpoints.saved(slot);
    }

    /// The apply thread did not save the checkpoint at `slot`.
    pub(super) fn on_checkpoint_failed(&mut self, slot: Slot, reason: CheckpointFailure) {
        let now = self.clock.now();
        self.replica.on_checkpoint_failed(now, slot);
        self.checkpoints.save_failed(slot, || match &reason {
            CheckpointFailure::Refused => CheckpointNowError::Refused { slot },
            CheckpointFailure::Stale { applied } => {
                CheckpointNowError::Superseded { slot, applied: *applied }
            }
            CheckpointFailure::Failed(reason) => CheckpointNowError::Failed { slot, reason: reason.clone() },
        });
    }

    /// The replica, primary, asks for `from`'s checkpoint at `slot` or newer, to keep.
    pub(super) fn copy_checkpoint(&mut self, from: NodeId, slot: Slot) {
        let (ring, requester) = (self.shared.ring, self.shared.node);
        let request = CheckpointRequest { ring, requester, min_slot: slot };
        let timeout = self.shared.options.checkpoint_transfer_timeout;
        if !self.checkpoints.start_fetch(FetchPurpose::Copy, from, request, timeout) {
            // A catch-up fetch is still in flight; the replica asks again later.
            let now = self.clock.now();
            self.replica.on_checkpoint_copy_failed(now);
        }
    }

    pub(super) fn on_fetched(&mut self, fetched: Fetched) -> Result<(), Stop> {
        if self.controls.reseeding() {
            return self.on_reseed_fetched(fetched.result);
        }
        let (ring, node) = (self.shared.ring.0, self.shared.node);
        let Fetched { purpose, from, result } = fetched;
        let now = self.clock.now();
        match (purpose, result) {
            (purpose, Ok((slot, file_bytes))) => {
                RingCounters::add(&self.shared.counters.checkpoint_bytes_received, file_bytes);
                tracing::info!(ring, %node, %from, %slot, file_bytes, ?purpose, "checkpoint fetched");
                match purpose {
                    FetchPurpose::Install => self.apply.send(Job::Install(slot, from))?,
                    FetchPurpose::Copy => {
                        RingCounters::bump(&self.shared.counters.checkpoints_copied);
                        self.replica.on_checkpoint_copied(now, slot);
                        self.apply.flush()?;
                        self.apply.send(Job::Copied(slot, from))?;
                    }
                }
            }
            (FetchPurpose::Install, Err(error)) => {
                RingCounters::bump(&self.shared.counters.checkpoint_fetch_failures);
                tracing::warn!(ring, %node, %error, "checkpoint fetch failed; catch-up retries");
                self.replica.on_checkpoint_fetch_failed(now);
            }
            (FetchPurpose::Copy, Err(error)) => {
                // Usual while the secondaries have nothing newer yet: the replica asks the
                // next one, and saves itself only after rounds of asking all.
                tracing::debug!(ring, %node, %from, %error, "no checkpoint copied");
                self.replica.on_checkpoint_copy_failed(now);
            }
        }
        self.drain()
    }
}
