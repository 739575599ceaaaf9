//! One key's operations compiled for the search: the completed ones ([`CompletedOps`],
//! which must all be linearized) and those of unknown outcome ([`OptionalOps`], which
//! may be), after leaving out the unknown-outcome operations that can make no
//! difference.

use super::memo::FastMap;
use super::register::{Class, Classes, Step, ANON};
use crate::Operation;

/// A key's operations, compiled.
#[derive(Debug)]
pub(super) struct Compiled {
    /// The classes of the key's values.
    pub(super) classes: Classes,
    /// The completed operations, numbered in call order.
    pub(super) completed: CompletedOps,
    /// Their `(call, return)` times, by number.
    pub(super) intervals: Vec<(u64, u64)>,
    /// The unknown-outcome operations that can make a difference.
    pub(super) optional: OptionalOps,
}

/// Compiles `ops`, `(index in the history, operation)` pairs of one key.
pub(super) fn compile(ops: &[(usize, &Operation)]) -> Compiled {
    let classes = Classes::new(ops);
    // (global index, call, return, step), in call order.
    let mut compiled: Vec<(usize, u64, Option<u64>, Step)> = ops
        .iter()
        .filter_map(|&(global, op)| {
            let step = Step::compile(op, &classes)?;
            let ret = op.output.as_ref().map(|_| op.return_ns.unwrap_or(u64::MAX).max(op.call_ns));
            Some((global, op.call_ns, ret, step))
        })
        .collect();
    compiled.sort_by_key(|&(global, call, _, _)| (call, global));
    let mut required: Vec<(usize, u64, u64, Step)> = Vec::new();
    let mut optional: Vec<(usize, u64, Step)> = Vec::new();
    for (global, call, ret, step) in compiled {
        match ret {
            Some(ret) => required.push((global, call, ret, step)),
            None => optional.push((global, call, step)),
        }
    }
    // Unknown-outcome operations that can make no difference are left
    // out (each rule is exact):
    // * one called after every completed operation returned could only
    //   be linearized after all of them;
    // * one that leaves the register holding a value no operation reads
    //   or compares against ([`ANON`]) can only help a cas reported as
    //   not applied (the one step that needs the register to differ from
    //   a value), so without such a cas it is useless.
    let last_return = required.iter().map(|&(_, _, ret, _)| ret).max().unwrap_or(0);
    let has_failed_cas = required.iter().any(|&(.., step)| matches!(step, Step::CasFailed { .. }));
    optional.retain(|&(_, call, step)| {
        let writes_anonymous = matches!(step, Step::Set(ANON) | Step::CasMaybe { new: ANON, .. });
        call <= last_return && (has_failed_cas || !writes_anonymous)
    });
    let completed = CompletedOps {
        step: required.iter().map(|op| op.3).collect(),
        global: required.iter().map(|op| op.0).collect(),
        kind: Completed {
            pure: required.iter().map(|op| op.3.is_pure()).collect(),
            priority: required.iter().map(|&(_, call, ret, _)| call / 2 + ret / 2).collect(),
        },
    };
    Compiled {
        classes,
        completed,
        intervals: required.iter().map(|&(_, call, ret, _)| (call, ret)).collect(),
        optional: OptionalOps::new(optional),
    }
}

/// Operations numbered in call order: each one's step and index in the history, and
/// what the search keeps of them by kind ([`Completed`] or [`Optional`]).
#[derive(Debug, Default)]
pub(super) struct Ops<K> {
    step: Vec<Step>,
    global: Vec<usize>,
    kind: K,
}

/// The completed operations of a key, which must all be linearized.
pub(super) type CompletedOps = Ops<Completed>;

/// The unknown-outcome operations of a key, which may be linearized.
pub(super) type OptionalOps = Ops<Optional>;

impl<K> Ops<K> {
    /// How many there are.
    #[inline]
    pub(super) fn len(&self) -> usize {
        self.step.len()
    }

    /// Every operation's step, by number.
    #[inline]
    pub(super) fn steps(&self) -> &[Step] {
        &self.step
    }

    /// Operation `id`'s step.
    #[inline]
    pub(super) fn step(&self, id: usize) -> Step {
        self.step[id]
    }

    /// Operation `id`'s index in the history.
    #[inline]
    pub(super) fn global(&self, id: usize) -> usize {
        self.global[id]
    }
}

/// What the search orders and forces completed operations by.
#[derive(Debug)]
pub(super) struct Completed {
    /// Whether the operation never changes the register.
    pure: Vec<bool>,
    /// Order in which pending completed operations are tried: by the
    /// midpoint of their interval, the likeliest linearization order.
    priority: Vec<u64>,
}

impl CompletedOps {
    /// Whether operation `id` never changes the register.
    #[inline]
    pub(super) fn is_pure(&self, id: usize) -> bool {
        self.kind.pure[id]
    }

    /// The key to sort candidates by: the midpoint of the interval, then the number.
    #[inline]
    pub(super) fn order(&self, id: usize) -> (u64, usize) {
        (self.kind.priority[id], id)
    }
}

/// Unknown-outcome operations indexed for run generation.
#[derive(Debug, Default)]
pub(super) struct Optional {
    call: Vec<u64>,
    done: Vec<bool>,
    /// Puts and deletes by the class they write, each list in call order.
    set_by_class: FastMap<Class, Vec<usize>>,
    /// The keys of `set_by_class`, sorted.
    set_classes: Vec<Class>,
    /// State-changing cas by expected class, each list in call order.
    cas_by_expected: FastMap<Class, Vec<usize>>,
    /// State-changing cas by new class, each list in call order.
    cas_by_new: FastMap<Class, Vec<usize>>,
}

impl OptionalOps {
    /// `ops` are `(global index, call time, step)` in call order.
    fn new(ops: Vec<(usize, u64, Step)>) -> OptionalOps {
        let mut index = OptionalOps::default();
        for (id, (global, call, step)) in ops.into_iter().enumerate() {
            index.step.push(step);
            index.global.push(global);
            let optional = &mut index.kind;
            optional.call.push(call);
            optional.done.push(false);
            match step {
                Step::Set(class) => optional.set_by_class.entry(class).or_default().push(id),
                Step::CasMaybe { expected, new } if expected != new => {
                    optional.cas_by_expected.entry(expected).or_default().push(id);
                    optional.cas_by_new.entry(new).or_default().push(id);
                }
                _ => {}
            }
        }
        let optional = &mut index.kind;
        optional.set_classes = optional.set_by_class.keys().copied().collect();
        optional.set_classes.sort_unstable();
        index
    }

    /// Marks operation `id` linearized or not.
    #[inline]
    pub(super) fn set_done(&mut self, id: usize, done: bool) {
        self.kind.done[id] = done;
    }

    /// The classes some put or delete writes, sorted.
    #[inline]
    pub(super) fn set_classes(&self) -> &[Class] {
        &self.kind.set_classes
    }

    /// The earliest-called put or delete writing `class` that was called by `frontier`
    /// and is not yet linearized (equal ones are interchangeable).
    #[inline]
    pub(super) fn first_setter(&self, class: Class, frontier: u64) -> Option<usize> {
        let list = self.kind.set_by_class.get(&class)?;
        self.available(list, frontier).next()
    }

    /// The state-changing cas expecting `class`, called by `frontier` and not yet
    /// linearized, in call order.
    #[inline]
    pub(super) fn cas_from(&self, class: Class, frontier: u64) -> Available<'_> {
        let list = self.kind.cas_by_expected.get(&class).map_or(&[][..], Vec::as_slice);
        self.available(list, frontier)
    }

    /// The operations of `list` called by `frontier` and not yet linearized.
    #[inline]
    fn available<'a>(&'a self, list: &'a [usize], frontier: u64) -> Available<'a> {
        Available { optional: &self.kind, list: list.iter(), frontier }
    }

    /// Adds to `classes` every class from which a chain of available cas
    /// leads to `target`, and `target` itself.
    #[inline]
    pub(super) fn chain_sources(&self, target: Class, frontier: u64, classes: &mut Vec<Class>) {
        let mut todo = vec![target];
        while let Some(class) = todo.pop() {
            if classes.contains(&class) {
                continue;
            }
            classes.push(class);
            if let Some(list) = self.kind.cas_by_new.get(&class) {
                for id in self.available(list, frontier) {
                    if let Step::CasMaybe { expected, .. } = self.step(id) {
                        todo.push(expected);
                    }
                }
            }
        }
    }
}

/// Iterator of [`OptionalOps::cas_from`] and the like: the operations of a list (in call
/// order) called by `frontier` and not yet linearized. A plain loop rather than iterator
/// adapters: it runs at every search step, and this keeps it small enough to inline.
#[derive(Debug)]
pub(super) struct Available<'a> {
    optional: &'a Optional,
    list: std::slice::Iter<'a, usize>,
    frontier: u64,
}

impl Iterator for Available<'_> {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        for &id in self.list.by_ref() {
            if self.optional.call[id] > self.frontier {
                // The rest were called later still.
                self.list = [].iter();
                return None;
            }
            if !self.optional.done[id] {
                return Some(id);
            }
        }
        None
    }
}
