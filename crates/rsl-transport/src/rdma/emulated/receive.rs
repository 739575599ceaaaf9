//! The emulated provider's side of RDMA WRITE with immediate: receive queues and completion
//! channels, kept in shared memory so that a writer in another process reaches them as a
//! NIC would.
//!
//! - A queue pair's **receive queue** is a file `<prefix>-rq-<qp number>` (one page): how
//!   many receives its owner posted, how many incoming writes with immediate consumed, the
//!   immediate of each consumed receive (a ring of `RECEIVES_MAX` slots), whether its
//!   completion queue is armed, and which channel that queue notifies. The writer consumes a
//!   receive (or fails with "receiver not ready" when none is posted), then, if the queue is
//!   armed, disarms it and notifies the channel: one notification per arming, as
//!   `ibv_req_notify_cq`. The owner's completion queue turns consumed receives into
//!   completions when it is polled.
//! - A **completion channel** is a file `<prefix>-ch-<key>` holding a futex word (a
//!   sequence number that every notification bumps) and a count of sleepers, so a notifier
//!   makes the `FUTEX_WAKE` system call only when someone sleeps. Futexes on a shared file
//!   mapping work across processes.

use crate::rdma::sys::RegionMemory;
use crate::rdma::verbs::{Completion, CompletionChannel, CompletionKind, CompletionStatus, VerbsError};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::sync::atomic::{fence, Ordering};
use std::time::Duration;

/// The most receives a queue pair may have posted.
pub(crate) const RECEIVES_MAX: u32 = 256;
/// Bytes of a receive queue's or a channel's file.
const FILE_BYTES: u64 = 4096;
const RQ_MAGIC: u64 = u64::from_le_bytes(*b"RSLEMURQ");
const CHANNEL_MAGIC: u64 = u64::from_le_bytes(*b"RSLEMUCH");

/// Words of a receive queue file.
mod rq {
    pub(super) const MAGIC: usize = 0;
    pub(super) const LIVE: usize = 8;
    pub(super) const POSTED: usize = 16;
    pub(super) const CONSUMED: usize = 24;
    pub(super) const ARMED: usize = 32;
    pub(super) const CHANNEL: usize = 40;
    pub(super) const SLOTS: usize = 64;
}

/// Words of a channel file.
mod channel {
    pub(super) const MAGIC: usize = 0;
    /// u32: the futex word.
    pub(super) const SEQUENCE: usize = 8;
    /// u32: waiters inside `wait`.
    pub(super) const SLEEPERS: usize = 16;
}

const _: () = assert!(rq::SLOTS + 8 * RECEIVES_MAX as usize <= FILE_BYTES as usize);

pub(super) fn receive_queue_path(prefix: &str, qp_number: u32) -> String {
    format!("{prefix}-rq-{qp_number:08x}")
}

pub(super) fn channel_path(prefix: &str, key: u32) -> String {
    format!("{prefix}-ch-{key:08x}")
}

fn io(call: &'static str) -> impl Fn(std::io::Error) -> VerbsError {
    move |error| VerbsError::Call { call, problem: error.to_string() }
}

/// A fresh page-sized shared file at `path`, mapped.
fn create(path: &str, call: &'static str) -> Result<RegionMemory, VerbsError> {
    let file = OpenOptions::new().read(true).write(true).create_new(true).open(path).map_err(io(call))?;
    file.set_len(FILE_BYTES).map_err(io(call))?;
    RegionMemory::map_file(&file).map_err(io(call))
}

/// The file at `path` mapped, if it is one of `magic`'s kind.
fn open(path: &str, magic: u64) -> Option<RegionMemory> {
    let file = File::options().read(true).write(true).open(path).ok()?;
    let memory = RegionMemory::map_file(&file).ok()?;
    (memory.len() as u64 >= FILE_BYTES && memory.load_u64(0) == magic).then_some(memory)
}

// ---------------------------------------------------------------------------------------
// Channels.

/// An emulated completion channel (see the module documentation).
#[derive(Debug)]
pub(crate) struct EmulatedChannel {
    memory: RegionMemory,
    path: String,
    pub(super) key: u32,
}

impl EmulatedChannel {
    pub(super) fn create(prefix: &str, key: u32) -> Result<EmulatedChannel, VerbsError> {
        let path = channel_path(prefix, key);
        let memory = create(&path, "emulated create_channel")?;
        memory.store_u64(channel::MAGIC, CHANNEL_MAGIC);
        Ok(EmulatedChannel { memory, path, key })
    }
}

/// Bumps the sequence of the channel in `memory` and wakes its sleepers, if any.
fn notify(memory: &RegionMemory) {
    memory.fetch_add_u32(channel::SEQUENCE, 1);
    if memory.load_u32(channel::SLEEPERS) > 0 {
        memory.futex_wake(channel::SEQUENCE);
    }
}

impl CompletionChannel for EmulatedChannel {
    fn prepare(&self) -> u64 {
        u64::from(self.memory.load_u32(channel::SEQUENCE))
    }

    fn wait(&self, prepared: u64, timeout: Duration) -> bool {
        let prepared = prepared as u32;
        self.memory.fetch_add_u32(channel::SLEEPERS, 1);
        // A notifier bumps the sequence, then looks for sleepers; this side counts itself,
        // then looks at the sequence: one of the two sees the other.
        if self.memory.load_u32(channel::SEQUENCE) == prepared {
            self.memory.futex_wait(channel::SEQUENCE, prepared, timeout);
        }
        self.memory.fetch_add_u32(channel::SLEEPERS, u32::MAX);
        self.memory.load_u32(channel::SEQUENCE) != prepared
    }

    fn wake(&self) {
        notify(&self.memory);
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Drop for EmulatedChannel {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

// ---------------------------------------------------------------------------------------
// Receive queues, the owner's side.

/// A queue pair's receive queue, as its owner (the receiver) sees it.
#[derive(Debug)]
pub(super) struct ReceiveQueue {
    memory: RegionMemory,
    path: String,
    qp_number: u32,
    depth: u32,
    /// Ids of the posted receives not yet completed, oldest first.
    posted: Mutex<Posted>,
}

#[derive(Debug, Default)]
struct Posted {
    ids: VecDeque<u64>,
    /// Receives posted in total.
    total: u64,
    /// Receives completed in total.
    completed: u64,
}

impl ReceiveQueue {
    pub(super) fn create(
        prefix: &str,
        qp_number: u32,
        depth: u32,
        channel: Option<u32>,
    ) -> Result<ReceiveQueue, VerbsError> {
        if depth > RECEIVES_MAX {
            return Err(VerbsError::Call {
                call: "emulated create_qp",
                problem: format!("receive queue depth {depth}, at most {RECEIVES_MAX}"),
            });
        }
        let path = receive_queue_path(prefix, qp_number);
        let memory = create(&path, "emulated create_qp")?;
        memory.store_u64(rq::CHANNEL, u64::from(channel.unwrap_or(0)));
        memory.store_u64(rq::LIVE, 1);
        memory.store_u64(rq::MAGIC, RQ_MAGIC);
        Ok(ReceiveQueue { memory, path, qp_number, depth, posted: Mutex::new(Posted::default()) })
    }

    /// Posts one receive per id.
    pub(super) fn post(&self, ids: &[u64]) -> Result<(), VerbsError> {
        let mut posted = self.posted.lock();
        let outstanding = posted.ids.len();
        if outstanding + ids.len() > self.depth as usize {
            return Err(VerbsError::ReceiveQueueFull {
                qp_number: self.qp_number,
                outstanding: outstanding as u32,
                depth: self.depth,
                posting: ids.len() as u32,
            });
        }
        posted.ids.extend(ids);
        posted.total += ids.len() as u64;
        self.memory.store_u64(rq::POSTED, posted.total);
        Ok(())
    }

    /// Asks for a notification on the next consumed receive.
    pub(super) fn arm(&self) {
        self.memory.store_u64(rq::ARMED, 1);
        // Pairs with the writer's fence between consuming and looking at the arm word.
        fence(Ordering::SeqCst);
    }

    /// Moves up to `max` completions of consumed receives into `completions`.
    pub(super) fn poll(&self, completions: &mut Vec<Completion>, max: usize) -> usize {
        let mut posted = self.posted.lock();
        let consumed = self.memory.load_u64(rq::CONSUMED);
        let mut polled = 0;
        while polled < max && posted.completed < consumed {
            let slot = rq::SLOTS + 8 * (posted.completed % u64::from(RECEIVES_MAX)) as usize;
            let immediate = self.memory.load_u64(slot) as u32;
            let id = posted.ids.pop_front().unwrap_or(u64::MAX);
            posted.completed += 1;
            completions.push(Completion {
                id,
                qp_number: self.qp_number,
                status: CompletionStatus::Success,
                kind: CompletionKind::Receive { immediate },
            });
            polled += 1;
        }
        polled
    }
}

impl Drop for ReceiveQueue {
    fn drop(&mut self) {
        self.memory.store_u64(rq::LIVE, 0);
        let _ = std::fs::remove_file(&self.path);
    }
}

// ---------------------------------------------------------------------------------------
// Receive queues, the writer's side.

/// A peer's receive queue and the channel it notifies, as a writer with immediate sees them.
#[derive(Debug)]
pub(super) struct RemoteReceiver {
    queue: RegionMemory,
    channel: Option<RegionMemory>,
}

impl RemoteReceiver {
    /// The receive queue of the peer's queue pair `qp_number` (of the device `prefix`).
    pub(super) fn open(prefix: &str, qp_number: u32) -> Option<RemoteReceiver> {
        let queue = open(&receive_queue_path(prefix, qp_number), RQ_MAGIC)?;
        let key = queue.load_u64(rq::CHANNEL) as u32;
        let channel = if key == 0 { None } else { open(&channel_path(prefix, key), CHANNEL_MAGIC) };
        Some(RemoteReceiver { queue, channel })
    }

    /// Consumes one posted receive with `immediate` and notifies the channel if the queue
    /// was armed. Called after the write's bytes are placed, so the receiver that sees the
    /// completion sees them.
    pub(super) fn deliver(&self, immediate: u32) -> Result<(), CompletionStatus> {
        let queue = &self.queue;
        if queue.load_u64(rq::LIVE) != 1 {
            return Err(CompletionStatus::RetryExceeded);
        }
        // One writer per queue pair (RC): consumed moves only here.
        let consumed = queue.load_u64(rq::CONSUMED);
        if consumed >= queue.load_u64(rq::POSTED) {
            return Err(CompletionStatus::ReceiverNotReady);
        }
        let slot = rq::SLOTS + 8 * (consumed % u64::from(RECEIVES_MAX)) as usize;
        queue.store_u64(slot, u64::from(immediate));
        queue.store_u64(rq::CONSUMED, consumed + 1);
        fence(Ordering::SeqCst);
        if queue.swap_u64(rq::ARMED, 0) == 1 {
            if let Some(channel) = &self.channel {
                notify(channel);
            }
        }
        Ok(())
    }
}
