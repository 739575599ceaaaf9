//! The RDMA transport (cargo feature `rdma`).
//!
//! See docs/RDMA.md for the design; in short:
//!
//! - `verbs`: the small verbs interface the protocol is written against;
//! - `emulated`: a provider with the same semantics and no device (shared memory);
//! - `sys`: every unsafe block (registered memory; libibverbs with `rdma-verbs`);
//! - `ring`: the receive ring's layout, the producer and the consumer;
//! - `archive`: the rkyv message format, validated once and read in place.

pub mod archive;
mod connection;
pub mod emulated;
mod handshake;
mod ring;
mod stats;
#[allow(unsafe_code)]
mod sys;
mod transport;

#[cfg(test)]
mod tests;
pub mod verbs;

pub use handshake::HandshakeError;
pub use stats::{RdmaStats, RdmaStatsSnapshot};
pub use transport::{RdmaBuilder, RdmaConfig, RdmaConfigError, RdmaError, RdmaTransport};
