//! A directory whose files live in memory, for stores that need no durability beyond the
//! process: the checkpoints of in-memory rings.
//!
//! It models no crash: every write is visible at once and `sync` does nothing. Files live
//! while a clone of the directory (or an open file) does. Like a directory of the operating
//! system it has an exclusive lock (a second [`Directory::try_lock`] fails until the first
//! lock is dropped), and an open file keeps its contents when its name is renamed, replaced
//! or removed, so a checkpoint being streamed survives the publication of a newer one.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use parking_lot::Mutex;

use super::{no_such_file, Directory, DirectoryLock, FlagLock, StorageFile};

/// What messages call the directory.
const PATH: &str = "<memory>";

/// The contents of one file, shared by its name and every open handle.
type Contents = Arc<Mutex<Vec<u8>>>;

/// A directory in memory; clones share it. See the module docs.
#[derive(Clone, Default)]
pub struct MemoryDirectory {
    files: Arc<Mutex<BTreeMap<String, Contents>>>,
    lock: Arc<AtomicBool>,
}

impl MemoryDirectory {
    /// An empty directory.
    pub fn new() -> MemoryDirectory {
        MemoryDirectory::default()
    }
}

impl fmt::Debug for MemoryDirectory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryDirectory")
            .field("names", &self.files.lock().keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Directory for MemoryDirectory {
    fn path(&self) -> &Path {
        Path::new(PATH)
    }

    fn try_lock(&self) -> io::Result<Option<Box<dyn DirectoryLock>>> {
        Ok(FlagLock::try_take(&self.lock).map(|lock| Box::new(lock) as Box<dyn DirectoryLock>))
    }

    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.files.lock().keys().cloned().collect())
    }

    fn open(&self, name: &str) -> io::Result<Box<dyn StorageFile>> {
        let contents = self.files.lock().get(name).cloned().ok_or_else(|| no_such_file(name))?;
        Ok(Box::new(MemoryFile { contents }))
    }

    fn create(&self, name: &str) -> io::Result<Box<dyn StorageFile>> {
        let contents = self.files.lock().entry(name.to_string()).or_default().clone();
        contents.lock().clear();
        Ok(Box::new(MemoryFile { contents }))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut files = self.files.lock();
        let contents = files.remove(from).ok_or_else(|| no_such_file(from))?;
        files.insert(to.to_string(), contents);
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        self.files.lock().remove(name).map(drop).ok_or_else(|| no_such_file(name))
    }

    fn sync(&self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Debug)]
struct MemoryFile {
    contents: Contents,
}

impl StorageFile for MemoryFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.contents.lock().len() as u64)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        super::read_at(&self.contents.lock(), buf, offset)
    }

    fn write_at(&mut self, bytes: &[u8], offset: u64) -> io::Result<()> {
        super::write_at(&mut self.contents.lock(), bytes, offset);
        Ok(())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.contents.lock().resize(len as usize, 0);
        Ok(())
    }

    fn allocate(&mut self, _len: u64) -> io::Result<bool> {
        Ok(false)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn sync_all(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_is_exclusive_until_dropped() {
        let directory = MemoryDirectory::new();
        let lock = directory.try_lock().unwrap().expect("unlocked");
        assert!(directory.clone().try_lock().unwrap().is_none(), "a clone shares the lock");
        drop(lock);
        assert!(directory.try_lock().unwrap().is_some(), "released on drop");
    }

    #[test]
    fn files_outlive_the_handle_that_wrote_them_and_open_handles_outlive_their_name() {
        let directory = MemoryDirectory::new();
        directory.create("a.tmp").unwrap().write_at(b"hello", 0).unwrap();
        directory.rename("a.tmp", "a").unwrap();
        assert_eq!(directory.list().unwrap(), vec!["a".to_string()]);
        let reader = directory.clone().open("a").unwrap();
        directory.create("b").unwrap().write_at(b"newer", 0).unwrap();
        directory.rename("b", "a").unwrap();
        directory.remove("a").unwrap();
        let mut buf = [0u8; 5];
        reader.read_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"hello", "an open file keeps its contents");
        assert_eq!(reader.read_at(&mut buf, 1).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(directory.open("a").unwrap_err().kind(), io::ErrorKind::NotFound);
        assert_eq!(directory.remove("a").unwrap_err().kind(), io::ErrorKind::NotFound);
        assert_eq!(directory.rename("a", "c").unwrap_err().kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn create_truncates_an_existing_file() {
        let directory = MemoryDirectory::new();
        let mut first = directory.create("a").unwrap();
        first.write_at(&[1; 10], 0).unwrap();
        let mut second = directory.create("a").unwrap();
        assert_eq!(second.len().unwrap(), 0);
        second.write_at(&[2; 3], 4).unwrap();
        assert_eq!(first.len().unwrap(), 7, "both handles see one file");
        second.set_len(2).unwrap();
        assert_eq!(directory.open("a").unwrap().len().unwrap(), 2);
    }
}
