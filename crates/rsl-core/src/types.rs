//! The protocol's vocabulary: node, ring, slot, ballot, request, value, proposal and
//! configuration. Fixed-width integers only: these types cross the wire and the disk.

use bytes::Bytes;
use std::fmt;

/// Identity of a replica. Unique within a ring's lifetime; never reused for a new replica.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u64);

/// Identity of a replicated state machine (a ring). One process may host many rings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RingId(pub u64);

/// A decree number: the position of a value in the replicated log. Slot 0 is never used;
/// the first value of a ring lives in slot 1, and "chosen up to slot 0" means nothing chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot(pub u64);

impl Slot {
    /// The slot before the first real slot: "nothing yet".
    pub const ZERO: Slot = Slot(0);

    /// The following slot.
    #[must_use]
    pub fn next(self) -> Slot {
        Slot(self.0.checked_add(1).expect("slot number overflow"))
    }

    /// The preceding slot, saturating at zero.
    #[must_use]
    pub fn prev(self) -> Slot {
        Slot(self.0.saturating_sub(1))
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// A round of the protocol, totally ordered by `(round, node)`. Two candidates never
/// share a ballot because the node id breaks ties.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ballot {
    /// Monotonic round number.
    pub round: u64,
    /// The node that owns this ballot (the candidate that chose it).
    pub node: NodeId,
}

impl Ballot {
    /// The ballot below every real ballot: nothing promised.
    pub const ZERO: Ballot = Ballot { round: 0, node: NodeId(0) };

    /// Builds a ballot.
    pub fn new(round: u64, node: NodeId) -> Ballot {
        Ballot { round, node }
    }

    /// A ballot owned by `node` that is greater than `self`: the next round.
    #[must_use]
    pub fn successor_for(self, node: NodeId) -> Ballot {
        let round = self.round.checked_add(1).expect("ballot round overflow");
        Ballot { round, node }
    }
}

impl fmt::Display for Ballot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.round, self.node.0)
    }
}

/// Identifies a client request for de-duplication: `(client, sequence)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId {
    /// The client session.
    pub client: u64,
    /// The client's sequence number, increasing per client.
    pub sequence: u64,
}

/// Names a read-index read for the caller that asked for it (and, forwarded from a
/// secondary, for the primary that confirms it); chosen by the caller, unique among its
/// reads in flight. See [`crate::Replica::handle_read_index`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReadId(pub u64);

impl fmt::Display for ReadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "read {}", self.0)
    }
}

/// One client request: opaque bytes the state machine interprets.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Request {
    /// Client-chosen identity; the state machine may use it to drop retried duplicates.
    pub id: RequestId,
    /// The request body.
    pub payload: Bytes,
}

impl Request {
    /// Bytes this request counts for against batch limits.
    pub fn size_bytes(&self) -> u64 {
        self.payload.len() as u64 + REQUEST_OVERHEAD_BYTES
    }
}

/// Per-request framing overhead counted against `batch_bytes_max` (id + length).
pub const REQUEST_OVERHEAD_BYTES: u64 = 24;

/// Where a member of a ring is reached: its replica endpoint (the replica transport) and
/// its client endpoint (a service's API), as the operator gave them. Carried in the
/// configuration so a node that knows one contact learns every member's address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MemberAddress {
    /// The member.
    pub node: NodeId,
    /// Its replica endpoint (for example `http://10.0.0.1:7001`).
    pub replica: String,
    /// Its client endpoint; empty when the ring serves no clients of its own.
    pub client: String,
}

/// The longest address a configuration carries, in bytes.
pub const ADDRESS_BYTES_MAX: usize = 256;

/// A membership of the ring and the first slot it governs.
///
/// `members` vote: they form every quorum (phase 1, phase 2, the lease) and may become
/// primary. `learners` follow the log (the primary sends them its accepts and heartbeats,
/// they apply what is chosen and may serve fast reads) without counting in any quorum or
/// campaigning. `addresses` say where each of them is reached, when known.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Configuration {
    /// Configuration number; increases by one per change.
    pub number: u64,
    /// Voting members, sorted and de-duplicated.
    pub members: Vec<NodeId>,
    /// Non-voting members (learners), sorted, de-duplicated, none of them a voter.
    pub learners: Vec<NodeId>,
    /// The addresses of members and learners, sorted by node, at most one per node, only
    /// for nodes of this configuration. A node may have none (addresses given out of band).
    pub addresses: Vec<MemberAddress>,
    /// The first slot decided under this configuration.
    pub first_slot: Slot,
}

impl Configuration {
    /// Builds a configuration of voters only, without addresses, sorting and
    /// de-duplicating `members`.
    pub fn new(number: u64, mut members: Vec<NodeId>, first_slot: Slot) -> Configuration {
        members.sort_unstable();
        members.dedup();
        Configuration { number, members, learners: Vec::new(), addresses: Vec::new(), first_slot }
    }

    /// The same configuration with `learners` (sorted and de-duplicated; voters among them
    /// are dropped: a node is a voter or a learner, never both).
    #[must_use]
    pub fn with_learners(mut self, mut learners: Vec<NodeId>) -> Configuration {
        learners.sort_unstable();
        learners.dedup();
        learners.retain(|node| !self.contains(*node));
        self.learners = learners;
        self
    }

    /// The same configuration with `addresses` (sorted by node; for a node named twice the
    /// last wins; addresses of nodes outside the configuration are dropped).
    #[must_use]
    pub fn with_addresses(mut self, addresses: Vec<MemberAddress>) -> Configuration {
        let mut kept: Vec<MemberAddress> = Vec::with_capacity(addresses.len());
        for address in addresses.into_iter().rev() {
            if self.includes(address.node) && !kept.iter().any(|a| a.node == address.node) {
                kept.push(address);
            }
        }
        kept.sort_unstable_by_key(|a| a.node);
        self.addresses = kept;
        self
    }

    /// Number of acceptors that form a majority. Learners never count.
    pub fn quorum(&self) -> usize {
        crate::quorum::majority(self.members.len())
    }

    /// Whether `node` votes in this configuration.
    pub fn contains(&self, node: NodeId) -> bool {
        self.members.binary_search(&node).is_ok()
    }

    /// Whether `node` is a learner (follows without voting) in this configuration.
    pub fn is_learner(&self, node: NodeId) -> bool {
        self.learners.binary_search(&node).is_ok()
    }

    /// Whether `node` is in this configuration at all: a voter or a learner.
    pub fn includes(&self, node: NodeId) -> bool {
        self.contains(node) || self.is_learner(node)
    }

    /// Voters then learners: the nodes a primary replicates to, in progress order.
    pub fn followers(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.members.iter().chain(&self.learners).copied()
    }

    /// The address of `node`, if this configuration carries one.
    pub fn address(&self, node: NodeId) -> Option<&MemberAddress> {
        self.addresses.binary_search_by_key(&node, |a| a.node).ok().map(|index| &self.addresses[index])
    }

    /// Every ballot of this configuration has a round above this floor, and every ballot of
    /// an earlier configuration a round at or below it: a later configuration's ballots
    /// outrank every ballot of an earlier one (see PROTOCOL.md, "Reconfiguration").
    pub fn round_floor(&self) -> u64 {
        self.number.saturating_sub(1) << CONFIGURATION_ROUND_BITS
    }
}

impl Configuration {
    /// Bytes counted against message and batch limits.
    pub fn size_bytes(&self) -> u64 {
        let addresses: u64 =
            self.addresses.iter().map(|a| 16 + (a.replica.len() + a.client.len()) as u64).sum();
        24 + 8 * (self.members.len() + self.learners.len()) as u64 + addresses
    }
}

/// Ballot rounds within one configuration stay below `1 << CONFIGURATION_ROUND_BITS`; the
/// configuration number fills the bits above ([`Configuration::round_floor`]).
pub const CONFIGURATION_ROUND_BITS: u32 = 40;
/// The highest configuration number (the round's bits above [`CONFIGURATION_ROUND_BITS`]).
pub const CONFIGURATION_NUMBER_MAX: u64 = 1 << (64 - CONFIGURATION_ROUND_BITS - 1);

/// What a slot decides.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Value {
    /// Fills a hole left by a previous primary; applies nothing.
    Noop,
    /// A batch of client requests, applied in order.
    Batch(Vec<Request>),
    /// A membership change: the new configuration starts at the next slot.
    Configuration(Configuration),
    /// One request alone in its slot that closes the ring (RSL's last decree): once it is
    /// chosen the ring takes no more requests, and any value chosen in a later slot is
    /// applied as a no-op.
    Last(Request),
}

impl Value {
    /// Bytes counted against message and batch limits.
    pub fn size_bytes(&self) -> u64 {
        match self {
            Value::Noop => 1,
            Value::Batch(requests) => 8 + requests.iter().map(Request::size_bytes).sum::<u64>(),
            Value::Configuration(configuration) => configuration.size_bytes(),
            Value::Last(request) => 8 + request.size_bytes(),
        }
    }

    /// [`Value::size_bytes`] of a batch holding one request with `payload_bytes` of payload:
    /// the value a large request (one with a slot of its own) becomes.
    pub const fn large_size_bytes(payload_bytes: u64) -> u64 {
        8 + payload_bytes + REQUEST_OVERHEAD_BYTES
    }
}

/// A value proposed (and possibly accepted) at a ballot for a slot.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Proposal {
    /// Ballot of the primary that proposed it.
    pub ballot: Ballot,
    /// Where in the log.
    pub slot: Slot,
    /// What.
    pub value: Value,
}
