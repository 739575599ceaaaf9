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
    /// Probability that a configuration change also names learners: some of the replicas
    /// it leaves out of the voters, each with probability one half.
    pub learner_probability: f64,
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
    /// Protocol: the bound on the relative drift of two clocks the replicas assume
    /// (`clock_drift_max_ppm`; the read lease is shortened by it).
    pub clock_drift_max_ppm: u64,
    /// How far any clock's rate may be off true time, parts per million: at most half the
    /// bound, so two clocks differ by at most the bound; more with `drift_beyond_bound`.
    pub clock_rate_max_ppm: u64,
    /// Clocks: mean time between changes of a clock's rate, microseconds (0: rates never
    /// change).
    pub drift_every_us: u64,
    /// The negative control: clocks drift beyond the bound the replicas assume, so lease
    /// reads must lose linearizability (`rsl-sim --drift-beyond-bound`).
    pub drift_beyond_bound: bool,
    /// The lease nemesis: mean time between isolations of the primary with the clocks
    /// skewed against it (its clock as slow as allowed, every other as fast), microseconds
    /// (0: none).
    pub isolate_primary_every_us: u64,
    /// Protocol: the election delay's minimum, which is also the lease guard; the read
    /// lease is this shortened by the drift bound.
    pub election_delay_min_ms: u64,
    /// Clients: how long an attempt waits for its answer before trying another replica.
    pub attempt_timeout_us: u64,
    /// Clients: the first client only does lease reads (it stays with whoever serves them).
    pub lease_reader: bool,
    /// Fraction of the reads not sent through the log that are fast reads: served by any
    /// replica once it applied the client's minimum slot, checked for staleness rather
    /// than linearizability.
    pub fast_read_fraction: f64,
    /// Checkpoint installs: probability that the installing replica crashes somewhere
    /// between receiving the checkpoint and loading it.
    pub install_crash_probability: f64,
    /// The takeover nemesis: mean time between rounds in which the primary is cut off
    /// while it still takes writes, the next primary chooses other values in those slots,
    /// and the stale primary comes back to stand for election, microseconds (0: none).
    pub takeover_every_us: u64,
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
            learner_probability: 0.5,
            clock_drift_max_ppm: DRIFT_BOUND_DEFAULT_PPM,
            clock_rate_max_ppm: DRIFT_BOUND_DEFAULT_PPM / 2,
            drift_every_us: 0,
            drift_beyond_bound: false,
            isolate_primary_every_us: 0,
            election_delay_min_ms: 300,
            attempt_timeout_us: 1_500_000,
            lease_reader: false,
            fast_read_fraction: 0.0,
            install_crash_probability: 0.0,
            takeover_every_us: 0,
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
        // Drawn after everything above, for the same reason.
        options.clock_drift_max_ppm =
            [DRIFT_BOUND_DEFAULT_PPM, DRIFT_BOUND_DEFAULT_PPM, 100_000][rng.index(3)];
        options.clock_rate_max_ppm = options.clock_drift_max_ppm / 2;
        if options.clock_drift && on(&mut rng, 0.5) {
            options.drift_every_us = rng.between(500, 3_000) * 1000;
        }
        options.fast_read_fraction = [0.0, 0.3, 0.7][rng.index(3)];
        if on(&mut rng, 0.5) {
            options.install_crash_probability = rng.probability(0.2, 0.8);
        }
        let lease_pressed = on(&mut rng, 0.1);
        if on(&mut rng, 0.3) {
            options.takeover_every_us = rng.between(2_000, 6_000) * 1000;
        }
        match mutation {
            Some(Mutation::LeaseIgnoresDrift | Mutation::LeaseWithoutQuorumEcho) => {
                options.press_the_lease(&mut rng)
            }
            Some(Mutation::FastReadIgnoresMinSlot) => {
                // Stale fast reads show on lagging replicas: many reads, most of them fast.
                options.read_fraction = options.read_fraction.max(0.5);
                options.log_read_fraction = 0.0;
                options.fast_read_fraction = 1.0;
                options.crash_every_us = options.crash_every_us.max(1_000_000);
            }
            Some(Mutation::TruncateUnchosen) => {
                // Lost votes show only when the log is truncated often and replicas restart.
                options.checkpoint_interval_slots = 10;
                options.log_retain_slots = 0;
                options.crash_every_us = options.crash_every_us.max(1_000_000);
            }
            Some(Mutation::CheckpointWrongSlot) => {
                // Only a replica restarted or installed from a checkpoint shows it.
                options.checkpoint_interval_slots = 10;
                options.crash_every_us = options.crash_every_us.max(1_000_000);
            }
            Some(Mutation::ReadIndexWithoutConfirmation) => {
                // Stale reads show only among reads: make every other operation one.
                options.read_fraction = options.read_fraction.max(0.5);
                options.log_read_fraction = 0.0;
                options.fast_read_fraction = 0.0;
                options.read_index_fraction = 1.0;
            }
            Some(Mutation::TakeoverPicksLowestBallot) => options.press_takeovers(&mut rng),
            Some(Mutation::LearnerVotes) => {
                // Learners must be there while a partition cuts the primary off with them.
                options.spares = 2;
                options.reconfigure_every_us = options.reconfigure_every_us.clamp(500_000, 1_500_000);
                options.learner_probability = 1.0;
                options.partition_every_us = options.partition_every_us.clamp(300_000, 1_500_000);
            }
            _ if lease_pressed => options.press_the_lease(&mut rng),
            _ => {}
        }
        options
    }

    /// The negative control for the lease: the options of `seed` with the lease pressed
    /// and clocks drifting fifteen times beyond the assumed bound, which must make lease
    /// reads non-linearizable.
    pub fn drift_beyond_bound(seed: u64, replicas: usize) -> Options {
        let mut options = Options::pressing_the_lease(seed, replicas);
        options.drift_beyond_bound = true;
        options.clock_drift_max_ppm = DRIFT_BOUND_DEFAULT_PPM;
        options.clock_rate_max_ppm = 15 * DRIFT_BOUND_DEFAULT_PPM;
        options
    }

    /// The options of `seed` with the lease pressed (below), clocks within the bound: the
    /// runs the negative control must be told apart from.
    pub fn pressing_the_lease(seed: u64, replicas: usize) -> Options {
        let mut options = Options::from_seed(seed, replicas, None);
        let mut rng = Rng::new(seed ^ 0xB0_0D_DF_17);
        options.press_the_lease(&mut rng);
        options
    }

    /// The options of `seed` with takeovers pressed (below): the runs that show whether
    /// phase 1 re-proposes the value a quorum may have chosen.
    pub fn pressing_takeovers(seed: u64, replicas: usize) -> Options {
        let mut options = Options::from_seed(seed, replicas, None);
        let mut rng = Rng::new(seed ^ 0x7A_4E_0E_12);
        options.press_takeovers(&mut rng);
        options
    }

    /// The run that puts phase 1 to the test: the takeover nemesis every few seconds,
    /// writes flowing to the primary when it is cut off (at least three clients, few
    /// reads), and a ring that can elect the next primary meanwhile (crashes rarer, no
    /// power loss, no pauses). Every other fault stays as drawn.
    fn press_takeovers(&mut self, rng: &mut Rng) {
        self.takeover_every_us = rng.between(1_500, 3_000) * 1000;
        self.clients = self.clients.max(3);
        self.read_fraction = self.read_fraction.min(0.2);
        if self.crash_every_us > 0 {
            self.crash_every_us = self.crash_every_us.max(5_000_000);
        }
        self.correlated_crash_probability = 0.0;
        self.pause_every_us = 0;
    }

    /// The run that puts the read lease to the test: long leases, clocks at the drift
    /// bound, the primary isolated with the clocks skewed against it while a lease reader
    /// stays with it and writers move on to the new primary; no other fault blurs it.
    fn press_the_lease(&mut self, rng: &mut Rng) {
        self.clock_drift = true;
        self.clock_drift_max_ppm = [100_000, 200_000][rng.index(2)];
        self.clock_rate_max_ppm = self.clock_drift_max_ppm / 2;
        self.drift_every_us = 0;
        self.election_delay_min_ms = 2_000;
        self.election_delay_spread_ms = [0, 20, 100][rng.index(3)];
        self.isolate_primary_every_us = rng.between(5_000, 7_000) * 1000;
        self.attempt_timeout_us = 300_000;
        self.lease_reader = true;
        self.clients = self.clients.max(3);
        self.keys = 1;
        self.read_fraction = 0.2;
        self.log_read_fraction = 0.0;
        self.fast_read_fraction = 0.0;
        self.read_index_fraction = 0.0;
        self.fault_phase_us = 20_000_000;
        self.drop_probability = 0.0;
        self.long_delay_probability = 0.0;
        self.partition_every_us = 0;
        self.crash_every_us = 0;
        self.pause_every_us = 0;
        self.relinquish_every_us = 0;
        self.reconfigure_every_us = 0;
        self.spares = 0;
        self.install_crash_probability = 0.0;
        self.takeover_every_us = 0;
    }
}

/// The drift bound replicas assume by default (`Config::clock_drift_max_ppm`).
pub const DRIFT_BOUND_DEFAULT_PPM: u64 = 10_000;
