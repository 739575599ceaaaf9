//! Checkpoint transfer between replicas over the client API: serving this replica's
//! checkpoint to a peer that fell behind a truncated log (the `FetchCheckpoint` RPC), and
//! [`GrpcCheckpointFetcher`], which the runtime uses to fetch one from a peer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rsl::runtime::{CheckpointRequest, CheckpointStream};
use rsl::{CheckpointFetcher, NodeId, Runtime, Slot, TransferError};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status};

use super::CLIENT_MESSAGE_BYTES_MAX;
use crate::proto as pb;

/// Checkpoint chunks buffered per transfer.
const TRANSFER_CHUNKS_BUFFERED: usize = 4;

/// The chunks of a checkpoint being served.
pub(super) type ChunkStream = ReceiverStream<Result<pb::CheckpointChunk, Status>>;

/// Serves `request`: a header chunk (the checkpoint's slot and size), then the file's
/// chunks, streamed by a task of its own.
pub(super) async fn serve(
    runtime: &Runtime,
    request: pb::FetchCheckpointRequest,
) -> Result<ChunkStream, Status> {
    let asked = CheckpointRequest {
        ring: rsl::RingId(request.ring),
        requester: NodeId(request.requester),
        min_slot: Slot(request.min_slot),
    };
    let mut stream = runtime.checkpoint_server().open(asked).await.map_err(transfer_status)?;
    let (sender, receiver) = mpsc::channel(TRANSFER_CHUNKS_BUFFERED);
    let header =
        pb::CheckpointChunk { slot: stream.slot.0, file_bytes: stream.file_bytes, data: Bytes::new() };
    tokio::spawn(async move {
        if sender.send(Ok(header)).await.is_err() {
            return;
        }
        while let Some(chunk) = stream.chunks.recv().await {
            let item = chunk
                .map(|data| pb::CheckpointChunk { slot: 0, file_bytes: 0, data })
                .map_err(transfer_status);
            let failed = item.is_err();
            if sender.send(item).await.is_err() || failed {
                break;
            }
        }
    });
    Ok(ReceiverStream::new(receiver))
}

/// The status a transfer error is sent as; [`GrpcCheckpointFetcher`] maps it back.
fn transfer_status(error: TransferError) -> Status {
    match error {
        TransferError::NoCheckpoint { .. } | TransferError::UnknownRing { .. } => {
            Status::not_found(error.to_string())
        }
        TransferError::NotAMember { .. } => Status::permission_denied(error.to_string()),
        other => Status::unavailable(other.to_string()),
    }
}

/// Fetches checkpoints from peers over their client API (`FetchCheckpoint`).
#[derive(Debug)]
pub(super) struct GrpcCheckpointFetcher {
    node: NodeId,
    clients: Arc<BTreeMap<NodeId, String>>,
}

impl GrpcCheckpointFetcher {
    /// The fetcher of replica `node`, which reaches peers at their `clients` addresses.
    pub(super) fn new(node: NodeId, clients: BTreeMap<NodeId, String>) -> GrpcCheckpointFetcher {
        GrpcCheckpointFetcher { node, clients: Arc::new(clients) }
    }
}

impl CheckpointFetcher for GrpcCheckpointFetcher {
    fn fetch(
        &self,
        from: NodeId,
        request: CheckpointRequest,
    ) -> rsl::runtime::transfer::BoxFuture<'_, Result<CheckpointStream, TransferError>> {
        let address = self.clients.get(&from).cloned();
        let requester = self.node;
        Box::pin(async move {
            let unreachable = || TransferError::Unreachable { node: from };
            let Some(address) = address else {
                tracing::warn!(
                    peer = from.0,
                    "cannot fetch a checkpoint: no client address configured for the peer"
                );
                return Err(unreachable());
            };
            let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
                .map_err(|_| unreachable())?
                .connect_timeout(Duration::from_secs(2));
            let channel = endpoint.connect().await.map_err(|_| unreachable())?;
            let mut client =
                pb::kv_client::KvClient::new(channel).max_decoding_message_size(CLIENT_MESSAGE_BYTES_MAX);
            let asked = pb::FetchCheckpointRequest {
                ring: request.ring.0,
                requester: requester.0,
                min_slot: request.min_slot.0,
            };
            let mut chunks = match client.fetch_checkpoint(asked).await {
                Ok(response) => response.into_inner(),
                Err(status) => {
                    return Err(match status.code() {
                        Code::NotFound => {
                            TransferError::NoCheckpoint { ring: request.ring, slot: request.min_slot }
                        }
                        Code::PermissionDenied => TransferError::NotAMember { requester, ring: request.ring },
                        _ => unreachable(),
                    })
                }
            };
            let header = match chunks.message().await {
                Ok(Some(header)) => header,
                _ => return Err(unreachable()),
            };
            let (sender, receiver) = mpsc::channel(TRANSFER_CHUNKS_BUFFERED);
            tokio::spawn(async move {
                loop {
                    let item = match chunks.message().await {
                        Ok(Some(chunk)) => Ok(chunk.data),
                        Ok(None) => break,
                        Err(status) => Err(TransferError::Unreachable { node: from }).inspect_err(|_| {
                            tracing::warn!(peer = from.0, %status, "checkpoint stream failed");
                        }),
                    };
                    let failed = item.is_err();
                    if sender.send(item).await.is_err() || failed {
                        break;
                    }
                }
            });
            Ok(CheckpointStream { slot: Slot(header.slot), file_bytes: header.file_bytes, chunks: receiver })
        })
    }
}
