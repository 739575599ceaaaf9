//! The register model the search runs: values up to indistinguishability ([`Class`]),
//! and every operation's transition compiled once into a [`Step`] over classes.

use super::memo::FastMap;
use crate::{Input, Operation, Output};

/// A register value up to indistinguishability. Only the values some
/// operation of the key reads or compares against (the expected value of a
/// cas) can be told apart; every other value behaves identically in every
/// operation, so they all share class [`ANON`]. Searching over classes
/// instead of values merges configurations that differ only in such a value.
pub(super) type Class = u32;

/// The class of all values no operation reads or compares against.
pub(super) const ANON: Class = 0;

/// Assigns classes to register values.
#[derive(Debug, Default)]
pub(super) struct Classes {
    ids: FastMap<Option<i64>, Class>,
}

impl Classes {
    pub(super) fn new(ops: &[(usize, &Operation)]) -> Classes {
        let mut classes = Classes::default();
        for (_, op) in ops {
            let distinguished = match (&op.input, &op.output) {
                (Input::Cas { expected, .. }, _) => Some(*expected),
                (Input::Get, Some(Output::Get { value })) => Some(*value),
                _ => None,
            };
            if let Some(value) = distinguished {
                let next = classes.ids.len() as Class + 1;
                classes.ids.entry(value).or_insert(next);
            }
        }
        classes
    }

    pub(super) fn of(&self, value: Option<i64>) -> Class {
        self.ids.get(&value).copied().unwrap_or(ANON)
    }

    /// How many classes there are, [`ANON`] included: classes are `0..count()`.
    pub(super) fn count(&self) -> usize {
        self.ids.len() + 1
    }
}

/// The register transition of one operation, precompiled from its input and
/// output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Unconditionally set the register (put, delete; any outcome).
    Set(Class),
    /// A completed read: legal only if the register holds exactly this.
    Read(Class),
    /// A successful compare-and-set: legal only if the register == expected.
    CasOk { expected: Class, new: Class },
    /// A compare-and-set reported as not applied: legal only if the register
    /// differs from expected.
    CasFailed { expected: Class },
    /// A compare-and-set of unknown outcome: swaps iff register == expected.
    CasMaybe { expected: Class, new: Class },
    /// The output does not match the input: never legal.
    Impossible,
}

impl Step {
    /// Compiles an operation; `None` for operations that cannot affect the
    /// verdict (a get with unknown outcome neither changes the register nor
    /// constrains it).
    pub(super) fn compile(op: &Operation, classes: &Classes) -> Option<Step> {
        let class = |value: Option<i64>| classes.of(value);
        match (&op.input, &op.output) {
            (Input::Put { value }, None | Some(Output::Put)) => Some(Step::Set(class(Some(*value)))),
            (Input::Delete, None | Some(Output::Delete)) => Some(Step::Set(class(None))),
            (Input::Get, None) => None,
            (Input::Get, Some(Output::Get { value })) => Some(Step::Read(class(*value))),
            (Input::Cas { expected, new }, None) => {
                Some(Step::CasMaybe { expected: class(*expected), new: class(Some(*new)) })
            }
            (Input::Cas { expected, new }, Some(Output::Cas { ok: true })) => {
                Some(Step::CasOk { expected: class(*expected), new: class(Some(*new)) })
            }
            (Input::Cas { expected, .. }, Some(Output::Cas { ok: false })) => {
                Some(Step::CasFailed { expected: class(*expected) })
            }
            (_, Some(_)) => Some(Step::Impossible),
        }
    }

    /// The register after the step, or `None` if the step is illegal from
    /// `state`.
    #[inline]
    pub(super) fn apply(self, state: Class) -> Option<Class> {
        match self {
            Step::Set(value) => Some(value),
            Step::Read(value) => (state == value).then_some(state),
            Step::CasOk { expected, new } => (state == expected).then_some(new),
            Step::CasFailed { expected } => (state != expected).then_some(state),
            Step::CasMaybe { expected, new } => Some(if state == expected { new } else { state }),
            Step::Impossible => None,
        }
    }

    /// The class whose value the step compares the register against.
    #[inline]
    pub(super) fn distinguishes(self) -> Option<Class> {
        match self {
            Step::Read(class)
            | Step::CasOk { expected: class, .. }
            | Step::CasFailed { expected: class }
            | Step::CasMaybe { expected: class, .. } => Some(class),
            Step::Set(_) | Step::Impossible => None,
        }
    }

    /// Whether the step never changes the register, whatever its value.
    pub(super) fn is_pure(self) -> bool {
        match self {
            Step::Read(_) | Step::CasFailed { .. } | Step::Impossible => true,
            Step::CasOk { expected, new } | Step::CasMaybe { expected, new } => expected == new,
            Step::Set(_) => false,
        }
    }
}

/// The first of the `completed` steps that can never be legal, whatever the order: an
/// output that does not match its input, or a read (or successful comparison) of a class
/// that is neither `initial` nor written by any step, completed or `optional`. `classes`
/// is [`Classes::count`].
pub(super) fn never_legal(
    completed: &[Step],
    optional: &[Step],
    classes: usize,
    initial: Class,
) -> Option<usize> {
    let mut producible = vec![false; classes];
    producible[initial as usize] = true;
    for step in completed.iter().chain(optional) {
        match *step {
            Step::Set(class) | Step::CasOk { new: class, .. } | Step::CasMaybe { new: class, .. } => {
                producible[class as usize] = true;
            }
            Step::Read(_) | Step::CasFailed { .. } | Step::Impossible => {}
        }
    }
    completed.iter().position(|step| match *step {
        Step::Read(class) | Step::CasOk { expected: class, .. } => !producible[class as usize],
        Step::Impossible => true,
        Step::Set(_) | Step::CasFailed { .. } | Step::CasMaybe { .. } => false,
    })
}
