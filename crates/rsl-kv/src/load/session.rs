//! One client session of the load: its lanes (each an in-flight slot with a write session
//! of its own), its schedule (closed loop, or open loop at a fixed rate), what it
//! measured, and where it goes when its server fails. How it talks to the servers is in
//! `protocols.rs`; this file decides what to send, and when, and records what came back.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use rsl::core::SplitMix64;
use tonic::transport::Channel;

use super::{endpoint, histogram, LoadCounters, LoadOptions, ERROR_SAMPLES_MAX};
use crate::client::ClientOptions;

/// After the end, how long in-flight operations get to finish (they are not measured;
/// waiting only lets the servers drain before the next run).
const DRAIN_WAIT: Duration = Duration::from_secs(2);

/// When measuring starts and the run ends.
#[derive(Clone, Copy, Debug)]
pub(super) struct Window {
    pub(super) measure_from: Instant,
    pub(super) end: Instant,
}

/// One in-flight slot of a client: its own write session.
#[derive(Debug)]
struct Lane {
    /// The write session's client id (random, non-zero).
    session: u64,
    /// The session's last write number.
    sequence: u64,
    /// The outstanding operation: when it was due and whether it is a read.
    busy: Option<(Instant, bool)>,
    /// The outstanding operation itself, to send again after a failover.
    op: Option<Op>,
}

/// An operation to send.
#[derive(Clone, Debug)]
pub(super) struct Op {
    pub(super) lane: usize,
    pub(super) read: bool,
    pub(super) key: String,
    pub(super) value: Bytes,
    pub(super) sequence: u64,
    pub(super) session: u64,
}

/// What a session measured, handed back when it ends.
pub(super) struct SessionOutcome {
    pub(super) writes: Histogram<u64>,
    pub(super) reads: Histogram<u64>,
    pub(super) errors: u64,
    pub(super) backlog: u64,
    pub(super) error_samples: Vec<String>,
}

/// One client: its lanes, its schedule, its measurements.
pub(super) struct Session {
    random: SplitMix64,
    lanes: Vec<Lane>,
    free: Vec<usize>,
    /// Open loop: when the next operation is due, and the spacing.
    next_due: Option<(Instant, Duration)>,
    /// Open loop: due times of operations waiting for a free lane.
    waiting: VecDeque<Instant>,
    window: Window,
    counters: Arc<LoadCounters>,
    keys: u64,
    value_bytes: usize,
    read_percent: u8,
    failover: Failover,
    outcome: SessionOutcome,
}

/// Where a session goes when its server fails or refuses as not primary.
#[derive(Debug)]
struct Failover {
    servers: Vec<String>,
    next: usize,
    /// An operation is retried on other servers until it has been outstanding this long.
    deadline: Duration,
    /// How to connect (timeouts, TLS, token).
    client: ClientOptions,
}

impl Session {
    pub(super) fn new(
        index: u32,
        options: &LoadOptions,
        window: Window,
        counters: Arc<LoadCounters>,
    ) -> Session {
        let mut random = SplitMix64::new(rsl::runtime::entropy() ^ u64::from(index));
        let lanes: Vec<Lane> = (0..options.in_flight)
            .map(|_| Lane { session: random.next_u64() | 1, sequence: 0, busy: None, op: None })
            .collect();
        let free = (0..lanes.len()).rev().collect();
        let next_due = options.rate_ops_per_s.map(|rate| {
            let spacing = Duration::from_secs_f64(f64::from(options.clients) / rate);
            // Spread the clients' schedules over one spacing.
            let offset = spacing.mul_f64(f64::from(index) / f64::from(options.clients));
            (Instant::now() + offset, spacing)
        });
        Session {
            random,
            lanes,
            free,
            next_due,
            waiting: VecDeque::new(),
            window,
            counters,
            keys: options.keys.max(1),
            value_bytes: options.value_bytes,
            read_percent: options.read_percent,
            failover: Failover {
                servers: options.servers.clone(),
                next: index as usize,
                deadline: options.client.deadline,
                client: options.client.clone(),
            },
            outcome: SessionOutcome {
                writes: histogram(),
                reads: histogram(),
                errors: 0,
                backlog: 0,
                error_samples: Vec::new(),
            },
        }
    }

    /// Takes the operations to send now: every free lane in a closed loop; the due ones
    /// (as lanes allow) in an open loop.
    pub(super) fn ready(&mut self, now: Instant) -> Vec<Op> {
        let mut ops = Vec::new();
        if now >= self.window.end {
            return ops;
        }
        match self.next_due {
            None => {
                while let Some(lane) = self.free.pop() {
                    ops.push(self.start(lane, now));
                }
            }
            Some((mut due, spacing)) => {
                while due <= now {
                    self.waiting.push_back(due);
                    due += spacing;
                }
                self.next_due = Some((due, spacing));
                while !self.waiting.is_empty() && !self.free.is_empty() {
                    let (due, lane) =
                        (self.waiting.pop_front().expect("checked"), self.free.pop().expect("checked"));
                    ops.push(self.start(lane, due));
                }
            }
        }
        ops
    }

    fn start(&mut self, lane: usize, due: Instant) -> Op {
        let key = format!("key-{}", self.random.below(self.keys));
        let read = self.random.below(100) < u64::from(self.read_percent);
        let value = if read {
            Bytes::new()
        } else {
            let mut value = vec![0u8; self.value_bytes];
            for chunk in value.chunks_mut(8) {
                let word = self.random.next_u64().to_le_bytes();
                chunk.copy_from_slice(&word[..chunk.len()]);
            }
            Bytes::from(value)
        };
        let state = &mut self.lanes[lane];
        if !read {
            state.sequence += 1;
        }
        state.busy = Some((due, read));
        let op = Op { lane, read, key, value, sequence: state.sequence, session: state.session };
        state.op = Some(op.clone());
        op
    }

    /// When the next open-loop operation is due (`None` in a closed loop).
    fn next_wake(&self) -> Option<Instant> {
        self.next_due.map(|(due, _)| due.min(self.window.end))
    }

    /// Whether the run has ended at `now` (no new operation is sent).
    pub(super) fn ended(&self, now: Instant) -> bool {
        now >= self.window.end
    }

    /// Whether the drain after the end is over at `now` (operations still outstanding are
    /// abandoned).
    pub(super) fn drain_over(&self, now: Instant) -> bool {
        now >= self.window.end + DRAIN_WAIT
    }

    /// When the session must wake up at `now` if no answer comes: when the next
    /// open-loop operation is due, or, after the end, when the drain is over (`None`:
    /// only an answer wakes it).
    pub(super) fn wake(&self, now: Instant) -> Option<Instant> {
        if self.ended(now) {
            Some(self.window.end + DRAIN_WAIT)
        } else {
            self.next_wake()
        }
    }

    /// The operation outstanding on `lane`, if it may be sent again: it has been
    /// outstanding for less than the operation deadline.
    pub(super) fn retryable(&self, lane: usize) -> Option<Op> {
        let state = &self.lanes[lane];
        let outstanding = state.busy.map(|(due, _)| due.elapsed())?;
        state.op.clone().filter(|_| outstanding < self.failover.deadline)
    }

    /// Records the end of the operation on `lane`.
    pub(super) fn finish(&mut self, lane: usize, result: Result<(), String>) {
        let Some(state) = self.lanes.get_mut(lane) else { return };
        state.op = None;
        let Some((due, read)) = state.busy.take() else { return };
        self.free.push(lane);
        let now = Instant::now();
        let measured = now >= self.window.measure_from && now <= self.window.end;
        match result {
            Ok(()) => {
                self.counters.ops.fetch_add(1, Ordering::Relaxed);
                if measured {
                    let micros = (now.duration_since(due).as_micros() as u64).clamp(1, 60_000_000);
                    let histogram = if read { &mut self.outcome.reads } else { &mut self.outcome.writes };
                    histogram.saturating_record(micros);
                }
            }
            Err(error) => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                if measured {
                    self.outcome.errors += 1;
                }
                if self.outcome.error_samples.len() < ERROR_SAMPLES_MAX {
                    self.outcome.error_samples.push(error);
                }
            }
        }
    }

    /// The outstanding operations to send again after a failover; those outstanding for
    /// longer than the operation deadline fail with `error` instead.
    pub(super) fn resend(&mut self, error: &str) -> Vec<Op> {
        let now = Instant::now();
        let mut again = Vec::new();
        for lane in 0..self.lanes.len() {
            let Some((due, _)) = self.lanes[lane].busy else { continue };
            match &self.lanes[lane].op {
                Some(op) if now.duration_since(due) < self.failover.deadline => again.push(op.clone()),
                _ => self.finish(lane, Err(format!("{error} (given up after the operation deadline)"))),
            }
        }
        again
    }

    /// Moves to another server after a failure: the primary named in a refusal, else the
    /// next server in the list. Returns a (lazily connecting) channel to it.
    pub(super) fn retarget(&mut self, hint: Option<&str>) -> Option<Channel> {
        let servers = &self.failover.servers;
        let target = match hint.filter(|h| !h.is_empty()) {
            Some(hint) => hint.to_owned(),
            None => {
                self.failover.next = (self.failover.next + 1) % servers.len().max(1);
                servers.get(self.failover.next)?.clone()
            }
        };
        endpoint(&target, &self.failover.client).ok().map(|endpoint| endpoint.connect_lazy())
    }

    pub(super) fn busy(&self) -> usize {
        self.lanes.len() - self.free.len()
    }

    pub(super) fn done(mut self) -> SessionOutcome {
        self.outcome.backlog = self.waiting.len() as u64;
        self.outcome
    }

    /// Keeps a sample of a failure that is not an operation's (a connection attempt).
    pub(super) fn note_error(&mut self, error: String) {
        if self.outcome.error_samples.len() < ERROR_SAMPLES_MAX {
            self.outcome.error_samples.push(error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(rate: Option<f64>) -> LoadOptions {
        LoadOptions {
            clients: 2,
            in_flight: 3,
            rate_ops_per_s: rate,
            read_percent: 0,
            ..LoadOptions::default()
        }
    }

    fn window(from_now: Duration) -> Window {
        let now = Instant::now();
        Window { measure_from: now, end: now + from_now }
    }

    #[test]
    fn a_closed_loop_fills_every_lane_and_lanes_are_separate_sessions() {
        let mut session =
            Session::new(0, &options(None), window(Duration::from_secs(60)), Default::default());
        let ops = session.ready(Instant::now());
        assert_eq!(ops.len(), 3);
        let mut sessions: Vec<u64> = ops.iter().map(|op| op.session).collect();
        sessions.dedup();
        assert_eq!(sessions.len(), 3, "each lane writes as its own session");
        assert!(ops.iter().all(|op| op.sequence == 1 && op.value.len() == 64));
        assert!(session.ready(Instant::now()).is_empty(), "no lane is free");
        session.finish(ops[1].lane, Ok(()));
        let next = session.ready(Instant::now());
        assert_eq!(next.len(), 1);
        assert_eq!((next[0].lane, next[0].sequence), (ops[1].lane, 2));
        assert_eq!(session.outcome.writes.len(), 1);
    }

    #[test]
    fn an_open_loop_sends_what_is_due_and_keeps_the_rest_waiting() {
        // 2 clients at 2000 ops/s: one operation per client every millisecond.
        let mut session =
            Session::new(0, &options(Some(2000.0)), window(Duration::from_secs(60)), Default::default());
        let start = session.next_due.unwrap().0;
        let first = session.ready(start);
        assert_eq!(first.len(), 1);
        // Five more are due; only two lanes are free.
        let ops = session.ready(start + Duration::from_micros(5500));
        assert_eq!(ops.len(), 2);
        assert_eq!(session.waiting.len(), 3);
        // An operation is timed from when it was due, however late its answer.
        std::thread::sleep(Duration::from_millis(3));
        session.finish(first[0].lane, Ok(()));
        assert!(session.outcome.writes.max() >= 3000, "{}", session.outcome.writes.max());
        let waited = session.ready(start + Duration::from_micros(5500));
        assert_eq!(waited.len(), 1);
        assert_eq!(session.done().backlog, 2);
    }

    #[test]
    fn failures_and_late_answers_are_not_measured_as_successes() {
        let mut session = Session::new(0, &options(None), window(Duration::ZERO), Default::default());
        // The window already ended: nothing is sent.
        assert!(session.ready(Instant::now()).is_empty());
        let mut session =
            Session::new(0, &options(None), window(Duration::from_secs(60)), Default::default());
        let ops = session.ready(Instant::now());
        session.finish(ops[0].lane, Err("boom".into()));
        session.finish(ops[0].lane, Ok(()));
        assert_eq!(session.outcome.errors, 1);
        assert_eq!(session.outcome.writes.len(), 0, "a lane answers once");
        assert_eq!(session.outcome.error_samples, ["boom"]);
    }
}
