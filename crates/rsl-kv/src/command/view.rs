//! Borrowed views of the wire forms: a write ([`WriteRef`]) and a write's answer
//! ([`WriteResponseRef`]) read in place, with `&str` keys and `&[u8]` values pointing into
//! the encoded bytes, and [`CheckedWriteBatch`], a client's whole encoded [`WriteBatch`]
//! checked once (every write, every field, the batch limits) without building owned values.
//!
//! This is how a write batch travels without copies: the client encodes it, the server
//! checks it here and hands the very same buffer to the ring (consensus, the log and the
//! transport share it), the state machine executes it from [`WriteRef`]s and copies only
//! what it stores, and the client reads the answer list through [`WriteResponseRef`]s.
//! The owned types ([`Write`], [`WriteResponse`]) decode through these views, so both
//! apply exactly the same checks.

use bytes::{BufMut, Bytes, BytesMut};

use super::batch::{self, WriteBatch};
use super::codec::{
    put_bytes, put_option, Reader, KIND_CAS, KIND_DELETE, KIND_PUT, OUTCOME_BATCH, OUTCOME_CAS,
    OUTCOME_DELETED, OUTCOME_MALFORMED, OUTCOME_PUT, OUTCOME_STALE,
};
use super::{
    DecodeError, Write, WriteId, WriteOutcome, WriteResponse, FORMAT_VERSION, KEY_BYTES_MAX,
    WRITE_BATCH_BYTES_MAX,
};

/// Which of the three writes an encoded write is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WriteKind {
    /// [`Write::Put`].
    Put,
    /// [`Write::Delete`].
    Delete,
    /// [`Write::Cas`].
    Cas,
}

/// A [`Write`] read in place: the key and values borrow the encoded bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteRef<'a> {
    /// Sets `key` to `value`.
    Put {
        /// For de-duplication.
        id: WriteId,
        /// The key.
        key: &'a str,
        /// The value.
        value: &'a [u8],
    },
    /// Removes `key`.
    Delete {
        /// For de-duplication.
        id: WriteId,
        /// The key.
        key: &'a str,
    },
    /// Sets `key` to `value` only if it currently holds `expected` (`None`: absent).
    Cas {
        /// For de-duplication.
        id: WriteId,
        /// The key.
        key: &'a str,
        /// The value the key must hold.
        expected: Option<&'a [u8]>,
        /// The new value.
        value: &'a [u8],
    },
}

impl<'a> WriteRef<'a> {
    /// Reads an encoded write in place, with every check [`Write::decode`] makes (version,
    /// kind, lengths, trailing bytes, a non-empty UTF-8 key within the limit, a non-zero
    /// write id, values within the limit).
    pub fn decode(bytes: &'a [u8]) -> Result<WriteRef<'a>, DecodeError> {
        let mut reader = Reader::new(bytes);
        reader.version("write")?;
        let kind = reader.u8("write.kind")?;
        let id =
            WriteId { client: reader.u64("write.id.client")?, sequence: reader.u64("write.id.sequence")? };
        let write = match kind {
            KIND_PUT => {
                let key = reader.key_ref()?;
                WriteRef::Put { id, key, value: reader.value_ref("put.value")? }
            }
            KIND_DELETE => WriteRef::Delete { id, key: reader.key_ref()? },
            KIND_CAS => {
                let key = reader.key_ref()?;
                let expected = if reader.flag("cas.expected.present")? {
                    Some(reader.value_ref("cas.expected")?)
                } else {
                    None
                };
                WriteRef::Cas { id, key, expected, value: reader.value_ref("cas.value")? }
            }
            other => return Err(DecodeError::new("write.kind", format!("unknown kind {other}"))),
        };
        reader.end("write")?;
        if id.client == 0 {
            return Err(DecodeError::new("write.id.client", "must not be 0"));
        }
        if id.sequence == 0 {
            return Err(DecodeError::new("write.id.sequence", "must not be 0"));
        }
        Ok(write)
    }

    /// The write's de-duplication id.
    pub fn id(&self) -> WriteId {
        match self {
            WriteRef::Put { id, .. } | WriteRef::Delete { id, .. } | WriteRef::Cas { id, .. } => *id,
        }
    }

    /// The key written.
    pub fn key(&self) -> &'a str {
        match self {
            WriteRef::Put { key, .. } | WriteRef::Delete { key, .. } | WriteRef::Cas { key, .. } => key,
        }
    }

    /// Which write it is.
    pub fn kind(&self) -> WriteKind {
        match self {
            WriteRef::Put { .. } => WriteKind::Put,
            WriteRef::Delete { .. } => WriteKind::Delete,
            WriteRef::Cas { .. } => WriteKind::Cas,
        }
    }

    /// Appends the wire form to `out` (what [`Write::encode_into`] writes).
    pub fn encode_into(&self, out: &mut BytesMut) {
        out.put_u8(FORMAT_VERSION);
        let kind = match self {
            WriteRef::Put { .. } => KIND_PUT,
            WriteRef::Delete { .. } => KIND_DELETE,
            WriteRef::Cas { .. } => KIND_CAS,
        };
        out.put_u8(kind);
        let id = self.id();
        out.put_u64_le(id.client);
        out.put_u64_le(id.sequence);
        put_bytes(out, self.key().as_bytes());
        match *self {
            WriteRef::Put { value, .. } => put_bytes(out, value),
            WriteRef::Delete { .. } => {}
            WriteRef::Cas { expected, value, .. } => {
                put_option(out, expected);
                put_bytes(out, value);
            }
        }
    }

    /// Bytes of the wire form.
    pub fn encoded_len(&self) -> usize {
        let values = match *self {
            WriteRef::Put { value, .. } => 4 + value.len(),
            WriteRef::Delete { .. } => 0,
            WriteRef::Cas { expected, value, .. } => {
                1 + expected.map_or(0, |e| 4 + e.len()) + 4 + value.len()
            }
        };
        2 + 16 + 4 + self.key().len() + values
    }

    /// The owned [`Write`] (copies the key and values).
    pub fn to_write(&self) -> Write {
        match *self {
            WriteRef::Put { id, key, value } => {
                Write::Put { id, key: key.to_owned(), value: Bytes::copy_from_slice(value) }
            }
            WriteRef::Delete { id, key } => Write::Delete { id, key: key.to_owned() },
            WriteRef::Cas { id, key, expected, value } => Write::Cas {
                id,
                key: key.to_owned(),
                expected: expected.map(Bytes::copy_from_slice),
                value: Bytes::copy_from_slice(value),
            },
        }
    }
}

/// Why a client's encoded write batch was refused: nothing of it executes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The batch's framing (version, kind, count, part lengths, trailing bytes) is wrong.
    #[error("write batch: {0}")]
    Framing(DecodeError),
    /// One write of it does not decode or breaks a limit.
    #[error("write batch, write {index}: {error}")]
    Write {
        /// The write's position in the batch, from 0.
        index: usize,
        /// What is wrong with it.
        error: DecodeError,
    },
    /// It holds no write.
    #[error("write batch: holds no write")]
    Empty,
    /// It holds more writes than a batch may.
    #[error("write batch: {count} writes, at most {max}")]
    TooMany {
        /// Writes in the batch.
        count: usize,
        /// The bound.
        max: usize,
    },
    /// Several writes that together are larger than a batch may be (a write larger than
    /// [`WRITE_BATCH_BYTES_MAX`] travels alone, in a batch of one).
    #[error("write batch: {bytes} bytes for {count} writes, at most {max} (a larger write goes alone)")]
    TooLarge {
        /// The batch's size.
        bytes: usize,
        /// Writes in it.
        count: usize,
        /// The bound.
        max: usize,
    },
}

/// A client's encoded [`WriteBatch`], checked whole: it frames correctly, every write
/// decodes as [`WriteRef::decode`] requires, and the batch keeps within the bounds. It
/// keeps the buffer it was given (a slice of the client's frame), which is what goes to
/// the ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedWriteBatch {
    bytes: Bytes,
    writes: usize,
    kinds: Vec<WriteKind>,
}

impl CheckedWriteBatch {
    /// Checks `bytes`, a batch of at most `writes_max` writes, without copying it. Errors
    /// name the write (its index) and the field.
    pub fn check(bytes: Bytes, writes_max: usize) -> Result<CheckedWriteBatch, BatchError> {
        let parts = WriteBatch::split(&bytes).map_err(BatchError::Framing)?;
        if parts.is_empty() {
            return Err(BatchError::Empty);
        }
        if parts.len() > writes_max {
            return Err(BatchError::TooMany { count: parts.len(), max: writes_max });
        }
        if parts.len() > 1 && bytes.len() > WRITE_BATCH_BYTES_MAX {
            return Err(BatchError::TooLarge {
                bytes: bytes.len(),
                count: parts.len(),
                max: WRITE_BATCH_BYTES_MAX,
            });
        }
        let writes = parts.len();
        let mut kinds = Vec::new();
        for (index, part) in parts.into_iter().enumerate() {
            let write = WriteRef::decode(part).map_err(|error| BatchError::Write { index, error })?;
            if !kinds.contains(&write.kind()) {
                kinds.push(write.kind());
            }
        }
        Ok(CheckedWriteBatch { bytes, writes, kinds })
    }

    /// Writes in the batch.
    pub fn len(&self) -> usize {
        self.writes
    }

    /// Whether the batch holds no write (never, once checked).
    pub fn is_empty(&self) -> bool {
        self.writes == 0
    }

    /// The kinds of write the batch holds, each once.
    pub fn kinds(&self) -> &[WriteKind] {
        &self.kinds
    }

    /// The buffer checked: the request the ring replicates.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The buffer checked.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }
}

/// What executing a write did, read in place ([`WriteOutcome`]'s view).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteOutcomeRef<'a> {
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
        current: Option<&'a [u8]>,
    },
    /// Older than the newest write of its client: not executed.
    Stale {
        /// The newest sequence number executed for the client.
        newest: u64,
    },
    /// The write did not decode; nothing changed.
    Malformed {
        /// Why (UTF-8 as the state machine wrote it, bytes as received).
        reason: &'a [u8],
    },
}

/// A [`WriteResponse`] read in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteResponseRef<'a> {
    /// The slot the write was executed in.
    pub slot: u64,
    /// What it did.
    pub outcome: WriteOutcomeRef<'a>,
}

impl<'a> WriteResponseRef<'a> {
    /// Reads an encoded [`WriteResponse`] in place.
    pub fn decode(bytes: &'a [u8]) -> Result<WriteResponseRef<'a>, DecodeError> {
        let mut reader = Reader::new(bytes);
        reader.version("write response")?;
        let kind = reader.u8("write_response.kind")?;
        let slot = reader.u64("write_response.slot")?;
        let outcome = match kind {
            OUTCOME_PUT => WriteOutcomeRef::Put,
            OUTCOME_DELETED => WriteOutcomeRef::Deleted { existed: reader.flag("deleted.existed")? },
            OUTCOME_CAS => {
                let swapped = reader.flag("cas.swapped")?;
                let current =
                    if reader.flag("cas.present")? { Some(reader.value_ref("cas.current")?) } else { None };
                WriteOutcomeRef::Cas { swapped, current }
            }
            OUTCOME_STALE => WriteOutcomeRef::Stale { newest: reader.u64("stale.newest")? },
            OUTCOME_MALFORMED => {
                WriteOutcomeRef::Malformed { reason: reader.bytes("malformed.reason", KEY_BYTES_MAX * 4)? }
            }
            other => return Err(DecodeError::new("write_response.kind", format!("unknown kind {other}"))),
        };
        reader.end("write response")?;
        Ok(WriteResponseRef { slot, outcome })
    }

    /// Reads the answer to a [`WriteBatch`] in place: its writes' answers, in order. A batch
    /// that did not decode at all is answered with a single (`Malformed`) response, returned
    /// as a list of one.
    pub fn decode_batch(bytes: &'a [u8]) -> Result<Vec<WriteResponseRef<'a>>, DecodeError> {
        batch::decode_answers(bytes, OUTCOME_BATCH, &batch::WRITE_ANSWERS_FIELDS, WriteResponseRef::decode)
    }

    /// The number of answers an encoded answer list announces in its header, without
    /// reading them (`None`: not an answer list, such as the single `Malformed` answer to
    /// a batch that did not decode).
    pub fn batch_len(bytes: &[u8]) -> Option<usize> {
        batch::framed_count(bytes, OUTCOME_BATCH)
    }

    /// The owned [`WriteResponse`] (copies a value or reason it carries).
    pub fn to_response(&self) -> WriteResponse {
        let outcome = match self.outcome {
            WriteOutcomeRef::Put => WriteOutcome::Put,
            WriteOutcomeRef::Deleted { existed } => WriteOutcome::Deleted { existed },
            WriteOutcomeRef::Cas { swapped, current } => {
                WriteOutcome::Cas { swapped, current: current.map(Bytes::copy_from_slice) }
            }
            WriteOutcomeRef::Stale { newest } => WriteOutcome::Stale { newest },
            WriteOutcomeRef::Malformed { reason } => {
                WriteOutcome::Malformed { reason: String::from_utf8_lossy(reason).into_owned() }
            }
        };
        WriteResponse { slot: self.slot, outcome }
    }
}

/// Encodes `writes` as one [`WriteBatch`] (each checked first), the way a client sends a
/// batch whole; errors name the write.
pub fn encode_write_batch(writes: &[Write]) -> Result<Bytes, BatchError> {
    let bytes: usize = writes.iter().map(|w| WriteBatch::PER_WRITE_BYTES + w.encoded_len()).sum();
    let mut batch = WriteBatch::with_capacity(bytes);
    for (index, write) in writes.iter().enumerate() {
        write.validate().map_err(|error| BatchError::Write { index, error })?;
        batch.push(write);
    }
    Ok(batch.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{VALUE_BYTES_MAX, WRITE_BYTES_MAX};

    fn writes() -> Vec<Write> {
        let id = WriteId { client: 7, sequence: 3 };
        vec![
            Write::Put { id, key: "k".into(), value: Bytes::from_static(b"v") },
            Write::Delete { id, key: "ключ".into() },
            Write::Cas { id, key: "k".into(), expected: None, value: Bytes::new() },
            Write::Cas {
                id,
                key: "k".into(),
                expected: Some(Bytes::from_static(b"old")),
                value: Bytes::from_static(b"new"),
            },
        ]
    }

    #[test]
    fn views_read_what_the_owned_writes_encode_and_encode_the_same() {
        for write in writes() {
            let encoded = write.encode();
            let view = WriteRef::decode(&encoded).unwrap();
            assert_eq!(view, write.as_view());
            assert_eq!(view.to_write(), write);
            assert_eq!(view.encoded_len(), encoded.len());
            // The key and values point into the encoded bytes.
            assert!(encoded.as_ptr_range().contains(&view.key().as_ptr()));
        }
    }

    #[test]
    fn a_checked_batch_keeps_its_buffer_and_knows_its_writes() {
        let bytes = encode_write_batch(&writes()).unwrap();
        let checked = CheckedWriteBatch::check(bytes.clone(), 4).unwrap();
        assert_eq!(checked.bytes().as_ptr(), bytes.as_ptr(), "not copied");
        assert_eq!((checked.len(), checked.is_empty()), (4, false));
        assert_eq!(checked.kinds(), &[WriteKind::Put, WriteKind::Delete, WriteKind::Cas]);
        assert_eq!(CheckedWriteBatch::check(bytes.clone(), 3), Err(BatchError::TooMany { count: 4, max: 3 }));
        // Every truncation, and every byte flipped, is refused or still a valid batch;
        // never a panic.
        for len in 0..bytes.len() {
            assert!(CheckedWriteBatch::check(bytes.slice(..len), 4).is_err(), "prefix of {len} bytes");
        }
        for at in 0..bytes.len() {
            let mut damaged = bytes.to_vec();
            damaged[at] ^= 0xff;
            let _ = CheckedWriteBatch::check(Bytes::from(damaged), 4);
        }
        // A write with an anonymous id is named.
        let mut anonymous = writes();
        anonymous[1] = Write::Delete { id: WriteId { client: 0, sequence: 1 }, key: "k".into() };
        let mut batch = WriteBatch::new();
        for write in &anonymous {
            batch.push(write);
        }
        let error = CheckedWriteBatch::check(batch.finish(), 4).unwrap_err();
        assert_eq!(error.to_string(), "write batch, write 1: malformed write.id.client: must not be 0");
        // The client side refuses it before sending, naming it too.
        assert!(matches!(encode_write_batch(&anonymous), Err(BatchError::Write { index: 1, .. })));
        // One write larger than a consensus batch travels alone.
        let big = Write::Put {
            id: WriteId { client: 1, sequence: 1 },
            key: "big".into(),
            value: Bytes::from(vec![1; 1 << 20]),
        };
        assert_eq!(CheckedWriteBatch::check(encode_write_batch(&[big]).unwrap(), 1).map(|b| b.len()), Ok(1));
        const _: () = assert!(VALUE_BYTES_MAX < WRITE_BYTES_MAX);
    }

    #[test]
    fn answers_read_in_place_match_the_owned_decoding() {
        let responses = vec![
            WriteResponse { slot: 3, outcome: WriteOutcome::Put },
            WriteResponse { slot: 3, outcome: WriteOutcome::Deleted { existed: true } },
            WriteResponse {
                slot: 4,
                outcome: WriteOutcome::Cas { swapped: false, current: Some(Bytes::from_static(b"x")) },
            },
            WriteResponse { slot: 4, outcome: WriteOutcome::Stale { newest: 9 } },
            WriteResponse { slot: 5, outcome: WriteOutcome::Malformed { reason: "bad".into() } },
        ];
        let list = WriteResponse::encode_batch(&responses);
        assert_eq!(WriteResponseRef::batch_len(&list), Some(5));
        let views = WriteResponseRef::decode_batch(&list).unwrap();
        assert_eq!(views.iter().map(WriteResponseRef::to_response).collect::<Vec<_>>(), responses);
        let WriteOutcomeRef::Cas { current: Some(current), .. } = views[2].outcome else { panic!() };
        assert!(list.as_ptr_range().contains(&current.as_ptr()), "the value is read in place");
        // A single answer is no list.
        assert_eq!(WriteResponseRef::batch_len(&responses[0].encode()), None);
        for len in 2..list.len() {
            assert!(WriteResponseRef::decode_batch(&list[..len]).is_err(), "prefix of {len} bytes");
        }
    }
}
