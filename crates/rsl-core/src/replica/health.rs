//! Replica health (RSL's `GetReplicasInformation` and `ReplicaHealth`): what this replica
//! knows of every member and learner of its configuration.
//!
//! The primary knows the most: for each member, the highest slot it voted for, how far it
//! holds the log (every slot up to a point, chosen there or voted for in order), when it
//! was last heard, and how far behind the primary's chosen watermark it is, in slots and in
//! time (since when it has not held the watermark). A secondary knows itself and the
//! primary it follows; [`HealthReport::role`] says which view a report is.

use crate::action::Role;
use crate::time::{Micros, Time};
use crate::types::{NodeId, Slot};

use super::Replica;

/// One member of the configuration, as this replica sees it. `None` is "not known here".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberHealth {
    /// The member.
    pub node: NodeId,
    /// Whether it is the replica reporting.
    pub is_self: bool,
    /// Whether it is a learner (follows without voting) rather than a voter.
    pub is_learner: bool,
    /// Whether it is the primary the reporting replica follows (or is).
    pub is_primary: bool,
    /// The highest slot it voted for at the primary's ballot (primary's view).
    pub acknowledged: Option<Slot>,
    /// Every slot up to here it holds durably: chosen there, or voted for in order.
    pub holds: Option<Slot>,
    /// How long ago it was last heard (a message at the primary's ballot; for a
    /// secondary's view of its primary, any message from it).
    pub last_heard: Option<Micros>,
    /// How many slots it lacks behind the highest chosen slot the reporting replica knows.
    pub lag_slots: Option<u64>,
    /// How long it has not held the primary's chosen watermark (zero when it holds it;
    /// primary's view).
    pub lag: Option<Micros>,
}

/// What one replica knows of the health of its ring, from [`Replica::health`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthReport {
    /// The replica reporting.
    pub node: NodeId,
    /// Its role: only a primary's report has every member's progress.
    pub role: Role,
    /// The primary it follows (itself when primary), if known.
    pub primary: Option<NodeId>,
    /// How long ago it last heard that primary (zero when it is the primary).
    pub primary_heard: Option<Micros>,
    /// Whether it votes in the configuration in force.
    pub member: bool,
    /// Whether it is a learner in the configuration in force.
    pub learner: bool,
    /// Every slot up to here is chosen and durable here.
    pub chosen: Slot,
    /// Every slot up to here is applied here.
    pub applied: Slot,
    /// The highest chosen slot it knows of: its own watermark as primary; the highest a
    /// primary or peer reported otherwise.
    pub known_chosen: Slot,
    /// Every member of the configuration in force, in member order, then every learner.
    pub members: Vec<MemberHealth>,
}

impl Replica {
    /// What this replica knows of its ring's health at `now` (a query: changes nothing).
    pub fn health(&self, now: Time) -> HealthReport {
        let now = now.max(self.now);
        let chosen = self.log.chosen();
        let me = self.config.node;
        let primary = self.primary_hint();
        let known_chosen =
            if self.role.is_primary() { chosen } else { chosen.max(self.catch_up.known_chosen()) };
        let configuration = &self.membership.configuration;
        let members = configuration.followers().enumerate().map(|(index, node)| {
            let mut health = MemberHealth {
                node,
                is_self: node == me,
                is_learner: configuration.is_learner(node),
                is_primary: Some(node) == primary,
                acknowledged: None,
                holds: None,
                last_heard: None,
                lag_slots: None,
                lag: None,
            };
            if let Some(leading) = self.role.primary() {
                if node == me {
                    health.acknowledged = Some(leading.next_slot.prev());
                    health.holds = Some(chosen);
                    (health.lag_slots, health.lag) = (Some(0), Some(Micros::ZERO));
                } else {
                    let progress = leading.progress.member(index);
                    health.acknowledged = progress.acknowledged;
                    health.holds = progress.holds;
                    health.last_heard = progress.heard_at.map(|t| now.since(t));
                    health.lag_slots = progress.holds.map(|holds| chosen.0.saturating_sub(holds.0));
                    let behind = progress.holds.is_none_or(|holds| holds < chosen);
                    health.lag = Some(if behind { now.since(progress.caught_up_at) } else { Micros::ZERO });
                }
            } else if node == me {
                health.holds = Some(chosen);
                health.lag_slots = Some(known_chosen.0.saturating_sub(chosen.0));
            } else if health.is_primary {
                health.last_heard = self.primary_heard_at.map(|t| now.since(t));
                let watermark = self.catch_up.watermark();
                if self.primary.is_some_and(|p| p.ballot == watermark.ballot) {
                    health.holds = Some(watermark.chosen);
                    health.lag_slots = Some(known_chosen.0.saturating_sub(watermark.chosen.0));
                }
            }
            health
        });
        HealthReport {
            node: me,
            role: self.role(),
            primary,
            primary_heard: if self.role.is_primary() {
                Some(Micros::ZERO)
            } else {
                self.primary_heard_at.map(|t| now.since(t))
            },
            member: self.membership.is_member(),
            learner: self.membership.is_learner(),
            chosen,
            applied: self.applied,
            known_chosen,
            members: members.collect(),
        }
    }
}
