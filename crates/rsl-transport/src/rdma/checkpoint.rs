//! Checkpoint transfer over the RDMA transport's TCP side channel: the serving side
//! (`CheckpointService`, fed by the handshake listener) and the fetching side
//! (`RdmaCheckpointFetcher`, the [`CheckpointFetcher`] `RdmaTransport::serve_checkpoints`
//! returns).
//!
//! A fetch is a connection of its own to the peer's handshake address. The fetcher opens it
//! with a checkpoint request (`handshake::CheckpointAsk`: ring, requester, addressee, lowest
//! slot, the largest frame it accepts) instead of a queue-pair `Hello`. The server checks the
//! request like the RDMA messages (the addressee is this node, the requester is an allowed
//! member of the ring in the endpoint's membership table; a refusal is counted in
//! `checkpoint_requests_refused`), answers with one handshake record (streaming, or a refusal
//! and its reason), then sends the file as frames:
//!
//! ```text
//! frame = length: u32 LE | one protobuf CheckpointChunk of `length` bytes
//!         (the header first, then data chunks in order, as gRPC's stream carries them)
//! length = 0xFFFF_FFFF: the server's source failed; nothing follows
//! end of stream = the server closes the connection after the last frame
//! ```
//!
//! The fetcher decodes the frames with the shared [`ChunkDecoder`], so both transports check
//! a stream by the same rules: a frame longer than it asked for, a chunk that breaks the
//! format, or a stream that ends before the announced bytes is
//! [`TransferError::Malformed`]. Every read and write has a progress timeout.
//!
//! Why a TCP stream and not RDMA WRITEs: see docs/RDMA.md ("Checkpoint transfer").

use crate::checkpoint::{
    BoxFuture, CheckpointFetcher, CheckpointRequest, CheckpointSource, CheckpointStream, Chunk, ChunkDecoder,
    ChunkError, TransferError,
};
use crate::gate::Gate;
use crate::membership::Admission;
use crate::proto as pb;
use crate::rdma::handshake::{self, CheckpointAnswer, CheckpointAsk};
use crate::stats::TransportStats;
use bytes::Bytes;
use prost::Message as _;
use rsl_core::NodeId;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// The frame length that says the server's source failed mid-stream.
pub(crate) const ABORT: u32 = u32::MAX;
/// Bytes of a data chunk's encoding beyond its data (tag, length), rounded up.
const CHUNK_OVERHEAD_BYTES: u32 = 32;
/// The smallest frame limit a fetcher may ask for.
pub(crate) const FRAME_BYTES_MIN: u32 = 1024;
/// Chunks buffered ahead of the runtime's writer.
const CHUNKS_BUFFERED: usize = 4;

/// Limits of one side of a transfer (from `RdmaConfig`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct TransferLimits {
    /// The largest frame (length prefix excluded) this side sends or accepts.
    pub(crate) frame_bytes_max: u32,
    /// How long a connect, a read or a write may make no progress.
    pub(crate) timeout: Duration,
}

impl TransferLimits {
    fn timeout_ms(&self) -> u64 {
        self.timeout.as_millis() as u64
    }
}

// ---------------------------------------------------------------------------------------
// The serving side.

/// Serves one endpoint's checkpoints to the peers that ask over its handshake listener.
#[derive(Debug)]
pub(crate) struct CheckpointService {
    pub(crate) gate: Arc<Gate>,
    pub(crate) source: Arc<dyn CheckpointSource>,
    /// Where transfers run (the runtime that attached the source).
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) limits: TransferLimits,
}

impl CheckpointService {
    /// Answers `ask`, which arrived on `socket` (blocking, with the handshake's timeouts):
    /// a refusal at once, or the transfer on the runtime.
    pub(crate) fn serve(self: &Arc<Self>, mut socket: std::net::TcpStream, ask: CheckpointAsk) {
        if let Err(answer) = self.admit(&ask) {
            let _ = handshake::write_checkpoint_answer(&mut socket, &answer);
            return;
        }
        let service = Arc::clone(self);
        self.runtime.spawn(async move {
            let peer = ask.requester;
            if let Err(error) = service.transfer(socket, ask).await {
                tracing::warn!(local = %service.gate.local, %peer, %error, "checkpoint transfer ended early");
            }
        });
    }

    /// Checks the request like an inbound message: addressed here, from a member.
    fn admit(&self, ask: &CheckpointAsk) -> Result<(), CheckpointAnswer> {
        let gate = &self.gate;
        let refused = match gate.membership.check(ask.ring, ask.requester) {
            _ if ask.to != gate.local => CheckpointAnswer::Refused(format!(
                "this endpoint is node {}, the request is addressed to node {}",
                gate.local.0, ask.to.0
            )),
            Admission::Allowed => return Ok(()),
            Admission::UnknownRing => {
                CheckpointAnswer::NoCheckpoint(format!("{} does not host ring {}", gate.local, ask.ring.0))
            }
            Admission::NotAMember => {
                CheckpointAnswer::Refused(format!("{} is not a member of ring {}", ask.requester, ask.ring.0))
            }
        };
        TransportStats::bump(&gate.stats.checkpoint_requests_refused);
        tracing::warn!(
            local = %gate.local, requester = %ask.requester, ring = ask.ring.0, answer = ?refused,
            "refused a checkpoint request"
        );
        Err(refused)
    }

    /// Opens the checkpoint, answers, and streams it.
    async fn transfer(&self, socket: std::net::TcpStream, ask: CheckpointAsk) -> Result<(), TransferError> {
        let requester = ask.requester;
        let gone = |_| TransferError::Unreachable { node: requester };
        socket.set_nonblocking(true).map_err(gone)?;
        let mut socket = TcpStream::from_std(socket).map_err(gone)?;
        let request = CheckpointRequest { ring: ask.ring, requester, min_slot: ask.min_slot };
        let stream = match self.source.open(request).await {
            Ok(stream) => stream,
            Err(error) => {
                let answer = match error {
                    TransferError::NoCheckpoint { .. } | TransferError::UnknownRing { .. } => {
                        CheckpointAnswer::NoCheckpoint(error.to_string())
                    }
                    TransferError::NotAMember { .. } | TransferError::Refused { .. } => {
                        CheckpointAnswer::Refused(error.to_string())
                    }
                    _ => CheckpointAnswer::Unavailable(error.to_string()),
                };
                let record = handshake::encode_checkpoint_answer(&answer);
                return self.write(&mut socket, &record, requester).await;
            }
        };
        let gate = &self.gate;
        TransportStats::bump(&gate.stats.checkpoints_served);
        tracing::info!(
            local = %gate.local, to = %requester, ring = ask.ring.0, slot = %stream.slot,
            file_bytes = stream.file_bytes, "serving a checkpoint over the RDMA side channel"
        );
        let record = handshake::encode_checkpoint_answer(&CheckpointAnswer::Streaming);
        self.write(&mut socket, &record, requester).await?;
        let header = pb::CheckpointHeader { slot: stream.slot.0, file_bytes: stream.file_bytes };
        let header = pb::CheckpointChunk { part: Some(pb::checkpoint_chunk::Part::Header(header)) };
        self.write(&mut socket, &frame(&header), requester).await?;
        let frame_bytes_max = self.limits.frame_bytes_max.min(ask.frame_bytes_max);
        let data_bytes_max = frame_bytes_max.saturating_sub(CHUNK_OVERHEAD_BYTES).max(1) as usize;
        let mut chunks = stream.chunks;
        loop {
            let next = tokio::time::timeout(self.limits.timeout, chunks.recv()).await;
            let mut bytes = match next {
                Ok(None) => break,
                Ok(Some(Ok(bytes))) => bytes,
                Ok(Some(Err(error))) => {
                    let _ = self.write(&mut socket, &ABORT.to_le_bytes(), requester).await;
                    return Err(error);
                }
                Err(_) => {
                    let _ = self.write(&mut socket, &ABORT.to_le_bytes(), requester).await;
                    return Err(TransferError::Timeout { after_ms: self.limits.timeout_ms() });
                }
            };
            while !bytes.is_empty() {
                let data = bytes.split_to(bytes.len().min(data_bytes_max));
                let len = data.len() as u64;
                let chunk = pb::CheckpointChunk { part: Some(pb::checkpoint_chunk::Part::Data(data)) };
                self.write(&mut socket, &frame(&chunk), requester).await?;
                TransportStats::add(&gate.stats.checkpoint_bytes_served, len);
            }
        }
        let _ = socket.shutdown().await;
        Ok(())
    }

    async fn write(&self, socket: &mut TcpStream, bytes: &[u8], peer: NodeId) -> Result<(), TransferError> {
        match tokio::time::timeout(self.limits.timeout, socket.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(TransferError::Unreachable { node: peer }),
            Err(_) => Err(TransferError::Timeout { after_ms: self.limits.timeout_ms() }),
        }
    }
}

/// `chunk` as a frame: its length, then its encoding.
fn frame(chunk: &pb::CheckpointChunk) -> Vec<u8> {
    let len = chunk.encoded_len();
    let mut bytes = Vec::with_capacity(4 + len);
    bytes.extend_from_slice(&(len as u32).to_le_bytes());
    chunk.encode(&mut bytes).expect("a Vec grows to fit");
    bytes
}

// ---------------------------------------------------------------------------------------
// The fetching side.

/// Where a peer's handshake listener is, as the transport knows it now.
pub(crate) type Addresses = Arc<dyn Fn(NodeId) -> Option<SocketAddr> + Send + Sync>;

/// Fetches checkpoints from peers over their handshake addresses.
pub(crate) struct RdmaCheckpointFetcher {
    pub(crate) local: NodeId,
    pub(crate) addresses: Addresses,
    pub(crate) limits: TransferLimits,
}

impl std::fmt::Debug for RdmaCheckpointFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RdmaCheckpointFetcher")
            .field("local", &self.local)
            .field("limits", &self.limits)
            .finish()
    }
}

impl CheckpointFetcher for RdmaCheckpointFetcher {
    fn fetch(
        &self,
        from: NodeId,
        request: CheckpointRequest,
    ) -> BoxFuture<'_, Result<CheckpointStream, TransferError>> {
        let address = (self.addresses)(from);
        Box::pin(async move {
            let Some(address) = address else {
                tracing::warn!(local = %self.local, peer = %from, "cannot fetch a checkpoint: no address for the peer");
                return Err(TransferError::Unreachable { node: from });
            };
            let ask = CheckpointAsk {
                ring: request.ring,
                requester: request.requester,
                to: from,
                min_slot: request.min_slot,
                frame_bytes_max: self.limits.frame_bytes_max,
            };
            let outcome = open(address, from, &ask, self.limits).await;
            if let Err(error) = &outcome {
                tracing::warn!(local = %self.local, peer = %from, %error, "checkpoint request failed");
            }
            outcome
        })
    }
}

/// Reads of one transfer: the socket, the limits, the decoder.
struct Incoming {
    socket: TcpStream,
    from: NodeId,
    limits: TransferLimits,
    decoder: ChunkDecoder,
}

/// What the next frame is.
enum Frame {
    Chunk(Vec<u8>),
    Abort,
    End,
}

impl Incoming {
    fn malformed(&self, problem: ChunkError) -> TransferError {
        TransferError::Malformed { node: self.from, problem }
    }

    /// Reads exactly `buffer.len()` bytes; `Ok(n < len)` when the stream ended after `n`.
    async fn read(&mut self, buffer: &mut [u8]) -> Result<usize, TransferError> {
        let mut filled = 0;
        while filled < buffer.len() {
            let read =
                tokio::time::timeout(self.limits.timeout, self.socket.read(&mut buffer[filled..])).await;
            match read {
                Err(_) => return Err(TransferError::Timeout { after_ms: self.limits.timeout_ms() }),
                Ok(Err(_)) => return Err(TransferError::Unreachable { node: self.from }),
                Ok(Ok(0)) => break,
                Ok(Ok(n)) => filled += n,
            }
        }
        Ok(filled)
    }

    async fn next_frame(&mut self) -> Result<Frame, TransferError> {
        let mut len = [0; 4];
        match self.read(&mut len).await? {
            0 => return Ok(Frame::End),
            4 => {}
            n => return Err(self.cut(format!("the stream ended {n} bytes into a frame's length"))),
        }
        let len = u32::from_le_bytes(len);
        if len == ABORT {
            return Ok(Frame::Abort);
        }
        let max = self.limits.frame_bytes_max;
        if len > max {
            let index = self.decoder.chunks();
            return Err(self.malformed(ChunkError::FrameTooLarge {
                index,
                bytes: u64::from(len),
                max: u64::from(max),
            }));
        }
        let mut body = vec![0; len as usize];
        let read = self.read(&mut body).await?;
        if read < body.len() {
            return Err(self.cut(format!("the stream ended {read} bytes into a frame of {len}")));
        }
        Ok(Frame::Chunk(body))
    }

    /// A stream cut inside a frame: short of the announced bytes, or a broken last frame.
    fn cut(&self, reason: String) -> TransferError {
        let problem = match self.decoder.finish() {
            Err(incomplete) => incomplete,
            Ok(_) => ChunkError::Undecodable { index: self.decoder.chunks(), reason },
        };
        self.malformed(problem)
    }

    /// The next piece of the file, `None` at a well-formed end.
    async fn next_data(&mut self) -> Result<Option<Bytes>, TransferError> {
        match self.next_frame().await? {
            Frame::End => match self.decoder.finish() {
                Ok(_) => Ok(None),
                Err(problem) => Err(self.malformed(problem)),
            },
            Frame::Abort => {
                tracing::warn!(peer = %self.from, "the peer's checkpoint source failed mid-stream");
                Err(TransferError::Unreachable { node: self.from })
            }
            Frame::Chunk(body) => match self.decoder.push_encoded(&body) {
                Ok(Chunk::Data(bytes)) => Ok(Some(bytes)),
                Ok(Chunk::Header(_)) => unreachable!("the decoder refuses a second header"),
                Err(problem) => Err(self.malformed(problem)),
            },
        }
    }
}

/// Connects to `address`, asks, reads the answer and the header; the rest is forwarded by a
/// task of its own.
async fn open(
    address: SocketAddr,
    from: NodeId,
    ask: &CheckpointAsk,
    limits: TransferLimits,
) -> Result<CheckpointStream, TransferError> {
    let timeout = TransferError::Timeout { after_ms: limits.timeout_ms() };
    let unreachable = TransferError::Unreachable { node: from };
    let socket = match tokio::time::timeout(limits.timeout, TcpStream::connect(address)).await {
        Err(_) => return Err(timeout),
        Ok(Err(_)) => return Err(unreachable),
        Ok(Ok(socket)) => socket,
    };
    let _ = socket.set_nodelay(true);
    let mut incoming = Incoming { socket, from, limits, decoder: ChunkDecoder::new() };
    let record = handshake::encode_checkpoint_ask(ask);
    match tokio::time::timeout(limits.timeout, incoming.socket.write_all(&record)).await {
        Err(_) => return Err(timeout),
        Ok(Err(_)) => return Err(unreachable),
        Ok(Ok(())) => {}
    }
    let mut len = [0; 4];
    if incoming.read(&mut len).await? < 4 {
        return Err(unreachable);
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > handshake::MESSAGE_BYTES_MAX {
        let reason = format!("an answer of {len} bytes, at most {}", handshake::MESSAGE_BYTES_MAX);
        return Err(incoming.malformed(ChunkError::BadAnswer { reason }));
    }
    let mut body = vec![0; len];
    if incoming.read(&mut body).await? < len {
        return Err(unreachable);
    }
    match handshake::decode_checkpoint_answer(&body) {
        Err(error) => return Err(incoming.malformed(ChunkError::BadAnswer { reason: error.to_string() })),
        Ok(CheckpointAnswer::Streaming) => {}
        Ok(CheckpointAnswer::NoCheckpoint(_)) => {
            return Err(TransferError::NoCheckpoint { ring: ask.ring, slot: ask.min_slot })
        }
        Ok(CheckpointAnswer::Refused(reason)) => return Err(TransferError::Refused { node: from, reason }),
        Ok(CheckpointAnswer::Unavailable(reason)) => {
            tracing::warn!(peer = %from, reason, "the peer cannot serve a checkpoint now");
            return Err(unreachable);
        }
    }
    let header = match incoming.next_frame().await? {
        Frame::Chunk(body) => match incoming.decoder.push_encoded(&body) {
            Ok(Chunk::Header(header)) => header,
            Ok(Chunk::Data(_)) => unreachable!("the decoder refuses data before the header"),
            Err(problem) => return Err(incoming.malformed(problem)),
        },
        Frame::End => return Err(incoming.malformed(ChunkError::Incomplete { announced: 0, received: 0 })),
        Frame::Abort => return Err(unreachable),
    };
    let (sender, receiver) = mpsc::channel(CHUNKS_BUFFERED);
    tokio::spawn(forward(incoming, sender));
    Ok(CheckpointStream { slot: header.slot, file_bytes: header.file_bytes, chunks: receiver })
}

/// Hands the file's pieces to the runtime until the stream ends, fails or breaks the
/// format, or the runtime stops reading (dropping the socket ends the transfer).
async fn forward(mut incoming: Incoming, sender: mpsc::Sender<Result<Bytes, TransferError>>) {
    loop {
        let item = match incoming.next_data().await {
            Ok(None) => return,
            Ok(Some(bytes)) => Ok(bytes),
            Err(error) => {
                if matches!(error, TransferError::Malformed { .. }) {
                    tracing::warn!(peer = %incoming.from, %error, "dropped a malformed checkpoint stream");
                }
                Err(error)
            }
        };
        let failed = item.is_err();
        if sender.send(item).await.is_err() || failed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::ChunkError;
    use crate::proto::checkpoint_chunk::Part;
    use rsl_core::{RingId, Slot};
    use tokio::net::TcpListener;

    fn header(slot: u64, file_bytes: u64) -> pb::CheckpointChunk {
        pb::CheckpointChunk { part: Some(Part::Header(pb::CheckpointHeader { slot, file_bytes })) }
    }

    fn data(bytes: &'static [u8]) -> pb::CheckpointChunk {
        pb::CheckpointChunk { part: Some(Part::Data(Bytes::from_static(bytes))) }
    }

    fn frames(chunks: &[pb::CheckpointChunk]) -> Vec<u8> {
        chunks.iter().flat_map(frame).collect()
    }

    fn streaming() -> Vec<u8> {
        handshake::encode_checkpoint_answer(&CheckpointAnswer::Streaming)
    }

    /// A peer that reads one request, answers every fetch with `wire`, and closes.
    async fn canned_peer(wire: Vec<u8>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut len = [0; 4];
                socket.read_exact(&mut len).await.unwrap();
                let mut body = vec![0; u32::from_le_bytes(len) as usize];
                socket.read_exact(&mut body).await.unwrap();
                match handshake::read_opening(&mut [&len[..], &body].concat().as_slice()) {
                    Ok(handshake::Opening::Checkpoint(ask)) => assert_eq!(ask.frame_bytes_max, 1024),
                    other => panic!("expected a checkpoint request, got {other:?}"),
                }
                let _ = socket.write_all(&wire).await;
                let _ = socket.shutdown().await;
            }
        });
        address
    }

    /// Fetches from a peer at `address` with 1 KiB frames; every byte, or the first error.
    async fn fetch_all(address: SocketAddr) -> Result<Vec<u8>, TransferError> {
        let fetcher = RdmaCheckpointFetcher {
            local: NodeId(2),
            addresses: Arc::new(move |_| Some(address)),
            limits: TransferLimits { frame_bytes_max: 1024, timeout: Duration::from_secs(10) },
        };
        let request = CheckpointRequest { ring: RingId(1), requester: NodeId(2), min_slot: Slot(0) };
        let mut stream = fetcher.fetch(NodeId(1), request).await?;
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.chunks.recv().await {
            bytes.extend_from_slice(&chunk?);
        }
        Ok(bytes)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_well_formed_stream_is_read_to_its_end() {
        let wire = [streaming(), frames(&[header(9, 5), data(b"ab"), data(b"cde")])].concat();
        assert_eq!(fetch_all(canned_peer(wire).await).await.unwrap(), b"abcde");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn malformed_and_truncated_streams_are_refused() {
        let huge = 2000u32.to_le_bytes().to_vec();
        let cut = frames(&[data(b"abcdef")]);
        let garbage = [3u32.to_le_bytes().to_vec(), vec![0xff; 3]].concat();
        let mut bad_answer = streaming();
        bad_answer[12] = 9;
        let cases: Vec<(Vec<u8>, ChunkError)> = vec![
            (frames(&[data(b"abc")]), ChunkError::MissingHeader),
            (
                frames(&[header(5, 4), data(b"abc"), data(b"de")]),
                ChunkError::Oversized { index: 2, announced: 4, received: 5 },
            ),
            (frames(&[header(5, 4), data(b"ab")]), ChunkError::Incomplete { announced: 4, received: 2 }),
            (frames(&[header(5, 4), header(5, 4)]), ChunkError::SecondHeader { index: 1 }),
            (frames(&[header(5, 4), data(b"")]), ChunkError::EmptyData { index: 1 }),
            (vec![], ChunkError::Incomplete { announced: 0, received: 0 }),
            (
                [frames(&[header(5, 4)]), huge].concat(),
                ChunkError::FrameTooLarge { index: 1, bytes: 2000, max: 1024 },
            ),
            // Cut inside a frame: short of the announced bytes.
            (
                [frames(&[header(5, 10)]), cut[..5].to_vec()].concat(),
                ChunkError::Incomplete { announced: 10, received: 0 },
            ),
            (
                [frames(&[header(5, 4)]), garbage].concat(),
                ChunkError::Undecodable { index: 1, reason: String::new() },
            ),
        ];
        for (chunks, expected) in cases {
            let peer = canned_peer([streaming(), chunks].concat()).await;
            let outcome = fetch_all(peer).await;
            match (&outcome, &expected) {
                (
                    Err(TransferError::Malformed {
                        node: NodeId(1),
                        problem: ChunkError::Undecodable { index, .. },
                    }),
                    ChunkError::Undecodable { index: expected, .. },
                ) => assert_eq!(index, expected),
                _ => assert_eq!(
                    outcome,
                    Err(TransferError::Malformed { node: NodeId(1), problem: expected.clone() })
                ),
            }
        }
        // An answer that is not one is malformed too; a source failure mid-stream is not the
        // stream's fault: the peer is unreachable for now.
        let outcome = fetch_all(canned_peer(bad_answer).await).await;
        assert!(
            matches!(&outcome, Err(TransferError::Malformed { problem: ChunkError::BadAnswer { reason }, .. }) if reason.contains("status 9")),
            "{outcome:?}"
        );
        let aborted =
            [streaming(), frames(&[header(5, 4), data(b"ab")]), ABORT.to_le_bytes().to_vec()].concat();
        assert_eq!(
            fetch_all(canned_peer(aborted).await).await,
            Err(TransferError::Unreachable { node: NodeId(1) })
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refusals_and_silence_are_reported() {
        for (answer, expected) in [
            (
                CheckpointAnswer::NoCheckpoint("none".into()),
                TransferError::NoCheckpoint { ring: RingId(1), slot: Slot(0) },
            ),
            (
                CheckpointAnswer::Refused("not a member".into()),
                TransferError::Refused { node: NodeId(1), reason: "not a member".into() },
            ),
            (
                CheckpointAnswer::Unavailable("no source".into()),
                TransferError::Unreachable { node: NodeId(1) },
            ),
        ] {
            let peer = canned_peer(handshake::encode_checkpoint_answer(&answer)).await;
            assert_eq!(fetch_all(peer).await, Err(expected));
        }
        // A peer that accepts and never answers: the fetch times out.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let _silent = tokio::spawn(async move {
            let (_socket, _) = listener.accept().await.unwrap();
            std::future::pending::<()>().await
        });
        let fetcher = RdmaCheckpointFetcher {
            local: NodeId(2),
            addresses: Arc::new(move |_| Some(address)),
            limits: TransferLimits { frame_bytes_max: 1024, timeout: Duration::from_millis(100) },
        };
        let request = CheckpointRequest { ring: RingId(1), requester: NodeId(2), min_slot: Slot(0) };
        let outcome = fetcher.fetch(NodeId(1), request).await;
        assert_eq!(outcome.unwrap_err(), TransferError::Timeout { after_ms: 100 });
    }
}
