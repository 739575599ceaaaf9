//! Seeded protocol bugs, for the simulator to prove its checkers catch each of them. They
//! have an effect only in builds with the `mutations` feature (the simulator's); elsewhere
//! the replica never consults them and the bug paths compile away.

use super::Replica;

/// A seeded protocol bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mutation {
    /// The acceptor accepts proposals below its promise.
    AcceptBelowPromise,
    /// Votes (the primary's own and secondaries' `Accepted`) count before they are durable.
    CountVoteBeforePersist,
    /// Chosen values are applied out of slot order.
    ApplyOutOfOrder,
    /// A restarted replica forgets its durable promise.
    ForgetPromiseOnRestart,
    /// The primary switches to a new configuration as soon as it proposes the change,
    /// before the change is chosen.
    EnterConfigurationEarly,
    /// The log store is asked to truncate every slot held, chosen or not, whenever the log
    /// is truncated: the votes for slots not yet chosen here are lost at the next restart.
    TruncateUnchosen,
    /// A replica answers a catch-up fetch with the values it holds past its chosen
    /// watermark too, as if they were chosen.
    FetchServesUnchosen,
    /// Phase 1 re-proposes, for each slot, the lowest-ballot value among the promises
    /// instead of the highest.
    TakeoverPicksLowestBallot,
    /// A candidate's ballot ignores the round floor of its configuration: after a
    /// configuration change its ballot stays among the earlier configuration's rounds.
    SkipRoundFloor,
    /// A control for the durability checker, seeded in the simulated service rather than
    /// in the replica: a put or delete is acknowledged as soon as the primary queues it, so
    /// a write the primary then loses (a crash, a step-down) was acknowledged but is never
    /// chosen.
    AcknowledgeBeforeChosen,
    /// The read lease lasts the whole election delay: it is not shortened by the clock
    /// drift bound (`clock_drift_max_ppm`). Caught by linearizability.
    LeaseIgnoresDrift,
    /// The read lease is measured from the primary's own clock, as if its latest heartbeat
    /// had been echoed by a quorum. Caught by linearizability.
    LeaseWithoutQuorumEcho,
    /// A fast read is served at once, whatever its minimum slot. Caught by the fast-read
    /// staleness checker.
    FastReadIgnoresMinSlot,
    /// A checkpoint is recorded one slot below the state it holds, so a replica restarted
    /// or installed from it applies that slot twice. Caught by the state digests.
    CheckpointWrongSlot,
    /// The primary answers read-index reads with its chosen slot at once, without waiting
    /// for a quorum to echo a heartbeat sent after they arrived.
    ReadIndexWithoutConfirmation,
    /// The primary counts its learners' acknowledgements as votes, so a slot can be chosen
    /// by a "quorum" that is no majority of the voters. Caught by agreement.
    LearnerVotes,
}

impl Replica {
    /// Whether the seeded bug `mutation` is switched on (never, without the feature).
    #[inline(always)]
    pub(super) fn mutated(&self, mutation: Mutation) -> bool {
        #[cfg(feature = "mutations")]
        return self.mutation == Some(mutation);
        #[cfg(not(feature = "mutations"))]
        {
            let _ = mutation;
            false
        }
    }

    /// Whether a seeded bug lets a non-durable value be counted as chosen here (directly,
    /// or by a stale accept overwriting a primary's in-flight slot). The contracts that
    /// would stop such a value step aside so the simulator's checkers must catch it.
    pub(super) fn durability_bug_seeded(&self) -> bool {
        self.mutated(Mutation::CountVoteBeforePersist)
            || self.mutated(Mutation::AcceptBelowPromise)
            || self.mutated(Mutation::ForgetPromiseOnRestart)
    }
}
