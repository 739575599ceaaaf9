//! The witness of a violation: among all configurations explored, the one whose search
//! got furthest in real time, kept incrementally as the search goes.

/// The configuration that got furthest: `prefix` shares its first `common` elements with
/// the current search stack, so recording a new furthest copies only the frames pushed
/// since the last divergence.
#[derive(Debug, Default)]
pub(super) struct Furthest {
    found: bool,
    /// List position of the first pending return entry (later is further).
    node: usize,
    /// Indices in the history, in linearization order.
    prefix: Vec<usize>,
    common: usize,
    /// Index in the history of the operation whose return was reached.
    blocker: usize,
}

impl Furthest {
    /// Considers the configuration of `stack`, exhausted at entry `node`, the return of
    /// `blocker` (an index in the history): it is further if its `node` is later, or
    /// equal with more operations linearized. `global` gives a frame's index in the
    /// history.
    pub(super) fn consider<F>(
        &mut self,
        node: usize,
        stack: &[F],
        global: impl Fn(&F) -> usize,
        blocker: usize,
    ) {
        if self.found && (node, stack.len()) <= (self.node, self.prefix.len()) {
            return;
        }
        self.found = true;
        self.node = node;
        self.blocker = blocker;
        self.prefix.truncate(self.common);
        self.prefix.extend(stack[self.common..].iter().map(global));
        self.common = stack.len();
    }

    /// The search stack was popped to `depth` frames.
    #[inline]
    pub(super) fn popped_to(&mut self, depth: usize) {
        self.common = self.common.min(depth);
    }

    /// The operation whose return the furthest configuration reached, if any.
    pub(super) fn blocker(&self) -> Option<usize> {
        self.found.then_some(self.blocker)
    }

    /// Operations linearized in the furthest configuration.
    pub(super) fn len(&self) -> usize {
        self.prefix.len()
    }

    /// The witness: the furthest configuration's operations in linearization order, then
    /// the operation it could not linearize before its response.
    pub(super) fn witness(&self) -> Vec<usize> {
        let mut witness = self.prefix.clone();
        if let Some(blocker) = self.blocker() {
            witness.push(blocker);
        }
        witness
    }
}
