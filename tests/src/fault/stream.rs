//! The fault workload's sessions over one shared `Stream` call (`--stream`): the path the
//! load generator and the benchmark use, where the server packs a message's writes into
//! one write batch and its linearizable gets into one read batch.
//!
//! A multiplexer task owns the stream to the server it believes is the primary. Whatever
//! the sessions queued by the time it runs leaves in one message, so concurrent sessions'
//! operations share batches. It makes no retries: an operation whose answer is an error,
//! or that was outstanding when the stream failed or moved to another server, ends with
//! that error, and the session records it (a write as `info`, unless the server refused
//! it as malformed).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rsl_kv::proto as pb;
use rsl_kv::ClientSecurity;
use tokio::sync::{mpsc, oneshot};

/// What became of one operation.
pub type OpResult = Result<pb::op_result::Result, OpFailed>;

/// An operation that did not succeed.
#[derive(Clone, Debug)]
pub struct OpFailed {
    /// It certainly did not take effect: it was never sent, or the server refused it
    /// before replicating it (not the primary, malformed, too busy).
    pub no_effect: bool,
    /// What happened.
    pub message: String,
}

impl OpFailed {
    fn unknown(message: String) -> OpFailed {
        OpFailed { no_effect: false, message }
    }
}

/// How long the multiplexer waits for more operations before it sends a message.
const LINGER: Duration = Duration::from_millis(1);
/// How long the oldest outstanding operation may wait before the stream is given up.
const STALLED_AFTER: Duration = Duration::from_secs(2);

type Queued = (pb::op::Op, oneshot::Sender<OpResult>);

/// A handle to the multiplexer; cloned by every session.
#[derive(Clone, Debug)]
pub struct StreamMux {
    queue: mpsc::Sender<Queued>,
}

impl StreamMux {
    /// Starts the multiplexer against `servers` (client addresses), connecting with
    /// `security`.
    pub fn start(servers: Vec<String>, security: ClientSecurity) -> StreamMux {
        let (queue, receiver) = mpsc::channel(1024);
        tokio::spawn(run(servers, security, receiver));
        StreamMux { queue }
    }

    /// Sends `op` and waits at most `timeout` for its answer.
    pub async fn call(&self, op: pb::op::Op, timeout: Duration) -> OpResult {
        let (reply, answer) = oneshot::channel();
        if self.queue.send((op, reply)).await.is_err() {
            return Err(OpFailed { no_effect: true, message: "the multiplexer stopped".into() });
        }
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(OpFailed::unknown("the multiplexer dropped the operation".into())),
            Err(_) => Err(OpFailed::unknown(format!("no answer within {timeout:?}"))),
        }
    }
}

/// Owns the stream: sends what is queued, matches answers by id, and moves to the primary
/// a refusal names (or the next server) when the stream fails.
async fn run(servers: Vec<String>, security: ClientSecurity, mut queue: mpsc::Receiver<Queued>) {
    let mut target = servers.first().cloned().unwrap_or_default();
    let mut next = 0usize;
    let mut next_id = 0u64;
    loop {
        // Outstanding operations, and when each was sent.
        let mut pending: HashMap<u64, (Instant, oneshot::Sender<OpResult>)> = HashMap::new();
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let redirect = match open(&target, &security).await {
            Err(error) => {
                // Answer what is waiting so sessions do not hang on a dead server.
                while let Ok((_, reply)) = queue.try_recv() {
                    let message = format!("connecting to {target}: {error}");
                    let _ = reply.send(Err(OpFailed { no_effect: true, message }));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                None
            }
            Ok((sender, mut answers)) => loop {
                tokio::select! {
                    queued = queue.recv() => {
                        let Some(first) = queued else { return };
                        // Linger a moment, so that operations of other sessions share the
                        // message (and the server's batches).
                        tokio::time::sleep(LINGER).await;
                        let mut ops = Vec::new();
                        let mut batch = Some(first);
                        while let Some((op, reply)) = batch.take().or_else(|| queue.try_recv().ok()) {
                            next_id += 1;
                            pending.insert(next_id, (Instant::now(), reply));
                            ops.push(pb::Op { id: next_id, op: Some(op) });
                        }
                        if sender.send(pb::OpBatch { ops, ..Default::default() }).await.is_err() {
                            break None;
                        }
                    }
                    message = answers.message() => match message {
                        Ok(Some(batch)) => {
                            let mut redirect = None;
                            for result in batch.results {
                                let Some((_, reply)) = pending.remove(&result.id) else { continue };
                                let outcome = match result.result {
                                    Some(pb::op_result::Result::Error(error)) => {
                                        let refused = error.code == tonic::Code::FailedPrecondition as u32;
                                        if refused && !error.primary_address.is_empty() {
                                            redirect = Some(error.primary_address.clone());
                                        }
                                        let no_effect = refused
                                            || error.code == tonic::Code::InvalidArgument as u32
                                            || error.code == tonic::Code::ResourceExhausted as u32;
                                        let message = format!("code {}: {}", error.code, error.message);
                                        Err(OpFailed { no_effect, message })
                                    }
                                    Some(other) => Ok(other),
                                    None => Err(OpFailed::unknown("an answer without a result".into())),
                                };
                                let _ = reply.send(outcome);
                            }
                            if redirect.is_some() {
                                break redirect;
                            }
                        }
                        Ok(None) => break None,
                        Err(_) => break None,
                    },
                    _ = tick.tick() => {
                        // A partitioned server keeps the stream open and answers nothing.
                        if pending.values().any(|(sent, _)| sent.elapsed() > STALLED_AFTER) {
                            break None;
                        }
                    }
                }
            },
        };
        for (_, (_, reply)) in pending.drain() {
            let _ = reply.send(Err(OpFailed::unknown(format!("the stream to {target} ended"))));
        }
        target = match redirect {
            Some(primary) if primary != target => primary,
            _ => {
                next = (next + 1) % servers.len().max(1);
                servers.get(next).cloned().unwrap_or_default()
            }
        };
    }
}

type Answers = tonic::Streaming<pb::ResultBatch>;

async fn open(
    target: &str,
    security: &ClientSecurity,
) -> Result<(mpsc::Sender<pb::OpBatch>, Answers), String> {
    let endpoint = rsl_kv::connection::endpoint(target, security)
        .map_err(|error| error.to_string())?
        .connect_timeout(Duration::from_millis(300))
        .tcp_nodelay(true);
    let channel = endpoint.connect().await.map_err(|error| error.to_string())?;
    let mut client = rsl_kv::connection::kv_client(channel, security);
    let (sender, receiver) = mpsc::channel(64);
    let opened = tokio::time::timeout(
        Duration::from_secs(1),
        client.stream(tokio_stream::wrappers::ReceiverStream::new(receiver)),
    )
    .await
    .map_err(|_| "opening the stream timed out".to_owned())?
    .map_err(|status| status.to_string())?;
    Ok((sender, opened.into_inner()))
}
