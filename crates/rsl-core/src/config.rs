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
/// The hard ceiling on `fetch_window`: fetches a lagging replica keeps outstanding.
pub const FETCH_WINDOW_MAX: u64 = 64;
/// The hard ceiling on members of a configuration.
pub const MEMBERS_MAX: usize = 64;

const _: () = assert!(PIPELINE_DEPTH_MAX <= u32::MAX as u64);
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
    /// How long a partial batch may wait for more requests while the pipeline has room.
    /// Zero proposes at once.
    pub batch_linger_us: u64,
    /// Requests the primary queues waiting for a slot before it refuses with `Busy`.
    pub proposal_queue_max: u64,
    /// Read-index reads waiting for a confirmation at once: at the primary (its own and
    /// those secondaries forwarded), and at a secondary (forwarded, not yet answered).
    /// More are refused with [`crate::ReadError::Busy`].
    pub read_index_pending_max: u64,
    /// Ask the state machine for a checkpoint every this many applied slots (0: never).
    pub checkpoint_interval_slots: u64,
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
            batch_linger_us: 0,
            proposal_queue_max: 200_000,
            read_index_pending_max: 100_000,
            checkpoint_interval_slots: 10_000,
            log_retain_slots: 1_000,
            fetch_slots_max: 128,
            fetch_window: 4,
            promise_slots_max: 4096,
            message_bytes_max: 3 << 20,
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
        ];
        for (field, value, max) in bounded {
            if value == 0 {
                return invalid(field, "must be positive".into());
            }
            if value > max {
                return invalid(field, format!("{value} not in 1..={max}"));
            }
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
