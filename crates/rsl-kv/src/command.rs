//! The bytes that go through consensus: writes ([`Write`]) and reads ([`Read`]) as the
//! state machine sees them, and its answers ([`WriteOutcome`], [`ReadOutcome`]).
//!
//! Every encoding starts with a format version byte and a kind byte; strings and byte
//! strings are a `u32` little-endian length followed by the bytes; integers are
//! little-endian fixed width. Decoding never panics: anything malformed (unknown version
//! or kind, a length past the end, trailing bytes, a key that is not UTF-8, sizes over the
//! limits) is a [`DecodeError`] naming the field.

use bytes::{BufMut, Bytes, BytesMut};

/// Version byte that starts every encoded command and answer.
pub const FORMAT_VERSION: u8 = 1;
/// Longest key, in bytes of UTF-8.
pub const KEY_BYTES_MAX: usize = 1024;
/// Longest value. A write travels inside one consensus batch, so the server sizes its
/// batches for the largest write (a compare-and-set carries two values and a key):
/// [`WRITE_BYTES_MAX`].
pub const VALUE_BYTES_MAX: usize = 64 << 10;
/// Bound on an encoded write: a key, two values (compare-and-set) and the framing.
pub const WRITE_BYTES_MAX: usize = KEY_BYTES_MAX + 2 * VALUE_BYTES_MAX + 256;

/// Bound on an encoded [`WriteBatch`]: a server starts a new batch before one would grow
/// past it, so every batch fits where the largest single write does.
pub const WRITE_BATCH_BYTES_MAX: usize =
    WRITE_BYTES_MAX + WriteBatch::HEADER_BYTES + WriteBatch::PER_WRITE_BYTES;

/// Identifies a write for de-duplication: a client session and its sequence number.
///
/// A client picks a random non-zero `client` and numbers its writes 1, 2, 3, ... with at
/// most one outstanding at a time; a retry reuses the number. The state machine executes
/// each `(client, sequence)` at most once and answers a retry with the first answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WriteId {
    /// The client session.
    pub client: u64,
    /// The write's number within the session, from 1.
    pub sequence: u64,
}

/// A state-changing command: replicated, executed on every replica in slot order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    /// Sets `key` to `value`.
    Put {
        /// For de-duplication.
        id: WriteId,
        /// The key.
        key: String,
        /// The value.
        value: Bytes,
    },
    /// Removes `key`.
    Delete {
        /// For de-duplication.
        id: WriteId,
        /// The key.
        key: String,
    },
    /// Sets `key` to `value` only if it currently holds `expected` (`None`: absent).
    Cas {
        /// For de-duplication.
        id: WriteId,
        /// The key.
        key: String,
        /// The value the key must hold.
        expected: Option<Bytes>,
        /// The new value.
        value: Bytes,
    },
}

impl Write {
    /// The write's de-duplication id.
    pub fn id(&self) -> WriteId {
        match self {
            Write::Put { id, .. } | Write::Delete { id, .. } | Write::Cas { id, .. } => *id,
        }
    }

    /// The key written.
    pub fn key(&self) -> &str {
        match self {
            Write::Put { key, .. } | Write::Delete { key, .. } | Write::Cas { key, .. } => key,
        }
    }

    /// Checks the limits that decoding enforces, so a caller can refuse a bad write before
    /// it is replicated.
    pub fn validate(&self) -> Result<(), DecodeError> {
        check_key(self.key())?;
        if self.id().client == 0 {
            return Err(DecodeError::new("write.id.client", "must not be 0"));
        }
        if self.id().sequence == 0 {
            return Err(DecodeError::new("write.id.sequence", "must not be 0"));
        }
        match self {
            Write::Put { value, .. } => check_value("put.value", value),
            Write::Delete { .. } => Ok(()),
            Write::Cas { expected, value, .. } => {
                if let Some(expected) = expected {
                    check_value("cas.expected", expected)?;
                }
                check_value("cas.value", value)
            }
        }
    }

    /// The wire form.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(64);
        self.encode_into(&mut out);
        out.freeze()
    }

    /// Appends the wire form to `out`.
    pub fn encode_into(&self, out: &mut BytesMut) {
        out.put_u8(FORMAT_VERSION);
        let (kind, id) = match self {
            Write::Put { id, .. } => (KIND_PUT, id),
            Write::Delete { id, .. } => (KIND_DELETE, id),
            Write::Cas { id, .. } => (KIND_CAS, id),
        };
        out.put_u8(kind);
        out.put_u64_le(id.client);
        out.put_u64_le(id.sequence);
        put_bytes(out, self.key().as_bytes());
        match self {
            Write::Put { value, .. } => put_bytes(out, value),
            Write::Delete { .. } => {}
            Write::Cas { expected, value, .. } => {
                put_option(out, expected.as_deref());
                put_bytes(out, value);
            }
        }
    }

    /// Bytes of the wire form.
    pub fn encoded_len(&self) -> usize {
        let values = match self {
            Write::Put { value, .. } => 4 + value.len(),
            Write::Delete { .. } => 0,
            Write::Cas { expected, value, .. } => {
                1 + expected.as_ref().map_or(0, |e| 4 + e.len()) + 4 + value.len()
            }
        };
        2 + 16 + 4 + self.key().len() + values
    }

    /// Parses the wire form.
    pub fn decode(bytes: &[u8]) -> Result<Write, DecodeError> {
        let mut reader = Reader::new(bytes);
        reader.version("write")?;
        let kind = reader.u8("write.kind")?;
        let id =
            WriteId { client: reader.u64("write.id.client")?, sequence: reader.u64("write.id.sequence")? };
        let write = match kind {
            KIND_PUT => {
                let key = reader.key()?;
                let value = reader.value("put.value")?;
                Write::Put { id, key, value }
            }
            KIND_DELETE => Write::Delete { id, key: reader.key()? },
            KIND_CAS => {
                let key = reader.key()?;
                let expected = if reader.flag("cas.expected.present")? {
                    Some(reader.value("cas.expected")?)
                } else {
                    None
                };
                let value = reader.value("cas.value")?;
                Write::Cas { id, key, expected, value }
            }
            other => return Err(DecodeError::new("write.kind", format!("unknown kind {other}"))),
        };
        reader.end("write")?;
        write.validate()?;
        Ok(write)
    }
}

/// Several writes that execute in one slot, in order, each with its own [`WriteId`] and
/// answer: how a server hands the writes of one client message to the ring as a single
/// request, so consensus, the log and the apply step handle one request instead of many.
///
/// Wire form: version, kind 4, count `u32`, then per write its length `u32` and its
/// encoding. The answer is a [`WriteResponse`] list in the same order
/// ([`WriteResponse::encode_batch`]).
#[derive(Debug)]
pub struct WriteBatch(Framed);

impl Default for WriteBatch {
    fn default() -> Self {
        WriteBatch::new()
    }
}

impl WriteBatch {
    /// Bytes of a batch holding no writes.
    pub const HEADER_BYTES: usize = FRAMED_HEADER_BYTES;
    /// Bytes a write adds to a batch beyond its own encoding.
    pub const PER_WRITE_BYTES: usize = FRAMED_PART_BYTES;

    /// An empty batch.
    pub fn new() -> WriteBatch {
        WriteBatch::with_capacity(256)
    }

    /// An empty batch with room for `bytes` of encoded writes.
    pub fn with_capacity(bytes: usize) -> WriteBatch {
        WriteBatch(Framed::new(KIND_BATCH, bytes))
    }

    /// Appends a write (the caller validated it).
    pub fn push(&mut self, write: &Write) {
        self.0.push_with(|out| write.encode_into(out));
    }

    /// Writes in the batch.
    pub fn len(&self) -> usize {
        self.0.count as usize
    }

    /// Whether the batch holds no write.
    pub fn is_empty(&self) -> bool {
        self.0.count == 0
    }

    /// Bytes of the wire form so far.
    pub fn encoded_len(&self) -> usize {
        self.0.out.len()
    }

    /// The wire form.
    pub fn finish(self) -> Bytes {
        self.0.finish()
    }

    /// Whether `bytes` is a batch (its first two bytes say so); anything else is decoded
    /// as a single [`Write`].
    pub fn is_batch(bytes: &[u8]) -> bool {
        is_framed(bytes, KIND_BATCH)
    }

    /// Splits the wire form into the encodings of its writes (each still to be decoded by
    /// [`Write::decode`]). Errors name the write and the field.
    pub fn split(bytes: &[u8]) -> Result<Vec<&[u8]>, DecodeError> {
        split_framed(bytes, KIND_BATCH, &WRITE_BATCH_FIELDS, WRITE_BYTES_MAX)
    }
}

/// Several reads served together, in order: how a server hands the linearizable reads of
/// one client message to the ring as a single read. Wire form as [`WriteBatch`]'s, with
/// kind 12; the answer is a [`ReadOutcome`] list ([`ReadOutcome::encode_batch`]).
#[derive(Debug)]
pub struct ReadBatch(Framed);

impl Default for ReadBatch {
    fn default() -> Self {
        ReadBatch::new()
    }
}

impl ReadBatch {
    /// An empty batch.
    pub fn new() -> ReadBatch {
        ReadBatch(Framed::new(KIND_READ_BATCH, 256))
    }

    /// Appends a read.
    pub fn push(&mut self, read: &Read) {
        self.0.push_with(|out| read.encode_into(out));
    }

    /// Reads in the batch.
    pub fn len(&self) -> usize {
        self.0.count as usize
    }

    /// Whether the batch holds no read.
    pub fn is_empty(&self) -> bool {
        self.0.count == 0
    }

    /// The wire form.
    pub fn finish(self) -> Bytes {
        self.0.finish()
    }

    /// Whether `bytes` is a read batch.
    pub fn is_batch(bytes: &[u8]) -> bool {
        is_framed(bytes, KIND_READ_BATCH)
    }

    /// Splits the wire form into the encodings of its reads.
    pub fn split(bytes: &[u8]) -> Result<Vec<&[u8]>, DecodeError> {
        split_framed(bytes, KIND_READ_BATCH, &READ_BATCH_FIELDS, KEY_BYTES_MAX + 16)
    }
}

/// Bytes before the parts of a framed list: version, kind, count.
const FRAMED_HEADER_BYTES: usize = 2 + 4;
/// Bytes before each part: its length.
const FRAMED_PART_BYTES: usize = 4;

/// A list of length-prefixed parts after a version byte, a kind byte and a count: the
/// shape of write and read batches and of their answers.
#[derive(Debug)]
struct Framed {
    out: BytesMut,
    count: u32,
}

impl Framed {
    fn new(kind: u8, capacity: usize) -> Framed {
        let mut out = BytesMut::with_capacity(FRAMED_HEADER_BYTES + capacity);
        out.put_u8(FORMAT_VERSION);
        out.put_u8(kind);
        out.put_u32_le(0);
        Framed { out, count: 0 }
    }

    /// Appends a part that `encode` writes.
    fn push_with(&mut self, encode: impl FnOnce(&mut BytesMut)) {
        let at = self.out.len();
        self.out.put_u32_le(0);
        encode(&mut self.out);
        let len = (self.out.len() - at - FRAMED_PART_BYTES) as u32;
        self.out[at..at + FRAMED_PART_BYTES].copy_from_slice(&len.to_le_bytes());
        self.count += 1;
    }

    fn finish(mut self) -> Bytes {
        self.out[2..FRAMED_HEADER_BYTES].copy_from_slice(&self.count.to_le_bytes());
        self.out.freeze()
    }
}

/// Names of a framed list's fields in decode errors.
struct FramedFields {
    whole: &'static str,
    kind: &'static str,
    count: &'static str,
    part: &'static str,
}

const WRITE_BATCH_FIELDS: FramedFields = FramedFields {
    whole: "write_batch",
    kind: "write_batch.kind",
    count: "write_batch.count",
    part: "write_batch.write",
};
const READ_BATCH_FIELDS: FramedFields = FramedFields {
    whole: "read_batch",
    kind: "read_batch.kind",
    count: "read_batch.count",
    part: "read_batch.read",
};
const WRITE_ANSWERS_FIELDS: FramedFields = FramedFields {
    whole: "write_batch_response",
    kind: "write_batch_response.kind",
    count: "write_batch_response.count",
    part: "write_batch_response.answer",
};
const READ_ANSWERS_FIELDS: FramedFields = FramedFields {
    whole: "read_batch_response",
    kind: "read_batch_response.kind",
    count: "read_batch_response.count",
    part: "read_batch_response.answer",
};

fn is_framed(bytes: &[u8], kind: u8) -> bool {
    bytes.len() >= 2 && bytes[0] == FORMAT_VERSION && bytes[1] == kind
}

/// Splits a framed list into its parts, each at most `part_max` bytes. A count beyond what
/// the bytes can hold is refused before anything is allocated for it.
fn split_framed<'a>(
    bytes: &'a [u8],
    kind: u8,
    fields: &FramedFields,
    part_max: usize,
) -> Result<Vec<&'a [u8]>, DecodeError> {
    let mut reader = Reader::new(bytes);
    reader.version(fields.whole)?;
    let found = reader.u8(fields.kind)?;
    if found != kind {
        return Err(DecodeError::new(fields.kind, format!("kind {found}, expected {kind}")));
    }
    let count = reader.u32(fields.count)? as usize;
    if count > reader.remaining() / FRAMED_PART_BYTES {
        return Err(DecodeError::new(
            fields.count,
            format!("{count} parts cannot fit in {} bytes", reader.remaining()),
        ));
    }
    let mut parts = Vec::with_capacity(count);
    for _ in 0..count {
        parts.push(reader.bytes(fields.part, part_max)?);
    }
    reader.end(fields.whole)?;
    Ok(parts)
}

/// A read-only command, served by [`crate::KvStateMachine`]'s `read`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Read {
    /// The value of `key`.
    Get {
        /// The key.
        key: String,
    },
    /// A digest of the whole map, to compare replicas.
    Digest,
}

impl Read {
    /// The wire form.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(16);
        self.encode_into(&mut out);
        out.freeze()
    }

    /// Appends the wire form to `out`.
    pub fn encode_into(&self, out: &mut BytesMut) {
        out.put_u8(FORMAT_VERSION);
        match self {
            Read::Get { key } => {
                out.put_u8(KIND_GET);
                put_bytes(out, key.as_bytes());
            }
            Read::Digest => out.put_u8(KIND_DIGEST),
        }
    }

    /// Parses the wire form.
    pub fn decode(bytes: &[u8]) -> Result<Read, DecodeError> {
        let mut reader = Reader::new(bytes);
        reader.version("read")?;
        let read = match reader.u8("read.kind")? {
            KIND_GET => Read::Get { key: reader.key()? },
            KIND_DIGEST => Read::Digest,
            other => return Err(DecodeError::new("read.kind", format!("unknown kind {other}"))),
        };
        reader.end("read")?;
        Ok(read)
    }
}

/// What executing a [`Write`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// A put took effect.
    Put,
    /// A delete took effect; whether the key existed.
    Deleted {
        /// The key existed before.
        existed: bool,
    },
    /// A compare-and-set ran.
    Cas {
        /// The key held the expected value, and now holds the new one.
        swapped: bool,
        /// The key's value after the call.
        current: Option<Bytes>,
    },
    /// The write's sequence number is older than the newest executed for its client (and
    /// is not that newest one, whose answer would have been repeated): it was not executed.
    Stale {
        /// The newest sequence number executed for the client.
        newest: u64,
    },
    /// The request bytes did not decode; nothing changed.
    Malformed {
        /// Why.
        reason: String,
    },
}

/// The state machine's answer to a write: the outcome and the slot of the first execution
/// (a retried duplicate gets the original slot).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteResponse {
    /// The slot the write was executed in.
    pub slot: u64,
    /// What it did.
    pub outcome: WriteOutcome,
}

impl WriteResponse {
    /// The wire form.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(32);
        self.encode_into(&mut out);
        out.freeze()
    }

    /// Appends the wire form to `out`.
    pub fn encode_into(&self, out: &mut BytesMut) {
        out.put_u8(FORMAT_VERSION);
        let kind = match &self.outcome {
            WriteOutcome::Put => OUTCOME_PUT,
            WriteOutcome::Deleted { .. } => OUTCOME_DELETED,
            WriteOutcome::Cas { .. } => OUTCOME_CAS,
            WriteOutcome::Stale { .. } => OUTCOME_STALE,
            WriteOutcome::Malformed { .. } => OUTCOME_MALFORMED,
        };
        out.put_u8(kind);
        out.put_u64_le(self.slot);
        match &self.outcome {
            WriteOutcome::Put => {}
            WriteOutcome::Deleted { existed } => out.put_u8(u8::from(*existed)),
            WriteOutcome::Cas { swapped, current } => {
                out.put_u8(u8::from(*swapped));
                put_option(out, current.as_deref());
            }
            WriteOutcome::Stale { newest } => out.put_u64_le(*newest),
            WriteOutcome::Malformed { reason } => put_bytes(out, reason.as_bytes()),
        }
    }

    /// The answer to a [`WriteBatch`]: its writes' answers, in order.
    pub fn encode_batch(responses: &[WriteResponse]) -> Bytes {
        let mut framed = Framed::new(OUTCOME_BATCH, responses.len() * 24);
        for response in responses {
            framed.push_with(|out| response.encode_into(out));
        }
        framed.finish()
    }

    /// Parses the answer to a [`WriteBatch`]. A batch that did not decode at all is
    /// answered with a single response (`Malformed`), returned as a list of one.
    pub fn decode_batch(bytes: &[u8]) -> Result<Vec<WriteResponse>, DecodeError> {
        if !is_framed(bytes, OUTCOME_BATCH) {
            return WriteResponse::decode(bytes).map(|response| vec![response]);
        }
        split_framed(bytes, OUTCOME_BATCH, &WRITE_ANSWERS_FIELDS, WRITE_ANSWER_BYTES_MAX)?
            .into_iter()
            .map(WriteResponse::decode)
            .collect()
    }

    /// Parses the wire form.
    pub fn decode(bytes: &[u8]) -> Result<WriteResponse, DecodeError> {
        let mut reader = Reader::new(bytes);
        reader.version("write response")?;
        let kind = reader.u8("write_response.kind")?;
        let slot = reader.u64("write_response.slot")?;
        let outcome = match kind {
            OUTCOME_PUT => WriteOutcome::Put,
            OUTCOME_DELETED => WriteOutcome::Deleted { existed: reader.flag("deleted.existed")? },
            OUTCOME_CAS => {
                let swapped = reader.flag("cas.swapped")?;
                let current =
                    if reader.flag("cas.present")? { Some(reader.value("cas.current")?) } else { None };
                WriteOutcome::Cas { swapped, current }
            }
            OUTCOME_STALE => WriteOutcome::Stale { newest: reader.u64("stale.newest")? },
            OUTCOME_MALFORMED => {
                let reason = reader.bytes("malformed.reason", KEY_BYTES_MAX * 4)?;
                WriteOutcome::Malformed { reason: String::from_utf8_lossy(reason).into_owned() }
            }
            other => return Err(DecodeError::new("write_response.kind", format!("unknown kind {other}"))),
        };
        reader.end("write response")?;
        Ok(WriteResponse { slot, outcome })
    }
}

/// The answer to a [`Read`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// The key's value, if present.
    Value(Option<Bytes>),
    /// A digest of the map.
    Digest(Digest),
    /// The request bytes did not decode.
    Malformed {
        /// Why.
        reason: String,
    },
}

/// A digest of the whole map: equal maps have equal digests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Digest {
    /// CRC32C over every entry in key order (each as length-prefixed key and value).
    pub crc: u32,
    /// Number of keys.
    pub keys: u64,
}

impl ReadOutcome {
    /// The wire form.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(16);
        self.encode_into(&mut out);
        out.freeze()
    }

    /// The answer to a [`ReadBatch`]: its reads' answers, in order.
    pub fn encode_batch(outcomes: &[ReadOutcome]) -> Bytes {
        let mut framed = Framed::new(OUTCOME_READ_BATCH, outcomes.len() * 80);
        for outcome in outcomes {
            framed.push_with(|out| outcome.encode_into(out));
        }
        framed.finish()
    }

    /// Parses the answer to a [`ReadBatch`]. A batch that did not decode at all is
    /// answered with a single outcome (`Malformed`), returned as a list of one.
    pub fn decode_batch(bytes: &[u8]) -> Result<Vec<ReadOutcome>, DecodeError> {
        if !is_framed(bytes, OUTCOME_READ_BATCH) {
            return ReadOutcome::decode(bytes).map(|outcome| vec![outcome]);
        }
        split_framed(bytes, OUTCOME_READ_BATCH, &READ_ANSWERS_FIELDS, WRITE_ANSWER_BYTES_MAX)?
            .into_iter()
            .map(ReadOutcome::decode)
            .collect()
    }

    /// Appends the wire form to `out`.
    pub fn encode_into(&self, out: &mut BytesMut) {
        out.put_u8(FORMAT_VERSION);
        match self {
            ReadOutcome::Value(value) => {
                out.put_u8(OUTCOME_VALUE);
                put_option(out, value.as_deref());
            }
            ReadOutcome::Digest(digest) => {
                out.put_u8(OUTCOME_DIGEST);
                out.put_u32_le(digest.crc);
                out.put_u64_le(digest.keys);
            }
            ReadOutcome::Malformed { reason } => {
                out.put_u8(OUTCOME_MALFORMED);
                put_bytes(out, reason.as_bytes());
            }
        }
    }

    /// Parses the wire form.
    pub fn decode(bytes: &[u8]) -> Result<ReadOutcome, DecodeError> {
        let mut reader = Reader::new(bytes);
        reader.version("read response")?;
        let outcome = match reader.u8("read_response.kind")? {
            OUTCOME_VALUE => ReadOutcome::Value(if reader.flag("value.present")? {
                Some(reader.value("value")?)
            } else {
                None
            }),
            OUTCOME_DIGEST => ReadOutcome::Digest(Digest {
                crc: reader.u32("digest.crc")?,
                keys: reader.u64("digest.keys")?,
            }),
            OUTCOME_MALFORMED => {
                let reason = reader.bytes("malformed.reason", KEY_BYTES_MAX * 4)?;
                ReadOutcome::Malformed { reason: String::from_utf8_lossy(reason).into_owned() }
            }
            other => return Err(DecodeError::new("read_response.kind", format!("unknown kind {other}"))),
        };
        reader.end("read response")?;
        Ok(outcome)
    }
}

/// Bytes that do not decode: which field, and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed {field}: {problem}")]
pub struct DecodeError {
    /// The field, e.g. `put.value`.
    pub field: &'static str,
    /// What was expected and what was found.
    pub problem: String,
}

impl DecodeError {
    pub(crate) fn new(field: &'static str, problem: impl Into<String>) -> DecodeError {
        DecodeError { field, problem: problem.into() }
    }
}

/// Checks a key against the limits: UTF-8 is guaranteed by `&str`; non-empty and short.
pub fn check_key(key: &str) -> Result<(), DecodeError> {
    if key.is_empty() {
        return Err(DecodeError::new("key", "must not be empty"));
    }
    if key.len() > KEY_BYTES_MAX {
        return Err(DecodeError::new("key", format!("{} bytes, at most {KEY_BYTES_MAX}", key.len())));
    }
    Ok(())
}

/// Checks a value against [`VALUE_BYTES_MAX`].
pub fn check_value(field: &'static str, value: &[u8]) -> Result<(), DecodeError> {
    if value.len() > VALUE_BYTES_MAX {
        return Err(DecodeError::new(field, format!("{} bytes, at most {VALUE_BYTES_MAX}", value.len())));
    }
    Ok(())
}

const KIND_PUT: u8 = 1;
const KIND_DELETE: u8 = 2;
const KIND_CAS: u8 = 3;
const KIND_BATCH: u8 = 4;
const KIND_GET: u8 = 10;
const KIND_DIGEST: u8 = 11;
const KIND_READ_BATCH: u8 = 12;

const OUTCOME_PUT: u8 = 1;
const OUTCOME_DELETED: u8 = 2;
const OUTCOME_CAS: u8 = 3;
const OUTCOME_STALE: u8 = 4;
const OUTCOME_VALUE: u8 = 5;
const OUTCOME_DIGEST: u8 = 6;
const OUTCOME_MALFORMED: u8 = 7;
const OUTCOME_BATCH: u8 = 8;
const OUTCOME_READ_BATCH: u8 = 9;
/// Largest encoded answer to one write (a compare-and-set's carries a value; a malformed
/// one a reason).
pub(crate) const WRITE_ANSWER_BYTES_MAX: usize = VALUE_BYTES_MAX + 64 + 4 * KEY_BYTES_MAX;

fn put_bytes(out: &mut BytesMut, bytes: &[u8]) {
    // Every caller passes a key, a value or a reason, all far below u32::MAX.
    out.put_u32_le(u32::try_from(bytes.len()).unwrap_or(u32::MAX));
    out.put_slice(bytes);
}

fn put_option(out: &mut BytesMut, bytes: Option<&[u8]>) {
    match bytes {
        Some(bytes) => {
            out.put_u8(1);
            put_bytes(out, bytes);
        }
        None => out.put_u8(0),
    }
}

/// A bounds-checked cursor over encoded bytes.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, at: 0 }
    }

    fn take(&mut self, field: &'static str, len: usize) -> Result<&'a [u8], DecodeError> {
        let left = self.bytes.len() - self.at;
        if len > left {
            return Err(DecodeError::new(
                field,
                format!("needs {len} bytes at offset {}, {left} left", self.at),
            ));
        }
        let slice = &self.bytes[self.at..self.at + len];
        self.at += len;
        Ok(slice)
    }

    fn version(&mut self, what: &'static str) -> Result<(), DecodeError> {
        let version = self.u8(what)?;
        if version != FORMAT_VERSION {
            return Err(DecodeError::new(
                what,
                format!("format version {version}, expected {FORMAT_VERSION}"),
            ));
        }
        Ok(())
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(field, 1)?[0])
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let bytes = self.take(field, 4)?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        let bytes = self.take(field, 8)?;
        let mut word = [0u8; 8];
        word.copy_from_slice(bytes);
        Ok(u64::from_le_bytes(word))
    }

    fn flag(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(DecodeError::new(field, format!("flag byte {other}, expected 0 or 1"))),
        }
    }

    pub(crate) fn bytes(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        let len = self.u32(field)? as usize;
        if len > max {
            return Err(DecodeError::new(field, format!("length {len} exceeds the limit of {max}")));
        }
        self.take(field, len)
    }

    pub(crate) fn key(&mut self) -> Result<String, DecodeError> {
        let bytes = self.bytes("key", KEY_BYTES_MAX)?;
        let key = std::str::from_utf8(bytes)
            .map_err(|error| DecodeError::new("key", format!("not UTF-8: {error}")))?
            .to_owned();
        check_key(&key)?;
        Ok(key)
    }

    pub(crate) fn value(&mut self, field: &'static str) -> Result<Bytes, DecodeError> {
        Ok(Bytes::copy_from_slice(self.bytes(field, VALUE_BYTES_MAX)?))
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    pub(crate) fn end(&self, what: &'static str) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(DecodeError::new(what, format!("{extra} trailing bytes"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> WriteId {
        WriteId { client: 7, sequence: 3 }
    }

    #[test]
    fn writes_round_trip() {
        let writes = [
            Write::Put { id: id(), key: "k".into(), value: Bytes::from_static(b"v") },
            Write::Delete { id: id(), key: "ключ".into() },
            Write::Cas { id: id(), key: "k".into(), expected: None, value: Bytes::from_static(b"") },
            Write::Cas {
                id: id(),
                key: "k".into(),
                expected: Some(Bytes::from_static(b"old")),
                value: Bytes::from_static(b"new"),
            },
        ];
        for write in writes {
            assert_eq!(Write::decode(&write.encode()), Ok(write.clone()), "{write:?}");
        }
    }

    #[test]
    fn responses_round_trip() {
        let outcomes = [
            WriteOutcome::Put,
            WriteOutcome::Deleted { existed: true },
            WriteOutcome::Cas { swapped: false, current: Some(Bytes::from_static(b"x")) },
            WriteOutcome::Cas { swapped: true, current: None },
            WriteOutcome::Stale { newest: 9 },
            WriteOutcome::Malformed { reason: "bad".into() },
        ];
        for outcome in outcomes {
            let response = WriteResponse { slot: 42, outcome };
            assert_eq!(WriteResponse::decode(&response.encode()), Ok(response.clone()));
        }
        for read in [Read::Get { key: "a".into() }, Read::Digest] {
            assert_eq!(Read::decode(&read.encode()), Ok(read.clone()));
        }
        for outcome in [
            ReadOutcome::Value(None),
            ReadOutcome::Value(Some(Bytes::from_static(b"v"))),
            ReadOutcome::Digest(Digest { crc: 5, keys: 6 }),
        ] {
            assert_eq!(ReadOutcome::decode(&outcome.encode()), Ok(outcome.clone()));
        }
    }

    #[test]
    fn every_truncation_and_bad_byte_is_an_error() {
        let write = Write::Cas {
            id: id(),
            key: "key".into(),
            expected: Some(Bytes::from_static(b"old")),
            value: Bytes::from_static(b"new"),
        }
        .encode();
        for len in 0..write.len() {
            assert!(Write::decode(&write[..len]).is_err(), "prefix of {len} bytes decoded");
        }
        let mut trailing = write.to_vec();
        trailing.push(0);
        assert_eq!(Write::decode(&trailing).unwrap_err().problem, "1 trailing bytes");
        // Flip every byte in turn: decoding may succeed (a different valid write) but must
        // never panic.
        for at in 0..write.len() {
            let mut bytes = write.to_vec();
            bytes[at] ^= 0xff;
            let _ = Write::decode(&bytes);
        }
    }

    fn batch_of(writes: &[Write]) -> Bytes {
        let mut batch = WriteBatch::new();
        for write in writes {
            batch.push(write);
        }
        assert_eq!(batch.len(), writes.len());
        batch.finish()
    }

    #[test]
    fn write_batches_round_trip_and_refuse_damage() {
        let writes = vec![
            Write::Put { id: id(), key: "k".into(), value: Bytes::from_static(b"v") },
            Write::Delete { id: WriteId { client: 8, sequence: 1 }, key: "ключ".into() },
            Write::Cas { id: id(), key: "k".into(), expected: None, value: Bytes::from_static(b"") },
        ];
        for write in &writes {
            assert_eq!(write.encoded_len(), write.encode().len(), "{write:?}");
        }
        let bytes = batch_of(&writes);
        assert!(WriteBatch::is_batch(&bytes));
        assert!(!WriteBatch::is_batch(&writes[0].encode()));
        let expected_len = WriteBatch::HEADER_BYTES
            + writes.iter().map(|w| WriteBatch::PER_WRITE_BYTES + w.encoded_len()).sum::<usize>();
        assert_eq!(bytes.len(), expected_len);
        let split = WriteBatch::split(&bytes).expect("a valid batch");
        let decoded: Vec<Write> = split.iter().map(|w| Write::decode(w).expect("a valid write")).collect();
        assert_eq!(decoded, writes);
        assert_eq!(WriteBatch::split(&batch_of(&[])).expect("empty is valid").len(), 0);
        for len in 0..bytes.len() {
            assert!(WriteBatch::split(&bytes[..len]).is_err(), "prefix of {len} bytes split");
        }
        let mut trailing = bytes.to_vec();
        trailing.push(0);
        assert_eq!(WriteBatch::split(&trailing).unwrap_err().field, "write_batch");
        // A count far beyond what the bytes can hold is refused before allocating.
        let mut lying = bytes.to_vec();
        lying[2..6].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(WriteBatch::split(&lying).unwrap_err().field, "write_batch.count");
        // Flipping any byte never panics.
        for at in 0..bytes.len() {
            let mut damaged = bytes.to_vec();
            damaged[at] ^= 0xff;
            if let Ok(parts) = WriteBatch::split(&damaged) {
                for part in parts {
                    let _ = Write::decode(part);
                }
            }
        }
    }

    #[test]
    fn read_batches_round_trip_and_refuse_damage() {
        let reads = vec![Read::Get { key: "a".into() }, Read::Digest, Read::Get { key: "ключ".into() }];
        let mut batch = ReadBatch::new();
        for read in &reads {
            batch.push(read);
        }
        assert_eq!(batch.len(), 3);
        let bytes = batch.finish();
        assert!(ReadBatch::is_batch(&bytes) && !WriteBatch::is_batch(&bytes));
        assert!(!ReadBatch::is_batch(&reads[0].encode()));
        let decoded: Vec<Read> =
            ReadBatch::split(&bytes).unwrap().iter().map(|r| Read::decode(r).unwrap()).collect();
        assert_eq!(decoded, reads);
        for len in 0..bytes.len() {
            assert!(ReadBatch::split(&bytes[..len]).is_err(), "prefix of {len} bytes split");
        }
        // A write batch is not a read batch.
        assert_eq!(ReadBatch::split(&WriteBatch::new().finish()).unwrap_err().field, "read_batch.kind");
        let outcomes = vec![
            ReadOutcome::Value(Some(Bytes::from_static(b"v"))),
            ReadOutcome::Digest(Digest { crc: 1, keys: 2 }),
            ReadOutcome::Value(None),
        ];
        let answer = ReadOutcome::encode_batch(&outcomes);
        assert_eq!(ReadOutcome::decode_batch(&answer), Ok(outcomes));
        let single = ReadOutcome::Malformed { reason: "bad".into() };
        assert_eq!(ReadOutcome::decode_batch(&single.encode()), Ok(vec![single]));
        for len in 2..answer.len() {
            assert!(ReadOutcome::decode_batch(&answer[..len]).is_err(), "prefix of {len} bytes decoded");
        }
    }

    #[test]
    fn batch_answers_round_trip() {
        let responses = vec![
            WriteResponse { slot: 3, outcome: WriteOutcome::Put },
            WriteResponse { slot: 3, outcome: WriteOutcome::Stale { newest: 4 } },
            WriteResponse {
                slot: 1,
                outcome: WriteOutcome::Cas { swapped: true, current: Some(Bytes::from_static(b"x")) },
            },
        ];
        let bytes = WriteResponse::encode_batch(&responses);
        assert_eq!(WriteResponse::decode_batch(&bytes), Ok(responses.clone()));
        // A plain answer (a batch refused as a whole) reads as a list of one.
        let single = WriteResponse { slot: 9, outcome: WriteOutcome::Malformed { reason: "bad".into() } };
        assert_eq!(WriteResponse::decode_batch(&single.encode()), Ok(vec![single]));
        for len in 2..bytes.len() {
            assert!(WriteResponse::decode_batch(&bytes[..len]).is_err(), "prefix of {len} bytes decoded");
        }
    }

    #[test]
    fn bad_fields_are_named() {
        let mut bytes = Write::Put { id: id(), key: "k".into(), value: Bytes::new() }.encode().to_vec();
        bytes[0] = 9;
        assert_eq!(Write::decode(&bytes).unwrap_err().field, "write");
        bytes[0] = FORMAT_VERSION;
        bytes[1] = 99;
        assert_eq!(Write::decode(&bytes).unwrap_err().field, "write.kind");
        // A key that is not UTF-8.
        let mut bad_key = vec![FORMAT_VERSION, KIND_DELETE];
        bad_key.extend_from_slice(&1u64.to_le_bytes());
        bad_key.extend_from_slice(&1u64.to_le_bytes());
        bad_key.extend_from_slice(&2u32.to_le_bytes());
        bad_key.extend_from_slice(&[0xc3, 0x28]);
        let error = Write::decode(&bad_key).unwrap_err();
        assert_eq!(error.field, "key");
        assert!(error.problem.contains("UTF-8"), "{error}");
        // Limits.
        let empty = Write::Delete { id: id(), key: String::new() };
        assert_eq!(empty.validate().unwrap_err().field, "key");
        let huge = Write::Put { id: id(), key: "k".into(), value: Bytes::from(vec![0; VALUE_BYTES_MAX + 1]) };
        assert_eq!(huge.validate().unwrap_err().field, "put.value");
        let anonymous = Write::Delete { id: WriteId { client: 0, sequence: 1 }, key: "k".into() };
        assert_eq!(anonymous.validate().unwrap_err().field, "write.id.client");
    }
}
