//! A small in-process cluster for the integration tests: runtimes on an in-memory network,
//! rings with memory or file storage, and helpers that wait on conditions (never sleep).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rsl::{
    Bytes, Config, FileStorage, LocalCheckpointNetwork, MemoryNetwork, MemoryStorage, NodeId, ReplicateError,
    Ring, RingId, RingOptions, Role, Runtime, RuntimeOptions, Slot, StateMachine, Storage,
};

/// How long any awaited condition may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// A state machine whose state is easy to compare: how many requests it executed, their
/// sum, and a hash of the whole sequence. Requests are 8-byte little-endian numbers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub count: u64,
    pub total: u64,
    pub hash: u64,
}

impl Tally {
    fn encode(&self) -> Bytes {
        let mut bytes = Vec::with_capacity(24);
        bytes.extend_from_slice(&self.count.to_le_bytes());
        bytes.extend_from_slice(&self.total.to_le_bytes());
        bytes.extend_from_slice(&self.hash.to_le_bytes());
        Bytes::from(bytes)
    }

    pub fn decode(bytes: &[u8]) -> Tally {
        assert_eq!(bytes.len(), 24, "a tally is 24 bytes");
        let word = |i: usize| u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap());
        Tally { count: word(0), total: word(1), hash: word(2) }
    }

    /// The tally after executing `requests` from scratch.
    pub fn of(requests: impl IntoIterator<Item = u64>) -> Tally {
        let mut tally = Tally::default();
        for request in requests {
            tally.add(request);
        }
        tally
    }

    fn add(&mut self, request: u64) {
        self.count += 1;
        self.total = self.total.wrapping_add(request);
        self.hash = (self.hash ^ request).wrapping_mul(0x0000_0100_0000_01B3).rotate_left(7);
    }
}

impl StateMachine for Tally {
    fn execute(&mut self, _slot: Slot, request: &[u8]) -> Bytes {
        self.add(u64::from_le_bytes(request.try_into().expect("8-byte request")));
        self.encode()
    }

    fn read(&self, _request: &[u8]) -> Bytes {
        self.encode()
    }

    fn save_checkpoint(&self, _slot: Slot, writer: &mut dyn Write) -> std::io::Result<()> {
        writer.write_all(&self.encode())
    }

    fn load_checkpoint(&mut self, _slot: Slot, reader: &mut dyn Read) -> std::io::Result<()> {
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes)?;
        *self = Tally::decode(&bytes);
        Ok(())
    }
}

/// A ring configuration with timers short enough for tests.
pub fn config(ring: RingId, node: NodeId, members: &[NodeId]) -> Config {
    let mut config = Config::new(ring, node, members.to_vec());
    config.heartbeat_interval_ms = 10;
    config.election_delay_min_ms = 100;
    config.election_delay_max_ms = 250;
    config
}

/// Where a replica keeps its storage, so it can be reopened after a stop.
#[derive(Clone, Debug)]
pub enum Disk {
    Memory(MemoryStorage),
    File(PathBuf),
}

impl Disk {
    fn storage(&self) -> Storage {
        match self {
            Disk::Memory(memory) => Storage::Memory(memory.clone()),
            Disk::File(dir) => {
                let mut file = FileStorage::new(dir);
                // Small segments: rotation and truncation get exercised.
                file.journal.segment_bytes_max = 64 << 10;
                Storage::File(file)
            }
        }
    }
}

/// Runtimes for nodes 1..=n on one in-memory network, and the rings they host.
pub struct Cluster {
    pub network: MemoryNetwork,
    pub checkpoints: LocalCheckpointNetwork,
    pub members: Vec<NodeId>,
    pub runtimes: BTreeMap<NodeId, Runtime>,
    pub rings: BTreeMap<(RingId, NodeId), Ring>,
    pub disks: BTreeMap<(RingId, NodeId), Disk>,
    pub configs: BTreeMap<(RingId, NodeId), Config>,
    /// The options every ring (re)started from now on gets.
    pub options: RingOptions,
}

impl Cluster {
    pub fn new(nodes: u64) -> Cluster {
        let network = MemoryNetwork::new(7);
        let checkpoints = LocalCheckpointNetwork::new();
        let members: Vec<NodeId> = (1..=nodes).map(NodeId).collect();
        let mut runtimes = BTreeMap::new();
        for &node in &members {
            let (endpoint, inbound) = network.endpoint(node).expect("attach");
            let runtime =
                Runtime::new(Arc::new(endpoint), inbound, RuntimeOptions::default()).expect("runtime");
            checkpoints.join(&runtime);
            runtimes.insert(node, runtime);
        }
        Cluster {
            network,
            checkpoints,
            members,
            runtimes,
            rings: BTreeMap::new(),
            disks: BTreeMap::new(),
            configs: BTreeMap::new(),
            options: RingOptions::default(),
        }
    }

    /// `nodes` nodes running `ring` with memory storage and the test timings.
    pub async fn with_ring(nodes: u64, ring: RingId) -> Cluster {
        let mut cluster = Cluster::new(nodes);
        cluster.start_ring(ring, |_| {}).await;
        cluster
    }

    /// `nodes` nodes running `ring` with file storage under `root` and the test timings.
    pub async fn with_ring_on_files(nodes: u64, ring: RingId, root: &std::path::Path) -> Cluster {
        let mut cluster = Cluster::new(nodes);
        cluster.start_ring_on_files(ring, root, |_| {}).await;
        cluster
    }

    /// Starts `ring` on every node with memory storage and `config` adjusted by `adjust`.
    pub async fn start_ring(&mut self, ring: RingId, adjust: impl Fn(&mut Config)) {
        self.start_ring_on(ring, adjust, |_| Disk::Memory(MemoryStorage::new())).await;
    }

    /// Starts `ring` on every node with file storage under `root` (one directory per node).
    pub async fn start_ring_on_files(
        &mut self,
        ring: RingId,
        root: &std::path::Path,
        adjust: impl Fn(&mut Config),
    ) {
        let dir = |node: NodeId| Disk::File(root.join(format!("ring-{}-node-{}", ring.0, node.0)));
        self.start_ring_on(ring, adjust, dir).await;
    }

    /// Starts `ring` on every node, each on the storage `disk` gives it.
    async fn start_ring_on(
        &mut self,
        ring: RingId,
        adjust: impl Fn(&mut Config),
        disk: impl Fn(NodeId) -> Disk,
    ) {
        self.start_ring_on_with(ring, adjust, disk, |_| Tally::default()).await;
    }

    /// Starts `ring` on every node, each on the storage `disk` gives it, with the state
    /// machine `make` builds.
    async fn start_ring_on_with<S: StateMachine>(
        &mut self,
        ring: RingId,
        adjust: impl Fn(&mut Config),
        disk: impl Fn(NodeId) -> Disk,
        make: impl Fn(NodeId) -> S,
    ) {
        for node in self.members.clone() {
            let mut config = config(ring, node, &self.members);
            adjust(&mut config);
            self.configs.insert((ring, node), config);
            self.disks.insert((ring, node), disk(node));
            self.restart_with(ring, node, make(node)).await.expect("start");
        }
    }

    /// Starts `ring` on every node with memory storage, `config` adjusted by `adjust`, and
    /// the state machine `make` builds for each node.
    pub async fn start_ring_with<S: StateMachine>(
        &mut self,
        ring: RingId,
        adjust: impl Fn(&mut Config),
        make: impl Fn(NodeId) -> S,
    ) {
        self.start_ring_on_with(ring, adjust, |_| Disk::Memory(MemoryStorage::new()), make).await;
    }

    /// (Re)starts one replica from its storage with a fresh state machine.
    pub async fn restart(&mut self, ring: RingId, node: NodeId) -> Result<(), rsl::BuildError> {
        self.restart_with(ring, node, Tally::default()).await
    }

    /// (Re)starts one replica from its storage with `state_machine`.
    pub async fn restart_with(
        &mut self,
        ring: RingId,
        node: NodeId,
        state_machine: impl StateMachine,
    ) -> Result<(), rsl::BuildError> {
        let config = self.configs[&(ring, node)].clone();
        let storage = self.disks[&(ring, node)].storage();
        let started = Ring::builder(config)
            .state_machine(state_machine)
            .storage(storage)
            .runtime(&self.runtimes[&node])
            .options(self.options.clone())
            .start()
            .await?;
        self.rings.insert((ring, node), started);
        Ok(())
    }

    /// Stops one replica and waits until its storage is released.
    pub async fn stop(&mut self, ring: RingId, node: NodeId) {
        let stopped = self.rings.remove(&(ring, node)).expect("running");
        stopped.shutdown().await;
    }

    pub fn ring(&self, ring: RingId, node: NodeId) -> &Ring {
        &self.rings[&(ring, node)]
    }

    /// The live replicas of `ring`.
    pub fn replicas(&self, ring: RingId) -> Vec<&Ring> {
        self.rings.iter().filter(|((r, _), _)| *r == ring).map(|(_, ring)| ring).collect()
    }

    /// Replicates at whichever live replica is primary, following hints and waiting for
    /// an election when nobody knows a primary. Only retries refusals that certainly did
    /// not take effect.
    pub async fn replicate(&self, ring: RingId, request: u64) -> Tally {
        let replicas = self.replicas(ring);
        let attempt = async {
            let mut at = 0;
            loop {
                match replicas[at].replicate(request.to_le_bytes().to_vec()).await {
                    Ok(response) => return Tally::decode(&response),
                    Err(ReplicateError::NotPrimary { hint }) => {
                        match hint.and_then(|h| replicas.iter().position(|r| r.node() == h)) {
                            Some(primary) if primary != at => at = primary,
                            _ => {
                                // The hint is unknown, dead, or ourselves (stepping down):
                                // wait for this replica to learn something, then ask the next.
                                let mut status = replicas[at].status();
                                let _ =
                                    tokio::time::timeout(Duration::from_millis(500), status.changed()).await;
                                at = (at + 1) % replicas.len();
                            }
                        }
                    }
                    Err(error) => panic!("replicate {request} on ring {}: {error}", ring.0),
                }
            }
        };
        tokio::time::timeout(WAIT, attempt).await.expect("replicate within the time limit")
    }

    /// Replicates each of `requests` in turn, as [`Cluster::replicate`] does.
    pub async fn replicate_all(&self, ring: RingId, requests: impl IntoIterator<Item = u64>) {
        for request in requests {
            self.replicate(ring, request).await;
        }
    }

    /// Waits until some live replica of `ring` is primary and returns it.
    pub async fn primary(&self, ring: RingId) -> &Ring {
        let replicas = self.replicas(ring);
        let wait = async {
            loop {
                if let Some(primary) = replicas.iter().find(|r| r.status().borrow().role == Role::Primary) {
                    return *primary;
                }
                // Wake when the first replica's status changes (every replica hears of an
                // election), bounded so a quiet replica cannot stall the wait.
                let mut status = replicas[0].status();
                let _ = tokio::time::timeout(Duration::from_millis(200), status.changed()).await;
            }
        };
        tokio::time::timeout(WAIT, wait).await.expect("a primary within the time limit")
    }

    /// Waits until `replica` has applied `slot`.
    pub async fn applied(&self, replica: &Ring, slot: Slot) {
        let mut status = replica.status();
        let reached = tokio::time::timeout(WAIT, status.wait_for(|s| s.applied >= slot)).await;
        assert!(
            matches!(reached, Ok(Ok(_))),
            "{} applied {} within the time limit, wanted {slot}",
            replica.node(),
            replica.status().borrow().applied
        );
    }

    /// The newest slot any live replica of `ring` has executed. Once a request was answered
    /// it covers the request's slot: a replica's [`Ring::applied`] is raised before the
    /// answer leaves its apply thread, while its `status().applied` is published only at the
    /// end of the ring task's wake-up, after the answer (so it may still lag).
    pub fn newest_applied(&self, ring: RingId) -> Slot {
        self.replicas(ring).iter().map(|replica| replica.applied()).max().expect("a live replica")
    }

    /// The state of every live replica of `ring` once it applied `slot`.
    pub async fn states(&self, ring: RingId, slot: Slot) -> Vec<Tally> {
        let mut states = Vec::new();
        for replica in self.replicas(ring) {
            self.applied(replica, slot).await;
            let bytes = replica.read_fast(Vec::new(), slot).await.expect("fast read");
            states.push(Tally::decode(&bytes));
        }
        states
    }

    pub async fn shutdown(&self) {
        for runtime in self.runtimes.values() {
            runtime.shutdown().await;
        }
    }
}
