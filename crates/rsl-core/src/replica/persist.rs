//! The persist-before-answer rule, in one type.
//!
//! Everything a step decides to write (a promise, proposals, the chosen watermark) is staged
//! into one [`PersistRequest`] with a ticket; tickets increase by one per request and the
//! log store makes them durable in order. A message whose truth depends on a write (a
//! promise, an `Accepted`) is handed to [`Persistence::send_after`] with that write's ticket
//! and is held here until [`Persistence::mark_durable`] covers the ticket. Nothing else in
//! the replica decides when such a message may leave, so no handler can answer early.

use std::collections::VecDeque;

use crate::action::PersistRequest;
use crate::message::Message;
use crate::types::Slot;

/// A message waiting for the write with `ticket` to be durable.
#[derive(Debug)]
struct Held {
    ticket: u64,
    message: Message,
}

/// Tickets, the request being staged, and the messages held until their writes are durable.
#[derive(Debug)]
pub(super) struct Persistence {
    /// The ticket the next request gets.
    next_ticket: u64,
    /// Every request up to this ticket is durable.
    durable: u64,
    /// The request being built in this step.
    staged: Option<PersistRequest>,
    /// Held messages, sorted by ticket, so release takes a prefix.
    held: VecDeque<Held>,
    /// The chosen watermark last written (a hint for recovery; only ever raised).
    chosen_written: Slot,
}

impl Persistence {
    /// Nothing staged or held; `chosen` is the watermark the log store already holds.
    pub(super) fn new(chosen: Slot) -> Persistence {
        Persistence {
            next_ticket: 1,
            durable: 0,
            staged: None,
            held: VecDeque::new(),
            chosen_written: chosen,
        }
    }

    /// The request being built in this step, opened (with the next ticket) if there is none.
    pub(super) fn stage(&mut self) -> &mut PersistRequest {
        let next_ticket = &mut self.next_ticket;
        self.staged.get_or_insert_with(|| {
            let ticket = *next_ticket;
            *next_ticket += 1;
            PersistRequest { ticket, promise: None, proposals: Vec::new(), chosen: None }
        })
    }

    /// Ends the request being built, adding the chosen watermark if it moved since it was
    /// last written. What is staged afterwards goes into a later request, written after it.
    pub(super) fn flush(&mut self, chosen: Slot) -> Option<PersistRequest> {
        let mut staged = self.staged.take()?;
        if chosen > self.chosen_written {
            staged.chosen = Some(chosen);
            self.chosen_written = chosen;
        }
        Some(staged)
    }

    /// Whether the write with `ticket` is durable.
    pub(super) fn is_durable(&self, ticket: u64) -> bool {
        ticket <= self.durable
    }

    /// Whether `ticket` was handed out.
    pub(super) fn was_issued(&self, ticket: u64) -> bool {
        ticket < self.next_ticket
    }

    /// `message` if it may leave now (its write is durable); otherwise it is held until
    /// `mark_durable` covers `ticket`.
    pub(super) fn send_after(&mut self, ticket: u64, message: Message) -> Option<Message> {
        if self.is_durable(ticket) {
            return Some(message);
        }
        let position = self.held.partition_point(|held| held.ticket <= ticket);
        self.held.insert(position, Held { ticket, message });
        None
    }

    /// Whether a message waits for `ticket`.
    pub(super) fn is_held(&self, ticket: u64) -> bool {
        self.held.iter().any(|held| held.ticket == ticket)
    }

    /// Every request up to `ticket` is durable: returns the messages that waited for them,
    /// in the order they were held, or `None` if `ticket` was durable already.
    pub(super) fn mark_durable(&mut self, ticket: u64) -> Option<impl Iterator<Item = Message> + '_> {
        // A ticket not yet handed out would release the answers of writes not yet made.
        safety!(DurableBeforeAnswered, self.was_issued(ticket), "ticket {ticket} was never issued");
        if ticket <= self.durable {
            return None;
        }
        self.durable = ticket;
        let released = self.held.partition_point(|held| held.ticket <= ticket);
        Some(self.held.drain(..released).map(|held| held.message))
    }

    /// The O(n) checks of the rule, for contracts builds.
    pub(super) fn check_invariants(&self) {
        invariant!(self.durable < self.next_ticket);
        invariant!(self.held.iter().all(|held| held.ticket > self.durable), "a releasable message was held");
        invariant!(self.held.iter().zip(self.held.iter().skip(1)).all(|(a, b)| a.ticket <= b.ticket));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::MessageBody;
    use crate::types::{NodeId, RingId};

    fn message(tag: u64) -> Message {
        Message {
            ring: RingId(1),
            from: NodeId(1),
            to: NodeId(tag),
            configuration: 1,
            body: MessageBody::StatusQuery,
        }
    }

    fn released(persistence: &mut Persistence, ticket: u64) -> Vec<u64> {
        persistence
            .mark_durable(ticket)
            .map(|messages| messages.map(|m| m.to.0).collect())
            .unwrap_or_default()
    }

    #[test]
    fn one_request_per_step_with_increasing_tickets() {
        let mut persistence = Persistence::new(Slot::ZERO);
        let first = persistence.stage().ticket;
        assert_eq!(persistence.stage().ticket, first, "staging again extends the same request");
        let request = persistence.flush(Slot::ZERO).unwrap();
        assert_eq!(request.ticket, first);
        assert!(persistence.flush(Slot::ZERO).is_none(), "nothing staged after a flush");
        assert_eq!(persistence.stage().ticket, first + 1);
    }

    #[test]
    fn a_message_waits_for_its_write() {
        let mut persistence = Persistence::new(Slot::ZERO);
        let ticket = persistence.stage().ticket;
        persistence.flush(Slot::ZERO);
        assert!(persistence.send_after(ticket, message(2)).is_none(), "held until durable");
        assert!(persistence.is_held(ticket));
        assert_eq!(released(&mut persistence, ticket), vec![2]);
        assert!(!persistence.is_held(ticket));
        assert!(persistence.send_after(ticket, message(3)).is_some(), "durable: leaves at once");
    }

    #[test]
    fn release_is_in_ticket_order_and_only_up_to_the_durable_ticket() {
        let mut persistence = Persistence::new(Slot::ZERO);
        let tickets: Vec<u64> = (0..3)
            .map(|_| {
                let ticket = persistence.stage().ticket;
                persistence.flush(Slot::ZERO);
                ticket
            })
            .collect();
        // Held out of order: release still follows the tickets.
        persistence.send_after(tickets[2], message(30));
        persistence.send_after(tickets[0], message(10));
        persistence.send_after(tickets[1], message(20));
        persistence.send_after(tickets[0], message(11));
        assert_eq!(released(&mut persistence, tickets[1]), vec![10, 11, 20]);
        assert!(persistence.is_durable(tickets[1]) && !persistence.is_durable(tickets[2]));
        assert!(persistence.mark_durable(tickets[0]).is_none(), "an older ticket changes nothing");
        assert_eq!(released(&mut persistence, tickets[2]), vec![30]);
        persistence.check_invariants();
    }

    #[test]
    fn the_chosen_watermark_is_written_when_it_moved() {
        let mut persistence = Persistence::new(Slot(5));
        persistence.stage();
        assert_eq!(persistence.flush(Slot(5)).unwrap().chosen, None, "not moved");
        persistence.stage();
        assert_eq!(persistence.flush(Slot(7)).unwrap().chosen, Some(Slot(7)));
        persistence.stage();
        assert_eq!(persistence.flush(Slot(7)).unwrap().chosen, None, "written once");
    }

    #[test]
    #[should_panic(expected = "never issued")]
    fn a_ticket_never_issued_is_refused() {
        let mut persistence = Persistence::new(Slot::ZERO);
        let _ = persistence.mark_durable(1).map(Iterator::count);
    }
}
