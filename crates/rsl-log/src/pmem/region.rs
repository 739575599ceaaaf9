//! Where a persistent-memory log lives: a region behind [`PersistentMemory`] (stores
//! become persistent after a flush of their range and a fence), and its one real
//! implementation, a file mapped into memory ([`MappedFile`]): cache-line write-back plus a
//! store fence in DAX mode (the mapping *is* persistent memory), `msync` otherwise (a
//! page-cache mapping is only durable once written back). The crash-model simulator of
//! persistent memory (`sim::SimPmem`, cargo feature `sim`) is the other implementation.

use std::fmt;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use memmap2::MmapMut;

use crate::sys::{self, CacheLineFlush};

/// A region of (simulated or real) persistent memory.
///
/// Writes land in a volatile view at once; they become persistent after
/// [`flush`](PersistentMemory::flush) of their range and then a
/// [`fence`](PersistentMemory::fence). Until then a crash may persist any subset of the
/// written 8-byte aligned chunks.
pub trait PersistentMemory: Send + fmt::Debug {
    /// Region size in bytes.
    fn len(&self) -> u64;
    /// Whether the region is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// A name for messages (the file path).
    fn name(&self) -> &Path;
    /// Copies bytes at `offset` into `buf`. Panics if out of range.
    fn read(&self, offset: u64, buf: &mut [u8]);
    /// Stores `bytes` at `offset`. Panics if out of range.
    fn write(&mut self, offset: u64, bytes: &[u8]);
    /// Starts writing back `len` bytes at `offset`.
    fn flush(&mut self, offset: u64, len: u64) -> io::Result<()>;
    /// Waits until every flushed range is persistent.
    fn fence(&mut self) -> io::Result<()>;
}

/// How a [`MappedFile`] makes stores persistent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Persistence {
    /// `msync` of the written range: right for any file in the page cache.
    Msync,
    /// Cache-line write-back and a store fence: right only for a DAX mapping of
    /// persistent memory.
    CacheLines(CacheLineFlush),
}

/// A file mapped into memory (memmap2).
pub struct MappedFile {
    path: PathBuf,
    _file: File,
    map: MmapMut,
    persistence: Persistence,
    /// msync mode: the range flushed since the last fence.
    dirty: Option<(u64, u64)>,
}

impl fmt::Debug for MappedFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MappedFile")
            .field("path", &self.path)
            .field("len", &self.map.len())
            .field("persistence", &self.persistence)
            .finish()
    }
}

impl MappedFile {
    /// Maps `file` (already locked by the caller) at `path`, persisting with
    /// `persistence` (which the caller chose for this file: `PmemFlush`).
    pub(super) fn map(path: &Path, file: File, persistence: Persistence) -> io::Result<MappedFile> {
        let map = sys::map_file(&file)?;
        Ok(MappedFile { path: path.to_path_buf(), _file: file, map, persistence, dirty: None })
    }

    /// How this mapping persists stores.
    pub fn persistence(&self) -> Persistence {
        self.persistence
    }
}

impl PersistentMemory for MappedFile {
    fn len(&self) -> u64 {
        self.map.len() as u64
    }

    fn name(&self) -> &Path {
        &self.path
    }

    fn read(&self, offset: u64, buf: &mut [u8]) {
        let start = offset as usize;
        buf.copy_from_slice(&self.map[start..start + buf.len()]);
    }

    fn write(&mut self, offset: u64, bytes: &[u8]) {
        let start = offset as usize;
        self.map[start..start + bytes.len()].copy_from_slice(bytes);
    }

    fn flush(&mut self, offset: u64, len: u64) -> io::Result<()> {
        match self.persistence {
            Persistence::Msync => {
                let end = offset + len;
                self.dirty = Some(match self.dirty {
                    Some((start, stop)) => (start.min(offset), stop.max(end)),
                    None => (offset, end),
                });
            }
            Persistence::CacheLines(method) => {
                sys::write_back(&self.map[offset as usize..(offset + len) as usize], method);
            }
        }
        Ok(())
    }

    fn fence(&mut self) -> io::Result<()> {
        match self.persistence {
            Persistence::Msync => {
                if let Some((start, stop)) = self.dirty.take() {
                    self.map.flush_range(start as usize, (stop - start) as usize)?;
                }
            }
            Persistence::CacheLines(_) => sys::store_fence(),
        }
        Ok(())
    }
}

/// A private copy of a region held in memory: read from a file once, and changed only in
/// memory (nothing is ever written back). Offline tools run recovery on it to learn what
/// recovery would do without touching the file.
pub struct RegionCopy {
    path: PathBuf,
    bytes: Vec<u8>,
}

impl fmt::Debug for RegionCopy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegionCopy").field("path", &self.path).field("len", &self.bytes.len()).finish()
    }
}

impl RegionCopy {
    /// A copy of the file at `path`.
    pub fn read(path: &Path) -> io::Result<RegionCopy> {
        Ok(RegionCopy { path: path.to_path_buf(), bytes: std::fs::read(path)? })
    }

    /// The copy's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl PersistentMemory for RegionCopy {
    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn name(&self) -> &Path {
        &self.path
    }

    fn read(&self, offset: u64, buf: &mut [u8]) {
        let start = offset as usize;
        buf.copy_from_slice(&self.bytes[start..start + buf.len()]);
    }

    fn write(&mut self, offset: u64, bytes: &[u8]) {
        let start = offset as usize;
        self.bytes[start..start + bytes.len()].copy_from_slice(bytes);
    }

    fn flush(&mut self, _offset: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }

    fn fence(&mut self) -> io::Result<()> {
        Ok(())
    }
}
