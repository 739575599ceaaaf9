//! The cluster: nodes (a replica, its disk, its state machine), the network and the clock.

use std::collections::{BTreeMap, VecDeque};

use rsl_core::{
    Action, Ballot, Config, Configuration, DurableState, Message, MessageError, NodeId, PersistRequest,
    Proposal, ProposeError, Replica, Request, Role, Slot, Time, Value,
};

use crate::{config, payloads};

/// Deliveries in one `settle` beyond which the replicas are talking forever.
const DELIVERIES_MAX: u64 = 100_000_000;

/// Simulated time `elect` and `run_until_applied` let pass before declaring the cluster
/// stuck.
const STUCK_AFTER_MS: u64 = 60_000;

/// What the cluster keeps of what happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recording {
    /// Every action with its time, every message sent, every applied value, and each
    /// node's disk (so a node can be restarted from it).
    Everything,
    /// Counts only: what a benchmark needs. Nodes cannot be restarted.
    Counters,
}

/// What a node's disk holds: what `on_persisted` has been told is durable.
#[derive(Clone, Debug, Default)]
pub struct Disk {
    pub promise: Ballot,
    pub proposals: BTreeMap<Slot, Proposal>,
    pub chosen: Slot,
    /// The newest saved checkpoint, and the state machine as of it.
    pub checkpoint: Slot,
    pub checkpoint_state: Vec<(Slot, Value)>,
    /// The configuration saved with the checkpoint.
    pub checkpoint_configuration: Option<Configuration>,
}

impl Disk {
    fn write(&mut self, request: &PersistRequest) {
        if let Some(promise) = request.promise {
            assert!(promise >= self.promise, "a persisted promise went down: {} -> {promise}", self.promise);
            self.promise = promise;
        }
        for proposal in &request.proposals {
            self.proposals.insert(proposal.slot, proposal.clone());
        }
        if let Some(chosen) = request.chosen {
            self.chosen = self.chosen.max(chosen);
        }
    }

    /// What a log store would recover from this disk.
    pub fn durable_state(&self) -> DurableState {
        DurableState {
            promise: self.promise,
            proposals: self.proposals.values().cloned().collect(),
            chosen: self.chosen,
            checkpoint: self.checkpoint,
            configuration: self.checkpoint_configuration.clone(),
        }
    }
}

/// One replica and its environment.
#[derive(Debug)]
pub struct Node {
    pub replica: Replica,
    /// Complete persists as soon as they are emitted; otherwise queue them in `withheld`.
    pub auto_persist: bool,
    pub withheld: VecDeque<PersistRequest>,
    /// Call `on_checkpoint_saved` as soon as `TakeCheckpoint` is emitted.
    pub auto_checkpoint: bool,
    pub disk: Disk,
    /// The state machine: every applied value, in order (recorded only with
    /// [`Recording::Everything`]).
    pub applied: Vec<(Slot, Value)>,
    /// The last slot the state machine reflects.
    pub state_slot: Slot,
    /// Slots and requests applied.
    pub applied_slots: u64,
    pub applied_requests: u64,
    /// Requests the replica dropped (`RequestsDropped`) and checkpoints it asked to fetch.
    pub requests_dropped: u64,
    pub checkpoint_fetches: u64,
    /// Every action performed, with the time it was performed (recorded only with
    /// [`Recording::Everything`]).
    pub actions: Vec<(Time, Action)>,
}

impl Node {
    fn new(replica: Replica) -> Node {
        Node {
            replica,
            auto_persist: true,
            withheld: VecDeque::new(),
            auto_checkpoint: true,
            disk: Disk::default(),
            applied: Vec::new(),
            state_slot: Slot::ZERO,
            applied_slots: 0,
            applied_requests: 0,
            requests_dropped: 0,
            checkpoint_fetches: 0,
            actions: Vec::new(),
        }
    }

    /// The role changes reported, in order.
    pub fn role_changes(&self) -> Vec<(Time, Role, Ballot, Option<NodeId>)> {
        self.actions
            .iter()
            .filter_map(|(t, a)| match a {
                Action::RoleChanged { role, ballot, primary } => Some((*t, *role, *ballot, *primary)),
                _ => None,
            })
            .collect()
    }

    /// The applied payloads, flattened across slots.
    pub fn applied_payloads(&self) -> Vec<String> {
        self.applied.iter().flat_map(|(_, v)| payloads(v)).collect()
    }

    /// The slots applied, in order.
    pub fn applied_slots(&self) -> Vec<u64> {
        self.applied.iter().map(|(s, _)| s.0).collect()
    }

    /// The last slot the state machine reflects.
    pub fn state_slot(&self) -> Slot {
        self.state_slot
    }

    /// Replaces the state machine with `applied` (a checkpoint's state, as a replica that
    /// installs it would load it).
    pub fn load_state(&mut self, applied: Vec<(Slot, Value)>) {
        self.state_slot = applied.last().map_or(Slot::ZERO, |(s, _)| *s);
        self.applied = applied;
    }
}

type DropFilter = Box<dyn FnMut(&Message) -> bool>;

/// Replicas of one ring, a network the caller controls, and a manual clock.
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub now: Time,
    /// Messages sent and not yet delivered, in send order.
    pub network: VecDeque<Message>,
    /// Every message sent (delivered or dropped), with its send time (recorded only with
    /// [`Recording::Everything`]).
    pub sent: Vec<(Time, Message)>,
    /// Messages the receiver rejected.
    pub rejected: Vec<(Message, MessageError)>,
    /// Messages dropped by the filter or lost.
    pub dropped: u64,
    /// Messages delivered.
    pub delivered: u64,
    recording: Recording,
    drop_filter: Option<DropFilter>,
    tweak: Box<dyn Fn(&mut Config)>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("now", &self.now).field("nodes", &self.nodes).finish_non_exhaustive()
    }
}

impl Cluster {
    /// `count` replicas booted at time zero with `tweak` applied to each configuration,
    /// recording everything.
    pub fn new(count: u64, tweak: impl Fn(&mut Config) + 'static) -> Cluster {
        Cluster::with_recording(count, Recording::Everything, tweak)
    }

    /// `count` replicas booted at time zero with `tweak` applied to each configuration.
    pub fn with_recording(
        count: u64,
        recording: Recording,
        tweak: impl Fn(&mut Config) + 'static,
    ) -> Cluster {
        let mut cluster = Cluster {
            nodes: Vec::new(),
            now: Time(0),
            network: VecDeque::new(),
            sent: Vec::new(),
            rejected: Vec::new(),
            dropped: 0,
            delivered: 0,
            recording,
            drop_filter: None,
            tweak: Box::new(tweak),
        };
        for node in 1..=count {
            let mut config = config(node, count);
            (cluster.tweak)(&mut config);
            let replica = Replica::new(config, DurableState::default(), cluster.now).expect("valid config");
            cluster.nodes.push(Node::new(replica));
        }
        for index in 0..cluster.nodes.len() {
            cluster.drain(index);
        }
        cluster
    }

    pub fn node(&self, id: u64) -> &Node {
        &self.nodes[(id - 1) as usize]
    }

    pub fn node_mut(&mut self, id: u64) -> &mut Node {
        &mut self.nodes[(id - 1) as usize]
    }

    pub fn replica(&self, id: u64) -> &Replica {
        &self.node(id).replica
    }

    pub fn replica_mut(&mut self, id: u64) -> &mut Replica {
        &mut self.node_mut(id).replica
    }

    pub fn ids(&self) -> impl Iterator<Item = u64> {
        1..=self.nodes.len() as u64
    }

    /// Drops every message for which `filter` is true, from now on.
    pub fn set_drop(&mut self, filter: impl FnMut(&Message) -> bool + 'static) {
        self.drop_filter = Some(Box::new(filter));
    }

    /// Delivers every message again.
    pub fn clear_drop(&mut self) {
        self.drop_filter = None;
    }

    /// Cuts `id` off: every message to or from it is dropped.
    pub fn isolate(&mut self, id: u64) {
        let node = NodeId(id);
        self.set_drop(move |m| m.from == node || m.to == node);
    }

    /// Nodes whose replica is primary right now.
    pub fn primaries(&self) -> Vec<u64> {
        self.ids().filter(|&id| self.replica(id).role() == Role::Primary).collect()
    }

    /// The one primary every node follows, if there is one.
    pub fn agreed_primary(&self) -> Option<u64> {
        let primaries = self.primaries();
        let [primary] = primaries[..] else { return None };
        self.ids().all(|id| self.replica(id).primary_hint() == Some(NodeId(primary))).then_some(primary)
    }

    /// Lets time pass (in 10 ms steps) until one primary is followed by everyone.
    pub fn elect(&mut self) -> u64 {
        for _ in 0..1_000 {
            if let Some(primary) = self.agreed_primary() {
                return primary;
            }
            self.advance_ms(10);
        }
        panic!("no agreed primary by {}: {:?}", self.now, self.primaries());
    }

    /// Performs every pending action of node `index` (messages go to the network).
    pub fn drain(&mut self, index: usize) {
        let now = self.now;
        let everything = self.recording == Recording::Everything;
        loop {
            let node = &mut self.nodes[index];
            let Some(action) = node.replica.poll_action() else { break };
            if everything {
                node.actions.push((now, action.clone()));
            }
            match action {
                Action::Persist(write) => {
                    node.withheld.push_back(write);
                    if node.auto_persist {
                        self.release(index as u64 + 1);
                    }
                }
                Action::Send(message) => {
                    if everything {
                        self.sent.push((now, message.clone()));
                    }
                    let drop = self.drop_filter.as_mut().is_some_and(|filter| filter(&message));
                    if drop {
                        self.dropped += 1;
                    } else {
                        self.network.push_back(message);
                    }
                }
                Action::Apply { slot, value } => {
                    let expected = node.state_slot.next();
                    assert_eq!(slot, expected, "node {} applied {slot}, expected {expected}", index + 1);
                    node.state_slot = slot;
                    node.applied_slots += 1;
                    if let Value::Batch(requests) = &value {
                        node.applied_requests += requests.len() as u64;
                    }
                    if everything {
                        node.applied.push((slot, value));
                    }
                    node.replica.on_applied(slot);
                }
                Action::TakeCheckpoint { slot, configuration } => {
                    assert_eq!(node.state_slot, slot, "a checkpoint reflects exactly what was applied");
                    if node.auto_checkpoint {
                        if everything {
                            node.disk.checkpoint = slot;
                            node.disk.checkpoint_configuration = Some(configuration);
                            node.disk.checkpoint_state = node.applied.clone();
                        }
                        node.replica.on_checkpoint_saved(slot);
                    }
                }
                Action::TruncateLog { below } => {
                    if everything {
                        node.disk.proposals = node.disk.proposals.split_off(&below);
                    }
                }
                Action::FetchCheckpoint { .. } => node.checkpoint_fetches += 1,
                Action::CopyCheckpoint { from, slot } => {
                    // The source's newest saved checkpoint, if it is new enough (only kept
                    // when recording everything).
                    let source = self.nodes.get(from.0.wrapping_sub(1) as usize);
                    let copied = source
                        .filter(|source| everything && source.disk.checkpoint >= slot)
                        .map(|source| source.disk.clone());
                    let node = &mut self.nodes[index];
                    match copied {
                        Some(copied) => {
                            node.disk.checkpoint = copied.checkpoint;
                            node.disk.checkpoint_state = copied.checkpoint_state;
                            node.disk.checkpoint_configuration = copied.checkpoint_configuration;
                            node.replica.on_checkpoint_copied(now, copied.checkpoint);
                        }
                        None => node.replica.on_checkpoint_copy_failed(now),
                    }
                }
                Action::RequestsDropped { ids, .. } => node.requests_dropped += ids.len() as u64,
                Action::RoleChanged { .. }
                | Action::ConfigurationChangeInterrupted { .. }
                | Action::PrimaryRecovered { .. }
                | Action::ReadIndexReady { .. }
                | Action::ReadIndexFailed { .. } => {}
            }
        }
    }

    /// Completes every withheld persist of node `id`.
    pub fn release(&mut self, id: u64) {
        let count = self.node(id).withheld.len();
        self.release_some(id, count);
    }

    /// Completes the oldest `count` withheld persists of node `id` (in ticket order).
    pub fn release_some(&mut self, id: u64, count: usize) {
        let index = (id - 1) as usize;
        let mut last = None;
        for _ in 0..count {
            let Some(write) = self.nodes[index].withheld.pop_front() else { break };
            if self.recording == Recording::Everything {
                self.nodes[index].disk.write(&write);
            }
            last = Some(write.ticket);
        }
        if let Some(ticket) = last {
            let now = self.now;
            self.nodes[index].replica.on_persisted(now, ticket);
            self.drain(index);
        }
    }

    /// Delivers the message at `position` in the network queue.
    pub fn deliver_at(&mut self, position: usize) {
        let message = self.network.remove(position).expect("position in the queue");
        self.deliver(message);
    }

    fn deliver(&mut self, message: Message) {
        self.delivered += 1;
        let to = (message.to.0 - 1) as usize;
        let now = self.now;
        if let Err(error) = self.nodes[to].replica.handle_message(now, message.clone()) {
            self.rejected.push((message, error));
        }
        self.drain(to);
    }

    /// Delivers a copy of the message at `position`, leaving the original queued.
    pub fn duplicate_at(&mut self, position: usize) {
        let copy = self.network[position].clone();
        self.network.push_back(copy);
        self.deliver_at(self.network.len() - 1);
    }

    /// Loses the message at `position`.
    pub fn lose_at(&mut self, position: usize) {
        self.network.remove(position).expect("position in the queue");
        self.dropped += 1;
    }

    /// Delivers every queued message in FIFO order, including the ones they cause.
    pub fn settle(&mut self) {
        for index in 0..self.nodes.len() {
            self.drain(index);
        }
        let limit = self.delivered + DELIVERIES_MAX;
        while let Some(message) = self.network.pop_front() {
            assert!(self.delivered < limit, "the replicas never stop talking");
            self.deliver(message);
        }
    }

    /// Fires the timers of every node due at or before `now` (no delivery).
    pub fn fire_timers(&mut self) {
        let now = self.now;
        for index in 0..self.nodes.len() {
            if self.nodes[index].replica.poll_timeout().is_some_and(|at| at <= now) {
                self.nodes[index].replica.handle_timeout(now);
                self.drain(index);
            }
        }
    }

    /// Moves the clock to `until`, firing every timer at its deadline and settling the
    /// network after each, as a zero-latency network would.
    pub fn advance_to(&mut self, until: Time) {
        assert!(until >= self.now, "time goes forward");
        self.settle();
        loop {
            match self.next_deadline() {
                Some(deadline) if deadline <= until => self.advance_to_deadline(deadline),
                _ => break,
            }
        }
        self.now = until;
    }

    pub fn advance_ms(&mut self, ms: u64) {
        self.advance_to(self.now.plus_ms(ms));
    }

    /// The earliest timer deadline of any node.
    fn next_deadline(&self) -> Option<Time> {
        self.nodes.iter().filter_map(|n| n.replica.poll_timeout()).min()
    }

    /// Moves the clock to `deadline`, fires what is due and settles.
    fn advance_to_deadline(&mut self, deadline: Time) {
        self.now = self.now.max(deadline);
        self.fire_timers();
        self.settle();
    }

    /// Proposes at node `id` and performs its resulting actions (nothing is delivered).
    pub fn propose(&mut self, id: u64, request: Request) -> Result<(), ProposeError> {
        let now = self.now;
        let result = self.replica_mut(id).handle_propose(now, request);
        self.drain((id - 1) as usize);
        result
    }

    /// Proposes every request at the agreed primary, then runs the cluster until every
    /// node applied all of them. Returns the number of slots they took at the primary.
    ///
    /// # Panics
    /// If there is no agreed primary, a proposal is refused or dropped, or the requests are
    /// not applied everywhere within a minute of simulated time.
    pub fn propose_and_apply(&mut self, requests: Vec<Request>) -> u64 {
        let primary = self.agreed_primary().expect("propose_and_apply needs an agreed primary");
        let count = requests.len() as u64;
        let expected: Vec<u64> = self.nodes.iter().map(|n| n.applied_requests + count).collect();
        let slots_before = self.node(primary).applied_slots;
        let now = self.now;
        for result in self.replica_mut(primary).handle_propose_many(now, requests) {
            if let Err(error) = result {
                panic!("proposal refused: {error}");
            }
        }
        self.drain((primary - 1) as usize);
        self.run_until_applied(&expected);
        assert!(self.nodes.iter().all(|n| n.requests_dropped == 0), "requests were dropped");
        assert!(self.rejected.is_empty(), "messages were rejected: {:?}", self.rejected.first());
        self.node(primary).applied_slots - slots_before
    }

    /// Runs until node `i` applied at least `expected[i]` requests, letting simulated time
    /// pass when only a timer (a heartbeat carrying the chosen watermark) can make progress.
    pub fn run_until_applied(&mut self, expected: &[u64]) {
        let give_up = self.now.plus_ms(STUCK_AFTER_MS);
        loop {
            self.settle();
            if self.nodes.iter().zip(expected).all(|(node, expected)| node.applied_requests >= *expected) {
                return;
            }
            let applied: Vec<u64> = self.nodes.iter().map(|n| n.applied_requests).collect();
            assert!(self.now < give_up, "stuck: applied {applied:?}, expected {expected:?}");
            let deadline = self.next_deadline().expect("a replica always has a timer armed");
            self.advance_to_deadline(deadline);
        }
    }

    /// Delivers `message` to its receiver now, as if it had just arrived.
    pub fn inject(&mut self, message: Message) -> Result<(), MessageError> {
        let to = (message.to.0 - 1) as usize;
        let now = self.now;
        let result = self.nodes[to].replica.handle_message(now, message);
        self.drain(to);
        result
    }

    /// Messages sent at or after `since`, of the given kind.
    pub fn sent_since(&self, since: Time, kind: &str) -> Vec<&Message> {
        self.sent.iter().filter(|(t, m)| *t >= since && m.body.kind() == kind).map(|(_, m)| m).collect()
    }

    /// Restarts node `id` from its disk: a new replica, the state machine loaded from the
    /// newest checkpoint, nothing withheld survives.
    pub fn restart(&mut self, id: u64) {
        assert_eq!(self.recording, Recording::Everything, "only a recorded disk can be restarted from");
        let index = (id - 1) as usize;
        let mut config = config(id, self.nodes.len() as u64);
        (self.tweak)(&mut config);
        let durable = self.nodes[index].disk.durable_state();
        let replica = Replica::new(config, durable, self.now).expect("the disk is consistent");
        let node = &mut self.nodes[index];
        node.replica = replica;
        node.withheld.clear();
        node.applied = node.disk.checkpoint_state.clone();
        node.state_slot = node.applied.last().map_or(node.disk.checkpoint, |(s, _)| *s);
        self.drain(index);
    }

    /// Asserts that no two nodes applied different values to one slot.
    pub fn assert_agreement(&self) {
        let mut seen: BTreeMap<Slot, (u64, &Value)> = BTreeMap::new();
        for id in self.ids() {
            for (slot, value) in &self.node(id).applied {
                match seen.get(slot) {
                    Some((other, theirs)) => {
                        assert_eq!(
                            *theirs, value,
                            "slot {slot}: node {other} and node {id} applied different values"
                        )
                    }
                    None => {
                        seen.insert(*slot, (id, value));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload_requests;

    #[test]
    fn every_request_is_applied_on_every_node_in_few_slots() {
        let mut cluster = Cluster::with_recording(3, Recording::Counters, |config| {
            config.pipeline_depth = 4;
            config.batch_requests_max = 16;
        });
        let primary = cluster.elect();
        assert_eq!(cluster.replica(primary).role(), Role::Primary);
        let slots = cluster.propose_and_apply(payload_requests(0, 1_000, 64));
        assert!(cluster.nodes.iter().all(|n| n.applied_requests == 1_000));
        // Pipelined and batched: far fewer slots than requests, at least 1000 / 16.
        assert!((63..1_000).contains(&slots), "{slots} slots");
        cluster.propose_and_apply(payload_requests(1_000, 500, 64));
        assert!(cluster.nodes.iter().all(|n| n.applied_requests == 1_500));
        let chosen: Vec<Slot> = cluster.nodes.iter().map(|n| n.replica.chosen()).collect();
        assert!(chosen.iter().all(|&slot| slot == chosen[0]), "chosen watermarks differ: {chosen:?}");
        assert!(cluster.sent.is_empty() && cluster.node(1).actions.is_empty(), "counters only");
    }

    #[test]
    fn one_request_per_slot_takes_one_slot_each() {
        let mut cluster =
            Cluster::with_recording(3, Recording::Counters, |config| config.batch_requests_max = 1);
        cluster.elect();
        assert_eq!(cluster.propose_and_apply(payload_requests(0, 300, 64)), 300);
        assert!(cluster.nodes.iter().all(|n| n.applied_slots >= 300));
    }

    #[test]
    fn a_single_replica_ring_applies_alone() {
        let mut cluster = Cluster::new(1, |_| {});
        assert_eq!(cluster.elect(), 1);
        cluster.propose_and_apply(payload_requests(0, 10, 8));
        assert_eq!(cluster.node(1).applied_requests, 10);
        assert_eq!(cluster.node(1).applied_payloads().len(), 10);
        assert_eq!(cluster.delivered, 0);
    }

    #[test]
    fn a_restarted_node_recovers_from_its_disk_and_catches_up() {
        let mut cluster = Cluster::new(3, |config| config.checkpoint_interval_slots = 4);
        cluster.elect();
        cluster.propose_and_apply(payload_requests(0, 20, 8));
        cluster.restart(3);
        cluster.advance_ms(2_000);
        cluster.propose_and_apply(payload_requests(20, 5, 8));
        assert_eq!(cluster.node(3).state_slot(), cluster.node(1).state_slot());
        cluster.assert_agreement();
    }
}
