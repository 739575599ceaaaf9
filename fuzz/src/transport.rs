//! `rsl-transport`: the replica message decoder, on bytes any node that reaches the replica
//! port can send. The gRPC server decodes a frame (a protobuf `Batch`) and converts each
//! message with `message_from_proto`; a message that converts must re-encode and decode to
//! itself, and the sizes a sender plans frames with must be what encoding produces.

use bytes::Bytes;
use prost::Message as _;
use rsl_core::Message;
use rsl_transport::codec::{
    batch_header_len, decode_batch, decode_message, encode_batch, encode_message, encoded_len, framed_len,
    message_from_proto, message_to_proto,
};
use rsl_transport::proto as pb;

/// A message that decoded survives encoding: the same message comes back, and its
/// encoded length is the one the sender sizes frames with.
fn check_round_trip(message: &Message) {
    let encoded = encode_message(message);
    assert_eq!(encoded.len() as u64, encoded_len(message), "encoded_len agrees with the encoding");
    let again = decode_message(Bytes::from(encoded)).expect("a re-encoded message decodes");
    assert_eq!(&again, message, "a message survives re-encoding");
    let proto = message_to_proto(message);
    assert_eq!(message_from_proto(proto).as_ref(), Ok(message));
}

/// A frame as the server handles it, a frame as a whole, and the bytes as one message.
pub fn replica_message(data: &[u8]) {
    let bytes = Bytes::copy_from_slice(data);
    // The server: the frame, then each message on its own (a bad one is dropped, the rest
    // delivered).
    if let Ok(batch) = pb::Batch::decode(bytes.clone()) {
        let mut delivered = Vec::new();
        for message in batch.messages {
            if let Ok(message) = message_from_proto(message) {
                check_round_trip(&message);
                delivered.push(message);
            }
        }
        // What was delivered re-frames at the size the sender plans with.
        let (from, to) = (rsl_core::NodeId(batch.from), rsl_core::NodeId(batch.to));
        let frame = encode_batch(from, to, &delivered);
        let planned: u64 =
            batch_header_len(from, to) + delivered.iter().map(|m| framed_len(encoded_len(m))).sum::<u64>();
        assert_eq!(frame.len() as u64, planned, "frame size as planned");
        let decoded = decode_batch(Bytes::from(frame)).expect("a re-encoded frame decodes");
        assert_eq!((decoded.from, decoded.to), (from, to));
        assert_eq!(decoded.messages, delivered, "a frame survives re-encoding");
    }
    // The whole-frame decoder agrees with the per-message one.
    if let Ok(decoded) = decode_batch(bytes.clone()) {
        let again = decode_batch(Bytes::from(encode_batch(decoded.from, decoded.to, &decoded.messages)))
            .expect("a re-encoded frame decodes");
        assert_eq!(again, decoded);
    }
    if let Ok(message) = decode_message(bytes) {
        check_round_trip(&message);
    }
}
