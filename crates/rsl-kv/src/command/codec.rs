//! The wire's building blocks: the kind bytes that follow the version byte, writing
//! length-prefixed byte strings, and [`Reader`], the bounds-checked cursor every decoder
//! reads through, with [`DecodeError`] naming the field that does not decode.

use bytes::{BufMut, Bytes, BytesMut};

use super::{FORMAT_VERSION, KEY_BYTES_MAX, VALUE_BYTES_MAX};

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

// The kind byte after the version byte: of a command, then of an answer. Each table is
// kept whole here, so that no two kinds share a byte.
pub(super) const KIND_PUT: u8 = 1;
pub(super) const KIND_DELETE: u8 = 2;
pub(super) const KIND_CAS: u8 = 3;
pub(super) const KIND_BATCH: u8 = 4;
pub(super) const KIND_GET: u8 = 10;
pub(super) const KIND_DIGEST: u8 = 11;
pub(super) const KIND_READ_BATCH: u8 = 12;
pub(super) const KIND_CHECKPOINT: u8 = 13;

pub(super) const OUTCOME_PUT: u8 = 1;
pub(super) const OUTCOME_DELETED: u8 = 2;
pub(super) const OUTCOME_CAS: u8 = 3;
pub(super) const OUTCOME_STALE: u8 = 4;
pub(super) const OUTCOME_VALUE: u8 = 5;
pub(super) const OUTCOME_DIGEST: u8 = 6;
pub(super) const OUTCOME_MALFORMED: u8 = 7;
pub(super) const OUTCOME_BATCH: u8 = 8;
pub(super) const OUTCOME_READ_BATCH: u8 = 9;
pub(super) const OUTCOME_CHECKPOINT: u8 = 10;

/// The bytes `encode` writes, into a buffer of `capacity` bytes to start with.
pub(super) fn encode_with(capacity: usize, encode: impl FnOnce(&mut BytesMut)) -> Bytes {
    let mut out = BytesMut::with_capacity(capacity);
    encode(&mut out);
    out.freeze()
}

pub(super) fn put_bytes(out: &mut BytesMut, bytes: &[u8]) {
    // Every caller passes a key, a value or a reason, all far below u32::MAX.
    out.put_u32_le(u32::try_from(bytes.len()).unwrap_or(u32::MAX));
    out.put_slice(bytes);
}

pub(super) fn put_option(out: &mut BytesMut, bytes: Option<&[u8]>) {
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

    pub(super) fn version(&mut self, what: &'static str) -> Result<(), DecodeError> {
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

    pub(super) fn flag(&mut self, field: &'static str) -> Result<bool, DecodeError> {
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

    /// A key read in place: valid UTF-8, non-empty and within [`KEY_BYTES_MAX`].
    pub(crate) fn key_ref(&mut self) -> Result<&'a str, DecodeError> {
        let bytes = self.bytes("key", KEY_BYTES_MAX)?;
        let key = std::str::from_utf8(bytes)
            .map_err(|error| DecodeError::new("key", format!("not UTF-8: {error}")))?;
        check_key(key)?;
        Ok(key)
    }

    pub(crate) fn key(&mut self) -> Result<String, DecodeError> {
        self.key_ref().map(str::to_owned)
    }

    /// A value read in place, within [`VALUE_BYTES_MAX`].
    pub(crate) fn value_ref(&mut self, field: &'static str) -> Result<&'a [u8], DecodeError> {
        self.bytes(field, VALUE_BYTES_MAX)
    }

    pub(crate) fn value(&mut self, field: &'static str) -> Result<Bytes, DecodeError> {
        Ok(Bytes::copy_from_slice(self.value_ref(field)?))
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
