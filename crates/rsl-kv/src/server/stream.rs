//! The `Stream` RPC: a client sends batches of operations and gets a batch of results for
//! each. A batch's writes go to the ring packed into [`WriteBatch`]es (one request each,
//! as large as a write may be), its linearizable gets as one [`ReadBatch`], its fast gets
//! one by one; every operation gets a result, matched by its id. Batches of one stream
//! are served concurrently, up to a bound, and the stream is not read further until one
//! finishes (flow control pushes back on the client). Checking a batch's operations and
//! packing them ([`plan`]) needs no ring, so the fuzz targets run it on arbitrary frames.
//!
//! Authorization is per batch: a batch carrying any operation the caller's role may not
//! do is refused as a whole (every operation of it answered `PERMISSION_DENIED`, none
//! served), and the stream stays open for the next batch.

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
    self, Read, ReadBatch, Write, WriteBatch, WriteId, WriteResponse, WRITE_BATCH_BYTES_MAX,
};
use crate::proto as pb;
use crate::{PRIMARY_ADDRESS_METADATA, PRIMARY_NODE_METADATA};

/// Operation batches of one client stream being served at once.
const STREAM_BATCHES_IN_FLIGHT_MAX: usize = 64;
/// Operations in one batch of a client stream.
const STREAM_BATCH_OPS_MAX: usize = 65_536;

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
                let status = refusal(error);
                let results = batch.ops.iter().map(|op| op_failed(op.id, status.clone())).collect();
                if sender.send(Ok(pb::ResultBatch { results })).await.is_err() {
                    break;
                }
                continue;
            }
            let Ok(permit) = in_flight.clone().acquire_owned().await else { break };
            let (service, sender) = (service.clone(), sender.clone());
            tokio::spawn(async move {
                let results = serve_batch(&service, batch).await;
                let _ = sender.send(Ok(pb::ResultBatch { results })).await;
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
}

/// Checks every operation of `batch` and sorts it into a [`Plan`]. Runs without the ring,
/// so the fuzz targets run exactly what a server does with a client's frame.
pub(crate) fn plan(batch: pb::OpBatch) -> Plan {
    let mut plan = Plan::default();
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

/// What a batch asks to do: write if any of its operations writes, else read.
fn batch_operation(batch: &pb::OpBatch) -> Operation {
    let writes = batch
        .ops
        .iter()
        .any(|op| matches!(op.op, Some(pb::op::Op::Put(_) | pb::op::Op::Delete(_) | pb::op::Op::Cas(_))));
    if writes {
        Operation::Write
    } else {
        Operation::Read
    }
}

/// Serves one batch of a client stream: every operation gets a result.
async fn serve_batch(service: &KvService, batch: pb::OpBatch) -> Vec<pb::OpResult> {
    let Plan { refused: mut results, packed, reads, read_ids, fast_reads } = plan(batch);
    let fast_results = join_all(fast_reads.into_iter().map(|(id, get)| async move {
        match service.get(get).await {
            Ok(response) => pb::OpResult { id, result: Some(pb::op_result::Result::Get(response)) },
            Err(status) => op_failed(id, status),
        }
    }));
    let (batches, writes): (Vec<_>, Vec<_>) =
        packed.batches.into_iter().map(|(batch, ids)| ((batch, ids.len()), ids)).unzip();
    let (written, fast_results, read_results) =
        tokio::join!(service.write_batches(batches), fast_results, read_batch(service, reads, read_ids));
    results.extend(fast_results);
    for (ids, answer) in writes.into_iter().zip(written) {
        match answer {
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
    results
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
    let error = pb::OpError {
        code: status.code() as u32,
        message: status.message().to_owned(),
        primary_node,
        primary_address,
    };
    pb::OpResult { id, result: Some(pb::op_result::Result::Error(error)) }
}
