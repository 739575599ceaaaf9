//! [`Client`]: talks to a key-value ring, following the primary and retrying within bounds.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::Endpoint;
use tonic::{Code, Status};

use crate::command::{encode_write_batch, Write, WriteId, WriteOutcome, WriteResponse, WriteResponseRef};
use crate::connection::{self, ClientSecurity, KvChannel};
use crate::proto as pb;
use crate::proto::kv_client::KvClient;
use crate::{PRIMARY_ADDRESS_METADATA, PRIMARY_NODE_METADATA, RING_CLOSED_METADATA};
use rsl::ReadConsistency;

/// How a [`Client`] times and bounds its attempts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    /// Longest wait for one attempt (one call to one server).
    pub attempt_timeout: Duration,
    /// Longest time one operation may take, retries included.
    pub deadline: Duration,
    /// Most attempts per operation.
    pub attempts_max: u32,
    /// Longest wait to establish a connection.
    pub connect_timeout: Duration,
    /// First pause before retrying after a transient failure; doubles up to `backoff_max`.
    pub backoff_initial: Duration,
    /// Longest pause between attempts.
    pub backoff_max: Duration,
    /// TLS and the bearer token (default: plaintext, no token).
    pub security: ClientSecurity,
    /// How [`Client::write_batch`] (and the load generator's stream) sends a batch of
    /// writes (default: [`Wire::Batch`], the batch encoded whole).
    pub wire: Wire,
}

/// How writes sent together travel on the `Stream` RPC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Wire {
    /// One encoded [`WriteBatch`](crate::command::WriteBatch) per message
    /// (`OpBatch.write_batch`): the server checks it in place and replicates that very
    /// buffer; the answers come back as one encoded list, read in place.
    #[default]
    Batch,
    /// One protobuf operation per write (`OpBatch.ops`), which the server decodes, checks
    /// and packs into write batches itself; one protobuf result per write. What servers
    /// before the encoded batch understood.
    PerOp,
}

impl std::str::FromStr for Wire {
    type Err = String;

    fn from_str(text: &str) -> Result<Wire, String> {
        crate::config::parse_choice("wire", text, &[Wire::Batch, Wire::PerOp])
    }
}

impl std::fmt::Display for Wire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Wire::Batch => "batch",
            Wire::PerOp => "per-op",
        })
    }
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            attempt_timeout: Duration::from_secs(3),
            deadline: Duration::from_secs(15),
            attempts_max: 60,
            connect_timeout: Duration::from_secs(1),
            backoff_initial: Duration::from_millis(20),
            backoff_max: Duration::from_millis(500),
            security: ClientSecurity::default(),
            wire: Wire::default(),
        }
    }
}

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No servers, or a server address that is not `host:port`.
    #[error("invalid server address {address:?}: {problem}")]
    InvalidAddress {
        /// The address.
        address: String,
        /// What is wrong.
        problem: String,
    },
    /// The TLS material cannot be read or used, or this build has no TLS.
    #[error("TLS: {0}")]
    Tls(String),
    /// The bearer token cannot be sent.
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// The server refused the request as malformed; retrying cannot help.
    #[error("request refused: {0}")]
    InvalidArgument(String),
    /// The write's sequence number is older than this client's newest executed write
    /// (another process shares the client id?). It was not executed.
    #[error("write refused as stale: {0}")]
    Stale(String),
    /// A server answered an error that retrying cannot fix (`Unauthenticated`: no or wrong
    /// credentials; `PermissionDenied`: the user's role does not allow the request).
    #[error("{server} failed the request: {code:?}: {message}")]
    Server {
        /// The server.
        server: String,
        /// The gRPC status code.
        code: Code,
        /// The status message.
        message: String,
    },
    /// The ring is closed: its last write was chosen at `last_slot`, and it takes no more
    /// writes, ever (reads still work). The write did not take effect.
    #[error("the ring is closed: its last write was chosen at slot {last_slot}")]
    RingClosed {
        /// The slot of the ring's last write.
        last_slot: u64,
    },
    /// Every attempt failed with a transient error, or the deadline passed. A write may or
    /// may not have taken effect.
    #[error("gave up after {attempts} attempts in {elapsed_ms} ms; last error: {last}")]
    Exhausted {
        /// Attempts made.
        attempts: u32,
        /// Time spent.
        elapsed_ms: u64,
        /// The last failure.
        last: String,
    },
}

/// The result of a compare-and-set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CasResult {
    /// The slot the operation was executed in.
    pub slot: u64,
    /// Whether the key held the expected value and now holds the new one.
    pub swapped: bool,
    /// The key's value after the operation.
    pub current: Option<Bytes>,
}

/// One write of a batch sent with [`Client::write_batch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchWrite {
    /// Sets `key` to `value`.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: Bytes,
    },
    /// Removes `key`.
    Delete {
        /// The key.
        key: String,
    },
    /// Sets `key` to `value` if it holds `expected` (`None`: if it is absent).
    Cas {
        /// The key.
        key: String,
        /// The value the key must hold.
        expected: Option<Bytes>,
        /// The new value.
        value: Bytes,
    },
}

impl BatchWrite {
    /// The write with its de-duplication id.
    fn with_id(&self, id: WriteId) -> Write {
        match self {
            BatchWrite::Put { key, value } => Write::Put { id, key: key.clone(), value: value.clone() },
            BatchWrite::Delete { key } => Write::Delete { id, key: key.clone() },
            BatchWrite::Cas { key, expected, value } => {
                Write::Cas { id, key: key.clone(), expected: expected.clone(), value: value.clone() }
            }
        }
    }
}

/// A client session of a key-value ring.
///
/// Give it some (or all) servers' client addresses; it finds the primary by following the
/// `NotPrimary` redirects servers answer with, remembers it, and moves on when it fails.
/// Transient failures (unreachable server, election in progress, busy primary, timeout)
/// are retried with exponential backoff, bounded by [`ClientOptions::attempts_max`] and
/// [`ClientOptions::deadline`]; refusals that retrying cannot fix are returned at once.
///
/// Every write carries the session's random client id and the next sequence number, and a
/// retry reuses them, so the state machine executes each write at most once even when an
/// answer was lost. That is why writes take `&mut self`: a session has one write in flight.
/// For concurrency, use one `Client` per task.
#[derive(Debug)]
pub struct Client {
    servers: Vec<String>,
    channels: HashMap<String, KvClient<KvChannel>>,
    /// The server believed primary.
    primary: Option<String>,
    /// Next server to try when no primary is known.
    next: usize,
    client_id: u64,
    sequence: u64,
    /// The highest slot this session wrote or read at: its fast reads wait for it.
    last_slot: u64,
    /// The write sessions of [`Client::write_batch`]: the `i`th write of a batch is the
    /// next write of session `i` (client id, last sequence), so every write of a batch
    /// keeps one write in flight per session and a retried batch executes each at most once.
    lanes: Vec<(u64, u64)>,
    options: ClientOptions,
}

/// Which servers an operation may run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// Writes and linearizable reads.
    Primary,
    /// Fast reads and read-index reads.
    Any,
}

impl Client {
    /// A client of the ring whose servers listen at `servers` (`host:port`, at least one).
    /// Connections are made on first use.
    pub fn new(
        servers: impl IntoIterator<Item = impl Into<String>>,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        let servers: Vec<String> = servers.into_iter().map(Into::into).map(|s| s.trim().to_owned()).collect();
        if servers.is_empty() {
            return Err(ClientError::InvalidAddress {
                address: String::new(),
                problem: "no servers given".into(),
            });
        }
        let mut client = Client {
            servers: Vec::new(),
            channels: HashMap::new(),
            primary: None,
            next: 0,
            client_id: rsl::runtime::entropy() | 1,
            sequence: 0,
            last_slot: 0,
            lanes: Vec::new(),
            options,
        };
        for server in servers {
            endpoint(&server, &client.options)?;
            if !client.servers.contains(&server) {
                client.servers.push(server);
            }
        }
        Ok(client)
    }

    /// This session's client id (random, non-zero).
    pub fn client_id(&self) -> u64 {
        self.client_id
    }

    /// The server this client believes is primary.
    pub fn primary(&self) -> Option<&str> {
        self.primary.as_deref()
    }

    /// The highest slot this session has written or observed.
    pub fn last_slot(&self) -> u64 {
        self.last_slot
    }

    /// The connection to `server`, made on first use (within the tokio runtime).
    fn channel(&mut self, server: &str) -> Result<KvClient<KvChannel>, ClientError> {
        if let Some(client) = self.channels.get(server) {
            return Ok(client.clone());
        }
        let client = connect_lazy(server, &self.options)?;
        self.channels.insert(server.to_owned(), client.clone());
        Ok(client)
    }

    fn next_id(&mut self) -> pb::WriteId {
        self.sequence += 1;
        pb::WriteId { client: self.client_id, sequence: self.sequence }
    }

    fn saw_slot(&mut self, slot: u64) {
        self.last_slot = self.last_slot.max(slot);
    }

    /// Sets `key` to `value`; returns the slot of the write.
    pub async fn put(&mut self, key: &str, value: impl Into<Bytes>) -> Result<u64, ClientError> {
        let request = pb::PutRequest { id: Some(self.next_id()), key: key.to_owned(), value: value.into() };
        let response = self
            .call(Target::Primary, request, |mut client, request| async move { client.put(request).await })
            .await?;
        self.saw_slot(response.slot);
        Ok(response.slot)
    }

    /// Removes `key`; returns whether it existed.
    pub async fn delete(&mut self, key: &str) -> Result<bool, ClientError> {
        let request = pb::DeleteRequest { id: Some(self.next_id()), key: key.to_owned() };
        let response = self
            .call(Target::Primary, request, |mut client, request| async move { client.delete(request).await })
            .await?;
        self.saw_slot(response.slot);
        Ok(response.existed)
    }

    /// Sets `key` to `value` if it holds `expected` (`None`: if it is absent).
    pub async fn cas(
        &mut self,
        key: &str,
        expected: Option<Bytes>,
        value: impl Into<Bytes>,
    ) -> Result<CasResult, ClientError> {
        let request = pb::CasRequest {
            id: Some(self.next_id()),
            key: key.to_owned(),
            expected_present: expected.is_some(),
            expected: expected.unwrap_or_default(),
            value: value.into(),
        };
        let response = self
            .call(Target::Primary, request, |mut client, request| async move { client.cas(request).await })
            .await?;
        self.saw_slot(response.slot);
        Ok(CasResult {
            slot: response.slot,
            swapped: response.swapped,
            current: response.present.then_some(response.current),
        })
    }

    /// Sends `writes` together on the `Stream` RPC, the way [`ClientOptions::wire`] says,
    /// and returns their answers in order. With [`Wire::Batch`] they travel as one encoded
    /// write batch that the servers replicate as it is and execute in order in one slot,
    /// and the answers come back as one encoded list, read in place; with
    /// [`Wire::PerOp`], as one protobuf operation each (in order, in one slot as long as
    /// they fit one consensus batch). The `i`th write of every batch belongs to a write
    /// session of its own, so a batch retried after a lost answer executes each write at
    /// most once. A write refused as malformed fails the whole batch before anything
    /// executes ([`ClientError::InvalidArgument`], naming the write); a stale one fails
    /// the call with [`ClientError::Stale`].
    pub async fn write_batch(&mut self, writes: &[BatchWrite]) -> Result<Vec<WriteResponse>, ClientError> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        while self.lanes.len() < writes.len() {
            self.lanes.push((rsl::runtime::entropy() | 1, 0));
        }
        let writes: Vec<Write> = writes
            .iter()
            .zip(&mut self.lanes)
            .map(|(write, (client, sequence))| {
                *sequence += 1;
                write.with_id(WriteId { client: *client, sequence: *sequence })
            })
            .collect();
        // Checked here whichever the wire, so that a bad write refuses its batch before
        // anything of it is sent.
        let encoded =
            encode_write_batch(&writes).map_err(|error| ClientError::InvalidArgument(error.to_string()))?;
        let message = match self.options.wire {
            Wire::Batch => pb::OpBatch { write_batch: encoded, write_batch_id: 1, ..pb::OpBatch::default() },
            Wire::PerOp => {
                pb::OpBatch { ops: writes.iter().zip(0..).map(per_op).collect(), ..pb::OpBatch::default() }
            }
        };
        let count = writes.len();
        let responses = self
            .call(Target::Primary, message, move |mut client, message| async move {
                let mut answers = client.stream(futures_util::stream::iter([message])).await?.into_inner();
                let answer = answers
                    .message()
                    .await?
                    .ok_or_else(|| Status::unavailable("the server closed the stream without an answer"))?;
                batch_answers(answer, count).map(tonic::Response::new)
            })
            .await?;
        for (index, response) in responses.iter().enumerate() {
            match &response.outcome {
                WriteOutcome::Stale { newest } => {
                    return Err(ClientError::Stale(format!(
                        "write {index} of the batch is older than its session's newest write {newest}"
                    )))
                }
                WriteOutcome::Malformed { reason } => {
                    return Err(ClientError::InvalidArgument(format!("write {index} of the batch: {reason}")))
                }
                _ => self.saw_slot(response.slot),
            }
        }
        Ok(responses)
    }

    /// The value of `key`, linearizably, on the primary (under its lease, or through a
    /// read index when it has none).
    pub async fn get(&mut self, key: &str) -> Result<Option<Bytes>, ClientError> {
        self.get_with(key, ReadConsistency::LeaseOrReadIndex).await
    }

    /// The value of `key`, linearizably, the way `consistency` says (the server's
    /// [`rsl::Ring::read_with`]). With [`ReadConsistency::ReadIndex`] any server answers:
    /// the first of those given to [`Client::new`] that is up, a secondary included (it
    /// asks the primary for the read index and serves the get itself); the others go to
    /// the primary.
    pub async fn get_with(
        &mut self,
        key: &str,
        consistency: ReadConsistency,
    ) -> Result<Option<Bytes>, ClientError> {
        let (target, consistency) = match consistency {
            ReadConsistency::LeaseOrReadIndex => (Target::Primary, pb::ReadConsistency::LeaseOrReadIndex),
            ReadConsistency::Lease => (Target::Primary, pb::ReadConsistency::Lease),
            ReadConsistency::ReadIndex => (Target::Any, pb::ReadConsistency::ReadIndex),
        };
        let request =
            pb::GetRequest { key: key.to_owned(), fast: false, min_slot: 0, consistency: consistency.into() };
        let response = self
            .call(target, request, |mut client, request| async move { client.get(request).await })
            .await?;
        Ok(response.found.then_some(response.value))
    }

    /// The value of `key` from any replica that applied at least `min_slot` (by default
    /// the highest slot this session wrote: read-your-writes). Not linearizable: another
    /// client's newer write may not be visible yet.
    pub async fn get_fast(&mut self, key: &str, min_slot: Option<u64>) -> Result<Option<Bytes>, ClientError> {
        let min_slot = min_slot.unwrap_or(self.last_slot);
        let request = pb::GetRequest { key: key.to_owned(), fast: true, min_slot, ..Default::default() };
        let response = self
            .call(Target::Any, request, |mut client, request| async move { client.get(request).await })
            .await?;
        Ok(response.found.then_some(response.value))
    }

    /// Changes the ring's members to `members` (node ids) through the primary; returns the
    /// new configuration once the change is chosen. Asking again for the members already in
    /// force succeeds at once, so a retry after an unknown outcome is safe.
    pub async fn reconfigure(&mut self, members: &[u64]) -> Result<pb::ReconfigureResponse, ClientError> {
        self.reconfigure_with(members, &[], Vec::new()).await
    }

    /// Changes the ring's members to `members` and its learners to `learners` through the
    /// primary, with `addresses` for new nodes; returns the new configuration once the
    /// change is chosen. A learner named among `members` is promoted once it caught up (the
    /// primary waits for it, bounded, then refuses with FAILED_PRECONDITION).
    pub async fn reconfigure_with(
        &mut self,
        members: &[u64],
        learners: &[u64],
        addresses: Vec<pb::Member>,
    ) -> Result<pb::ReconfigureResponse, ClientError> {
        let request =
            pb::ReconfigureRequest { members: members.to_vec(), learners: learners.to_vec(), addresses };
        self.call(
            Target::Primary,
            request,
            |mut client, request| async move { client.reconfigure(request).await },
        )
        .await
    }

    /// A backup of the ring's state (admin role): a snapshot file ([`crate::snapshot`])
    /// from the primary, verified (checksum, format, version, the state inside) before it
    /// is returned. [`ClientOptions::attempt_timeout`] bounds the primary's answer; the
    /// transfer then has until the deadline.
    pub async fn snapshot(&mut self) -> Result<(Vec<u8>, crate::snapshot::SnapshotInfo), ClientError> {
        let started = Instant::now();
        let mut chunks = self
            .call(Target::Primary, pb::SnapshotRequest {}, |mut client, request| async move {
                client.snapshot(request).await
            })
            .await?;
        let server = self.primary.clone().unwrap_or_default();
        let failed =
            |code: Code, message: String| ClientError::Server { server: server.clone(), code, message };
        let mut file = Vec::new();
        loop {
            let left = self.options.deadline.saturating_sub(started.elapsed());
            match tokio::time::timeout(left, chunks.message()).await {
                Ok(Ok(Some(chunk))) => file.extend_from_slice(&chunk.data),
                Ok(Ok(None)) => break,
                Ok(Err(status)) => return Err(failed(status.code(), status.message().to_owned())),
                Err(_) => {
                    return Err(failed(Code::DeadlineExceeded, "the snapshot did not arrive in time".into()))
                }
            }
        }
        let verified = crate::snapshot::verify(std::path::Path::new("the received snapshot"), &file)
            .map_err(|error| failed(Code::DataLoss, error.to_string()))?;
        Ok((file, verified.info))
    }

    /// The status of one server (any, not only those given to [`Client::new`]), in one
    /// attempt.
    pub async fn status_of(&mut self, server: &str) -> Result<pb::StatusResponse, ClientError> {
        let timeout = self.options.attempt_timeout;
        self.at(server, timeout, |mut client| async move { client.status(pb::StatusRequest {}).await }).await
    }

    /// Makes the replica at `server` primary now (RSL's AttemptPromotion), in one attempt
    /// bounded by the operation deadline; returns its node id. Needs the admin role.
    pub async fn promote(&mut self, server: &str) -> Result<u64, ClientError> {
        let timeout = self.options.deadline;
        let call =
            |mut client: KvClient<KvChannel>| async move { client.promote(pb::PromoteRequest {}).await };
        Ok(self.at(server, timeout, call).await?.node)
    }

    /// Changes the election and heartbeat timing of the replica at `server` until it
    /// restarts (RSL's ChangeElectionDelay), in one attempt. Needs the admin role.
    pub async fn change_timing(
        &mut self,
        server: &str,
        timing: pb::ChangeTimingRequest,
    ) -> Result<(), ClientError> {
        let timeout = self.options.attempt_timeout;
        let call = |mut client: KvClient<KvChannel>| async move { client.change_timing(timing).await };
        self.at(server, timeout, call).await.map(|_| ())
    }

    /// Replaces the state of the replica at `server` with node `from`'s newest checkpoint
    /// and replays its log from there (RSL's CopyStateFromReplica), in one attempt bounded
    /// by the operation deadline; returns the checkpoint's slot. Needs the admin role.
    pub async fn reseed(&mut self, server: &str, from: u64) -> Result<u64, ClientError> {
        let timeout = self.options.deadline;
        let call =
            |mut client: KvClient<KvChannel>| async move { client.reseed(pb::ReseedRequest { from }).await };
        Ok(self.at(server, timeout, call).await?.slot)
    }

    /// Sets `key` to `value` alone in a slot of its own (RSL's
    /// ReplicateRequestExclusiveVote); with `last`, as the last write the ring accepts
    /// (`isLastDecree`): later writes fail with [`ClientError::RingClosed`]. Returns the
    /// slot. Needs the admin role.
    pub async fn put_exclusive(
        &mut self,
        key: &str,
        value: impl Into<Bytes>,
        last: bool,
    ) -> Result<u64, ClientError> {
        let put = pb::PutRequest { id: Some(self.next_id()), key: key.to_owned(), value: value.into() };
        let request = pb::ExclusiveRequest { put: Some(put), last };
        let response =
            self.call(Target::Primary, request, |mut client, request| async move {
                client.exclusive(request).await
            })
            .await?;
        self.saw_slot(response.slot);
        Ok(response.slot)
    }

    /// One call to `server`, bounded by `timeout`; any error is returned as is.
    async fn at<T, F, Fut>(&mut self, server: &str, timeout: Duration, call: F) -> Result<T, ClientError>
    where
        F: FnOnce(KvClient<KvChannel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let client = self.channel(server)?;
        let status = match tokio::time::timeout(timeout, call(client)).await {
            Ok(Ok(response)) => return Ok(response.into_inner()),
            Ok(Err(status)) => status,
            Err(_) => Status::deadline_exceeded(format!("no answer within {} ms", timeout.as_millis())),
        };
        if let Some(last_slot) = ring_closed(&status) {
            return Err(ClientError::RingClosed { last_slot });
        }
        Err(ClientError::Server {
            server: server.to_owned(),
            code: status.code(),
            message: status.message().to_owned(),
        })
    }

    /// The status of every server given to [`Client::new`], in order.
    pub async fn statuses(&mut self) -> Vec<(String, Result<pb::StatusResponse, ClientError>)> {
        let mut out = Vec::new();
        for server in self.servers.clone() {
            let status = self.status_of(&server).await;
            out.push((server, status));
        }
        out
    }

    /// Runs `operation` with `request` against the right server until it succeeds, fails
    /// for good, or the attempts or the deadline run out (every attempt sends the same
    /// request, so a retried write keeps its id).
    async fn call<R, T, F, Fut>(&mut self, target: Target, request: R, operation: F) -> Result<T, ClientError>
    where
        R: Clone,
        F: Fn(KvClient<KvChannel>, R) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let started = Instant::now();
        let mut backoff = self.options.backoff_initial;
        let mut last = String::from("no attempt made");
        let mut attempts = 0;
        let mut redirected = false;
        while attempts < self.options.attempts_max.max(1) && started.elapsed() < self.options.deadline {
            attempts += 1;
            let server = match (target, &self.primary) {
                (Target::Primary, Some(primary)) => primary.clone(),
                _ => self.servers[self.next % self.servers.len()].clone(),
            };
            let client = self.channel(&server)?;
            let left = self.options.deadline.saturating_sub(started.elapsed());
            let outcome = tokio::time::timeout(
                self.options.attempt_timeout.min(left),
                operation(client, request.clone()),
            )
            .await;
            let status = match outcome {
                Ok(Ok(response)) => {
                    if target == Target::Primary {
                        self.primary = Some(server);
                    }
                    return Ok(response.into_inner());
                }
                Ok(Err(status)) => status,
                Err(_) => Status::deadline_exceeded(format!(
                    "no answer within {} ms",
                    self.options.attempt_timeout.min(left).as_millis()
                )),
            };
            last = format!("{server}: {:?}: {}", status.code(), status.message());
            if let Some(last_slot) = ring_closed(&status) {
                return Err(ClientError::RingClosed { last_slot });
            }
            match status.code() {
                Code::FailedPrecondition => {
                    // Not the primary: follow the redirect if there is one.
                    match redirect(&status) {
                        Some(primary) if primary != server => {
                            self.channel(&primary)?;
                            self.primary = Some(primary);
                            // Follow the first redirect at once; a chain of them means stale
                            // hints during an election, so pause as for any other failure.
                            if !redirected {
                                redirected = true;
                                continue;
                            }
                        }
                        _ => {
                            self.forget(&server);
                        }
                    }
                }
                Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
                    // Unreachable, stopping, not ready, or no answer in time: try elsewhere.
                    self.forget(&server);
                }
                Code::ResourceExhausted => {}
                Code::InvalidArgument | Code::OutOfRange => {
                    return Err(ClientError::InvalidArgument(status.message().to_owned()))
                }
                Code::Aborted => return Err(ClientError::Stale(status.message().to_owned())),
                code => {
                    return Err(ClientError::Server { server, code, message: status.message().to_owned() });
                }
            }
            redirected = false;
            let left = self.options.deadline.saturating_sub(started.elapsed());
            tokio::time::sleep(backoff.min(left)).await;
            backoff = (backoff * 2).min(self.options.backoff_max);
        }
        Err(ClientError::Exhausted { attempts, elapsed_ms: started.elapsed().as_millis() as u64, last })
    }

    /// `server` failed: stop treating it as primary and rotate to the next server.
    fn forget(&mut self, server: &str) {
        if self.primary.as_deref() == Some(server) {
            self.primary = None;
        }
        if self.servers.get(self.next % self.servers.len()).map(String::as_str) == Some(server) {
            self.next = self.next.wrapping_add(1);
        } else if let Some(at) = self.servers.iter().position(|s| s == server) {
            self.next = at + 1;
        }
    }
}

/// The gRPC endpoint of `server` (`host:port`, or a URI) with `options`' timeouts, TLS
/// and token.
fn endpoint(server: &str, options: &ClientOptions) -> Result<Endpoint, ClientError> {
    let endpoint = connection::endpoint(server, &options.security)?;
    Ok(endpoint.connect_timeout(options.connect_timeout).timeout(options.attempt_timeout).tcp_nodelay(true))
}

/// A `Kv` client of `server` as `options` say (timeouts, TLS, token) that connects on
/// first use: for calls the [`Client`] does not wrap, or to see a server's own answer.
pub fn connect_lazy(server: &str, options: &ClientOptions) -> Result<KvClient<KvChannel>, ClientError> {
    Ok(connection::kv_client(endpoint(server, options)?.connect_lazy(), &options.security))
}

/// A write of a batch as a stream operation, tagged with its position.
pub(crate) fn per_op((write, id): (&Write, u64)) -> pb::Op {
    let write_id = Some(pb::WriteId { client: write.id().client, sequence: write.id().sequence });
    let op = match write.clone() {
        Write::Put { key, value, .. } => pb::op::Op::Put(pb::PutRequest { id: write_id, key, value }),
        Write::Delete { key, .. } => pb::op::Op::Delete(pb::DeleteRequest { id: write_id, key }),
        Write::Cas { key, expected, value, .. } => pb::op::Op::Cas(pb::CasRequest {
            id: write_id,
            key,
            expected_present: expected.is_some(),
            expected: expected.unwrap_or_default(),
            value,
        }),
    };
    pb::Op { id, op: Some(op) }
}

/// The answers to a batch of `count` writes, from the stream's answer: the encoded list,
/// read in place, or the per-operation results in order. A failure of the whole batch
/// (or of any of its operations) is its status, so the caller redirects or retries the
/// batch as for a unary write.
fn batch_answers(answer: pb::ResultBatch, count: usize) -> Result<Vec<WriteResponse>, Status> {
    if let Some(error) = answer.write_batch_error {
        return Err(op_status(error));
    }
    if !answer.write_answers.is_empty() {
        let responses = WriteResponseRef::decode_batch(&answer.write_answers)
            .map_err(|error| Status::internal(format!("undecodable answer list: {error}")))?;
        if responses.len() != count {
            return Err(Status::internal(format!(
                "{} answers to a batch of {count} writes",
                responses.len()
            )));
        }
        return Ok(responses.iter().map(WriteResponseRef::to_response).collect());
    }
    let mut results = answer.results;
    results.sort_by_key(|result| result.id);
    if results.len() != count || results.iter().zip(0..).any(|(result, id)| result.id != id) {
        return Err(Status::internal(format!("{} results to a batch of {count} writes", results.len())));
    }
    results
        .into_iter()
        .map(|result| {
            let (slot, outcome) = match result.result {
                Some(pb::op_result::Result::Put(put)) => (put.slot, WriteOutcome::Put),
                Some(pb::op_result::Result::Delete(delete)) => {
                    (delete.slot, WriteOutcome::Deleted { existed: delete.existed })
                }
                Some(pb::op_result::Result::Cas(cas)) => {
                    let current = cas.present.then_some(cas.current);
                    (cas.slot, WriteOutcome::Cas { swapped: cas.swapped, current })
                }
                Some(pb::op_result::Result::Error(error)) => return Err(op_status(error)),
                Some(pb::op_result::Result::Get(_)) | None => {
                    return Err(Status::internal("a write answered with no write result"))
                }
            };
            Ok(WriteResponse { slot, outcome })
        })
        .collect()
}

/// The status a stream's error stands for, with the primary it names as metadata (as the
/// unary calls carry it).
fn op_status(error: pb::OpError) -> Status {
    let mut metadata = MetadataMap::new();
    if error.primary_node != 0 {
        metadata.insert(PRIMARY_NODE_METADATA, MetadataValue::from(error.primary_node));
    }
    if let Ok(address) = MetadataValue::try_from(error.primary_address.as_str()) {
        if !error.primary_address.is_empty() {
            metadata.insert(PRIMARY_ADDRESS_METADATA, address);
        }
    }
    Status::with_metadata(Code::from(error.code as i32), error.message, metadata)
}

/// The last slot of a closed ring, from a write's refusal.
fn ring_closed(status: &Status) -> Option<u64> {
    status.metadata().get(RING_CLOSED_METADATA)?.to_str().ok()?.parse().ok()
}

/// The primary's client address from a `NotPrimary` refusal.
fn redirect(status: &Status) -> Option<String> {
    let _node = status.metadata().get(PRIMARY_NODE_METADATA)?;
    let address = status.metadata().get(PRIMARY_ADDRESS_METADATA)?.to_str().ok()?;
    (!address.is_empty()).then(|| address.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked_up_front() {
        assert!(matches!(
            Client::new(Vec::<String>::new(), ClientOptions::default()),
            Err(ClientError::InvalidAddress { .. })
        ));
        let error = Client::new(["no-port"], ClientOptions::default()).unwrap_err();
        assert!(error.to_string().contains("no-port"), "{error}");
        let client =
            Client::new(["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:1"], ClientOptions::default()).unwrap();
        assert_eq!(client.servers.len(), 2);
        assert_ne!(client.client_id(), 0);
    }

    #[test]
    fn redirects_need_an_address() {
        let mut metadata = MetadataMap::new();
        metadata.insert(PRIMARY_NODE_METADATA, MetadataValue::from(2u64));
        let status = Status::with_metadata(Code::FailedPrecondition, "x", metadata.clone());
        assert_eq!(redirect(&status), None);
        metadata.insert(PRIMARY_ADDRESS_METADATA, MetadataValue::from_static("127.0.0.1:7102"));
        let status = Status::with_metadata(Code::FailedPrecondition, "x", metadata);
        assert_eq!(redirect(&status).as_deref(), Some("127.0.0.1:7102"));
    }

    #[tokio::test]
    async fn unreachable_servers_exhaust_the_bounded_retries() {
        // A port nothing listens on: bind one, learn it, close it.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        drop(listener);
        let options = ClientOptions {
            attempts_max: 3,
            deadline: Duration::from_secs(5),
            backoff_initial: Duration::from_millis(1),
            ..ClientOptions::default()
        };
        let mut client = Client::new([address], options).unwrap();
        match client.put("k", "v").await {
            Err(ClientError::Exhausted { attempts, .. }) => assert_eq!(attempts, 3),
            other => panic!("expected exhaustion, got {other:?}"),
        }
    }
}
