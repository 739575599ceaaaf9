//! Reconfiguration: the configuration in force and the history of those still needed, a
//! primary's change of members, and entering a configuration once its value is chosen (or
//! a checkpoint carries it). A replica never adopts a configuration from hearsay.

use crate::action::ChangeError;
use crate::config::MEMBERS_MAX;
use crate::time::Time;
use crate::types::{Configuration, NodeId, Slot, Value, CONFIGURATION_NUMBER_MAX, CONFIGURATION_ROUND_BITS};

use super::log::Log;
use super::role::KnownPrimary;
use super::Replica;

/// The configuration in force and this replica's place in it.
#[derive(Debug)]
pub(super) struct Membership {
    /// In force for the slots after the chosen watermark.
    pub(super) configuration: Configuration,
    /// Every configuration entered since the one in force after the newest checkpoint,
    /// oldest first, the current one last (pruned as checkpoints are saved).
    history: Vec<Configuration>,
    /// This replica's index among the members, if it votes in `configuration`.
    member_index: Option<usize>,
    /// When this replica last asked a replica in a newer configuration for it.
    pub(super) query_at: Option<Time>,
}

impl Membership {
    /// Starts from `configuration` (the initial one or a checkpoint's) and enters, in slot
    /// order, every newer configuration chosen in the recovered log.
    pub(super) fn recover(mut configuration: Configuration, log: &Log, node: NodeId) -> Membership {
        let mut history = vec![configuration.clone()];
        for (_, entry) in log.range(..).filter(|(_, e)| e.chosen) {
            if let Value::Configuration(next) = &entry.proposal.value {
                if next.number > configuration.number {
                    configuration = next.clone();
                    history.push(next.clone());
                }
            }
        }
        let member_index = configuration.members.iter().position(|&m| m == node);
        Membership { configuration, history, member_index, query_at: None }
    }

    /// Whether this replica votes in the configuration in force.
    pub(super) fn is_member(&self) -> bool {
        self.member_index.is_some()
    }

    /// This replica's index among the members, if it is one.
    pub(super) fn member_index(&self) -> Option<usize> {
        self.member_index
    }

    /// The index of `node` among the members, if it is one.
    pub(super) fn index_of(&self, node: NodeId) -> Option<usize> {
        self.configuration.members.iter().position(|&m| m == node)
    }

    /// The highest round a ballot of the configuration in force may have.
    pub(super) fn round_ceiling(&self) -> u64 {
        self.configuration.number.saturating_mul(1 << CONFIGURATION_ROUND_BITS)
    }

    /// The configuration that governs `slot` (as far as the history goes back).
    pub(super) fn configuration_at(&self, slot: Slot) -> Configuration {
        let found = self.history.iter().rev().find(|c| c.first_slot <= slot);
        invariant!(found.is_some(), "the history reaches back to slot {slot}");
        found.or(self.history.first()).unwrap_or(&self.configuration).clone()
    }

    /// Forgets configurations that ended before `slot`.
    pub(super) fn prune(&mut self, slot: Slot) {
        let keep_from = self.history.iter().rposition(|c| c.first_slot <= slot).unwrap_or(0);
        self.history.drain(..keep_from);
        postcondition!(self.history.last() == Some(&self.configuration), "the current configuration is kept");
    }

    /// Makes `configuration` the one in force for `node`.
    fn enter(&mut self, configuration: Configuration, node: NodeId) {
        self.history.push(configuration.clone());
        self.member_index = configuration.members.iter().position(|&m| m == node);
        self.configuration = configuration;
    }

    /// Every node other than `me` named by a configuration known, or in `contacts`.
    pub(super) fn known_nodes(&self, contacts: &[NodeId], me: NodeId) -> Vec<NodeId> {
        let mut nodes: Vec<NodeId> = self
            .history
            .iter()
            .flat_map(|c| c.members.iter().copied())
            .chain(contacts.iter().copied())
            .filter(|&n| n != me)
            .collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes
    }
}

/// What makes a configuration from a peer unusable, if anything.
pub(super) fn configuration_problem(configuration: &Configuration) -> Option<String> {
    if configuration.members.is_empty() || configuration.members.len() > MEMBERS_MAX {
        return Some(format!(
            "configuration {} has {} members",
            configuration.number,
            configuration.members.len()
        ));
    }
    if configuration.members.contains(&NodeId(0)) {
        return Some(format!("configuration {} names node 0", configuration.number));
    }
    if configuration.number == 0 || configuration.number >= CONFIGURATION_NUMBER_MAX {
        return Some(format!("configuration number {} out of range", configuration.number));
    }
    if configuration.first_slot == Slot::ZERO {
        return Some(format!("configuration {} starts at slot 0", configuration.number));
    }
    None
}

impl Replica {
    /// Changes the ring's members (add, remove, replace, grow, shrink) by proposing a
    /// configuration value at the next slot `s`: the new configuration (number + 1) governs
    /// slots from `s + 1`, and no slot beyond `s` is opened under the current one, so the
    /// pipeline drains at the boundary. The outcome is the `Apply` of the configuration
    /// value (chosen), or `ConfigurationChangeInterrupted` if this replica stops being
    /// primary first. Only the primary accepts, one change at a time.
    pub fn handle_change_configuration(
        &mut self,
        now: Time,
        members: Vec<NodeId>,
    ) -> Result<(), ChangeError> {
        self.advance_clock(now);
        let hint = self.primary_hint();
        let number = self.membership.configuration.number;
        let Some(primary) = self.role.primary() else {
            return Err(ChangeError::NotPrimary { hint });
        };
        if let Some(target) = primary.relinquish_to {
            return Err(ChangeError::Relinquishing { target });
        }
        if let Some(last_slot) = self.last_slot {
            let reason = format!("the ring is closed: its last request was chosen at slot {last_slot}");
            return Err(ChangeError::Invalid { members, reason });
        }
        if let Some(pending) = &primary.pending_change {
            return Err(ChangeError::InProgress { members: pending.clone() });
        }
        if let Some(slot) = primary.change_slot {
            let members = self.log.configuration_members(slot).unwrap_or_default();
            return Err(ChangeError::InProgress { members });
        }
        let invalid = |reason: String| Err(ChangeError::Invalid { members: members.clone(), reason });
        let mut sorted = members.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != members.len() {
            return invalid("a node is named twice".into());
        }
        if sorted.is_empty() || sorted.len() > MEMBERS_MAX {
            return invalid(format!("need 1..={MEMBERS_MAX} members"));
        }
        if sorted.contains(&NodeId(0)) {
            return invalid("node 0 is reserved".into());
        }
        if sorted == self.membership.configuration.members {
            return invalid(format!("configuration {number} already has exactly these members"));
        }
        if number + 1 >= CONFIGURATION_NUMBER_MAX {
            return invalid(format!("configuration numbers are exhausted at {number}"));
        }
        if let Some(primary) = self.role.primary_mut() {
            primary.pending_change = Some(sorted);
        }
        self.propose_queued();
        postcondition!(
            self.role.primary().is_none_or(|p| p.pending_change.is_some() || p.change_slot.is_some()),
            "an accepted change waits for room or is in flight"
        );
        self.finish();
        Ok(())
    }

    /// Whether this replica promised, or heard of, a ballot of a later configuration: that
    /// configuration was entered, so its own has ended, and it must catch up rather than
    /// campaign (a candidacy keeps its ballot within its configuration's rounds).
    pub(super) fn knows_of_newer_configuration(&self) -> bool {
        let ceiling = self.membership.round_ceiling();
        self.promised.round >= ceiling || self.highest_seen.round >= ceiling
    }

    /// Whether a configuration value was chosen in `(before, chosen]`.
    pub(super) fn crossed_configuration(&self, before: Slot) -> bool {
        self.log
            .range(before.next()..=self.log.chosen())
            .any(|(_, e)| matches!(e.proposal.value, Value::Configuration(_)))
    }

    /// Enters, in slot order, every newer configuration chosen in `(before, chosen]`.
    pub(super) fn absorb_chosen_configurations(&mut self, before: Slot) {
        let newer: Vec<Configuration> = self
            .log
            .range(before.next()..=self.log.chosen())
            .filter_map(|(_, e)| match &e.proposal.value {
                Value::Configuration(c) if c.number > self.membership.configuration.number => Some(c.clone()),
                _ => None,
            })
            .collect();
        for configuration in newer {
            self.enter_configuration(configuration);
        }
    }

    /// Switches to `configuration`, chosen in the log or saved with a checkpoint.
    /// Leadership and candidacy of the old configuration end; a primary that is a member of
    /// the new one campaigns in it at once, and its old followers, which skip the lease
    /// guard for it, elect it without waiting for a timeout.
    pub(super) fn enter_configuration(&mut self, configuration: Configuration) {
        if configuration.number <= self.membership.configuration.number {
            return;
        }
        // Write the chosen watermark that ended the old configuration in a request of its
        // own: every promise or accept given in the new configuration is written after it
        // (log stores keep a prefix of what was written, even when a crash tears a
        // request), so a replica that recovers one recovers the configuration too.
        self.persistence.stage();
        self.flush_staged();
        let led = self.role.primary_mut().map(|primary| {
            // The change reached its end: chosen, not interrupted.
            primary.change_slot = None;
            primary.ballot
        });
        self.membership.enter(configuration, self.config.node);
        self.stats.configurations_entered += 1;
        if !matches!(self.role, super::role::RoleState::Secondary) {
            self.step_down(None);
        }
        if let Some(primary) = self.primary {
            if !self.membership.configuration.contains(primary.node) {
                self.primary = None;
                self.primary_heard_at = None;
            }
        }
        if let Some(ballot) = led {
            if self.may_campaign() {
                self.primary = Some(KnownPrimary { node: self.config.node, ballot });
                self.start_prepare(Some(ballot));
            }
        }
        postcondition!(!self.role.is_primary(), "no primary carries over into a new configuration");
    }
}
