//! What a primary knows of each member of its configuration: when it last heard from it,
//! the newest of its own heartbeats the member echoed (the lease clock), and the member's
//! chosen watermark. Indexed like the configuration's member list.

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
}

/// Every member's progress; the primary's own entry is `me`.
#[derive(Clone, Debug)]
pub(super) struct Progress {
    peers: Vec<PeerProgress>,
    me: usize,
}

impl Progress {
    /// Nothing heard yet from any of `members` members; the primary is member `me`.
    pub(super) fn new(members: usize, me: usize) -> Progress {
        precondition!(me < members, "the primary is a member");
        Progress { peers: vec![PeerProgress::default(); members], me }
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
        postcondition!(peer.echoed <= now, "the lease never starts in the future");
    }

    /// How many members (the primary included) were heard from less than `window` ago.
    pub(super) fn heard_within(&self, now: Time, window: Micros) -> usize {
        self.peers
            .iter()
            .enumerate()
            .filter(|(i, p)| *i == self.me || p.heard_at.is_some_and(|t| now.since(t) < window))
            .count()
    }

    /// When the lease began: the newest time a quorum (the primary counting as `now`)
    /// confirmed with echoes; `None` before any quorum echoed.
    pub(super) fn lease_start(&self, now: Time, quorum: usize) -> Option<Time> {
        let mut echoes: Vec<u64> = self.peers.iter().map(|p| p.echoed.0).collect();
        echoes[self.me] = now.0;
        let start = quorum::quorum_watermark(&mut echoes, quorum).unwrap_or(0);
        (start != 0).then_some(Time(start))
    }

    /// The live member (heard at or after `since`) with the highest chosen watermark, the
    /// lowest node id among equals; never the primary itself.
    pub(super) fn most_caught_up(&self, members: &[NodeId], since: Time) -> Option<NodeId> {
        members
            .iter()
            .zip(&self.peers)
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
        let mut progress = Progress::new(3, 0);
        assert_eq!(progress.lease_start(Time(100), 2), None);
        progress.heartbeat_reply(1, Time(40), Slot(3), Time(90));
        assert_eq!(progress.lease_start(Time(100), 2), Some(Time(40)));
        progress.heartbeat_reply(2, Time(60), Slot(3), Time(95));
        assert_eq!(progress.lease_start(Time(100), 2), Some(Time(60)));
        assert_eq!(progress.lease_start(Time(100), 3), Some(Time(40)));
    }

    #[test]
    fn an_echo_from_the_future_extends_nothing() {
        let mut progress = Progress::new(3, 0);
        progress.heartbeat_reply(1, Time(500), Slot(1), Time(100));
        assert_eq!(progress.lease_start(Time(100), 2), None);
        assert!(progress.is_live(1, Time(100)), "but the member was heard");
    }

    #[test]
    fn liveness_counts_the_primary_and_recent_members() {
        let mut progress = Progress::new(5, 2);
        progress.heard(0, Time(10));
        progress.heard(4, Time(95));
        assert_eq!(progress.heard_within(Time(100), Micros(50)), 2);
        assert_eq!(progress.heard_within(Time(100), Micros(100)), 3);
        assert!(progress.is_live(0, Time(10)) && !progress.is_live(0, Time(11)));
    }

    #[test]
    fn the_relinquish_target_is_the_most_caught_up_live_member() {
        let members = [NodeId(1), NodeId(2), NodeId(3), NodeId(4)];
        let mut progress = Progress::new(4, 0);
        assert_eq!(progress.most_caught_up(&members, Time(0)), None);
        progress.heartbeat_reply(1, Time(1), Slot(7), Time(10));
        progress.heartbeat_reply(2, Time(1), Slot(9), Time(10));
        progress.heartbeat_reply(3, Time(1), Slot(9), Time(2));
        assert_eq!(progress.most_caught_up(&members, Time(0)), Some(NodeId(3)), "lowest id among the best");
        assert_eq!(progress.most_caught_up(&members, Time(5)), Some(NodeId(3)));
        assert_eq!(progress.most_caught_up(&members, Time(11)), None);
    }
}
