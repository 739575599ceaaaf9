//! The journal's bytes on disk: segment file names, the segment header, and the frame
//! around each record (magic, length, type, the offset it was written at, where its batch
//! started, CRC32C seeded with the segment's sequence). Byte diagrams are in
//! `docs/STORAGE.md`.
//!
//! Everything here is pure: encoding, decoding and verifying bytes, no I/O.

use rsl_core::Slot;

use crate::codec::{u32_at, u64_at, FileHeader, Refusal};
use crate::staging::{Framing, SizeLimit};

/// First bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"RSLJSEG\0";
/// First bytes of every record frame.
pub const RECORD_MAGIC: [u8; 4] = *b"RSLR";
/// The on-disk format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes of the segment header.
pub const SEGMENT_HEADER_BYTES: u64 = 64;
/// Bytes of a record frame's header.
pub const RECORD_HEADER_BYTES: u64 = 32;
/// Largest record payload accepted: a persist request carrying one value of the largest
/// request a ring may accept (`rsl_core::REQUEST_BYTES_MAX`), with room to spare for its
/// framing; or one carrying many small values (a fetch reply, a takeover's re-proposals).
pub const RECORD_PAYLOAD_BYTES_MAX: u64 = rsl_core::REQUEST_BYTES_MAX + (1 << 20);

const _: () = assert!(RECORD_PAYLOAD_BYTES_MAX >= 64 << 20, "records of earlier versions stay readable");
const _: () = assert!(RECORD_PAYLOAD_BYTES_MAX < u32::MAX as u64, "the frame's length field is 32 bits");
/// Records start at multiples of this.
pub const RECORD_ALIGNMENT: u64 = 8;
/// Smallest allowed `segment_bytes_max` (tests use tiny segments to rotate often).
pub const SEGMENT_BYTES_MIN: u64 = 256;

const SEGMENT_SUFFIX: &str = ".seg";
/// The suffix of a segment set aside by [`crate::RecoveryPolicy::SalvagePrefix`].
pub(super) const DAMAGED_SUFFIX: &str = ".damaged";

/// How the journal frames records in the staging buffer.
pub(super) const FRAMING: Framing = Framing {
    header_bytes: RECORD_HEADER_BYTES,
    alignment: RECORD_ALIGNMENT,
    limit: SizeLimit::Payload(RECORD_PAYLOAD_BYTES_MAX),
};

/// The name of the segment with `sequence` whose first slot is `first_slot`.
pub fn segment_name(first_slot: Slot, sequence: u64) -> String {
    format!("{:020}-{:016}{SEGMENT_SUFFIX}", first_slot.0, sequence)
}

/// Parses a segment name into (first slot, sequence).
pub fn parse_segment_name(name: &str) -> Option<(Slot, u64)> {
    let stem = name.strip_suffix(SEGMENT_SUFFIX)?;
    let (slot, sequence) = stem.split_once('-')?;
    let digits = |s: &str, width: usize| s.len() == width && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(slot, 20) || !digits(sequence, 16) {
        return None;
    }
    Some((Slot(slot.parse().ok()?), sequence.parse().ok()?))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct SegmentHeader {
    pub sequence: u64,
    pub first_slot: Slot,
    pub previous_bytes: u64,
    pub preallocated: u64,
}

/// The start of a segment header: magic, format version, CRC.
const HEADER: FileHeader = FileHeader {
    magic: SEGMENT_MAGIC,
    version: FORMAT_VERSION,
    file: "a journal segment",
    name: "segment header",
};

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES as usize] {
        let mut bytes = [0u8; SEGMENT_HEADER_BYTES as usize];
        bytes[16..24].copy_from_slice(&self.sequence.to_le_bytes());
        bytes[24..32].copy_from_slice(&self.first_slot.0.to_le_bytes());
        bytes[32..40].copy_from_slice(&self.previous_bytes.to_le_bytes());
        bytes[40..48].copy_from_slice(&self.preallocated.to_le_bytes());
        HEADER.seal(&mut bytes);
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, Refusal> {
        if bytes.len() < SEGMENT_HEADER_BYTES as usize {
            let reason = format!("file of {} bytes is shorter than a segment header", bytes.len());
            return Err(Refusal::damaged(0, reason));
        }
        HEADER.check(&bytes[..SEGMENT_HEADER_BYTES as usize])?;
        Ok(SegmentHeader {
            sequence: u64_at(bytes, 16),
            first_slot: Slot(u64_at(bytes, 24)),
            previous_bytes: u64_at(bytes, 32),
            preallocated: u64_at(bytes, 40),
        })
    }
}

/// CRC32C of a frame: seeded with the segment's sequence, over the header without its CRC
/// field, then the payload. A frame copied from another segment does not verify.
pub(super) fn frame_crc(sequence: u64, header: &[u8], payload: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&sequence.to_le_bytes());
    let crc = crc32c::crc32c_append(crc, &header[0..12]);
    let crc = crc32c::crc32c_append(crc, &header[16..32]);
    crc32c::crc32c_append(crc, payload)
}

/// Fills in the header of the frame whose header starts at `frame[0]` and whose payload
/// (`payload_bytes` long) follows it.
pub(super) fn seal_frame(
    frame: &mut [u8],
    kind: u8,
    payload_bytes: u32,
    offset: u64,
    batch_start: u64,
    sequence: u64,
) {
    frame[0..4].copy_from_slice(&RECORD_MAGIC);
    frame[4] = FORMAT_VERSION as u8;
    frame[5] = kind;
    frame[6..8].fill(0);
    frame[8..12].copy_from_slice(&payload_bytes.to_le_bytes());
    frame[12..16].fill(0);
    frame[16..24].copy_from_slice(&offset.to_le_bytes());
    frame[24..32].copy_from_slice(&batch_start.to_le_bytes());
    let header_end = RECORD_HEADER_BYTES as usize;
    let (header, rest) = frame.split_at_mut(header_end);
    let crc = frame_crc(sequence, header, &rest[..payload_bytes as usize]);
    header[12..16].copy_from_slice(&crc.to_le_bytes());
}

/// Verifies a frame read back from `offset` of the segment with `sequence`, `bytes` holding
/// exactly the frame; returns its kind and payload.
pub(super) fn verify_read_frame(bytes: &[u8], offset: u64, sequence: u64) -> Result<(u8, &[u8]), String> {
    let stated = u64_at(bytes, 16);
    if stated != offset {
        return Err(format!("record states offset {stated}, read at {offset}"));
    }
    let stored = u32_at(bytes, 12);
    let (header, payload) = bytes.split_at(RECORD_HEADER_BYTES as usize);
    let computed = frame_crc(sequence, header, payload);
    if stored != computed || header[0..4] != RECORD_MAGIC {
        return Err(format!("record CRC {stored:#010x}, computed {computed:#010x} on read"));
    }
    Ok((header[5], payload))
}

/// A frame that verified.
#[derive(Clone, Copy, Debug)]
pub(super) struct Frame {
    pub kind: u8,
    pub payload_start: u64,
    pub payload_bytes: u32,
    pub batch_start: u64,
    /// Offset of the next frame.
    pub end: u64,
}

/// Verifies the frame at `offset` of a segment with `sequence` whose bytes are `bytes`.
/// A frame whose CRC verifies but whose version byte is not [`FORMAT_VERSION`] is a
/// [`Refusal::Version`]: intact, written by another build.
pub(super) fn parse_frame(bytes: &[u8], offset: u64, sequence: u64) -> Result<Frame, Refusal> {
    let damaged = |reason: String| Refusal::damaged(offset, reason);
    let len = bytes.len() as u64;
    if len - offset < RECORD_HEADER_BYTES {
        return Err(damaged(format!(
            "{} bytes left, a record header needs {RECORD_HEADER_BYTES}",
            len - offset
        )));
    }
    let at = offset as usize;
    let header = &bytes[at..at + RECORD_HEADER_BYTES as usize];
    if header[0..4] != RECORD_MAGIC {
        return Err(damaged(format!("record magic {:02x?}, expected {:02x?}", &header[0..4], RECORD_MAGIC)));
    }
    let stated = u64_at(header, 16);
    if stated != offset {
        return Err(damaged(format!("record states offset {stated}, found at {offset}")));
    }
    let payload_bytes = u32_at(header, 8);
    if u64::from(payload_bytes) > RECORD_PAYLOAD_BYTES_MAX {
        return Err(damaged(format!("record length {payload_bytes} exceeds {RECORD_PAYLOAD_BYTES_MAX}")));
    }
    let payload_start = offset + RECORD_HEADER_BYTES;
    let payload_end = payload_start + u64::from(payload_bytes);
    if payload_end > len {
        return Err(damaged(format!(
            "record of {payload_bytes} bytes runs past the end of the file ({len} bytes)"
        )));
    }
    let end = FRAMING.aligned(payload_end);
    if end > len {
        return Err(damaged(format!("record padding runs past the end of the file ({len} bytes)")));
    }
    let payload = &bytes[payload_start as usize..payload_end as usize];
    let (stored, computed) = (u32_at(header, 12), frame_crc(sequence, header, payload));
    let version = header[4];
    if stored != computed {
        let also =
            if version == FORMAT_VERSION as u8 { String::new() } else { format!(", version {version}") };
        return Err(damaged(format!("record CRC {stored:#010x}, computed {computed:#010x}{also}")));
    }
    if version != FORMAT_VERSION as u8 {
        let (found, supported) = (u64::from(version), u64::from(FORMAT_VERSION));
        return Err(Refusal::Version { offset: offset + 4, found, supported });
    }
    Ok(Frame { kind: header[5], payload_start, payload_bytes, batch_start: u64_at(header, 24), end })
}

/// Whether damage at `hole` in the last segment can be a torn write: every valid frame
/// after it belongs to a batch that started at or before `hole` (the unsynced last batch).
/// A frame of a batch that started after `hole` proves the bytes at `hole` were synced.
pub(super) fn torn_tail_plausible(bytes: &[u8], hole: u64, sequence: u64) -> bool {
    let mut at = hole + RECORD_ALIGNMENT;
    while at + RECORD_HEADER_BYTES <= bytes.len() as u64 {
        if bytes[at as usize..at as usize + 4] == RECORD_MAGIC {
            if let Ok(frame) = parse_frame(bytes, at, sequence) {
                if frame.batch_start > hole {
                    return false;
                }
            }
        }
        at += RECORD_ALIGNMENT;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A truncation frame carrying `payload` sealed for `offset` of segment `sequence`,
    /// in a batch that started at `batch_start` (header, payload, no padding).
    fn frame(payload: &[u8], offset: u64, batch_start: u64, sequence: u64) -> Vec<u8> {
        let mut frame = vec![0u8; RECORD_HEADER_BYTES as usize];
        frame.extend_from_slice(payload);
        seal_frame(
            &mut frame,
            crate::codec::RECORD_TRUNCATE,
            payload.len() as u32,
            offset,
            batch_start,
            sequence,
        );
        frame
    }

    /// `frame`s laid at their offsets from 64 on, each padded to the record alignment.
    fn segment(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut bytes = vec![0u8; 64];
        for frame in frames {
            bytes.extend_from_slice(frame);
            bytes.resize(FRAMING.aligned(bytes.len() as u64) as usize, 0);
        }
        bytes
    }

    #[test]
    fn segment_names_round_trip_and_reject_near_misses() {
        let name = segment_name(Slot(42), 7);
        assert_eq!(name, "00000000000000000042-0000000000000007.seg");
        assert_eq!(parse_segment_name(&name), Some((Slot(42), 7)));
        for bad in [
            "42-7.seg",
            "00000000000000000042-0000000000000007.log",
            "0000000000000000004x-0000000000000007.seg",
            "LOCK",
        ] {
            assert_eq!(parse_segment_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn segment_header_round_trips_and_detects_flips() {
        let header =
            SegmentHeader { sequence: 3, first_slot: Slot(9), previous_bytes: 4096, preallocated: 0 };
        let bytes = header.encode();
        assert_eq!(SegmentHeader::decode(&bytes), Ok(header));
        // A newer build's header (version changed, CRC recomputed) is a version refusal.
        let mut newer = bytes;
        newer[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        newer[12..16].fill(0);
        let crc = crc32c::crc32c(&newer);
        newer[12..16].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            SegmentHeader::decode(&newer),
            Err(Refusal::Version { offset: 8, found: u64::from(FORMAT_VERSION) + 1, supported: 1 })
        );
        for bit in 0..(SEGMENT_HEADER_BYTES as usize * 8) {
            let mut flipped = bytes;
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(SegmentHeader::decode(&flipped).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn frames_verify_only_at_their_offset_and_in_their_segment() {
        let frame = frame(b"payload!", 64, 64, 5);
        let bytes = segment(std::slice::from_ref(&frame));
        let parsed = parse_frame(&bytes, 64, 5).unwrap();
        assert_eq!((parsed.kind, parsed.payload_bytes, parsed.end), (crate::codec::RECORD_TRUNCATE, 8, 104));
        assert!(parse_frame(&bytes, 64, 6).unwrap_err().reason().contains("CRC"));
        let mut shifted = vec![0u8; 8];
        shifted.extend_from_slice(&bytes);
        assert!(parse_frame(&shifted, 72, 5).unwrap_err().reason().contains("offset"));
        // Another version with a CRC that verifies is a version refusal, not damage.
        let mut newer = frame.clone();
        newer[4] = FORMAT_VERSION as u8 + 1;
        let crc = frame_crc(5, &newer[..32], &newer[32..40]);
        newer[12..16].copy_from_slice(&crc.to_le_bytes());
        let mut bytes = vec![0u8; 64];
        bytes.extend_from_slice(&newer);
        assert_eq!(
            parse_frame(&bytes, 64, 5).unwrap_err(),
            Refusal::Version { offset: 68, found: u64::from(FORMAT_VERSION) + 1, supported: 1 }
        );
        bytes[64 + 12] ^= 1;
        assert!(matches!(parse_frame(&bytes, 64, 5).unwrap_err(), Refusal::Damaged { offset: 64, .. }));
    }

    #[test]
    fn a_file_shorter_than_a_segment_header_is_damaged_at_offset_zero() {
        let refusal = SegmentHeader::decode(&[0u8; 10]).unwrap_err();
        assert_eq!(refusal, Refusal::damaged(0, "file of 10 bytes is shorter than a segment header"));
    }

    #[test]
    fn a_frame_that_does_not_fit_its_file_is_damaged_saying_how() {
        let five = frame(b"12345", 64, 64, 5);
        // The file ends right after the payload: the padding to 8 bytes is missing.
        let mut unpadded = vec![0u8; 64];
        unpadded.extend_from_slice(&five);
        let reason = parse_frame(&unpadded, 64, 5).unwrap_err().reason();
        assert_eq!(reason, "record padding runs past the end of the file (101 bytes)");
        let cut = &unpadded[..unpadded.len() - 2];
        let reason = parse_frame(cut, 64, 5).unwrap_err().reason();
        assert_eq!(reason, "record of 5 bytes runs past the end of the file (99 bytes)");
        let mut huge = segment(&[five]);
        let length = RECORD_PAYLOAD_BYTES_MAX as u32 + 1;
        huge[64 + 8..64 + 12].copy_from_slice(&length.to_le_bytes());
        let reason = parse_frame(&huge, 64, 5).unwrap_err().reason();
        assert_eq!(reason, format!("record length {length} exceeds {RECORD_PAYLOAD_BYTES_MAX}"));
        let reason = parse_frame(&huge[..80], 64, 5).unwrap_err().reason();
        assert_eq!(reason, "16 bytes left, a record header needs 32");
    }

    #[test]
    fn a_frame_read_back_verifies_its_offset_and_checksum() {
        let frame = frame(b"abc", 128, 128, 2);
        assert_eq!(verify_read_frame(&frame, 128, 2), Ok((crate::codec::RECORD_TRUNCATE, &b"abc"[..])));
        assert_eq!(
            verify_read_frame(&frame, 136, 2),
            Err("record states offset 128, read at 136".to_owned())
        );
        assert!(verify_read_frame(&frame, 128, 3).unwrap_err().starts_with("record CRC"), "another segment");
        let mut flipped = frame.clone();
        flipped[RECORD_HEADER_BYTES as usize] ^= 1;
        assert!(verify_read_frame(&flipped, 128, 2).unwrap_err().ends_with("on read"));
    }

    #[test]
    fn damage_is_a_plausible_torn_tail_only_if_no_later_batch_follows_it() {
        // Frames of 40 bytes: two of the batch that started at 64, then one of a batch
        // that started at 144.
        let frames = [frame(b"a", 64, 64, 5), frame(b"b", 104, 64, 5), frame(b"c", 144, 144, 5)];
        assert!(torn_tail_plausible(&segment(&frames[..2]), 64, 5), "the rest of the same unsynced batch");
        let bytes = segment(&frames);
        assert!(!torn_tail_plausible(&bytes, 64, 5), "a batch started after the hole was synced after it");
        assert!(!torn_tail_plausible(&bytes, 104, 5));
        assert!(torn_tail_plausible(&bytes, 144, 5), "nothing follows the last frame");
    }
}
