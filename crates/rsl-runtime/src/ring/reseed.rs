//! The apply thread's side of a re-seed (see `controls.rs`): load the checkpoint fetched
//! from the peer even when it is older than what was applied, and drop the checkpoints
//! this replica saved after it, which reflect the state just replaced. The ring task then
//! has the replica hand out the log from the slot after the checkpoint again; until then
//! [`ApplyThread`] skips the values it was handed before (`rewinding`).

use rsl_core::Slot;

use super::apply::{ApplyThread, Event};
use crate::stats::RingCounters;

impl ApplyThread {
    /// Loads the re-seed's checkpoint at `slot` (published in the store by the fetch).
    pub(super) fn reseed(&mut self, slot: Slot) {
        let ring = self.shared.ring.0;
        let (mut reader, record) = match self.open_fetched(slot) {
            Ok(opened) => opened,
            Err(reason) => {
                tracing::warn!(ring, %slot, %reason, "cannot re-seed from the fetched checkpoint");
                self.events.send(Event::ReseedFailed(reason));
                return;
            }
        };
        if let Err(error) = self.state_machine.load_checkpoint(slot, &mut reader) {
            self.events.send(Event::LoadFailed { slot, reason: error.to_string() });
            return;
        }
        let before = self.applied;
        self.set_applied(slot);
        self.rewinding = slot < before;
        self.last_slot = record.last_slot;
        RingCounters::bump(&self.shared.counters.checkpoints_installed);
        let mut store = self.checkpoints.lock();
        match store.remove_newer_than(slot) {
            Ok(removed) if !removed.is_empty() => {
                tracing::info!(ring, %slot, ?removed, "deleted the checkpoints saved from the replaced state");
            }
            Ok(_) => {}
            // They stay; the state machine restarts from the newest at worst, which replays
            // to the same state unless it was what was damaged.
            Err(error) => {
                tracing::warn!(ring, %slot, %error, "cannot delete the replaced state's checkpoints")
            }
        }
        self.oldest_checkpoint.refresh(&store);
        drop(store);
        tracing::info!(ring, %slot, applied_before = %before, "state machine re-seeded");
        self.events.send(Event::Reseeded { slot, record });
    }
}
