//! The role a replica plays, as one enum carrying the state only that role has: a
//! candidate's votes exist only while campaigning, a primary's pipeline only while leading.

use std::collections::{BTreeMap, VecDeque};

use crate::action::Role;
use crate::time::{Micros, Time};
use crate::types::{Ballot, Configuration, NodeId, Proposal, Request, RequestId, Slot};

use super::exclusive::ExclusiveQueue;
use super::large::{LargeQueue, LargeWindow};
use super::progress::Progress;
use super::read_index::Confirming;

/// The role and its state.
#[derive(Debug)]
pub(super) enum RoleState {
    /// Accepts and applies what the primary proposes.
    Secondary,
    /// Campaigns: pre-vote, then phase 1.
    Candidate(CandidateState),
    /// Leads: proposes values and serves requests.
    Primary(Box<PrimaryState>),
}

impl RoleState {
    /// The role, without its state.
    pub(super) fn role(&self) -> Role {
        match self {
            RoleState::Secondary => Role::Secondary,
            RoleState::Candidate(_) => Role::Candidate,
            RoleState::Primary(_) => Role::Primary,
        }
    }

    /// The primary's state, when leading.
    pub(super) fn primary(&self) -> Option<&PrimaryState> {
        match self {
            RoleState::Primary(primary) => Some(primary),
            _ => None,
        }
    }

    /// The primary's state, when leading.
    pub(super) fn primary_mut(&mut self) -> Option<&mut PrimaryState> {
        match self {
            RoleState::Primary(primary) => Some(primary),
            _ => None,
        }
    }

    /// The candidacy, when campaigning.
    pub(super) fn candidate(&self) -> Option<&CandidateState> {
        match self {
            RoleState::Candidate(candidate) => Some(candidate),
            _ => None,
        }
    }

    /// The candidacy, when campaigning.
    pub(super) fn candidate_mut(&mut self) -> Option<&mut CandidateState> {
        match self {
            RoleState::Candidate(candidate) => Some(candidate),
            _ => None,
        }
    }

    /// Whether leading.
    pub(super) fn is_primary(&self) -> bool {
        matches!(self, RoleState::Primary(_))
    }

    /// Whether leading with `ballot` or campaigning for it.
    pub(super) fn owns(&self, ballot: Ballot) -> bool {
        match self {
            RoleState::Secondary => false,
            RoleState::Candidate(candidate) => candidate.ballot == ballot,
            RoleState::Primary(primary) => primary.ballot == ballot,
        }
    }
}

/// The primary a replica follows (itself, when primary), and its ballot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct KnownPrimary {
    pub(super) node: NodeId,
    pub(super) ballot: Ballot,
}

/// What was last reported in `Action::RoleChanged`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct RoleReport {
    pub(super) role: Role,
    pub(super) ballot: Ballot,
    pub(super) primary: Option<NodeId>,
}

/// The two phases of a candidacy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CandidatePhase {
    /// Asking whether the members would vote, changing no state anywhere.
    PreVote,
    /// Phase 1: collecting durable promises.
    Prepare,
}

/// A candidacy.
#[derive(Debug)]
pub(super) struct CandidateState {
    pub(super) ballot: Ballot,
    pub(super) phase: CandidatePhase,
    /// This candidate's index among the members.
    pub(super) me: usize,
    /// Pre-votes granted (bit per member).
    pub(super) granted: u64,
    /// Promises received, by member index, with the proposals each carried.
    pub(super) promises: Vec<Option<Vec<Proposal>>>,
    /// The persist ticket of our own promise (`u64::MAX` before phase 1).
    pub(super) self_ticket: u64,
    /// Promises carry every proposal from this slot on.
    pub(super) first_unchosen: Slot,
}

/// A primary's state.
#[derive(Debug)]
pub(super) struct PrimaryState {
    pub(super) ballot: Ballot,
    /// The next slot to assign.
    pub(super) next_slot: Slot,
    /// Unchosen slots this primary proposed, by slot.
    pub(super) in_flight: BTreeMap<Slot, InFlight>,
    /// The large slots among them (`large.rs`): outside the `pipeline_depth` window.
    pub(super) large: LargeWindow,
    /// Inherited slots are re-proposed up to here; lease reads wait until it is chosen.
    pub(super) recovery_end: Slot,
    /// Requests waiting for a slot.
    pub(super) queue: ProposalQueue,
    /// What the primary knows of each member and learner.
    pub(super) progress: Progress,
    /// Relinquishing to this member.
    pub(super) relinquish_to: Option<NodeId>,
    /// A configuration change accepted but not yet proposed (waits for pipeline room); its
    /// first slot is set when it is proposed.
    pub(super) pending_change: Option<Configuration>,
    /// The slot of the configuration value in flight: no slot beyond it is opened under
    /// this configuration.
    pub(super) change_slot: Option<Slot>,
    /// Requests waiting for a slot of their own, and a last request in flight.
    pub(super) exclusive: ExclusiveQueue,
    /// Read-index reads waiting for a round of heartbeats to confirm this primacy.
    pub(super) reads: Confirming,
}

/// Votes for one in-flight slot at the primary.
#[derive(Clone, Debug)]
pub(super) struct InFlight {
    /// Bit `i` set: member `i` durably accepted.
    pub(super) votes: u64,
    /// The primary's own write of this slot.
    pub(super) self_ticket: u64,
    /// When the accept was last sent to members that had not voted.
    pub(super) sent_at: Time,
    /// The value's bytes if it is large (`large.rs`), else zero.
    pub(super) large_bytes: u64,
    /// Times the accept was sent again.
    pub(super) resends: u32,
}

impl PrimaryState {
    /// In-flight slots of batches (and other small values): the `pipeline_depth` window.
    pub(super) fn small_in_flight(&self) -> u64 {
        self.in_flight.len() as u64 - self.large.slots
    }
}

/// Requests waiting at the primary for a slot, in arrival order; large ones in a lane of
/// their own.
#[derive(Debug, Default)]
pub(super) struct ProposalQueue {
    /// Large requests (`large.rs`), proposed one per slot as their window allows.
    pub(super) large: LargeQueue,
    requests: VecDeque<Request>,
    /// Their bytes, counted by [`Request::size_bytes`].
    bytes: u64,
    /// When the oldest waiting request arrived (for the linger bound).
    since: Option<Time>,
}

/// How a batch is cut from the queue.
#[derive(Clone, Copy, Debug)]
pub(super) struct BatchLimits {
    pub(super) requests_max: usize,
    pub(super) bytes_max: u64,
    pub(super) linger: Micros,
}

/// What the queue says about proposing now.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum NextBatch {
    /// Nothing waits.
    Empty,
    /// A partial batch waits for more requests until this time.
    LingerUntil(Time),
    /// A batch, in arrival order.
    Ready(Vec<Request>),
}

impl ProposalQueue {
    /// Requests waiting, large ones included.
    pub(super) fn len(&self) -> usize {
        self.requests.len() + self.large.len()
    }

    /// Whether no request of a batch waits.
    pub(super) fn batches_empty(&self) -> bool {
        self.requests.is_empty()
    }

    /// Adds a request that arrived at `now`.
    pub(super) fn push(&mut self, request: Request, now: Time) {
        self.bytes += request.size_bytes();
        self.requests.push_back(request);
        if self.since.is_none() {
            self.since = Some(now);
        }
    }

    /// Empties the queue, returning the ids of what waited.
    pub(super) fn drain_ids(&mut self) -> Vec<RequestId> {
        self.bytes = 0;
        self.since = None;
        let large: Vec<RequestId> = self.large.drain_ids().collect();
        self.requests.drain(..).map(|r| r.id).chain(large).collect()
    }

    /// Cuts the next batch at `now`: a full batch at once, a partial one after it lingered.
    pub(super) fn next_batch(&mut self, now: Time, limits: BatchLimits) -> NextBatch {
        if self.requests.is_empty() {
            return NextBatch::Empty;
        }
        let full = self.requests.len() >= limits.requests_max || self.bytes >= limits.bytes_max;
        let waited = self.since.is_some_and(|t| now.since(t) >= limits.linger);
        if !full && !waited {
            return NextBatch::LingerUntil(self.since.unwrap_or(now).plus(limits.linger));
        }
        let mut batch = Vec::new();
        let mut bytes = 0u64;
        while let Some(request) = self.requests.front() {
            let size = request.size_bytes();
            if !batch.is_empty() && (batch.len() >= limits.requests_max || bytes + size > limits.bytes_max) {
                break;
            }
            bytes += size;
            batch.extend(self.requests.pop_front());
        }
        self.bytes -= bytes;
        self.since = if self.requests.is_empty() { None } else { Some(now) };
        NextBatch::Ready(batch)
    }

    /// The O(n) check of the byte count, for contracts builds.
    pub(super) fn check_invariants(&self) {
        invariant!(self.requests.iter().map(Request::size_bytes).sum::<u64>() == self.bytes);
        self.large.check_invariants();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(sequence: u64, bytes: usize) -> Request {
        Request { id: RequestId { client: 1, sequence }, payload: vec![0u8; bytes].into() }
    }

    const LIMITS: BatchLimits = BatchLimits { requests_max: 3, bytes_max: 1000, linger: Micros(100) };

    #[test]
    fn a_partial_batch_lingers_from_its_oldest_request() {
        let mut queue = ProposalQueue::default();
        assert_eq!(queue.next_batch(Time(0), LIMITS), NextBatch::Empty);
        queue.push(request(1, 10), Time(50));
        queue.push(request(2, 10), Time(70));
        assert_eq!(queue.next_batch(Time(80), LIMITS), NextBatch::LingerUntil(Time(150)));
        match queue.next_batch(Time(150), LIMITS) {
            NextBatch::Ready(batch) => assert_eq!(batch.len(), 2),
            other => panic!("expected a batch, got {other:?}"),
        }
        assert_eq!(queue.len(), 0);
        queue.check_invariants();
    }

    #[test]
    fn a_full_batch_goes_at_once_and_the_rest_waits_from_now() {
        let mut queue = ProposalQueue::default();
        for sequence in 0..4 {
            queue.push(request(sequence, 10), Time(0));
        }
        match queue.next_batch(Time(5), LIMITS) {
            NextBatch::Ready(batch) => {
                assert_eq!(batch.iter().map(|r| r.id.sequence).collect::<Vec<_>>(), vec![0, 1, 2])
            }
            other => panic!("expected a batch, got {other:?}"),
        }
        assert_eq!(queue.next_batch(Time(6), LIMITS), NextBatch::LingerUntil(Time(105)));
        queue.check_invariants();
    }

    #[test]
    fn bytes_bound_a_batch_but_one_large_request_still_goes() {
        let mut queue = ProposalQueue::default();
        queue.push(request(1, 2000), Time(0));
        queue.push(request(2, 10), Time(0));
        match queue.next_batch(Time(0), LIMITS) {
            NextBatch::Ready(batch) => assert_eq!(batch.len(), 1),
            other => panic!("expected a batch, got {other:?}"),
        }
        assert_eq!(queue.drain_ids(), vec![RequestId { client: 1, sequence: 2 }]);
        assert_eq!(queue.next_batch(Time(0), LIMITS), NextBatch::Empty);
        queue.check_invariants();
    }
}
