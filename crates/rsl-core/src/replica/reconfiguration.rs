//! Reconfiguration: the configuration in force and the history of those still needed, a
//! primary's change of voters, learners and addresses (with the promotion guard: a learner
//! becomes a voter only once caught up), and entering a configuration once its value is
//! chosen (or a checkpoint carries it). A replica never adopts a configuration from hearsay.

use crate::action::ChangeError;
use crate::config::MEMBERS_MAX;
use crate::time::Time;
use crate::types::{
    Configuration, MemberAddress, NodeId, Slot, Value, ADDRESS_BYTES_MAX, CONFIGURATION_NUMBER_MAX,
    CONFIGURATION_ROUND_BITS,
};

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
    /// Whether this replica is a learner in `configuration`.
    learner: bool,
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
        let learner = configuration.is_learner(node);
        Membership { configuration, history, member_index, learner, query_at: None }
    }

    /// Whether this replica votes in the configuration in force.
    pub(super) fn is_member(&self) -> bool {
        self.member_index.is_some()
    }

    /// Whether this replica is a learner in the configuration in force: it follows the
    /// primary's accepts and heartbeats, and never votes or campaigns.
    pub(super) fn is_learner(&self) -> bool {
        self.learner
    }

    /// This replica's index among the members, if it is one.
    pub(super) fn member_index(&self) -> Option<usize> {
        self.member_index
    }

    /// The index of `node` among the members, if it is one.
    pub(super) fn index_of(&self, node: NodeId) -> Option<usize> {
        self.configuration.members.iter().position(|&m| m == node)
    }

    /// The index of `node` among the followers (the members, then the learners), the order
    /// of a primary's progress and of its accepts' acknowledgement bits.
    pub(super) fn follower_index_of(&self, node: NodeId) -> Option<usize> {
        self.configuration.followers().position(|m| m == node)
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
        self.learner = configuration.is_learner(node);
        self.configuration = configuration;
    }

    /// Every node other than `me` named by a configuration known, or in `contacts`.
    pub(super) fn known_nodes(&self, contacts: &[NodeId], me: NodeId) -> Vec<NodeId> {
        let mut nodes: Vec<NodeId> = self
            .history
            .iter()
            .flat_map(|c| c.followers())
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
    let number = configuration.number;
    let (members, learners) = (&configuration.members, &configuration.learners);
    if members.is_empty() || members.len() + learners.len() > MEMBERS_MAX {
        return Some(format!(
            "configuration {number} has {} members and {} learners (1..={MEMBERS_MAX} nodes, at least one voter)",
            members.len(),
            learners.len()
        ));
    }
    if !is_strictly_increasing(members) || !is_strictly_increasing(learners) {
        return Some(format!("configuration {number}'s members or learners are not sorted and distinct"));
    }
    if members.contains(&NodeId(0)) || learners.contains(&NodeId(0)) {
        return Some(format!("configuration {number} names node 0"));
    }
    if let Some(both) = learners.iter().find(|&&node| configuration.contains(node)) {
        return Some(format!("configuration {number} names {both} both a member and a learner"));
    }
    if let Some(problem) = addresses_problem(configuration) {
        return Some(format!("configuration {number}: {problem}"));
    }
    if number == 0 || number >= CONFIGURATION_NUMBER_MAX {
        return Some(format!("configuration number {number} out of range"));
    }
    if configuration.first_slot == Slot::ZERO {
        return Some(format!("configuration {number} starts at slot 0"));
    }
    None
}

fn is_strictly_increasing(nodes: &[NodeId]) -> bool {
    nodes.windows(2).all(|pair| pair[0] < pair[1])
}

/// What is wrong with a configuration's addresses, if anything: they must be sorted by
/// node, one per node, for nodes of the configuration, each at most `ADDRESS_BYTES_MAX`
/// bytes, and a replica endpoint is never empty.
fn addresses_problem(configuration: &Configuration) -> Option<String> {
    let addresses = &configuration.addresses;
    if addresses.windows(2).any(|pair| pair[0].node >= pair[1].node) {
        return Some("addresses are not sorted by node with one per node".into());
    }
    for address in addresses {
        let MemberAddress { node, replica, client } = address;
        if !configuration.includes(*node) {
            return Some(format!("an address for {node}, which is neither a member nor a learner"));
        }
        if replica.is_empty() {
            return Some(format!("{node}'s replica address is empty"));
        }
        if replica.len() > ADDRESS_BYTES_MAX || client.len() > ADDRESS_BYTES_MAX {
            return Some(format!("{node}'s address is longer than {ADDRESS_BYTES_MAX} bytes"));
        }
    }
    None
}

/// A change of a ring's members, asked of the primary with
/// [`Replica::handle_change_configuration`]: the voters and learners of the next
/// configuration, and addresses for any of them. The next configuration keeps the current
/// addresses of the nodes it keeps, replaced by those given here.
///
/// A bare list of nodes (`Vec<NodeId>` converts) asks for those voters and no learners.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MembershipChange {
    /// The voters of the next configuration.
    pub members: Vec<NodeId>,
    /// Its learners: they follow the log without voting. A learner of the current
    /// configuration named among `members` is promoted, once caught up (see
    /// `Config::learner_promotion_lag_slots_max`).
    pub learners: Vec<NodeId>,
    /// Addresses for nodes of the next configuration (new ones, or changed ones).
    pub addresses: Vec<MemberAddress>,
}

impl MembershipChange {
    /// A change to `members` voting and `learners` following, with no new addresses.
    pub fn new(members: Vec<NodeId>, learners: Vec<NodeId>) -> MembershipChange {
        MembershipChange { members, learners, addresses: Vec::new() }
    }

    /// The same change with `addresses`.
    #[must_use]
    pub fn with_addresses(mut self, addresses: Vec<MemberAddress>) -> MembershipChange {
        self.addresses = addresses;
        self
    }
}

impl From<Vec<NodeId>> for MembershipChange {
    fn from(members: Vec<NodeId>) -> MembershipChange {
        MembershipChange::new(members, Vec::new())
    }
}

impl Replica {
    /// Changes the ring's members (add, remove, replace, grow, shrink; add, promote or drop
    /// learners; change addresses) by proposing a configuration value at the next slot `s`:
    /// the new configuration (number + 1) governs slots from `s + 1`, and no slot beyond `s`
    /// is opened under the current one, so the pipeline drains at the boundary. The outcome
    /// is the `Apply` of the configuration value (chosen), or
    /// `ConfigurationChangeInterrupted` if this replica stops being primary first. Only the
    /// primary accepts, one change at a time. A change that makes a learner of the current
    /// configuration a voter is refused with [`ChangeError::LearnerBehind`] while that
    /// learner holds the log more than `learner_promotion_lag_slots_max` slots behind this
    /// primary's chosen slot (as far as this primary knows from what the learner
    /// acknowledged); nothing is proposed, and the caller may ask again later.
    pub fn handle_change_configuration(
        &mut self,
        now: Time,
        change: impl Into<MembershipChange>,
    ) -> Result<(), ChangeError> {
        self.advance_clock(now);
        let result = self.accept_change(change.into());
        if result.is_ok() {
            self.propose_queued();
        }
        postcondition!(
            result.is_err()
                || self.role.primary().is_none_or(|p| p.pending_change.is_some() || p.change_slot.is_some()),
            "an accepted change waits for room or is in flight"
        );
        self.finish();
        result
    }

    /// Checks `change` and, when it is acceptable, makes it the primary's pending change.
    fn accept_change(&mut self, change: MembershipChange) -> Result<(), ChangeError> {
        let hint = self.primary_hint();
        let current = &self.membership.configuration;
        let number = current.number;
        let Some(primary) = self.role.primary() else {
            return Err(ChangeError::NotPrimary { hint });
        };
        if let Some(target) = primary.relinquish_to {
            return Err(ChangeError::Relinquishing { target });
        }
        let members = change.members.clone();
        if let Some(last_slot) = self.last_slot {
            let reason = format!("the ring is closed: its last request was chosen at slot {last_slot}");
            return Err(ChangeError::Invalid { members, reason });
        }
        if let Some(pending) = &primary.pending_change {
            return Err(ChangeError::InProgress { members: pending.members.clone() });
        }
        if let Some(slot) = primary.change_slot {
            let members = self.log.configuration_members(slot).unwrap_or_default();
            return Err(ChangeError::InProgress { members });
        }
        let invalid = |reason: String| Err(ChangeError::Invalid { members: members.clone(), reason });
        let sorted = |nodes: &[NodeId]| {
            let mut sorted = nodes.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            sorted
        };
        let (voters, learners) = (sorted(&change.members), sorted(&change.learners));
        if voters.len() != change.members.len() || learners.len() != change.learners.len() {
            return invalid("a node is named twice".into());
        }
        if let Some(both) = learners.iter().find(|node| voters.contains(node)) {
            return invalid(format!("{both} is named both a member and a learner"));
        }
        if voters.is_empty() || voters.len() + learners.len() > MEMBERS_MAX {
            return invalid(format!("need 1..={MEMBERS_MAX} nodes, at least one of them a member"));
        }
        if voters.contains(&NodeId(0)) || learners.contains(&NodeId(0)) {
            return invalid("node 0 is reserved".into());
        }
        // The current addresses of the nodes kept, replaced by the ones given.
        let addresses = current.addresses.iter().cloned().chain(change.addresses).collect();
        let next =
            Configuration::new(number + 1, voters, Slot(1)).with_learners(learners).with_addresses(addresses);
        if let Some(problem) = addresses_problem(&next) {
            return invalid(problem);
        }
        if next.members == current.members
            && next.learners == current.learners
            && next.addresses == current.addresses
        {
            return invalid(format!("configuration {number} already has exactly these members and learners"));
        }
        if number + 1 >= CONFIGURATION_NUMBER_MAX {
            return invalid(format!("configuration numbers are exhausted at {number}"));
        }
        self.promotion_guard(&next)?;
        if let Some(primary) = self.role.primary_mut() {
            primary.pending_change = Some(next);
        }
        Ok(())
    }

    /// Refuses `next` if it makes a learner of the current configuration a voter while the
    /// learner is further behind this primary's chosen slot than
    /// `learner_promotion_lag_slots_max` (a learner never heard from holds nothing).
    fn promotion_guard(&self, next: &Configuration) -> Result<(), ChangeError> {
        let current = &self.membership.configuration;
        let Some(primary) = self.role.primary() else { return Ok(()) };
        let chosen = self.log.chosen();
        let lag_slots_max = self.config.learner_promotion_lag_slots_max;
        for node in next.members.iter().copied().filter(|&node| current.is_learner(node)) {
            let Some(index) = self.membership.follower_index_of(node) else { continue };
            let holds = primary.progress.member(index).holds.unwrap_or(Slot::ZERO);
            if chosen.0.saturating_sub(holds.0) > lag_slots_max {
                return Err(ChangeError::LearnerBehind { node, holds, chosen, lag_slots_max });
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(ids: &[u64]) -> Vec<NodeId> {
        ids.iter().copied().map(NodeId).collect()
    }

    fn address(node: u64, replica: &str) -> MemberAddress {
        MemberAddress { node: NodeId(node), replica: replica.into(), client: String::new() }
    }

    /// Configuration 2 over voters 1..=3 and learner 4, addressed, from slot 5: valid.
    fn valid() -> Configuration {
        Configuration::new(2, nodes(&[1, 2, 3]), Slot(5))
            .with_learners(nodes(&[4]))
            .with_addresses(vec![address(1, "http://a"), address(4, "http://d")])
    }

    #[test]
    fn a_well_formed_configuration_has_no_problem() {
        assert_eq!(configuration_problem(&valid()), None);
    }

    /// A way to break a valid configuration.
    type Breakage = Box<dyn Fn(&mut Configuration)>;

    #[test]
    fn each_malformed_configuration_from_a_peer_names_its_problem() {
        // The fields are set directly, as a decoder would, bypassing the sorting builders.
        let long = "x".repeat(ADDRESS_BYTES_MAX + 1);
        let cases: Vec<(&str, Breakage, &str)> = vec![
            ("no voter", Box::new(|c| c.members.clear()), "has 0 members and 1 learners"),
            ("unsorted voters", Box::new(|c| c.members = nodes(&[2, 1, 3])), "not sorted and distinct"),
            ("repeated learners", Box::new(|c| c.learners = nodes(&[4, 4])), "not sorted and distinct"),
            ("node 0", Box::new(|c| c.members = nodes(&[0, 1, 2])), "names node 0"),
            (
                "voter and learner",
                Box::new(|c| c.learners = nodes(&[3])),
                "names n3 both a member and a learner",
            ),
            ("unsorted addresses", Box::new(|c| c.addresses.reverse()), "addresses are not sorted by node"),
            (
                "address of a stranger",
                Box::new(|c| c.addresses.push(address(9, "http://i"))),
                "an address for n9, which is neither",
            ),
            (
                "empty replica address",
                Box::new(|c| c.addresses[0].replica.clear()),
                "n1's replica address is empty",
            ),
            (
                "long client address",
                Box::new(move |c| c.addresses[1].client = long.clone()),
                "n4's address is longer than 256 bytes",
            ),
            ("number 0", Box::new(|c| c.number = 0), "configuration number 0 out of range"),
            ("number too high", Box::new(|c| c.number = CONFIGURATION_NUMBER_MAX), "out of range"),
            ("slot 0", Box::new(|c| c.first_slot = Slot::ZERO), "starts at slot 0"),
        ];
        for (name, breaks, expected) in cases {
            let mut configuration = valid();
            breaks(&mut configuration);
            let problem = configuration_problem(&configuration).unwrap_or_else(|| panic!("{name}: accepted"));
            assert!(problem.contains(expected), "{name}: {problem:?} does not say {expected:?}");
        }
    }

    #[test]
    fn too_many_nodes_counting_learners_is_a_problem() {
        let mut configuration = valid();
        configuration.addresses.clear();
        configuration.learners = (4..=MEMBERS_MAX as u64 + 1).map(NodeId).collect();
        let problem = configuration_problem(&configuration).expect("one node too many");
        assert!(problem.contains(&format!("1..={MEMBERS_MAX} nodes")), "{problem}");
    }

    #[test]
    fn the_history_answers_which_configuration_governs_a_slot_and_prunes_ended_ones() {
        let log = Log::recover(Vec::new(), Slot::ZERO, Slot::ZERO).unwrap().log;
        let first = Configuration::new(1, nodes(&[1, 2, 3]), Slot(1));
        let mut membership = Membership::recover(first.clone(), &log, NodeId(4));
        assert!(!membership.is_member() && !membership.is_learner());
        membership.enter(valid(), NodeId(4));
        assert!(membership.is_learner() && membership.member_index().is_none());
        assert_eq!(membership.configuration_at(Slot(4)), first);
        assert_eq!(membership.configuration_at(Slot(5)), valid());
        membership.prune(Slot(6));
        assert_eq!(membership.configuration_at(Slot(9)), valid());
        assert_eq!(membership.history, vec![valid()], "configuration 1 ended before slot 6");
    }
}
