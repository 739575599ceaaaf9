//! [`KeySearch`]: the Wing & Gong search over one key's operations, composed of the
//! parts in the sibling modules. It keeps the current configuration and an explicit
//! stack of the choices that led to it; everything else it asks of its parts. See the
//! [module documentation](super) for the algorithm and the pruning rules.

use super::configuration::{self, Linearized, Undo};
use super::entries::Entries;
use super::limits::{Abort, Limits, Stuck};
use super::memo::Memo;
use super::operations::{self, Compiled, CompletedOps, OptionalOps};
use super::register::{self, Class, Step, ANON};
use super::usage::Usage;
use super::witness::Furthest;
use super::{CheckBudget, KeyOutcome};
use crate::Operation;

/// A linearization choice: a completed operation (by its number among the
/// completed operations) or an unknown-outcome one (by its number among
/// those), with its position in the list of alternatives it was taken from.
#[derive(Debug, Clone, Copy)]
enum Choice {
    Required { id: usize, undo: Undo, candidate_index: usize },
    Optional { id: usize, option_index: usize },
}

/// One linearization choice on the explicit search stack, with what is
/// needed to undo it.
#[derive(Debug, Clone, Copy)]
struct Frame {
    choice: Choice,
    /// Index of the operation in the checked history.
    global: usize,
    /// The register before it.
    state: Class,
    /// The run context before it.
    run_start: Option<Class>,
    /// Whether this was a forced (dominating) choice: if it fails, so does
    /// the configuration it was made from.
    forced: bool,
}

/// Where the search is within the current configuration.
#[derive(Debug, Clone, Copy)]
enum Cursor {
    /// Just entered: look for a forced choice first.
    Fresh,
    /// Trying completed operations, from this index of the candidate list.
    Scan(usize),
    /// Trying unknown-outcome operations, from this index of the option list.
    Options(usize),
    /// The configuration is exhausted: backtrack.
    Fail,
}

/// Buffers reused from step to step.
#[derive(Debug, Default)]
struct Scratch {
    /// The base of the configuration being entered.
    key: Vec<u32>,
    /// Its dominance vector.
    dominance: Vec<u32>,
    candidates: Vec<usize>,
    options: Vec<(usize, Class)>,
}

/// The Wing & Gong search over one key's operations.
#[derive(Debug)]
pub(super) struct KeySearch {
    // --- what is searched ------------------------------------------------
    completed: CompletedOps,
    optional: OptionalOps,
    /// The pending entries of the completed operations.
    entries: Entries,
    /// The class of the initial value, `None`.
    initial: Class,
    /// How many value classes there are.
    classes: usize,
    // --- the current configuration -------------------------------------
    state: Class,
    /// `Some(start)` while in a run of unknown-outcome operations that began
    /// with the register in class `start`.
    run_start: Option<Class>,
    linearized: Linearized,
    usage: Usage,
    // --- how the search got here and where it resumes ---------------------
    stack: Vec<Frame>,
    cursor: Cursor,
    // --- what the search remembers ---------------------------------------
    memo: Memo,
    furthest: Furthest,
    limits: Limits,
    scratch: Scratch,
}

impl KeySearch {
    /// Prepares the search; `ops` are `(index in history, operation)`.
    pub(super) fn new(ops: &[(usize, &Operation)], budget: CheckBudget) -> KeySearch {
        let Compiled { classes, completed, intervals, optional } = operations::compile(ops);
        let steps = completed.steps().iter().chain(optional.steps()).copied();
        let usage = Usage::new(classes.count(), steps);
        let initial = classes.of(None);
        KeySearch {
            entries: Entries::new(&intervals),
            linearized: Linearized::new(completed.len()),
            completed,
            optional,
            initial,
            classes: classes.count(),
            state: usage.canon(initial),
            run_start: None,
            usage,
            stack: Vec::new(),
            cursor: Cursor::Fresh,
            memo: Memo::default(),
            furthest: Furthest::default(),
            limits: Limits::new(budget),
            scratch: Scratch::default(),
        }
    }

    /// Deems the search stuck after `stuck_steps` steps without reaching a new depth
    /// (`None`: never); see [`KeySearch::run`].
    pub(super) fn set_stuck_steps(&mut self, stuck_steps: Option<u64>) {
        self.limits.set_stuck_steps(stuck_steps);
    }

    /// The operation (index in the history) whose response the furthest configuration
    /// reached without being able to linearize it, if any.
    pub(super) fn blocker(&self) -> Option<usize> {
        self.furthest.blocker()
    }

    /// The verdict, or `Err(Stuck)` if stuck steps are set and the search got stuck
    /// (calling `run` again resumes it).
    pub(super) fn run(&mut self) -> Result<KeyOutcome, Stuck> {
        let (completed, optional) = (self.completed.steps(), self.optional.steps());
        if let Some(id) = register::never_legal(completed, optional, self.classes, self.initial) {
            return Ok(KeyOutcome::NotLinearizable(vec![self.completed.global(id)]));
        }
        let operations = completed.len() + optional.len();
        Ok(match self.search() {
            Err(Abort::Stuck) => return Err(Stuck),
            Ok(true) => KeyOutcome::Linearizable,
            Ok(false) => KeyOutcome::NotLinearizable(self.furthest.witness()),
            Err(Abort::Budget) => KeyOutcome::Unknown(format!(
                "search budget of {} steps exhausted on {operations} operations (furthest partial \
                 linearization found: {} operations)",
                self.limits.max_steps(),
                self.furthest.len().max(self.stack.len())
            )),
            Err(Abort::Deadline) => KeyOutcome::Unknown(format!(
                "time limit reached after {} search steps on {operations} operations",
                self.limits.steps(),
            )),
        })
    }

    /// The search proper; `Ok(true)` if a linearization exists.
    fn search(&mut self) -> Result<bool, Abort> {
        loop {
            if self.linearized.left() == 0 {
                return Ok(true);
            }
            // An abort (`?`) leaves `self.cursor` as it was: re-entering the
            // configuration repeats work but changes nothing.
            self.cursor = match self.cursor {
                Cursor::Fresh => match self.forced_choice()? {
                    Some((id, after)) => {
                        if self.push_required(id, after, true, 0) {
                            Cursor::Fresh
                        } else {
                            // The dominating successor was explored and failed.
                            Cursor::Fail
                        }
                    }
                    None => Cursor::Scan(0),
                },
                Cursor::Scan(mut index) => {
                    let mut candidates = std::mem::take(&mut self.scratch.candidates);
                    self.candidates(&mut candidates);
                    let mut next = Cursor::Options(0);
                    while let Some(&id) = candidates.get(index) {
                        self.limits.tick()?;
                        if let Some(after) = self.successor(id) {
                            if self.push_required(id, after, false, index) {
                                next = Cursor::Fresh;
                                break;
                            }
                        }
                        index += 1;
                    }
                    self.scratch.candidates = candidates;
                    next
                }
                Cursor::Options(mut index) => {
                    let mut options = std::mem::take(&mut self.scratch.options);
                    self.options(&mut options);
                    let mut next = Cursor::Fail;
                    while let Some(&(id, after)) = options.get(index) {
                        self.limits.tick()?;
                        if self.push_optional(id, after, index) {
                            next = Cursor::Fresh;
                            break;
                        }
                        index += 1;
                    }
                    self.scratch.options = options;
                    if matches!(next, Cursor::Fail) {
                        // Exhausted at the first pending response.
                        let node = self.entries.first_return();
                        if !self.entries.is_tail(node) {
                            let blocker = self.completed.global(self.entries.op(node));
                            self.furthest.consider(node, &self.stack, |frame| frame.global, blocker);
                        }
                    }
                    next
                }
                Cursor::Fail => {
                    let Some(frame) = self.pop() else {
                        return Ok(false);
                    };
                    match frame.choice {
                        _ if frame.forced => Cursor::Fail,
                        Choice::Required { candidate_index, .. } => Cursor::Scan(candidate_index + 1),
                        Choice::Optional { option_index, .. } => Cursor::Options(option_index + 1),
                    }
                }
            };
        }
    }

    /// The register after linearizing completed operation `id` next, if that
    /// is legal and, within a run, if the run was needed to enable it.
    #[inline]
    fn successor(&self, id: usize) -> Option<Class> {
        let step = self.completed.step(id);
        let after = step.apply(self.state)?;
        if let Some(start) = self.run_start {
            if step.apply(start).is_some() {
                return None;
            }
        }
        Some(after)
    }

    /// A pending completed operation that never changes the register and
    /// may be linearized now. Linearizing it dominates every alternative, so
    /// it is the only choice that needs exploring.
    fn forced_choice(&mut self) -> Result<Option<(usize, Class)>, Abort> {
        for id in self.entries.pending_calls() {
            if self.completed.is_pure(id) {
                self.limits.tick()?;
                if let Some(after) = self.successor(id) {
                    return Ok(Some((id, after)));
                }
            }
        }
        Ok(None)
    }

    /// The pending completed operations that may be linearized next (calls
    /// before the first pending response), except pure ones (which
    /// [`KeySearch::forced_choice`] handles), in the order to try them.
    fn candidates(&self, out: &mut Vec<usize>) {
        out.clear();
        for id in self.entries.pending_calls() {
            if !self.completed.is_pure(id) {
                out.push(id);
            }
        }
        out.sort_by_key(|&id| self.completed.order(id));
    }

    /// The unknown-outcome operations worth linearizing next, with the class
    /// each leaves the register in, in a deterministic order. A run of them
    /// must enable a pending completed operation that is illegal in the
    /// state the run starts from, so only operations that lead towards what
    /// such an operation needs are offered: outside a run, a put or delete
    /// (one per class: equal ones are interchangeable, so the earliest
    /// available stands for all) or a cas from the current class; inside a
    /// run, a cas extending it (a put or delete would make the run's earlier
    /// operations pointless).
    fn options(&self, out: &mut Vec<(usize, Class)>) {
        out.clear();
        if self.optional.steps().is_empty() {
            return;
        }
        let frontier = self.entries.time(self.entries.first_return());
        let origin = self.run_start.unwrap_or(self.state);
        // Classes the run may usefully pass through, or all of them.
        let mut targets: Vec<Class> = Vec::new();
        let mut any = false;
        for id in self.entries.pending_calls() {
            let step = self.completed.step(id);
            if step.apply(origin).is_none() {
                match step {
                    Step::Read(target) | Step::CasOk { expected: target, .. } => {
                        self.optional.chain_sources(target, frontier, &mut targets);
                    }
                    Step::CasFailed { .. } => any = true,
                    Step::Set(_) | Step::CasMaybe { .. } | Step::Impossible => {}
                }
            }
        }
        if self.run_start.is_none() {
            let classes = if any { self.optional.set_classes() } else { &targets[..] };
            let mut anonymous_offered = false;
            for &class in classes {
                let canonical = self.usage.canon(class);
                if canonical == self.state || (canonical == ANON && anonymous_offered) {
                    continue;
                }
                if let Some(id) = self.optional.first_setter(class, frontier) {
                    anonymous_offered |= canonical == ANON;
                    out.push((id, canonical));
                }
            }
        }
        let start = out.len();
        for id in self.optional.cas_from(self.state, frontier) {
            if let Step::CasMaybe { new, .. } = self.optional.step(id) {
                let new = self.usage.canon(new);
                let useful = any || targets.contains(&new);
                if useful && !out[start..].iter().any(|&(_, after)| after == new) {
                    out.push((id, new));
                }
            }
        }
    }

    /// Linearizes completed operation `id`, leaving the register in class
    /// `after`, unless the resulting configuration was explored before;
    /// returns whether it did.
    fn push_required(&mut self, id: usize, after: Class, forced: bool, candidate_index: usize) -> bool {
        // `None` is unreachable: an operation still in the list is not linearized.
        let Some(undo) = self.linearized.insert(id as u32) else {
            return false;
        };
        let frame = Frame {
            choice: Choice::Required { id, undo, candidate_index },
            global: self.completed.global(id),
            state: self.state,
            run_start: self.run_start,
            forced,
        };
        let step = self.completed.step(id);
        self.usage.count(step, true);
        if !self.enter(frame, after, None) {
            self.usage.count(step, false);
            self.linearized.undo(id as u32, undo);
            return false;
        }
        self.entries.remove(id);
        true
    }

    /// Linearizes unknown-outcome operation `id` (option `option_index` of
    /// the current configuration), leaving the register in class `after`,
    /// unless the resulting configuration was explored before; returns
    /// whether it did.
    fn push_optional(&mut self, id: usize, after: Class, option_index: usize) -> bool {
        let frame = Frame {
            choice: Choice::Optional { id, option_index },
            global: self.optional.global(id),
            state: self.state,
            run_start: self.run_start,
            forced: false,
        };
        let run_start = Some(self.run_start.unwrap_or(self.state));
        self.use_optional(id, true);
        if !self.enter(frame, after, run_start) {
            self.use_optional(id, false);
            return false;
        }
        true
    }

    /// Records linearizing (or un-linearizing, which must happen in the
    /// reverse order) unknown-outcome operation `id`.
    fn use_optional(&mut self, id: usize, linearized: bool) {
        self.usage.use_optional(id, self.optional.step(id), linearized);
        self.optional.set_done(id, linearized);
    }

    /// Enters a new configuration unless it was explored before; returns
    /// whether it did. The usage counters must already account for the operation.
    fn enter(&mut self, frame: Frame, after: Class, run_start: Option<Class>) -> bool {
        let after = self.usage.canon(after);
        let Scratch { key, dominance, .. } = &mut self.scratch;
        configuration::encode(key, after, run_start, self.usage.cas_used(), &self.linearized);
        self.usage.dominance(dominance);
        if !self.memo.visit(key, dominance) {
            return false;
        }
        self.stack.push(frame);
        self.limits.reached(self.stack.len());
        self.state = after;
        self.run_start = run_start;
        true
    }

    /// Undoes the last linearization.
    fn pop(&mut self) -> Option<Frame> {
        let frame = self.stack.pop()?;
        self.furthest.popped_to(self.stack.len());
        self.state = frame.state;
        self.run_start = frame.run_start;
        match frame.choice {
            Choice::Required { id, undo, .. } => {
                self.linearized.undo(id as u32, undo);
                self.usage.count(self.completed.step(id), false);
                self.entries.restore(id);
            }
            Choice::Optional { id, .. } => self.use_optional(id, false),
        }
        Some(frame)
    }
}
