//! `rsl-kv`: what a client's bytes reach. Commands (writes, reads, and batches of either)
//! run on the state machine, which every replica runs in slot order; a client's `Stream`
//! frames go through the server's own checks and packing
//! (`rsl_kv::fuzzing::plan_stream_frame`) and what they pack runs on a state machine;
//! checkpoints, which a replica loads from a peer, load from arbitrary bytes.
//!
//! Two machines run every input, so an answer or a state that depends on anything but the
//! commands (a hash map's order, say) shows as a disagreement.

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message as _;
use rsl_kv::command::{
    Read, ReadBatch, ReadOutcome, Write, WriteBatch, WriteId, WriteOutcome, WriteResponse,
    WRITE_BATCH_BYTES_MAX,
};
use rsl_kv::proto as pb;
use rsl_kv::{fuzzing, KvStateMachine};

/// Sessions the machines remember: small, so that inputs reach the eviction of sessions.
const SESSIONS_MAX: usize = 4;

/// Two machines that must stay equal, and the slot of the next write.
struct Machines {
    a: KvStateMachine,
    b: KvStateMachine,
    slot: u64,
}

impl Machines {
    fn new() -> Machines {
        Machines {
            a: KvStateMachine::with_sessions_max(SESSIONS_MAX),
            b: KvStateMachine::with_sessions_max(SESSIONS_MAX),
            slot: 0,
        }
    }

    /// Executes a write request (a write or a write batch) in the next slot; returns the
    /// decoded answers.
    fn write(&mut self, request: &[u8]) -> Vec<WriteResponse> {
        self.slot += 1;
        let single = (!WriteBatch::is_batch(request)).then(|| Write::decode(request));
        let before = matches!(single, Some(Err(_))).then(|| self.a.clone());
        let answer = self.a.execute_write(self.slot, request);
        assert_eq!(self.b.execute_write(self.slot, request), answer, "machines answer alike");
        let responses = WriteResponse::decode_batch(&answer).expect("a write's answer decodes");
        match single {
            Some(Ok(write)) => {
                assert_eq!(write.encode(), request, "the write encoding is canonical");
                assert_eq!(responses.len(), 1);
                assert!(!matches!(responses[0].outcome, WriteOutcome::Malformed { .. }), "{responses:?}");
            }
            Some(Err(_)) => {
                assert!(matches!(
                    responses[..],
                    [WriteResponse { outcome: WriteOutcome::Malformed { .. }, .. }]
                ));
                assert_eq!(Some(&self.a), before.as_ref(), "a malformed write changes nothing");
            }
            None => match WriteBatch::split(request) {
                Ok(parts) => assert_eq!(responses.len(), parts.len(), "one answer per write of a batch"),
                Err(_) => assert_eq!(responses.len(), 1, "a malformed batch gets one answer"),
            },
        }
        responses
    }

    /// Serves a read request (a read or a read batch); returns the decoded answers.
    fn read(&self, request: &[u8]) -> Vec<ReadOutcome> {
        let answer = self.a.execute_read(request);
        assert_eq!(self.b.execute_read(request), answer, "machines answer alike");
        let outcomes = ReadOutcome::decode_batch(&answer).expect("a read's answer decodes");
        if ReadBatch::is_batch(request) {
            if let Ok(parts) = ReadBatch::split(request) {
                assert_eq!(outcomes.len(), parts.len(), "one answer per read of a batch");
            }
        } else if let Ok(read) = Read::decode(request) {
            assert_eq!(read.encode(), request, "the read encoding is canonical");
            assert!(!matches!(outcomes[..], [ReadOutcome::Malformed { .. }]), "{outcomes:?}");
        }
        outcomes
    }

    /// The machines agree, and a checkpoint of their state loads back to it.
    fn check(&self) {
        assert_eq!(self.a, self.b, "machines agree");
        let mut checkpoint = Vec::new();
        self.a.save(self.slot, &mut checkpoint).expect("saving to memory");
        let (slot, loaded) =
            KvStateMachine::load(&mut checkpoint.as_slice(), SESSIONS_MAX).expect("a saved checkpoint loads");
        assert_eq!((slot, &loaded), (self.slot, &self.a), "a checkpoint loads to the state saved");
    }
}

/// A tiny reader of fuzzer bytes: numbers and strings from a small alphabet, so that
/// structured inputs hit the same keys and clients often.
struct Bytes8<'a>(&'a [u8]);

impl Bytes8<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(first)
    }

    fn take(&mut self, len: usize) -> &[u8] {
        let (taken, rest) = self.0.split_at(len.min(self.0.len()));
        self.0 = rest;
        taken
    }

    fn key(&mut self) -> Option<String> {
        let choice = self.byte()?;
        Some(match choice % 8 {
            // The empty key is refused; keep it reachable.
            0 => String::new(),
            n => ["a", "b", "c", "ключ", "k/1", "k/2", "z"][usize::from(n - 1)].to_owned(),
        })
    }

    fn value(&mut self) -> Option<Bytes> {
        let len = self.byte()? % 16;
        Some(Bytes::copy_from_slice(self.take(usize::from(len))))
    }

    fn write(&mut self) -> Option<Write> {
        let kind = self.byte()?;
        // Few clients and small sequence numbers: retries, stale writes and evictions.
        let id = WriteId { client: u64::from(self.byte()? % 6), sequence: u64::from(self.byte()? % 5) };
        let key = self.key()?;
        Some(match kind % 3 {
            0 => Write::Put { id, key, value: self.value()? },
            1 => Write::Delete { id, key },
            _ => {
                let expected = if self.byte()? % 2 == 0 { None } else { Some(self.value()?) };
                Write::Cas { id, key, expected, value: self.value()? }
            }
        })
    }

    fn read(&mut self) -> Option<Read> {
        Some(if self.byte()? % 4 == 0 { Read::Digest } else { Read::Get { key: self.key()? } })
    }
}

/// Commands on a state machine: raw request bytes, or writes and reads built from the
/// input (encoded as a server would, with a few raw bytes mixed in), one at a time or in
/// batches. Answers decode, a malformed request changes nothing, two machines agree, and
/// checkpoints round-trip.
pub fn kv_command(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut machines = Machines::new();
    let mut input = Bytes8(rest);
    if mode % 2 == 0 {
        // Raw: [kind][len u16 le][request bytes]...
        while let (Some(kind), Some(low), Some(high)) = (input.byte(), input.byte(), input.byte()) {
            let request = input.take(usize::from(u16::from_le_bytes([low, high]))).to_vec();
            if kind % 2 == 0 {
                machines.write(&request);
            } else {
                machines.read(&request);
            }
        }
    } else {
        while let Some(step) = input.byte() {
            let count = usize::from(step / 8 % 4);
            match step % 8 {
                0..=2 => {
                    let Some(write) = input.write() else { break };
                    machines.write(&write.encode());
                }
                3 | 4 => {
                    let mut batch = WriteBatch::new();
                    for _ in 0..count {
                        let Some(write) = input.write() else { break };
                        batch.push(&write);
                    }
                    machines.write(&batch.finish());
                }
                5 => {
                    let Some(read) = input.read() else { break };
                    machines.read(&read.encode());
                }
                6 => {
                    let mut batch = ReadBatch::new();
                    for _ in 0..count {
                        let Some(read) = input.read() else { break };
                        batch.push(&read);
                    }
                    machines.read(&batch.finish());
                }
                _ => {
                    let len = usize::from(input.byte().unwrap_or(0) % 32);
                    let raw = input.take(len).to_vec();
                    machines.write(&raw);
                    machines.read(&raw);
                }
            }
        }
    }
    machines.check();
}

/// A client's `Stream` frame, through the server's checks: refused whole, or every
/// operation refused or packed; what is packed is what the state machine accepts, in
/// write batches no larger than the bound, and gets one answer per operation.
pub fn kv_stream_frame(data: &[u8]) {
    let Ok(plan) = fuzzing::plan_stream_frame(data) else { return };
    let ops = pb::OpBatch::decode(data).expect("a planned frame decodes").ops;
    let packed: usize = plan.write_batches.iter().map(|(_, writes)| writes.len()).sum();
    assert_eq!(
        plan.refused.len() + packed + plan.read_batch.1.len() + plan.fast_reads.len(),
        ops.len(),
        "every operation is refused or planned, once"
    );
    for refused in &plan.refused {
        assert!(matches!(refused.result, Some(pb::op_result::Result::Error(_))), "{refused:?}");
    }
    let mut machines = Machines::new();
    for (bytes, writes) in &plan.write_batches {
        assert!(bytes.len() <= WRITE_BATCH_BYTES_MAX, "a write batch of {} bytes", bytes.len());
        let parts = WriteBatch::split(bytes).expect("a packed write batch splits");
        assert_eq!(parts.len(), writes.len());
        for (part, (_, id)) in parts.iter().zip(writes) {
            let write = Write::decode(part).expect("a packed write decodes");
            assert_eq!(write.id(), *id, "the write ids are the ones planned");
        }
        let responses = machines.write(bytes);
        assert_eq!(responses.len(), writes.len(), "one answer per packed write");
        for response in responses {
            assert!(!matches!(response.outcome, WriteOutcome::Malformed { .. }), "{response:?}");
        }
    }
    let (reads, read_ids) = &plan.read_batch;
    let parts = ReadBatch::split(reads).expect("a planned read batch splits");
    assert_eq!(parts.len(), read_ids.len());
    for part in &parts {
        Read::decode(part).expect("a planned read decodes");
    }
    if !read_ids.is_empty() {
        let outcomes = machines.read(reads);
        assert_eq!(outcomes.len(), read_ids.len(), "one answer per planned read");
        assert!(outcomes.iter().all(|o| !matches!(o, ReadOutcome::Malformed { .. })), "{outcomes:?}");
    }
    // A write batch sent whole: what the server accepts is the frame's own bytes, and the
    // state machine executes every write of it.
    if let Some((_, Ok((bytes, count)))) = &plan.encoded_write_batch {
        let sent = pb::OpBatch::decode(data).expect("a planned frame decodes").write_batch;
        assert_eq!(bytes, &sent, "the request is the batch as sent");
        let responses = machines.write(bytes);
        assert_eq!(responses.len(), *count, "one answer per write of the batch");
        for response in responses {
            assert!(!matches!(response.outcome, WriteOutcome::Malformed { .. }), "{response:?}");
        }
    }
    machines.check();
}

/// Wraps `body` in a checkpoint's header and checksum, as a peer can send: the checksum
/// proves nothing against a peer that computes it.
pub fn checkpoint_with_body(slot: u64, body: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    out.put_slice(&rsl_kv::machine::CHECKPOINT_MAGIC);
    out.put_u32_le(rsl_kv::machine::CHECKPOINT_VERSION);
    out.put_u64_le(slot);
    out.put_u64_le(body.len() as u64);
    out.put_slice(body);
    let crc = crc32c::crc32c(&out[8..]);
    out.put_u32_le(crc);
    out.to_vec()
}

/// A state machine checkpoint from arbitrary bytes (mode 0), or an arbitrary body under a
/// valid header and checksum (mode 1). What loads saves to a checkpoint that loads to the
/// same state and saves to the same bytes.
pub fn kv_checkpoint_load(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let file = if mode % 2 == 0 { rest.to_vec() } else { checkpoint_with_body(7, rest) };
    let Ok((slot, machine)) = KvStateMachine::load(&mut file.as_slice(), SESSIONS_MAX) else { return };
    let mut saved = Vec::new();
    machine.save(slot, &mut saved).expect("saving to memory");
    let (again_slot, again) =
        KvStateMachine::load(&mut saved.as_slice(), SESSIONS_MAX).expect("a saved checkpoint loads");
    assert_eq!((again_slot, &again), (slot, &machine), "a loaded checkpoint saves and loads to itself");
    let mut resaved = Vec::new();
    again.save(slot, &mut resaved).expect("saving to memory");
    assert_eq!(resaved, saved, "equal states save equal checkpoints");
}
