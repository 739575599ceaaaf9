//! Large requests: a request whose [`Request::size_bytes`] exceeds `batch_bytes_max` takes
//! a slot of its own, never batched with others, so a pipeline sized for small requests
//! never has to shrink to make room for it (PROTOCOL.md, "Large requests").
//!
//! The primary keeps large requests in a lane of their own ([`LargeQueue`], inside the
//! proposal queue) and their slots in a window of their own ([`LargeWindow`]): at most
//! `pipeline_depth` large slots whose values add up to at most `large_bytes_in_flight_max`
//! are proposed and unchosen at once, besides the `pipeline_depth` slots of batches. A
//! large request that does not fit the window waits without holding up the batches queued
//! behind it, and the lane itself holds at most `large_bytes_in_flight_max` bytes, so the
//! memory large values take at the primary is bounded twice over. Each large value is
//! staged into a persist request of its own, so a log record holds at most one.

use std::collections::VecDeque;

use crate::action::ProposeError;
use crate::time::{Micros, Time};
use crate::types::{Request, RequestId, Value};

use super::role::InFlight;
use super::Replica;

/// The bytes a large value counts for, or `None` for a value that is not large: a batch of
/// exactly one request larger than `batch_bytes_max` (a batch of small requests is cut at
/// `batch_bytes_max`, so it never holds a request that large).
pub(super) fn large_value_bytes(value: &Value, batch_bytes_max: u64) -> Option<u64> {
    match value {
        Value::Batch(requests) if requests.len() == 1 && requests[0].size_bytes() > batch_bytes_max => {
            Some(value.size_bytes())
        }
        _ => None,
    }
}

/// Large requests waiting at the primary for a slot, in arrival order.
#[derive(Debug, Default)]
pub(super) struct LargeQueue {
    requests: VecDeque<Request>,
    /// Their values' bytes, counted by [`Value::large_size_bytes`].
    bytes: u64,
}

impl LargeQueue {
    /// Requests waiting.
    pub(super) fn len(&self) -> usize {
        self.requests.len()
    }

    /// Adds a request, unless the lane would then hold more than `bytes_max` bytes while
    /// not empty (an empty lane takes any request the configuration admits).
    pub(super) fn push(&mut self, request: Request, bytes_max: u64) -> Result<(), ProposeError> {
        let bytes = Value::large_size_bytes(request.payload.len() as u64);
        if !self.requests.is_empty() && self.bytes + bytes > bytes_max {
            return Err(ProposeError::LargeBusy { queued_bytes: self.bytes, max: bytes_max });
        }
        self.bytes += bytes;
        self.requests.push_back(request);
        Ok(())
    }

    /// The oldest request, if `fits` says its value's bytes fit the window.
    pub(super) fn pop_if(&mut self, fits: impl FnOnce(u64) -> bool) -> Option<Request> {
        let bytes = Value::large_size_bytes(self.requests.front()?.payload.len() as u64);
        if !fits(bytes) {
            return None;
        }
        self.bytes -= bytes;
        self.requests.pop_front()
    }

    /// Empties the lane, returning the ids of what waited.
    pub(super) fn drain_ids(&mut self) -> impl Iterator<Item = RequestId> + '_ {
        self.bytes = 0;
        self.requests.drain(..).map(|r| r.id)
    }

    /// The O(n) check of the byte count, for contracts builds.
    pub(super) fn check_invariants(&self) {
        invariant!(
            self.requests.iter().map(|r| Value::large_size_bytes(r.payload.len() as u64)).sum::<u64>()
                == self.bytes
        );
    }
}

/// The large slots a primary has in flight: how many, and their values' bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct LargeWindow {
    pub(super) slots: u64,
    pub(super) bytes: u64,
}

impl LargeWindow {
    /// Counts a slot proposed with `flight`.
    pub(super) fn add(&mut self, flight: &InFlight) {
        if flight.large_bytes > 0 {
            self.slots += 1;
            self.bytes += flight.large_bytes;
        }
    }

    /// Forgets a slot chosen (or covered by a checkpoint) with `flight`.
    pub(super) fn remove(&mut self, flight: &InFlight) {
        if flight.large_bytes > 0 {
            self.slots -= 1;
            self.bytes -= flight.large_bytes;
        }
    }

    /// The window of the slots in `flights`.
    pub(super) fn of<'a>(flights: impl IntoIterator<Item = &'a InFlight>) -> LargeWindow {
        let mut window = LargeWindow::default();
        for flight in flights {
            window.add(flight);
        }
        window
    }

    /// Whether a value of `bytes` may be proposed now: a free slot in the window and room
    /// in the byte budget (an empty window takes any value the configuration admits).
    pub(super) fn fits(&self, bytes: u64, slots_max: u64, bytes_max: u64) -> bool {
        self.slots == 0 || (self.slots < slots_max && self.bytes + bytes <= bytes_max)
    }
}

/// How long to wait before sending an unanswered accept again. A small value goes again
/// after a heartbeat interval. A large one takes a while to cross the network and reach
/// the disk, and each copy holds its bytes in a peer's queue: it waits at least an
/// election delay, doubling with every resend up to eight times that.
pub(super) fn resend_after(flight: &InFlight, heartbeat: Micros, election_delay_min: Micros) -> Micros {
    if flight.large_bytes == 0 {
        return heartbeat;
    }
    let base = heartbeat.0.max(election_delay_min.0);
    Micros(base.saturating_mul(1 << flight.resends.min(3)))
}

impl Replica {
    /// Opens slots for waiting large requests while their window has room. Returns whether
    /// any was proposed.
    pub(super) fn propose_large(&mut self) -> bool {
        let slots_max = self.config.pipeline_depth;
        let bytes_max = self.config.large_bytes_in_flight_max;
        let mut proposed = false;
        loop {
            let Some(primary) = self.role.primary_mut() else { return proposed };
            if primary.relinquish_to.is_some() || primary.change_slot.is_some() {
                return proposed;
            }
            let window = primary.large;
            let Some(request) = primary.queue.large.pop_if(|bytes| window.fits(bytes, slots_max, bytes_max))
            else {
                return proposed;
            };
            self.stats.large_requests_proposed += 1;
            self.propose_value(Value::Batch(vec![request].into()));
            proposed = true;
        }
    }

    /// Whether the in-flight slot's accept is due to be sent again at `now`.
    pub(super) fn resend_due(&self, flight: &InFlight, now: Time) -> bool {
        let wait = resend_after(flight, self.config.heartbeat_interval(), self.config.election_delay_min());
        now.since(flight.sent_at) >= wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::REQUEST_OVERHEAD_BYTES;

    fn request(sequence: u64, bytes: usize) -> Request {
        Request { id: RequestId { client: 1, sequence }, payload: vec![0u8; bytes].into() }
    }

    fn flight(large_bytes: u64, resends: u32) -> InFlight {
        InFlight { votes: 0, self_ticket: 1, sent_at: Time(0), large_bytes, resends }
    }

    #[test]
    fn only_a_lone_request_over_the_batch_limit_is_large() {
        let limit = 100;
        let lone = Value::Batch(vec![request(1, 200)].into());
        assert_eq!(large_value_bytes(&lone, limit), Some(8 + 200 + REQUEST_OVERHEAD_BYTES));
        assert_eq!(large_value_bytes(&lone, limit), Some(Value::large_size_bytes(200)));
        assert_eq!(large_value_bytes(&Value::Batch(vec![request(1, 50)].into()), limit), None);
        assert_eq!(
            large_value_bytes(&Value::Batch(vec![request(1, 50), request(2, 50)].into()), limit),
            None
        );
        assert_eq!(large_value_bytes(&Value::Noop, limit), None);
    }

    #[test]
    fn the_lane_is_bounded_in_bytes_but_takes_one_request_when_empty() {
        let mut lane = LargeQueue::default();
        lane.push(request(1, 1000), 500).unwrap();
        let error = lane.push(request(2, 10), 500).unwrap_err();
        assert_eq!(error, ProposeError::LargeBusy { queued_bytes: Value::large_size_bytes(1000), max: 500 });
        assert_eq!(lane.pop_if(|_| false), None);
        assert_eq!(
            lane.pop_if(|bytes| bytes == Value::large_size_bytes(1000)).map(|r| r.id.sequence),
            Some(1)
        );
        lane.push(request(3, 100), 500).unwrap();
        lane.push(request(4, 100), 500).unwrap();
        lane.check_invariants();
        assert_eq!(lane.drain_ids().map(|id| id.sequence).collect::<Vec<_>>(), vec![3, 4]);
        assert_eq!(lane.len(), 0);
        lane.check_invariants();
    }

    #[test]
    fn the_window_bounds_slots_and_bytes_but_an_empty_one_takes_any_value() {
        let mut window = LargeWindow::default();
        assert!(window.fits(10_000, 2, 100));
        window.add(&flight(60, 0));
        window.add(&flight(0, 0));
        assert_eq!(window, LargeWindow { slots: 1, bytes: 60 });
        assert!(window.fits(40, 2, 100));
        assert!(!window.fits(41, 2, 100));
        window.add(&flight(10, 0));
        assert!(!window.fits(1, 2, 100), "no free slot");
        window.remove(&flight(60, 0));
        assert_eq!(window, LargeWindow { slots: 1, bytes: 10 });
        assert_eq!(LargeWindow::of(&[flight(10, 0), flight(0, 0)]), window);
    }

    #[test]
    fn large_accepts_back_off_and_small_ones_do_not() {
        let (heartbeat, election) = (Micros(50), Micros(500));
        assert_eq!(resend_after(&flight(0, 7), heartbeat, election), Micros(50));
        let waits: Vec<u64> = (0..6).map(|n| resend_after(&flight(1, n), heartbeat, election).0).collect();
        assert_eq!(waits, vec![500, 1000, 2000, 4000, 4000, 4000]);
    }
}
