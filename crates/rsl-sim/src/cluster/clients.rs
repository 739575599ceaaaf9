//! Simulated clients: each runs one operation at a time (put, get, delete, compare-and-set;
//! reads through the log, under the primary's lease, or through a read index on the
//! primary or on a secondary), follows redirects, retries after timeouts, gives up after a
//! deadline, and records what it saw for the linearizability checker.

use rsl_core::{Mutation, NodeId, ProposeError, ReadError, ReadId, Request, RequestId, Slot, Time};

use super::{node_index, Event, Simulation, ATTEMPT_TIMEOUT_US, OP_TIMEOUT_US, QUIET_US, SETTLE_US};
use crate::checkers::Failure;
use crate::kv::{KvOp, KvResult};
use rsl_check as linearizability;

/// What the network carries to or from a client.
#[derive(Clone, Debug)]
pub(super) enum ClientRequest {
    Write(Request),
    LeaseRead { key: u8 },
    ReadIndexRead { key: u8 },
}

/// How a get is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ReadPath {
    /// Not a read without a slot: a write, or a get through the log.
    Log,
    /// Under the primary's lease.
    Lease,
    /// Through a read index (the primary confirms with a round of heartbeats).
    ReadIndex,
}

#[derive(Clone, Debug)]
pub(super) enum ClientReply {
    Ok(KvResult),
    Redirect(Option<NodeId>),
    Retry,
}

#[derive(Debug)]
pub(super) struct PendingOp {
    pub(super) op: KvOp,
    pub(super) read: ReadPath,
    pub(super) request: Request,
    pub(super) invoked_at: u64,
    pub(super) attempt: u64,
    pub(super) target: usize,
    pub(super) give_up_at: u64,
}

#[derive(Debug)]
pub(super) struct Client {
    pub(super) next_sequence: u64,
    pub(super) attempts: u64,
    pub(super) pending: Option<PendingOp>,
    pub(super) hint: usize,
}

impl Simulation {
    pub(super) fn start_op(&mut self, client: usize) {
        if self.now + QUIET_US >= self.run_end || self.clients[client].pending.is_some() {
            return;
        }
        let key = self.rng.between(0, self.options.keys as u64 - 1) as u8;
        let sequence = self.clients[client].next_sequence;
        self.clients[client].next_sequence += 1;
        let id = RequestId { client: client as u64 + 1, sequence };
        let (op, read) = if self.rng.chance(self.options.read_fraction) {
            let read = if self.rng.chance(self.options.log_read_fraction) {
                ReadPath::Log
            } else if self.rng.chance(self.options.read_index_fraction) {
                ReadPath::ReadIndex
            } else {
                ReadPath::Lease
            };
            (KvOp::Get { key }, read)
        } else if self.rng.chance(0.1) {
            (KvOp::Delete { key }, ReadPath::Log)
        } else {
            // Unique values make every read point at one write.
            let value = (client as i64 + 1) * 1_000_000_000 + sequence as i64;
            if self.rng.chance(self.options.cas_fraction) {
                let expected = self.last_written_guess(key);
                (KvOp::Cas { key, expected, new: value }, ReadPath::Log)
            } else {
                (KvOp::Put { key, value }, ReadPath::Log)
            }
        };
        let request = Request { id, payload: op.encode() };
        if read == ReadPath::Log {
            self.issued.insert(id, request.clone());
        }
        let target = if read == ReadPath::ReadIndex && self.rng.chance(0.5) {
            // Any replica: a secondary asks the primary for the index and reads locally.
            self.rng.index(self.nodes.len())
        } else {
            self.clients[client].hint
        };
        // Attempt numbers never repeat within a client, so a late reply to an earlier
        // operation cannot be taken for this one's.
        let attempt = self.clients[client].attempts;
        self.clients[client].pending = Some(PendingOp {
            op,
            read,
            request,
            invoked_at: self.now,
            attempt,
            target,
            give_up_at: self.now + OP_TIMEOUT_US,
        });
        self.send_attempt(client);
    }

    /// A value some client recently wrote to `key`, so compare-and-set sometimes succeeds.
    pub(super) fn last_written_guess(&mut self, key: u8) -> Option<i64> {
        let candidates: Vec<Option<i64>> = self
            .history
            .iter()
            .rev()
            .take(20)
            .filter(|o| o.key == key.to_string())
            .filter_map(|o| match (&o.input, &o.output) {
                (linearizability::Input::Put { value }, Some(_)) => Some(Some(*value)),
                (linearizability::Input::Get, Some(linearizability::Output::Get { value })) => Some(*value),
                _ => None,
            })
            .collect();
        if candidates.is_empty() {
            None
        } else {
            candidates[self.rng.index(candidates.len())]
        }
    }

    pub(super) fn send_attempt(&mut self, client: usize) {
        let state = &mut self.clients[client];
        let Some(op) = state.pending.as_mut() else { return };
        state.attempts += 1;
        op.attempt = state.attempts;
        let (attempt, target) = (op.attempt, op.target);
        let request = match op.read {
            ReadPath::Lease => ClientRequest::LeaseRead { key: op.op.key() },
            ReadPath::ReadIndex => ClientRequest::ReadIndexRead { key: op.op.key() },
            ReadPath::Log => ClientRequest::Write(op.request.clone()),
        };
        let delay = self.rng.between(self.options.delay_min_us, self.options.delay_max_us);
        if self.healed || !self.rng.chance(self.options.drop_probability) {
            self.schedule(
                self.now + delay,
                Event::ClientToReplica { node: target, client, attempt, request },
            );
        }
        self.schedule(self.now + ATTEMPT_TIMEOUT_US, Event::ClientAttemptTimeout { client, attempt });
    }

    pub(super) fn reply(&mut self, client: usize, attempt: u64, reply: ClientReply) {
        let delay = self.rng.between(self.options.delay_min_us, self.options.delay_max_us);
        if !self.healed && self.rng.chance(self.options.drop_probability) {
            return;
        }
        self.schedule(self.now + delay, Event::ReplicaToClient { client, attempt, reply });
    }

    pub(super) fn on_client_request(
        &mut self,
        index: usize,
        client: usize,
        attempt: u64,
        request: ClientRequest,
    ) {
        let now = self.local_time(index);
        let Some(replica) = self.nodes[index].replica.as_mut() else { return };
        match request {
            ClientRequest::Write(request) => {
                let id = request.id;
                let early = acknowledged_when_queued(self.options.mutation, &request);
                match replica.handle_propose(now, request) {
                    Ok(()) if early => self.reply(client, attempt, ClientReply::Ok(KvResult::Done)),
                    Ok(()) => {
                        self.nodes[index].waiting_writes.insert(id, (client, attempt));
                    }
                    Err(ProposeError::NotPrimary { hint }) => {
                        self.reply(client, attempt, ClientReply::Redirect(hint))
                    }
                    Err(ProposeError::Relinquishing { target }) => {
                        self.reply(client, attempt, ClientReply::Redirect(Some(target)))
                    }
                    // The simulator never closes its rings.
                    Err(
                        ProposeError::Busy { .. }
                        | ProposeError::TooLarge { .. }
                        | ProposeError::LargeBusy { .. }
                        | ProposeError::Closed { .. },
                    ) => self.reply(client, attempt, ClientReply::Retry),
                }
            }
            ClientRequest::LeaseRead { key } => match replica.handle_read(now) {
                Ok(read_index) => {
                    if replica.applied() >= read_index {
                        let value = self.nodes[index].kv.get(key);
                        self.reply(client, attempt, ClientReply::Ok(KvResult::Value(value)));
                    } else {
                        self.nodes[index].waiting_reads.push((read_index, key, client, attempt));
                    }
                }
                Err(error) => self.refuse_read(client, attempt, error),
            },
            ClientRequest::ReadIndexRead { key } => {
                // Unique per replica: attempt numbers never repeat within a client.
                let id = ReadId(((client as u64) << 40) | attempt);
                match replica.handle_read_index(now, id) {
                    Ok(()) => {
                        self.nodes[index].read_indexes.insert(id, (key, client, attempt));
                    }
                    Err(error) => self.refuse_read(client, attempt, error),
                }
            }
        }
        self.drain(index);
    }

    /// Tells a client why its read was not served: where to go, or to try again.
    fn refuse_read(&mut self, client: usize, attempt: u64, error: ReadError) {
        match error {
            ReadError::NotPrimary { hint } => self.reply(client, attempt, ClientReply::Redirect(hint)),
            // The primary this replica follows did not answer: try another replica.
            ReadError::NoAnswer { .. } => self.reply(client, attempt, ClientReply::Redirect(None)),
            ReadError::LeaseExpired | ReadError::Recovering { .. } | ReadError::Busy { .. } => {
                self.reply(client, attempt, ClientReply::Retry)
            }
        }
    }

    /// Replica `index` confirmed read `id`: the read is served once `read_index` is applied.
    pub(super) fn read_index_ready(&mut self, index: usize, id: ReadId, read_index: Slot) {
        let Some((key, client, attempt)) = self.nodes[index].read_indexes.remove(&id) else { return };
        self.stats.read_index_reads += 1;
        let node = &mut self.nodes[index];
        if node.replica.as_ref().is_some_and(|replica| replica.applied() >= read_index) {
            let value = node.kv.get(key);
            self.reply(client, attempt, ClientReply::Ok(KvResult::Value(value)));
        } else {
            node.waiting_reads.push((read_index, key, client, attempt));
        }
    }

    /// Replica `index` could not confirm read `id`.
    pub(super) fn read_index_failed(&mut self, index: usize, id: ReadId, error: ReadError) {
        if let Some((_, client, attempt)) = self.nodes[index].read_indexes.remove(&id) {
            self.refuse_read(client, attempt, error);
        }
    }

    pub(super) fn on_client_reply(&mut self, client: usize, attempt: u64, reply: ClientReply) {
        let Some(op) = self.clients[client].pending.as_ref() else { return };
        if op.attempt != attempt {
            return;
        }
        match reply {
            ClientReply::Ok(KvResult::Invalid) => {
                let detail = format!("client {client} request {:?} answered Invalid", op.request.id);
                self.fail(Failure::new("validity", self.now, detail));
            }
            ClientReply::Ok(result) => self.complete(client, Some(result)),
            ClientReply::Redirect(hint) => {
                let target = match hint {
                    Some(node) if node_index(node) < self.nodes.len() => node_index(node),
                    _ => self.rng.index(self.nodes.len()),
                };
                self.retry(client, target, 20_000);
            }
            ClientReply::Retry => {
                let target = self.clients[client].pending.as_ref().expect("pending").target;
                self.retry(client, target, 50_000);
            }
        }
    }

    pub(super) fn on_attempt_timeout(&mut self, client: usize, attempt: u64) {
        let Some(op) = self.clients[client].pending.as_ref() else { return };
        if op.attempt != attempt {
            return;
        }
        let target = self.rng.index(self.nodes.len());
        self.retry(client, target, 0);
    }

    pub(super) fn retry(&mut self, client: usize, target: usize, backoff_us: u64) {
        let give_up = self.clients[client].pending.as_ref().expect("pending").give_up_at;
        if self.now + backoff_us >= give_up {
            self.complete(client, None);
            return;
        }
        let op = self.clients[client].pending.as_mut().expect("pending");
        op.target = target;
        self.clients[client].hint = target;
        // Invalidate the current attempt now; the next goes out after the backoff.
        let state = &mut self.clients[client];
        state.attempts += 1;
        let op = state.pending.as_mut().expect("pending");
        op.attempt = state.attempts;
        if backoff_us == 0 {
            self.send_attempt(client);
        } else {
            let attempt = op.attempt;
            self.schedule(self.now + backoff_us, Event::ClientResend { client, attempt });
        }
    }

    pub(super) fn complete(&mut self, client: usize, result: Option<KvResult>) {
        let op = self.clients[client].pending.take().expect("pending");
        let (input, key) = match op.op {
            KvOp::Put { key, value } => (linearizability::Input::Put { value }, key),
            KvOp::Get { key } => (linearizability::Input::Get, key),
            KvOp::Delete { key } => (linearizability::Input::Delete, key),
            KvOp::Cas { key, expected, new } => (linearizability::Input::Cas { expected, new }, key),
        };
        let output = match &result {
            None => None,
            Some(KvResult::Done) => Some(match op.op {
                KvOp::Delete { .. } => linearizability::Output::Delete,
                _ => linearizability::Output::Put,
            }),
            Some(KvResult::Value(value)) => Some(linearizability::Output::Get { value: *value }),
            Some(KvResult::Cas(ok)) => Some(linearizability::Output::Cas { ok: *ok }),
            Some(KvResult::Invalid) => None,
        };
        if result.is_some() {
            self.stats.ops_ok += 1;
            if op.read == ReadPath::Log {
                self.acknowledged.insert(op.request.id);
            }
        } else {
            self.stats.ops_unknown += 1;
            if op.invoked_at >= self.fault_end + SETTLE_US {
                self.liveness_misses.push(format!(
                    "client {client} {:?} invoked at {} after healing timed out",
                    op.op,
                    Time(op.invoked_at)
                ));
            }
        }
        self.history.push(linearizability::Operation {
            process: client as u64,
            key: key.to_string(),
            input,
            return_ns: output.as_ref().map(|_| self.now * 1000),
            output,
            call_ns: op.invoked_at * 1000,
        });
        let think = self.rng.between(0, 20_000);
        self.schedule(self.now + think, Event::ClientNextOp { client });
    }
}

/// The seeded control `AcknowledgeBeforeChosen`: a put or delete is acknowledged as soon as
/// the primary queues it (a compare-and-set's answer depends on the state it is applied to).
fn acknowledged_when_queued(mutation: Option<Mutation>, request: &Request) -> bool {
    mutation == Some(Mutation::AcknowledgeBeforeChosen)
        && matches!(KvOp::decode(&request.payload), Some(KvOp::Put { .. } | KvOp::Delete { .. }))
}
