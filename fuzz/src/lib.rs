//! What the fuzz targets run, one module per crate whose decoders read bytes a peer, a
//! client or a disk supplies. Nothing may panic on any input; where an input decodes, what
//! it decodes to is checked (round trips, bounds, agreement between two runs).
//!
//! - [`log`]: `rsl-log`'s record decoder, journal and persistent-memory recovery, checkpoint
//!   loading (targets `record_decode`, `journal_recovery`, `pmem_recovery`,
//!   `checkpoint_load`).
//! - [`transport`]: the replica message decoder of `rsl-transport` (target
//!   `replica_message`), and the checkpoint transfer stream through its decoder into a
//!   verifying receiver (target `checkpoint_stream`).
//! - [`kv`]: `rsl-kv`'s commands and write and read batches run on a state machine, a
//!   client's `Stream` frames through the server's checks, and state machine checkpoints
//!   (targets `kv_command`, `kv_stream_frame`, `kv_checkpoint_load`).
//!
//! [`seeds`] builds each target's seed inputs from real encodings (`fuzz/seeds/`,
//! written by `cargo run --example seeds`).

pub mod kv;
pub mod log;
pub mod seeds;
pub mod transport;
