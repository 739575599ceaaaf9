//! The inbound side: the `Replication` service, the task serving it together with the
//! `CheckpointTransfer` service (`checkpoint.rs`) on one port, and the routing between them.

use super::checkpoint::{CheckpointService, SharedSource};
use super::identity::Caller;
use super::{BindError, GrpcConfig};
use crate::chunk::Reassembler;
use crate::codec::{decode_message, frame_version, message_from_proto, PROTOCOL_VERSION_MIN};
use crate::gate::Gate;
use crate::proto as pb;
use crate::proto::checkpoint_transfer_server::CheckpointTransferServer;
use crate::proto::replication_server::{Replication, ReplicationServer};
use crate::stats::TransportStats;
use crate::transport::Inbound;
use prost::Message as _;
use rsl_core::{Message, NodeId, RingId};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::body::Body;
use tonic::codegen::{http, Service};
use tonic::server::NamedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic::{Code, Request, Response, Status, Streaming};

#[cfg(feature = "tls")]
pub(crate) type ServerTls = tonic::transport::ServerTlsConfig;
#[cfg(not(feature = "tls"))]
pub(crate) type ServerTls = std::convert::Infallible;

/// Starts the server on `listener`; it stops when `shutdown` turns true.
pub(crate) fn spawn(
    gate: Arc<Gate>,
    config: &GrpcConfig,
    listener: tokio::net::TcpListener,
    shutdown: watch::Receiver<bool>,
    tls: Option<ServerTls>,
    checkpoint_source: SharedSource,
) -> Result<JoinHandle<()>, BindError> {
    let local = gate.local;
    let secure = tls.is_some();
    let frame_bytes_max = config.frame_bytes_max;
    let replication = ReplicationServer::new(ReplicationService {
        gate: Arc::clone(&gate),
        shutdown: shutdown.clone(),
        tls: secure,
        protocol_version: config.protocol_version,
        chunked_message_bytes_max: config.chunked_message_bytes_max,
    })
    .max_decoding_message_size(frame_bytes_max as usize)
    .max_encoding_message_size(1024);
    let checkpoints = CheckpointTransferServer::new(CheckpointService {
        gate,
        source: checkpoint_source,
        tls: secure,
        frame_bytes_max,
    })
    .max_decoding_message_size(1024)
    .max_encoding_message_size(frame_bytes_max as usize);
    let service = Routes { replication, checkpoints };
    let builder = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_millis(config.keepalive_interval_ms)))
        .http2_keepalive_timeout(Some(Duration::from_millis(config.keepalive_timeout_ms)))
        .initial_stream_window_size(config.window_bytes)
        .initial_connection_window_size(config.window_bytes)
        .max_concurrent_streams(config.streams_per_connection_max);
    #[cfg(feature = "tls")]
    let builder = match tls {
        Some(tls) => {
            builder.tls_config(tls).map_err(|error| BindError::Tls { problem: error.to_string() })?
        }
        None => builder,
    };
    #[cfg(not(feature = "tls"))]
    let builder = {
        if let Some(never) = tls {
            match never {}
        }
        builder
    };
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut signal = shutdown;
    let stopped = async move {
        // Stops when told to, or when the transport (the sender) is gone.
        let _ = signal.wait_for(|stop| *stop).await;
    };
    Ok(tokio::spawn(async move {
        if let Err(error) = builder.serve_with_incoming_shutdown(service, incoming, stopped).await {
            tracing::error!(%local, %error, "gRPC server failed");
        }
    }))
}

/// The two services of the replica port, routed by the call's path (a hand-written
/// router, so the transport needs no HTTP framework).
#[derive(Clone)]
struct Routes {
    replication: ReplicationServer<ReplicationService>,
    checkpoints: CheckpointTransferServer<CheckpointService>,
}

type RouteFuture = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

impl Service<http::Request<Body>> for Routes {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = RouteFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Both generated services are always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> RouteFuture {
        let service = request.uri().path().strip_prefix('/').and_then(|path| path.split_once('/'));
        match service {
            Some((name, _)) if name == CheckpointTransferServer::<CheckpointService>::NAME => {
                Box::pin(self.checkpoints.call(request))
            }
            // Everything else, unknown paths included (answered UNIMPLEMENTED).
            _ => Box::pin(self.replication.call(request)),
        }
    }
}

#[derive(Debug)]
struct ReplicationService {
    gate: Arc<Gate>,
    shutdown: watch::Receiver<bool>,
    /// Whether the server requires client certificates (then frames must come from the
    /// node the certificate names).
    tls: bool,
    /// The newest protocol version this endpoint speaks.
    protocol_version: u32,
    /// The largest message a stream reassembles from chunks.
    chunked_message_bytes_max: u64,
}

/// The metadata key of a version refusal: the highest protocol version the refusing
/// endpoint speaks.
pub(crate) const VERSION_MAX_METADATA: &str = "rsl-protocol-version-max";

fn shutting_down() -> Status {
    Status::unavailable("endpoint is shutting down")
}

impl ReplicationService {
    /// Checks and delivers one frame from `caller`. An error ends the call.
    async fn handle(
        &self,
        caller: Caller,
        batch: pb::Batch,
        reassembler: &mut Reassembler,
        summary: &mut pb::StreamSummary,
    ) -> Result<(), Status> {
        let gate = &self.gate;
        let stats = &gate.stats;
        let from = NodeId(batch.from);
        TransportStats::bump(&stats.frames_received);
        TransportStats::add(&stats.bytes_received, batch.encoded_len() as u64);
        summary.batches += 1;
        if let Err(certified) = caller.vouch(from) {
            TransportStats::bump(&stats.rejected_impersonation);
            tracing::warn!(
                local = %gate.local, %from, %certified,
                "refused a stream whose frame claims another sender than its certificate names"
            );
            return Err(Status::permission_denied(format!(
                "the frame claims to come from node {}, the caller's certificate names node {}",
                from.0, certified.0
            )));
        }
        let version = frame_version(batch.protocol_version);
        if !(PROTOCOL_VERSION_MIN..=self.protocol_version).contains(&version) {
            TransportStats::bump(&stats.rejected_version);
            tracing::warn!(
                local = %gate.local, %from, version, speaks = self.protocol_version,
                "refused a stream in a protocol version this node does not speak"
            );
            let mut metadata = tonic::metadata::MetadataMap::new();
            metadata.insert(VERSION_MAX_METADATA, self.protocol_version.into());
            return Err(Status::with_metadata(
                Code::FailedPrecondition,
                format!(
                    "protocol version {version}: node {} speaks versions {PROTOCOL_VERSION_MIN}..={}",
                    gate.local.0, self.protocol_version
                ),
                metadata,
            ));
        }
        if batch.to != gate.local.0 {
            TransportStats::add(&stats.rejected_misrouted, batch.messages.len() as u64);
            tracing::warn!(local = %gate.local, %from, to = batch.to, "refused a stream addressed to another node");
            return Err(Status::failed_precondition(format!(
                "this endpoint is node {}, the frame is addressed to node {}",
                gate.local.0, batch.to
            )));
        }
        for message in batch.messages {
            if gate.admit(from, RingId(message.ring), NodeId(message.from), NodeId(message.to)).is_err() {
                continue;
            }
            match message_from_proto(message) {
                Ok(message) => {
                    gate.deliver(Inbound { from, message }).await.map_err(|_| shutting_down())?;
                    summary.messages += 1;
                }
                Err(error) => gate.decode_failed(&from, &error),
            }
        }
        for chunk in batch.chunks {
            if let Some(message) = self.take_chunk(from, chunk, reassembler) {
                gate.deliver(Inbound { from, message }).await.map_err(|_| shutting_down())?;
                summary.messages += 1;
            }
        }
        Ok(())
    }

    /// Checks one chunk from `from` and takes it into the stream's reassembly; returns the
    /// message it completed, decoded and validated. A bad chunk is dropped and counted.
    fn take_chunk(&self, from: NodeId, chunk: pb::Chunk, reassembler: &mut Reassembler) -> Option<Message> {
        let gate = &self.gate;
        let stats = &gate.stats;
        TransportStats::bump(&stats.chunks_received);
        // A message's first chunk passes the same checks as a whole message before anything
        // is buffered; its later chunks must match it (the reassembler checks).
        if chunk.offset == 0
            && gate.admit(from, RingId(chunk.ring), NodeId(chunk.from), NodeId(chunk.to)).is_err()
        {
            reassembler.abandon(chunk.message_id);
            return None;
        }
        let refused = |problem: &dyn std::fmt::Display| {
            TransportStats::bump(&stats.rejected_chunks);
            tracing::warn!(local = %gate.local, %from, %problem, "dropped a chunk of a message too large for a frame");
        };
        let (header, bytes) = match reassembler.accept(chunk) {
            Ok(Some(done)) => done,
            Ok(None) => return None,
            Err(error) => {
                refused(&error);
                return None;
            }
        };
        match decode_message(bytes) {
            Ok(message)
                if (message.ring, message.from, message.to) == (header.ring, header.from, header.to) =>
            {
                Some(message)
            }
            Ok(message) => {
                refused(&format!(
                    "reassembled message {} names ring {}, {} to {}, its chunks ring {}, {} to {}",
                    header.message_id,
                    message.ring.0,
                    message.from,
                    message.to,
                    header.ring.0,
                    header.from,
                    header.to
                ));
                None
            }
            Err(error) => {
                refused(&format!("reassembled message {} does not decode: {error}", header.message_id));
                None
            }
        }
    }
}

#[tonic::async_trait]
impl Replication for ReplicationService {
    async fn stream(
        &self,
        request: Request<Streaming<pb::Batch>>,
    ) -> Result<Response<pb::StreamSummary>, Status> {
        let caller = Caller::of(&request, self.tls, self.gate.local, &self.gate.stats)?;
        let remote = request.remote_addr();
        let mut frames = request.into_inner();
        let mut shutdown = self.shutdown.clone();
        let mut summary = pb::StreamSummary::default();
        let mut reassembler = Reassembler::new(self.chunked_message_bytes_max);
        loop {
            if *shutdown.borrow_and_update() {
                return Err(shutting_down());
            }
            let next = tokio::select! {
                biased;
                _ = shutdown.changed() => return Err(shutting_down()),
                next = frames.message() => next,
            };
            match next {
                Ok(Some(batch)) => self.handle(caller, batch, &mut reassembler, &mut summary).await?,
                Ok(None) => return Ok(Response::new(summary)),
                Err(status) => {
                    // tonic reports undecodable and oversized frames as INTERNAL and
                    // OUT_OF_RANGE; anything else is the connection going away.
                    if matches!(status.code(), Code::Internal | Code::OutOfRange) {
                        let peer = remote.map_or_else(|| "unknown address".to_owned(), |a| a.to_string());
                        self.gate.decode_failed(&peer, &status.message());
                    }
                    return Err(status);
                }
            }
        }
    }
}
