//! The inbound side: the `Replication` service and the task serving it.

use super::{BindError, GrpcConfig};
use crate::codec::message_from_proto;
use crate::gate::Gate;
use crate::proto as pb;
use crate::proto::replication_server::{Replication, ReplicationServer};
use crate::stats::TransportStats;
use crate::transport::Inbound;
use prost::Message as _;
use rsl_core::{NodeId, RingId};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
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
) -> Result<JoinHandle<()>, BindError> {
    let local = gate.local;
    let service = ReplicationServer::new(ReplicationService { gate, shutdown: shutdown.clone() })
        .max_decoding_message_size(config.frame_bytes_max as usize)
        .max_encoding_message_size(1024);
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

#[derive(Debug)]
struct ReplicationService {
    gate: Arc<Gate>,
    shutdown: watch::Receiver<bool>,
}

fn shutting_down() -> Status {
    Status::unavailable("endpoint is shutting down")
}

impl ReplicationService {
    /// Checks and delivers one frame. An error ends the call.
    async fn handle(&self, batch: pb::Batch, summary: &mut pb::StreamSummary) -> Result<(), Status> {
        let gate = &self.gate;
        let stats = &gate.stats;
        let from = NodeId(batch.from);
        TransportStats::bump(&stats.frames_received);
        TransportStats::add(&stats.bytes_received, batch.encoded_len() as u64);
        summary.batches += 1;
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
        Ok(())
    }
}

#[tonic::async_trait]
impl Replication for ReplicationService {
    async fn stream(
        &self,
        request: Request<Streaming<pb::Batch>>,
    ) -> Result<Response<pb::StreamSummary>, Status> {
        let remote = request.remote_addr();
        let mut frames = request.into_inner();
        let mut shutdown = self.shutdown.clone();
        let mut summary = pb::StreamSummary::default();
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
                Ok(Some(batch)) => self.handle(batch, &mut summary).await?,
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
