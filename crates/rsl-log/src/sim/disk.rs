//! The crash-model simulator of a disk: a directory whose files and names remember what
//! was synced, and which enumerates the disks a crash could leave (see the module docs of
//! `sim`).

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use parking_lot::Mutex;
use rsl_core::SplitMix64;

use super::{Barriers, CrashModel};
use crate::vfs::{self, no_such_file, Directory, DirectoryLock, FlagLock, StorageFile};

/// The sector size at which the simulated disk tears writes.
pub const SECTOR_BYTES: u64 = 512;

#[derive(Clone, Debug)]
enum FileOp {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Clone, Debug, Default)]
struct SimFileState {
    durable: Vec<u8>,
    ops: Vec<FileOp>,
    current: Vec<u8>,
}

impl SimFileState {
    /// A file holding `content`, all of it durable.
    fn durable(content: Vec<u8>) -> SimFileState {
        SimFileState { durable: content.clone(), ops: Vec::new(), current: content }
    }
}

#[derive(Clone, Debug)]
enum NameOp {
    Link { name: String, inode: u64 },
    Rename { from: String, to: String },
    Remove { name: String },
}

fn apply_name_op(names: &mut BTreeMap<String, u64>, op: &NameOp) {
    match op {
        NameOp::Link { name, inode } => {
            names.insert(name.clone(), *inode);
        }
        NameOp::Rename { from, to } => {
            if let Some(inode) = names.remove(from) {
                names.insert(to.clone(), inode);
            }
        }
        NameOp::Remove { name } => {
            names.remove(name);
        }
    }
}

fn apply_file_op(content: &mut Vec<u8>, op: &FileOp) {
    match op {
        FileOp::Write { offset, data } => vfs::write_at(content, data, *offset),
        FileOp::SetLen(len) => content.resize(*len as usize, 0),
    }
}

#[derive(Default)]
struct DiskState {
    files: HashMap<u64, SimFileState>,
    names: BTreeMap<String, u64>,
    durable_names: BTreeMap<String, u64>,
    name_ops: Vec<NameOp>,
    next_inode: u64,
}

impl DiskState {
    fn new_inode(&mut self) -> u64 {
        let inode = self.next_inode;
        self.next_inode += 1;
        inode
    }

    /// Creates file `name` holding `content`, name and contents durable.
    fn link_durable(&mut self, name: String, content: Vec<u8>) {
        let inode = self.new_inode();
        self.files.insert(inode, SimFileState::durable(content));
        self.names.insert(name.clone(), inode);
        self.durable_names.insert(name, inode);
    }
}

/// A simulated directory on a simulated disk; clones share the disk.
#[derive(Clone)]
pub struct SimDisk {
    inner: Arc<Mutex<DiskState>>,
    barriers: Arc<Barriers<SimDisk>>,
    lock: Arc<AtomicBool>,
    path: PathBuf,
}

impl std::fmt::Debug for SimDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.inner.lock();
        f.debug_struct("SimDisk")
            .field("path", &self.path)
            .field("names", &state.names.keys().collect::<Vec<_>>())
            .field("syncs", &self.barriers.reached())
            .finish()
    }
}

/// One way a file's unsynced writes can survive a crash.
#[derive(Clone, Copy, Debug)]
enum FileFate {
    /// The first `kept` operations survive whole.
    Prefix { kept: usize },
    /// The first `kept` survive and the next (a write) is torn at absolute offset `at`.
    Torn { kept: usize, at: u64, zeroed: bool },
}

impl Default for SimDisk {
    fn default() -> Self {
        SimDisk::new()
    }
}

impl SimDisk {
    /// An empty disk.
    pub fn new() -> SimDisk {
        SimDisk {
            inner: Arc::default(),
            barriers: Arc::default(),
            lock: Arc::default(),
            path: PathBuf::from("/sim"),
        }
    }

    /// A disk holding `files`, all durable.
    pub fn from_files(files: impl IntoIterator<Item = (String, Vec<u8>)>) -> SimDisk {
        let disk = SimDisk::new();
        {
            let mut state = disk.inner.lock();
            for (name, content) in files {
                state.link_durable(name, content);
            }
        }
        disk
    }

    /// Current names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.inner.lock().names.keys().cloned().collect()
    }

    /// Current contents of `name` (including unsynced writes).
    pub fn read_file(&self, name: &str) -> Option<Vec<u8>> {
        let state = self.inner.lock();
        state.names.get(name).map(|inode| state.files[inode].current.clone())
    }

    /// Replaces the contents of `name` (durably), e.g. to inject damage.
    pub fn write_file(&self, name: &str, content: Vec<u8>) {
        let mut state = self.inner.lock();
        match state.names.get(name) {
            Some(&inode) => {
                state.files.insert(inode, SimFileState::durable(content));
            }
            None => state.link_durable(name.to_string(), content),
        }
    }

    /// Every durable file after a crash now that keeps everything (a clean shutdown).
    pub fn clean_copy(&self) -> SimDisk {
        let state = self.inner.lock();
        let files =
            state.names.iter().map(|(name, inode)| (name.clone(), state.files[inode].current.clone()));
        SimDisk::from_files(files.collect::<Vec<_>>())
    }

    /// The number of distinct crash states now (saturating).
    pub fn crash_state_count(&self) -> u64 {
        let state = self.inner.lock();
        let mut count = state.name_ops.len() as u64 + 1;
        for file in state.files.values() {
            count = count.saturating_mul(fates(file).len() as u64);
        }
        count
    }

    fn sync_point(&self) -> io::Result<()> {
        self.barriers.reach(self, "sync")
    }
}

impl CrashModel for SimDisk {
    /// The disks a crash now could leave: all of them when there are at most `max`,
    /// otherwise `max` of them sampled with `seed`, always including "nothing unsynced
    /// survived" and "everything survived".
    fn crash_states(&self, max: usize, seed: u64) -> Vec<SimDisk> {
        let state = self.inner.lock();
        let mut inodes: Vec<u64> =
            state.files.iter().filter(|(_, f)| !f.ops.is_empty()).map(|(&i, _)| i).collect();
        inodes.sort_unstable();
        let choices: Vec<Vec<FileFate>> = inodes.iter().map(|i| fates(&state.files[i])).collect();
        let name_choices = state.name_ops.len() + 1;
        let total = choices.iter().fold(name_choices as u64, |acc, c| acc.saturating_mul(c.len() as u64));
        let mut picks: Vec<(usize, Vec<usize>)> = Vec::new();
        if total <= max as u64 {
            let mut counter = vec![0usize; choices.len()];
            for names in 0..name_choices {
                loop {
                    picks.push((names, counter.clone()));
                    let mut digit = 0;
                    loop {
                        if digit == counter.len() {
                            break;
                        }
                        counter[digit] += 1;
                        if counter[digit] < choices[digit].len() {
                            break;
                        }
                        counter[digit] = 0;
                        digit += 1;
                    }
                    if digit == counter.len() {
                        break;
                    }
                }
            }
        } else {
            let mut rng = SplitMix64::new(seed);
            picks.push((0, vec![0; choices.len()]));
            picks.push((name_choices - 1, choices.iter().map(|c| prefix_all(c)).collect()));
            while picks.len() < max {
                let names = rng.below(name_choices as u64) as usize;
                let files = choices.iter().map(|c| rng.below(c.len() as u64) as usize).collect();
                picks.push((names, files));
            }
        }
        picks
            .into_iter()
            .map(|(names, files)| {
                let mut namespace = state.durable_names.clone();
                for op in &state.name_ops[..names] {
                    apply_name_op(&mut namespace, op);
                }
                let mut contents: HashMap<u64, Vec<u8>> = HashMap::new();
                for (i, inode) in inodes.iter().enumerate() {
                    contents.insert(*inode, materialize(&state.files[inode], choices[i][files[i]]));
                }
                let files = namespace.into_iter().map(|(name, inode)| {
                    let content =
                        contents.remove(&inode).unwrap_or_else(|| state.files[&inode].durable.clone());
                    (name, content)
                });
                SimDisk::from_files(files.collect::<Vec<_>>())
            })
            .collect()
    }

    /// The disk's barriers: every file and directory sync.
    fn barriers(&self) -> &Barriers<SimDisk> {
        &self.barriers
    }
}

fn prefix_all(fates: &[FileFate]) -> usize {
    fates.iter().position(|f| matches!(f, FileFate::Prefix { kept } if *kept == usize::MAX)).unwrap_or(0)
}

fn fates(file: &SimFileState) -> Vec<FileFate> {
    let mut fates = Vec::new();
    let mut content = file.durable.clone();
    for (kept, op) in file.ops.iter().enumerate() {
        fates.push(FileFate::Prefix { kept });
        if let FileOp::Write { offset, data } = op {
            let end = offset + data.len() as u64;
            let mut at = (offset / SECTOR_BYTES + 1) * SECTOR_BYTES;
            while at < end {
                fates.push(FileFate::Torn { kept, at, zeroed: false });
                if end > content.len() as u64 {
                    fates.push(FileFate::Torn { kept, at, zeroed: true });
                }
                at += SECTOR_BYTES;
            }
        }
        apply_file_op(&mut content, op);
    }
    fates.push(FileFate::Prefix { kept: usize::MAX });
    fates
}

fn materialize(file: &SimFileState, fate: FileFate) -> Vec<u8> {
    let mut content = file.durable.clone();
    let (kept, tear) = match fate {
        FileFate::Prefix { kept } => (kept.min(file.ops.len()), None),
        FileFate::Torn { kept, at, zeroed } => (kept, Some((at, zeroed))),
    };
    for op in &file.ops[..kept] {
        apply_file_op(&mut content, op);
    }
    if let (Some((at, zeroed)), Some(FileOp::Write { offset, data })) = (tear, file.ops.get(kept)) {
        let keep = (at - offset) as usize;
        apply_file_op(&mut content, &FileOp::Write { offset: *offset, data: data[..keep].to_vec() });
        if zeroed {
            let end = *offset as usize + data.len();
            if content.len() < end {
                content.resize(end, 0);
            }
        }
    }
    content
}

#[derive(Debug)]
struct SimFile {
    disk: SimDisk,
    inode: u64,
}

impl Directory for SimDisk {
    fn path(&self) -> &Path {
        &self.path
    }

    fn try_lock(&self) -> io::Result<Option<Box<dyn DirectoryLock>>> {
        Ok(FlagLock::try_take(&self.lock).map(|lock| Box::new(lock) as Box<dyn DirectoryLock>))
    }

    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.names())
    }

    fn open(&self, name: &str) -> io::Result<Box<dyn StorageFile>> {
        let state = self.inner.lock();
        match state.names.get(name) {
            Some(&inode) => Ok(Box::new(SimFile { disk: self.clone(), inode })),
            None => Err(no_such_file(name)),
        }
    }

    fn create(&self, name: &str) -> io::Result<Box<dyn StorageFile>> {
        let mut state = self.inner.lock();
        let inode = match state.names.get(name) {
            Some(&inode) => {
                let file = state.files.get_mut(&inode).expect("named inodes exist");
                file.ops.push(FileOp::SetLen(0));
                file.current.clear();
                inode
            }
            None => {
                let inode = state.new_inode();
                state.files.insert(inode, SimFileState::default());
                state.names.insert(name.to_string(), inode);
                state.name_ops.push(NameOp::Link { name: name.to_string(), inode });
                inode
            }
        };
        Ok(Box::new(SimFile { disk: self.clone(), inode }))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut state = self.inner.lock();
        let inode = state.names.remove(from).ok_or_else(|| no_such_file(from))?;
        state.names.insert(to.to_string(), inode);
        state.name_ops.push(NameOp::Rename { from: from.to_string(), to: to.to_string() });
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut state = self.inner.lock();
        state.names.remove(name).ok_or_else(|| no_such_file(name))?;
        state.name_ops.push(NameOp::Remove { name: name.to_string() });
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        self.sync_point()?;
        let mut state = self.inner.lock();
        state.durable_names = state.names.clone();
        state.name_ops.clear();
        Ok(())
    }
}

impl SimFile {
    fn with<T>(&self, f: impl FnOnce(&mut SimFileState) -> T) -> T {
        let mut state = self.disk.inner.lock();
        f(state.files.get_mut(&self.inode).expect("open inodes exist"))
    }
}

impl StorageFile for SimFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.with(|f| f.current.len() as u64))
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.with(|f| vfs::read_at(&f.current, buf, offset))
    }

    fn write_at(&mut self, bytes: &[u8], offset: u64) -> io::Result<()> {
        self.with(|f| {
            let op = FileOp::Write { offset, data: bytes.to_vec() };
            apply_file_op(&mut f.current, &op);
            f.ops.push(op);
        });
        Ok(())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.with(|f| {
            let op = FileOp::SetLen(len);
            apply_file_op(&mut f.current, &op);
            f.ops.push(op);
        });
        Ok(())
    }

    fn allocate(&mut self, _len: u64) -> io::Result<bool> {
        Ok(false)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.disk.sync_point()?;
        self.with(|f| {
            f.durable = f.current.clone();
            f.ops.clear();
        });
        Ok(())
    }

    fn sync_all(&mut self) -> io::Result<()> {
        self.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn unsynced_writes_are_lost_or_torn_and_synced_ones_kept() {
        let disk = SimDisk::new();
        let mut file = disk.create("a").unwrap();
        file.write_at(&[1; 100], 0).unwrap();
        file.sync_data().unwrap();
        disk.sync().unwrap();
        file.write_at(&[2; 1200], 100).unwrap();
        let states = disk.crash_states(1000, 1);
        let lengths: BTreeSet<usize> = states.iter().map(|d| d.read_file("a").unwrap().len()).collect();
        // Lost (100), torn short at sector boundaries 512 and 1024, zero-filled or whole (1300).
        assert_eq!(lengths, BTreeSet::from([100, 512, 1024, 1300]));
        for state in &states {
            assert_eq!(&state.read_file("a").unwrap()[..100], &[1; 100]);
        }
        assert!(states.iter().any(|d| {
            let content = d.read_file("a").unwrap();
            content.len() == 1300 && content[600..].iter().all(|&b| b == 0)
        }));
    }

    #[test]
    fn unsynced_names_survive_as_a_prefix() {
        let disk = SimDisk::new();
        disk.create("a.tmp").unwrap().sync_data().unwrap();
        disk.rename("a.tmp", "a").unwrap();
        let names: BTreeSet<Vec<String>> = disk.crash_states(100, 1).iter().map(|d| d.names()).collect();
        assert_eq!(names, BTreeSet::from([vec![], vec!["a.tmp".to_string()], vec!["a".to_string()]]));
        disk.sync().unwrap();
        assert!(disk.crash_states(100, 1).iter().all(|d| d.names() == vec!["a".to_string()]));
    }
}
