//! The emulated verbs provider: the semantics of RDMA verbs without a device, so the ring
//! protocol, credits, wrap-around, reconnection and error handling run on every machine.
//!
//! - A region that peers may write ([`Access::RemoteWrite`]) is a file on tmpfs
//!   (`/dev/shm` by default) mapped shared, named `<prefix>-<rkey>`, where the prefix names
//!   the device (directory, process id, a random nonce) and travels in the queue pair's
//!   [`QpEndpoint::name`]. A file header page holds the key, the length, the region's
//!   address in its owner's address space and a "registered" word that deregistration
//!   clears. Local-only regions are anonymous memory.
//! - An RDMA WRITE is executed by the posting thread: it maps the peer's region (once per
//!   key), checks the remote key, the registration and the bounds, and places the bytes in
//!   address order with release stores, as an RC NIC places a write. The receiver's CPU sees
//!   no event: only memory changes. Processes on one host share regions this way, so the
//!   same provider runs a ring in one process or across processes.
//! - Completions go to the poster's completion queue: signalled successes, and every
//!   failure. A remote access error (unknown key, revoked region, range out of bounds)
//!   moves the queue pair to [`QpState::Error`]; later requests complete as flushed.
//! - The send queue's depth is enforced as verbs does: a request stays outstanding until a
//!   signalled request posted after it has been polled from the completion queue.
//! - A write with immediate consumes a receive of the peer's queue pair and notifies the
//!   peer's completion channel when its queue is armed; receive queues and channels are
//!   shared files too, and a channel is a futex word (`receive.rs`).
//! - Faults for tests: [`EmulatedDevice::fail_queue_pairs`] (a link failure: every queue
//!   pair's next post fails with [`CompletionStatus::RetryExceeded`]),
//!   [`EmulatedDevice::tear_next_write`] (the next write lands only partly and its queue pair
//!   fails, as when a sender dies mid-write), and [`EmulatedConfig::shuffle_completions`]
//!   (completion queues return completions in a seeded random order).
//!
//! Files of a process that was killed are removed by the next device opened in the same
//! directory (their owner's process id is in the name).

mod receive;

use crate::rdma::sys::{process_alive, RegionMemory};
use crate::rdma::verbs::{
    check_requests, Access, Completion, CompletionChannel, CompletionKind, CompletionQueue, CompletionStatus,
    Device, MemoryRegion, QpEndpoint, QpState, QueuePair, Registration, Source, VerbsError, WorkRequest,
};
use parking_lot::Mutex;
use receive::{EmulatedChannel, ReceiveQueue, RemoteReceiver};
use rsl_core::SplitMix64;
use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

/// Bytes before a shared region's data in its file: the header page.
const HEADER_BYTES: usize = 4096;
const MAGIC: u64 = u64::from_le_bytes(*b"RSLEMUMR");
const FILE_PREFIX: &str = "rsl-rdma-";

/// Words of a shared region's header.
mod header {
    pub(super) const MAGIC: usize = 0;
    pub(super) const RKEY: usize = 8;
    pub(super) const LEN: usize = 16;
    pub(super) const REGISTERED: usize = 24;
    pub(super) const ADDRESS: usize = 32;
}

/// Settings of an [`EmulatedDevice`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmulatedConfig {
    /// Where shared regions live: a tmpfs directory every process of the ring can open.
    /// Defaults to `/dev/shm`, or the temporary directory where there is none.
    pub directory: PathBuf,
    /// When set, completion queues hand out completions in a random order drawn from this
    /// seed (real queue pairs complete in order; the protocol must not depend on it).
    pub shuffle_completions: Option<u64>,
}

impl Default for EmulatedConfig {
    fn default() -> EmulatedConfig {
        let shm = PathBuf::from("/dev/shm");
        let directory = if shm.is_dir() { shm } else { std::env::temp_dir() };
        EmulatedConfig { directory, shuffle_completions: None }
    }
}

#[derive(Debug)]
struct Inner {
    config: EmulatedConfig,
    /// `<directory>/rsl-rdma-<pid>-<nonce>`.
    prefix: String,
    next_key: AtomicU32,
    next_qp: AtomicU32,
    next_channel: AtomicU32,
    /// Bumped by `fail_queue_pairs`; a queue pair created at an earlier value fails.
    failure_epoch: AtomicU64,
    /// Bytes the next write lands before its queue pair fails (`u64::MAX`: none).
    tear_next_write: AtomicU64,
}

/// An emulated RDMA device (see the module documentation). Cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct EmulatedDevice {
    inner: Arc<Inner>,
}

impl EmulatedDevice {
    /// Opens a device with `config`, removing region files that dead processes left in its
    /// directory.
    pub fn open(config: EmulatedConfig) -> Result<EmulatedDevice, VerbsError> {
        let io = |problem: std::io::Error| VerbsError::Call {
            call: "emulated device open",
            problem: problem.to_string(),
        };
        std::fs::create_dir_all(&config.directory).map_err(io)?;
        sweep_dead_files(&config.directory);
        let pid = std::process::id();
        let nonce = rsl_core::mix64(u64::from(pid) ^ entropy());
        let prefix = format!("{}/{FILE_PREFIX}{pid}-{nonce:016x}", config.directory.display());
        let inner = Inner {
            config,
            prefix,
            next_key: AtomicU32::new((nonce as u32 & 0x00ff_ffff) | 0x0100_0000),
            next_qp: AtomicU32::new(((nonce >> 32) as u32 & 0x00ff_ffff) | 1),
            next_channel: AtomicU32::new(1),
            failure_epoch: AtomicU64::new(0),
            tear_next_write: AtomicU64::new(u64::MAX),
        };
        Ok(EmulatedDevice { inner: Arc::new(inner) })
    }

    /// Fails every queue pair of this device that exists now: its next post completes with
    /// [`CompletionStatus::RetryExceeded`] and the queue pair goes to [`QpState::Error`].
    pub fn fail_queue_pairs(&self) {
        self.inner.failure_epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// The next write any queue pair of this device executes lands only its first `bytes`
    /// bytes, then the queue pair fails ([`CompletionStatus::RetryExceeded`]).
    pub fn tear_next_write(&self, bytes: u64) {
        self.inner.tear_next_write.store(bytes, Ordering::Release);
    }

    /// The prefix of this device's region files.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }
}

/// Some bits that differ between processes and calls (the nonce only has to avoid clashes
/// between devices in one directory; it is no secret).
fn entropy() -> u64 {
    let time = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    time.as_nanos() as u64 ^ COUNTER.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
}

/// Removes `rsl-rdma-<pid>-...` files whose process is gone.
fn sweep_dead_files(directory: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(directory) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|name| name.strip_prefix(FILE_PREFIX)) else { continue };
        let Some(pid) = rest.split('-').next().and_then(|pid| pid.parse::<u32>().ok()) else { continue };
        if !process_alive(pid) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn region_path(prefix: &str, rkey: u32) -> String {
    format!("{prefix}-{rkey:08x}")
}

#[derive(Debug)]
struct AnonymousRegistration;
impl Registration for AnonymousRegistration {}

/// A shared region's registration: deregistering clears the header's registered word (later
/// writes by peers fail with a remote access error) and removes the file.
#[derive(Debug)]
struct SharedRegistration {
    memory: Arc<RegionMemory>,
    path: String,
}
impl Registration for SharedRegistration {}

impl Drop for SharedRegistration {
    fn drop(&mut self) {
        self.memory.store_u64(header::REGISTERED, 0);
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Device for EmulatedDevice {
    fn name(&self) -> String {
        format!("emulated:{}", self.inner.prefix)
    }

    fn register(&self, len: u64, access: Access) -> Result<MemoryRegion, VerbsError> {
        let key = self.inner.next_key.fetch_add(1, Ordering::Relaxed);
        let io = |problem: std::io::Error| VerbsError::Call {
            call: "emulated register",
            problem: problem.to_string(),
        };
        let len_usize = usize::try_from(len).map_err(std::io::Error::other).map_err(io)?;
        if access == Access::Local {
            let memory = Arc::new(RegionMemory::anonymous(len_usize).map_err(io)?);
            return Ok(MemoryRegion::new(
                Box::new(AnonymousRegistration),
                memory,
                0,
                len_usize,
                (key, key),
                access,
            ));
        }
        let path = region_path(&self.inner.prefix, key);
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(&path).map_err(io)?;
        file.set_len(HEADER_BYTES as u64 + len).map_err(io)?;
        let memory = Arc::new(RegionMemory::map_file(&file).map_err(io)?);
        memory.store_u64(header::MAGIC, MAGIC);
        memory.store_u64(header::RKEY, u64::from(key));
        memory.store_u64(header::LEN, len);
        memory.store_u64(header::ADDRESS, memory.address(HEADER_BYTES));
        memory.store_u64(header::REGISTERED, 1);
        let registration = SharedRegistration { memory: Arc::clone(&memory), path };
        Ok(MemoryRegion::new(Box::new(registration), memory, HEADER_BYTES, len_usize, (key, key), access))
    }

    fn create_channel(&self) -> Result<Arc<dyn CompletionChannel>, VerbsError> {
        let key = self.inner.next_channel.fetch_add(1, Ordering::Relaxed);
        Ok(Arc::new(EmulatedChannel::create(&self.inner.prefix, key)?))
    }

    fn create_cq(
        &self,
        depth: u32,
        channel: Option<&Arc<dyn CompletionChannel>>,
    ) -> Result<Arc<dyn CompletionQueue>, VerbsError> {
        let channel = match channel {
            None => None,
            Some(channel) => match channel.as_any().downcast_ref::<EmulatedChannel>() {
                Some(emulated) => Some((emulated.key, Arc::clone(channel))),
                None => {
                    return Err(VerbsError::Call {
                        call: "emulated create_cq",
                        problem: "the completion channel is not an emulated one".to_owned(),
                    })
                }
            },
        };
        let rng = self.inner.config.shuffle_completions.map(SplitMix64::new);
        Ok(Arc::new(EmulatedCq {
            depth,
            state: Mutex::new(CqState { queue: VecDeque::new(), rng }),
            channel,
            receivers: Mutex::new(Vec::new()),
        }))
    }

    fn create_qp(
        &self,
        cq: &Arc<dyn CompletionQueue>,
        send_queue_depth: u32,
        receive_queue_depth: u32,
    ) -> Result<Box<dyn QueuePair>, VerbsError> {
        let Some(emulated_cq) = cq.as_any().downcast_ref::<EmulatedCq>() else {
            return Err(VerbsError::Call {
                call: "emulated create_qp",
                problem: "the completion queue is not an emulated one".to_owned(),
            });
        };
        if send_queue_depth == 0 {
            return Err(VerbsError::Call {
                call: "emulated create_qp",
                problem: "send queue depth 0".to_owned(),
            });
        }
        let number = self.inner.next_qp.fetch_add(1, Ordering::Relaxed) & 0x00ff_ffff;
        let receive = match receive_queue_depth {
            0 => None,
            depth => {
                let channel = emulated_cq.channel.as_ref().map(|(key, _)| *key);
                let queue = Arc::new(ReceiveQueue::create(&self.inner.prefix, number, depth, channel)?);
                emulated_cq.receivers.lock().push(Arc::downgrade(&queue));
                Some(queue)
            }
        };
        Ok(Box::new(EmulatedQp {
            number,
            receive,
            remote_qp: 0,
            remote_receiver: None,
            device: Arc::clone(&self.inner),
            cq: Arc::clone(cq),
            state: QpState::Reset,
            depth: send_queue_depth,
            outstanding: Arc::new(AtomicU32::new(0)),
            unsignaled: 0,
            failure_epoch: self.inner.failure_epoch.load(Ordering::Acquire),
            remote_prefix: None,
            remote_regions: HashMap::new(),
        }))
    }
}

#[derive(Debug)]
struct CqEntry {
    completion: Completion,
    /// Requests this completion tells the poster are done (itself and the unsignalled ones
    /// before it).
    retires: u32,
    outstanding: Arc<AtomicU32>,
}

#[derive(Debug)]
struct CqState {
    queue: VecDeque<CqEntry>,
    rng: Option<SplitMix64>,
}

/// An emulated completion queue.
#[derive(Debug)]
struct EmulatedCq {
    depth: u32,
    state: Mutex<CqState>,
    /// The channel it notifies when armed (its key, and the channel kept alive).
    channel: Option<(u32, Arc<dyn CompletionChannel>)>,
    /// The receive queues of its queue pairs, whose consumed receives it completes.
    receivers: Mutex<Vec<Weak<ReceiveQueue>>>,
}

impl EmulatedCq {
    fn push(&self, entry: CqEntry) {
        let mut state = self.state.lock();
        if state.queue.len() >= self.depth as usize {
            // Verbs would raise an asynchronous overrun error; the poster's accounting keeps
            // this from happening, so it is logged, not hidden.
            tracing::error!(depth = self.depth, "emulated completion queue overrun");
        }
        state.queue.push_back(entry);
    }
}

impl CompletionQueue for EmulatedCq {
    fn poll(&self, completions: &mut Vec<Completion>, max: usize) -> usize {
        let mut state = self.state.lock();
        let CqState { queue, rng } = &mut *state;
        if let Some(rng) = rng {
            for i in (1..queue.len()).rev() {
                let j = rng.below(i as u64 + 1) as usize;
                queue.swap(i, j);
            }
        }
        let mut polled = 0;
        while polled < max {
            let Some(entry) = queue.pop_front() else { break };
            entry.outstanding.fetch_sub(entry.retires, Ordering::AcqRel);
            completions.push(entry.completion);
            polled += 1;
        }
        drop(state);
        let mut receivers = self.receivers.lock();
        receivers.retain(|queue| queue.strong_count() > 0);
        for queue in receivers.iter().filter_map(Weak::upgrade) {
            polled += queue.poll(completions, max - polled);
        }
        polled
    }

    fn arm(&self) -> Result<(), VerbsError> {
        if self.channel.is_none() {
            return Err(VerbsError::Call {
                call: "emulated req_notify_cq",
                problem: "the completion queue has no channel".to_owned(),
            });
        }
        for queue in self.receivers.lock().iter().filter_map(Weak::upgrade) {
            queue.arm();
        }
        Ok(())
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// An emulated reliable-connected queue pair.
#[derive(Debug)]
struct EmulatedQp {
    number: u32,
    /// Its receive queue (none when created with depth 0).
    receive: Option<Arc<ReceiveQueue>>,
    /// The peer's queue pair number, once connected.
    remote_qp: u32,
    /// The peer's receive queue, mapped on the first write with immediate.
    remote_receiver: Option<RemoteReceiver>,
    device: Arc<Inner>,
    cq: Arc<dyn CompletionQueue>,
    state: QpState,
    depth: u32,
    outstanding: Arc<AtomicU32>,
    /// Requests executed since the last signalled one.
    unsignaled: u32,
    failure_epoch: u64,
    remote_prefix: Option<String>,
    remote_regions: HashMap<u32, Arc<RegionMemory>>,
}

impl EmulatedQp {
    fn complete(&mut self, id: u64, status: CompletionStatus) {
        let entry = CqEntry {
            completion: Completion { id, qp_number: self.number, status, kind: CompletionKind::Write },
            retires: self.unsignaled + 1,
            outstanding: Arc::clone(&self.outstanding),
        };
        self.unsignaled = 0;
        if let Some(cq) = self.cq.as_any().downcast_ref::<EmulatedCq>() {
            cq.push(entry);
        }
    }

    /// The peer's region `rkey`, mapped once.
    fn remote_region(&mut self, rkey: u32) -> Option<Arc<RegionMemory>> {
        if let Some(region) = self.remote_regions.get(&rkey) {
            return Some(Arc::clone(region));
        }
        let path = region_path(self.remote_prefix.as_deref()?, rkey);
        let file = File::options().read(true).write(true).open(path).ok()?;
        let memory = RegionMemory::map_file(&file).ok()?;
        if memory.len() < HEADER_BYTES
            || memory.load_u64(header::MAGIC) != MAGIC
            || memory.load_u64(header::RKEY) != u64::from(rkey)
        {
            return None;
        }
        let memory = Arc::new(memory);
        self.remote_regions.insert(rkey, Arc::clone(&memory));
        Some(memory)
    }

    /// Executes one write; an error status fails the queue pair.
    fn execute(&mut self, request: &WorkRequest<'_>) -> Result<(), CompletionStatus> {
        if self.device.failure_epoch.load(Ordering::Acquire) != self.failure_epoch {
            return Err(CompletionStatus::RetryExceeded);
        }
        let remote = self.remote_region(request.rkey).ok_or(CompletionStatus::RemoteAccess)?;
        if remote.load_u64(header::REGISTERED) != 1 {
            return Err(CompletionStatus::RemoteAccess);
        }
        let base = remote.load_u64(header::ADDRESS);
        let region_len = remote.load_u64(header::LEN);
        let len = request.source.len();
        let offset = request.remote_address.checked_sub(base).ok_or(CompletionStatus::RemoteAccess)?;
        if offset.checked_add(len).is_none_or(|end| end > region_len)
            || HEADER_BYTES as u64 + region_len > remote.len() as u64
        {
            return Err(CompletionStatus::RemoteAccess);
        }
        let torn = self.device.tear_next_write.swap(u64::MAX, Ordering::AcqRel);
        let landed = len.min(torn) as usize;
        let destination = HEADER_BYTES + offset as usize;
        match request.source {
            Source::Inline(bytes) => remote.write_ordered(destination, &bytes[..landed]),
            Source::Region { region, offset, .. } => {
                region.memory().copy_to(region.at(offset), &remote, destination, landed);
            }
        }
        if torn != u64::MAX {
            return Err(CompletionStatus::RetryExceeded);
        }
        match request.immediate {
            None => Ok(()),
            Some(immediate) => self.remote_receiver()?.deliver(immediate),
        }
    }

    /// The peer's receive queue, mapped once; gone means the peer's queue pair is.
    fn remote_receiver(&mut self) -> Result<&RemoteReceiver, CompletionStatus> {
        if self.remote_receiver.is_none() {
            let prefix = self.remote_prefix.as_deref().ok_or(CompletionStatus::RetryExceeded)?;
            self.remote_receiver = RemoteReceiver::open(prefix, self.remote_qp);
        }
        self.remote_receiver.as_ref().ok_or(CompletionStatus::RetryExceeded)
    }
}

impl QueuePair for EmulatedQp {
    fn endpoint(&self) -> QpEndpoint {
        QpEndpoint { qp_number: self.number, lid: 0, gid: [0; 16], psn: 0, name: self.device.prefix.clone() }
    }

    fn state(&self) -> QpState {
        self.state
    }

    fn connect(&mut self, remote: &QpEndpoint) -> Result<(), VerbsError> {
        if self.state != QpState::Reset {
            return Err(VerbsError::QpState {
                qp_number: self.number,
                operation: "connect",
                expected: QpState::Reset,
                found: self.state,
            });
        }
        if !remote.name.contains(FILE_PREFIX) {
            return Err(VerbsError::Call {
                call: "emulated connect",
                problem: format!("peer endpoint name {:?} is not an emulated device's", remote.name),
            });
        }
        // RESET -> INIT -> RTR -> RTS: the emulation has nothing to set up on the way.
        self.remote_prefix = Some(remote.name.clone());
        self.remote_qp = remote.qp_number;
        self.state = QpState::ReadyToSend;
        Ok(())
    }

    fn post_write(&mut self, requests: &[WorkRequest<'_>]) -> Result<(), VerbsError> {
        if !matches!(self.state, QpState::ReadyToSend | QpState::Error) {
            return Err(VerbsError::QpState {
                qp_number: self.number,
                operation: "post_send",
                expected: QpState::ReadyToSend,
                found: self.state,
            });
        }
        check_requests(requests)?;
        let posting = requests.len() as u32;
        let outstanding = self.outstanding.load(Ordering::Acquire);
        if outstanding + posting > self.depth {
            return Err(VerbsError::SendQueueFull {
                qp_number: self.number,
                outstanding,
                depth: self.depth,
                posting,
            });
        }
        self.outstanding.fetch_add(posting, Ordering::AcqRel);
        for request in requests {
            if self.state == QpState::Error {
                self.complete(request.id, CompletionStatus::Flushed);
                continue;
            }
            match self.execute(request) {
                Ok(()) if request.signaled => self.complete(request.id, CompletionStatus::Success),
                Ok(()) => self.unsignaled += 1,
                Err(status) => {
                    self.complete(request.id, status);
                    self.state = QpState::Error;
                }
            }
        }
        Ok(())
    }

    fn post_receive(&mut self, ids: &[u64]) -> Result<(), VerbsError> {
        match &self.receive {
            Some(queue) => queue.post(ids),
            None => Err(VerbsError::ReceiveQueueFull {
                qp_number: self.number,
                outstanding: 0,
                depth: 0,
                posting: ids.len() as u32,
            }),
        }
    }

    fn set_error(&mut self) {
        if self.state != QpState::Error && self.unsignaled > 0 {
            // The unsignalled requests already executed; verbs would flush what was still
            // queued. Report them so the poster's count of outstanding requests drains.
            self.unsignaled -= 1;
            self.complete(u64::MAX, CompletionStatus::Flushed);
        }
        self.state = QpState::Error;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rdma::verbs::INLINE_BYTES_MAX;

    struct Link {
        sender: EmulatedDevice,
        cq: Arc<dyn CompletionQueue>,
        qp: Box<dyn QueuePair>,
        source: MemoryRegion,
        target: MemoryRegion,
        receiver_channel: Arc<dyn CompletionChannel>,
        receiver_cq: Arc<dyn CompletionQueue>,
        receiver_qp: Box<dyn QueuePair>,
        _receiver: EmulatedDevice,
    }

    /// A queue pair of one device connected to a second device that registered `target`.
    fn link(depth: u32, config: EmulatedConfig) -> Link {
        let sender = EmulatedDevice::open(config.clone()).unwrap();
        let receiver = EmulatedDevice::open(config).unwrap();
        let target = receiver.register(256, Access::RemoteWrite).unwrap();
        let source = sender.register(256, Access::Local).unwrap();
        source.memory().bytes_mut(0, 256).iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
        let cq = sender.create_cq(64, None).unwrap();
        let mut qp = sender.create_qp(&cq, depth, 0).unwrap();
        let receiver_channel = receiver.create_channel().unwrap();
        let receiver_cq = receiver.create_cq(8, Some(&receiver_channel)).unwrap();
        let receiver_qp = receiver.create_qp(&receiver_cq, 4, 2).unwrap();
        qp.connect(&receiver_qp.endpoint()).unwrap();
        Link {
            sender,
            cq,
            qp,
            source,
            target,
            receiver_channel,
            receiver_cq,
            receiver_qp,
            _receiver: receiver,
        }
    }

    fn write<'a>(
        source: &'a MemoryRegion,
        target: &MemoryRegion,
        id: u64,
        offset: u64,
        len: u32,
        signaled: bool,
    ) -> WorkRequest<'a> {
        WorkRequest {
            id,
            source: Source::Region { region: source, offset: 0, len },
            remote_address: target.address() + offset,
            rkey: target.rkey(),
            signaled,
            immediate: None,
        }
    }

    fn poll(cq: &Arc<dyn CompletionQueue>) -> Vec<Completion> {
        let mut completions = Vec::new();
        cq.poll(&mut completions, 64);
        completions
    }

    #[test]
    fn a_write_lands_in_the_peers_memory_and_completes_on_the_senders_queue() {
        let mut link = link(8, EmulatedConfig::default());
        let request = write(&link.source, &link.target, 1, 16, 100, true);
        link.qp.post_write(&[request]).unwrap();
        let target = link.target.memory();
        assert_eq!(target.bytes(link.target.at(16), 100), link.source.memory().bytes(0, 100));
        assert_eq!(target.bytes(link.target.at(0), 16), &[0; 16]);
        let completions = poll(&link.cq);
        assert_eq!(
            completions,
            vec![Completion {
                id: 1,
                qp_number: completions[0].qp_number,
                status: CompletionStatus::Success,
                kind: CompletionKind::Write,
            }]
        );
        // Inline data is copied at post time.
        let bytes = 7u64.to_le_bytes();
        let inline = WorkRequest {
            source: Source::Inline(&bytes),
            signaled: false,
            ..write(&link.source, &link.target, 2, 200, 0, false)
        };
        link.qp.post_write(&[inline]).unwrap();
        assert_eq!(target.load_u64(link.target.at(200)), 7);
        assert!(poll(&link.cq).is_empty(), "unsignalled successes are silent");
    }

    #[test]
    fn bad_keys_and_bounds_are_remote_access_errors_that_fail_the_queue_pair() {
        for (rkey_delta, offset, len) in [(1u32, 0u64, 8u32), (0, 250, 8), (0, 256, 1)] {
            let mut link = link(8, EmulatedConfig::default());
            let mut request = write(&link.source, &link.target, 5, offset, len, false);
            request.rkey += rkey_delta;
            link.qp.post_write(&[request]).unwrap();
            assert_eq!(
                poll(&link.cq)[0].status,
                CompletionStatus::RemoteAccess,
                "{rkey_delta} {offset} {len}"
            );
            assert_eq!(link.qp.state(), QpState::Error);
            let next = write(&link.source, &link.target, 6, 0, 8, false);
            link.qp.post_write(&[next]).unwrap();
            assert_eq!(poll(&link.cq)[0].status, CompletionStatus::Flushed);
            assert_eq!(link.target.memory().load_u64(link.target.at(0)), 0, "nothing landed");
        }
        // A local-only region has no remote key a peer can use.
        let mut link = link(8, EmulatedConfig::default());
        let mut request = write(&link.source, &link.target, 1, 0, 8, false);
        request.rkey = link.source.rkey();
        request.remote_address = link.source.address();
        link.qp.post_write(&[request]).unwrap();
        assert_eq!(poll(&link.cq)[0].status, CompletionStatus::RemoteAccess);
    }

    #[test]
    fn a_deregistered_region_refuses_writes() {
        let mut link = link(8, EmulatedConfig::default());
        let request = write(&link.source, &link.target, 1, 0, 8, true);
        link.qp.post_write(&[request]).unwrap();
        assert_eq!(poll(&link.cq)[0].status, CompletionStatus::Success);
        let Link { cq, mut qp, source, target, .. } = link;
        let (address, rkey) = (target.address(), target.rkey());
        drop(target);
        let request = WorkRequest {
            id: 2,
            source: Source::Region { region: &source, offset: 0, len: 8 },
            remote_address: address,
            rkey,
            signaled: true,
            immediate: None,
        };
        qp.post_write(&[request]).unwrap();
        assert_eq!(poll(&cq)[0].status, CompletionStatus::RemoteAccess);
    }

    #[test]
    fn the_send_queue_holds_requests_until_a_later_signalled_one_is_polled() {
        let mut link = link(4, EmulatedConfig::default());
        let chain: Vec<_> =
            (0..4).map(|id| write(&link.source, &link.target, id, id * 8, 8, id == 3)).collect();
        link.qp.post_write(&chain).unwrap();
        let more = write(&link.source, &link.target, 4, 0, 8, true);
        assert!(matches!(
            link.qp.post_write(&[more]),
            Err(VerbsError::SendQueueFull { outstanding: 4, depth: 4, posting: 1, .. })
        ));
        assert_eq!(poll(&link.cq).len(), 1);
        link.qp.post_write(&[more]).unwrap();
        // A malformed request refuses the whole post before anything executes.
        let bytes = [0u8; INLINE_BYTES_MAX + 1];
        let inline = WorkRequest {
            source: Source::Inline(&bytes),
            ..write(&link.source, &link.target, 9, 0, 0, true)
        };
        assert!(matches!(link.qp.post_write(&[more, inline]), Err(VerbsError::InvalidRequest { id: 9, .. })));
    }

    #[test]
    fn states_are_enforced() {
        let device = EmulatedDevice::open(EmulatedConfig::default()).unwrap();
        let cq = device.create_cq(8, None).unwrap();
        let mut qp = device.create_qp(&cq, 8, 0).unwrap();
        assert_eq!(qp.state(), QpState::Reset);
        let source = device.register(8, Access::Local).unwrap();
        let request = WorkRequest {
            id: 0,
            source: Source::Region { region: &source, offset: 0, len: 8 },
            remote_address: 0,
            rkey: 0,
            signaled: true,
            immediate: None,
        };
        assert!(matches!(qp.post_write(&[request]), Err(VerbsError::QpState { found: QpState::Reset, .. })));
        let endpoint = qp.endpoint();
        qp.connect(&endpoint).unwrap();
        assert_eq!(qp.state(), QpState::ReadyToSend);
        assert!(matches!(qp.connect(&endpoint), Err(VerbsError::QpState { .. })));
        let stranger = QpEndpoint { name: "mlx5_0".into(), ..endpoint };
        let mut other = device.create_qp(&cq, 8, 0).unwrap();
        assert!(other.connect(&stranger).is_err());
    }

    #[test]
    fn injected_faults_fail_queue_pairs_and_tear_writes() {
        let mut link = link(8, EmulatedConfig::default());
        link.sender.tear_next_write(5);
        let request = write(&link.source, &link.target, 1, 0, 100, false);
        link.qp.post_write(&[request]).unwrap();
        assert_eq!(poll(&link.cq)[0].status, CompletionStatus::RetryExceeded);
        let landed = link.target.memory().bytes(link.target.at(0), 8);
        assert_eq!(landed, &[0, 1, 2, 3, 4, 0, 0, 0], "only the first 5 bytes landed");

        let mut link = self::link(8, EmulatedConfig::default());
        link.sender.fail_queue_pairs();
        let request = write(&link.source, &link.target, 1, 0, 8, false);
        link.qp.post_write(&[request]).unwrap();
        assert_eq!(poll(&link.cq)[0].status, CompletionStatus::RetryExceeded);
        assert_eq!(link.qp.state(), QpState::Error);
    }

    #[test]
    fn shuffled_completions_still_retire_every_request() {
        let mut link = link(16, EmulatedConfig { shuffle_completions: Some(3), ..EmulatedConfig::default() });
        let chain: Vec<_> =
            (0..16).map(|id| write(&link.source, &link.target, id, 0, 8, id % 2 == 1)).collect();
        link.qp.post_write(&chain).unwrap();
        let ids: Vec<u64> = poll(&link.cq).iter().map(|c| c.id).collect();
        assert_eq!(ids.len(), 8);
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        assert_ne!(ids, sorted, "the seed reorders");
        assert_eq!(sorted, vec![1, 3, 5, 7, 9, 11, 13, 15]);
        let again: Vec<_> = (0..16).map(|id| write(&link.source, &link.target, id, 0, 8, true)).collect();
        link.qp.post_write(&again).unwrap();
    }

    #[test]
    fn a_write_with_immediate_consumes_a_receive_and_wakes_an_armed_queue() {
        let mut link = link(8, EmulatedConfig::default());
        link.receiver_qp.post_receive(&[70, 71]).unwrap();
        assert!(matches!(
            link.receiver_qp.post_receive(&[72]),
            Err(VerbsError::ReceiveQueueFull { outstanding: 2, depth: 2, posting: 1, .. })
        ));
        let channel = &link.receiver_channel;
        let prepared = channel.prepare();
        link.receiver_cq.arm().unwrap();
        // The writer runs on another thread; the receiver sleeps until it is notified.
        let started = std::time::Instant::now();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                std::thread::sleep(std::time::Duration::from_millis(20));
                let request = WorkRequest {
                    immediate: Some(0xabcd),
                    ..write(&link.source, &link.target, 1, 0, 16, true)
                };
                link.qp.post_write(&[request]).unwrap();
            });
            assert!(channel.wait(prepared, std::time::Duration::from_secs(20)), "notified, not timed out");
        });
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        assert_eq!(link.target.memory().bytes(link.target.at(0), 16), link.source.memory().bytes(0, 16));
        let received = poll(&link.receiver_cq);
        assert_eq!(received.len(), 1);
        assert_eq!((received[0].id, received[0].kind), (70, CompletionKind::Receive { immediate: 0xabcd }));
        assert_eq!(poll(&link.cq)[0].status, CompletionStatus::Success);

        // Not armed: the receive is consumed, the channel is not notified. A zero-byte write
        // with immediate is a pure notification.
        let prepared = channel.prepare();
        let empty = WorkRequest { immediate: Some(2), ..write(&link.source, &link.target, 2, 0, 0, false) };
        link.qp.post_write(&[empty]).unwrap();
        assert!(!channel.wait(prepared, std::time::Duration::from_millis(5)), "no notification unarmed");
        assert_eq!(poll(&link.receiver_cq)[0].kind, CompletionKind::Receive { immediate: 2 });

        // No receive left: the writer's queue pair fails, receiver not ready.
        let third = WorkRequest { immediate: Some(3), ..write(&link.source, &link.target, 3, 0, 8, false) };
        link.qp.post_write(&[third]).unwrap();
        assert_eq!(poll(&link.cq)[0].status, CompletionStatus::ReceiverNotReady);
        assert_eq!(link.qp.state(), QpState::Error);
        // A local wake ends a wait at once; a queue without a channel cannot be armed.
        let prepared = channel.prepare();
        channel.wake();
        assert!(channel.wait(prepared, std::time::Duration::from_secs(20)));
        assert!(link.cq.arm().is_err());
    }
}
