//! Where a client request is answered: this replica's `replicate` requests from the moment
//! they reach the ring task until their outcome (the state machine's response, or the error
//! that says whether the request took effect), and the configuration change waiting to be
//! chosen. The ring task also keeps the `replicate` callers' deadlines here, so one timer per
//! ring answers [`ReplicateError::Timeout`] instead of a timer per call.

use std::collections::{BTreeMap, HashMap, VecDeque};

use bytes::Bytes;
use rsl_core::{
    Configuration, NodeId, PersistRequest, ProposeError, Replica, Request, RequestId, Slot, Time, Value,
};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::handle::ChangeReply;
use crate::error::{ChangeConfigurationError, ReplicateError};

/// Where the outcome of one replicated request goes.
enum Reply {
    /// A `replicate` call.
    One(oneshot::Sender<Result<Bytes, ReplicateError>>),
    /// Entry `index` of the `replicate_many` call `group`.
    Group { group: u64, index: u32 },
}

/// A request the replica accepted, waiting for its outcome.
struct Pending {
    reply: Reply,
    /// The slot it was last proposed in, once the replica persisted that proposal.
    slot: Option<Slot>,
}

/// A `replicate_many` call waiting for the outcomes of its requests.
struct Group {
    results: Vec<Option<Result<Bytes, ReplicateError>>>,
    missing: usize,
    reply: oneshot::Sender<Vec<Result<Bytes, ReplicateError>>>,
}

/// This replica's client requests and configuration change, as the ring task tracks them.
pub(super) struct Requests {
    /// The client id of this replica's requests (their responses come back from the apply
    /// thread by request id).
    local_client: u64,
    next_sequence: u64,
    /// Requests received in this burst of inputs, proposed together at its end, each with
    /// the deadline its caller waits until (`replicate` calls).
    proposals: Vec<(Bytes, Reply, Option<Instant>)>,
    pending: HashMap<RequestId, Pending>,
    /// Deadlines of pending `replicate` calls, earliest first; entries of requests already
    /// answered are skipped (and dropped when they outnumber the pending requests).
    deadlines: VecDeque<(Instant, RequestId)>,
    /// What a caller whose deadline passed is told it waited.
    timeout_ms: u64,
    /// The requests proposed in each slot, to tell when a slot applied without them.
    assigned: BTreeMap<Slot, Vec<RequestId>>,
    groups: HashMap<u64, Group>,
    next_group: u64,
    /// The configuration change this replica is waiting for, as primary.
    change: Option<(Vec<NodeId>, Vec<NodeId>, ChangeReply)>,
    /// The slot of the ring's last request, once chosen: requests that lose their slot or
    /// are dropped after it hear that the ring is closed.
    pub(super) last_slot: Option<Slot>,
}

impl Requests {
    pub(super) fn new(local_client: u64, timeout_ms: u64) -> Requests {
        Requests {
            local_client,
            next_sequence: 0,
            proposals: Vec::new(),
            pending: HashMap::new(),
            deadlines: VecDeque::new(),
            timeout_ms,
            assigned: BTreeMap::new(),
            groups: HashMap::new(),
            next_group: 0,
            change: None,
            last_slot: None,
        }
    }

    /// Requests waiting for their outcome.
    pub(super) fn pending(&self) -> u64 {
        self.pending.len() as u64
    }

    /// Queues a `replicate` call's request until the end of the burst (see
    /// [`Requests::propose`]), so concurrent callers share slots. Its caller is answered
    /// [`ReplicateError::Timeout`] once `deadline` passes without an outcome (see
    /// [`Requests::expire`]).
    pub(super) fn queue(
        &mut self,
        payload: Bytes,
        reply: oneshot::Sender<Result<Bytes, ReplicateError>>,
        deadline: Instant,
    ) {
        self.proposals.push((payload, Reply::One(reply), Some(deadline)));
    }

    /// Queues the requests of a `replicate_many` call, answered together once each has its
    /// outcome.
    pub(super) fn queue_group(
        &mut self,
        payloads: Vec<Bytes>,
        reply: oneshot::Sender<Vec<Result<Bytes, ReplicateError>>>,
    ) {
        let group = self.next_group;
        self.next_group += 1;
        let count = payloads.len();
        if count == 0 {
            let _ = reply.send(Vec::new());
            return;
        }
        self.groups
            .insert(group, Group { results: (0..count).map(|_| None).collect(), missing: count, reply });
        for (index, payload) in payloads.into_iter().enumerate() {
            self.proposals.push((payload, Reply::Group { group, index: index as u32 }, None));
        }
    }

    /// Hands every queued request to the replica in one call: the primary queues them all
    /// before it opens slots, so requests that arrived in one burst share slots instead of
    /// taking one each while the pipeline has room. A refused request is answered at once.
    /// Returns whether there was anything to propose.
    pub(super) fn propose(&mut self, replica: &mut Replica, now: Time) -> bool {
        if self.proposals.is_empty() {
            return false;
        }
        let proposals = std::mem::take(&mut self.proposals);
        let client = self.local_client;
        let first = self.next_sequence + 1;
        self.next_sequence += proposals.len() as u64;
        let mut replies = Vec::with_capacity(proposals.len());
        let requests = proposals.into_iter().enumerate().map(|(index, (payload, reply, deadline))| {
            replies.push((reply, deadline));
            Request { id: RequestId { client, sequence: first + index as u64 }, payload }
        });
        let outcomes = replica.handle_propose_many(now, requests);
        for (index, (outcome, (reply, deadline))) in outcomes.into_iter().zip(replies).enumerate() {
            match outcome {
                Ok(()) => {
                    let id = RequestId { client, sequence: first + index as u64 };
                    self.pending.insert(id, Pending { reply, slot: None });
                    if let Some(deadline) = deadline {
                        self.add_deadline(deadline, id);
                    }
                }
                Err(error) => self.complete(reply, Err(propose_error(error))),
            }
        }
        true
    }

    /// Keeps `deadlines` in deadline order: callers stamp their deadline before they queue,
    /// so one that waited for room in the command queue may arrive after later deadlines.
    fn add_deadline(&mut self, deadline: Instant, id: RequestId) {
        if self.deadlines.back().is_none_or(|(last, _)| *last <= deadline) {
            self.deadlines.push_back((deadline, id));
        } else {
            let at = self.deadlines.partition_point(|(other, _)| *other <= deadline);
            self.deadlines.insert(at, (deadline, id));
        }
        // Answered requests leave their entries behind; drop them once they are the many.
        if self.deadlines.len() > 2 * self.pending.len() + DEADLINES_SLACK {
            let pending = &self.pending;
            self.deadlines.retain(|(_, id)| pending.contains_key(id));
        }
    }

    /// The earliest deadline of a request still waiting, for the ring task's timer.
    pub(super) fn next_deadline(&mut self) -> Option<Instant> {
        while let Some((deadline, id)) = self.deadlines.front() {
            if self.pending.contains_key(id) {
                return Some(*deadline);
            }
            self.deadlines.pop_front();
        }
        None
    }

    /// Answers [`ReplicateError::Timeout`] to every caller whose deadline is `now` or
    /// earlier; a later outcome of its request is dropped.
    pub(super) fn expire(&mut self, now: Instant) {
        while let Some(&(deadline, id)) = self.deadlines.front() {
            if deadline > now && self.pending.contains_key(&id) {
                break;
            }
            self.deadlines.pop_front();
            if let Some(pending) = self.pending.remove(&id) {
                let after_ms = self.timeout_ms;
                self.complete(pending.reply, Err(ReplicateError::Timeout { after_ms }));
            }
        }
    }

    /// Learns which slot each of this replica's requests went to, to tell later whether a
    /// slot applied without it means the request was lost.
    pub(super) fn learn_slots(&mut self, request: &PersistRequest) {
        for proposal in &request.proposals {
            if let Value::Batch(requests) = &proposal.value {
                for r in requests.iter().filter(|r| r.id.client == self.local_client) {
                    if let Some(pending) = self.pending.get_mut(&r.id) {
                        if pending.slot != Some(proposal.slot) {
                            pending.slot = Some(proposal.slot);
                            self.assigned.entry(proposal.slot).or_default().push(r.id);
                        }
                    }
                }
            }
        }
    }

    /// Every slot up to `through` is applied: answers the requests with their responses,
    /// and refuses those whose slot was applied without them (they lost the slot to a new
    /// primary, `primary`, and certainly did not take effect).
    pub(super) fn applied(
        &mut self,
        through: Slot,
        responses: Vec<(Slot, RequestId, Bytes)>,
        primary: Option<NodeId>,
    ) {
        for (_, id, response) in responses {
            if let Some(pending) = self.pending.remove(&id) {
                self.complete(pending.reply, Ok(response));
            }
        }
        let later = self.assigned.split_off(&through.next());
        let done = std::mem::replace(&mut self.assigned, later);
        for (slot, ids) in done {
            for id in ids {
                if self.pending.get(&id).is_some_and(|p| p.slot == Some(slot)) {
                    let pending = self.pending.remove(&id).expect("checked");
                    let error = self.lost(primary);
                    self.complete(pending.reply, Err(error));
                }
            }
        }
    }

    /// A checkpoint installed as of `slot` covers the slots of these requests: whether they
    /// took effect is unknown.
    pub(super) fn installed(&mut self, slot: Slot) {
        let later = self.assigned.split_off(&slot.next());
        let covered = std::mem::replace(&mut self.assigned, later);
        for (covered_slot, ids) in covered {
            for id in ids {
                if let Some(pending) = self.pending.remove(&id) {
                    self.complete(pending.reply, Err(ReplicateError::OutcomeUnknown { slot: covered_slot }));
                }
            }
        }
    }

    /// The replica dropped these requests before they got a slot (it stopped being primary).
    pub(super) fn dropped(&mut self, ids: Vec<RequestId>, primary: Option<NodeId>) {
        for id in ids {
            if let Some(pending) = self.pending.remove(&id) {
                let error = self.lost(primary);
                self.complete(pending.reply, Err(error));
            }
        }
    }

    /// Why a request that certainly did not take effect failed: the ring closed, or it
    /// lost its slot (or its place in the queue) to `primary`.
    fn lost(&self, primary: Option<NodeId>) -> ReplicateError {
        match self.last_slot {
            Some(last_slot) => ReplicateError::RingClosed { last_slot },
            None => ReplicateError::NotPrimary { hint: primary },
        }
    }

    /// Hands one request to the replica for a slot of its own (after the requests queued
    /// in this burst), the last one the ring accepts when `last`.
    pub(super) fn propose_exclusive(
        &mut self,
        replica: &mut Replica,
        now: Time,
        payload: Bytes,
        last: bool,
        reply: oneshot::Sender<Result<Bytes, ReplicateError>>,
    ) {
        self.propose(replica, now);
        self.next_sequence += 1;
        let id = RequestId { client: self.local_client, sequence: self.next_sequence };
        match replica.handle_propose_exclusive(now, Request { id, payload }, last) {
            Ok(()) => {
                self.pending.insert(id, Pending { reply: Reply::One(reply), slot: None });
            }
            Err(error) => drop(reply.send(Err(propose_error(error)))),
        }
    }

    /// Answers every request still waiting: the ring is stopping.
    pub(super) fn stop(&mut self, reason: &str) {
        for (_, pending) in std::mem::take(&mut self.pending) {
            self.complete(pending.reply, Err(ReplicateError::Shutdown { reason: reason.to_string() }));
        }
        self.deadlines.clear();
        for (_, reply, _) in std::mem::take(&mut self.proposals) {
            self.complete(reply, Err(ReplicateError::Shutdown { reason: reason.to_string() }));
        }
    }

    /// Delivers the outcome of one replicated request.
    fn complete(&mut self, reply: Reply, result: Result<Bytes, ReplicateError>) {
        match reply {
            Reply::One(sender) => drop(sender.send(result)),
            Reply::Group { group, index } => {
                let Some(waiting) = self.groups.get_mut(&group) else { return };
                let slot = &mut waiting.results[index as usize];
                if slot.is_none() {
                    *slot = Some(result);
                    waiting.missing -= 1;
                }
                if waiting.missing == 0 {
                    let done = self.groups.remove(&group).expect("present");
                    let _ = done.reply.send(done.results.into_iter().flatten().collect());
                }
            }
        }
    }

    /// The replica accepted a change to `members` and `learners` (both sorted): answer
    /// `reply` once it is chosen. A change still waiting is interrupted (`primary` is the
    /// primary as now known).
    pub(super) fn await_change(
        &mut self,
        members: Vec<NodeId>,
        learners: Vec<NodeId>,
        reply: ChangeReply,
        primary: Option<NodeId>,
    ) {
        if let Some((_, _, earlier)) = self.change.replace((members, learners, reply)) {
            let _ = earlier.send(Err(ChangeConfigurationError::Interrupted { primary }));
        }
    }

    /// `configuration` was chosen: answers the change that asked for its members and
    /// learners.
    pub(super) fn change_chosen(&mut self, configuration: &Configuration) {
        let asked = |(members, learners, _): &(Vec<NodeId>, Vec<NodeId>, ChangeReply)| {
            *members == configuration.members && *learners == configuration.learners
        };
        if self.change.as_ref().is_some_and(asked) {
            let (_, _, reply) = self.change.take().expect("checked");
            let _ = reply.send(Ok(configuration.clone()));
        }
    }

    /// The change to `members` will not be chosen by this replica as primary.
    pub(super) fn change_interrupted(&mut self, members: &[NodeId], primary: Option<NodeId>) {
        if self.change.as_ref().is_some_and(|(m, _, _)| *m == members) {
            let (_, _, reply) = self.change.take().expect("checked");
            let _ = reply.send(Err(ChangeConfigurationError::Interrupted { primary }));
        }
    }
}

/// Entries of answered requests `Requests::deadlines` may hold beyond twice the pending ones
/// before it is compacted.
const DEADLINES_SLACK: usize = 1024;

fn propose_error(error: ProposeError) -> ReplicateError {
    match error {
        ProposeError::NotPrimary { hint } => ReplicateError::NotPrimary { hint },
        ProposeError::Relinquishing { target } => ReplicateError::NotPrimary { hint: Some(target) },
        ProposeError::Busy { queued, max } => ReplicateError::Busy { queued, max },
        ProposeError::TooLarge { bytes, max } => ReplicateError::TooLarge { bytes, max },
        ProposeError::LargeBusy { queued_bytes, max } => ReplicateError::LargeBusy { queued_bytes, max },
        ProposeError::Closed { last_slot } => ReplicateError::RingClosed { last_slot },
    }
}
