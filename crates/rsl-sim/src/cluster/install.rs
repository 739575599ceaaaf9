//! Fetched checkpoints, as the runtime handles them: a checkpoint fetched for catch-up is
//! written out and published in the replica's checkpoint store (durable from then on), and
//! only later loaded into the state machine, after which the replica is told. A crash can
//! strike at any point of that: before publication the file is lost (the store never lists
//! an unpublished checkpoint), after it the replica restarts from the new checkpoint and
//! its old log. Runs with `install_crash_probability` aim crashes at those windows. A
//! primary's copy of a secondary's checkpoint is only kept, never loaded.

use rsl_core::Slot;

use super::{Checkpoint, Event, Simulation};

/// Bounds of each install step (writing the file, loading it), microseconds.
const STEP_MIN_US: u64 = 1_000;
const STEP_MAX_US: u64 = 40_000;

impl Simulation {
    /// The transfer of a checkpoint ended: `None` if it failed.
    pub(super) fn checkpoint_arrives(
        &mut self,
        node: usize,
        epoch: u64,
        checkpoint: Option<Checkpoint>,
        copy: bool,
    ) {
        let now = self.local_time(node);
        let n = &mut self.nodes[node];
        if n.epoch != epoch || n.replica.is_none() {
            return;
        }
        let replica = n.replica.as_mut().expect("alive");
        match checkpoint {
            Some(copied @ (slot, _, Some(_))) if copy && slot > n.disk.checkpoint.0 => {
                n.disk.checkpoint = copied;
                replica.on_checkpoint_copied(now, slot);
                self.stats.checkpoint_copies += 1;
            }
            _ if copy => replica.on_checkpoint_copy_failed(now),
            Some(fetched @ (slot, _, Some(_))) if slot > replica.applied() => {
                let write = self.rng.between(STEP_MIN_US, STEP_MAX_US);
                self.schedule(
                    self.now + write,
                    Event::CheckpointWritten { node, epoch, checkpoint: fetched },
                );
                if !self.healed && self.rng.chance(self.options.install_crash_probability) {
                    // Somewhere in writing, publishing or loading it.
                    let at = self.now + self.rng.between(0, write + STEP_MAX_US);
                    self.stats.install_crashes += 1;
                    self.schedule(at, Event::CrashNode { node, epoch });
                }
                return;
            }
            _ => replica.on_checkpoint_fetch_failed(now),
        }
        self.drain(node);
    }

    /// The fetched checkpoint is durable in the store: a restart from here on uses it.
    pub(super) fn checkpoint_written(&mut self, node: usize, epoch: u64, checkpoint: Checkpoint) {
        let n = &mut self.nodes[node];
        if n.epoch != epoch || n.replica.is_none() {
            return;
        }
        let slot = checkpoint.0;
        if slot > n.disk.checkpoint.0 {
            n.disk.checkpoint = checkpoint;
        }
        let load = self.rng.between(STEP_MIN_US, STEP_MAX_US);
        self.schedule(self.now + load, Event::CheckpointLoaded { node, epoch, slot });
    }

    /// The state machine loads the published checkpoint at `slot` and the replica is told.
    pub(super) fn checkpoint_loaded(&mut self, node: usize, epoch: u64, slot: Slot) {
        let now = self.local_time(node);
        let n = &mut self.nodes[node];
        if n.epoch != epoch || n.replica.is_none() {
            return;
        }
        let replica = n.replica.as_mut().expect("alive");
        match &n.disk.checkpoint {
            (saved, kv, Some(configuration)) if *saved == slot && slot > replica.applied() => {
                n.kv = kv.clone();
                n.apply_position = slot.next();
                n.waiting_reads.clear();
                replica.on_checkpoint_installed(now, slot, configuration.clone());
                self.stats.checkpoint_installs += 1;
                self.serve_fast_reads(node);
            }
            // Slots applied from the log meanwhile reached it, or a newer checkpoint
            // replaced it: nothing to load.
            (_, _, Some(configuration)) if slot <= replica.applied() => {
                replica.on_checkpoint_installed(now, slot, configuration.clone())
            }
            _ => replica.on_checkpoint_fetch_failed(now),
        }
        self.drain(node);
    }
}
