//! A tiny deterministic harness for driving [`Replica`]s by hand.
//!
//! Node ids are `1..=n` and node `i` lives at index `i - 1`. The test owns everything a
//! runtime would: the clock (`now`, moved only by `advance_*`), the network (a FIFO queue
//! of sent messages, which the test may deliver in any order, or drop with a filter) and
//! each node's disk (persists complete at once, or are withheld until `release`). Every
//! action a replica emits is recorded with the time it was performed, so a test can
//! assert on the exact sequence. Applies are checked to arrive in slot order.

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use rsl_core::{
    Action, Ballot, Config, DurableState, Message, MessageBody, MessageError, NodeId, PersistRequest,
    Proposal, ProposeError, Replica, Request, RequestId, RingId, Role, Slot, Time, Value,
};

/// The ring every harness replica belongs to.
pub const RING: RingId = RingId(7);

/// Deliveries in one `settle` beyond which the replicas are talking forever.
const DELIVERIES_MAX: usize = 200_000;

/// The members `1..=count`.
pub fn members(count: u64) -> Vec<NodeId> {
    (1..=count).map(NodeId).collect()
}

/// A default configuration for node `node` of a ring of `count` members.
pub fn config(node: u64, count: u64) -> Config {
    let mut config = Config::new(RING, NodeId(node), members(count));
    config.seed = 0xC0FFEE + node;
    config
}

/// A request from client 1 with sequence number `sequence` and `payload`.
pub fn request(sequence: u64, payload: &str) -> Request {
    Request { id: RequestId { client: 1, sequence }, payload: Bytes::copy_from_slice(payload.as_bytes()) }
}

/// A batch value of the given payloads (client 1, sequences from 0).
pub fn batch(payloads: &[&str]) -> Value {
    Value::Batch(payloads.iter().enumerate().map(|(i, p)| request(i as u64, p)).collect())
}

/// The payloads of a value, as strings (empty for a no-op or a configuration).
pub fn payloads(value: &Value) -> Vec<String> {
    match value {
        Value::Batch(requests) => {
            requests.iter().map(|r| String::from_utf8_lossy(&r.payload).into_owned()).collect()
        }
        _ => Vec::new(),
    }
}

/// An envelope from `from` to `to` in ring [`RING`], configuration 1.
pub fn message(from: u64, to: u64, body: MessageBody) -> Message {
    Message { ring: RING, from: NodeId(from), to: NodeId(to), configuration: 1, body }
}

/// Drains every pending action of a lone replica.
pub fn drain(replica: &mut Replica) -> Vec<Action> {
    std::iter::from_fn(|| replica.poll_action()).collect()
}

/// The messages among `actions`.
pub fn sends(actions: &[Action]) -> Vec<&Message> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(m) => Some(m),
            _ => None,
        })
        .collect()
}

/// The persist requests among `actions`.
pub fn persists(actions: &[Action]) -> Vec<&PersistRequest> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Persist(p) => Some(p),
            _ => None,
        })
        .collect()
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
    pub checkpoint_configuration: Option<rsl_core::Configuration>,
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
    /// The state machine: every applied value, in order.
    pub applied: Vec<(Slot, Value)>,
    /// Every action performed, with the time it was performed.
    pub actions: Vec<(Time, Action)>,
}

impl Node {
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
        self.applied.last().map_or(self.disk.checkpoint, |(s, _)| *s)
    }
}

type DropFilter = Box<dyn FnMut(&Message) -> bool>;

/// Replicas of one ring, a network the test controls, and a manual clock.
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub now: Time,
    /// Messages sent and not yet delivered, in send order.
    pub network: VecDeque<Message>,
    /// Every message sent (delivered or dropped), with its send time.
    pub sent: Vec<(Time, Message)>,
    /// Messages the receiver rejected.
    pub rejected: Vec<(Message, MessageError)>,
    /// Messages dropped by the filter.
    pub dropped: u64,
    drop_filter: Option<DropFilter>,
    tweak: Box<dyn Fn(&mut Config)>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("now", &self.now).field("nodes", &self.nodes).finish_non_exhaustive()
    }
}

impl Cluster {
    /// `count` replicas booted at time zero with `tweak` applied to each configuration.
    pub fn new(count: u64, tweak: impl Fn(&mut Config) + 'static) -> Cluster {
        let mut cluster = Cluster {
            nodes: Vec::new(),
            now: Time(0),
            network: VecDeque::new(),
            sent: Vec::new(),
            rejected: Vec::new(),
            dropped: 0,
            drop_filter: None,
            tweak: Box::new(tweak),
        };
        for node in 1..=count {
            let mut config = config(node, count);
            (cluster.tweak)(&mut config);
            let replica = Replica::new(config, DurableState::default(), cluster.now).expect("valid config");
            cluster.nodes.push(Node {
                replica,
                auto_persist: true,
                withheld: VecDeque::new(),
                auto_checkpoint: true,
                disk: Disk::default(),
                applied: Vec::new(),
                actions: Vec::new(),
            });
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
        loop {
            let node = &mut self.nodes[index];
            let Some(action) = node.replica.poll_action() else { break };
            node.actions.push((now, action.clone()));
            match action {
                Action::Persist(write) => {
                    node.withheld.push_back(write);
                    if node.auto_persist {
                        self.release(index as u64 + 1);
                    }
                }
                Action::Send(message) => {
                    self.sent.push((now, message.clone()));
                    let drop = self.drop_filter.as_mut().is_some_and(|filter| filter(&message));
                    if drop {
                        self.dropped += 1;
                    } else {
                        self.network.push_back(message);
                    }
                }
                Action::Apply { slot, value } => {
                    let expected = node.state_slot().next();
                    assert_eq!(slot, expected, "node {} applied {slot}, expected {expected}", index + 1);
                    node.applied.push((slot, value));
                    node.replica.on_applied(slot);
                }
                Action::TakeCheckpoint { slot, configuration } => {
                    assert_eq!(node.state_slot(), slot, "a checkpoint reflects exactly what was applied");
                    if node.auto_checkpoint {
                        node.disk.checkpoint = slot;
                        node.disk.checkpoint_configuration = Some(configuration);
                        node.disk.checkpoint_state = node.applied.clone();
                        node.replica.on_checkpoint_saved(slot);
                    }
                }
                Action::TruncateLog { below } => {
                    node.disk.proposals = node.disk.proposals.split_off(&below);
                }
                Action::FetchCheckpoint { .. }
                | Action::RoleChanged { .. }
                | Action::ConfigurationChangeInterrupted { .. }
                | Action::RequestsDropped { .. } => {}
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
            self.nodes[index].disk.write(&write);
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
        let mut deliveries = 0;
        while !self.network.is_empty() {
            deliveries += 1;
            assert!(deliveries < DELIVERIES_MAX, "the replicas never stop talking");
            self.deliver_at(0);
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
            let next = self.nodes.iter().filter_map(|n| n.replica.poll_timeout()).min();
            match next {
                Some(deadline) if deadline <= until => {
                    self.now = self.now.max(deadline);
                    self.fire_timers();
                    self.settle();
                }
                _ => break,
            }
        }
        self.now = until;
    }

    pub fn advance_ms(&mut self, ms: u64) {
        self.advance_to(self.now.plus_ms(ms));
    }

    /// Proposes at node `id` and performs its resulting actions (nothing is delivered).
    pub fn propose(&mut self, id: u64, request: Request) -> Result<(), ProposeError> {
        let now = self.now;
        let result = self.replica_mut(id).handle_propose(now, request);
        self.drain((id - 1) as usize);
        result
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
        let index = (id - 1) as usize;
        let mut config = config(id, self.nodes.len() as u64);
        (self.tweak)(&mut config);
        let durable = self.nodes[index].disk.durable_state();
        let replica = Replica::new(config, durable, self.now).expect("the disk is consistent");
        let node = &mut self.nodes[index];
        node.replica = replica;
        node.withheld.clear();
        node.applied = node.disk.checkpoint_state.clone();
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
