//! Read-index reads (PROTOCOL.md, "Read index"): a linearizable read without a slot and
//! without the lease. The primary records its chosen watermark, confirms that it is still
//! primary with a round of heartbeats echoed by a quorum of its configuration at its
//! ballot, and only then answers the index; the caller serves the read once its state
//! machine applied that index. A secondary forwards the request to the primary it follows
//! and serves the read locally once it applied the index the primary answered.
//!
//! Two sub-states, one per side: [`Confirming`] lives in the primary's role state (so it
//! is dropped, and its reads failed, when the primary steps down), [`Forwarded`] on every
//! replica (reads asked of a primary and not yet answered; they expire).
//!
//! Why a round proves primacy: a heartbeat sent at `t` and echoed at the primary's ballot
//! by a quorum means that each of those acceptors had promised no higher ballot when it
//! echoed, after `t`. Any newer primary needs promises from a quorum, which shares an
//! acceptor with this one, so a newer primary got its promises after `t`; nothing it
//! chooses was acknowledged before a read that arrived before `t`. Every value acknowledged
//! before the read arrived is therefore at or below this primary's chosen watermark, once
//! the primary chose every slot it inherited (the takeover is complete). Times are the
//! primary's own clock only; no drift bound is needed.

use std::collections::{BTreeMap, VecDeque};

use crate::action::{Action, ReadError};
use crate::message::{MessageBody, ReadIndexRefusal};
use crate::time::Time;
use crate::types::{Ballot, NodeId, ReadId, Slot};

use super::mutation::Mutation;
use super::{Replica, Timer};

/// Who asked for a read the primary confirms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reader {
    /// This replica's own caller.
    Local(ReadId),
    /// A secondary, which forwarded its caller's read.
    Remote(NodeId, ReadId),
}

/// Reads waiting for one heartbeat broadcast: confirmed once a quorum echoed a heartbeat
/// sent at or after `sent_at`.
#[derive(Debug)]
struct Round {
    sent_at: Time,
    /// The primary's chosen watermark when the heartbeat went out.
    index: Slot,
    readers: Vec<Reader>,
}

/// The primary's read-index state: reads not yet covered by a heartbeat, and rounds sent.
#[derive(Debug, Default)]
pub(super) struct Confirming {
    /// Reads that arrived after the newest round's heartbeat went out.
    waiting: Vec<Reader>,
    /// Rounds sent and not yet confirmed, oldest (earliest `sent_at`) first.
    rounds: VecDeque<Round>,
    /// When the newest heartbeat was broadcast: a read that arrives at that same time
    /// needs a later heartbeat, since an echo of this one may predate the read.
    heartbeat_at: Option<Time>,
}

impl Confirming {
    /// Reads waiting, in rounds or not.
    pub(super) fn pending(&self) -> u64 {
        (self.waiting.len() + self.rounds.iter().map(|r| r.readers.len()).sum::<usize>()) as u64
    }

    /// A read arrived.
    pub(super) fn push(&mut self, reader: Reader) {
        self.waiting.push(reader);
    }

    /// Whether waiting reads should get a round of their own now: some wait and no round
    /// is in flight (reads that arrive meanwhile share the next one).
    fn wants_round(&self) -> bool {
        !self.waiting.is_empty() && self.rounds.is_empty()
    }

    /// Whether a heartbeat broadcast at `now` is later than every earlier one.
    fn fresh_at(&self, now: Time) -> bool {
        self.heartbeat_at.is_none_or(|at| at < now)
    }

    /// A heartbeat carrying `chosen` is broadcast at `now`. The waiting reads join a round
    /// at `now` when it is later than every earlier heartbeat and `ready` (the takeover is
    /// complete, so `chosen` covers everything acknowledged before them).
    fn heartbeat_sent(&mut self, now: Time, chosen: Slot, ready: bool) {
        if ready && self.fresh_at(now) && !self.waiting.is_empty() {
            let readers = std::mem::take(&mut self.waiting);
            self.rounds.push_back(Round { sent_at: now, index: chosen, readers });
        }
        self.heartbeat_at = Some(self.heartbeat_at.map_or(now, |at| at.max(now)));
    }

    /// A quorum echoed heartbeats sent at or after `confirmed_at`: the rounds sent by then
    /// are confirmed. Returns each one's index and readers, oldest first.
    fn confirm(&mut self, confirmed_at: Time) -> Vec<(Slot, Vec<Reader>)> {
        let mut confirmed = Vec::new();
        while self.rounds.front().is_some_and(|round| round.sent_at <= confirmed_at) {
            let round = self.rounds.pop_front().expect("front exists");
            confirmed.push((round.index, round.readers));
        }
        confirmed
    }

    /// Every read still pending, for failing them when the primary steps down.
    fn into_readers(self) -> impl Iterator<Item = Reader> {
        self.rounds.into_iter().flat_map(|round| round.readers).chain(self.waiting)
    }

    /// Rounds are in heartbeat order, none after the newest heartbeat, and none promises
    /// more than is chosen.
    fn check_invariants(&self, chosen: Slot) {
        invariant!(self.rounds.iter().zip(self.rounds.iter().skip(1)).all(|(a, b)| a.sent_at < b.sent_at));
        invariant!(self.rounds.iter().all(|r| Some(r.sent_at) <= self.heartbeat_at && r.index <= chosen));
        invariant!(self.rounds.iter().all(|r| !r.readers.is_empty()));
    }
}

/// Reads this replica asked of a primary and that are not answered yet.
#[derive(Debug, Default)]
pub(super) struct Forwarded {
    /// The primary asked and the deadline, by read.
    reads: BTreeMap<ReadId, (NodeId, Time)>,
    /// Deadlines in the order they fall (the same delay from a clock that never goes
    /// back): entries whose read was answered are skipped when met.
    deadlines: VecDeque<(Time, ReadId)>,
}

impl Forwarded {
    fn len(&self) -> u64 {
        self.reads.len() as u64
    }

    fn insert(&mut self, id: ReadId, primary: NodeId, deadline: Time) {
        precondition!(!self.reads.contains_key(&id), "{id} is already in flight");
        precondition!(self.deadlines.back().is_none_or(|(last, _)| *last <= deadline));
        self.reads.insert(id, (primary, deadline));
        self.deadlines.push_back((deadline, id));
    }

    /// Takes the read `id` if it was asked of `from`.
    fn take(&mut self, id: ReadId, from: NodeId) -> bool {
        if self.reads.get(&id).is_some_and(|(primary, _)| *primary == from) {
            self.reads.remove(&id);
            return true;
        }
        false
    }

    /// Removes and returns the reads whose deadline is at or before `now`.
    fn expire(&mut self, now: Time) -> Vec<(ReadId, NodeId)> {
        let mut expired = Vec::new();
        while let Some(&(deadline, id)) = self.deadlines.front() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            if self.reads.get(&id).is_some_and(|(_, at)| *at == deadline) {
                let (primary, _) = self.reads.remove(&id).expect("present");
                expired.push((id, primary));
            }
        }
        expired
    }

    /// The earliest deadline of a read still unanswered.
    fn next_deadline(&mut self) -> Option<Time> {
        while let Some(&(deadline, id)) = self.deadlines.front() {
            if self.reads.get(&id).is_some_and(|(_, at)| *at == deadline) {
                return Some(deadline);
            }
            self.deadlines.pop_front();
        }
        None
    }
}

impl Replica {
    /// Starts a read-index read named `id` (unique among this caller's reads in flight).
    /// On the primary, the read waits for a round of heartbeats to confirm primacy (reads
    /// that arrive together share one); on a secondary, it is forwarded to the primary it
    /// follows. The outcome comes later as [`Action::ReadIndexReady`] (serve the read once
    /// the state machine applied its index) or [`Action::ReadIndexFailed`]; an error here
    /// means nothing was started.
    pub fn handle_read_index(&mut self, now: Time, id: ReadId) -> Result<(), ReadError> {
        self.advance_clock(now);
        let result = self.start_read(id);
        self.finish();
        result
    }

    /// Starts many read-index reads at once: on the primary they all share the next round
    /// (one [`Replica::handle_read_index`] each would send the first alone). The results
    /// are in the order of `ids`; each is what `handle_read_index` would have returned.
    pub fn handle_read_index_many(
        &mut self,
        now: Time,
        ids: impl IntoIterator<Item = ReadId>,
    ) -> Vec<Result<(), ReadError>> {
        self.advance_clock(now);
        let results = ids.into_iter().map(|id| self.start_read(id)).collect();
        self.finish();
        results
    }

    fn start_read(&mut self, id: ReadId) -> Result<(), ReadError> {
        if self.role.is_primary() {
            self.confirm_locally(id)
        } else {
            self.forward_read(id)
        }
    }

    /// Read-index reads waiting for a confirmation here: the primary's own and forwarded
    /// ones it confirms, plus those this replica forwarded and that are not answered.
    pub fn pending_read_indexes(&self) -> u64 {
        self.role.primary().map_or(0, |p| p.reads.pending()) + self.forwarded_reads.len()
    }

    /// Why the primary takes no new read-index read now, if it does not.
    fn refuse_read(&self) -> Option<ReadError> {
        let primary = self.role.primary()?;
        if let Some(target) = primary.relinquish_to {
            return Some(ReadError::NotPrimary { hint: Some(target) });
        }
        let (pending, max) = (primary.reads.pending(), self.config.read_index_pending_max);
        (pending >= max).then_some(ReadError::Busy { pending, max })
    }

    fn confirm_locally(&mut self, id: ReadId) -> Result<(), ReadError> {
        if let Some(error) = self.refuse_read() {
            return Err(error);
        }
        self.role.primary_mut().expect("checked").reads.push(Reader::Local(id));
        Ok(())
    }

    fn forward_read(&mut self, id: ReadId) -> Result<(), ReadError> {
        if !self.membership.is_member() {
            // Joining or removed: the primary takes requests only from members, and a
            // removed replica would never apply the index.
            return Err(ReadError::NotPrimary { hint: self.primary_hint() });
        }
        let primary = match self.primary {
            Some(primary) if primary.node != self.config.node => primary.node,
            _ => return Err(ReadError::NotPrimary { hint: None }),
        };
        let (pending, max) = (self.forwarded_reads.len(), self.config.read_index_pending_max);
        if pending >= max {
            return Err(ReadError::Busy { pending, max });
        }
        let deadline = self.now.plus(self.config.election_delay_min());
        self.forwarded_reads.insert(id, primary, deadline);
        self.send(primary, MessageBody::ReadIndexRequest { id });
        Ok(())
    }

    /// A secondary asks this replica, as primary, for a read index.
    pub(super) fn on_read_index_request(&mut self, from: NodeId, id: ReadId) {
        let refusal = match self.refuse_read() {
            _ if !self.role.is_primary() => Some(ReadIndexRefusal::NotPrimary { hint: self.primary_hint() }),
            Some(ReadError::NotPrimary { hint }) => Some(ReadIndexRefusal::NotPrimary { hint }),
            Some(_) => Some(ReadIndexRefusal::Busy),
            None => None,
        };
        match refusal {
            Some(reason) => self.send(from, MessageBody::ReadIndexRefused { id, reason }),
            None => self.role.primary_mut().expect("checked").reads.push(Reader::Remote(from, id)),
        }
    }

    /// The primary asked answered a forwarded read.
    pub(super) fn on_read_index_reply(&mut self, from: NodeId, id: ReadId, ballot: Ballot, index: Slot) {
        precondition!(ballot.node == from, "validated: the primary owns the ballot");
        // Safe whatever this replica follows now: the primary confirmed after the request
        // left here, so after the read began.
        if self.forwarded_reads.take(id, from) {
            self.actions.push_back(Action::ReadIndexReady { id, index });
        }
    }

    /// The replica asked refused a forwarded read.
    pub(super) fn on_read_index_refused(&mut self, from: NodeId, id: ReadId, reason: ReadIndexRefusal) {
        if !self.forwarded_reads.take(id, from) {
            return;
        }
        let error = match reason {
            ReadIndexRefusal::NotPrimary { hint } => ReadError::NotPrimary { hint },
            ReadIndexRefusal::Busy => {
                let max = self.config.read_index_pending_max;
                ReadError::Busy { pending: max, max }
            }
        };
        self.actions.push_back(Action::ReadIndexFailed { id, error });
    }

    /// Broadcasts a heartbeat at the current time; waiting reads join it as a round when
    /// they may.
    pub(super) fn broadcast_heartbeat(&mut self) {
        let Some(primary) = self.role.primary() else { return };
        let (ballot, now, chosen) = (primary.ballot, self.now, self.log.chosen());
        let ready = chosen >= primary.recovery_end;
        self.role.primary_mut().expect("checked").reads.heartbeat_sent(now, chosen, ready);
        self.broadcast_followers(MessageBody::Heartbeat { ballot, chosen, sent_at: now });
    }

    /// Moves read-index reads along after every input: opens a round for waiting reads,
    /// answers the confirmed ones, and arms [`Timer::ReadIndex`] for what must happen later.
    pub(super) fn advance_reads(&mut self) {
        let mut round_at = None;
        if let Some(primary) = self.role.primary() {
            if primary.reads.wants_round() && self.log.chosen() >= primary.recovery_end {
                if primary.reads.fresh_at(self.now) {
                    self.broadcast_heartbeat();
                } else {
                    round_at = Some(self.now.plus_us(1));
                }
            }
            self.answer_confirmed_reads();
        }
        match [round_at, self.forwarded_reads.next_deadline()].into_iter().flatten().min() {
            Some(at) => self.timers.set(Timer::ReadIndex, at),
            None => self.timers.cancel(Timer::ReadIndex),
        }
    }

    /// Answers the reads of every round a quorum confirmed.
    pub(super) fn answer_confirmed_reads(&mut self) {
        let quorum = self.membership.configuration.quorum();
        let now = self.now;
        let unconfirmed = self.mutated(Mutation::ReadIndexWithoutConfirmation);
        let Some(primary) = self.role.primary_mut() else { return };
        let confirmed_at = if unconfirmed { Some(now) } else { primary.progress.lease_start(now, quorum) };
        let Some(confirmed_at) = confirmed_at else { return };
        let ballot = primary.ballot;
        for (index, readers) in primary.reads.confirm(confirmed_at) {
            self.stats.read_index_rounds_confirmed += 1;
            for reader in readers {
                match reader {
                    Reader::Local(id) => self.actions.push_back(Action::ReadIndexReady { id, index }),
                    Reader::Remote(to, id) => {
                        self.send(to, MessageBody::ReadIndexReply { id, ballot, index });
                    }
                }
            }
        }
    }

    /// [`Timer::ReadIndex`]: forwarded reads left unanswered fail (a waiting round, if any,
    /// goes out from `advance_reads`).
    pub(super) fn on_read_index_timer(&mut self) {
        let after_ms = self.config.election_delay_min_ms;
        for (id, primary) in self.forwarded_reads.expire(self.now) {
            let error = ReadError::NoAnswer { primary, after_ms };
            self.actions.push_back(Action::ReadIndexFailed { id, error });
        }
    }

    /// The primary stepped down: its pending reads fail, and the secondaries that asked
    /// hear whom to ask instead.
    pub(super) fn fail_confirming(&mut self, reads: Confirming, hint: Option<NodeId>) {
        for reader in reads.into_readers() {
            match reader {
                Reader::Local(id) => {
                    let error = ReadError::NotPrimary { hint };
                    self.actions.push_back(Action::ReadIndexFailed { id, error });
                }
                Reader::Remote(to, id) => {
                    let reason = ReadIndexRefusal::NotPrimary { hint };
                    self.send(to, MessageBody::ReadIndexRefused { id, reason });
                }
            }
        }
    }

    /// The O(n) checks of the read-index state.
    pub(super) fn check_read_invariants(&self) {
        if let Some(primary) = self.role.primary() {
            primary.reads.check_invariants(self.log.chosen());
            invariant!(primary.reads.pending() <= self.config.read_index_pending_max);
        }
        invariant!(self.forwarded_reads.len() <= self.config.read_index_pending_max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_reads_join_the_next_fresh_heartbeat_only() {
        let mut reads = Confirming::default();
        reads.heartbeat_sent(Time(10), Slot(3), true);
        reads.push(Reader::Local(ReadId(1)));
        assert!(reads.wants_round());
        assert!(!reads.fresh_at(Time(10)), "an echo of the heartbeat at 10 may predate the read");
        reads.heartbeat_sent(Time(10), Slot(4), true);
        assert_eq!(reads.rounds.len(), 0, "a second heartbeat at the same time forms no round");
        reads.heartbeat_sent(Time(11), Slot(4), true);
        assert_eq!(reads.rounds.len(), 1);
        assert!(!reads.wants_round());
        assert_eq!(reads.pending(), 1);
    }

    #[test]
    fn no_round_before_the_takeover_is_complete() {
        let mut reads = Confirming::default();
        reads.push(Reader::Local(ReadId(1)));
        reads.heartbeat_sent(Time(5), Slot(2), false);
        assert!(reads.rounds.is_empty());
        reads.heartbeat_sent(Time(6), Slot(9), true);
        assert_eq!(reads.confirm(Time(6)), vec![(Slot(9), vec![Reader::Local(ReadId(1))])]);
    }

    #[test]
    fn a_confirmation_answers_every_round_sent_by_then_in_order() {
        let mut reads = Confirming::default();
        reads.push(Reader::Local(ReadId(1)));
        reads.push(Reader::Remote(NodeId(2), ReadId(7)));
        reads.heartbeat_sent(Time(10), Slot(3), true);
        reads.push(Reader::Local(ReadId(2)));
        reads.heartbeat_sent(Time(20), Slot(5), true);
        reads.push(Reader::Local(ReadId(3)));
        reads.heartbeat_sent(Time(30), Slot(6), true);
        reads.check_invariants(Slot(6));
        assert_eq!(reads.confirm(Time(9)), vec![], "echoes older than every round confirm nothing");
        let confirmed = reads.confirm(Time(25));
        assert_eq!(
            confirmed,
            vec![
                (Slot(3), vec![Reader::Local(ReadId(1)), Reader::Remote(NodeId(2), ReadId(7))]),
                (Slot(5), vec![Reader::Local(ReadId(2))]),
            ]
        );
        assert_eq!(reads.pending(), 1);
        assert_eq!(reads.into_readers().collect::<Vec<_>>(), vec![Reader::Local(ReadId(3))]);
    }

    #[test]
    fn forwarded_reads_expire_in_deadline_order_unless_answered() {
        let mut forwarded = Forwarded::default();
        forwarded.insert(ReadId(1), NodeId(2), Time(100));
        forwarded.insert(ReadId(2), NodeId(2), Time(150));
        forwarded.insert(ReadId(3), NodeId(3), Time(200));
        assert!(!forwarded.take(ReadId(1), NodeId(3)), "only the primary asked answers");
        assert!(forwarded.take(ReadId(1), NodeId(2)));
        assert!(!forwarded.take(ReadId(1), NodeId(2)), "answered once");
        assert_eq!(forwarded.next_deadline(), Some(Time(150)));
        assert_eq!(forwarded.expire(Time(199)), vec![(ReadId(2), NodeId(2))]);
        assert_eq!(forwarded.len(), 1);
        assert_eq!(forwarded.expire(Time(500)), vec![(ReadId(3), NodeId(3))]);
        assert_eq!(forwarded.next_deadline(), None);
    }
}
