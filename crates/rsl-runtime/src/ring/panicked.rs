//! Reporting a panic of the state machine to the ring task as soon as it happens.
//!
//! The ring task learns that the apply thread is gone when the thread's end of the event
//! channel is dropped, and that happens only after the panic hook has run and the stack
//! has unwound. The hook can take long (with `RUST_BACKTRACE` set it resolves a backtrace,
//! which on a loaded machine takes longer than a request timeout), so the requests waiting
//! for their apply would time out first, answered "may or may not have taken effect" by a
//! timer instead of "the ring stopped". So the apply thread registers its event sender
//! here, and a process-wide panic hook, installed once in front of whatever hook was set
//! before (which still runs, unchanged, right after), sends [`Event::Panicked`] from the
//! panicking apply thread first. Panics on any other thread only pass through.
//!
//! A hook set later with [`std::panic::set_hook`] replaces this one; the ring then still
//! notices the panic when the thread's sender is dropped, only later.

use std::cell::RefCell;
use std::panic::PanicHookInfo;
use std::sync::Once;

use tokio::sync::mpsc;

use super::apply::Event;

thread_local! {
    /// On an apply thread: where its panic is reported.
    static REPORT_TO: RefCell<Option<mpsc::UnboundedSender<Event>>> = const { RefCell::new(None) };
}

static INSTALL_HOOK: Once = Once::new();

/// Makes a panic on the calling thread (an apply thread) send [`Event::Panicked`] to
/// `events` before the panic hook prints anything.
pub(super) fn report_to(events: mpsc::UnboundedSender<Event>) {
    INSTALL_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            report(info);
            previous(info);
        }));
    });
    REPORT_TO.with(|report_to| *report_to.borrow_mut() = Some(events));
}

/// Sends the panic's message to the ring of the panicking apply thread, once.
fn report(info: &PanicHookInfo<'_>) {
    // `try_with`: the thread may be tearing down its thread-locals already.
    let events = REPORT_TO.try_with(|report_to| report_to.try_borrow_mut().ok().and_then(|mut r| r.take()));
    if let Ok(Some(events)) = events {
        let _ = events.send(Event::Panicked(message(info)));
    }
}

/// The panic's message and where it was raised.
fn message(info: &PanicHookInfo<'_>) -> String {
    let payload = info.payload();
    let text = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message");
    match info.location() {
        Some(location) => format!("{text} (at {location})"),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_on_a_registered_thread_is_reported_once_with_its_message() {
        let (events, mut received) = mpsc::unbounded_channel();
        let thread = std::thread::spawn(move || {
            report_to(events);
            panic!("the state machine broke");
        });
        assert!(thread.join().is_err());
        match received.try_recv() {
            Ok(Event::Panicked(message)) => {
                assert!(message.starts_with("the state machine broke (at "), "{message}");
                assert!(message.contains("panicked.rs"), "{message}");
            }
            other => panic!("expected the panic's report, got {other:?}"),
        }
        // The sender went with the report: the channel is closed, nothing else came.
        assert!(matches!(received.try_recv(), Err(mpsc::error::TryRecvError::Disconnected)));
    }

    #[test]
    fn panics_on_other_threads_are_not_reported() {
        let (events, mut received) = mpsc::unbounded_channel();
        report_to(events.clone());
        let other = std::thread::spawn(|| panic!("{}", String::from("someone else's panic")));
        assert!(other.join().is_err());
        assert!(matches!(received.try_recv(), Err(mpsc::error::TryRecvError::Empty)));
        drop(events);
        REPORT_TO.with(|report_to| report_to.borrow_mut().take());
        assert!(matches!(received.try_recv(), Err(mpsc::error::TryRecvError::Disconnected)));
    }
}
