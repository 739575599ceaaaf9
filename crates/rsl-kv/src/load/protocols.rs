//! How a load session talks to the servers ([`Protocol`]): rsl-kv's `Stream` RPC, whose
//! messages carry every operation ready at once, or one unary call per operation
//! (rsl-kv's or etcd's). Both move to another server when theirs fails or refuses as not
//! primary, and send the outstanding operations again.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Code;

use super::session::{Op, Session, SessionOutcome};
use super::{LoadOptions, Protocol};
use crate::client::Wire;
use crate::command::{
    WriteBatch, WriteId, WriteOutcomeRef, WriteRef, WriteResponseRef, WRITE_BATCH_BYTES_MAX,
};
use crate::connection::{kv_client, ClientSecurity, KvChannel};
use crate::etcd_proto;
use crate::proto as pb;

/// Operations one stream message carries at most.
const STREAM_BATCH_OPS_MAX: usize = 4096;
/// Pause before a client reconnects after its stream failed.
const RECONNECT_PAUSE: Duration = Duration::from_millis(50);

impl Session {
    pub(super) async fn run(self, channel: Channel, options: LoadOptions) -> SessionOutcome {
        match options.protocol {
            Protocol::Stream => self.run_stream(channel, &options.client.security, options.client.wire).await,
            Protocol::Unary | Protocol::Etcd => self.run_unary(channel, options).await,
        }
    }

    /// rsl-kv's `Stream`: what is ready leaves in one message; answers come in batches.
    /// When the stream fails or the server says it is not the primary, the session moves
    /// to the primary it names (or the next server) and sends its outstanding operations
    /// again (a write keeps its session and sequence, so it executes at most once).
    async fn run_stream(mut self, channel: Channel, security: &ClientSecurity, wire: Wire) -> SessionOutcome {
        let mut client = kv_client(channel, security);
        let mut again: Vec<Op> = Vec::new();
        let mut batches = WriteBatches::default();
        'connect: while !self.ended(Instant::now()) || (self.busy() > 0 && !again.is_empty()) {
            if self.drain_over(Instant::now()) {
                break;
            }
            batches.in_flight.clear();
            let (sender, receiver) = mpsc::channel::<pb::OpBatch>(64);
            let mut answers = match client.stream(ReceiverStream::new(receiver)).await {
                Ok(response) => response.into_inner(),
                Err(status) => {
                    self.note_error(format!("opening the stream: {:?}: {}", status.code(), status.message()));
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                    if let Some(channel) = self.retarget(None) {
                        client = kv_client(channel, security);
                    }
                    continue 'connect;
                }
            };
            loop {
                let mut ops = std::mem::take(&mut again);
                ops.extend(self.ready(Instant::now()));
                for batch in batches.messages(wire, &ops) {
                    if sender.send(batch).await.is_err() {
                        again = self.resend("the stream closed");
                        continue 'connect;
                    }
                }
                if self.ended(Instant::now()) && self.busy() == 0 {
                    break 'connect;
                }
                let wake = self.wake(Instant::now());
                let failed = tokio::select! {
                    message = answers.message() => match message {
                        Ok(Some(batch)) => {
                            let mut redirect = self.write_batch_answered(&mut batches, &batch);
                            for result in batch.results {
                                match result.result {
                                    // Not the primary, or not ready: did not take effect.
                                    Some(pb::op_result::Result::Error(error))
                                        if error.code == Code::FailedPrecondition as u32
                                            || error.code == Code::Unavailable as u32 =>
                                    {
                                        redirect.get_or_insert(error.primary_address);
                                    }
                                    other => self.finish(result.id as usize, stream_outcome(other)),
                                }
                            }
                            redirect.map(|hint| (hint, "the server is not the primary".to_owned()))
                        }
                        Ok(None) => Some((String::new(), "the server closed the stream".to_owned())),
                        Err(status) => Some((String::new(), format!("stream: {:?}: {}", status.code(), status.message()))),
                    },
                    () = sleep_until(wake) => {
                        if self.drain_over(Instant::now()) {
                            break 'connect;
                        }
                        None
                    }
                };
                if let Some((hint, error)) = failed {
                    again = self.resend(&error);
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                    if let Some(channel) = self.retarget(Some(&hint)) {
                        client = kv_client(channel, security);
                    }
                    continue 'connect;
                }
            }
        }
        self.done()
    }

    /// One unary call per operation (rsl-kv's or etcd's), up to `in_flight` at once.
    async fn run_unary(mut self, channel: Channel, options: LoadOptions) -> SessionOutcome {
        let security = &options.client.security;
        let mut rsl = kv_client(channel.clone(), security);
        let mut etcd = etcd_proto::kv_client::KvClient::new(channel);
        let timeout = options.client.attempt_timeout;
        let mut calls = FuturesUnordered::new();
        let mut again: Vec<Op> = Vec::new();
        loop {
            let retries = again.len();
            let mut ops = std::mem::take(&mut again);
            ops.extend(self.ready(Instant::now()));
            for (index, op) in ops.into_iter().enumerate() {
                let (rsl, etcd) = (rsl.clone(), etcd.clone());
                let protocol = options.protocol;
                let pause = if index < retries { RECONNECT_PAUSE } else { Duration::ZERO };
                calls.push(async move {
                    tokio::time::sleep(pause).await;
                    let lane = op.lane;
                    let call = unary_call(protocol, rsl, etcd, op);
                    let result = match tokio::time::timeout(timeout, call).await {
                        Ok(result) => result,
                        Err(_) => {
                            Err(CallError::retry(format!("no answer within {} ms", timeout.as_millis())))
                        }
                    };
                    (lane, result)
                });
            }
            if self.ended(Instant::now()) && calls.is_empty() {
                break;
            }
            let wake = self.wake(Instant::now());
            tokio::select! {
                Some((lane, result)) = calls.next(), if !calls.is_empty() => match result {
                    Ok(()) => self.finish(lane, Ok(())),
                    Err(error) => {
                        match self.retryable(lane).filter(|_| error.retry) {
                            Some(op) => {
                                // Move to the primary named, or the next server, and try again.
                                if let Some(channel) = self.retarget(error.hint.as_deref()) {
                                    rsl = kv_client(channel.clone(), security);
                                    etcd = etcd_proto::kv_client::KvClient::new(channel);
                                }
                                again.push(op);
                            }
                            _ => self.finish(lane, Err(error.message)),
                        }
                    }
                },
                () = sleep_until(wake) => {
                    if self.drain_over(Instant::now()) {
                        break;
                    }
                }
            }
        }
        self.done()
    }
}

/// Sleeps until `wake` (forever when `None`).
async fn sleep_until(wake: Option<Instant>) {
    match wake {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// The write batches a stream session has in flight ([`Wire::Batch`]).
#[derive(Debug, Default)]
struct WriteBatches {
    next_id: u64,
    /// The lanes of each batch's writes, in order, by batch id.
    in_flight: HashMap<u64, Vec<usize>>,
}

impl WriteBatches {
    /// The stream messages that carry `ops`: per operation, or with the writes encoded
    /// whole, one write batch (no larger than a consensus batch) per message.
    fn messages(&mut self, wire: Wire, ops: &[Op]) -> Vec<pb::OpBatch> {
        let (writes, per_op): (Vec<&Op>, Vec<&Op>) = match wire {
            Wire::Batch => ops.iter().partition(|op| !op.read),
            Wire::PerOp => (Vec::new(), ops.iter().collect()),
        };
        let mut messages: Vec<pb::OpBatch> = per_op
            .chunks(STREAM_BATCH_OPS_MAX)
            .map(|chunk| pb::OpBatch {
                ops: chunk.iter().map(|op| stream_op(op)).collect(),
                ..Default::default()
            })
            .collect();
        let mut batch = WriteBatch::new();
        let mut lanes = Vec::new();
        for op in writes {
            let write = WriteRef::Put {
                id: WriteId { client: op.session, sequence: op.sequence },
                key: &op.key,
                value: &op.value,
            };
            let added = WriteBatch::PER_WRITE_BYTES + write.encoded_len();
            if !batch.is_empty() && batch.encoded_len() + added > WRITE_BATCH_BYTES_MAX {
                messages.push(self.message(std::mem::take(&mut batch), std::mem::take(&mut lanes)));
            }
            batch.push_view(write);
            lanes.push(op.lane);
        }
        if !batch.is_empty() {
            messages.push(self.message(batch, lanes));
        }
        messages
    }

    fn message(&mut self, batch: WriteBatch, lanes: Vec<usize>) -> pb::OpBatch {
        self.next_id += 1;
        self.in_flight.insert(self.next_id, lanes);
        pb::OpBatch { write_batch: batch.finish(), write_batch_id: self.next_id, ..Default::default() }
    }
}

impl Session {
    /// Records the answer to a write batch that `answer` carries, if any; returns the
    /// primary to move to when the server refused it as not primary (or not ready).
    fn write_batch_answered(
        &mut self,
        batches: &mut WriteBatches,
        answer: &pb::ResultBatch,
    ) -> Option<String> {
        let lanes = batches.in_flight.remove(&answer.write_batch_id)?;
        if let Some(error) = &answer.write_batch_error {
            if error.code == Code::FailedPrecondition as u32 || error.code == Code::Unavailable as u32 {
                return Some(error.primary_address.clone());
            }
            let failure = format!("{:?}: {}", Code::from(error.code as i32), error.message);
            for lane in lanes {
                self.finish(lane, Err(failure.clone()));
            }
            return None;
        }
        match WriteResponseRef::decode_batch(&answer.write_answers) {
            Ok(responses) if responses.len() == lanes.len() => {
                for (lane, response) in lanes.into_iter().zip(responses) {
                    let result = match response.outcome {
                        WriteOutcomeRef::Stale { newest } => Err(format!("stale: newest write {newest}")),
                        WriteOutcomeRef::Malformed { reason } => {
                            Err(format!("malformed: {}", String::from_utf8_lossy(reason)))
                        }
                        _ => Ok(()),
                    };
                    self.finish(lane, result);
                }
            }
            other => {
                let failure = format!("an unusable answer list: {other:?}");
                for lane in lanes {
                    self.finish(lane, Err(failure.clone()));
                }
            }
        }
        None
    }
}

fn stream_op(op: &Op) -> pb::Op {
    let kind = if op.read {
        pb::op::Op::Get(pb::GetRequest {
            key: op.key.clone(),
            fast: false,
            min_slot: 0,
            ..Default::default()
        })
    } else {
        pb::op::Op::Put(pb::PutRequest {
            id: Some(pb::WriteId { client: op.session, sequence: op.sequence }),
            key: op.key.clone(),
            value: op.value.clone(),
        })
    };
    pb::Op { id: op.lane as u64, op: Some(kind) }
}

fn stream_outcome(result: Option<pb::op_result::Result>) -> Result<(), String> {
    match result {
        Some(pb::op_result::Result::Error(error)) => {
            Err(format!("{:?}: {}", Code::from_i32(error.code as i32), error.message))
        }
        Some(_) => Ok(()),
        None => Err("an empty result".into()),
    }
}

/// Why a unary call failed, and whether another server may succeed.
#[derive(Debug)]
struct CallError {
    message: String,
    /// The call did not take effect or may be repeated safely (a write keeps its id).
    retry: bool,
    /// The primary a refusal named.
    hint: Option<String>,
}

impl CallError {
    fn retry(message: String) -> CallError {
        CallError { message, retry: true, hint: None }
    }
}

async fn unary_call(
    protocol: Protocol,
    mut rsl: pb::kv_client::KvClient<KvChannel>,
    mut etcd: etcd_proto::kv_client::KvClient<Channel>,
    op: Op,
) -> Result<(), CallError> {
    let status = |status: tonic::Status| CallError {
        message: format!("{:?}: {}", status.code(), status.message()),
        retry: matches!(
            status.code(),
            Code::FailedPrecondition
                | Code::Unavailable
                | Code::Cancelled
                | Code::Unknown
                | Code::ResourceExhausted
        ),
        hint: status
            .metadata()
            .get(crate::PRIMARY_ADDRESS_METADATA)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned),
    };
    match (protocol, op.read) {
        (Protocol::Etcd, false) => {
            let request = etcd_proto::PutRequest {
                key: Bytes::from(op.key),
                value: op.value,
                lease: 0,
                prev_kv: false,
            };
            etcd.put(request).await.map(drop).map_err(status)
        }
        (Protocol::Etcd, true) => {
            let request = etcd_proto::RangeRequest {
                key: Bytes::from(op.key),
                range_end: Bytes::new(),
                limit: 0,
                revision: 0,
                serializable: false,
            };
            etcd.range(request).await.map(drop).map_err(status)
        }
        (_, false) => {
            let request = pb::PutRequest {
                id: Some(pb::WriteId { client: op.session, sequence: op.sequence }),
                key: op.key,
                value: op.value,
            };
            rsl.put(request).await.map(drop).map_err(status)
        }
        (_, true) => {
            let request = pb::GetRequest { key: op.key, fast: false, min_slot: 0, ..Default::default() };
            rsl.get(request).await.map(drop).map_err(status)
        }
    }
}
