//! Elections: pre-vote, phase 1 (prepare and promise) on both sides, winning, refusals, and
//! the transitions between roles (stepping down, following a primary). Also the two timers
//! that start and end a primary's term: the election timer and the quorum check.

use crate::action::Action;
use crate::message::{MessageBody, RejectReason};
use crate::types::{Ballot, NodeId, Slot};

use super::exclusive::ExclusiveQueue;
use super::mutation::Mutation;
use super::progress::Progress;
use super::role::{CandidatePhase, CandidateState, KnownPrimary, PrimaryState, RoleState};
use super::takeover;
use super::{Replica, Timer};

impl Replica {
    /// Whether this replica may stand for election: not vetoed, a member of the
    /// configuration in force, and caught up to the configuration's first slot (phase 1 of
    /// a configuration never covers slots decided under an earlier one).
    pub(super) fn may_campaign(&self) -> bool {
        self.can_become_primary
            && self.membership.is_member()
            && self.log.chosen().next() >= self.membership.configuration.first_slot
            && !self.knows_of_newer_configuration()
    }

    /// The ballot of a new candidacy: above every ballot seen, and above the round floor
    /// of the configuration in force (so above every ballot of earlier configurations).
    fn campaign_ballot(&self) -> Ballot {
        let next = self.highest_seen.max(self.promised).successor_for(self.config.node);
        let floor = self.membership.configuration.round_floor();
        if next.round <= floor && !self.mutated(Mutation::SkipRoundFloor) {
            Ballot::new(floor + 1, self.config.node)
        } else {
            next
        }
    }

    /// This replica's index among the members, for a candidacy.
    fn candidate_index(&self) -> usize {
        precondition!(self.membership.is_member(), "only members campaign");
        self.membership.member_index().unwrap_or(usize::MAX)
    }

    pub(super) fn on_election_timer(&mut self) {
        self.reset_election_timer();
        if self.role.is_primary() || !self.may_campaign() {
            return;
        }
        self.start_pre_vote();
    }

    /// Primary: steps down unless a quorum was heard from within the election delay.
    pub(super) fn on_check_quorum_timer(&mut self) {
        let Some(primary) = self.role.primary() else { return };
        let heard = primary.progress.heard_within(self.now, self.config.election_delay_min());
        if heard < self.membership.configuration.quorum() {
            self.step_down(None);
            return;
        }
        self.timers.set(Timer::CheckQuorum, self.now.plus(self.config.election_delay_min()));
    }

    fn start_pre_vote(&mut self) {
        let me = self.candidate_index();
        let ballot = self.campaign_ballot();
        self.stats.elections_started += 1;
        let chosen = self.log.chosen();
        self.role = RoleState::Candidate(CandidateState {
            ballot,
            phase: CandidatePhase::PreVote,
            me,
            granted: 1 << me,
            promises: vec![None; self.membership.configuration.members.len()],
            self_ticket: u64::MAX,
            first_unchosen: chosen.next(),
        });
        self.report_role(ballot, None);
        self.broadcast(MessageBody::PreVote { ballot, chosen });
        self.check_pre_vote_quorum();
    }

    fn check_pre_vote_quorum(&mut self) {
        let Some(candidate) = self.role.candidate() else { return };
        if candidate.phase == CandidatePhase::PreVote
            && candidate.granted.count_ones() as usize >= self.membership.configuration.quorum()
        {
            self.start_prepare(None);
        }
    }

    /// Phase 1: promises its own ballot durably and asks the members for theirs.
    pub(super) fn start_prepare(&mut self, transfer_from: Option<Ballot>) {
        let me = self.candidate_index();
        let ballot = match self.role.candidate() {
            Some(c) if c.ballot > self.promised => c.ballot,
            _ => self.campaign_ballot(),
        };
        invariant!(
            ballot.round > self.membership.configuration.round_floor()
                || self.mutated(Mutation::SkipRoundFloor),
            "a candidacy outranks older configurations"
        );
        let first_unchosen = self.log.chosen().next();
        if self.role.candidate().is_none() {
            self.stats.elections_started += 1;
        }
        let ticket = self.stage_promise(ballot);
        let mut promises = vec![None; self.membership.configuration.members.len()];
        promises[me] = Some(self.log.proposals_from(first_unchosen));
        self.role = RoleState::Candidate(CandidateState {
            ballot,
            phase: CandidatePhase::Prepare,
            me,
            granted: 0,
            promises,
            self_ticket: ticket,
            first_unchosen,
        });
        self.primary = None;
        self.primary_heard_at = None;
        self.report_role(ballot, None);
        self.broadcast(MessageBody::Prepare { ballot, first_unchosen, transfer_from });
        self.reset_election_timer();
        self.check_promise_quorum();
    }

    pub(super) fn on_pre_vote(&mut self, from: NodeId, ballot: Ballot, chosen: Slot) {
        precondition!(ballot.node == from, "validated: the candidate owns the ballot");
        let reason = if ballot <= self.promised {
            Some(RejectReason::Promised)
        } else if self.in_lease_guard(None) {
            Some(RejectReason::PrimaryAlive)
        } else if self.is_behind(chosen.next()) || chosen.next() < self.membership.configuration.first_slot {
            Some(RejectReason::Behind { chosen: self.log.chosen() })
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
    }

    /// Whether a candidate whose first unchosen slot is `first_unchosen` cannot be
    /// recovered through one promise from this acceptor.
    fn is_behind(&self, first_unchosen: Slot) -> bool {
        if first_unchosen < self.log.start() {
            return true;
        }
        // Chosen values are what the candidate could fetch instead; the unchosen tail must
        // travel in the promise whatever its size (config keeps it within half a message).
        let mut held = 0u64;
        let mut chosen_bytes = 0u64;
        for (slot, entry) in self.log.range(first_unchosen..) {
            held += 1;
            if *slot <= self.log.chosen() {
                chosen_bytes += entry.proposal.value.size_bytes();
            }
            if held > self.config.promise_slots_max || chosen_bytes > self.config.message_bytes_max / 2 {
                return true;
            }
        }
        false
    }

    /// Whether this replica must refuse to help elect anyone but the primary it heard.
    fn in_lease_guard(&self, transfer_from: Option<Ballot>) -> bool {
        let window = self.guard;
        if self.now.since(self.boot_at) < window {
            return true;
        }
        if let (Some(from), Some(primary)) = (transfer_from, self.primary) {
            if from == primary.ballot {
                return false;
            }
        }
        if let Some(primary) = self.role.primary() {
            return primary.relinquish_to.is_none();
        }
        self.primary_heard_at.is_some_and(|t| self.now.since(t) < window)
    }

    pub(super) fn on_pre_vote_granted(&mut self, from: NodeId, ballot: Ballot) {
        let Some(index) = self.membership.index_of(from) else { return };
        let Some(candidate) = self.role.candidate_mut() else { return };
        if candidate.ballot != ballot || candidate.phase != CandidatePhase::PreVote {
            return;
        }
        candidate.granted |= 1 << index;
        self.check_pre_vote_quorum();
    }

    /// The acceptor's phase 1b: promise durably, then answer with what it accepted.
    pub(super) fn on_prepare(
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
        } else if ballot == self.promised && self.primary.is_some_and(|p| p.ballot == ballot) {
            // Already following this ballot's primary: a stale duplicate.
            None
        } else if self.in_lease_guard(transfer_from) {
            Some(RejectReason::PrimaryAlive)
        } else if self.is_behind(first_unchosen) || first_unchosen < self.membership.configuration.first_slot
        {
            Some(RejectReason::Behind { chosen: self.log.chosen() })
        } else {
            None
        };
        if let Some(reason) = reason {
            let promised = self.promised;
            self.send(from, MessageBody::Reject { ballot, promised, reason });
            return;
        }
        let ticket = if ballot > self.promised {
            // A higher ballot: whoever we were, we now follow the candidate's round.
            if !matches!(self.role, RoleState::Secondary) {
                self.step_down(None);
            }
            self.stage_promise(ballot)
        } else {
            self.promised_ticket
        };
        let accepted = self.log.proposals_from(first_unchosen);
        self.send_after(ticket, from, MessageBody::Promise { ballot, accepted });
        postcondition!(
            self.persistence.is_durable(ticket) || self.persistence.is_held(ticket),
            "a promise is answered only once it is durable"
        );
        // Give the candidate time to finish before campaigning ourselves.
        self.reset_election_timer();
    }

    pub(super) fn on_promise(&mut self, from: NodeId, ballot: Ballot, accepted: Vec<crate::types::Proposal>) {
        let Some(index) = self.membership.index_of(from) else { return };
        let Some(candidate) = self.role.candidate_mut() else { return };
        if candidate.ballot != ballot || candidate.phase != CandidatePhase::Prepare {
            return;
        }
        // Validation keeps the proposals in increasing slot order: the first is the lowest.
        if accepted.first().is_some_and(|p| p.slot < candidate.first_unchosen) {
            return;
        }
        candidate.promises[index] = Some(accepted);
        self.check_promise_quorum();
    }

    /// Wins once a quorum promised, its own promise counting only once durable.
    pub(super) fn check_promise_quorum(&mut self) {
        let Some(candidate) = self.role.candidate() else { return };
        if candidate.phase != CandidatePhase::Prepare {
            return;
        }
        let self_counts = self.persistence.is_durable(candidate.self_ticket);
        let count = candidate
            .promises
            .iter()
            .enumerate()
            .filter(|(i, p)| p.is_some() && (*i != candidate.me || self_counts))
            .count();
        if count >= self.membership.configuration.quorum() {
            self.become_primary();
        }
    }

    /// Takes office: re-proposes every inherited slot at its own ballot (holes become
    /// no-ops), then opens the pipeline.
    fn become_primary(&mut self) {
        let RoleState::Candidate(candidate) = std::mem::replace(&mut self.role, RoleState::Secondary) else {
            unreachable!("only a candidate wins");
        };
        precondition!(candidate.ballot == self.promised, "primary must own its promise");
        let ballot = candidate.ballot;
        let lowest_ballot = self.mutated(Mutation::TakeoverPicksLowestBallot);
        let plan = takeover::plan(&candidate, &self.log, &self.membership, lowest_ballot);
        self.stats.elections_won += 1;
        let configuration = &self.membership.configuration;
        let mut progress =
            Progress::new(configuration.members.len(), configuration.learners.len(), candidate.me, self.now);
        for (i, promise) in candidate.promises.iter().enumerate() {
            if promise.is_some() {
                progress.heard(i, self.now);
            }
        }
        self.role = RoleState::Primary(Box::new(PrimaryState {
            ballot,
            next_slot: plan.first,
            in_flight: Default::default(),
            large: Default::default(),
            recovery_end: plan.last,
            queue: Default::default(),
            progress,
            relinquish_to: None,
            pending_change: None,
            change_slot: plan.change_slot,
            exclusive: ExclusiveQueue::new(plan.last_slot),
            reads: Default::default(),
        }));
        self.primary = Some(KnownPrimary { node: self.config.node, ballot });
        self.primary_heard_at = Some(self.now);
        self.timers.cancel(Timer::Election);
        self.report_role(ballot, Some(self.config.node));
        let (first, last) = (plan.first, plan.last);
        for value in plan.values {
            self.propose_value(value);
        }
        postcondition!(self.role.primary().is_some_and(|p| p.next_slot == last.next()));
        postcondition!(
            self.role
                .primary()
                .is_some_and(|p| (first.0..=last.0).all(|s| p.in_flight.contains_key(&Slot(s)))),
            "every inherited slot is re-proposed"
        );
        self.on_heartbeat_timer();
        self.timers.set(Timer::CheckQuorum, self.now.plus(self.config.election_delay_min()));
        // Nothing inherited beyond what was already applied: recovered at once.
        self.report_primary_recovered();
    }

    pub(super) fn on_reject(&mut self, from: NodeId, ballot: Ballot, promised: Ballot, reason: RejectReason) {
        let promised_before = self.promised;
        self.highest_seen = self.highest_seen.max(promised);
        if self.role.owns(ballot) {
            match reason {
                RejectReason::Promised if promised > ballot => self.step_down(None),
                RejectReason::Promised | RejectReason::PrimaryAlive => {}
                RejectReason::Behind { chosen } => {
                    if self.role.candidate().is_some() {
                        self.step_down(None);
                        self.catch_up.reported(chosen, from);
                        self.fill_fetch_window(from, chosen);
                    }
                }
            }
        }
        postcondition!(self.promised == promised_before, "a refusal heard changes no promise");
    }

    /// The primary of `ballot` hands over to this replica: campaign at once, skipping the
    /// pre-vote (its followers skip the lease guard for a transfer from it).
    pub(super) fn on_timeout_now(&mut self, from: NodeId, ballot: Ballot) {
        let follows = self.primary == Some(KnownPrimary { node: from, ballot });
        if !follows || self.role.is_primary() || !self.may_campaign() {
            return;
        }
        // A candidacy in pre-vote gives way to the transfer's (start_prepare counts it).
        self.role = RoleState::Secondary;
        self.start_prepare(Some(ballot));
        postcondition!(self.promised > ballot, "the transfer target campaigns above the old primary");
        postcondition!(self.role.candidate().is_some_and(|c| c.phase == CandidatePhase::Prepare));
    }

    /// Leaves primary or candidate state and becomes a secondary following `primary`.
    pub(super) fn step_down(&mut self, primary: Option<KnownPrimary>) {
        let primary_node = primary.map(|p| p.node);
        if let RoleState::Primary(mut leading) = std::mem::replace(&mut self.role, RoleState::Secondary) {
            self.stats.primary_step_downs += 1;
            let change = leading
                .pending_change
                .as_ref()
                .map(|next| next.members.clone())
                .or_else(|| leading.change_slot.and_then(|slot| self.log.configuration_members(slot)));
            if let Some(members) = change {
                self.actions
                    .push_back(Action::ConfigurationChangeInterrupted { members, primary: primary_node });
            }
            self.fail_confirming(std::mem::take(&mut leading.reads), primary_node);
            let mut ids = leading.queue.drain_ids();
            ids.extend(leading.exclusive.drain_ids());
            if !ids.is_empty() {
                self.actions.push_back(Action::RequestsDropped { ids, primary: primary_node });
            }
            for timer in [Timer::Heartbeat, Timer::CheckQuorum, Timer::BatchLinger, Timer::Relinquish] {
                self.timers.cancel(timer);
            }
        }
        self.primary = primary;
        self.primary_heard_at = None;
        let ballot = primary.map_or(self.promised, |p| p.ballot);
        self.report_role(ballot, primary_node);
        self.reset_election_timer();
        postcondition!(!self.timers.is_set(Timer::Heartbeat), "a secondary sends no heartbeats");
    }

    /// A message from the primary of `ballot` (>= our promise): follow it.
    pub(super) fn follow(&mut self, from: NodeId, ballot: Ballot) {
        precondition!(ballot >= self.promised);
        self.highest_seen = self.highest_seen.max(ballot);
        let primary = KnownPrimary { node: from, ballot };
        if !matches!(self.role, RoleState::Secondary) {
            // A primary's ballot is its promise, and no other node owns it: a message at a
            // ballot at least the promise from another node outranks this replica's role.
            self.step_down(Some(primary));
        }
        self.primary = Some(primary);
        self.primary_heard_at = Some(self.now);
        self.report_role(ballot, Some(from));
        self.reset_election_timer();
    }
}
