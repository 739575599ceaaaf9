//! Helpers shared by the transport integration tests.
#![allow(dead_code)]

#[cfg(feature = "tls")]
pub mod pki;

use bytes::Bytes;
use rsl_core::{Ballot, Message, MessageBody, NodeId, Request, RequestId, RingId, Slot, Value};
use rsl_transport::Inbound;
use std::time::Duration;
use tokio::sync::mpsc;

/// How long a test waits for something that should happen at once.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A heartbeat for `ring` from `from` to `to`, tagged by `sent_at` so tests can check order.
pub fn heartbeat(ring: u64, from: u64, to: u64, sent_at: u64) -> Message {
    Message {
        ring: RingId(ring),
        from: NodeId(from),
        to: NodeId(to),
        configuration: 1,
        body: MessageBody::Heartbeat {
            ballot: Ballot::new(1, NodeId(from)),
            chosen: Slot(sent_at),
            sent_at: rsl_core::Time(sent_at),
        },
    }
}

/// An accept carrying one request of `payload_bytes` bytes.
pub fn accept(ring: u64, from: u64, to: u64, slot: u64, payload_bytes: usize) -> Message {
    Message {
        ring: RingId(ring),
        from: NodeId(from),
        to: NodeId(to),
        configuration: 1,
        body: MessageBody::Accept {
            ballot: Ballot::new(1, NodeId(from)),
            slot: Slot(slot),
            value: Value::Batch(
                vec![Request {
                    id: RequestId { client: 1, sequence: slot },
                    payload: Bytes::from(vec![slot as u8; payload_bytes]),
                }]
                .into(),
            ),
            chosen: Slot(slot.saturating_sub(1)),
        },
    }
}

/// Receives exactly `count` messages, failing the test if they do not come within `PATIENCE`.
pub async fn receive(inbound: &mut mpsc::Receiver<Inbound>, count: usize) -> Vec<Inbound> {
    let mut received = Vec::with_capacity(count);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while received.len() < count {
        match tokio::time::timeout_at(deadline, inbound.recv()).await {
            Ok(Some(message)) => received.push(message),
            Ok(None) => panic!("inbound channel closed after {} of {count} messages", received.len()),
            Err(_) => panic!("timed out after {} of {count} messages", received.len()),
        }
    }
    received
}

/// Waits until `condition` holds, polling every few milliseconds, for at most `PATIENCE`.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let waited = tokio::time::timeout(PATIENCE, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out waiting for {what}");
}
