//! The client side of checkpoint transfer over gRPC: [`GrpcCheckpointFetcher`] calls
//! `CheckpointTransfer.Fetch` on a peer's replica address, with the endpoint's TLS
//! identity, on a connection of its own (so a large file never queues behind, or in front
//! of, the ring's messages), and checks the stream with [`ChunkDecoder`].

use crate::checkpoint::{
    BoxFuture, CheckpointFetcher, CheckpointRequest, CheckpointStream, ChunkDecoder, ChunkError,
    TransferError,
};
use crate::proto as pb;
use crate::proto::checkpoint_transfer_client::CheckpointTransferClient;
use parking_lot::RwLock;
use rsl_core::NodeId;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc;
use tonic::transport::Endpoint;
use tonic::{Code, Status, Streaming};

/// Chunks buffered ahead of the runtime's writer.
const CHUNKS_BUFFERED: usize = 4;

/// Where each peer's replica endpoint is, with TLS and timeouts set; shared with the
/// transport, which keeps it current.
pub(crate) type Endpoints = Arc<RwLock<HashMap<NodeId, Endpoint>>>;

/// Fetches checkpoints from peers over their replica endpoints.
#[derive(Debug)]
pub(crate) struct GrpcCheckpointFetcher {
    pub(crate) local: NodeId,
    pub(crate) endpoints: Endpoints,
    pub(crate) frame_bytes_max: u32,
}

/// The error a refused or failed call means.
fn error_of(from: NodeId, request: &CheckpointRequest, status: &Status) -> TransferError {
    match status.code() {
        Code::NotFound => TransferError::NoCheckpoint { ring: request.ring, slot: request.min_slot },
        Code::PermissionDenied | Code::Unauthenticated | Code::FailedPrecondition => {
            TransferError::Refused { node: from, reason: status.message().to_owned() }
        }
        _ => TransferError::Unreachable { node: from },
    }
}

impl CheckpointFetcher for GrpcCheckpointFetcher {
    fn fetch(
        &self,
        from: NodeId,
        request: CheckpointRequest,
    ) -> BoxFuture<'_, Result<CheckpointStream, TransferError>> {
        let endpoint = self.endpoints.read().get(&from).cloned();
        let (local, frame_bytes_max) = (self.local, self.frame_bytes_max as usize);
        Box::pin(async move {
            let unreachable = TransferError::Unreachable { node: from };
            let Some(endpoint) = endpoint else {
                tracing::warn!(%local, peer = %from, "cannot fetch a checkpoint: no address for the peer");
                return Err(unreachable);
            };
            let channel = endpoint.connect().await.map_err(|error| {
                tracing::warn!(%local, peer = %from, %error, "cannot connect to fetch a checkpoint");
                unreachable
            })?;
            let mut client =
                CheckpointTransferClient::new(channel).max_decoding_message_size(frame_bytes_max);
            let asked = pb::CheckpointFetch {
                ring: request.ring.0,
                requester: request.requester.0,
                to: from.0,
                min_slot: request.min_slot.0,
            };
            let failed = |status: Status| {
                tracing::warn!(%local, peer = %from, %status, "checkpoint request failed");
                error_of(from, &request, &status)
            };
            let mut response = client.fetch(asked).await.map_err(failed)?.into_inner();
            let mut decoder = ChunkDecoder::new();
            let malformed = |problem| TransferError::Malformed { node: from, problem };
            let header = match response.message().await.map_err(failed)? {
                None => return Err(malformed(ChunkError::Incomplete { announced: 0, received: 0 })),
                Some(chunk) => decoder.push_header(chunk).map_err(malformed)?,
            };
            let (sender, receiver) = mpsc::channel(CHUNKS_BUFFERED);
            tokio::spawn(forward(from, response, decoder, sender));
            Ok(CheckpointStream { slot: header.slot, file_bytes: header.file_bytes, chunks: receiver })
        })
    }
}

/// Hands the file's chunks to the runtime until the stream ends, fails or breaks the
/// format, or the runtime stops reading (dropping `response` cancels the call).
async fn forward(
    from: NodeId,
    mut response: Streaming<pb::CheckpointChunk>,
    mut decoder: ChunkDecoder,
    sender: mpsc::Sender<Result<bytes::Bytes, TransferError>>,
) {
    loop {
        let item = match response.message().await {
            Ok(Some(chunk)) => {
                decoder.push_data(chunk).map_err(|problem| TransferError::Malformed { node: from, problem })
            }
            Ok(None) => match decoder.finish() {
                Ok(_) => return,
                Err(problem) => Err(TransferError::Malformed { node: from, problem }),
            },
            Err(status) => {
                tracing::warn!(peer = %from, %status, "checkpoint stream failed");
                Err(TransferError::Unreachable { node: from })
            }
        };
        let failed = item.is_err();
        if let Err(error) = &item {
            if matches!(error, TransferError::Malformed { .. }) {
                tracing::warn!(peer = %from, %error, "dropped a malformed checkpoint stream");
            }
        }
        if sender.send(item).await.is_err() || failed {
            return;
        }
    }
}
