//! The small verbs interface the ring protocol is written against, and that both providers
//! implement: the emulated one (`emulated.rs`, no device needed) and the real one over
//! libibverbs (`sys/ibverbs.rs`, feature `rdma-verbs`).
//!
//! It is the part of ibverbs a one-sided ring needs and nothing more: registered memory
//! regions with a local and a remote key, reliable-connected queue pairs with their states
//! (an error is terminal, as in verbs), RDMA WRITE work requests posted several at a time
//! (one doorbell), selective signalling, and completion queues that are polled. Remote
//! access errors (a bad key, an address outside the region) complete the work request with
//! [`CompletionStatus::RemoteAccess`] and put the queue pair in [`QpState::Error`].
//!
//! For an idle receiver to sleep and still learn of a frame at once: RDMA WRITE with
//! immediate ([`WorkRequest::immediate`]), which consumes a receive the peer posted
//! ([`QueuePair::post_receive`]) and completes on the peer's completion queue
//! ([`CompletionKind::Receive`]); and completion channels ([`CompletionChannel`]) that a
//! completion queue armed with [`CompletionQueue::arm`] notifies (`ibv_req_notify_cq`).

use crate::rdma::sys::RegionMemory;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Most bytes a work request may carry inline (copied at post time, no registered source).
pub const INLINE_BYTES_MAX: usize = 64;

/// What a peer may do to a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Only this node's work requests read it (a staging buffer).
    Local,
    /// Peers may write it with RDMA WRITE, given its remote key (a receive ring, a credit
    /// word).
    RemoteWrite,
}

/// Keeps a provider's registration of a region alive; dropping it deregisters.
pub(crate) trait Registration: Send + Sync + fmt::Debug {}

/// A registered memory region: memory a queue pair may read from (local key) and, with
/// [`Access::RemoteWrite`], that peers may write into (remote key). Deregistered on drop.
#[derive(Debug)]
pub struct MemoryRegion {
    // Dropped first: deregistration happens before the memory is unmapped.
    _registration: Box<dyn Registration>,
    memory: Arc<RegionMemory>,
    /// Where the region's bytes start in `memory` (the emulated provider keeps a header
    /// page before them).
    start: usize,
    len: usize,
    lkey: u32,
    rkey: u32,
    access: Access,
}

impl MemoryRegion {
    pub(crate) fn new(
        registration: Box<dyn Registration>,
        memory: Arc<RegionMemory>,
        start: usize,
        len: usize,
        (lkey, rkey): (u32, u32),
        access: Access,
    ) -> MemoryRegion {
        assert!(start + len <= memory.len());
        MemoryRegion { _registration: registration, memory, start, len, lkey, rkey, access }
    }

    /// Bytes in the region.
    pub fn len(&self) -> u64 {
        self.len as u64
    }

    /// Whether the region holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The virtual address of the region's first byte, as peers address it.
    pub fn address(&self) -> u64 {
        self.memory.address(self.start)
    }

    /// The local key (names the region as a work request's source).
    pub fn lkey(&self) -> u32 {
        self.lkey
    }

    /// The remote key (what a peer must present to write into the region).
    pub fn rkey(&self) -> u32 {
        self.rkey
    }

    /// Who may write the region.
    pub fn access(&self) -> Access {
        self.access
    }

    /// What a peer needs to write into this region.
    pub fn remote(&self) -> RemoteRegion {
        RemoteRegion { address: self.address(), len: self.len(), rkey: self.rkey }
    }

    pub(crate) fn memory(&self) -> &RegionMemory {
        &self.memory
    }

    /// Offset in `memory()` of byte `offset` of the region.
    pub(crate) fn at(&self, offset: u64) -> usize {
        assert!(offset <= self.len as u64, "offset {offset} past a region of {} bytes", self.len);
        self.start + offset as usize
    }
}

/// A peer's region as the peer described it: where, how long, and its remote key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteRegion {
    /// Virtual address of the first byte in the peer's address space.
    pub address: u64,
    /// Bytes.
    pub len: u64,
    /// Remote key.
    pub rkey: u32,
}

/// What a peer needs to connect its queue pair to ours: the queue pair number and the
/// port's addressing (LID for InfiniBand, GID for RoCE), the first packet sequence number,
/// and a provider-specific name (the emulated provider's shared-memory prefix).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QpEndpoint {
    /// Queue pair number.
    pub qp_number: u32,
    /// Local identifier of the port (InfiniBand; 0 on RoCE).
    pub lid: u16,
    /// Global identifier of the port (RoCE).
    pub gid: [u8; 16],
    /// First packet sequence number.
    pub psn: u32,
    /// Provider-specific: the emulated provider's region name prefix; empty otherwise.
    pub name: String,
}

/// The states of a reliable-connected queue pair that matter here, in verbs' order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QpState {
    /// Created.
    Reset,
    /// Initialised: bound to a port and access flags set.
    Init,
    /// Ready to receive: knows its peer.
    ReadyToReceive,
    /// Ready to send: work requests may be posted.
    ReadyToSend,
    /// Failed: posted and outstanding work requests complete as flushed; terminal.
    Error,
}

/// Where a work request's bytes come from.
#[derive(Clone, Copy, Debug)]
pub enum Source<'a> {
    /// `len` bytes at `offset` of a registered region of this node.
    Region {
        /// The region.
        region: &'a MemoryRegion,
        /// Offset in the region.
        offset: u64,
        /// Bytes.
        len: u32,
    },
    /// Bytes copied at post time (at most [`INLINE_BYTES_MAX`]): no registered source, and
    /// the caller may reuse its buffer at once.
    Inline(&'a [u8]),
}

impl Source<'_> {
    /// Bytes the request writes.
    pub fn len(&self) -> u64 {
        match self {
            Source::Region { len, .. } => u64::from(*len),
            Source::Inline(bytes) => bytes.len() as u64,
        }
    }

    /// Whether the request writes no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One RDMA WRITE: `source`'s bytes to `remote_address` of the peer's region `rkey`.
#[derive(Clone, Copy, Debug)]
pub struct WorkRequest<'a> {
    /// Returned in the completion.
    pub id: u64,
    /// The bytes.
    pub source: Source<'a>,
    /// Destination address in the peer's address space.
    pub remote_address: u64,
    /// The destination region's remote key.
    pub rkey: u32,
    /// Whether a successful completion is reported. Unsignalled requests complete silently;
    /// they are known done when a later signalled request of the same queue pair completes
    /// (verbs completes a queue pair's requests in order). Failures are always reported.
    pub signaled: bool,
    /// With a value: an RDMA WRITE with immediate. After the bytes are placed it consumes a
    /// receive the peer posted and completes there as [`CompletionKind::Receive`] carrying
    /// the value, which notifies the peer's completion channel if its queue is armed. With
    /// no receive posted it fails with [`CompletionStatus::ReceiverNotReady`]. It may write
    /// zero bytes (a pure notification).
    pub immediate: Option<u32>,
}

/// How a work request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompletionStatus {
    /// The bytes are in the peer's memory.
    Success,
    /// The local source was not a valid registered range.
    LocalProtection,
    /// The peer refused the write: unknown or revoked remote key, or a range outside the
    /// region.
    RemoteAccess,
    /// The peer did not answer (it is gone, or the link is).
    RetryExceeded,
    /// A write with immediate found no receive posted at the peer (verbs retries, then fails
    /// with `IBV_WC_RNR_RETRY_EXC_ERR`).
    ReceiverNotReady,
    /// The queue pair was in error: the request was not executed.
    Flushed,
}

/// What a completion completes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompletionKind {
    /// A work request this side posted (an RDMA WRITE, with or without immediate).
    Write,
    /// A receive this side posted, consumed by the peer's write with `immediate`.
    Receive {
        /// The writer's immediate value.
        immediate: u32,
    },
}

/// A completion polled from a completion queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The work request's (or the receive's) id.
    pub id: u64,
    /// The queue pair that posted it.
    pub qp_number: u32,
    /// The outcome.
    pub status: CompletionStatus,
    /// A write's completion or a receive's.
    pub kind: CompletionKind,
}

/// Why a verbs call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerbsError {
    /// The host has no RDMA device.
    #[error("no RDMA device found (ibv_get_device_list returned none)")]
    NoDevice,
    /// The named device does not exist.
    #[error("RDMA device {name:?} not found; devices present: {available}")]
    DeviceNotFound {
        /// The name asked for.
        name: String,
        /// The devices there are.
        available: String,
    },
    /// A system or verbs call failed.
    #[error("{call} failed: {problem}")]
    Call {
        /// The call.
        call: &'static str,
        /// What it reported.
        problem: String,
    },
    /// The queue pair is not in a state that allows the operation.
    #[error("queue pair {qp_number} is in state {found:?}; {operation} needs {expected:?}")]
    QpState {
        /// The queue pair.
        qp_number: u32,
        /// The operation.
        operation: &'static str,
        /// The state it needs.
        expected: QpState,
        /// The state it is in.
        found: QpState,
    },
    /// Posting would exceed the send queue.
    #[error("send queue of queue pair {qp_number} is full: {outstanding} requests outstanding, depth {depth}, {posting} more posted")]
    SendQueueFull {
        /// The queue pair.
        qp_number: u32,
        /// Requests posted and not yet known complete.
        outstanding: u32,
        /// The queue's depth.
        depth: u32,
        /// Requests in the refused post.
        posting: u32,
    },
    /// Posting would exceed the receive queue.
    #[error("receive queue of queue pair {qp_number} is full: {outstanding} receives posted, depth {depth}, {posting} more posted")]
    ReceiveQueueFull {
        /// The queue pair.
        qp_number: u32,
        /// Receives posted and not yet completed.
        outstanding: u32,
        /// The queue's depth.
        depth: u32,
        /// Receives in the refused post.
        posting: u32,
    },
    /// A work request is malformed (nothing of the post was executed).
    #[error("invalid work request {id}: {problem}")]
    InvalidRequest {
        /// The request's id.
        id: u64,
        /// What is wrong.
        problem: String,
    },
}

/// Where completion queues armed with [`CompletionQueue::arm`] report a new completion
/// (`ibv_comp_channel`), and what an idle poller sleeps on. Several queues may share one.
///
/// To sleep without missing a notification: take [`CompletionChannel::prepare`], arm the
/// queues, look for work one last time, then [`CompletionChannel::wait`] with the token: a
/// notification or a [`CompletionChannel::wake`] after `prepare` ends the wait at once.
pub trait CompletionChannel: Send + Sync + fmt::Debug {
    /// A token for [`CompletionChannel::wait`], taken before the caller's last look for work.
    fn prepare(&self) -> u64;

    /// Sleeps until an armed queue of this channel gets a completion or `wake` is called
    /// (since `prepare`), or `timeout` passes. True when it was notified or woken.
    fn wait(&self, prepared: u64, timeout: Duration) -> bool;

    /// Wakes the waiter, or makes the next `wait` after a `prepare` before this return at
    /// once (a local event: a message queued to send).
    fn wake(&self);

    /// The provider's own type, for a provider to find its channel behind the trait.
    fn as_any(&self) -> &dyn std::any::Any;
}

/// A completion queue: where a queue pair reports finished work requests and consumed
/// receives.
pub trait CompletionQueue: Send + Sync + fmt::Debug {
    /// Moves up to `max` completions into `completions` and returns how many.
    fn poll(&self, completions: &mut Vec<Completion>, max: usize) -> usize;

    /// Asks for one notification of the queue's channel on its next completion (one-shot,
    /// as `ibv_req_notify_cq`). A queue created without a channel refuses.
    fn arm(&self) -> Result<(), VerbsError>;

    /// The provider's own type, for a provider to find its queue behind the trait.
    fn as_any(&self) -> &dyn std::any::Any;
}

/// A reliable-connected queue pair.
pub trait QueuePair: Send + fmt::Debug {
    /// What the peer needs to connect to this queue pair.
    fn endpoint(&self) -> QpEndpoint;

    /// The current state.
    fn state(&self) -> QpState;

    /// Connects to the peer's queue pair: RESET -> INIT -> RTR -> RTS.
    fn connect(&mut self, remote: &QpEndpoint) -> Result<(), VerbsError>;

    /// Posts `requests` as one chain (one doorbell). Either every request is accepted or
    /// none is. Outcomes arrive on the completion queue.
    fn post_write(&mut self, requests: &[WorkRequest<'_>]) -> Result<(), VerbsError>;

    /// Posts one zero-length receive per id, for the peer's writes with immediate to consume.
    /// Either every receive is accepted or none is.
    fn post_receive(&mut self, ids: &[u64]) -> Result<(), VerbsError>;

    /// Moves the queue pair to [`QpState::Error`] (tear-down, or a test's injected fault).
    fn set_error(&mut self);
}

/// An opened RDMA device with its protection domain: registers memory, creates completion
/// queues and queue pairs.
pub trait Device: Send + Sync + fmt::Debug {
    /// A name for logs (`mlx5_0`, `emulated:/dev/shm/...`).
    fn name(&self) -> String;

    /// Registers `len` bytes of fresh zeroed memory.
    fn register(&self, len: u64, access: Access) -> Result<MemoryRegion, VerbsError>;

    /// Creates a completion channel.
    fn create_channel(&self) -> Result<Arc<dyn CompletionChannel>, VerbsError>;

    /// Creates a completion queue of `depth` entries, notifying `channel` when armed.
    fn create_cq(
        &self,
        depth: u32,
        channel: Option<&Arc<dyn CompletionChannel>>,
    ) -> Result<Arc<dyn CompletionQueue>, VerbsError>;

    /// Creates a reliable-connected queue pair reporting to `cq`, with room for
    /// `send_queue_depth` outstanding work requests and `receive_queue_depth` posted
    /// receives.
    fn create_qp(
        &self,
        cq: &Arc<dyn CompletionQueue>,
        send_queue_depth: u32,
        receive_queue_depth: u32,
    ) -> Result<Box<dyn QueuePair>, VerbsError>;
}

/// Checks a post before anything executes: inline sizes, local source bounds.
pub(crate) fn check_requests(requests: &[WorkRequest<'_>]) -> Result<(), VerbsError> {
    for request in requests {
        match request.source {
            Source::Inline(bytes) if bytes.len() > INLINE_BYTES_MAX => {
                return Err(VerbsError::InvalidRequest {
                    id: request.id,
                    problem: format!("{} inline bytes, at most {INLINE_BYTES_MAX}", bytes.len()),
                })
            }
            Source::Region { region, offset, len } if offset + u64::from(len) > region.len() => {
                return Err(VerbsError::InvalidRequest {
                    id: request.id,
                    problem: format!(
                        "source [{offset}, +{len}) outside its region of {} bytes",
                        region.len()
                    ),
                })
            }
            _ => {}
        }
    }
    Ok(())
}
