//! The log area of a region, addressed by virtual position (byte `p` of the log lives at
//! `p mod area length`, so the log wraps around), and the commit that makes a new head and
//! length the log: the inactive log metadata copy is written and persisted together with
//! everything flushed before it, then the commit word flips to it (an aligned 8-byte
//! store, atomic on persistent memory) and is persisted. A crash before the flip leaves
//! the old metadata in force and the new bytes outside the log; after it, the new copy is
//! complete.

use std::io;
use std::path::PathBuf;

use super::layout::{
    encode_log_metadata, Metadata, COMMIT_WORD, COMMIT_WORD_POS, LOG_AREA_POS, LOG_METADATA_BYTES,
    LOG_METADATA_POS,
};
use super::region::PersistentMemory;

/// A region's log area and which part of it is the log.
#[derive(Debug)]
pub(super) struct Area {
    pub region: Box<dyn PersistentMemory>,
    /// The region's name, for messages.
    pub name: PathBuf,
    /// Bytes of the log area.
    pub len: u64,
    /// Virtual position of the log's first byte.
    pub head: u64,
    /// Bytes of the log.
    pub length: u64,
    /// The log metadata copy in force.
    active: usize,
}

impl Area {
    /// The area of `region` as its checked `metadata` describes it.
    pub fn new(region: Box<dyn PersistentMemory>, metadata: &Metadata) -> Area {
        let name = region.name().to_path_buf();
        Area {
            region,
            name,
            len: metadata.area_len,
            head: metadata.head,
            length: metadata.length,
            active: metadata.active,
        }
    }

    /// The region offset of virtual `position`.
    pub fn physical(&self, position: u64) -> u64 {
        LOG_AREA_POS + position % self.len
    }

    /// The virtual position just past the log, where the next entry goes.
    pub fn tail(&self) -> u64 {
        self.head + self.length
    }

    /// Fills `buf` from virtual `position` on.
    pub fn read(&self, position: u64, buf: &mut [u8]) {
        let start = position % self.len;
        let first = (buf.len() as u64).min(self.len - start) as usize;
        self.region.read(LOG_AREA_POS + start, &mut buf[..first]);
        if first < buf.len() {
            self.region.read(LOG_AREA_POS, &mut buf[first..]);
        }
    }

    /// Writes `bytes` at virtual `position` on and flushes them (persistent at the next
    /// fence).
    pub fn write(&mut self, position: u64, bytes: &[u8]) -> io::Result<()> {
        let start = position % self.len;
        let first = (bytes.len() as u64).min(self.len - start) as usize;
        self.region.write(LOG_AREA_POS + start, &bytes[..first]);
        self.region.flush(LOG_AREA_POS + start, first as u64)?;
        if first < bytes.len() {
            self.region.write(LOG_AREA_POS, &bytes[first..]);
            self.region.flush(LOG_AREA_POS, (bytes.len() - first) as u64)?;
        }
        Ok(())
    }

    /// Makes (`head`, `length`) the log: persists the inactive metadata copy together with
    /// everything flushed before, then flips and persists the commit word. Two fences.
    pub fn commit(&mut self, head: u64, length: u64) -> io::Result<()> {
        let copy = 1 - self.active;
        self.region.write(LOG_METADATA_POS[copy], &encode_log_metadata(length, head));
        self.region.flush(LOG_METADATA_POS[copy], LOG_METADATA_BYTES)?;
        self.region.fence()?;
        self.region.write(COMMIT_WORD_POS, &COMMIT_WORD[copy].to_le_bytes());
        self.region.flush(COMMIT_WORD_POS, 8)?;
        self.region.fence()?;
        self.active = copy;
        self.head = head;
        self.length = length;
        Ok(())
    }

    /// Persists the whole region (what recovery read may sit in caches only).
    pub fn persist_all(&mut self) -> io::Result<()> {
        let size = self.region.len();
        self.region.flush(0, size)?;
        self.region.fence()
    }
}
