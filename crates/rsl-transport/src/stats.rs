//! Transport counters: atomics bumped on the data path, read as a plain snapshot.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! stats {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        /// Counters of one transport endpoint. Every field is a relaxed atomic: cheap to bump
        /// on the data path, and [`TransportStats::snapshot`] reads them all at once (not
        /// atomically as a set).
        #[derive(Debug, Default)]
        pub struct TransportStats {
            $($(#[doc = $doc])* pub $name: AtomicU64,)*
        }

        /// A point-in-time copy of [`TransportStats`].
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct TransportStatsSnapshot {
            $($(#[doc = $doc])* pub $name: u64,)*
        }

        impl TransportStats {
            /// Reads every counter.
            pub fn snapshot(&self) -> TransportStatsSnapshot {
                TransportStatsSnapshot { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }
    };
}

stats! {
    /// Frames (batches) handed to the network.
    frames_sent,
    /// Messages handed to the network.
    messages_sent,
    /// Encoded bytes of the frames handed to the network.
    bytes_sent,
    /// Frames received (before any message in them is checked).
    frames_received,
    /// Messages received, checked and delivered to the inbound channel.
    messages_received,
    /// Encoded bytes of the frames received.
    bytes_received,
    /// Messages dropped because the sender is not an allowed member of the message's ring.
    rejected_non_member,
    /// Messages dropped because their ring is not in the membership table.
    rejected_unknown_ring,
    /// Messages or frames dropped because they were addressed to another node, or claimed a
    /// sender other than the frame's sender.
    rejected_misrouted,
    /// Frames or messages that failed to decode or validate.
    decode_errors,
    /// Peer streams established again after a previous one ended or failed.
    reconnects,
    /// Connection attempts that failed.
    connect_failures,
    /// Queued messages dropped (oldest first) because a peer queue was full.
    dropped_queue_full,
    /// Received messages dropped because the inbound channel was full.
    dropped_inbound_full,
    /// Messages dropped by an injected fault (in-memory network only).
    dropped_by_fault,
    /// Messages dropped because the receiver is not reachable (in-memory network only).
    dropped_unreachable,
}

impl TransportStats {
    /// Adds `n` to `counter`.
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds one to `counter`.
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
