//! The catch-up fetch window: the fetches a lagging replica keeps outstanding, each for a
//! range of chosen values from one peer, at most `fetch_window` at once and never
//! overlapping. A fetch ends when a reply with values answers it, or expires.

use crate::time::{Micros, Time};
use crate::types::{NodeId, Slot};

/// A fetch sent and not yet answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct PendingFetch {
    pub(super) to: NodeId,
    pub(super) first: Slot,
    pub(super) last: Slot,
    /// When to give up on it.
    pub(super) until: Time,
}

/// The limits of a window, from the configuration.
#[derive(Clone, Copy, Debug)]
pub(super) struct WindowLimits {
    /// Fetches outstanding at once.
    pub(super) fetches_max: usize,
    /// Slots per fetch.
    pub(super) slots_max: u64,
    /// How long a fetch waits for its reply before it is asked again.
    pub(super) expiry: Micros,
}

/// Outstanding fetches, oldest first.
#[derive(Clone, Debug, Default)]
pub(super) struct FetchWindow {
    pending: Vec<PendingFetch>,
}

impl FetchWindow {
    /// Opens fetches to `to` for the slots from `start` up to `target` that are neither
    /// held as chosen (`is_known_chosen`) nor covered by an outstanding fetch, in ranges of
    /// up to `slots_max`, until `fetches_max` are outstanding. Forgets fetches that expired
    /// by `now` or whose slots are all held. Returns the fetches opened, to be sent.
    pub(super) fn fill(
        &mut self,
        to: NodeId,
        start: Slot,
        target: Slot,
        now: Time,
        limits: WindowLimits,
        is_known_chosen: impl Fn(Slot) -> bool,
    ) -> Vec<PendingFetch> {
        self.pending.retain(|f| f.until > now && f.last >= start);
        let until = now.plus(limits.expiry);
        let mut opened = Vec::new();
        let mut cursor = start;
        while self.pending.len() < limits.fetches_max {
            loop {
                if is_known_chosen(cursor) {
                    cursor = cursor.next();
                } else if let Some(f) = self.pending.iter().find(|f| f.first <= cursor && cursor <= f.last) {
                    cursor = f.last.next();
                } else {
                    break;
                }
            }
            if cursor > target {
                break;
            }
            let mut last = Slot(target.0.min(cursor.0.saturating_add(limits.slots_max - 1)));
            if let Some(next) = self.pending.iter().map(|f| f.first).filter(|&first| first > cursor).min() {
                last = last.min(Slot(next.0 - 1));
            }
            let fetch = PendingFetch { to, first: cursor, last, until };
            self.pending.push(fetch);
            opened.push(fetch);
            cursor = last.next();
        }
        postcondition!(
            self.pending.iter().enumerate().all(|(i, f)| f.first <= f.last
                && self.pending[i + 1..].iter().all(|g| g.last < f.first || f.last < g.first)),
            "outstanding fetches ask for non-empty ranges that do not overlap"
        );
        opened
    }

    /// A reply from `from` whose first value is at `first` ends the fetch it answers.
    pub(super) fn end(&mut self, from: NodeId, first: Slot) {
        if let Some(index) = self.pending.iter().position(|f| f.to == from && f.first == first) {
            self.pending.remove(index);
        }
    }

    /// Forgets every outstanding fetch.
    pub(super) fn clear(&mut self) {
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: WindowLimits = WindowLimits { fetches_max: 3, slots_max: 10, expiry: Micros(10) };

    fn ranges(fetches: &[PendingFetch]) -> Vec<(u64, u64)> {
        fetches.iter().map(|f| (f.first.0, f.last.0)).collect()
    }

    #[test]
    fn fills_up_to_the_window_in_disjoint_ranges() {
        let mut window = FetchWindow::default();
        let opened = window.fill(NodeId(2), Slot(1), Slot(100), Time(0), LIMITS, |_| false);
        assert_eq!(ranges(&opened), vec![(1, 10), (11, 20), (21, 30)]);
        let again = window.fill(NodeId(2), Slot(1), Slot(100), Time(1), LIMITS, |_| false);
        assert!(again.is_empty(), "the window is full");
    }

    #[test]
    fn a_reply_frees_room_and_the_gap_is_asked_again() {
        let mut window = FetchWindow::default();
        window.fill(NodeId(2), Slot(1), Slot(100), Time(0), LIMITS, |_| false);
        window.end(NodeId(2), Slot(1));
        // The reply held slots 1..=4: start moves to 5; 5..=10 is asked again.
        let opened = window.fill(NodeId(2), Slot(5), Slot(100), Time(1), LIMITS, |_| false);
        assert_eq!(ranges(&opened), vec![(5, 10)]);
    }

    #[test]
    fn held_chosen_slots_and_expired_fetches_are_skipped() {
        let mut window = FetchWindow::default();
        window.fill(NodeId(2), Slot(1), Slot(15), Time(0), LIMITS, |_| false);
        // Expired: everything is asked again, around slots already held as chosen.
        let opened = window.fill(NodeId(3), Slot(1), Slot(15), Time(10), LIMITS, |s| s.0 <= 3);
        assert_eq!(ranges(&opened), vec![(4, 13), (14, 15)]);
        assert!(opened.iter().all(|f| f.to == NodeId(3)));
    }

    #[test]
    fn a_new_range_stops_before_an_outstanding_one() {
        let mut window = FetchWindow::default();
        window.fill(NodeId(2), Slot(5), Slot(8), Time(0), LIMITS, |_| false);
        let opened = window.fill(NodeId(2), Slot(1), Slot(30), Time(1), LIMITS, |_| false);
        assert_eq!(ranges(&opened), vec![(1, 4), (9, 18)]);
        window.clear();
        assert_eq!(window.fill(NodeId(2), Slot(1), Slot(2), Time(2), LIMITS, |_| false).len(), 1);
    }
}
