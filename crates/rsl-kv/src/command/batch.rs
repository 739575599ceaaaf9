//! Batches: several writes ([`WriteBatch`]) or reads ([`ReadBatch`]) that travel through
//! the ring as one request, and the lists of answers to them. All four are the same
//! framed list: a version byte, a kind byte, a count, then length-prefixed parts.

use bytes::{BufMut, Bytes, BytesMut};

use super::codec::{Reader, KIND_BATCH, KIND_READ_BATCH};
use super::{
    DecodeError, Read, Write, WriteRef, FORMAT_VERSION, KEY_BYTES_MAX, WRITE_ANSWER_BYTES_MAX,
    WRITE_BYTES_MAX,
};

/// Several writes that execute in one slot, in order, each with its own [`WriteId`](super::WriteId) and
/// answer: how a server hands the writes of one client message to the ring as a single
/// request, so consensus, the log and the apply step handle one request instead of many.
///
/// Wire form: version, kind 4, count `u32`, then per write its length `u32` and its
/// encoding. The answer is a [`WriteResponse`](super::WriteResponse) list in the same order
/// ([`WriteResponse::encode_batch`](super::WriteResponse::encode_batch)).
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
        self.push_view(write.as_view());
    }

    /// Appends a write given as a view of its fields (the caller validated it).
    pub fn push_view(&mut self, write: WriteRef<'_>) {
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
/// kind 12; the answer is a [`ReadOutcome`](super::ReadOutcome) list ([`ReadOutcome::encode_batch`](super::ReadOutcome::encode_batch)).
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
pub(super) struct FramedFields {
    whole: &'static str,
    kind: &'static str,
    count: &'static str,
    part: &'static str,
}

/// The [`FramedFields`] of the list `$whole` of `$part`s: `$whole`, `$whole.kind`,
/// `$whole.count` and `$whole.$part`.
macro_rules! framed_fields {
    ($whole:literal, $part:literal) => {
        FramedFields {
            whole: $whole,
            kind: concat!($whole, ".kind"),
            count: concat!($whole, ".count"),
            part: concat!($whole, ".", $part),
        }
    };
}

const WRITE_BATCH_FIELDS: FramedFields = framed_fields!("write_batch", "write");
const READ_BATCH_FIELDS: FramedFields = framed_fields!("read_batch", "read");
/// The fields of the answer to a [`WriteBatch`].
pub(super) const WRITE_ANSWERS_FIELDS: FramedFields = framed_fields!("write_batch_response", "answer");
/// The fields of the answer to a [`ReadBatch`].
pub(super) const READ_ANSWERS_FIELDS: FramedFields = framed_fields!("read_batch_response", "answer");

fn is_framed(bytes: &[u8], kind: u8) -> bool {
    bytes.len() >= 2 && bytes[0] == FORMAT_VERSION && bytes[1] == kind
}

/// The count a framed list of kind `kind` announces, read from its header alone (`None`:
/// not such a list).
pub(super) fn framed_count(bytes: &[u8], kind: u8) -> Option<usize> {
    if !is_framed(bytes, kind) || bytes.len() < FRAMED_HEADER_BYTES {
        return None;
    }
    Some(u32::from_le_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]) as usize)
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

/// The answer to a batch: `answers` as a framed list of kind `kind`, each written by
/// `encode` (about `bytes_each` bytes).
pub(super) fn encode_answers<T>(
    kind: u8,
    answers: &[T],
    bytes_each: usize,
    encode: impl Fn(&T, &mut BytesMut),
) -> Bytes {
    let mut framed = Framed::new(kind, answers.len() * bytes_each);
    for answer in answers {
        framed.push_with(|out| encode(answer, out));
    }
    framed.finish()
}

/// Parses the answer to a batch: a framed list of kind `kind` whose parts (each at most
/// [`WRITE_ANSWER_BYTES_MAX`]) `decode` parses. A batch that did not decode at all is
/// answered with a single answer, returned as a list of one.
pub(super) fn decode_answers<'a, T>(
    bytes: &'a [u8],
    kind: u8,
    fields: &FramedFields,
    decode: impl Fn(&'a [u8]) -> Result<T, DecodeError>,
) -> Result<Vec<T>, DecodeError> {
    if !is_framed(bytes, kind) {
        return decode(bytes).map(|answer| vec![answer]);
    }
    split_framed(bytes, kind, fields, WRITE_ANSWER_BYTES_MAX)?.into_iter().map(decode).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Digest, ReadOutcome, WriteId, WriteOutcome, WriteResponse};

    fn id() -> WriteId {
        WriteId { client: 7, sequence: 3 }
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
}
