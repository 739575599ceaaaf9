//! The part of a configuration that the memo compares exactly: which completed
//! operations are linearized ([`Linearized`], kept in `O(concurrency)` words), and its
//! encoding together with the register's class and the run context ([`encode`]).

use super::register::Class;

/// The set of completed operations linearized, by their numbers in call order: `hi`, one
/// past the highest linearized number, and the sorted numbers below it that are not
/// linearized (`missing`). An operation can only be linearized while its call precedes
/// every pending response, so `missing` never holds more than the operations concurrent
/// at one instant.
#[derive(Debug)]
pub(super) struct Linearized {
    /// One past the highest linearized completed operation number.
    hi: u32,
    /// Sorted numbers below `hi` of completed operations not linearized.
    missing: Vec<u32>,
    /// Completed operations not linearized, all numbers counted.
    left: usize,
}

/// How to undo [`Linearized::insert`].
#[derive(Debug, Clone, Copy)]
pub(super) enum Undo {
    /// The operation was removed from `missing` at this position.
    Reinsert(usize),
    /// `missing` was extended from this length, and `hi` raised from this.
    Truncate { len: usize, hi: u32 },
}

impl Linearized {
    /// None of `completed` operations linearized.
    pub(super) fn new(completed: usize) -> Linearized {
        Linearized { hi: 0, missing: Vec::new(), left: completed }
    }

    /// How many completed operations are not linearized.
    #[inline]
    pub(super) fn left(&self) -> usize {
        self.left
    }

    /// Marks operation `id` linearized. `None` if it already was (unreachable: the
    /// search only offers operations still pending).
    #[inline]
    pub(super) fn insert(&mut self, id: u32) -> Option<Undo> {
        let undo = if id < self.hi {
            let position = self.missing.binary_search(&id).ok()?;
            self.missing.remove(position);
            Undo::Reinsert(position)
        } else {
            let undo = Undo::Truncate { len: self.missing.len(), hi: self.hi };
            self.missing.extend(self.hi..id);
            self.hi = id + 1;
            undo
        };
        self.left -= 1;
        Some(undo)
    }

    /// Undoes the [`Linearized::insert`] of `id` that returned `undo` (the last one not
    /// undone yet).
    #[inline]
    pub(super) fn undo(&mut self, id: u32, undo: Undo) {
        match undo {
            Undo::Reinsert(position) => self.missing.insert(position, id),
            Undo::Truncate { len, hi } => {
                self.missing.truncate(len);
                self.hi = hi;
            }
        }
        self.left += 1;
    }
}

/// Encodes the base of a configuration into `buf`: the register's class,
/// the run context, `hi`, flags, the cas of unknown outcome linearized (as a
/// 128-bit Zobrist fingerprint of the set, if not empty), and the set of
/// completed operations linearized, given by `hi` and the sorted
/// unlinearized numbers below it (`missing`), which are written either as a
/// list or, if shorter, as a bitmask over `missing[0]..hi`.
#[inline]
pub(super) fn encode(
    buf: &mut Vec<u32>,
    state: Class,
    run_start: Option<Class>,
    cas_used: [u64; 2],
    linearized: &Linearized,
) {
    const CAS_USED: u32 = 1;
    const BITMASK: u32 = 2;
    let Linearized { hi, missing, .. } = linearized;
    let hi = *hi;
    buf.clear();
    buf.extend_from_slice(&[state, run_start.map_or(0, |start| start + 1), hi, 0]);
    if cas_used != [0, 0] {
        buf[3] |= CAS_USED;
        for word in cas_used {
            buf.extend_from_slice(&[word as u32, (word >> 32) as u32]);
        }
    }
    let Some(&lo) = missing.first() else {
        return;
    };
    let words = (hi - lo).div_ceil(32) as usize;
    if words < missing.len() {
        buf[3] |= BITMASK;
        buf.push(lo);
        let start = buf.len();
        buf.resize(start + words, 0);
        for &id in missing {
            let bit = (id - lo) as usize;
            buf[start + bit / 32] |= 1 << (bit % 32);
        }
    } else {
        buf.extend_from_slice(missing);
    }
}
