//! Transport counters, and [`counters!`](crate::counters), the declaration they share with the
//! runtime's per-ring counters: atomics bumped on the data path, read as a plain snapshot.

/// Declares a set of counters: a struct of relaxed [`AtomicU64`](std::sync::atomic::AtomicU64)s
/// that any thread bumps, a plain snapshot struct with the same fields, and a listing of
/// every counter's name, description and value (what a metrics exporter renders).
///
/// ```
/// rsl_transport::counters! {
///     /// What a cache counts.
///     pub struct CacheCounters => CacheCountersSnapshot {
///         /// Lookups answered from the cache.
///         hits,
///         /// Lookups that missed.
///         misses,
///     }
/// }
///
/// let counters = CacheCounters::default();
/// CacheCounters::bump(&counters.hits);
/// CacheCounters::add(&counters.misses, 2);
/// let snapshot = counters.snapshot();
/// assert_eq!((snapshot.hits, snapshot.misses), (1, 2));
/// let listed: Vec<_> = snapshot.counters().map(|(name, _, value)| (name, value)).collect();
/// assert_eq!(listed, [("hits", 1), ("misses", 2)]);
/// ```
#[macro_export]
macro_rules! counters {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident => $snapshot:ident {
            $($(#[doc = $doc:literal])* $field:ident,)*
        }
    ) => {
        $(#[$meta])*
        ///
        /// Every field is a relaxed atomic: cheap to bump from any thread, and `snapshot`
        /// reads them all at once (each atomically, not the set as a whole).
        #[derive(Debug, Default)]
        $vis struct $name {
            $($(#[doc = $doc])* pub $field: ::std::sync::atomic::AtomicU64,)*
        }

        #[doc = concat!("A point-in-time copy of [`", stringify!($name), "`].")]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        $vis struct $snapshot {
            $($(#[doc = $doc])* pub $field: u64,)*
        }

        impl $name {
            /// Adds one to `counter`, one of these counters.
            pub fn bump(counter: &::std::sync::atomic::AtomicU64) {
                counter.fetch_add(1, ::std::sync::atomic::Ordering::Relaxed);
            }

            /// Adds `n` to `counter`, one of these counters.
            pub fn add(counter: &::std::sync::atomic::AtomicU64, n: u64) {
                counter.fetch_add(n, ::std::sync::atomic::Ordering::Relaxed);
            }

            /// Reads every counter.
            pub fn snapshot(&self) -> $snapshot {
                $snapshot { $($field: self.$field.load(::std::sync::atomic::Ordering::Relaxed),)* }
            }
        }

        impl $snapshot {
            /// Every counter in declaration order: its field name, its description (the
            /// field's doc comment), and its value.
            pub fn counters(&self) -> impl Iterator<Item = (&'static str, &'static str, u64)> {
                [$((stringify!($field), concat!($($doc),*).trim_ascii(), self.$field),)*].into_iter()
            }
        }
    };
}

counters! {
    /// Counters of one transport endpoint.
    pub struct TransportStats => TransportStatsSnapshot {
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
        /// Calls (replica streams, checkpoint requests) refused because TLS is on and the
        /// caller's certificate names no node.
        rejected_unauthenticated,
        /// Frames and checkpoint requests refused because they claim a node other than the
        /// one the caller's certificate names.
        rejected_impersonation,
        /// Checkpoint requests refused, whatever the reason (identity, not a member, unknown
        /// ring, addressed to another node).
        checkpoint_requests_refused,
        /// Checkpoint transfers started for peers (the header was sent).
        checkpoints_served,
        /// Checkpoint file bytes sent to peers.
        checkpoint_bytes_served,
        /// Replica streams refused because their frames are in a protocol version this
        /// endpoint does not speak (a newer peer that has not spoken down yet, or one too
        /// old or too new to share a version with).
        rejected_version,
        /// Messages and chunks not sent because the link to their peer is spoken in a
        /// protocol version older than theirs (`codec::message_version`: forced elections,
        /// read indexes and chunks need version 2, a configuration with learners or
        /// addresses version 3); the peer could not read them.
        dropped_for_version,
        /// Chunks of messages too large for a frame handed to the network.
        chunks_sent,
        /// Chunks of messages too large for a frame received (before they are checked).
        chunks_received,
        /// Chunks refused: torn, out of order, inconsistent, over the size limit, from a
        /// non-member, or reassembling into a message that does not decode or validate.
        rejected_chunks,
        /// Messages too large for a frame not queued because an identical copy was already
        /// waiting or under way for the same peer (a resent accept).
        chunked_copies_dropped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_and_listing_follow_the_declaration() {
        let stats = TransportStats::default();
        TransportStats::bump(&stats.frames_sent);
        TransportStats::add(&stats.bytes_sent, 40);
        TransportStats::add(&stats.dropped_unreachable, 3);
        let snapshot = stats.snapshot();
        assert_eq!((snapshot.frames_sent, snapshot.bytes_sent, snapshot.dropped_unreachable), (1, 40, 3));
        let listed: Vec<_> = snapshot.counters().collect();
        assert_eq!(listed.len(), 27);
        assert_eq!(listed[0], ("frames_sent", "Frames (batches) handed to the network.", 1));
        assert_eq!(listed[15].0, "dropped_unreachable");
        assert_eq!(listed[15].2, 3);
        assert_eq!(listed[20].0, "checkpoint_bytes_served");
        // A description of several doc lines reads as one sentence.
        let misrouted = listed.iter().find(|(name, ..)| *name == "rejected_misrouted").unwrap();
        assert!(misrouted.1.ends_with("claimed a sender other than the frame's sender."), "{}", misrouted.1);
    }
}
