//! One direction of one peer link: the sender's `Outbound` (queue pair, staging buffer,
//! credit word, producer) and the receiver's `Inbound` (queue pair, ring, consumer), how
//! each is set up over the handshake, and what each does on one turn of the poller.
//!
//! A link between two nodes is two connections, one per direction, each set up by its
//! sender: the receiver owns the ring, the sender owns the credit region the receiver
//! writes: its consumed position, and its sleep notices.
//!
//! Idle wake-up: a receiver about to sleep writes a new sleep notice into the sender's
//! credit region (once per idle period, and only while it has a receive posted for every
//! notice not yet answered) and arms its completion queue. A sender that finds a notice it
//! has not answered sends the last frame of its next doorbell as an RDMA WRITE with
//! immediate, which consumes one of the receiver's posted receives and wakes its channel;
//! and right after posting it looks at the notice again (a notice that landed meanwhile is
//! answered with a zero-byte write with immediate).

use crate::gate::Gate;
use crate::rdma::archive::{access_batch, message_from_archived, serialize_into, WireBatch, WireMessage};
use crate::rdma::handshake::{self, HandshakeError, Hello, Refusal, Reply, Versions};
use crate::rdma::ring::{Consumer, FrameError, Placement, Producer, RecordRange, RING_BYTES_MIN};
use crate::rdma::stats::RdmaStats;
use crate::rdma::verbs::{
    Access, Completion, CompletionChannel, CompletionKind, CompletionQueue, CompletionStatus, Device,
    MemoryRegion, QueuePair, RemoteRegion, Source, VerbsError, WorkRequest,
};
use crate::stats::TransportStats;
use crate::transport::Inbound as Delivered;
use crate::version::{core_message_version, leave_out_newer};
use rsl_core::{Message, NodeId, RingId};
use std::collections::VecDeque;
use std::io::ErrorKind;
use std::net::TcpStream;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Bytes of a sender's credit region: the consumed position at offset 0, the receiver's
/// latest sleep notice at offset 8.
const CREDIT_BYTES: u64 = 64;
/// Where the receiver writes its sleep notices in the credit region.
const NOTICE_OFFSET: u64 = 8;
/// Receives a receiver keeps posted for writes with immediate.
pub(crate) const RECEIVES: u32 = 16;
/// The largest ring a receiver may announce.
pub(crate) const RING_BYTES_MAX: u64 = 1 << 30;
/// Completions taken per poll.
const POLL_BATCH: usize = 32;

/// Settings a connection needs (from `RdmaConfig`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct LinkConfig {
    pub(crate) ring_bytes: u64,
    pub(crate) payload_max: u64,
    pub(crate) send_queue_depth: u32,
    pub(crate) signal_interval: u32,
    pub(crate) doorbell_batch_max: u32,
    pub(crate) batch_messages_max: u32,
    pub(crate) handshake_timeout: Duration,
    /// The newest protocol version this endpoint speaks.
    pub(crate) protocol_version: u32,
}

/// Why a connection ended or could not be set up.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LinkError {
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    #[error("verbs: {0}")]
    Verbs(#[from] VerbsError),
    #[error("the peer refused: {0}")]
    Refused(String),
    #[error("the peer closed the connection")]
    PeerGone,
    #[error("work request {id} completed with {status:?}")]
    Completion { id: u64, status: CompletionStatus },
    #[error("frame refused: {0}")]
    Frame(#[from] FrameError),
    #[error("invalid frame at position {position}: {problem}")]
    Invalid { position: u64, problem: String },
    #[error("bad credit: {0}")]
    Credit(#[from] crate::rdma::ring::CreditError),
}

/// Work-request ids and selective signalling for one queue pair: request `n` is signalled
/// when `n + 1` is a multiple of the interval, and a completion of request `n` retires
/// every request up to it (a queue pair completes in order; the poller takes the highest
/// id seen, so completions handed out of order retire the same).
#[derive(Debug)]
pub(crate) struct Signals {
    posted: u64,
    retired: u64,
    depth: u32,
    interval: u32,
}

impl Signals {
    pub(crate) fn new(depth: u32, interval: u32) -> Signals {
        assert!(interval >= 1 && interval <= depth / 2, "signal interval {interval} for depth {depth}");
        Signals { posted: 0, retired: 0, depth, interval }
    }

    /// Requests that may be posted now.
    pub(crate) fn room(&self) -> u32 {
        self.depth - (self.posted - self.retired) as u32
    }

    /// The next request's id and whether it is signalled.
    pub(crate) fn next(&mut self) -> (u64, bool) {
        let id = self.posted;
        self.posted += 1;
        (id, (id + 1) % u64::from(self.interval) == 0)
    }

    /// Takes a polled completion.
    pub(crate) fn on_completion(&mut self, completion: &Completion) -> Result<(), LinkError> {
        if completion.status != CompletionStatus::Success {
            return Err(LinkError::Completion { id: completion.id, status: completion.status });
        }
        if completion.kind == CompletionKind::Write && completion.id < self.posted {
            self.retired = self.retired.max(completion.id + 1);
        }
        Ok(())
    }
}

/// Posts `requests` in one call and counts them.
fn post(qp: &mut dyn QueuePair, requests: &[WorkRequest<'_>], stats: &RdmaStats) -> Result<(), LinkError> {
    if requests.is_empty() {
        return Ok(());
    }
    qp.post_write(requests)?;
    RdmaStats::bump(&stats.doorbells);
    RdmaStats::add(&stats.work_requests, requests.len() as u64);
    let count = |keep: fn(&WorkRequest<'_>) -> bool| requests.iter().filter(|r| keep(r)).count() as u64;
    RdmaStats::add(&stats.signaled_requests, count(|request| request.signaled));
    RdmaStats::add(&stats.immediate_writes, count(|request| request.immediate.is_some()));
    Ok(())
}

/// Takes completions: a write's retires requests; a receive's (a peer's write with
/// immediate) is counted and returned. Any failure ends the connection.
fn poll_completions(
    cq: &dyn CompletionQueue,
    signals: &mut Signals,
    stats: &RdmaStats,
) -> Result<(bool, u32), LinkError> {
    let mut completions = Vec::new();
    cq.poll(&mut completions, POLL_BATCH);
    let mut receives = 0;
    for completion in &completions {
        if let Err(error) = signals.on_completion(completion) {
            RdmaStats::bump(&stats.completion_errors);
            return Err(error);
        }
        if let CompletionKind::Receive { .. } = completion.kind {
            receives += 1;
        }
    }
    RdmaStats::add(&stats.immediates_received, u64::from(receives));
    Ok((!completions.is_empty(), receives))
}

/// Whether the handshake socket says the peer process is gone.
fn peer_gone(socket: &TcpStream) -> bool {
    let mut byte = [0; 1];
    match socket.peek(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(error) => !matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted),
    }
}

/// Sets the handshake socket's options: no delay, read and write timeouts.
pub(crate) fn set_up_socket(socket: &TcpStream, timeout: Duration) -> Result<(), HandshakeError> {
    socket.set_nodelay(true)?;
    socket.set_read_timeout(Some(timeout))?;
    socket.set_write_timeout(Some(timeout))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The sender.

/// The writes that copy `ranges` of the staging buffer to the same offsets of the ring.
fn record_writes<'a>(
    staging: &'a MemoryRegion,
    ring: RemoteRegion,
    signals: &mut Signals,
    ranges: &[RecordRange],
) -> Vec<WorkRequest<'a>> {
    ranges
        .iter()
        .map(|range| {
            let (id, signaled) = signals.next();
            WorkRequest {
                id,
                source: Source::Region { region: staging, offset: range.offset, len: range.len as u32 },
                remote_address: ring.address + range.offset,
                rkey: ring.rkey,
                signaled,
                immediate: None,
            }
        })
        .collect()
}

/// The sending direction to one peer.
#[derive(Debug)]
pub(crate) struct Outbound {
    pub(crate) peer: NodeId,
    local: NodeId,
    qp: Box<dyn QueuePair>,
    cq: Arc<dyn CompletionQueue>,
    staging: MemoryRegion,
    credit: MemoryRegion,
    ring: RemoteRegion,
    producer: Producer,
    signals: Signals,
    /// Frames written and not yet credited: (end position, messages).
    in_flight: VecDeque<(u64, u64)>,
    /// The receiver's latest sleep notice answered with a write with immediate.
    answered: u64,
    /// The connection's protocol version, agreed in the handshake.
    version: u32,
    socket: TcpStream,
    config: LinkConfig,
}

impl Outbound {
    /// Dials `address`, runs the handshake and connects a queue pair to the peer's.
    pub(crate) fn dial(
        device: &dyn Device,
        local: NodeId,
        peer: NodeId,
        address: std::net::SocketAddr,
        config: LinkConfig,
    ) -> Result<Outbound, LinkError> {
        let mut socket = TcpStream::connect_timeout(&address, config.handshake_timeout)
            .map_err(|error| HandshakeError::Io(format!("connect to {address}: {error}")))?;
        set_up_socket(&socket, config.handshake_timeout)?;
        let cq = device.create_cq(config.send_queue_depth * 2, None)?;
        let mut qp = device.create_qp(&cq, config.send_queue_depth, 0)?;
        let credit = device.register(CREDIT_BYTES, Access::RemoteWrite)?;
        let versions = Versions::up_to(config.protocol_version);
        let hello =
            Hello { from: local, to: peer, versions, endpoint: qp.endpoint(), credit: credit.remote() };
        handshake::write_hello(&mut socket, &hello)?;
        let reply = match handshake::read_reply(&mut socket, versions) {
            Err(HandshakeError::Refused(reason)) => return Err(LinkError::Refused(reason)),
            other => other?,
        };
        let ring_len = reply.ring.len;
        if !ring_len.is_power_of_two() || !(RING_BYTES_MIN..=RING_BYTES_MAX).contains(&ring_len) {
            return Err(HandshakeError::Malformed(format!(
                "ring of {ring_len} bytes: a power of two in {RING_BYTES_MIN}..={RING_BYTES_MAX} expected"
            ))
            .into());
        }
        let staging = device.register(ring_len, Access::Local)?;
        qp.connect(&reply.endpoint)?;
        socket.set_nonblocking(true).map_err(HandshakeError::from)?;
        let payload_max = reply.payload_max.min(config.payload_max);
        Ok(Outbound {
            peer,
            local,
            qp,
            cq,
            staging,
            credit,
            ring: reply.ring,
            producer: Producer::new(ring_len, reply.key, payload_max),
            signals: Signals::new(config.send_queue_depth, config.signal_interval),
            in_flight: VecDeque::new(),
            answered: 0,
            version: reply.version,
            socket,
            config,
        })
    }

    /// Whether the peer's process is gone (its handshake socket closed).
    pub(crate) fn peer_gone(&self) -> bool {
        peer_gone(&self.socket)
    }

    /// Messages written but not credited (lost if the connection ends now).
    pub(crate) fn unacknowledged(&self) -> u64 {
        self.in_flight.iter().map(|(_, messages)| messages).sum()
    }

    /// The receiver's latest sleep notice (0: none yet).
    fn notice(&self) -> u64 {
        self.credit.memory().load_u64(self.credit.at(NOTICE_OFFSET))
    }

    /// Takes completions and the receiver's credit.
    fn reap(&mut self, stats: &RdmaStats) -> Result<bool, LinkError> {
        let (mut work, _) = poll_completions(self.cq.as_ref(), &mut self.signals, stats)?;
        let head = self.credit.memory().load_u64(self.credit.at(0));
        if self.producer.on_credit(head).inspect_err(|_| RdmaStats::bump(&stats.credit_errors))? {
            work = true;
            while let Some(&(end, messages)) = self.in_flight.front() {
                if end > head {
                    break;
                }
                RdmaStats::add(&stats.messages_acknowledged, messages);
                self.in_flight.pop_front();
            }
        }
        Ok(work)
    }

    /// One turn: reap completions and credit, then write as many frames from `take` as
    /// credit and the send queue allow, posting them with one doorbell. `take(n)` hands out
    /// up to `n` queued messages; what was taken and cannot be written now is left in
    /// `unwritten` (also when the turn fails: those messages were never written, so they
    /// go out on the next connection). True when the turn did work.
    pub(crate) fn pump(
        &mut self,
        mut take: impl FnMut(usize, u64) -> Vec<Message>,
        unwritten: &mut Vec<Message>,
        stats: &RdmaStats,
        transport: &TransportStats,
    ) -> Result<bool, LinkError> {
        let work = self.reap(stats)?;
        let mut ranges: Vec<RecordRange> = Vec::new();
        let mut frames = 0;
        // A frame may need two requests (a wrap record and itself).
        while frames < self.config.doorbell_batch_max && self.signals.room() as usize >= ranges.len() + 2 {
            let mut messages = take(self.config.batch_messages_max as usize, self.producer.payload_max());
            if messages.is_empty() {
                break;
            }
            self.leave_out_newer(&mut messages, transport);
            if messages.is_empty() {
                continue;
            }
            let left = self.write(messages, &mut ranges, transport);
            if !left.is_empty() {
                *unwritten = left;
                break;
            }
            frames += 1;
        }
        if ranges.is_empty() {
            return Ok(work);
        }
        let mut requests = record_writes(&self.staging, self.ring, &mut self.signals, &ranges);
        let notice = self.notice();
        if notice > self.answered {
            // The receiver said it sleeps: the last frame wakes it when it has landed.
            if let Some(last) = requests.last_mut() {
                last.immediate = Some(notice as u32);
                self.answered = notice;
            }
        }
        post(self.qp.as_mut(), &requests, stats)?;
        drop(requests);
        // Pairs with the receiver's fence between its notice and its last look at the ring:
        // either it sees these frames, or this sees its notice.
        fence(Ordering::SeqCst);
        self.answer_late_notice(stats)?;
        Ok(true)
    }

    /// Leaves out what the connection's protocol version cannot carry (counted in
    /// `dropped_for_version`, as over gRPC).
    fn leave_out_newer(&self, messages: &mut Vec<Message>, transport: &TransportStats) {
        let dropped = leave_out_newer(messages, self.version, core_message_version, transport);
        if dropped > 0 {
            tracing::warn!(
                local = %self.local, peer = %self.peer, version = self.version, dropped,
                "messages the peer's protocol version cannot carry not sent"
            );
        }
    }

    /// Wakes a receiver whose sleep notice landed while this turn's frames were posted,
    /// with a zero-byte write with immediate (when the send queue has room; otherwise its
    /// timer wakes it).
    fn answer_late_notice(&mut self, stats: &RdmaStats) -> Result<(), LinkError> {
        let notice = self.notice();
        if notice <= self.answered || self.signals.room() == 0 {
            return Ok(());
        }
        let (id, signaled) = self.signals.next();
        let request = WorkRequest {
            id,
            source: Source::Inline(&[]),
            remote_address: self.ring.address,
            rkey: self.ring.rkey,
            signaled,
            immediate: Some(notice as u32),
        };
        post(self.qp.as_mut(), &[request], stats)?;
        self.answered = notice;
        Ok(())
    }

    /// Writes `messages` as one frame (halving the batch while it does not fit an empty
    /// ring). Returns the messages that could not be written for lack of credit.
    fn write(
        &mut self,
        mut messages: Vec<Message>,
        ranges: &mut Vec<RecordRange>,
        transport: &TransportStats,
    ) -> Vec<Message> {
        loop {
            let batch = WireBatch {
                from: self.local.0,
                to: self.peer.0,
                messages: messages.iter().map(WireMessage::new).collect(),
            };
            let before = ranges.len();
            match self.producer.write_frame(&self.staging, ranges, |room| serialize_into(&batch, room)) {
                Placement::Written => {
                    let count = messages.len() as u64;
                    self.in_flight.push_back((self.producer.tail(), count));
                    TransportStats::bump(&transport.frames_sent);
                    TransportStats::add(&transport.messages_sent, count);
                    TransportStats::add(
                        &transport.bytes_sent,
                        ranges[before..].iter().map(|r| r.len).sum::<u64>(),
                    );
                    return Vec::new();
                }
                Placement::NoRoom => return messages,
                Placement::TooLarge if messages.len() > 1 => {
                    let rest = messages.split_off(messages.len() / 2);
                    let left = self.write(messages, ranges, transport);
                    if !left.is_empty() {
                        return left.into_iter().chain(rest).collect();
                    }
                    messages = rest;
                }
                Placement::TooLarge => {
                    // `send` refuses any message over the frame limit, so this is a peer
                    // that announced a smaller limit than ours: drop and count it.
                    tracing::warn!(peer = %self.peer, "dropped a message larger than the peer's frame limit");
                    TransportStats::bump(&transport.dropped_queue_full);
                    return Vec::new();
                }
            }
        }
    }
}

#[cfg(test)]
impl Outbound {
    /// The connection's protocol version.
    pub(crate) fn version(&self) -> u32 {
        self.version
    }

    /// Frames `payload` as the next record, lets `damage` change the staged record (given
    /// the staging buffer and the record's offset), and writes it: a peer that sends what
    /// it should not.
    pub(crate) fn post_raw(
        &mut self,
        payload: &[u8],
        damage: impl FnOnce(&MemoryRegion, u64),
    ) -> Result<(), LinkError> {
        let mut ranges = Vec::new();
        let placed = self.producer.write_frame(&self.staging, &mut ranges, |room| {
            room[..payload.len()].copy_from_slice(payload);
            Some(payload.len())
        });
        assert_eq!(placed, Placement::Written);
        damage(&self.staging, ranges[ranges.len() - 1].offset);
        let requests = record_writes(&self.staging, self.ring, &mut self.signals, &ranges);
        self.qp.post_write(&requests)?;
        Ok(())
    }
}

impl Drop for Outbound {
    fn drop(&mut self) {
        self.qp.set_error();
    }
}

// ---------------------------------------------------------------------------------------
// The receiver.

/// The receiving direction from one peer.
#[derive(Debug)]
pub(crate) struct Inbound {
    pub(crate) peer: NodeId,
    qp: Box<dyn QueuePair>,
    cq: Arc<dyn CompletionQueue>,
    ring: MemoryRegion,
    consumer: Consumer,
    credit: RemoteRegion,
    signals: Signals,
    socket: TcpStream,
    frames_per_turn: u32,
    /// Sleep notices written to the sender (the latest one's number).
    notices: u64,
    /// The sender's writes with immediate received (each consumed a posted receive).
    immediates: u64,
    /// Whether a frame was taken since the latest notice (the sender may have answered it).
    taken_since_notice: bool,
    /// The id of the next receive posted.
    next_receive: u64,
}

impl Inbound {
    /// Answers a sender that dialed in and said `hello`: registers its ring and connects a
    /// queue pair (whose completion queue notifies `channel`) with receives posted.
    pub(crate) fn accept(
        device: &dyn Device,
        local: NodeId,
        mut socket: TcpStream,
        hello: Hello,
        key: u64,
        config: LinkConfig,
        channel: &Arc<dyn CompletionChannel>,
    ) -> Result<Inbound, LinkError> {
        let refuse = |socket: &mut TcpStream, reason: String| {
            let _ = handshake::write_reply(socket, Err(Refusal::Reason(&reason)));
            Err(LinkError::Refused(reason))
        };
        if hello.to != local || hello.from == local {
            return refuse(&mut socket, format!("{} dialed {} for {}", hello.from, local, hello.to));
        }
        if hello.credit.len < NOTICE_OFFSET + 8 {
            return refuse(
                &mut socket,
                format!("credit region of {} bytes, at least {} needed", hello.credit.len, NOTICE_OFFSET + 8),
            );
        }
        let local_versions = Versions::up_to(config.protocol_version);
        let Some(version) = local_versions.common(hello.versions) else {
            let _ = handshake::write_reply(&mut socket, Err(Refusal::Version(local_versions)));
            return Err(
                HandshakeError::NoCommonVersion { local: local_versions, peer: hello.versions }.into()
            );
        };
        let cq = device.create_cq(config.send_queue_depth * 2 + RECEIVES, Some(channel))?;
        let mut qp = device.create_qp(&cq, config.send_queue_depth, RECEIVES)?;
        let ring = device.register(config.ring_bytes, Access::RemoteWrite)?;
        qp.connect(&hello.endpoint)?;
        let receives: Vec<u64> = (0..u64::from(RECEIVES)).collect();
        qp.post_receive(&receives)?;
        let reply = Reply {
            endpoint: qp.endpoint(),
            ring: ring.remote(),
            key,
            payload_max: config.payload_max,
            version,
        };
        handshake::write_reply(&mut socket, Ok(&reply))?;
        socket.set_nonblocking(true).map_err(HandshakeError::from)?;
        Ok(Inbound {
            peer: hello.from,
            qp,
            cq,
            consumer: Consumer::new(config.ring_bytes, key, config.payload_max),
            ring,
            credit: hello.credit,
            signals: Signals::new(config.send_queue_depth, config.signal_interval),
            socket,
            frames_per_turn: config.doorbell_batch_max,
            notices: 0,
            immediates: 0,
            taken_since_notice: true,
            next_receive: u64::from(RECEIVES),
        })
    }

    /// Whether the sender's process is gone.
    pub(crate) fn peer_gone(&self) -> bool {
        peer_gone(&self.socket)
    }

    /// Whether a frame was begun and never finished (counted when the connection ends).
    pub(crate) fn partial_frame(&self) -> bool {
        self.consumer.partial(&self.ring)
    }

    /// One turn: take completions of credit writes, deliver complete frames through the
    /// gate, and write the consumed position back when due.
    pub(crate) fn receive(&mut self, gate: &Gate, stats: &RdmaStats) -> Result<bool, LinkError> {
        let (mut work, receives) = poll_completions(self.cq.as_ref(), &mut self.signals, stats)?;
        if receives > 0 {
            // Each consumed receive is replaced, so the sender always finds one.
            self.immediates += u64::from(receives);
            let ids: Vec<u64> = (self.next_receive..self.next_receive + u64::from(receives)).collect();
            self.next_receive += u64::from(receives);
            self.qp.post_receive(&ids)?;
        }
        let mut idle = true;
        for _ in 0..self.frames_per_turn {
            let frame = match self.consumer.next(&self.ring) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(error) => {
                    let counter = match error {
                        FrameError::Torn { .. } => &stats.frames_torn,
                        FrameError::Oversized { .. } => &stats.frames_oversized,
                        FrameError::Malformed { .. } => &stats.frames_invalid,
                    };
                    RdmaStats::bump(counter);
                    TransportStats::bump(&gate.stats.decode_errors);
                    return Err(error.into());
                }
            };
            let batch = access_batch(frame.payload).map_err(|error| {
                RdmaStats::bump(&stats.frames_invalid);
                TransportStats::bump(&gate.stats.decode_errors);
                LinkError::Invalid { position: frame.position, problem: error.to_string() }
            })?;
            if batch.from.to_native() != self.peer.0 || batch.to.to_native() != gate.local.0 {
                TransportStats::bump(&gate.stats.rejected_misrouted);
                return Err(LinkError::Invalid {
                    position: frame.position,
                    problem: format!(
                        "frame from {} to {} on the link from {}",
                        batch.from, batch.to, self.peer
                    ),
                });
            }
            // Backpressure: leave the frame in the ring (and its bytes uncredited) until the
            // inbound channel has room for all of it.
            let count = batch.messages.len();
            let channel = &gate.inbound;
            if channel.capacity() < count && channel.capacity() < channel.max_capacity() {
                idle = false;
                break;
            }
            TransportStats::bump(&gate.stats.frames_received);
            TransportStats::add(&gate.stats.bytes_received, frame.record_len);
            for archived in batch.messages.iter() {
                let (ring, from, to) = (
                    RingId(archived.ring.to_native()),
                    NodeId(archived.from.to_native()),
                    NodeId(archived.to.to_native()),
                );
                if gate.admit(self.peer, ring, from, to).is_err() {
                    continue;
                }
                match message_from_archived(archived) {
                    Ok(message) => {
                        if gate.deliver_now(Delivered { from: self.peer, message }).is_err() {
                            return Err(LinkError::PeerGone);
                        }
                    }
                    Err(error) => gate.decode_failed(&self.peer, &error),
                }
            }
            self.consumer.consume(&frame);
            self.taken_since_notice = true;
            work = true;
        }
        if let Some(head) = self.consumer.credit_due(idle) {
            if self.signals.room() > 0 {
                let bytes = head.to_le_bytes();
                let (id, signaled) = self.signals.next();
                let request = WorkRequest {
                    id,
                    source: Source::Inline(&bytes),
                    remote_address: self.credit.address,
                    rkey: self.credit.rkey,
                    signaled,
                    immediate: None,
                };
                post(self.qp.as_mut(), &[request], stats)?;
                RdmaStats::bump(&stats.credits_written);
                self.consumer.credited(head);
                work = true;
            }
        }
        Ok(work)
    }
}

impl Inbound {
    /// Before the poller sleeps: writes a new sleep notice to the sender if it may have
    /// answered the latest one (a frame was taken since) and a receive is posted for every
    /// notice it could still answer, then arms the completion queue.
    pub(crate) fn announce_sleep(&mut self, stats: &RdmaStats) -> Result<(), LinkError> {
        let unanswered = self.notices - self.immediates.min(self.notices);
        if self.taken_since_notice && unanswered < u64::from(RECEIVES) && self.signals.room() > 0 {
            let notice = self.notices + 1;
            let bytes = notice.to_le_bytes();
            let (id, signaled) = self.signals.next();
            let request = WorkRequest {
                id,
                source: Source::Inline(&bytes),
                remote_address: self.credit.address + NOTICE_OFFSET,
                rkey: self.credit.rkey,
                signaled,
                immediate: None,
            };
            post(self.qp.as_mut(), &[request], stats)?;
            RdmaStats::bump(&stats.sleep_notices);
            self.notices = notice;
            self.taken_since_notice = false;
        }
        self.cq.arm()?;
        Ok(())
    }
}

impl Drop for Inbound {
    fn drop(&mut self) {
        self.qp.set_error();
    }
}
