//! Real data directories for rsl-ctl's tests: a three-replica rsl-kv ring in one process
//! (in-memory network, file journal or persistent-memory log, checkpoints every few
//! slots, small segments), written to and stopped; and the `rsl-ctl` binary run on them.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use rsl::log::{CheckpointOptions, CheckpointStore, PmemLog, PmemOptions, RecoveryPolicy};
use rsl::{
    Bytes, Config, FileStorage, LocalCheckpointNetwork, MemoryNetwork, NodeId, ReplicateError, Ring, RingId,
    Runtime, RuntimeOptions, Slot, Storage,
};
use rsl_kv::command::{Read, ReadOutcome, Write, WriteId, WriteResponse};
use rsl_kv::KvStateMachine;

pub const RING: RingId = RingId(7);
const WAIT: Duration = Duration::from_secs(20);

/// Which log the ring keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Journal,
    Pmem,
}

/// What a ring wrote before it stopped.
pub struct Written {
    /// Each replica's data directory.
    pub dirs: Vec<PathBuf>,
    /// Every write and the slot it was chosen in, in order.
    pub writes: Vec<(Slot, Bytes)>,
    /// The state machine's digest (CRC, keys) at the end, read through the ring.
    pub digest: (u32, u64),
}

impl Written {
    /// The state after every write chosen at or below `slot`, computed apart from the ring.
    pub fn state_at(&self, slot: Slot) -> KvStateMachine {
        let mut machine = KvStateMachine::new();
        for (at, write) in self.writes.iter().filter(|(at, _)| *at <= slot) {
            machine.execute_write(at.0, write);
        }
        machine
    }
}

fn config(node: NodeId, members: &[NodeId]) -> Config {
    let mut config = Config::new(RING, node, members.to_vec());
    config.heartbeat_interval_ms = 10;
    config.election_delay_min_ms = 100;
    config.election_delay_max_ms = 250;
    config.checkpoint_interval_slots = 8;
    config.log_retain_slots = 4;
    // The test's persistent-memory log is 1 MiB: requests must fit its records.
    config.request_bytes_max = 256 << 10;
    config
}

fn storage(backend: Backend, dir: &Path) -> Storage {
    match backend {
        Backend::Journal => {
            let mut file = FileStorage::new(dir);
            file.journal.segment_bytes_max = 1 << 10;
            file.journal.preallocate = false;
            Storage::File(file)
        }
        Backend::Pmem => {
            std::fs::create_dir_all(dir).unwrap();
            let options = PmemOptions { capacity_bytes: 1 << 20, ..PmemOptions::default() };
            let (log, durable, _) =
                PmemLog::open(dir.join("pmem.log"), &options, RecoveryPolicy::TruncateTornTail).unwrap();
            let checkpoints =
                CheckpointStore::open(dir.join("checkpoints"), &CheckpointOptions::default()).unwrap();
            Storage::Opened { log: Box::new(log), durable, checkpoints }
        }
    }
}

/// A running three-replica rsl-kv ring in this process.
pub struct KvRing {
    pub runtimes: Vec<Runtime>,
    pub rings: Vec<Ring>,
    pub dirs: Vec<PathBuf>,
    pub writes: Vec<(Slot, Bytes)>,
    _checkpoints: LocalCheckpointNetwork,
}

impl KvRing {
    /// Starts the ring with its replicas' data directories under `root`.
    pub async fn start(root: &Path, backend: Backend) -> KvRing {
        let network = MemoryNetwork::new(11);
        let checkpoints = LocalCheckpointNetwork::new();
        let members: Vec<NodeId> = (1..=3).map(NodeId).collect();
        let (mut runtimes, mut rings, mut dirs) = (Vec::new(), Vec::new(), Vec::new());
        for &node in &members {
            let (endpoint, inbound) = network.endpoint(node).unwrap();
            let runtime = Runtime::new(Arc::new(endpoint), inbound, RuntimeOptions::default()).unwrap();
            checkpoints.join(&runtime);
            let dir = root.join(format!("node-{}", node.0));
            let ring = Ring::builder(config(node, &members))
                .state_machine(KvStateMachine::new())
                .storage(storage(backend, &dir))
                .runtime(&runtime)
                .start()
                .await
                .unwrap();
            runtimes.push(runtime);
            rings.push(ring);
            dirs.push(dir);
        }
        KvRing { runtimes, rings, dirs, writes: Vec::new(), _checkpoints: checkpoints }
    }

    /// Replicates `request` at whichever replica is primary; returns the answer's bytes.
    pub async fn replicate(&self, request: Bytes) -> Bytes {
        let attempt = async {
            let mut at = 0;
            loop {
                match self.rings[at].replicate(request.clone()).await {
                    Ok(answer) => return answer,
                    Err(ReplicateError::NotPrimary { hint }) => {
                        match hint.and_then(|h| self.rings.iter().position(|r| r.node() == h)) {
                            Some(primary) if primary != at => at = primary,
                            _ => {
                                let mut status = self.rings[at].status();
                                let _ =
                                    tokio::time::timeout(Duration::from_millis(300), status.changed()).await;
                                at = (at + 1) % self.rings.len();
                            }
                        }
                    }
                    Err(error) => panic!("replicate: {error}"),
                }
            }
        };
        tokio::time::timeout(WAIT, attempt).await.expect("replicated in time")
    }

    /// Puts `count` keys (`key-<i>` = `value-<i>`), one write per slot, remembering each
    /// write's slot.
    pub async fn put_keys(&mut self, client: u64, range: std::ops::Range<u64>) {
        for i in range {
            let write = Write::Put {
                id: WriteId { client, sequence: i + 1 },
                key: format!("key-{i}"),
                value: Bytes::from(format!("value-{i}")),
            }
            .encode();
            let answer = self.replicate(write.clone()).await;
            let slot = WriteResponse::decode(&answer).unwrap().slot;
            self.writes.push((Slot(slot), write));
        }
    }

    /// The digest of the state machine, read linearizably at the primary.
    pub async fn digest(&self) -> (u32, u64) {
        for ring in &self.rings {
            if let Ok(answer) = ring.read(Read::Digest.encode()).await {
                if let ReadOutcome::Digest(digest) = ReadOutcome::decode(&answer).unwrap() {
                    return (digest.crc, digest.keys);
                }
            }
        }
        panic!("no replica answered a digest read");
    }

    /// Stops every replica (their logs are flushed and closed).
    pub async fn stop(self) -> Written {
        let digest = self.digest().await;
        for ring in &self.rings {
            ring.shutdown().await;
        }
        for runtime in &self.runtimes {
            runtime.shutdown().await;
        }
        Written { dirs: self.dirs, writes: self.writes, digest }
    }
}

/// A ring that put `keys` keys, removed node 3 (a configuration record in the log), put
/// a few more, and stopped.
pub async fn written_ring(root: &Path, backend: Backend, keys: u64) -> Written {
    let mut ring = KvRing::start(root, backend).await;
    ring.put_keys(1, 0..keys).await;
    let primary = ring.rings.iter().find(|r| r.status().borrow().role == rsl::Role::Primary).cloned();
    let primary = primary.unwrap_or_else(|| ring.rings[0].clone());
    tokio::time::timeout(WAIT, primary.change_configuration(vec![NodeId(1), NodeId(2)]))
        .await
        .expect("in time")
        .expect("configuration changed");
    ring.put_keys(2, keys..keys + 4).await;
    // The tests expect a checkpoint in each member's directory: on a loaded machine a
    // replica may still be behind when the last write is answered.
    for member in &ring.rings[..2] {
        let mut status = member.status();
        tokio::time::timeout(WAIT, status.wait_for(|s| s.checkpoint > Slot(0)))
            .await
            .unwrap_or_else(|_| panic!("{} saved no checkpoint in time", member.node()))
            .expect("the ring is running");
    }
    ring.stop().await
}

/// Runs `rsl-ctl` with `args`.
pub fn ctl(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_rsl-ctl")).args(args).output().expect("rsl-ctl runs")
}

/// Runs `rsl-ctl` on `path`: `command path rest...`; returns (exit code, stdout, stderr).
pub fn run(command: &str, path: &Path, rest: &[&str]) -> (i32, String, String) {
    let path = path.to_str().unwrap();
    let mut args = vec![command, path];
    args.extend_from_slice(rest);
    let output = ctl(&args);
    let code = output.status.code().unwrap_or(-1);
    (
        code,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Copies directory `from` to `to`, recursively.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The segment files of a data directory's journal, oldest first.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    segments
}

/// Flips bit `bit` of byte `offset` of `path`.
pub fn flip_bit(path: &Path, offset: u64, bit: u8) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset as usize] ^= 1 << bit;
    std::fs::write(path, bytes).unwrap();
}
