//! Reads: [`Read`], a read-only command served by one replica's state machine, and its
//! answer, a [`ReadOutcome`] (a value, a [`Digest`] of the whole map, or a checkpoint of it
//! for a backup).

use bytes::{BufMut, Bytes, BytesMut};

use super::batch;
use super::codec::{
    encode_with, put_bytes, put_option, Reader, KIND_CHECKPOINT, KIND_DIGEST, KIND_GET, OUTCOME_CHECKPOINT,
    OUTCOME_DIGEST, OUTCOME_MALFORMED, OUTCOME_READ_BATCH, OUTCOME_VALUE,
};
use super::{DecodeError, FORMAT_VERSION, KEY_BYTES_MAX};

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
    /// A checkpoint of the whole state ([`crate::KvStateMachine::save`]) as of the last
    /// slot applied: what `rsl-kv snapshot save` backs up. Only the server asks for it,
    /// for an admin.
    Checkpoint,
}

impl Read {
    /// The wire form.
    pub fn encode(&self) -> Bytes {
        encode_with(16, |out| self.encode_into(out))
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
            Read::Checkpoint => out.put_u8(KIND_CHECKPOINT),
        }
    }

    /// Parses the wire form.
    pub fn decode(bytes: &[u8]) -> Result<Read, DecodeError> {
        let mut reader = Reader::new(bytes);
        reader.version("read")?;
        let read = match reader.u8("read.kind")? {
            KIND_GET => Read::Get { key: reader.key()? },
            KIND_DIGEST => Read::Digest,
            KIND_CHECKPOINT => Read::Checkpoint,
            other => return Err(DecodeError::new("read.kind", format!("unknown kind {other}"))),
        };
        reader.end("read")?;
        Ok(read)
    }
}

/// The answer to a [`Read`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// The key's value, if present.
    Value(Option<Bytes>),
    /// A digest of the map.
    Digest(Digest),
    /// A checkpoint of the state as of `slot`, the last slot a write was applied in.
    Checkpoint {
        /// The slot the state reflects.
        slot: u64,
        /// [`crate::KvStateMachine::save`]'s bytes.
        data: Bytes,
    },
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
        encode_with(16, |out| self.encode_into(out))
    }

    /// The answer to a [`ReadBatch`](super::ReadBatch): its reads' answers, in order.
    pub fn encode_batch(outcomes: &[ReadOutcome]) -> Bytes {
        batch::encode_answers(OUTCOME_READ_BATCH, outcomes, 80, ReadOutcome::encode_into)
    }

    /// Parses the answer to a [`ReadBatch`](super::ReadBatch). A batch that did not decode at all is
    /// answered with a single outcome (`Malformed`), returned as a list of one.
    pub fn decode_batch(bytes: &[u8]) -> Result<Vec<ReadOutcome>, DecodeError> {
        batch::decode_answers(bytes, OUTCOME_READ_BATCH, &batch::READ_ANSWERS_FIELDS, ReadOutcome::decode)
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
            ReadOutcome::Checkpoint { slot, data } => {
                out.put_u8(OUTCOME_CHECKPOINT);
                out.put_u64_le(*slot);
                put_bytes(out, data);
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
            OUTCOME_CHECKPOINT => ReadOutcome::Checkpoint {
                slot: reader.u64("checkpoint.slot")?,
                data: Bytes::copy_from_slice(reader.bytes("checkpoint.data", u32::MAX as usize)?),
            },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_their_answers_round_trip() {
        for read in [Read::Get { key: "a".into() }, Read::Digest, Read::Checkpoint] {
            assert_eq!(Read::decode(&read.encode()), Ok(read.clone()));
        }
        for outcome in [
            ReadOutcome::Value(None),
            ReadOutcome::Value(Some(Bytes::from_static(b"v"))),
            ReadOutcome::Digest(Digest { crc: 5, keys: 6 }),
            ReadOutcome::Checkpoint { slot: 9, data: Bytes::from_static(b"state") },
        ] {
            assert_eq!(ReadOutcome::decode(&outcome.encode()), Ok(outcome.clone()));
        }
    }
}
