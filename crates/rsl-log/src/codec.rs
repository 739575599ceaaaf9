//! The stable binary encoding of what the stores persist: the payload of one record.
//!
//! Little-endian, fixed-width integers, no padding, no `usize`. The framing around a payload
//! (magic, length, type, CRC32C) belongs to each store and is described in
//! `docs/STORAGE.md`, as is this encoding, byte by byte; the little-endian field readers
//! those framings share are here too.
//!
//! Decoding never panics and never allocates more than the input could describe: every
//! count is checked against the bytes that remain before anything is reserved.

use std::path::PathBuf;

use bytes::Bytes;
use rsl_core::{
    Ballot, Configuration, MemberAddress, NodeId, PersistRequest, Proposal, Request, RequestId, Slot, Value,
    ADDRESS_BYTES_MAX,
};

use crate::error::{CheckpointError, LogError};

/// Record type: a [`PersistRequest`] (promise, proposals, chosen hint).
pub const RECORD_PERSIST: u8 = 1;
/// Record type: slots below a bound are no longer needed.
pub const RECORD_TRUNCATE: u8 = 2;
/// Record type: the promise, chosen hint and truncation floor as of a point in the log.
pub const RECORD_SNAPSHOT: u8 = 3;

const FLAG_PROMISE: u8 = 0b01;
const FLAG_CHOSEN: u8 = 0b10;

const VALUE_NOOP: u8 = 0;
const VALUE_BATCH: u8 = 1;
const VALUE_CONFIGURATION: u8 = 2;
const VALUE_LAST: u8 = 3;
/// A configuration with learners or addresses (one with neither keeps tag 2, so logs of
/// rings that use neither stay readable by builds before tag 4).
const VALUE_MEMBERSHIP: u8 = 4;

/// Smallest encoding of one proposal: ballot (16), slot (8), value tag (1).
const PROPOSAL_BYTES_MIN: usize = 25;
/// Smallest encoding of one request: id (16) and payload length (4).
const REQUEST_BYTES_MIN: usize = 20;
/// Encoding of one member id.
const MEMBER_BYTES: usize = 8;
/// Smallest encoding of one address: node (8) and two lengths (4 each).
const ADDRESS_BYTES_MIN: usize = 16;

/// One decoded record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// What a [`PersistRequest`] writes (its ticket is not stored: tickets are per process).
    Persist {
        /// A new promise.
        promise: Option<Ballot>,
        /// A chosen-watermark hint.
        chosen: Option<Slot>,
        /// Accepted proposals, each replacing any earlier proposal for its slot.
        proposals: Vec<Proposal>,
    },
    /// Proposals below `below` are gone.
    Truncate {
        /// The new first slot of the log.
        below: Slot,
    },
    /// Everything the records before this point established, except the proposals.
    Snapshot {
        /// The highest promise.
        promise: Ballot,
        /// The highest chosen hint.
        chosen: Slot,
        /// The truncation floor.
        floor: Slot,
    },
}

impl Record {
    /// The record type byte of this record.
    pub fn kind(&self) -> u8 {
        match self {
            Record::Persist { .. } => RECORD_PERSIST,
            Record::Truncate { .. } => RECORD_TRUNCATE,
            Record::Snapshot { .. } => RECORD_SNAPSHOT,
        }
    }

    /// Appends this record's payload to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Record::Persist { promise, chosen, proposals } => {
                encode_persist_parts(*promise, *chosen, proposals, out)
            }
            Record::Truncate { below } => put_u64(out, below.0),
            Record::Snapshot { promise, chosen, floor } => {
                put_ballot(out, *promise);
                put_u64(out, chosen.0);
                put_u64(out, floor.0);
            }
        }
    }

    /// Decodes a payload of type `kind`. The proposals' request payloads share `payload`'s
    /// buffer (no copy).
    pub fn decode(kind: u8, payload: &Bytes) -> Result<Record, DecodeError> {
        let mut reader = Reader { bytes: payload, position: 0 };
        let record = match kind {
            RECORD_PERSIST => {
                let flags = reader.u8("flags")?;
                if flags & !(FLAG_PROMISE | FLAG_CHOSEN) != 0 {
                    return Err(reader.error(format!("unknown flag bits {flags:#04x}")));
                }
                let promise = if flags & FLAG_PROMISE != 0 { Some(reader.ballot()?) } else { None };
                let chosen =
                    if flags & FLAG_CHOSEN != 0 { Some(Slot(reader.u64("chosen slot")?)) } else { None };
                let count = reader.count("proposal count", PROPOSAL_BYTES_MIN)?;
                let mut proposals = Vec::with_capacity(count);
                for _ in 0..count {
                    proposals.push(reader.proposal()?);
                }
                Record::Persist { promise, chosen, proposals }
            }
            RECORD_TRUNCATE => Record::Truncate { below: Slot(reader.u64("truncation slot")?) },
            RECORD_SNAPSHOT => {
                let promise = reader.ballot()?;
                let chosen = Slot(reader.u64("chosen slot")?);
                let floor = Slot(reader.u64("floor slot")?);
                Record::Snapshot { promise, chosen, floor }
            }
            other => return Err(DecodeError { offset: 0, reason: format!("unknown record type {other}") }),
        };
        if reader.remaining() != 0 {
            return Err(reader.error(format!("{} trailing bytes after the record", reader.remaining())));
        }
        Ok(record)
    }
}

/// Appends the payload of a [`RECORD_PERSIST`] record for `request` to `out`.
pub fn encode_persist(request: &PersistRequest, out: &mut Vec<u8>) {
    encode_persist_parts(request.promise, request.chosen, &request.proposals, out);
}

fn encode_persist_parts(
    promise: Option<Ballot>,
    chosen: Option<Slot>,
    proposals: &[Proposal],
    out: &mut Vec<u8>,
) {
    let mut flags = 0;
    if promise.is_some() {
        flags |= FLAG_PROMISE;
    }
    if chosen.is_some() {
        flags |= FLAG_CHOSEN;
    }
    out.push(flags);
    if let Some(promise) = promise {
        put_ballot(out, promise);
    }
    if let Some(chosen) = chosen {
        put_u64(out, chosen.0);
    }
    put_count(out, proposals.len());
    for proposal in proposals {
        encode_proposal(proposal, out);
    }
}

/// Appends one proposal to `out`.
pub fn encode_proposal(proposal: &Proposal, out: &mut Vec<u8>) {
    put_ballot(out, proposal.ballot);
    put_u64(out, proposal.slot.0);
    match &proposal.value {
        Value::Noop => out.push(VALUE_NOOP),
        Value::Batch(requests) => {
            out.push(VALUE_BATCH);
            put_count(out, requests.len());
            for request in requests {
                put_request(out, request);
            }
        }
        Value::Last(request) => {
            out.push(VALUE_LAST);
            put_request(out, request);
        }
        Value::Configuration(configuration) => {
            let extended = !configuration.learners.is_empty() || !configuration.addresses.is_empty();
            out.push(if extended { VALUE_MEMBERSHIP } else { VALUE_CONFIGURATION });
            put_u64(out, configuration.number);
            put_u64(out, configuration.first_slot.0);
            put_nodes(out, &configuration.members);
            if extended {
                put_nodes(out, &configuration.learners);
                put_count(out, configuration.addresses.len());
                for address in &configuration.addresses {
                    put_u64(out, address.node.0);
                    put_count(out, address.replica.len());
                    out.extend_from_slice(address.replica.as_bytes());
                    put_count(out, address.client.len());
                    out.extend_from_slice(address.client.as_bytes());
                }
            }
        }
    }
}

fn put_nodes(out: &mut Vec<u8>, nodes: &[NodeId]) {
    put_count(out, nodes.len());
    for node in nodes {
        put_u64(out, node.0);
    }
}

/// Encoded size of a configuration value's body (after the tag).
fn configuration_encoded_bytes(configuration: &Configuration) -> u64 {
    let base = 20 + 8 * configuration.members.len() as u64;
    if configuration.learners.is_empty() && configuration.addresses.is_empty() {
        return base;
    }
    let addresses: u64 = configuration
        .addresses
        .iter()
        .map(|a| ADDRESS_BYTES_MIN as u64 + (a.replica.len() + a.client.len()) as u64)
        .sum();
    base + 4 + 8 * configuration.learners.len() as u64 + 4 + addresses
}

fn put_request(out: &mut Vec<u8>, request: &Request) {
    put_u64(out, request.id.client);
    put_u64(out, request.id.sequence);
    put_count(out, request.payload.len());
    out.extend_from_slice(&request.payload);
}

/// Encoded size of a proposal, without encoding it.
pub fn proposal_encoded_bytes(proposal: &Proposal) -> u64 {
    let value = match &proposal.value {
        Value::Noop => 0,
        Value::Batch(requests) => 4 + requests.iter().map(|r| 20 + r.payload.len() as u64).sum::<u64>(),
        Value::Configuration(configuration) => configuration_encoded_bytes(configuration),
        Value::Last(request) => 20 + request.payload.len() as u64,
    };
    PROPOSAL_BYTES_MIN as u64 + value
}

/// A payload that does not decode: where (relative to the payload's start) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    /// Byte offset within the payload.
    pub offset: u64,
    /// What was expected and what was found.
    pub reason: String,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "at payload byte {}: {}", self.offset, self.reason)
    }
}

/// Why stored bytes were refused: damage (or a foreign file), or intact bytes of a format
/// version this build does not read. The second is never cut or set aside by a recovery
/// policy: the bytes are fine, the build is too old for them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Damaged, truncated or foreign bytes at `offset`.
    Damaged {
        /// Byte offset of the damage.
        offset: u64,
        /// What was expected and what was found.
        reason: String,
    },
    /// Intact bytes (their checksum verifies) whose version field, at `offset`, names
    /// another format version.
    Version {
        /// Byte offset of the version field.
        offset: u64,
        /// The version found.
        found: u64,
        /// The version this build reads.
        supported: u64,
    },
}

impl Refusal {
    pub fn damaged(offset: u64, reason: impl Into<String>) -> Refusal {
        Refusal::Damaged { offset, reason: reason.into() }
    }

    /// What is wrong, in words.
    #[cfg(test)]
    pub fn reason(&self) -> String {
        match self {
            Refusal::Damaged { reason, .. } => reason.clone(),
            Refusal::Version { found, supported, .. } => {
                format!("format version {found}; this build reads version {supported}")
            }
        }
    }

    /// The log store's error for `file`.
    pub fn log_error(self, file: impl Into<PathBuf>) -> LogError {
        match self {
            Refusal::Damaged { offset, reason } => LogError::corrupt(file, offset, reason),
            Refusal::Version { offset, found, supported } => {
                LogError::UnsupportedVersion { file: file.into(), offset, found, supported }
            }
        }
    }

    /// The checkpoint store's error for `file`.
    pub fn checkpoint_error(self, file: impl Into<PathBuf>) -> CheckpointError {
        match self {
            Refusal::Damaged { offset, reason } => CheckpointError::corrupt(file, offset, reason),
            Refusal::Version { offset, found, supported } => {
                CheckpointError::UnsupportedVersion { file: file.into(), offset, found, supported }
            }
        }
    }
}

/// The frame shared by the file journal's segment header and the checkpoint header: bytes
/// 0..8 hold a magic, 8..12 the format version, 12..16 the CRC32C of the whole header with
/// those four bytes zero.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FileHeader {
    pub magic: [u8; 8],
    pub version: u32,
    /// What a file with this header is, for messages ("a journal segment").
    pub file: &'static str,
    /// What messages call the header ("segment header").
    pub name: &'static str,
}

impl FileHeader {
    /// Fills in the magic, the version and the CRC of `header`, whose own fields are set.
    pub fn seal(&self, header: &mut [u8]) {
        header[0..8].copy_from_slice(&self.magic);
        header[8..12].copy_from_slice(&self.version.to_le_bytes());
        header[12..16].fill(0);
        let crc = crc32c::crc32c(header);
        header[12..16].copy_from_slice(&crc.to_le_bytes());
    }

    /// Checks the magic, the version and the CRC of `header`. Another version in a header
    /// whose CRC verifies is [`Refusal::Version`] (a newer build wrote it); with a CRC that
    /// fails too it is damage.
    pub fn check(&self, header: &[u8]) -> Result<(), Refusal> {
        if header[0..8] != self.magic {
            return Err(Refusal::damaged(0, format!("not {}: magic {:02x?}", self.file, &header[0..8])));
        }
        let mut copy = header.to_vec();
        copy[12..16].fill(0);
        let (stored, computed) = (u32_at(header, 12), crc32c::crc32c(&copy));
        let version = u32_at(header, 8);
        if version != self.version {
            if stored == computed {
                let (found, supported) = (u64::from(version), u64::from(self.version));
                return Err(Refusal::Version { offset: 8, found, supported });
            }
            return Err(Refusal::damaged(
                8,
                format!(
                    "format version {version} in a {} whose CRC fails (damage), this build reads {}",
                    self.name, self.version
                ),
            ));
        }
        if stored != computed {
            return Err(Refusal::damaged(
                12,
                format!("{} CRC {stored:#010x}, computed {computed:#010x}", self.name),
            ));
        }
        Ok(())
    }
}

/// The little-endian `u32` at byte `at` of a header the caller has checked is long enough.
pub(crate) fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

/// The little-endian `u64` at byte `at` of a header the caller has checked is long enough.
pub(crate) fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// The little-endian `u128` at byte `at` of a header the caller has checked is long enough.
pub(crate) fn u128_at(bytes: &[u8], at: usize) -> u128 {
    u128::from_le_bytes(bytes[at..at + 16].try_into().expect("16 bytes"))
}

fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_count(out: &mut Vec<u8>, count: usize) {
    // Callers bound every count (record size limit) far below u32::MAX.
    let count = u32::try_from(count).expect("count fits in u32");
    out.extend_from_slice(&count.to_le_bytes());
}

fn put_ballot(out: &mut Vec<u8>, ballot: Ballot) {
    put_u64(out, ballot.round);
    put_u64(out, ballot.node.0);
}

struct Reader<'a> {
    bytes: &'a Bytes,
    position: usize,
}

impl Reader<'_> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.position
    }

    fn error(&self, reason: String) -> DecodeError {
        DecodeError { offset: self.position as u64, reason }
    }

    fn take(&mut self, len: usize, what: &str) -> Result<&[u8], DecodeError> {
        if self.remaining() < len {
            return Err(self.error(format!("expected {len} bytes of {what}, found {}", self.remaining())));
        }
        let start = self.position;
        self.position += len;
        Ok(&self.bytes[start..start + len])
    }

    fn u8(&mut self, what: &str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }

    fn u32(&mut self, what: &str) -> Result<u32, DecodeError> {
        let bytes = self.take(4, what)?;
        Ok(u32::from_le_bytes(bytes.try_into().expect("4 bytes")))
    }

    fn u64(&mut self, what: &str) -> Result<u64, DecodeError> {
        let bytes = self.take(8, what)?;
        Ok(u64::from_le_bytes(bytes.try_into().expect("8 bytes")))
    }

    /// A count of items at least `item_bytes_min` bytes each, checked against what remains
    /// so that no bogus count reserves memory.
    fn count(&mut self, what: &str, item_bytes_min: usize) -> Result<usize, DecodeError> {
        let at = self.position;
        let count = self.u32(what)? as usize;
        let needed = count.saturating_mul(item_bytes_min);
        if needed > self.remaining() {
            return Err(DecodeError {
                offset: at as u64,
                reason: format!(
                    "{what} {count} needs at least {needed} bytes, only {} remain",
                    self.remaining()
                ),
            });
        }
        Ok(count)
    }

    /// A count, then that many node ids.
    fn nodes(&mut self, what: &str) -> Result<Vec<NodeId>, DecodeError> {
        let count = self.count(&format!("{what} count"), MEMBER_BYTES)?;
        let mut nodes = Vec::with_capacity(count);
        for _ in 0..count {
            nodes.push(NodeId(self.u64(what)?));
        }
        Ok(nodes)
    }

    /// A length, then that many bytes of UTF-8 text, at most `ADDRESS_BYTES_MAX`.
    fn address(&mut self, what: &str) -> Result<String, DecodeError> {
        let at = self.position;
        let len = self.count(&format!("{what} length"), 1)?;
        if len > ADDRESS_BYTES_MAX {
            return Err(DecodeError {
                offset: at as u64,
                reason: format!("{what} of {len} bytes, more than {ADDRESS_BYTES_MAX}"),
            });
        }
        let text = self.take(len, what)?.to_vec();
        String::from_utf8(text)
            .map_err(|_| DecodeError { offset: at as u64 + 4, reason: format!("{what} is not UTF-8") })
    }

    fn ballot(&mut self) -> Result<Ballot, DecodeError> {
        let round = self.u64("ballot round")?;
        let node = self.u64("ballot node")?;
        Ok(Ballot { round, node: NodeId(node) })
    }

    fn request(&mut self) -> Result<Request, DecodeError> {
        let client = self.u64("request client")?;
        let sequence = self.u64("request sequence")?;
        let len = self.count("request payload length", 1)?;
        let start = self.position;
        self.take(len, "request payload")?;
        let payload = self.bytes.slice(start..start + len);
        Ok(Request { id: RequestId { client, sequence }, payload })
    }

    fn proposal(&mut self) -> Result<Proposal, DecodeError> {
        let ballot = self.ballot()?;
        let slot = Slot(self.u64("proposal slot")?);
        let tag_at = self.position;
        let value = match self.u8("value tag")? {
            VALUE_NOOP => Value::Noop,
            VALUE_BATCH => {
                let count = self.count("request count", REQUEST_BYTES_MIN)?;
                let mut requests = Vec::with_capacity(count);
                for _ in 0..count {
                    requests.push(self.request()?);
                }
                Value::Batch(requests)
            }
            VALUE_LAST => Value::Last(self.request()?),
            VALUE_CONFIGURATION => {
                let number = self.u64("configuration number")?;
                let first_slot = Slot(self.u64("configuration first slot")?);
                let members = self.nodes("member")?;
                let configuration = Configuration::new(number, Vec::new(), first_slot);
                Value::Configuration(Configuration { members, ..configuration })
            }
            VALUE_MEMBERSHIP => {
                let number = self.u64("configuration number")?;
                let first_slot = Slot(self.u64("configuration first slot")?);
                let members = self.nodes("member")?;
                let learners = self.nodes("learner")?;
                let count = self.count("address count", ADDRESS_BYTES_MIN)?;
                let mut addresses = Vec::with_capacity(count);
                for _ in 0..count {
                    let node = NodeId(self.u64("address node")?);
                    let replica = self.address("replica address")?;
                    let client = self.address("client address")?;
                    addresses.push(MemberAddress { node, replica, client });
                }
                if learners.is_empty() && addresses.is_empty() {
                    return Err(DecodeError {
                        offset: tag_at as u64,
                        reason: "value tag 4 (a configuration with learners or addresses) has neither; \
                                 such a configuration is written with tag 2"
                            .into(),
                    });
                }
                Value::Configuration(Configuration { number, members, learners, addresses, first_slot })
            }
            other => {
                return Err(DecodeError {
                    offset: tag_at as u64,
                    reason: format!("unknown value tag {other}"),
                })
            }
        };
        Ok(Proposal { ballot, slot, value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_ballot() -> impl Strategy<Value = Ballot> {
        (any::<u64>(), any::<u64>()).prop_map(|(round, node)| Ballot { round, node: NodeId(node) })
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Noop),
            proptest::collection::vec(
                (any::<u64>(), any::<u64>(), proptest::collection::vec(any::<u8>(), 0..40)),
                0..4
            )
            .prop_map(|requests| Value::Batch(
                requests
                    .into_iter()
                    .map(|(client, sequence, payload)| Request {
                        id: RequestId { client, sequence },
                        payload: payload.into()
                    })
                    .collect()
            )),
            (any::<u64>(), any::<u64>(), proptest::collection::vec(any::<u64>(), 0..6)).prop_map(
                |(number, first, members)| Value::Configuration(Configuration {
                    members: members.into_iter().map(NodeId).collect(),
                    ..Configuration::new(number, Vec::new(), Slot(first))
                })
            ),
            (
                any::<u64>(),
                proptest::collection::vec(any::<u64>(), 0..4),
                proptest::collection::vec(any::<u64>(), 1..4),
                proptest::collection::vec((any::<u64>(), "[a-z0-9:/.]{1,20}", "[a-z0-9:/.]{0,20}"), 0..3)
            )
                .prop_map(|(number, members, learners, addresses)| Value::Configuration(
                    Configuration {
                        number,
                        members: members.into_iter().map(NodeId).collect(),
                        learners: learners.into_iter().map(NodeId).collect(),
                        addresses: addresses
                            .into_iter()
                            .map(|(node, replica, client)| MemberAddress {
                                node: NodeId(node),
                                replica,
                                client
                            })
                            .collect(),
                        first_slot: Slot(number ^ 7),
                    }
                )),
            (any::<u64>(), any::<u64>(), proptest::collection::vec(any::<u8>(), 0..40)).prop_map(
                |(client, sequence, payload)| Value::Last(Request {
                    id: RequestId { client, sequence },
                    payload: payload.into()
                })
            ),
        ]
    }

    fn arb_record() -> impl Strategy<Value = Record> {
        let proposal = (arb_ballot(), any::<u64>(), arb_value()).prop_map(|(ballot, slot, value)| Proposal {
            ballot,
            slot: Slot(slot),
            value,
        });
        prop_oneof![
            (
                proptest::option::of(arb_ballot()),
                proptest::option::of(any::<u64>()),
                proptest::collection::vec(proposal, 0..4)
            )
                .prop_map(|(promise, chosen, proposals)| Record::Persist {
                    promise,
                    chosen: chosen.map(Slot),
                    proposals
                }),
            any::<u64>().prop_map(|below| Record::Truncate { below: Slot(below) }),
            (arb_ballot(), any::<u64>(), any::<u64>()).prop_map(|(promise, chosen, floor)| {
                Record::Snapshot { promise, chosen: Slot(chosen), floor: Slot(floor) }
            }),
        ]
    }

    proptest! {
        #[test]
        fn records_round_trip(record in arb_record()) {
            let mut bytes = Vec::new();
            record.encode(&mut bytes);
            let decoded = Record::decode(record.kind(), &Bytes::from(bytes)).unwrap();
            prop_assert_eq!(decoded, record);
        }

        #[test]
        fn proposal_size_is_exact(record in arb_record()) {
            if let Record::Persist { proposals, .. } = &record {
                for proposal in proposals {
                    let mut bytes = Vec::new();
                    encode_proposal(proposal, &mut bytes);
                    prop_assert_eq!(bytes.len() as u64, proposal_encoded_bytes(proposal));
                }
            }
        }

        #[test]
        fn every_strict_prefix_fails_to_decode(record in arb_record()) {
            let mut bytes = Vec::new();
            record.encode(&mut bytes);
            for len in 0..bytes.len() {
                let prefix = Bytes::copy_from_slice(&bytes[..len]);
                prop_assert!(Record::decode(record.kind(), &prefix).is_err());
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(kind in 0u8..5, bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Record::decode(kind, &Bytes::from(bytes));
        }
    }

    #[test]
    fn huge_counts_are_refused_without_allocating() {
        // flags 0, proposal count u32::MAX, nothing else.
        let payload = Bytes::from(vec![0, 0xff, 0xff, 0xff, 0xff]);
        let error = Record::decode(RECORD_PERSIST, &payload).unwrap_err();
        assert_eq!(error.offset, 1);
        assert!(error.reason.contains("proposal count"), "{}", error.reason);
    }

    #[test]
    fn unknown_types_and_tags_are_named() {
        let error = Record::decode(9, &Bytes::new()).unwrap_err();
        assert!(error.reason.contains("unknown record type 9"));
        let mut bytes = vec![0u8, 1, 0, 0, 0];
        bytes.extend_from_slice(&[0; 24]);
        bytes.push(7);
        let error = Record::decode(RECORD_PERSIST, &Bytes::from(bytes)).unwrap_err();
        assert_eq!(error.offset, 29);
        assert!(error.reason.contains("unknown value tag 7"));
    }

    /// A configuration with neither learners nor addresses keeps the old tag, so builds
    /// before tag 4 still read the logs of rings that use neither; tag 4 without either is
    /// not canonical and refused.
    #[test]
    fn configurations_use_tag_4_only_for_learners_or_addresses() {
        let persist = |configuration: Configuration| {
            let proposal =
                Proposal { ballot: Ballot::ZERO, slot: Slot(3), value: Value::Configuration(configuration) };
            let mut bytes = Vec::new();
            Record::Persist { promise: None, chosen: None, proposals: vec![proposal] }.encode(&mut bytes);
            bytes
        };
        let plain = Configuration::new(2, vec![NodeId(1), NodeId(2)], Slot(4));
        assert_eq!(persist(plain.clone())[29], VALUE_CONFIGURATION);
        let with_learner = plain.clone().with_learners(vec![NodeId(3)]);
        let mut bytes = persist(with_learner.clone());
        assert_eq!(bytes[29], VALUE_MEMBERSHIP);
        let decoded = Record::decode(RECORD_PERSIST, &Bytes::from(bytes.clone())).unwrap();
        let Record::Persist { proposals, .. } = decoded else { panic!("a persist record") };
        assert_eq!(proposals[0].value, Value::Configuration(with_learner));
        // The same bytes with the learner count zeroed and the learner cut: tag 4, nothing extra.
        let learners_at = 30 + 16 + 4 + 16;
        bytes[learners_at..learners_at + 4].copy_from_slice(&0u32.to_le_bytes());
        bytes.drain(learners_at + 4..learners_at + 12);
        let error = Record::decode(RECORD_PERSIST, &Bytes::from(bytes)).unwrap_err();
        assert_eq!(error.offset, 29);
        assert!(error.reason.contains("tag 4"), "{}", error.reason);
    }
}
