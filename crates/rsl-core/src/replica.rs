//! The replica: proposer, acceptor and learner of one ring, as a plain state machine.

use std::collections::{BTreeMap, VecDeque};

use crate::action::{
    Action, ChangeError, MessageError, PersistRequest, ProposeError, ReadError, RelinquishError, Role,
    Statistics, Status,
};
use crate::config::{Config, ConfigError};
use crate::message::{Message, MessageBody, RejectReason};
use crate::quorum;
use crate::rng::SplitMix64;
use crate::time::Time;
use crate::types::{Ballot, Configuration, NodeId, Proposal, Request, Slot, Value, CONFIGURATION_NUMBER_MAX};

/// What the log store recovered after a restart (all of it durable).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DurableState {
    /// The highest ballot promised.
    pub promise: Ballot,
    /// Every proposal held, any order, at most one per slot.
    pub proposals: Vec<Proposal>,
    /// Chosen-watermark hint: the proposals up to here are chosen.
    pub chosen: Slot,
    /// The slot of the checkpoint the state machine was loaded from (zero: none).
    pub checkpoint: Slot,
    /// The configuration saved with that checkpoint (in force for the slots after it).
    /// Configuration values chosen in the log above the checkpoint take over from it.
    pub configuration: Option<Configuration>,
}

/// The timers a replica uses: a closed set in a fixed table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    /// Primary: send heartbeats and retransmit unacknowledged accepts.
    Heartbeat = 0,
    /// Secondary or candidate: no primary heard; campaign.
    Election = 1,
    /// Primary: step down unless a quorum was heard from recently.
    CheckQuorum = 2,
    /// Primary: a partial batch waited long enough.
    BatchLinger = 3,
    /// Catch-up: retry a fetch or status query.
    CatchUp = 4,
    /// Primary relinquishing: give up waiting for in-flight slots.
    Relinquish = 5,
}

const TIMER_COUNT: usize = 6;
const TIMERS: [Timer; TIMER_COUNT] = [
    Timer::Heartbeat,
    Timer::Election,
    Timer::CheckQuorum,
    Timer::BatchLinger,
    Timer::CatchUp,
    Timer::Relinquish,
];
const _: () = assert!(Timer::Relinquish as usize == TIMER_COUNT - 1);

/// A seeded protocol bug, for the simulator to prove its checkers catch it. Has an
/// effect only in builds with the `mutations` feature (the simulator's); elsewhere
/// the replica never consults it and the bug paths compile away.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mutation {
    /// The acceptor accepts proposals below its promise.
    AcceptBelowPromise,
    /// Votes (the primary's own and secondaries' `Accepted`) count before they are durable.
    CountVoteBeforePersist,
    /// Chosen values are applied out of slot order.
    ApplyOutOfOrder,
    /// A restarted replica forgets its durable promise.
    ForgetPromiseOnRestart,
    /// The primary switches to a new configuration as soon as it proposes the change,
    /// before the change is chosen.
    EnterConfigurationEarly,
}

/// One slot of the log as this replica holds it.
#[derive(Clone, Debug)]
struct Entry {
    proposal: Proposal,
    /// The persist ticket that wrote it; durable once `ticket <= persisted_ticket`.
    ticket: u64,
    /// Known chosen (learned from a quorum, a fetch, or the primary's watermark).
    chosen: bool,
}

/// Votes for one in-flight slot at the primary.
#[derive(Clone, Debug)]
struct InFlight {
    /// Bit `i` set: member `i` durably accepted.
    votes: u64,
    /// The primary's own write of this slot.
    self_ticket: u64,
    /// When the accept was last sent to peers that had not voted.
    sent_at: Time,
}

/// A fetch sent and not yet answered.
#[derive(Clone, Copy, Debug)]
struct PendingFetch {
    to: NodeId,
    first: Slot,
    last: Slot,
    /// When to give up on it.
    until: Time,
}

#[derive(Clone, Debug, Default)]
struct Peer {
    /// Last time any message at the primary's ballot arrived from this peer.
    heard_at: Option<Time>,
    /// Highest heartbeat `sent_at` this peer echoed (the lease clock).
    echoed: u64,
    /// The peer's chosen watermark, from its last heartbeat reply.
    chosen: Slot,
}

#[derive(Debug)]
struct PrimaryState {
    ballot: Ballot,
    /// The next slot to assign.
    next_slot: Slot,
    /// Unchosen slots this primary proposed, by slot.
    in_flight: BTreeMap<Slot, InFlight>,
    /// Inherited slots are re-proposed up to here; lease reads wait until it is chosen.
    recovery_end: Slot,
    /// Requests waiting for a slot.
    queue: VecDeque<Request>,
    queued_bytes: u64,
    /// When the oldest queued request arrived (for the linger bound).
    queued_since: Option<Time>,
    peers: Vec<Peer>,
    /// Relinquishing to this member.
    relinquish_to: Option<NodeId>,
    /// A configuration change accepted but not yet proposed (waits for pipeline room).
    pending_change: Option<Vec<NodeId>>,
    /// The slot of the configuration value in flight: no slot beyond it is opened under
    /// this configuration.
    change_slot: Option<Slot>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CandidatePhase {
    PreVote,
    Prepare,
}

#[derive(Debug)]
struct CandidateState {
    ballot: Ballot,
    phase: CandidatePhase,
    /// Pre-votes granted (bit per member).
    granted: u64,
    /// Promises received, by member index.
    promises: Vec<Option<Vec<Proposal>>>,
    /// Highest chosen watermark among promises.
    promised_chosen: Slot,
    /// The persist ticket of our own promise.
    self_ticket: u64,
    first_unchosen: Slot,
}

/// What makes a configuration from a peer unusable, if anything.
fn configuration_problem(configuration: &Configuration) -> Option<String> {
    if configuration.members.is_empty() || configuration.members.len() > crate::config::MEMBERS_MAX {
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

/// A multi-Paxos replica, sans IO.
///
/// Call order: construct with [`Replica::new`] from the recovered [`DurableState`]; then,
/// in any interleaving, feed inputs (`handle_message`, `handle_timeout` when
/// `poll_timeout` says, `handle_propose`, `handle_relinquish`) and completions
/// (`on_persisted`, `on_applied`, `on_checkpoint_saved`, `on_checkpoint_installed`), and
/// after each call drain [`Replica::poll_action`] until it returns `None`, performing the
/// actions in order. Every input takes `now`, which must not go backwards.
///
/// Safety does not depend on the caller's memory: a message that needs a write on disk
/// first is held inside the replica and only released by `on_persisted`.
#[derive(Debug)]
pub struct Replica {
    config: Config,
    /// The configuration in force for the slots after the chosen watermark (or adopted
    /// from a replica in a newer one).
    configuration: Configuration,
    /// Every configuration entered since the one in force after the newest checkpoint,
    /// oldest first, the current one last (pruned as checkpoints are saved).
    history: Vec<Configuration>,
    /// Whether this replica votes in `configuration`; `member_index` is meaningful only then.
    is_member: bool,
    member_index: usize,
    /// When this replica last asked a replica in a newer configuration for it.
    configuration_query_at: Option<Time>,
    rng: SplitMix64,
    now: Time,
    boot_at: Time,

    // Acceptor state (as requested to persist) and durability tracking.
    promised: Ballot,
    promised_ticket: u64,
    log: BTreeMap<Slot, Entry>,
    log_start: Slot,
    next_ticket: u64,
    persisted_ticket: u64,
    staged: Option<PersistRequest>,
    held: VecDeque<(u64, Message)>,

    // Learner state.
    chosen: Slot,
    chosen_persisted_hint: Slot,
    applied: Slot,
    apply_emitted: Slot,
    checkpoint: Slot,
    checkpoint_requested: Slot,
    /// Chosen watermark reported by the primary of `remote_chosen.1`. Only a primary's
    /// own watermark may be paired with its ballot: it says which held proposals are chosen.
    remote_chosen: (Slot, Ballot),
    /// The highest chosen slot anyone reported (status replies, refusals), and who: a
    /// target for fetching only, never a reason to mark a held proposal chosen.
    catch_up_to: (Slot, Option<NodeId>),
    /// Outstanding fetches, oldest first (at most `fetch_window`).
    fetches: Vec<PendingFetch>,
    checkpoint_fetch_pending: bool,

    // Roles.
    role: Role,
    /// The primary followed (or self), and its ballot.
    primary: Option<(NodeId, Ballot)>,
    /// Last time a live primary was heard (self included while primary).
    primary_heard_at: Option<Time>,
    /// Highest ballot seen anywhere (to pick the next candidacy above it).
    highest_seen: Ballot,
    candidate: Option<CandidateState>,
    leader: Option<PrimaryState>,
    can_become_primary: bool,
    reported_role: Option<(Role, Ballot, Option<NodeId>)>,

    timers: [Option<Time>; TIMER_COUNT],
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
        let mut log = BTreeMap::new();
        let mut promise = durable.promise;
        for proposal in durable.proposals {
            let slot = proposal.slot;
            if slot == Slot::ZERO {
                return Err(ConfigError::Durable { reason: "a proposal for slot 0".into() });
            }
            let entry = Entry { proposal, ticket: 0, chosen: slot <= durable.chosen };
            if log.insert(slot, entry).is_some() {
                return Err(ConfigError::Durable { reason: format!("two proposals for slot {slot}") });
            }
        }
        // Any durable accept implies a promise at least as high (the promise may have been
        // recorded in a torn write that the accept's write superseded).
        if let Some(max) = log.values().filter(|e| !e.chosen).map(|e| e.proposal.ballot).max() {
            promise = promise.max(max);
        }
        #[cfg(feature = "mutations")]
        if config.mutation == Some(Mutation::ForgetPromiseOnRestart) {
            promise = Ballot::ZERO;
        }
        let log_start =
            log.keys().next().copied().unwrap_or(durable.checkpoint.next()).min(durable.checkpoint.next());
        // The chosen hint is only good as far as the log is contiguous.
        let mut chosen = durable.checkpoint;
        while chosen < durable.chosen {
            match log.get(&chosen.next()) {
                Some(_) => chosen = chosen.next(),
                None => break,
            }
        }
        for (slot, entry) in log.iter_mut() {
            entry.chosen = *slot <= chosen;
        }
        // Configuration values chosen above the checkpoint take over, in slot order.
        let mut history = vec![configuration.clone()];
        for entry in log.values().filter(|e| e.chosen) {
            if let Value::Configuration(next) = &entry.proposal.value {
                if next.number > configuration.number {
                    configuration = next.clone();
                    history.push(next.clone());
                }
            }
        }
        let member_index = configuration.members.iter().position(|&m| m == config.node);
        let seed = config.seed;
        let mut replica = Replica {
            configuration,
            history,
            is_member: member_index.is_some(),
            member_index: member_index.unwrap_or(usize::MAX),
            configuration_query_at: None,
            rng: SplitMix64::new(seed ^ config.node.0.rotate_left(32)),
            now,
            boot_at: now,
            promised: promise,
            promised_ticket: 0,
            log,
            log_start,
            next_ticket: 1,
            persisted_ticket: 0,
            staged: None,
            held: VecDeque::new(),
            chosen,
            chosen_persisted_hint: chosen,
            applied: durable.checkpoint,
            apply_emitted: durable.checkpoint,
            checkpoint: durable.checkpoint,
            checkpoint_requested: durable.checkpoint,
            remote_chosen: (chosen, Ballot::ZERO),
            catch_up_to: (chosen, None),
            fetches: Vec::new(),
            checkpoint_fetch_pending: false,
            role: Role::Secondary,
            primary: None,
            primary_heard_at: None,
            highest_seen: promise,
            candidate: None,
            leader: None,
            can_become_primary: true,
            reported_role: None,
            timers: [None; TIMER_COUNT],
            actions: VecDeque::new(),
            stats: Statistics::default(),
            #[cfg(feature = "mutations")]
            mutation: config.mutation,
            config,
        };
        replica.reset_election_timer();
        // Learn what the others know: the primary, and how far the ring got.
        replica.broadcast(MessageBody::StatusQuery);
        replica.set_timer(Timer::CatchUp, now.plus_ms(replica.config.heartbeat_interval_ms * 2));
        replica.emit_applies();
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
        self.role
    }

    /// A snapshot of its state.
    pub fn status(&self) -> Status {
        Status {
            node: self.config.node,
            role: self.role,
            promised: self.promised,
            primary: self.primary.map(|(node, _)| node),
            chosen: self.chosen,
            applied: self.applied,
            log_start: self.log_start,
            checkpoint: self.checkpoint,
            configuration: self.configuration.clone(),
            member: self.is_member,
        }
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
        self.chosen
    }

    /// The primary this replica follows, if known.
    pub fn primary_hint(&self) -> Option<NodeId> {
        self.primary.map(|(node, _)| node)
    }

    /// Requests queued at the primary waiting for a slot.
    pub fn queued_requests(&self) -> u64 {
        self.leader.as_ref().map_or(0, |l| l.queue.len() as u64)
    }

    /// Unchosen slots in flight at the primary.
    pub fn in_flight_slots(&self) -> u64 {
        self.leader.as_ref().map_or(0, |l| l.in_flight.len() as u64)
    }

    // ----- Outputs -----

    /// The next action to perform, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When `handle_timeout` must next be called.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.timers.iter().flatten().min().copied()
    }

    // ----- Inputs -----

    /// Sets RSL's CanBecomePrimary veto: when false this replica never campaigns.
    pub fn set_can_become_primary(&mut self, allowed: bool) {
        self.can_become_primary = allowed;
    }

    /// Fires every timer whose deadline is at or before `now`.
    pub fn handle_timeout(&mut self, now: Time) {
        self.advance_clock(now);
        for timer in TIMERS {
            match self.timers[timer as usize] {
                Some(deadline) if deadline <= now => {
                    self.timers[timer as usize] = None;
                    self.on_timer(timer);
                }
                _ => {}
            }
        }
        self.finish();
    }

    /// Queues a client request for a slot. Only the primary accepts; the request's
    /// outcome is its `Apply` (or a `RequestsDropped`).
    pub fn handle_propose(&mut self, now: Time, request: Request) -> Result<(), ProposeError> {
        self.advance_clock(now);
        let result = self.enqueue(request);
        if result.is_ok() {
            self.propose_queued();
        }
        self.finish();
        result
    }

    /// Queues many client requests at once and only then opens slots, so requests that
    /// arrive together share slots even while the pipeline has room (one
    /// [`Replica::handle_propose`] per request would give each its own slot). The results
    /// are in the order of `requests`; each is what `handle_propose` would have returned.
    pub fn handle_propose_many(
        &mut self,
        now: Time,
        requests: impl IntoIterator<Item = Request>,
    ) -> Vec<Result<(), ProposeError>> {
        self.advance_clock(now);
        let results: Vec<Result<(), ProposeError>> =
            requests.into_iter().map(|request| self.enqueue(request)).collect();
        if results.iter().any(Result::is_ok) {
            self.propose_queued();
        }
        self.finish();
        results
    }

    /// Adds one request to the primary's queue, or says why not.
    fn enqueue(&mut self, request: Request) -> Result<(), ProposeError> {
        let now = self.now;
        let hint = self.primary_hint();
        let batch_bytes_max = self.config.batch_bytes_max;
        let queue_max = self.config.proposal_queue_max;
        let Some(leader) = self.leader.as_mut() else {
            return Err(ProposeError::NotPrimary { hint });
        };
        if let Some(target) = leader.relinquish_to {
            return Err(ProposeError::Relinquishing { target });
        }
        let bytes = request.size_bytes();
        if bytes > batch_bytes_max {
            return Err(ProposeError::TooLarge { bytes, max: batch_bytes_max });
        }
        if leader.queue.len() as u64 >= queue_max {
            return Err(ProposeError::Busy { queued: leader.queue.len() as u64, max: queue_max });
        }
        let queued_before = leader.queue.len();
        leader.queue.push_back(request);
        leader.queued_bytes += bytes;
        if leader.queued_since.is_none() {
            leader.queued_since = Some(now);
        }
        postcondition!(leader.queue.len() == queued_before + 1);
        self.stats.requests_proposed += 1;
        Ok(())
    }

    /// A linearizable read without a slot: returns the slot the state machine must have
    /// applied before the read is served locally. Needs a valid primary lease.
    pub fn handle_read(&mut self, now: Time) -> Result<Slot, ReadError> {
        self.advance_clock(now);
        let hint = self.primary_hint();
        let Some(leader) = self.leader.as_ref() else {
            return Err(ReadError::NotPrimary { hint });
        };
        if leader.relinquish_to.is_some() {
            return Err(ReadError::NotPrimary { hint: leader.relinquish_to });
        }
        if self.chosen < leader.recovery_end {
            return Err(ReadError::Recovering { recovering_to: leader.recovery_end });
        }
        if now >= self.lease_until() {
            return Err(ReadError::LeaseExpired);
        }
        postcondition!(self.role == Role::Primary && self.chosen >= leader.recovery_end);
        Ok(self.chosen)
    }

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
        let Some(leader) = self.leader.as_ref() else {
            return Err(RelinquishError::NotPrimary { hint });
        };
        let live_since = now.0.saturating_sub(self.config.election_delay_min_ms * 1000);
        let target = match target {
            Some(target) => {
                if target == self.config.node || !self.configuration.contains(target) {
                    return Err(RelinquishError::NotAMember {
                        target,
                        configuration: self.configuration.number,
                    });
                }
                target
            }
            None => {
                let best = self
                    .configuration
                    .members
                    .iter()
                    .zip(&leader.peers)
                    .filter(|(&m, p)| m != self.config.node && p.heard_at.is_some_and(|t| t.0 >= live_since))
                    .max_by_key(|(&m, p)| (p.chosen, std::cmp::Reverse(m)));
                match best {
                    Some((&m, _)) => m,
                    None => return Err(RelinquishError::NoLiveTarget),
                }
            }
        };
        let leader = self.leader.as_mut().expect("checked above");
        leader.relinquish_to = Some(target);
        leader.queued_bytes = 0;
        leader.queued_since = None;
        let dropped: Vec<_> = leader.queue.drain(..).map(|r| r.id).collect();
        if !dropped.is_empty() {
            self.actions.push_back(Action::RequestsDropped { ids: dropped, primary: Some(target) });
        }
        self.set_timer(Timer::Relinquish, now.plus_ms(self.config.election_delay_min_ms));
        self.try_complete_relinquish();
        self.finish();
        Ok(target)
    }

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
        let number = self.configuration.number;
        let Some(leader) = self.leader.as_ref() else {
            return Err(ChangeError::NotPrimary { hint });
        };
        if let Some(target) = leader.relinquish_to {
            return Err(ChangeError::Relinquishing { target });
        }
        if let Some(pending) = &leader.pending_change {
            return Err(ChangeError::InProgress { members: pending.clone() });
        }
        if let Some(slot) = leader.change_slot {
            let members = match self.log.get(&slot).map(|e| &e.proposal.value) {
                Some(Value::Configuration(c)) => c.members.clone(),
                _ => Vec::new(),
            };
            return Err(ChangeError::InProgress { members });
        }
        let invalid = |reason: String| Err(ChangeError::Invalid { members: members.clone(), reason });
        let mut sorted = members.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != members.len() {
            return invalid("a node is named twice".into());
        }
        if sorted.is_empty() || sorted.len() > crate::config::MEMBERS_MAX {
            return invalid(format!("need 1..={} members", crate::config::MEMBERS_MAX));
        }
        if sorted.contains(&NodeId(0)) {
            return invalid("node 0 is reserved".into());
        }
        if sorted == self.configuration.members {
            return invalid(format!("configuration {number} already has exactly these members"));
        }
        if number + 1 >= CONFIGURATION_NUMBER_MAX {
            return invalid(format!("configuration numbers are exhausted at {number}"));
        }
        let leader = self.leader.as_mut().expect("checked above");
        leader.pending_change = Some(sorted);
        self.propose_queued();
        postcondition!(
            self.leader.as_ref().is_none_or(|l| l.pending_change.is_some() || l.change_slot.is_some()),
            "an accepted change waits for room or is in flight"
        );
        self.finish();
        Ok(())
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
            MessageBody::Promise { ballot, accepted, chosen } => {
                self.on_promise(from, ballot, accepted, chosen)
            }
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
            MessageBody::StatusReply { promised, primary, chosen, log_start, configuration } => {
                self.on_status_reply(from, promised, primary, chosen, log_start, configuration)
            }
            MessageBody::Fetch { from: first, to } => self.on_fetch(from, first, to),
            MessageBody::FetchReply { chosen_values, chosen } => {
                self.on_fetch_reply(from, chosen_values, chosen)
            }
            MessageBody::FetchTruncated { checkpoint, log_start } => {
                self.on_fetch_truncated(from, checkpoint, log_start)
            }
            MessageBody::TimeoutNow { ballot } => self.on_timeout_now(from, ballot),
        }
        self.finish();
        Ok(())
    }

    // ----- Completions -----

    /// Every persist request with a ticket up to `ticket` is durable.
    pub fn on_persisted(&mut self, now: Time, ticket: u64) {
        self.advance_clock(now);
        precondition!(ticket < self.next_ticket, "ticket {ticket} was never issued");
        if ticket <= self.persisted_ticket {
            return;
        }
        let chosen_before = self.chosen;
        self.persisted_ticket = ticket;
        // Release what waited on the disk.
        while let Some((t, _)) = self.held.front() {
            if *t > ticket {
                break;
            }
            let (t, message) = self.held.pop_front().expect("front exists");
            postcondition!(t <= self.persisted_ticket, "released a message before its write was durable");
            self.push_send(message);
        }
        // Our own votes and promises count now.
        if let Some(candidate) = self.candidate.as_ref() {
            if candidate.phase == CandidatePhase::Prepare && candidate.self_ticket <= ticket {
                self.check_promise_quorum();
            }
        }
        if self.leader.is_some() {
            let self_bit = 1u64 << self.member_index;
            let leader = self.leader.as_mut().expect("checked");
            for flight in leader.in_flight.values_mut() {
                if flight.self_ticket <= ticket {
                    flight.votes |= self_bit;
                }
            }
            self.advance_primary_chosen();
        } else {
            self.advance_learned_chosen();
        }
        postcondition!(self.held.iter().all(|(t, _)| *t > ticket), "everything the write gated is released");
        postcondition!(self.chosen >= chosen_before, "the chosen watermark never goes back");
        self.finish();
    }

    /// The state machine applied every slot up to `slot`.
    pub fn on_applied(&mut self, slot: Slot) {
        precondition!(
            slot <= self.apply_emitted,
            "applied {slot} beyond what was handed out ({})",
            self.apply_emitted
        );
        if slot > self.applied {
            self.applied = slot;
        }
        postcondition!(self.applied <= self.chosen);
        self.finish();
    }

    /// The checkpoint at `slot` is durable: the log may be truncated below it.
    pub fn on_checkpoint_saved(&mut self, slot: Slot) {
        precondition!(
            slot <= self.apply_emitted,
            "checkpoint at {slot} beyond applied {}",
            self.apply_emitted
        );
        if slot <= self.checkpoint {
            return;
        }
        self.checkpoint = slot;
        self.prune_history(slot.next());
        let below = Slot(slot.0.saturating_sub(self.config.log_retain_slots).max(1));
        self.truncate_below(below);
        self.finish();
    }

    /// The state machine was replaced by a checkpoint at `slot` fetched from a peer.
    pub fn on_checkpoint_installed(&mut self, now: Time, slot: Slot, configuration: Configuration) {
        self.advance_clock(now);
        self.checkpoint_fetch_pending = false;
        if slot <= self.applied {
            return;
        }
        // The configuration saved with it governs the slots after it (or a newer one).
        self.enter_configuration(configuration);
        // Slots up to `slot` are chosen somewhere (a checkpoint is only taken of applied,
        // hence chosen, slots), and the state machine now reflects them.
        self.applied = slot;
        // Applies already handed out above the checkpoint stay valid: they follow it.
        self.apply_emitted = self.apply_emitted.max(slot);
        self.checkpoint = slot;
        self.checkpoint_requested = self.checkpoint_requested.max(slot);
        if self.chosen < slot {
            self.chosen = slot;
        }
        if let Some(leader) = self.leader.as_mut() {
            // Elected while the fetch was under way: the slots the checkpoint covers are
            // chosen (our re-proposals of them can only carry the chosen values).
            leader.in_flight.retain(|s, _| *s > slot);
            leader.next_slot = leader.next_slot.max(slot.next());
            postcondition!(leader.in_flight.keys().next().is_none_or(|&s| s == slot.next()));
        }
        self.truncate_below(slot.next());
        // Entries above the checkpoint may now be contiguous with it.
        self.advance_learned_chosen();
        self.request_fetch_if_behind();
        postcondition!(self.applied <= self.chosen);
        self.finish();
    }

    /// The checkpoint requested by `FetchCheckpoint` could not be fetched; catch-up will
    /// try again (possibly from another replica).
    pub fn on_checkpoint_fetch_failed(&mut self, now: Time) {
        self.advance_clock(now);
        self.checkpoint_fetch_pending = false;
        self.finish();
    }

    // ----- Internals: plumbing -----

    fn advance_clock(&mut self, now: Time) {
        precondition!(now >= self.now, "time went backwards: {now} < {}", self.now);
        self.now = self.now.max(now);
    }

    fn set_timer(&mut self, timer: Timer, at: Time) {
        self.timers[timer as usize] = Some(at);
    }

    fn cancel_timer(&mut self, timer: Timer) {
        self.timers[timer as usize] = None;
    }

    fn reset_election_timer(&mut self) {
        let delay = self.rng.between(self.config.election_delay_min_ms, self.config.election_delay_max_ms);
        self.set_timer(Timer::Election, self.now.plus_ms(delay));
    }

    fn message(&self, to: NodeId, body: MessageBody) -> Message {
        Message {
            ring: self.config.ring,
            from: self.config.node,
            to,
            configuration: self.configuration.number,
            body,
        }
    }

    fn push_send(&mut self, message: Message) {
        self.stats.messages_sent += 1;
        self.actions.push_back(Action::Send(message));
    }

    fn send(&mut self, to: NodeId, body: MessageBody) {
        let message = self.message(to, body);
        self.push_send(message);
    }

    /// Sends once every write up to `ticket` is durable.
    fn send_after(&mut self, ticket: u64, to: NodeId, body: MessageBody) {
        let message = self.message(to, body);
        if ticket <= self.persisted_ticket {
            self.push_send(message);
        } else {
            // Keep `held` sorted by ticket so release is a prefix.
            let position = self.held.partition_point(|(t, _)| *t <= ticket);
            self.held.insert(position, (ticket, message));
        }
    }

    fn peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        let me = self.config.node;
        self.configuration.members.iter().copied().filter(move |&m| m != me)
    }

    fn broadcast(&mut self, body: MessageBody) {
        let peers: Vec<NodeId> = self.peers().collect();
        for peer in peers {
            self.send(peer, body.clone());
        }
    }

    fn member_bit(&self, node: NodeId) -> Option<u64> {
        self.configuration.members.iter().position(|&m| m == node).map(|i| 1u64 << i)
    }

    /// Appends to the persist request being built in this step; returns its ticket.
    fn stage(&mut self) -> &mut PersistRequest {
        if self.staged.is_none() {
            let ticket = self.next_ticket;
            self.next_ticket += 1;
            self.staged = Some(PersistRequest { ticket, promise: None, proposals: Vec::new(), chosen: None });
        }
        self.staged.as_mut().expect("just staged")
    }

    fn stage_promise(&mut self, ballot: Ballot) -> u64 {
        assert!(ballot >= self.promised, "promise must never decrease: {} -> {ballot}", self.promised);
        self.promised = ballot;
        self.highest_seen = self.highest_seen.max(ballot);
        let staged = self.stage();
        staged.promise = Some(ballot);
        let ticket = staged.ticket;
        self.promised_ticket = ticket;
        ticket
    }

    /// Records `proposal` in the log; the always-on checks guard the acceptor contract.
    fn stage_proposal(&mut self, proposal: Proposal, chosen: bool) -> u64 {
        if let Some(existing) = self.log.get(&proposal.slot) {
            assert!(
                existing.proposal.ballot != proposal.ballot || existing.proposal.value == proposal.value,
                "second value for ballot {} slot {}",
                proposal.ballot,
                proposal.slot
            );
            assert!(
                !existing.chosen || existing.proposal.value == proposal.value,
                "chosen value of slot {} would change",
                proposal.slot
            );
        }
        let staged = self.stage();
        staged.proposals.push(proposal.clone());
        let ticket = staged.ticket;
        let slot = proposal.slot;
        self.log.insert(slot, Entry { proposal, ticket, chosen });
        ticket
    }

    /// Flushes the step's persist request, then checks invariants.
    fn finish(&mut self) {
        self.flush_staged();
        self.check_invariants();
    }

    /// Emits the persist request being built (with the chosen hint, if it moved); what is
    /// staged afterwards goes into a later request, written after this one.
    fn flush_staged(&mut self) {
        if let Some(mut staged) = self.staged.take() {
            if self.chosen > self.chosen_persisted_hint {
                staged.chosen = Some(self.chosen);
                self.chosen_persisted_hint = self.chosen;
            }
            self.stats.persists += 1;
            // Persists go before any send they gate, which are held anyway.
            self.actions.push_back(Action::Persist(staged));
        }
    }

    fn is_durable(&self, entry: &Entry) -> bool {
        entry.ticket <= self.persisted_ticket
    }

    fn lease_until(&self) -> Time {
        let Some(leader) = self.leader.as_ref() else { return Time(0) };
        let mut echoes: Vec<u64> = leader.peers.iter().map(|p| p.echoed).collect();
        echoes[self.member_index] = self.now.0;
        let start = quorum::quorum_watermark(&mut echoes, self.configuration.quorum()).unwrap_or(0);
        if start == 0 {
            return Time(0);
        }
        Time(start).plus_us(self.config.lease_us())
    }

    /// Whether this replica must refuse to help elect anyone but the primary it heard.
    fn in_lease_guard(&self, transfer_from: Option<Ballot>) -> bool {
        let window = self.config.election_delay_min_ms * 1000;
        if self.now.since(self.boot_at) < window {
            return true;
        }
        if let (Some(from), Some((_, ballot))) = (transfer_from, self.primary) {
            if from == ballot {
                return false;
            }
        }
        if self.leader.is_some() {
            return self.leader.as_ref().is_some_and(|l| l.relinquish_to.is_none());
        }
        self.primary_heard_at.is_some_and(|t| self.now.since(t) < window)
    }

    fn validate(&self, message: &Message) -> Result<(), MessageError> {
        if message.ring != self.config.ring {
            return Err(MessageError::WrongRing { expected: self.config.ring.0, found: message.ring.0 });
        }
        if message.to != self.config.node {
            return Err(MessageError::WrongReceiver { expected: self.config.node, found: message.to });
        }
        if message.from == self.config.node {
            return Err(MessageError::NotAMember {
                from: message.from,
                configuration: self.configuration.number,
            });
        }
        // Catch-up traffic crosses configurations: a replica behind (or removed, or joining)
        // asks anyone the transport admits, and learns the newer configuration from the
        // answer. Everything else is between members of one configuration.
        let catch_up = matches!(
            message.body,
            MessageBody::StatusQuery
                | MessageBody::StatusReply { .. }
                | MessageBody::Fetch { .. }
                | MessageBody::FetchReply { .. }
                | MessageBody::FetchTruncated { .. }
        );
        if !catch_up {
            if message.configuration != self.configuration.number {
                return Err(MessageError::WrongConfiguration {
                    expected: self.configuration.number,
                    found: message.configuration,
                });
            }
            if !self.configuration.contains(message.from) {
                return Err(MessageError::NotAMember {
                    from: message.from,
                    configuration: self.configuration.number,
                });
            }
        }
        let malformed = |reason: String| {
            Err(MessageError::Malformed { kind: message.body.kind(), from: message.from, reason })
        };
        match &message.body {
            MessageBody::PreVote { ballot, .. }
            | MessageBody::Prepare { ballot, .. }
            | MessageBody::Accept { ballot, .. }
            | MessageBody::Heartbeat { ballot, .. }
            | MessageBody::TimeoutNow { ballot }
                if ballot.node != message.from =>
            {
                malformed(format!("ballot {ballot} is not owned by the sender"))
            }
            MessageBody::PreVote { ballot, .. } | MessageBody::Prepare { ballot, .. }
                if (self.configuration.number > 1 && ballot.round <= self.configuration.round_floor())
                    || ballot.round >= self.round_ceiling() =>
            {
                malformed(format!(
                    "ballot {ballot} is outside configuration {}'s rounds",
                    self.configuration.number
                ))
            }
            MessageBody::Accept { slot, .. } | MessageBody::Accepted { slot, .. } if *slot == Slot::ZERO => {
                malformed("slot 0".into())
            }
            MessageBody::Accept { slot, value: Value::Configuration(next), .. } => {
                if next.number != self.configuration.number + 1 || next.first_slot != slot.next() {
                    return malformed(format!(
                        "configuration {} starting at {} proposed at slot {slot} in configuration {}",
                        next.number, next.first_slot, self.configuration.number
                    ));
                }
                match configuration_problem(next) {
                    Some(problem) => malformed(problem),
                    None => Ok(()),
                }
            }
            MessageBody::StatusReply { configuration, .. } => match configuration_problem(configuration) {
                Some(problem) if configuration.number > self.configuration.number => malformed(problem),
                _ => Ok(()),
            },
            MessageBody::Prepare { first_unchosen, .. } if *first_unchosen == Slot::ZERO => {
                malformed("first_unchosen 0".into())
            }
            MessageBody::Promise { ballot, accepted, .. } => {
                if accepted.len() as u64 > self.config.promise_slots_max {
                    return malformed(format!(
                        "{} proposals, more than promise_slots_max {}",
                        accepted.len(),
                        self.config.promise_slots_max
                    ));
                }
                let _ = ballot;
                if accepted.iter().any(|p| p.slot == Slot::ZERO) {
                    return malformed("proposal for slot 0".into());
                }
                if accepted.windows(2).any(|w| w[0].slot >= w[1].slot) {
                    return malformed("proposals not in increasing slot order".into());
                }
                Ok(())
            }
            MessageBody::Fetch { from, to } if from > to || *from == Slot::ZERO => {
                malformed(format!("empty or invalid range {from}..={to}"))
            }
            MessageBody::FetchReply { chosen_values, chosen } => {
                if chosen_values.windows(2).any(|w| w[1].slot != w[0].slot.next()) {
                    return malformed("chosen values not contiguous".into());
                }
                if chosen_values.last().is_some_and(|p| p.slot > *chosen) {
                    return malformed(format!("value above the sender's chosen watermark {chosen}"));
                }
                if chosen_values.iter().any(|p| p.slot == Slot::ZERO) {
                    return malformed("value for slot 0".into());
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    // ----- Internals: timers -----

    fn on_timer(&mut self, timer: Timer) {
        match timer {
            Timer::Heartbeat => self.on_heartbeat_timer(),
            Timer::Election => self.on_election_timer(),
            Timer::CheckQuorum => self.on_check_quorum_timer(),
            Timer::BatchLinger => self.propose_queued(),
            Timer::CatchUp => self.on_catch_up_timer(),
            Timer::Relinquish => self.on_relinquish_timer(),
        }
    }

    fn on_heartbeat_timer(&mut self) {
        let Some(leader) = self.leader.as_ref() else { return };
        let ballot = leader.ballot;
        let body = MessageBody::Heartbeat { ballot, chosen: self.chosen, sent_at: self.now.0 };
        self.broadcast(body);
        // Retransmit accepts the peers have not answered within a heartbeat interval.
        let interval_us = self.config.heartbeat_interval_ms * 1000;
        let now = self.now;
        let chosen = self.chosen;
        let members = self.configuration.members.clone();
        let me = self.member_index;
        let live_since = now.0.saturating_sub(self.config.election_delay_min_ms * 1000);
        let mut resend: Vec<(NodeId, MessageBody)> = Vec::new();
        let leader = self.leader.as_mut().expect("checked");
        for (slot, flight) in leader.in_flight.iter_mut() {
            if now.since(flight.sent_at) < interval_us {
                continue;
            }
            flight.sent_at = now;
            let Some(entry) = self.log.get(slot) else { continue };
            for (i, &member) in members.iter().enumerate() {
                let live = leader.peers[i].heard_at.is_some_and(|t| t.0 >= live_since);
                if i != me && flight.votes & (1 << i) == 0 && live {
                    resend.push((
                        member,
                        MessageBody::Accept {
                            ballot,
                            slot: *slot,
                            value: entry.proposal.value.clone(),
                            chosen,
                        },
                    ));
                }
            }
        }
        self.stats.accepts_retransmitted += resend.len() as u64;
        for (to, body) in resend {
            self.send(to, body);
        }
        self.set_timer(Timer::Heartbeat, now.plus_ms(self.config.heartbeat_interval_ms));
    }

    fn on_check_quorum_timer(&mut self) {
        let Some(leader) = self.leader.as_ref() else { return };
        let window = self.config.election_delay_min_ms * 1000;
        let heard = leader
            .peers
            .iter()
            .enumerate()
            .filter(|(i, p)| {
                *i == self.member_index || p.heard_at.is_some_and(|t| self.now.since(t) < window)
            })
            .count();
        if heard < self.configuration.quorum() {
            self.step_down(None);
            return;
        }
        self.set_timer(Timer::CheckQuorum, self.now.plus_ms(self.config.election_delay_min_ms));
    }

    fn on_election_timer(&mut self) {
        self.reset_election_timer();
        if self.leader.is_some() {
            return;
        }
        if !self.may_campaign() {
            return;
        }
        self.start_pre_vote();
    }

    fn on_catch_up_timer(&mut self) {
        if !self.is_member
            || self.chosen.next() < self.configuration.first_slot
            || self.knows_of_newer_configuration()
        {
            // Joining, removed, or behind the start of the configuration in force: ask
            // the replicas of every configuration known; one of them is further on (a
            // newer configuration may name this replica), and answers let it fetch.
            let known: Vec<NodeId> = self.known_nodes().collect();
            for node in known {
                self.send(node, MessageBody::StatusQuery);
            }
        } else if self.primary.is_none() && self.leader.is_none() {
            self.broadcast(MessageBody::StatusQuery);
        }
        self.request_fetch_if_behind();
        self.set_timer(Timer::CatchUp, self.now.plus_ms(self.config.heartbeat_interval_ms * 4));
    }

    fn on_relinquish_timer(&mut self) {
        // The in-flight slots did not drain in time: stay primary and take requests again.
        if let Some(leader) = self.leader.as_mut() {
            leader.relinquish_to = None;
        }
    }

    // ----- Internals: election -----

    /// Whether this replica may stand for election: not vetoed, a member of the
    /// configuration in force, and caught up to the configuration's first slot (phase 1 of
    /// a configuration never covers slots decided under an earlier one).
    fn may_campaign(&self) -> bool {
        self.can_become_primary
            && self.is_member
            && self.chosen.next() >= self.configuration.first_slot
            && !self.knows_of_newer_configuration()
    }

    /// The highest round a ballot of the configuration in force may have.
    fn round_ceiling(&self) -> u64 {
        self.configuration.number.saturating_mul(1 << crate::types::CONFIGURATION_ROUND_BITS)
    }

    /// Whether this replica promised, or heard of, a ballot of a later configuration: that
    /// configuration was entered, so its own has ended, and it must catch up rather than
    /// campaign (a candidacy keeps its ballot within its configuration's rounds).
    fn knows_of_newer_configuration(&self) -> bool {
        let ceiling = self.round_ceiling();
        self.promised.round >= ceiling || self.highest_seen.round >= ceiling
    }

    /// Every other node named by a configuration this replica knows, or given as a contact.
    fn known_nodes(&self) -> impl Iterator<Item = NodeId> {
        let me = self.config.node;
        let mut nodes: Vec<NodeId> = self
            .history
            .iter()
            .flat_map(|c| c.members.iter().copied())
            .chain(self.config.members.iter().copied())
            .filter(|&n| n != me)
            .collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes.into_iter()
    }

    /// The ballot of a new candidacy: above every ballot seen, and above the round floor
    /// of the configuration in force (so above every ballot of earlier configurations).
    fn campaign_ballot(&self) -> Ballot {
        let next = self.highest_seen.max(self.promised).successor_for(self.config.node);
        let floor = self.configuration.round_floor();
        if next.round <= floor {
            Ballot::new(floor + 1, self.config.node)
        } else {
            next
        }
    }

    fn start_pre_vote(&mut self) {
        precondition!(self.leader.is_none());
        precondition!(self.is_member, "only members campaign");
        let ballot = self.campaign_ballot();
        self.stats.elections_started += 1;
        let first_unchosen = self.chosen.next();
        self.candidate = Some(CandidateState {
            ballot,
            phase: CandidatePhase::PreVote,
            granted: 1 << self.member_index,
            promises: vec![None; self.configuration.members.len()],
            promised_chosen: self.chosen,
            self_ticket: u64::MAX,
            first_unchosen,
        });
        self.set_role(Role::Candidate, ballot, None);
        self.broadcast(MessageBody::PreVote { ballot, chosen: self.chosen });
        self.check_pre_vote_quorum();
    }

    fn check_pre_vote_quorum(&mut self) {
        let Some(candidate) = self.candidate.as_ref() else { return };
        if candidate.phase == CandidatePhase::PreVote
            && candidate.granted.count_ones() as usize >= self.configuration.quorum()
        {
            self.start_prepare(None);
        }
    }

    fn start_prepare(&mut self, transfer_from: Option<Ballot>) {
        precondition!(self.is_member, "only members campaign");
        let ballot = match self.candidate.as_ref() {
            Some(c) if c.ballot > self.promised => c.ballot,
            _ => self.campaign_ballot(),
        };
        invariant!(
            ballot.round > self.configuration.round_floor(),
            "a candidacy outranks older configurations"
        );
        let first_unchosen = self.chosen.next();
        if self.candidate.is_none() {
            self.stats.elections_started += 1;
        }
        let ticket = self.stage_promise(ballot);
        let own: Vec<Proposal> = self.log.range(first_unchosen..).map(|(_, e)| e.proposal.clone()).collect();
        let mut promises = vec![None; self.configuration.members.len()];
        promises[self.member_index] = Some(own);
        self.candidate = Some(CandidateState {
            ballot,
            phase: CandidatePhase::Prepare,
            granted: 0,
            promises,
            promised_chosen: self.chosen,
            self_ticket: ticket,
            first_unchosen,
        });
        self.primary = None;
        self.primary_heard_at = None;
        self.set_role(Role::Candidate, ballot, None);
        self.broadcast(MessageBody::Prepare { ballot, first_unchosen, transfer_from });
        self.reset_election_timer();
        self.check_promise_quorum();
    }

    fn on_pre_vote(&mut self, from: NodeId, ballot: Ballot, chosen: Slot) {
        precondition!(ballot.node == from, "validated: the candidate owns the ballot");
        let promised_before = self.promised;
        let sent_before = self.stats.messages_sent;
        let reason = if ballot <= self.promised {
            Some(RejectReason::Promised)
        } else if self.in_lease_guard(None) {
            Some(RejectReason::PrimaryAlive)
        } else if self.is_behind(chosen.next()) || chosen.next() < self.configuration.first_slot {
            Some(RejectReason::Behind { chosen: self.chosen })
        } else {
            None
        };
        match reason {
            Some(reason) => {
                let promised = self.promised;
                self.send(from, MessageBody::Reject { ballot, promised, reason });
            }
            None => self.send(from, MessageBody::PreVoteGranted { ballot }),
        }
        postcondition!(self.promised == promised_before, "a pre-vote changes no promise");
        postcondition!(self.staged.is_none(), "a pre-vote writes nothing");
        postcondition!(self.stats.messages_sent == sent_before + 1, "a pre-vote gets exactly one answer");
    }

    /// Whether a candidate whose first unchosen slot is `first_unchosen` cannot be
    /// recovered through one promise from this acceptor.
    fn is_behind(&self, first_unchosen: Slot) -> bool {
        if first_unchosen < self.log_start {
            return true;
        }
        // Chosen values are what the candidate could fetch instead; the unchosen tail must
        // travel in the promise whatever its size (config keeps it within half a message).
        let mut held = 0u64;
        let mut chosen_bytes = 0u64;
        for (slot, entry) in self.log.range(first_unchosen..) {
            held += 1;
            if *slot <= self.chosen {
                chosen_bytes += entry.proposal.value.size_bytes();
            }
            if held > self.config.promise_slots_max || chosen_bytes > self.config.message_bytes_max / 2 {
                return true;
            }
        }
        false
    }

    fn on_pre_vote_granted(&mut self, from: NodeId, ballot: Ballot) {
        let Some(bit) = self.member_bit(from) else { return };
        let Some(candidate) = self.candidate.as_mut() else { return };
        if candidate.ballot != ballot || candidate.phase != CandidatePhase::PreVote {
            return;
        }
        let granted_before = candidate.granted;
        candidate.granted |= bit;
        postcondition!(candidate.granted & granted_before == granted_before, "grants are never lost");
        self.check_pre_vote_quorum();
        postcondition!(
            self.role != Role::Primary || self.leader.as_ref().is_some_and(|l| l.ballot == self.promised),
            "a pre-vote alone never makes a primary without a promise"
        );
    }

    fn on_prepare(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        first_unchosen: Slot,
        transfer_from: Option<Ballot>,
    ) {
        precondition!(ballot.node == from, "validated: the candidate owns the ballot");
        precondition!(first_unchosen > Slot::ZERO, "validated: no slot 0");
        self.highest_seen = self.highest_seen.max(ballot);
        let reason = if ballot < self.promised {
            Some(RejectReason::Promised)
        } else if ballot == self.promised && self.primary.is_some_and(|(_, b)| b == ballot) {
            // Already following this ballot's primary: a stale duplicate.
            None
        } else if self.in_lease_guard(transfer_from) {
            Some(RejectReason::PrimaryAlive)
        } else if self.is_behind(first_unchosen) || first_unchosen < self.configuration.first_slot {
            Some(RejectReason::Behind { chosen: self.chosen })
        } else {
            None
        };
        if let Some(reason) = reason {
            let promised = self.promised;
            self.send(from, MessageBody::Reject { ballot, promised, reason });
            return;
        }
        let before = self.promised;
        let ticket = if ballot > self.promised {
            // A higher ballot: whoever we were, we now follow the candidate's round.
            if self.leader.is_some() || self.candidate.is_some() {
                self.step_down(None);
            }
            self.stage_promise(ballot)
        } else {
            self.promised_ticket
        };
        postcondition!(self.promised >= before, "promise decreased");
        postcondition!(self.promised == ballot);
        let accepted: Vec<Proposal> =
            self.log.range(first_unchosen..).map(|(_, e)| e.proposal.clone()).collect();
        let chosen = self.chosen;
        self.send_after(ticket, from, MessageBody::Promise { ballot, accepted, chosen });
        postcondition!(
            ticket <= self.persisted_ticket || self.held.iter().any(|(t, _)| *t == ticket),
            "a promise is answered only once it is durable"
        );
        // Give the candidate time to finish before campaigning ourselves.
        self.reset_election_timer();
    }

    fn on_promise(&mut self, from: NodeId, ballot: Ballot, accepted: Vec<Proposal>, chosen: Slot) {
        let Some(index) = self.configuration.members.iter().position(|&m| m == from) else { return };
        let Some(candidate) = self.candidate.as_mut() else { return };
        if candidate.ballot != ballot || candidate.phase != CandidatePhase::Prepare {
            return;
        }
        if accepted.first().is_some_and(|p| p.slot < candidate.first_unchosen) {
            return;
        }
        precondition!(accepted.iter().all(|p| p.slot >= candidate.first_unchosen), "checked above");
        let promises_before = candidate.promises.iter().flatten().count();
        candidate.promised_chosen = candidate.promised_chosen.max(chosen);
        candidate.promises[index] = Some(accepted);
        postcondition!(
            candidate.promises.iter().flatten().count() >= promises_before,
            "promises are never lost"
        );
        self.check_promise_quorum();
        postcondition!(
            self.role != Role::Primary || self.promised == ballot,
            "the new primary owns its promise"
        );
    }

    fn check_promise_quorum(&mut self) {
        let Some(candidate) = self.candidate.as_ref() else { return };
        if candidate.phase != CandidatePhase::Prepare {
            return;
        }
        let self_counts = candidate.self_ticket <= self.persisted_ticket;
        let count = candidate
            .promises
            .iter()
            .enumerate()
            .filter(|(i, p)| p.is_some() && (*i != self.member_index || self_counts))
            .count();
        if count >= self.configuration.quorum() {
            self.become_primary();
        }
    }

    fn become_primary(&mut self) {
        let candidate = self.candidate.take().expect("candidate");
        precondition!(candidate.ballot == self.promised, "primary must own its promise");
        let ballot = candidate.ballot;
        // Merge: for each slot, the proposal with the highest ballot among the quorum.
        let mut merged: BTreeMap<Slot, Proposal> = BTreeMap::new();
        for proposals in candidate.promises.iter().flatten() {
            for proposal in proposals {
                match merged.get(&proposal.slot) {
                    Some(existing) if existing.ballot >= proposal.ballot => {}
                    _ => {
                        merged.insert(proposal.slot, proposal.clone());
                    }
                }
            }
        }
        // The candidate may have learned more chosen slots while campaigning.
        let first = candidate.first_unchosen.max(self.chosen.next());
        let mut last = merged.keys().next_back().copied().unwrap_or(first.prev()).max(first.prev());
        // A configuration value ends this configuration at its slot: re-propose up to it
        // and nothing beyond (PROTOCOL.md, "Reconfiguration"). Unless a proposal beyond it
        // carries a higher ballot: its primary saw another value at that slot, so the
        // change was never chosen and the slot is free (it becomes a no-op).
        let mut change_slot = None;
        for slot in (first.0..=last.0).map(Slot) {
            let known_chosen = self.log.get(&slot).is_some_and(|e| e.chosen);
            let (ballot, is_change) = match (merged.get(&slot), self.log.get(&slot)) {
                (_, Some(e)) if e.chosen => {
                    (e.proposal.ballot, matches!(e.proposal.value, Value::Configuration(_)))
                }
                (Some(p), _) => (p.ballot, matches!(p.value, Value::Configuration(_))),
                _ => (Ballot::ZERO, false),
            };
            if !is_change {
                continue;
            }
            let stale = match merged.get(&slot).map(|p| &p.value) {
                // Proposed under an earlier configuration, past that configuration's end:
                // never chosen, and not a change this configuration can make.
                Some(Value::Configuration(c)) if !known_chosen => {
                    c.number != self.configuration.number + 1 || c.first_slot != slot.next()
                }
                _ => false,
            };
            if stale {
                merged.insert(slot, Proposal { ballot, slot, value: Value::Noop });
                continue;
            }
            // Only a proposal of this configuration (a ballot within its rounds) can
            // supersede; one of a later configuration proves the change was chosen.
            let ceiling = self.round_ceiling();
            let superseded = !known_chosen
                && candidate
                    .promises
                    .iter()
                    .flatten()
                    .flatten()
                    .any(|p| p.slot > slot && p.ballot > ballot && p.ballot.round < ceiling);
            if superseded {
                merged.insert(slot, Proposal { ballot, slot, value: Value::Noop });
                continue;
            }
            change_slot = Some(slot);
            last = slot;
            break;
        }
        self.stats.elections_won += 1;
        let mut leader = PrimaryState {
            ballot,
            next_slot: first,
            in_flight: BTreeMap::new(),
            recovery_end: last,
            queue: VecDeque::new(),
            queued_bytes: 0,
            queued_since: None,
            peers: vec![Peer::default(); self.configuration.members.len()],
            relinquish_to: None,
            pending_change: None,
            change_slot,
        };
        for (i, peer) in leader.peers.iter_mut().enumerate() {
            if candidate.promises[i].is_some() {
                peer.heard_at = Some(self.now);
            }
        }
        self.leader = Some(leader);
        self.primary = Some((self.config.node, ballot));
        self.primary_heard_at = Some(self.now);
        self.cancel_timer(Timer::Election);
        self.set_role(Role::Primary, ballot, Some(self.config.node));
        // Re-propose every inherited slot at our ballot; holes become no-ops.
        let mut slot = first;
        while slot <= last {
            let value = match (self.log.get(&slot), merged.remove(&slot)) {
                (Some(e), _) if e.chosen => e.proposal.value.clone(),
                (_, Some(p)) => p.value,
                _ => Value::Noop,
            };
            self.propose_value(value);
            slot = slot.next();
        }
        postcondition!(self.leader.as_ref().is_some_and(|l| l.next_slot == last.next()));
        postcondition!(
            self.leader
                .as_ref()
                .is_some_and(|l| (first.0..=last.0).all(|s| l.in_flight.contains_key(&Slot(s)))),
            "every inherited slot is re-proposed"
        );
        postcondition!(self.role == Role::Primary && self.candidate.is_none());
        self.on_heartbeat_timer();
        self.set_timer(Timer::CheckQuorum, self.now.plus_ms(self.config.election_delay_min_ms));
    }

    fn on_reject(&mut self, from: NodeId, ballot: Ballot, promised: Ballot, reason: RejectReason) {
        let promised_before = self.promised;
        self.reject_inner(from, ballot, promised, reason);
        postcondition!(self.promised == promised_before, "a refusal heard changes no promise");
        postcondition!(
            !(matches!(reason, RejectReason::Promised) && promised > ballot)
                || self.leader.as_ref().is_none_or(|l| l.ballot != ballot),
            "a primary outvoted by a higher promise steps down"
        );
    }

    fn reject_inner(&mut self, from: NodeId, ballot: Ballot, promised: Ballot, reason: RejectReason) {
        self.highest_seen = self.highest_seen.max(promised);
        let ours = self.candidate.as_ref().is_some_and(|c| c.ballot == ballot)
            || self.leader.as_ref().is_some_and(|l| l.ballot == ballot);
        if !ours {
            return;
        }
        match reason {
            RejectReason::Promised if promised > ballot => {
                self.step_down(None);
            }
            RejectReason::Promised | RejectReason::PrimaryAlive => {}
            RejectReason::Behind { chosen } => {
                if self.candidate.is_some() {
                    self.step_down(None);
                    if chosen > self.catch_up_to.0 {
                        self.catch_up_to = (chosen, Some(from));
                    }
                    self.fill_fetch_window(from, chosen);
                }
            }
        }
    }

    fn on_timeout_now(&mut self, from: NodeId, ballot: Ballot) {
        let follows = self.primary.is_some_and(|(node, b)| node == from && b == ballot);
        if !follows || self.leader.is_some() || !self.may_campaign() {
            return;
        }
        self.stats.elections_started += 1;
        self.candidate = None;
        self.start_prepare(Some(ballot));
        postcondition!(self.promised > ballot, "the transfer target campaigns above the old primary");
        postcondition!(self.candidate.as_ref().is_some_and(|c| c.phase == CandidatePhase::Prepare));
    }

    fn try_complete_relinquish(&mut self) {
        let Some(leader) = self.leader.as_ref() else { return };
        let Some(target) = leader.relinquish_to else { return };
        if !leader.in_flight.is_empty() {
            return;
        }
        let ballot = leader.ballot;
        self.send(target, MessageBody::TimeoutNow { ballot });
        self.cancel_timer(Timer::Relinquish);
        self.step_down(Some((target, ballot)));
        // Follow the old ballot until the target's prepare arrives; no lease guard for it.
        self.primary_heard_at = None;
    }

    /// Leaves primary or candidate state and becomes a secondary following `primary`.
    fn step_down(&mut self, primary: Option<(NodeId, Ballot)>) {
        if let Some(leader) = self.leader.take() {
            self.stats.primary_step_downs += 1;
            let change = leader.pending_change.clone().or_else(|| {
                leader.change_slot.and_then(|slot| match self.log.get(&slot).map(|e| &e.proposal.value) {
                    Some(Value::Configuration(c)) => Some(c.members.clone()),
                    _ => None,
                })
            });
            if let Some(members) = change {
                self.actions.push_back(Action::ConfigurationChangeInterrupted {
                    members,
                    primary: primary.map(|(node, _)| node),
                });
            }
            let ids: Vec<_> = leader.queue.into_iter().map(|r| r.id).collect();
            if !ids.is_empty() {
                self.actions
                    .push_back(Action::RequestsDropped { ids, primary: primary.map(|(node, _)| node) });
            }
            self.cancel_timer(Timer::Heartbeat);
            self.cancel_timer(Timer::CheckQuorum);
            self.cancel_timer(Timer::BatchLinger);
            self.cancel_timer(Timer::Relinquish);
        }
        self.candidate = None;
        self.primary = primary;
        self.primary_heard_at = None;
        let ballot = primary.map_or(self.promised, |(_, b)| b);
        self.set_role(Role::Secondary, ballot, primary.map(|(node, _)| node));
        self.reset_election_timer();
        postcondition!(self.leader.is_none() && self.candidate.is_none() && self.role == Role::Secondary);
        postcondition!(self.timers[Timer::Heartbeat as usize].is_none(), "a secondary sends no heartbeats");
    }

    /// Records the role and reports it when role, ballot or primary changed.
    fn set_role(&mut self, role: Role, ballot: Ballot, primary: Option<NodeId>) {
        self.role = role;
        let report = (role, ballot, primary);
        if self.reported_role != Some(report) {
            self.reported_role = Some(report);
            self.actions.push_back(Action::RoleChanged { role, ballot, primary });
        }
    }

    /// A message from the primary of `ballot` (>= our promise): follow it.
    fn follow(&mut self, from: NodeId, ballot: Ballot) {
        precondition!(ballot >= self.promised);
        self.highest_seen = self.highest_seen.max(ballot);
        if self.leader.as_ref().is_some_and(|l| l.ballot < ballot) || self.candidate.is_some() {
            self.step_down(Some((from, ballot)));
        }
        self.primary = Some((from, ballot));
        self.primary_heard_at = Some(self.now);
        self.set_role(Role::Secondary, ballot, Some(from));
        self.reset_election_timer();
        postcondition!(self.leader.is_none(), "following another primary means not leading");
        postcondition!(self.promised <= ballot, "the followed ballot is at least the promise");
    }

    // ----- Internals: phase 2 -----

    fn propose_queued(&mut self) {
        let depth = self.config.pipeline_depth;
        let linger = self.config.batch_linger_us;
        let requests_max = self.config.batch_requests_max as usize;
        let bytes_max = self.config.batch_bytes_max;
        loop {
            let now = self.now;
            let Some(leader) = self.leader.as_mut() else { return };
            if leader.change_slot.is_some() && !self.mutated(Mutation::EnterConfigurationEarly) {
                // Nothing beyond a configuration change until it is chosen: the next slots
                // belong to the new configuration.
                self.cancel_timer(Timer::BatchLinger);
                return;
            }
            let leader = self.leader.as_mut().expect("checked");
            if leader.pending_change.is_some() && leader.relinquish_to.is_none() {
                if leader.in_flight.len() as u64 >= depth {
                    return;
                }
                let members = leader.pending_change.take().expect("checked");
                let slot = leader.next_slot;
                leader.change_slot = Some(slot);
                let next = Configuration::new(self.configuration.number + 1, members, slot.next());
                self.stats.configuration_changes_proposed += 1;
                self.propose_value(Value::Configuration(next.clone()));
                if self.mutated(Mutation::EnterConfigurationEarly) {
                    self.enter_configuration(next);
                }
                return;
            }
            if leader.relinquish_to.is_some() || leader.queue.is_empty() {
                self.cancel_timer(Timer::BatchLinger);
                return;
            }
            if leader.in_flight.len() as u64 >= depth {
                return;
            }
            let full = leader.queue.len() >= requests_max || leader.queued_bytes >= bytes_max;
            let waited = leader.queued_since.is_some_and(|t| now.since(t) >= linger);
            if !full && !waited {
                let at = leader.queued_since.unwrap_or(now).plus_us(linger);
                self.set_timer(Timer::BatchLinger, at);
                return;
            }
            let mut batch = Vec::new();
            let mut bytes = 0u64;
            while let Some(request) = leader.queue.front() {
                let size = request.size_bytes();
                if !batch.is_empty() && (batch.len() >= requests_max || bytes + size > bytes_max) {
                    break;
                }
                bytes += size;
                batch.push(leader.queue.pop_front().expect("front exists"));
            }
            leader.queued_bytes -= bytes;
            leader.queued_since = if leader.queue.is_empty() { None } else { Some(now) };
            postcondition!(!batch.is_empty() && batch.len() <= requests_max);
            postcondition!(bytes <= bytes_max || batch.len() == 1);
            self.propose_value(Value::Batch(batch));
        }
    }

    /// Assigns the next slot to `value` and sends accepts.
    fn propose_value(&mut self, value: Value) {
        let leader = self.leader.as_ref().expect("only the primary proposes");
        let ballot = leader.ballot;
        let slot = leader.next_slot;
        precondition!(ballot == self.promised, "a primary proposes only at its own promise");
        precondition!(slot > self.chosen, "slot {slot} is already chosen here");
        precondition!(!leader.in_flight.contains_key(&slot));
        let proposal = Proposal { ballot, slot, value: value.clone() };
        let ticket = self.stage_proposal(proposal, false);
        #[allow(unused_mut)]
        let mut votes = 0;
        if self.mutated(Mutation::CountVoteBeforePersist) {
            votes = 1 << self.member_index;
        }
        let leader = self.leader.as_mut().expect("checked");
        leader.in_flight.insert(slot, InFlight { votes, self_ticket: ticket, sent_at: self.now });
        leader.next_slot = slot.next();
        self.stats.slots_proposed += 1;
        let chosen = self.chosen;
        self.broadcast(MessageBody::Accept { ballot, slot, value, chosen });
        postcondition!(self.log.get(&slot).is_some_and(|e| e.proposal.ballot == ballot));
    }

    /// The acceptor's phase 2b. The contracts here are the ones the protocol's safety
    /// rests on.
    fn on_accept(&mut self, from: NodeId, ballot: Ballot, slot: Slot, value: Value, chosen: Slot) {
        precondition!(ballot.node == from, "validated: the sender owns the ballot");
        precondition!(slot > Slot::ZERO, "validated: no slot 0");
        precondition!(self.configuration.contains(from), "validated: the sender is a member");
        let honour_promise =
            !(self.mutated(Mutation::AcceptBelowPromise) || self.mutated(Mutation::ForgetPromiseOnRestart));
        precondition!(
            !honour_promise || self.log.values().all(|e| e.chosen || e.proposal.ballot <= self.promised),
            "no accepted ballot above the promise"
        );
        let promised_before = self.promised;
        let chosen_before = self.chosen;
        // What the slot held before, for the postconditions (cloned only with contracts on).
        let held_before = crate::contracts::ENABLED
            .then(|| self.log.get(&slot).map(|e| (e.proposal.clone(), e.chosen)))
            .flatten();
        self.highest_seen = self.highest_seen.max(ballot);
        let below_promise = ballot < self.promised;
        if below_promise && honour_promise {
            // Never accept below the promise.
            self.stats.accepts_refused += 1;
            let promised = self.promised;
            self.send(from, MessageBody::Reject { ballot, promised, reason: RejectReason::Promised });
            postcondition!(self.promised == promised_before, "a refusal changes no promise");
            postcondition!(
                self.log.get(&slot).map(|e| (e.proposal.clone(), e.chosen)) == held_before
                    || !crate::contracts::ENABLED,
                "a refusal changes no accepted proposal"
            );
            return;
        }
        if !below_promise {
            self.follow(from, ballot);
        }
        if slot < self.log_start {
            // Long since chosen and truncated here; nothing to record.
            postcondition!(!self.log.contains_key(&slot), "nothing is held below the log start");
            return;
        }
        if let Some(existing) = self.log.get(&slot) {
            if existing.chosen || slot <= self.chosen {
                // Already chosen here: the primary can only be re-proposing that value.
                if existing.proposal.value == value {
                    let ticket = existing.ticket;
                    self.send_after(ticket, from, MessageBody::Accepted { ballot, slot });
                } else {
                    self.stats.accepts_refused += 1;
                }
                self.learn_chosen(chosen, ballot);
                postcondition!(
                    self.log.get(&slot).map(|e| &e.proposal.value)
                        == held_before.as_ref().map(|h| &h.0.value)
                        || !crate::contracts::ENABLED,
                    "a chosen value never changes"
                );
                return;
            }
            if existing.proposal.ballot == ballot {
                if existing.proposal.value != value {
                    // Never a second value for one (ballot, slot): refuse, never overwrite.
                    self.stats.accepts_refused += 1;
                    postcondition!(
                        self.log.get(&slot).is_some_and(|e| e.proposal.value != value),
                        "the first value for (ballot, slot) stays"
                    );
                    return;
                }
                // A duplicate: idempotent; answer again once the first write is durable.
                let ticket = existing.ticket.max(self.promised_ticket);
                self.send_after(ticket, from, MessageBody::Accepted { ballot, slot });
                self.learn_chosen(chosen, ballot);
                postcondition!(
                    self.log.get(&slot).map(|e| (e.proposal.clone(), e.chosen)) == held_before
                        || self.log.get(&slot).is_some_and(|e| e.chosen)
                        || !crate::contracts::ENABLED,
                    "a duplicate accept changes nothing"
                );
                postcondition!(self.promised == promised_before, "a duplicate accept changes no promise");
                return;
            }
            if existing.proposal.ballot > ballot && honour_promise {
                // Unreachable when ballot >= promise >= every accepted ballot.
                invariant!(
                    false,
                    "accepted ballot {} above promise {}",
                    existing.proposal.ballot,
                    self.promised
                );
                return;
            }
        }
        if ballot > self.promised {
            // Accepting a ballot promises it.
            self.stage_promise(ballot);
        }
        invariant!(
            !honour_promise || ballot == self.promised,
            "accept at {ballot} with promise {}",
            self.promised
        );
        let ticket = self.stage_proposal(Proposal { ballot, slot, value: value.clone() }, false);
        let ticket = ticket.max(self.promised_ticket);
        // Persisted before answered: the Accepted waits for the write's ticket.
        let answer_ticket = if self.mutated(Mutation::CountVoteBeforePersist) { 0 } else { ticket };
        self.send_after(answer_ticket, from, MessageBody::Accepted { ballot, slot });
        postcondition!(self.promised >= promised_before, "promise never decreases");
        postcondition!(
            self.log.get(&slot).is_some_and(|e| e.proposal.ballot == ballot && e.proposal.value == value),
            "the accepted proposal is recorded"
        );
        postcondition!(
            self.staged
                .as_ref()
                .is_some_and(|w| w.proposals.iter().any(|p| p.slot == slot && p.ballot == ballot)),
            "the accepted proposal is in this step's write"
        );
        postcondition!(!honour_promise || self.promised == ballot, "accepting implies promising");
        postcondition!(
            answer_ticket == 0
                || self.held.iter().any(|(t, _)| *t == answer_ticket)
                || answer_ticket <= self.persisted_ticket,
            "the answer waits for its write"
        );
        postcondition!(
            held_before.as_ref().is_none_or(|(p, _)| p.ballot <= ballot) || !honour_promise,
            "an accepted proposal is only replaced by a higher ballot"
        );
        self.learn_chosen(chosen, ballot);
        postcondition!(self.chosen >= chosen_before, "the chosen watermark never goes back");
    }

    fn on_accepted(&mut self, from: NodeId, ballot: Ballot, slot: Slot) {
        let Some(bit) = self.member_bit(from) else { return };
        let index = bit.trailing_zeros() as usize;
        let now = self.now;
        let Some(leader) = self.leader.as_mut() else { return };
        if leader.ballot != ballot {
            return;
        }
        leader.peers[index].heard_at = Some(now);
        let Some(flight) = leader.in_flight.get_mut(&slot) else { return };
        let before = flight.votes;
        flight.votes |= bit;
        postcondition!(flight.votes & before == before, "votes are never lost");
        self.advance_primary_chosen();
    }

    /// Primary: marks slots with a durable quorum chosen, in order.
    fn advance_primary_chosen(&mut self) {
        let quorum = self.configuration.quorum();
        let before = self.chosen;
        let premature = self.mutated(Mutation::CountVoteBeforePersist);
        loop {
            let Some(leader) = self.leader.as_mut() else { return };
            let Some((&slot, flight)) = leader.in_flight.iter().next() else { break };
            // Chosen here means chosen by a quorum and durable here: we apply it next.
            let durable_here = flight.self_ticket <= self.persisted_ticket || premature;
            if (flight.votes.count_ones() as usize) < quorum || !durable_here {
                break;
            }
            invariant!(slot == self.chosen.next(), "in-flight slots start right after chosen");
            leader.in_flight.remove(&slot);
            let entry = self.log.get_mut(&slot).expect("the primary holds what it proposed");
            entry.chosen = true;
            self.chosen = slot;
            self.stats.slots_chosen += 1;
        }
        if self.chosen > before {
            postcondition!(self.chosen > before);
            if self.crossed_configuration(before) {
                // Tell the old configuration the change is chosen before leaving it: its
                // members learn it from the watermark and follow into the new one.
                if let Some(leader) = self.leader.as_ref() {
                    let body =
                        MessageBody::Heartbeat { ballot: leader.ballot, chosen: self.chosen, sent_at: 0 };
                    self.broadcast(body);
                }
                self.absorb_chosen_configurations(before);
            }
            self.emit_applies();
            self.try_complete_relinquish();
            self.propose_queued();
        }
    }

    fn on_heartbeat(&mut self, from: NodeId, ballot: Ballot, chosen: Slot, sent_at: u64) {
        if ballot < self.promised {
            let promised = self.promised;
            self.send(from, MessageBody::Reject { ballot, promised, reason: RejectReason::Promised });
            return;
        }
        precondition!(ballot.node == from, "validated: the primary owns the ballot");
        let promised_before = self.promised;
        let configuration_before = self.configuration.number;
        self.follow(from, ballot);
        self.learn_chosen(chosen, ballot);
        let chosen = self.chosen;
        if self.configuration.number == configuration_before {
            self.send(from, MessageBody::HeartbeatReply { ballot, sent_at, chosen });
        }
        postcondition!(self.promised == promised_before, "a heartbeat changes no promise");
        postcondition!(
            self.primary == Some((from, ballot)) || self.configuration.number > configuration_before,
            "a live primary is followed (unless its watermark ended its configuration)"
        );
    }

    fn on_heartbeat_reply(&mut self, from: NodeId, ballot: Ballot, sent_at: u64, chosen: Slot) {
        let Some(bit) = self.member_bit(from) else { return };
        let now = self.now;
        let Some(leader) = self.leader.as_mut() else { return };
        if leader.ballot != ballot {
            return;
        }
        let peer = &mut leader.peers[bit.trailing_zeros() as usize];
        let echoed_before = peer.echoed;
        peer.heard_at = Some(now);
        // Only echoes of our own past heartbeats extend the lease.
        if sent_at <= now.0 {
            peer.echoed = peer.echoed.max(sent_at);
        }
        peer.chosen = peer.chosen.max(chosen);
        postcondition!(peer.echoed >= echoed_before, "the lease clock never goes back");
        postcondition!(peer.echoed <= now.0, "the lease never starts in the future");
    }

    // ----- Internals: learning and catch-up -----

    /// The primary of `ballot` says every slot up to `chosen` is chosen.
    fn learn_chosen(&mut self, chosen: Slot, ballot: Ballot) {
        if self.leader.is_some() {
            return;
        }
        if ballot > self.remote_chosen.1 || (ballot == self.remote_chosen.1 && chosen > self.remote_chosen.0)
        {
            self.remote_chosen = (
                chosen.max(if ballot == self.remote_chosen.1 { self.remote_chosen.0 } else { Slot::ZERO }),
                ballot,
            );
        }
        self.advance_learned_chosen();
        self.request_fetch_if_behind();
    }

    /// Secondary: a slot is chosen here when it is durable and either known chosen or
    /// accepted at the ballot of the primary whose watermark covers it.
    fn advance_learned_chosen(&mut self) {
        let (watermark, ballot) = self.remote_chosen;
        let before = self.chosen;
        loop {
            let slot = self.chosen.next();
            let Some(entry) = self.log.get(&slot) else { break };
            if entry.ticket > self.persisted_ticket {
                break;
            }
            let chosen = entry.chosen || (slot <= watermark && entry.proposal.ballot == ballot);
            if !chosen {
                break;
            }
            self.log.get_mut(&slot).expect("present").chosen = true;
            self.chosen = slot;
            self.stats.slots_chosen += 1;
        }
        if self.chosen > before {
            self.absorb_chosen_configurations(before);
            self.emit_applies();
        }
    }

    /// The configuration that governs `slot` (as far as this replica's history goes back).
    fn configuration_at(&self, slot: Slot) -> Configuration {
        let found = self.history.iter().rev().find(|c| c.first_slot <= slot);
        invariant!(found.is_some(), "the history reaches back to slot {slot}");
        found.or(self.history.first()).unwrap_or(&self.configuration).clone()
    }

    /// Forgets configurations that ended before `slot`.
    fn prune_history(&mut self, slot: Slot) {
        let keep_from = self.history.iter().rposition(|c| c.first_slot <= slot).unwrap_or(0);
        self.history.drain(..keep_from);
        postcondition!(self.history.last() == Some(&self.configuration), "the current configuration is kept");
    }

    /// Whether a configuration value was chosen in `(before, chosen]`.
    fn crossed_configuration(&self, before: Slot) -> bool {
        self.log
            .range(before.next()..=self.chosen)
            .any(|(_, e)| matches!(e.proposal.value, Value::Configuration(_)))
    }

    /// Enters, in slot order, every newer configuration chosen in `(before, chosen]`.
    fn absorb_chosen_configurations(&mut self, before: Slot) {
        let newer: Vec<Configuration> = self
            .log
            .range(before.next()..=self.chosen)
            .filter_map(|(_, e)| match &e.proposal.value {
                Value::Configuration(c) if c.number > self.configuration.number => Some(c.clone()),
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
    fn enter_configuration(&mut self, configuration: Configuration) {
        if configuration.number <= self.configuration.number {
            return;
        }
        // Write the chosen watermark that ended the old configuration in a request of its
        // own: every promise or accept given in the new configuration is written after it
        // (log stores keep a prefix of what was written, even when a crash tears a
        // request), so a replica that recovers one recovers the configuration too.
        self.stage();
        self.flush_staged();
        let number_before = self.configuration.number;
        let led = self.leader.as_mut().map(|leader| {
            // The change reached its end: chosen, not interrupted.
            leader.change_slot = None;
            leader.ballot
        });
        self.history.push(configuration.clone());
        let index = configuration.members.iter().position(|&m| m == self.config.node);
        self.configuration = configuration;
        self.is_member = index.is_some();
        self.member_index = index.unwrap_or(usize::MAX);
        self.stats.configurations_entered += 1;
        if self.leader.is_some() || self.candidate.is_some() {
            self.step_down(None);
        }
        if let Some((primary, _)) = self.primary {
            if !self.configuration.contains(primary) {
                self.primary = None;
                self.primary_heard_at = None;
            }
        }
        if let Some(ballot) = led {
            if self.may_campaign() {
                self.primary = Some((self.config.node, ballot));
                self.start_prepare(Some(ballot));
            }
        }
        postcondition!(self.configuration.number > number_before, "configurations only move forward");
        postcondition!(self.leader.is_none(), "no primary carries over into a new configuration");
    }

    fn request_fetch_if_behind(&mut self) {
        if self.leader.is_some() || self.checkpoint_fetch_pending {
            return;
        }
        let target = self.remote_chosen.0.max(self.catch_up_to.0);
        if self.fetch_start() > target {
            return;
        }
        let reporter = |b: Ballot| (b != Ballot::ZERO).then_some(b.node);
        let from = match self.primary {
            Some((node, _)) if node != self.config.node => Some(node),
            _ if self.catch_up_to.0 > self.remote_chosen.0 => self.catch_up_to.1,
            _ => reporter(self.remote_chosen.1),
        };
        match from {
            // Any replica that reported the slots can serve them, whatever configuration it
            // is in (catch-up crosses configurations).
            Some(from) if from != self.config.node => self.fill_fetch_window(from, target),
            _ => {}
        }
    }

    /// The first slot above the chosen watermark not already held as a chosen value
    /// (held ones only wait for their write to become durable).
    fn fetch_start(&self) -> Slot {
        let mut slot = self.chosen.next();
        while self.log.get(&slot).is_some_and(|e| e.chosen) {
            slot = slot.next();
        }
        slot
    }

    /// Asks `to` for the slots up to `target` that are neither held as chosen nor covered
    /// by an outstanding fetch, in ranges of up to `fetch_slots_max`, keeping at most
    /// `fetch_window` fetches outstanding. Fetches expire after two heartbeat intervals;
    /// a reply with values, even a short one, ends its fetch, and the gap it left is asked
    /// again.
    fn fill_fetch_window(&mut self, to: NodeId, target: Slot) {
        if to == self.config.node {
            return;
        }
        let now = self.now;
        let start = self.fetch_start();
        // Done (everything asked for is held) or given up (expired).
        self.fetches.retain(|f| f.until > now && f.last >= start);
        let window = self.config.fetch_window as usize;
        let mut cursor = start;
        while self.fetches.len() < window {
            loop {
                if self.log.get(&cursor).is_some_and(|e| e.chosen) {
                    cursor = cursor.next();
                } else if let Some(f) = self.fetches.iter().find(|f| f.first <= cursor && cursor <= f.last) {
                    cursor = f.last.next();
                } else {
                    break;
                }
            }
            if cursor > target {
                break;
            }
            let mut last = Slot(target.0.min(cursor.0.saturating_add(self.config.fetch_slots_max - 1)));
            if let Some(next) = self.fetches.iter().map(|f| f.first).filter(|&first| first > cursor).min() {
                last = last.min(Slot(next.0 - 1));
            }
            self.stats.fetches_sent += 1;
            let until = now.plus_ms(self.config.heartbeat_interval_ms * 2);
            self.fetches.push(PendingFetch { to, first: cursor, last, until });
            self.send(to, MessageBody::Fetch { from: cursor, to: last });
            cursor = last.next();
        }
        postcondition!(self.fetches.len() <= window, "at most fetch_window fetches are outstanding");
        postcondition!(
            self.fetches.iter().enumerate().all(|(i, f)| f.first <= f.last
                && self.fetches[i + 1..].iter().all(|g| g.last < f.first || f.last < g.first)),
            "outstanding fetches ask for non-empty ranges that do not overlap"
        );
    }

    /// A reply from `from` whose first value is at `first` ends the fetch it answers. An
    /// empty reply ends nothing: the peer has no more chosen values yet, and asking again
    /// at once would only repeat the exchange, so the fetch waits out its expiry (and a
    /// duplicated reply finds no fetch to end).
    fn end_fetch(&mut self, from: NodeId, first: Slot) {
        if let Some(index) = self.fetches.iter().position(|f| f.to == from && f.first == first) {
            self.fetches.remove(index);
        }
    }

    fn on_status_query(&mut self, from: NodeId) {
        let body = self.status_reply();
        self.send(from, body);
        postcondition!(self.staged.is_none(), "a status query writes nothing");
    }

    fn status_reply(&self) -> MessageBody {
        MessageBody::StatusReply {
            promised: self.promised,
            primary: self.primary_hint(),
            chosen: self.chosen,
            log_start: self.log_start,
            configuration: self.configuration.clone(),
        }
    }

    /// A message from another configuration: tell a replica behind us where we are, or
    /// ask one ahead of us (at most once per heartbeat interval).
    fn on_other_configuration(&mut self, from: NodeId, ours: u64, theirs: u64) {
        if theirs < ours {
            let body = self.status_reply();
            self.send(from, body);
        } else {
            let interval_us = self.config.heartbeat_interval_ms * 1000;
            if self.configuration_query_at.is_none_or(|at| self.now.since(at) >= interval_us) {
                self.configuration_query_at = Some(self.now);
                self.send(from, MessageBody::StatusQuery);
            }
        }
    }

    fn on_status_reply(
        &mut self,
        from: NodeId,
        promised: Ballot,
        _primary: Option<NodeId>,
        chosen: Slot,
        _log_start: Slot,
        configuration: Configuration,
    ) {
        // A newer configuration is not adopted from hearsay: it is entered only from the
        // chosen log (or a checkpoint), which this replica now fetches from the replier.
        // Entering it earlier would leave the slots before it unknown if the replier lost
        // its own chosen watermark in a crash.
        let _ = configuration;
        self.highest_seen = self.highest_seen.max(promised);
        if self.leader.is_some() || chosen <= self.chosen {
            return;
        }
        if chosen > self.catch_up_to.0 {
            self.catch_up_to = (chosen, Some(from));
        }
        self.fill_fetch_window(from, chosen);
    }

    fn on_fetch(&mut self, from: NodeId, first: Slot, last: Slot) {
        precondition!(first <= last && first > Slot::ZERO, "validated: a non-empty range");
        if first < self.log_start {
            let body = MessageBody::FetchTruncated { checkpoint: self.checkpoint, log_start: self.log_start };
            self.send(from, body);
            return;
        }
        let last =
            Slot(last.0.min(self.chosen.0).min(first.0.saturating_add(self.config.fetch_slots_max - 1)));
        // Contiguous from `first`, bounded in bytes (at least one value: each fits a message).
        let mut chosen_values: Vec<Proposal> = Vec::new();
        let mut bytes = 0u64;
        if first <= last {
            for (_, entry) in self.log.range(first..=last) {
                let size = entry.proposal.value.size_bytes();
                if !chosen_values.is_empty() && bytes + size > self.config.message_bytes_max {
                    break;
                }
                bytes += size;
                chosen_values.push(entry.proposal.clone());
            }
        }
        postcondition!(
            chosen_values.len() <= 1 || bytes <= self.config.message_bytes_max,
            "a fetch reply stays within message_bytes_max"
        );
        postcondition!(chosen_values.iter().all(|p| p.slot <= self.chosen), "only chosen values are served");
        let chosen = self.chosen;
        self.send(from, MessageBody::FetchReply { chosen_values, chosen });
    }

    fn on_fetch_reply(&mut self, from: NodeId, chosen_values: Vec<Proposal>, _chosen: Slot) {
        if let Some(first) = chosen_values.first() {
            self.end_fetch(from, first.slot);
        }
        if self.leader.is_some() {
            // A primary learns chosen slots from its own quorum; a late reply is stale.
            return;
        }
        precondition!(
            chosen_values.windows(2).all(|w| w[1].slot == w[0].slot.next()),
            "validated: contiguous"
        );
        let chosen_before = self.chosen;
        for proposal in chosen_values {
            let slot = proposal.slot;
            if slot <= self.chosen || slot < self.log_start {
                continue;
            }
            match self.log.get_mut(&slot) {
                Some(existing) if existing.proposal.value == proposal.value => {
                    existing.chosen = true;
                }
                Some(existing) => {
                    // A differing value we accepted at a higher ballot than the chosen one
                    // would mean two values were chosen.
                    assert!(
                        !existing.chosen,
                        "slot {slot}: fetched chosen value differs from the chosen value held"
                    );
                    self.stage_proposal(proposal, true);
                }
                None => {
                    self.stage_proposal(proposal, true);
                }
            }
        }
        self.advance_learned_chosen();
        self.request_fetch_if_behind();
        postcondition!(self.chosen >= chosen_before, "the chosen watermark never goes back");
        postcondition!(
            self.log.range(..=self.chosen).all(|(_, e)| e.chosen),
            "every held slot up to the watermark is chosen"
        );
    }

    fn on_fetch_truncated(&mut self, from: NodeId, checkpoint: Slot, _log_start: Slot) {
        self.fetches.clear();
        if checkpoint <= self.applied || self.checkpoint_fetch_pending {
            return;
        }
        self.checkpoint_fetch_pending = true;
        self.actions.push_back(Action::FetchCheckpoint { from, slot: checkpoint });
        postcondition!(checkpoint > self.applied, "only a checkpoint ahead of us is fetched");
    }

    // ----- Internals: apply and checkpoints -----

    fn emit_applies(&mut self) {
        let interval = self.config.checkpoint_interval_slots;
        if self.mutated(Mutation::ApplyOutOfOrder) && self.chosen.0 >= self.apply_emitted.0 + 2 {
            // Hand out the next two slots swapped.
            let a = self.apply_emitted.next();
            let b = a.next();
            for slot in [b, a] {
                let value = self.log[&slot].proposal.value.clone();
                self.actions.push_back(Action::Apply { slot, value });
            }
            self.apply_emitted = b;
            self.stats.slots_applied += 2;
        }
        while self.apply_emitted < self.chosen {
            let slot = self.apply_emitted.next();
            let entry = self.log.get(&slot).expect("chosen slots above the checkpoint are held");
            // The seeded acceptor bugs let a stale accept overwrite an in-flight slot at the
            // primary; the checkers, not this contract, must catch what follows.
            let durable = self.is_durable(entry) || self.durability_bug_seeded();
            invariant!(entry.chosen && durable, "apply only chosen, durable values");
            let value = entry.proposal.value.clone();
            self.actions.push_back(Action::Apply { slot, value });
            self.apply_emitted = slot;
            self.stats.slots_applied += 1;
            if interval > 0 && slot.0 >= self.checkpoint_requested.0 + interval {
                self.checkpoint_requested = slot;
                self.stats.checkpoints_requested += 1;
                // Exactly the configuration in force after the slot: a newer one would leave
                // a replica restarted from it unable to learn the slots in between.
                let configuration = self.configuration_at(slot.next());
                self.actions.push_back(Action::TakeCheckpoint { slot, configuration });
            }
        }
        postcondition!(self.apply_emitted <= self.chosen);
    }

    fn truncate_below(&mut self, below: Slot) {
        if below <= self.log_start {
            return;
        }
        precondition!(below.prev() <= self.chosen, "truncate only chosen slots");
        self.log = self.log.split_off(&below);
        self.log_start = below;
        self.actions.push_back(Action::TruncateLog { below });
        postcondition!(self.log.keys().next().is_none_or(|&s| s >= below));
    }

    /// Whether the seeded bug `mutation` is switched on (never, without the feature).
    #[inline(always)]
    fn mutated(&self, mutation: Mutation) -> bool {
        #[cfg(feature = "mutations")]
        return self.mutation == Some(mutation);
        #[cfg(not(feature = "mutations"))]
        {
            let _ = mutation;
            false
        }
    }

    /// Whether a seeded bug lets a non-durable value be counted as chosen here (directly,
    /// or by a stale accept overwriting a primary's in-flight slot). The contracts that
    /// would stop such a value step aside so the simulator's checkers must catch it.
    fn durability_bug_seeded(&self) -> bool {
        self.mutated(Mutation::CountVoteBeforePersist)
            || self.mutated(Mutation::AcceptBelowPromise)
            || self.mutated(Mutation::ForgetPromiseOnRestart)
    }

    // ----- Invariants -----

    fn check_invariants(&self) {
        if !crate::contracts::ENABLED {
            return;
        }
        invariant!(self.applied <= self.apply_emitted);
        invariant!(self.apply_emitted <= self.chosen, "applied beyond chosen");
        invariant!(self.checkpoint <= self.apply_emitted);
        invariant!(self.persisted_ticket < self.next_ticket);
        invariant!(
            self.held.iter().all(|(t, _)| *t > self.persisted_ticket),
            "a releasable message was held"
        );
        invariant!(self.held.iter().zip(self.held.iter().skip(1)).all(|(a, b)| a.0 <= b.0));
        invariant!(self.promised >= self.highest_seen.min(self.promised));
        let mut expected = self.chosen;
        for (slot, entry) in self.log.range(..=self.chosen).rev() {
            if *slot < self.log_start || *slot > self.chosen {
                break;
            }
            invariant!(
                entry.chosen && (self.is_durable(entry) || self.durability_bug_seeded()),
                "slot {slot} below chosen is not chosen and durable"
            );
            invariant!(*slot == expected || *slot <= self.checkpoint, "hole at {expected} below chosen");
            expected = expected.prev();
        }
        for (slot, entry) in &self.log {
            invariant!(*slot >= self.log_start, "entry {slot} below log start {}", self.log_start);
            invariant!(entry.proposal.slot == *slot);
            // These bugs break this invariant directly; the simulator's checkers must
            // catch their consequences instead.
            if self.mutated(Mutation::AcceptBelowPromise) || self.mutated(Mutation::ForgetPromiseOnRestart) {
                continue;
            }
            invariant!(
                entry.chosen || entry.proposal.ballot <= self.promised,
                "accepted ballot {} above promise {} at slot {slot}",
                entry.proposal.ballot,
                self.promised
            );
        }
        match self.role {
            Role::Primary => {
                let leader = self.leader.as_ref();
                invariant!(leader.is_some() && self.candidate.is_none());
                if let Some(leader) = leader {
                    invariant!(leader.ballot == self.promised, "primary's ballot is its promise");
                    invariant!(leader.next_slot > self.chosen);
                    invariant!(leader.in_flight.keys().all(|&s| s > self.chosen && s < leader.next_slot));
                    invariant!(
                        leader.queue.iter().map(Request::size_bytes).sum::<u64>() == leader.queued_bytes
                    );
                    invariant!(leader.queue.len() as u64 <= self.config.proposal_queue_max);
                }
            }
            Role::Candidate => invariant!(self.candidate.is_some() && self.leader.is_none()),
            Role::Secondary => invariant!(self.candidate.is_none() && self.leader.is_none()),
        }
    }
}
