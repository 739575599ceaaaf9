//! The public vocabulary of linearizable reads: how a read proves it sees every write
//! acknowledged before it ([`ReadConsistency`]), and how a state machine serves reads from
//! callers' threads while its apply thread executes ([`ConcurrentReader`]).

use bytes::Bytes;

/// How [`Ring::read_with`](crate::Ring::read_with) makes sure a read sees every write
/// acknowledged before it began (PROTOCOL.md, "Read lease" and "Read index").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ReadConsistency {
    /// The primary's read lease: no message at all, but only on the primary, only while a
    /// quorum echoed one of its heartbeats less than a lease ago, and it rests on the
    /// bound on clock drift (`Config::clock_drift_max_ppm`).
    Lease,
    /// A read index: the primary confirms it still is primary with a round of heartbeats
    /// echoed by a quorum (one round for every read that arrives meanwhile), then the read
    /// is served once the state machine applied the primary's chosen slot of that moment.
    /// Needs no lease and no clock bound. On a secondary, the secondary asks the primary it
    /// follows for the index and serves the read from its own state machine once it
    /// applied it: a linearizable read that spreads read load over the replicas.
    ReadIndex,
    /// The lease where it holds; otherwise (no lease yet, lease expired, a new primary
    /// still recovering) a read index on the primary. A secondary refuses it with
    /// [`ReadError::NotPrimary`](crate::ReadError::NotPrimary), as for `Lease`: ask for
    /// [`ReadConsistency::ReadIndex`] to read on a secondary.
    #[default]
    LeaseOrReadIndex,
}

/// Serves read-only requests from the callers' tasks, concurrently with the apply thread
/// that executes chosen requests (RSL's fast reads with `serializeFastReadsWithReplicates`
/// off, and its reader threads). A state machine offers one through
/// [`StateMachine::reader`](crate::StateMachine::reader).
///
/// The runtime calls [`ConcurrentReader::read`] only once the state machine has applied
/// every slot the read needs (the read index, or a fast read's slot), from any number of
/// threads at once, while `execute`, `load_checkpoint` and the other calls of
/// [`StateMachine`](crate::StateMachine) go on on the apply thread. It must therefore see
/// the state through something that makes concurrent access safe (a reader-writer lock, a
/// sharded map, an immutable snapshot swapped in): it may see a state newer than the slot
/// the read needs, never an older one, and never a half-executed request. Keep it short:
/// it runs on the caller's tokio task.
pub trait ConcurrentReader: Send + Sync + 'static {
    /// Serves a read-only request against the current state, as
    /// [`StateMachine::read`](crate::StateMachine::read) would.
    fn read(&self, request: &[u8]) -> Bytes;
}
