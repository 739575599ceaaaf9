//! The few file-system operations the journal and the checkpoint store use, behind two
//! object-safe traits, so that the same code runs on the operating system's files
//! ([`OsDirectory`]), on files held in memory ([`MemoryDirectory`]) and, in tests, on the
//! crash-model simulator of a disk (`sim::SimDisk`, cargo feature `sim`).
//!
//! Durability contract (what the simulator models and the stores rely on): data written to
//! a file is durable after [`StorageFile::sync_data`] returns; a name created, renamed or
//! removed in a directory is durable after [`Directory::sync`] returns.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

mod memory;
mod os;

pub use memory::MemoryDirectory;
pub use os::OsDirectory;
pub(crate) use os::{open_read_only, open_read_write};

/// A held directory lock; released when dropped.
pub trait DirectoryLock: Send + fmt::Debug {}

/// A directory of files.
pub trait Directory: Send + fmt::Debug {
    /// The directory's path, for messages.
    fn path(&self) -> &Path;
    /// Takes the directory's exclusive lock without waiting; `None` when another process
    /// or handle holds it.
    fn try_lock(&self) -> io::Result<Option<Box<dyn DirectoryLock>>>;
    /// Names of the files in the directory, in no particular order.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Opens an existing file for reading and writing.
    fn open(&self, name: &str) -> io::Result<Box<dyn StorageFile>>;
    /// Creates a file, truncating any file of that name.
    fn create(&self, name: &str) -> io::Result<Box<dyn StorageFile>>;
    /// Renames `from` to `to`, replacing `to`.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Removes a file.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Makes creations, renames and removals durable.
    fn sync(&self) -> io::Result<()>;
}

/// An open file.
pub trait StorageFile: Send + fmt::Debug {
    /// The file's length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Fills `buf` from `offset`; fails if the file is shorter.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `bytes` at `offset`, extending the file if needed.
    fn write_at(&mut self, bytes: &[u8], offset: u64) -> io::Result<()>;
    /// Sets the file's length (cutting or zero-extending).
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    /// Reserves blocks for the first `len` bytes and extends the file to at least `len`
    /// (reads of the new part return zeros). Returns false where the file system cannot.
    fn allocate(&mut self, len: u64) -> io::Result<bool>;
    /// Makes the written data durable (fdatasync).
    fn sync_data(&mut self) -> io::Result<()>;
    /// Makes the data and all metadata durable (fsync).
    fn sync_all(&mut self) -> io::Result<()>;
}

/// The name of the lock file in every locked directory.
pub const LOCK_FILE: &str = "LOCK";

/// The suffix of a file being built before it is renamed into place (a segment, a
/// checkpoint, a persistent-memory region). A crash can leave one behind; the store that
/// owns the directory deletes leftovers when it opens.
pub(crate) const TEMPORARY_SUFFIX: &str = ".tmp";

/// An exclusive lock within this process: one flag shared by every handle on an in-memory
/// directory or disk, set while the lock is held and cleared when it is dropped.
#[derive(Debug)]
pub(crate) struct FlagLock {
    flag: Arc<AtomicBool>,
}

impl FlagLock {
    /// Takes the lock `flag` guards, or `None` while someone holds it.
    pub fn try_take(flag: &Arc<AtomicBool>) -> Option<FlagLock> {
        flag.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).ok()?;
        Some(FlagLock { flag: flag.clone() })
    }
}

impl Drop for FlagLock {
    fn drop(&mut self) {
        self.flag.store(false, Ordering::Release);
    }
}

impl DirectoryLock for FlagLock {}

/// The error for a file `name` that does not exist in an in-memory directory.
pub(crate) fn no_such_file(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{name}: no such file"))
}

/// Fills `buf` from `offset` of the file contents `content`, as [`StorageFile::read_at`].
pub(crate) fn read_at(content: &[u8], buf: &mut [u8], offset: u64) -> io::Result<()> {
    let end = offset as usize + buf.len();
    if end > content.len() {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end of the file"));
    }
    buf.copy_from_slice(&content[offset as usize..end]);
    Ok(())
}

/// Writes `bytes` at `offset` of the file contents `content`, as [`StorageFile::write_at`].
pub(crate) fn write_at(content: &mut Vec<u8>, bytes: &[u8], offset: u64) {
    let end = offset as usize + bytes.len();
    if content.len() < end {
        content.resize(end, 0);
    }
    content[offset as usize..end].copy_from_slice(bytes);
}
