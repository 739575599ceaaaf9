//! What a log means, independent of where its bytes live: the highest promise, the highest
//! chosen hint, the truncation floor, and for each slot where its latest proposal is stored.
//!
//! Both persistent backends keep a [`SlotIndex`] in memory and rebuild it on recovery by
//! replaying records in log order with [`Replay`]. The index also counts, per storage
//! container (a journal segment, a persistent-memory entry), how many of the proposals it
//! holds are still live (neither superseded nor truncated): a container with none left can
//! be reclaimed once a later snapshot covers its promise and chosen hint.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use rsl_core::{Ballot, DurableState, Proposal, Slot};

use crate::codec::Record;

/// Where a proposal is stored.
pub(crate) trait Location: Copy + Eq + fmt::Debug {
    /// The storage container holding it (segment sequence or entry position); `None`
    /// while the record is only buffered.
    fn container(&self) -> Option<u64>;
}

/// Everything a log establishes except its proposals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Summary {
    /// The highest promise.
    pub promise: Ballot,
    /// The highest chosen hint.
    pub chosen: Slot,
    /// Proposals below this slot are gone.
    pub floor: Slot,
}

impl Summary {
    pub fn observe(&mut self, promise: Option<Ballot>, chosen: Option<Slot>, floor: Option<Slot>) {
        if let Some(promise) = promise {
            self.promise = self.promise.max(promise);
        }
        if let Some(chosen) = chosen {
            self.chosen = self.chosen.max(chosen);
        }
        if let Some(floor) = floor {
            self.floor = self.floor.max(floor);
        }
    }

    pub fn snapshot(&self) -> Record {
        Record::Snapshot { promise: self.promise, chosen: self.chosen, floor: self.floor }
    }
}

/// The in-memory index of a log, in two views.
///
/// - *Current*: what reads see, buffered records included (a buffered truncation hides
///   slots at once).
/// - *Committed*: only records that are durable, applied in log order as they commit
///   ([`SlotIndex::commit_put`], [`SlotIndex::commit_truncate`]). Live counts per
///   container come from this view only. Reclaiming space by them can therefore never drop
///   the only durable copy of a proposal whose replacement or truncation is not durable
///   yet, whatever the interleaving of buffered appends, truncations and partial commits.
#[derive(Debug)]
pub(crate) struct SlotIndex<L> {
    summary: Summary,
    current: BTreeMap<u64, L>,
    committed: BTreeMap<u64, L>,
    committed_floor: Slot,
    live: HashMap<u64, u64>,
    highest_slot: Slot,
}

impl<L: Location> Default for SlotIndex<L> {
    fn default() -> Self {
        SlotIndex {
            summary: Summary::default(),
            current: BTreeMap::new(),
            committed: BTreeMap::new(),
            committed_floor: Slot::ZERO,
            live: HashMap::new(),
            highest_slot: Slot::ZERO,
        }
    }
}

impl<L: Location> SlotIndex<L> {
    pub fn summary(&self) -> Summary {
        self.summary
    }

    /// The highest slot any proposal ever named (also truncated ones).
    pub fn highest_slot(&self) -> Slot {
        self.highest_slot
    }

    /// The highest slot held.
    pub fn last_slot(&self) -> Slot {
        self.current.keys().next_back().map_or(Slot::ZERO, |&slot| Slot(slot))
    }

    pub fn observe(&mut self, promise: Option<Ballot>, chosen: Option<Slot>) {
        self.summary.observe(promise, chosen, None);
    }

    /// Records (in the current view) that the latest proposal for `slot` is at
    /// `location`. Returns false (and records nothing) when the slot is below the floor.
    pub fn put(&mut self, slot: Slot, location: L) -> bool {
        self.highest_slot = self.highest_slot.max(slot);
        if slot < self.summary.floor {
            return false;
        }
        self.current.insert(slot.0, location);
        true
    }

    /// Forgets (in the current view) every slot below `below`.
    pub fn truncate(&mut self, below: Slot) {
        self.summary.floor = self.summary.floor.max(below);
        self.current = self.current.split_off(&self.summary.floor.0);
    }

    /// A record holding the proposal for `slot`, buffered at `buffered`, is now durable at
    /// `stored`. Calls come in log order.
    pub fn commit_put(&mut self, slot: Slot, buffered: L, stored: L) {
        if let Some(location) = self.current.get_mut(&slot.0) {
            if *location == buffered {
                *location = stored;
            }
        }
        if slot < self.committed_floor {
            return;
        }
        if let Some(old) = self.committed.insert(slot.0, stored) {
            self.release(old);
        }
        self.acquire(stored);
    }

    /// A truncation record is now durable. Calls come in log order.
    pub fn commit_truncate(&mut self, below: Slot) {
        self.committed_floor = self.committed_floor.max(below);
        let kept = self.committed.split_off(&self.committed_floor.0);
        for location in std::mem::replace(&mut self.committed, kept).into_values() {
            self.release(location);
        }
    }

    /// Live proposals held by `container`, as committed.
    pub fn live(&self, container: u64) -> u64 {
        self.live.get(&container).copied().unwrap_or(0)
    }

    /// Slots and latest locations in `first..=last`, in slot order.
    pub fn range(&self, first: Slot, last: Slot) -> impl Iterator<Item = (Slot, L)> + '_ {
        let range = (first <= last).then(|| self.current.range(first.0..=last.0));
        range.into_iter().flatten().map(|(&slot, &location)| (Slot(slot), location))
    }

    fn acquire(&mut self, location: L) {
        if let Some(container) = location.container() {
            *self.live.entry(container).or_insert(0) += 1;
        }
    }

    fn release(&mut self, location: L) {
        if let Some(container) = location.container() {
            let count = self.live.get_mut(&container).expect("a committed location is counted");
            *count -= 1;
            if *count == 0 {
                self.live.remove(&container);
            }
        }
    }
}

/// Rebuilds a [`SlotIndex`] and the [`DurableState`] by replaying records in log order.
#[derive(Debug)]
pub(crate) struct Replay<L> {
    pub index: SlotIndex<L>,
    proposals: BTreeMap<u64, Proposal>,
    pub records: u64,
}

impl<L: Location> Default for Replay<L> {
    fn default() -> Self {
        Replay { index: SlotIndex::default(), proposals: BTreeMap::new(), records: 0 }
    }
}

impl<L: Location> Replay<L> {
    /// Applies one record; `location(i)` says where its `i`-th proposal is stored.
    pub fn apply(&mut self, record: Record, location: impl Fn(u32) -> L) {
        self.records += 1;
        match record {
            Record::Persist { promise, chosen, proposals } => {
                self.index.observe(promise, chosen);
                for (i, proposal) in proposals.into_iter().enumerate() {
                    let at = u32::try_from(i).expect("proposal index fits in u32");
                    let stored = location(at);
                    if self.index.put(proposal.slot, stored) {
                        self.index.commit_put(proposal.slot, stored, stored);
                        self.proposals.insert(proposal.slot.0, proposal);
                    }
                }
            }
            Record::Truncate { below } => self.truncate(below),
            Record::Snapshot { promise, chosen, floor } => {
                self.index.observe(Some(promise), Some(chosen));
                self.truncate(floor);
            }
        }
    }

    fn truncate(&mut self, below: Slot) {
        self.index.truncate(below);
        self.index.commit_truncate(below);
        let floor = self.index.summary().floor;
        self.proposals = self.proposals.split_off(&floor.0);
    }

    /// The index and what the log holds. `checkpoint` is left at zero: the caller fills it
    /// in from the checkpoint it loads.
    pub fn finish(self) -> (SlotIndex<L>, DurableState) {
        let summary = self.index.summary();
        let state = DurableState {
            promise: summary.promise,
            proposals: self.proposals.into_values().collect(),
            chosen: summary.chosen,
            checkpoint: Slot::ZERO,
            configuration: None,
        };
        (self.index, state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    struct At(Option<u64>);

    impl Location for At {
        fn container(&self) -> Option<u64> {
            self.0
        }
    }

    #[test]
    fn live_counts_follow_committed_state_only() {
        let mut index = SlotIndex::<At>::default();
        let buffered = At(None);
        for slot in [1, 2, 3] {
            assert!(index.put(Slot(slot), buffered));
        }
        index.commit_put(Slot(1), buffered, At(Some(10)));
        index.commit_put(Slot(2), buffered, At(Some(10)));
        assert_eq!(index.live(10), 2);
        // A buffered replacement and a buffered truncation release nothing until committed.
        assert!(index.put(Slot(2), buffered));
        index.truncate(Slot(2));
        assert_eq!(index.live(10), 2);
        assert_eq!(index.range(Slot(0), Slot(9)).map(|(s, _)| s.0).collect::<Vec<_>>(), vec![2, 3]);
        // Commits arrive in log order: slot 3, the replacement of 2, then the truncation.
        index.commit_put(Slot(3), buffered, At(Some(11)));
        index.commit_put(Slot(2), buffered, At(Some(11)));
        assert_eq!((index.live(10), index.live(11)), (1, 2));
        index.commit_truncate(Slot(2));
        assert_eq!((index.live(10), index.live(11)), (0, 2));
        assert!(!index.put(Slot(1), At(Some(12))), "below the floor");
        assert_eq!(index.last_slot(), Slot(3));
        assert_eq!(index.highest_slot(), Slot(3));
        assert_eq!(index.range(Slot(9), Slot(0)).count(), 0);
    }
}
