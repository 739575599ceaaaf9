//! The `Stream` RPC: a client sends batches of operations and gets a batch of results for
//! each. A batch's writes go to the ring packed into [`WriteBatch`]es (one request each,
//! as large as a write may be), its linearizable gets as one [`ReadBatch`], its fast gets
//! one by one; every operation gets a result, matched by its id. Batches of one stream
//! are served concurrently, up to a bound, and the stream is not read further until one
//! finishes (flow control pushes back on the client). Checking a batch's operations and
//! packing them ([`plan`]) needs no ring, so the fuzz targets run it on arbitrary frames.
//!
//! A message may also carry a write batch the client encoded whole (`write_batch`): it is
//! checked in place ([`CheckedWriteBatch`]: every write, every field, the limits) and the
//! very buffer (a slice of the received frame) becomes the ring's request, replicated with
//! the packed batches; the state machine's answer list goes back as it came
//! (`write_answers`), not as one result per write.
//!
//! Authorization is per batch: a batch carrying any operation the caller's role may not
//! do is refused as a whole (every operation of it answered `PERMISSION_DENIED`, none
//! served; an encoded write batch gets `write_batch_error`), and the stream stays open
//! for the next batch. Every kind of write (put, delete, compare-and-set) needs the
//! `write` operation.

use std::sync::Arc;

use futures_util::future::join_all;
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::answers::{self, write_id};
use super::guard::{refusal, Rpc};
use super::service::KvService;
use crate::auth::{Access, Operation};
use crate::command::{
    self, CheckedWriteBatch, Read, ReadBatch, Write, WriteBatch, WriteId, WriteResponse, WriteResponseRef,
    WRITE_BATCH_BYTES_MAX,
};
use crate::proto as pb;
use crate::{PRIMARY_ADDRESS_METADATA, PRIMARY_NODE_METADATA};

/// Operation batches of one client stream being served at once.
const STREAM_BATCHES_IN_FLIGHT_MAX: usize = 64;
/// Operations in one batch of a client stream, and writes in the write batch it may carry
/// besides.
pub(crate) const STREAM_BATCH_OPS_MAX: usize = 65_536;

/// The results of a stream.
pub(super) type ResultStream = ReceiverStream<Result<pb::ResultBatch, Status>>;

/// Serves the stream `incoming`, opened by `access`, in a task of its own; its results come
/// out of the stream returned.
pub(super) fn serve(
    service: KvService,
    access: Access,
    mut incoming: Streaming<pb::OpBatch>,
) -> ResultStream {
    let (sender, receiver) = mpsc::channel(STREAM_BATCHES_IN_FLIGHT_MAX);
    tokio::spawn(async move {
        let in_flight = Arc::new(Semaphore::new(STREAM_BATCHES_IN_FLIGHT_MAX));
        loop {
            let batch = match incoming.message().await {
                Ok(Some(batch)) => batch,
                Ok(None) => break,
                Err(status) => {
                    tracing::debug!(node = service.node().0, %status, "client stream ended");
                    break;
                }
            };
            if let Err(refusal) = check_batch_len(&batch) {
                let _ = sender.send(Err(refusal)).await;
                break;
            }
            if let Err(error) = access.authorize(batch_operation(&batch), Rpc::Stream.name()) {
                if sender.send(Ok(refused_whole(&batch, &refusal(error)))).await.is_err() {
                    break;
                }
                continue;
            }
            let Ok(permit) = in_flight.clone().acquire_owned().await else { break };
            let (service, sender) = (service.clone(), sender.clone());
            tokio::spawn(async move {
                let results = serve_batch(&service, batch).await;
                let _ = sender.send(Ok(results)).await;
                drop(permit);
            });
        }
    });
    ReceiverStream::new(receiver)
}

/// Refuses a stream batch of more than [`STREAM_BATCH_OPS_MAX`] operations (the stream
/// ends with this status).
pub(crate) fn check_batch_len(batch: &pb::OpBatch) -> Result<(), Status> {
    if batch.ops.len() > STREAM_BATCH_OPS_MAX {
        return Err(Status::invalid_argument(format!(
            "a stream batch carries at most {STREAM_BATCH_OPS_MAX} operations, got {}",
            batch.ops.len()
        )));
    }
    Ok(())
}

/// A stream batch decoded and checked, before anything reaches the ring: every operation
/// is in exactly one of the four parts.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Results of the operations refused on the spot (no operation set, no write id, a
    /// key or value over the limits).
    pub(crate) refused: Vec<pb::OpResult>,
    /// The writes, packed into write batches for the ring.
    pub(crate) packed: Packed,
    /// The linearizable gets as one ring read, and their operation ids in order.
    pub(crate) reads: ReadBatch,
    pub(crate) read_ids: Vec<u64>,
    /// The fast gets (each names its own slot) and the gets that ask for a read
    /// consistency other than the default, served one by one.
    pub(crate) fast_reads: Vec<(u64, pb::GetRequest)>,
    /// The write batch the client encoded whole, if the message carries one: its id, and
    /// the batch checked or the status refusing it.
    pub(crate) write_batch: Option<(u64, Result<CheckedWriteBatch, Status>)>,
}

/// Checks every operation of `batch` and sorts it into a [`Plan`]. Runs without the ring,
/// so the fuzz targets run exactly what a server does with a client's frame.
pub(crate) fn plan(batch: pb::OpBatch) -> Plan {
    let mut plan = Plan::default();
    if !batch.write_batch.is_empty() {
        let checked = CheckedWriteBatch::check(batch.write_batch, STREAM_BATCH_OPS_MAX)
            .map_err(|error| Status::invalid_argument(error.to_string()));
        plan.write_batch = Some((batch.write_batch_id, checked));
    }
    for op in batch.ops {
        let id = op.id;
        let write = match op.op {
            Some(pb::op::Op::Put(put)) => write_id(put.id)
                .map(|wid| (Write::Put { id: wid, key: put.key, value: put.value }, WriteKind::Put)),
            Some(pb::op::Op::Delete(delete)) => {
                write_id(delete.id).map(|wid| (Write::Delete { id: wid, key: delete.key }, WriteKind::Delete))
            }
            Some(pb::op::Op::Cas(cas)) => write_id(cas.id).map(|wid| {
                let expected = cas.expected_present.then_some(cas.expected);
                (Write::Cas { id: wid, key: cas.key, expected, value: cas.value }, WriteKind::Cas)
            }),
            // Fast gets, and gets asking for a consistency of their own, go one by one.
            Some(pb::op::Op::Get(get)) if get.fast || get.consistency != 0 => {
                plan.fast_reads.push((id, get));
                continue;
            }
            Some(pb::op::Op::Get(get)) => {
                match command::check_key(&get.key) {
                    Ok(()) => {
                        plan.reads.push(&Read::Get { key: get.key });
                        plan.read_ids.push(id);
                    }
                    Err(error) => plan.refused.push(op_failed(id, answers::invalid(error))),
                }
                continue;
            }
            None => Err(Status::invalid_argument(format!("operation {id}: no operation set"))),
        };
        let checked = write.and_then(|(write, kind)| {
            write.validate().map_err(answers::invalid)?;
            Ok((write, kind))
        });
        match checked {
            Ok((write, kind)) => plan.packed.push(id, &write, kind),
            Err(status) => plan.refused.push(op_failed(id, status)),
        }
    }
    plan
}

/// What a batch asks to do: write if any of its operations writes or it carries a write
/// batch, else read.
fn batch_operation(batch: &pb::OpBatch) -> Operation {
    let writes = !batch.write_batch.is_empty()
        || batch
            .ops
            .iter()
            .any(|op| matches!(op.op, Some(pb::op::Op::Put(_) | pb::op::Op::Delete(_) | pb::op::Op::Cas(_))));
    if writes {
        Operation::Write
    } else {
        Operation::Read
    }
}

/// The answer to a batch refused as a whole with `status`: every operation, and the
/// encoded write batch if any, fails with it.
fn refused_whole(batch: &pb::OpBatch, status: &Status) -> pb::ResultBatch {
    let results = batch.ops.iter().map(|op| op_failed(op.id, status.clone())).collect();
    let mut answer = pb::ResultBatch { results, ..Default::default() };
    if !batch.write_batch.is_empty() {
        answer.write_batch_id = batch.write_batch_id;
        answer.write_batch_error = Some(op_error(status));
    }
    answer
}

/// Serves one batch of a client stream: every operation gets a result, and an encoded
/// write batch its answer list or error.
async fn serve_batch(service: &KvService, batch: pb::OpBatch) -> pb::ResultBatch {
    let Plan { refused: mut results, packed, reads, read_ids, fast_reads, write_batch } = plan(batch);
    let fast_results = join_all(fast_reads.into_iter().map(|(id, get)| async move {
        match service.get(get).await {
            Ok(response) => pb::OpResult { id, result: Some(pb::op_result::Result::Get(response)) },
            Err(status) => op_failed(id, status),
        }
    }));
    // The packed batches and the client's own go to the ring together (they share slots);
    // the client's is the buffer it sent, not a copy.
    let (mut payloads, writes): (Vec<_>, Vec<_>) =
        packed.batches.into_iter().map(|(batch, ids)| (batch.finish(), ids)).unzip();
    let (encoded_id, encoded) = match write_batch {
        Some((id, Ok(checked))) => {
            let count = checked.len();
            payloads.push(checked.into_bytes());
            (id, Some(Ok(count)))
        }
        Some((id, Err(status))) => (id, Some(Err(status))),
        None => (0, None),
    };
    let (mut written, fast_results, read_results) = tokio::join!(
        service.ring().replicate_many(payloads),
        fast_results,
        read_batch(service, reads, read_ids)
    );
    let encoded_answer = match encoded {
        Some(Ok(count)) => Some(written.pop().map_or_else(
            || Err(Status::internal("the ring answered no write batch")),
            |answer| encoded_answer(service, count, answer),
        )),
        Some(Err(status)) => Some(Err(status)),
        None => None,
    };
    results.extend(fast_results);
    for (ids, answer) in writes.into_iter().zip(written) {
        match service.batch_answer(ids.len(), answer) {
            Ok(responses) => {
                for ((id, write_id, kind), response) in ids.into_iter().zip(responses) {
                    let result =
                        answers::write_outcome(write_id, response).and_then(|response| kind.result(response));
                    results.push(match result {
                        Ok(result) => pb::OpResult { id, result: Some(result) },
                        Err(status) => op_failed(id, status),
                    });
                }
            }
            Err(status) => results.extend(ids.into_iter().map(|(id, _, _)| op_failed(id, status.clone()))),
        }
    }
    results.extend(read_results);
    let mut answer = pb::ResultBatch { results, ..Default::default() };
    match encoded_answer {
        Some(Ok(bytes)) => (answer.write_batch_id, answer.write_answers) = (encoded_id, bytes),
        Some(Err(status)) => {
            (answer.write_batch_id, answer.write_batch_error) = (encoded_id, Some(op_error(&status)))
        }
        None => {}
    }
    answer
}

/// The ring's answer to a client's encoded batch of `count` writes: the state machine's
/// answer list, forwarded as it is once its header says it answers every write.
fn encoded_answer(
    service: &KvService,
    count: usize,
    answer: Result<bytes::Bytes, rsl::ReplicateError>,
) -> Result<bytes::Bytes, Status> {
    let answer = answer.map_err(|error| service.redirects().replicate_error(error))?;
    match WriteResponseRef::batch_len(&answer) {
        Some(answered) if answered == count => Ok(answer),
        Some(answered) => Err(Status::internal(format!(
            "the state machine answered {answered} writes of a batch of {count}"
        ))),
        None => Err(Status::internal(match WriteResponseRef::decode(&answer) {
            Ok(response) => format!("the state machine refused a write batch: {:?}", response.outcome),
            Err(error) => format!("undecodable state machine answer: {error}"),
        })),
    }
}

/// Serves a stream message's linearizable gets (operations `ids`) with one ring read;
/// every get gets a result.
async fn read_batch(service: &KvService, reads: ReadBatch, ids: Vec<u64>) -> Vec<pb::OpResult> {
    if ids.is_empty() {
        return Vec::new();
    }
    match service.read_batch(reads, ids.len()).await {
        Ok(outcomes) => ids
            .into_iter()
            .zip(outcomes)
            .map(|(id, outcome)| match answers::get_response(outcome) {
                Ok(response) => pb::OpResult { id, result: Some(pb::op_result::Result::Get(response)) },
                Err(status) => op_failed(id, status),
            })
            .collect(),
        Err(status) => ids.into_iter().map(|id| op_failed(id, status.clone())).collect(),
    }
}

/// A stream's write packed in a [`WriteBatch`]: its operation id, its write id, and what to
/// decode its answer as.
pub(crate) type PackedWrite = (u64, WriteId, WriteKind);

/// A stream batch's writes, packed into write batches no larger than
/// [`WRITE_BATCH_BYTES_MAX`].
#[derive(Debug, Default)]
pub(crate) struct Packed {
    pub(crate) batches: Vec<(WriteBatch, Vec<PackedWrite>)>,
}

impl Packed {
    /// Adds operation `id`, a write (validated) of `kind`, starting a new batch when the
    /// last one would grow too large.
    fn push(&mut self, id: u64, write: &Write, kind: WriteKind) {
        let added = WriteBatch::PER_WRITE_BYTES + write.encoded_len();
        let full =
            self.batches.last().is_none_or(|(batch, _)| batch.encoded_len() + added > WRITE_BATCH_BYTES_MAX);
        if full {
            self.batches.push((WriteBatch::new(), Vec::new()));
        }
        let (batch, ids) = self.batches.last_mut().expect("pushed above");
        batch.push(write);
        ids.push((id, write.id(), kind));
    }
}

/// Which answer a stream's write expects.
#[derive(Clone, Copy, Debug)]
pub(crate) enum WriteKind {
    Put,
    Delete,
    Cas,
}

impl WriteKind {
    fn result(self, response: WriteResponse) -> Result<pb::op_result::Result, Status> {
        Ok(match self {
            WriteKind::Put => pb::op_result::Result::Put(pb::PutResponse { slot: response.slot }),
            WriteKind::Delete => pb::op_result::Result::Delete(answers::delete_response(&response)),
            WriteKind::Cas => pb::op_result::Result::Cas(answers::cas_response(response)?),
        })
    }
}

/// The result of a stream operation that failed with `status`.
fn op_failed(id: u64, status: Status) -> pb::OpResult {
    pb::OpResult { id, result: Some(pb::op_result::Result::Error(op_error(&status))) }
}

/// How a stream answers `status`: its code and message, and the primary it names.
fn op_error(status: &Status) -> pb::OpError {
    let metadata = status.metadata();
    let primary_node = metadata
        .get(PRIMARY_NODE_METADATA)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.parse().ok())
        .unwrap_or(0);
    let primary_address = metadata
        .get(PRIMARY_ADDRESS_METADATA)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    pb::OpError {
        code: status.code() as u32,
        message: status.message().to_owned(),
        primary_node,
        primary_address,
    }
}

#[cfg(test)]
mod tests {
    //! The stream's two ways of writing, served by one replica's ring in process: the
    //! encoded batch reaches the state machine as the very bytes the client sent, answers
    //! like the per-operation path, and a bad one is refused whole with nothing executed.

    use std::collections::BTreeMap;
    use std::io;
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use prost::Message as _;
    use rsl::{
        Config, MemoryNetwork, MemoryStorage, NodeId, RingId, Runtime, RuntimeOptions, Slot, StateMachine,
    };
    use tonic::Code;

    use super::*;
    use crate::command::{encode_write_batch, ReadOutcome, WriteOutcome};
    use crate::KvStateMachine;

    /// The key-value machine, keeping a copy of every request it executes.
    struct Recording {
        machine: KvStateMachine,
        requests: Arc<Mutex<Vec<Vec<u8>>>>,
    }

    impl StateMachine for Recording {
        fn execute(&mut self, slot: Slot, request: &[u8]) -> Bytes {
            self.requests.lock().unwrap().push(request.to_vec());
            self.machine.execute(slot, request)
        }

        fn read(&self, request: &[u8]) -> Bytes {
            self.machine.execute_read(request)
        }

        fn save_checkpoint(&self, slot: Slot, writer: &mut dyn io::Write) -> io::Result<()> {
            self.machine.save_checkpoint(slot, writer)
        }

        fn load_checkpoint(&mut self, slot: Slot, reader: &mut dyn io::Read) -> io::Result<()> {
            self.machine.load_checkpoint(slot, reader)
        }
    }

    /// A one-replica ring (memory log and network) and its client API, once primary.
    struct OneReplica {
        service: KvService,
        requests: Arc<Mutex<Vec<Vec<u8>>>>,
        runtime: Runtime,
    }

    impl OneReplica {
        async fn start() -> OneReplica {
            let network = MemoryNetwork::new(7);
            let (endpoint, inbound) = network.endpoint(NodeId(1)).unwrap();
            let runtime = Runtime::new(Arc::new(endpoint), inbound, RuntimeOptions::default()).unwrap();
            let mut config = Config::new(RingId(1), NodeId(1), vec![NodeId(1)]);
            config.heartbeat_interval_ms = 10;
            config.election_delay_min_ms = 20;
            config.election_delay_max_ms = 40;
            let requests = Arc::new(Mutex::new(Vec::new()));
            let machine = Recording { machine: KvStateMachine::new(), requests: requests.clone() };
            let ring = rsl::Ring::builder(config)
                .state_machine(machine)
                .storage(MemoryStorage::new())
                .runtime(&runtime)
                .start()
                .await
                .unwrap();
            let mut status = ring.status();
            let primary = status.wait_for(|status| status.role == rsl::Role::Primary);
            tokio::time::timeout(std::time::Duration::from_secs(20), primary).await.unwrap().unwrap();
            let service = KvService::new(NodeId(1), ring, BTreeMap::new(), BTreeMap::new());
            OneReplica { service, requests, runtime }
        }

        async fn digest(&self) -> command::Digest {
            let answer = self.service.ring().read(Read::Digest.encode()).await.unwrap();
            match ReadOutcome::decode(&answer).unwrap() {
                ReadOutcome::Digest(digest) => digest,
                other => panic!("{other:?}"),
            }
        }

        /// The requests executed so far, taken.
        fn executed(&self) -> Vec<Vec<u8>> {
            std::mem::take(&mut *self.requests.lock().unwrap())
        }
    }

    fn id(client: u64, sequence: u64) -> WriteId {
        WriteId { client, sequence }
    }

    /// Writes of every kind, some of which change nothing (a failed compare-and-set, a
    /// delete of an absent key, a retry, a stale write).
    fn script() -> Vec<Write> {
        let value = |text: &'static str| Bytes::from_static(text.as_bytes());
        vec![
            Write::Put { id: id(1, 1), key: "a".into(), value: value("1") },
            Write::Put { id: id(2, 1), key: "ключ".into(), value: value("значение") },
            Write::Cas { id: id(3, 1), key: "a".into(), expected: Some(value("1")), value: value("2") },
            Write::Cas { id: id(4, 1), key: "a".into(), expected: None, value: value("x") },
            Write::Delete { id: id(5, 1), key: "nothing".into() },
            Write::Delete { id: id(2, 2), key: "ключ".into() },
            Write::Put { id: id(1, 1), key: "a".into(), value: value("1") },
            Write::Put { id: id(2, 1), key: "b".into(), value: value("stale") },
        ]
    }

    /// The outcomes of `answer` to a message with an encoded write batch `id`.
    fn encoded_outcomes(answer: &pb::ResultBatch, id: u64) -> Vec<WriteOutcome> {
        assert_eq!(answer.write_batch_id, id);
        assert_eq!(answer.write_batch_error, None);
        assert!(answer.results.is_empty(), "no per-operation results: {:?}", answer.results);
        let responses = WriteResponseRef::decode_batch(&answer.write_answers).unwrap();
        responses.iter().map(|response| response.to_response().outcome).collect()
    }

    fn frame(message: &pb::OpBatch) -> Bytes {
        Bytes::from(message.encode_to_vec())
    }

    #[tokio::test]
    async fn an_encoded_batch_reaches_the_state_machine_as_the_bytes_the_client_sent() {
        let replica = OneReplica::start().await;
        let encoded = encode_write_batch(&script()).unwrap();
        let message = pb::OpBatch { write_batch: encoded.clone(), write_batch_id: 9, ..Default::default() };
        // As tonic does: the message decodes from the received frame's buffer, and the
        // batch is a slice of that buffer, not a copy.
        let frame = frame(&message);
        let received = pb::OpBatch::decode(frame.clone()).unwrap();
        let within = frame.as_ptr_range();
        assert!(within.contains(&received.write_batch.as_ptr()), "the field shares the frame's buffer");
        // The request the ring gets is that same slice.
        let Some((9, Ok(checked))) = plan(received.clone()).write_batch else { panic!("a checked batch") };
        assert_eq!(checked.bytes().as_ptr(), received.write_batch.as_ptr());
        assert_eq!((checked.len(), checked.kinds().len()), (8, 3));

        let answer = serve_batch(&replica.service, received).await;
        let outcomes = encoded_outcomes(&answer, 9);
        assert_eq!(outcomes.len(), 8);
        assert_eq!(
            outcomes[3],
            WriteOutcome::Cas { swapped: false, current: Some(Bytes::from_static(b"2")) }
        );
        assert_eq!(outcomes[7], WriteOutcome::Stale { newest: 2 });
        let executed = replica.executed();
        assert_eq!(executed, vec![encoded.to_vec()], "one request, byte for byte the client's batch");
        replica.runtime.shutdown().await;
    }

    #[tokio::test]
    async fn both_wires_answer_alike_and_leave_equal_states() {
        let (batched, per_op) = (OneReplica::start().await, OneReplica::start().await);
        let message = pb::OpBatch {
            write_batch: encode_write_batch(&script()).unwrap(),
            write_batch_id: 1,
            ..Default::default()
        };
        let batch_outcomes = encoded_outcomes(&serve_batch(&batched.service, message).await, 1);

        let ops = script().iter().zip(0..).map(crate::client::per_op).collect();
        let mut results =
            serve_batch(&per_op.service, pb::OpBatch { ops, ..Default::default() }).await.results;
        results.sort_by_key(|result| result.id);
        let per_op_outcomes: Vec<Option<WriteOutcome>> = results
            .into_iter()
            .map(|result| match result.result {
                Some(pb::op_result::Result::Put(_)) => Some(WriteOutcome::Put),
                Some(pb::op_result::Result::Delete(delete)) => {
                    Some(WriteOutcome::Deleted { existed: delete.existed })
                }
                Some(pb::op_result::Result::Cas(cas)) => Some(WriteOutcome::Cas {
                    swapped: cas.swapped,
                    current: cas.present.then_some(cas.current),
                }),
                // The per-operation path answers a stale write with ABORTED.
                Some(pb::op_result::Result::Error(error)) if error.code == Code::Aborted as u32 => None,
                other => panic!("{other:?}"),
            })
            .collect();
        let expected: Vec<Option<WriteOutcome>> = batch_outcomes
            .iter()
            .map(|outcome| (!matches!(outcome, WriteOutcome::Stale { .. })).then(|| outcome.clone()))
            .collect();
        assert_eq!(per_op_outcomes, expected);
        assert_eq!(batched.digest().await, per_op.digest().await);
        assert_eq!(batched.digest().await.keys, 1);
        batched.runtime.shutdown().await;
        per_op.runtime.shutdown().await;
    }

    #[tokio::test]
    async fn a_bad_batch_is_refused_whole_naming_the_write_and_nothing_executes() {
        let replica = OneReplica::start().await;
        let good = encode_write_batch(&script()).unwrap().to_vec();
        let mut bad_kind = good.clone();
        // The second write's kind byte: header, first write's length and encoding, the
        // second's length, its version.
        let first_len = u32::from_le_bytes(good[6..10].try_into().unwrap()) as usize;
        bad_kind[6 + 4 + first_len + 4 + 1] = 99;
        let mut bad_key =
            encode_write_batch(&[Write::Delete { id: id(1, 1), key: "é".into() }]).unwrap().to_vec();
        let end = bad_key.len();
        bad_key[end - 1] = 0xff;
        let big = Bytes::from(vec![0u8; 100 << 10]);
        let oversize = encode_write_batch(&[
            Write::Put { id: id(1, 1), key: "a".into(), value: big.clone() },
            Write::Put { id: id(2, 1), key: "b".into(), value: big },
        ])
        .unwrap()
        .to_vec();
        let empty = encode_write_batch(&[]).unwrap().to_vec();
        let too_many = encode_write_batch(
            &(1..=STREAM_BATCH_OPS_MAX as u64 + 1)
                .map(|client| Write::Delete { id: id(client, 1), key: "k".into() })
                .collect::<Vec<_>>(),
        )
        .unwrap()
        .to_vec();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (good[..good.len() - 1].to_vec(), "write batch: malformed write_batch.write"),
            (good[..3].to_vec(), "write batch: malformed write_batch.count"),
            (bad_kind, "write batch, write 1: malformed write.kind: unknown kind 99"),
            (bad_key, "write batch, write 0: malformed key: not UTF-8"),
            (oversize, "write batch: 204868 bytes for 2 writes, at most 132362"),
            (empty, "write batch: holds no write"),
            (too_many, "write batch: 65537 writes, at most 65536"),
        ];
        for (bytes, expected) in cases {
            let message =
                pb::OpBatch { write_batch: Bytes::from(bytes), write_batch_id: 4, ..Default::default() };
            let answer = serve_batch(&replica.service, message).await;
            assert_eq!(answer.write_batch_id, 4);
            assert!(answer.write_answers.is_empty());
            let error = answer.write_batch_error.expect("refused");
            assert_eq!(error.code, Code::InvalidArgument as u32, "{error:?}");
            assert!(
                error.message.starts_with(expected),
                "{:?} does not start with {expected:?}",
                error.message
            );
        }
        assert!(replica.executed().is_empty(), "nothing reached the state machine");
        assert_eq!(replica.digest().await.keys, 0);
        replica.runtime.shutdown().await;
    }

    #[test]
    fn a_batch_refused_by_role_answers_every_operation_and_the_write_batch() {
        let message = pb::OpBatch {
            ops: vec![pb::Op { id: 3, op: None }],
            write_batch: encode_write_batch(&script()).unwrap(),
            write_batch_id: 8,
        };
        assert_eq!(batch_operation(&message), Operation::Write);
        let reads_only = pb::OpBatch { ops: message.ops.clone(), ..Default::default() };
        assert_eq!(batch_operation(&reads_only), Operation::Read);
        let answer = refused_whole(&message, &Status::permission_denied("no"));
        assert_eq!(answer.results.len(), 1);
        assert_eq!(answer.write_batch_id, 8);
        assert_eq!(answer.write_batch_error.map(|e| e.code), Some(Code::PermissionDenied as u32));
    }
}
