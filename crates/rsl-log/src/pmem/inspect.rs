//! Reading a persistent-memory log region for offline tools, without changing it: its
//! metadata, and every entry of the committed log with its virtual position and the file
//! offset it is stored at. The bytes are checked with the functions recovery uses
//! (`layout`); what recovery would do with damage is
//! [`PmemLog::check`](super::PmemLog::check)'s business.

use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::area::Area;
use super::layout::{decode_metadata, parse_entry, LOG_AREA_BYTES_MIN, LOG_AREA_POS, PROGRAM_VERSION};
use super::region::{PersistentMemory, RegionCopy};
use crate::codec::Record;
use crate::error::LogError;

/// What the metadata of a region says, and how far its log verifies.
#[derive(Debug)]
pub struct RegionScan {
    /// The file.
    pub path: PathBuf,
    /// Bytes of the file (the region).
    pub region_bytes: u64,
    /// The layout version (always [`PROGRAM_VERSION`] when the metadata verified).
    pub version: u64,
    /// The log id stored at creation.
    pub log_id: u128,
    /// Bytes of the log area.
    pub area_bytes: u64,
    /// Which log metadata copy the commit word selects.
    pub active_copy: usize,
    /// Virtual position of the log's first byte.
    pub head: u64,
    /// Bytes of the committed log.
    pub length: u64,
    /// Bytes of entries that verified, from the head.
    pub valid_bytes: u64,
    /// Entries that verified.
    pub entries: u64,
    /// The first entry inside the log that does not verify ([`LogError::Corrupt`] naming
    /// the file offset); everything after it is unread.
    pub damage: Option<LogError>,
}

/// One entry of the committed log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryRecord {
    /// Virtual position of the entry (only grows; the file offset is
    /// `LOG_AREA_POS + position mod area bytes`).
    pub position: u64,
    /// Byte offset of the entry in the file.
    pub offset: u64,
    /// Bytes of the entry, header and padding included.
    pub entry_bytes: u64,
    /// The record.
    pub record: Record,
}

/// Reads the region in file `path` and calls `visit` with every entry of the committed
/// log that verifies, in log order. Metadata that does not verify (or a newer layout
/// version) is an error naming the file and offset; damage inside the log stops the scan
/// and is reported in [`RegionScan::damage`]. Changes nothing.
pub fn scan(path: &Path, visit: &mut dyn FnMut(&EntryRecord)) -> Result<RegionScan, LogError> {
    let copy = RegionCopy::read(path).map_err(|e| LogError::io(path, e))?;
    let size = copy.len();
    if size < LOG_AREA_POS + LOG_AREA_BYTES_MIN {
        return Err(LogError::corrupt(
            path,
            size,
            format!("file of {size} bytes is too short for a log region"),
        ));
    }
    let mut meta = [0u8; LOG_AREA_POS as usize];
    copy.read(0, &mut meta);
    let metadata = decode_metadata(&meta, size).map_err(|refusal| refusal.log_error(path))?;
    let area = Area::new(Box::new(copy), &metadata);
    let mut bytes = vec![0u8; metadata.length as usize];
    area.read(metadata.head, &mut bytes);
    let bytes = Bytes::from(bytes);
    let mut scan = RegionScan {
        path: path.to_path_buf(),
        region_bytes: size,
        version: PROGRAM_VERSION,
        log_id: metadata.log_id,
        area_bytes: metadata.area_len,
        active_copy: metadata.active,
        head: metadata.head,
        length: metadata.length,
        valid_bytes: 0,
        entries: 0,
        damage: None,
    };
    let mut offset = 0u64;
    while offset < metadata.length {
        let position = metadata.head + offset;
        let parsed = parse_entry(&bytes, offset, position).and_then(|(kind, payload, entry_bytes)| {
            Record::decode(kind, &payload)
                .map(|record| (record, entry_bytes))
                .map_err(|error| format!("entry does not decode: {error}"))
        });
        match parsed {
            Ok((record, entry_bytes)) => {
                visit(&EntryRecord { position, offset: area.physical(position), entry_bytes, record });
                scan.entries += 1;
                offset += entry_bytes;
            }
            Err(reason) => {
                let reason = format!("entry at log position {position}: {reason}");
                scan.damage = Some(LogError::corrupt(path, area.physical(position), reason));
                break;
            }
        }
    }
    scan.valid_bytes = offset;
    Ok(scan)
}
