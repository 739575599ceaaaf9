//! The gRPC client API: one handler per RPC of `proto/rsl_kv.proto`, each a thin layer
//! over [`KvService`] (or, for `Stream`, over the stream batching), and the server that
//! serves them behind the gate (`guard.rs`: authentication and roles) and, when
//! configured, TLS (`client_tls.rs`).

use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};

use super::answers::{self, write_id};
use super::guard::{Gate, Guarded};
use super::service::KvService;
use super::{client_tls, stream, ServerError, CLIENT_MESSAGE_BYTES_MIN};
use crate::auth::{Access, Authenticator};
use crate::command::Write;
use crate::config::ServerConfig;
use crate::proto as pb;
use crate::proto::kv_server::{Kv, KvServer};

/// The client API of one replica, set up (TLS material read, users loaded) and ready to
/// serve.
pub(super) struct ClientApi {
    node: rsl::NodeId,
    builder: tonic::transport::Server,
    gate: Gate,
    /// Largest client API message: room for the largest write the ring takes.
    message_bytes_max: usize,
}

impl ClientApi {
    /// The API with `config`'s TLS and authentication; a TLS file that does not load, or
    /// TLS in a build without it, is an error now, before anything starts.
    pub(super) fn new(config: &ServerConfig) -> Result<ClientApi, ServerError> {
        let node = config.node;
        let builder =
            tonic::transport::Server::builder().http2_keepalive_interval(Some(Duration::from_secs(10)));
        let builder = client_tls::apply(builder, config.client_tls.as_ref())?;
        if config.auth.is_some() && config.client_tls.is_none() {
            tracing::warn!(
                node = node.0,
                "authentication is on but the client port has no TLS: tokens travel in plaintext"
            );
        }
        let gate = Gate::new(config.auth.as_ref().map(Authenticator::new));
        let request_bytes_max = config.ring_config().request_bytes_max;
        let message_bytes_max = usize::try_from(request_bytes_max + (1 << 20))
            .unwrap_or(usize::MAX)
            .max(CLIENT_MESSAGE_BYTES_MIN);
        Ok(ClientApi { node, builder, gate, message_bytes_max })
    }

    /// Serves `service` on `listener`, every call through the gate, until `stopped` turns
    /// true.
    pub(super) async fn serve(
        self,
        service: KvService,
        listener: TcpListener,
        mut stopped: watch::Receiver<bool>,
    ) {
        let ClientApi { node, builder, gate, message_bytes_max } = self;
        let service = KvServer::new(service)
            .max_decoding_message_size(message_bytes_max)
            .max_encoding_message_size(message_bytes_max);
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let signal = async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        let served =
            builder.serve_with_incoming_shutdown(Guarded::new(service, gate), incoming, signal).await;
        if let Err(error) = served {
            tracing::error!(node = node.0, %error, "client API failed");
        }
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn put(&self, request: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let request = request.into_inner();
        let write = Write::Put { id: write_id(request.id)?, key: request.key, value: request.value };
        let response = self.write(write).await?;
        Ok(Response::new(pb::PutResponse { slot: response.slot }))
    }

    async fn get(&self, request: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        KvService::get(self, request.into_inner()).await.map(Response::new)
    }

    type StreamStream = stream::ResultStream;

    async fn stream(
        &self,
        request: Request<Streaming<pb::OpBatch>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        // The gate admitted the stream and says who opened it; each batch is checked
        // against the same access.
        let access = request
            .extensions()
            .get::<Access>()
            .cloned()
            .ok_or_else(|| Status::internal("the stream was not admitted by the gate"))?;
        Ok(Response::new(stream::serve(self.clone(), access, request.into_inner())))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let request = request.into_inner();
        let write = Write::Delete { id: write_id(request.id)?, key: request.key };
        let response = self.write(write).await?;
        Ok(Response::new(answers::delete_response(&response)))
    }

    async fn cas(&self, request: Request<pb::CasRequest>) -> Result<Response<pb::CasResponse>, Status> {
        let request = request.into_inner();
        let expected = request.expected_present.then_some(request.expected);
        let write =
            Write::Cas { id: write_id(request.id)?, key: request.key, expected, value: request.value };
        let response = self.write(write).await?;
        answers::cas_response(response).map(Response::new)
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        KvService::status(self).await.map(Response::new)
    }

    async fn reconfigure(
        &self,
        request: Request<pb::ReconfigureRequest>,
    ) -> Result<Response<pb::ReconfigureResponse>, Status> {
        KvService::reconfigure(self, request.into_inner()).await.map(Response::new)
    }

    type SnapshotStream = tokio_stream::Iter<std::vec::IntoIter<Result<pb::SnapshotChunk, Status>>>;

    async fn snapshot(
        &self,
        _request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        let file = bytes::Bytes::from(KvService::snapshot(self).await?);
        tracing::info!(node = self.node().0, bytes = file.len(), "serving a snapshot");
        let chunks: Vec<Result<pb::SnapshotChunk, Status>> = (0..file.len())
            .step_by(SNAPSHOT_CHUNK_BYTES)
            .map(|at| {
                Ok(pb::SnapshotChunk { data: file.slice(at..file.len().min(at + SNAPSHOT_CHUNK_BYTES)) })
            })
            .collect();
        Ok(Response::new(tokio_stream::iter(chunks)))
    }

    async fn promote(
        &self,
        _request: Request<pb::PromoteRequest>,
    ) -> Result<Response<pb::PromoteResponse>, Status> {
        KvService::promote(self).await.map(Response::new)
    }

    async fn change_timing(
        &self,
        request: Request<pb::ChangeTimingRequest>,
    ) -> Result<Response<pb::ChangeTimingResponse>, Status> {
        KvService::change_timing(self, request.into_inner()).await.map(Response::new)
    }

    async fn reseed(
        &self,
        request: Request<pb::ReseedRequest>,
    ) -> Result<Response<pb::ReseedResponse>, Status> {
        KvService::reseed(self, request.into_inner().from).await.map(Response::new)
    }

    async fn exclusive(
        &self,
        request: Request<pb::ExclusiveRequest>,
    ) -> Result<Response<pb::ExclusiveResponse>, Status> {
        KvService::exclusive(self, request.into_inner()).await.map(Response::new)
    }
}

/// Bytes of a snapshot per message, well under the client API's message limit.
const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;
const _: () = assert!(SNAPSHOT_CHUNK_BYTES + 1024 < super::CLIENT_MESSAGE_BYTES_MIN);
