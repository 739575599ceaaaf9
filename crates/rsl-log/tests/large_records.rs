//! Records carrying one value of a large request (64 MiB): the file journal and the
//! persistent-memory log store them, read them back and recover them, and say how large a
//! record they take.

mod common;

use common::{batch, Backend, JournalBackend, PmemBackend};
use rsl_core::{PersistRequest, Slot, Value, REQUEST_BYTES_MAX};
use rsl_log::{LogError, LogStore};

const LARGE: usize = 64 << 20;

/// Appends a small value, a 64 MiB one and another small one, reopens, and checks that
/// everything came back.
fn round_trip(backend: &mut dyn Backend) {
    let (mut log, _, _) = backend.open();
    assert!(log.record_bytes_max() >= Value::large_size_bytes(LARGE as u64) + 4096, "{}", backend.name());
    let proposals = [batch(1, 1, 100), batch(2, 1, LARGE), batch(3, 1, 100)];
    for (ticket, proposal) in proposals.iter().enumerate() {
        let request = PersistRequest {
            ticket: ticket as u64 + 1,
            promise: None,
            proposals: vec![proposal.clone()],
            chosen: None,
        };
        log.append(&request).unwrap();
    }
    assert_eq!(log.flush().unwrap(), 3);
    let read = log.read_range(Slot(2), Slot(2), 1).unwrap();
    assert!(read == [proposals[1].clone()], "{}: the large value reads back", backend.name());
    drop(log);
    let (mut log, state, _) = backend.open();
    assert!(state.proposals == proposals, "{}: the large value recovers", backend.name());
    assert!(log.read_range(Slot(1), Slot(3), u64::MAX).unwrap() == proposals);
}

#[test]
fn the_file_journal_stores_a_64_mib_value() {
    let mut backend = JournalBackend::new();
    backend.options.segment_bytes_max = 8 << 20;
    round_trip(&mut backend);
    let (log, _, _) = backend.open();
    assert!(log.record_bytes_max() >= Value::large_size_bytes(REQUEST_BYTES_MAX));
}

#[test]
fn the_persistent_memory_log_stores_a_64_mib_value_when_it_is_large_enough() {
    round_trip(&mut PmemBackend::with_capacity(160 << 20));
    // A log too small for the value says so: its record limit is below it, and an append
    // over the limit is refused with the sizes.
    let mut small = PmemBackend::with_capacity(16 << 20);
    let (mut log, _, _) = small.open();
    let max = log.record_bytes_max();
    assert!(max < 16 << 20);
    let request =
        PersistRequest { ticket: 1, promise: None, proposals: vec![batch(1, 1, max as usize)], chosen: None };
    match log.append(&request) {
        Err(LogError::TooLarge { bytes, max: limit }) => {
            assert!(bytes > max && limit >= max, "{bytes} {limit}")
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
}
