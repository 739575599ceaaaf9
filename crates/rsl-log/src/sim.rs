//! Crash-model simulators of a disk ([`SimDisk`], a [`Directory`]) and of persistent memory
//! ([`SimPmem`], a [`PersistentMemory`]), for crash-consistency tests and the cluster
//! simulator.
//!
//! Each keeps what is durable apart from what was only written, and enumerates (or samples)
//! the states a crash can leave:
//! - **Disk**: per file, the writes since its last `sync_data` are kept as a prefix, and
//!   the first write not kept may be torn at any sector boundary, either short (the file
//!   ends there) or zero-filled (the file has the write's length, the rest of the write
//!   reads as the old bytes or zeros). Names created, renamed or removed since the last
//!   directory sync are kept as a prefix of those operations.
//! - **Persistent memory**: every 8-byte chunk written since it last became persistent
//!   (flushed and then fenced) independently holds either its old or its new value.
//!
//! A hook runs before every sync or fence, when the set of crash states is largest, so a
//! test sees every state a crash at any instruction could leave.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use rsl_core::SplitMix64;

use crate::pmem::PersistentMemory;
use crate::vfs::{Directory, DirectoryLock, StorageFile};

/// The sector size at which the simulated disk tears writes.
pub const SECTOR_BYTES: u64 = 512;
/// The unit of persistence of simulated persistent memory.
pub const CHUNK_BYTES: u64 = 8;

type DiskHook = Box<dyn FnMut(&SimDisk) + Send>;

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
        FileOp::Write { offset, data } => {
            let end = *offset as usize + data.len();
            if content.len() < end {
                content.resize(end, 0);
            }
            content[*offset as usize..end].copy_from_slice(data);
        }
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
    locked: bool,
    syncs: u64,
    fail_syncs_after: Option<u64>,
    hook: Option<DiskHook>,
}

/// A simulated directory on a simulated disk; clones share the disk.
#[derive(Clone)]
pub struct SimDisk {
    inner: Arc<Mutex<DiskState>>,
    path: PathBuf,
}

impl std::fmt::Debug for SimDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.inner.lock();
        f.debug_struct("SimDisk")
            .field("path", &self.path)
            .field("names", &state.names.keys().collect::<Vec<_>>())
            .field("syncs", &state.syncs)
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
        SimDisk { inner: Arc::new(Mutex::new(DiskState::default())), path: PathBuf::from("/sim") }
    }

    /// A disk holding `files`, all durable.
    pub fn from_files(files: impl IntoIterator<Item = (String, Vec<u8>)>) -> SimDisk {
        let disk = SimDisk::new();
        {
            let mut state = disk.inner.lock();
            for (name, content) in files {
                let inode = state.next_inode;
                state.next_inode += 1;
                state.files.insert(
                    inode,
                    SimFileState { durable: content.clone(), ops: Vec::new(), current: content },
                );
                state.names.insert(name.clone(), inode);
                state.durable_names.insert(name, inode);
            }
        }
        disk
    }

    /// Runs `hook` before every file or directory sync, with the disk as it is then.
    pub fn set_before_sync(&self, hook: impl FnMut(&SimDisk) + Send + 'static) {
        self.inner.lock().hook = Some(Box::new(hook));
    }

    /// Makes every sync after the next `count` fail with an I/O error.
    pub fn fail_syncs_after(&self, count: u64) {
        self.inner.lock().fail_syncs_after = Some(count);
    }

    /// Syncs performed so far.
    pub fn syncs(&self) -> u64 {
        self.inner.lock().syncs
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
        let inode = match state.names.get(name) {
            Some(&inode) => inode,
            None => {
                let inode = state.next_inode;
                state.next_inode += 1;
                state.names.insert(name.to_string(), inode);
                state.durable_names.insert(name.to_string(), inode);
                inode
            }
        };
        state
            .files
            .insert(inode, SimFileState { durable: content.clone(), ops: Vec::new(), current: content });
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

    /// The disks a crash now could leave: all of them when there are at most `max`,
    /// otherwise `max` of them sampled with `seed`, always including "nothing unsynced
    /// survived" and "everything survived".
    pub fn crash_states(&self, max: usize, seed: u64) -> Vec<SimDisk> {
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

    fn sync_point(&self) -> io::Result<()> {
        let hook = self.inner.lock().hook.take();
        if let Some(mut hook) = hook {
            hook(self);
            self.inner.lock().hook = Some(hook);
        }
        let mut state = self.inner.lock();
        state.syncs += 1;
        if let Some(remaining) = state.fail_syncs_after.as_mut() {
            if *remaining == 0 {
                return Err(io::Error::other("simulated sync failure"));
            }
            *remaining -= 1;
        }
        Ok(())
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

struct SimLock {
    disk: Arc<Mutex<DiskState>>,
}

impl std::fmt::Debug for SimLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SimLock")
    }
}

impl DirectoryLock for SimLock {}

impl Drop for SimLock {
    fn drop(&mut self) {
        self.disk.lock().locked = false;
    }
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
        let mut state = self.inner.lock();
        if state.locked {
            return Ok(None);
        }
        state.locked = true;
        Ok(Some(Box::new(SimLock { disk: self.inner.clone() })))
    }

    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.names())
    }

    fn open(&self, name: &str) -> io::Result<Box<dyn StorageFile>> {
        let state = self.inner.lock();
        match state.names.get(name) {
            Some(&inode) => Ok(Box::new(SimFile { disk: self.clone(), inode })),
            None => Err(io::Error::new(io::ErrorKind::NotFound, format!("{name}: no such file"))),
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
                let inode = state.next_inode;
                state.next_inode += 1;
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
        let Some(inode) = state.names.remove(from) else {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("{from}: no such file")));
        };
        state.names.insert(to.to_string(), inode);
        state.name_ops.push(NameOp::Rename { from: from.to_string(), to: to.to_string() });
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut state = self.inner.lock();
        if state.names.remove(name).is_none() {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("{name}: no such file")));
        }
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
        self.with(|f| {
            let end = offset as usize + buf.len();
            if end > f.current.len() {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end of the file"));
            }
            buf.copy_from_slice(&f.current[offset as usize..end]);
            Ok(())
        })
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

type PmemHook = Box<dyn FnMut(&SimPmem) + Send>;

struct PmemState {
    durable: Vec<u8>,
    current: Vec<u8>,
    /// Chunks written and not yet persistent.
    outstanding: BTreeSet<u64>,
    /// Outstanding chunks flushed since their last write: persistent at the next fence.
    flushed: BTreeSet<u64>,
    fences: u64,
    fail_fences_after: Option<u64>,
    hook: Option<PmemHook>,
}

/// Simulated persistent memory; clones share the region.
#[derive(Clone)]
pub struct SimPmem {
    inner: Arc<Mutex<PmemState>>,
    name: PathBuf,
}

impl std::fmt::Debug for SimPmem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.inner.lock();
        f.debug_struct("SimPmem")
            .field("len", &state.current.len())
            .field("outstanding_chunks", &state.outstanding.len())
            .field("fences", &state.fences)
            .finish()
    }
}

impl SimPmem {
    /// A zeroed region of `len` bytes (a multiple of [`CHUNK_BYTES`]).
    pub fn new(len: u64) -> SimPmem {
        SimPmem::from_image(vec![0; len as usize])
    }

    /// A region holding `image`, all persistent.
    pub fn from_image(image: Vec<u8>) -> SimPmem {
        let state = PmemState {
            durable: image.clone(),
            current: image,
            outstanding: BTreeSet::new(),
            flushed: BTreeSet::new(),
            fences: 0,
            fail_fences_after: None,
            hook: None,
        };
        SimPmem { inner: Arc::new(Mutex::new(state)), name: PathBuf::from("/sim/pmem") }
    }

    /// Runs `hook` before every fence, with the region as it is then.
    pub fn set_before_fence(&self, hook: impl FnMut(&SimPmem) + Send + 'static) {
        self.inner.lock().hook = Some(Box::new(hook));
    }

    /// Makes every fence after the next `count` fail with an I/O error.
    pub fn fail_fences_after(&self, count: u64) {
        self.inner.lock().fail_fences_after = Some(count);
    }

    /// Fences performed so far.
    pub fn fences(&self) -> u64 {
        self.inner.lock().fences
    }

    /// The current contents (what a load would see).
    pub fn image(&self) -> Vec<u8> {
        self.inner.lock().current.clone()
    }

    /// Overwrites bytes durably, e.g. to inject damage.
    pub fn corrupt(&self, offset: u64, bytes: &[u8]) {
        let mut state = self.inner.lock();
        let range = offset as usize..offset as usize + bytes.len();
        state.current[range.clone()].copy_from_slice(bytes);
        state.durable[range].copy_from_slice(bytes);
    }

    /// Chunks written and not yet persistent.
    pub fn outstanding_chunks(&self) -> usize {
        self.inner.lock().outstanding.len()
    }

    /// The images a crash now could leave: every subset of the outstanding chunks when
    /// there are at most `max` subsets, otherwise `max` sampled with `seed`, always
    /// including "none persisted" and "all persisted".
    pub fn crash_images(&self, max: usize, seed: u64) -> Vec<Vec<u8>> {
        let state = self.inner.lock();
        let chunks: Vec<u64> = state.outstanding.iter().copied().collect();
        let build = |persisted: &dyn Fn(usize) -> bool| {
            let mut image = state.durable.clone();
            for (i, &chunk) in chunks.iter().enumerate() {
                if persisted(i) {
                    let range = (chunk * CHUNK_BYTES) as usize..((chunk + 1) * CHUNK_BYTES) as usize;
                    image[range.clone()].copy_from_slice(&state.current[range]);
                }
            }
            image
        };
        if chunks.len() < 63 && (1u64 << chunks.len()) <= max as u64 {
            return (0..1u64 << chunks.len()).map(|mask| build(&|i| mask >> i & 1 == 1)).collect();
        }
        let mut rng = SplitMix64::new(seed);
        let mut images = vec![build(&|_| false), build(&|_| true)];
        while images.len() < max {
            // Vary the density: some states keep few chunks, some most.
            let keep_per_256 = rng.below(257);
            let mask: Vec<bool> = chunks.iter().map(|_| rng.below(256) < keep_per_256).collect();
            images.push(build(&|i| mask[i]));
        }
        images
    }
}

impl PersistentMemory for SimPmem {
    fn len(&self) -> u64 {
        self.inner.lock().current.len() as u64
    }

    fn name(&self) -> &Path {
        &self.name
    }

    fn read(&self, offset: u64, buf: &mut [u8]) {
        let state = self.inner.lock();
        buf.copy_from_slice(&state.current[offset as usize..offset as usize + buf.len()]);
    }

    fn write(&mut self, offset: u64, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut state = self.inner.lock();
        state.current[offset as usize..offset as usize + bytes.len()].copy_from_slice(bytes);
        let (first, last) = (offset / CHUNK_BYTES, (offset + bytes.len() as u64 - 1) / CHUNK_BYTES);
        for chunk in first..=last {
            state.outstanding.insert(chunk);
            state.flushed.remove(&chunk);
        }
    }

    fn flush(&mut self, offset: u64, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        let mut state = self.inner.lock();
        let (first, last) = (offset / CHUNK_BYTES, (offset + len - 1) / CHUNK_BYTES);
        let chunks: Vec<u64> = state.outstanding.range(first..=last).copied().collect();
        state.flushed.extend(chunks);
        Ok(())
    }

    fn fence(&mut self) -> io::Result<()> {
        let hook = self.inner.lock().hook.take();
        if let Some(mut hook) = hook {
            hook(self);
            self.inner.lock().hook = Some(hook);
        }
        let mut state = self.inner.lock();
        state.fences += 1;
        if let Some(remaining) = state.fail_fences_after.as_mut() {
            if *remaining == 0 {
                return Err(io::Error::other("simulated fence failure"));
            }
            *remaining -= 1;
        }
        let flushed = std::mem::take(&mut state.flushed);
        for chunk in flushed {
            let range = (chunk * CHUNK_BYTES) as usize..((chunk + 1) * CHUNK_BYTES) as usize;
            let bytes = state.current[range.clone()].to_vec();
            state.durable[range].copy_from_slice(&bytes);
            state.outstanding.remove(&chunk);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn outstanding_chunks_persist_independently_until_fenced() {
        let mut pmem = SimPmem::new(64);
        pmem.write(0, &[9; 16]);
        let images: BTreeSet<Vec<u8>> = pmem.crash_images(100, 1).into_iter().collect();
        assert_eq!(images.len(), 4);
        pmem.flush(0, 8).unwrap();
        pmem.fence().unwrap();
        assert_eq!(pmem.outstanding_chunks(), 1, "the unflushed chunk is still outstanding");
        assert!(pmem.crash_images(100, 1).iter().all(|image| image[..8] == [9; 8]));
    }
}
