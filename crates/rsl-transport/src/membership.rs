//! The ring -> allowed members table that inbound checks consult.

use parking_lot::RwLock;
use rsl_core::{NodeId, RingId};
use std::collections::HashMap;
use std::sync::Arc;

/// Which nodes may send messages for which ring.
///
/// The runtime owns the policy and keeps this table current: it sets a ring's members when
/// the ring starts and again on every configuration change (during a change it may allow
/// the union of the old and new configurations, so a removed member can still learn that
/// it is out). The transport only enforces the table: a message for a ring that is not in
/// it, or from a node that is not one of the ring's members, is dropped and counted
/// ([`TransportStats::rejected_unknown_ring`], [`TransportStats::rejected_non_member`]).
///
/// Cheap to read on every message (one read lock and a binary search).
///
/// [`TransportStats::rejected_unknown_ring`]: crate::TransportStats::rejected_unknown_ring
/// [`TransportStats::rejected_non_member`]: crate::TransportStats::rejected_non_member
#[derive(Debug, Default)]
pub struct Membership {
    rings: RwLock<HashMap<RingId, Arc<[NodeId]>>>,
}

/// The result of checking one sender against the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// The sender is a member of the ring.
    Allowed,
    /// The ring is not in the table.
    UnknownRing,
    /// The ring is known and the sender is not one of its members.
    NotAMember,
}

impl Membership {
    /// An empty table: every message is rejected until rings are added.
    pub fn new() -> Membership {
        Membership::default()
    }

    /// Sets the allowed members of `ring`, replacing any previous set.
    pub fn set_members(&self, ring: RingId, members: impl IntoIterator<Item = NodeId>) {
        let mut members: Vec<NodeId> = members.into_iter().collect();
        members.sort_unstable();
        members.dedup();
        self.rings.write().insert(ring, members.into());
    }

    /// Forgets `ring`: its messages are rejected from now on.
    pub fn remove_ring(&self, ring: RingId) {
        self.rings.write().remove(&ring);
    }

    /// The allowed members of `ring`, sorted, if the ring is known.
    pub fn members(&self, ring: RingId) -> Option<Vec<NodeId>> {
        self.rings.read().get(&ring).map(|members| members.to_vec())
    }

    /// The rings in the table, sorted.
    pub fn rings(&self) -> Vec<RingId> {
        let mut rings: Vec<RingId> = self.rings.read().keys().copied().collect();
        rings.sort_unstable();
        rings
    }

    /// Whether `from` may send messages for `ring`.
    pub fn check(&self, ring: RingId, from: NodeId) -> Admission {
        match self.rings.read().get(&ring) {
            None => Admission::UnknownRing,
            Some(members) if members.binary_search(&from).is_ok() => Admission::Allowed,
            Some(_) => Admission::NotAMember,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_answers_per_ring() {
        let table = Membership::new();
        assert_eq!(table.check(RingId(1), NodeId(1)), Admission::UnknownRing);
        table.set_members(RingId(1), [NodeId(3), NodeId(1), NodeId(3)]);
        assert_eq!(table.members(RingId(1)), Some(vec![NodeId(1), NodeId(3)]));
        assert_eq!(table.check(RingId(1), NodeId(1)), Admission::Allowed);
        assert_eq!(table.check(RingId(1), NodeId(2)), Admission::NotAMember);
        assert_eq!(table.check(RingId(2), NodeId(1)), Admission::UnknownRing);
        table.set_members(RingId(2), [NodeId(2)]);
        assert_eq!(table.rings(), vec![RingId(1), RingId(2)]);
        table.remove_ring(RingId(1));
        assert_eq!(table.check(RingId(1), NodeId(1)), Admission::UnknownRing);
    }
}
