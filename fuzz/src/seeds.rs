//! Seed inputs from real encodings: every replica message kind, every client operation,
//! real commands, batches and checkpoints. Random bytes seldom pass a protobuf tag or a
//! version byte; starting from valid inputs the fuzzer reaches the deep paths at once.
//! `cargo run --example seeds` writes them to `fuzz/seeds/<target>/`.

use bytes::Bytes;
use prost::Message as _;
use rsl_core::{
    Ballot, Configuration, Message, MessageBody, NodeId, Proposal, RejectReason, Request, RequestId, RingId,
    Slot, Time, Value,
};
use rsl_kv::command::{Read, ReadBatch, Write, WriteBatch, WriteId};
use rsl_kv::proto as pb;
use rsl_kv::KvStateMachine;
use rsl_log::codec::Record;
use rsl_transport::codec::{encode_batch, encode_message};

/// One target's seeds: its name and (file name, input) pairs.
pub type TargetSeeds = (&'static str, Vec<(String, Vec<u8>)>);

/// Seeds of every target that has some.
pub fn all() -> Vec<TargetSeeds> {
    vec![
        ("record_decode", record_decode()),
        ("replica_message", replica_message()),
        ("kv_command", kv_command()),
        ("kv_stream_frame", kv_stream_frame()),
        ("kv_checkpoint_load", kv_checkpoint_load()),
    ]
}

fn proposal(slot: u64, value: Value) -> Proposal {
    Proposal { ballot: Ballot::new(3, NodeId(1)), slot: Slot(slot), value }
}

/// One body of every message kind (and of every value and reject reason).
fn bodies() -> Vec<(&'static str, MessageBody)> {
    let ballot = Ballot::new(3, NodeId(1));
    let batch = Value::Batch(
        vec![
            Request { id: RequestId { client: 7, sequence: 1 }, payload: Bytes::from_static(b"\x01\x01put") },
            Request { id: RequestId { client: 8, sequence: 2 }, payload: Bytes::new() },
        ]
        .into(),
    );
    let configuration =
        Value::Configuration(Configuration::new(2, vec![NodeId(1), NodeId(2), NodeId(4)], Slot(9)));
    vec![
        ("pre_vote", MessageBody::PreVote { ballot, chosen: Slot(5) }),
        ("pre_vote_granted", MessageBody::PreVoteGranted { ballot }),
        ("prepare", MessageBody::Prepare { ballot, first_unchosen: Slot(4), transfer_from: Some(ballot) }),
        (
            "promise",
            MessageBody::Promise {
                ballot,
                accepted: vec![
                    proposal(4, Value::Noop),
                    proposal(5, batch.clone()),
                    proposal(6, configuration.clone()),
                ],
            },
        ),
        ("reject_promised", MessageBody::Reject { ballot, promised: ballot, reason: RejectReason::Promised }),
        (
            "reject_alive",
            MessageBody::Reject { ballot, promised: ballot, reason: RejectReason::PrimaryAlive },
        ),
        (
            "reject_behind",
            MessageBody::Reject {
                ballot,
                promised: ballot,
                reason: RejectReason::Behind { chosen: Slot(40) },
            },
        ),
        (
            "accept_batch",
            MessageBody::Accept { ballot, slot: Slot(6), value: batch.clone(), chosen: Slot(5) },
        ),
        ("accept_noop", MessageBody::Accept { ballot, slot: Slot(7), value: Value::Noop, chosen: Slot(5) }),
        (
            "accept_configuration",
            MessageBody::Accept { ballot, slot: Slot(8), value: configuration, chosen: Slot(5) },
        ),
        (
            "accept_last",
            MessageBody::Accept {
                ballot,
                slot: Slot(9),
                value: Value::Last(Request {
                    id: RequestId { client: 3, sequence: 1 },
                    payload: Bytes::from_static(b"end"),
                }),
                chosen: Slot(5),
            },
        ),
        ("accepted", MessageBody::Accepted { ballot, slot: Slot(6) }),
        ("heartbeat", MessageBody::Heartbeat { ballot, chosen: Slot(6), sent_at: Time(123_456) }),
        ("heartbeat_reply", MessageBody::HeartbeatReply { ballot, sent_at: Time(123_456), chosen: Slot(6) }),
        ("status_query", MessageBody::StatusQuery),
        ("status_reply", MessageBody::StatusReply { promised: ballot, chosen: Slot(6) }),
        ("fetch", MessageBody::Fetch { from: Slot(2), to: Slot(6) }),
        (
            "fetch_reply",
            MessageBody::FetchReply { chosen_values: vec![proposal(2, Value::Noop), proposal(3, batch)] },
        ),
        ("fetch_truncated", MessageBody::FetchTruncated { checkpoint: Slot(100) }),
        ("timeout_now", MessageBody::TimeoutNow { ballot }),
        ("promotion_request", MessageBody::PromotionRequest { ballot }),
        ("read_index_request", MessageBody::ReadIndexRequest { id: rsl_core::ReadId(7) }),
        ("read_index_reply", MessageBody::ReadIndexReply { id: rsl_core::ReadId(7), ballot, index: Slot(9) }),
        (
            "read_index_refused",
            MessageBody::ReadIndexRefused {
                id: rsl_core::ReadId(7),
                reason: rsl_core::ReadIndexRefusal::NotPrimary { hint: Some(NodeId(2)) },
            },
        ),
    ]
}

/// A log record of each kind (`[kind][payload]`), with proposals of every value kind.
fn record_decode() -> Vec<(String, Vec<u8>)> {
    let ballot = Ballot::new(3, NodeId(1));
    let proposals: Vec<Proposal> = bodies()
        .into_iter()
        .filter_map(|(_, body)| match body {
            MessageBody::Accept { slot, value, .. } => Some(Proposal { ballot, slot, value }),
            _ => None,
        })
        .collect();
    let records = [
        ("persist", Record::Persist { promise: Some(ballot), chosen: Some(Slot(5)), proposals }),
        ("persist_empty", Record::Persist { promise: None, chosen: None, proposals: Vec::new() }),
        ("truncate", Record::Truncate { below: Slot(4) }),
        ("snapshot", Record::Snapshot { promise: ballot, chosen: Slot(6), floor: Slot(4) }),
    ];
    records
        .into_iter()
        .map(|(name, record)| {
            let mut input = vec![record.kind()];
            record.encode(&mut input);
            (name.to_owned(), input)
        })
        .collect()
}

/// Each message kind in a frame of its own and alone, and all of them in one frame.
fn replica_message() -> Vec<(String, Vec<u8>)> {
    let message = |body| Message { ring: RingId(1), from: NodeId(1), to: NodeId(2), configuration: 2, body };
    let mut seeds = Vec::new();
    let mut all = Vec::new();
    for (name, body) in bodies() {
        let message = message(body);
        seeds.push((
            format!("frame_{name}"),
            encode_batch(NodeId(1), NodeId(2), std::slice::from_ref(&message)),
        ));
        seeds.push((format!("alone_{name}"), encode_message(&message)));
        all.push(message);
    }
    seeds.push(("frame_all".to_owned(), encode_batch(NodeId(1), NodeId(2), &all)));
    seeds
}

fn writes() -> Vec<Write> {
    let id = |sequence| WriteId { client: 5, sequence };
    vec![
        Write::Put { id: id(1), key: "a".into(), value: Bytes::from_static(b"one") },
        Write::Cas {
            id: id(2),
            key: "a".into(),
            expected: Some(Bytes::from_static(b"one")),
            value: "two".into(),
        },
        Write::Cas { id: id(3), key: "b".into(), expected: None, value: Bytes::new() },
        Write::Delete { id: id(4), key: "a".into() },
    ]
}

fn reads() -> Vec<Read> {
    vec![Read::Get { key: "a".into() }, Read::Digest, Read::Get { key: "b".into() }]
}

/// Raw-mode inputs (`[kind][len u16][request]...`) of real writes, reads and batches, and
/// a structured-mode input.
fn kv_command() -> Vec<(String, Vec<u8>)> {
    let record = |out: &mut Vec<u8>, kind: u8, request: &[u8]| {
        out.push(kind);
        out.extend_from_slice(&(request.len() as u16).to_le_bytes());
        out.extend_from_slice(request);
    };
    let mut singles = vec![0u8];
    for write in writes() {
        record(&mut singles, 0, &write.encode());
    }
    for read in reads() {
        record(&mut singles, 1, &read.encode());
    }
    let mut batches = vec![0u8];
    let mut write_batch = WriteBatch::new();
    for write in writes() {
        write_batch.push(&write);
    }
    record(&mut batches, 0, &write_batch.finish());
    let mut read_batch = ReadBatch::new();
    for read in reads() {
        read_batch.push(&read);
    }
    record(&mut batches, 1, &read_batch.finish());
    // Structured: put, batch of three, cas, read batch of two, digest.
    let structured = vec![
        1u8, 0, 0, 1, 1, 1, 3, b'x', b'y', b'z', 27, 1, 2, 1, 2, 0, 3, 2, 2, 3, 2, 0, 2, 0, 5, 1, 54, 1, 2,
        5, 0,
    ];
    vec![
        ("singles".to_owned(), singles),
        ("batches".to_owned(), batches),
        ("structured".to_owned(), structured),
    ]
}

/// Frames with every kind of operation, valid and refused.
fn kv_stream_frame() -> Vec<(String, Vec<u8>)> {
    let wid = |sequence| Some(pb::WriteId { client: 5, sequence });
    let op = |id, op| pb::Op { id, op: Some(op) };
    let ops = vec![
        op(1, pb::op::Op::Put(pb::PutRequest { id: wid(1), key: "a".into(), value: "one".into() })),
        op(
            2,
            pb::op::Op::Get(pb::GetRequest {
                key: "a".into(),
                fast: false,
                min_slot: 0,
                ..Default::default()
            }),
        ),
        op(
            3,
            pb::op::Op::Get(pb::GetRequest {
                key: "a".into(),
                fast: true,
                min_slot: 1,
                ..Default::default()
            }),
        ),
        op(
            4,
            pb::op::Op::Cas(pb::CasRequest {
                id: wid(2),
                key: "a".into(),
                expected_present: true,
                expected: "one".into(),
                value: "two".into(),
            }),
        ),
        op(5, pb::op::Op::Delete(pb::DeleteRequest { id: wid(3), key: "a".into() })),
        op(6, pb::op::Op::Delete(pb::DeleteRequest { id: None, key: "a".into() })),
        op(
            7,
            pb::op::Op::Get(pb::GetRequest {
                key: String::new(),
                fast: false,
                min_slot: 0,
                ..Default::default()
            }),
        ),
        pb::Op { id: 8, op: None },
    ];
    let mut seeds: Vec<(String, Vec<u8>)> = ops
        .iter()
        .map(|op| {
            (
                format!("op_{}", op.id),
                pb::OpBatch { ops: vec![op.clone()], ..Default::default() }.encode_to_vec(),
            )
        })
        .collect();
    seeds.push(("all".to_owned(), pb::OpBatch { ops: ops.clone(), ..Default::default() }.encode_to_vec()));
    // Writes sent whole, alone and beside operations.
    let write_batch = rsl_kv::command::encode_write_batch(&writes()).expect("valid writes");
    let whole = pb::OpBatch { write_batch, write_batch_id: 1, ..Default::default() };
    seeds.push(("write_batch".to_owned(), whole.encode_to_vec()));
    seeds.push(("ops_and_write_batch".to_owned(), pb::OpBatch { ops, ..whole }.encode_to_vec()));
    seeds
}

/// A real checkpoint (mode 0) and its body under a recomputed checksum (mode 1).
fn kv_checkpoint_load() -> Vec<(String, Vec<u8>)> {
    let mut machine = KvStateMachine::new();
    for (slot, write) in writes().into_iter().enumerate() {
        machine.execute_write(slot as u64 + 1, &write.encode());
    }
    machine.execute_write(
        9,
        &Write::Put { id: WriteId { client: 6, sequence: 1 }, key: "c".into(), value: "x".into() }.encode(),
    );
    let mut checkpoint = Vec::new();
    machine.save(9, &mut checkpoint).expect("saving to memory");
    // magic (8), version (4), slot (8), body length (8), body, checksum (4).
    let body = checkpoint[28..checkpoint.len() - 4].to_vec();
    let mut file = vec![0u8];
    file.extend_from_slice(&checkpoint);
    let mut wrapped = vec![1u8];
    wrapped.extend_from_slice(&body);
    vec![("file".to_owned(), file), ("body".to_owned(), wrapped)]
}
