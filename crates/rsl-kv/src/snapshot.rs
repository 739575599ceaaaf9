//! Backups of a running ring (etcd's `snapshot save` / `snapshot restore`): the snapshot
//! file format, its verification, and the restore that starts a new ring from one.
//!
//! `rsl-kv snapshot save FILE` asks the primary (the `Snapshot` RPC, admin role) for a
//! checkpoint of its state machine: a linearizable read, so the state holds every write
//! acknowledged before the call, as of the last slot a write was applied in. The server
//! wraps it in the file below and streams it; the client verifies the whole file before
//! it renames it into place. `rsl-kv snapshot restore FILE --data-dir DIR ...` verifies it
//! again, then writes it into a new data directory as the checkpoint a new ring starts
//! from: run it once per member of the new ring, each with its own node id and directory,
//! then start the servers.
//!
//! ```text
//! 0        8        12       20       28          36          44            52      56
//! +--------+--------+--------+--------+-----------+-----------+-------------+-------+------------------+
//! | magic  |version | ring   | slot   | created   | source    | config-     | member| members          |
//! |RSLKVSNP| u32 = 1| u64    | u64    | unix ms   | node u64  | uration u64 | count | u64 x count      |
//! |        |        |        |        | u64       |           |             | u32   |                  |
//! +--------+--------+--------+--------+-----------+-----------+-------------+-------+------------------+
//! | data bytes u64 | data: a `KvStateMachine` checkpoint (its own magic, version, CRC) | CRC32C u32 |
//! +----------------+-------------------------------------------------------------------+------------+
//!   CRC32C over every byte before it. Little-endian throughout.
//! ```

use std::io::Write as _;
use std::path::{Path, PathBuf};

use rsl::core::MEMBERS_MAX;
use rsl::log::{CheckpointOptions, CheckpointStore};
use rsl::{Configuration, NodeId, RingId, Slot};

use crate::bootstrap::{self, BootstrapError, StartMode};
use crate::machine::{CheckpointFormatError, KvStateMachine};

/// First bytes of a snapshot file.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"RSLKVSNP";
/// The snapshot format version this build writes and reads.
pub const SNAPSHOT_VERSION: u32 = 1;
/// Bytes before the members.
const FIXED_HEADER_BYTES: usize = 56;

/// What a snapshot's header says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The ring it was taken from.
    pub ring: u64,
    /// The slot the state reflects.
    pub slot: u64,
    /// When it was taken, in milliseconds since the Unix epoch (the server's clock).
    pub created_unix_ms: u64,
    /// The replica that served it.
    pub source: u64,
    /// The configuration in force when it was taken: its number and members.
    pub configuration: u64,
    /// The members of that configuration.
    pub members: Vec<u64>,
}

/// Why a snapshot file was refused, or a restore could not be done.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file is not a snapshot, or is damaged.
    #[error("{} at byte {offset}: {reason}", .path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where the damage is.
        offset: u64,
        /// What was expected and what was found.
        reason: String,
    },
    /// The file is a snapshot of a format version this build does not read.
    #[error("{} is snapshot format version {found}; this build reads version {supported}", .path.display())]
    Version {
        /// The file.
        path: PathBuf,
        /// The version found.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// The state machine's checkpoint inside does not load.
    #[error("{}: the state inside does not load: {source}", .path.display())]
    State {
        /// The file.
        path: PathBuf,
        /// Why.
        source: CheckpointFormatError,
    },
    /// The members given for the new ring are not usable.
    #[error("new ring members {members:?}: {problem}")]
    Members {
        /// The members given.
        members: Vec<u64>,
        /// What is wrong.
        problem: String,
    },
    /// The data directory cannot take the restore (it already holds a ring, ...).
    #[error("{0}")]
    DataDir(#[from] BootstrapError),
    /// Writing the checkpoint into the data directory failed.
    #[error("writing the checkpoint: {0}")]
    Checkpoint(#[from] rsl::log::CheckpointError),
}

/// The snapshot file of `data` (a [`KvStateMachine::save`] checkpoint at `info.slot`).
pub fn encode(info: &SnapshotInfo, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FIXED_HEADER_BYTES + 8 * info.members.len() + 12 + data.len());
    out.extend_from_slice(&SNAPSHOT_MAGIC);
    out.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    for word in [info.ring, info.slot, info.created_unix_ms, info.source, info.configuration] {
        out.extend_from_slice(&word.to_le_bytes());
    }
    out.extend_from_slice(&(info.members.len() as u32).to_le_bytes());
    for member in &info.members {
        out.extend_from_slice(&member.to_le_bytes());
    }
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(data);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// A snapshot that verified: its header, and the state machine it holds.
#[derive(Debug)]
pub struct Verified {
    /// The header.
    pub info: SnapshotInfo,
    /// The state, loaded and checked.
    pub machine: KvStateMachine,
    /// The state machine's checkpoint bytes, as stored.
    pub data: Vec<u8>,
}

/// Checks the snapshot `bytes` read from `path`: magic, version, lengths, checksum, and
/// that the state inside loads, at the slot the header names. Nothing is trusted before
/// the checksum matches.
pub fn verify(path: &Path, bytes: &[u8]) -> Result<Verified, SnapshotError> {
    let corrupt = |offset: usize, reason: String| SnapshotError::Corrupt {
        path: path.to_owned(),
        offset: offset as u64,
        reason,
    };
    if bytes.len() < 12 || bytes[..8] != SNAPSHOT_MAGIC {
        let found = &bytes[..bytes.len().min(8)];
        return Err(corrupt(
            0,
            format!("not an rsl-kv snapshot: magic {found:02x?}, expected {SNAPSHOT_MAGIC:02x?}"),
        ));
    }
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    if bytes.len() < FIXED_HEADER_BYTES + 12 {
        return Err(corrupt(
            bytes.len(),
            format!("file of {} bytes is shorter than a snapshot header", bytes.len()),
        ));
    }
    let crc_at = bytes.len() - 4;
    let (stored, computed) = (u32_at(crc_at), crc32c::crc32c(&bytes[..crc_at]));
    let version = u32_at(8);
    if stored != computed {
        let also =
            if version == SNAPSHOT_VERSION { String::new() } else { format!(" (version field {version})") };
        return Err(corrupt(crc_at, format!("checksum {stored:#010x}, computed {computed:#010x}{also}")));
    }
    if version != SNAPSHOT_VERSION {
        return Err(SnapshotError::Version {
            path: path.to_owned(),
            found: version,
            supported: SNAPSHOT_VERSION,
        });
    }
    let count = u32_at(52) as usize;
    if count == 0 || count > MEMBERS_MAX {
        return Err(corrupt(52, format!("{count} members, expected 1..={MEMBERS_MAX}")));
    }
    let members_end = FIXED_HEADER_BYTES + 8 * count;
    if members_end + 8 > crc_at {
        return Err(corrupt(52, format!("{count} members run past the end of the file")));
    }
    let data_bytes = u64_at(members_end);
    let data_start = members_end + 8;
    if data_bytes != (crc_at - data_start) as u64 {
        return Err(corrupt(
            members_end,
            format!("{data_bytes} bytes of state announced, {} found", crc_at - data_start),
        ));
    }
    let info = SnapshotInfo {
        ring: u64_at(12),
        slot: u64_at(20),
        created_unix_ms: u64_at(28),
        source: u64_at(36),
        configuration: u64_at(44),
        members: (0..count).map(|i| u64_at(FIXED_HEADER_BYTES + 8 * i)).collect(),
    };
    let data = &bytes[data_start..crc_at];
    let (slot, machine) = KvStateMachine::load(&mut &data[..], crate::machine::SESSIONS_MAX_DEFAULT)
        .map_err(|source| SnapshotError::State { path: path.to_owned(), source })?;
    if slot != info.slot {
        return Err(corrupt(
            20,
            format!("header says slot {}, the state inside is at slot {slot}", info.slot),
        ));
    }
    Ok(Verified { info, machine, data: data.to_vec() })
}

/// Reads and verifies the snapshot file at `path`.
pub fn read(path: &Path) -> Result<Verified, SnapshotError> {
    let bytes = std::fs::read(path).map_err(|source| SnapshotError::Io { path: path.to_owned(), source })?;
    verify(path, &bytes)
}

/// Writes `bytes` to `path` durably: a temporary file, fsync, rename, directory fsync.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<(), SnapshotError> {
    let io = |source| SnapshotError::Io { path: path.to_owned(), source };
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let mut file = std::fs::File::create(&temporary).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&temporary, path).map_err(io)?;
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::File::open(parent).and_then(|dir| dir.sync_all()).map_err(io)
}

/// What a restore wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restored {
    /// The snapshot's header.
    pub info: SnapshotInfo,
    /// The checkpoint written.
    pub checkpoint: PathBuf,
    /// The new ring's first configuration.
    pub configuration: Configuration,
}

/// Verifies the snapshot at `file`, then makes `data_dir` (new, or empty) the directory of
/// replica `node` of a new ring `ring` whose first configuration is `members`, starting
/// from the snapshot's state: the record of a bootstrapped ring (`ring.toml`) and the
/// snapshot as its checkpoint, at the snapshot's slot, with the configuration the ring
/// starts in. Every member of the new ring is restored from the same file.
pub fn restore(
    file: &Path,
    data_dir: &Path,
    ring: RingId,
    node: NodeId,
    members: &[NodeId],
) -> Result<Restored, SnapshotError> {
    let verified = read(file)?;
    let configuration = Configuration::new(1, members.to_vec(), Slot(verified.info.slot + 1));
    if configuration.members.len() != members.len() || members.is_empty() || members.len() > MEMBERS_MAX {
        return Err(SnapshotError::Members {
            members: members.iter().map(|n| n.0).collect(),
            problem: format!("expected 1..={MEMBERS_MAX} distinct node ids"),
        });
    }
    // Refuses a directory that holds a ring, and one that leaves `node` out.
    bootstrap::settle(data_dir, ring, node, StartMode::Bootstrap, members)?;
    let written = write_checkpoint(data_dir, &verified, &configuration);
    if written.is_err() {
        let _ = std::fs::remove_file(data_dir.join(bootstrap::RING_RECORD));
    }
    Ok(Restored { info: verified.info, checkpoint: written?, configuration })
}

fn write_checkpoint(
    data_dir: &Path,
    verified: &Verified,
    configuration: &Configuration,
) -> Result<PathBuf, SnapshotError> {
    let mut store = CheckpointStore::open(data_dir.join("checkpoints"), &CheckpointOptions::default())?;
    let checkpoints = data_dir.join("checkpoints");
    let io = |source| SnapshotError::Io { path: checkpoints.clone(), source };
    let mut writer = store.writer(Slot(verified.info.slot))?;
    rsl::runtime::framing::write_configuration(&mut writer, configuration).map_err(io)?;
    writer.write_all(&verified.data).map_err(io)?;
    Ok(writer.finish()?.path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Write, WriteId};

    fn snapshot() -> (SnapshotInfo, Vec<u8>, KvStateMachine) {
        let mut machine = KvStateMachine::new();
        let put = Write::Put { id: WriteId { client: 1, sequence: 1 }, key: "k".into(), value: "v".into() };
        machine.execute_write(12, &put.encode());
        let mut data = Vec::new();
        machine.save(12, &mut data).unwrap();
        let info = SnapshotInfo {
            ring: 3,
            slot: 12,
            created_unix_ms: 99,
            source: 2,
            configuration: 4,
            members: vec![1, 2],
        };
        (info.clone(), encode(&info, &data), machine)
    }

    #[test]
    fn a_snapshot_round_trips_and_every_flipped_bit_is_refused() {
        let (info, bytes, machine) = snapshot();
        let path = Path::new("backup.snap");
        let verified = verify(path, &bytes).unwrap();
        assert_eq!((verified.info, verified.machine), (info, machine));
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(verify(path, &flipped).is_err(), "bit {bit}");
        }
        for len in 0..bytes.len() {
            assert!(verify(path, &bytes[..len]).is_err(), "cut at {len}");
        }
    }

    #[test]
    fn a_newer_format_is_refused_naming_both_versions() {
        let (_, mut bytes, _) = snapshot();
        bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
        let crc_at = bytes.len() - 4;
        let crc = crc32c::crc32c(&bytes[..crc_at]);
        bytes[crc_at..].copy_from_slice(&crc.to_le_bytes());
        let error = verify(Path::new("new.snap"), &bytes).unwrap_err();
        assert!(matches!(error, SnapshotError::Version { found: 2, supported: 1, .. }), "{error}");
        assert_eq!(error.to_string(), "new.snap is snapshot format version 2; this build reads version 1");
        let error = verify(Path::new("x"), b"GIF89a, not a snapshot at all").unwrap_err();
        assert!(error.to_string().starts_with("x at byte 0: not an rsl-kv snapshot"), "{error}");
    }
}
