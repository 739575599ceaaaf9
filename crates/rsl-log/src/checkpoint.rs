//! The checkpoint store: state-machine snapshots at a slot, written through a
//! [`CheckpointWriter`] (an [`std::io::Write`]), checksummed in blocks, and published
//! atomically: temporary name, fsync, rename, directory fsync. The newest `keep` are kept.
//! [`CheckpointStore::load_newest`] returns the newest checkpoint that verifies, falling
//! back to older ones and saying which were skipped and why.
//!
//! For transfer to a lagging replica a checkpoint streams as raw file chunks
//! ([`CheckpointStore::chunks`]) and is rebuilt on the other side by a
//! [`CheckpointReceiver`], which verifies the whole file before publishing it.
//!
//! The log may only be truncated below the oldest kept checkpoint if a fallback to it is
//! to find every later slot in the log: [`CheckpointStore::truncation_floor`].

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use rsl_core::Slot;

use crate::codec::{u32_at, u64_at, FileHeader, Refusal};
use crate::error::CheckpointError;
use crate::vfs::{
    open_read_only, Directory, DirectoryLock, OsDirectory, StorageFile, LOCK_FILE, TEMPORARY_SUFFIX,
};

/// First bytes of a checkpoint file.
pub const CHECKPOINT_MAGIC: [u8; 8] = *b"RSLCKPT\0";
/// First bytes of a checkpoint's trailer.
pub const TRAILER_MAGIC: [u8; 8] = *b"RSLCKEND";
/// The format version this build writes and reads.
pub const CHECKPOINT_VERSION: u32 = 1;
/// Bytes of the header.
pub const CHECKPOINT_HEADER_BYTES: u64 = 64;
/// Bytes of a block's header (length and CRC).
pub const BLOCK_HEADER_BYTES: u64 = 8;
/// Bytes of the trailer.
pub const TRAILER_BYTES: u64 = 32;
/// Largest block size accepted.
pub const BLOCK_BYTES_MAX: u32 = 16 << 20;

const SUFFIX: &str = ".ckpt";

/// Options of a [`CheckpointStore`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointOptions {
    /// How many checkpoints to keep (the newest). At least 1; default 2 so that a damaged
    /// newest one has a fallback.
    pub keep: u32,
    /// Data bytes per checksummed block. Default 64 KiB.
    pub block_bytes: u32,
}

impl Default for CheckpointOptions {
    fn default() -> Self {
        CheckpointOptions { keep: 2, block_bytes: 64 << 10 }
    }
}

/// A published checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointInfo {
    /// The slot the state machine's state reflects.
    pub slot: Slot,
    /// Bytes of state-machine data.
    pub data_bytes: u64,
    /// Bytes of the file.
    pub file_bytes: u64,
    /// The file.
    pub path: PathBuf,
}

/// The outcome of [`CheckpointStore::load_newest`].
#[derive(Debug)]
pub struct LoadOutcome {
    /// The newest checkpoint that verified, if any.
    pub checkpoint: Option<CheckpointReader>,
    /// Newer checkpoints that did not verify, newest first, with the reason.
    pub skipped: Vec<CheckpointError>,
}

/// The name of the checkpoint file for `slot`.
pub fn checkpoint_name(slot: Slot) -> String {
    format!("checkpoint-{:020}{SUFFIX}", slot.0)
}

/// Parses a checkpoint file name.
pub fn parse_checkpoint_name(name: &str) -> Option<Slot> {
    let digits = name.strip_prefix("checkpoint-")?.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(Slot)
}

/// The start of a checkpoint header: magic, format version, CRC.
const HEADER: FileHeader =
    FileHeader { magic: CHECKPOINT_MAGIC, version: CHECKPOINT_VERSION, file: "a checkpoint", name: "header" };

fn encode_header(slot: Slot, block_bytes: u32) -> [u8; CHECKPOINT_HEADER_BYTES as usize] {
    let mut header = [0u8; CHECKPOINT_HEADER_BYTES as usize];
    header[16..24].copy_from_slice(&slot.0.to_le_bytes());
    header[24..28].copy_from_slice(&block_bytes.to_le_bytes());
    HEADER.seal(&mut header);
    header
}

fn block_crc(slot: Slot, index: u64, data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&slot.0.to_le_bytes());
    let crc = crc32c::crc32c_append(crc, &index.to_le_bytes());
    crc32c::crc32c_append(crc, data)
}

fn encode_trailer(slot: Slot, blocks: u64, data_bytes: u64) -> [u8; TRAILER_BYTES as usize] {
    let mut trailer = [0u8; TRAILER_BYTES as usize];
    trailer[0..8].copy_from_slice(&TRAILER_MAGIC);
    trailer[8..16].copy_from_slice(&blocks.to_le_bytes());
    trailer[16..24].copy_from_slice(&data_bytes.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&slot.0.to_le_bytes()), &trailer[0..24]);
    trailer[24..28].copy_from_slice(&crc.to_le_bytes());
    trailer
}

/// A directory of checkpoints; see the module docs.
#[derive(Debug)]
pub struct CheckpointStore {
    dir: Box<dyn Directory>,
    _lock: Box<dyn DirectoryLock>,
    options: CheckpointOptions,
}

impl CheckpointStore {
    /// Opens (creating if needed) the checkpoint directory `path`.
    pub fn open(
        path: impl AsRef<Path>,
        options: &CheckpointOptions,
    ) -> Result<CheckpointStore, CheckpointError> {
        let path = path.as_ref();
        let dir = OsDirectory::open(path).map_err(|e| CheckpointError::io(path, e))?;
        CheckpointStore::open_in(Box::new(dir), options)
    }

    /// Opens the checkpoint store in `dir` (any [`Directory`]). Leftover temporary files
    /// (interrupted writes) are deleted.
    pub fn open_in(
        dir: Box<dyn Directory>,
        options: &CheckpointOptions,
    ) -> Result<CheckpointStore, CheckpointError> {
        if options.keep == 0 || options.block_bytes == 0 || options.block_bytes > BLOCK_BYTES_MAX {
            return Err(CheckpointError::InvalidOption {
                reason: format!(
                    "keep must be at least 1 (is {}), block_bytes in 1..={BLOCK_BYTES_MAX} (is {})",
                    options.keep, options.block_bytes
                ),
            });
        }
        let dir_path = dir.path().to_path_buf();
        let lock = dir.try_lock().map_err(|e| CheckpointError::io(&dir_path, e))?;
        let lock = lock.ok_or_else(|| CheckpointError::Locked { dir: dir_path.clone() })?;
        let store = CheckpointStore { dir, _lock: lock, options: options.clone() };
        let names = store.dir.list().map_err(|e| CheckpointError::io(&dir_path, e))?;
        let mut removed = false;
        for name in names.iter().filter(|n| n.ends_with(TEMPORARY_SUFFIX) && n.starts_with("checkpoint-")) {
            store.dir.remove(name).map_err(|e| CheckpointError::io(store.path_of(name), e))?;
            removed = true;
        }
        if removed {
            store.dir.sync().map_err(|e| CheckpointError::io(&dir_path, e))?;
        }
        Ok(store)
    }

    fn path_of(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Slots of the stored checkpoints, oldest first (not verified).
    pub fn list(&self) -> Result<Vec<Slot>, CheckpointError> {
        let names = self.dir.list().map_err(|e| CheckpointError::io(self.dir.path(), e))?;
        let mut slots: Vec<Slot> =
            names.iter().filter(|n| *n != LOCK_FILE).filter_map(|n| parse_checkpoint_name(n)).collect();
        slots.sort_unstable();
        Ok(slots)
    }

    /// The oldest kept checkpoint.
    pub fn oldest_kept(&self) -> Result<Option<Slot>, CheckpointError> {
        Ok(self.list()?.first().copied())
    }

    /// How far the log may be truncated when asked to truncate below `below`: no further
    /// than the slot after the oldest kept checkpoint, so that falling back to it still
    /// finds every later slot in the log. With no checkpoint, nothing may be truncated.
    pub fn truncation_floor(&self, below: Slot) -> Result<Slot, CheckpointError> {
        Ok(match self.oldest_kept()? {
            Some(oldest) => below.min(oldest.next()),
            None => Slot::ZERO,
        })
    }

    /// Starts writing the checkpoint at `slot`. Nothing is visible until
    /// [`CheckpointWriter::finish`]; dropping the writer discards it.
    pub fn writer(&mut self, slot: Slot) -> Result<CheckpointWriter<'_>, CheckpointError> {
        let block_bytes = self.options.block_bytes;
        let mut file = self.unpublished(slot)?;
        let header = encode_header(slot, block_bytes);
        file.append(&header).map_err(|e| CheckpointError::io(file.temporary_path(), e))?;
        let block_bytes = block_bytes as usize;
        Ok(CheckpointWriter {
            file,
            block: Vec::with_capacity(block_bytes),
            block_bytes,
            blocks: 0,
            data_bytes: 0,
        })
    }

    /// Starts receiving the raw bytes of the checkpoint at `slot` from a peer. Nothing is
    /// visible until [`CheckpointReceiver::finish`] verified the whole file.
    pub fn receiver(&mut self, slot: Slot) -> Result<CheckpointReceiver<'_>, CheckpointError> {
        Ok(CheckpointReceiver { file: self.unpublished(slot)? })
    }

    /// Creates the file of the checkpoint at `slot` under its temporary name.
    fn unpublished(&mut self, slot: Slot) -> Result<Unpublished<'_>, CheckpointError> {
        let name = checkpoint_name(slot);
        let temporary = format!("{name}{TEMPORARY_SUFFIX}");
        let file =
            self.dir.create(&temporary).map_err(|e| CheckpointError::io(self.path_of(&temporary), e))?;
        Ok(Unpublished { store: self, slot, name, temporary, file, offset: 0, published: false })
    }

    fn open_file(&self, slot: Slot) -> Result<(Box<dyn StorageFile>, PathBuf), CheckpointError> {
        let name = checkpoint_name(slot);
        let path = self.path_of(&name);
        match self.dir.open(&name) {
            Ok(file) => Ok((file, path)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(CheckpointError::NotFound { slot }),
            Err(e) => Err(CheckpointError::io(path, e)),
        }
    }

    /// Reads the whole checkpoint at `slot` and checks every block and the trailer.
    pub fn verify(&self, slot: Slot) -> Result<CheckpointInfo, CheckpointError> {
        let (file, path) = self.open_file(slot)?;
        Ok(verify_file(&*file, &path, slot)?.info)
    }

    /// A reader of the state-machine data of the checkpoint at `slot`, after verifying it.
    pub fn reader(&self, slot: Slot) -> Result<CheckpointReader, CheckpointError> {
        let (file, path) = self.open_file(slot)?;
        let verified = verify_file(&*file, &path, slot)?;
        Ok(CheckpointReader::new(file, verified.info, verified.block_bytes))
    }

    /// The newest checkpoint that verifies; see [`LoadOutcome`].
    pub fn load_newest(&self) -> Result<LoadOutcome, CheckpointError> {
        let mut skipped = Vec::new();
        for slot in self.list()?.into_iter().rev() {
            match self.reader(slot) {
                Ok(reader) => return Ok(LoadOutcome { checkpoint: Some(reader), skipped }),
                Err(error @ (CheckpointError::Corrupt { .. } | CheckpointError::NotFound { .. })) => {
                    skipped.push(error)
                }
                Err(error) => return Err(error),
            }
        }
        Ok(LoadOutcome { checkpoint: None, skipped })
    }

    /// The raw bytes of the checkpoint file at `slot` in chunks of `chunk_bytes`, for
    /// transfer. The receiver verifies them.
    pub fn chunks(&self, slot: Slot, chunk_bytes: u32) -> Result<CheckpointChunks, CheckpointError> {
        let (file, path) = self.open_file(slot)?;
        let len = file.len().map_err(|e| CheckpointError::io(&path, e))?;
        Ok(CheckpointChunks { file, path, offset: 0, len, chunk_bytes: u64::from(chunk_bytes.max(1)) })
    }

    /// Publishes a synced temporary file and deletes the oldest checkpoints beyond `keep`;
    /// never the one just published, even when it is older than the others (a checkpoint
    /// received from a peer to re-seed from).
    fn publish(&mut self, temporary: &str, name: &str) -> Result<(), CheckpointError> {
        self.dir.rename(temporary, name).map_err(|e| CheckpointError::io(self.path_of(temporary), e))?;
        self.dir.sync().map_err(|e| CheckpointError::io(self.dir.path(), e))?;
        let slots = self.list()?;
        let excess = slots.len().saturating_sub(self.options.keep as usize);
        let doomed: Vec<Slot> =
            slots.into_iter().filter(|slot| checkpoint_name(*slot) != name).take(excess).collect();
        self.remove(&doomed)
    }

    /// Deletes every checkpoint newer than `slot`; returns their slots. A replica that
    /// re-seeded its state from an older checkpoint drops what it saved from the state it
    /// replaced.
    pub fn remove_newer_than(&mut self, slot: Slot) -> Result<Vec<Slot>, CheckpointError> {
        let newer: Vec<Slot> = self.list()?.into_iter().filter(|s| *s > slot).collect();
        self.remove(&newer)?;
        Ok(newer)
    }

    /// Deletes the checkpoints at `slots` and syncs the directory.
    fn remove(&mut self, slots: &[Slot]) -> Result<(), CheckpointError> {
        for slot in slots {
            let old = checkpoint_name(*slot);
            self.dir.remove(&old).map_err(|e| CheckpointError::io(self.path_of(&old), e))?;
        }
        if !slots.is_empty() {
            self.dir.sync().map_err(|e| CheckpointError::io(self.dir.path(), e))?;
        }
        Ok(())
    }
}

/// What [`inspect_file`] found in a checkpoint file that verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointFile {
    /// Slot, sizes and path.
    pub info: CheckpointInfo,
    /// The format version ([`CHECKPOINT_VERSION`]).
    pub version: u32,
    /// Data bytes per block, as the header states.
    pub block_bytes: u32,
    /// Blocks of data.
    pub blocks: u64,
}

/// The files of a checkpoint directory, as [`list_dir`] finds them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckpointListing {
    /// Checkpoint files and the slots their names give, oldest first.
    pub files: Vec<(Slot, PathBuf)>,
    /// Leftover temporary files (an interrupted write; opening the store deletes them).
    pub temporary: Vec<PathBuf>,
}

/// The checkpoint files of directory `dir` and leftover temporary files, without opening
/// it as a store: no lock is taken and nothing is deleted. For offline tools.
pub fn list_dir(dir: &Path) -> Result<CheckpointListing, CheckpointError> {
    let entries = std::fs::read_dir(dir).map_err(|e| CheckpointError::io(dir, e))?;
    let (mut files, mut temporary) = (Vec::new(), Vec::new());
    for entry in entries {
        let name = entry.map_err(|e| CheckpointError::io(dir, e))?.file_name().to_string_lossy().into_owned();
        if let Some(slot) = parse_checkpoint_name(&name) {
            files.push((slot, dir.join(&name)));
        } else if name.starts_with("checkpoint-") && name.ends_with(TEMPORARY_SUFFIX) {
            temporary.push(dir.join(&name));
        }
    }
    files.sort();
    temporary.sort();
    Ok(CheckpointListing { files, temporary })
}

/// Verifies the checkpoint file at `path` as loading does (header, every block CRC, block
/// sizes, trailer), read-only and without opening its directory as a store. Its slot is
/// the one its name gives (the header must agree), or for a file not named like a
/// checkpoint the one its header states. For offline tools.
pub fn inspect_file(path: &Path) -> Result<CheckpointFile, CheckpointError> {
    let (file, slot) = open_checked(path)?;
    let verified = verify_file(&*file, path, slot)?;
    Ok(CheckpointFile {
        info: verified.info,
        version: CHECKPOINT_VERSION,
        block_bytes: verified.block_bytes,
        blocks: verified.blocks,
    })
}

/// A reader of the state-machine data of the checkpoint file at `path`, after verifying it
/// as [`inspect_file`] does.
pub fn open_file(path: &Path) -> Result<CheckpointReader, CheckpointError> {
    let (file, slot) = open_checked(path)?;
    let verified = verify_file(&*file, path, slot)?;
    Ok(CheckpointReader::new(file, verified.info, verified.block_bytes))
}

/// Opens `path` read-only and says which slot it must hold.
fn open_checked(path: &Path) -> Result<(Box<dyn StorageFile>, Slot), CheckpointError> {
    let file = open_read_only(path).map_err(|e| CheckpointError::io(path, e))?;
    let named = path.file_name().and_then(|n| n.to_str()).and_then(parse_checkpoint_name);
    let slot = match named {
        Some(slot) => slot,
        None => {
            let mut header = [0u8; CHECKPOINT_HEADER_BYTES as usize];
            if file.read_at(&mut header, 0).is_err() {
                let len = file.len().map_err(|e| CheckpointError::io(path, e))?;
                let reason = format!("file of {len} bytes is shorter than a checkpoint header");
                return Err(CheckpointError::corrupt(path, 0, reason));
            }
            HEADER.check(&header).map_err(|refusal| refusal.checkpoint_error(path))?;
            Slot(u64_at(&header, 16))
        }
    };
    Ok((file, slot))
}

/// A checkpoint file that verified.
struct Verified {
    info: CheckpointInfo,
    block_bytes: u32,
    blocks: u64,
}

/// Verifies a whole checkpoint file, streaming one block at a time; returns what it holds
/// and its block size.
fn verify_file(file: &dyn StorageFile, path: &Path, slot: Slot) -> Result<Verified, CheckpointError> {
    let len = file.len().map_err(|e| CheckpointError::io(path, e))?;
    let corrupt = |offset: u64, reason: String| CheckpointError::corrupt(path, offset, reason);
    if len < CHECKPOINT_HEADER_BYTES + TRAILER_BYTES {
        return Err(corrupt(0, format!("file of {len} bytes is shorter than a header and trailer")));
    }
    let mut header = [0u8; CHECKPOINT_HEADER_BYTES as usize];
    file.read_at(&mut header, 0).map_err(|e| CheckpointError::io(path, e))?;
    let block_bytes = check_header(&header, slot).map_err(|refusal| refusal.checkpoint_error(path))?;
    let mut offset = CHECKPOINT_HEADER_BYTES;
    let mut blocks = 0u64;
    let mut data_bytes = 0u64;
    let mut short_seen = false;
    let mut data = vec![0u8; block_bytes as usize];
    loop {
        if len - offset < BLOCK_HEADER_BYTES {
            return Err(corrupt(
                offset,
                format!("{} bytes left, expected a block or the trailer", len - offset),
            ));
        }
        let mut head = [0u8; BLOCK_HEADER_BYTES as usize];
        file.read_at(&mut head, offset).map_err(|e| CheckpointError::io(path, e))?;
        if head == TRAILER_MAGIC {
            let left = len - offset;
            if left < TRAILER_BYTES {
                return Err(corrupt(
                    offset,
                    format!("trailer cut short: {left} of its {TRAILER_BYTES} bytes"),
                ));
            }
            if left > TRAILER_BYTES {
                return Err(corrupt(
                    offset,
                    format!("trailer followed by {} more bytes", left - TRAILER_BYTES),
                ));
            }
            let mut trailer = [0u8; TRAILER_BYTES as usize];
            file.read_at(&mut trailer, offset).map_err(|e| CheckpointError::io(path, e))?;
            if trailer != encode_trailer(slot, blocks, data_bytes) {
                return Err(corrupt(
                    offset,
                    format!(
                        "trailer does not match {blocks} blocks and {data_bytes} bytes (says {} and {})",
                        u64_at(&trailer, 8),
                        u64_at(&trailer, 16)
                    ),
                ));
            }
            let info = CheckpointInfo { slot, data_bytes, file_bytes: len, path: path.to_path_buf() };
            return Ok(Verified { info, block_bytes, blocks });
        }
        let block_len = u32_at(&head, 0);
        if block_len == 0 || block_len > block_bytes {
            return Err(corrupt(offset, format!("block length {block_len}, expected 1..={block_bytes}")));
        }
        if short_seen {
            return Err(corrupt(offset, "a block follows a short block".into()));
        }
        if len - offset - BLOCK_HEADER_BYTES < u64::from(block_len) {
            return Err(corrupt(offset, format!("block of {block_len} bytes runs past the end of the file")));
        }
        let data = &mut data[..block_len as usize];
        file.read_at(data, offset + BLOCK_HEADER_BYTES).map_err(|e| CheckpointError::io(path, e))?;
        let (stored, computed) = (u32_at(&head, 4), block_crc(slot, blocks, data));
        if stored != computed {
            return Err(corrupt(
                offset,
                format!("block {blocks} CRC {stored:#010x}, computed {computed:#010x}"),
            ));
        }
        short_seen = block_len < block_bytes;
        blocks += 1;
        data_bytes += u64::from(block_len);
        offset += BLOCK_HEADER_BYTES + u64::from(block_len);
    }
}

fn check_header(header: &[u8], slot: Slot) -> Result<u32, Refusal> {
    HEADER.check(header)?;
    let stated = u64_at(header, 16);
    if stated != slot.0 {
        return Err(Refusal::damaged(16, format!("header is for slot {stated}, the file name says {slot}")));
    }
    let block_bytes = u32_at(header, 24);
    if block_bytes == 0 || block_bytes > BLOCK_BYTES_MAX {
        return Err(Refusal::damaged(24, format!("block size {block_bytes} out of range")));
    }
    Ok(block_bytes)
}

/// A checkpoint file being written under its temporary name, by a [`CheckpointWriter`] or
/// a [`CheckpointReceiver`]. Dropped unpublished, it is deleted (best effort: a leftover is
/// deleted by the next open anyway).
#[derive(Debug)]
struct Unpublished<'a> {
    store: &'a mut CheckpointStore,
    slot: Slot,
    name: String,
    temporary: String,
    file: Box<dyn StorageFile>,
    /// Bytes written.
    offset: u64,
    published: bool,
}

impl Unpublished<'_> {
    fn temporary_path(&self) -> PathBuf {
        self.store.path_of(&self.temporary)
    }

    /// Writes `bytes` after what was written.
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_at(bytes, self.offset)?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    /// Publishes the file (synced by the caller) and returns its path.
    fn publish(&mut self) -> Result<PathBuf, CheckpointError> {
        self.published = true;
        self.store.publish(&self.temporary, &self.name)?;
        Ok(self.store.path_of(&self.name))
    }
}

impl Drop for Unpublished<'_> {
    fn drop(&mut self) {
        if !self.published {
            let _ = self.store.dir.remove(&self.temporary);
        }
    }
}

/// Writes one checkpoint; see [`CheckpointStore::writer`].
#[derive(Debug)]
pub struct CheckpointWriter<'a> {
    file: Unpublished<'a>,
    block: Vec<u8>,
    block_bytes: usize,
    blocks: u64,
    data_bytes: u64,
}

impl CheckpointWriter<'_> {
    fn write_block(&mut self) -> io::Result<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        let mut frame = Vec::with_capacity(BLOCK_HEADER_BYTES as usize + self.block.len());
        frame.extend_from_slice(&(self.block.len() as u32).to_le_bytes());
        frame.extend_from_slice(&block_crc(self.file.slot, self.blocks, &self.block).to_le_bytes());
        frame.extend_from_slice(&self.block);
        self.file.append(&frame)?;
        self.blocks += 1;
        self.data_bytes += self.block.len() as u64;
        self.block.clear();
        Ok(())
    }

    /// Writes the last block and the trailer, syncs, renames the file into place, syncs
    /// the directory and deletes checkpoints beyond the newest `keep`.
    pub fn finish(mut self) -> Result<CheckpointInfo, CheckpointError> {
        let path = self.file.temporary_path();
        self.write_block().map_err(|e| CheckpointError::io(&path, e))?;
        let trailer = encode_trailer(self.file.slot, self.blocks, self.data_bytes);
        self.file.append(&trailer).map_err(|e| CheckpointError::io(&path, e))?;
        self.file.file.sync_all().map_err(|e| CheckpointError::io(&path, e))?;
        let path = self.file.publish()?;
        Ok(CheckpointInfo {
            slot: self.file.slot,
            data_bytes: self.data_bytes,
            file_bytes: self.file.offset,
            path,
        })
    }
}

impl Write for CheckpointWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.block_bytes - self.block.len();
        let taken = room.min(buf.len());
        self.block.extend_from_slice(&buf[..taken]);
        if self.block.len() == self.block_bytes {
            self.write_block()?;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Receives a checkpoint's raw bytes; see [`CheckpointStore::receiver`].
#[derive(Debug)]
pub struct CheckpointReceiver<'a> {
    file: Unpublished<'a>,
}

impl CheckpointReceiver<'_> {
    /// Appends the next chunk.
    pub fn write_chunk(&mut self, chunk: &[u8]) -> Result<(), CheckpointError> {
        self.file.append(chunk).map_err(|e| CheckpointError::io(self.file.temporary_path(), e))
    }

    /// Syncs, verifies the whole file, and publishes it like a written checkpoint.
    pub fn finish(mut self) -> Result<CheckpointInfo, CheckpointError> {
        let path = self.file.temporary_path();
        self.file.file.sync_all().map_err(|e| CheckpointError::io(&path, e))?;
        let verified = verify_file(&*self.file.file, &path, self.file.slot)?;
        let path = self.file.publish()?;
        Ok(CheckpointInfo { path, ..verified.info })
    }
}

/// Reads a checkpoint's state-machine data, checking each block as it goes.
#[derive(Debug)]
pub struct CheckpointReader {
    file: Box<dyn StorageFile>,
    info: CheckpointInfo,
    offset: u64,
    block_index: u64,
    block: Vec<u8>,
    position: usize,
    block_bytes: u32,
    remaining: u64,
}

impl CheckpointReader {
    fn new(file: Box<dyn StorageFile>, info: CheckpointInfo, block_bytes: u32) -> CheckpointReader {
        let remaining = info.data_bytes;
        CheckpointReader {
            file,
            info,
            offset: CHECKPOINT_HEADER_BYTES,
            block_index: 0,
            block: Vec::new(),
            position: 0,
            block_bytes,
            remaining,
        }
    }

    /// The checkpoint's slot.
    pub fn slot(&self) -> Slot {
        self.info.slot
    }

    /// What was verified when the reader was opened.
    pub fn info(&self) -> &CheckpointInfo {
        &self.info
    }

    fn next_block(&mut self) -> io::Result<()> {
        let corrupt = |offset: u64, reason: String| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                CheckpointError::corrupt(&self.info.path, offset, reason),
            )
        };
        let mut head = [0u8; BLOCK_HEADER_BYTES as usize];
        self.file.read_at(&mut head, self.offset)?;
        let len = u32_at(&head, 0);
        if len == 0 || len > self.block_bytes || u64::from(len) > self.remaining {
            return Err(corrupt(self.offset, format!("block length {len} changed since verification")));
        }
        self.block.resize(len as usize, 0);
        self.file.read_at(&mut self.block, self.offset + BLOCK_HEADER_BYTES)?;
        let (stored, computed) = (u32_at(&head, 4), block_crc(self.info.slot, self.block_index, &self.block));
        if stored != computed {
            return Err(corrupt(
                self.offset,
                format!("block {} CRC {stored:#010x}, computed {computed:#010x}", self.block_index),
            ));
        }
        self.offset += BLOCK_HEADER_BYTES + u64::from(len);
        self.block_index += 1;
        self.remaining -= u64::from(len);
        self.position = 0;
        Ok(())
    }
}

impl Read for CheckpointReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.position == self.block.len() {
            if self.remaining == 0 {
                return Ok(0);
            }
            self.next_block()?;
        }
        let taken = (self.block.len() - self.position).min(buf.len());
        buf[..taken].copy_from_slice(&self.block[self.position..self.position + taken]);
        self.position += taken;
        Ok(taken)
    }
}

/// Raw chunks of a checkpoint file; see [`CheckpointStore::chunks`].
#[derive(Debug)]
pub struct CheckpointChunks {
    file: Box<dyn StorageFile>,
    path: PathBuf,
    offset: u64,
    len: u64,
    chunk_bytes: u64,
}

impl CheckpointChunks {
    /// Bytes of the whole file.
    pub fn file_bytes(&self) -> u64 {
        self.len
    }
}

impl Iterator for CheckpointChunks {
    type Item = Result<Bytes, CheckpointError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.offset >= self.len {
            return None;
        }
        let size = self.chunk_bytes.min(self.len - self.offset);
        let mut chunk = vec![0u8; size as usize];
        if let Err(e) = self.file.read_at(&mut chunk, self.offset) {
            self.offset = self.len;
            return Some(Err(CheckpointError::io(&self.path, e)));
        }
        self.offset += size;
        Some(Ok(Bytes::from(chunk)))
    }
}
