//! The operating system's directories and files behind [`Directory`] and [`StorageFile`]:
//! positional reads and writes, `fdatasync`/`fsync`, `fallocate`, and a `flock` on the
//! directory's [`LOCK_FILE`] that keeps a second process (or handle) out.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{Directory, DirectoryLock, StorageFile, LOCK_FILE};
use crate::sys;

/// Opens `path` for reading and writing, creating it if missing; `truncate` empties an
/// existing file.
pub(crate) fn open_read_write(path: &Path, truncate: bool) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).create(true).truncate(truncate).open(path)
}

/// Opens the existing file at `path` for reading only (offline inspection: nothing is
/// written through it).
pub(crate) fn open_read_only(path: &Path) -> io::Result<Box<dyn StorageFile>> {
    Ok(Box::new(OsFile { file: File::open(path)? }))
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

impl Directory for OsDirectory {
    fn path(&self) -> &Path {
        &self.path
    }

    fn try_lock(&self) -> io::Result<Option<Box<dyn DirectoryLock>>> {
        let file = open_read_write(&self.path.join(LOCK_FILE), false)?;
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
        let file = open_read_write(&self.path.join(name), true)?;
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
