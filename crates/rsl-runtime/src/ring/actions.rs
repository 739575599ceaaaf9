//! Performing what the replica asks: after every input the ring task drains
//! `Replica::poll_action` and hands each action to the part that performs it (a persist to
//! the group committer, a message to the outbox, a chosen value to the apply thread's
//! batch, ...); at the end of a wake-up [`RingTask::flush`] sends the batches and publishes
//! the status.

use rsl_core::{Action, PersistRequest, Value};

use super::apply::Job;
use super::checkpoints::FetchPurpose;
use super::stop::Stop;
use super::task::RingTask;
use crate::state_machine::RoleChange;
use crate::transfer::CheckpointRequest;

impl RingTask {
    /// Performs every action the replica has for us, in order.
    pub(super) fn drain(&mut self) -> Result<(), Stop> {
        let (ring, node) = (self.shared.ring, self.shared.node);
        self.requests.last_slot = self.replica.last_slot();
        while let Some(action) = self.replica.poll_action() {
            match action {
                Action::Persist(request) => self.persist(request)?,
                Action::Send(message) => self.network.push(message),
                Action::Apply { slot, value } => {
                    if let Value::Configuration(configuration) = &value {
                        tracing::info!(
                            ring = ring.0, %node, %slot, number = configuration.number,
                            members = ?configuration.members, "configuration chosen"
                        );
                        self.requests.change_chosen(configuration);
                    }
                    self.apply.push(slot, value);
                }
                Action::ConfigurationChangeInterrupted { members, primary } => {
                    self.requests.change_interrupted(&members, primary);
                }
                Action::TakeCheckpoint { slot, configuration } => {
                    self.apply.flush()?;
                    self.apply.send(Job::Checkpoint(slot, configuration))?;
                }
                Action::TruncateLog { below } => {
                    if let Some(floor) = self.checkpoints.truncation_floor(below) {
                        self.persist.truncate_below(floor)?;
                    }
                }
                Action::FetchCheckpoint { from, slot } => {
                    let request = CheckpointRequest { ring, requester: node, min_slot: slot };
                    let timeout = self.shared.options.checkpoint_transfer_timeout;
                    self.checkpoints.start_fetch(FetchPurpose::Install, from, request, timeout);
                }
                Action::CopyCheckpoint { from, slot } => self.copy_checkpoint(from, slot),
                Action::PrimaryRecovered { ballot, slot } => {
                    tracing::info!(ring = ring.0, %node, %ballot, %slot, "primary recovered");
                    self.apply.flush()?;
                    self.apply.send(Job::PrimaryRecovered(ballot, slot))?;
                }
                Action::RoleChanged { role, ballot, primary } => {
                    tracing::info!(ring = ring.0, %node, ?role, %ballot, ?primary, "role changed");
                    self.apply.flush()?;
                    self.apply.send(Job::Role(RoleChange { role, ballot, primary }))?;
                }
                Action::RequestsDropped { ids, primary } => self.requests.dropped(ids, primary),
                Action::ReadIndexReady { id, index } => self.read_index_ready(id, index),
                Action::ReadIndexFailed { id, error } => self.read_index_failed(id, error),
            }
        }
        Ok(())
    }

    /// Hands a persist request to the group committer, after noting which slot each of this
    /// replica's requests in it went to.
    fn persist(&mut self, request: PersistRequest) -> Result<(), Stop> {
        self.requests.learn_slots(&request);
        Ok(self.persist.append(request)?)
    }

    /// Sends what accumulated, hands applies to the state machine, publishes the status.
    /// A state machine on the ring task has executed them by now: what it reported (answers,
    /// checkpoints saved) is handled here, in this wake-up, until it reports nothing more.
    pub(super) fn flush(&mut self) -> Result<(), Stop> {
        self.apply.flush()?;
        self.apply.poll_veto()?;
        while let Some(event) = self.apply.next_event() {
            self.on_event(event)?;
            self.apply.flush()?;
        }
        self.network.flush(&self.shared.counters);
        self.network.admit(self.replica.configuration());
        self.publish_status();
        Ok(())
    }

    /// Publishes the replica's status to the handles' watchers (when it changed).
    pub(super) fn publish_status(&mut self) {
        let replica = &self.replica;
        self.status.send_if_modified(|status| replica.update_status(status));
    }
}
