//! rsl-kv's checkpoint file, damaged one part at a time: each damage is refused with the
//! error that names it (magic, version, truncation of each part, checksum, trailing bytes,
//! a body field), and nothing is loaded. Layout: magic (8), then under the CRC32C version
//! (4), slot (8), body length (8), the body, then the checksum (4).

use bytes::Bytes;
use rsl_kv::command::{Write, WriteId};
use rsl_kv::machine::{CheckpointFormatError, CHECKPOINT_MAGIC, CHECKPOINT_VERSION};
use rsl_kv::KvStateMachine;

/// A saved checkpoint at slot 2 of a map with one key and one session.
fn saved() -> Vec<u8> {
    let mut machine = KvStateMachine::new();
    let put = Write::Put {
        id: WriteId { client: 5, sequence: 1 },
        key: "k".into(),
        value: Bytes::from_static(b"v"),
    };
    machine.execute_write(2, &put.encode());
    let mut bytes = Vec::new();
    machine.save(2, &mut bytes).unwrap();
    bytes
}

fn load(bytes: &[u8]) -> Result<(u64, KvStateMachine), CheckpointFormatError> {
    KvStateMachine::load(&mut &bytes[..], 100)
}

/// `bytes` with the checksum recomputed, as a writer of a damaged but sealed file would.
fn resealed(mut bytes: Vec<u8>) -> Vec<u8> {
    let end = bytes.len() - 4;
    let crc = crc32c::crc32c(&bytes[8..end]);
    bytes[end..].copy_from_slice(&crc.to_le_bytes());
    bytes
}

#[test]
fn a_saved_checkpoint_loads() {
    let (slot, machine) = load(&saved()).unwrap();
    assert_eq!(slot, 2);
    assert_eq!(machine.len(), 1);
    assert_eq!(machine.sessions(), 1);
    assert_eq!(&saved()[..8], &CHECKPOINT_MAGIC);
}

#[test]
fn an_empty_file_is_not_a_checkpoint() {
    assert!(matches!(load(&[]), Err(CheckpointFormatError::Magic { found }) if found.is_empty()));
}

#[test]
fn a_foreign_magic_is_refused_showing_it() {
    let mut bytes = saved();
    bytes[..8].copy_from_slice(b"NOTKVCP\0");
    let error = load(&bytes).unwrap_err();
    assert!(matches!(&error, CheckpointFormatError::Magic { found } if found == b"NOTKVCP\0"), "{error}");
    assert!(error.to_string().contains("not an rsl-kv checkpoint"), "{error}");
}

#[test]
fn a_file_cut_in_its_header_is_refused_naming_the_header() {
    let error = load(&saved()[..20]).unwrap_err();
    assert!(
        matches!(error, CheckpointFormatError::Truncated { what: "the header", expected: 28, found: 20 }),
        "{error}"
    );
}

#[test]
fn a_file_cut_in_its_body_is_refused_naming_the_body() {
    let bytes = saved();
    let error = load(&bytes[..bytes.len() - 10]).unwrap_err();
    assert!(matches!(error, CheckpointFormatError::Truncated { what: "the body", .. }), "{error}");
}

#[test]
fn a_file_cut_in_its_checksum_is_refused_naming_the_checksum() {
    let bytes = saved();
    let error = load(&bytes[..bytes.len() - 2]).unwrap_err();
    assert!(
        matches!(error, CheckpointFormatError::Truncated { what: "the checksum", expected: 4, found: 2 }),
        "{error}"
    );
}

#[test]
fn a_flipped_body_bit_fails_the_checksum() {
    let mut bytes = saved();
    bytes[40] ^= 1;
    let error = load(&bytes).unwrap_err();
    assert!(matches!(error, CheckpointFormatError::Checksum { .. }), "{error}");
    assert!(error.to_string().contains("checksum mismatch"), "{error}");
}

#[test]
fn a_flipped_slot_bit_fails_the_checksum() {
    let mut bytes = saved();
    bytes[12] ^= 0x80;
    assert!(matches!(load(&bytes), Err(CheckpointFormatError::Checksum { .. })));
}

#[test]
fn bytes_after_the_checksum_are_refused_counting_them() {
    let mut bytes = saved();
    bytes.extend_from_slice(b"xyz");
    let error = load(&bytes).unwrap_err();
    assert!(matches!(error, CheckpointFormatError::Trailing(3)), "{error}");
}

#[test]
fn another_format_version_is_refused_naming_it() {
    let mut bytes = saved();
    bytes[8..12].copy_from_slice(&(CHECKPOINT_VERSION + 1).to_le_bytes());
    let error = load(&resealed(bytes)).unwrap_err();
    assert!(
        matches!(error, CheckpointFormatError::Version { found } if found == CHECKPOINT_VERSION + 1),
        "{error}"
    );
}

#[test]
fn a_body_whose_entry_count_overstates_it_is_refused_naming_the_field() {
    let mut bytes = saved();
    // The body starts at 28 with the entry count.
    bytes[28..36].copy_from_slice(&5u64.to_le_bytes());
    let error = load(&resealed(bytes)).unwrap_err();
    // The second entry is read from what follows the first: the session count and the
    // session, which do not decode as a key and a value.
    assert!(matches!(&error, CheckpointFormatError::Body(_)), "{error}");
    assert!(error.to_string().starts_with("checkpoint body: malformed "), "{error}");
}

#[test]
fn a_session_whose_answer_names_another_slot_is_refused() {
    let mut bytes = saved();
    // The body: entry count (8), key (4 + 1), value (4 + 1), session count (8), client
    // (8), sequence (8), then the session's slot.
    let at = 28 + 8 + 5 + 5 + 8 + 8 + 8;
    bytes[at..at + 8].copy_from_slice(&99u64.to_le_bytes());
    let error = load(&resealed(bytes)).unwrap_err();
    assert!(
        matches!(&error, CheckpointFormatError::Body(decode) if decode.field == "checkpoint.session.slot"),
        "{error}"
    );
}

#[test]
fn a_checkpoint_error_becomes_invalid_data() {
    let error: std::io::Error = load(&[1, 2, 3]).unwrap_err().into();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
}
