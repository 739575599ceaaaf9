//! [`Server`]: one replica of the key-value ring — the rsl ring over the gRPC transport,
//! the client API, checkpoint transfer between replicas, and metrics.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use rsl::core::ChangeError;
use rsl::log::{CheckpointOptions, CheckpointStore, PmemLog, PmemOptions, RecoveryPolicy};
use rsl::runtime::{CheckpointRequest, CheckpointStream};
use rsl::transport::{GrpcConfig, GrpcTransport};
use rsl::{
    ChangeConfigurationError, CheckpointFetcher, FastReadError, FileStorage, MemoryStorage, NodeId,
    ReadError, ReplicateError, Ring, RingOptions, Role, Runtime, RuntimeOptions, Slot, Storage,
    TransferError, Transport,
};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Response, Status, Streaming};

use crate::command::{
    self, Read, ReadBatch, ReadOutcome, Write, WriteBatch, WriteId, WriteOutcome, WriteResponse,
    WRITE_BATCH_BYTES_MAX,
};
use crate::config::{LogBackend, ServerConfig};
use crate::proto as pb;
use crate::proto::kv_server::{Kv, KvServer};
use crate::{PRIMARY_ADDRESS_METADATA, PRIMARY_NODE_METADATA};

/// How long the client API and the transport get to finish in-flight calls at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// How long a status call waits for the state machine's digest.
const DIGEST_WAIT: Duration = Duration::from_millis(500);
/// Checkpoint chunks buffered per transfer.
const TRANSFER_CHUNKS_BUFFERED: usize = 4;
/// Largest client API message (a value is at most 512 KiB; a checkpoint chunk 1 MiB).
const CLIENT_MESSAGE_BYTES_MAX: usize = 4 << 20;
/// Operation batches of one client stream being served at once; the stream is not read
/// further until one finishes (flow control pushes back on the client).
const STREAM_BATCHES_IN_FLIGHT_MAX: usize = 64;
/// Operations in one batch of a client stream.
const STREAM_BATCH_OPS_MAX: usize = 65_536;

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listening socket could not be bound.
    #[error("cannot listen on {address} for {what}: {source}")]
    Listen {
        /// Which socket.
        what: &'static str,
        /// The address.
        address: SocketAddr,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The data directory could not be created.
    #[error("cannot create the data directory {}: {source}", .path.display())]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The replica transport refused to start.
    #[error("replica transport: {0}")]
    Transport(#[from] rsl::transport::BindError),
    /// A member's replica address is not usable.
    #[error("replica address of node {node}: {problem}")]
    PeerAddress {
        /// The member.
        node: u64,
        /// What is wrong.
        problem: String,
    },
    /// The settings cannot work together (a bound too large for the transport, ...).
    #[error("configuration: {0}")]
    Config(String),
    /// The data directory cannot start the ring asked for (a second bootstrap, another
    /// ring's directory, a node outside the initial members that does not join).
    #[error("{0}")]
    Bootstrap(#[from] crate::bootstrap::BootstrapError),
    /// TLS files could not be read, or this build has no TLS.
    #[error("TLS: {0}")]
    Tls(String),
    /// The persistent-memory log or the checkpoint store could not be opened.
    #[error("storage: {0}")]
    Storage(String),
    /// The ring could not start (its log or checkpoints failed to recover, ...).
    #[error("starting the ring: {0}")]
    Ring(#[from] rsl::BuildError),
    /// The runtime could not start.
    #[error("starting the runtime: {0}")]
    Runtime(#[from] rsl::StartError),
}

/// Sockets a server uses; bind them first to learn port-0 addresses (tests do).
#[derive(Debug)]
pub struct Listeners {
    /// The replica transport's listener.
    pub replica: TcpListener,
    /// The client API's listener.
    pub client: TcpListener,
}

impl Listeners {
    /// Binds the addresses in `config`.
    pub async fn bind(config: &ServerConfig) -> Result<Listeners, ServerError> {
        let bind = |what, address| async move {
            TcpListener::bind(address).await.map_err(|source| ServerError::Listen { what, address, source })
        };
        Ok(Listeners {
            replica: bind("the replica transport", config.replica_listen).await?,
            client: bind("the client API", config.client_listen).await?,
        })
    }
}

/// One running replica of the key-value service.
///
/// [`Server::start`] binds the configured addresses, opens the log store, recovers the
/// ring and serves clients; [`Server::shutdown`] stops accepting clients, stops the ring
/// (flushing its log) and closes the transport.
#[derive(Debug)]
pub struct Server {
    node: NodeId,
    ring: Ring,
    runtime: Runtime,
    transport: Arc<GrpcTransport>,
    client_addr: SocketAddr,
    replica_addr: SocketAddr,
    stop_clients: watch::Sender<bool>,
    client_api: Option<JoinHandle<()>>,
    metrics: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds the configured addresses and starts.
    pub async fn start(config: ServerConfig) -> Result<Server, ServerError> {
        let listeners = Listeners::bind(&config).await?;
        Server::start_on(config, listeners, RingOptions::default()).await
    }

    /// Starts on listeners already bound (their addresses override the configured
    /// `client_listen` and `replica_listen`), with the given runtime options per ring.
    pub async fn start_on(
        config: ServerConfig,
        listeners: Listeners,
        ring_options: RingOptions,
    ) -> Result<Server, ServerError> {
        let node = config.node;
        if config.log != LogBackend::Memory {
            std::fs::create_dir_all(&config.data_dir)
                .map_err(|source| ServerError::DataDir { path: config.data_dir.clone(), source })?;
        }
        let client_addr = local_addr("the client API", &listeners.client, config.client_listen)?;
        let replica_addr = local_addr("the replica transport", &listeners.replica, config.replica_listen)?;

        // The replica transport, with every peer's address.
        // Frames must carry the largest message the ring may send (a promise full of batches).
        let frame_bytes =
            config.ring_config().message_bytes_max + rsl::transport::codec::FRAME_OVERHEAD_BYTES;
        let frame_bytes_max = u32::try_from(frame_bytes).map_err(|_| {
            ServerError::Config(format!(
                "replica frames of {frame_bytes} bytes (twice pipeline_depth full batches) exceed 4 GiB; \
                 lower pipeline_depth"
            ))
        })?;
        let defaults = GrpcConfig::default();
        let grpc = GrpcConfig {
            seed: node.0,
            frame_bytes_max: frame_bytes_max.max(defaults.frame_bytes_max),
            peer_queue_bytes_max: defaults.peer_queue_bytes_max.max(u64::from(frame_bytes_max)),
            ..defaults
        };
        let builder = GrpcTransport::builder(node).config(grpc);
        let builder = with_tls(builder, &config)?;
        let (transport, inbound) = builder.serve(listeners.replica).await?;
        let transport = Arc::new(transport);
        for (&member, address) in &config.members {
            if member != node {
                transport.set_peer_address(member, address.as_str().into()).map_err(|error| {
                    ServerError::PeerAddress { node: member.0, problem: error.to_string() }
                })?;
            }
        }

        // The runtime fetches checkpoints from peers over their client API.
        let fetcher = GrpcCheckpointFetcher { node, clients: Arc::new(config.clients.clone()) };
        let options = RuntimeOptions { checkpoint_fetcher: Arc::new(fetcher), ..RuntimeOptions::default() };
        let shared: Arc<dyn Transport> = transport.clone();
        let runtime = Runtime::new(shared, inbound, options)?;

        // The data directory decides whether this replica bootstraps the ring or joins it.
        let ring_config = match config.log {
            LogBackend::Memory => config.ring_config(),
            LogBackend::File | LogBackend::Pmem => {
                let start = crate::bootstrap::settle(
                    &config.data_dir,
                    config.ring,
                    config.node,
                    config.start,
                    &config.initial_members,
                )?;
                config.ring_config_for(&start)
            }
        };
        let storage = open_storage(&config).await?;
        let ring = rsl::Ring::builder(ring_config)
            .state_machine(crate::KvStateMachine::new())
            .storage(storage)
            .runtime(&runtime)
            .options(ring_options)
            .start()
            .await;
        let ring = match ring {
            Ok(ring) => ring,
            Err(error) => {
                runtime.shutdown().await;
                transport.shutdown(SHUTDOWN_GRACE).await;
                return Err(error.into());
            }
        };

        let service = KvService {
            node,
            ring: ring.clone(),
            runtime: runtime.clone(),
            members: Arc::new(config.members.clone()),
            clients: Arc::new(config.clients.clone()),
        };
        let (stop_clients, stopped) = watch::channel(false);
        let client_api = tokio::spawn(serve_clients(service, listeners.client, stopped));

        let metrics =
            match config.metrics_port {
                Some(port) => {
                    let address = SocketAddr::from(([0, 0, 0, 0], port));
                    let listener = TcpListener::bind(address)
                        .await
                        .map_err(|source| ServerError::Listen { what: "metrics", address, source })?;
                    let runtime = runtime.clone();
                    Some(tokio::spawn(async move {
                        if let Err(error) = rsl::serve_metrics(runtime, listener).await {
                            tracing::warn!(%error, "metrics endpoint stopped");
                        }
                    }))
                }
                None => None,
            };
        tracing::info!(node = node.0, %client_addr, %replica_addr, log = %config.log, "rsl-kv server started");
        Ok(Server {
            node,
            ring,
            runtime,
            transport,
            client_addr,
            replica_addr,
            stop_clients,
            client_api: Some(client_api),
            metrics,
        })
    }

    /// This replica's node id.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// Where the client API listens.
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    /// Where the replica transport listens.
    pub fn replica_addr(&self) -> SocketAddr {
        self.replica_addr
    }

    /// The ring replica (status, statistics, relinquish).
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// Stops accepting clients (in-flight calls get two seconds), stops the ring
    /// (its log is flushed and closed), then the transport.
    pub async fn shutdown(mut self) {
        self.stop_clients.send_replace(true);
        if let Some(mut client_api) = self.client_api.take() {
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut client_api).await.is_err() {
                client_api.abort();
            }
        }
        if let Some(metrics) = self.metrics.take() {
            metrics.abort();
        }
        self.ring.shutdown().await;
        self.runtime.shutdown().await;
        self.transport.shutdown(SHUTDOWN_GRACE).await;
        tracing::info!(node = self.node.0, "rsl-kv server stopped");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_clients.send_replace(true);
        if let Some(task) = self.client_api.take() {
            task.abort();
        }
        if let Some(task) = self.metrics.take() {
            task.abort();
        }
    }
}

fn local_addr(
    what: &'static str,
    listener: &TcpListener,
    configured: SocketAddr,
) -> Result<SocketAddr, ServerError> {
    listener.local_addr().map_err(|source| ServerError::Listen { what, address: configured, source })
}

#[cfg(feature = "tls")]
fn with_tls(
    builder: rsl::transport::GrpcBuilder,
    config: &ServerConfig,
) -> Result<rsl::transport::GrpcBuilder, ServerError> {
    let Some(tls) = &config.tls else { return Ok(builder) };
    let read = |key: &str, path: &Option<PathBuf>| -> Result<Vec<u8>, ServerError> {
        let path = path.as_ref().ok_or_else(|| ServerError::Tls(format!("tls.{key} is missing")))?;
        std::fs::read(path)
            .map_err(|error| ServerError::Tls(format!("reading tls.{key} {}: {error}", path.display())))
    };
    let mut material = rsl::transport::TlsConfig::new(
        read("ca", &tls.ca)?,
        read("cert", &tls.cert)?,
        read("key", &tls.key)?,
    );
    if let Some(name) = &tls.domain_name {
        material = material.with_domain_name(name.clone());
    }
    Ok(builder.tls(material))
}

#[cfg(not(feature = "tls"))]
fn with_tls(
    builder: rsl::transport::GrpcBuilder,
    config: &ServerConfig,
) -> Result<rsl::transport::GrpcBuilder, ServerError> {
    match &config.tls {
        None => Ok(builder),
        Some(_) => Err(ServerError::Tls(
            "TLS files are configured, but this rsl-kv was built without TLS; rebuild with `--features tls`"
                .to_owned(),
        )),
    }
}

/// Opens the configured log store (and checkpoint directory) off the async threads.
async fn open_storage(config: &ServerConfig) -> Result<Storage, ServerError> {
    let dir = config.data_dir.clone();
    match config.log {
        LogBackend::Memory => Ok(Storage::Memory(MemoryStorage::new())),
        LogBackend::File => Ok(Storage::File(FileStorage::new(dir))),
        LogBackend::Pmem => {
            let options = PmemOptions {
                capacity_bytes: config
                    .tuning
                    .pmem_capacity_bytes
                    .unwrap_or(PmemOptions::default().capacity_bytes),
                dax: false,
                log_id: u128::from(config.ring.0),
            };
            let opened = tokio::task::spawn_blocking(move || {
                let (log, durable, report) =
                    PmemLog::open(dir.join("pmem.log"), &options, RecoveryPolicy::TruncateTornTail)
                        .map_err(|error| ServerError::Storage(format!("persistent-memory log: {error}")))?;
                if let Some(cut) = &report.torn_tail {
                    tracing::warn!(
                        offset = cut.offset,
                        bytes = cut.bytes_dropped,
                        "pmem log recovery cut a torn tail"
                    );
                }
                let checkpoints =
                    CheckpointStore::open(dir.join("checkpoints"), &CheckpointOptions::default())
                        .map_err(|error| ServerError::Storage(format!("checkpoints: {error}")))?;
                Ok::<_, ServerError>(Storage::Opened { log: Box::new(log), durable, checkpoints })
            })
            .await
            .map_err(|error| ServerError::Storage(format!("opening the log: {error}")))??;
            Ok(opened)
        }
    }
}

async fn serve_clients(service: KvService, listener: TcpListener, mut stopped: watch::Receiver<bool>) {
    let node = service.node;
    let service = KvServer::new(service)
        .max_decoding_message_size(CLIENT_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(CLIENT_MESSAGE_BYTES_MAX);
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let signal = async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let served = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .serve_with_incoming_shutdown(service, incoming, signal)
        .await;
    if let Err(error) = served {
        tracing::error!(node = node.0, %error, "client API failed");
    }
}

/// The client API of one replica.
#[derive(Debug, Clone)]
struct KvService {
    node: NodeId,
    ring: rsl::Ring,
    runtime: Runtime,
    members: Arc<BTreeMap<NodeId, String>>,
    clients: Arc<BTreeMap<NodeId, String>>,
}

impl KvService {
    /// The refusal of a replica that is not the primary, naming the primary if known.
    fn not_primary(&self, hint: Option<NodeId>, what: &str) -> Status {
        match hint {
            // This replica believes it is (or is about to be) primary but cannot serve yet:
            // the caller should retry here shortly.
            Some(primary) if primary == self.node => {
                Status::unavailable(format!("{what}: primary {} is not ready yet; retry", self.node.0))
            }
            Some(primary) => {
                let mut metadata = MetadataMap::new();
                metadata.insert(PRIMARY_NODE_METADATA, MetadataValue::from(primary.0));
                let address = self.clients.get(&primary);
                if let Some(value) = address.and_then(|a| MetadataValue::try_from(a.as_str()).ok()) {
                    metadata.insert(PRIMARY_ADDRESS_METADATA, value);
                }
                let message = match address {
                    Some(address) => format!("not primary; the primary is node {} at {address}", primary.0),
                    None => format!(
                        "not primary; the primary is node {} (no client address configured)",
                        primary.0
                    ),
                };
                Status::with_metadata(Code::FailedPrecondition, message, metadata)
            }
            None => Status::with_metadata(
                Code::FailedPrecondition,
                "not primary; no primary is known yet",
                MetadataMap::new(),
            ),
        }
    }

    fn replicate_error(&self, error: ReplicateError) -> Status {
        match error {
            ReplicateError::NotPrimary { hint } => self.not_primary(hint, "write refused"),
            ReplicateError::TooLarge { .. } => Status::invalid_argument(error.to_string()),
            ReplicateError::Busy { .. } => Status::resource_exhausted(error.to_string()),
            ReplicateError::Timeout { .. } => Status::deadline_exceeded(error.to_string()),
            ReplicateError::OutcomeUnknown { .. } | ReplicateError::Shutdown { .. } => {
                Status::unavailable(error.to_string())
            }
        }
    }

    /// Replicates a write and decodes the state machine's answer.
    async fn write(&self, write: Write) -> Result<WriteResponse, Status> {
        write.validate().map_err(|error| Status::invalid_argument(error.to_string()))?;
        let answer = self.ring.replicate(write.encode()).await;
        self.write_answer(write.id(), answer)
    }

    /// Decodes the ring's answer to a write.
    fn write_answer(
        &self,
        id: WriteId,
        answer: Result<Bytes, ReplicateError>,
    ) -> Result<WriteResponse, Status> {
        let answer = answer.map_err(|error| self.replicate_error(error))?;
        let response = WriteResponse::decode(&answer)
            .map_err(|error| Status::internal(format!("undecodable state machine answer: {error}")))?;
        write_outcome(id, response)
    }

    /// Serves one batch of a client stream: its writes go to the ring together, packed in
    /// [`WriteBatch`]es (one request each, as large as a write may be), its reads run
    /// concurrently; every operation gets a result.
    async fn serve_batch(&self, batch: pb::OpBatch) -> Vec<pb::OpResult> {
        let mut results = Vec::with_capacity(batch.ops.len());
        let mut packed: Vec<(WriteBatch, Vec<PackedWrite>)> = Vec::new();
        // Linearizable gets go to the ring as one read; fast ones one by one (each names
        // its own slot).
        let mut reads = ReadBatch::new();
        let mut read_ids = Vec::new();
        let mut fast_reads = Vec::new();
        for op in batch.ops {
            let id = op.id;
            let write = match op.op {
                Some(pb::op::Op::Put(put)) => write_id(put.id)
                    .map(|wid| (Write::Put { id: wid, key: put.key, value: put.value }, WriteKind::Put)),
                Some(pb::op::Op::Delete(delete)) => write_id(delete.id)
                    .map(|wid| (Write::Delete { id: wid, key: delete.key }, WriteKind::Delete)),
                Some(pb::op::Op::Cas(cas)) => write_id(cas.id).map(|wid| {
                    let expected = cas.expected_present.then_some(cas.expected);
                    (Write::Cas { id: wid, key: cas.key, expected, value: cas.value }, WriteKind::Cas)
                }),
                Some(pb::op::Op::Get(get)) if get.fast => {
                    fast_reads.push((id, get));
                    continue;
                }
                Some(pb::op::Op::Get(get)) => {
                    match command::check_key(&get.key) {
                        Ok(()) => {
                            reads.push(&Read::Get { key: get.key });
                            read_ids.push(id);
                        }
                        Err(error) => {
                            results.push(op_failed(id, Status::invalid_argument(error.to_string())))
                        }
                    }
                    continue;
                }
                None => Err(Status::invalid_argument(format!("operation {id}: no operation set"))),
            };
            let checked = write.and_then(|(write, kind)| {
                write.validate().map_err(|error| Status::invalid_argument(error.to_string()))?;
                Ok((write, kind))
            });
            match checked {
                Ok((write, kind)) => {
                    let added = WriteBatch::PER_WRITE_BYTES + write.encoded_len();
                    let full = packed
                        .last()
                        .is_none_or(|(batch, _)| batch.encoded_len() + added > WRITE_BATCH_BYTES_MAX);
                    if full {
                        packed.push((WriteBatch::new(), Vec::new()));
                    }
                    let (batch, ids) = packed.last_mut().expect("pushed above");
                    batch.push(&write);
                    ids.push((id, write.id(), kind));
                }
                Err(status) => results.push(op_failed(id, status)),
            }
        }
        let fast_results = join_all(fast_reads.into_iter().map(|(id, get)| async move {
            match self.get_value(get).await {
                Ok(response) => pb::OpResult { id, result: Some(pb::op_result::Result::Get(response)) },
                Err(status) => op_failed(id, status),
            }
        }));
        let (payloads, writes): (Vec<Bytes>, Vec<_>) =
            packed.into_iter().map(|(batch, ids)| (batch.finish(), ids)).unzip();
        let (answers, fast_results, read_results) =
            tokio::join!(self.ring.replicate_many(payloads), fast_results, self.read_batch(reads, read_ids));
        results.extend(fast_results);
        for (ids, answer) in writes.into_iter().zip(answers) {
            match self.batch_answer(ids.len(), answer) {
                Ok(responses) => {
                    for ((id, write_id, kind), response) in ids.into_iter().zip(responses) {
                        let result =
                            write_outcome(write_id, response).and_then(|response| kind.result(response));
                        results.push(match result {
                            Ok(result) => pb::OpResult { id, result: Some(result) },
                            Err(status) => op_failed(id, status),
                        });
                    }
                }
                Err(status) => {
                    results.extend(ids.into_iter().map(|(id, _, _)| op_failed(id, status.clone())))
                }
            }
        }
        results.extend(read_results);
        results
    }

    /// Decodes the ring's answer to a [`WriteBatch`] of `writes` writes: one answer each.
    fn batch_answer(
        &self,
        writes: usize,
        answer: Result<Bytes, ReplicateError>,
    ) -> Result<Vec<WriteResponse>, Status> {
        let answer = answer.map_err(|error| self.replicate_error(error))?;
        let responses = WriteResponse::decode_batch(&answer)
            .map_err(|error| Status::internal(format!("undecodable state machine answer: {error}")))?;
        if responses.len() == writes {
            return Ok(responses);
        }
        match responses.as_slice() {
            // The batch as a whole did not decode (a bug in this server: it encoded it).
            [WriteResponse { outcome: WriteOutcome::Malformed { reason }, .. }] => {
                Err(Status::internal(format!("the state machine refused a write batch: {reason}")))
            }
            _ => Err(Status::internal(format!(
                "the state machine answered {} writes of a batch of {writes}",
                responses.len()
            ))),
        }
    }

    /// Serves a stream message's linearizable gets with one ring read; every get gets a
    /// result.
    async fn read_batch(&self, reads: ReadBatch, ids: Vec<u64>) -> Vec<pb::OpResult> {
        if ids.is_empty() {
            return Vec::new();
        }
        let outcomes = self.ring_read(reads.finish(), None).await.and_then(|answer| {
            let outcomes = ReadOutcome::decode_batch(&answer)
                .map_err(|error| Status::internal(format!("undecodable state machine answer: {error}")))?;
            match outcomes.as_slice() {
                _ if outcomes.len() == ids.len() => Ok(outcomes),
                [ReadOutcome::Malformed { reason }] => {
                    Err(Status::internal(format!("the state machine refused a read batch: {reason}")))
                }
                _ => Err(Status::internal(format!(
                    "the state machine answered {} reads of a batch of {}",
                    outcomes.len(),
                    ids.len()
                ))),
            }
        });
        match outcomes {
            Ok(outcomes) => ids
                .into_iter()
                .zip(outcomes)
                .map(|(id, outcome)| match get_response(outcome) {
                    Ok(response) => pb::OpResult { id, result: Some(pb::op_result::Result::Get(response)) },
                    Err(status) => op_failed(id, status),
                })
                .collect(),
            Err(status) => ids.into_iter().map(|id| op_failed(id, status.clone())).collect(),
        }
    }

    async fn get_value(&self, request: pb::GetRequest) -> Result<pb::GetResponse, Status> {
        command::check_key(&request.key).map_err(|error| Status::invalid_argument(error.to_string()))?;
        let fast = request.fast.then_some(Slot(request.min_slot));
        get_response(self.read(Read::Get { key: request.key }, fast).await?)
    }

    async fn read(&self, read: Read, fast: Option<Slot>) -> Result<ReadOutcome, Status> {
        let answer = self.ring_read(read.encode(), fast).await?;
        match ReadOutcome::decode(&answer) {
            Ok(ReadOutcome::Malformed { reason }) => Err(Status::invalid_argument(reason)),
            Ok(outcome) => Ok(outcome),
            Err(error) => Err(Status::internal(format!("undecodable state machine answer: {error}"))),
        }
    }

    /// Reads through the ring: linearizable, or fast from this replica once it applied
    /// `fast`'s slot.
    async fn ring_read(&self, request: Bytes, fast: Option<Slot>) -> Result<Bytes, Status> {
        match fast {
            None => self.ring.read(request).await.map_err(|error| match error {
                ReadError::NotPrimary { hint, reason } => {
                    self.not_primary(hint, &format!("read refused ({reason})"))
                }
                ReadError::Busy { .. } => Status::resource_exhausted(error.to_string()),
                ReadError::Timeout { .. } => Status::deadline_exceeded(error.to_string()),
                ReadError::Shutdown { .. } => Status::unavailable(error.to_string()),
            }),
            Some(min_slot) => self.ring.read_fast(request, min_slot).await.map_err(|error| match error {
                FastReadError::NotApplied { .. } | FastReadError::Shutdown { .. } => {
                    Status::unavailable(error.to_string())
                }
                FastReadError::Busy { .. } => Status::resource_exhausted(error.to_string()),
            }),
        }
    }
}

/// The answer to a get, or the status for an answer that is an error.
fn get_response(outcome: ReadOutcome) -> Result<pb::GetResponse, Status> {
    match outcome {
        ReadOutcome::Value(Some(value)) => Ok(pb::GetResponse { found: true, value }),
        ReadOutcome::Value(None) => Ok(pb::GetResponse { found: false, value: Bytes::new() }),
        ReadOutcome::Malformed { reason } => Err(Status::invalid_argument(reason)),
        other => Err(Status::internal(format!("unexpected answer to a get: {other:?}"))),
    }
}

/// A stream's write packed in a [`WriteBatch`]: its operation id, its write id, and what to
/// decode its answer as.
type PackedWrite = (u64, WriteId, WriteKind);

/// Which answer a stream's write expects.
#[derive(Clone, Copy, Debug)]
enum WriteKind {
    Put,
    Delete,
    Cas,
}

impl WriteKind {
    fn result(self, response: WriteResponse) -> Result<pb::op_result::Result, Status> {
        let slot = response.slot;
        match (self, response.outcome) {
            (WriteKind::Put, _) => Ok(pb::op_result::Result::Put(pb::PutResponse { slot })),
            (WriteKind::Delete, outcome) => Ok(pb::op_result::Result::Delete(pb::DeleteResponse {
                slot,
                existed: matches!(outcome, WriteOutcome::Deleted { existed: true }),
            })),
            (WriteKind::Cas, WriteOutcome::Cas { swapped, current }) => {
                Ok(pb::op_result::Result::Cas(pb::CasResponse {
                    slot,
                    swapped,
                    present: current.is_some(),
                    current: current.unwrap_or_default(),
                }))
            }
            (WriteKind::Cas, other) => {
                Err(Status::internal(format!("unexpected answer to a compare-and-set: {other:?}")))
            }
        }
    }
}

/// The result of a stream operation that failed with `status`.
fn op_failed(id: u64, status: Status) -> pb::OpResult {
    let metadata = status.metadata();
    let primary_node = metadata
        .get(PRIMARY_NODE_METADATA)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.parse().ok())
        .unwrap_or(0);
    let primary_address = metadata
        .get(PRIMARY_ADDRESS_METADATA)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let error = pb::OpError {
        code: status.code() as u32,
        message: status.message().to_owned(),
        primary_node,
        primary_address,
    };
    pb::OpResult { id, result: Some(pb::op_result::Result::Error(error)) }
}

/// A write's answer, or the status for an answer that is an error.
fn write_outcome(id: WriteId, response: WriteResponse) -> Result<WriteResponse, Status> {
    match &response.outcome {
        WriteOutcome::Stale { newest } => Err(Status::aborted(format!(
            "write {} of client {:#x} is older than its newest write {newest}",
            id.sequence, id.client
        ))),
        WriteOutcome::Malformed { reason } => Err(Status::invalid_argument(reason.clone())),
        _ => Ok(response),
    }
}

fn write_id(id: Option<pb::WriteId>) -> Result<WriteId, Status> {
    let id = id.ok_or_else(|| Status::invalid_argument("id: missing (client and sequence)"))?;
    Ok(WriteId { client: id.client, sequence: id.sequence })
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Primary => "primary",
        Role::Secondary => "secondary",
        Role::Candidate => "candidate",
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
        self.get_value(request.into_inner()).await.map(Response::new)
    }

    type StreamStream = ReceiverStream<Result<pb::ResultBatch, Status>>;

    async fn stream(
        &self,
        request: Request<Streaming<pb::OpBatch>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let mut incoming = request.into_inner();
        let (sender, receiver) = mpsc::channel(STREAM_BATCHES_IN_FLIGHT_MAX);
        let service = self.clone();
        tokio::spawn(async move {
            let in_flight = Arc::new(Semaphore::new(STREAM_BATCHES_IN_FLIGHT_MAX));
            loop {
                let batch = match incoming.message().await {
                    Ok(Some(batch)) => batch,
                    Ok(None) => break,
                    Err(status) => {
                        tracing::debug!(node = service.node.0, %status, "client stream ended");
                        break;
                    }
                };
                if batch.ops.len() > STREAM_BATCH_OPS_MAX {
                    let refusal = Status::invalid_argument(format!(
                        "a stream batch carries at most {STREAM_BATCH_OPS_MAX} operations, got {}",
                        batch.ops.len()
                    ));
                    let _ = sender.send(Err(refusal)).await;
                    break;
                }
                let Ok(permit) = in_flight.clone().acquire_owned().await else { break };
                let (service, sender) = (service.clone(), sender.clone());
                tokio::spawn(async move {
                    let results = service.serve_batch(batch).await;
                    let _ = sender.send(Ok(pb::ResultBatch { results })).await;
                    drop(permit);
                });
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let request = request.into_inner();
        let write = Write::Delete { id: write_id(request.id)?, key: request.key };
        let response = self.write(write).await?;
        let existed = matches!(response.outcome, WriteOutcome::Deleted { existed: true });
        Ok(Response::new(pb::DeleteResponse { slot: response.slot, existed }))
    }

    async fn cas(&self, request: Request<pb::CasRequest>) -> Result<Response<pb::CasResponse>, Status> {
        let request = request.into_inner();
        let expected = request.expected_present.then_some(request.expected);
        let write =
            Write::Cas { id: write_id(request.id)?, key: request.key, expected, value: request.value };
        let response = self.write(write).await?;
        match response.outcome {
            WriteOutcome::Cas { swapped, current } => Ok(Response::new(pb::CasResponse {
                slot: response.slot,
                swapped,
                present: current.is_some(),
                current: current.unwrap_or_default(),
            })),
            other => Err(Status::internal(format!("unexpected answer to a compare-and-set: {other:?}"))),
        }
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let status = self.ring.status().borrow().clone();
        let digest =
            match self.ring.read_fast_within(Read::Digest.encode(), status.applied, DIGEST_WAIT).await {
                Ok(answer) => match ReadOutcome::decode(&answer) {
                    Ok(ReadOutcome::Digest(digest)) => digest,
                    _ => return Err(Status::internal("undecodable digest answer")),
                },
                Err(error) => return Err(Status::unavailable(format!("digest: {error}"))),
            };
        let members = self
            .members
            .iter()
            .map(|(node, address)| pb::Member {
                node: node.0,
                replica_address: address.clone(),
                client_address: self.clients.get(node).cloned().unwrap_or_default(),
            })
            .collect();
        let primary = status.primary.map_or(0, |p| p.0);
        let checkpoints_installed =
            self.ring.statistics().await.map_or(0, |statistics| statistics.runtime.checkpoints_installed);
        Ok(Response::new(pb::StatusResponse {
            node: self.node.0,
            role: role_name(status.role).to_owned(),
            primary,
            primary_address: status.primary.and_then(|p| self.clients.get(&p).cloned()).unwrap_or_default(),
            ballot_round: status.promised.round,
            ballot_node: status.promised.node.0,
            chosen: status.chosen.0,
            applied: status.applied.0,
            log_start: status.log_start.0,
            checkpoint: status.checkpoint.0,
            members,
            digest: digest.crc,
            keys: digest.keys,
            digest_slot: status.applied.0,
            checkpoints_installed,
            configuration: status.configuration.number,
            configuration_members: status.configuration.members.iter().map(|n| n.0).collect(),
            member: status.member,
            configuration_first_slot: status.configuration.first_slot.0,
        }))
    }

    async fn reconfigure(
        &self,
        request: Request<pb::ReconfigureRequest>,
    ) -> Result<Response<pb::ReconfigureResponse>, Status> {
        let mut members: Vec<NodeId> = request.into_inner().members.into_iter().map(NodeId).collect();
        members.sort_unstable();
        // Asking for the members already in force is answered at once (retries are safe).
        let current = self.ring.status().borrow().configuration.clone();
        if current.members == members && self.ring.status().borrow().role == Role::Primary {
            return Ok(Response::new(pb::ReconfigureResponse {
                configuration: current.number,
                members: current.members.iter().map(|n| n.0).collect(),
                first_slot: current.first_slot.0,
            }));
        }
        if let Some(stranger) = members.iter().find(|n| !self.members.contains_key(n)) {
            return Err(Status::invalid_argument(format!(
                "node {} has no replica address in this server's address book (--members)",
                stranger.0
            )));
        }
        match self.ring.change_configuration(members).await {
            Ok(configuration) => Ok(Response::new(pb::ReconfigureResponse {
                configuration: configuration.number,
                members: configuration.members.iter().map(|n| n.0).collect(),
                first_slot: configuration.first_slot.0,
            })),
            Err(ChangeConfigurationError::Refused(ChangeError::NotPrimary { hint })) => {
                Err(self.not_primary(hint, "reconfigure"))
            }
            Err(ChangeConfigurationError::Refused(ChangeError::Relinquishing { target })) => {
                Err(self.not_primary(Some(target), "reconfigure"))
            }
            Err(ChangeConfigurationError::Refused(error @ ChangeError::InProgress { .. })) => {
                Err(Status::aborted(error.to_string()))
            }
            Err(ChangeConfigurationError::Refused(error @ ChangeError::Invalid { .. })) => {
                Err(Status::invalid_argument(error.to_string()))
            }
            Err(
                error @ (ChangeConfigurationError::Interrupted { .. }
                | ChangeConfigurationError::Shutdown { .. }),
            ) => Err(Status::unavailable(error.to_string())),
            Err(error @ ChangeConfigurationError::Timeout { .. }) => {
                Err(Status::deadline_exceeded(error.to_string()))
            }
        }
    }

    type FetchCheckpointStream = ReceiverStream<Result<pb::CheckpointChunk, Status>>;

    async fn fetch_checkpoint(
        &self,
        request: Request<pb::FetchCheckpointRequest>,
    ) -> Result<Response<Self::FetchCheckpointStream>, Status> {
        let request = request.into_inner();
        let asked = CheckpointRequest {
            ring: rsl::RingId(request.ring),
            requester: NodeId(request.requester),
            min_slot: Slot(request.min_slot),
        };
        let mut stream = self.runtime.checkpoint_server().open(asked).await.map_err(transfer_status)?;
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
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}

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
struct GrpcCheckpointFetcher {
    node: NodeId,
    clients: Arc<BTreeMap<NodeId, String>>,
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
