//! Writes: [`Write`], the command every replica executes in slot order, identified by its
//! [`WriteId`] for de-duplication, and the state machine's answer, a [`WriteResponse`]
//! carrying a [`WriteOutcome`].

use bytes::{BufMut, Bytes, BytesMut};

use super::batch;
use super::codec::{
    encode_with, put_bytes, put_option, OUTCOME_BATCH, OUTCOME_CAS, OUTCOME_DELETED, OUTCOME_MALFORMED,
    OUTCOME_PUT, OUTCOME_STALE,
};
use super::view::{WriteRef, WriteResponseRef};
use super::{check_key, check_value, DecodeError, FORMAT_VERSION};

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
        encode_with(64, |out| self.encode_into(out))
    }

    /// Appends the wire form to `out`.
    pub fn encode_into(&self, out: &mut BytesMut) {
        self.as_view().encode_into(out);
    }

    /// Bytes of the wire form.
    pub fn encoded_len(&self) -> usize {
        self.as_view().encoded_len()
    }

    /// The write as a view of its own fields.
    pub fn as_view(&self) -> WriteRef<'_> {
        match self {
            Write::Put { id, key, value } => WriteRef::Put { id: *id, key, value },
            Write::Delete { id, key } => WriteRef::Delete { id: *id, key },
            Write::Cas { id, key, expected, value } => {
                WriteRef::Cas { id: *id, key, expected: expected.as_deref(), value }
            }
        }
    }

    /// Parses the wire form (through [`WriteRef::decode`], which reads it in place).
    pub fn decode(bytes: &[u8]) -> Result<Write, DecodeError> {
        WriteRef::decode(bytes).map(|write| write.to_write())
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
        encode_with(32, |out| self.encode_into(out))
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

    /// The answer to a [`WriteBatch`](super::WriteBatch): its writes' answers, in order.
    pub fn encode_batch(responses: &[WriteResponse]) -> Bytes {
        batch::encode_answers(OUTCOME_BATCH, responses, 24, WriteResponse::encode_into)
    }

    /// Parses the answer to a [`WriteBatch`](super::WriteBatch). A batch that did not decode at all is
    /// answered with a single response (`Malformed`), returned as a list of one.
    pub fn decode_batch(bytes: &[u8]) -> Result<Vec<WriteResponse>, DecodeError> {
        batch::decode_answers(bytes, OUTCOME_BATCH, &batch::WRITE_ANSWERS_FIELDS, WriteResponse::decode)
    }

    /// Parses the wire form (through [`WriteResponseRef::decode`]).
    pub fn decode(bytes: &[u8]) -> Result<WriteResponse, DecodeError> {
        WriteResponseRef::decode(bytes).map(|response| response.to_response())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::codec::KIND_DELETE;
    use crate::command::VALUE_BYTES_MAX;

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
