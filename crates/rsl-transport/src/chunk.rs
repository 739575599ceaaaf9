//! Messages too large for one frame, in chunks: [`split`] cuts an encoded message into
//! [`crate::proto::Chunk`]s on the sending side, and a [`Reassembler`] per inbound stream puts them
//! back together, refusing a chunk that does not continue the message in progress.
//!
//! Frames stay small (a few MiB, what tonic and HTTP/2 handle well) while a value of up to
//! `rsl_core::REQUEST_BYTES_MAX` bytes still replicates: an accept, fetch reply or promise
//! whose encoding exceeds a frame travels as chunks of at most `chunk_bytes` each, one chunk
//! per frame beside the frame's whole messages, so small messages never wait behind more
//! than one chunk (PROTOCOL.md, "Large requests"). The reassembled bytes are then decoded
//! and validated like any other message ([`crate::codec::decode_message`]); nothing reaches
//! the replica before the whole message arrived intact.
//!
//! What the receiver checks, before buffering anything: the chunk's sender is the frame's,
//! its ring admits the sender (the caller's job, through the gate), the announced size is
//! within the limit, and the chunk continues the message in progress: the same message id,
//! ring, sender, receiver and size, at exactly the next offset, with data that does not run
//! past the end. A chunk that breaks a rule is refused with a [`ChunkError`] (counted by the
//! caller); the message it belonged to is abandoned and its later chunks are dropped quietly.
//! A message abandoned mid-way by the sender is noticed when the next message starts.

use crate::proto as pb;
use bytes::{Bytes, BytesMut};
use rsl_core::{NodeId, RingId};

/// Bytes a [`pb::Chunk`] adds around its data in a frame, at most: seven fields with tags
/// and ten-byte varints, the data's length prefix, and the chunk's own tag and length in
/// the batch, rounded up.
pub const CHUNK_OVERHEAD_BYTES: u64 = 96;

const _: () = assert!(CHUNK_OVERHEAD_BYTES >= 6 * (1 + 10) + (1 + 5) + (1 + 5));

/// The most a reassembler reserves up front for a message, whatever size it announces:
/// a peer that announces a large message and sends nothing more costs no more than this.
const RESERVE_BYTES_MAX: u64 = 4 << 20;

/// Where a chunked message comes from and goes to: copied into each of its chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkHeader {
    /// The message's ring.
    pub ring: RingId,
    /// Its sender.
    pub from: NodeId,
    /// Its receiver.
    pub to: NodeId,
    /// The sender's number for it, unique on the link.
    pub message_id: u64,
}

/// The chunk of `encoded` (a whole encoded message) that starts at `offset`: at most
/// `chunk_bytes` bytes, sliced, not copied.
///
/// # Panics
/// If `offset` is not within `encoded` or `chunk_bytes` is zero (the sender's own bug).
pub fn chunk_at(header: ChunkHeader, encoded: &Bytes, offset: usize, chunk_bytes: usize) -> pb::Chunk {
    assert!(offset < encoded.len() && chunk_bytes > 0, "chunk at {offset} of {} bytes", encoded.len());
    let end = encoded.len().min(offset + chunk_bytes);
    pb::Chunk {
        ring: header.ring.0,
        from: header.from.0,
        to: header.to.0,
        message_id: header.message_id,
        total_bytes: encoded.len() as u64,
        offset: offset as u64,
        data: encoded.slice(offset..end),
    }
}

/// Every chunk of `encoded`, in order.
pub fn split(header: ChunkHeader, encoded: &Bytes, chunk_bytes: usize) -> Vec<pb::Chunk> {
    (0..encoded.len())
        .step_by(chunk_bytes.max(1))
        .map(|offset| chunk_at(header, encoded, offset, chunk_bytes))
        .collect()
}

/// Why a chunk was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// The announced message is larger than this receiver takes.
    #[error("chunked message {message_id} announces {total_bytes} bytes, more than the limit of {max}")]
    TooLarge {
        /// The message.
        message_id: u64,
        /// Its announced size.
        total_bytes: u64,
        /// The receiver's limit.
        max: u64,
    },
    /// A chunk with no data, or of a message announced empty.
    #[error("chunk of message {message_id} at offset {offset} is empty")]
    Empty {
        /// The message.
        message_id: u64,
        /// Where the chunk claims to start.
        offset: u64,
    },
    /// A chunk of a message that is not in progress, or not at the next offset.
    #[error("chunk of message {message_id} at offset {offset}, expected {expected}")]
    OutOfOrder {
        /// The message.
        message_id: u64,
        /// Where the chunk claims to start.
        offset: u64,
        /// What the receiver expected: the next offset of the message in progress, or the
        /// first chunk of a new message.
        expected: String,
    },
    /// A chunk whose data runs past the message's announced end.
    #[error("chunk of message {message_id} at offset {offset} carries {bytes} bytes, past the end at {total_bytes}")]
    Overrun {
        /// The message.
        message_id: u64,
        /// Where the chunk starts.
        offset: u64,
        /// Its data's length.
        bytes: u64,
        /// The announced size.
        total_bytes: u64,
    },
    /// A chunk that names another ring, sender, receiver or size than its message's first.
    #[error("chunk of message {message_id} changes its {field} from {first} to {found}")]
    Inconsistent {
        /// The message.
        message_id: u64,
        /// The field that changed.
        field: &'static str,
        /// Its value in the first chunk.
        first: u64,
        /// Its value in this chunk.
        found: u64,
    },
    /// A new message started before the one in progress was complete: that one is
    /// abandoned, the new one goes on.
    #[error("chunked message {message_id} abandoned after {received} of {total_bytes} bytes")]
    Torn {
        /// The abandoned message.
        message_id: u64,
        /// Bytes of it received.
        received: u64,
        /// Its announced size.
        total_bytes: u64,
    },
}

/// A message being reassembled.
#[derive(Debug)]
struct Assembly {
    first: pb::Chunk,
    buffer: BytesMut,
}

/// Puts the chunks of one inbound stream back together; one message at a time.
#[derive(Debug)]
pub struct Reassembler {
    bytes_max: u64,
    current: Option<Assembly>,
    /// A message abandoned for a bad chunk: its later chunks are dropped without a word.
    abandoned: Option<u64>,
}

/// What a chunk completed.
pub type Completed = Option<(ChunkHeader, Bytes)>;

impl Reassembler {
    /// A reassembler that takes messages of up to `bytes_max` encoded bytes.
    pub fn new(bytes_max: u64) -> Reassembler {
        Reassembler { bytes_max, current: None, abandoned: None }
    }

    /// Bytes buffered for the message in progress.
    pub fn buffered_bytes(&self) -> u64 {
        self.current.as_ref().map_or(0, |a| a.buffer.len() as u64)
    }

    /// Takes the next chunk of the stream: the whole message once its last chunk arrives,
    /// nothing before, or why the chunk was refused. A refused chunk abandons its message
    /// and the later chunks of an abandoned message are dropped without a word. One
    /// refusal does not drop its chunk: a first chunk arriving while another message is in
    /// progress reports that one [`ChunkError::Torn`] and starts its own message.
    pub fn accept(&mut self, chunk: pb::Chunk) -> Result<Completed, ChunkError> {
        let (message_id, offset) = (chunk.message_id, chunk.offset);
        if self.abandoned == Some(message_id) && offset > 0 {
            return Ok(None);
        }
        // What a refusal abandons: a first chunk's own message, else the one in progress.
        let in_progress = self.current.as_ref().map(|a| a.first.message_id);
        let result = self.take(chunk);
        match &result {
            Ok(_) | Err(ChunkError::Torn { .. }) => {}
            Err(_) => {
                self.current = None;
                self.abandoned =
                    Some(if offset == 0 { message_id } else { in_progress.unwrap_or(message_id) });
            }
        }
        result
    }

    /// Drops message `message_id` (the caller refused its first chunk, e.g. from a
    /// non-member): its later chunks are dropped without a word.
    pub fn abandon(&mut self, message_id: u64) {
        self.current = None;
        self.abandoned = Some(message_id);
    }

    fn take(&mut self, chunk: pb::Chunk) -> Result<Completed, ChunkError> {
        let (message_id, offset, total_bytes) = (chunk.message_id, chunk.offset, chunk.total_bytes);
        if offset == 0 {
            self.abandoned = None;
            let previous = self.current.take();
            self.start(chunk)?;
            if let Some(previous) = previous {
                // The previous message never continues; this one goes on (a correct sender
                // never sends a message in one chunk, so it cannot be complete yet).
                self.abandoned = Some(previous.first.message_id);
                return Err(ChunkError::Torn {
                    message_id: previous.first.message_id,
                    received: previous.buffer.len() as u64,
                    total_bytes: previous.first.total_bytes,
                });
            }
            return Ok(self.complete());
        }
        let Some(assembly) = self.current.as_mut() else {
            return Err(ChunkError::OutOfOrder {
                message_id,
                offset,
                expected: "the first chunk of a message".into(),
            });
        };
        let first = &assembly.first;
        for (field, was, found) in [
            ("message_id", first.message_id, message_id),
            ("ring", first.ring, chunk.ring),
            ("from", first.from, chunk.from),
            ("to", first.to, chunk.to),
            ("total_bytes", first.total_bytes, total_bytes),
        ] {
            if was != found {
                return Err(ChunkError::Inconsistent {
                    message_id: first.message_id,
                    field,
                    first: was,
                    found,
                });
            }
        }
        let received = assembly.buffer.len() as u64;
        if offset != received {
            return Err(ChunkError::OutOfOrder {
                message_id,
                offset,
                expected: format!("offset {received}"),
            });
        }
        check_data(&chunk)?;
        assembly.buffer.extend_from_slice(&chunk.data);
        Ok(self.complete())
    }

    /// Starts a message with its first chunk.
    fn start(&mut self, chunk: pb::Chunk) -> Result<(), ChunkError> {
        let (message_id, total_bytes) = (chunk.message_id, chunk.total_bytes);
        if total_bytes > self.bytes_max {
            return Err(ChunkError::TooLarge { message_id, total_bytes, max: self.bytes_max });
        }
        check_data(&chunk)?;
        let mut buffer = BytesMut::with_capacity(total_bytes.min(RESERVE_BYTES_MAX) as usize);
        buffer.extend_from_slice(&chunk.data);
        self.current = Some(Assembly { first: pb::Chunk { data: Bytes::new(), ..chunk }, buffer });
        Ok(())
    }

    /// The message in progress, if it is complete.
    fn complete(&mut self) -> Completed {
        let assembly = self.current.as_ref()?;
        if (assembly.buffer.len() as u64) < assembly.first.total_bytes {
            return None;
        }
        let assembly = self.current.take()?;
        let first = assembly.first;
        let header = ChunkHeader {
            ring: RingId(first.ring),
            from: NodeId(first.from),
            to: NodeId(first.to),
            message_id: first.message_id,
        };
        Some((header, assembly.buffer.freeze()))
    }
}

fn check_data(chunk: &pb::Chunk) -> Result<(), ChunkError> {
    let (message_id, offset, total_bytes) = (chunk.message_id, chunk.offset, chunk.total_bytes);
    let bytes = chunk.data.len() as u64;
    if bytes == 0 || total_bytes == 0 {
        return Err(ChunkError::Empty { message_id, offset });
    }
    if offset.checked_add(bytes).is_none_or(|end| end > total_bytes) {
        return Err(ChunkError::Overrun { message_id, offset, bytes, total_bytes });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HEADER: ChunkHeader =
        ChunkHeader { ring: RingId(1), from: NodeId(2), to: NodeId(3), message_id: 7 };

    fn message(len: usize) -> Bytes {
        (0..len).map(|i| (i * 31 % 251) as u8).collect::<Vec<u8>>().into()
    }

    proptest! {
        #[test]
        fn split_then_reassemble_is_the_identity(len in 1usize..5000, chunk_bytes in 1usize..700, count in 1usize..4) {
            let mut reassembler = Reassembler::new(5000);
            for id in 0..count as u64 {
                let encoded = message(len + id as usize);
                let encoded = encoded.slice(..len);
                let header = ChunkHeader { message_id: id, ..HEADER };
                let chunks = split(header, &encoded, chunk_bytes);
                prop_assert_eq!(chunks.len(), len.div_ceil(chunk_bytes));
                prop_assert!(chunks.iter().all(|c| c.data.len() <= chunk_bytes));
                let done: Vec<Bytes> = chunks
                    .into_iter()
                    .filter_map(|c| reassembler.accept(c).unwrap())
                    .map(|(h, bytes)| { assert_eq!(h, header); bytes })
                    .collect();
                prop_assert_eq!(done, vec![encoded]);
                prop_assert_eq!(reassembler.buffered_bytes(), 0);
            }
        }

        #[test]
        fn arbitrary_chunks_never_panic_and_never_complete_a_wrong_length(
            chunks in proptest::collection::vec((0u64..3, 0u64..40, 0u64..50, 0usize..20), 0..40)
        ) {
            let mut reassembler = Reassembler::new(45);
            for (message_id, offset, total_bytes, len) in chunks {
                let chunk = pb::Chunk {
                    ring: 1, from: 2, to: 3, message_id, total_bytes, offset, data: message(len),
                };
                if let Ok(Some((_, bytes))) = reassembler.accept(chunk) {
                    prop_assert_eq!(bytes.len() as u64, total_bytes);
                }
                prop_assert!(reassembler.buffered_bytes() <= 45);
            }
        }
    }

    #[test]
    fn bad_chunks_are_refused_by_name_and_abandon_their_message() {
        let encoded = message(100);
        let chunks = split(HEADER, &encoded, 30);
        type Breaker = fn(&mut Vec<pb::Chunk>);
        let cases: Vec<(&str, Breaker)> = vec![
            ("OutOfOrder", |c| {
                c.remove(1);
            }),
            ("OutOfOrder", |c| {
                c.remove(0);
            }),
            ("Inconsistent", |c| c[1].ring = 9),
            ("Inconsistent", |c| c[2].total_bytes = 200),
            ("Inconsistent", |c| c[1].message_id = 8),
            ("Overrun", |c| c[3].data = message(50)),
            ("Empty", |c| c[1].data = Bytes::new()),
            ("TooLarge", |c| c.iter_mut().for_each(|c| c.total_bytes = 1 << 40)),
            ("Torn", |c| {
                c.truncate(2);
            }),
        ];
        for (expected, break_it) in cases {
            let mut stream = chunks.clone();
            break_it(&mut stream);
            // The stream goes on: the next message is taken.
            stream.extend(split(ChunkHeader { message_id: 20, ..HEADER }, &encoded, 30));
            let mut reassembler = Reassembler::new(1000);
            let mut errors = Vec::new();
            let mut completed = Vec::new();
            for chunk in stream {
                match reassembler.accept(chunk) {
                    Ok(Some((header, bytes))) => completed.push((header.message_id, bytes)),
                    Ok(None) => {}
                    Err(error) => errors.push(error),
                }
            }
            assert_eq!(completed, vec![(20, encoded.clone())], "{expected}: only the next message completes");
            assert_eq!(errors.len(), 1, "{expected}: one error per broken message, got {errors:?}");
            assert!(format!("{:?}", errors[0]).starts_with(expected), "{expected}: {:?}", errors[0]);
            assert!(!errors[0].to_string().is_empty());
        }
    }
}
