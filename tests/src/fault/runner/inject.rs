//! The faults of a run: the loop that injects them on the [`Schedule`] until the run's
//! duration is over, and what starting and ending each [`Nemesis`] does to the replicas,
//! their network and their disks.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::compose::Change;
use super::{last_lines, Runner};
use crate::fault::nemesis::{shuffle, Nemesis, Schedule};
use crate::fault::net::Mode;
use crate::fault::segment::{
    corrupt_byte, newest_segment, restore_byte, write_torn_tail, CORRUPT_SPAN_BYTES, SEGMENT_HEADER_BYTES,
};

/// What to undo when a fault ends.
#[derive(Debug)]
pub(super) enum Undo {
    Nothing,
    Network,
    Restart(Vec<u64>),
    Resume(Vec<u64>),
    /// The replica, and how much of its stderr was written before its disk filled.
    FreeDiskAndRestart(u64, usize),
    /// Release the frozen client sessions.
    ReleaseClients,
    /// Wait for the answer to a configuration change and learn the members.
    Membership(Change),
    /// Several, undone in order.
    All(Vec<Undo>),
}

impl Runner {
    /// Injects faults until the duration is over (or Ctrl-C).
    pub(super) async fn inject(&mut self) {
        let end = Instant::now() + self.options.duration;
        let mut nemeses: Vec<Nemesis> = self.options.nemeses.clone();
        if self.network.mode() == Mode::Loopback && nemeses.contains(&Nemesis::DiskFull) {
            nemeses.retain(|&n| n != Nemesis::DiskFull);
            self.note("disk-full skipped: it needs a bounded disk per replica (root, namespace mode)".into());
        }
        if self.network.mode() == Mode::Loopback && nemeses.contains(&Nemesis::ClientCut) {
            nemeses.retain(|&n| n != Nemesis::ClientCut);
            self.note(
                "client-cut skipped: it drops the clients' packets in a namespace (root, namespace mode)"
                    .into(),
            );
        }
        if let Err(why) = &self.options.faketime {
            if nemeses.contains(&Nemesis::ClockSkew) {
                let why = why.clone();
                nemeses.retain(|&n| n != Nemesis::ClockSkew);
                self.note(format!("clock-skew skipped: {why}"));
            }
        }
        let mut schedule = Schedule::new(nemeses, self.options.round_robin, &mut self.rng);
        if schedule.is_empty() {
            self.sleep_until(end).await;
            return;
        }
        while Instant::now() < end && !self.interrupted() {
            let calm = Duration::from_millis(self.rng.between(1000, 2500));
            self.sleep_until((Instant::now() + calm).min(end)).await;
            if Instant::now() >= end || self.interrupted() {
                break;
            }
            let nemesis = schedule.next(&mut self.rng);
            let hold = Duration::from_millis(self.rng.between(2000, 5000));
            let undo = self.start_fault(nemesis).await;
            *self.faults.entry(nemesis.name()).or_default() += 1;
            self.sleep_until(Instant::now() + hold).await;
            self.end_fault(undo).await;
        }
        if self.interrupted() {
            self.problem("interrupted (Ctrl-C)".into());
        }
    }

    /// Cuts in both directions between every replica of `a` and every replica of `b`.
    pub(super) fn cut_between(&mut self, a: &[u64], b: &[u64]) -> BTreeSet<(u64, u64)> {
        let mut cuts = BTreeSet::new();
        for &x in a {
            for &y in b {
                cuts.insert((x, y));
                cuts.insert((y, x));
            }
        }
        cuts
    }

    pub(super) fn set_cuts(&mut self, cuts: &BTreeSet<(u64, u64)>) -> Undo {
        match self.network.set_cuts(cuts) {
            Ok(()) => Undo::Network,
            Err(error) => {
                self.problem(format!("cutting links: {error}"));
                Undo::Network
            }
        }
    }

    /// The members of the newest configuration known, in a random order.
    pub(super) fn shuffled_members(&mut self) -> Vec<u64> {
        let mut ids = self.members.clone();
        shuffle(&mut ids, &mut self.rng);
        ids
    }

    /// Starts `nemesis`; returns what ending it must undo.
    async fn start_fault(&mut self, nemesis: Nemesis) -> Undo {
        match nemesis {
            Nemesis::PartitionMajority => {
                let ids = self.shuffled_members();
                let (minority, majority) = ids.split_at((ids.len() - 1) / 2);
                let cuts = self.cut_between(minority, majority);
                self.note(format!("partition {minority:?} | {majority:?}"));
                self.set_cuts(&cuts)
            }
            Nemesis::IsolatePrimary => {
                let primary = self.primary_or_any().await;
                let others: Vec<u64> = self.cluster.ids().into_iter().filter(|&id| id != primary).collect();
                let cuts = self.cut_between(&[primary], &others);
                self.note(format!("isolate the primary {primary}"));
                self.set_cuts(&cuts)
            }
            Nemesis::Bridge => {
                let ids = self.shuffled_members();
                let middle = (ids.len() - 1) / 2;
                let cuts = self.cut_between(&ids[..middle], &ids[middle + 1..]);
                self.note(format!(
                    "bridge {:?} - {} - {:?}",
                    &ids[..middle],
                    ids[middle],
                    &ids[middle + 1..]
                ));
                self.set_cuts(&cuts)
            }
            Nemesis::OneWay => {
                let primary = self.primary_or_any().await;
                let others: Vec<u64> = self.cluster.ids().into_iter().filter(|&id| id != primary).collect();
                let deaf = self.rng.below(2) == 0;
                let cuts: BTreeSet<(u64, u64)> = others
                    .iter()
                    .map(|&other| if deaf { (other, primary) } else { (primary, other) })
                    .collect();
                self.note(if deaf {
                    format!("one-way: the primary {primary} hears nobody")
                } else {
                    format!("one-way: nobody hears the primary {primary}")
                });
                self.set_cuts(&cuts)
            }
            Nemesis::Kill => {
                let n = 1 + self.rng.below(2) as usize;
                let victims = self.pick(n);
                let primary = self.primary(Duration::ZERO).await;
                self.note(format!("SIGKILL {victims:?}"));
                for &id in &victims {
                    self.kill(id, primary == Some(id));
                }
                Undo::Restart(victims)
            }
            Nemesis::KillPrimary => {
                let primary = self.primary_or_any().await;
                self.note(format!("SIGKILL the primary {primary}"));
                self.kill(primary, true);
                Undo::Restart(vec![primary])
            }
            Nemesis::Pause => {
                let n = 1 + self.rng.below(2) as usize;
                let mut victims = self.pick(n);
                if self.rng.below(2) == 0 {
                    let primary = self.primary_or_any().await;
                    if !victims.contains(&primary) {
                        victims[0] = primary;
                    }
                }
                self.note(format!("SIGSTOP {victims:?}"));
                self.pause_replicas(&victims);
                Undo::Resume(victims)
            }
            Nemesis::Delay => {
                let min = self.rng.between(5, 30);
                let max = min + self.rng.between(10, 120);
                self.note(format!("delay every replica link by {min}..{max} ms"));
                if let Err(error) = self.network.set_delay(min, max) {
                    self.problem(format!("delaying links: {error}"));
                }
                Undo::Network
            }
            Nemesis::Loss => {
                let percent = self.rng.between(5, 30);
                self.note(format!("lose {percent}% of the messages between replicas"));
                if let Err(error) = self.network.set_loss(percent) {
                    self.problem(format!("making links lossy: {error}"));
                }
                Undo::Network
            }
            Nemesis::TornTail => {
                let victim = self.pick(1)[0];
                self.torn_tail(victim).await;
                Undo::Nothing
            }
            Nemesis::Corrupt => {
                let victim = self.pick(1)[0];
                self.corrupt(victim).await;
                Undo::Nothing
            }
            Nemesis::DiskFull => {
                let victim = self.pick(1)[0];
                let said_before = self.cluster.stderr(victim).len();
                match self.network.fill_disk(victim) {
                    Ok(bytes) => {
                        self.note(format!("filled replica {victim}'s disk ({} MiB)", bytes >> 20));
                        self.may_exit.insert(victim);
                        if self.rng.below(2) == 0 {
                            self.restart_on_full_disk(victim).await;
                        }
                    }
                    Err(error) => self.problem(format!("filling replica {victim}'s disk: {error}")),
                }
                Undo::FreeDiskAndRestart(victim, said_before)
            }
            Nemesis::Membership => self.start_membership().await,
            Nemesis::ClockSkew => self.clock_skew().await,
            Nemesis::Composed => self.composed().await,
            Nemesis::MajorityKill => self.majority_kill().await,
            Nemesis::PowerLoss => {
                self.power_loss().await;
                Undo::Nothing
            }
            Nemesis::ClientCut => self.client_cut().await,
            Nemesis::ClientPause => self.client_pause(),
        }
    }

    /// Ends a fault: undoes what starting it did.
    async fn end_fault(&mut self, undo: Undo) {
        match undo {
            Undo::Nothing => {}
            Undo::All(undos) => {
                for undo in undos {
                    Box::pin(self.end_fault(undo)).await;
                }
            }
            Undo::ReleaseClients => {
                if let Some(pauser) = &self.pauser {
                    pauser.resume_all();
                }
                self.note("client sessions released".into());
            }
            Undo::Membership(change) => self.end_membership(change).await,
            Undo::Network => {
                if let Err(error) = self.network.heal() {
                    self.problem(format!("healing the network: {error}"));
                }
                self.note("network healed".into());
            }
            Undo::Restart(ids) => {
                for id in ids {
                    self.restart(id);
                }
            }
            Undo::Resume(ids) => {
                for id in ids {
                    if self.paused.remove(&id) && self.cluster.is_running(id) {
                        self.cluster.resume(id);
                    }
                }
                self.note("SIGCONT".into());
            }
            Undo::FreeDiskAndRestart(id, said_before) => {
                if let Err(error) = self.network.free_disk(id) {
                    self.problem(format!("freeing replica {id}'s disk: {error}"));
                }
                self.watch_exits();
                let said = self.cluster.stderr(id);
                let full: Vec<&str> = said
                    .get(said_before..)
                    .unwrap_or_default()
                    .lines()
                    .filter(|line| line.contains("No space left") || line.contains("ERROR"))
                    .take(2)
                    .collect();
                if full.is_empty() {
                    self.note(format!("replica {id} reported no error while its disk was full"));
                } else {
                    self.note(format!("replica {id} while its disk was full: {}", full.join(" | ")));
                }
                self.may_exit.remove(&id);
                if self.cluster.is_running(id) {
                    // It must go on by itself (the end checks that it converges).
                    self.note(format!("freed replica {id}'s disk; it kept running"));
                } else {
                    self.note(format!("freed replica {id}'s disk; restarting it"));
                    self.restart(id);
                }
            }
        }
    }

    /// Kills `victim` while its disk is full and starts it again: it must either start or
    /// refuse, saying the disk is full.
    async fn restart_on_full_disk(&mut self, victim: u64) {
        self.kill_counting_primary(victim).await;
        let (status, said) = self.cluster.spawn_expecting_failure_or_start(victim, Duration::from_secs(30));
        match status {
            None => self.note(format!("SIGKILL {victim} and restart on its full disk: it started")),
            Some(status) if said.contains("No space left") => self.note(format!(
                "SIGKILL {victim} and restart on its full disk: refused ({status}): {}",
                last_lines(&said, 1)
            )),
            Some(status) => self.problem(format!(
                "replica {victim} exited ({status}) on a full disk without saying so:\n{}",
                last_lines(&said, 10)
            )),
        }
    }

    /// Kills `victim`, writes a torn record after the end of its newest log segment, and
    /// restarts it: it must start and report the cut.
    async fn torn_tail(&mut self, victim: u64) {
        let Some(segment) = self.kill_for_log_damage(victim, Nemesis::TornTail).await else { return };
        let Some(name) = self.tear(victim, &segment) else {
            self.restart(victim);
            return;
        };
        let before = self.cluster.stderr(victim).len();
        self.restart(victim);
        self.check_torn_tail_cut(victim, &name, before);
    }

    /// Writes a torn record after the end of `segment` of the killed `victim`; returns the
    /// segment's file name, or `None` (a problem) if it cannot be written.
    pub(super) fn tear(&mut self, victim: u64, segment: &std::path::Path) -> Option<String> {
        let garbage: Vec<u8> = (0..1 + self.rng.below(300)).map(|_| self.rng.next_u64() as u8 | 1).collect();
        match write_torn_tail(segment, &garbage) {
            Ok(offset) => self.note(format!(
                "SIGKILL {victim}, {} torn bytes at {} byte {offset}",
                garbage.len(),
                segment.display()
            )),
            Err(error) => {
                self.problem(format!("writing a torn tail into {}: {error}", segment.display()));
                return None;
            }
        }
        Some(segment.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())
    }

    /// After `victim` was restarted on a torn tail in segment `name`: if it runs, what it
    /// wrote since byte `said_before` of its stderr must report the cut.
    pub(super) fn check_torn_tail_cut(&mut self, victim: u64, name: &str, said_before: usize) {
        let said = self.cluster.stderr(victim).get(said_before..).unwrap_or_default().to_owned();
        if self.cluster.is_running(victim) && !(said.contains("cut a torn tail") && said.contains(name)) {
            self.problem(format!(
                "replica {victim} started after a torn tail in {name} without reporting the cut:\n{}",
                last_lines(&said, 10)
            ));
        }
    }

    /// Kills `victim`, flips a byte in the first record of its newest segment (synced
    /// before the records after it), and restarts it: it must refuse, naming the file and
    /// offset. Then the byte is restored and it must start.
    async fn corrupt(&mut self, victim: u64) {
        let Some(segment) = self.kill_for_log_damage(victim, Nemesis::Corrupt).await else { return };
        let offset = SEGMENT_HEADER_BYTES + self.rng.below(CORRUPT_SPAN_BYTES);
        let flip = 1u8 << self.rng.below(8);
        let original = match corrupt_byte(&segment, offset, flip) {
            Ok(Some(original)) => original,
            Ok(None) => {
                self.note(format!("corrupt on {victim} skipped: {} holds too little", segment.display()));
                self.restart(victim);
                return;
            }
            Err(error) => {
                self.problem(format!("corrupting {}: {error}", segment.display()));
                self.restart(victim);
                return;
            }
        };
        self.note(format!("SIGKILL {victim}, flipped byte {offset} of {}", segment.display()));
        let (status, said) = self.cluster.spawn_expecting_failure_or_start(victim, Duration::from_secs(30));
        let name = segment.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        match status {
            Some(status) if !status.success() && said.contains("corrupt log") && said.contains(&name) => {
                self.note(format!("replica {victim} refused its corrupt log ({status})"));
            }
            Some(status) => self.problem(format!(
                "replica {victim} exited ({status}) on a corrupt log without naming it:\n{}",
                last_lines(&said, 10)
            )),
            None => {
                self.problem(format!(
                    "replica {victim} started on a log with byte {offset} of {name} flipped:\n{}",
                    last_lines(&said, 10)
                ));
                self.kill(victim, false);
            }
        }
        if let Err(error) = restore_byte(&segment, offset, original) {
            self.problem(format!("restoring {}: {error}", segment.display()));
        }
        self.restart(victim);
    }

    /// SIGKILLs `victim`, as a primary kill if it is the primary right now.
    pub(super) async fn kill_counting_primary(&mut self, victim: u64) {
        let primary = self.primary(Duration::ZERO).await;
        self.kill(victim, primary == Some(victim));
    }

    /// SIGKILLs `victim` and returns its newest log segment, for `nemesis` to damage; if it
    /// has none, says `nemesis` is skipped, restarts it and returns `None`.
    async fn kill_for_log_damage(&mut self, victim: u64, nemesis: Nemesis) -> Option<PathBuf> {
        self.kill_counting_primary(victim).await;
        match newest_segment(self.cluster.data_dir(victim)) {
            Ok(segment) => Some(segment),
            Err(error) => {
                self.note(format!("{} on {victim} skipped: {error}", nemesis.name()));
                self.restart(victim);
                None
            }
        }
    }
}
