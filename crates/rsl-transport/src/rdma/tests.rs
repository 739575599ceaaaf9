//! Frames a correct sender never writes, from a sender that writes them anyway: each is
//! refused with a counted error, the connection is re-established, and what came before is
//! delivered.

use crate::codec::PROTOCOL_VERSION;
use crate::rdma::archive::{serialize_into, WireBatch, WireMessage};
use crate::rdma::connection::{LinkConfig, LinkError, Outbound};
use crate::rdma::emulated::{EmulatedConfig, EmulatedDevice};
use crate::rdma::handshake::{self, HandshakeError, Hello, Versions};
use crate::rdma::verbs::MemoryRegion;
use crate::rdma::verbs::{Access, Device};
use crate::rdma::{RdmaConfig, RdmaStatsSnapshot, RdmaTransport};
use crate::transport::{Inbound, Transport};
use rsl_core::{Ballot, Message, MessageBody, NodeId, RingId, Slot, Time};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

fn config() -> RdmaConfig {
    RdmaConfig { ring_bytes: 64 << 10, frame_bytes_max: 16 << 10, ..RdmaConfig::default() }
}

fn device() -> EmulatedDevice {
    EmulatedDevice::open(EmulatedConfig::default()).unwrap()
}

/// Node 2, admitting node 1 on ring 1.
fn receiver() -> (RdmaTransport, mpsc::Receiver<Inbound>) {
    let (transport, inbound) = RdmaTransport::builder(NodeId(2))
        .config(config())
        .device(Arc::new(device()))
        .bind("127.0.0.1:0".parse().unwrap())
        .unwrap();
    transport.membership().set_members(RingId(1), [NodeId(1), NodeId(2)]);
    (transport, inbound)
}

/// A connection from "node 1" to `receiver`, driven by hand.
fn raw_sender(receiver: &RdmaTransport, device: &EmulatedDevice) -> Outbound {
    raw_sender_speaking(receiver, device, config().protocol_version).unwrap()
}

/// A connection from "node 1", speaking versions up to `protocol_version`, to `receiver`.
fn raw_sender_speaking(
    receiver: &RdmaTransport,
    device: &EmulatedDevice,
    protocol_version: u32,
) -> Result<Outbound, LinkError> {
    let config = config();
    let link = LinkConfig {
        ring_bytes: config.ring_bytes,
        payload_max: config.frame_bytes_max,
        send_queue_depth: config.send_queue_depth,
        signal_interval: config.signal_interval,
        doorbell_batch_max: config.doorbell_batch_max,
        batch_messages_max: config.batch_messages_max,
        handshake_timeout: Duration::from_secs(5),
        protocol_version,
    };
    Outbound::dial(device, NodeId(1), NodeId(2), receiver.local_addr(), link)
}

fn heartbeat(sent_at: u64) -> Message {
    Message {
        ring: RingId(1),
        from: NodeId(1),
        to: NodeId(2),
        configuration: 1,
        body: MessageBody::Heartbeat {
            ballot: Ballot::new(1, NodeId(1)),
            chosen: Slot(1),
            sent_at: Time(sent_at),
        },
    }
}

fn archived(message: &Message) -> Vec<u8> {
    let batch = WireBatch { from: 1, to: 2, messages: vec![WireMessage::new(message)] };
    let mut buffer = vec![0; 4096];
    let len = serialize_into(&batch, &mut buffer).unwrap();
    buffer.truncate(len);
    buffer
}

fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn next(inbound: &mut mpsc::Receiver<Inbound>) -> Inbound {
    let mut received = None;
    wait_for("a message", || {
        received = inbound.try_recv().ok();
        received.is_some()
    });
    received.unwrap()
}

fn sent_at(inbound: &Inbound) -> u64 {
    match inbound.message.body {
        MessageBody::Heartbeat { sent_at, .. } => sent_at.0,
        _ => u64::MAX,
    }
}

/// Sends a good frame, then `bad` (a payload and a damage to the staged record), checks the
/// refusal is counted by `counter`, then that a new connection delivers again.
fn refused(bad: &[u8], damage: impl FnOnce(&MemoryRegion, u64), counter: fn(&RdmaStatsSnapshot) -> u64) {
    let (receiver, mut inbound) = receiver();
    let device = device();
    let mut sender = raw_sender(&receiver, &device);
    sender.post_raw(&archived(&heartbeat(1)), |_, _| {}).unwrap();
    assert_eq!(sent_at(&next(&mut inbound)), 1, "the good frame before the bad one is delivered");
    sender.post_raw(bad, damage).unwrap();
    wait_for("the refusal", || counter(&receiver.rdma_stats().snapshot()) == 1);
    wait_for("the receiver to close the connection", || sender.peer_gone());
    let stats = receiver.rdma_stats().snapshot();
    assert_eq!(stats.connections_reset, 1, "{stats:?}");
    let transport = receiver.stats().snapshot();
    assert!(transport.decode_errors + transport.rejected_misrouted >= 1, "{transport:?}");
    assert!(inbound.try_recv().is_err(), "nothing of the bad frame is delivered");
    let mut again = raw_sender(&receiver, &device);
    again.post_raw(&archived(&heartbeat(2)), |_, _| {}).unwrap();
    assert_eq!(sent_at(&next(&mut inbound)), 2);
}

#[test]
fn a_frame_that_fails_validation_is_refused() {
    let garbage: Vec<u8> = (0..200u32).map(|i| (i * 37 % 251) as u8).collect();
    refused(&garbage, |_, _| {}, |stats| stats.frames_invalid);
}

#[test]
fn a_torn_frame_is_refused() {
    // The payload changes after its checksum was taken, as when a write lands partly.
    refused(
        &archived(&heartbeat(3)),
        |staging, offset| {
            let at = staging.at(offset + 20);
            let byte = staging.memory().bytes(at, 1)[0];
            staging.memory().bytes_mut(at, 1)[0] = byte ^ 0x5a;
        },
        |stats| stats.frames_torn,
    );
}

#[test]
fn an_oversized_frame_is_refused() {
    refused(
        &archived(&heartbeat(3)),
        |staging, offset| {
            let at = staging.at(offset);
            let word = staging.memory().load_u64(at);
            staging.memory().store_u64(at, (word & !0xffff_ffff) | (32 << 10));
        },
        |stats| stats.frames_oversized,
    );
}

#[test]
fn a_frame_misaddressed_inside_is_refused() {
    let message = heartbeat(5);
    let batch = WireBatch { from: 1, to: 9, messages: vec![WireMessage::new(&message)] };
    let mut buffer = vec![0; 4096];
    let len = serialize_into(&batch, &mut buffer).unwrap();
    refused(&buffer[..len], |_, _| {}, |stats| stats.connections_reset);
}

/// A sender's connection is answered, written to and abandoned while the receiver's
/// handshake thread for it has not yet handed it to the poller; the sender's next connection
/// is handed over first. The late one must not replace the newer one: its frames are older
/// than what the newer one already delivered.
#[test]
fn a_connection_handed_over_late_never_replaces_a_newer_one() {
    let (receiver, mut inbound) = receiver();
    let device = device();
    let release = receiver.hold_next_accepted();
    let mut first = raw_sender(&receiver, &device);
    first.post_raw(&archived(&heartbeat(1)), |_, _| {}).unwrap();
    drop(first);
    let mut second = raw_sender(&receiver, &device);
    second.post_raw(&archived(&heartbeat(2)), |_, _| {}).unwrap();
    assert_eq!(sent_at(&next(&mut inbound)), 2);
    release.send(()).unwrap();
    wait_for("the late connection to be handed over", || {
        receiver.rdma_stats().snapshot().connections_reset >= 1
    });
    second.post_raw(&archived(&heartbeat(3)), |_, _| {}).unwrap();
    assert_eq!(sent_at(&next(&mut inbound)), 3, "the newer connection still delivers; the late one never");
    assert!(inbound.try_recv().is_err());
    assert!(!second.peer_gone());
    assert_eq!(receiver.rdma_stats().snapshot().connections_reset, 1, "the late connection, dropped");
}

/// A peer whose versions all lie past this build's is refused in the handshake, counted and
/// told which versions this node speaks; a peer that speaks newer versions and this one's
/// too is spoken to in the newest both speak.
#[test]
fn a_peer_speaking_only_newer_versions_is_refused_naming_the_versions() {
    let (receiver, mut inbound) = receiver();
    let device = device();
    let newer = Versions { min: PROTOCOL_VERSION + 1, max: PROTOCOL_VERSION + 2 };
    let mut socket = std::net::TcpStream::connect(receiver.local_addr()).unwrap();
    let cq = device.create_cq(8, None).unwrap();
    let qp = device.create_qp(&cq, 8, 0).unwrap();
    let credit = device.register(64, Access::RemoteWrite).unwrap();
    let hello = Hello {
        from: NodeId(1),
        to: NodeId(2),
        versions: newer,
        endpoint: qp.endpoint(),
        credit: credit.remote(),
    };
    handshake::write_hello(&mut socket, &hello).unwrap();
    let refused = handshake::read_reply(&mut socket, newer).unwrap_err();
    let speaks = Versions::up_to(PROTOCOL_VERSION);
    assert_eq!(refused, HandshakeError::NoCommonVersion { local: newer, peer: speaks });
    assert_eq!(
        refused.to_string(),
        format!(
            "no protocol version in common: this node speaks {}..={}, the peer 1..={PROTOCOL_VERSION}",
            PROTOCOL_VERSION + 1,
            PROTOCOL_VERSION + 2
        )
    );
    wait_for("the refusal to be counted", || receiver.stats().snapshot().rejected_version == 1);
    assert_eq!(receiver.stats().snapshot().connect_failures, 0, "counted as a version refusal only");

    let mut newer = raw_sender_speaking(&receiver, &device, PROTOCOL_VERSION + 1).unwrap();
    assert_eq!(newer.version(), PROTOCOL_VERSION, "the newest version both speak");
    newer.post_raw(&archived(&heartbeat(4)), |_, _| {}).unwrap();
    assert_eq!(sent_at(&next(&mut inbound)), 4);
    assert_eq!(receiver.stats().snapshot().rejected_version, 1);
}
