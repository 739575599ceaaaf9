//! Handing primacy over (RSL's RelinquishPrimary): the primary stops taking requests, waits
//! for its in-flight slots to be chosen, then tells the target to campaign at once; the
//! target's prepare names the old ballot, so the old primary's followers skip the lease
//! guard for it.

use crate::action::{Action, RelinquishError};
use crate::message::MessageBody;
use crate::time::Time;
use crate::types::NodeId;

use super::role::KnownPrimary;
use super::{Replica, Timer};

impl Replica {
    /// Hands primacy to `target` (or the most up-to-date live member): stops taking
    /// requests, waits for in-flight slots to be chosen, then tells the target to
    /// campaign at once.
    pub fn handle_relinquish(
        &mut self,
        now: Time,
        target: Option<NodeId>,
    ) -> Result<NodeId, RelinquishError> {
        self.advance_clock(now);
        let hint = self.primary_hint();
        let configuration = &self.membership.configuration;
        let Some(primary) = self.role.primary_mut() else {
            return Err(RelinquishError::NotPrimary { hint });
        };
        let target = match target {
            Some(target) if target == self.config.node || !configuration.contains(target) => {
                return Err(RelinquishError::NotAMember { target, configuration: configuration.number });
            }
            Some(target) => target,
            None => {
                let live_since = now.minus(self.config.election_delay_min());
                match primary.progress.most_caught_up(&configuration.members, live_since) {
                    Some(target) => target,
                    None => return Err(RelinquishError::NoLiveTarget),
                }
            }
        };
        primary.relinquish_to = Some(target);
        let mut dropped = primary.queue.drain_ids();
        dropped.extend(primary.exclusive.drain_ids());
        if !dropped.is_empty() {
            self.actions.push_back(Action::RequestsDropped { ids: dropped, primary: Some(target) });
        }
        self.timers.set(Timer::Relinquish, now.plus(self.config.election_delay_min()));
        self.try_complete_relinquish();
        self.finish();
        Ok(target)
    }

    /// Once every in-flight slot is chosen, tells the target to campaign and steps down.
    pub(super) fn try_complete_relinquish(&mut self) {
        let Some(primary) = self.role.primary() else { return };
        let Some(target) = primary.relinquish_to else { return };
        if !primary.in_flight.is_empty() {
            return;
        }
        let ballot = primary.ballot;
        self.send(target, MessageBody::TimeoutNow { ballot });
        self.timers.cancel(Timer::Relinquish);
        self.step_down(Some(KnownPrimary { node: target, ballot }));
        // Follow the old ballot until the target's prepare arrives; no lease guard for it.
        self.primary_heard_at = None;
    }

    /// The in-flight slots did not drain in time: stay primary and take requests again.
    pub(super) fn on_relinquish_timer(&mut self) {
        if let Some(primary) = self.role.primary_mut() {
            primary.relinquish_to = None;
        }
    }
}
