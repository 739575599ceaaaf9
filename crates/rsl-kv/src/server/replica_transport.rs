//! The replica transport a server starts: gRPC between the ring's replicas (with mutual TLS
//! when configured and built in), or the RDMA transport (`--transport rdma` on a verbs
//! device, `rdma-emu` on the emulated provider; feature `rdma`), with frames sized for the
//! largest message the ring may send and every peer's address.

#[cfg(feature = "tls")]
use std::path::PathBuf;
use std::sync::Arc;

use rsl::transport::{GrpcBuilder, GrpcConfig, GrpcTransport, Inbound, Transport};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::ServerError;
use crate::config::{ReplicaTransportKind, ServerConfig};

/// The transport a server runs between replicas.
#[derive(Clone, Debug)]
pub(super) enum ReplicaTransport {
    Grpc(Arc<GrpcTransport>),
    #[cfg(feature = "rdma")]
    Rdma(Arc<rsl_transport::rdma::RdmaTransport>),
}

impl ReplicaTransport {
    /// The transport as the runtime holds it.
    pub(super) fn shared(&self) -> Arc<dyn Transport> {
        match self {
            ReplicaTransport::Grpc(transport) => transport.clone(),
            #[cfg(feature = "rdma")]
            ReplicaTransport::Rdma(transport) => transport.clone(),
        }
    }

    /// Closes every connection (gRPC lets in-flight calls finish within `grace`).
    pub(super) async fn shutdown(&self, grace: std::time::Duration) {
        match self {
            ReplicaTransport::Grpc(transport) => transport.shutdown(grace).await,
            #[cfg(feature = "rdma")]
            ReplicaTransport::Rdma(transport) => {
                let transport = Arc::clone(transport);
                // Joins the poller thread: off the async threads.
                let _ = tokio::task::spawn_blocking(move || transport.shutdown()).await;
            }
        }
    }
}

/// Starts the configured replica transport on `listener` with every other member's
/// address.
pub(super) async fn start(
    config: &ServerConfig,
    listener: TcpListener,
) -> Result<(ReplicaTransport, mpsc::Receiver<Inbound>), ServerError> {
    let (transport, inbound) = match config.transport {
        ReplicaTransportKind::Grpc => {
            let (transport, inbound) = start_grpc(config, listener).await?;
            (ReplicaTransport::Grpc(transport), inbound)
        }
        kind => start_rdma(config, listener, kind)?,
    };
    let shared = transport.shared();
    for (&member, address) in &config.members {
        if member != config.node {
            shared
                .set_peer_address(member, address.as_str().into())
                .map_err(|error| ServerError::PeerAddress { node: member.0, problem: error.to_string() })?;
        }
    }
    Ok((transport, inbound))
}

/// The RDMA transport: rings sized for the largest message the ring may send.
#[cfg(feature = "rdma")]
fn start_rdma(
    config: &ServerConfig,
    listener: TcpListener,
    kind: ReplicaTransportKind,
) -> Result<(ReplicaTransport, mpsc::Receiver<Inbound>), ServerError> {
    use rsl_transport::rdma::{emulated::EmulatedConfig, open_device, Provider, RdmaConfig, RdmaTransport};
    let failed = |problem: String| ServerError::Rdma { kind, problem };
    let provider = match kind {
        ReplicaTransportKind::RdmaEmu => Provider::Emulated(EmulatedConfig::default()),
        _ => Provider::Verbs { device: None, port: 1, gid_index: 0 },
    };
    let device = open_device(&provider).map_err(|error| failed(error.to_string()))?;
    let defaults = RdmaConfig::default();
    // An archived message is at most its core size plus a little per request and per
    // message; the slack covers both with room to spare.
    let message = config.ring_config().message_bytes_max;
    let frame_bytes_max = (message + message / 8 + 4096).max(defaults.frame_bytes_max);
    let rdma = RdmaConfig {
        ring_bytes: (2 * frame_bytes_max).next_power_of_two(),
        frame_bytes_max,
        peer_queue_bytes_max: defaults.peer_queue_bytes_max.max(frame_bytes_max),
        seed: config.node.0,
        protocol_version: config.tuning.protocol_version.unwrap_or(defaults.protocol_version),
        ..defaults
    };
    let listener = listener.into_std().map_err(|error| failed(error.to_string()))?;
    let (transport, inbound) = RdmaTransport::builder(config.node)
        .config(rdma)
        .device(device)
        .serve(listener)
        .map_err(|error| failed(error.to_string()))?;
    Ok((ReplicaTransport::Rdma(Arc::new(transport)), inbound))
}

/// Without the `rdma` feature there is no RDMA transport to start.
#[cfg(not(feature = "rdma"))]
fn start_rdma(
    _config: &ServerConfig,
    _listener: TcpListener,
    kind: ReplicaTransportKind,
) -> Result<(ReplicaTransport, mpsc::Receiver<Inbound>), ServerError> {
    Err(ServerError::Rdma { kind, problem: "this rsl-kv was built without the rdma feature".to_owned() })
}

/// The gRPC transport, with frames sized for the largest message the ring may send.
async fn start_grpc(
    config: &ServerConfig,
    listener: TcpListener,
) -> Result<(Arc<GrpcTransport>, mpsc::Receiver<Inbound>), ServerError> {
    let node = config.node;
    // Frames must carry the largest message the ring may send (a promise full of batches).
    let frame_bytes = config.ring_config().message_bytes_max + rsl::transport::codec::FRAME_OVERHEAD_BYTES;
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
        protocol_version: config.tuning.protocol_version.unwrap_or(defaults.protocol_version),
        ..defaults
    };
    let builder = GrpcTransport::builder(node).config(grpc);
    let builder = with_tls(builder, config)?;
    let (transport, inbound) = builder.serve(listener).await?;
    Ok((Arc::new(transport), inbound))
}

/// `builder` with the configured TLS material.
#[cfg(feature = "tls")]
fn with_tls(builder: GrpcBuilder, config: &ServerConfig) -> Result<GrpcBuilder, ServerError> {
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

/// `builder` as it is: configured TLS files are an error in a build without TLS.
#[cfg(not(feature = "tls"))]
fn with_tls(builder: GrpcBuilder, config: &ServerConfig) -> Result<GrpcBuilder, ServerError> {
    match &config.tls {
        None => Ok(builder),
        Some(_) => Err(ServerError::Tls(
            "TLS files are configured, but this rsl-kv was built without TLS; rebuild with `--features tls`"
                .to_owned(),
        )),
    }
}
