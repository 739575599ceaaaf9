//! The clients of a fault run: concurrent sessions doing put, get and cas on a few keys,
//! every operation recorded in the [`History`].
//!
//! Values are integers, unique per write across the run, stored as decimal text. How an
//! error is recorded: a write refused as malformed (`InvalidArgument`) certainly did not
//! happen (`fail`); any other write error may hide an attempt that took effect (the client
//! retries, and a timed-out attempt can still be chosen), so it is `info`, and the session
//! is replaced by a new process with a new client id (a process never invokes again after
//! an `info`). A read that fails had no effect: `fail`.
//!
//! A [`SessionPauser`] freezes sessions mid-operation (the client-pause fault): a frozen
//! session's operation is not polled (no retry, no timeout fires) until it is released, so
//! it ends however it ends then: acknowledged if its answer came in, else by its deadline,
//! which has passed (an unknown outcome for a write).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rsl_core::SplitMix64;
use rsl_kv::{Client, ClientError, ClientOptions, ClientSecurity};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::fault::history::{Function, History, Outcome, Pending};
use crate::fault::stream::{OpFailed, OpResult, StreamMux};
use rsl_kv::proto as pb;

/// How the clients behave.
#[derive(Clone, Debug)]
pub struct WorkloadOptions {
    /// Concurrent sessions.
    pub clients: u64,
    /// Keys `k0..k{keys}`.
    pub keys: u64,
    /// Longest one operation may take, retries included; then it is `info` (or `fail`).
    pub operation_timeout: Duration,
    /// Pause between a session's operations: uniform in `0..=think_ms_max`.
    pub think_ms_max: u64,
    /// Read with fast reads from any replica (`get_fast` with no minimum slot) instead of
    /// linearizable reads: not linearizable, so the checker must object when a replica
    /// lags. A check that the whole chain can fail.
    pub fast_reads: bool,
    /// Send every session's operations over one shared `Stream` call (see
    /// [`crate::fault::stream`]) instead of one unary call each, with retries.
    pub stream: bool,
    /// How the sessions connect (the cluster's token).
    pub security: ClientSecurity,
}

/// Running clients; [`Workload::stop`] ends them.
#[derive(Debug)]
pub struct Workload {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
    pauser: SessionPauser,
}

/// Freezes and releases the sessions of a [`Workload`] (see the module docs); cheap to
/// clone.
#[derive(Clone, Debug)]
pub struct SessionPauser {
    /// One per session: `true` while it is frozen.
    gates: Arc<Vec<watch::Sender<bool>>>,
}

impl SessionPauser {
    /// The number of sessions.
    pub fn sessions(&self) -> u64 {
        self.gates.len() as u64
    }

    /// Freezes session `index` (in `0..sessions()`) where it is.
    pub fn pause(&self, index: u64) {
        if let Some(gate) = self.gates.get(index as usize) {
            gate.send_replace(true);
        }
    }

    /// Releases every frozen session.
    pub fn resume_all(&self) {
        for gate in self.gates.iter() {
            gate.send_replace(false);
        }
    }

    /// The sessions frozen now.
    pub fn paused(&self) -> Vec<u64> {
        (0..self.sessions()).filter(|&index| *self.gates[index as usize].borrow()).collect()
    }
}

/// Runs `operation` while `gate` is `false`: while it is `true` the operation is not polled.
async fn gated<F: Future>(gate: &mut watch::Receiver<bool>, operation: F) -> F::Output {
    tokio::pin!(operation);
    loop {
        while *gate.borrow_and_update() {
            if gate.changed().await.is_err() {
                // Nobody can release it any more: go on.
                break;
            }
        }
        tokio::select! {
            biased;
            output = &mut operation => return output,
            changed = gate.changed() => {
                if changed.is_err() {
                    return operation.await;
                }
            }
        }
    }
}

impl Workload {
    /// Starts `options.clients` sessions against `servers`.
    pub fn start(servers: Vec<String>, history: History, options: WorkloadOptions, seed: u64) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let next_value = Arc::new(AtomicI64::new(1));
        let mux = options.stream.then(|| StreamMux::start(servers.clone(), options.security.clone()));
        let (gates, receivers): (Vec<_>, Vec<_>) =
            (0..options.clients).map(|_| watch::channel(false)).unzip();
        let tasks = receivers
            .into_iter()
            .zip(0..)
            .map(|(gate, index)| {
                let session = Session {
                    index,
                    servers: servers.clone(),
                    history: history.clone(),
                    options: options.clone(),
                    next_value: next_value.clone(),
                    stop: stop.clone(),
                    rng: SplitMix64::new(seed ^ 0xC11E_0000 ^ (index << 48)),
                    mux: mux.clone(),
                    gate,
                };
                tokio::spawn(session.run())
            })
            .collect();
        Workload { stop, tasks, pauser: SessionPauser { gates: Arc::new(gates) } }
    }

    /// What freezes and releases the sessions.
    pub fn pauser(&self) -> SessionPauser {
        self.pauser.clone()
    }

    /// Releases frozen sessions, stops every session after its current operation and waits
    /// for them.
    pub async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.pauser.resume_all();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// The client options every session uses, with `security` and `timeout` per operation.
pub fn client_options(security: &ClientSecurity, timeout: Duration) -> ClientOptions {
    ClientOptions {
        security: security.clone(),
        attempt_timeout: timeout.min(Duration::from_millis(1000)),
        deadline: timeout,
        connect_timeout: Duration::from_millis(300),
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(200),
        ..ClientOptions::default()
    }
}

struct Session {
    index: u64,
    servers: Vec<String>,
    history: History,
    options: WorkloadOptions,
    next_value: Arc<AtomicI64>,
    stop: Arc<AtomicBool>,
    rng: SplitMix64,
    mux: Option<StreamMux>,
    /// `true` while the session is frozen.
    gate: watch::Receiver<bool>,
}

impl Session {
    /// A new connection for a new process: its own client, or over the shared stream its
    /// own client id (random) with sequences from 1.
    fn connect(&mut self) -> Connection {
        match &self.mux {
            Some(mux) => Connection::Stream {
                mux: mux.clone(),
                timeout: self.options.operation_timeout,
                session: self.rng.next_u64() | 1,
                sequence: 0,
            },
            None => Connection::Unary(Box::new(
                Client::new(
                    self.servers.clone(),
                    client_options(&self.options.security, self.options.operation_timeout),
                )
                .expect("the cluster's addresses are valid"),
            )),
        }
    }

    async fn run(mut self) {
        let mut process = self.index;
        let mut connection = self.connect();
        // What this session last learned each key holds: cas mostly expects it.
        let mut known: HashMap<String, Option<i64>> = HashMap::new();
        while !self.stop.load(Ordering::Relaxed) {
            let key = format!("k{}", self.rng.below(self.options.keys));
            let roll = self.rng.below(100);
            let unknown = if roll < 40 {
                let value = self.next_value.fetch_add(1, Ordering::Relaxed);
                let pending = self.history.invoke(process, Function::Put, &key, value, json!(value));
                match gated(&mut self.gate, connection.put(&key, value)).await {
                    Ok(()) => {
                        self.history.complete(pending, Outcome::Ok, json!(value), None);
                        known.insert(key, Some(value));
                        false
                    }
                    Err(failed) => self.write_failed(pending, failed),
                }
            } else if roll < 75 {
                let pending = self.history.invoke(process, Function::Get, &key, 0, Value::Null);
                match gated(&mut self.gate, connection.get(&key, self.options.fast_reads)).await {
                    Ok(read) => {
                        self.history.complete(pending, Outcome::Ok, json!(read), read);
                        known.insert(key, read);
                    }
                    // A read that fails had no effect.
                    Err(_) => self.history.complete(pending, Outcome::Fail, Value::Null, None),
                }
                false
            } else {
                let expected = match known.get(&key) {
                    Some(&value) if self.rng.below(100) < 85 => value,
                    _ => None,
                };
                let value = self.next_value.fetch_add(1, Ordering::Relaxed);
                let pair = json!([expected, value]);
                let pending = self.history.invoke(process, Function::Cas, &key, value, pair.clone());
                match gated(&mut self.gate, connection.cas(&key, expected, value)).await {
                    Ok(Cas::Swapped) => {
                        self.history.complete(pending, Outcome::Ok, pair, Some(1));
                        known.insert(key, Some(value));
                        false
                    }
                    Ok(Cas::Holds(current)) => {
                        self.history.complete(pending, Outcome::Ok, json!(false), Some(0));
                        known.insert(key, current);
                        false
                    }
                    Err(failed) => self.write_failed(pending, failed),
                }
            };
            if unknown {
                // A new process with a new session: the old one's write may still land.
                process += self.options.clients;
                connection = self.connect();
                known.clear();
            }
            let think = self.rng.below(self.options.think_ms_max + 1);
            tokio::time::sleep(Duration::from_millis(think)).await;
        }
    }

    /// Records a write that did not succeed; returns whether its outcome is unknown.
    fn write_failed(&self, pending: Pending, failed: Failed) -> bool {
        match failed {
            Failed::NoEffect => {
                self.history.complete(pending, Outcome::Fail, Value::Null, None);
                false
            }
            Failed::Unknown => {
                self.history.complete(pending, Outcome::Info, Value::Null, None);
                true
            }
        }
    }
}

/// How a session reaches the ring.
enum Connection {
    /// One unary call per operation, through a client of its own (which retries).
    Unary(Box<Client>),
    /// The shared stream, without retries; writes carry this session's client id and the
    /// next sequence.
    Stream { mux: StreamMux, timeout: Duration, session: u64, sequence: u64 },
}

/// An operation that did not succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failed {
    /// It certainly did not take effect.
    NoEffect,
    /// It may take effect at any time, or never.
    Unknown,
}

/// What a cas did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cas {
    /// It swapped.
    Swapped,
    /// It did not swap: the key held this.
    Holds(Option<i64>),
}

impl Connection {
    async fn put(&mut self, key: &str, value: i64) -> Result<(), Failed> {
        match self {
            Connection::Unary(client) => {
                client.put(key, value.to_string()).await.map(drop).map_err(unary_failed)
            }
            Connection::Stream { mux, timeout, session, sequence } => {
                *sequence += 1;
                let put = pb::PutRequest {
                    id: Some(pb::WriteId { client: *session, sequence: *sequence }),
                    key: key.to_owned(),
                    value: value.to_string().into(),
                };
                match mux.call(pb::op::Op::Put(put), *timeout).await {
                    Ok(pb::op_result::Result::Put(_)) => Ok(()),
                    other => Err(stream_write_failed(other)),
                }
            }
        }
    }

    /// Reads `key` (with a fast read from any replica when `fast`); `None` for a missing key.
    async fn get(&mut self, key: &str, fast: bool) -> Result<Option<i64>, Failed> {
        let read = match self {
            Connection::Unary(client) if fast => client.get_fast(key, Some(0)).await,
            Connection::Unary(client) => client.get(key).await,
            Connection::Stream { mux, timeout, .. } => {
                let get = pb::GetRequest { key: key.to_owned(), fast, min_slot: 0, ..Default::default() };
                return match mux.call(pb::op::Op::Get(get), *timeout).await {
                    Ok(pb::op_result::Result::Get(get)) => {
                        Ok(get.found.then(|| parse_value(key, &get.value)))
                    }
                    Ok(_) => Err(Failed::Unknown),
                    Err(failed) => Err(stream_failed(&failed)),
                };
            }
        };
        read.map(|read| read.map(|bytes| parse_value(key, &bytes))).map_err(unary_failed)
    }

    /// Sets `key` to `value` if it holds `expected` (`None`: if it is missing).
    async fn cas(&mut self, key: &str, expected: Option<i64>, value: i64) -> Result<Cas, Failed> {
        match self {
            Connection::Unary(client) => {
                let expected = expected.map(|e| bytes::Bytes::from(e.to_string()));
                let result = client.cas(key, expected, value.to_string()).await.map_err(unary_failed)?;
                Ok(if result.swapped {
                    Cas::Swapped
                } else {
                    Cas::Holds(result.current.map(|bytes| parse_value(key, &bytes)))
                })
            }
            Connection::Stream { mux, timeout, session, sequence } => {
                *sequence += 1;
                let cas = pb::CasRequest {
                    id: Some(pb::WriteId { client: *session, sequence: *sequence }),
                    key: key.to_owned(),
                    expected_present: expected.is_some(),
                    expected: expected.map(|e| e.to_string().into()).unwrap_or_default(),
                    value: value.to_string().into(),
                };
                match mux.call(pb::op::Op::Cas(cas), *timeout).await {
                    Ok(pb::op_result::Result::Cas(result)) if result.swapped => Ok(Cas::Swapped),
                    Ok(pb::op_result::Result::Cas(result)) => {
                        Ok(Cas::Holds(result.present.then(|| parse_value(key, &result.current))))
                    }
                    other => Err(stream_write_failed(other)),
                }
            }
        }
    }
}

/// A unary call's error: only a request refused as malformed (or an address that is not
/// one) certainly did not take effect; the client may have retried anything else.
fn unary_failed(error: ClientError) -> Failed {
    match error {
        ClientError::InvalidArgument(_) | ClientError::InvalidAddress { .. } => Failed::NoEffect,
        _ => Failed::Unknown,
    }
}

fn stream_failed(failed: &OpFailed) -> Failed {
    if failed.no_effect {
        Failed::NoEffect
    } else {
        Failed::Unknown
    }
}

/// A write over the stream that was not answered as that write.
fn stream_write_failed(result: OpResult) -> Failed {
    match result {
        Ok(other) => panic!("a write was answered as another operation: {other:?}"),
        Err(failed) => stream_failed(&failed),
    }
}

/// A stored value as the integer it was written as; a value that is not one (which no
/// client writes) becomes -1, a value nothing wrote, so the checker reports the read.
pub fn parse_value(key: &str, bytes: &[u8]) -> i64 {
    match std::str::from_utf8(bytes).ok().and_then(|text| text.parse::<i64>().ok()) {
        Some(value) if value > 0 => value,
        _ => {
            eprintln!("fault: {key} holds {bytes:?}, which no client wrote");
            -1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_frozen_operation_is_not_polled_until_released() {
        let (sender, receivers): (Vec<_>, Vec<_>) = (0..2).map(|_| watch::channel(false)).unzip();
        let pauser = SessionPauser { gates: Arc::new(sender) };
        let mut gate = receivers.into_iter().next().unwrap();
        let polled = Arc::new(AtomicI64::new(0));
        let counter = polled.clone();
        let operation = std::future::poll_fn(move |context| {
            counter.fetch_add(1, Ordering::Relaxed);
            context.waker().wake_by_ref();
            if counter.load(Ordering::Relaxed) > 1000 {
                std::task::Poll::Ready(7)
            } else {
                std::task::Poll::Pending
            }
        });
        pauser.pause(0);
        assert_eq!(pauser.paused(), [0]);
        let task = tokio::spawn(async move { gated(&mut gate, operation).await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(polled.load(Ordering::Relaxed), 0, "a frozen operation is never polled");
        pauser.resume_all();
        assert!(pauser.paused().is_empty());
        assert_eq!(task.await.unwrap(), 7);
        assert!(polled.load(Ordering::Relaxed) > 1000);
    }

    #[test]
    fn values_are_positive_decimal_integers() {
        assert_eq!(parse_value("k", b"42"), 42);
        assert_eq!(parse_value("k", b"x"), -1);
        assert_eq!(parse_value("k", b"0"), -1);
    }
}
