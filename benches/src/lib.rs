//! `rsl-benches`: component benchmarks for rsl, and the in-memory cluster they drive.
//!
//! [`MemoryCluster`] runs a few [`Replica`]s on one thread with the simplest possible
//! environment: every persist completes at once, every message is delivered in FIFO order
//! with no loss, and time only moves when the driver needs a timer to fire. What it
//! measures is therefore the consensus core alone: batching, pipelining, message handling
//! and applying, with no disk and no network.
//!
//! ```
//! use rsl_benches::{payload_requests, MemoryCluster};
//!
//! let mut cluster = MemoryCluster::new(3, |config| config.pipeline_depth = 8).unwrap();
//! cluster.elect();
//! let requests = payload_requests(0, 100, 64);
//! cluster.propose_and_apply(requests);
//! assert!(cluster.applied_requests().iter().all(|&count| count == 100));
//! ```

use std::collections::VecDeque;

use bytes::Bytes;
use rsl_core::{
    Action, Config, ConfigError, DurableState, Message, NodeId, Replica, Request, RequestId, RingId, Role,
    Slot, Time, Value,
};

/// The ring every [`MemoryCluster`] runs.
pub const RING: RingId = RingId(1);

/// Upper bound on simulated time the driver lets pass while waiting for an election or
/// for the last slots to reach every replica; beyond it the cluster is stuck.
const STUCK_AFTER_MS: u64 = 60_000;

/// Upper bound on messages delivered in one `settle`: beyond it the replicas are chattering
/// without end, which is a bug.
const DELIVERIES_MAX: u64 = 100_000_000;

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

/// Replicas of one ring on one thread: immediate persists, FIFO delivery, manual time.
#[derive(Debug)]
pub struct MemoryCluster {
    replicas: Vec<Replica>,
    now: Time,
    network: VecDeque<Message>,
    /// Requests applied, per replica.
    applied_requests: Vec<u64>,
    /// Slots applied, per replica.
    applied_slots: Vec<u64>,
    /// The last slot applied, per replica (to check the order).
    last_applied: Vec<Slot>,
    delivered: u64,
}

impl MemoryCluster {
    /// Builds `members` replicas (node ids `1..=members`); `tweak` adjusts each one's
    /// configuration (the seed is already set per node).
    pub fn new(members: u64, tweak: impl Fn(&mut Config)) -> Result<MemoryCluster, ConfigError> {
        let ids: Vec<NodeId> = (1..=members).map(NodeId).collect();
        let now = Time(0);
        let mut replicas = Vec::with_capacity(ids.len());
        for &id in &ids {
            let mut config = Config::new(RING, id, ids.clone());
            config.seed = 0x5eed ^ id.0;
            tweak(&mut config);
            replicas.push(Replica::new(config, DurableState::default(), now)?);
        }
        let count = replicas.len();
        let mut cluster = MemoryCluster {
            replicas,
            now,
            network: VecDeque::new(),
            applied_requests: vec![0; count],
            applied_slots: vec![0; count],
            last_applied: vec![Slot::ZERO; count],
            delivered: 0,
        };
        cluster.settle();
        Ok(cluster)
    }

    /// The replicas, by node id minus one.
    pub fn replicas(&self) -> &[Replica] {
        &self.replicas
    }

    /// The simulated clock.
    pub fn now(&self) -> Time {
        self.now
    }

    /// Requests applied so far, per replica.
    pub fn applied_requests(&self) -> &[u64] {
        &self.applied_requests
    }

    /// Slots applied so far, per replica.
    pub fn applied_slots(&self) -> &[u64] {
        &self.applied_slots
    }

    /// Messages delivered so far.
    pub fn messages_delivered(&self) -> u64 {
        self.delivered
    }

    /// The index of the replica that is primary and followed by every other, if any.
    pub fn primary(&self) -> Option<usize> {
        let mut primaries = self.replicas.iter().enumerate().filter(|(_, r)| r.role() == Role::Primary);
        let (index, primary) = primaries.next()?;
        if primaries.next().is_some() {
            return None;
        }
        let node = primary.node();
        self.replicas.iter().all(|r| r.primary_hint() == Some(node)).then_some(index)
    }

    /// Lets simulated time pass until one primary is followed by every replica; returns
    /// its index. Panics if no primary emerges within a minute of simulated time.
    pub fn elect(&mut self) -> usize {
        let give_up = self.now.plus_ms(STUCK_AFTER_MS);
        loop {
            if let Some(index) = self.primary() {
                return index;
            }
            assert!(self.now < give_up, "no primary after {STUCK_AFTER_MS} ms of simulated time");
            self.fire_next_timer();
        }
    }

    /// Proposes every request at the primary, then runs the cluster until every replica
    /// applied all of them. Returns the number of slots the requests took at the primary.
    ///
    /// # Panics
    /// If there is no primary, a proposal is refused, or the requests are not applied on
    /// every replica within a minute of simulated time.
    pub fn propose_and_apply(&mut self, requests: Vec<Request>) -> u64 {
        let primary = self.primary().expect("propose_and_apply needs an elected primary");
        let expected: Vec<u64> =
            self.applied_requests.iter().map(|&applied| applied + requests.len() as u64).collect();
        let slots_before = self.applied_slots[primary];
        for request in requests {
            if let Err(error) = self.replicas[primary].handle_propose(self.now, request) {
                panic!("proposal refused: {error}");
            }
        }
        self.drain(primary);
        self.run_until_applied(&expected);
        self.applied_slots[primary] - slots_before
    }

    /// Runs until each replica `i` applied at least `expected[i]` requests, letting
    /// simulated time pass when only a timer (a heartbeat carrying the chosen watermark)
    /// can make progress.
    pub fn run_until_applied(&mut self, expected: &[u64]) {
        let give_up = self.now.plus_ms(STUCK_AFTER_MS);
        loop {
            self.settle();
            if self.applied_requests.iter().zip(expected).all(|(applied, expected)| applied >= expected) {
                return;
            }
            assert!(self.now < give_up, "stuck: applied {:?}, expected {expected:?}", self.applied_requests);
            self.fire_next_timer();
        }
    }

    /// Delivers messages in FIFO order until the network is empty.
    pub fn settle(&mut self) {
        for index in 0..self.replicas.len() {
            self.drain(index);
        }
        let limit = self.delivered + DELIVERIES_MAX;
        while let Some(message) = self.network.pop_front() {
            assert!(self.delivered < limit, "the replicas never stop talking");
            self.delivered += 1;
            let to = (message.to.0 - 1) as usize;
            // Every message the driver carries comes from a member and is well-formed.
            if let Err(error) = self.replicas[to].handle_message(self.now, message) {
                panic!("replica {} rejected a message: {error}", to + 1);
            }
            self.drain(to);
        }
    }

    /// Moves the clock to the earliest timer deadline and fires it, then settles.
    fn fire_next_timer(&mut self) {
        let deadline = self.replicas.iter().filter_map(Replica::poll_timeout).min();
        let deadline = deadline.expect("a replica always has a timer armed");
        self.now = self.now.max(deadline);
        for index in 0..self.replicas.len() {
            if self.replicas[index].poll_timeout().is_some_and(|at| at <= self.now) {
                self.replicas[index].handle_timeout(self.now);
                self.drain(index);
            }
        }
        self.settle();
    }

    /// Performs every pending action of replica `index`.
    fn drain(&mut self, index: usize) {
        let now = self.now;
        while let Some(action) = self.replicas[index].poll_action() {
            match action {
                Action::Persist(write) => self.replicas[index].on_persisted(now, write.ticket),
                Action::Send(message) => self.network.push_back(message),
                Action::Apply { slot, value } => {
                    assert_eq!(
                        slot,
                        self.last_applied[index].next(),
                        "replica {} applied out of order",
                        index + 1
                    );
                    self.last_applied[index] = slot;
                    self.applied_slots[index] += 1;
                    if let Value::Batch(requests) = value {
                        self.applied_requests[index] += requests.len() as u64;
                    }
                    self.replicas[index].on_applied(slot);
                }
                Action::TakeCheckpoint { slot, .. } => self.replicas[index].on_checkpoint_saved(slot),
                Action::FetchCheckpoint { from, slot } => {
                    panic!("replica {} fell behind the log of {from} (checkpoint {slot})", index + 1)
                }
                Action::TruncateLog { .. }
                | Action::RoleChanged { .. }
                | Action::ConfigurationChangeInterrupted { .. } => {}
                Action::RequestsDropped { ids, .. } => {
                    panic!("replica {} dropped {} requests", index + 1, ids.len())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_driver_applies_every_request_on_every_replica() {
        let mut cluster = MemoryCluster::new(3, |config| {
            config.pipeline_depth = 4;
            config.batch_requests_max = 16;
        })
        .unwrap();
        let primary = cluster.elect();
        assert_eq!(cluster.replicas()[primary].role(), Role::Primary);
        let slots = cluster.propose_and_apply(payload_requests(0, 1_000, 64));
        assert_eq!(cluster.applied_requests(), &[1_000, 1_000, 1_000]);
        // Pipelined and batched: far fewer slots than requests, at least 1000 / 16.
        assert!((63..1_000).contains(&slots), "{slots} slots");
        // The second round keeps going from where the first stopped.
        cluster.propose_and_apply(payload_requests(1_000, 500, 64));
        assert_eq!(cluster.applied_requests(), &[1_500, 1_500, 1_500]);
        let chosen: Vec<Slot> = cluster.replicas().iter().map(Replica::chosen).collect();
        assert!(chosen.iter().all(|&slot| slot == chosen[0]), "chosen watermarks differ: {chosen:?}");
    }

    #[test]
    fn one_request_per_slot_takes_one_slot_each() {
        let mut cluster = MemoryCluster::new(3, |config| config.batch_requests_max = 1).unwrap();
        cluster.elect();
        let slots = cluster.propose_and_apply(payload_requests(0, 300, 64));
        assert_eq!(slots, 300);
        assert_eq!(cluster.applied_slots(), &[300, 300, 300]);
    }

    #[test]
    fn a_single_replica_ring_applies_alone() {
        let mut cluster = MemoryCluster::new(1, |_| {}).unwrap();
        assert_eq!(cluster.elect(), 0);
        cluster.propose_and_apply(payload_requests(0, 10, 8));
        assert_eq!(cluster.applied_requests(), &[10]);
        assert_eq!(cluster.messages_delivered(), 0);
    }
}
