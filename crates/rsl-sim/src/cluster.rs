//! One simulated run: replicas of the real `rsl-core`, a faulty network, faulty disks,
//! crashes and restarts, clients, simulated time — all driven by one seed.
//!
//! The run has two phases. In the fault phase the network drops, duplicates, delays
//! (and so reorders) and partitions messages, replicas crash (losing every write not yet
//! reported durable, possibly tearing the last) and restart, and primaries are asked to
//! hand over. Then every fault heals and every replica restarts; in the liveness phase
//! every new client request must complete and the replicas must converge.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};

use rsl_core::{
    Action, Ballot, Config, Configuration, DurableState, Message, NodeId, PersistRequest, Proposal,
    ProposeError, ReadError, Replica, Request, RequestId, RingId, Role, Slot, Time, Value,
};

use crate::checkers::{Agreement, Failure};
use crate::kv::{Kv, KvOp, KvResult};
use crate::options::Options;
use crate::rng::Rng;
use rsl_check as linearizability;

/// Counters of one run, for the summary line.
#[derive(Clone, Debug, Default)]
pub struct RunStats {
    /// Events processed.
    pub events: u64,
    /// Protocol messages sent.
    pub messages: u64,
    /// Client operations acknowledged.
    pub ops_ok: u64,
    /// Client operations with unknown outcome (timed out).
    pub ops_unknown: u64,
    /// Highest slot applied anywhere.
    pub slots: u64,
    /// Crashes injected.
    pub crashes: u64,
    /// Partitions injected.
    pub partitions: u64,
    /// Times any replica became primary.
    pub elections_won: u64,
    /// Relinquish requests that a primary accepted.
    pub relinquishes: u64,
    /// Checkpoints installed from a peer.
    pub checkpoint_installs: u64,
    /// Pauses injected.
    pub pauses: u64,
    /// Configuration changes a primary accepted.
    pub reconfigurations: u64,
    /// Configuration changes chosen (the highest configuration number reached, minus one).
    pub configurations_chosen: u64,
}

/// The result of one run.
#[derive(Debug)]
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// The first property violated, if any.
    pub failure: Option<Failure>,
    /// Counters.
    pub stats: RunStats,
}

/// What the network carries to or from a client.
#[derive(Clone, Debug)]
enum ClientRequest {
    Write(Request),
    LeaseRead { key: u8 },
}

#[derive(Clone, Debug)]
enum ClientReply {
    Ok(KvResult),
    Redirect(Option<NodeId>),
    Retry,
}

#[derive(Debug)]
enum Event {
    Deliver(Message),
    DiskDone { node: usize, epoch: u64, ticket: u64 },
    CheckpointArrives { node: usize, epoch: u64, checkpoint: Option<Checkpoint> },
    ClientToReplica { node: usize, client: usize, attempt: u64, request: ClientRequest },
    ReplicaToClient { client: usize, attempt: u64, reply: ClientReply },
    ClientAttemptTimeout { client: usize, attempt: u64 },
    ClientResend { client: usize, attempt: u64 },
    ClientNextOp { client: usize },
    Crash,
    Restart { node: usize },
    Partition,
    Heal,
    Relinquish,
    Pause,
    Reconfigure,
}

/// A saved checkpoint: the slot, the state machine, and the configuration in force after it.
type Checkpoint = (Slot, Kv, Option<Configuration>);

impl Event {
    /// The replica this event happens at, if it is addressed to one.
    fn node(&self) -> Option<usize> {
        match self {
            Event::Deliver(message) => Some(node_index(message.to)),
            Event::DiskDone { node, .. }
            | Event::CheckpointArrives { node, .. }
            | Event::ClientToReplica { node, .. } => Some(*node),
            _ => None,
        }
    }
}

/// A replica's durable storage: what survives a crash.
#[derive(Debug, Default)]
struct Disk {
    promise: Ballot,
    proposals: BTreeMap<Slot, Proposal>,
    chosen: Slot,
    log_start: Slot,
    /// Written but not yet reported durable.
    pending: VecDeque<PersistRequest>,
    /// Completions are reported in ticket order.
    last_completion: u64,
    checkpoint: Checkpoint,
}

impl Disk {
    fn apply(&mut self, request: &PersistRequest) {
        if let Some(promise) = request.promise {
            self.promise = self.promise.max(promise);
        }
        for proposal in &request.proposals {
            self.apply_proposal(proposal.clone());
        }
        if let Some(chosen) = request.chosen {
            self.chosen = self.chosen.max(chosen);
        }
    }

    fn apply_proposal(&mut self, proposal: Proposal) {
        if proposal.slot >= self.log_start {
            self.proposals.insert(proposal.slot, proposal);
        }
    }

    /// A crash: unsynced writes are lost, except possibly a prefix of them torn at a
    /// record boundary (the last record written may be incomplete and is then dropped,
    /// as the journal's recovery cuts a torn tail).
    fn crash(&mut self, rng: &mut Rng, torn: bool) {
        let pending: Vec<PersistRequest> = self.pending.drain(..).collect();
        if !torn || pending.is_empty() || !rng.chance(0.5) {
            return;
        }
        let records: usize = pending
            .iter()
            .map(|r| r.promise.is_some() as usize + r.proposals.len() + r.chosen.is_some() as usize)
            .sum();
        let mut keep = rng.between(0, records as u64) as usize;
        for request in pending {
            if keep == 0 {
                break;
            }
            if let Some(promise) = request.promise {
                self.promise = self.promise.max(promise);
                keep -= 1;
            }
            for proposal in request.proposals {
                if keep == 0 {
                    break;
                }
                self.apply_proposal(proposal);
                keep -= 1;
            }
            if let (Some(chosen), true) = (request.chosen, keep > 0) {
                self.chosen = self.chosen.max(chosen);
                keep -= 1;
            }
        }
    }

    fn truncate_below(&mut self, below: Slot) {
        self.log_start = self.log_start.max(below);
        self.proposals = self.proposals.split_off(&below);
    }

    fn recovered(&self) -> DurableState {
        DurableState {
            promise: self.promise,
            proposals: self.proposals.values().cloned().collect(),
            chosen: self.chosen,
            checkpoint: self.checkpoint.0,
            configuration: self.checkpoint.2.clone(),
        }
    }
}

#[derive(Debug)]
struct Node {
    replica: Option<Replica>,
    epoch: u64,
    disk: Disk,
    kv: Kv,
    /// Writes proposed here, waiting for their apply.
    waiting_writes: HashMap<RequestId, (usize, u64)>,
    /// Lease reads waiting for the applied watermark.
    waiting_reads: Vec<(Slot, u8, usize, u64)>,
    /// The next slot this replica's state machine expects.
    apply_position: Slot,
    crashed_at: Option<u64>,
    /// A paused (frozen) replica handles nothing until this time.
    paused_until: u64,
    /// How fast this replica's clock runs, in parts per million off true time.
    clock_rate_ppm: i64,
}

#[derive(Debug)]
struct PendingOp {
    op: KvOp,
    lease_read: bool,
    request: Request,
    invoked_at: u64,
    attempt: u64,
    target: usize,
    give_up_at: u64,
}

#[derive(Debug)]
struct Client {
    next_sequence: u64,
    attempts: u64,
    pending: Option<PendingOp>,
    hint: usize,
}

const ATTEMPT_TIMEOUT_US: u64 = 1_500_000;
const OP_TIMEOUT_US: u64 = 6_000_000;
const SETTLE_US: u64 = 5_000_000;
const QUIET_US: u64 = 4_000_000;
const EVENTS_MAX: u64 = 20_000_000;

/// A whole simulated cluster for one seed.
#[derive(Debug)]
pub struct Simulation {
    seed: u64,
    options: Options,
    rng: Rng,
    now: u64,
    sequence: u64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: HashMap<u64, Event>,
    nodes: Vec<Node>,
    clients: Vec<Client>,
    /// `blocked[a][b]`: messages from a to b are lost.
    blocked: Vec<Vec<bool>>,
    healed: bool,
    fault_end: u64,
    run_end: u64,
    agreement: Agreement,
    /// Every request a client issued, by id (validity).
    issued: HashMap<RequestId, Request>,
    /// Writes acknowledged to a client (durability).
    acknowledged: HashSet<RequestId>,
    /// Member lists of every configuration change requested (validity).
    changes_requested: HashSet<Vec<NodeId>>,
    history: Vec<linearizability::Operation>,
    /// Liveness: operations invoked after settling that did not complete.
    liveness_misses: Vec<String>,
    failure: Option<Failure>,
    stats: RunStats,
    trace: bool,
}

/// A replica's clock reading at true time `now` (microseconds).
fn local_time(now: u64, rate_ppm: i64) -> Time {
    let local = now as i128 + now as i128 * rate_ppm as i128 / 1_000_000;
    Time(local.max(0) as u64)
}

/// The earliest true time at which a replica's clock reads `local` or later.
fn global_time(local: Time, rate_ppm: i64) -> u64 {
    let scale = 1_000_000 + rate_ppm as i128;
    let mut global = (local.0 as i128 * 1_000_000 / scale).max(0) as u64;
    while local_time(global, rate_ppm) < local {
        global += 1;
    }
    global
}

fn node_id(index: usize) -> NodeId {
    NodeId(index as u64 + 1)
}

fn node_index(id: NodeId) -> usize {
    (id.0 - 1) as usize
}

impl Simulation {
    /// Prepares the run for `options` drawn from `seed`.
    pub fn new(seed: u64, options: Options) -> Simulation {
        let n = options.replicas + options.spares;
        let mut sim = Simulation {
            seed,
            rng: Rng::new(seed),
            now: 0,
            sequence: 0,
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            nodes: Vec::new(),
            clients: Vec::new(),
            blocked: vec![vec![false; n]; n],
            healed: false,
            fault_end: options.fault_phase_us,
            run_end: options.fault_phase_us + options.liveness_phase_us,
            agreement: Agreement::default(),
            issued: HashMap::new(),
            acknowledged: HashSet::new(),
            changes_requested: HashSet::new(),
            history: Vec::new(),
            liveness_misses: Vec::new(),
            failure: None,
            stats: RunStats::default(),
            trace: std::env::var_os("RSL_SIM_TRACE").is_some(),
            options,
        };
        for _ in 0..n {
            sim.nodes.push(Node {
                replica: None,
                epoch: 0,
                disk: Disk { log_start: Slot(1), ..Disk::default() },
                kv: Kv::default(),
                waiting_writes: HashMap::new(),
                waiting_reads: Vec::new(),
                apply_position: Slot(1),
                crashed_at: None,
                paused_until: 0,
                clock_rate_ppm: 0,
            });
        }
        // Clock rates differ by at most the drift bound the replicas assume.
        let drift = Config::new(RingId(0), NodeId(1), vec![NodeId(1)]).clock_drift_max_ppm as i64;
        if sim.options.clock_drift {
            for node in &mut sim.nodes {
                node.clock_rate_ppm = sim.rng.between(0, drift as u64) as i64 - drift / 2;
            }
        }
        for i in 0..n {
            sim.start_replica(i);
        }
        for c in 0..sim.options.clients {
            sim.clients.push(Client { next_sequence: 1, attempts: 0, pending: None, hint: c % n });
            let at = sim.rng.between(0, 100_000);
            sim.schedule(at, Event::ClientNextOp { client: c });
        }
        if sim.options.partition_every_us > 0 {
            let at = sim.rng.between(0, sim.options.partition_every_us * 2);
            sim.schedule(at, Event::Partition);
        }
        if sim.options.crash_every_us > 0 {
            let at = sim.rng.between(0, sim.options.crash_every_us * 2);
            sim.schedule(at, Event::Crash);
        }
        if sim.options.pause_every_us > 0 {
            let at = sim.rng.between(0, sim.options.pause_every_us * 2);
            sim.schedule(at, Event::Pause);
        }
        if sim.options.relinquish_every_us > 0 {
            let at = sim.rng.between(0, sim.options.relinquish_every_us * 2);
            sim.schedule(at, Event::Relinquish);
        }
        if sim.options.reconfigure_every_us > 0 {
            let at = sim.rng.between(0, sim.options.reconfigure_every_us * 2);
            sim.schedule(at, Event::Reconfigure);
        }
        sim
    }

    fn config(&self, index: usize) -> Config {
        let members = (0..self.options.replicas).map(node_id).collect();
        let mut config = Config::new(RingId(7), node_id(index), members);
        // Spares start outside the ring and ask the initial members for its configuration.
        config.joining = index >= self.options.replicas;
        config.heartbeat_interval_ms = 50;
        config.election_delay_min_ms = 300;
        config.election_delay_max_ms = 300 + self.options.election_delay_spread_ms;
        config.pipeline_depth = self.options.pipeline_depth;
        config.promise_slots_max = config.promise_slots_max.max(2 * config.pipeline_depth);
        config.batch_requests_max = self.options.batch_requests_max;
        config.batch_linger_us = self.options.batch_linger_us;
        config.batch_bytes_max = self.options.batch_bytes_max;
        // Zero picks the tightest legal bound.
        let tightest = 2 * config.pipeline_depth * config.batch_bytes_max;
        config.message_bytes_max = self.options.message_bytes_max.max(tightest);
        config.checkpoint_interval_slots = self.options.checkpoint_interval_slots;
        config.log_retain_slots = self.options.log_retain_slots;
        config.fetch_slots_max = self.options.fetch_slots_max;
        config.fetch_window = self.options.fetch_window;
        config.seed =
            self.seed.wrapping_mul(31).wrapping_add(index as u64).wrapping_add(self.nodes[index].epoch << 32);
        config.mutation = self.options.mutation;
        config
    }

    fn start_replica(&mut self, index: usize) {
        let config = self.config(index);
        let node = &mut self.nodes[index];
        let durable = node.disk.recovered();
        node.kv = node.disk.checkpoint.1.clone();
        if let Some(configuration) = &node.disk.checkpoint.2 {
            self.stats.configurations_chosen =
                self.stats.configurations_chosen.max(configuration.number.saturating_sub(1));
        }
        let node = &mut self.nodes[index];
        node.apply_position = node.disk.checkpoint.0.next();
        node.crashed_at = None;
        let now = self.local_time(index);
        let node = &mut self.nodes[index];
        let replica = Replica::new(config, durable, now).expect("simulated config is valid");
        node.replica = Some(replica);
        self.drain(index);
    }

    fn local_time(&self, index: usize) -> Time {
        local_time(self.now, self.nodes[index].clock_rate_ppm)
    }

    fn schedule(&mut self, at: u64, event: Event) {
        self.sequence += 1;
        self.queue.push(Reverse((at, self.sequence)));
        self.events.insert(self.sequence, event);
    }

    fn fail(&mut self, failure: Failure) {
        if self.failure.is_none() {
            self.failure = Some(failure);
        }
    }

    /// Runs to the end (or the first violation) and checks every property.
    pub fn run(mut self) -> Outcome {
        while self.failure.is_none() {
            self.stats.events += 1;
            if self.stats.events > EVENTS_MAX {
                let failure = Failure::new("liveness", self.now, format!("more than {EVENTS_MAX} events"));
                self.fail(failure);
                break;
            }
            let next_event = self.queue.peek().map(|Reverse((t, _))| *t);
            let next_timer = self
                .nodes
                .iter()
                .enumerate()
                .filter_map(|(i, n)| {
                    // A resumed replica handles the messages that queued up first, as a
                    // process drains its sockets before its timer wheel.
                    let eligible = if n.paused_until > 0 { n.paused_until + 2_000 } else { 0 };
                    n.replica
                        .as_ref()
                        .and_then(|r| r.poll_timeout())
                        .map(|t| (global_time(t, n.clock_rate_ppm).max(eligible), i))
                })
                .min();
            let timer_first = match (next_event, next_timer) {
                (None, None) => break,
                (Some(e), Some((t, _))) => t < e,
                (None, Some(_)) => true,
                (Some(_), None) => false,
            };
            let at = if timer_first { next_timer.expect("some").0 } else { next_event.expect("some") };
            if !self.healed && at >= self.fault_end {
                self.now = self.now.max(self.fault_end);
                self.heal_everything();
                continue;
            }
            if at > self.run_end {
                break;
            }
            self.now = self.now.max(at);
            if self.stats.events + 30 > EVENTS_MAX && self.trace {
                if timer_first {
                    eprintln!("{} timer at node {}", Time(self.now), next_timer.expect("some").1);
                } else {
                    let Reverse((_, id)) = self.queue.peek().expect("peeked");
                    eprintln!("{} {:?}", Time(self.now), self.events[id]);
                }
            }
            if timer_first {
                let index = next_timer.expect("some").1;
                let now = self.local_time(index);
                self.nodes[index].replica.as_mut().expect("alive").handle_timeout(now);
                self.drain(index);
            } else {
                let Reverse((_, id)) = self.queue.pop().expect("peeked");
                let event = self.events.remove(&id).expect("scheduled");
                self.handle_event(event);
            }
        }
        if self.failure.is_none() {
            self.final_checks();
        }
        Outcome { seed: self.seed, failure: self.failure, stats: self.stats }
    }

    fn heal_everything(&mut self) {
        self.healed = true;
        for row in &mut self.blocked {
            row.iter_mut().for_each(|b| *b = false);
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].replica.is_none() {
                self.start_replica(i);
            }
        }
    }

    fn handle_event(&mut self, event: Event) {
        if let Some(node) = event.node() {
            let until = self.nodes[node].paused_until;
            if self.now < until {
                // Frozen: the event waits, in order, for the replica to resume.
                self.schedule(until, event);
                return;
            }
        }
        match event {
            Event::Deliver(message) => {
                let index = node_index(message.to);
                let now = self.local_time(index);
                let Some(replica) = self.nodes[index].replica.as_mut() else { return };
                // Bad messages are counted by the replica; the simulator sends none.
                let _ = replica.handle_message(now, message);
                self.drain(index);
            }
            Event::DiskDone { node, epoch, ticket } => {
                let n = &mut self.nodes[node];
                if n.epoch != epoch || n.replica.is_none() {
                    return;
                }
                while n.disk.pending.front().is_some_and(|r| r.ticket <= ticket) {
                    let request = n.disk.pending.pop_front().expect("front");
                    n.disk.apply(&request);
                }
                let now = local_time(self.now, n.clock_rate_ppm);
                n.replica.as_mut().expect("alive").on_persisted(now, ticket);
                self.drain(node);
            }
            Event::CheckpointArrives { node, epoch, checkpoint } => {
                let now = self.local_time(node);
                let n = &mut self.nodes[node];
                if n.epoch != epoch || n.replica.is_none() {
                    return;
                }
                let replica = n.replica.as_mut().expect("alive");
                match checkpoint {
                    Some((slot, kv, Some(configuration))) if slot > replica.applied() => {
                        n.kv = kv.clone();
                        n.disk.checkpoint = (slot, kv, Some(configuration.clone()));
                        n.apply_position = slot.next();
                        n.waiting_reads.retain(|_| false);
                        replica.on_checkpoint_installed(now, slot, configuration);
                        self.stats.checkpoint_installs += 1;
                    }
                    _ => replica.on_checkpoint_fetch_failed(now),
                }
                self.drain(node);
            }
            Event::ClientToReplica { node, client, attempt, request } => {
                self.on_client_request(node, client, attempt, request)
            }
            Event::ReplicaToClient { client, attempt, reply } => self.on_client_reply(client, attempt, reply),
            Event::ClientAttemptTimeout { client, attempt } => self.on_attempt_timeout(client, attempt),
            Event::ClientResend { client, attempt } => {
                if self.clients[client].pending.as_ref().is_some_and(|op| op.attempt == attempt) {
                    self.send_attempt(client);
                }
            }
            Event::ClientNextOp { client } => self.start_op(client),
            Event::Crash => self.crash_random(),
            Event::Restart { node } => {
                if self.nodes[node].replica.is_none() {
                    self.start_replica(node);
                }
            }
            Event::Partition => self.partition(),
            Event::Heal => {
                for row in &mut self.blocked {
                    row.iter_mut().for_each(|b| *b = false);
                }
            }
            Event::Relinquish => self.relinquish(),
            Event::Pause => self.pause(),
            Event::Reconfigure => self.reconfigure(),
        }
    }

    /// Performs every action a replica asked for.
    fn drain(&mut self, index: usize) {
        loop {
            let Some(replica) = self.nodes[index].replica.as_mut() else { return };
            let Some(action) = replica.poll_action() else { return };
            match action {
                Action::Persist(request) => {
                    let latency =
                        self.rng.between(self.options.disk_latency_min_us, self.options.disk_latency_max_us);
                    let node = &mut self.nodes[index];
                    let done = (self.now + latency).max(node.disk.last_completion);
                    node.disk.last_completion = done;
                    let ticket = request.ticket;
                    node.disk.pending.push_back(request);
                    let epoch = node.epoch;
                    self.schedule(done, Event::DiskDone { node: index, epoch, ticket });
                }
                Action::Send(message) => self.send(message),
                Action::Apply { slot, value } => {
                    self.apply(index, slot, value);
                }
                Action::TakeCheckpoint { slot, configuration } => {
                    let node = &mut self.nodes[index];
                    node.disk.checkpoint = (slot, node.kv.clone(), Some(configuration));
                    node.replica.as_mut().expect("alive").on_checkpoint_saved(slot);
                }
                Action::TruncateLog { below } => {
                    let node = &mut self.nodes[index];
                    node.disk.truncate_below(below);
                }
                Action::FetchCheckpoint { from, .. } => {
                    let source = node_index(from);
                    let reachable = !self.blocked[source][index] && !self.blocked[index][source];
                    let checkpoint = match &self.nodes[source].replica {
                        Some(_) if reachable && !self.rng.chance(self.options.drop_probability) => {
                            Some(self.nodes[source].disk.checkpoint.clone())
                        }
                        _ => None,
                    };
                    let delay = self.rng.between(self.options.delay_min_us, self.options.delay_max_us) * 4;
                    let epoch = self.nodes[index].epoch;
                    self.schedule(
                        self.now + delay,
                        Event::CheckpointArrives { node: index, epoch, checkpoint },
                    );
                }
                Action::RoleChanged { role, .. } => {
                    if role == Role::Primary {
                        self.stats.elections_won += 1;
                    }
                }
                Action::ConfigurationChangeInterrupted { .. } => {}
                Action::RequestsDropped { ids, primary } => {
                    for id in ids {
                        if let Some((client, attempt)) = self.nodes[index].waiting_writes.remove(&id) {
                            self.reply(client, attempt, ClientReply::Redirect(primary));
                        }
                    }
                }
            }
        }
    }

    fn apply(&mut self, index: usize, slot: Slot, value: Value) {
        let position = self.nodes[index].apply_position;
        if let Err(failure) = self.agreement.on_apply(self.now, node_id(index), position, slot, &value) {
            self.fail(failure);
            return;
        }
        self.nodes[index].apply_position = position.next();
        self.stats.slots = self.stats.slots.max(slot.0);
        if let Value::Batch(requests) = &value {
            for request in requests {
                match self.issued.get(&request.id) {
                    Some(issued) if issued.payload == request.payload => {}
                    _ => {
                        let detail =
                            format!("slot {slot} holds request {:?} that no client issued", request.id);
                        self.fail(Failure::new("validity", self.now, detail));
                        return;
                    }
                }
                let result = self.nodes[index].kv.execute(request);
                if let Some((client, attempt)) = self.nodes[index].waiting_writes.remove(&request.id) {
                    self.reply(client, attempt, ClientReply::Ok(result));
                }
            }
        } else if let Value::Configuration(configuration) = &value {
            if !self.changes_requested.contains(&configuration.members) {
                let detail =
                    format!("slot {slot} holds configuration {configuration:?} that nobody asked for");
                self.fail(Failure::new("validity", self.now, detail));
                return;
            }
            if configuration.first_slot != slot.next() {
                let detail = format!("slot {slot} holds configuration {configuration:?} starting elsewhere");
                self.fail(Failure::new("validity", self.now, detail));
                return;
            }
            self.stats.configurations_chosen =
                self.stats.configurations_chosen.max(configuration.number.saturating_sub(1));
        }
        let node = &mut self.nodes[index];
        let replica = node.replica.as_mut().expect("alive");
        replica.on_applied(slot);
        // Serve lease reads that waited for this slot.
        let applied = replica.applied();
        let mut ready = Vec::new();
        node.waiting_reads.retain(|&(index_slot, key, client, attempt)| {
            if index_slot <= applied {
                ready.push((key, client, attempt));
                false
            } else {
                true
            }
        });
        for (key, client, attempt) in ready {
            let value = self.nodes[index].kv.get(key);
            self.reply(client, attempt, ClientReply::Ok(KvResult::Value(value)));
        }
    }

    fn send(&mut self, message: Message) {
        self.stats.messages += 1;
        let (from, to) = (node_index(message.from), node_index(message.to));
        if self.blocked[from][to] {
            return;
        }
        let faulty = !self.healed;
        if faulty && self.rng.chance(self.options.drop_probability) {
            return;
        }
        let mut delay = self.rng.between(self.options.delay_min_us, self.options.delay_max_us);
        if faulty && self.rng.chance(self.options.long_delay_probability) {
            delay += self.rng.between(300_000, 3_000_000);
        }
        if faulty && self.rng.chance(self.options.duplicate_probability) {
            let again = self.rng.between(self.options.delay_min_us, self.options.delay_max_us * 2);
            self.schedule(self.now + again, Event::Deliver(message.clone()));
        }
        self.schedule(self.now + delay, Event::Deliver(message));
    }

    // ----- Clients -----

    fn start_op(&mut self, client: usize) {
        if self.now + QUIET_US >= self.run_end || self.clients[client].pending.is_some() {
            return;
        }
        let key = self.rng.between(0, self.options.keys as u64 - 1) as u8;
        let sequence = self.clients[client].next_sequence;
        self.clients[client].next_sequence += 1;
        let id = RequestId { client: client as u64 + 1, sequence };
        let (op, lease_read) = if self.rng.chance(self.options.read_fraction) {
            (KvOp::Get { key }, !self.rng.chance(self.options.log_read_fraction))
        } else if self.rng.chance(0.1) {
            (KvOp::Delete { key }, false)
        } else {
            // Unique values make every read point at one write.
            let value = (client as i64 + 1) * 1_000_000_000 + sequence as i64;
            if self.rng.chance(self.options.cas_fraction) {
                let expected = self.last_written_guess(key);
                (KvOp::Cas { key, expected, new: value }, false)
            } else {
                (KvOp::Put { key, value }, false)
            }
        };
        let request = Request { id, payload: op.encode() };
        if !lease_read {
            self.issued.insert(id, request.clone());
        }
        let target = self.clients[client].hint;
        // Attempt numbers never repeat within a client, so a late reply to an earlier
        // operation cannot be taken for this one's.
        let attempt = self.clients[client].attempts;
        self.clients[client].pending = Some(PendingOp {
            op,
            lease_read,
            request,
            invoked_at: self.now,
            attempt,
            target,
            give_up_at: self.now + OP_TIMEOUT_US,
        });
        self.send_attempt(client);
    }

    /// A value some client recently wrote to `key`, so compare-and-set sometimes succeeds.
    fn last_written_guess(&mut self, key: u8) -> Option<i64> {
        let candidates: Vec<Option<i64>> = self
            .history
            .iter()
            .rev()
            .take(20)
            .filter(|o| o.key == key.to_string())
            .filter_map(|o| match (&o.input, &o.output) {
                (linearizability::Input::Put { value }, Some(_)) => Some(Some(*value)),
                (linearizability::Input::Get, Some(linearizability::Output::Get { value })) => Some(*value),
                _ => None,
            })
            .collect();
        if candidates.is_empty() {
            None
        } else {
            candidates[self.rng.index(candidates.len())]
        }
    }

    fn send_attempt(&mut self, client: usize) {
        let state = &mut self.clients[client];
        let Some(op) = state.pending.as_mut() else { return };
        state.attempts += 1;
        op.attempt = state.attempts;
        let (attempt, target) = (op.attempt, op.target);
        let request = if op.lease_read {
            ClientRequest::LeaseRead { key: op.op.key() }
        } else {
            ClientRequest::Write(op.request.clone())
        };
        let delay = self.rng.between(self.options.delay_min_us, self.options.delay_max_us);
        if self.healed || !self.rng.chance(self.options.drop_probability) {
            self.schedule(
                self.now + delay,
                Event::ClientToReplica { node: target, client, attempt, request },
            );
        }
        self.schedule(self.now + ATTEMPT_TIMEOUT_US, Event::ClientAttemptTimeout { client, attempt });
    }

    fn reply(&mut self, client: usize, attempt: u64, reply: ClientReply) {
        let delay = self.rng.between(self.options.delay_min_us, self.options.delay_max_us);
        if !self.healed && self.rng.chance(self.options.drop_probability) {
            return;
        }
        self.schedule(self.now + delay, Event::ReplicaToClient { client, attempt, reply });
    }

    fn on_client_request(&mut self, index: usize, client: usize, attempt: u64, request: ClientRequest) {
        let now = self.local_time(index);
        let Some(replica) = self.nodes[index].replica.as_mut() else { return };
        match request {
            ClientRequest::Write(request) => {
                let id = request.id;
                match replica.handle_propose(now, request) {
                    Ok(()) => {
                        self.nodes[index].waiting_writes.insert(id, (client, attempt));
                    }
                    Err(ProposeError::NotPrimary { hint }) => {
                        self.reply(client, attempt, ClientReply::Redirect(hint))
                    }
                    Err(ProposeError::Relinquishing { target }) => {
                        self.reply(client, attempt, ClientReply::Redirect(Some(target)))
                    }
                    Err(ProposeError::Busy { .. } | ProposeError::TooLarge { .. }) => {
                        self.reply(client, attempt, ClientReply::Retry)
                    }
                }
            }
            ClientRequest::LeaseRead { key } => match replica.handle_read(now) {
                Ok(read_index) => {
                    if replica.applied() >= read_index {
                        let value = self.nodes[index].kv.get(key);
                        self.reply(client, attempt, ClientReply::Ok(KvResult::Value(value)));
                    } else {
                        self.nodes[index].waiting_reads.push((read_index, key, client, attempt));
                    }
                }
                Err(ReadError::NotPrimary { hint }) => {
                    self.reply(client, attempt, ClientReply::Redirect(hint))
                }
                Err(ReadError::LeaseExpired | ReadError::Recovering { .. }) => {
                    self.reply(client, attempt, ClientReply::Retry)
                }
            },
        }
        self.drain(index);
    }

    fn on_client_reply(&mut self, client: usize, attempt: u64, reply: ClientReply) {
        let Some(op) = self.clients[client].pending.as_ref() else { return };
        if op.attempt != attempt {
            return;
        }
        match reply {
            ClientReply::Ok(KvResult::Invalid) => {
                let detail = format!("client {client} request {:?} answered Invalid", op.request.id);
                self.fail(Failure::new("validity", self.now, detail));
            }
            ClientReply::Ok(result) => self.complete(client, Some(result)),
            ClientReply::Redirect(hint) => {
                let target = match hint {
                    Some(node) if node_index(node) < self.nodes.len() => node_index(node),
                    _ => self.rng.index(self.nodes.len()),
                };
                self.retry(client, target, 20_000);
            }
            ClientReply::Retry => {
                let target = self.clients[client].pending.as_ref().expect("pending").target;
                self.retry(client, target, 50_000);
            }
        }
    }

    fn on_attempt_timeout(&mut self, client: usize, attempt: u64) {
        let Some(op) = self.clients[client].pending.as_ref() else { return };
        if op.attempt != attempt {
            return;
        }
        let target = self.rng.index(self.nodes.len());
        self.retry(client, target, 0);
    }

    fn retry(&mut self, client: usize, target: usize, backoff_us: u64) {
        let give_up = self.clients[client].pending.as_ref().expect("pending").give_up_at;
        if self.now + backoff_us >= give_up {
            self.complete(client, None);
            return;
        }
        let op = self.clients[client].pending.as_mut().expect("pending");
        op.target = target;
        self.clients[client].hint = target;
        // Invalidate the current attempt now; the next goes out after the backoff.
        let state = &mut self.clients[client];
        state.attempts += 1;
        let op = state.pending.as_mut().expect("pending");
        op.attempt = state.attempts;
        if backoff_us == 0 {
            self.send_attempt(client);
        } else {
            let attempt = op.attempt;
            self.schedule(self.now + backoff_us, Event::ClientResend { client, attempt });
        }
    }

    fn complete(&mut self, client: usize, result: Option<KvResult>) {
        let op = self.clients[client].pending.take().expect("pending");
        let (input, key) = match op.op {
            KvOp::Put { key, value } => (linearizability::Input::Put { value }, key),
            KvOp::Get { key } => (linearizability::Input::Get, key),
            KvOp::Delete { key } => (linearizability::Input::Delete, key),
            KvOp::Cas { key, expected, new } => (linearizability::Input::Cas { expected, new }, key),
        };
        let output = match &result {
            None => None,
            Some(KvResult::Done) => Some(match op.op {
                KvOp::Delete { .. } => linearizability::Output::Delete,
                _ => linearizability::Output::Put,
            }),
            Some(KvResult::Value(value)) => Some(linearizability::Output::Get { value: *value }),
            Some(KvResult::Cas(ok)) => Some(linearizability::Output::Cas { ok: *ok }),
            Some(KvResult::Invalid) => None,
        };
        if result.is_some() {
            self.stats.ops_ok += 1;
            if !op.lease_read {
                self.acknowledged.insert(op.request.id);
            }
        } else {
            self.stats.ops_unknown += 1;
            if op.invoked_at >= self.fault_end + SETTLE_US {
                self.liveness_misses.push(format!(
                    "client {client} {:?} invoked at {} after healing timed out",
                    op.op,
                    Time(op.invoked_at)
                ));
            }
        }
        self.history.push(linearizability::Operation {
            process: client as u64,
            key: key.to_string(),
            input,
            return_ns: output.as_ref().map(|_| self.now * 1000),
            output,
            call_ns: op.invoked_at * 1000,
        });
        let think = self.rng.between(0, 20_000);
        self.schedule(self.now + think, Event::ClientNextOp { client });
    }

    // ----- Faults -----

    fn crash_random(&mut self) {
        if self.healed {
            return;
        }
        let next = self.rng.between(self.options.crash_every_us / 2, self.options.crash_every_us * 3 / 2);
        self.schedule(self.now + next, Event::Crash);
        // Sometimes aim at the primary: that is where crashes hurt.
        let primary =
            self.nodes.iter().position(|n| n.replica.as_ref().is_some_and(|r| r.role() == Role::Primary));
        let index = match primary {
            Some(p) if self.rng.chance(0.5) => p,
            _ => self.rng.index(self.nodes.len()),
        };
        let mut victims = vec![index];
        if self.rng.chance(self.options.correlated_crash_probability) {
            // Power loss: a majority (or everyone) at once.
            let n = self.nodes.len();
            let count = if self.rng.chance(0.5) { n } else { n / 2 + 1 };
            victims = (0..n).collect();
            while victims.len() > count {
                let drop = self.rng.index(victims.len());
                victims.swap_remove(drop);
            }
        }
        for index in victims {
            self.crash(index);
        }
    }

    fn crash(&mut self, index: usize) {
        let torn = self.options.torn_writes;
        let node = &mut self.nodes[index];
        if node.replica.is_none() {
            return;
        }
        self.stats.crashes += 1;
        node.replica = None;
        node.epoch += 1;
        node.disk.crash(&mut self.rng, torn);
        node.disk.last_completion = 0;
        node.waiting_writes.clear();
        node.waiting_reads.clear();
        node.crashed_at = Some(self.now);
        node.paused_until = 0;
        let down = self.rng.between(50_000, 3_000_000);
        self.schedule(self.now + down, Event::Restart { node: index });
    }

    fn partition(&mut self) {
        if self.healed {
            return;
        }
        let n = self.nodes.len();
        let next =
            self.rng.between(self.options.partition_every_us / 2, self.options.partition_every_us * 3 / 2);
        self.schedule(self.now + next, Event::Partition);
        self.stats.partitions += 1;
        for row in &mut self.blocked {
            row.iter_mut().for_each(|b| *b = false);
        }
        match self.rng.between(0, 3) {
            0 => {
                // Two sides.
                let side: Vec<bool> = (0..n).map(|_| self.rng.chance(0.5)).collect();
                for a in 0..n {
                    for b in 0..n {
                        self.blocked[a][b] = side[a] != side[b];
                    }
                }
            }
            1 => {
                // Isolate one node, often the primary.
                let primary = self
                    .nodes
                    .iter()
                    .position(|n| n.replica.as_ref().is_some_and(|r| r.role() == Role::Primary));
                let victim = match primary {
                    Some(p) if self.rng.chance(0.7) => p,
                    _ => self.rng.index(n),
                };
                for other in 0..n {
                    if other != victim {
                        self.blocked[victim][other] = true;
                        self.blocked[other][victim] = true;
                    }
                }
            }
            2 => {
                // A bridge: two sides that only one node hears both of.
                let bridge = self.rng.index(n);
                let side: Vec<bool> = (0..n).map(|_| self.rng.chance(0.5)).collect();
                for a in 0..n {
                    for b in 0..n {
                        self.blocked[a][b] = a != bridge && b != bridge && side[a] != side[b];
                    }
                }
            }
            _ => {
                // One-way cuts.
                for _ in 0..self.rng.between(1, n as u64) {
                    let (a, b) = (self.rng.index(n), self.rng.index(n));
                    if a != b {
                        self.blocked[a][b] = true;
                    }
                }
            }
        }
        let length = self.rng.between(200_000, 3_000_000);
        self.schedule(self.now + length, Event::Heal);
    }

    /// Freezes a replica (often the primary) as a long garbage-collection pause or a
    /// SIGSTOP would: it keeps its state and wakes up believing it is still whatever
    /// it was.
    fn pause(&mut self) {
        if self.healed {
            return;
        }
        let next = self.rng.between(self.options.pause_every_us / 2, self.options.pause_every_us * 3 / 2);
        self.schedule(self.now + next, Event::Pause);
        let primary =
            self.nodes.iter().position(|n| n.replica.as_ref().is_some_and(|r| r.role() == Role::Primary));
        let index = match primary {
            Some(p) if self.rng.chance(0.7) => p,
            _ => self.rng.index(self.nodes.len()),
        };
        if self.nodes[index].replica.is_none() || self.nodes[index].paused_until > self.now {
            return;
        }
        self.stats.pauses += 1;
        self.nodes[index].paused_until = self.now + self.rng.between(300_000, 3_000_000);
    }

    fn relinquish(&mut self) {
        if self.healed {
            return;
        }
        let next =
            self.rng.between(self.options.relinquish_every_us / 2, self.options.relinquish_every_us * 3 / 2);
        self.schedule(self.now + next, Event::Relinquish);
        let target =
            if self.rng.chance(0.5) { Some(node_id(self.rng.index(self.nodes.len()))) } else { None };
        let Some(index) =
            self.nodes.iter().position(|n| n.replica.as_ref().is_some_and(|r| r.role() == Role::Primary))
        else {
            return;
        };
        let now = self.local_time(index);
        if self.nodes[index].replica.as_mut().expect("alive").handle_relinquish(now, target).is_ok() {
            self.stats.relinquishes += 1;
        }
        self.drain(index);
    }

    /// Asks the primary to change the members to a random non-empty subset of every
    /// replica: grows, shrinks, replacements, and down to one member and back.
    fn reconfigure(&mut self) {
        if self.healed {
            return;
        }
        let every = self.options.reconfigure_every_us;
        let next = self.rng.between(every / 2, every * 3 / 2);
        self.schedule(self.now + next, Event::Reconfigure);
        let Some(index) =
            self.nodes.iter().position(|n| n.replica.as_ref().is_some_and(|r| r.role() == Role::Primary))
        else {
            return;
        };
        let n = self.nodes.len();
        let size = self.rng.between(1, n as u64) as usize;
        let mut members: Vec<NodeId> = (0..n).map(node_id).collect();
        while members.len() > size {
            let drop = self.rng.index(members.len());
            members.swap_remove(drop);
        }
        members.sort_unstable();
        self.changes_requested.insert(members.clone());
        let now = self.local_time(index);
        if self.nodes[index]
            .replica
            .as_mut()
            .expect("alive")
            .handle_change_configuration(now, members)
            .is_ok()
        {
            self.stats.reconfigurations += 1;
        }
        self.drain(index);
    }

    /// Every replica's role, configuration and watermarks, for failure reports.
    fn describe_replicas(&self) -> String {
        let described: Vec<String> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| match &n.replica {
                None => format!("{}: down", node_id(i)),
                Some(r) => {
                    let s = r.status();
                    format!(
                        "{}: {:?} cfg {}{:?}@{} member={} primary={:?} promised={} chosen={} applied={} queued={} in_flight={}",
                        s.node,
                        s.role,
                        s.configuration.number,
                        s.configuration.members,
                        s.configuration.first_slot,
                        s.member,
                        s.primary,
                        s.promised,
                        s.chosen,
                        s.applied,
                        r.queued_requests(),
                        r.in_flight_slots()
                    )
                }
            })
            .collect();
        described.join(" | ")
    }

    // ----- End of run -----

    fn final_checks(&mut self) {
        // Liveness: every operation invoked after the cluster settled completed, and the
        // replicas converged on one applied slot.
        for (client, state) in self.clients.iter().enumerate() {
            if let Some(op) = state.pending.as_ref().filter(|op| op.invoked_at >= self.fault_end + SETTLE_US)
            {
                self.liveness_misses.push(format!(
                    "client {client} {:?} invoked at {} still pending at the end",
                    op.op,
                    Time(op.invoked_at)
                ));
            }
        }
        if let Some(miss) = self.liveness_misses.first() {
            let detail = format!(
                "{} operations timed out after healing; first: {miss}; replicas: {}",
                self.liveness_misses.len(),
                self.describe_replicas()
            );
            self.fail(Failure::new("liveness", self.now, detail));
            return;
        }
        // Replicas outside the final configuration (removed, or spares never added) stop
        // following the ring; the members must agree.
        let applied: Vec<(NodeId, Slot)> = self
            .nodes
            .iter()
            .filter_map(|n| n.replica.as_ref())
            .filter(|r| r.status().member)
            .map(|r| (r.node(), r.applied()))
            .collect();
        let top = applied.iter().map(|(_, s)| *s).max().unwrap_or_default();
        if applied.iter().any(|(_, s)| *s != top) {
            self.fail(Failure::new(
                "liveness",
                self.now,
                format!(
                    "replicas did not converge: applied {applied:?}; replicas: {}",
                    self.describe_replicas()
                ),
            ));
            return;
        }
        if !self.nodes.iter().filter_map(|n| n.replica.as_ref()).any(|r| r.role() == Role::Primary) {
            self.fail(Failure::new("liveness", self.now, "no primary at the end of the healed phase".into()));
            return;
        }
        // Durability: every acknowledged write is in the chosen log.
        let chosen_ids = self.agreement.request_ids();
        let mut lost: Vec<&RequestId> =
            self.acknowledged.iter().filter(|id| !chosen_ids.contains(id)).collect();
        lost.sort();
        if let Some(first) = lost.first() {
            let detail =
                format!("{} acknowledged writes missing from the chosen log; first {first:?}", lost.len());
            self.fail(Failure::new("durability", self.now, detail));
            return;
        }
        // Linearizability of the client history.
        match linearizability::check(&self.history, linearizability::CheckBudget::default()) {
            linearizability::CheckResult::Linearizable => {}
            linearizability::CheckResult::NotLinearizable { key, witness } => {
                let budget = linearizability::CheckBudget::default();
                let witness = linearizability::minimize(&self.history, &key, &witness, budget);
                let ops: Vec<String> =
                    witness.operations.iter().map(|&i| format!("{:?}", self.history[i])).collect();
                let detail = format!(
                    "key {key}: cannot order {} (with the key's {} other writes of unknown outcome)",
                    ops.join("; "),
                    witness.relaxed_writes
                );
                self.fail(Failure::new("linearizability", self.now, detail));
            }
            linearizability::CheckResult::Unknown { key, reason } => {
                let detail = format!("key {key}: checker gave up: {reason}");
                self.fail(Failure::new("linearizability", self.now, detail));
            }
        }
    }
}
