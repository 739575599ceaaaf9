//! The RDMA transport (cargo feature `rdma`).
//!
//! See docs/RDMA.md for the design; in short:
//!
//! - `verbs`: the small verbs interface the protocol is written against;
//! - `emulated`: a provider with the same semantics and no device (shared memory; its
//!   receive queues and completion channels in `emulated/receive.rs`);
//! - `sys`: every unsafe block (registered memory, futexes; libibverbs with `rdma-verbs`);
//! - `ring`: the receive ring's layout, the producer and the consumer;
//! - `archive`: the rkyv message format, validated once and read in place;
//! - `handshake`: the out-of-band connection set-up over TCP, and a checkpoint request's
//!   opening;
//! - `connection`: one direction of one peer link (sender and receiver sides), with the
//!   sleep notices and writes with immediate that wake an idle receiver;
//! - `transport`, `poller` and `config`: [`RdmaTransport`], its poller thread, and
//!   [`RdmaConfig`];
//! - `checkpoint`: checkpoint transfer over the handshake listener;
//! - `stats`: [`RdmaStats`], the ring protocol's counters.

pub mod archive;
mod checkpoint;
mod config;
mod connection;
pub mod emulated;
mod handshake;
mod poller;
mod ring;
mod stats;
#[allow(unsafe_code)]
mod sys;
mod transport;

#[cfg(test)]
mod tests;
pub mod verbs;

pub use config::{RdmaConfig, RdmaConfigError};
pub use handshake::{HandshakeError, Versions};
pub use stats::{RdmaStats, RdmaStatsSnapshot};
pub use transport::{RdmaBuilder, RdmaError, RdmaTransport};

/// Which verbs provider to open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Provider {
    /// The emulated provider (shared memory; no device).
    Emulated(emulated::EmulatedConfig),
    /// libibverbs (needs the `rdma-verbs` feature and a device, or soft-RoCE).
    Verbs {
        /// The device name (`mlx5_0`, `rxe0`); the first device when absent.
        device: Option<String>,
        /// The port (usually 1).
        port: u8,
        /// The GID table index to address with (RoCE; 0 is the link-local address).
        gid_index: u8,
    },
}

/// Opens `provider`'s device. Without a device, the verbs provider says so:
/// "no RDMA device found (ibv_get_device_list returned none)".
pub fn open_device(provider: &Provider) -> Result<std::sync::Arc<dyn verbs::Device>, verbs::VerbsError> {
    match provider {
        Provider::Emulated(config) => {
            Ok(std::sync::Arc::new(emulated::EmulatedDevice::open(config.clone())?))
        }
        #[cfg(feature = "rdma-verbs")]
        Provider::Verbs { device, port, gid_index } => {
            sys::ibverbs::open(device.as_deref(), *port, *gid_index)
        }
        #[cfg(not(feature = "rdma-verbs"))]
        Provider::Verbs { .. } => Err(verbs::VerbsError::Call {
            call: "open a verbs device",
            problem: "this build has no verbs provider; rebuild with the rdma-verbs feature".to_owned(),
        }),
    }
}
