//! The replica's timers: a closed set in a fixed table, one deadline each. The runtime asks
//! for the earliest deadline ([`crate::Replica::poll_timeout`]) and calls
//! [`crate::Replica::handle_timeout`] when it passes; the replica fires every due timer in
//! the fixed order of [`Timer::ALL`].

use crate::time::Time;

/// The timers a replica uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    /// Primary: send heartbeats and retransmit unacknowledged accepts.
    Heartbeat = 0,
    /// Secondary or candidate: no primary heard; campaign.
    Election = 1,
    /// Primary: step down unless a quorum was heard from recently.
    CheckQuorum = 2,
    /// Primary: a partial batch waited long enough.
    BatchLinger = 3,
    /// Catch-up: retry a fetch or status query.
    CatchUp = 4,
    /// Primary relinquishing: give up waiting for in-flight slots.
    Relinquish = 5,
    /// A checkpoint may be due by time, or a failed one may be tried again.
    Checkpoint = 6,
    /// Read index: a primary's round waits for a heartbeat time of its own; a secondary's
    /// forwarded reads expire unanswered.
    ReadIndex = 7,
}

impl Timer {
    /// Every timer, in the order due timers fire.
    pub const ALL: [Timer; 8] = [
        Timer::Heartbeat,
        Timer::Election,
        Timer::CheckQuorum,
        Timer::BatchLinger,
        Timer::CatchUp,
        Timer::Relinquish,
        Timer::Checkpoint,
        Timer::ReadIndex,
    ];
}

const TIMER_COUNT: usize = Timer::ALL.len();
const _: () = assert!(Timer::ReadIndex as usize == TIMER_COUNT - 1, "the table is indexed by the enum");

/// One optional deadline per timer.
#[derive(Clone, Debug, Default)]
pub(super) struct Timers {
    deadlines: [Option<Time>; TIMER_COUNT],
}

impl Timers {
    /// Arms `timer` to fire at `at`, replacing any earlier deadline.
    pub(super) fn set(&mut self, timer: Timer, at: Time) {
        self.deadlines[timer as usize] = Some(at);
    }

    /// Disarms `timer`.
    pub(super) fn cancel(&mut self, timer: Timer) {
        self.deadlines[timer as usize] = None;
    }

    /// Whether `timer` is armed.
    pub(super) fn is_set(&self, timer: Timer) -> bool {
        self.deadlines[timer as usize].is_some()
    }

    /// The earliest deadline of all.
    pub(super) fn next(&self) -> Option<Time> {
        self.deadlines.iter().flatten().min().copied()
    }

    /// Disarms `timer` and says so if it is due at `now`.
    pub(super) fn expire(&mut self, timer: Timer, now: Time) -> bool {
        match self.deadlines[timer as usize] {
            Some(deadline) if deadline <= now => {
                self.deadlines[timer as usize] = None;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_is_the_earliest_armed_deadline() {
        let mut timers = Timers::default();
        assert_eq!(timers.next(), None);
        timers.set(Timer::CatchUp, Time(30));
        timers.set(Timer::Election, Time(20));
        timers.set(Timer::Heartbeat, Time(40));
        assert_eq!(timers.next(), Some(Time(20)));
        timers.cancel(Timer::Election);
        assert_eq!(timers.next(), Some(Time(30)));
        assert!(!timers.is_set(Timer::Election));
        assert!(timers.is_set(Timer::CatchUp));
    }

    #[test]
    fn only_due_timers_expire_and_each_once() {
        let mut timers = Timers::default();
        timers.set(Timer::Heartbeat, Time(10));
        timers.set(Timer::Relinquish, Time(11));
        assert!(timers.expire(Timer::Heartbeat, Time(10)));
        assert!(!timers.expire(Timer::Heartbeat, Time(10)), "an expired timer is disarmed");
        assert!(!timers.expire(Timer::Relinquish, Time(10)), "not due yet");
        assert!(!timers.expire(Timer::Election, Time(100)), "never armed");
        assert!(timers.expire(Timer::Relinquish, Time(11)));
        assert_eq!(timers.next(), None);
    }

    #[test]
    fn setting_again_replaces_the_deadline() {
        let mut timers = Timers::default();
        timers.set(Timer::BatchLinger, Time(50));
        timers.set(Timer::BatchLinger, Time(70));
        assert!(!timers.expire(Timer::BatchLinger, Time(60)));
        assert_eq!(timers.next(), Some(Time(70)));
    }
}
