//! The interface a replicated application implements: [`StateMachine`].

use std::io::{self, Read, Write};
use std::sync::Arc;

use bytes::Bytes;
use rsl_core::{Ballot, Configuration, NodeId, Role, Slot};

use crate::reads::ConcurrentReader;

/// A replicated state machine: the application's state, changed only by chosen requests.
///
/// Every replica of a ring runs its own instance and executes the same requests in the same
/// order, so every instance goes through the same states. The runtime calls it from one
/// dedicated thread per ring (never concurrently), in this order: `load_checkpoint` once at
/// start if a checkpoint exists; then `execute` for every request of every chosen slot in
/// slot order, interleaved with reads, checkpoints and notifications at the positions
/// described on each method; `shut_down` last. A method may block (it delays only its own
/// ring's apply thread, never the consensus protocol), but a slow `execute` delays every
/// response.
///
/// Checkpoints never stall the primary: by default (as in RSL) only secondaries call
/// `save_checkpoint`, each at its own staggered slots, and the primary copies their newest
/// checkpoint in the background to truncate its log (see `docs/PROTOCOL.md`,
/// "Checkpoints"). A primary saves itself only when it is alone, when
/// [`Config::primary_saves_checkpoints`](rsl_core::Config::primary_saves_checkpoints) is
/// set, when no secondary has a newer checkpoint to copy, or on demand
/// ([`Ring::checkpoint_now`](crate::Ring::checkpoint_now)).
///
/// The names in brackets are those of Azure RSL's `RSLStateMachine`.
pub trait StateMachine: Send + 'static {
    /// Executes a chosen request and returns the response for the client
    /// (RSL: `ExecuteReplicatedRequest`). `slot` is the slot the request was chosen in; requests of
    /// one slot are executed in batch order. Must be deterministic: every replica executes
    /// the same request against the same state.
    fn execute(&mut self, slot: Slot, request: &[u8]) -> Bytes;

    /// Serves a read-only request against the current state (RSL: `ExecuteFastReadRequest`). For a
    /// lease read the state reflects every slot chosen before the read was asked; for a
    /// fast read, at least the slot the client named.
    fn read(&self, request: &[u8]) -> Bytes;

    /// A reader that serves reads on the callers' threads while `execute` runs (RSL: fast
    /// reads with `serializeFastReadsWithReplicates` off). Asked once, when the ring starts;
    /// with one, linearizable and fast reads no longer queue behind execution on the apply
    /// thread and [`StateMachine::read`] is not called. `None` (the default) serves every
    /// read on the apply thread, in order with `execute`.
    fn reader(&self) -> Option<Arc<dyn ConcurrentReader>> {
        None
    }

    /// Writes the whole state, as of `slot`, to `writer` (RSL: `SaveState`). Called after the
    /// `execute` of every request up to `slot` and before any later one, once
    /// [`StateMachine::allow_save`] agreed. An error is counted and logged, the partial file
    /// discarded, and the save tried again after
    /// [`Config::checkpoint_retry_ms`](rsl_core::Config::checkpoint_retry_ms); nothing is
    /// lost (the log keeps every slot the last good checkpoint does not cover).
    fn save_checkpoint(&self, slot: Slot, writer: &mut dyn Write) -> io::Result<()>;

    /// Whether a checkpoint may be saved now, as of `slot` (RSL: `AllowSaveState`). `false`
    /// postpones it: the runtime asks again after
    /// [`Config::checkpoint_retry_ms`](rsl_core::Config::checkpoint_retry_ms) (or an on-demand
    /// [`Ring::checkpoint_now`](crate::Ring::checkpoint_now) fails with
    /// [`CheckpointNowError::Refused`](crate::CheckpointNowError::Refused)). Called just before
    /// `save_checkpoint`.
    fn allow_save(&mut self, slot: Slot) -> bool {
        let _ = slot;
        true
    }

    /// A checkpoint of this state machine as of `slot` is durable, `data_bytes` long
    /// (RSL: `StateSaved`). Called right after the `save_checkpoint` that wrote it, before
    /// any later `execute`.
    fn checkpoint_saved(&mut self, slot: Slot, data_bytes: u64) {
        let _ = (slot, data_bytes);
    }

    /// A checkpoint at `slot` was copied from the replica `from` into this replica's store
    /// (RSL: `StateCopied`). `loaded` tells whether it replaced this state machine's state
    /// (a lagging replica catching up, right after `load_checkpoint`) or was only kept (a
    /// primary copying a secondary's checkpoint so that it can truncate its log; its own
    /// state is already past `slot`).
    fn checkpoint_copied(&mut self, slot: Slot, from: NodeId, loaded: bool) {
        let _ = (slot, from, loaded);
    }

    /// Replaces the whole state with the checkpoint at `slot` read from `reader`
    /// (RSL: `LoadState`). Called at start with the newest local checkpoint, and when the replica
    /// catches up by installing a checkpoint fetched from a peer.
    fn load_checkpoint(&mut self, slot: Slot, reader: &mut dyn Read) -> io::Result<()>;

    /// The replica's role changed (RSL: `NotifyStatus`). Called in order with `execute`: requests
    /// executed before were chosen before the change was observed.
    fn role_changed(&mut self, change: &RoleChange) {
        let _ = change;
    }

    /// A configuration chosen in a slot takes effect from the next slot
    /// (RSL: `NotifyConfigurationChanged`).
    fn configuration_changed(&mut self, slot: Slot, configuration: &Configuration) {
        let _ = (slot, configuration);
    }

    /// This replica is primary (of `ballot`) and has executed every slot its predecessors
    /// may have chosen, up to `slot` (RSL: `NotifyPrimaryRecovered`). Called once per term
    /// as primary, after the `execute` of `slot` and before that of any request the new
    /// primary proposed itself.
    fn primary_recovered(&mut self, ballot: Ballot, slot: Slot) {
        let _ = (ballot, slot);
    }

    /// The ring is stopping (RSL: `ShutDown`): the last call, on the apply thread, after
    /// every other. Nothing executes afterwards.
    fn shut_down(&mut self) {}

    /// Whether this replica may campaign to become primary (RSL: `CanBecomePrimary`). Polled about
    /// once per heartbeat interval; a `false` keeps the replica a secondary until it turns
    /// `true` again. Keep it cheap.
    fn can_become_primary(&mut self) -> bool {
        true
    }
}

/// A role change, as told to [`StateMachine::role_changed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoleChange {
    /// The new role.
    pub role: Role,
    /// The ballot of the primary followed (or owned, or campaigned for).
    pub ballot: Ballot,
    /// The primary, if known.
    pub primary: Option<NodeId>,
}
