//! Per-seed options: every run draws its own fault mix and protocol settings (swarm
//! testing), so a thousand seeds cover a thousand different clusters.

use rsl_core::Mutation;

use crate::rng::Rng;

/// Everything a run varies, drawn from its seed.
#[derive(Clone, Debug)]
pub struct Options {
    /// Replicas in the ring's initial configuration (3 or 5).
    pub replicas: usize,
    /// Replicas outside the initial configuration (they start joining, and configuration
    /// changes may add them); zero when the run makes no configuration changes.
    pub spares: usize,
    /// Configuration changes: mean time between change requests to the primary,
    /// microseconds (0: none). Each names a random non-empty subset of all replicas.
    pub reconfigure_every_us: u64,
    /// Concurrent clients.
    pub clients: usize,
    /// Keys the clients touch.
    pub keys: u8,
    /// Fraction of lease reads among client operations.
    pub read_fraction: f64,
    /// Fraction of reads sent through the log instead of the lease.
    pub log_read_fraction: f64,
    /// Fraction of the reads not sent through the log that use a read index instead of the
    /// lease; half of those go to a replica picked at random (a secondary asks the primary).
    pub read_index_fraction: f64,
    /// Fraction of compare-and-set among writes.
    pub cas_fraction: f64,
    /// Simulated duration of the fault phase, microseconds.
    pub fault_phase_us: u64,
    /// Simulated duration of the healed liveness phase, microseconds.
    pub liveness_phase_us: u64,
    /// Network: one-way delay bounds, microseconds.
    pub delay_min_us: u64,
    /// Network: one-way delay upper bound.
    pub delay_max_us: u64,
    /// Network: probability a message is dropped.
    pub drop_probability: f64,
    /// Network: probability a message is delivered twice.
    pub duplicate_probability: f64,
    /// Network: probability a message is held back for 0.3 to 3 seconds (a delay spike
    /// that lets it arrive after elections it predates).
    pub long_delay_probability: f64,
    /// Crashes: probability that a crash takes down a majority at once (power loss).
    pub correlated_crash_probability: f64,
    /// Partitions: mean time between partition events, microseconds (0: none).
    pub partition_every_us: u64,
    /// Crashes: mean time between crashes, microseconds (0: none).
    pub crash_every_us: u64,
    /// Whether a crash may tear the last unsynced write.
    pub torn_writes: bool,
    /// Disk: write latency bounds, microseconds.
    pub disk_latency_min_us: u64,
    /// Disk: write latency upper bound.
    pub disk_latency_max_us: u64,
    /// Protocol: election delay spread above its 300 ms minimum (0 makes candidates duel).
    pub election_delay_spread_ms: u64,
    /// Protocol: pipeline depth.
    pub pipeline_depth: u64,
    /// Protocol: requests per batch.
    pub batch_requests_max: u32,
    /// Protocol: bytes per batch (small values force byte-bounded batches).
    pub batch_bytes_max: u64,
    /// Protocol: bytes of values per message (small values force short fetch replies and
    /// send far-behind candidates to catch up first).
    pub message_bytes_max: u64,
    /// Protocol: batch linger.
    pub batch_linger_us: u64,
    /// Protocol: checkpoint interval (0: never).
    pub checkpoint_interval_slots: u64,
    /// Protocol: slots kept below a checkpoint.
    pub log_retain_slots: u64,
    /// Protocol: chosen values per fetch.
    pub fetch_slots_max: u64,
    /// Protocol: fetches outstanding at once.
    pub fetch_window: u64,
    /// Pauses: mean time between process freezes, microseconds (0: none).
    pub pause_every_us: u64,
    /// Relinquish: mean time between primary hand-overs, microseconds (0: none).
    pub relinquish_every_us: u64,
    /// Whether replica clocks run at different rates (within the configured drift bound).
    pub clock_drift: bool,
    /// A seeded bug to switch on in every replica.
    pub mutation: Option<Mutation>,
}

impl Options {
    /// Draws the options for `seed`.
    pub fn from_seed(seed: u64, replicas: usize, mutation: Option<Mutation>) -> Options {
        // A separate stream so the options do not shift when the run's own draws change.
        let mut rng = Rng::new(seed ^ 0x5EED_0F0F_7105);
        let on = |rng: &mut Rng, p: f64| rng.chance(p);
        let delay_min_us = rng.between(100, 2_000);
        let disk_latency_min_us = rng.between(50, 2_000);
        let mut options = Options {
            replicas,
            clients: rng.between(1, 6) as usize,
            keys: rng.between(1, 4) as u8,
            read_fraction: rng.probability(0.0, 0.5),
            log_read_fraction: rng.probability(0.0, 0.5),
            read_index_fraction: 0.0,
            cas_fraction: rng.probability(0.0, 0.5),
            fault_phase_us: rng.between(5, 20) * 1_000_000,
            liveness_phase_us: 15_000_000,
            delay_min_us,
            delay_max_us: delay_min_us + rng.between(0, 20_000),
            drop_probability: if on(&mut rng, 0.7) { rng.probability(0.0, 0.15) } else { 0.0 },
            duplicate_probability: if on(&mut rng, 0.5) { rng.probability(0.0, 0.1) } else { 0.0 },
            long_delay_probability: if on(&mut rng, 0.6) { rng.probability(0.0, 0.15) } else { 0.0 },
            correlated_crash_probability: if on(&mut rng, 0.4) { rng.probability(0.1, 0.6) } else { 0.0 },
            partition_every_us: if on(&mut rng, 0.7) { rng.between(500, 5_000) * 1000 } else { 0 },
            crash_every_us: if on(&mut rng, 0.8) { rng.between(200, 5_000) * 1000 } else { 0 },
            torn_writes: on(&mut rng, 0.5),
            disk_latency_min_us,
            disk_latency_max_us: disk_latency_min_us + rng.between(0, 30_000),
            election_delay_spread_ms: [0, 5, 50, 300, 300][rng.index(5)],
            pipeline_depth: [1, 2, 4, 16, 64][rng.index(5)],
            batch_requests_max: [1, 4, 64][rng.index(3)],
            batch_bytes_max: [200, 1 << 20][rng.index(2)],
            message_bytes_max: [0, 3 << 20][rng.index(2)],
            batch_linger_us: [0, 0, 500, 5_000][rng.index(4)],
            checkpoint_interval_slots: [0, 10, 50, 200][rng.index(4)],
            log_retain_slots: [0, 5, 100][rng.index(3)],
            fetch_slots_max: [1, 8, 128][rng.index(3)],
            fetch_window: 4,
            pause_every_us: if on(&mut rng, 0.5) { rng.between(500, 5_000) * 1000 } else { 0 },
            relinquish_every_us: if on(&mut rng, 0.3) { rng.between(1_000, 5_000) * 1000 } else { 0 },
            clock_drift: on(&mut rng, 0.5),
            mutation,
            spares: 0,
            reconfigure_every_us: 0,
        };
        // Drawn last, so the options above stay what they were for every seed.
        if on(&mut rng, 0.5) || mutation == Some(Mutation::EnterConfigurationEarly) {
            options.spares = rng.between(1, 2) as usize;
            options.reconfigure_every_us = rng.between(500, 4_000) * 1000;
        }
        // One slot per fetch, one fetch at a time, is too slow to catch up within the
        // liveness phase after long faults.
        let windows: &[u64] = if options.fetch_slots_max == 1 { &[4, 16] } else { &[1, 4, 16] };
        options.fetch_window = windows[rng.index(windows.len())];
        options.read_index_fraction = [0.0, 0.5, 1.0][rng.index(3)];
        if mutation == Some(Mutation::ReadIndexWithoutConfirmation) {
            // Stale reads show only among reads: make every other operation one.
            options.read_fraction = options.read_fraction.max(0.5);
            options.log_read_fraction = 0.0;
            options.read_index_fraction = 1.0;
        }
        options
    }
}
