//! What the linearized operations have used up, for the value-class and subsumption
//! reductions: per class, how many operations left can still tell it apart, and which
//! unknown-outcome operations are linearized (counts of interchangeable puts and deletes,
//! a Zobrist fingerprint of the cas).

use std::collections::BTreeSet;

use super::register::{Class, Step, ANON};
use crate::rng::mix64;

/// The usage counters of the current configuration.
#[derive(Debug)]
pub(super) struct Usage {
    /// Per class, how many operations not yet linearized compare the
    /// register against it. A class none of them does is, from then on,
    /// indistinguishable from [`ANON`] (see [`Usage::canon`]).
    remaining: Vec<u32>,
    /// Per class, how many puts and deletes of unknown outcome writing it
    /// are linearized. Equal operations are interchangeable and always used
    /// earliest call first, so the count identifies which.
    used_counts: Vec<u32>,
    /// The classes with such operations linearized that some operation left
    /// distinguishes.
    live_used: BTreeSet<Class>,
    /// How many of them write a class no operation left distinguishes: all
    /// such operations are interchangeable once called.
    anonymous: u32,
    /// Fingerprint of the cas of unknown outcome linearized.
    cas_used: [u64; 2],
}

impl Usage {
    /// Nothing linearized yet among `steps`, the key's operations (completed and of
    /// unknown outcome), over `classes` classes.
    pub(super) fn new(classes: usize, steps: impl Iterator<Item = Step>) -> Usage {
        let mut remaining = vec![0u32; classes];
        for step in steps {
            if let Some(class) = step.distinguishes() {
                remaining[class as usize] += 1;
            }
        }
        Usage {
            used_counts: vec![0; remaining.len()],
            remaining,
            live_used: BTreeSet::new(),
            anonymous: 0,
            cas_used: [0, 0],
        }
    }

    /// `class`, or [`ANON`] if no operation left can tell it apart.
    #[inline]
    pub(super) fn canon(&self, class: Class) -> Class {
        if self.remaining[class as usize] == 0 {
            ANON
        } else {
            class
        }
    }

    /// Fingerprint of the cas of unknown outcome linearized.
    #[inline]
    pub(super) fn cas_used(&self) -> [u64; 2] {
        self.cas_used
    }

    /// Adjusts `remaining` for linearizing or un-linearizing a step. When a
    /// class becomes (or stops being) indistinguishable, the puts and deletes
    /// of unknown outcome writing it that were used join (or leave)
    /// `anonymous`.
    #[inline]
    pub(super) fn count(&mut self, step: Step, linearized: bool) {
        let Some(class) = step.distinguishes() else {
            return;
        };
        let class = class as usize;
        let before = self.remaining[class];
        self.remaining[class] = if linearized { before.saturating_sub(1) } else { before + 1 };
        if (before == 0) != (self.remaining[class] == 0) && self.used_counts[class] > 0 {
            if linearized {
                self.anonymous += self.used_counts[class];
                self.live_used.remove(&(class as Class));
            } else {
                self.anonymous -= self.used_counts[class];
                self.live_used.insert(class as Class);
            }
        }
    }

    /// Records linearizing (or un-linearizing, which must happen in the
    /// reverse order) unknown-outcome operation `id`, whose step is `step`.
    #[inline]
    pub(super) fn use_optional(&mut self, id: usize, step: Step, linearized: bool) {
        if linearized {
            self.count(step, true);
        }
        match step {
            Step::Set(class) => {
                let dead = self.remaining[class as usize] == 0;
                let count = &mut self.used_counts[class as usize];
                if linearized {
                    *count += 1;
                } else {
                    *count = count.saturating_sub(1);
                }
                if dead {
                    if linearized {
                        self.anonymous += 1;
                    } else {
                        self.anonymous -= 1;
                    }
                } else if *count == 0 {
                    self.live_used.remove(&class);
                } else {
                    self.live_used.insert(class);
                }
            }
            _ => self.cas_used = xor(self.cas_used, zobrist(id)),
        }
        if !linearized {
            self.count(step, false);
        }
    }

    /// Writes the dominance vector of the configuration to `buf`: the anonymous count,
    /// then `(class, count)` for the distinguishable classes used.
    #[inline]
    pub(super) fn dominance(&self, buf: &mut Vec<u32>) {
        buf.clear();
        buf.push(self.anonymous);
        for &class in &self.live_used {
            buf.extend_from_slice(&[class, self.used_counts[class as usize]]);
        }
    }
}

/// The 128-bit Zobrist code of an unknown-outcome operation; the set of the
/// cas of unknown outcome linearized is fingerprinted by XOR-ing the codes
/// of its members.
fn zobrist(id: usize) -> [u64; 2] {
    let id = id as u64;
    [mix64(id.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x243f_6a88_85a3_08d3), mix64(id ^ 0x1319_8a2e_0370_7344)]
}

/// XOR of two Zobrist codes.
fn xor(a: [u64; 2], b: [u64; 2]) -> [u64; 2] {
    [a[0] ^ b[0], a[1] ^ b[1]]
}
