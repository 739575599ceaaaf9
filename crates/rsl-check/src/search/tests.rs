use std::collections::HashMap;
use std::time::Instant;

use proptest::prelude::*;

use super::*;
use crate::reference::{arb_small_history, brute_force_linearizable};
use crate::rng::Rng;
use crate::{parse_jsonl, to_jsonl, Input, Output};

// ----- builders -------------------------------------------------------

fn op(key: &str, input: Input, output: Option<Output>, call: u64, ret: Option<u64>) -> Operation {
    Operation { process: 0, key: key.to_owned(), input, output, call_ns: call, return_ns: ret }
}

fn put(value: i64, call: u64, ret: u64) -> Operation {
    op("k", Input::Put { value }, Some(Output::Put), call, Some(ret))
}

fn get(value: Option<i64>, call: u64, ret: u64) -> Operation {
    op("k", Input::Get, Some(Output::Get { value }), call, Some(ret))
}

fn del(call: u64, ret: u64) -> Operation {
    op("k", Input::Delete, Some(Output::Delete), call, Some(ret))
}

fn cas(expected: Option<i64>, new: i64, ok: bool, call: u64, ret: u64) -> Operation {
    op("k", Input::Cas { expected, new }, Some(Output::Cas { ok }), call, Some(ret))
}

fn unknown(input: Input, call: u64) -> Operation {
    op("k", input, None, call, None)
}

fn on(key: &str, mut operation: Operation) -> Operation {
    operation.key = key.to_owned();
    operation
}

fn assert_linearizable(history: &[Operation]) {
    let result = check(history, CheckBudget::default());
    assert_eq!(result, CheckResult::Linearizable, "history: {history:#?}");
}

/// Asserts rejection on `key` with a witness ending in `offender`.
fn assert_rejected(history: &[Operation], key: &str, offender: usize) {
    match check(history, CheckBudget::default()) {
        CheckResult::NotLinearizable { key: bad_key, witness } => {
            assert_eq!(bad_key, key);
            assert!(!witness.is_empty());
            assert!(witness.iter().all(|&i| i < history.len()));
            assert_eq!(witness.last(), Some(&offender), "witness {witness:?} should end with op {offender}");
        }
        other => panic!("expected NotLinearizable, got {other:?} for {history:#?}"),
    }
}

// ----- linearizable histories ----------------------------------------

#[test]
fn empty_history_is_linearizable() {
    assert_linearizable(&[]);
}

#[test]
fn sequential_history_is_linearizable() {
    assert_linearizable(&[
        get(None, 0, 1),
        put(1, 2, 3),
        get(Some(1), 4, 5),
        put(2, 6, 7),
        get(Some(2), 8, 9),
        del(10, 11),
        get(None, 12, 13),
    ]);
}

#[test]
fn concurrent_overlapping_writes_are_linearizable() {
    // Both orders of the overlapping puts are allowed; the read fixes one.
    assert_linearizable(&[put(1, 0, 10), put(2, 5, 15), get(Some(1), 20, 21)]);
    assert_linearizable(&[put(1, 0, 10), put(2, 5, 15), get(Some(2), 20, 21)]);
}

#[test]
fn read_concurrent_with_two_writes_sees_either() {
    for seen in [None, Some(1), Some(2)] {
        assert_linearizable(&[put(1, 0, 10), put(2, 0, 10), get(seen, 0, 10)]);
    }
}

#[test]
fn reads_concurrent_with_a_write_may_flip_once() {
    assert_linearizable(&[
        put(1, 0, 1),
        put(2, 10, 50),
        get(Some(1), 11, 12),
        get(Some(2), 13, 14),
        get(Some(2), 15, 16),
    ]);
}

#[test]
fn touching_intervals_are_concurrent() {
    // The get returns exactly when the put is called: they may be ordered
    // either way.
    assert_linearizable(&[get(Some(1), 0, 5), put(1, 5, 6)]);
}

#[test]
fn cas_chain_is_linearizable() {
    assert_linearizable(&[
        cas(None, 1, true, 0, 1),
        cas(Some(1), 2, true, 2, 3),
        cas(Some(1), 3, false, 4, 5),
        cas(Some(2), 3, true, 6, 7),
        get(Some(3), 8, 9),
    ]);
}

#[test]
fn concurrent_cas_chain_is_linearizable() {
    // Listed in an order different from the only valid one.
    assert_linearizable(&[
        cas(Some(3), 4, true, 0, 100),
        cas(Some(1), 2, true, 0, 100),
        cas(Some(2), 3, true, 0, 100),
        cas(None, 1, true, 0, 100),
        cas(Some(1), 9, false, 0, 100),
        get(Some(4), 101, 102),
    ]);
}

#[test]
fn unknown_write_that_happened_is_linearizable() {
    assert_linearizable(&[put(1, 0, 1), unknown(Input::Put { value: 2 }, 2), get(Some(2), 10, 11)]);
}

#[test]
fn unknown_write_that_did_not_happen_is_linearizable() {
    assert_linearizable(&[
        put(1, 0, 1),
        unknown(Input::Put { value: 2 }, 2),
        get(Some(1), 10, 11),
        get(Some(1), 12, 13),
    ]);
}

#[test]
fn unknown_write_may_take_effect_much_later() {
    assert_linearizable(&[
        unknown(Input::Put { value: 7 }, 0),
        put(1, 1, 2),
        get(Some(1), 3, 4),
        put(2, 5, 6),
        get(Some(2), 7, 8),
        get(Some(7), 9, 10),
        get(Some(7), 11, 12),
    ]);
}

#[test]
fn unknown_cas_and_delete_are_optional() {
    assert_linearizable(&[
        put(1, 0, 1),
        unknown(Input::Cas { expected: Some(1), new: 5 }, 2),
        unknown(Input::Delete, 3),
        get(Some(1), 4, 5),
        get(Some(5), 6, 7),
        get(None, 8, 9),
    ]);
}

#[test]
fn unknown_get_is_ignored() {
    assert_linearizable(&[put(1, 0, 1), unknown(Input::Get, 2), get(Some(1), 3, 4)]);
}

#[test]
fn unknown_write_explains_failed_cas() {
    // The cas can only have failed if the unknown put happened first.
    assert_linearizable(&[
        put(1, 0, 1),
        unknown(Input::Put { value: 2 }, 2),
        cas(Some(1), 3, false, 3, 4),
        get(Some(2), 5, 6),
    ]);
}

#[test]
fn chain_of_unknown_operations() {
    assert_linearizable(&[
        unknown(Input::Put { value: 5 }, 0),
        unknown(Input::Cas { expected: Some(5), new: 6 }, 0),
        get(Some(6), 10, 11),
        get(Some(6), 12, 13),
    ]);
}

#[test]
fn completed_op_with_unknown_return_time_may_linearize_late() {
    assert_linearizable(&[
        op("k", Input::Put { value: 3 }, Some(Output::Put), 0, None),
        get(None, 1, 2),
        get(Some(3), 10, 11),
    ]);
}

#[test]
fn deletes_are_linearizable() {
    assert_linearizable(&[
        put(1, 0, 1),
        del(2, 20),
        get(Some(1), 3, 4),
        get(None, 5, 6),
        del(21, 22),
        get(None, 23, 24),
        cas(None, 8, true, 25, 26),
        get(Some(8), 27, 28),
    ]);
}

#[test]
fn keys_are_independent() {
    assert_linearizable(&[
        on("a", put(1, 0, 1)),
        on("b", put(2, 2, 3)),
        on("a", get(Some(1), 4, 5)),
        on("b", get(Some(2), 4, 5)),
        on("c", get(None, 6, 7)),
    ]);
}

// ----- non-linearizable histories ------------------------------------

#[test]
fn rejects_stale_read() {
    assert_rejected(&[put(1, 0, 1), put(2, 2, 3), get(Some(1), 4, 5)], "k", 2);
}

#[test]
fn rejects_read_of_value_never_written() {
    assert_rejected(&[put(1, 0, 1), get(Some(5), 2, 3)], "k", 1);
    assert_rejected(&[get(Some(5), 0, 1)], "k", 0);
}

#[test]
fn rejects_reads_in_impossible_order() {
    assert_rejected(&[put(1, 0, 10), put(2, 0, 10), get(Some(2), 11, 12), get(Some(1), 13, 14)], "k", 3);
    // Two writes ordered by real time, two concurrent readers that
    // observe them in opposite orders.
    assert_rejected(
        &[
            put(1, 0, 100),
            put(2, 0, 100),
            get(Some(1), 0, 10),
            get(Some(2), 11, 20),
            get(Some(2), 0, 10),
            get(Some(1), 11, 20),
        ],
        "k",
        5,
    );
}

#[test]
fn rejects_cas_succeeding_against_wrong_value() {
    assert_rejected(&[put(1, 0, 1), cas(Some(2), 3, true, 2, 3)], "k", 1);
    assert_rejected(&[cas(Some(0), 3, true, 0, 1)], "k", 0);
}

#[test]
fn rejects_cas_failing_against_matching_value() {
    assert_rejected(&[put(1, 0, 1), cas(Some(1), 3, false, 2, 3)], "k", 1);
}

#[test]
fn rejects_two_successful_cas_from_same_value() {
    assert_rejected(&[put(1, 0, 1), cas(Some(1), 2, true, 2, 10), cas(Some(1), 3, true, 2, 10)], "k", 2);
}

#[test]
fn rejects_lost_write() {
    assert_rejected(&[put(1, 0, 1), get(None, 2, 3)], "k", 1);
    assert_rejected(&[put(1, 0, 1), put(2, 2, 3), get(Some(2), 4, 5), get(Some(1), 6, 7)], "k", 3);
}

#[test]
fn rejects_read_of_deleted_value() {
    assert_rejected(&[put(1, 0, 1), del(2, 3), get(Some(1), 4, 5)], "k", 2);
}

#[test]
fn rejects_read_from_the_future() {
    assert_rejected(&[get(Some(1), 0, 1), put(1, 2, 3)], "k", 0);
}

#[test]
fn rejects_read_before_unknown_write_was_invoked() {
    assert_rejected(&[get(Some(2), 0, 1), unknown(Input::Put { value: 2 }, 2)], "k", 0);
}

#[test]
fn rejects_old_value_after_failed_cas_needing_unknown_write() {
    // The failed cas forces the unknown put of 2 before it, so 1 cannot
    // be read afterwards.
    assert_rejected(
        &[
            put(1, 0, 1),
            unknown(Input::Put { value: 2 }, 2),
            cas(Some(1), 3, false, 3, 4),
            get(Some(1), 5, 6),
        ],
        "k",
        3,
    );
}

#[test]
fn rejects_unknown_write_used_twice() {
    // An unknown put takes effect at most once.
    assert_rejected(
        &[
            unknown(Input::Put { value: 5 }, 0),
            unknown(Input::Cas { expected: Some(5), new: 6 }, 0),
            get(Some(6), 10, 11),
            get(Some(5), 12, 13),
        ],
        "k",
        3,
    );
}

#[test]
fn rejects_read_of_value_written_only_by_failed_op() {
    let text = r#"{"process":0,"type":"invoke","f":"put","key":"k","value":1,"time":0}
{"process":0,"type":"ok","f":"put","key":"k","value":1,"time":1}
{"process":1,"type":"invoke","f":"put","key":"k","value":2,"time":2}
{"process":1,"type":"fail","f":"put","key":"k","value":2,"time":3}
{"process":0,"type":"invoke","f":"get","key":"k","value":null,"time":4}
{"process":0,"type":"ok","f":"get","key":"k","value":2,"time":5}
"#;
    let history = parse_jsonl(text).expect("valid history");
    assert_eq!(history.len(), 2);
    assert_rejected(&history, "k", 1);
}

#[test]
fn rejects_output_of_the_wrong_kind() {
    assert_rejected(&[op("k", Input::Get, Some(Output::Put), 0, Some(1))], "k", 0);
}

#[test]
fn reports_the_failing_key() {
    assert_rejected(
        &[
            on("a", put(1, 0, 1)),
            on("b", put(2, 0, 1)),
            on("a", get(Some(1), 2, 3)),
            on("b", get(Some(1), 2, 3)),
        ],
        "b",
        3,
    );
}

#[test]
fn witness_is_the_furthest_partial_linearization() {
    let history = [put(1, 0, 1), put(2, 2, 3), get(Some(2), 4, 5), put(3, 6, 7), get(Some(2), 8, 9)];
    assert_eq!(
        check(&history, CheckBudget::default()),
        CheckResult::NotLinearizable { key: "k".to_owned(), witness: vec![0, 1, 2, 3, 4] }
    );
}

#[test]
fn a_search_deemed_stuck_resumes_or_refutes_locally() {
    use crate::generate::{self, Workload};
    for seed in 0..4 {
        let workload = Workload {
            duration_ns: 2_000_000_000,
            keys: 1,
            latency_ns: 20_000_000,
            think_ns: 1_000_000,
            info_per_mille: 20,
            ..Workload::ten_minutes(seed)
        };
        let mut ops = generate::generate(&workload).ops;
        // Deemed stuck after 50 steps without progress: the local check finds
        // nothing, and the search must resume where it was.
        assert_eq!(check_with(&ops, CheckBudget::default(), 50), CheckResult::Linearizable, "seed {seed}");
        let victim = generate::stale_read(&mut ops, 7 * seed as usize + 100).expect("a read to make stale");
        match check_with(&ops, CheckBudget::default(), 50) {
            CheckResult::NotLinearizable { witness, .. } => {
                assert_eq!(witness.last(), Some(&victim), "seed {seed}");
            }
            other => panic!("seed {seed}: {other:?}"),
        }
    }
}

#[test]
fn exhausted_budget_reports_unknown() {
    let history = [put(1, 0, 10), put(2, 0, 10), put(3, 0, 10), get(Some(1), 11, 12)];
    match check(&history, CheckBudget { max_steps: 2, deadline: None }) {
        CheckResult::Unknown { key, reason } => {
            assert_eq!(key, "k");
            assert!(reason.contains("budget"), "{reason}");
        }
        other => panic!("expected Unknown, got {other:?}"),
    }
    // A violation on another key still wins over an unknown verdict.
    let mut both = history.to_vec();
    both.push(on("z", get(Some(9), 0, 1)));
    assert!(matches!(
        check(&both, CheckBudget { max_steps: 2, deadline: None }),
        CheckResult::NotLinearizable { key, .. } if key == "z"
    ));
}

// ----- randomized histories -------------------------------------------

/// Simulates `processes` clients issuing `count` operations against an
/// atomic key-value store with `keys` keys. Each process runs one
/// operation at a time; each operation takes effect at a random instant
/// inside its interval. About `unknown_per_mille`/1000 of the operations
/// time out (unknown outcome; half of those really took effect).
fn simulate(seed: u64, count: usize, keys: u64, processes: u64, unknown_per_mille: u64) -> Vec<Operation> {
    let mut rng = Rng::new(seed);
    // (process, call, linearization point, return)
    let mut free_at = vec![0u64; processes as usize];
    let mut slots = Vec::with_capacity(count);
    for _ in 0..count {
        let process = (0..processes as usize).min_by_key(|&p| (free_at[p], p)).unwrap_or(0);
        let call = free_at[process] + rng.below(20);
        let point = call + 1 + rng.below(60);
        let ret = point + 1 + rng.below(60);
        free_at[process] = ret;
        slots.push((process as u64, call, point, ret));
    }
    let mut by_point: Vec<usize> = (0..count).collect();
    by_point.sort_by_key(|&i| (slots[i].2, i));

    let mut store: HashMap<String, Option<i64>> = HashMap::new();
    let mut written: Vec<i64> = Vec::new();
    let mut next_value = 1i64;
    let mut ops: Vec<Option<Operation>> = vec![None; count];
    for i in by_point {
        let (process, call, _, ret) = slots[i];
        let key = format!("key{}", rng.below(keys));
        let current = store.get(&key).copied().flatten();
        let times_out = rng.below(1000) < unknown_per_mille;
        let takes_effect = !times_out || rng.below(2) == 0;
        let (input, output, new_state) = match rng.below(10) {
            0..=3 => (Input::Get, Output::Get { value: current }, current),
            4..=6 => {
                next_value += 1;
                (Input::Put { value: next_value }, Output::Put, Some(next_value))
            }
            7 => (Input::Delete, Output::Delete, None),
            _ => {
                let expected = match rng.below(4) {
                    0 => None,
                    1 if !written.is_empty() => Some(written[rng.below(written.len() as u64) as usize]),
                    _ => current,
                };
                next_value += 1;
                let ok = expected == current;
                let after = if ok { Some(next_value) } else { current };
                (Input::Cas { expected, new: next_value }, Output::Cas { ok }, after)
            }
        };
        if takes_effect {
            if let Some(value) = new_state {
                written.push(value);
            }
            store.insert(key.clone(), new_state);
        }
        ops[i] = Some(Operation {
            process,
            key,
            input,
            output: (!times_out).then_some(output),
            call_ns: call,
            return_ns: (!times_out).then_some(ret),
        });
    }
    ops.into_iter().flatten().collect()
}

/// Index of a completed get, to corrupt.
fn some_completed_get(history: &[Operation], pick: usize) -> Option<usize> {
    let gets: Vec<usize> = history
        .iter()
        .enumerate()
        .filter(|(_, op)| matches!(op.output, Some(Output::Get { .. })))
        .map(|(i, _)| i)
        .collect();
    (!gets.is_empty()).then(|| gets[pick % gets.len()])
}

/// Makes a completed get read a stale value: one written (only) by a
/// completed put that was followed, in real time, by another completed
/// put before the get was called. Returns the get's index.
fn make_stale_read(history: &mut [Operation], pick: usize) -> Option<usize> {
    let completed_put = |op: &Operation| matches!((&op.input, &op.output), (Input::Put { .. }, Some(_)));
    let gets: Vec<usize> =
        (0..history.len()).filter(|&i| matches!(history[i].output, Some(Output::Get { .. }))).collect();
    for offset in 0..gets.len() {
        let victim = gets[(pick + offset) % gets.len()];
        let (key, call) = (history[victim].key.clone(), history[victim].call_ns);
        let before = |op: &Operation, time: u64| op.return_ns.is_some_and(|ret| ret < time);
        let overwrite = history.iter().filter(|op| op.key == key && completed_put(op) && before(op, call));
        let Some(overwrite_call) = overwrite.map(|op| op.call_ns).max() else {
            continue;
        };
        let stale = history
            .iter()
            .filter(|op| op.key == key && completed_put(op) && before(op, overwrite_call))
            .find_map(|op| match op.input {
                Input::Put { value } => Some(value),
                _ => None,
            });
        if let Some(value) = stale {
            history[victim].output = Some(Output::Get { value: Some(value) });
            return Some(victim);
        }
    }
    None
}

/// Checks that `history` is rejected on the key of `history[victim]`, with a witness
/// ending in `victim`.
fn rejection_at(history: &[Operation], victim: usize) -> Result<(), String> {
    match check(history, CheckBudget::default()) {
        CheckResult::NotLinearizable { key, witness } if key == history[victim].key => {
            if witness.last() == Some(&victim) {
                Ok(())
            } else {
                Err(format!("witness {witness:?} does not end with op {victim}"))
            }
        }
        other => Err(format!(
            "expected NotLinearizable at op {victim} on {:?}, got {other:?}",
            history[victim].key
        )),
    }
}

fn assert_rejected_at(history: &[Operation], victim: usize) {
    if let Err(problem) = rejection_at(history, victim) {
        panic!("{problem}");
    }
}

#[test]
fn large_randomized_history_checks_quickly() {
    let history = simulate(42, 20_000, 5, 8, 5);
    let start = Instant::now();
    let result = check(&history, CheckBudget::default());
    eprintln!("20,000 ops / 5 keys / 8 processes checked in {:?}", start.elapsed());
    assert_eq!(result, CheckResult::Linearizable);

    let mut corrupted = history.clone();
    let victim = make_stale_read(&mut corrupted, 10_000).expect("a get to corrupt");
    let start = Instant::now();
    assert_rejected_at(&corrupted, victim);
    eprintln!("with a stale read: rejected in {:?}", start.elapsed());

    let mut corrupted = history;
    let victim = some_completed_get(&corrupted, 12_345).expect("history has gets");
    corrupted[victim].output = Some(Output::Get { value: Some(-1) });
    assert_rejected_at(&corrupted, victim);
}

#[test]
fn hundred_thousand_ops_check_quickly() {
    let history = simulate(7, 100_000, 10, 10, 2);
    let start = Instant::now();
    let result = check(&history, CheckBudget::default());
    eprintln!("100,000 ops / 10 keys / 10 processes checked in {:?}", start.elapsed());
    assert_eq!(result, CheckResult::Linearizable);
}

#[test]
fn hot_key_with_many_unknowns() {
    // One key, six processes, 5% of operations time out.
    let history = simulate(3, 5_000, 1, 6, 50);
    let start = Instant::now();
    assert_eq!(check(&history, CheckBudget::default()), CheckResult::Linearizable);
    eprintln!("5,000 ops / 1 key / 6 processes / 5% unknown checked in {:?}", start.elapsed());

    let mut corrupted = history;
    let victim = make_stale_read(&mut corrupted, 2_500).expect("a get to corrupt");
    let start = Instant::now();
    assert_rejected_at(&corrupted, victim);
    eprintln!("with a stale read: rejected in {:?}", start.elapsed());
}

/// Raw material for one operation of a proptest history.
type OpSeed = (u8, u8, bool, u64, u64, u8);

/// Builds a history by running the ops sequentially against a register,
/// one linearization point every 100ns, then stretching each interval
/// backwards by `pre` and forwards by `post` (so intervals overlap, but the
/// points stay inside them and in order). A completed get of key 0 ends
/// the history.
fn build_history(seeds: &[OpSeed]) -> Vec<Operation> {
    let mut store: HashMap<String, Option<i64>> = HashMap::new();
    let mut next_value = 0i64;
    let mut history = Vec::new();
    let last = (0u8, 0u8, false, 0u64, 0u64, 2u8);
    for (i, &(key, kind, flag, pre, post, fate)) in seeds.iter().chain([&last]).enumerate() {
        let point = 1_000 + 100 * i as u64;
        let key = format!("k{key}");
        let current = store.get(&key).copied().flatten();
        next_value += 1;
        let (input, output, after) = match kind % 10 {
            0..=3 => (Input::Get, Output::Get { value: current }, current),
            4..=6 => (Input::Put { value: next_value }, Output::Put, Some(next_value)),
            7 => (Input::Delete, Output::Delete, None),
            _ => {
                let expected = if flag { current } else { Some(next_value - 1) };
                let ok = expected == current;
                (
                    Input::Cas { expected, new: next_value },
                    Output::Cas { ok },
                    if ok { Some(next_value) } else { current },
                )
            }
        };
        // fate 0: unknown outcome, took effect; 1: unknown, did not; else completed.
        let completed = fate >= 2;
        if fate != 1 {
            store.insert(key.clone(), after);
        }
        history.push(Operation {
            process: i as u64 % 5,
            key,
            input,
            output: completed.then_some(output),
            call_ns: point - pre,
            return_ns: completed.then_some(point + post),
        });
    }
    history
}

fn arb_seeds() -> impl Strategy<Value = Vec<OpSeed>> {
    prop::collection::vec((0u8..3, 0u8..10, any::<bool>(), 0u64..350, 0u64..350, 0u8..12), 0..60)
}

proptest! {
    #[test]
    fn prop_stretched_sequential_histories_are_linearizable(seeds in arb_seeds()) {
        let history = build_history(&seeds);
        prop_assert_eq!(check(&history, CheckBudget::default()), CheckResult::Linearizable);
    }

    #[test]
    fn prop_read_of_unwritten_value_is_rejected(seeds in arb_seeds(), pick in any::<usize>()) {
        let mut history = build_history(&seeds);
        let victim = some_completed_get(&history, pick).expect("the final get is completed");
        history[victim].output = Some(Output::Get { value: Some(-1) });
        rejection_at(&history, victim).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn prop_stale_read_is_rejected(seeds in arb_seeds(), pick in any::<usize>()) {
        let mut history = build_history(&seeds);
        if let Some(victim) = make_stale_read(&mut history, pick) {
            rejection_at(&history, victim).map_err(TestCaseError::fail)?;
        }
    }

    #[test]
    fn prop_simulated_histories_round_trip_and_are_linearizable(seed in any::<u64>()) {
        let history = simulate(seed, 60, 3, 4, 100);
        prop_assert_eq!(check(&history, CheckBudget::default()), CheckResult::Linearizable);
        let parsed = parse_jsonl(&to_jsonl(&history));
        prop_assert!(parsed.is_ok(), "{:?}", parsed);
        let mut parsed = parsed.unwrap_or_default();
        let mut expected = history.clone();
        parsed.sort_by_key(|op| (op.call_ns, op.process));
        expected.sort_by_key(|op| (op.call_ns, op.process));
        prop_assert_eq!(parsed, expected);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn prop_agrees_with_brute_force(history in arb_small_history()) {
        let expected = brute_force_linearizable(&history);
        // Deemed stuck at once: the local refutation runs, then the search resumes.
        let hurried = check_with(&history, CheckBudget::default(), 1);
        prop_assert_eq!(hurried.is_linearizable(), expected, "{:?}", hurried);
        let result = check(&history, CheckBudget::default());
        prop_assert_eq!(result.is_linearizable(), expected, "{:?}", result);
        if let CheckResult::NotLinearizable { key, witness } = result {
            prop_assert!(!witness.is_empty());
            let blocker = witness.last().copied().unwrap_or(usize::MAX);
            prop_assert!(blocker < history.len());
            prop_assert!(history[blocker].output.is_some());
            prop_assert!(witness.iter().all(|&i| history[i].key == key));
        }
    }
}
