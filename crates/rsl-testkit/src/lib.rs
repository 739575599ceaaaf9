//! `rsl-testkit`: replicas of one ring driven by hand on one thread, for rsl-core's tests
//! and the component benchmarks. Depends on rsl-core alone; no shipped crate depends on it.
//!
//! [`Cluster`] owns everything a runtime would: the clock (moved only by `advance_*`), the
//! network (a FIFO queue of sent messages, which a test may deliver in any order, duplicate,
//! lose or filter) and each node's disk (persists complete at once, or are withheld until
//! `release`). With [`Recording::Everything`] every action is kept with the time it was
//! performed, so a test can assert on the exact sequence; [`Recording::Counters`] keeps only
//! counts, so a benchmark measures the core and not the bookkeeping. Applies are checked to
//! arrive in slot order either way.
//!
//! ```
//! use rsl_testkit::{payload_requests, Cluster};
//!
//! let mut cluster = Cluster::new(3, |config| config.pipeline_depth = 8);
//! cluster.elect();
//! cluster.propose_and_apply(payload_requests(0, 100, 64));
//! assert!(cluster.ids().all(|id| cluster.node(id).applied_requests == 100));
//! cluster.assert_agreement();
//! ```
//!
//! Node ids are `1..=n`; node `i` lives at index `i - 1`.

mod cluster;

use bytes::Bytes;
use rsl_core::{
    Action, Config, Message, MessageBody, NodeId, PersistRequest, Replica, Request, RequestId, RingId, Value,
};

pub use cluster::{Cluster, Disk, Node, Recording};

/// The ring every testkit replica belongs to.
pub const RING: RingId = RingId(7);

/// The members `1..=count`.
pub fn members(count: u64) -> Vec<NodeId> {
    (1..=count).map(NodeId).collect()
}

/// A default configuration for node `node` of a ring of `count` members.
pub fn config(node: u64, count: u64) -> Config {
    let mut config = Config::new(RING, NodeId(node), members(count));
    config.seed = 0xC0FFEE + node;
    config
}

/// A request from client 1 with sequence number `sequence` and `payload`.
pub fn request(sequence: u64, payload: &str) -> Request {
    Request { id: RequestId { client: 1, sequence }, payload: Bytes::copy_from_slice(payload.as_bytes()) }
}

/// A batch value of the given payloads (client 1, sequences from 0).
pub fn batch(payloads: &[&str]) -> Value {
    Value::Batch(payloads.iter().enumerate().map(|(i, p)| request(i as u64, p)).collect())
}

/// The payloads of a value, as strings (empty for a no-op or a configuration).
pub fn payloads(value: &Value) -> Vec<String> {
    match value {
        Value::Batch(requests) => {
            requests.iter().map(|r| String::from_utf8_lossy(&r.payload).into_owned()).collect()
        }
        _ => Vec::new(),
    }
}

/// An envelope from `from` to `to` in ring [`RING`], configuration 1.
pub fn message(from: u64, to: u64, body: MessageBody) -> Message {
    Message { ring: RING, from: NodeId(from), to: NodeId(to), configuration: 1, body }
}

/// Drains every pending action of a lone replica.
pub fn drain(replica: &mut Replica) -> Vec<Action> {
    std::iter::from_fn(|| replica.poll_action()).collect()
}

/// The messages among `actions`.
pub fn sends(actions: &[Action]) -> Vec<&Message> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(m) => Some(m),
            _ => None,
        })
        .collect()
}

/// The persist requests among `actions`.
pub fn persists(actions: &[Action]) -> Vec<&PersistRequest> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Persist(p) => Some(p),
            _ => None,
        })
        .collect()
}

/// `count` requests of `payload_bytes` bytes each, with sequence numbers from
/// `first_sequence` (client 1).
pub fn payload_requests(first_sequence: u64, count: u64, payload_bytes: usize) -> Vec<Request> {
    (first_sequence..first_sequence + count)
        .map(|sequence| {
            let mut payload = vec![0u8; payload_bytes];
            for (i, byte) in payload.iter_mut().enumerate() {
                *byte = (sequence as usize).wrapping_add(i) as u8;
            }
            Request { id: RequestId { client: 1, sequence }, payload: Bytes::from(payload) }
        })
        .collect()
}
