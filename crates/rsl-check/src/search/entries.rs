//! Wing & Gong's list: the call and return entries of a key's completed operations in
//! time order, from which an operation is removed when it is linearized. Removal is
//! dancing-links style (a removed node remembers its neighbours), so removals undone in
//! reverse order restore the list exactly.

/// Sentinel for "no node".
const NO_NODE: usize = usize::MAX;
/// Index of the list's head sentinel.
const HEAD: usize = 0;

/// The entry list of the completed operations (numbered in call order), over index
/// arrays. Node 0 is the head sentinel, nodes `1..=2n` the entries, `2n + 1` the tail.
#[derive(Debug)]
pub(super) struct Entries {
    next: Vec<usize>,
    prev: Vec<usize>,
    tail: usize,
    /// Per node: the operation, the time, and whether it is a return entry.
    node_op: Vec<usize>,
    node_time: Vec<u64>,
    node_is_return: Vec<bool>,
    /// Per operation: its call and return nodes.
    call_node: Vec<usize>,
    return_node: Vec<usize>,
}

impl Entries {
    /// The list of the operations whose `(call, return)` times are `intervals`, in
    /// operation order. At equal times calls precede returns, so touching intervals are
    /// concurrent.
    pub(super) fn new(intervals: &[(u64, u64)]) -> Entries {
        let n = intervals.len();
        let mut entries: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
        for (id, &(call, ret)) in intervals.iter().enumerate() {
            entries.push((call, false, id));
            entries.push((ret, true, id));
        }
        entries.sort_unstable();
        let tail = entries.len() + 1;
        let mut node_op = vec![0usize; tail + 1];
        let mut node_time = vec![u64::MAX; tail + 1];
        let mut node_is_return = vec![false; tail + 1];
        let mut call_node = vec![NO_NODE; n];
        let mut return_node = vec![NO_NODE; n];
        for (position, &(time, is_return, id)) in entries.iter().enumerate() {
            let node = position + 1;
            node_op[node] = id;
            node_time[node] = time;
            node_is_return[node] = is_return;
            if is_return {
                return_node[id] = node;
            } else {
                call_node[id] = node;
            }
        }
        let len = tail + 1;
        Entries {
            next: (1..=len).collect(),
            prev: (0..len).map(|i| i.wrapping_sub(1)).collect(),
            tail,
            node_op,
            node_time,
            node_is_return,
            call_node,
            return_node,
        }
    }

    /// The first pending return entry (or the tail).
    #[inline]
    pub(super) fn first_return(&self) -> usize {
        let mut node = self.next[HEAD];
        while node != self.tail && !self.node_is_return[node] {
            node = self.next[node];
        }
        node
    }

    /// Whether `node` is the tail sentinel (no return entry is pending).
    #[inline]
    pub(super) fn is_tail(&self, node: usize) -> bool {
        node == self.tail
    }

    /// The time of entry `node` (`u64::MAX` for the tail).
    #[inline]
    pub(super) fn time(&self, node: usize) -> u64 {
        self.node_time[node]
    }

    /// The operation of entry `node`.
    #[inline]
    pub(super) fn op(&self, node: usize) -> usize {
        self.node_op[node]
    }

    /// The operations whose call entries precede the first pending return entry: those
    /// that may be linearized next, in list order.
    #[inline]
    pub(super) fn pending_calls(&self) -> PendingCalls<'_> {
        PendingCalls { entries: self, node: self.next[HEAD] }
    }

    /// Removes operation `id`'s entries (it was linearized).
    #[inline]
    pub(super) fn remove(&mut self, id: usize) {
        self.unlink(self.call_node[id]);
        self.unlink(self.return_node[id]);
    }

    /// Puts back operation `id`'s entries, undoing the last [`Entries::remove`].
    #[inline]
    pub(super) fn restore(&mut self, id: usize) {
        self.relink(self.return_node[id]);
        self.relink(self.call_node[id]);
    }

    fn unlink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = next;
        self.prev[next] = prev;
    }

    fn relink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = node;
        self.prev[next] = node;
    }
}

/// Iterator of [`Entries::pending_calls`].
#[derive(Debug)]
pub(super) struct PendingCalls<'a> {
    entries: &'a Entries,
    node: usize,
}

impl Iterator for PendingCalls<'_> {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        let node = self.node;
        if node == self.entries.tail || self.entries.node_is_return[node] {
            return None;
        }
        self.node = self.entries.next[node];
        Some(self.entries.node_op[node])
    }
}
