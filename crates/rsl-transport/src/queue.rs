//! The bounded outbound queue of one peer: `send` pushes encoded messages without blocking,
//! the peer's stream task pops them in batches bounded by count and frame size.

use crate::codec::framed_len;
use crate::proto as pb;
use crate::stats::TransportStats;
use crate::transport::{QueueFullPolicy, SendError};
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

/// Limits of one queue and of the batches taken from it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct QueueLimits {
    pub(crate) messages_max: u64,
    pub(crate) bytes_max: u64,
    pub(crate) batch_messages_max: u64,
    pub(crate) frame_bytes_max: u64,
    pub(crate) policy: QueueFullPolicy,
}

#[derive(Debug, Default)]
struct State {
    messages: VecDeque<Queued>,
    bytes: u64,
    closed: bool,
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
    /// Bytes the messages add to a frame (tags, length prefixes and bodies).
    pub(crate) framed_bytes: u64,
}

impl PeerQueue {
    pub(crate) fn new(to: NodeId, limits: QueueLimits) -> PeerQueue {
        PeerQueue { to, limits, state: Mutex::new(State::default()), notify: Notify::new() }
    }

    /// Enqueues all of `items` or, under [`QueueFullPolicy::Reject`], none.
    pub(crate) fn push(&self, items: Vec<Queued>, stats: &TransportStats) -> Result<(), SendError> {
        if items.is_empty() {
            return Ok(());
        }
        let added_bytes: u64 = items.iter().map(|item| item.encoded_len).sum();
        let mut state = self.state.lock();
        if state.closed {
            return Err(SendError::Closed);
        }
        let count = state.messages.len() as u64;
        let over = count + items.len() as u64 > self.limits.messages_max
            || state.bytes + added_bytes > self.limits.bytes_max;
        if over && self.limits.policy == QueueFullPolicy::Reject {
            return Err(SendError::QueueFull {
                to: self.to,
                queued: count,
                capacity: self.limits.messages_max,
            });
        }
        state.bytes += added_bytes;
        state.messages.extend(items);
        let mut dropped = 0;
        while state.messages.len() as u64 > self.limits.messages_max || state.bytes > self.limits.bytes_max {
            let Some(oldest) = state.messages.pop_front() else { break };
            state.bytes -= oldest.encoded_len;
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

    /// Waits until the queue holds a message (true) or is closed (false).
    pub(crate) async fn wait_ready(&self) -> bool {
        loop {
            {
                let state = self.state.lock();
                if state.closed {
                    return false;
                }
                if !state.messages.is_empty() {
                    return true;
                }
            }
            self.notify.notified().await;
        }
    }

    /// Waits for messages and takes as many as one frame may carry; `None` once closed.
    pub(crate) async fn next_batch(&self) -> Option<Taken> {
        loop {
            {
                let mut state = self.state.lock();
                if state.closed {
                    return None;
                }
                if !state.messages.is_empty() {
                    return Some(self.take(&mut state));
                }
            }
            self.notify.notified().await;
        }
    }

    fn take(&self, state: &mut State) -> Taken {
        let budget = self.limits.frame_bytes_max.saturating_sub(crate::codec::FRAME_OVERHEAD_BYTES);
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
        Taken { messages, framed_bytes }
    }

    /// Closes the queue: pending and future `send`s fail, the consumer stops.
    pub(crate) fn close(&self) {
        let mut state = self.state.lock();
        state.closed = true;
        state.messages.clear();
        state.bytes = 0;
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

    fn item(ring: u64, encoded_len: u64) -> Queued {
        Queued { message: pb::Message { ring, ..Default::default() }, encoded_len }
    }

    fn limits(policy: QueueFullPolicy) -> QueueLimits {
        QueueLimits { messages_max: 4, bytes_max: 1000, batch_messages_max: 3, frame_bytes_max: 232, policy }
    }

    #[test]
    fn drop_oldest_keeps_the_newest() {
        let stats = TransportStats::default();
        let queue = PeerQueue::new(NodeId(2), limits(QueueFullPolicy::DropOldest));
        queue.push((0..6).map(|ring| item(ring, 10)).collect(), &stats).unwrap();
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
        queue.push((0..3).map(|ring| item(ring, 10)).collect(), &stats).unwrap();
        let error = queue.push((0..2).map(|ring| item(ring, 10)).collect(), &stats).unwrap_err();
        assert_eq!(error, SendError::QueueFull { to: NodeId(2), queued: 3, capacity: 4 });
        assert_eq!(queue.len(), 3);
        let error = queue.push(vec![item(9, 991)], &stats).unwrap_err();
        assert!(matches!(error, SendError::QueueFull { .. }));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn batches_respect_count_and_frame_budget() {
        let stats = TransportStats::default();
        let queue = PeerQueue::new(NodeId(2), limits(QueueFullPolicy::DropOldest));
        // Budget 200 bytes of framed messages; each 98-byte message frames to 100.
        queue.push((0..3).map(|ring| item(ring, 98)).collect(), &stats).unwrap();
        let first = queue.next_batch().await.unwrap();
        assert_eq!(first.messages.len(), 2);
        assert_eq!(first.framed_bytes, 200);
        let second = queue.next_batch().await.unwrap();
        assert_eq!(second.messages.len(), 1);
        queue.push((0..4).map(|ring| item(ring, 1)).collect(), &stats).unwrap();
        assert_eq!(queue.next_batch().await.unwrap().messages.len(), 3);
        queue.close();
        assert!(queue.next_batch().await.is_none());
        assert!(!queue.wait_ready().await);
        assert_eq!(queue.push(vec![item(1, 1)], &stats), Err(SendError::Closed));
    }
}
