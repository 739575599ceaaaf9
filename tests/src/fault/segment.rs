//! Damage to a replica's file journal as a crash or a bad disk leaves it: a torn write after
//! the end of the newest segment's records, or a flipped byte in a record that was synced
//! before later ones. The corrupt and torn-tail nemeses use these on a killed replica.

use std::fs;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

/// The segment header's size: the first record starts here.
pub const SEGMENT_HEADER_BYTES: u64 = 64;
/// The corrupt nemesis flips a byte among this many from the first record's start.
pub const CORRUPT_SPAN_BYTES: u64 = 24;
/// A segment needs this many bytes of records after its first before it is corrupted, so
/// later batches prove the first record was synced.
pub const CORRUPT_MIN_BYTES: u64 = 4096;

/// The newest segment of a replica's file journal.
pub fn newest_segment(data_dir: &Path) -> Result<PathBuf, String> {
    let log = data_dir.join("log");
    let mut segments: Vec<PathBuf> = fs::read_dir(&log)
        .map_err(|error| format!("reading {}: {error}", log.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    segments.pop().ok_or_else(|| format!("no segment in {}", log.display()))
}

/// One past the last non-zero byte of `file` (the end of its records, in a preallocated,
/// zero-filled segment).
fn data_end(file: &mut fs::File) -> std::io::Result<u64> {
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0))?;
    file.read_to_end(&mut bytes)?;
    Ok(bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i as u64 + 1))
}

/// Writes `garbage` (no zero bytes) a page past the end of `segment`'s records, as a write
/// torn by a crash leaves it; returns the offset written at.
pub fn write_torn_tail(segment: &Path, garbage: &[u8]) -> std::io::Result<u64> {
    let mut file = fs::OpenOptions::new().read(true).write(true).open(segment)?;
    let end = data_end(&mut file)?;
    // Past a gap, so a last record that happens to end in zero bytes stays whole.
    let offset = end.next_multiple_of(4096) + 4096;
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(garbage)?;
    file.sync_all()?;
    Ok(offset)
}

/// XORs byte `offset` of `segment` with `flip`; returns the original byte, or `None` when
/// the segment holds fewer than [`CORRUPT_MIN_BYTES`] of records.
pub fn corrupt_byte(segment: &Path, offset: u64, flip: u8) -> std::io::Result<Option<u8>> {
    let mut file = fs::OpenOptions::new().read(true).write(true).open(segment)?;
    if data_end(&mut file)? < SEGMENT_HEADER_BYTES + CORRUPT_MIN_BYTES {
        return Ok(None);
    }
    let mut byte = [0u8];
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(&mut byte)?;
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(&[byte[0] ^ flip])?;
    file.sync_all()?;
    Ok(Some(byte[0]))
}

/// Writes `original` back at byte `offset` of `segment` (undoes [`corrupt_byte`]).
pub fn restore_byte(segment: &Path, offset: u64, original: u8) -> std::io::Result<()> {
    let mut file = fs::OpenOptions::new().write(true).open(segment)?;
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(&[original])?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_tails_go_past_the_records_and_corruption_is_undone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0001.seg");
        let mut bytes = vec![7u8; 5000];
        bytes.resize(3 * 4096 + 100, 0);
        fs::write(&path, &bytes).unwrap();
        let offset = write_torn_tail(&path, &[1, 2, 3]).unwrap();
        assert_eq!(offset, 8192 + 4096);
        let after = fs::read(&path).unwrap();
        assert_eq!(&after[..5000], &bytes[..5000]);
        assert_eq!(&after[offset as usize..offset as usize + 3], &[1, 2, 3]);

        let original = corrupt_byte(&path, 70, 0x10).unwrap().unwrap();
        assert_eq!(fs::read(&path).unwrap()[70], 7 ^ 0x10);
        restore_byte(&path, 70, original).unwrap();
        assert_eq!(fs::read(&path).unwrap()[70], 7);
        let short = dir.path().join("0002.seg");
        fs::write(&short, [1u8; 100]).unwrap();
        assert_eq!(corrupt_byte(&short, 70, 1).unwrap(), None);
    }
}
