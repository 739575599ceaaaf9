//! The clients of a fault run: concurrent sessions doing put, get and cas on a few keys,
//! every operation recorded in the [`History`].
//!
//! Values are integers, unique per write across the run, stored as decimal text. How an
//! error is recorded: a write refused as malformed (`InvalidArgument`) certainly did not
//! happen (`fail`); any other write error may hide an attempt that took effect (the client
//! retries, and a timed-out attempt can still be chosen), so it is `info`, and the session
//! is replaced by a new process with a new client id (a process never invokes again after
//! an `info`). A read that fails had no effect: `fail`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rsl_core::SplitMix64;
use rsl_kv::{Client, ClientError, ClientOptions};
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use crate::fault::history::{Function, History, Outcome};
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
}

/// Running clients; [`Workload::stop`] ends them.
#[derive(Debug)]
pub struct Workload {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Workload {
    /// Starts `options.clients` sessions against `servers`.
    pub fn start(servers: Vec<String>, history: History, options: WorkloadOptions, seed: u64) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let next_value = Arc::new(AtomicI64::new(1));
        let mux = options.stream.then(|| StreamMux::start(servers.clone()));
        let tasks = (0..options.clients)
            .map(|index| {
                let session = Session {
                    index,
                    servers: servers.clone(),
                    history: history.clone(),
                    options: options.clone(),
                    next_value: next_value.clone(),
                    stop: stop.clone(),
                    rng: SplitMix64::new(seed ^ 0xC11E_0000 ^ (index << 48)),
                    mux: mux.clone(),
                };
                tokio::spawn(session.run())
            })
            .collect();
        Workload { stop, tasks }
    }

    /// Stops every session after its current operation and waits for them.
    pub async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// The client options every session uses, with `timeout` per operation.
pub fn client_options(timeout: Duration) -> ClientOptions {
    ClientOptions {
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
}

impl Session {
    fn client(&self) -> Client {
        Client::new(self.servers.clone(), client_options(self.options.operation_timeout))
            .expect("the cluster's addresses are valid")
    }

    async fn run(self) {
        match self.mux.clone() {
            Some(mux) => self.run_stream(mux).await,
            None => self.run_unary().await,
        }
    }

    async fn run_unary(mut self) {
        let mut process = self.index;
        let mut client = self.client();
        // What this session last learned each key holds: cas mostly expects it.
        let mut known: HashMap<String, Option<i64>> = HashMap::new();
        while !self.stop.load(Ordering::Relaxed) {
            let key = format!("k{}", self.rng.below(self.options.keys));
            let roll = self.rng.below(100);
            let unknown = if roll < 40 {
                let value = self.next_value.fetch_add(1, Ordering::Relaxed);
                let pending = self.history.invoke(process, Function::Put, &key, value, json!(value));
                match client.put(&key, value.to_string()).await {
                    Ok(_) => {
                        self.history.complete(pending, Outcome::Ok, json!(value), None);
                        known.insert(key, Some(value));
                        false
                    }
                    Err(error) => self.write_failed(pending, &error),
                }
            } else if roll < 75 {
                let pending = self.history.invoke(process, Function::Get, &key, 0, Value::Null);
                let read = if self.options.fast_reads {
                    client.get_fast(&key, Some(0)).await
                } else {
                    client.get(&key).await
                };
                match read {
                    Ok(read) => {
                        let read = read.map(|bytes| parse_value(&key, &bytes));
                        self.history.complete(pending, Outcome::Ok, json!(read), read);
                        known.insert(key, read);
                    }
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
                let expected_bytes = expected.map(|e| bytes::Bytes::from(e.to_string()));
                match client.cas(&key, expected_bytes, value.to_string()).await {
                    Ok(result) if result.swapped => {
                        self.history.complete(pending, Outcome::Ok, pair, Some(1));
                        known.insert(key, Some(value));
                        false
                    }
                    Ok(result) => {
                        self.history.complete(pending, Outcome::Ok, json!(false), Some(0));
                        known.insert(key.clone(), result.current.map(|bytes| parse_value(&key, &bytes)));
                        false
                    }
                    Err(error) => self.write_failed(pending, &error),
                }
            };
            if unknown {
                // A new process with a new session: the old one's write may still land.
                process += self.options.clients;
                client = self.client();
                known.clear();
            }
            let think = self.rng.below(self.options.think_ms_max + 1);
            tokio::time::sleep(Duration::from_millis(think)).await;
        }
    }

    /// The same mix of operations over the shared stream. Each process writes as its own
    /// session (a random client id, sequences from 1); nothing is retried.
    async fn run_stream(mut self, mux: StreamMux) {
        let timeout = self.options.operation_timeout;
        let mut process = self.index;
        let mut session = self.rng.next_u64() | 1;
        let mut sequence = 0u64;
        let mut known: HashMap<String, Option<i64>> = HashMap::new();
        while !self.stop.load(Ordering::Relaxed) {
            let key = format!("k{}", self.rng.below(self.options.keys));
            let roll = self.rng.below(100);
            let unknown = if roll < 40 {
                let value = self.next_value.fetch_add(1, Ordering::Relaxed);
                sequence += 1;
                let pending = self.history.invoke(process, Function::Put, &key, value, json!(value));
                let put = pb::PutRequest {
                    id: Some(pb::WriteId { client: session, sequence }),
                    key: key.clone(),
                    value: value.to_string().into(),
                };
                match mux.call(pb::op::Op::Put(put), timeout).await {
                    Ok(pb::op_result::Result::Put(_)) => {
                        self.history.complete(pending, Outcome::Ok, json!(value), None);
                        known.insert(key, Some(value));
                        false
                    }
                    other => self.stream_write_failed(pending, other),
                }
            } else if roll < 75 {
                let pending = self.history.invoke(process, Function::Get, &key, 0, Value::Null);
                let get = pb::GetRequest { key: key.clone(), fast: self.options.fast_reads, min_slot: 0 };
                match mux.call(pb::op::Op::Get(get), timeout).await {
                    Ok(pb::op_result::Result::Get(get)) => {
                        let read = get.found.then(|| parse_value(&key, &get.value));
                        self.history.complete(pending, Outcome::Ok, json!(read), read);
                        known.insert(key, read);
                    }
                    _ => self.history.complete(pending, Outcome::Fail, Value::Null, None),
                }
                false
            } else {
                let expected = match known.get(&key) {
                    Some(&value) if self.rng.below(100) < 85 => value,
                    _ => None,
                };
                let value = self.next_value.fetch_add(1, Ordering::Relaxed);
                sequence += 1;
                let pair = json!([expected, value]);
                let pending = self.history.invoke(process, Function::Cas, &key, value, pair.clone());
                let cas = pb::CasRequest {
                    id: Some(pb::WriteId { client: session, sequence }),
                    key: key.clone(),
                    expected_present: expected.is_some(),
                    expected: expected.map(|e| e.to_string().into()).unwrap_or_default(),
                    value: value.to_string().into(),
                };
                match mux.call(pb::op::Op::Cas(cas), timeout).await {
                    Ok(pb::op_result::Result::Cas(result)) if result.swapped => {
                        self.history.complete(pending, Outcome::Ok, pair, Some(1));
                        known.insert(key, Some(value));
                        false
                    }
                    Ok(pb::op_result::Result::Cas(result)) => {
                        self.history.complete(pending, Outcome::Ok, json!(false), Some(0));
                        let current = result.present.then(|| parse_value(&key, &result.current));
                        known.insert(key, current);
                        false
                    }
                    other => self.stream_write_failed(pending, other),
                }
            };
            if unknown {
                process += self.options.clients;
                session = self.rng.next_u64() | 1;
                sequence = 0;
                known.clear();
            }
            let think = self.rng.below(self.options.think_ms_max + 1);
            tokio::time::sleep(Duration::from_millis(think)).await;
        }
    }

    /// Records a write over the stream that did not succeed; returns whether its outcome
    /// is unknown.
    fn stream_write_failed(&self, pending: crate::fault::history::Pending, result: OpResult) -> bool {
        match result {
            Err(OpFailed { no_effect: true, .. }) => {
                self.history.complete(pending, Outcome::Fail, Value::Null, None);
                false
            }
            Ok(other) => panic!("a write was answered as another operation: {other:?}"),
            Err(_) => {
                self.history.complete(pending, Outcome::Info, Value::Null, None);
                true
            }
        }
    }

    /// Records a failed write; returns whether its outcome is unknown.
    fn write_failed(&self, pending: crate::fault::history::Pending, error: &ClientError) -> bool {
        match error {
            ClientError::InvalidArgument(_) | ClientError::InvalidAddress { .. } => {
                self.history.complete(pending, Outcome::Fail, Value::Null, None);
                false
            }
            _ => {
                self.history.complete(pending, Outcome::Info, Value::Null, None);
                true
            }
        }
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

    #[test]
    fn values_are_positive_decimal_integers() {
        assert_eq!(parse_value("k", b"42"), 42);
        assert_eq!(parse_value("k", b"x"), -1);
        assert_eq!(parse_value("k", b"0"), -1);
    }
}
