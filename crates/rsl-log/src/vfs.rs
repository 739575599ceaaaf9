//! The few file-system operations the journal and the checkpoint store use, behind two
//! object-safe traits, so that the same code runs on the operating system's files
//! ([`OsDirectory`]) and on a crash-model simulator ([`crate::sim::SimDisk`]).
//!
//! Durability contract (what the simulator models and the stores rely on): data written to
//! a file is durable after [`StorageFile::sync_data`] returns; a name created, renamed or
//! removed in a directory is durable after [`Directory::sync`] returns.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::sys;

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

/// A directory of the operating system.
#[derive(Debug)]
pub struct OsDirectory {
    path: PathBuf,
}

impl OsDirectory {
    /// Opens `path`, creating it (and its parents) if missing.
    pub fn open(path: impl AsRef<Path>) -> io::Result<OsDirectory> {
        let path = path.as_ref().to_path_buf();
        fs::create_dir_all(&path)?;
        Ok(OsDirectory { path })
    }
}

#[derive(Debug)]
struct OsLock {
    _file: File,
}

impl DirectoryLock for OsLock {}

/// The name of the lock file in every locked directory.
pub const LOCK_FILE: &str = "LOCK";

impl Directory for OsDirectory {
    fn path(&self) -> &Path {
        &self.path
    }

    fn try_lock(&self) -> io::Result<Option<Box<dyn DirectoryLock>>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.path.join(LOCK_FILE))?;
        if sys::try_lock_exclusive(&file)? {
            Ok(Some(Box::new(OsLock { _file: file })))
        } else {
            Ok(None)
        }
    }

    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.path)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                if let Some(name) = entry.file_name().to_str() {
                    names.push(name.to_string());
                }
            }
        }
        Ok(names)
    }

    fn open(&self, name: &str) -> io::Result<Box<dyn StorageFile>> {
        let file = OpenOptions::new().read(true).write(true).open(self.path.join(name))?;
        Ok(Box::new(OsFile { file }))
    }

    fn create(&self, name: &str) -> io::Result<Box<dyn StorageFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(self.path.join(name))?;
        Ok(Box::new(OsFile { file }))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        fs::rename(self.path.join(from), self.path.join(to))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        fs::remove_file(self.path.join(name))
    }

    fn sync(&self) -> io::Result<()> {
        File::open(&self.path)?.sync_all()
    }
}

#[derive(Debug)]
struct OsFile {
    file: File,
}

impl StorageFile for OsFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&mut self, bytes: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(bytes, offset)
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn allocate(&mut self, len: u64) -> io::Result<bool> {
        sys::allocate(&self.file, len)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn sync_all(&mut self) -> io::Result<()> {
        self.file.sync_all()
    }
}
