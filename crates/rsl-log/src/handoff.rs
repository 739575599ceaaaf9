//! A queue that hands work to a dedicated OS thread whose receiver sleeps as soon as it
//! finds nothing queued: no spinning and no `sched_yield` before it sleeps, and a sender
//! wakes it with one futex wake, only when it sleeps. The group-commit thread
//! ([`crate::GroupCommitter`]) and rsl-runtime's apply thread take their work through it.
//!
//! Why not `crossbeam-channel`: its blocking receive (`recv` of `flavors::list` and
//! `flavors::array`, 0.5.17) retries under crossbeam-utils' `Backoff::snooze` until
//! `is_completed` before it registers and parks; `snooze` spins `2^step` times for steps
//! 0–6 and calls `std::thread::yield_now` for steps 7–10, so every receive that finds the
//! queue empty spins 127 rounds and makes four `sched_yield` calls before it sleeps. A thread that is handed one batch per commit round
//! finds the queue empty after every batch; on a machine with two CPUs that spinning
//! competes with the tasks that would fill the queue, and the yields are context switches
//! (docs/PERFORMANCE.md, "Why small messages cost more server CPU per operation").
//!
//! How it works: one mutex guards the queue, the number of senders, and whether the
//! receiver sleeps. The receiver takes everything queued in one lock (it swaps the queue
//! with its own empty buffer, so neither side allocates once both have grown) and hands the
//! items out one by one from its buffer; only when that is empty does it look at the queue
//! again, and when the queue is empty too it marks itself sleeping and waits on a condition
//! variable (which releases the mutex atomically, so no wake-up can be lost between the
//! check and the wait). A sender pushes under the mutex and, if the receiver was marked
//! sleeping, clears the mark and notifies once after unlocking: the senders of a burst
//! that arrives while the receiver works or before it has run make no system call at all.
//! A bounded queue makes senders wait (on a second condition variable, woken only when
//! someone waits) while it holds `capacity` items; the receiver's buffer does not count,
//! as crossbeam's bounded channel does not count the message being handled.
//!
//! The mutex is std's (a futex on Linux: spins briefly, then sleeps, never yields), held
//! only to push or to swap.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Creates a queue that holds at most `capacity` items (0 counts as 1) before
/// [`Sender::send`] waits.
pub fn bounded<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    channel(capacity.max(1))
}

/// Creates a queue without a bound: [`Sender::send`] never waits.
pub fn unbounded<T>() -> (Sender<T>, Receiver<T>) {
    channel(usize::MAX)
}

fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            senders: 1,
            receiver_alive: true,
            receiver_sleeping: false,
            senders_waiting: 0,
        }),
        capacity,
        filled: Condvar::new(),
        drained: Condvar::new(),
        wakes: AtomicU64::new(0),
    });
    (Sender { shared: shared.clone() }, Receiver { shared, taken: VecDeque::new() })
}

/// [`Sender::send`] failed: the receiver is gone. Holds the item back.
#[derive(PartialEq, Eq)]
pub struct SendError<T>(pub T);

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SendError(..)")
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the receiving thread is gone")
    }
}

impl<T> std::error::Error for SendError<T> {}

/// [`Receiver::recv`] failed: every sender is gone and nothing is queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("every sender is gone and nothing is queued")]
pub struct RecvError;

/// Why [`Receiver::recv_timeout`] returned nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecvTimeoutError {
    /// Nothing arrived within the timeout.
    #[error("nothing arrived within the timeout")]
    Timeout,
    /// Every sender is gone and nothing is queued.
    #[error("every sender is gone and nothing is queued")]
    Disconnected,
}

/// Why [`Receiver::try_recv`] returned nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TryRecvError {
    /// Nothing is queued now.
    #[error("nothing is queued")]
    Empty,
    /// Every sender is gone and nothing is queued.
    #[error("every sender is gone and nothing is queued")]
    Disconnected,
}

struct State<T> {
    queue: VecDeque<T>,
    senders: usize,
    receiver_alive: bool,
    /// The receiver waits on `filled`: the next sender notifies it (and clears this).
    receiver_sleeping: bool,
    /// Senders waiting on `drained` for room.
    senders_waiting: usize,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// At most this many items queued (`usize::MAX`: no bound).
    capacity: usize,
    /// The receiver waits here for an item or the last sender's end.
    filled: Condvar,
    /// Senders of a full queue wait here for room or the receiver's end.
    drained: Condvar,
    /// Times a sender woke the sleeping receiver.
    wakes: AtomicU64,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Nothing that holds the lock can panic half-way (a push or a swap), so a poisoned
        // lock still guards a consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes the receiver if `state` says it sleeps; call with the lock, notifies after it.
    fn wake_receiver(&self, mut state: MutexGuard<'_, State<T>>) {
        let sleeping = std::mem::take(&mut state.receiver_sleeping);
        drop(state);
        if sleeping {
            self.wakes.fetch_add(1, Ordering::Relaxed);
            self.filled.notify_one();
        }
    }
}

/// The sending end; clone it for more senders. When the last one is dropped the receiver
/// gets what is queued and then [`RecvError`].
pub struct Sender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Sender<T> {
    /// Queues `item`, waiting while a bounded queue is full. Fails, handing `item` back,
    /// once the receiver is gone.
    pub fn send(&self, item: T) -> Result<(), SendError<T>> {
        let shared = &*self.shared;
        let mut state = shared.lock();
        loop {
            if !state.receiver_alive {
                return Err(SendError(item));
            }
            if state.queue.len() < shared.capacity {
                break;
            }
            state.senders_waiting += 1;
            state = shared.drained.wait(state).unwrap_or_else(PoisonError::into_inner);
            state.senders_waiting -= 1;
        }
        state.queue.push_back(item);
        shared.wake_receiver(state);
        Ok(())
    }

    /// Whether the receiver sleeps now, waiting for an item (for tests and diagnostics).
    pub fn receiver_sleeps(&self) -> bool {
        self.shared.lock().receiver_sleeping
    }

    /// Senders waiting now for room in a full queue (for tests and diagnostics).
    pub fn senders_waiting(&self) -> usize {
        self.shared.lock().senders_waiting
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        Sender { shared: self.shared.clone() }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.senders -= 1;
        if state.senders == 0 {
            self.shared.wake_receiver(state);
        }
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender").field("capacity", &self.shared.capacity).finish_non_exhaustive()
    }
}

/// The receiving end, owned by one thread. Dropping it drops what is queued and makes every
/// send fail.
pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
    /// Items taken from the queue in one lock, handed out in order before the next look.
    taken: VecDeque<T>,
}

/// How long [`Receiver::take`] may sleep for an item.
#[derive(Clone, Copy)]
enum Wait {
    Never,
    Forever,
    Until(Instant),
}

impl<T> Receiver<T> {
    /// The next item, sleeping until one arrives; fails once every sender is gone and
    /// nothing is queued.
    pub fn recv(&mut self) -> Result<T, RecvError> {
        match self.next(Wait::Forever) {
            Ok(item) => Ok(item),
            Err(RecvTimeoutError::Disconnected) => Err(RecvError),
            Err(RecvTimeoutError::Timeout) => unreachable!("a wait without a deadline never times out"),
        }
    }

    /// The next item, sleeping at most `timeout` for one.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        // A timeout too large for an `Instant` waits as long as `recv`.
        let wait = Instant::now().checked_add(timeout).map_or(Wait::Forever, Wait::Until);
        self.next(wait)
    }

    /// The next item if one is queued, without sleeping.
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        self.next(Wait::Never).map_err(|error| match error {
            RecvTimeoutError::Timeout => TryRecvError::Empty,
            RecvTimeoutError::Disconnected => TryRecvError::Disconnected,
        })
    }

    /// Times a sender woke this receiver from its sleep: at most one per sleep, none for
    /// items sent while it was awake.
    pub fn wakes(&self) -> u64 {
        self.shared.wakes.load(Ordering::Relaxed)
    }

    fn next(&mut self, wait: Wait) -> Result<T, RecvTimeoutError> {
        if let Some(item) = self.taken.pop_front() {
            return Ok(item);
        }
        self.take(wait)?;
        Ok(self.taken.pop_front().expect("take leaves at least one item"))
    }

    /// Moves everything queued into `taken` (empty on entry), sleeping as `wait` allows
    /// while nothing is.
    fn take(&mut self, wait: Wait) -> Result<(), RecvTimeoutError> {
        let shared = &*self.shared;
        let mut state = shared.lock();
        loop {
            if !state.queue.is_empty() {
                std::mem::swap(&mut state.queue, &mut self.taken);
                let senders_waiting = state.senders_waiting > 0;
                drop(state);
                if senders_waiting {
                    shared.drained.notify_all();
                }
                return Ok(());
            }
            if state.senders == 0 {
                return Err(RecvTimeoutError::Disconnected);
            }
            let left = match wait {
                Wait::Never => return Err(RecvTimeoutError::Timeout),
                Wait::Forever => None,
                Wait::Until(deadline) => {
                    match deadline.checked_duration_since(Instant::now()).filter(|left| !left.is_zero()) {
                        Some(left) => Some(left),
                        None => return Err(RecvTimeoutError::Timeout),
                    }
                }
            };
            state.receiver_sleeping = true;
            state = match left {
                None => shared.filled.wait(state).unwrap_or_else(PoisonError::into_inner),
                Some(left) => {
                    shared.filled.wait_timeout(state, left).unwrap_or_else(PoisonError::into_inner).0
                }
            };
            // The waking sender cleared it; after a timeout or a spurious wake-up it is
            // still set, and the loop decides again.
            state.receiver_sleeping = false;
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.receiver_alive = false;
        let queued = std::mem::take(&mut state.queue);
        let senders_waiting = state.senders_waiting > 0;
        drop(state);
        if senders_waiting {
            self.shared.drained.notify_all();
        }
        // Dropped outside the lock: an item's drop may send on another queue.
        drop(queued);
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver").field("taken", &self.taken.len()).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::thread;

    use super::*;

    /// Longest a test waits for a thread before it calls the wait lost.
    const PATIENCE: Duration = Duration::from_secs(30);

    /// Runs `work` on a thread and returns its result, failing the test (instead of hanging
    /// it) when it takes longer than [`PATIENCE`]: a lost wake-up shows as that failure.
    fn within_patience<R: Send + 'static>(what: &str, work: impl FnOnce() -> R + Send + 'static) -> R {
        let (done, finished) = std::sync::mpsc::channel();
        thread::spawn(move || drop(done.send(work())));
        finished.recv_timeout(PATIENCE).unwrap_or_else(|_| panic!("{what}: no answer within {PATIENCE:?}"))
    }

    /// Waits (boundedly) until `condition` holds, polling.
    fn eventually(what: &str, condition: impl Fn() -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !condition() {
            assert!(Instant::now() < deadline, "{what}: not within {PATIENCE:?}");
            thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn many_senders_deliver_everything_in_each_senders_order() {
        const SENDERS: u64 = 8;
        const EACH: u64 = 20_000;
        for capacity in [Some(4), None] {
            let (sender, mut receiver) = match capacity {
                Some(capacity) => bounded(capacity),
                None => unbounded(),
            };
            for from in 0..SENDERS {
                let sender = sender.clone();
                thread::spawn(move || {
                    for n in 0..EACH {
                        sender.send((from, n)).expect("the receiver lives");
                    }
                });
            }
            drop(sender);
            let next = within_patience("receiving every item", move || {
                let mut next = [0u64; SENDERS as usize];
                // Ends once every sender is dropped and the queue is empty.
                while let Ok((from, n)) = receiver.recv() {
                    assert_eq!(n, next[from as usize], "sender {from}'s items arrive in order");
                    next[from as usize] += 1;
                }
                next
            });
            assert_eq!(next, [EACH; SENDERS as usize], "capacity {capacity:?}");
        }
    }

    #[test]
    fn a_ping_pong_never_loses_a_wake_up_and_wakes_once_per_sleep() {
        // Each side sleeps between every round trip, so every hand-off needs its wake-up:
        // one lost hangs the exchange, which `within_patience` turns into a failure.
        const ROUNDS: u64 = 20_000;
        let (ping, mut pings) = bounded::<u64>(1);
        let (pong, mut pongs) = unbounded::<u64>();
        let echo = thread::spawn(move || {
            while let Ok(n) = pings.recv() {
                pong.send(n).expect("the pinger lives");
            }
            pings.wakes()
        });
        let pong_wakes = within_patience("the ping-pong", move || {
            for n in 0..ROUNDS {
                ping.send(n).expect("the echo lives");
                assert_eq!(pongs.recv(), Ok(n));
            }
            pongs.wakes()
        });
        let ping_wakes = echo.join().expect("the echo thread");
        // At most one wake per hand-off (plus the last sender's end, for the echo).
        assert!(pong_wakes <= ROUNDS, "{pong_wakes} wakes for {ROUNDS} hand-offs");
        assert!(ping_wakes <= ROUNDS + 1, "{ping_wakes} wakes for {ROUNDS} hand-offs");
    }

    #[test]
    fn senders_wake_a_sleeping_receiver_once_and_an_awake_one_never() {
        let (sender, mut receiver) = unbounded::<u32>();
        // The receiver is awake (it has not looked yet): a burst costs no wake-up.
        for n in 0..100 {
            sender.send(n).unwrap();
        }
        assert_eq!(receiver.wakes(), 0);
        // One look takes the whole burst.
        assert_eq!(receiver.try_recv(), Ok(0));
        sender.send(100).unwrap();
        assert_eq!(
            (1..=100).map(|_| receiver.try_recv().unwrap()).collect::<Vec<_>>(),
            (1..=100).collect::<Vec<_>>()
        );
        assert_eq!(receiver.try_recv(), Err(TryRecvError::Empty));
        assert_eq!(receiver.wakes(), 0);

        let sleeper = thread::spawn(move || {
            let first = receiver.recv();
            (first, receiver)
        });
        eventually("the receiver to sleep", || sender.receiver_sleeps());
        for n in 0..50 {
            sender.send(n).unwrap();
        }
        let (first, mut receiver) = sleeper.join().unwrap();
        assert_eq!(first, Ok(0));
        assert_eq!(receiver.wakes(), 1, "fifty sends to one sleep: one wake");
        assert_eq!(
            (1..50).map(|_| receiver.recv().unwrap()).collect::<Vec<_>>(),
            (1..50).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_full_queue_holds_senders_back_until_the_receiver_takes() {
        let (sender, mut receiver) = bounded::<u32>(2);
        sender.send(1).unwrap();
        sender.send(2).unwrap();
        let sent = Arc::new(AtomicUsize::new(0));
        let blocked = {
            let (sender, sent) = (sender.clone(), sent.clone());
            thread::spawn(move || {
                sender.send(3).unwrap();
                sent.store(1, Ordering::SeqCst);
            })
        };
        eventually("the third send to wait for room", || sender.senders_waiting() == 1);
        assert_eq!(sent.load(Ordering::SeqCst), 0, "a full queue made the sender wait");
        assert_eq!(receiver.recv(), Ok(1));
        within_patience("the held sender to go on", move || blocked.join().unwrap());
        assert_eq!(sent.load(Ordering::SeqCst), 1);
        assert_eq!((receiver.recv(), receiver.recv()), (Ok(2), Ok(3)));
        assert_eq!(sender.senders_waiting(), 0);
    }

    #[test]
    fn the_last_sender_gone_ends_the_receiver_after_what_is_queued() {
        let (sender, mut receiver) = unbounded::<u32>();
        let other = sender.clone();
        sender.send(7).unwrap();
        drop(sender);
        assert_eq!(receiver.recv(), Ok(7));
        assert_eq!(receiver.try_recv(), Err(TryRecvError::Empty), "one sender is left");
        // The receiver sleeps; the last sender's drop must wake it.
        let ended = thread::spawn(move || (receiver.recv(), receiver.recv_timeout(PATIENCE)));
        eventually("the receiver to sleep", || other.receiver_sleeps());
        drop(other);
        let ends = within_patience("the receiver to see the senders gone", move || ended.join().unwrap());
        assert_eq!(ends, (Err(RecvError), Err(RecvTimeoutError::Disconnected)));
    }

    #[test]
    fn a_gone_receiver_fails_sends_and_frees_waiting_senders_and_queued_items() {
        let (sender, receiver) = bounded::<Arc<()>>(1);
        let item = Arc::new(());
        sender.send(item.clone()).unwrap();
        let waiting = {
            let (sender, item) = (sender.clone(), item.clone());
            thread::spawn(move || sender.send(item).map_err(|SendError(back)| back))
        };
        eventually("the second send to wait for room", || sender.senders_waiting() == 1);
        drop(receiver);
        let back = within_patience("the waiting sender to fail", move || waiting.join().unwrap());
        assert!(back.is_err_and(|back| Arc::ptr_eq(&back, &item)), "the send fails and hands the item back");
        assert_eq!(Arc::strong_count(&item), 1, "the queued item was dropped with the receiver");
        assert!(sender.send(item).is_err());
    }

    #[test]
    fn recv_timeout_waits_its_time_then_takes_what_comes() {
        let (sender, mut receiver) = unbounded::<u32>();
        let started = Instant::now();
        assert_eq!(receiver.recv_timeout(Duration::from_millis(30)), Err(RecvTimeoutError::Timeout));
        assert!(started.elapsed() >= Duration::from_millis(30));
        assert!(!sender.receiver_sleeps(), "a timed-out receiver is not marked sleeping");
        assert_eq!(receiver.recv_timeout(Duration::ZERO), Err(RecvTimeoutError::Timeout));
        let later = thread::spawn(move || {
            eventually("the receiver to sleep", || sender.receiver_sleeps());
            sender.send(5).unwrap();
            sender
        });
        assert_eq!(receiver.recv_timeout(PATIENCE), Ok(5));
        assert_eq!(receiver.wakes(), 1);
        drop(later.join().unwrap());
        assert_eq!(receiver.recv_timeout(Duration::from_millis(1)), Err(RecvTimeoutError::Disconnected));
    }
}
