//! Replica health and readiness: what a running ring knows of each replica of its
//! configuration ([`ReplicaHealth`], from [`Ring::replicas`](crate::Ring::replicas); RSL's
//! `GetReplicasInformation`), the per-replica Prometheus gauges, and whether a replica is
//! ready to serve ([`NotReady`], from [`Ring::readiness`](crate::Ring::readiness)), which
//! the metrics endpoint answers on `/readyz`.

use std::fmt::Write as _;
use std::time::Duration;

use rsl_core::{HealthReport, Micros, NodeId, Role, Slot};

use crate::stats::RingStatistics;

/// One replica of the configuration in force, as the replica asked sees it (RSL's
/// `ReplicaHealth`). The primary knows every field of every replica; a secondary knows
/// itself and its primary, and says so with `measured_by_primary == false`. `None` is
/// "not known here".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaHealth {
    /// The replica.
    pub node: NodeId,
    /// Whether it is the replica asked.
    pub is_self: bool,
    /// Whether it is the primary (as the replica asked knows).
    pub is_primary: bool,
    /// Whether it is a learner: it follows the log without voting.
    pub is_learner: bool,
    /// Whether these figures are the primary's view (the replica asked is the primary);
    /// false: a secondary's partial view.
    pub measured_by_primary: bool,
    /// The highest slot it voted for (accepted and made durable) at the primary's ballot.
    pub acknowledged: Option<Slot>,
    /// Every slot up to here it holds durably (chosen there, or voted for in order).
    pub holds: Option<Slot>,
    /// Slots it lacks behind the highest chosen slot the replica asked knows.
    pub lag_slots: Option<u64>,
    /// How long it has not held the primary's chosen watermark (zero when it holds it).
    pub lag: Option<Duration>,
    /// How long ago it was last heard.
    pub last_heard: Option<Duration>,
    /// Whether the transport's connection to it is up (`None` for the replica asked, and
    /// when the transport cannot tell).
    pub connected: Option<bool>,
}

impl ReplicaHealth {
    /// Every member of `report`, with what `connected` says of each peer's connection.
    pub(crate) fn from_report(
        report: &HealthReport,
        connected: impl Fn(NodeId) -> Option<bool>,
    ) -> Vec<ReplicaHealth> {
        let duration = |micros: Micros| Duration::from_micros(micros.0);
        report
            .members
            .iter()
            .map(|member| ReplicaHealth {
                node: member.node,
                is_self: member.is_self,
                is_primary: member.is_primary,
                is_learner: member.is_learner,
                measured_by_primary: report.role == Role::Primary,
                acknowledged: member.acknowledged,
                holds: member.holds,
                lag_slots: member.lag_slots,
                lag: member.lag.map(duration),
                last_heard: member.last_heard.map(duration),
                connected: if member.is_self { None } else { connected(member.node) },
            })
            .collect()
    }
}

/// How far behind a replica may be and still be ready (`/readyz`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadinessOptions {
    /// Ready only while applied is within this many slots of the highest chosen slot the
    /// replica knows.
    pub lag_slots_max: u64,
}

impl Default for ReadinessOptions {
    fn default() -> Self {
        ReadinessOptions { lag_slots_max: 1_000 }
    }
}

/// Why a replica is not ready to serve; its `Display` is one line, the `/readyz` body.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    /// The replica neither votes nor learns in the configuration in force (joining, or
    /// removed). A learner is ready like a member: caught up and hearing a primary.
    #[error("not a member {}", member_of(*.configuration))]
    NotAMember {
        /// The configuration number (0: a joining replica that entered none yet).
        configuration: u64,
    },
    /// The replica applied too little of what it knows is chosen.
    #[error("behind: applied slot {applied}, {known_chosen} known chosen ({lag_slots} behind, at most {lag_slots_max} allowed)")]
    Behind {
        /// Applied up to here.
        applied: Slot,
        /// The highest chosen slot it knows.
        known_chosen: Slot,
        /// The difference.
        lag_slots: u64,
        /// The bound.
        lag_slots_max: u64,
    },
    /// The replica follows no primary it heard recently.
    #[error("no primary heard within {window_ms} ms")]
    NoPrimary {
        /// The election delay's upper bound, in milliseconds.
        window_ms: u64,
    },
    /// The ring stopped.
    #[error("the ring stopped: {reason}")]
    Stopped {
        /// Why.
        reason: String,
    },
}

/// "of configuration N", or what configuration 0 means.
fn member_of(configuration: u64) -> String {
    match configuration {
        0 => "of any configuration yet (joining)".to_owned(),
        number => format!("of configuration {number}"),
    }
}

impl NotReady {
    /// Why a replica that knows `report`, with an election delay up to `window_ms`, is not
    /// ready by `options`, if it is not.
    pub(crate) fn check(
        report: &HealthReport,
        configuration: u64,
        window_ms: u64,
        options: ReadinessOptions,
    ) -> Result<(), NotReady> {
        if !report.member && !report.learner {
            return Err(NotReady::NotAMember { configuration });
        }
        let lag_slots = report.known_chosen.0.saturating_sub(report.applied.0);
        if lag_slots > options.lag_slots_max {
            return Err(NotReady::Behind {
                applied: report.applied,
                known_chosen: report.known_chosen,
                lag_slots,
                lag_slots_max: options.lag_slots_max,
            });
        }
        let heard = report.primary_heard.is_some_and(|ago| ago <= Micros::from_ms(window_ms));
        if report.primary.is_none() || !heard {
            return Err(NotReady::NoPrimary { window_ms });
        }
        Ok(())
    }
}

/// Appends the per-replica gauges of every ring to `out` (Prometheus text): one sample per
/// replica and known figure, labelled `ring`, `node` (the replica reporting) and `replica`.
pub(crate) fn render_replicas(out: &mut String, rings: &[RingStatistics]) {
    type Getter = fn(&ReplicaHealth) -> Option<f64>;
    let gauges: [(&str, &str, Getter); 6] = [
        (
            "rsl_replica_acknowledged_slot",
            "The highest slot the replica voted for at the primary's ballot.",
            |r| r.acknowledged.map(|s| s.0 as f64),
        ),
        ("rsl_replica_holds_slot", "Every slot up to this one the replica holds durably.", |r| {
            r.holds.map(|s| s.0 as f64)
        }),
        ("rsl_replica_lag_slots", "Slots the replica lacks behind the highest chosen slot known.", |r| {
            r.lag_slots.map(|n| n as f64)
        }),
        (
            "rsl_replica_lag_seconds",
            "How long the replica has not held the primary's chosen watermark.",
            |r| r.lag.map(|d| d.as_secs_f64()),
        ),
        ("rsl_replica_last_heard_seconds", "How long ago the replica was last heard.", |r| {
            r.last_heard.map(|d| d.as_secs_f64())
        }),
        ("rsl_replica_connected", "1 while the transport's connection to the replica is up.", |r| {
            r.connected.map(|up| f64::from(u8::from(up)))
        }),
    ];
    for (name, help, get) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for ring in rings {
            for replica in &ring.replicas {
                if let Some(value) = get(replica) {
                    let _ = writeln!(
                        out,
                        "{name}{{ring=\"{}\",node=\"{}\",replica=\"{}\"}} {value}",
                        ring.ring.0, ring.node.0, replica.node.0
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> HealthReport {
        HealthReport {
            node: NodeId(2),
            role: Role::Secondary,
            primary: Some(NodeId(1)),
            primary_heard: Some(Micros::from_ms(20)),
            member: true,
            learner: false,
            chosen: Slot(90),
            applied: Slot(80),
            known_chosen: Slot(100),
            members: Vec::new(),
        }
    }

    #[test]
    fn readiness_needs_membership_a_bounded_lag_and_a_live_primary() {
        let options = ReadinessOptions { lag_slots_max: 20 };
        assert_eq!(NotReady::check(&report(), 3, 250, options), Ok(()));
        let behind = NotReady::check(&report(), 3, 250, ReadinessOptions { lag_slots_max: 19 }).unwrap_err();
        assert_eq!(
            behind.to_string(),
            "behind: applied slot 80, 100 known chosen (20 behind, at most 19 allowed)"
        );
        assert_eq!(NotReady::NotAMember { configuration: 3 }.to_string(), "not a member of configuration 3");
        let joining = NotReady::NotAMember { configuration: 0 };
        assert_eq!(joining.to_string(), "not a member of any configuration yet (joining)");
        let learner = HealthReport { member: false, learner: true, ..report() };
        assert_eq!(NotReady::check(&learner, 3, 250, options), Ok(()), "a caught-up learner is ready");
        let lagging = NotReady::check(&learner, 3, 250, ReadinessOptions { lag_slots_max: 19 });
        assert!(matches!(lagging, Err(NotReady::Behind { .. })), "a lagging learner is not: {lagging:?}");
        let removed = HealthReport { member: false, ..report() };
        assert_eq!(
            NotReady::check(&removed, 3, 250, options),
            Err(NotReady::NotAMember { configuration: 3 })
        );
        let silent = HealthReport { primary_heard: Some(Micros::from_ms(300)), ..report() };
        assert_eq!(NotReady::check(&silent, 3, 250, options), Err(NotReady::NoPrimary { window_ms: 250 }));
        let orphan = HealthReport { primary: None, primary_heard: None, ..report() };
        assert_eq!(NotReady::check(&orphan, 3, 250, options), Err(NotReady::NoPrimary { window_ms: 250 }));
    }
}
