//! The RDMA transport over the emulated provider: faults of the link and of the peer, and
//! the guarantee that nothing a receiver credited is lost or duplicated.
#![cfg(feature = "rdma")]

mod common;

use common::{heartbeat, receive, PATIENCE};
use rsl_core::{Ballot, Configuration, Message, MessageBody, NodeId, ReadId, RingId, Slot, Value};
use rsl_transport::rdma::emulated::{EmulatedConfig, EmulatedDevice};
use rsl_transport::rdma::{RdmaConfig, RdmaError, RdmaTransport};
use rsl_transport::{Inbound, Transport};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

fn config() -> RdmaConfig {
    RdmaConfig {
        ring_bytes: 64 << 10,
        frame_bytes_max: 16 << 10,
        backoff_initial_ms: 5,
        backoff_max_ms: 50,
        ..RdmaConfig::default()
    }
}

struct Endpoint {
    transport: RdmaTransport,
    inbound: mpsc::Receiver<Inbound>,
    device: EmulatedDevice,
}

fn start(node: u64, address: &str, device_config: EmulatedConfig) -> Endpoint {
    start_with(node, address, device_config, config())
}

fn start_with(node: u64, address: &str, device_config: EmulatedConfig, config: RdmaConfig) -> Endpoint {
    let device = EmulatedDevice::open(device_config).unwrap();
    let (transport, inbound) = RdmaTransport::builder(NodeId(node))
        .config(config)
        .device(Arc::new(device.clone()))
        .bind(address.parse().unwrap())
        .unwrap();
    transport.membership().set_members(RingId(1), [NodeId(1), NodeId(2)]);
    Endpoint { transport, inbound, device }
}

fn pair(device_config: EmulatedConfig) -> (Endpoint, Endpoint) {
    let one = start(1, "127.0.0.1:0", device_config.clone());
    let two = start(2, "127.0.0.1:0", device_config);
    one.transport.set_peer_address(NodeId(2), two.transport.local_addr().into()).unwrap();
    two.transport.set_peer_address(NodeId(1), one.transport.local_addr().into()).unwrap();
    (one, two)
}

fn sent_at(inbound: &Inbound) -> u64 {
    match inbound.message.body {
        MessageBody::Heartbeat { sent_at, .. } => sent_at.0,
        ref other => panic!("unexpected {other:?}"),
    }
}

/// Sends heartbeats numbered from `first` from 1 to 2 until `count` of them have arrived;
/// returns every number that arrived meanwhile, in arrival order (earlier messages still
/// arriving included, so the caller sees the whole order).
async fn keep_sending(one: &Endpoint, two: &mut Endpoint, first: u64, count: usize) -> Vec<u64> {
    tokio::time::timeout(PATIENCE, async {
        let mut tick = tokio::time::interval(Duration::from_millis(2));
        let mut next = first;
        let mut seen = Vec::new();
        loop {
            tokio::select! {
                inbound = two.inbound.recv() => {
                    let number = sent_at(&inbound.unwrap());
                    seen.push(number);
                    if seen.iter().filter(|&&n| n >= first).count() == count { break seen; }
                }
                _ = tick.tick() => {
                    one.transport.send(NodeId(2), vec![heartbeat(1, 1, 2, next)]).unwrap();
                    next += 1;
                }
            }
        }
    })
    .await
    .expect("messages stopped arriving")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_pair_in_error_is_replaced_by_a_new_connection() {
    let (one, mut two) = pair(EmulatedConfig::default());
    assert_eq!(keep_sending(&one, &mut two, 0, 3).await.len(), 3);
    one.device.fail_queue_pairs();
    let after = keep_sending(&one, &mut two, 1000, 5).await;
    assert!(after.windows(2).all(|w| w[0] < w[1]), "{after:?}");
    let stats = one.transport.rdma_stats().snapshot();
    assert!(stats.completion_errors >= 1 && stats.connections_reset >= 1, "{stats:?}");
    assert!(one.transport.stats().snapshot().reconnects >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_torn_by_a_dying_sender_is_never_delivered() {
    let (one, mut two) = pair(EmulatedConfig::default());
    one.transport.send(NodeId(2), vec![heartbeat(1, 1, 2, 1), heartbeat(1, 1, 2, 2)]).unwrap();
    assert_eq!(receive(&mut two.inbound, 2).await.iter().map(sent_at).collect::<Vec<_>>(), [1, 2]);
    common::eventually("the credit for both", || {
        one.transport.rdma_stats().snapshot().messages_acknowledged == 2
    })
    .await;
    // The next frame (message 3 alone) lands 20 bytes (header and part of the payload),
    // then the sender's queue pair fails: the receiver must not take it, and counts it as
    // torn when the link ends.
    one.device.tear_next_write(20);
    one.transport.send(NodeId(2), vec![heartbeat(1, 1, 2, 3)]).unwrap();
    common::eventually("the receiver to count the torn frame", || {
        two.transport.rdma_stats().snapshot().frames_torn == 1
    })
    .await;
    assert!(two.inbound.try_recv().is_err(), "the torn frame's message is never delivered");
    let stats = one.transport.rdma_stats().snapshot();
    assert_eq!((stats.completion_errors, stats.messages_unacknowledged_lost), (1, 1), "{stats:?}");
    let after = keep_sending(&one, &mut two, 1000, 3).await;
    assert!(after.windows(2).all(|w| w[0] < w[1]), "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_dies_and_restarts_is_reached_again() {
    let (one, mut two) = pair(EmulatedConfig::default());
    assert_eq!(keep_sending(&one, &mut two, 0, 2).await.len(), 2);
    let address = two.transport.local_addr().to_string();
    drop(two);
    // Sends while the peer is down queue up (and may be lost): never an error.
    for n in 0..20 {
        one.transport.send(NodeId(2), vec![heartbeat(1, 1, 2, 500 + n)]).unwrap();
    }
    let mut two = start(2, &address, EmulatedConfig::default());
    two.transport.set_peer_address(NodeId(1), one.transport.local_addr().into()).unwrap();
    let after = keep_sending(&one, &mut two, 1000, 5).await;
    assert!(after.windows(2).all(|w| w[0] < w[1]), "{after:?}");
    assert!(one.transport.stats().snapshot().reconnects >= 1);
    // And the restarted node reaches node 1.
    two.transport.send(NodeId(1), vec![heartbeat(1, 2, 1, 7)]).unwrap();
    let mut one = one;
    assert_eq!(sent_at(&receive(&mut one.inbound, 1).await[0]), 7);
}

/// The first place where `numbers` is not strictly increasing, if any.
fn out_of_order(numbers: &[u64]) -> Option<(usize, u64, u64)> {
    numbers.windows(2).position(|w| w[0] >= w[1]).map(|i| (i, numbers[i], numbers[i + 1]))
}

fn drain(inbound: &mut mpsc::Receiver<Inbound>, delivered: &mut Vec<u64>) {
    while let Ok(inbound) = inbound.try_recv() {
        delivered.push(sent_at(&inbound));
    }
}

/// Faults again and again while a stream of numbered messages flows, with completions
/// handed out in random order: whatever the receiver credited was delivered, exactly once
/// and in order.
///
/// Round `r` sends 400 messages numbered from `r * ROUND`, then keeps sending markers
/// (numbered from `r * ROUND + ROUND / 2`) until one arrives, so that the fault that ends
/// the round finds a live connection to break even when the machine is slow to reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_credited_is_lost_and_nothing_is_duplicated_under_faults() {
    const ROUND: u64 = 1_000_000;
    let (one, mut two) = pair(EmulatedConfig { shuffle_completions: Some(9), ..EmulatedConfig::default() });
    let mut delivered = Vec::new();
    for round in 0..8 {
        let base = round * ROUND;
        for batch in 0..50 {
            let messages: Vec<_> = (0..8).map(|i| heartbeat(1, 1, 2, base + batch * 8 + i)).collect();
            one.transport.send(NodeId(2), messages).unwrap();
        }
        delivered.extend(keep_sending(&one, &mut two, base + ROUND / 2, 1).await);
        if round % 2 == 0 {
            one.device.fail_queue_pairs();
        } else {
            two.device.fail_queue_pairs();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        drain(&mut two.inbound, &mut delivered);
    }
    // Let the link settle: one last message arrives once everything before it did.
    delivered.extend(keep_sending(&one, &mut two, 8 * ROUND, 1).await);
    common::eventually("the sender to see the last credit", || {
        let stats = one.transport.rdma_stats().snapshot();
        stats.messages_acknowledged + stats.messages_unacknowledged_lost
            >= one.transport.stats().snapshot().messages_sent
    })
    .await;
    // A message is in the inbound channel before its frame is credited: once the sender has
    // counted a credit, what it covers can be drained.
    drain(&mut two.inbound, &mut delivered);
    assert_eq!(out_of_order(&delivered), None, "in order, no duplicates (index, number, next)");
    let stats = one.transport.rdma_stats().snapshot();
    assert!(delivered.len() as u64 >= stats.messages_acknowledged, "{} < {stats:?}", delivered.len());
    assert!(stats.connections_reset >= 4, "{stats:?}");
    assert!(
        stats.work_requests > stats.signaled_requests && stats.doorbells < stats.work_requests,
        "{stats:?}"
    );
}

/// An endpoint told to speak protocol version 1 (a replica held back during a rolling
/// upgrade): each connection speaks the newest version both ends speak, and what version 1
/// cannot carry is not sent either way, counted as over gRPC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_told_to_speak_an_older_version_gets_only_what_it_reads() {
    let newer = start(1, "127.0.0.1:0", EmulatedConfig::default());
    let older = RdmaConfig { protocol_version: 1, ..config() };
    let mut older = start_with(2, "127.0.0.1:0", EmulatedConfig::default(), older);
    newer.transport.set_peer_address(NodeId(2), older.transport.local_addr().into()).unwrap();
    older.transport.set_peer_address(NodeId(1), newer.transport.local_addr().into()).unwrap();
    let mut newer = newer;
    let read_index = |from, to| Message {
        body: MessageBody::ReadIndexRequest { id: ReadId(7) },
        ..heartbeat(1, from, to, 0)
    };
    let learners = Configuration::new(2, vec![NodeId(1), NodeId(2)], Slot(5)).with_learners(vec![NodeId(3)]);
    let accept = Message {
        body: MessageBody::Accept {
            ballot: Ballot::new(1, NodeId(1)),
            slot: Slot(4),
            value: Value::Configuration(learners),
            chosen: Slot(3),
        },
        ..heartbeat(1, 1, 2, 0)
    };
    let batch = vec![read_index(1, 2), heartbeat(1, 1, 2, 1), accept, heartbeat(1, 1, 2, 2)];
    newer.transport.send(NodeId(2), batch).unwrap();
    let at_older = receive(&mut older.inbound, 2).await;
    assert_eq!(at_older.iter().map(sent_at).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(
        newer.transport.stats().snapshot().dropped_for_version,
        2,
        "a version 2 and a version 3 message"
    );
    // The older endpoint speaks version 1 to the newer one too.
    older.transport.send(NodeId(1), vec![read_index(2, 1), heartbeat(1, 2, 1, 3)]).unwrap();
    assert_eq!(receive(&mut newer.inbound, 1).await.iter().map(sent_at).collect::<Vec<_>>(), [3]);
    assert_eq!(older.transport.stats().snapshot().dropped_for_version, 1);
    for endpoint in [&newer, &older] {
        let stats = endpoint.transport.stats().snapshot();
        assert_eq!((stats.rejected_version, stats.decode_errors), (0, 0), "{stats:?}");
    }
    assert!(newer.inbound.try_recv().is_err() && older.inbound.try_recv().is_err());
    // A version this build does not speak is refused at configuration.
    for version in [0, rsl_transport::PROTOCOL_VERSION + 1] {
        let error = RdmaConfig { protocol_version: version, ..config() }.validate().unwrap_err();
        assert_eq!(error.field, "protocol_version", "{error}");
        assert!(error.problem.contains("the versions this build speaks"), "{error}");
    }
}

#[test]
fn bad_settings_and_a_missing_device_are_refused_by_name() {
    let bad = RdmaConfig { ring_bytes: 3000, ..RdmaConfig::default() };
    let error =
        RdmaTransport::builder(NodeId(1)).config(bad).bind("127.0.0.1:0".parse().unwrap()).unwrap_err();
    assert!(matches!(error, RdmaError::Config(_)) && error.to_string().contains("ring_bytes"), "{error}");
    let bad = RdmaConfig { signal_interval: 1000, ..RdmaConfig::default() };
    assert!(bad.validate().unwrap_err().to_string().contains("signal_interval"));
    let error = RdmaTransport::builder(NodeId(1)).bind("127.0.0.1:0".parse().unwrap()).unwrap_err();
    assert!(matches!(error, RdmaError::NoDevice), "{error}");
}

/// The verbs provider opens the host's device, or says plainly that there is none.
#[cfg(feature = "rdma-verbs")]
#[test]
fn the_verbs_provider_finds_the_device_or_says_there_is_none() {
    use rsl_transport::rdma::{open_device, Provider};
    let devices = std::fs::read_dir("/sys/class/infiniband").map(|entries| entries.count()).unwrap_or(0);
    let opened = open_device(&Provider::Verbs { device: None, port: 1, gid_index: 0 });
    if devices == 0 {
        let error = opened.unwrap_err();
        assert_eq!(error.to_string(), "no RDMA device found (ibv_get_device_list returned none)");
    } else {
        let device = opened.unwrap();
        assert!(device.register(4096, rsl_transport::rdma::verbs::Access::RemoteWrite).is_ok());
    }
    let missing =
        open_device(&Provider::Verbs { device: Some("no-such-device".into()), port: 1, gid_index: 0 });
    assert!(missing.is_err());
}
