//! The checkpoint transfer seam: how a replica that fell behind a truncated log gets a
//! peer's checkpoint file, and the decoder of the wire stream that carries it.
//!
//! Consensus messages are small and latency-sensitive; a checkpoint is a file of any size.
//! So checkpoints move on a path of their own, with two halves:
//!
//! - [`CheckpointSource`], the serving side: opens the newest valid checkpoint of a ring for
//!   a peer whose identity the transport already established. The runtime's checkpoint
//!   server implements it over its rings' checkpoint stores.
//! - [`CheckpointFetcher`], the client side: asks a peer for a checkpoint and returns a
//!   [`CheckpointStream`] (the slot, the file's length, then its bytes in chunks). The
//!   runtime writes the chunks into a verifying receiver, so nothing a peer damaged is ever
//!   loaded.
//!
//! [`Transport::serve_checkpoints`](crate::Transport::serve_checkpoints) joins the two on a
//! transport: the gRPC endpoint serves a `CheckpointTransfer` service next to `Replication`
//! (same port, same mutual TLS, same membership table) and returns a fetcher that reaches
//! peers at their replica addresses. On the wire a transfer is one server-streaming call
//! whose first [`proto::CheckpointChunk`] is a header and the rest data;
//! [`ChunkDecoder`] checks that shape (and is what a fuzz target feeds). The RDMA transport
//! (feature `rdma`) sends the same chunks, length-prefixed, over its TCP handshake
//! listener, and checks them with the same decoder.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use prost::Message as _;
use rsl_core::{NodeId, RingId, Slot};
use tokio::sync::mpsc;

use crate::proto;

/// A boxed future, as [`CheckpointFetcher`] and [`CheckpointSource`] return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A request for a ring's checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointRequest {
    /// The ring.
    pub ring: RingId,
    /// Who asks. A transport with mutual TLS takes it from the caller's certificate and
    /// refuses a request that claims another node; without TLS it is the caller's claim.
    pub requester: NodeId,
    /// The oldest checkpoint acceptable; the server sends its newest valid one.
    pub min_slot: Slot,
}

/// A checkpoint file on its way: what it is, then its bytes in order.
#[derive(Debug)]
pub struct CheckpointStream {
    /// The checkpoint's slot.
    pub slot: Slot,
    /// Bytes of the whole file.
    pub file_bytes: u64,
    /// The file's bytes, in order. The stream ends after the last chunk, or with an error.
    pub chunks: mpsc::Receiver<Result<Bytes, TransferError>>,
}

/// The client side of checkpoint transfer: opens a [`CheckpointStream`] on a peer.
pub trait CheckpointFetcher: Send + Sync + fmt::Debug {
    /// Asks `from` for its newest valid checkpoint of `request.ring` at or above
    /// `request.min_slot`.
    fn fetch(
        &self,
        from: NodeId,
        request: CheckpointRequest,
    ) -> BoxFuture<'_, Result<CheckpointStream, TransferError>>;
}

/// The serving side of checkpoint transfer: where a transport gets the checkpoints it
/// serves to peers.
pub trait CheckpointSource: Send + Sync + fmt::Debug {
    /// Opens the newest valid checkpoint of `request.ring` at or above `request.min_slot`
    /// for `request.requester`, whose identity the caller established.
    fn open(&self, request: CheckpointRequest) -> BoxFuture<'_, Result<CheckpointStream, TransferError>>;
}

/// Why a checkpoint transfer failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    /// No route to the node (no address, not registered, unreachable, shut down, or the
    /// TLS handshake failed).
    #[error("{node} is not reachable for checkpoint transfer")]
    Unreachable {
        /// The peer.
        node: NodeId,
    },
    /// The peer does not host the ring.
    #[error("{node} does not host ring {}", .ring.0)]
    UnknownRing {
        /// The peer.
        node: NodeId,
        /// The ring.
        ring: RingId,
    },
    /// The requester is not a member of the ring.
    #[error("{requester} is not a member of ring {}", .ring.0)]
    NotAMember {
        /// The requester.
        requester: NodeId,
        /// The ring.
        ring: RingId,
    },
    /// The peer refused to serve us: our certificate names no node, or another node than
    /// the one we claimed to be, or the peer does not count us a member.
    #[error("{node} refused the checkpoint request: {reason}")]
    Refused {
        /// The peer.
        node: NodeId,
        /// What the peer said.
        reason: String,
    },
    /// The peer has no valid checkpoint at or above the slot asked for.
    #[error("no valid checkpoint of ring {} at or above slot {slot}", .ring.0)]
    NoCheckpoint {
        /// The ring.
        ring: RingId,
        /// The lowest slot acceptable.
        slot: Slot,
    },
    /// The peer's stream broke the transfer format.
    #[error("checkpoint stream from {node} is malformed: {problem}")]
    Malformed {
        /// The peer.
        node: NodeId,
        /// What was wrong.
        problem: ChunkError,
    },
    /// The stream stopped before the whole file arrived.
    #[error("checkpoint stream ended after {received} of {expected} bytes")]
    Incomplete {
        /// Bytes received.
        received: u64,
        /// Bytes announced.
        expected: u64,
    },
    /// The stream sent more bytes than it announced.
    #[error("checkpoint stream sent more than the {expected} bytes announced")]
    Oversized {
        /// Bytes announced.
        expected: u64,
    },
    /// No progress within the transfer timeout.
    #[error("checkpoint transfer made no progress within {after_ms} ms")]
    Timeout {
        /// The timeout.
        after_ms: u64,
    },
    /// Reading, writing, verifying or publishing the checkpoint file failed.
    #[error("checkpoint store: {reason}")]
    Store {
        /// The store's error.
        reason: String,
    },
    /// The state machine failed to load the received checkpoint.
    #[error("the state machine failed to load the checkpoint at slot {slot}: {reason}")]
    Load {
        /// The checkpoint's slot.
        slot: Slot,
        /// The state machine's error.
        reason: String,
    },
    /// The transfer was cancelled (the ring is stopping).
    #[error("checkpoint transfer cancelled")]
    Cancelled,
}

/// What the header of a checkpoint stream announces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkHeader {
    /// The checkpoint's slot.
    pub slot: Slot,
    /// Bytes of the whole file.
    pub file_bytes: u64,
}

/// One decoded chunk of a checkpoint stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Chunk {
    /// The first chunk: what follows.
    Header(ChunkHeader),
    /// File bytes, in order.
    Data(Bytes),
}

/// A checkpoint stream that breaks the format; [`ChunkDecoder`] says which rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// The frame is not a protobuf `CheckpointChunk`.
    #[error("chunk {index} does not decode: {reason}")]
    Undecodable {
        /// The chunk's position in the stream (0 is the header).
        index: u64,
        /// prost's error.
        reason: String,
    },
    /// A chunk carries neither a header nor data.
    #[error("chunk {index} carries neither a header nor data")]
    Empty {
        /// The chunk's position in the stream.
        index: u64,
    },
    /// The first chunk is data, not a header.
    #[error("the stream starts with data instead of a header")]
    MissingHeader,
    /// A header after the first chunk.
    #[error("chunk {index} is a second header")]
    SecondHeader {
        /// The chunk's position in the stream.
        index: u64,
    },
    /// A data chunk with no bytes (it would only keep a stalled transfer alive).
    #[error("chunk {index} carries no bytes")]
    EmptyData {
        /// The chunk's position in the stream.
        index: u64,
    },
    /// More bytes than the header announced.
    #[error("chunk {index} brings the file to {received} bytes, past the {announced} announced")]
    Oversized {
        /// The chunk's position in the stream.
        index: u64,
        /// Bytes announced by the header.
        announced: u64,
        /// Bytes received including this chunk.
        received: u64,
    },
    /// The stream ended before the header, or before the announced bytes.
    #[error("the stream ended after {received} of {announced} bytes")]
    Incomplete {
        /// Bytes announced by the header (0 when there was no header).
        announced: u64,
        /// Bytes received.
        received: u64,
    },
    /// A frame declares more bytes than the fetcher accepts (a transport that frames chunks
    /// itself, like the RDMA side channel, checks this before reading the frame).
    #[error("chunk {index} is a frame of {bytes} bytes, at most {max} accepted")]
    FrameTooLarge {
        /// The chunk's position in the stream.
        index: u64,
        /// Bytes the frame declares.
        bytes: u64,
        /// The largest frame accepted.
        max: u64,
    },
    /// The server's answer before the stream (on a transport that has one) is malformed.
    #[error("the answer to the checkpoint request is malformed: {reason}")]
    BadAnswer {
        /// What is wrong with it.
        reason: String,
    },
}

/// Checks a checkpoint stream chunk by chunk: a header first and only first, then non-empty
/// data chunks adding up to exactly the announced file size ([`ChunkDecoder::finish`]).
///
/// Takes decoded messages ([`ChunkDecoder::push`]) or encoded ones
/// ([`ChunkDecoder::push_encoded`]); any input gives a chunk or an error, never a panic.
///
/// ```
/// use rsl_transport::checkpoint::{Chunk, ChunkDecoder, ChunkError};
/// use rsl_transport::proto::{checkpoint_chunk::Part, CheckpointChunk, CheckpointHeader};
///
/// let header = CheckpointChunk { part: Some(Part::Header(CheckpointHeader { slot: 9, file_bytes: 3 })) };
/// let data = CheckpointChunk { part: Some(Part::Data(vec![1, 2, 3].into())) };
/// let mut decoder = ChunkDecoder::new();
/// assert!(matches!(decoder.push(header.clone()), Ok(Chunk::Header(_))));
/// assert!(matches!(decoder.push(data), Ok(Chunk::Data(bytes)) if bytes.len() == 3));
/// assert_eq!(decoder.finish().unwrap().slot.0, 9);
/// assert_eq!(decoder.push(header), Err(ChunkError::SecondHeader { index: 2 }));
/// ```
#[derive(Clone, Debug, Default)]
pub struct ChunkDecoder {
    header: Option<ChunkHeader>,
    received: u64,
    chunks: u64,
}

impl ChunkDecoder {
    /// A decoder expecting the header.
    pub fn new() -> ChunkDecoder {
        ChunkDecoder::default()
    }

    /// Decodes `frame` as a protobuf `CheckpointChunk` and checks it.
    pub fn push_encoded(&mut self, frame: &[u8]) -> Result<Chunk, ChunkError> {
        let chunk = proto::CheckpointChunk::decode(frame)
            .map_err(|error| ChunkError::Undecodable { index: self.chunks, reason: error.to_string() })?;
        self.push(chunk)
    }

    /// Checks the next chunk of the stream: the header first, data after it.
    pub fn push(&mut self, chunk: proto::CheckpointChunk) -> Result<Chunk, ChunkError> {
        match self.header {
            None => self.push_header(chunk).map(Chunk::Header),
            Some(_) => self.push_data(chunk).map(Chunk::Data),
        }
    }

    /// Checks the first chunk, which must be the header.
    pub fn push_header(&mut self, chunk: proto::CheckpointChunk) -> Result<ChunkHeader, ChunkError> {
        use proto::checkpoint_chunk::Part;
        let index = self.next_index();
        match (chunk.part, self.header) {
            (None, _) => Err(ChunkError::Empty { index }),
            (Some(Part::Header(_)), Some(_)) => Err(ChunkError::SecondHeader { index }),
            (Some(Part::Data(_)), _) => Err(ChunkError::MissingHeader),
            (Some(Part::Header(header)), None) => {
                let header = ChunkHeader { slot: Slot(header.slot), file_bytes: header.file_bytes };
                self.header = Some(header);
                Ok(header)
            }
        }
    }

    /// Checks a chunk after the header, which must carry file bytes within the size announced.
    pub fn push_data(&mut self, chunk: proto::CheckpointChunk) -> Result<Bytes, ChunkError> {
        use proto::checkpoint_chunk::Part;
        let index = self.next_index();
        let header = self.header.ok_or(ChunkError::MissingHeader)?;
        let data = match chunk.part {
            None => return Err(ChunkError::Empty { index }),
            Some(Part::Header(_)) => return Err(ChunkError::SecondHeader { index }),
            Some(Part::Data(data)) if data.is_empty() => return Err(ChunkError::EmptyData { index }),
            Some(Part::Data(data)) => data,
        };
        match self.received.checked_add(data.len() as u64) {
            Some(received) if received <= header.file_bytes => {
                self.received = received;
                Ok(data)
            }
            received => Err(ChunkError::Oversized {
                index,
                announced: header.file_bytes,
                received: received.unwrap_or(u64::MAX),
            }),
        }
    }

    fn next_index(&mut self) -> u64 {
        let index = self.chunks;
        self.chunks += 1;
        index
    }

    /// The header, if the stream is complete: it had one and exactly the bytes announced.
    pub fn finish(&self) -> Result<ChunkHeader, ChunkError> {
        match self.header {
            Some(header) if header.file_bytes == self.received => Ok(header),
            Some(header) => {
                Err(ChunkError::Incomplete { announced: header.file_bytes, received: self.received })
            }
            None => Err(ChunkError::Incomplete { announced: 0, received: 0 }),
        }
    }

    /// File bytes accepted so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Chunks pushed so far (the position of the next one).
    pub fn chunks(&self) -> u64 {
        self.chunks
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::checkpoint_chunk::Part;

    fn header(slot: u64, file_bytes: u64) -> proto::CheckpointChunk {
        proto::CheckpointChunk { part: Some(Part::Header(proto::CheckpointHeader { slot, file_bytes })) }
    }

    fn data(bytes: &[u8]) -> proto::CheckpointChunk {
        proto::CheckpointChunk { part: Some(Part::Data(Bytes::copy_from_slice(bytes))) }
    }

    #[test]
    fn a_well_formed_stream_decodes() {
        let mut decoder = ChunkDecoder::new();
        assert_eq!(
            decoder.push_encoded(&header(7, 5).encode_to_vec()),
            Ok(Chunk::Header(ChunkHeader { slot: Slot(7), file_bytes: 5 }))
        );
        assert_eq!(decoder.push(data(b"ab")), Ok(Chunk::Data(Bytes::from_static(b"ab"))));
        assert_eq!(decoder.finish(), Err(ChunkError::Incomplete { announced: 5, received: 2 }));
        assert_eq!(
            decoder.push_encoded(&data(b"cde").encode_to_vec()),
            Ok(Chunk::Data(Bytes::from_static(b"cde")))
        );
        assert_eq!(decoder.finish(), Ok(ChunkHeader { slot: Slot(7), file_bytes: 5 }));
        assert_eq!(decoder.received(), 5);
    }

    #[test]
    fn every_broken_rule_is_named() {
        let cases: Vec<(Vec<proto::CheckpointChunk>, ChunkError)> = vec![
            (vec![data(b"x")], ChunkError::MissingHeader),
            (vec![proto::CheckpointChunk { part: None }], ChunkError::Empty { index: 0 }),
            (vec![header(1, 4), header(1, 4)], ChunkError::SecondHeader { index: 1 }),
            (vec![header(1, 4), data(b"")], ChunkError::EmptyData { index: 1 }),
            (
                vec![header(1, 4), data(b"abc"), data(b"de")],
                ChunkError::Oversized { index: 2, announced: 4, received: 5 },
            ),
        ];
        for (chunks, expected) in cases {
            let mut decoder = ChunkDecoder::new();
            let outcome = chunks.into_iter().map(|chunk| decoder.push(chunk)).find_map(Result::err);
            assert_eq!(outcome, Some(expected.clone()), "expected {expected}");
        }
        assert_eq!(ChunkDecoder::new().finish(), Err(ChunkError::Incomplete { announced: 0, received: 0 }));
        let garbage = ChunkDecoder::new().push_encoded(&[0xff, 0xff, 0xff]);
        assert!(matches!(garbage, Err(ChunkError::Undecodable { index: 0, .. })), "{garbage:?}");
    }

    #[test]
    fn an_oversized_chunk_near_the_limit_does_not_overflow() {
        let mut decoder = ChunkDecoder::new();
        decoder.push(header(1, u64::MAX)).unwrap();
        decoder.received = u64::MAX - 1;
        assert!(matches!(decoder.push(data(b"ab")), Err(ChunkError::Oversized { .. })));
    }
}
