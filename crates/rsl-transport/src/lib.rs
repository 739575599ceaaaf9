//! `rsl-transport`: how replicas of rsl rings talk to each other.
//!
//! The runtime sees one object-safe seam, [`Transport`], held as `Arc<dyn Transport>`:
//!
//! - **Outbound**: [`Transport::send`] takes a node and a batch of [`rsl_core::Message`]s
//!   and never blocks. The gRPC endpoint queues them on that peer's bounded queue (full:
//!   [`QueueFullPolicy`], drop-oldest by default); the in-memory endpoint delivers at once.
//!   A message too large for a frame travels in chunks ([`chunk`]) up to the endpoint's
//!   chunked-message limit; a larger one is refused with [`SendError::TooLarge`].
//! - **Inbound**: each endpoint is built together with a `tokio::sync::mpsc::Receiver` of
//!   [`Inbound`] messages from every peer and every ring.
//! - **Rings**: every message carries its ring id, so any number of rings share one endpoint
//!   and one connection per peer. The endpoint enforces a ring -> allowed members table,
//!   [`Membership`], that the runtime keeps current: a message from a node outside its ring's
//!   members is dropped and counted, never delivered.
//! - **Addresses**: [`Transport::set_peer_address`] registers where a node listens.
//! - **Counters**: [`TransportStats`] (atomics) with a plain [`TransportStatsSnapshot`].
//! - **Checkpoints**: [`Transport::serve_checkpoints`] hands the endpoint a
//!   [`CheckpointSource`] and returns a [`CheckpointFetcher`] (see [`checkpoint`]); the gRPC
//!   endpoint serves checkpoints on its replica port, to members of the ring only.
//! - **Identity**: with mutual TLS a caller is the node its certificate names
//!   (`rsl://node/<id>`, see `TlsConfig`); without TLS, the node it claims to be.
//!
//! Delivery is best effort, as Paxos assumes: messages may be lost, are never altered, and
//! are never duplicated by the transport.
//!
//! Three implementations:
//!
//! - [`MemoryNetwork`] / [`MemoryEndpoint`]: endpoints in one process, with faults for tests
//!   (one-way link drops, seeded random loss, partitions and healing).
//! - [`GrpcTransport`]: tonic over HTTP/2, one long-lived client-streaming call per direction
//!   per peer carrying [`proto::Batch`] frames; reconnects with jittered exponential backoff;
//!   limits on frame size, batch length, queues and windows ([`GrpcConfig`]); optional mutual
//!   TLS with rustls behind the `tls` feature. The wire format is
//!   `proto/rsl_transport.proto`, compiled at build time by protox (no `protoc` needed);
//!   [`codec`] converts and validates it.
//! - `rdma::RdmaTransport` (cargo feature `rdma`): one-sided RDMA WRITEs into per-peer
//!   receive rings over reliable-connected queue pairs, with rkyv messages validated in
//!   place; on an emulated provider (shared memory, no device) or, with `rdma-verbs`, on
//!   libibverbs. See docs/RDMA.md.
//!
//! # Example
//!
//! ```
//! use rsl_core::{Ballot, Message, MessageBody, NodeId, RingId, Slot, Time};
//! use rsl_transport::{MemoryNetwork, Transport};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let network = MemoryNetwork::new(7);
//! let (a, _a_inbound) = network.endpoint(NodeId(1)).unwrap();
//! let (b, mut b_inbound) = network.endpoint(NodeId(2)).unwrap();
//! // Node 2 accepts messages for ring 1 from its members only.
//! b.membership().set_members(RingId(1), [NodeId(1), NodeId(2)]);
//!
//! let heartbeat = Message {
//!     ring: RingId(1),
//!     from: NodeId(1),
//!     to: NodeId(2),
//!     configuration: 1,
//!     body: MessageBody::Heartbeat { ballot: Ballot::new(1, NodeId(1)), chosen: Slot(5), sent_at: Time(0) },
//! };
//! a.send(NodeId(2), vec![heartbeat.clone()]).unwrap();
//! let inbound = b_inbound.recv().await.unwrap();
//! assert_eq!((inbound.from, inbound.message), (NodeId(1), heartbeat.clone()));
//!
//! // Cut the link: the message is lost and counted.
//! network.drop_link(NodeId(1), NodeId(2));
//! a.send(NodeId(2), vec![heartbeat]).unwrap();
//! assert!(b_inbound.try_recv().is_err());
//! assert_eq!(a.stats().snapshot().dropped_by_fault, 1);
//! # }
//! ```

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod checkpoint;
pub mod chunk;
pub mod codec;
mod gate;
mod grpc;
mod membership;
mod memory;
mod queue;
#[cfg(feature = "rdma")]
pub mod rdma;
mod stats;
mod transport;

/// Types generated from `proto/rsl_transport.proto` by prost and tonic.
#[allow(missing_docs, missing_debug_implementations, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("rsl.transport.v1");
}

pub use checkpoint::{
    CheckpointFetcher, CheckpointRequest, CheckpointSource, CheckpointStream, TransferError,
};
pub use codec::{PROTOCOL_VERSION, PROTOCOL_VERSION_MIN};
#[cfg(feature = "tls")]
pub use grpc::{certificate_node, node_uri, CertificateIdentityError, TlsConfig, NODE_URI_PREFIX};
pub use grpc::{
    BindError, ConfigError, GrpcBuilder, GrpcConfig, GrpcTransport, FRAME_BYTES_MAX, FRAME_BYTES_MAX_DEFAULT,
    FRAME_BYTES_MIN,
};
pub use membership::{Admission, Membership};
pub use memory::{AttachError, MemoryConfig, MemoryEndpoint, MemoryNetwork};
pub use stats::{TransportStats, TransportStatsSnapshot};
pub use transport::{AddressError, Inbound, InboundSink, PeerAddress, QueueFullPolicy, SendError, Transport};
