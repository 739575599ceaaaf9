//! Statistics of a ring (Azure RSL's `RSLStats`): counters of the core, the log and the
//! runtime, latency histograms, and rendering in the Prometheus text exposition format.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rsl_core::{NodeId, RingId, Role, Status};
use rsl_log::GroupCommitStatistics;
use rsl_transport::TransportStatsSnapshot;

/// Upper bounds of the latency histogram buckets, in microseconds (the last bucket, above
/// every bound, is `+Inf`).
pub const LATENCY_BUCKET_BOUNDS_US: [u64; 16] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000,
];
const BUCKETS: usize = LATENCY_BUCKET_BOUNDS_US.len() + 1;

/// A latency histogram with fixed buckets; cheap to record into from any thread.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn record(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BUCKET_BOUNDS_US.partition_point(|&bound| bound < us);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// A copy of the counts.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            sum_us: self.sum_us.load(Ordering::Relaxed),
            count: self.count.load(Ordering::Relaxed),
        }
    }
}

/// A point-in-time copy of a [`Histogram`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Observations per bucket (not cumulative); bucket `i` counts observations at most
    /// `LATENCY_BUCKET_BOUNDS_US[i]` and above the previous bound; the last is the rest.
    pub buckets: [u64; BUCKETS],
    /// Sum of all observations, in microseconds.
    pub sum_us: u64,
    /// Number of observations.
    pub count: u64,
}

impl HistogramSnapshot {
    /// The upper bound (in microseconds) of the bucket holding quantile `q` (0..=1), or
    /// `None` when empty or in the open last bucket.
    pub fn quantile_bound_us(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((self.count as f64) * q.clamp(0.0, 1.0)).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return LATENCY_BUCKET_BOUNDS_US.get(i).copied();
            }
        }
        None
    }
}

rsl_transport::counters! {
    /// Runtime counters of one ring, bumped from its task, its apply thread and its handles.
    pub struct RingCounters => RingCountersSnapshot {
        /// Requests answered with the state machine's response.
        requests_replicated,
        /// Requests answered with an error.
        requests_failed,
        /// Requests executed by the state machine (every replica, every client).
        requests_executed,
        /// Linearizable reads whose slot the primary's lease gave.
        reads_lease,
        /// Linearizable reads whose read index was confirmed (on the primary, or by the
        /// primary for a read on this secondary).
        reads_read_index,
        /// Reads (linearizable or fast) served by the state machine's concurrent reader,
        /// off the apply thread.
        reads_concurrent,
        /// Fast reads served.
        reads_fast,
        /// Reads refused or timed out.
        reads_failed,
        /// Inbound messages dropped because the ring's queue was full.
        messages_dropped_queue_full,
        /// Inbound messages the replica rejected as invalid.
        messages_invalid,
        /// Outbound batches the transport refused.
        send_errors,
        /// Checkpoints saved by the state machine.
        checkpoints_saved,
        /// Checkpoints that failed to save.
        checkpoint_save_failures,
        /// Checkpoints the state machine postponed (`StateMachine::allow_save`).
        checkpoint_saves_refused,
        /// Checkpoints a primary copied from a secondary into its store (not loaded).
        checkpoints_copied,
        /// Checkpoints fetched from a peer and installed.
        checkpoints_installed,
        /// Checkpoint fetches or installs that failed.
        checkpoint_fetch_failures,
        /// Checkpoint transfers served to peers.
        checkpoints_served,
        /// Bytes of checkpoint files received from peers.
        checkpoint_bytes_received,
    }
}

/// Latency histograms of one ring.
#[derive(Debug, Default)]
pub struct RingLatencies {
    /// From handing a persist request to the group committer to hearing it durable.
    pub persist: Histogram,
    /// From `replicate` being called to its response.
    pub replicate: Histogram,
    /// Time the state machine took per apply batch.
    pub apply: Histogram,
}

/// Everything measured about one ring: the statistics RSL reports, and more.
#[derive(Clone, Debug)]
pub struct RingStatistics {
    /// The ring.
    pub ring: RingId,
    /// This replica.
    pub node: NodeId,
    /// The replica's state (role, slots, configuration).
    pub status: Status,
    /// The consensus core's counters.
    pub core: rsl_core::Statistics,
    /// The log's counters: appends, bytes, syncs (the `store` field holds the store's own).
    pub log: GroupCommitStatistics,
    /// The runtime's counters.
    pub runtime: RingCountersSnapshot,
    /// Persist latency: append to durable.
    pub persist_latency: HistogramSnapshot,
    /// Replicate latency: call to response, at the primary.
    pub replicate_latency: HistogramSnapshot,
    /// Apply latency: state machine time per apply batch.
    pub apply_latency: HistogramSnapshot,
    /// Requests queued at the primary waiting for a slot.
    pub queued_requests: u64,
    /// Unchosen slots in flight at the primary.
    pub in_flight_slots: u64,
    /// `replicate` calls waiting for their response.
    pub pending_requests: u64,
    /// Every replica of the configuration as this one sees it (see
    /// [`Ring::replicas`](crate::Ring::replicas)).
    pub replicas: Vec<crate::health::ReplicaHealth>,
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Primary => "primary",
        Role::Secondary => "secondary",
        Role::Candidate => "candidate",
    }
}

struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &str, value: impl std::fmt::Display) {
        let _ = writeln!(self.out, "{name}{{{labels}}} {value}");
    }
}

/// Renders statistics of any number of rings in the Prometheus text exposition format
/// (version 0.0.4). Every sample carries `ring` and `node` labels.
pub fn render_prometheus(rings: &[RingStatistics]) -> String {
    let mut out = String::new();
    let mut family = Family { out: &mut out };
    let labels: Vec<String> =
        rings.iter().map(|s| format!("ring=\"{}\",node=\"{}\"", s.ring.0, s.node.0)).collect();

    type Getter = fn(&RingStatistics) -> u64;
    let gauges: [(&str, &str, Getter); 9] = [
        ("rsl_chosen_slot", "Every slot up to this one is chosen and durable here.", |s| s.status.chosen.0),
        ("rsl_applied_slot", "Every slot up to this one is applied.", |s| s.status.applied.0),
        ("rsl_log_start_slot", "The first slot still held in the log.", |s| s.status.log_start.0),
        ("rsl_checkpoint_slot", "The newest durable checkpoint.", |s| s.status.checkpoint.0),
        ("rsl_promised_round", "Round of the highest ballot promised.", |s| s.status.promised.round),
        ("rsl_queued_requests", "Requests queued at the primary waiting for a slot.", |s| s.queued_requests),
        ("rsl_in_flight_slots", "Unchosen slots in flight at the primary.", |s| s.in_flight_slots),
        ("rsl_pending_requests", "Replicate calls waiting for a response.", |s| s.pending_requests),
        ("rsl_configuration_number", "The configuration in force.", |s| s.status.configuration.number),
    ];
    for (name, help, get) in gauges {
        family.header(name, "gauge", help);
        for (s, l) in rings.iter().zip(&labels) {
            family.sample(name, l, get(s));
        }
    }

    family.header("rsl_role", "gauge", "1 for the role this replica plays.");
    for (s, l) in rings.iter().zip(&labels) {
        for role in [Role::Primary, Role::Secondary, Role::Candidate] {
            let value = u64::from(s.status.role == role);
            family.sample("rsl_role", &format!("{l},role=\"{}\"", role_name(role)), value);
        }
    }

    // The core's counters are rendered as `rsl_<field>_total`.
    macro_rules! core_counter {
        ($field:ident, $help:literal) => {
            (concat!("rsl_", stringify!($field), "_total"), $help, |s: &RingStatistics| s.core.$field)
        };
    }
    let core: [(&str, &str, Getter); 15] = [
        core_counter!(messages_received, "Messages handled by the replica."),
        core_counter!(messages_rejected, "Messages the replica dropped as invalid."),
        core_counter!(messages_sent, "Messages the replica produced."),
        core_counter!(requests_proposed, "Requests accepted for a slot."),
        core_counter!(slots_proposed, "Slots proposed as primary."),
        core_counter!(slots_chosen, "Slots learned chosen."),
        core_counter!(slots_applied, "Slots handed to the state machine."),
        core_counter!(elections_started, "Elections started."),
        core_counter!(elections_won, "Times this replica became primary."),
        core_counter!(primary_step_downs, "Times this replica stopped being primary."),
        core_counter!(persists, "Persist requests produced."),
        core_counter!(accepts_retransmitted, "Accepts retransmitted."),
        core_counter!(fetches_sent, "Catch-up fetches sent."),
        core_counter!(checkpoints_requested, "Checkpoints requested."),
        core_counter!(accepts_refused, "Accepts refused."),
    ];
    let log: [(&str, &str, Getter); 8] = [
        ("rsl_log_requests_total", "Persist requests the group committer appended.", |s| s.log.requests),
        ("rsl_log_commit_rounds_total", "Group commit rounds that flushed.", |s| s.log.rounds),
        ("rsl_log_appends_total", "Appends to the log store.", |s| s.log.store.appends),
        ("rsl_log_records_total", "Records written to the log store.", |s| s.log.store.records),
        ("rsl_log_bytes_written_total", "Bytes written to the log store.", |s| s.log.store.bytes_written),
        ("rsl_log_flushes_total", "Flushes that made something durable.", |s| s.log.store.flushes),
        ("rsl_log_syncs_total", "Device syncs (fdatasync, msync, fences).", |s| s.log.store.syncs),
        ("rsl_log_reclaimed_total", "Log containers reclaimed.", |s| s.log.store.reclaimed),
    ];
    for (name, help, get) in core.iter().chain(log.iter()) {
        family.header(name, "counter", help);
        for (s, l) in rings.iter().zip(&labels) {
            family.sample(name, l, get(s));
        }
    }
    family.header(
        "rsl_log_largest_commit_round",
        "gauge",
        "The most requests one group commit round flushed.",
    );
    for (s, l) in rings.iter().zip(&labels) {
        family.sample("rsl_log_largest_commit_round", l, s.log.largest_round);
    }

    let values: Vec<Vec<u64>> =
        rings.iter().map(|s| s.runtime.counters().map(|(_, _, value)| value).collect()).collect();
    for (i, (field, help, _)) in RingCountersSnapshot::default().counters().enumerate() {
        let name = format!("rsl_{field}_total");
        family.header(&name, "counter", help);
        for (v, l) in values.iter().zip(&labels) {
            family.sample(&name, l, v[i]);
        }
    }

    type HistogramGetter = fn(&RingStatistics) -> &HistogramSnapshot;
    let histograms: [(&str, &str, HistogramGetter); 3] = [
        ("rsl_persist_latency_seconds", "From append to durable.", |s| &s.persist_latency),
        ("rsl_replicate_latency_seconds", "From replicate to response.", |s| &s.replicate_latency),
        ("rsl_apply_latency_seconds", "State machine time per apply batch.", |s| &s.apply_latency),
    ];
    for (name, help, get) in histograms {
        family.header(name, "histogram", help);
        for (s, l) in rings.iter().zip(&labels) {
            let h = get(s);
            let mut cumulative = 0;
            for (i, n) in h.buckets.iter().enumerate() {
                cumulative += n;
                let le = match LATENCY_BUCKET_BOUNDS_US.get(i) {
                    Some(bound) => format!("{}", *bound as f64 / 1e6),
                    None => "+Inf".to_string(),
                };
                family.sample(&format!("{name}_bucket"), &format!("{l},le=\"{le}\""), cumulative);
            }
            family.sample(&format!("{name}_sum"), l, h.sum_us as f64 / 1e6);
            family.sample(&format!("{name}_count"), l, h.count);
        }
    }
    crate::health::render_replicas(&mut out, rings);
    out
}

/// The transport counters a scrape includes, rendered as `rsl_transport_<name>_total` (the
/// frame counts and the in-memory network's fault counters are left out).
const TRANSPORT_COUNTERS_RENDERED: [&str; 19] = [
    "messages_sent",
    "messages_received",
    "bytes_sent",
    "bytes_received",
    "dropped_queue_full",
    "dropped_inbound_full",
    "rejected_non_member",
    "rejected_unknown_ring",
    "rejected_misrouted",
    "decode_errors",
    "reconnects",
    "connect_failures",
    "rejected_unauthenticated",
    "rejected_impersonation",
    "rejected_version",
    "dropped_for_version",
    "checkpoint_requests_refused",
    "checkpoints_served",
    "checkpoint_bytes_served",
];

/// Appends a node's own counters to `out` in the Prometheus text format: messages for
/// rings not running there, and its transport endpoint's counters.
pub(crate) fn render_node_counters(
    out: &mut String,
    node: NodeId,
    dropped_unknown_ring: u64,
    transport: &TransportStatsSnapshot,
) {
    let node = node.0;
    let mut family = Family { out };
    let name = "rsl_messages_dropped_unknown_ring_total";
    family.header(name, "counter", "Inbound messages for a ring not running here.");
    family.sample(name, &format!("node=\"{node}\""), dropped_unknown_ring);
    for rendered in TRANSPORT_COUNTERS_RENDERED {
        let (_, _, value) = transport
            .counters()
            .find(|(field, ..)| *field == rendered)
            .expect("every rendered transport counter exists");
        let _ = writeln!(family.out, "# TYPE rsl_transport_{rendered}_total counter");
        family.sample(&format!("rsl_transport_{rendered}_total"), &format!("node=\"{node}\""), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_and_quantiles() {
        let h = Histogram::default();
        for us in [10, 60, 60, 900, 7_000_000] {
            h.record(Duration::from_micros(us));
        }
        let s = h.snapshot();
        assert_eq!(s.count, 5);
        assert_eq!(s.buckets[0], 1);
        assert_eq!(s.buckets[1], 2);
        assert_eq!(s.buckets[4], 1);
        assert_eq!(s.buckets[BUCKETS - 1], 1);
        assert_eq!(s.quantile_bound_us(0.5), Some(100));
        assert_eq!(s.quantile_bound_us(1.0), None);
        assert_eq!(HistogramSnapshot::default().quantile_bound_us(0.5), None);
    }

    #[test]
    fn node_counters_render_the_chosen_transport_counters() {
        let transport = TransportStatsSnapshot {
            messages_sent: 7,
            checkpoint_bytes_served: 2,
            frames_sent: 5,
            ..TransportStatsSnapshot::default()
        };
        let mut text = String::new();
        render_node_counters(&mut text, NodeId(3), 4, &transport);
        assert!(text.starts_with(
            "# HELP rsl_messages_dropped_unknown_ring_total Inbound messages for a ring not running here.\n\
             # TYPE rsl_messages_dropped_unknown_ring_total counter\n\
             rsl_messages_dropped_unknown_ring_total{node=\"3\"} 4\n\
             # TYPE rsl_transport_messages_sent_total counter\n\
             rsl_transport_messages_sent_total{node=\"3\"} 7\n"
        ));
        assert!(text.ends_with(
            "# TYPE rsl_transport_checkpoint_bytes_served_total counter\n\
             rsl_transport_checkpoint_bytes_served_total{node=\"3\"} 2\n"
        ));
        assert_eq!(text.lines().count(), 3 + 2 * TRANSPORT_COUNTERS_RENDERED.len());
        assert!(!text.contains("frames_sent"), "{text}");
    }

    #[test]
    fn ring_counters_render_with_their_descriptions() {
        let counters = RingCounters::default();
        RingCounters::add(&counters.requests_replicated, 9);
        let config = rsl_core::Config::new(RingId(2), NodeId(1), vec![NodeId(1)]);
        let replica = rsl_core::Replica::new(config, Default::default(), rsl_core::Time(0)).unwrap();
        let statistics = RingStatistics {
            ring: RingId(2),
            node: NodeId(1),
            status: replica.status(),
            core: rsl_core::Statistics { slots_chosen: 6, ..Default::default() },
            log: GroupCommitStatistics::default(),
            runtime: counters.snapshot(),
            persist_latency: HistogramSnapshot::default(),
            replicate_latency: HistogramSnapshot::default(),
            apply_latency: HistogramSnapshot::default(),
            queued_requests: 0,
            in_flight_slots: 0,
            pending_requests: 0,
            replicas: vec![crate::health::ReplicaHealth {
                node: NodeId(3),
                is_self: false,
                is_primary: false,
                is_learner: false,
                measured_by_primary: true,
                acknowledged: Some(rsl_core::Slot(5)),
                holds: Some(rsl_core::Slot(4)),
                lag_slots: Some(2),
                lag: Some(Duration::from_millis(1500)),
                last_heard: None,
                connected: Some(false),
            }],
        };
        let text = render_prometheus(&[statistics]);
        assert!(text.contains("# HELP rsl_slots_chosen_total Slots learned chosen.\n"), "{text}");
        assert!(text.contains("rsl_slots_chosen_total{ring=\"2\",node=\"1\"} 6\n"), "{text}");
        assert!(text.contains("rsl_replica_lag_slots{ring=\"2\",node=\"1\",replica=\"3\"} 2\n"), "{text}");
        assert!(
            text.contains("rsl_replica_lag_seconds{ring=\"2\",node=\"1\",replica=\"3\"} 1.5\n"),
            "{text}"
        );
        assert!(text.contains("rsl_replica_connected{ring=\"2\",node=\"1\",replica=\"3\"} 0\n"), "{text}");
        assert!(!text.contains("rsl_replica_last_heard_seconds{"), "unknown figures are left out: {text}");
        assert!(
            text.contains(
                "# HELP rsl_requests_replicated_total Requests answered with the state machine's response.\n\
             # TYPE rsl_requests_replicated_total counter\n\
             rsl_requests_replicated_total{ring=\"2\",node=\"1\"} 9\n"
            ),
            "{text}"
        );
    }
}
