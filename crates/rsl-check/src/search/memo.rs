//! The memo of explored configurations (Lowe's cache) with subsumption, and the fast
//! hasher of the search's tables.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// FxHash-style hasher with a final avalanche; the cache keys are not
/// attacker-controlled, so a fast non-cryptographic hash is appropriate.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct FastHasher {
    hash: u64,
}

impl FastHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 59));
        }
    }

    fn write_u32(&mut self, value: u32) {
        self.add(u64::from(value));
    }

    fn write_u64(&mut self, value: u64) {
        self.add(value);
    }

    fn write_usize(&mut self, value: usize) {
        self.add(value as u64);
    }

    fn finish(&self) -> u64 {
        // murmur3 fmix64, so that hashbrown's use of both the high and the
        // low bits sees well-mixed values.
        let mut h = self.hash;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

pub(super) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// Memo cache of the configurations entered, with subsumption: each is
/// split into a base (`configuration::encode`), compared exactly, and a
/// dominance vector of counts of unknown-outcome operations used
/// (`Usage::dominance`). Among
/// configurations with equal bases, one that used no more of any kind
/// dominates: it can do everything the other can.
///
/// Bases live in one arena and are found through an open-addressing table
/// of offsets, which keeps a configuration to a few dozen bytes.
#[derive(Debug, Default)]
pub(super) struct Memo {
    /// Records `[base length, base.., vectors]`, where `vectors` is 0 for
    /// the usual single dominance vector [`Memo::NOTHING_USED`] (which
    /// dominates every other), or `1 + i` for the vectors in `vectors[i]`.
    arena: Vec<u32>,
    /// Offsets of records in `arena`, plus one; 0 marks an empty slot. The
    /// length is zero or a power of two.
    slots: Vec<u32>,
    /// Number of records.
    len: usize,
    /// The non-dominated dominance vectors entered with a base,
    /// concatenated, each preceded by its length.
    vectors: Vec<Vec<u32>>,
}

impl Memo {
    /// The dominance vector of a configuration that used no unknown-outcome
    /// put or delete.
    const NOTHING_USED: &'static [u32] = &[0];

    /// Whether `a` dominates `b`: `a[0] <= b[0]`, and every `(class, count)`
    /// pair of `a` (sorted by class) is matched in `b` by a count at least
    /// as large.
    fn dominates(a: &[u32], b: &[u32]) -> bool {
        let (Some((a_anonymous, a_pairs)), Some((b_anonymous, b_pairs))) = (a.split_first(), b.split_first())
        else {
            return a.is_empty();
        };
        if a_anonymous > b_anonymous {
            return false;
        }
        let mut b_pairs = b_pairs.chunks_exact(2);
        a_pairs.chunks_exact(2).all(|a_pair| loop {
            match b_pairs.next() {
                Some(b_pair) if b_pair[0] < a_pair[0] => continue,
                Some(b_pair) => break b_pair[0] == a_pair[0] && b_pair[1] >= a_pair[1],
                None => break false,
            }
        })
    }

    fn hash(base: &[u32]) -> u64 {
        let mut hasher = FastHasher::default();
        for &word in base {
            hasher.add(u64::from(word));
        }
        hasher.finish()
    }

    /// The base of the record at `offset`, and the index of its word
    /// locating its vectors.
    fn record(&self, offset: usize) -> (&[u32], usize) {
        let end = offset + 1 + self.arena[offset] as usize;
        (&self.arena[offset + 1..end], end)
    }

    /// The slot holding `base`, or the empty slot where it belongs.
    fn find(&self, base: &[u32]) -> (usize, Option<usize>) {
        let mask = self.slots.len() - 1;
        let mut index = Memo::hash(base) as usize & mask;
        loop {
            match self.slots[index] {
                0 => return (index, None),
                slot => {
                    let offset = slot as usize - 1;
                    if self.record(offset).0 == base {
                        return (index, Some(offset));
                    }
                }
            }
            index = (index + 1) & mask;
        }
    }

    /// Doubles the table.
    fn grow(&mut self) {
        let size = (self.slots.len() * 2).max(1 << 10);
        let old = std::mem::replace(&mut self.slots, vec![0; size]);
        for slot in old.into_iter().filter(|&slot| slot != 0) {
            let (index, _) = self.find(self.record(slot as usize - 1).0);
            self.slots[index] = slot;
        }
    }

    /// Records configuration (`base`, `dominance`) and returns true, unless
    /// it is dominated by one recorded before (then returns false).
    #[inline]
    pub(super) fn visit(&mut self, base: &[u32], dominance: &[u32]) -> bool {
        if 2 * (self.len + 1) > self.slots.len() {
            self.grow();
        }
        let (index, found) = self.find(base);
        let Some(offset) = found else {
            let offset = self.arena.len();
            // Offsets must fit the table; past that, stop recording (which
            // only costs pruning).
            let Some(slot) = u32::try_from(offset + 1).ok().filter(|&slot| slot < u32::MAX / 2) else {
                return true;
            };
            let vectors_slot = if dominance == Memo::NOTHING_USED {
                0
            } else {
                match u32::try_from(self.vectors.len() + 1) {
                    Ok(slot) => slot,
                    Err(_) => return true,
                }
            };
            self.arena.push(base.len() as u32);
            self.arena.extend_from_slice(base);
            self.arena.push(vectors_slot);
            if vectors_slot != 0 {
                let mut vectors = Vec::with_capacity(dominance.len() + 1);
                vectors.push(dominance.len() as u32);
                vectors.extend_from_slice(dominance);
                self.vectors.push(vectors);
            }
            self.slots[index] = slot;
            self.len += 1;
            return true;
        };
        let at = self.record(offset).1;
        let Some(vectors_index) = (self.arena[at] as usize).checked_sub(1) else {
            // It holds just [0], which dominates every vector.
            return false;
        };
        let recorded = &self.vectors[vectors_index];
        let vectors = || {
            let mut rest: &[u32] = recorded;
            std::iter::from_fn(move || {
                let (&len, tail) = rest.split_first()?;
                let (vector, tail) = tail.split_at((len as usize).min(tail.len()));
                rest = tail;
                Some(vector)
            })
        };
        if vectors().any(|vector| Memo::dominates(vector, dominance)) {
            return false;
        }
        if dominance == Memo::NOTHING_USED {
            self.arena[at] = 0;
            self.vectors[vectors_index] = Vec::new();
            return true;
        }
        let mut kept = Vec::with_capacity(recorded.len() + dominance.len() + 1);
        for vector in vectors().filter(|vector| !Memo::dominates(dominance, vector)) {
            kept.push(vector.len() as u32);
            kept.extend_from_slice(vector);
        }
        kept.push(dominance.len() as u32);
        kept.extend_from_slice(dominance);
        self.vectors[vectors_index] = kept;
        true
    }
}
