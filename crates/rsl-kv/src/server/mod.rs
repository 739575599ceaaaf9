//! [`Server`]: one replica of the key-value ring: the rsl ring over the replica transport
//! (gRPC, or RDMA with the `rdma` feature), the client API, and metrics. This file starts
//! and stops them; each concern has a file of its own:
//!
//! - `replica_transport.rs`: the transport between replicas (gRPC or RDMA, frame sizes,
//!   peers, TLS), which also carries checkpoint transfer (the runtime serves and fetches
//!   checkpoints over it, never over the client port);
//! - `storage.rs`: opening the configured log store;
//! - `api.rs`: the client API's RPC handlers, over `service.rs`, what a replica does with
//!   the ring for a client (writes, reads, status, reconfiguration);
//! - `stream.rs`: the `Stream` RPC's batching of operations into ring requests;
//! - `answers.rs`: how the ring's errors and the state machine's outcomes become gRPC
//!   statuses and responses (including the redirect to the primary);
//! - `guard.rs`: the gate every client call passes (authentication and roles);
//! - `controls.rs`: the operator controls (forced election, timing, re-seed, exclusive
//!   and last writes) and the replica health `Status` reports;
//! - `client_tls.rs`: TLS on the client port and the names in client certificates.

mod answers;
mod api;
mod client_tls;
mod controls;
mod guard;
mod replica_transport;
mod service;
mod storage;
pub(crate) mod stream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rsl::{NodeId, Ring, RingOptions, Runtime, RuntimeOptions, Transport};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{LogBackend, ServerConfig};
use service::KvService;

/// How long the client API and the transport get to finish in-flight calls at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// How long a promotion waits for its learner to catch up before it is refused: less than
/// a client's attempt (3 s by default).
const LEARNER_PROMOTION_WAIT: Duration = Duration::from_secs(2);
/// Smallest bound on a client API message; the bound is `tuning.request_bytes_max` plus
/// 1 MiB when that is more (a stream frame of many small operations needs this much).
const CLIENT_MESSAGE_BYTES_MIN: usize = 4 << 20;

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
    /// Joining through a contact (`join_via`), the contact did not give its address book.
    #[error("cannot join through {contact}: {problem}")]
    Contact {
        /// The contact's client API address.
        contact: String,
        /// What went wrong.
        problem: String,
    },
    /// The replica transport refused to start.
    #[error("replica transport: {0}")]
    Transport(#[from] rsl::transport::BindError),
    /// The RDMA replica transport could not start (no device, a build without it, ...).
    #[error("replica transport {kind}: {problem}")]
    Rdma {
        /// `rdma` or `rdma-emu`.
        kind: crate::config::ReplicaTransportKind,
        /// What went wrong.
        problem: String,
    },
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
    /// TLS files (of the replica transport or the client port) could not be read, or
    /// TLS is configured in a build without it.
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
    transport: replica_transport::ReplicaTransport,
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
        // A promotion waits for its learner less than a client's attempt lasts, so the
        // client hears the refusal (and `rsl-kv reconfigure` asks again) rather than a timeout.
        let options =
            RingOptions { learner_promotion_wait: LEARNER_PROMOTION_WAIT, ..RingOptions::default() };
        Server::start_on(config, listeners, options).await
    }

    /// Starts on listeners already bound (their addresses override the configured
    /// `client_listen` and `replica_listen`), with the given runtime options per ring
    /// (`tuning.apply_on`, when set, replaces their `apply_on`).
    pub async fn start_on(
        mut config: ServerConfig,
        listeners: Listeners,
        mut ring_options: RingOptions,
    ) -> Result<Server, ServerError> {
        let node = config.node;
        // `tuning.apply_on`, when set, decides where the state machine runs.
        ring_options.apply_on = config.tuning.apply_on.unwrap_or(ring_options.apply_on);
        if let Some(contact) = config.join_via.clone() {
            crate::join::learn_address_book(&mut config, &contact).await?;
        }
        if config.log != LogBackend::Memory {
            std::fs::create_dir_all(&config.data_dir)
                .map_err(|source| ServerError::DataDir { path: config.data_dir.clone(), source })?;
        }
        let client_addr = local_addr("the client API", &listeners.client, config.client_listen)?;
        let replica_addr = local_addr("the replica transport", &listeners.replica, config.replica_listen)?;
        // Bound before anything starts, so a taken port fails the start with nothing to undo.
        let metrics_listener = match config.metrics_port {
            Some(port) => Some(bind_metrics(port).await?),
            None => None,
        };

        // The client API's TLS and users, checked before anything starts.
        let client_api = api::ClientApi::new(&config)?;

        // The replica transport, with every peer's address.
        let (transport, inbound) = replica_transport::start(&config, listeners.replica).await?;

        // The runtime serves and fetches checkpoints over the replica transport, under its
        // mutual TLS and membership checks.
        let shared: Arc<dyn Transport> = transport.shared();
        let runtime = Runtime::new(shared, inbound, RuntimeOptions::default())?;

        let ring = match start_ring(&config, &runtime, ring_options).await {
            Ok(ring) => ring,
            Err(error) => {
                // Nothing may outlive a failed start: the runtime and the transport go too.
                runtime.shutdown().await;
                transport.shutdown(SHUTDOWN_GRACE).await;
                return Err(error);
            }
        };

        let service = KvService::new(node, ring.clone(), config.members.clone(), config.clients.clone());
        let (stop_clients, stopped) = watch::channel(false);
        let client_api = tokio::spawn(client_api.serve(service, listeners.client, stopped));

        let readiness = rsl::ReadinessOptions { lag_slots_max: config.ready_lag_slots_max };
        let metrics = metrics_listener.map(|listener| serve_metrics(listener, runtime.clone(), readiness));
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

    /// The replica transport's counters (frames, drops, refusals such as
    /// `rejected_version`).
    pub fn transport_statistics(&self) -> rsl::transport::TransportStatsSnapshot {
        self.transport.shared().stats().snapshot()
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

/// Decides from the data directory whether this replica bootstraps the ring or joins it,
/// opens its storage and starts the ring on `runtime`.
async fn start_ring(
    config: &ServerConfig,
    runtime: &Runtime,
    options: RingOptions,
) -> Result<Ring, ServerError> {
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
    let storage = storage::open_storage(config).await?;
    let ring = rsl::Ring::builder(ring_config)
        .state_machine(crate::SharedKvStateMachine::default())
        .storage(storage)
        .runtime(runtime)
        .options(options)
        .start()
        .await?;
    Ok(ring)
}

/// Binds the metrics endpoint on `port` of every interface.
async fn bind_metrics(port: u16) -> Result<TcpListener, ServerError> {
    let address = SocketAddr::from(([0, 0, 0, 0], port));
    TcpListener::bind(address).await.map_err(|source| ServerError::Listen {
        what: "metrics",
        address,
        source,
    })
}

/// Serves the runtime's metrics (Prometheus text) and the `/healthz` and `/readyz` probes
/// on `listener`.
fn serve_metrics(
    listener: TcpListener,
    runtime: Runtime,
    readiness: rsl::ReadinessOptions,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(error) = rsl::serve_metrics_with(runtime, listener, readiness).await {
            tracing::warn!(%error, "metrics endpoint stopped");
        }
    })
}

fn local_addr(
    what: &'static str,
    listener: &TcpListener,
    configured: SocketAddr,
) -> Result<SocketAddr, ServerError> {
    listener.local_addr().map_err(|source| ServerError::Listen { what, address: configured, source })
}
