//! [`RdmaConfig`]: the settings of an `RdmaTransport` (ring and frame sizes, queues,
//! signalling, doorbell batching, the idle back-off and wake-up, redial timing, checkpoint
//! transfer, the protocol version), and their checks.

use crate::codec::PROTOCOL_VERSION;
use crate::rdma::archive::BATCH_OVERHEAD_BYTES;
use crate::rdma::checkpoint::{TransferLimits, FRAME_BYTES_MIN};
use crate::rdma::connection::{LinkConfig, RING_BYTES_MAX};
use crate::rdma::ring::RING_BYTES_MIN;
use crate::transport::QueueFullPolicy;
use std::time::Duration;

/// Settings of an `RdmaTransport`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RdmaConfig {
    /// Bytes of each receive ring (one per sending peer): a power of two, at least 4 KiB and
    /// at least twice `frame_bytes_max`.
    pub ring_bytes: u64,
    /// Largest frame payload (one archived batch); a single message may be up to
    /// `frame_bytes_max - BATCH_OVERHEAD_BYTES` archived bytes.
    pub frame_bytes_max: u64,
    /// Most messages in one frame.
    pub batch_messages_max: u32,
    /// Most messages waiting in one peer's queue.
    pub peer_queue_messages_max: u32,
    /// Most archived bytes waiting in one peer's queue.
    pub peer_queue_bytes_max: u64,
    /// What `send` does when a peer's queue is full.
    pub queue_full: QueueFullPolicy,
    /// Capacity of the inbound channel, in messages.
    pub inbound_queue_messages_max: u32,
    /// Work requests a queue pair may have outstanding.
    pub send_queue_depth: u32,
    /// Every this many work requests, one asks for a completion (at most half the depth).
    pub signal_interval: u32,
    /// Most frames written per doorbell (one post of several work requests).
    pub doorbell_batch_max: u32,
    /// Idle turns spent spinning before yielding. Short by default: with `idle_wake` a
    /// sleeping poller is woken by the frame itself, and on cores shared with other work a
    /// long spin takes the CPU from the threads the poller delivers to.
    pub idle_spin_turns: u32,
    /// Idle turns spent yielding before sleeping (a yield on a busy core gives the CPU away
    /// for a whole time slice, so few).
    pub idle_yield_turns: u32,
    /// First sleep of an idle poller, in microseconds; doubles per idle turn.
    pub idle_sleep_initial_us: u64,
    /// Longest sleep of an idle poller. With `idle_wake` it only bounds a wake-up that a
    /// race lost; without, it is the worst added latency of a frame that arrives while the
    /// poller sleeps.
    pub idle_sleep_max_us: u64,
    /// Whether an idle poller tells its senders it sleeps, so that their next frame wakes
    /// it (an RDMA WRITE with immediate on an armed completion queue) instead of its timer.
    pub idle_wake: bool,
    /// How long a handshake may take.
    pub handshake_timeout_ms: u64,
    /// First redial delay; doubles per failed attempt up to `backoff_max_ms` (drawn from
    /// `[d/2, d]`).
    pub backoff_initial_ms: u64,
    /// Largest redial delay.
    pub backoff_max_ms: u64,
    /// Seeds the stamp keys and the redial jitter.
    pub seed: u64,
    /// Largest frame of a checkpoint transfer (one protobuf chunk): what a fetcher accepts
    /// and a server sends at most.
    pub checkpoint_frame_bytes_max: u32,
    /// How long a checkpoint transfer may make no progress (connect, a read, a write).
    pub checkpoint_timeout_ms: u64,
    /// The newest protocol version this endpoint speaks, in
    /// [`PROTOCOL_VERSION_MIN`](crate::PROTOCOL_VERSION_MIN)`..=`[`PROTOCOL_VERSION`]
    /// (default: the newest). Each connection speaks the newest version both ends speak,
    /// agreed in its handshake; a peer with none in common is refused (counted in
    /// `rejected_version`), and a message the connection's version cannot carry is not sent
    /// (counted in `dropped_for_version`). As `GrpcConfig::protocol_version`: set it to the
    /// old version during a rolling upgrade (docs/PROTOCOL.md, "Versions").
    pub protocol_version: u32,
}

impl Default for RdmaConfig {
    fn default() -> RdmaConfig {
        RdmaConfig {
            ring_bytes: 8 << 20,
            frame_bytes_max: 4 << 20,
            batch_messages_max: 1024,
            peer_queue_messages_max: 16 * 1024,
            peer_queue_bytes_max: 64 << 20,
            queue_full: QueueFullPolicy::DropOldest,
            inbound_queue_messages_max: 16 * 1024,
            send_queue_depth: 128,
            signal_interval: 16,
            doorbell_batch_max: 16,
            idle_spin_turns: 200,
            idle_yield_turns: 10,
            idle_sleep_initial_us: 20,
            idle_sleep_max_us: 500,
            idle_wake: true,
            handshake_timeout_ms: 2_000,
            backoff_initial_ms: 20,
            backoff_max_ms: 1_000,
            seed: 0,
            checkpoint_frame_bytes_max: 1 << 20,
            checkpoint_timeout_ms: 10_000,
            protocol_version: PROTOCOL_VERSION,
        }
    }
}

/// The largest checkpoint frame allowed (a fetcher allocates one frame at a time).
const CHECKPOINT_FRAME_BYTES_MAX: u32 = 64 << 20;

/// An [`RdmaConfig`] value out of range.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid RDMA transport configuration: {field}: {problem}")]
pub struct RdmaConfigError {
    /// The field.
    pub field: &'static str,
    /// What is wrong.
    pub problem: String,
}

impl RdmaConfig {
    /// The largest archived message `send` accepts.
    pub fn message_bytes_max(&self) -> u64 {
        self.frame_bytes_max.saturating_sub(BATCH_OVERHEAD_BYTES)
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<(), RdmaConfigError> {
        let check = |ok: bool, field: &'static str, problem: String| {
            if ok {
                Ok(())
            } else {
                Err(RdmaConfigError { field, problem })
            }
        };
        let ring = self.ring_bytes;
        check(
            ring.is_power_of_two() && (RING_BYTES_MIN..=RING_BYTES_MAX).contains(&ring),
            "ring_bytes",
            format!("{ring}: a power of two in {RING_BYTES_MIN}..={RING_BYTES_MAX} expected"),
        )?;
        check(
            self.frame_bytes_max > BATCH_OVERHEAD_BYTES && self.frame_bytes_max <= ring / 2,
            "frame_bytes_max",
            format!("{} not in {}..={}", self.frame_bytes_max, BATCH_OVERHEAD_BYTES + 1, ring / 2),
        )?;
        check(self.batch_messages_max > 0, "batch_messages_max", "must be positive".into())?;
        check(self.peer_queue_messages_max > 0, "peer_queue_messages_max", "must be positive".into())?;
        check(
            self.peer_queue_bytes_max >= self.frame_bytes_max,
            "peer_queue_bytes_max",
            format!("{} is below frame_bytes_max {}", self.peer_queue_bytes_max, self.frame_bytes_max),
        )?;
        check(self.inbound_queue_messages_max > 0, "inbound_queue_messages_max", "must be positive".into())?;
        check(
            (4..=16 * 1024).contains(&self.send_queue_depth),
            "send_queue_depth",
            format!("{} not in 4..=16384", self.send_queue_depth),
        )?;
        check(
            self.signal_interval >= 1 && self.signal_interval <= self.send_queue_depth / 2,
            "signal_interval",
            format!("{} not in 1..={}", self.signal_interval, self.send_queue_depth / 2),
        )?;
        check(
            self.doorbell_batch_max >= 1 && 2 * self.doorbell_batch_max <= self.send_queue_depth,
            "doorbell_batch_max",
            format!("{} not in 1..={}", self.doorbell_batch_max, self.send_queue_depth / 2),
        )?;
        check(
            self.idle_sleep_initial_us > 0 && self.idle_sleep_initial_us <= self.idle_sleep_max_us,
            "idle_sleep_initial_us",
            format!("{} not in 1..={}", self.idle_sleep_initial_us, self.idle_sleep_max_us),
        )?;
        check(self.handshake_timeout_ms > 0, "handshake_timeout_ms", "must be positive".into())?;
        check(
            (FRAME_BYTES_MIN..=CHECKPOINT_FRAME_BYTES_MAX).contains(&self.checkpoint_frame_bytes_max),
            "checkpoint_frame_bytes_max",
            format!(
                "{} not in {FRAME_BYTES_MIN}..={CHECKPOINT_FRAME_BYTES_MAX}",
                self.checkpoint_frame_bytes_max
            ),
        )?;
        check(self.checkpoint_timeout_ms > 0, "checkpoint_timeout_ms", "must be positive".into())?;
        crate::version::check_speaks(self.protocol_version)
            .map_err(|problem| RdmaConfigError { field: "protocol_version", problem })?;
        check(
            self.backoff_initial_ms > 0 && self.backoff_initial_ms <= self.backoff_max_ms,
            "backoff_initial_ms",
            format!("{} not in 1..={}", self.backoff_initial_ms, self.backoff_max_ms),
        )
    }

    pub(crate) fn transfer_limits(&self) -> TransferLimits {
        TransferLimits {
            frame_bytes_max: self.checkpoint_frame_bytes_max,
            timeout: Duration::from_millis(self.checkpoint_timeout_ms),
        }
    }

    pub(crate) fn link(&self) -> LinkConfig {
        LinkConfig {
            ring_bytes: self.ring_bytes,
            payload_max: self.frame_bytes_max,
            send_queue_depth: self.send_queue_depth,
            signal_interval: self.signal_interval,
            doorbell_batch_max: self.doorbell_batch_max,
            batch_messages_max: self.batch_messages_max,
            handshake_timeout: Duration::from_millis(self.handshake_timeout_ms),
            protocol_version: self.protocol_version,
        }
    }
}
