//! `rsl-kv`: a replicated key-value service built on rsl.
//!
//! - [`KvStateMachine`] implements [`rsl::StateMachine`]: put, get, delete and
//!   compare-and-set on string keys with byte values, per-client de-duplication of retried
//!   writes by `(client id, sequence)`, and checkpoints of the whole map in a versioned,
//!   length-prefixed, CRC32C-checked format ([`KvStateMachine::save`]).
//! - [`SharedKvStateMachine`] is the same machine behind a reader-writer lock: reads are
//!   served on the callers' tasks while the apply thread executes writes (the server runs
//!   this one).
//! - [`Server`] runs one replica: the rsl ring over the gRPC replica transport with a file,
//!   persistent-memory or memory log, and a gRPC client API (`proto/rsl_kv.proto`): Put,
//!   Get (linearizable, with a chosen [`rsl::ReadConsistency`]: the primary's lease, a read
//!   index, a read index served on a secondary; or a fast read at a minimum slot), Delete,
//!   Cas, Status.
//!   A replica that is not primary refuses with `FAILED_PRECONDITION` and names the
//!   primary's client address in the metadata, so clients redirect. A replica behind a
//!   truncated log fetches a peer's checkpoint over the replica transport, not this API.
//! - [`auth`]: users, roles (`read`, `read-write`, `admin`) and their credentials (bearer
//!   tokens kept as SHA-256 hashes, client certificate names); with `[auth]` configured,
//!   every client call is authenticated and checked against its role before it runs, and
//!   with `[client_tls]` the client port speaks TLS (cargo feature `tls`, on by default).
//!   docs/SECURITY.md says what is protected and how to set it up.
//! - [`Client`] follows those redirects and retries transient failures within bounds; it
//!   connects as [`connection`] says (TLS, a bearer token). [`Client::write_batch`] sends
//!   writes together on the `Stream` RPC, by default encoded whole ([`Wire::Batch`]): one
//!   [`command::WriteBatch`] that the server checks in place ([`command::CheckedWriteBatch`])
//!   and replicates as the very buffer received, which the state machine executes in place
//!   ([`command::WriteRef`]); the answers come back as one encoded list, read in place
//!   ([`command::WriteResponseRef`]).
//! - [`load`] is the closed-loop workload behind `rsl-kv load`.
//!
//! Two binaries: `rsl-kv-server` (flags and a TOML file, see [`config`]) and the CLI
//! `rsl-kv` (`put`, `get`, `delete`, `cas`, `status`, `load`, `hash-token`).
//!
//! # Example
//!
//! The state machine on its own: every replica runs the same writes in the same order.
//!
//! ```
//! use rsl_kv::command::{Read, ReadOutcome, Write, WriteId, WriteOutcome, WriteResponse};
//! use rsl_kv::KvStateMachine;
//!
//! let mut machine = KvStateMachine::new();
//! let id = WriteId { client: 7, sequence: 1 };
//! let put = Write::Put { id, key: "greeting".into(), value: "hello".into() }.encode();
//! let first = machine.execute_write(1, &put);
//! // A retry of the same (client, sequence) is answered, not executed again.
//! assert_eq!(machine.execute_write(2, &put), first);
//! assert_eq!(WriteResponse::decode(&first)?.outcome, WriteOutcome::Put);
//!
//! let get = Read::Get { key: "greeting".into() }.encode();
//! assert_eq!(ReadOutcome::decode(&machine.execute_read(&get))?, ReadOutcome::Value(Some("hello".into())));
//!
//! // Checkpoints round-trip, and a damaged one is refused.
//! let mut checkpoint = Vec::new();
//! machine.save(2, &mut checkpoint)?;
//! let (slot, restored) = KvStateMachine::load(&mut checkpoint.as_slice(), 1000)?;
//! assert_eq!((slot, &restored), (2, &machine));
//! checkpoint[30] ^= 1;
//! assert!(KvStateMachine::load(&mut checkpoint.as_slice(), 1000).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A three-replica ring in one process, with a client, is in `tests/cluster.rs`.

// One audited exception: `server_cli::disable_transparent_huge_pages` (a prctl).
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod bootstrap;
pub mod client;
pub mod command;
pub mod config;
pub mod connection;
#[doc(hidden)]
pub mod fuzzing;
pub mod grow;
pub mod join;
pub mod load;
pub mod machine;
pub mod server;
pub mod server_cli;
pub mod shared;
pub mod snapshot;

/// Types generated from `proto/rsl_kv.proto` by prost and tonic.
#[allow(missing_docs, missing_debug_implementations, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("rsl.kv.v1");
}

/// The subset of etcd's v3 key-value API in `proto/etcd_kv.proto` (client only), which the
/// load generator speaks to compare rsl-kv with etcd on one workload.
#[allow(missing_docs, missing_debug_implementations, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod etcd_proto {
    tonic::include_proto!("etcdserverpb");
}

pub use client::{BatchWrite, CasResult, Client, ClientError, ClientOptions, Wire};
pub use config::{ConfigError, ConfigFile, LogBackend, ServerConfig};
pub use connection::{ClientSecurity, ClientTls, Token};
pub use machine::{CheckpointFormatError, KvStateMachine};
pub use server::{Listeners, Server, ServerError};
pub use shared::SharedKvStateMachine;

/// gRPC metadata key of a `NotPrimary` refusal: the primary's node id.
pub const PRIMARY_NODE_METADATA: &str = "rsl-kv-primary-node";
/// gRPC metadata key of a `NotPrimary` refusal: the primary's client address.
pub const PRIMARY_ADDRESS_METADATA: &str = "rsl-kv-primary-address";
/// Metadata of a write refused because the ring is closed: the slot of its last write.
pub const RING_CLOSED_METADATA: &str = "rsl-kv-ring-closed";
