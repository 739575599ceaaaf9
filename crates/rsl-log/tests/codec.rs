//! The log record codec on damaged payloads, one field at a time: each is refused with
//! the byte offset within the payload and the field it is in, and every record shape
//! round-trips. The journal and the persistent-memory log refuse a record through these
//! errors (with file and frame offset added), so this is what an operator reads.

use bytes::Bytes;
use rsl_core::{
    Ballot, Configuration, MemberAddress, NodeId, Proposal, Request, RequestId, Slot, Value,
    ADDRESS_BYTES_MAX,
};
use rsl_log::codec::{DecodeError, Record, RECORD_PERSIST, RECORD_SNAPSHOT, RECORD_TRUNCATE};

fn ballot(round: u64, node: u64) -> Ballot {
    Ballot { round, node: NodeId(node) }
}

fn request(payload: &[u8]) -> Request {
    Request { id: RequestId { client: 7, sequence: 9 }, payload: Bytes::copy_from_slice(payload) }
}

/// A persist record with a promise, a chosen slot and one proposal of one request of 3
/// bytes: flags (1), promise (16), chosen (8), count (4), ballot (16), slot (8), tag (1),
/// request count (4), client (8), sequence (8), payload length (4), payload (3): 81 bytes.
fn persist() -> Record {
    Record::Persist {
        promise: Some(ballot(3, 1)),
        chosen: Some(Slot(4)),
        proposals: vec![Proposal {
            ballot: ballot(3, 1),
            slot: Slot(5),
            value: Value::Batch(vec![request(b"abc")].into()),
        }],
    }
}

fn encoded(record: &Record) -> Vec<u8> {
    let mut out = Vec::new();
    record.encode(&mut out);
    out
}

fn decode(kind: u8, bytes: &[u8]) -> Result<Record, DecodeError> {
    Record::decode(kind, &Bytes::copy_from_slice(bytes))
}

/// The refusal of the persist record cut to `len` bytes.
fn cut(len: usize) -> DecodeError {
    let bytes = encoded(&persist());
    assert_eq!(bytes.len(), 81, "the layout this file assumes");
    decode(RECORD_PERSIST, &bytes[..len]).expect_err("cut")
}

#[test]
fn the_persist_record_round_trips() {
    assert_eq!(decode(RECORD_PERSIST, &encoded(&persist())).unwrap(), persist());
}

#[test]
fn an_empty_payload_is_refused_naming_the_field() {
    let error = cut(0);
    assert_eq!(error.offset, 0, "{error}");
    assert!(error.reason.contains("expected 1 bytes of flags, found 0"), "{error}");
}

#[test]
fn a_payload_cut_in_the_promise_round_is_refused_naming_the_field() {
    let error = cut(5);
    assert_eq!(error.offset, 1, "{error}");
    assert!(error.reason.contains("expected 8 bytes of ballot round, found 4"), "{error}");
}

#[test]
fn a_payload_cut_in_the_promise_node_is_refused_naming_the_field() {
    let error = cut(12);
    assert_eq!(error.offset, 9, "{error}");
    assert!(error.reason.contains("of ballot node"), "{error}");
}

#[test]
fn a_payload_cut_in_the_chosen_slot_is_refused_naming_the_field() {
    let error = cut(20);
    assert_eq!(error.offset, 17, "{error}");
    assert!(error.reason.contains("of chosen slot"), "{error}");
}

#[test]
fn a_payload_cut_in_the_proposal_count_is_refused_naming_the_field() {
    let error = cut(27);
    assert_eq!(error.offset, 25, "{error}");
    assert!(error.reason.contains("of proposal count"), "{error}");
}

#[test]
fn a_payload_cut_in_a_proposals_ballot_is_refused_at_the_count_that_promised_it() {
    let error = cut(33);
    assert_eq!(error.offset, 25, "{error}");
    assert!(error.reason.contains("proposal count 1 needs at least 25 bytes, only 4 remain"), "{error}");
}

#[test]
fn a_payload_cut_in_the_proposal_slot_is_refused_at_the_proposal_count() {
    let error = cut(50);
    assert_eq!(error.offset, 25, "{error}");
    assert!(error.reason.contains("only 21 remain"), "{error}");
}

#[test]
fn a_payload_cut_before_the_value_tag_is_refused_at_the_proposal_count() {
    let error = cut(53);
    assert_eq!(error.offset, 25, "{error}");
    assert!(error.reason.contains("only 24 remain"), "{error}");
}

#[test]
fn a_payload_cut_in_the_request_count_is_refused_naming_the_field() {
    let error = cut(56);
    assert_eq!(error.offset, 54, "{error}");
    assert!(error.reason.contains("of request count"), "{error}");
}

#[test]
fn a_payload_cut_in_the_request_client_is_refused_at_the_request_count() {
    let error = cut(60);
    assert_eq!(error.offset, 54, "{error}");
    assert!(error.reason.contains("request count 1 needs at least 20 bytes, only 2 remain"), "{error}");
}

#[test]
fn a_payload_cut_in_the_payload_length_is_refused_at_the_request_count() {
    let error = cut(76);
    assert_eq!(error.offset, 54, "{error}");
    assert!(error.reason.contains("only 18 remain"), "{error}");
}

#[test]
fn a_payload_cut_in_the_request_payload_is_refused_at_its_length() {
    let error = cut(80);
    assert_eq!(error.offset, 74, "{error}");
    assert!(
        error.reason.contains("request payload length 3 needs at least 3 bytes, only 2 remain"),
        "{error}"
    );
}

#[test]
fn unknown_flag_bits_are_refused() {
    let mut bytes = encoded(&persist());
    bytes[0] |= 0x80;
    let error = decode(RECORD_PERSIST, &bytes).unwrap_err();
    assert_eq!(error.offset, 1);
    assert!(error.reason.contains("unknown flag bits 0x83"), "{error}");
}

#[test]
fn an_unknown_value_tag_is_refused_at_the_tag() {
    let mut bytes = encoded(&persist());
    bytes[53] = 9;
    let error = decode(RECORD_PERSIST, &bytes).unwrap_err();
    assert_eq!((error.offset, error.reason.as_str()), (53, "unknown value tag 9"));
}

#[test]
fn a_proposal_count_larger_than_the_payload_is_refused_before_allocating() {
    let mut bytes = encoded(&persist());
    bytes[25..29].copy_from_slice(&u32::MAX.to_le_bytes());
    let error = decode(RECORD_PERSIST, &bytes).unwrap_err();
    assert_eq!(error.offset, 25);
    assert!(error.reason.contains(&format!("proposal count {}", u32::MAX)), "{error}");
}

#[test]
fn trailing_bytes_after_a_record_are_refused() {
    let mut bytes = encoded(&persist());
    bytes.extend_from_slice(&[0, 0]);
    let error = decode(RECORD_PERSIST, &bytes).unwrap_err();
    assert_eq!((error.offset, error.reason.as_str()), (81, "2 trailing bytes after the record"));
}

#[test]
fn an_unknown_record_type_is_refused() {
    let error = decode(42, &[]).unwrap_err();
    assert_eq!((error.offset, error.reason.as_str()), (0, "unknown record type 42"));
    assert_eq!(error.to_string(), "at payload byte 0: unknown record type 42");
}

#[test]
fn a_truncate_record_round_trips_and_refuses_a_cut() {
    let record = Record::Truncate { below: Slot(77) };
    assert_eq!(record.kind(), RECORD_TRUNCATE);
    let bytes = encoded(&record);
    assert_eq!(decode(RECORD_TRUNCATE, &bytes).unwrap(), record);
    assert!(decode(RECORD_TRUNCATE, &bytes[..7]).unwrap_err().reason.contains("truncation slot"));
}

#[test]
fn a_snapshot_record_round_trips_and_names_each_cut_field() {
    let record = Record::Snapshot { promise: ballot(2, 3), chosen: Slot(10), floor: Slot(4) };
    assert_eq!(record.kind(), RECORD_SNAPSHOT);
    let bytes = encoded(&record);
    assert_eq!(decode(RECORD_SNAPSHOT, &bytes).unwrap(), record);
    assert!(decode(RECORD_SNAPSHOT, &bytes[..20]).unwrap_err().reason.contains("chosen slot"));
    assert!(decode(RECORD_SNAPSHOT, &bytes[..30]).unwrap_err().reason.contains("floor slot"));
}

#[test]
fn a_configuration_value_round_trips_and_names_its_cut_fields() {
    let configuration = Configuration::new(4, vec![NodeId(1), NodeId(5)], Slot(9));
    let record = Record::Persist {
        promise: None,
        chosen: None,
        proposals: vec![Proposal {
            ballot: ballot(1, 1),
            slot: Slot(8),
            value: Value::Configuration(configuration),
        }],
    };
    let bytes = encoded(&record);
    assert_eq!(decode(RECORD_PERSIST, &bytes).unwrap(), record);
    // flags (1), count (4), ballot (16), slot (8), tag (1): the configuration starts at 30.
    let field = |len: usize| decode(RECORD_PERSIST, &bytes[..len]).unwrap_err().reason;
    assert!(field(34).contains("configuration number"));
    assert!(field(42).contains("configuration first slot"));
    assert!(field(48).contains("member count"));
    assert!(field(bytes.len() - 4).contains("member count 2 needs at least 16 bytes"));
}

#[test]
fn a_last_value_round_trips() {
    let record = Record::Persist {
        promise: None,
        chosen: Some(Slot(2)),
        proposals: vec![Proposal {
            ballot: ballot(1, 2),
            slot: Slot(3),
            value: Value::Last(request(b"bye")),
        }],
    };
    assert_eq!(decode(RECORD_PERSIST, &encoded(&record)).unwrap(), record);
}

#[test]
fn a_noop_value_round_trips() {
    let record = Record::Persist {
        promise: Some(ballot(1, 1)),
        chosen: None,
        proposals: vec![Proposal { ballot: ballot(1, 1), slot: Slot(1), value: Value::Noop }],
    };
    assert_eq!(decode(RECORD_PERSIST, &encoded(&record)).unwrap(), record);
}

#[test]
fn every_cut_of_a_persist_record_is_refused_and_never_panics() {
    let bytes = encoded(&persist());
    for len in 0..bytes.len() {
        let error = decode(RECORD_PERSIST, &bytes[..len]).expect_err("a cut");
        assert!(error.offset <= len as u64, "{len}: {error}");
    }
}

/// A persist record of one configuration value over member 1 and the addresses given:
/// flags (1), count (4), ballot (16), slot (8), tag (1), number (8), first slot (8),
/// member count and member (12), learner count (4), address count (4): the first
/// address's node is at byte 66 and its replica length at 74.
fn addressed(addresses: Vec<MemberAddress>) -> (Record, Vec<u8>) {
    let configuration = Configuration { addresses, ..Configuration::new(2, vec![NodeId(1)], Slot(3)) };
    let record = Record::Persist {
        promise: None,
        chosen: None,
        proposals: vec![Proposal {
            ballot: ballot(1, 1),
            slot: Slot(2),
            value: Value::Configuration(configuration),
        }],
    };
    let bytes = encoded(&record);
    (record, bytes)
}

fn address(replica: &str, client: &str) -> MemberAddress {
    MemberAddress { node: NodeId(1), replica: replica.into(), client: client.into() }
}

#[test]
fn a_configuration_with_addresses_round_trips_and_names_its_cut_fields() {
    let (record, bytes) = addressed(vec![address("http://a:1", "http://a:2")]);
    assert_eq!(decode(RECORD_PERSIST, &bytes).unwrap(), record);
    let field = |len: usize| decode(RECORD_PERSIST, &bytes[..len]).unwrap_err();
    let error = field(60);
    assert_eq!(error.offset, 58);
    assert!(error.reason.contains("of learner count"), "{error}");
    assert!(field(64).reason.contains("of address count"), "{}", field(64));
    assert!(field(70).reason.contains("address count 1 needs at least 16 bytes"), "{}", field(70));
    let error = field(84);
    assert_eq!(error.offset, 74, "{error}");
    assert!(
        error.reason.contains("replica address length 10 needs at least 10 bytes, only 6 remain"),
        "{error}"
    );
}

#[test]
fn an_address_longer_than_the_maximum_is_refused_at_its_length() {
    let long = "x".repeat(ADDRESS_BYTES_MAX + 1);
    let (_, bytes) = addressed(vec![address(&long, "")]);
    let error = decode(RECORD_PERSIST, &bytes).unwrap_err();
    assert_eq!(error.offset, 74, "{error}");
    assert_eq!(error.reason, format!("replica address of 257 bytes, more than {ADDRESS_BYTES_MAX}"));
    let (_, bytes) = addressed(vec![address("http://a:1", &long)]);
    let error = decode(RECORD_PERSIST, &bytes).unwrap_err();
    assert_eq!(error.offset, 74 + 4 + 10, "{error}");
    assert!(error.reason.starts_with("client address of 257 bytes"), "{error}");
}

#[test]
fn an_address_that_is_not_utf8_is_refused() {
    let (_, mut bytes) = addressed(vec![address("http://a:1", "")]);
    bytes[78] = 0xFF;
    let error = decode(RECORD_PERSIST, &bytes).unwrap_err();
    assert_eq!((error.offset, error.reason.as_str()), (78, "replica address is not UTF-8"));
}

#[test]
fn a_membership_tag_without_learners_or_addresses_is_refused_at_the_tag() {
    let (_, mut bytes) = addressed(vec![address("http://a:1", "")]);
    // Address count 0, and the address itself cut off: tag 4 with neither.
    bytes[62..66].copy_from_slice(&0u32.to_le_bytes());
    bytes.truncate(66);
    let error = decode(RECORD_PERSIST, &bytes).unwrap_err();
    assert_eq!(error.offset, 29, "{error}");
    assert!(error.reason.contains("has neither"), "{error}");
}
