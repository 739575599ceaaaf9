//! `rsl-transport`: the replica message decoder, on bytes any node that reaches the replica
//! port can send. The gRPC server decodes a frame (a protobuf `Batch`) and converts each
//! message with `message_from_proto`; a message that converts must re-encode and decode to
//! itself, and the sizes a sender plans frames with must be what encoding produces. And
//! the checkpoint transfer stream, which a fetching replica reads from a peer.

use std::io::{Read, Write};

use bytes::Bytes;
use prost::Message as _;
use rsl_core::{Message, Slot};
use rsl_log::checkpoint::checkpoint_name;
use rsl_log::sim::SimDisk;
use rsl_log::{CheckpointOptions, CheckpointStore};
use rsl_transport::checkpoint::{Chunk, ChunkDecoder};
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

/// The checkpoint transfer stream as a fetching replica reads it: the frames a peer sends
/// (protobuf `CheckpointChunk`s) through the decoder both transports share, into a
/// checkpoint receiver that verifies the whole file before publishing it. Inputs are raw
/// frames (mode byte even: 2-byte little-endian lengths, then the frame), or a real
/// checkpoint's stream, damaged and cut into chunks where the input says (mode odd).
///
/// Whatever the frames, the decoder never hands on more bytes than the header announced,
/// and a published checkpoint is one that reads back whole.
pub fn checkpoint_stream(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let frames = if mode % 2 == 0 { raw_frames(rest) } else { real_stream(rest) };
    let options = CheckpointOptions { keep: 2, block_bytes: 64 };
    let Ok(mut store) = CheckpointStore::open_in(Box::new(SimDisk::new()), &options) else { return };
    let mut decoder = ChunkDecoder::new();
    let mut frames = frames.iter();
    let Some(first) = frames.next() else { return };
    // The fetcher stops at the first error and publishes nothing.
    let Ok(Chunk::Header(header)) = decoder.push_encoded(first) else { return };
    let published = {
        let Ok(mut receiver) = store.receiver(header.slot) else { return };
        let mut handed_on = 0u64;
        for frame in frames {
            match decoder.push_encoded(frame) {
                Ok(Chunk::Data(bytes)) => {
                    handed_on += bytes.len() as u64;
                    assert!(handed_on <= header.file_bytes, "no more bytes than announced");
                    if receiver.write_chunk(&bytes).is_err() {
                        return;
                    }
                }
                Ok(Chunk::Header(_)) => panic!("a second header is refused"),
                Err(_) => return,
            }
        }
        assert_eq!(decoder.received(), handed_on);
        let Ok(finished) = decoder.finish() else { return };
        assert_eq!(
            (finished, finished.file_bytes),
            (header, handed_on),
            "a finished stream brought every byte"
        );
        receiver.finish().ok()
    };
    if let Some(info) = published {
        assert_eq!(info.slot, header.slot);
        let newest = store.load_newest().expect("a published checkpoint loads");
        let mut reader = newest.checkpoint.expect("the published checkpoint is the newest");
        let mut out = Vec::new();
        reader.read_to_end(&mut out).expect("a verified checkpoint reads back");
        assert_eq!(out.len() as u64, info.data_bytes);
    }
}

/// Frames from raw bytes: each a 2-byte little-endian length, then that many bytes.
fn raw_frames(mut data: &[u8]) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    while let [low, high, rest @ ..] = data {
        let len = usize::from(u16::from_le_bytes([*low, *high])).min(rest.len());
        frames.push(rest[..len].to_vec());
        data = &rest[len..];
    }
    frames
}

/// The stream of a real checkpoint file: the first input byte sets the chunk size, the
/// second may misstate the announced size, the rest damages the file.
fn real_stream(data: &[u8]) -> Vec<Vec<u8>> {
    use pb::checkpoint_chunk::Part;
    let [chunk_bytes, misstate, damage @ ..] = data else { return Vec::new() };
    let slot = Slot(7);
    let disk = SimDisk::new();
    {
        let options = CheckpointOptions { keep: 2, block_bytes: 64 };
        let Ok(mut store) = CheckpointStore::open_in(Box::new(disk.clone()), &options) else {
            return Vec::new();
        };
        let Ok(mut writer) = store.writer(slot) else { return Vec::new() };
        let state: Vec<u8> = (0..700u32).map(|i| (i * 31 % 251) as u8).collect();
        if writer.write_all(&state).is_err() || writer.finish().is_err() {
            return Vec::new();
        }
    }
    let mut file = disk.read_file(&checkpoint_name(slot)).unwrap_or_default();
    crate::log::damage(&mut file, damage, &crate::log::FILE_DAMAGE);
    let file_bytes = match misstate % 4 {
        0 => file.len() as u64 + u64::from(*misstate),
        1 => (file.len() as u64).saturating_sub(u64::from(*misstate)),
        _ => file.len() as u64,
    };
    let header = Part::Header(pb::CheckpointHeader { slot: slot.0, file_bytes });
    let mut frames = vec![pb::CheckpointChunk { part: Some(header) }.encode_to_vec()];
    for piece in file.chunks(usize::from(*chunk_bytes).max(1)) {
        let data = Part::Data(Bytes::copy_from_slice(piece));
        frames.push(pb::CheckpointChunk { part: Some(data) }.encode_to_vec());
    }
    frames
}
