//! The replica transport a server starts: gRPC between the ring's replicas, with frames
//! sized for the largest message the ring may send, every peer's address, and mutual TLS
//! when configured (and built in).

#[cfg(feature = "tls")]
use std::path::PathBuf;
use std::sync::Arc;

use rsl::transport::{GrpcBuilder, GrpcConfig, GrpcTransport, Inbound, Transport};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::ServerError;
use crate::config::ServerConfig;

/// Starts the replica transport on `listener` with every other member's address.
pub(super) async fn start(
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
        ..defaults
    };
    let builder = GrpcTransport::builder(node).config(grpc);
    let builder = with_tls(builder, config)?;
    let (transport, inbound) = builder.serve(listener).await?;
    let transport = Arc::new(transport);
    for (&member, address) in &config.members {
        if member != node {
            transport
                .set_peer_address(member, address.as_str().into())
                .map_err(|error| ServerError::PeerAddress { node: member.0, problem: error.to_string() })?;
        }
    }
    Ok((transport, inbound))
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
