//! The serving side of checkpoint transfer: the `CheckpointTransfer` service, which answers
//! on the replica port with the same endpoint's TLS, identity rule and membership table as
//! `Replication`, streaming what the endpoint's [`CheckpointSource`] opens.
//!
//! Order of checks (each refusal is counted in `checkpoint_requests_refused` and logged):
//! the caller's identity (`identity.rs`: its certificate's node, or its claim without TLS),
//! the request's `requester` against that identity, the request's `to` against this node,
//! the requester's membership of the ring; only then is the source asked.

use super::identity::Caller;
use crate::checkpoint::{CheckpointRequest, CheckpointSource, CheckpointStream, TransferError};
use crate::gate::Gate;
use crate::membership::Admission;
use crate::proto as pb;
use crate::proto::checkpoint_transfer_server::CheckpointTransfer;
use crate::stats::TransportStats;
use bytes::Bytes;
use futures_util::Stream;
use parking_lot::RwLock;
use rsl_core::{NodeId, RingId, Slot};
use std::pin::Pin;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The source an endpoint serves checkpoints from; set once a runtime attaches.
pub(crate) type SharedSource = Arc<RwLock<Option<Arc<dyn CheckpointSource>>>>;

/// Bytes of a chunk's encoding beyond its data (tag, length, oneof), rounded up.
const CHUNK_OVERHEAD_BYTES: u32 = 32;

/// The chunks of one transfer, as tonic sends them.
pub(crate) type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::CheckpointChunk, Status>> + Send>>;

#[derive(Debug)]
pub(crate) struct CheckpointService {
    pub(crate) gate: Arc<Gate>,
    pub(crate) source: SharedSource,
    /// Whether the server requires client certificates (then identity comes from them).
    pub(crate) tls: bool,
    /// Largest encoded chunk; longer file pieces are split.
    pub(crate) frame_bytes_max: u32,
}

impl CheckpointService {
    /// Counts and logs a refused request; returns the status to answer with.
    fn refuse(&self, claimed: NodeId, ring: RingId, status: Status) -> Status {
        let gate = &self.gate;
        TransportStats::bump(&gate.stats.checkpoint_requests_refused);
        tracing::warn!(
            local = %gate.local, requester = %claimed, ring = ring.0, code = ?status.code(),
            reason = status.message(), "refused a checkpoint request"
        );
        status
    }

    /// The requester, once its identity, the addressing and its membership check out.
    fn admit(&self, caller: Caller, asked: &pb::CheckpointFetch) -> Result<NodeId, Status> {
        let gate = &self.gate;
        let (claimed, ring) = (NodeId(asked.requester), RingId(asked.ring));
        let requester = caller.vouch(claimed).map_err(|certified| {
            TransportStats::bump(&gate.stats.rejected_impersonation);
            let problem = format!("the request claims {claimed}, the caller's certificate names {certified}");
            self.refuse(claimed, ring, Status::permission_denied(problem))
        })?;
        if asked.to != gate.local.0 {
            let problem = format!(
                "this endpoint is node {}, the request is addressed to node {}",
                gate.local.0, asked.to
            );
            return Err(self.refuse(claimed, ring, Status::failed_precondition(problem)));
        }
        match gate.membership.check(ring, requester) {
            Admission::Allowed => Ok(requester),
            Admission::UnknownRing => {
                let problem = format!("{} does not host ring {}", gate.local, ring.0);
                Err(self.refuse(claimed, ring, Status::not_found(problem)))
            }
            Admission::NotAMember => {
                let problem = format!("{requester} is not a member of ring {}", ring.0);
                Err(self.refuse(claimed, ring, Status::permission_denied(problem)))
            }
        }
    }
}

/// The status a source's error is answered with; the fetcher maps it back.
fn status_of(error: &TransferError) -> Status {
    match error {
        TransferError::NoCheckpoint { .. } | TransferError::UnknownRing { .. } => {
            Status::not_found(error.to_string())
        }
        TransferError::NotAMember { .. } | TransferError::Refused { .. } => {
            Status::permission_denied(error.to_string())
        }
        _ => Status::unavailable(error.to_string()),
    }
}

#[tonic::async_trait]
impl CheckpointTransfer for CheckpointService {
    type FetchStream = ChunkStream;

    async fn fetch(&self, request: Request<pb::CheckpointFetch>) -> Result<Response<ChunkStream>, Status> {
        let gate = &self.gate;
        let caller = Caller::of(&request, self.tls, gate.local, &gate.stats).map_err(|status| {
            let asked = request.get_ref();
            self.refuse(NodeId(asked.requester), RingId(asked.ring), status)
        })?;
        let asked = request.into_inner();
        let requester = self.admit(caller, &asked)?;
        let source = self.source.read().clone();
        let source =
            source.ok_or_else(|| Status::unavailable(format!("{} serves no checkpoints", gate.local)))?;
        let request =
            CheckpointRequest { ring: RingId(asked.ring), requester, min_slot: Slot(asked.min_slot) };
        let stream = source.open(request).await.map_err(|error| status_of(&error))?;
        TransportStats::bump(&gate.stats.checkpoints_served);
        tracing::info!(
            local = %gate.local, to = %requester, ring = asked.ring, slot = %stream.slot,
            file_bytes = stream.file_bytes, "serving a checkpoint"
        );
        let data_bytes_max = (self.frame_bytes_max.saturating_sub(CHUNK_OVERHEAD_BYTES)).max(1) as usize;
        Ok(Response::new(outgoing(stream, data_bytes_max, Arc::clone(&gate.stats))))
    }
}

/// What is left to send of one transfer.
struct Outgoing {
    header: Option<pb::CheckpointChunk>,
    pending: Bytes,
    chunks: tokio::sync::mpsc::Receiver<Result<Bytes, TransferError>>,
    data_bytes_max: usize,
    stats: Arc<TransportStats>,
    failed: bool,
}

/// The header, then the file's bytes in chunks of at most `data_bytes_max`; a source error
/// ends the stream with `UNAVAILABLE`.
fn outgoing(stream: CheckpointStream, data_bytes_max: usize, stats: Arc<TransportStats>) -> ChunkStream {
    use pb::checkpoint_chunk::Part;
    let header = pb::CheckpointHeader { slot: stream.slot.0, file_bytes: stream.file_bytes };
    let state = Outgoing {
        header: Some(pb::CheckpointChunk { part: Some(Part::Header(header)) }),
        pending: Bytes::new(),
        chunks: stream.chunks,
        data_bytes_max,
        stats,
        failed: false,
    };
    Box::pin(futures_util::stream::unfold(state, |mut state| async move {
        if let Some(header) = state.header.take() {
            return Some((Ok(header), state));
        }
        if state.failed {
            return None;
        }
        while state.pending.is_empty() {
            match state.chunks.recv().await? {
                Ok(bytes) => state.pending = bytes,
                Err(error) => {
                    state.failed = true;
                    return Some((Err(Status::unavailable(error.to_string())), state));
                }
            }
        }
        let data = state.pending.split_to(state.pending.len().min(state.data_bytes_max));
        TransportStats::add(&state.stats.checkpoint_bytes_served, data.len() as u64);
        Some((Ok(pb::CheckpointChunk { part: Some(Part::Data(data)) }), state))
    }))
}
