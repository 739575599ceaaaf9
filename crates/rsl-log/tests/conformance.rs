//! One suite, every backend: the file journal (on tmpfs and on the crash simulator), the
//! persistent-memory log (on a mapped tmpfs file with msync, the same with cache-line
//! write-back, and on the simulator) and the memory log must behave the same through
//! append, flush, truncate, read and reopen.

mod common;

use common::*;
use rsl_core::{DurableState, Slot};
use rsl_log::{LogError, LogStore};

fn fresh_store_is_empty(backend: &mut dyn Backend) {
    let (log, state, report) = backend.open();
    assert_eq!(state, DurableState::default(), "{}", backend.name());
    assert_eq!((log.durable_ticket(), log.appended_ticket()), (0, 0));
    assert_eq!(log.last_slot(), Slot::ZERO);
    assert!(report.torn_tail.is_none() && report.salvaged.is_none());
}

fn flushed_requests_survive_reopen(backend: &mut dyn Backend) {
    let mut model = ModelState::default();
    {
        let (mut log, _, _) = backend.open();
        let ops = [
            request(1, Some(ballot(2, 1)), vec![], None),
            request(2, None, every_value_kind(1), Some(0)),
            request(3, Some(ballot(3, 2)), vec![batch(5, 3, 10)], Some(2)),
        ];
        for op in ops {
            log.append(&op).unwrap();
            model.apply(&Op::Persist(op));
        }
        assert_eq!(log.flush().unwrap(), 3);
    }
    let (log, state, report) = backend.open();
    assert_eq!(state, model.durable_state(), "{}", backend.name());
    assert_eq!(state.proposals.len(), 5);
    assert_eq!(log.last_slot(), Slot(5));
    assert!(report.torn_tail.is_none());
    assert_eq!(log.durable_ticket(), 0, "tickets are per process");
}

fn later_proposal_for_a_slot_wins(backend: &mut dyn Backend) {
    {
        let (mut log, _, _) = backend.open();
        log.append(&request(1, None, vec![batch(1, 1, 5), batch(2, 1, 5)], None)).unwrap();
        log.append(&request(2, None, vec![batch(1, 2, 6)], None)).unwrap();
        log.flush().unwrap();
        log.append(&request(3, None, vec![batch(2, 3, 7), batch(2, 4, 8)], None)).unwrap();
        assert_eq!(log.read_range(Slot(1), Slot(2), u64::MAX).unwrap(), vec![batch(1, 2, 6), batch(2, 4, 8)]);
        log.flush().unwrap();
    }
    let (mut log, state, _) = backend.open();
    assert_eq!(state.proposals, vec![batch(1, 2, 6), batch(2, 4, 8)], "{}", backend.name());
    assert_eq!(log.read_range(Slot(1), Slot(2), u64::MAX).unwrap(), state.proposals);
}

fn flush_reports_the_durable_ticket(backend: &mut dyn Backend) {
    let (mut log, _, _) = backend.open();
    assert_eq!(log.flush().unwrap(), 0);
    log.append(&request(1, Some(ballot(1, 1)), vec![], None)).unwrap();
    log.append(&request(2, None, vec![], None)).unwrap();
    assert!(log.needs_flush());
    assert_eq!((log.durable_ticket(), log.appended_ticket()), (0, 2));
    assert_eq!(log.flush().unwrap(), 2);
    assert!(!log.needs_flush());
    // An empty request needs no sync but is still reported durable.
    log.append(&request(5, None, vec![], None)).unwrap();
    assert_eq!(log.flush().unwrap(), 5);
    assert_eq!(log.durable_ticket(), 5);
    assert!(log.statistics().appends == 3);
}

fn unflushed_requests_are_lost_on_reopen(backend: &mut dyn Backend) {
    {
        let (mut log, _, _) = backend.open();
        log.append(&request(1, Some(ballot(1, 1)), vec![batch(1, 1, 3)], None)).unwrap();
        log.flush().unwrap();
        log.append(&request(2, Some(ballot(9, 1)), vec![batch(2, 9, 3)], Some(1))).unwrap();
        log.truncate_below(Slot(2)).unwrap();
    }
    let (_, state, _) = backend.open();
    assert_eq!(state.promise, ballot(1, 1), "{}", backend.name());
    assert_eq!(state.proposals, vec![batch(1, 1, 3)]);
    assert_eq!(state.chosen, Slot::ZERO);
}

fn ticket_order_is_enforced_and_poisons(backend: &mut dyn Backend) {
    let (mut log, _, _) = backend.open();
    log.append(&request(3, None, vec![batch(1, 1, 1)], None)).unwrap();
    let error = log.append(&request(3, None, vec![batch(2, 1, 1)], None)).unwrap_err();
    assert!(matches!(error, LogError::TicketOrder { last: 3, found: 3 }), "{error}");
    assert!(matches!(log.flush(), Err(LogError::Poisoned { .. })), "{}", backend.name());
    assert!(matches!(log.append(&request(4, None, vec![], None)), Err(LogError::Poisoned { .. })));
    drop(log);
    let (_, state, _) = backend.open();
    assert!(state.proposals.is_empty(), "nothing of a poisoned batch became durable");
}

fn truncation_hides_and_survives_reopen(backend: &mut dyn Backend) {
    {
        let (mut log, _, _) = backend.open();
        let proposals = (1..=10).map(|s| batch(s, 1, 4)).collect();
        log.append(&request(1, Some(ballot(1, 1)), proposals, Some(10))).unwrap();
        log.flush().unwrap();
        log.truncate_below(Slot(6)).unwrap();
        assert_eq!(log.log_start(), Slot(6), "reads see a truncation at once");
        assert_eq!(log.read_range(Slot(1), Slot(10), u64::MAX).unwrap().len(), 5);
        log.truncate_below(Slot(3)).unwrap();
        assert_eq!(log.log_start(), Slot(6), "the floor never moves down");
        // A late proposal below the floor is not kept.
        log.append(&request(2, None, vec![batch(2, 2, 4), batch(11, 2, 4)], None)).unwrap();
        log.flush().unwrap();
    }
    let (mut log, state, report) = backend.open();
    let slots: Vec<u64> = state.proposals.iter().map(|p| p.slot.0).collect();
    assert_eq!(slots, vec![6, 7, 8, 9, 10, 11], "{}", backend.name());
    assert_eq!(report.log_start, Slot(6));
    assert_eq!(log.log_start(), Slot(6));
    assert_eq!(state.chosen, Slot(10));
    assert_eq!(log.read_range(Slot(0), Slot(5), u64::MAX).unwrap(), vec![]);
}

fn read_range_respects_bounds_and_budget(backend: &mut dyn Backend) {
    let (mut log, _, _) = backend.open();
    log.append(&request(1, None, (1..=5).map(|s| batch(s * 2, 1, 100)).collect(), None)).unwrap();
    log.flush().unwrap();
    log.append(&request(2, None, vec![batch(11, 1, 100)], None)).unwrap();
    let slots = |proposals: Vec<rsl_core::Proposal>| proposals.iter().map(|p| p.slot.0).collect::<Vec<_>>();
    assert_eq!(slots(log.read_range(Slot(3), Slot(8), u64::MAX).unwrap()), vec![4, 6, 8]);
    assert_eq!(slots(log.read_range(Slot(9), Slot(20), u64::MAX).unwrap()), vec![10, 11], "buffered too");
    assert_eq!(slots(log.read_range(Slot(1), Slot(20), 300).unwrap()), vec![2, 4], "budget");
    assert_eq!(slots(log.read_range(Slot(1), Slot(20), 1).unwrap()), vec![2], "at least one");
    assert_eq!(log.read_range(Slot(8), Slot(3), u64::MAX).unwrap(), vec![]);
    assert_eq!(log.read_range(Slot(13), Slot(20), u64::MAX).unwrap(), vec![]);
}

fn long_run_with_truncation_reclaims_space(backend: &mut dyn Backend) {
    let mut model = ModelState::default();
    {
        let (mut log, _, _) = backend.open();
        for ticket in 1..=2500u64 {
            let slot = ticket;
            let round = ticket / 50 + 1;
            let op = request(ticket, Some(ballot(round, 1)), vec![batch(slot, round, 400)], Some(slot - 1));
            log.append(&op).unwrap();
            model.apply(&Op::Persist(op));
            if ticket % 7 == 0 {
                log.flush().unwrap();
            }
            if ticket % 40 == 0 {
                log.truncate_below(Slot(slot - 20)).unwrap();
                model.apply(&Op::Truncate(Slot(slot - 20)));
            }
        }
        log.flush().unwrap();
        if backend.name() != "memory" {
            assert!(log.statistics().reclaimed > 0, "{}: space was reclaimed", backend.name());
        }
        assert_eq!(
            log.read_range(Slot(0), Slot(u64::MAX), u64::MAX).unwrap(),
            model.durable_state().proposals
        );
    }
    let (_, state, _) = backend.open();
    assert_eq!(state, model.durable_state(), "{}", backend.name());
}

fn promise_and_chosen_never_go_down(backend: &mut dyn Backend) {
    {
        let (mut log, _, _) = backend.open();
        log.append(&request(1, Some(ballot(5, 1)), vec![], Some(9))).unwrap();
        log.append(&request(2, Some(ballot(4, 3)), vec![], Some(3))).unwrap();
        log.flush().unwrap();
    }
    let (_, state, _) = backend.open();
    assert_eq!((state.promise, state.chosen), (ballot(5, 1), Slot(9)), "{}", backend.name());
}

fn a_second_handle_is_locked_out(backend: &mut dyn Backend) {
    let (log, _, _) = backend.open();
    assert!(backend.open_fails_locked(), "{}", backend.name());
    drop(log);
    let _ = backend.open();
}

fn recovery_then_append_then_recovery(backend: &mut dyn Backend) {
    let mut model = ModelState::default();
    for round in 0..4u64 {
        let (mut log, state, _) = backend.open();
        assert_eq!(state, model.durable_state(), "{} round {round}", backend.name());
        for ticket in 1..=5u64 {
            let op = request(
                ticket,
                Some(ballot(round + 1, 1)),
                vec![batch(round * 5 + ticket, round + 1, 30)],
                None,
            );
            log.append(&op).unwrap();
            model.apply(&Op::Persist(op));
        }
        assert_eq!(log.flush().unwrap(), 5);
    }
}

fn a_large_value_round_trips(backend: &mut dyn Backend) {
    let big = batch(1, 1, 300 << 10);
    {
        let (mut log, _, _) = backend.open();
        log.append(&request(1, None, vec![big.clone(), batch(2, 1, 1)], None)).unwrap();
        log.flush().unwrap();
        assert_eq!(log.read_range(Slot(1), Slot(1), 0).unwrap(), vec![big.clone()]);
    }
    let (_, state, _) = backend.open();
    assert_eq!(state.proposals[0], big, "{}", backend.name());
}

macro_rules! conformance {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;
            conformance!(@cases $make;
                fresh_store_is_empty,
                flushed_requests_survive_reopen,
                later_proposal_for_a_slot_wins,
                flush_reports_the_durable_ticket,
                unflushed_requests_are_lost_on_reopen,
                ticket_order_is_enforced_and_poisons,
                truncation_hides_and_survives_reopen,
                read_range_respects_bounds_and_budget,
                long_run_with_truncation_reclaims_space,
                promise_and_chosen_never_go_down,
                a_second_handle_is_locked_out,
                recovery_then_append_then_recovery,
                a_large_value_round_trips
            );
        }
    };
    (@cases $make:expr; $($case:ident),*) => {
        $(
            #[test]
            fn $case() {
                let mut backend = $make;
                super::$case(&mut backend);
            }
        )*
    };
}

conformance!(memory, MemoryBackend::new());
conformance!(journal, JournalBackend::new());
conformance!(sim_journal, SimJournalBackend::new());
conformance!(pmem, PmemBackend::new());
conformance!(pmem_cache_lines, PmemBackend::cache_lines());
conformance!(sim_pmem, SimPmemBackend::new(1 << 20));

/// A flush larger than the free space commits in runs, reclaiming between them. When even
/// one entry cannot fit it reports `Full` and reports nothing durable; what was committed is
/// a durable prefix. The way on: reopen (dropping the buffer), truncate, append again.
#[test]
fn pmem_flush_commits_in_runs_and_full_leaves_a_durable_prefix() {
    let mut backend = SimPmemBackend::new(256 + 4096);
    let (mut log, _, _) = backend.open();
    let mut model = Model::default();
    for ticket in 1..=30u64 {
        let op = request(ticket, Some(ballot(ticket, 1)), vec![batch(ticket, 1, 200)], Some(ticket));
        log.append(&op).unwrap();
        model.push(Op::Persist(op));
    }
    let error = log.flush().unwrap_err();
    assert!(matches!(error, LogError::Full { .. }), "{error}");
    assert_eq!(log.durable_ticket(), 0, "nothing reported durable");
    assert!(log.needs_flush());
    assert!(log.statistics().flushes >= 1, "a first run was committed");
    drop(log);
    let (mut log, state, _) = backend.open();
    let k = *model.matching_prefixes(&state).last().expect("a prefix");
    assert!(k > 0 && k < 30, "{k} requests committed");
    log.truncate_below(Slot(k as u64)).unwrap();
    log.flush().unwrap();
    for ticket in 1..=5u64 {
        log.append(&request(ticket, None, vec![batch(k as u64 + ticket, 2, 200)], None)).unwrap();
        log.flush().unwrap();
    }
    assert!(log.statistics().reclaimed > 0);
    drop(log);
    let (_, state, _) = backend.open();
    assert_eq!(state.proposals.first().map(|p| p.slot), Some(Slot(k as u64)));
    assert_eq!(state.proposals.len(), 6);
}

#[test]
fn cache_line_mode_persists_with_cache_lines_where_the_cpu_has_them() {
    let backend = PmemBackend::cache_lines();
    let (log, _, _) =
        rsl_log::PmemLog::open(backend.path(), &backend.options, rsl_log::RecoveryPolicy::Strict).unwrap();
    let expected = match rsl_log::detect_cache_line_flush() {
        Some(method) => rsl_log::Persistence::CacheLines(method),
        None => rsl_log::Persistence::Msync,
    };
    assert_eq!(log.persistence(), Some(expected));
    let region = format!("{:?}", log.region());
    assert!(region.contains(&format!("{expected:?}")), "{region}");
    drop(log);
    let msync = PmemBackend::new();
    let (log, _, _) =
        rsl_log::PmemLog::open(msync.path(), &msync.options, rsl_log::RecoveryPolicy::Strict).unwrap();
    assert_eq!(log.persistence(), Some(rsl_log::Persistence::Msync), "msync is honoured on any file system");
}

/// A reclaim that frees less than the snapshot it writes must not eat the room the next
/// snapshot needs: random appends, flushes and truncations on a small region always leave a
/// log that fits its area and reopens (seeded; a region this small reclaims constantly).
#[test]
fn pmem_reclaim_never_overfills_a_small_region() {
    use rsl_core::SplitMix64;
    for seed in 0..2_000u64 {
        let mut backend = SimPmemBackend::new(256 + 2048);
        let (mut log, _, _) = backend.open();
        let mut rng = SplitMix64::new(seed);
        let mut ticket = 0;
        for _ in 0..40 {
            match rng.below(10) {
                0 => {
                    let _ = log.truncate_below(Slot(rng.below(20)));
                }
                1..=3 => {
                    let _ = log.flush();
                }
                _ => {
                    ticket += 1;
                    let proposals = (0..rng.below(3))
                        .map(|_| batch(rng.below(24), rng.below(5), rng.below(60) as usize))
                        .collect();
                    let promise = (rng.below(3) == 0).then(|| ballot(rng.below(9), 2));
                    let chosen = (rng.below(3) == 0).then(|| rng.below(24));
                    let _ = log.append(&request(ticket, promise, proposals, chosen));
                }
            }
        }
        let _ = log.flush();
        drop(log);
        let reopened =
            rsl_log::PmemLog::recover(Box::new(backend.pmem.clone()), rsl_log::RecoveryPolicy::Strict);
        if let Err(error) = reopened {
            panic!("seed {seed}: the region no longer reopens: {error}");
        }
    }
}
