//! The replica: proposer, acceptor and learner of one ring, as a plain state machine.
//!
//! [`Replica`] is a composition of sub-state types, each with its own file:
//! - [`log`]: the proposals held by slot, the log start and the chosen watermark, with the
//!   acceptor's always-on safety checks (and [`DurableState`], what recovery hands in);
//! - [`persist`]: the persist-before-answer rule (staged writes, tickets, messages held
//!   until their write is durable);
//! - [`role`]: the role as one enum carrying its state (a candidacy, a primary's pipeline
//!   and proposal queue); [`progress`]: what a primary knows of each member;
//! - [`timers`]: the closed set of timers in a fixed table;
//! - [`fetch_window`]: the fetches a lagging replica keeps outstanding.
//!
//! The handlers are grouped by concern: [`election`] (pre-vote, phase 1, stepping down,
//! following) and [`takeover`] (what a new primary re-proposes); [`replication`] (the
//! primary's phase 2: batching, proposing, counting votes, heartbeats and the read lease)
//! and [`acceptor`] (phase 2 on every replica: accepting and learning what is chosen);
//! [`catch_up`] (status, fetches, checkpoint installs); [`reconfiguration`];
//! [`relinquish`] (handing primacy over); [`read_index`] (linearizable reads confirmed by a
//! round of heartbeats, on the primary or forwarded to it); [`large`] (requests over
//! `batch_bytes_max`, a slot of their own in a window of their own); [`apply`] (handing
//! chosen values to the state machine) and [`checkpointing`] (when to checkpoint, who saves,
//! copies, truncation); [`validate`] (peer input); [`invariants`] (the
//! O(n) contracts); [`mutation`] (seeded bugs for the simulator).

mod acceptor;
mod apply;
mod catch_up;
mod checkpointing;
mod controls;
mod election;
mod exclusive;
mod fetch_window;
mod health;
mod invariants;
mod large;
mod log;
mod mutation;
mod persist;
mod progress;
mod read_index;
mod reconfiguration;
mod relinquish;
mod replication;
mod role;
mod takeover;
mod timers;
mod validate;

use std::collections::VecDeque;

pub use self::controls::{Promotion, PromotionError, ReseedError, Timing};
pub use self::health::{HealthReport, MemberHealth};
pub use self::log::DurableState;
pub use self::mutation::Mutation;
pub use self::reconfiguration::MembershipChange;
pub use self::timers::Timer;

use crate::action::{Action, MessageError, Role, Statistics, Status};
use crate::config::{Config, ConfigError};
use crate::message::{Message, MessageBody};
use crate::rng::SplitMix64;
use crate::time::{Micros, Time};
use crate::types::{Ballot, Configuration, NodeId, Proposal, Slot};

use self::catch_up::CatchUp;
use self::checkpointing::CheckpointSchedule;
use self::log::Log;
use self::persist::Persistence;
use self::read_index::Forwarded;
use self::reconfiguration::Membership;
use self::role::{CandidatePhase, KnownPrimary, RoleReport, RoleState};
use self::timers::Timers;

/// A multi-Paxos replica, sans IO.
///
/// Call order: construct with [`Replica::new`] from the recovered [`DurableState`]; then,
/// in any interleaving, feed inputs (`handle_message`, `handle_timeout` when
/// `poll_timeout` says, `handle_propose`, `handle_relinquish`) and completions
/// (`on_persisted`, `on_applied`, `on_checkpoint_saved`, `on_checkpoint_failed`,
/// `on_checkpoint_copied`, `on_checkpoint_copy_failed`, `on_checkpoint_installed`), and
/// after each call drain [`Replica::poll_action`] until it returns `None`, performing the
/// actions in order. Every input takes `now`, which must not go backwards.
///
/// Safety does not depend on the caller's memory: a message that needs a write on disk
/// first is held inside the replica and only released by `on_persisted`.
#[derive(Debug)]
pub struct Replica {
    config: Config,
    now: Time,
    boot_at: Time,
    rng: SplitMix64,
    /// The configuration in force, the ones before it still needed, and this replica's
    /// place in it.
    membership: Membership,

    // Acceptor state (as requested to persist) and durability.
    promised: Ballot,
    /// The ticket of the write that recorded `promised`.
    promised_ticket: u64,
    /// Highest ballot seen anywhere (to pick the next candidacy above it).
    highest_seen: Ballot,
    log: Log,
    persistence: Persistence,

    // Learner state: what the state machine has been handed and has applied.
    applied: Slot,
    apply_emitted: Slot,
    checkpoint: Slot,
    checkpoints: CheckpointSchedule,
    catch_up: CatchUp,
    /// Read-index reads this replica asked of a primary, not yet answered.
    forwarded_reads: Forwarded,

    // Role.
    role: RoleState,
    /// The primary followed (itself when primary), if known.
    primary: Option<KnownPrimary>,
    /// Last time a live primary was heard (itself included while primary).
    primary_heard_at: Option<Time>,
    /// RSL's CanBecomePrimary veto.
    can_become_primary: bool,
    /// The ballot whose takeover was last reported complete (`Action::PrimaryRecovered`).
    primary_recovered: Ballot,
    reported_role: Option<RoleReport>,

    /// The read lease and the lease guard keep the timing the replica started with, so a
    /// timing change on a running ring never lets a lease outlast the guard of a replica
    /// that has not changed yet (see `controls.rs`).
    lease: Micros,
    guard: Micros,
    /// The slot of the ring's last request, once chosen (see `exclusive.rs`).
    last_slot: Option<Slot>,
    /// A re-seed from a peer's checkpoint in progress: the lowest checkpoint slot it can
    /// replay the log from (see `controls.rs`).
    reseeding: Option<Slot>,

    timers: Timers,
    actions: VecDeque<Action>,
    stats: Statistics,
    #[cfg(feature = "mutations")]
    mutation: Option<Mutation>,
}

impl Replica {
    /// Builds a replica from its configuration and what its log store recovered.
    pub fn new(config: Config, durable: DurableState, now: Time) -> Result<Replica, ConfigError> {
        config.validate()?;
        // The initial configuration, or (joining) none yet: number 0 names the replicas
        // to ask for the current one.
        let number = u64::from(!config.joining);
        let mut configuration = Configuration::new(number, config.members.clone(), Slot(1));
        if let Some(saved) = &durable.configuration {
            if saved.number > configuration.number {
                configuration = saved.clone();
            }
        }
        let recovered = Log::recover(durable.proposals, durable.checkpoint, durable.chosen)?;
        let log = recovered.log;
        // Any durable accept implies a promise at least as high (the promise may have been
        // recorded in a torn write that the accept's write superseded).
        #[allow(unused_mut)]
        let mut promise = durable.promise.max(recovered.highest_unchosen_ballot.unwrap_or(Ballot::ZERO));
        #[cfg(feature = "mutations")]
        if config.mutation == Some(Mutation::ForgetPromiseOnRestart) {
            promise = Ballot::ZERO;
        }
        let membership = Membership::recover(configuration, &log, config.node);
        let chosen = log.chosen();
        let mut replica = Replica {
            membership,
            rng: SplitMix64::new(config.seed ^ config.node.0.rotate_left(32)),
            now,
            boot_at: now,
            promised: promise,
            promised_ticket: 0,
            highest_seen: promise,
            log,
            persistence: Persistence::new(chosen),
            applied: durable.checkpoint,
            apply_emitted: durable.checkpoint,
            checkpoint: durable.checkpoint,
            checkpoints: CheckpointSchedule::new(durable.checkpoint, now),
            catch_up: CatchUp::new(chosen),
            forwarded_reads: Forwarded::default(),
            role: RoleState::Secondary,
            primary: None,
            primary_heard_at: None,
            can_become_primary: true,
            primary_recovered: Ballot::ZERO,
            reported_role: None,
            lease: config.lease(),
            guard: config.election_delay_min(),
            last_slot: None,
            reseeding: None,
            timers: Timers::default(),
            actions: VecDeque::new(),
            stats: Statistics::default(),
            #[cfg(feature = "mutations")]
            mutation: config.mutation,
            config,
        };
        replica.reset_election_timer();
        // Learn what the others know: the primary, and how far the ring got.
        replica.broadcast(MessageBody::StatusQuery);
        replica.timers.set(Timer::CatchUp, now.plus_ms(replica.config.heartbeat_interval_ms * 2));
        replica.emit_applies();
        replica.arm_checkpoint_timer();
        replica.finish();
        Ok(replica)
    }

    // ----- Queries -----

    /// This replica's node id.
    pub fn node(&self) -> NodeId {
        self.config.node
    }

    /// Its current role.
    pub fn role(&self) -> Role {
        self.role.role()
    }

    /// A snapshot of its state.
    pub fn status(&self) -> Status {
        Status {
            node: self.config.node,
            role: self.role(),
            promised: self.promised,
            primary: self.primary_hint(),
            chosen: self.log.chosen(),
            applied: self.applied,
            log_start: self.log.start(),
            checkpoint: self.checkpoint,
            configuration: self.membership.configuration.clone(),
            member: self.membership.is_member(),
            last_slot: self.last_slot,
        }
    }

    /// Brings `status` up to date with this replica and returns whether anything changed:
    /// what [`Replica::status`] followed by a comparison gives, without building a second
    /// `Status` (its member list is copied only when the configuration changed). For a
    /// driver that publishes the status after every input.
    pub fn update_status(&self, status: &mut Status) -> bool {
        // Destructured so that a field added to `Status` cannot be forgotten here.
        let Status {
            node,
            role,
            promised,
            primary,
            chosen,
            applied,
            log_start,
            checkpoint,
            configuration,
            member,
            last_slot,
        } = status;
        let mut changed = false;
        changed |= replace(node, self.config.node);
        changed |= replace(role, self.role());
        changed |= replace(promised, self.promised);
        changed |= replace(primary, self.primary_hint());
        changed |= replace(chosen, self.log.chosen());
        changed |= replace(applied, self.applied);
        changed |= replace(log_start, self.log.start());
        changed |= replace(checkpoint, self.checkpoint);
        changed |= replace(member, self.membership.is_member());
        changed |= replace(last_slot, self.last_slot);
        if *configuration != self.membership.configuration {
            configuration.clone_from(&self.membership.configuration);
            changed = true;
        }
        changed
    }

    /// The configuration in force (what [`Replica::status`] reports, without a copy).
    pub fn configuration(&self) -> &Configuration {
        &self.membership.configuration
    }

    /// Counters.
    pub fn statistics(&self) -> &Statistics {
        &self.stats
    }

    /// Every slot up to here has been applied (the fast-read watermark).
    pub fn applied(&self) -> Slot {
        self.applied
    }

    /// Every slot up to here is chosen and durable here.
    pub fn chosen(&self) -> Slot {
        self.log.chosen()
    }

    /// The primary this replica follows, if known.
    pub fn primary_hint(&self) -> Option<NodeId> {
        self.primary.map(|p| p.node)
    }

    /// Requests queued at the primary waiting for a slot.
    pub fn queued_requests(&self) -> u64 {
        self.role.primary().map_or(0, |p| p.queue.len() as u64)
    }

    /// Unchosen slots in flight at the primary.
    pub fn in_flight_slots(&self) -> u64 {
        self.role.primary().map_or(0, |p| p.in_flight.len() as u64)
    }

    // ----- Outputs -----

    /// The next action to perform, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When `handle_timeout` must next be called.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.timers.next()
    }

    // ----- Inputs -----

    /// Sets RSL's CanBecomePrimary veto: when false this replica never campaigns.
    pub fn set_can_become_primary(&mut self, allowed: bool) {
        self.can_become_primary = allowed;
    }

    /// Fires every timer whose deadline is at or before `now`.
    pub fn handle_timeout(&mut self, now: Time) {
        self.advance_clock(now);
        for timer in Timer::ALL {
            if self.timers.expire(timer, now) {
                match timer {
                    Timer::Heartbeat => self.on_heartbeat_timer(),
                    Timer::Election => self.on_election_timer(),
                    Timer::CheckQuorum => self.on_check_quorum_timer(),
                    Timer::BatchLinger => self.propose_queued(),
                    Timer::CatchUp => self.on_catch_up_timer(),
                    Timer::Relinquish => self.on_relinquish_timer(),
                    Timer::Checkpoint => self.on_checkpoint_timer(),
                    Timer::ReadIndex => self.on_read_index_timer(),
                }
            }
        }
        self.finish();
    }

    /// Handles a message from a peer. Bad messages are counted and returned as errors
    /// for the caller to log; they never change state.
    pub fn handle_message(&mut self, now: Time, message: Message) -> Result<(), MessageError> {
        self.advance_clock(now);
        self.stats.messages_received += 1;
        if let Err(error) = self.validate(&message) {
            self.stats.messages_rejected += 1;
            if let MessageError::WrongConfiguration { expected, found } = error {
                self.on_other_configuration(message.from, expected, found);
                self.finish();
            }
            return Err(error);
        }
        let from = message.from;
        match message.body {
            MessageBody::PreVote { ballot, chosen } => self.on_pre_vote(from, ballot, chosen),
            MessageBody::PreVoteGranted { ballot } => self.on_pre_vote_granted(from, ballot),
            MessageBody::Prepare { ballot, first_unchosen, transfer_from } => {
                self.on_prepare(from, ballot, first_unchosen, transfer_from)
            }
            MessageBody::Promise { ballot, accepted } => self.on_promise(from, ballot, accepted),
            MessageBody::Reject { ballot, promised, reason } => {
                self.on_reject(from, ballot, promised, reason)
            }
            MessageBody::Accept { ballot, slot, value, chosen } => {
                self.on_accept(from, ballot, slot, value, chosen)
            }
            MessageBody::Accepted { ballot, slot } => self.on_accepted(from, ballot, slot),
            MessageBody::Heartbeat { ballot, chosen, sent_at } => {
                self.on_heartbeat(from, ballot, chosen, sent_at)
            }
            MessageBody::HeartbeatReply { ballot, sent_at, chosen } => {
                self.on_heartbeat_reply(from, ballot, sent_at, chosen)
            }
            MessageBody::StatusQuery => self.on_status_query(from),
            MessageBody::StatusReply { promised, chosen } => self.on_status_reply(from, promised, chosen),
            MessageBody::Fetch { from: first, to: last } => self.on_fetch(from, first, last),
            MessageBody::FetchReply { chosen_values } => self.on_fetch_reply(from, chosen_values),
            MessageBody::FetchTruncated { checkpoint } => self.on_fetch_truncated(from, checkpoint),
            MessageBody::TimeoutNow { ballot } => self.on_timeout_now(from, ballot),
            MessageBody::PromotionRequest { ballot } => self.on_promotion_request(from, ballot),
            MessageBody::ReadIndexRequest { id } => self.on_read_index_request(from, id),
            MessageBody::ReadIndexReply { id, ballot, index } => {
                self.on_read_index_reply(from, id, ballot, index)
            }
            MessageBody::ReadIndexRefused { id, reason } => self.on_read_index_refused(from, id, reason),
        }
        self.finish();
        Ok(())
    }

    /// Every persist request with a ticket up to `ticket` is durable.
    pub fn on_persisted(&mut self, now: Time, ticket: u64) {
        self.advance_clock(now);
        // Release what waited on the disk.
        let Some(released) = self.persistence.mark_durable(ticket) else { return };
        for message in released {
            self.stats.messages_sent += 1;
            self.actions.push_back(Action::Send(message));
        }
        // Our own votes and promises count now (a candidate may win here, and then counts
        // its own votes for the slots it just re-proposed).
        if self
            .role
            .candidate()
            .is_some_and(|c| c.phase == CandidatePhase::Prepare && c.self_ticket <= ticket)
        {
            self.check_promise_quorum();
        }
        if let RoleState::Primary(primary) = &mut self.role {
            let self_bit = 1u64 << primary.progress.me();
            for flight in primary.in_flight.values_mut() {
                if flight.self_ticket <= ticket {
                    flight.votes |= self_bit;
                }
            }
            self.advance_primary_chosen();
        } else {
            self.advance_learned_chosen();
        }
        self.finish();
    }

    // ----- Plumbing -----

    fn advance_clock(&mut self, now: Time) {
        precondition!(now >= self.now, "time went backwards: {now} < {}", self.now);
        self.now = self.now.max(now);
    }

    fn reset_election_timer(&mut self) {
        let delay = self.rng.between(self.config.election_delay_min_ms, self.config.election_delay_max_ms);
        self.timers.set(Timer::Election, self.now.plus_ms(delay));
    }

    fn message(&self, to: NodeId, body: MessageBody) -> Message {
        Message {
            ring: self.config.ring,
            from: self.config.node,
            to,
            configuration: self.membership.configuration.number,
            body,
        }
    }

    fn send(&mut self, to: NodeId, body: MessageBody) {
        let message = self.message(to, body);
        self.stats.messages_sent += 1;
        self.actions.push_back(Action::Send(message));
    }

    /// Sends once every write up to `ticket` is durable.
    fn send_after(&mut self, ticket: u64, to: NodeId, body: MessageBody) {
        let message = self.message(to, body);
        if let Some(message) = self.persistence.send_after(ticket, message) {
            self.stats.messages_sent += 1;
            self.actions.push_back(Action::Send(message));
        }
    }

    /// Sends `body` to every other member of the configuration in force.
    fn broadcast(&mut self, body: MessageBody) {
        let me = self.config.node;
        let peers: Vec<NodeId> =
            self.membership.configuration.members.iter().copied().filter(|&m| m != me).collect();
        for peer in peers {
            self.send(peer, body.clone());
        }
    }

    /// Sends `body` to every other member and every learner of the configuration in force:
    /// what a primary replicates (accepts, heartbeats) goes to both.
    fn broadcast_followers(&mut self, body: MessageBody) {
        let me = self.config.node;
        let peers: Vec<NodeId> = self.membership.configuration.followers().filter(|&m| m != me).collect();
        for peer in peers {
            self.send(peer, body.clone());
        }
    }

    /// Stages a promise of `ballot` into this step's write; returns its ticket.
    fn stage_promise(&mut self, ballot: Ballot) -> u64 {
        safety!(
            PromiseNeverDecreases,
            ballot >= self.promised,
            "promise must never decrease: {} -> {ballot}",
            self.promised
        );
        self.promised = ballot;
        self.highest_seen = self.highest_seen.max(ballot);
        let staged = self.persistence.stage();
        staged.promise = Some(ballot);
        let ticket = staged.ticket;
        self.promised_ticket = ticket;
        ticket
    }

    /// Stages `proposal` into this step's write and records it in the log; returns the
    /// write's ticket. A large value (`large.rs`) gets a write of its own, so one log record
    /// holds at most one.
    fn stage_proposal(&mut self, proposal: Proposal, chosen: bool) -> u64 {
        let large = large::large_value_bytes(&proposal.value, self.config.batch_bytes_max).is_some();
        if large {
            self.flush_staged();
        }
        // Chosen values (fetched) carry whatever ballot chose them; everything else is
        // accepted at the promise or above it (the seeded promise bugs break this on purpose).
        safety!(
            PromiseNeverDecreases,
            chosen
                || proposal.ballot >= self.promised
                || self.mutated(Mutation::AcceptBelowPromise)
                || self.mutated(Mutation::ForgetPromiseOnRestart),
            "accepting ballot {} at slot {} below the promise {}",
            proposal.ballot,
            proposal.slot,
            self.promised
        );
        let staged = self.persistence.stage();
        staged.proposals.push(proposal.clone());
        let ticket = staged.ticket;
        self.log.record(proposal, ticket, chosen);
        if large {
            self.flush_staged();
        }
        ticket
    }

    /// Ends a step: moves read-index reads along, emits its persist request, then checks
    /// invariants.
    fn finish(&mut self) {
        self.advance_reads();
        self.flush_staged();
        self.check_invariants();
    }

    /// Emits the persist request being built; what is staged afterwards goes into a later
    /// request, written after this one. Persists go before any send they gate (which are
    /// held anyway).
    fn flush_staged(&mut self) {
        if let Some(request) = self.persistence.flush(self.log.chosen()) {
            self.stats.persists += 1;
            self.actions.push_back(Action::Persist(request));
        }
    }

    /// Records the role and reports it when role, ballot or primary changed.
    fn report_role(&mut self, ballot: Ballot, primary: Option<NodeId>) {
        let report = RoleReport { role: self.role.role(), ballot, primary };
        if self.reported_role != Some(report) {
            self.reported_role = Some(report);
            self.actions.push_back(Action::RoleChanged { role: report.role, ballot, primary });
        }
    }
}

/// Sets `field` to `value`; whether that changed it.
fn replace<T: PartialEq>(field: &mut T, value: T) -> bool {
    if *field == value {
        false
    } else {
        *field = value;
        true
    }
}
