//! One simulated run: replicas of the real `rsl-core`, a faulty network, faulty disks,
//! crashes and restarts, clients, simulated time — all driven by one seed.
//!
//! The run has two phases. In the fault phase the network drops, duplicates, delays
//! (and so reorders) and partitions messages, replicas crash (losing every write not yet
//! reported durable, possibly tearing the last) and restart, and primaries are asked to
//! hand over. Then every fault heals and every replica restarts; in the liveness phase
//! every new client request must complete and the replicas must converge.
//!
//! The simulation is split by concern: `disk` (what survives a crash), `clock` (replica
//! clocks drifting within the bound, or beyond it), `clients` (sessions issuing reads and
//! writes, retrying and timing out), `fast_reads` (fast reads served by any replica once it
//! applied the client's minimum slot), `apply` (the state machine and the validity checks
//! at every applied slot), `install` (a fetched checkpoint written, published and loaded,
//! with crashes in between), `nemesis` (crashes, power loss, partitions, pauses, leader
//! transfers, configuration changes, clock drift, the primary isolated with the clocks
//! skewed against it), `takeover` (a stale primary brought back to take over slots a
//! later primary chose) and `final_checks` (state digests, durability, fast-read staleness,
//! linearizability, liveness and convergence once the run ends). This file holds the
//! event loop and the simulated network.

mod apply;
mod clients;
mod clock;
mod disk;
mod fast_reads;
mod final_checks;
mod install;
mod nemesis;
mod takeover;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

use rsl_core::{
    Action, Config, Configuration, Message, NodeId, ReadId, Replica, Request, RequestId, RingId, Role, Slot,
    Time,
};

use crate::checkers::{Agreement, Configurations, Failure, FastReadAnswer};
use crate::kv::Kv;
use crate::options::Options;
use crate::rng::Rng;
use rsl_check as linearizability;

use self::clients::{Client, ClientReply, ClientRequest};
use self::clock::Clock;
use self::disk::Disk;
use self::fast_reads::WaitingFastRead;
use self::takeover::{TakeoverRound, TakeoverStep};

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
    /// Checkpoints a primary copied from a secondary.
    pub checkpoint_copies: u64,
    /// Read-index reads answered (on the primary or a secondary), all in the checked history.
    pub read_index_reads: u64,
    /// Pauses injected.
    pub pauses: u64,
    /// Configuration changes a primary accepted.
    pub reconfigurations: u64,
    /// Configuration changes chosen (the highest configuration number reached, minus one).
    pub configurations_chosen: u64,
    /// Configurations chosen that have learners.
    pub configurations_with_learners: u64,
    /// Learners promoted to voters by a chosen configuration.
    pub learners_promoted: u64,
    /// Fast reads answered (each checked for staleness).
    pub fast_reads: u64,
    /// Crashes of a replica in the middle of a checkpoint install.
    pub install_crashes: u64,
    /// Isolations of the primary with the clocks skewed against it.
    pub primary_isolations: u64,
    /// Takeover rounds started (the primary cut off to come back later).
    pub takeover_rounds: u64,
    /// Takeover rounds in which the next primary applied the stale one's slots and was
    /// cut off in turn.
    pub takeover_swaps: u64,
    /// Takeover rounds the stale primary won.
    pub takeover_wins: u64,
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

#[derive(Debug)]
enum Event {
    Deliver(Message),
    DiskDone {
        node: usize,
        epoch: u64,
        ticket: u64,
    },
    CheckpointArrives {
        node: usize,
        epoch: u64,
        checkpoint: Option<Checkpoint>,
        copy: bool,
    },
    ClientToReplica {
        node: usize,
        client: usize,
        attempt: u64,
        request: ClientRequest,
    },
    ReplicaToClient {
        client: usize,
        attempt: u64,
        reply: ClientReply,
    },
    ClientAttemptTimeout {
        client: usize,
        attempt: u64,
    },
    ClientResend {
        client: usize,
        attempt: u64,
    },
    ClientNextOp {
        client: usize,
    },
    Crash,
    Restart {
        node: usize,
    },
    Partition,
    Heal,
    Relinquish,
    Pause,
    Reconfigure,
    Drift,
    IsolatePrimary,
    /// A step of the takeover nemesis.
    Takeover(TakeoverStep),
    /// A fetched checkpoint is written out and published in the replica's store.
    CheckpointWritten {
        node: usize,
        epoch: u64,
        checkpoint: Checkpoint,
    },
    /// The published checkpoint at `slot` is loaded into the state machine.
    CheckpointLoaded {
        node: usize,
        epoch: u64,
        slot: Slot,
    },
    /// A crash of one replica, if it is still in life `epoch`.
    CrashNode {
        node: usize,
        epoch: u64,
    },
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
            | Event::CheckpointWritten { node, .. }
            | Event::CheckpointLoaded { node, .. }
            | Event::ClientToReplica { node, .. } => Some(*node),
            _ => None,
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
    /// Lease and read-index reads waiting for the applied watermark.
    waiting_reads: Vec<(Slot, u8, usize, u64)>,
    /// Fast reads waiting for their minimum slot.
    waiting_fast_reads: Vec<WaitingFastRead>,
    /// Read-index reads started here and not yet confirmed, by the id given to the replica.
    read_indexes: HashMap<ReadId, (u8, usize, u64)>,
    /// The next slot this replica's state machine expects.
    apply_position: Slot,
    crashed_at: Option<u64>,
    /// A paused (frozen) replica handles nothing until this time.
    paused_until: u64,
    /// This replica's clock.
    clock: Clock,
}

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
    /// The takeover nemesis's round under way.
    takeover: Option<TakeoverRound>,
    fault_end: u64,
    run_end: u64,
    agreement: Agreement,
    /// Configurations led by a primary (configuration safety).
    configurations: Configurations,
    /// Every request a client issued, by id (validity).
    issued: HashMap<RequestId, Request>,
    /// Writes acknowledged to a client (durability).
    acknowledged: HashSet<RequestId>,
    /// Member lists of every configuration change requested (validity).
    changes_requested: HashSet<(Vec<NodeId>, Vec<NodeId>)>,
    /// The newest configuration seen chosen (for counting learners and promotions).
    newest_chosen_configuration: Option<Configuration>,
    history: Vec<linearizability::Operation>,
    /// Every fast read answered, for the staleness checker.
    fast_reads: Vec<FastReadAnswer>,
    /// Liveness: operations invoked after settling that did not complete.
    liveness_misses: Vec<String>,
    failure: Option<Failure>,
    stats: RunStats,
    trace: bool,
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
            takeover: None,
            fault_end: options.fault_phase_us,
            run_end: options.fault_phase_us + options.liveness_phase_us,
            agreement: Agreement::default(),
            configurations: Configurations::default(),
            issued: HashMap::new(),
            acknowledged: HashSet::new(),
            changes_requested: HashSet::new(),
            newest_chosen_configuration: None,
            history: Vec::new(),
            fast_reads: Vec::new(),
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
                waiting_fast_reads: Vec::new(),
                read_indexes: HashMap::new(),
                apply_position: Slot(1),
                crashed_at: None,
                paused_until: 0,
                clock: Clock::default(),
            });
        }
        // Clock rates differ by at most the drift bound the replicas assume (unless the run
        // is the negative control), often by all of it.
        if sim.options.clock_drift {
            for index in 0..n {
                let rate = sim.draw_clock_rate();
                sim.nodes[index].clock = Clock::at_rate(rate);
            }
        }
        for i in 0..n {
            sim.start_replica(i);
        }
        for c in 0..sim.options.clients {
            sim.clients.push(Client {
                next_sequence: 1,
                attempts: 0,
                pending: None,
                hint: c % n,
                known_slot: Slot::ZERO,
            });
            let at = sim.rng.between(0, 100_000);
            sim.schedule(at, Event::ClientNextOp { client: c });
        }
        // Each fault kind starts within twice its period, then reschedules itself.
        let faults = [
            (sim.options.partition_every_us, Event::Partition),
            (sim.options.crash_every_us, Event::Crash),
            (sim.options.pause_every_us, Event::Pause),
            (sim.options.relinquish_every_us, Event::Relinquish),
            (sim.options.reconfigure_every_us, Event::Reconfigure),
            (sim.options.drift_every_us, Event::Drift),
            (sim.options.isolate_primary_every_us, Event::IsolatePrimary),
            (sim.options.takeover_every_us, Event::Takeover(TakeoverStep::Start)),
        ];
        for (every_us, event) in faults {
            if every_us > 0 {
                let at = sim.rng.between(0, every_us * 2);
                sim.schedule(at, event);
            }
        }
        sim
    }

    fn config(&self, index: usize) -> Config {
        let members = (0..self.options.replicas).map(node_id).collect();
        let mut config = Config::new(RingId(7), node_id(index), members);
        // Spares start outside the ring and ask the initial members for its configuration.
        config.joining = index >= self.options.replicas;
        config.heartbeat_interval_ms = 50;
        config.election_delay_min_ms = self.options.election_delay_min_ms;
        config.election_delay_max_ms =
            self.options.election_delay_min_ms + self.options.election_delay_spread_ms;
        config.clock_drift_max_ppm = self.options.clock_drift_max_ppm;
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
        self.nodes[index].clock.local(self.now)
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
                        .map(|t| (n.clock.global(t).max(self.now).max(eligible), i))
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
        self.takeover = None;
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
                let now = n.clock.local(self.now);
                n.replica.as_mut().expect("alive").on_persisted(now, ticket);
                self.drain(node);
            }
            Event::CheckpointArrives { node, epoch, checkpoint, copy } => {
                self.checkpoint_arrives(node, epoch, checkpoint, copy)
            }
            Event::CheckpointWritten { node, epoch, checkpoint } => {
                self.checkpoint_written(node, epoch, checkpoint)
            }
            Event::CheckpointLoaded { node, epoch, slot } => self.checkpoint_loaded(node, epoch, slot),
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
            Event::Heal => self.heal_partitions(),
            Event::Relinquish => self.relinquish(),
            Event::Pause => self.pause(),
            Event::Reconfigure => self.reconfigure(),
            Event::Drift => self.drift(),
            Event::IsolatePrimary => self.isolate_primary(),
            Event::Takeover(step) => self.takeover_step(step),
            Event::CrashNode { node, epoch } => {
                if self.nodes[node].epoch == epoch && !self.healed {
                    self.crash(node);
                }
            }
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
                    // The state machine saves what it holds, labelled as asked; a newer
                    // checkpoint published by an install stays the newest.
                    let node = &mut self.nodes[index];
                    if slot > node.disk.checkpoint.0 {
                        node.disk.checkpoint = (slot, node.kv.clone(), Some(configuration));
                    }
                    node.replica.as_mut().expect("alive").on_checkpoint_saved(slot);
                }
                Action::TruncateLog { below } => {
                    let node = &mut self.nodes[index];
                    node.disk.truncate_below(below);
                }
                Action::FetchCheckpoint { from, .. } | Action::CopyCheckpoint { from, .. } => {
                    let copy = matches!(action, Action::CopyCheckpoint { .. });
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
                        Event::CheckpointArrives { node: index, epoch, checkpoint, copy },
                    );
                }
                Action::RoleChanged { role, .. } => {
                    if role == Role::Primary {
                        self.stats.elections_won += 1;
                        let replica = self.nodes[index].replica.as_ref().expect("alive");
                        let led =
                            self.configurations.on_primary(self.now, replica.node(), replica.configuration());
                        if let Err(failure) =
                            led.and_then(|()| self.configurations.check(self.now, &self.agreement))
                        {
                            self.fail(failure);
                        }
                    }
                }
                Action::ConfigurationChangeInterrupted { .. } | Action::PrimaryRecovered { .. } => {}
                Action::ReadIndexReady { id, index: read_index } => {
                    self.read_index_ready(index, id, read_index)
                }
                Action::ReadIndexFailed { id, error } => self.read_index_failed(index, id, error),
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
}
