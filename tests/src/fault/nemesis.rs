//! The faults a run can inject ([`Nemesis`]) and the seeded [`Schedule`] that picks which
//! comes next. What each fault does to the ring is in [`crate::fault::runner`].

use rsl_core::SplitMix64;

/// One kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Nemesis {
    /// Two replicas cut off from the other three, both ways.
    PartitionMajority,
    /// The primary cut off from everyone, both ways.
    IsolatePrimary,
    /// Two pairs that cannot reach each other, and a fifth replica that reaches all.
    Bridge,
    /// The primary stops hearing the others, or the others stop hearing it.
    OneWay,
    /// SIGKILL one or two random replicas; restart them when the fault ends.
    Kill,
    /// SIGKILL the primary; restart it when the fault ends.
    KillPrimary,
    /// SIGSTOP one or two replicas (the primary half the time); SIGCONT when it ends.
    Pause,
    /// Every replica link delays its bytes by tens of milliseconds.
    Delay,
    /// Messages between replicas are lost (packets in namespaces, connections on loopback).
    Loss,
    /// SIGKILL a replica, leave a torn write after the end of its log, restart it: the
    /// recovery must cut it and report it.
    TornTail,
    /// SIGKILL a replica, flip a byte in a record of its log that was synced before later
    /// ones, restart it: it must refuse to start, naming the file and offset. The byte is
    /// then restored and it starts.
    Corrupt,
    /// Fill a replica's disk to the last byte (half the time also SIGKILL and restart it:
    /// it must start or refuse, saying why), then free it; a replica that stopped is
    /// restarted, one that kept running must go on by itself (namespace mode only: each
    /// replica has a bounded tmpfs).
    DiskFull,
    /// Add, remove or replace a member with a configuration change (`reconfigure`) while a
    /// minority is cut off, a member is killed or a member is paused; the ring has a spare
    /// replica, started joining, to add.
    Membership,
    /// Restart a replica under libfaketime with its clocks (monotonic included) running
    /// fast or slow, within the drift bound: the primary slow, or a secondary fast.
    ClockSkew,
    /// A minority cut off while a member is paused and another is killed and restarted.
    Composed,
    /// SIGKILL a majority of the members at once; restart them when the fault ends.
    MajorityKill,
    /// SIGKILL every replica at once, leave a torn write after the end of some of their
    /// logs (what an unsynced write can leave), restart them all.
    PowerLoss,
    /// Drop the clients' packets to and from the primary, both ways, mid-operation
    /// (namespace mode only).
    ClientCut,
    /// Freeze some client sessions mid-operation (their operations are not polled), then
    /// let them go on: what they were doing ends as it ends, often with an unknown outcome.
    ClientPause,
}

impl Nemesis {
    /// Every nemesis.
    pub const ALL: [Nemesis; 19] = [
        Nemesis::PartitionMajority,
        Nemesis::IsolatePrimary,
        Nemesis::Bridge,
        Nemesis::OneWay,
        Nemesis::Kill,
        Nemesis::KillPrimary,
        Nemesis::Pause,
        Nemesis::Delay,
        Nemesis::Loss,
        Nemesis::TornTail,
        Nemesis::Corrupt,
        Nemesis::DiskFull,
        Nemesis::Membership,
        Nemesis::ClockSkew,
        Nemesis::Composed,
        Nemesis::MajorityKill,
        Nemesis::PowerLoss,
        Nemesis::ClientCut,
        Nemesis::ClientPause,
    ];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Nemesis::PartitionMajority => "partition",
            Nemesis::IsolatePrimary => "isolate-primary",
            Nemesis::Bridge => "bridge",
            Nemesis::OneWay => "one-way",
            Nemesis::Kill => "kill",
            Nemesis::KillPrimary => "kill-primary",
            Nemesis::Pause => "pause",
            Nemesis::Delay => "delay",
            Nemesis::Loss => "loss",
            Nemesis::TornTail => "torn-tail",
            Nemesis::Corrupt => "corrupt",
            Nemesis::DiskFull => "disk-full",
            Nemesis::Membership => "membership",
            Nemesis::ClockSkew => "clock-skew",
            Nemesis::Composed => "composed",
            Nemesis::MajorityKill => "majority-kill",
            Nemesis::PowerLoss => "power-loss",
            Nemesis::ClientCut => "client-cut",
            Nemesis::ClientPause => "client-pause",
        }
    }

    /// Parses a comma-separated list of names (or `all`).
    pub fn parse_list(text: &str) -> Result<Vec<Nemesis>, String> {
        let mut list = Vec::new();
        for name in text.split(',').map(str::trim).filter(|name| !name.is_empty()) {
            if name == "all" {
                list.extend(Nemesis::ALL);
                continue;
            }
            let nemesis = Nemesis::ALL.into_iter().find(|n| n.name() == name).ok_or_else(|| {
                let names: Vec<&str> = Nemesis::ALL.iter().map(|n| n.name()).collect();
                format!("unknown nemesis `{name}`; expected `all` or some of {}", names.join(", "))
            })?;
            list.push(nemesis);
        }
        list.sort();
        list.dedup();
        if list.is_empty() {
            return Err("no nemesis given".into());
        }
        Ok(list)
    }
}

/// Seconds of faults per nemesis in a round-robin run (`--quick`): a calm of 1 to 2.5 s
/// and a fault of 2 to 5 s take 5.25 s on average; the rest is for restarts.
pub const ROUND_ROBIN_SECONDS_PER_NEMESIS: u64 = 6;

/// How long a round-robin run of `nemeses` injects faults so that each comes up once: at
/// least 90 s, and [`ROUND_ROBIN_SECONDS_PER_NEMESIS`] per nemesis.
pub fn round_robin_duration(nemeses: usize) -> std::time::Duration {
    std::time::Duration::from_secs((nemeses as u64 * ROUND_ROBIN_SECONDS_PER_NEMESIS).max(90))
}

/// Which nemesis comes next: the nemeses in a seeded order, walked in turn (round-robin,
/// so a short run sees every kind) or picked from at random.
#[derive(Clone, Debug)]
pub struct Schedule {
    order: Vec<Nemesis>,
    round_robin: bool,
    /// Picks made so far.
    picked: usize,
}

impl Schedule {
    /// `nemeses` in an order shuffled with `rng`.
    pub fn new(mut nemeses: Vec<Nemesis>, round_robin: bool, rng: &mut SplitMix64) -> Schedule {
        shuffle(&mut nemeses, rng);
        Schedule { order: nemeses, round_robin, picked: 0 }
    }

    /// Whether there is nothing to inject.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The next nemesis (`rng` picks it unless the schedule is round-robin). The schedule
    /// must not be empty.
    pub fn next(&mut self, rng: &mut SplitMix64) -> Nemesis {
        self.picked += 1;
        if self.round_robin {
            self.order[(self.picked - 1) % self.order.len()]
        } else {
            self.order[rng.below(self.order.len() as u64) as usize]
        }
    }
}

/// Shuffles `items` in place (Fisher-Yates) with `rng`.
pub fn shuffle<T>(items: &mut [T], rng: &mut SplitMix64) {
    for i in (1..items.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        items.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nemesis_lists_parse() {
        assert_eq!(Nemesis::parse_list("all").unwrap().len(), Nemesis::ALL.len());
        assert_eq!(Nemesis::parse_list("kill, pause,kill").unwrap(), vec![Nemesis::Kill, Nemesis::Pause]);
        assert!(Nemesis::parse_list("kill,fire").unwrap_err().contains("unknown nemesis `fire`"));
        assert!(Nemesis::parse_list("").is_err());
        for nemesis in Nemesis::ALL {
            assert_eq!(Nemesis::parse_list(nemesis.name()).unwrap(), vec![nemesis]);
        }
    }

    #[test]
    fn round_robin_schedules_walk_a_seeded_order() {
        let mut rng = SplitMix64::new(3);
        let mut schedule = Schedule::new(Nemesis::ALL.to_vec(), true, &mut rng);
        let mut first: Vec<Nemesis> = (0..Nemesis::ALL.len()).map(|_| schedule.next(&mut rng)).collect();
        let again: Vec<Nemesis> = (0..Nemesis::ALL.len()).map(|_| schedule.next(&mut rng)).collect();
        assert_eq!(first, again, "the second round repeats the first");
        first.sort();
        assert_eq!(first, Nemesis::ALL, "one round holds every nemesis once");
        let mut random = Schedule::new(vec![Nemesis::Kill, Nemesis::Pause], false, &mut rng);
        assert!((0..20).all(|_| [Nemesis::Kill, Nemesis::Pause].contains(&random.next(&mut rng))));
        assert!(Schedule::new(Vec::new(), true, &mut rng).is_empty());
    }

    #[test]
    fn round_robin_runs_give_every_nemesis_a_turn() {
        assert_eq!(round_robin_duration(1).as_secs(), 90);
        assert_eq!(round_robin_duration(Nemesis::ALL.len()).as_secs(), 6 * 19);
        let names: std::collections::BTreeSet<&str> = Nemesis::ALL.iter().map(|n| n.name()).collect();
        assert_eq!(names.len(), Nemesis::ALL.len(), "names are distinct");
        assert_eq!(
            Nemesis::parse_list(
                "membership,clock-skew,composed,majority-kill,power-loss,client-cut,client-pause"
            )
            .unwrap()
            .len(),
            7
        );
    }

    #[test]
    fn shuffles_permute() {
        let mut items: Vec<u64> = (0..50).collect();
        shuffle(&mut items, &mut SplitMix64::new(9));
        assert_ne!(items, (0..50).collect::<Vec<_>>());
        items.sort_unstable();
        assert_eq!(items, (0..50).collect::<Vec<_>>());
    }
}
