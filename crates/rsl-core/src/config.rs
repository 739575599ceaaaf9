//! Replica configuration: every queue, batch and window has a named maximum here.

use crate::time::Micros;
use crate::types::{NodeId, RingId};

/// The hard ceiling on `pipeline_depth`: the number of unchosen slots a primary keeps in
/// flight. RSL keeps one; we keep up to this many.
pub const PIPELINE_DEPTH_MAX: u64 = 65_536;
/// The hard ceiling on requests in one batch (one slot's value).
pub const BATCH_REQUESTS_MAX: u32 = 1 << 20;
/// The hard ceiling on bytes in one batch.
pub const BATCH_BYTES_MAX: u64 = 64 << 20;
/// The hard ceiling on `request_bytes_max`: the largest request payload a ring may accept.
/// Log stores and transports size their record and chunked-message limits from it.
pub const REQUEST_BYTES_MAX: u64 = 256 << 20;
/// The hard ceiling on `large_bytes_in_flight_max`.
pub const LARGE_BYTES_IN_FLIGHT_MAX: u64 = 1 << 30;
/// The hard ceiling on `fetch_window`: fetches a lagging replica keeps outstanding.
pub const FETCH_WINDOW_MAX: u64 = 64;
/// The hard ceiling on the nodes of a configuration, voters and learners together.
pub const MEMBERS_MAX: usize = 64;
/// Due checkpoints in a row at which no secondary had a newer checkpoint for a primary to
/// copy (it asks again every `checkpoint_retry_ms` in between) before it saves one itself.
pub const CHECKPOINT_COPY_ROUNDS_MAX: u32 = 3;

const _: () = assert!(PIPELINE_DEPTH_MAX <= u32::MAX as u64);
const _: () = assert!(REQUEST_BYTES_MAX <= LARGE_BYTES_IN_FLIGHT_MAX);
const _: () = assert!(MEMBERS_MAX <= 64, "vote sets are 64-bit masks");

/// How a replica behaves. Build with [`Config::new`], adjust fields, then the replica
/// validates it on construction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The ring.
    pub ring: RingId,
    /// This replica.
    pub node: NodeId,
    /// The initial configuration's members (configuration number 1, first slot 1), or,
    /// when `joining`, the replicas to ask for the ring's current configuration.
    pub members: Vec<NodeId>,
    /// This replica joins a running ring instead of bootstrapping one: it starts with no
    /// configuration (number 0), asks `members` for the current one, and votes only once a
    /// configuration that names it is chosen. Ignored when the log or a checkpoint already
    /// holds a configuration.
    pub joining: bool,
    /// How often the primary heartbeats.
    pub heartbeat_interval_ms: u64,
    /// Lower bound of the randomised election delay. Also the read lease length and the
    /// window in which a replica that heard a live primary refuses to elect another.
    pub election_delay_min_ms: u64,
    /// Upper bound of the randomised election delay.
    pub election_delay_max_ms: u64,
    /// Assumed bound on the relative clock rate drift between replicas, in parts per
    /// million. The primary's lease is shortened by this factor.
    pub clock_drift_max_ppm: u64,
    /// Unchosen slots the primary keeps in flight at once.
    pub pipeline_depth: u64,
    /// Requests per batch (one slot's value).
    pub batch_requests_max: u32,
    /// Bytes per batch, counted by [`crate::Request::size_bytes`].
    pub batch_bytes_max: u64,
    /// The largest request payload accepted, in bytes; a larger request is refused with
    /// [`crate::ProposeError::TooLarge`] naming this limit. A request whose
    /// [`crate::Request::size_bytes`] exceeds `batch_bytes_max` is *large*: it takes a slot
    /// of its own, never batched with others, outside the `pipeline_depth` window of batches
    /// (see `large_bytes_in_flight_max`), and transports carry it in chunks.
    pub request_bytes_max: u64,
    /// Bytes of large values (counted by [`crate::Value::size_bytes`]) the primary keeps
    /// proposed and unchosen at once; at most `pipeline_depth` large slots are in flight
    /// besides the batches. A large request waits in the primary's queue while the budget is
    /// spent, without holding up the batches behind it. At least `request_bytes_max`.
    pub large_bytes_in_flight_max: u64,
    /// How long a partial batch may wait for more requests while the pipeline has room.
    /// Zero proposes at once.
    pub batch_linger_us: u64,
    /// Requests the primary queues waiting for a slot before it refuses with `Busy`.
    pub proposal_queue_max: u64,
    /// Read-index reads waiting for a confirmation at once: at the primary (its own and
    /// those secondaries forwarded), and at a secondary (forwarded, not yet answered).
    /// More are refused with [`crate::ReadError::Busy`].
    pub read_index_pending_max: u64,
    /// Take a checkpoint every this many applied slots (0: never). The replicas' slots are
    /// staggered: each saves at its own offset within the interval, so they do not all save
    /// at the same slot.
    pub checkpoint_interval_slots: u64,
    /// Take a checkpoint once this many bytes of chosen values (counted by
    /// [`crate::Value::size_bytes`]) were applied since the last one (0: never). RSL's
    /// `m_maxLogLenMB`. At least `batch_bytes_max` when set.
    pub checkpoint_interval_bytes: u64,
    /// Take a checkpoint once this long passed since the last one, if anything was applied
    /// since (0: never). RSL's `m_maxCheckpointIntervalSec`. At least
    /// `heartbeat_interval_ms` when set.
    pub checkpoint_interval_ms: u64,
    /// After a save the state machine refused or that failed, or after no secondary had a
    /// newer checkpoint to copy, wait this long before trying again.
    pub checkpoint_retry_ms: u64,
    /// Whether the primary saves checkpoints itself. By default (false, as in RSL) a primary
    /// with other members leaves saving to the secondaries and, when a checkpoint is due,
    /// copies the newest one from a secondary instead (`Action::CopyCheckpoint`), so
    /// execution on the primary never waits for a save; it saves itself only when no
    /// secondary had a newer checkpoint at [`CHECKPOINT_COPY_ROUNDS_MAX`] due checkpoints in a row.
    pub primary_saves_checkpoints: bool,
    /// Slots kept in the log below the newest checkpoint, so a lagging replica can catch
    /// up from slots instead of a whole checkpoint.
    pub log_retain_slots: u64,
    /// Chosen values per fetch reply.
    pub fetch_slots_max: u64,
    /// Fetches a lagging replica keeps outstanding at once, each for the next range of
    /// up to `fetch_slots_max` slots: catching up takes about
    /// `slots / (fetch_slots_max x fetch_window)` round trips.
    pub fetch_window: u64,
    /// Proposals an acceptor sends in one promise; a candidate further behind must catch
    /// up first.
    pub promise_slots_max: u64,
    /// Bytes of values (counted by [`crate::Value::size_bytes`]) in one message. A fetch
    /// reply stops there; a candidate whose promise would carry more than half of it in
    /// chosen values must catch up first; the other half is room for the unchosen tail, at
    /// most `pipeline_depth` batches. Keep it below the transport's frame limit.
    pub message_bytes_max: u64,
    /// A configuration change that makes a learner a voter is refused
    /// ([`crate::ChangeError::LearnerBehind`]) while the primary knows the learner to hold
    /// the log less far than this many slots behind the primary's chosen slot: a voter that
    /// joins far behind slows every quorum it is needed in until it caught up.
    pub learner_promotion_lag_slots_max: u64,
    /// Seed of the replica's deterministic election-delay generator. Give each replica of
    /// a ring a different seed (the runtime mixes the node id in).
    pub seed: u64,
    /// A seeded protocol bug (simulator only), to prove that the checkers catch it.
    #[cfg(feature = "mutations")]
    pub mutation: Option<crate::Mutation>,
}

impl Config {
    /// A configuration with defaults tuned for a LAN.
    pub fn new(ring: RingId, node: NodeId, members: Vec<NodeId>) -> Config {
        Config {
            ring,
            node,
            members,
            joining: false,
            heartbeat_interval_ms: 50,
            election_delay_min_ms: 500,
            election_delay_max_ms: 1000,
            clock_drift_max_ppm: 10_000,
            pipeline_depth: 64,
            batch_requests_max: 4096,
            batch_bytes_max: 16 << 10,
            request_bytes_max: 64 << 20,
            large_bytes_in_flight_max: 128 << 20,
            batch_linger_us: 0,
            proposal_queue_max: 200_000,
            read_index_pending_max: 100_000,
            checkpoint_interval_slots: 10_000,
            checkpoint_interval_bytes: 128 << 20,
            checkpoint_interval_ms: 0,
            checkpoint_retry_ms: 1_000,
            primary_saves_checkpoints: false,
            log_retain_slots: 1_000,
            fetch_slots_max: 128,
            fetch_window: 4,
            promise_slots_max: 4096,
            message_bytes_max: 3 << 20,
            learner_promotion_lag_slots_max: 1_000,
            seed: node.0,
            #[cfg(feature = "mutations")]
            mutation: None,
        }
    }

    /// Checks every field and relation; the error names the field and the rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field: &'static str, reason: String| Err(ConfigError::Invalid { field, reason });
        let mut members = self.members.clone();
        members.sort_unstable();
        members.dedup();
        if members.len() != self.members.len() {
            return invalid("members", format!("duplicate node in {:?}", self.members));
        }
        if members.is_empty() || members.len() > MEMBERS_MAX {
            return invalid("members", format!("need 1..={MEMBERS_MAX} members, got {}", members.len()));
        }
        if !members.contains(&self.node) && !self.joining {
            return invalid("node", format!("{} is not among members {:?}", self.node, self.members));
        }
        if self.heartbeat_interval_ms == 0 {
            return invalid("heartbeat_interval_ms", "must be positive".into());
        }
        if self.election_delay_min_ms < 2 * self.heartbeat_interval_ms {
            return invalid(
                "election_delay_min_ms",
                format!(
                    "{} must be at least twice heartbeat_interval_ms ({})",
                    self.election_delay_min_ms, self.heartbeat_interval_ms
                ),
            );
        }
        if self.election_delay_max_ms < self.election_delay_min_ms {
            return invalid(
                "election_delay_max_ms",
                format!(
                    "{} is below election_delay_min_ms ({})",
                    self.election_delay_max_ms, self.election_delay_min_ms
                ),
            );
        }
        if self.clock_drift_max_ppm >= 500_000 {
            return invalid(
                "clock_drift_max_ppm",
                format!("{} must be below 500000", self.clock_drift_max_ppm),
            );
        }
        // Every bound of a queue, batch or window: at least one, at most its hard ceiling.
        let bounded = [
            ("pipeline_depth", self.pipeline_depth, PIPELINE_DEPTH_MAX),
            ("batch_requests_max", u64::from(self.batch_requests_max), u64::from(BATCH_REQUESTS_MAX)),
            ("batch_bytes_max", self.batch_bytes_max, BATCH_BYTES_MAX),
            ("proposal_queue_max", self.proposal_queue_max, u64::MAX),
            ("read_index_pending_max", self.read_index_pending_max, u64::MAX),
            ("fetch_slots_max", self.fetch_slots_max, u64::MAX),
            ("fetch_window", self.fetch_window, FETCH_WINDOW_MAX),
            ("request_bytes_max", self.request_bytes_max, REQUEST_BYTES_MAX),
            ("large_bytes_in_flight_max", self.large_bytes_in_flight_max, LARGE_BYTES_IN_FLIGHT_MAX),
        ];
        for (field, value, max) in bounded {
            if value == 0 {
                return invalid(field, "must be positive".into());
            }
            if value > max {
                return invalid(field, format!("{value} not in 1..={max}"));
            }
        }
        let largest = crate::Value::large_size_bytes(self.request_bytes_max);
        if self.large_bytes_in_flight_max < largest {
            return invalid(
                "large_bytes_in_flight_max",
                format!(
                    "{} is below the largest request's value ({largest} bytes: request_bytes_max {} \
                     with framing), which could then never be proposed",
                    self.large_bytes_in_flight_max, self.request_bytes_max
                ),
            );
        }
        let tail_bytes = self.pipeline_depth.saturating_mul(self.batch_bytes_max);
        if self.message_bytes_max < tail_bytes.saturating_mul(2) {
            return invalid(
                "message_bytes_max",
                format!(
                    "{} must be at least twice pipeline_depth x batch_bytes_max ({} x {}), the \
                     unchosen tail a promise may carry",
                    self.message_bytes_max, self.pipeline_depth, self.batch_bytes_max
                ),
            );
        }
        if self.promise_slots_max < 2 * self.pipeline_depth {
            return invalid(
                "promise_slots_max",
                format!(
                    "{} must be at least twice pipeline_depth ({})",
                    self.promise_slots_max, self.pipeline_depth
                ),
            );
        }
        self.validate_checkpoints()
    }

    /// The checkpoint triggers: each off (zero) or large enough not to save all the time.
    fn validate_checkpoints(&self) -> Result<(), ConfigError> {
        let invalid = |field: &'static str, reason: String| Err(ConfigError::Invalid { field, reason });
        if self.checkpoint_interval_bytes != 0 && self.checkpoint_interval_bytes < self.batch_bytes_max {
            return invalid(
                "checkpoint_interval_bytes",
                format!(
                    "{} must be 0 (never) or at least batch_bytes_max ({}): a checkpoint per batch \
                     would save all the time",
                    self.checkpoint_interval_bytes, self.batch_bytes_max
                ),
            );
        }
        if self.checkpoint_interval_ms != 0 && self.checkpoint_interval_ms < self.heartbeat_interval_ms {
            return invalid(
                "checkpoint_interval_ms",
                format!(
                    "{} must be 0 (never) or at least heartbeat_interval_ms ({})",
                    self.checkpoint_interval_ms, self.heartbeat_interval_ms
                ),
            );
        }
        if self.checkpoint_retry_ms == 0 {
            return invalid("checkpoint_retry_ms", "must be positive".into());
        }
        Ok(())
    }

    /// How often the primary heartbeats.
    pub fn heartbeat_interval(&self) -> Micros {
        Micros::from_ms(self.heartbeat_interval_ms)
    }

    /// The lower bound of the election delay: also the window in which a replica that heard
    /// a live primary refuses to elect another, and in which a primary must hear a quorum.
    pub fn election_delay_min(&self) -> Micros {
        Micros::from_ms(self.election_delay_min_ms)
    }

    /// How long a partial batch may wait for more requests.
    pub fn batch_linger(&self) -> Micros {
        Micros(self.batch_linger_us)
    }

    /// The read lease length: the election delay shortened by the drift.
    pub fn lease(&self) -> Micros {
        let window = self.election_delay_min().0;
        Micros(window - window * self.clock_drift_max_ppm / 1_000_000)
    }
}

/// A configuration that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A field breaks a rule.
    #[error("invalid config field `{field}`: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// The rule and the value found.
        reason: String,
    },
    /// The recovered durable state contradicts itself.
    #[error("inconsistent durable state: {reason}")]
    Durable {
        /// What contradicts what.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Config {
        Config::new(RingId(1), NodeId(1), vec![NodeId(1), NodeId(2), NodeId(3)])
    }

    #[test]
    fn default_is_valid() {
        base().validate().unwrap();
    }

    #[test]
    fn each_broken_field_is_named() {
        type Breaker = Box<dyn Fn(&mut Config)>;
        let cases: Vec<(&str, Breaker)> = vec![
            ("members", Box::new(|c| c.members = vec![NodeId(1), NodeId(1)])),
            ("members", Box::new(|c| c.members = vec![])),
            ("node", Box::new(|c| c.node = NodeId(9))),
            ("heartbeat_interval_ms", Box::new(|c| c.heartbeat_interval_ms = 0)),
            ("election_delay_min_ms", Box::new(|c| c.election_delay_min_ms = 60)),
            ("election_delay_max_ms", Box::new(|c| c.election_delay_max_ms = 10)),
            ("clock_drift_max_ppm", Box::new(|c| c.clock_drift_max_ppm = 600_000)),
            ("pipeline_depth", Box::new(|c| c.pipeline_depth = 0)),
            ("batch_requests_max", Box::new(|c| c.batch_requests_max = 0)),
            ("batch_bytes_max", Box::new(|c| c.batch_bytes_max = 0)),
            ("proposal_queue_max", Box::new(|c| c.proposal_queue_max = 0)),
            ("read_index_pending_max", Box::new(|c| c.read_index_pending_max = 0)),
            ("fetch_slots_max", Box::new(|c| c.fetch_slots_max = 0)),
            ("fetch_window", Box::new(|c| c.fetch_window = 0)),
            ("fetch_window", Box::new(|c| c.fetch_window = FETCH_WINDOW_MAX + 1)),
            ("promise_slots_max", Box::new(|c| c.promise_slots_max = 1)),
            ("message_bytes_max", Box::new(|c| c.message_bytes_max = 1024)),
            ("checkpoint_interval_bytes", Box::new(|c| c.checkpoint_interval_bytes = 100)),
            ("checkpoint_interval_ms", Box::new(|c| c.checkpoint_interval_ms = 1)),
            ("checkpoint_retry_ms", Box::new(|c| c.checkpoint_retry_ms = 0)),
            ("request_bytes_max", Box::new(|c| c.request_bytes_max = 0)),
            ("request_bytes_max", Box::new(|c| c.request_bytes_max = REQUEST_BYTES_MAX + 1)),
            ("large_bytes_in_flight_max", Box::new(|c| c.large_bytes_in_flight_max = 64 << 20)),
            ("large_bytes_in_flight_max", Box::new(|c| c.large_bytes_in_flight_max = 0)),
        ];
        for (field, break_it) in cases {
            let mut config = base();
            break_it(&mut config);
            match config.validate() {
                Err(ConfigError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: expected an error, got {other:?}"),
            }
        }
    }

    #[test]
    fn lease_is_shorter_than_the_election_delay() {
        let config = base();
        assert!(config.lease() < config.election_delay_min());
        assert_eq!(config.lease(), Micros(495_000));
    }
}
