//! The bytes of a persistent-memory log region (the layout of the verified log in "PoWER
//! Never Corrupts", OSDI 2025): where each piece of metadata sits, how it is encoded and
//! checked, and the frame of an entry. Pure: encoding and checking bytes, no I/O.
//!
//! ```text
//! 0    global metadata: version, region-metadata length, program GUID    + CRC
//! 40   region metadata: region size, log area length, log id              + CRC
//! 80   commit word: one of two 8-byte values, selecting a log metadata copy
//! 88   log metadata copy 0: log length, padding, head (virtual position) + CRC
//! 128  log metadata copy 1: same
//! 256  log area: byte n holds virtual position p where p mod area length = n
//! ```

use std::ops::Range;

use bytes::Bytes;

use crate::codec::{u128_at, u32_at, u64_at, Refusal};
use crate::staging::{Framing, SizeLimit};

/// Offset of the global metadata.
pub const GLOBAL_METADATA_POS: u64 = 0;
/// Offset of the region metadata.
pub const REGION_METADATA_POS: u64 = 40;
/// Offset of the commit word.
pub const COMMIT_WORD_POS: u64 = 80;
/// Offsets of the two log metadata copies.
pub const LOG_METADATA_POS: [u64; 2] = [88, 128];
/// Offset of the log area.
pub const LOG_AREA_POS: u64 = 256;
/// The two values of the commit word: which log metadata copy is in force. Complements of
/// each other, so no single corruption turns one into the other.
pub const COMMIT_WORD: [u64; 2] = [0x4e7b_11d0_93c6_a25f, !0x4e7b_11d0_93c6_a25f];
/// Identifies a region written by this program.
pub const PROGRAM_GUID: u128 = 0x7c1e_5a90_d2f4_4b63_8a0d_e6b1_39c5_f270;
/// The layout version this build writes and reads.
pub const PROGRAM_VERSION: u64 = 1;
/// Bytes of region metadata (without its CRC).
pub const REGION_METADATA_BYTES: u64 = 32;
/// Bytes of an entry header.
pub const ENTRY_HEADER_BYTES: u64 = 16;
/// Entries start at multiples of this.
pub const ENTRY_ALIGNMENT: u64 = 8;
/// The smallest log area.
pub const LOG_AREA_BYTES_MIN: u64 = 256;
/// Bytes of one log metadata copy, CRC included.
pub(super) const LOG_METADATA_BYTES: u64 = 40;
/// Room always kept free for the snapshot entry that reclaiming space writes.
pub(super) const SNAPSHOT_ENTRY_BYTES: u64 = 48;
const _: () = assert!(SNAPSHOT_ENTRY_BYTES == ENTRY_HEADER_BYTES + 32);
const _: () = assert!(LOG_METADATA_POS[1] + LOG_METADATA_BYTES <= LOG_AREA_POS);

/// How the log frames entries in the staging buffer, for a log area of `area_len` bytes:
/// an entry must fit beside the snapshot that reclaiming space may need to write.
pub(super) fn framing(area_len: u64) -> Framing {
    Framing {
        header_bytes: ENTRY_HEADER_BYTES,
        alignment: ENTRY_ALIGNMENT,
        limit: SizeLimit::Frame(area_len - SNAPSHOT_ENTRY_BYTES),
    }
}

/// Bytes an entry with a payload of `payload_bytes` takes, padding included.
pub(super) const fn entry_bytes(payload_bytes: u64) -> u64 {
    (ENTRY_HEADER_BYTES + payload_bytes).div_ceil(ENTRY_ALIGNMENT) * ENTRY_ALIGNMENT
}

fn crc64_field(bytes: &[u8]) -> u64 {
    u64::from(crc32c::crc32c(bytes))
}

/// Checks the CRC that follows the bytes `covered` of `meta` (a CRC32C in a u64 field);
/// `what` names them in the error.
fn check_crc(meta: &[u8], covered: Range<usize>, what: &str) -> Result<(), Refusal> {
    let at = covered.end;
    let (stored, computed) = (u64_at(meta, at), crc64_field(&meta[covered]));
    if stored != computed {
        return Err(Refusal::damaged(at as u64, format!("{what} CRC {stored:#x}, computed {computed:#x}")));
    }
    Ok(())
}

/// CRC32C of an entry: seeded with its virtual position, over the header with its CRC
/// field zeroed, then the payload. An entry copied to another position does not verify.
fn entry_crc(position: u64, header: &[u8], payload: &[u8]) -> u32 {
    let mut zeroed = [0u8; ENTRY_HEADER_BYTES as usize];
    zeroed.copy_from_slice(header);
    zeroed[8..12].fill(0);
    let crc = crc32c::crc32c(&position.to_le_bytes());
    let crc = crc32c::crc32c_append(crc, &zeroed);
    crc32c::crc32c_append(crc, payload)
}

/// Fills in the header of the entry at virtual `position` whose header starts at
/// `entry[0]` and whose payload (`payload_bytes` long) follows it.
pub(super) fn seal_entry(entry: &mut [u8], kind: u8, payload_bytes: u32, position: u64) {
    entry[0..4].copy_from_slice(&payload_bytes.to_le_bytes());
    entry[4] = kind;
    entry[5..16].fill(0);
    let (header, rest) = entry.split_at_mut(ENTRY_HEADER_BYTES as usize);
    let crc = entry_crc(position, header, &rest[..payload_bytes as usize]);
    header[8..12].copy_from_slice(&crc.to_le_bytes());
}

/// Verifies the entry at `offset` of `area` (the committed log read from the head), whose
/// virtual position is `position`; returns its kind, payload and size including padding.
pub(super) fn parse_entry(area: &Bytes, offset: u64, position: u64) -> Result<(u8, Bytes, u64), String> {
    let remaining = area.len() as u64 - offset;
    if remaining < ENTRY_HEADER_BYTES {
        return Err(format!("{remaining} bytes left, an entry header needs {ENTRY_HEADER_BYTES}"));
    }
    let at = offset as usize;
    let header = &area[at..at + ENTRY_HEADER_BYTES as usize];
    let payload_bytes = u64::from(u32_at(header, 0));
    let bytes = entry_bytes(payload_bytes);
    if bytes > remaining {
        return Err(format!("entry of {bytes} bytes runs past the log's end ({remaining} bytes left)"));
    }
    let payload =
        area.slice(at + ENTRY_HEADER_BYTES as usize..at + (ENTRY_HEADER_BYTES + payload_bytes) as usize);
    let stored = u32_at(header, 8);
    let computed = entry_crc(position, header, &payload);
    if stored != computed {
        return Err(format!("entry CRC {stored:#010x}, computed {computed:#010x}"));
    }
    Ok((header[4], payload, bytes))
}

/// A log metadata copy saying the log is `length` bytes from virtual position `head`.
pub(super) fn encode_log_metadata(length: u64, head: u64) -> [u8; LOG_METADATA_BYTES as usize] {
    let mut bytes = [0u8; LOG_METADATA_BYTES as usize];
    bytes[0..8].copy_from_slice(&length.to_le_bytes());
    bytes[16..32].copy_from_slice(&u128::from(head).to_le_bytes());
    let crc = crc64_field(&bytes[0..32]);
    bytes[32..40].copy_from_slice(&crc.to_le_bytes());
    bytes
}

/// The metadata of a freshly formatted region of `size` bytes: an empty log, copy 0 in
/// force.
pub(super) fn encode_metadata(size: u64, log_id: u128) -> [u8; LOG_AREA_POS as usize] {
    let mut bytes = [0u8; LOG_AREA_POS as usize];
    bytes[0..8].copy_from_slice(&PROGRAM_VERSION.to_le_bytes());
    bytes[8..16].copy_from_slice(&REGION_METADATA_BYTES.to_le_bytes());
    bytes[16..32].copy_from_slice(&PROGRAM_GUID.to_le_bytes());
    let crc = crc64_field(&bytes[0..32]);
    bytes[32..40].copy_from_slice(&crc.to_le_bytes());
    bytes[40..48].copy_from_slice(&size.to_le_bytes());
    bytes[48..56].copy_from_slice(&(size - LOG_AREA_POS).to_le_bytes());
    bytes[56..72].copy_from_slice(&log_id.to_le_bytes());
    let crc = crc64_field(&bytes[40..72]);
    bytes[72..80].copy_from_slice(&crc.to_le_bytes());
    bytes[80..88].copy_from_slice(&COMMIT_WORD[0].to_le_bytes());
    bytes[88..128].copy_from_slice(&encode_log_metadata(0, 0));
    bytes
}

/// What the metadata of a region says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Metadata {
    pub log_id: u128,
    pub area_len: u64,
    /// The log metadata copy in force.
    pub active: usize,
    /// Virtual position of the log's first byte.
    pub head: u64,
    /// Bytes of the log.
    pub length: u64,
}

/// Checks the metadata `meta` (the first [`LOG_AREA_POS`] bytes) of a region of `size`
/// bytes; on damage returns the offset and what was found. A layout version other than
/// [`PROGRAM_VERSION`] in global metadata whose CRC verifies is a version refusal (a newer
/// build wrote the region).
pub(super) fn decode_metadata(meta: &[u8], size: u64) -> Result<Metadata, Refusal> {
    let guid = u128_at(meta, 16);
    if guid != PROGRAM_GUID {
        return Err(Refusal::damaged(
            16,
            format!("not an rsl persistent-memory log: program GUID {guid:#034x}"),
        ));
    }
    check_crc(meta, 0..32, "global metadata")?;
    let version = u64_at(meta, 0);
    if version != PROGRAM_VERSION {
        return Err(Refusal::Version { offset: 0, found: version, supported: PROGRAM_VERSION });
    }
    let region_metadata_bytes = u64_at(meta, 8);
    if region_metadata_bytes != REGION_METADATA_BYTES {
        return Err(Refusal::damaged(
            8,
            format!("region metadata of {region_metadata_bytes} bytes, expected {REGION_METADATA_BYTES}"),
        ));
    }
    check_crc(meta, 40..72, "region metadata")?;
    let region_size = u64_at(meta, 40);
    if region_size != size {
        return Err(Refusal::damaged(
            40,
            format!("region metadata says {region_size} bytes, the region has {size}"),
        ));
    }
    let area_len = u64_at(meta, 48);
    if area_len != size - LOG_AREA_POS {
        return Err(Refusal::damaged(
            48,
            format!("log area of {area_len} bytes does not fit a region of {size}"),
        ));
    }
    let log_id = u128_at(meta, 56);
    let word = u64_at(meta, COMMIT_WORD_POS as usize);
    let Some(active) = COMMIT_WORD.iter().position(|&w| w == word) else {
        return Err(Refusal::damaged(
            COMMIT_WORD_POS,
            format!("commit word {word:#018x} is neither commit value"),
        ));
    };
    let at = LOG_METADATA_POS[active] as usize;
    check_crc(meta, at..at + 32, &format!("log metadata copy {active}"))?;
    let length = u64_at(meta, at);
    let head = u128_at(meta, at + 16);
    if u64_at(meta, at + 8) != 0 {
        return Err(Refusal::damaged(at as u64 + 8, "log metadata padding is not zero"));
    }
    if length > area_len {
        return Err(Refusal::damaged(
            at as u64,
            format!("log length {length} exceeds the log area of {area_len}"),
        ));
    }
    let head = match u64::try_from(head) {
        Ok(head) if head.checked_add(length).is_some() => head,
        _ => return Err(Refusal::damaged(at as u64 + 16, format!("log head {head} out of range"))),
    };
    Ok(Metadata { log_id, area_len, active, head, length })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_metadata_decodes_to_an_empty_log_and_detects_flips() {
        let size = LOG_AREA_POS + 4096;
        let meta = encode_metadata(size, 9);
        let decoded = decode_metadata(&meta, size).unwrap();
        assert_eq!(decoded, Metadata { log_id: 9, area_len: 4096, active: 0, head: 0, length: 0 });
        assert!(matches!(
            decode_metadata(&meta, size + 8).unwrap_err(),
            Refusal::Damaged { offset: REGION_METADATA_POS, .. }
        ));
        // A newer layout (version changed, CRC recomputed) is a version refusal.
        let mut newer = meta;
        newer[0..8].copy_from_slice(&(PROGRAM_VERSION + 1).to_le_bytes());
        let crc = crc64_field(&newer[0..32]);
        newer[32..40].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            decode_metadata(&newer, size).unwrap_err(),
            Refusal::Version { offset: 0, found: PROGRAM_VERSION + 1, supported: PROGRAM_VERSION }
        );
        // Every byte of metadata in force is checked (copy 1 is not in force).
        for bit in 0..(LOG_METADATA_POS[1] as usize * 8) {
            let mut flipped = meta;
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_metadata(&flipped, size).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn entries_verify_only_at_their_position() {
        let mut entry = vec![0u8; ENTRY_HEADER_BYTES as usize];
        entry.extend_from_slice(b"payload");
        entry.resize(24, 0);
        seal_entry(&mut entry, crate::codec::RECORD_TRUNCATE, 7, 4096);
        let area = Bytes::from(entry);
        let (kind, payload, bytes) = parse_entry(&area, 0, 4096).unwrap();
        assert_eq!((kind, payload.as_ref(), bytes), (crate::codec::RECORD_TRUNCATE, &b"payload"[..], 24));
        assert!(parse_entry(&area, 0, 4104).unwrap_err().contains("CRC"));
        assert!(parse_entry(&area.slice(..20), 0, 4096).unwrap_err().contains("runs past"));
    }
}
