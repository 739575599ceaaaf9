//! How a replica's data directory starts a ring: bootstrapped (the ring's first
//! configuration, configuration 1, names the initial members) or joined (the replica was
//! added to a running ring by a configuration change). The choice is made once, when the
//! directory is new, and recorded in `ring.toml` there; later starts follow the record, so
//! configuration 1 never changes behind the ring's back, and a second bootstrap of the same
//! directory is refused ([`BootstrapError::AlreadyBootstrapped`]).

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use rsl::{NodeId, RingId};
use serde::{Deserialize, Serialize};

/// Name of the record in the data directory.
pub const RING_RECORD: &str = "ring.toml";

/// What the operator asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StartMode {
    /// A new directory bootstraps the ring; an existing one recovers.
    #[default]
    Auto,
    /// A new directory bootstraps the ring; an existing one is refused.
    Bootstrap,
    /// A new directory joins a running ring (it votes once a change adds it).
    Join,
}

/// How this directory's ring began.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RingRecord {
    /// The ring id.
    pub ring: u64,
    /// `bootstrapped` or `joined`.
    pub origin: String,
    /// Configuration 1's members (bootstrapped only).
    #[serde(default)]
    pub initial_members: Vec<u64>,
}

/// How to start the replica: bootstrap with these initial members, or join.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// The ring's configuration 1 has these members.
    Bootstrapped(Vec<NodeId>),
    /// The replica joined (or joins) a running ring.
    Joined,
}

/// Why the data directory cannot start the ring asked for.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// `--bootstrap` on a directory that already holds a ring.
    #[error("{} already holds ring {ring} ({origin}); refusing to bootstrap it again (start without --bootstrap to recover it)", .dir.display())]
    AlreadyBootstrapped {
        /// The data directory.
        dir: PathBuf,
        /// Its ring.
        ring: u64,
        /// How it began.
        origin: String,
    },
    /// A new directory would bootstrap a ring whose first configuration leaves this node out.
    #[error("node {node} is not among the initial members {initial_members:?}: start it with --join to add it to a running ring, or list it in --initial-members")]
    NotAnInitialMember {
        /// This node.
        node: u64,
        /// The initial members given.
        initial_members: Vec<u64>,
    },
    /// The directory belongs to another ring.
    #[error("{} holds ring {found}, not ring {expected}", .dir.display())]
    WrongRing {
        /// The data directory.
        dir: PathBuf,
        /// The ring configured.
        expected: u64,
        /// The ring recorded.
        found: u64,
    },
    /// The record is unreadable or damaged.
    #[error("{}: {problem}", .path.display())]
    Record {
        /// The record file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

/// Decides how to start from the record in `dir` (written now if the directory is new).
/// `initial_members` is what the operator gave for a bootstrap.
pub fn settle(
    dir: &Path,
    ring: RingId,
    node: NodeId,
    mode: StartMode,
    initial_members: &[NodeId],
) -> Result<Start, BootstrapError> {
    let path = dir.join(RING_RECORD);
    let record_error = |problem: String| BootstrapError::Record { path: path.clone(), problem };
    match fs::read_to_string(&path) {
        Ok(text) => {
            let record: RingRecord = toml::from_str(&text).map_err(|e| record_error(e.to_string()))?;
            if record.ring != ring.0 {
                return Err(BootstrapError::WrongRing {
                    dir: dir.to_owned(),
                    expected: ring.0,
                    found: record.ring,
                });
            }
            if mode == StartMode::Bootstrap {
                return Err(BootstrapError::AlreadyBootstrapped {
                    dir: dir.to_owned(),
                    ring: record.ring,
                    origin: record.origin,
                });
            }
            match record.origin.as_str() {
                "bootstrapped" if !record.initial_members.is_empty() => {
                    Ok(Start::Bootstrapped(record.initial_members.into_iter().map(NodeId).collect()))
                }
                "joined" => Ok(Start::Joined),
                other => Err(record_error(format!(
                    "origin `{other}` with initial members {:?}",
                    record.initial_members
                ))),
            }
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            // A directory that already holds a log but no record recovers as bootstrapped
            // with the members given (it was created before records existed).
            let holds_ring = ["log", "checkpoints", "pmem.log"].iter().any(|name| {
                let entry = dir.join(name);
                entry.is_file() || fs::read_dir(&entry).is_ok_and(|mut entries| entries.next().is_some())
            });
            if holds_ring && mode == StartMode::Bootstrap {
                return Err(BootstrapError::AlreadyBootstrapped {
                    dir: dir.to_owned(),
                    ring: ring.0,
                    origin: "found an existing log".into(),
                });
            }
            let joins = mode == StartMode::Join && !holds_ring;
            if !joins && !initial_members.contains(&node) {
                return Err(BootstrapError::NotAnInitialMember {
                    node: node.0,
                    initial_members: initial_members.iter().map(|n| n.0).collect(),
                });
            }
            let (record, start) = match mode {
                _ if joins => (
                    RingRecord { ring: ring.0, origin: "joined".into(), initial_members: Vec::new() },
                    Start::Joined,
                ),
                _ => (
                    RingRecord {
                        ring: ring.0,
                        origin: "bootstrapped".into(),
                        initial_members: initial_members.iter().map(|n| n.0).collect(),
                    },
                    Start::Bootstrapped(initial_members.to_vec()),
                ),
            };
            write_record(dir, &record).map_err(|e| record_error(format!("cannot write: {e}")))?;
            Ok(start)
        }
        Err(error) => Err(record_error(format!("cannot read: {error}"))),
    }
}

/// Writes the record durably: a temporary file, fsync, rename, directory fsync.
fn write_record(dir: &Path, record: &RingRecord) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    let text = toml::to_string(record).map_err(std::io::Error::other)?;
    let temporary = dir.join(format!("{RING_RECORD}.tmp"));
    let mut file = fs::File::create(&temporary)?;
    file.write_all(b"# How this data directory's ring began; written once, read at every start.\n")?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    fs::rename(&temporary, dir.join(RING_RECORD))?;
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(ids: &[u64]) -> Vec<NodeId> {
        ids.iter().copied().map(NodeId).collect()
    }

    #[test]
    fn the_first_start_decides_and_later_starts_follow() {
        let dir = tempfile::tempdir().unwrap();
        let ring = RingId(3);
        assert_eq!(
            settle(dir.path(), ring, NodeId(1), StartMode::Auto, &ids(&[1, 2, 3])).unwrap(),
            Start::Bootstrapped(ids(&[1, 2, 3]))
        );
        // Later flags cannot change configuration 1.
        assert_eq!(
            settle(dir.path(), ring, NodeId(1), StartMode::Auto, &ids(&[1, 2])).unwrap(),
            Start::Bootstrapped(ids(&[1, 2, 3]))
        );
        // A join flag on a bootstrapped directory recovers it as it is.
        assert_eq!(
            settle(dir.path(), ring, NodeId(1), StartMode::Join, &[]).unwrap(),
            Start::Bootstrapped(ids(&[1, 2, 3]))
        );
        let error = settle(dir.path(), ring, NodeId(1), StartMode::Bootstrap, &ids(&[1])).unwrap_err();
        assert!(matches!(error, BootstrapError::AlreadyBootstrapped { .. }), "{error}");
        assert!(error.to_string().contains("refusing to bootstrap"));
        let error = settle(dir.path(), RingId(4), NodeId(1), StartMode::Auto, &ids(&[1])).unwrap_err();
        assert!(matches!(error, BootstrapError::WrongRing { expected: 4, found: 3, .. }), "{error}");
    }

    #[test]
    fn a_joined_directory_stays_joined_and_damage_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(settle(dir.path(), RingId(1), NodeId(1), StartMode::Join, &[]).unwrap(), Start::Joined);
        assert_eq!(
            settle(dir.path(), RingId(1), NodeId(1), StartMode::Auto, &ids(&[1])).unwrap(),
            Start::Joined
        );
        fs::write(dir.path().join(RING_RECORD), "ring = \"x\"").unwrap();
        let error = settle(dir.path(), RingId(1), NodeId(1), StartMode::Auto, &ids(&[1])).unwrap_err();
        assert!(
            matches!(error, BootstrapError::Record { .. }) && error.to_string().contains(RING_RECORD),
            "{error}"
        );
    }

    #[test]
    fn an_existing_log_without_a_record_is_not_bootstrapped_again() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("log")).unwrap();
        fs::write(dir.path().join("log").join("segment"), b"x").unwrap();
        let error = settle(dir.path(), RingId(1), NodeId(1), StartMode::Bootstrap, &ids(&[1])).unwrap_err();
        assert!(matches!(error, BootstrapError::AlreadyBootstrapped { .. }));
        assert_eq!(
            settle(dir.path(), RingId(1), NodeId(1), StartMode::Auto, &ids(&[1])).unwrap(),
            Start::Bootstrapped(ids(&[1]))
        );
    }

    #[test]
    fn a_node_outside_the_initial_members_must_join() {
        let dir = tempfile::tempdir().unwrap();
        let error = settle(dir.path(), RingId(1), NodeId(4), StartMode::Auto, &ids(&[1, 2, 3])).unwrap_err();
        assert!(error.to_string().contains("--join"), "{error}");
        assert!(!dir.path().join(RING_RECORD).exists(), "nothing is recorded for a refused start");
    }
}
