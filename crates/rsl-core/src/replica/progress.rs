//! What a primary knows of each member and learner of its configuration: when it last
//! heard from it, the newest of its own heartbeats the member echoed (the lease clock), the
//! member's chosen watermark, and how far it holds the log (the replica health of
//! `health.rs`: the slots it voted for, and since when it is behind; the promotion guard of
//! `reconfiguration.rs`). Indexed like `Configuration::followers`: the voters, then the
//! learners. Only the voters' entries count towards the lease and the quorum check; a
//! learner is followed, never counted.

use crate::quorum;
use crate::time::{Micros, Time};
use crate::types::{NodeId, Slot};

/// One member, as seen by the primary.
#[derive(Clone, Debug, Default)]
struct PeerProgress {
    /// Last time any message at the primary's ballot arrived from this member.
    heard_at: Option<Time>,
    /// The newest heartbeat `sent_at` this member echoed.
    echoed: Time,
    /// The member's chosen watermark, from its last heartbeat reply.
    chosen: Slot,
    /// The highest slot the member voted for (durably accepted) at the primary's ballot.
    acknowledged: Option<Slot>,
    /// Every slot up to here the member holds durably (chosen there, or voted for at this
    /// ballot in order); `None` until its first heartbeat reply says.
    holds: Option<Slot>,
    /// The last time `holds` reached the primary's chosen watermark (or when the primary
    /// took office): a member behind has been behind since then.
    caught_up_at: Time,
}

/// How far one member holds the log, as the primary knows it (see `health.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct MemberProgress {
    pub(super) heard_at: Option<Time>,
    pub(super) acknowledged: Option<Slot>,
    pub(super) holds: Option<Slot>,
    pub(super) caught_up_at: Time,
}

/// Every member's and learner's progress; the primary's own entry is `me`, the first
/// `voters` entries are the voters.
#[derive(Clone, Debug)]
pub(super) struct Progress {
    peers: Vec<PeerProgress>,
    me: usize,
    voters: usize,
}

impl Progress {
    /// Nothing heard yet from any of `voters` voters and `learners` learners; the primary
    /// is voter `me` and took office at `now`.
    pub(super) fn new(voters: usize, learners: usize, me: usize, now: Time) -> Progress {
        precondition!(me < voters, "the primary is a voter");
        precondition!(voters + learners <= 64, "acknowledgement sets are 64-bit masks");
        let peer = PeerProgress { caught_up_at: now, ..PeerProgress::default() };
        Progress { peers: vec![peer; voters + learners], me, voters }
    }

    /// The bits of the voters in an acknowledgement set (bit `i`: follower `i`): only those
    /// count towards a quorum.
    pub(super) fn voter_mask(&self) -> u64 {
        if self.voters >= 64 {
            u64::MAX
        } else {
            (1u64 << self.voters) - 1
        }
    }

    /// The primary's own index in the member list.
    pub(super) fn me(&self) -> usize {
        self.me
    }

    /// Member `index` was heard from at `now`.
    pub(super) fn heard(&mut self, index: usize, now: Time) {
        self.peers[index].heard_at = Some(now);
    }

    /// Whether member `index` was heard from at or after `since`.
    pub(super) fn is_live(&self, index: usize, since: Time) -> bool {
        self.peers[index].heard_at.is_some_and(|t| t >= since)
    }

    /// Member `index` echoed the heartbeat sent at `sent_at` and reported its watermark.
    /// Only echoes of the primary's own past heartbeats extend the lease.
    pub(super) fn heartbeat_reply(&mut self, index: usize, sent_at: Time, chosen: Slot, now: Time) {
        let peer = &mut self.peers[index];
        peer.heard_at = Some(now);
        if sent_at <= now {
            peer.echoed = peer.echoed.max(sent_at);
        }
        peer.chosen = peer.chosen.max(chosen);
        peer.holds = Some(peer.holds.map_or(chosen, |holds| holds.max(chosen)));
        postcondition!(peer.echoed <= now, "the lease never starts in the future");
    }

    /// Member `index` voted for `slot` at the primary's ballot, heard at `now`. A vote for
    /// the slot right after what it is known to hold extends what it holds.
    pub(super) fn accepted(&mut self, index: usize, slot: Slot, now: Time) {
        let peer = &mut self.peers[index];
        peer.heard_at = Some(now);
        peer.acknowledged = Some(peer.acknowledged.map_or(slot, |acknowledged| acknowledged.max(slot)));
        if peer.holds.is_some_and(|holds| holds.next() == slot) {
            peer.holds = Some(slot);
        }
    }

    /// The primary's chosen watermark is `chosen` at `now`: every member that holds it is
    /// caught up now. Call it before and after the watermark moves, and after a member's
    /// progress changed.
    pub(super) fn caught_up(&mut self, chosen: Slot, now: Time) {
        for peer in &mut self.peers {
            if peer.holds.is_some_and(|holds| holds >= chosen) {
                peer.caught_up_at = now;
            }
        }
    }

    /// How far member `index` holds the log, as far as the primary knows.
    pub(super) fn member(&self, index: usize) -> MemberProgress {
        let peer = &self.peers[index];
        MemberProgress {
            heard_at: peer.heard_at,
            acknowledged: peer.acknowledged,
            holds: peer.holds,
            caught_up_at: peer.caught_up_at,
        }
    }

    /// How many voters (the primary included) were heard from less than `window` ago.
    pub(super) fn heard_within(&self, now: Time, window: Micros) -> usize {
        self.peers[..self.voters]
            .iter()
            .enumerate()
            .filter(|(i, p)| *i == self.me || p.heard_at.is_some_and(|t| now.since(t) < window))
            .count()
    }

    /// When the lease began: the newest time a quorum of voters (the primary counting as
    /// `now`) confirmed with echoes; `None` before any quorum echoed. Learners' echoes
    /// never count.
    pub(super) fn lease_start(&self, now: Time, quorum: usize) -> Option<Time> {
        let mut echoes: Vec<u64> = self.peers[..self.voters].iter().map(|p| p.echoed.0).collect();
        echoes[self.me] = now.0;
        let start = quorum::quorum_watermark(&mut echoes, quorum).unwrap_or(0);
        (start != 0).then_some(Time(start))
    }

    /// The live voter (heard at or after `since`) with the highest chosen watermark, the
    /// lowest node id among equals; never the primary itself, never a learner.
    pub(super) fn most_caught_up(&self, members: &[NodeId], since: Time) -> Option<NodeId> {
        members
            .iter()
            .zip(&self.peers[..self.voters])
            .enumerate()
            .filter(|(i, (_, p))| *i != self.me && p.heard_at.is_some_and(|t| t >= since))
            .max_by_key(|(_, (&m, p))| (p.chosen, std::cmp::Reverse(m)))
            .map(|(_, (&m, _))| m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_starts_when_a_quorum_echoed() {
        let mut progress = Progress::new(3, 0, 0, Time(0));
        assert_eq!(progress.lease_start(Time(100), 2), None);
        progress.heartbeat_reply(1, Time(40), Slot(3), Time(90));
        assert_eq!(progress.lease_start(Time(100), 2), Some(Time(40)));
        progress.heartbeat_reply(2, Time(60), Slot(3), Time(95));
        assert_eq!(progress.lease_start(Time(100), 2), Some(Time(60)));
        assert_eq!(progress.lease_start(Time(100), 3), Some(Time(40)));
    }

    #[test]
    fn learners_count_in_no_lease_no_quorum_check_and_no_relinquish_target() {
        // Voters 0..3 (the primary is 0), learners 3 and 4.
        let mut progress = Progress::new(3, 2, 0, Time(0));
        assert_eq!(progress.voter_mask(), 0b111);
        progress.heartbeat_reply(3, Time(40), Slot(9), Time(90));
        progress.heartbeat_reply(4, Time(50), Slot(9), Time(95));
        assert_eq!(progress.lease_start(Time(100), 2), None, "learners' echoes start no lease");
        assert_eq!(progress.heard_within(Time(100), Micros(50)), 1, "only the primary counts");
        let followers = [NodeId(1), NodeId(2), NodeId(3), NodeId(4), NodeId(5)];
        assert_eq!(progress.most_caught_up(&followers, Time(0)), None, "a learner is never a target");
        progress.heartbeat_reply(1, Time(60), Slot(2), Time(96));
        assert_eq!(progress.lease_start(Time(100), 2), Some(Time(60)));
        assert_eq!(progress.heard_within(Time(100), Micros(50)), 2);
        assert_eq!(progress.member(4).holds, Some(Slot(9)), "a learner's progress is still tracked");
    }

    #[test]
    fn an_echo_from_the_future_extends_nothing() {
        let mut progress = Progress::new(3, 0, 0, Time(0));
        progress.heartbeat_reply(1, Time(500), Slot(1), Time(100));
        assert_eq!(progress.lease_start(Time(100), 2), None);
        assert!(progress.is_live(1, Time(100)), "but the member was heard");
    }

    #[test]
    fn liveness_counts_the_primary_and_recent_members() {
        let mut progress = Progress::new(5, 0, 2, Time(0));
        progress.heard(0, Time(10));
        progress.heard(4, Time(95));
        assert_eq!(progress.heard_within(Time(100), Micros(50)), 2);
        assert_eq!(progress.heard_within(Time(100), Micros(100)), 3);
        assert!(progress.is_live(0, Time(10)) && !progress.is_live(0, Time(11)));
    }

    #[test]
    fn the_relinquish_target_is_the_most_caught_up_live_member() {
        let members = [NodeId(1), NodeId(2), NodeId(3), NodeId(4)];
        let mut progress = Progress::new(4, 0, 0, Time(0));
        assert_eq!(progress.most_caught_up(&members, Time(0)), None);
        progress.heartbeat_reply(1, Time(1), Slot(7), Time(10));
        progress.heartbeat_reply(2, Time(1), Slot(9), Time(10));
        progress.heartbeat_reply(3, Time(1), Slot(9), Time(2));
        assert_eq!(progress.most_caught_up(&members, Time(0)), Some(NodeId(3)), "lowest id among the best");
        assert_eq!(progress.most_caught_up(&members, Time(5)), Some(NodeId(3)));
        assert_eq!(progress.most_caught_up(&members, Time(11)), None);
    }

    #[test]
    fn votes_in_order_extend_what_a_member_holds_and_when_it_was_caught_up() {
        let mut progress = Progress::new(3, 0, 0, Time(5));
        progress.accepted(1, Slot(4), Time(10));
        assert_eq!(progress.member(1).holds, None, "unknown until a heartbeat reply says");
        assert_eq!(progress.member(1).acknowledged, Some(Slot(4)));
        progress.heartbeat_reply(1, Time(10), Slot(4), Time(11));
        progress.accepted(1, Slot(5), Time(12));
        progress.accepted(1, Slot(7), Time(13));
        let member = progress.member(1);
        assert_eq!((member.holds, member.acknowledged), (Some(Slot(5)), Some(Slot(7))), "a gap stops it");
        progress.caught_up(Slot(5), Time(20));
        progress.caught_up(Slot(6), Time(30));
        assert_eq!(progress.member(1).caught_up_at, Time(20), "behind since the watermark passed it");
        assert_eq!(progress.member(2).caught_up_at, Time(5), "never heard: behind since taking office");
        progress.heartbeat_reply(1, Time(31), Slot(9), Time(32));
        progress.caught_up(Slot(6), Time(33));
        assert_eq!(progress.member(1).caught_up_at, Time(33));
    }
}
