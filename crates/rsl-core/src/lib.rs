//! `rsl-core`: a sans-IO, pipelined multi-Paxos replica.
//!
//! The core is a plain struct, [`Replica`]: it reads no clock, draws no entropy and does
//! no I/O. Inputs arrive through `handle_*` methods (a message, a timeout, a proposal),
//! completions through `on_*` methods (persisted up to a ticket, applied up to a slot,
//! checkpoint saved), and outputs leave through [`Replica::poll_action`] and
//! [`Replica::poll_timeout`]. A runtime (or the simulator) owns the network, the disk and
//! the clock, and feeds the replica. The protocol is RSL's simplified multi-Paxos with up
//! to `pipeline_depth` slots in flight; see `docs/PROTOCOL.md`.
//!
//! ```
//! use rsl_core::{Action, Config, DurableState, NodeId, Replica, RingId, Time};
//!
//! // A single-member ring elects itself and chooses what it proposes.
//! let config = Config::new(RingId(1), NodeId(1), vec![NodeId(1)]);
//! let mut replica = Replica::new(config, DurableState::default(), Time(0)).unwrap();
//! let mut now = Time(0);
//! let mut applied = Vec::new();
//! for _ in 0..100 {
//!     if let Some(deadline) = replica.poll_timeout() {
//!         now = now.max(deadline);
//!         replica.handle_timeout(now);
//!     }
//!     if replica.role() == rsl_core::Role::Primary && applied.is_empty() {
//!         let request = rsl_core::Request { id: Default::default(), payload: "hello".into() };
//!         replica.handle_propose(now, request).unwrap();
//!     }
//!     while let Some(action) = replica.poll_action() {
//!         match action {
//!             Action::Persist(write) => replica.on_persisted(now, write.ticket),
//!             Action::Apply { slot, value } => {
//!                 applied.push(value);
//!                 replica.on_applied(slot);
//!             }
//!             _ => {}
//!         }
//!     }
//!     if !applied.is_empty() {
//!         break;
//!     }
//! }
//! assert_eq!(applied.len(), 1);
//! ```

#![forbid(unsafe_code)]

#[macro_use]
pub mod contracts;
mod action;
mod config;
mod message;
pub mod quorum;
mod replica;
mod rng;
mod time;
mod types;

pub use action::{
    Action, ChangeError, CheckpointNowError, MessageError, PersistRequest, ProposeError, PurgeLogError,
    ReadError, RelinquishError, Role, Statistics, Status,
};
pub use config::{
    Config, ConfigError, BATCH_BYTES_MAX, BATCH_REQUESTS_MAX, CHECKPOINT_COPY_ROUNDS_MAX, FETCH_WINDOW_MAX,
    LARGE_BYTES_IN_FLIGHT_MAX, MEMBERS_MAX, PIPELINE_DEPTH_MAX, REQUEST_BYTES_MAX,
};
pub use message::{Message, MessageBody, ReadIndexRefusal, RejectReason};
pub use replica::{
    DurableState, HealthReport, MemberHealth, MembershipChange, Mutation, Promotion, PromotionError, Replica,
    ReseedError, Timer, Timing,
};
pub use rng::{mix64, SplitMix64};
pub use time::{Micros, Time};
pub use types::{
    Ballot, Configuration, MemberAddress, NodeId, Proposal, ReadId, Request, RequestId, RingId, Slot, Value,
    ADDRESS_BYTES_MAX, CONFIGURATION_NUMBER_MAX, CONFIGURATION_ROUND_BITS, REQUEST_OVERHEAD_BYTES,
};
