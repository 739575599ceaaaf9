//! The faults that act on more than one thing at once: configuration changes during
//! another fault (membership), restarts under a skewed clock, a partition with a paused and
//! a restarting replica, majority kills, a whole-ring power loss, and faults of the clients
//! (cut from the primary, frozen mid-operation). The simple faults are in `inject.rs`.
//!
//! A power loss kills every replica at once and leaves a torn write after the end of about
//! half of their logs: what a write that was not synced can leave. It does not drop page
//! cache the replicas wrote but did not sync: SIGKILL keeps the page cache, each replica's
//! disk is a tmpfs (no device behind it whose write cache could be dropped), and this host
//! has no device-mapper to put one there (dm-flakey, dm-log-writes). Losing unsynced writes
//! is modelled by rsl-sim's disk and rsl-log's crash-consistency tests.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rsl_kv::proto as pb;
use rsl_kv::{Client, ClientError};
use tokio::task::JoinHandle;

use super::inject::Undo;
use super::Runner;
use crate::fault::nemesis::shuffle;
use crate::fault::segment::newest_segment;
use crate::fault::skew::{drift_bound_ppm, rate_spec, skew_ppm_max};
use crate::fault::workload::client_options;

/// A configuration never shrinks below this many members.
const MEMBERS_MIN: usize = 3;
/// Longest a configuration change is waited for, during its fault and after.
const CHANGE_DEADLINE: Duration = Duration::from_secs(10);

/// What a membership fault changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChangeKind {
    /// A replica from outside the configuration joins it.
    Add,
    /// A member leaves.
    Remove,
    /// A member leaves and a replica from outside takes its place, in one change.
    Replace,
}

impl ChangeKind {
    /// The changes possible with `members` members and `outside` replicas outside the
    /// configuration.
    fn possible(members: usize, outside: usize) -> Vec<ChangeKind> {
        let mut kinds = Vec::new();
        if outside > 0 {
            kinds.extend([ChangeKind::Add, ChangeKind::Replace]);
        }
        if members > MEMBERS_MIN {
            kinds.push(ChangeKind::Remove);
        }
        kinds
    }

    /// The members after the change (sorted): `newcomer` joins, `leaver` leaves.
    fn apply(self, members: &[u64], newcomer: Option<u64>, leaver: u64) -> Vec<u64> {
        let mut target: Vec<u64> = members.to_vec();
        if self != ChangeKind::Add {
            target.retain(|&id| id != leaver);
        }
        if self != ChangeKind::Remove {
            target.extend(newcomer);
        }
        target.sort_unstable();
        target.dedup();
        target
    }

    fn name(self) -> &'static str {
        match self {
            ChangeKind::Add => "add",
            ChangeKind::Remove => "remove",
            ChangeKind::Replace => "replace",
        }
    }
}

/// A configuration change asked for during a fault.
#[derive(Debug)]
pub(super) struct Change {
    /// The members asked for.
    members: Vec<u64>,
    /// The answer, once the change is chosen (or refused).
    answer: JoinHandle<Result<pb::ReconfigureResponse, ClientError>>,
}

impl Runner {
    /// Asks for a change of members (add a replica from outside the configuration, remove
    /// a member, or both: a replacement) while a minority of the members is cut off, a
    /// member is killed, a member is paused, or nothing else happens.
    pub(super) async fn start_membership(&mut self) -> Undo {
        let members = self.refresh_members().await;
        let outside: Vec<u64> = self.cluster.ids().into_iter().filter(|id| !members.contains(id)).collect();
        let kinds = ChangeKind::possible(members.len(), outside.len());
        if kinds.is_empty() {
            self.note(format!("membership skipped: members {members:?}, nobody outside to add"));
            return Undo::Nothing;
        }
        let kind = kinds[self.rng.below(kinds.len() as u64) as usize];
        let newcomer = outside.get(self.rng.below(outside.len().max(1) as u64) as usize).copied();
        let leaver = members[self.rng.below(members.len() as u64) as usize];
        let target = kind.apply(&members, newcomer, leaver);
        let kind = kind.name();

        let mut during = self.shuffled_members();
        let undo = match self.rng.below(4) {
            0 => {
                during.truncate((members.len() - 1) / 2);
                let rest: Vec<u64> =
                    self.cluster.ids().into_iter().filter(|id| !during.contains(id)).collect();
                let cuts = self.cut_between(&during, &rest);
                self.note(format!("membership: {kind} while the members {during:?} are cut off"));
                self.set_cuts(&cuts)
            }
            1 => {
                let victim = during[0];
                self.note(format!("membership: {kind} while member {victim} is killed (SIGKILL)"));
                self.kill_counting_primary(victim).await;
                Undo::Restart(vec![victim])
            }
            2 => {
                let victim = during[0];
                self.note(format!("membership: {kind} while member {victim} is paused (SIGSTOP)"));
                self.pause_replicas(&[victim]);
                Undo::Resume(vec![victim])
            }
            _ => Undo::Nothing,
        };
        self.note(format!("reconfigure {members:?} -> {target:?}"));
        let options = client_options(&self.cluster.security(), CHANGE_DEADLINE);
        let mut client =
            Client::new(self.cluster.client_addresses(), options).expect("the cluster's addresses are valid");
        let asked = target.clone();
        let answer = tokio::spawn(async move { client.reconfigure(&asked).await });
        Undo::All(vec![undo, Undo::Membership(Change { members: target, answer })])
    }

    /// Waits for the change's answer (after the fault during it ended) and learns the
    /// members; a change that failed may still take effect, so the members are read from
    /// the replicas either way.
    pub(super) async fn end_membership(&mut self, change: Change) {
        let Change { members, answer } = change;
        match tokio::time::timeout(CHANGE_DEADLINE, answer).await {
            Ok(Ok(Ok(response))) => {
                *self.faults.entry("membership-chosen").or_default() += 1;
                self.note(format!("configuration {} {:?} chosen", response.configuration, response.members));
            }
            Ok(Ok(Err(error))) => {
                self.note(format!("the change to {members:?} failed (it may still take effect): {error}"))
            }
            Ok(Err(error)) => self.problem(format!("the change to {members:?} panicked: {error}")),
            Err(_) => {
                self.note(format!("the change to {members:?} is still unanswered after {CHANGE_DEADLINE:?}"))
            }
        }
        let now = self.refresh_members().await;
        self.note(format!("members now {now:?}"));
    }

    /// Restarts a replica under libfaketime with its clocks skewed within the bound: the
    /// primary slow (its lease then lasts longer in real time), or another replica fast
    /// (its election delay then ends early). It stays skewed until it is next restarted.
    pub(super) async fn clock_skew(&mut self) -> Undo {
        let Ok(faketime) = self.options.faketime.clone() else { return Undo::Nothing };
        let primary = self.primary(Duration::ZERO).await;
        let slow_primary = primary.is_some() && self.rng.below(2) == 0;
        let victim = match primary {
            Some(primary) if slow_primary => primary,
            _ => {
                let others: Vec<u64> =
                    self.cluster.ids().into_iter().filter(|&id| Some(id) != primary).collect();
                others[self.rng.below(others.len() as u64) as usize]
            }
        };
        let max = skew_ppm_max();
        let magnitude = self.rng.between(max / 2, max) as i64;
        let ppm = if slow_primary { -magnitude } else { magnitude };
        self.kill(victim, primary == Some(victim));
        self.note(format!(
            "SIGKILL {victim}{}, restart it with its clocks at FAKETIME=\"{}\" ({ppm:+} ppm; drift bound {} ppm)",
            if slow_primary { " (the primary)" } else { "" },
            rate_spec(ppm),
            drift_bound_ppm()
        ));
        self.cluster.set_env(victim, faketime.environment(ppm));
        self.restart(victim);
        self.cluster.set_env(victim, Vec::new());
        Undo::Nothing
    }

    /// Cuts a minority of the members off, pauses a member and kills another, restarts the
    /// killed one while the cut and the pause go on; the cut and the pause end with the
    /// fault.
    pub(super) async fn composed(&mut self) -> Undo {
        let ids = self.shuffled_members();
        let minority = &ids[..(ids.len() - 1) / 2];
        let rest: Vec<u64> = self.cluster.ids().into_iter().filter(|id| !minority.contains(id)).collect();
        let cuts = self.cut_between(minority, &rest);
        let paused = ids[self.rng.below(ids.len() as u64) as usize];
        let others: Vec<u64> = ids.iter().copied().filter(|&id| id != paused).collect();
        let restarted = others[self.rng.below(others.len() as u64) as usize];
        self.note(format!(
            "composed: partition {minority:?} | {rest:?}, SIGSTOP {paused}, SIGKILL {restarted} and restart it"
        ));
        let undo_cut = self.set_cuts(&cuts);
        self.pause_replicas(&[paused]);
        self.kill_counting_primary(restarted).await;
        let down = Duration::from_millis(self.rng.between(500, 1500));
        self.sleep_until(Instant::now() + down).await;
        self.restart(restarted);
        Undo::All(vec![undo_cut, Undo::Resume(vec![paused])])
    }

    /// SIGKILLs a majority of the members at once; they restart when the fault ends.
    pub(super) async fn majority_kill(&mut self) -> Undo {
        let mut victims = self.shuffled_members();
        victims.truncate(victims.len() / 2 + 1);
        victims.sort_unstable();
        self.note(format!("SIGKILL a majority of the members at once: {victims:?}"));
        self.kill_at_once(&victims).await;
        Undo::Restart(victims)
    }

    /// SIGKILLs every replica at once, leaves a torn write after the end of about half of
    /// their logs, and restarts them all (in a random order); those with a torn tail must
    /// report the cut.
    pub(super) async fn power_loss(&mut self) {
        let ids = self.cluster.ids();
        self.note(format!("power loss: SIGKILL every replica at once {ids:?}"));
        self.kill_at_once(&ids).await;
        let mut torn = Vec::new();
        for &id in &ids {
            if self.rng.below(2) == 0 {
                continue;
            }
            match newest_segment(self.cluster.data_dir(id)) {
                Ok(segment) => {
                    if let Some(name) = self.tear(id, &segment) {
                        torn.push((id, name));
                    }
                }
                Err(error) => self.note(format!("no torn tail for {id}: {error}")),
            }
        }
        let mut order = ids;
        shuffle(&mut order, &mut self.rng);
        for id in order {
            let before = self.cluster.stderr(id).len();
            self.restart(id);
            if let Some((_, name)) = torn.iter().find(|(torn, _)| *torn == id) {
                let name = name.clone();
                self.check_torn_tail_cut(id, &name, before);
            }
        }
    }

    /// Drops the clients' packets to and from the primary, both ways, for the fault:
    /// operations in flight there lose their requests or their answers.
    pub(super) async fn client_cut(&mut self) -> Undo {
        let primary = self.primary_or_any().await;
        self.note(format!("cut the clients from the primary {primary} (both ways)"));
        if let Err(error) = self.network.set_client_cuts(&BTreeSet::from([primary])) {
            self.problem(format!("cutting the clients from {primary}: {error}"));
        }
        Undo::Network
    }

    /// Freezes one to half of the client sessions where they are, for the fault.
    pub(super) fn client_pause(&mut self) -> Undo {
        let Some(pauser) = self.pauser.clone() else { return Undo::Nothing };
        let mut sessions: Vec<u64> = (0..pauser.sessions()).collect();
        shuffle(&mut sessions, &mut self.rng);
        sessions.truncate(1 + self.rng.below((pauser.sessions() / 2).max(1)) as usize);
        sessions.sort_unstable();
        for &session in &sessions {
            pauser.pause(session);
        }
        self.note(format!("freeze client sessions {sessions:?} mid-operation"));
        Undo::ReleaseClients
    }

    /// SIGSTOPs the running replicas among `ids`.
    pub(super) fn pause_replicas(&mut self, ids: &[u64]) {
        for &id in ids {
            if self.cluster.is_running(id) {
                self.cluster.pause(id);
                self.paused.insert(id);
            }
        }
    }

    /// SIGKILLs the running replicas among `ids` at once (a primary among them counts as a
    /// primary kill).
    async fn kill_at_once(&mut self, ids: &[u64]) {
        let primary = self.primary(Duration::ZERO).await;
        if primary.is_some_and(|primary| ids.contains(&primary)) {
            let now = self.now_ns();
            self.primary_kills.push(now);
        }
        self.cluster.kill_at_once(ids);
        for id in ids {
            self.paused.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_keep_at_least_three_members_and_add_only_outsiders() {
        assert_eq!(ChangeKind::possible(5, 1), [ChangeKind::Add, ChangeKind::Replace, ChangeKind::Remove]);
        assert!(ChangeKind::possible(3, 0).is_empty());
        assert_eq!(ChangeKind::possible(3, 2), [ChangeKind::Add, ChangeKind::Replace]);
        assert_eq!(ChangeKind::possible(4, 0), [ChangeKind::Remove]);
        let members = [1, 2, 3, 4, 5];
        assert_eq!(ChangeKind::Add.apply(&members, Some(6), 3), [1, 2, 3, 4, 5, 6]);
        assert_eq!(ChangeKind::Remove.apply(&members, Some(6), 3), [1, 2, 4, 5]);
        assert_eq!(ChangeKind::Replace.apply(&members, Some(6), 1), [2, 3, 4, 5, 6]);
        assert_eq!(ChangeKind::Replace.name(), "replace");
    }
}
