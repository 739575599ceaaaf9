//! The bounded outbound queue of one peer: `send` pushes encoded messages without blocking,
//! the peer's stream task pops them in batches bounded by count and frame size. Messages too
//! large for a frame wait in a lane of their own, bounded in bytes, and leave one chunk per
//! frame beside the whole messages (`chunk.rs`), so small messages never wait behind more
//! than one chunk. A chunked message remembers the oldest protocol version that carries it,
//! so a stream in an older version leaves it out whole before its first chunk leaves.

use crate::chunk::{chunk_at, ChunkHeader, CHUNK_OVERHEAD_BYTES};
use crate::codec::{framed_len, message_version, CHUNKS_VERSION};
use crate::proto as pb;
use crate::stats::TransportStats;
use crate::transport::{QueueFullPolicy, SendError};
use bytes::Bytes;
use parking_lot::Mutex;
use rsl_core::NodeId;
use std::collections::VecDeque;
use tokio::sync::Notify;

/// A message converted to protobuf at `send` time, with its encoded size.
#[derive(Debug)]
pub(crate) struct Queued {
    pub(crate) message: pb::Message,
    pub(crate) encoded_len: u64,
}

/// A message too large for a frame, encoded, waiting to leave in chunks.
#[derive(Debug)]
pub(crate) struct Chunked {
    pub(crate) header: ChunkHeader,
    pub(crate) encoded: Bytes,
    /// The oldest protocol version that carries it: its own ([`message_version`]), and
    /// never older than chunks themselves ([`CHUNKS_VERSION`]).
    pub(crate) version: u32,
}

impl Chunked {
    /// `message`, encoded to leave in chunks under `header`.
    pub(crate) fn new(header: ChunkHeader, message: &pb::Message) -> Chunked {
        use prost::Message as _;
        let version = message_version(message).max(CHUNKS_VERSION);
        Chunked { header, encoded: message.encode_to_vec().into(), version }
    }
}

/// Limits of one queue and of the batches taken from it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct QueueLimits {
    pub(crate) messages_max: u64,
    pub(crate) bytes_max: u64,
    pub(crate) batch_messages_max: u64,
    pub(crate) frame_bytes_max: u64,
    pub(crate) policy: QueueFullPolicy,
    /// Bytes of chunked messages waiting (the one being sent included).
    pub(crate) chunked_bytes_max: u64,
    /// Data bytes per chunk.
    pub(crate) chunk_bytes: u64,
}

#[derive(Debug, Default)]
struct State {
    messages: VecDeque<Queued>,
    bytes: u64,
    /// Chunked messages, the front one possibly under way.
    chunked: VecDeque<Chunked>,
    chunked_bytes: u64,
    /// Where the front chunked message's next chunk starts (zero: not started).
    chunk_offset: usize,
    closed: bool,
}

impl State {
    fn is_empty(&self) -> bool {
        self.messages.is_empty() && self.chunked.is_empty()
    }
}

/// One consumer (the peer task), many producers (`send` callers).
#[derive(Debug)]
pub(crate) struct PeerQueue {
    to: NodeId,
    limits: QueueLimits,
    state: Mutex<State>,
    notify: Notify,
}

/// A batch taken from the queue.
#[derive(Debug)]
pub(crate) struct Taken {
    pub(crate) messages: Vec<pb::Message>,
    /// At most one chunk of a message too large for a frame.
    pub(crate) chunks: Vec<pb::Chunk>,
    /// Bytes the messages add to a frame (tags, length prefixes and bodies).
    pub(crate) framed_bytes: u64,
    /// Chunked messages left out whole because the stream's protocol version does not
    /// carry them (a configuration with learners to a version-2 peer, anything chunked to
    /// a version-1 peer).
    pub(crate) left_out_chunked: u64,
}

impl PeerQueue {
    pub(crate) fn new(to: NodeId, limits: QueueLimits) -> PeerQueue {
        PeerQueue { to, limits, state: Mutex::new(State::default()), notify: Notify::new() }
    }

    /// Enqueues all of `items` and `chunked` (messages too large for a frame) or, under
    /// [`QueueFullPolicy::Reject`], none; a chunked message identical to one already queued
    /// is dropped as a copy (counted). Over a bound, drop-oldest drops the oldest queued
    /// messages of that lane: whole messages by count and bytes, chunked ones by bytes
    /// (never the one under way; a lone chunked message always fits).
    pub(crate) fn push(
        &self,
        items: Vec<Queued>,
        chunked: Vec<Chunked>,
        stats: &TransportStats,
    ) -> Result<(), SendError> {
        if items.is_empty() && chunked.is_empty() {
            return Ok(());
        }
        let added_bytes: u64 = items.iter().map(|item| item.encoded_len).sum();
        let mut state = self.state.lock();
        if state.closed {
            return Err(SendError::Closed);
        }
        // A copy of a message already waiting (or under way) adds nothing but bytes to move:
        // a resent accept whose first copy is still crossing the link is dropped here.
        let (chunked, copies): (Vec<Chunked>, Vec<Chunked>) =
            chunked.into_iter().partition(|c| !state.chunked.iter().any(|q| q.encoded == c.encoded));
        if !copies.is_empty() {
            TransportStats::add(&stats.chunked_copies_dropped, copies.len() as u64);
        }
        let added_chunked: u64 = chunked.iter().map(|c| c.encoded.len() as u64).sum();
        if self.limits.policy == QueueFullPolicy::Reject {
            let count = state.messages.len() as u64;
            if count + items.len() as u64 > self.limits.messages_max
                || state.bytes + added_bytes > self.limits.bytes_max
            {
                return Err(SendError::QueueFull {
                    to: self.to,
                    queued: count,
                    capacity: self.limits.messages_max,
                });
            }
            if !chunked.is_empty()
                && state.chunked_bytes + added_chunked > self.limits.chunked_bytes_max
                && !(state.chunked.is_empty() && chunked.len() == 1)
            {
                return Err(SendError::ChunkedQueueFull {
                    to: self.to,
                    queued_bytes: state.chunked_bytes,
                    capacity_bytes: self.limits.chunked_bytes_max,
                });
            }
        }
        state.bytes += added_bytes;
        state.messages.extend(items);
        state.chunked_bytes += added_chunked;
        state.chunked.extend(chunked);
        let mut dropped = 0;
        while state.messages.len() as u64 > self.limits.messages_max || state.bytes > self.limits.bytes_max {
            let Some(oldest) = state.messages.pop_front() else { break };
            state.bytes -= oldest.encoded_len;
            dropped += 1;
        }
        while state.chunked_bytes > self.limits.chunked_bytes_max {
            // Keep the one under way whole, and the newest (a lone message always fits).
            let index = usize::from(state.chunk_offset > 0);
            if index + 1 >= state.chunked.len() {
                break;
            }
            let Some(oldest) = state.chunked.remove(index) else { break };
            state.chunked_bytes -= oldest.encoded.len() as u64;
            dropped += 1;
        }
        drop(state);
        if dropped > 0 {
            TransportStats::add(&stats.dropped_queue_full, dropped);
            tracing::debug!(to = %self.to, dropped, "outbound queue full: dropped the oldest messages");
        }
        self.notify.notify_one();
        Ok(())
    }

    /// A new stream starts: a chunked message half sent on the last one is dropped (its
    /// receiver abandoned it with that stream).
    pub(crate) fn restart_chunked(&self) {
        let mut state = self.state.lock();
        if state.chunk_offset > 0 {
            state.chunk_offset = 0;
            if let Some(front) = state.chunked.pop_front() {
                state.chunked_bytes -= front.encoded.len() as u64;
            }
        }
    }

    /// Waits until the queue holds a message (true) or is closed (false).
    pub(crate) async fn wait_ready(&self) -> bool {
        loop {
            {
                let state = self.state.lock();
                if state.closed {
                    return false;
                }
                if !state.is_empty() {
                    return true;
                }
            }
            self.notify.notified().await;
        }
    }

    /// Waits for messages and takes as many as one frame in protocol version `version` may
    /// carry; `None` once closed.
    pub(crate) async fn next_batch(&self, version: u32) -> Option<Taken> {
        loop {
            {
                let mut state = self.state.lock();
                if state.closed {
                    return None;
                }
                if !state.is_empty() {
                    return Some(self.take(&mut state, version));
                }
            }
            self.notify.notified().await;
        }
    }

    fn take(&self, state: &mut State, version: u32) -> Taken {
        // A chunked message the stream's version does not carry goes before its first chunk:
        // one half sent was started on this stream, in this version, so it passed this check.
        let mut left_out_chunked = 0;
        while state.chunk_offset == 0 && state.chunked.front().is_some_and(|c| c.version > version) {
            let Some(newer) = state.chunked.pop_front() else { break };
            state.chunked_bytes -= newer.encoded.len() as u64;
            left_out_chunked += 1;
        }
        let mut budget = self.limits.frame_bytes_max.saturating_sub(crate::codec::FRAME_OVERHEAD_BYTES);
        // A chunk waits: keep room for it (the config keeps a chunk within half a frame).
        let chunk_room = self.limits.chunk_bytes + CHUNK_OVERHEAD_BYTES;
        if !state.chunked.is_empty() {
            budget = budget.saturating_sub(chunk_room);
        }
        let mut messages = Vec::new();
        let mut framed_bytes = 0;
        while let Some(next) = state.messages.front() {
            let framed = framed_len(next.encoded_len);
            let full =
                messages.len() as u64 >= self.limits.batch_messages_max || framed_bytes + framed > budget;
            // The first message always goes: `send` refused anything that cannot fit alone.
            if full && !messages.is_empty() {
                break;
            }
            let Some(item) = state.messages.pop_front() else { break };
            state.bytes -= item.encoded_len;
            framed_bytes += framed;
            messages.push(item.message);
        }
        let mut chunks = Vec::new();
        let full_budget = self.limits.frame_bytes_max.saturating_sub(crate::codec::FRAME_OVERHEAD_BYTES);
        let room = framed_bytes + chunk_room <= full_budget;
        if let Some(front) = state.chunked.front().filter(|_| room) {
            let offset = state.chunk_offset;
            let chunk = chunk_at(front.header, &front.encoded, offset, self.limits.chunk_bytes as usize);
            framed_bytes += chunk.data.len() as u64 + CHUNK_OVERHEAD_BYTES;
            state.chunk_offset = offset + chunk.data.len();
            if state.chunk_offset >= front.encoded.len() {
                state.chunk_offset = 0;
                if let Some(done) = state.chunked.pop_front() {
                    state.chunked_bytes -= done.encoded.len() as u64;
                }
            }
            chunks.push(chunk);
        }
        Taken { messages, chunks, framed_bytes, left_out_chunked }
    }

    /// Closes the queue: pending and future `send`s fail, the consumer stops.
    pub(crate) fn close(&self) {
        let mut state = self.state.lock();
        state.closed = true;
        state.messages.clear();
        state.bytes = 0;
        state.chunked.clear();
        state.chunked_bytes = 0;
        state.chunk_offset = 0;
        drop(state);
        self.notify.notify_one();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.state.lock().messages.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::PROTOCOL_VERSION;

    fn item(ring: u64, encoded_len: u64) -> Queued {
        Queued { message: pb::Message { ring, ..Default::default() }, encoded_len }
    }

    fn limits(policy: QueueFullPolicy) -> QueueLimits {
        QueueLimits {
            messages_max: 4,
            bytes_max: 1000,
            batch_messages_max: 3,
            frame_bytes_max: 232,
            policy,
            chunked_bytes_max: 1000,
            chunk_bytes: 40,
        }
    }

    #[test]
    fn drop_oldest_keeps_the_newest() {
        let stats = TransportStats::default();
        let queue = PeerQueue::new(NodeId(2), limits(QueueFullPolicy::DropOldest));
        queue.push((0..6).map(|ring| item(ring, 10)).collect(), Vec::new(), &stats).unwrap();
        assert_eq!(queue.len(), 4);
        assert_eq!(stats.snapshot().dropped_queue_full, 2);
        let state = queue.state.lock();
        assert_eq!(state.messages.front().map(|q| q.message.ring), Some(2));
        assert_eq!(state.bytes, 40);
    }

    #[test]
    fn reject_refuses_the_whole_call() {
        let stats = TransportStats::default();
        let queue = PeerQueue::new(NodeId(2), limits(QueueFullPolicy::Reject));
        queue.push((0..3).map(|ring| item(ring, 10)).collect(), Vec::new(), &stats).unwrap();
        let error = queue.push((0..2).map(|ring| item(ring, 10)).collect(), Vec::new(), &stats).unwrap_err();
        assert_eq!(error, SendError::QueueFull { to: NodeId(2), queued: 3, capacity: 4 });
        assert_eq!(queue.len(), 3);
        let error = queue.push(vec![item(9, 991)], Vec::new(), &stats).unwrap_err();
        assert!(matches!(error, SendError::QueueFull { .. }));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn batches_respect_count_and_frame_budget() {
        let stats = TransportStats::default();
        let queue = PeerQueue::new(NodeId(2), limits(QueueFullPolicy::DropOldest));
        // Budget 200 bytes of framed messages; each 98-byte message frames to 100.
        queue.push((0..3).map(|ring| item(ring, 98)).collect(), Vec::new(), &stats).unwrap();
        let first = queue.next_batch(PROTOCOL_VERSION).await.unwrap();
        assert_eq!(first.messages.len(), 2);
        assert_eq!(first.framed_bytes, 200);
        let second = queue.next_batch(PROTOCOL_VERSION).await.unwrap();
        assert_eq!(second.messages.len(), 1);
        queue.push((0..4).map(|ring| item(ring, 1)).collect(), Vec::new(), &stats).unwrap();
        assert_eq!(queue.next_batch(PROTOCOL_VERSION).await.unwrap().messages.len(), 3);
        queue.close();
        assert!(queue.next_batch(PROTOCOL_VERSION).await.is_none());
        assert!(!queue.wait_ready().await);
        assert_eq!(queue.push(vec![item(1, 1)], Vec::new(), &stats), Err(SendError::Closed));
    }

    fn chunked(id: u64, len: usize) -> Chunked {
        let header =
            ChunkHeader { ring: rsl_core::RingId(1), from: NodeId(1), to: NodeId(2), message_id: id };
        Chunked { header, encoded: Bytes::from(vec![id as u8; len]), version: CHUNKS_VERSION }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn each_frame_carries_one_chunk_beside_whole_messages() {
        let stats = TransportStats::default();
        let queue = PeerQueue::new(NodeId(2), limits(QueueFullPolicy::DropOldest));
        queue.push(Vec::new(), vec![chunked(1, 100)], &stats).unwrap();
        queue.push((0..3).map(|ring| item(ring, 10)).collect(), Vec::new(), &stats).unwrap();
        let mut offsets = Vec::new();
        let mut whole = 0;
        loop {
            let mut state = queue.state.lock();
            if state.is_empty() {
                break;
            }
            let taken = queue.take(&mut state, PROTOCOL_VERSION);
            drop(state);
            assert!(taken.chunks.len() <= 1);
            assert!(taken.framed_bytes <= 232 - crate::codec::FRAME_OVERHEAD_BYTES, "{}", taken.framed_bytes);
            whole += taken.messages.len();
            offsets.extend(taken.chunks.iter().map(|c| (c.offset, c.data.len())));
        }
        assert_eq!(whole, 3);
        assert_eq!(offsets, vec![(0, 40), (40, 40), (80, 20)]);
        assert_eq!(queue.state.lock().chunked_bytes, 0);
    }

    #[test]
    fn the_chunked_lane_is_bounded_in_bytes_but_keeps_the_message_under_way() {
        let stats = TransportStats::default();
        let queue = PeerQueue::new(NodeId(2), limits(QueueFullPolicy::DropOldest));
        queue.push(Vec::new(), vec![chunked(1, 600)], &stats).unwrap();
        let first = queue.take(&mut queue.state.lock(), PROTOCOL_VERSION);
        assert_eq!(first.chunks.len(), 1, "message 1 is under way");
        queue.push(Vec::new(), vec![chunked(2, 300), chunked(3, 300)], &stats).unwrap();
        queue.push(Vec::new(), vec![chunked(4, 300)], &stats).unwrap();
        let ids: Vec<u64> = queue.state.lock().chunked.iter().map(|c| c.header.message_id).collect();
        assert_eq!(ids, vec![1, 4], "the oldest not under way were dropped");
        assert_eq!(stats.snapshot().dropped_queue_full, 2);
        // A new stream drops the message half sent on the last one.
        queue.restart_chunked();
        let ids: Vec<u64> = queue.state.lock().chunked.iter().map(|c| c.header.message_id).collect();
        assert_eq!(ids, vec![4]);
        assert_eq!(queue.state.lock().chunked_bytes, 300);

        // A copy of a queued message is not queued again.
        let copy =
            Chunked { header: ChunkHeader { message_id: 99, ..chunked(4, 300).header }, ..chunked(4, 300) };
        queue.push(Vec::new(), vec![copy], &stats).unwrap();
        assert_eq!(queue.state.lock().chunked.len(), 1);
        assert_eq!(stats.snapshot().chunked_copies_dropped, 1);

        let strict = PeerQueue::new(NodeId(2), limits(QueueFullPolicy::Reject));
        strict.push(Vec::new(), vec![chunked(1, 2000)], &stats).expect("a lone message always fits");
        let error = strict.push(vec![item(1, 1)], vec![chunked(2, 10)], &stats).unwrap_err();
        assert!(matches!(
            error,
            SendError::ChunkedQueueFull { queued_bytes: 2000, capacity_bytes: 1000, .. }
        ));
        assert_eq!(strict.len(), 0, "a refused call enqueues nothing");
    }

    #[test]
    fn a_chunked_message_newer_than_the_stream_is_left_out_whole() {
        let stats = TransportStats::default();
        let queue = PeerQueue::new(NodeId(2), limits(QueueFullPolicy::DropOldest));
        let newer = Chunked { version: CHUNKS_VERSION + 1, ..chunked(1, 100) };
        queue.push(Vec::new(), vec![newer, chunked(2, 60)], &stats).unwrap();
        // In the older version: message 1 goes whole before any chunk of it, message 2 leaves.
        let first = queue.take(&mut queue.state.lock(), CHUNKS_VERSION);
        assert_eq!(first.left_out_chunked, 1);
        assert_eq!(first.chunks.iter().map(|c| c.message_id).collect::<Vec<_>>(), [2]);
        assert_eq!(queue.state.lock().chunked_bytes, 60);
        // One under way (started in a version that carries it) is never cut in the middle.
        let under_way = Chunked { version: CHUNKS_VERSION + 1, ..chunked(3, 100) };
        queue.push(Vec::new(), vec![under_way], &stats).unwrap();
        let mut sent = Vec::new();
        let mut left_out = 0;
        for version in [CHUNKS_VERSION + 1, CHUNKS_VERSION + 1, CHUNKS_VERSION, CHUNKS_VERSION] {
            let taken = queue.take(&mut queue.state.lock(), version);
            left_out += taken.left_out_chunked;
            sent.extend(taken.chunks.iter().map(|c| (c.message_id, c.offset)));
        }
        assert_eq!(sent, [(2, 40), (3, 0), (3, 40), (3, 80)]);
        assert_eq!(left_out, 0);
        // Version 1 has no chunks at all: everything chunked is left out.
        let old = PeerQueue::new(NodeId(2), limits(QueueFullPolicy::DropOldest));
        old.push(Vec::new(), vec![chunked(4, 100), chunked(5, 100)], &stats).unwrap();
        let taken = old.take(&mut old.state.lock(), CHUNKS_VERSION - 1);
        assert_eq!((taken.left_out_chunked, taken.chunks.len()), (2, 0));
        assert!(old.state.lock().is_empty());
    }
}
