//! Reassembling a message sent in chunks, one refusal at a time: too large, empty, out of
//! order, past its end, a field that changes mid-message, a message torn by the next;
//! after a refusal the rest of the refused message is dropped quietly and the next message
//! goes through.

use bytes::Bytes;
use rsl_core::{NodeId, RingId};
use rsl_transport::chunk::{split, ChunkError, ChunkHeader, Reassembler};
use rsl_transport::proto as pb;

fn header(message_id: u64) -> ChunkHeader {
    ChunkHeader { ring: RingId(1), from: NodeId(1), to: NodeId(2), message_id }
}

/// Message `id` of `len` bytes in chunks of 10.
fn chunks(id: u64, len: usize) -> Vec<pb::Chunk> {
    let bytes = Bytes::from((0..len).map(|i| i as u8).collect::<Vec<_>>());
    split(header(id), &bytes, 10)
}

#[test]
fn chunks_in_order_reassemble_the_message() {
    let mut reassembler = Reassembler::new(1000);
    let mut parts = chunks(1, 35);
    assert_eq!(parts.len(), 4);
    let last = parts.pop().unwrap();
    for part in parts {
        assert_eq!(reassembler.accept(part).unwrap(), None);
    }
    assert_eq!(reassembler.buffered_bytes(), 30);
    let (got, bytes) = reassembler.accept(last).unwrap().expect("complete");
    assert_eq!(got, header(1));
    assert_eq!(bytes, Bytes::from((0..35).map(|i| i as u8).collect::<Vec<_>>()));
    assert_eq!(reassembler.buffered_bytes(), 0);
}

#[test]
fn a_message_over_the_limit_is_refused_before_buffering() {
    let mut reassembler = Reassembler::new(20);
    let error = reassembler.accept(chunks(1, 35).remove(0)).unwrap_err();
    assert_eq!(error, ChunkError::TooLarge { message_id: 1, total_bytes: 35, max: 20 });
    assert_eq!(reassembler.buffered_bytes(), 0);
}

#[test]
fn the_rest_of_a_refused_message_is_dropped_quietly_and_the_next_goes_through() {
    let mut reassembler = Reassembler::new(20);
    let mut parts = chunks(1, 35).into_iter();
    assert!(reassembler.accept(parts.next().unwrap()).is_err());
    for part in parts {
        assert_eq!(reassembler.accept(part), Ok(None), "dropped without another error");
    }
    let small = chunks(2, 15);
    assert_eq!(reassembler.accept(small[0].clone()), Ok(None));
    assert!(reassembler.accept(small[1].clone()).unwrap().is_some());
}

#[test]
fn an_empty_chunk_is_refused() {
    let mut reassembler = Reassembler::new(1000);
    let mut first = chunks(1, 35).remove(0);
    first.data = Bytes::new();
    assert_eq!(reassembler.accept(first), Err(ChunkError::Empty { message_id: 1, offset: 0 }));
}

#[test]
fn a_chunk_without_a_first_is_out_of_order() {
    let mut reassembler = Reassembler::new(1000);
    let second = chunks(1, 35).remove(1);
    match reassembler.accept(second) {
        Err(ChunkError::OutOfOrder { message_id: 1, offset: 10, expected }) => {
            assert_eq!(expected, "the first chunk of a message")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_skipped_chunk_is_out_of_order_naming_the_expected_offset() {
    let mut reassembler = Reassembler::new(1000);
    let parts = chunks(1, 35);
    reassembler.accept(parts[0].clone()).unwrap();
    match reassembler.accept(parts[2].clone()) {
        Err(ChunkError::OutOfOrder { offset: 20, expected, .. }) => assert_eq!(expected, "offset 10"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_chunk_past_the_end_is_an_overrun() {
    let mut reassembler = Reassembler::new(1000);
    let mut first = chunks(1, 35).remove(0);
    first.total_bytes = 5;
    assert_eq!(
        reassembler.accept(first),
        Err(ChunkError::Overrun { message_id: 1, offset: 0, bytes: 10, total_bytes: 5 })
    );
}

fn inconsistent(change: impl Fn(&mut pb::Chunk), field: &str) {
    let mut reassembler = Reassembler::new(1000);
    let parts = chunks(1, 35);
    reassembler.accept(parts[0].clone()).unwrap();
    let mut second = parts[1].clone();
    change(&mut second);
    match reassembler.accept(second) {
        Err(ChunkError::Inconsistent { field: found, .. }) => assert_eq!(found, field),
        other => panic!("{field}: {other:?}"),
    }
    assert_eq!(reassembler.buffered_bytes(), 0, "the message is dropped");
}

#[test]
fn a_chunk_of_another_message_mid_message_is_inconsistent() {
    inconsistent(|c| c.message_id = 9, "message_id");
}

#[test]
fn a_chunk_of_another_ring_mid_message_is_inconsistent() {
    inconsistent(|c| c.ring = 9, "ring");
}

#[test]
fn a_chunk_from_another_sender_mid_message_is_inconsistent() {
    inconsistent(|c| c.from = 9, "from");
}

#[test]
fn a_chunk_to_another_receiver_mid_message_is_inconsistent() {
    inconsistent(|c| c.to = 9, "to");
}

#[test]
fn a_chunk_announcing_another_length_mid_message_is_inconsistent() {
    inconsistent(|c| c.total_bytes = 99, "total_bytes");
}

#[test]
fn a_new_message_tears_the_one_in_progress_and_goes_on() {
    let mut reassembler = Reassembler::new(1000);
    let first = chunks(1, 35);
    reassembler.accept(first[0].clone()).unwrap();
    let second = chunks(2, 15);
    assert_eq!(
        reassembler.accept(second[0].clone()),
        Err(ChunkError::Torn { message_id: 1, received: 10, total_bytes: 35 })
    );
    let (got, bytes) = reassembler.accept(second[1].clone()).unwrap().expect("the new one completes");
    assert_eq!((got.message_id, bytes.len()), (2, 15));
}

#[test]
fn an_abandoned_message_drops_its_remaining_chunks() {
    let mut reassembler = Reassembler::new(1000);
    let parts = chunks(4, 35);
    reassembler.accept(parts[0].clone()).unwrap();
    reassembler.abandon(4);
    assert_eq!(reassembler.buffered_bytes(), 0);
    assert_eq!(reassembler.accept(parts[1].clone()), Ok(None));
}

#[test]
fn every_error_names_its_message() {
    let errors = [
        ChunkError::TooLarge { message_id: 7, total_bytes: 9, max: 1 },
        ChunkError::Empty { message_id: 7, offset: 0 },
        ChunkError::Overrun { message_id: 7, offset: 0, bytes: 2, total_bytes: 1 },
        ChunkError::Torn { message_id: 7, received: 1, total_bytes: 2 },
    ];
    for error in errors {
        assert!(error.to_string().contains("message 7"), "{error}");
    }
}
