//! The bytes that go through consensus: writes ([`Write`]) and reads ([`Read`]) as the
//! state machine sees them, and its answers ([`WriteOutcome`], [`ReadOutcome`]).
//!
//! Every encoding starts with a format version byte and a kind byte; strings and byte
//! strings are a `u32` little-endian length followed by the bytes; integers are
//! little-endian fixed width. Decoding never panics: anything malformed (unknown version
//! or kind, a length past the end, trailing bytes, a key that is not UTF-8, sizes over the
//! limits) is a [`DecodeError`] naming the field.

mod batch;
mod codec;
mod read;
mod view;
mod write;

pub use batch::{ReadBatch, WriteBatch};
pub(crate) use codec::Reader;
pub use codec::{check_key, check_value, DecodeError};
pub use read::{Digest, Read, ReadOutcome};
pub use view::{
    encode_write_batch, BatchError, CheckedWriteBatch, WriteKind, WriteOutcomeRef, WriteRef, WriteResponseRef,
};
pub use write::{Write, WriteId, WriteOutcome, WriteResponse};

/// Version byte that starts every encoded command and answer.
pub const FORMAT_VERSION: u8 = 1;
/// Longest key, in bytes of UTF-8.
pub const KEY_BYTES_MAX: usize = 1024;
/// Longest value the encoding takes: 64 MiB. The ring's `request_bytes_max` (the server's
/// `tuning.request_bytes_max`) bounds a whole write; a write larger than a consensus batch
/// ([`WRITE_BATCH_BYTES_MAX`]) travels alone, as a large request with a slot of its own.
pub const VALUE_BYTES_MAX: usize = 64 << 20;
/// Longest value of a write that is packed with others into one consensus batch.
pub const BATCHED_VALUE_BYTES_MAX: usize = 64 << 10;
/// Bound on an encoded write: a key, two values (compare-and-set) and the framing.
pub const WRITE_BYTES_MAX: usize = KEY_BYTES_MAX + 2 * VALUE_BYTES_MAX + 256;

/// Bound on an encoded [`WriteBatch`] of several writes: a server starts a new batch before
/// one would grow past it; a single write larger than this is a batch of its own.
pub const WRITE_BATCH_BYTES_MAX: usize = KEY_BYTES_MAX
    + 2 * BATCHED_VALUE_BYTES_MAX
    + 256
    + WriteBatch::HEADER_BYTES
    + WriteBatch::PER_WRITE_BYTES;
/// Largest encoded answer to one write (a compare-and-set's carries a value; a malformed
/// one a reason).
pub(crate) const WRITE_ANSWER_BYTES_MAX: usize = VALUE_BYTES_MAX + 64 + 4 * KEY_BYTES_MAX;
