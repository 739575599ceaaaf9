//! Counters of the RDMA path, beside the [`TransportStats`](crate::TransportStats) every
//! transport keeps: what the ring protocol did and what it refused.

crate::counters! {
    /// Counters of one RDMA endpoint.
    pub struct RdmaStats => RdmaStatsSnapshot {
        /// Work requests posted (frames, wrap records and credit writes).
        work_requests,
        /// Post calls: each rings the doorbell once for all its work requests.
        doorbells,
        /// Work requests posted with a completion requested (selective signalling).
        signaled_requests,
        /// Credit writes (consumed positions written back to a sender).
        credits_written,
        /// Messages covered by a receiver's credit: taken out of its ring.
        messages_acknowledged,
        /// Messages written to a ring but not credited when the connection was reset.
        messages_unacknowledged_lost,
        /// Frames refused because their checksum failed, or left half-written by a sender
        /// whose connection ended.
        frames_torn,
        /// Frames refused because they declared more bytes than a frame may hold.
        frames_oversized,
        /// Frames refused because the archive failed validation, or the record was malformed.
        frames_invalid,
        /// Credits refused because they went backwards or past what was written.
        credit_errors,
        /// Work requests that completed with an error (the queue pair is then in error).
        completion_errors,
        /// Connections torn down (either direction), for any reason.
        connections_reset,
        /// Times the poller went to sleep after spinning and yielding found no work.
        idle_sleeps,
        /// Sleeps that a notification (a peer's write with immediate) or a local wake-up
        /// ended before their timer.
        sleeps_woken,
        /// Sleep notices written to senders (a receiver about to sleep).
        sleep_notices,
        /// RDMA WRITEs with immediate posted (a sender waking a sleeping receiver).
        immediate_writes,
        /// Writes with immediate received (each consumed a posted receive).
        immediates_received,
    }
}
