//! Catch-up: a replica behind the ring learns how far it got (status queries and replies,
//! the primary's watermark) and fetches the chosen values it lacks from a replica that has
//! them, or, when they were truncated there, installs that replica's checkpoint. Catch-up
//! crosses configurations: a joining, removed or lagging replica asks anyone it knows.

use crate::action::Action;
use crate::message::MessageBody;
use crate::time::{Micros, Time};
use crate::types::{Ballot, Configuration, NodeId, Proposal, Slot};

use super::fetch_window::{FetchWindow, WindowLimits};
use super::large::LargeWindow;
use super::{Replica, Timer};

/// The chosen watermark a primary reported, with that primary's ballot. Only a primary's
/// own watermark may be paired with its ballot: it says which held proposals are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct PrimaryWatermark {
    pub(super) chosen: Slot,
    pub(super) ballot: Ballot,
}

/// The highest chosen slot anyone reported (status replies, refusals), and who: a target
/// for fetching only, never a reason to mark a held proposal chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Reported {
    chosen: Slot,
    by: Option<NodeId>,
}

/// What a replica knows of how far the ring got, and the fetches under way.
#[derive(Debug)]
pub(super) struct CatchUp {
    watermark: PrimaryWatermark,
    reported: Reported,
    fetches: FetchWindow,
    /// A `FetchCheckpoint` (or a re-seed) is under way: no slot fetches until it ends.
    pub(super) checkpoint_fetch_pending: bool,
}

impl CatchUp {
    /// Knowing nothing beyond the replica's own watermark `chosen`.
    pub(super) fn new(chosen: Slot) -> CatchUp {
        CatchUp {
            watermark: PrimaryWatermark { chosen, ballot: Ballot::ZERO },
            reported: Reported { chosen, by: None },
            fetches: FetchWindow::default(),
            checkpoint_fetch_pending: false,
        }
    }

    /// The primary of `ballot` reported `chosen`: a newer primary's watermark replaces an
    /// older one's; the same primary's only moves forward.
    pub(super) fn primary_watermark(&mut self, chosen: Slot, ballot: Ballot) {
        let current = self.watermark;
        if ballot > current.ballot {
            self.watermark = PrimaryWatermark { chosen, ballot };
        } else if ballot == current.ballot && chosen > current.chosen {
            self.watermark.chosen = chosen;
        }
    }

    /// The newest primary's watermark.
    pub(super) fn watermark(&self) -> PrimaryWatermark {
        self.watermark
    }

    /// The highest chosen slot anyone reported.
    pub(super) fn known_chosen(&self) -> Slot {
        self.watermark.chosen.max(self.reported.chosen)
    }

    /// `by` reported that it has chosen up to `chosen`.
    pub(super) fn reported(&mut self, chosen: Slot, by: NodeId) {
        if chosen > self.reported.chosen {
            self.reported = Reported { chosen, by: Some(by) };
        }
    }
}

impl Replica {
    /// The checkpoint at `slot` fetched from a peer was installed in the state machine,
    /// which now reflects every slot up to it; `configuration` is the one saved with it.
    pub fn on_checkpoint_installed(&mut self, now: Time, slot: Slot, configuration: Configuration) {
        self.advance_clock(now);
        self.catch_up.checkpoint_fetch_pending = false;
        if slot <= self.applied {
            return;
        }
        // The configuration saved with it governs the slots after it (or a newer one).
        self.enter_configuration(configuration);
        // Slots up to `slot` are chosen somewhere (a checkpoint is only taken of applied,
        // hence chosen, slots), and the state machine now reflects them.
        self.applied = slot;
        // Applies already handed out above the checkpoint stay valid: they follow it.
        self.apply_emitted = self.apply_emitted.max(slot);
        self.checkpoint = slot;
        self.checkpoints.installed(slot, now);
        self.log.cover_to(slot);
        if let Some(primary) = self.role.primary_mut() {
            // Elected while the fetch was under way: the slots the checkpoint covers are
            // chosen (our re-proposals of them can only carry the chosen values).
            primary.in_flight.retain(|s, _| *s > slot);
            primary.large = LargeWindow::of(primary.in_flight.values());
            primary.next_slot = primary.next_slot.max(slot.next());
            postcondition!(primary.in_flight.keys().next().is_none_or(|&s| s == slot.next()));
        }
        self.truncate_below(slot.next());
        // Entries above the checkpoint may now be contiguous with it.
        self.advance_learned_chosen();
        self.request_fetch_if_behind();
        self.finish();
    }

    /// The checkpoint requested by `FetchCheckpoint` could not be fetched; catch-up will
    /// try again (possibly from another replica).
    pub fn on_checkpoint_fetch_failed(&mut self, now: Time) {
        self.advance_clock(now);
        self.catch_up.checkpoint_fetch_pending = false;
        self.finish();
    }

    pub(super) fn on_catch_up_timer(&mut self) {
        if !(self.membership.is_member() || self.membership.is_learner())
            || self.log.chosen().next() < self.membership.configuration.first_slot
            || self.knows_of_newer_configuration()
        {
            // Joining, removed (a learner follows the primary like a member), or behind the start of the configuration in force: ask
            // the replicas of every configuration known; one of them is further on (a
            // newer configuration may name this replica), and answers let it fetch.
            for node in self.membership.known_nodes(&self.config.members, self.config.node) {
                self.send(node, MessageBody::StatusQuery);
            }
        } else if !self.role.is_primary() && !self.hears_its_primary() {
            // No primary known, or the one known went silent: ask the configuration. A
            // member would campaign too, but a learner only follows: when its primary was
            // removed by a change that named the learner, nobody else will tell it.
            self.broadcast(MessageBody::StatusQuery);
        }
        self.request_fetch_if_behind();
        self.timers.set(Timer::CatchUp, self.now.plus_ms(self.config.heartbeat_interval_ms * 4));
    }

    /// Whether a primary other than this replica is known and was heard within the
    /// election delay.
    fn hears_its_primary(&self) -> bool {
        let window = self.config.election_delay_min();
        self.primary.is_some() && self.primary_heard_at.is_some_and(|t| self.now.since(t) < window)
    }

    pub(super) fn on_status_query(&mut self, from: NodeId) {
        let body = self.status_reply();
        self.send(from, body);
    }

    fn status_reply(&self) -> MessageBody {
        MessageBody::StatusReply { promised: self.promised, chosen: self.log.chosen() }
    }

    /// A message from another configuration: tell a replica behind us where we are, or
    /// ask one ahead of us (at most once per heartbeat interval).
    pub(super) fn on_other_configuration(&mut self, from: NodeId, ours: u64, theirs: u64) {
        if theirs < ours {
            let body = self.status_reply();
            self.send(from, body);
        } else {
            let interval = self.config.heartbeat_interval();
            if self.membership.query_at.is_none_or(|at| self.now.since(at) >= interval) {
                self.membership.query_at = Some(self.now);
                self.send(from, MessageBody::StatusQuery);
            }
        }
    }

    /// A newer configuration is not adopted from a status reply: it is entered only from
    /// the chosen log (or a checkpoint), which this replica now fetches from the replier.
    /// Entering it earlier would leave the slots before it unknown if the replier lost its
    /// own chosen watermark in a crash.
    pub(super) fn on_status_reply(&mut self, from: NodeId, promised: Ballot, chosen: Slot) {
        self.highest_seen = self.highest_seen.max(promised);
        if self.role.is_primary() || chosen <= self.log.chosen() {
            return;
        }
        self.catch_up.reported(chosen, from);
        self.fill_fetch_window(from, chosen);
    }

    /// Serves chosen values, or says they were truncated behind a checkpoint.
    pub(super) fn on_fetch(&mut self, from: NodeId, first: Slot, last: Slot) {
        precondition!(first <= last && first > Slot::ZERO, "validated: a non-empty range");
        if first < self.log.start() {
            self.send(from, MessageBody::FetchTruncated { checkpoint: self.checkpoint });
            return;
        }
        let last = Slot(last.0.min(first.0.saturating_add(self.config.fetch_slots_max - 1)));
        let chosen_values = if self.mutated(super::mutation::Mutation::FetchServesUnchosen) {
            // As many slots as a reply may carry, whatever was asked, chosen or not.
            let last = Slot(first.0.saturating_add(self.config.fetch_slots_max - 1));
            self.log.held_values(first, last, self.config.message_bytes_max)
        } else {
            self.log.chosen_values(first, last, self.config.message_bytes_max)
        };
        self.send(from, MessageBody::FetchReply { chosen_values });
    }

    pub(super) fn on_fetch_reply(&mut self, from: NodeId, chosen_values: Vec<Proposal>) {
        if let Some(first) = chosen_values.first() {
            self.catch_up.fetches.end(from, first.slot);
        }
        if self.role.is_primary() {
            // A primary learns chosen slots from its own quorum; a late reply is stale.
            return;
        }
        precondition!(
            chosen_values.windows(2).all(|w| w[1].slot == w[0].slot.next()),
            "validated: contiguous"
        );
        for proposal in chosen_values {
            let slot = proposal.slot;
            if slot <= self.log.chosen() || slot < self.log.start() {
                continue;
            }
            match self.log.value(slot) {
                Some(held) if *held == proposal.value => self.log.mark_known_chosen(slot),
                Some(_) => {
                    // A differing value we accepted at a higher ballot than the chosen one
                    // would mean two values were chosen.
                    safety!(
                        ChosenValueImmutable,
                        !self.log.is_known_chosen(slot),
                        "slot {slot}: fetched chosen value differs from the chosen value held"
                    );
                    self.stage_proposal(proposal, true);
                }
                None => {
                    self.stage_proposal(proposal, true);
                }
            }
        }
        self.advance_learned_chosen();
        self.request_fetch_if_behind();
    }

    pub(super) fn on_fetch_truncated(&mut self, from: NodeId, checkpoint: Slot) {
        self.catch_up.fetches.clear();
        if checkpoint <= self.applied || self.catch_up.checkpoint_fetch_pending {
            return;
        }
        self.catch_up.checkpoint_fetch_pending = true;
        self.actions.push_back(Action::FetchCheckpoint { from, slot: checkpoint });
    }

    /// Fetches what lies between this replica's watermark and the highest one it heard of,
    /// from the primary it follows if any, else from whoever reported that watermark.
    pub(super) fn request_fetch_if_behind(&mut self) {
        if self.role.is_primary() || self.catch_up.checkpoint_fetch_pending {
            return;
        }
        let watermark = self.catch_up.watermark;
        let reported = self.catch_up.reported;
        let target = watermark.chosen.max(reported.chosen);
        if self.log.fetch_start() > target {
            return;
        }
        let me = self.config.node;
        let from = match self.primary {
            Some(primary) if primary.node != me => Some(primary.node),
            _ if reported.chosen > watermark.chosen => reported.by,
            _ => (watermark.ballot != Ballot::ZERO).then_some(watermark.ballot.node),
        };
        // Any replica that reported the slots can serve them, whatever configuration it is
        // in (catch-up crosses configurations).
        if let Some(from) = from.filter(|&from| from != me) {
            self.fill_fetch_window(from, target);
        }
    }

    /// Asks `to` for the slots up to `target` not held as chosen nor already asked for,
    /// keeping at most `fetch_window` fetches outstanding. Fetches expire after two
    /// heartbeat intervals; a reply with values, even a short one, ends its fetch, and the
    /// gap it left is asked again. An empty reply ends nothing: the peer has no more chosen
    /// values yet, and asking again at once would only repeat the exchange.
    pub(super) fn fill_fetch_window(&mut self, to: NodeId, target: Slot) {
        if to == self.config.node {
            return;
        }
        let now = self.now;
        let limits = WindowLimits {
            fetches_max: self.config.fetch_window as usize,
            slots_max: self.config.fetch_slots_max,
            expiry: Micros::from_ms(self.config.heartbeat_interval_ms * 2),
        };
        let start = self.log.fetch_start();
        let log = &self.log;
        let opened =
            self.catch_up.fetches.fill(to, start, target, now, limits, |slot| log.is_known_chosen(slot));
        for fetch in opened {
            self.stats.fetches_sent += 1;
            self.send(to, MessageBody::Fetch { from: fetch.first, to: fetch.last });
        }
    }
}
