//! Hand-made histories in the file format, each with its verdict and, for the ones
//! that are not linearizable, its minimal witness (as the lines its operations were
//! invoked on).

use rsl_check::{check, minimize, parse_history, CheckBudget, CheckResult, History, ParseError};

/// One event, in the format: `e(process, "invoke", "put", "x", "1", time)`.
fn e(process: u64, kind: &str, f: &str, key: &str, value: &str, time: u64) -> String {
    format!(
        r#"{{"process":{process},"type":"{kind}","f":"{f}","key":"{key}","value":{value},"time":{time}}}"#
    )
}

/// An operation: its invocation at `time` with `value`, and its completion of type
/// `kind` (`ok`, `info` or `fail`) 10 ns later with `result`.
fn op(process: u64, kind: &str, f: &str, key: &str, value: &str, result: &str, time: u64) -> [String; 2] {
    [e(process, "invoke", f, key, value, time), e(process, kind, f, key, result, time + 10)]
}

/// A put of `value` that completed.
fn put(process: u64, key: &str, value: &str, time: u64) -> [String; 2] {
    op(process, "ok", "put", key, value, value, time)
}

/// A get that completed, reading `read` (`null`: the key was absent).
fn get(process: u64, key: &str, read: &str, time: u64) -> [String; 2] {
    op(process, "ok", "get", key, "null", read, time)
}

/// Where the `info` histories start: a put of 1 by process 1, then a put of 2 by process
/// 2 that timed out.
fn put_then_timed_out_put() -> Vec<String> {
    [put(1, "x", "1", 0), op(2, "info", "put", "x", "2", "2", 20)].concat()
}

fn parse(lines: &[String]) -> History {
    parse_history(&lines.join("\n")).unwrap_or_else(|error| panic!("{error}"))
}

fn assert_linearizable(name: &str, lines: &[String]) {
    let history = parse(lines);
    assert_eq!(check(&history.ops, CheckBudget::default()), CheckResult::Linearizable, "{name}");
}

/// Asserts that the history is not linearizable on `key` and that its minimal
/// witness is the operations invoked on `invoke_lines` (1-based).
fn assert_witness(name: &str, lines: &[String], key: &str, invoke_lines: &[usize]) {
    let history = parse(lines);
    let CheckResult::NotLinearizable { key: bad_key, witness } = check(&history.ops, CheckBudget::default())
    else {
        panic!("{name}: expected a violation");
    };
    assert_eq!(bad_key, key, "{name}");
    let minimal = minimize(&history.ops, &bad_key, &witness, CheckBudget::default());
    assert!(minimal.minimal, "{name}: {minimal:?}");
    let found: Vec<usize> = minimal.operations.iter().map(|&i| history.origins[i].invoke_line).collect();
    assert_eq!(found, invoke_lines, "{name}");
}

/// Asserts that `late`, invoked at 40 ns and relying on `x` holding 1, is a violation
/// after a put of 1 and then a put of 2 (its witness: the three invocations), and fine
/// had the put of 2 returned only after `late` was invoked.
fn assert_needs_the_overwritten_value(name: &str, late: [String; 2]) {
    let history = [put(1, "x", "1", 0), put(2, "x", "2", 20), late].concat();
    assert_witness(name, &history, "x", &[1, 3, 5]);
    let mut concurrent = history.clone();
    concurrent[3] = e(2, "ok", "put", "x", "2", 45);
    assert_linearizable(&format!("{name}, concurrent with the overwrite"), &concurrent);
}

#[test]
fn stale_read() {
    // Had the second put been concurrent with the read, reading 1 would be fine.
    assert_needs_the_overwritten_value("stale read", get(3, "x", "1", 40));
}

#[test]
fn lost_write() {
    // Two acknowledged puts, then reads that only ever see the first: the second was lost.
    let history =
        [put(1, "x", "1", 0), put(1, "x", "2", 20), get(2, "x", "1", 40), get(2, "x", "1", 60)].concat();
    // The first read alone shows it.
    assert_witness("lost write", &history, "x", &[1, 3, 5]);
}

#[test]
fn cas_on_a_stale_value() {
    // The cas swaps from 1 although 2 overwrote 1 before it was invoked; the same cas
    // concurrent with the put of 2 may have come first.
    assert_needs_the_overwritten_value("cas on a stale value", op(3, "ok", "cas", "x", "[1,3]", "[1,3]", 40));
}

#[test]
fn read_of_a_value_never_written() {
    let history = [put(1, "x", "1", 0), get(2, "x", "7", 20)].concat();
    assert_witness("read of a value never written", &history, "x", &[3]);
}

#[test]
fn concurrent_puts_observed_in_both_orders() {
    // Two concurrent puts; sequential reads see 1, then 2, then 1 again: each order
    // of the puts explains two of the reads, none explains all three.
    let mut history = vec![
        e(1, "invoke", "put", "x", "1", 0),
        e(2, "invoke", "put", "x", "2", 0),
        e(1, "ok", "put", "x", "1", 10),
        e(2, "ok", "put", "x", "2", 10),
    ];
    history.extend([get(3, "x", "1", 20), get(3, "x", "2", 40), get(4, "x", "1", 60)].concat());
    // Already the first two reads: the put of 2 returned before the read of 1 began, so
    // the put of 1 came after it, and nothing can bring back 2 for the second read.
    assert_witness("concurrent puts observed in both orders", &history, "x", &[2, 5, 7]);
    // Without the second read, the reads see the puts in one order only.
    let mut one_order = history.to_vec();
    one_order.drain(6..8);
    assert_linearizable("concurrent puts observed in one order", &one_order);
    // Two readers disagreeing while the puts are still in flight is fine.
    let in_flight = [
        e(1, "invoke", "put", "x", "1", 0),
        e(2, "invoke", "put", "x", "2", 0),
        e(3, "invoke", "get", "x", "null", 1),
        e(3, "ok", "get", "x", "1", 2),
        e(4, "invoke", "get", "x", "null", 3),
        e(4, "ok", "get", "x", "2", 4),
        e(1, "ok", "put", "x", "1", 10),
        e(2, "ok", "put", "x", "2", 10),
    ];
    assert_linearizable("puts in flight observed in one order", &in_flight);
}

#[test]
fn info_write_that_took_effect() {
    // A timed-out put is seen later: it took effect, long after its timeout.
    let mut history = put_then_timed_out_put();
    history.extend([get(3, "x", "1", 40), get(3, "x", "2", 60)].concat());
    assert_linearizable("info write that took effect", &history);
}

#[test]
fn info_write_that_did_not_take_effect() {
    let mut history = put_then_timed_out_put();
    history.extend(get(3, "x", "1", 40));
    assert_linearizable("info write that did not take effect", &history);
    // An invocation never completed counts as info too.
    let mut unfinished = history.to_vec();
    unfinished.remove(3);
    assert_linearizable("write never completed", &unfinished);
}

#[test]
fn info_write_takes_effect_at_most_once() {
    // A timed-out put of 2 can explain one switch to 2, not two of them.
    let mut history = put_then_timed_out_put();
    history.extend([get(3, "x", "2", 40), put(1, "x", "3", 60), get(3, "x", "2", 80)].concat());
    assert_witness("info write used twice", &history, "x", &[5, 7, 9]);
}

#[test]
fn info_write_cannot_take_effect_before_its_invocation() {
    let history = [get(1, "x", "5", 0), op(2, "info", "put", "x", "5", "5", 20)].concat();
    assert_witness("read before the info write was invoked", &history, "x", &[1]);
}

#[test]
fn failed_write_must_not_take_effect() {
    // The put of 2 failed, so the read cannot see it.
    let history =
        [put(1, "x", "1", 0), op(2, "fail", "put", "x", "2", "2", 20), get(3, "x", "2", 40)].concat();
    assert_witness("read of a failed write", &history, "x", &[5]);
    // A failed cas did not swap either.
    let cas =
        [put(1, "x", "1", 0), op(2, "fail", "cas", "x", "[1,2]", "[1,2]", 20), get(3, "x", "1", 40)].concat();
    assert_linearizable("failed cas left the value", &cas);
    let mut seen = cas.clone();
    seen[5] = e(3, "ok", "get", "x", "2", 50);
    assert_witness("read of a failed cas", &seen, "x", &[5]);
}

#[test]
fn keys_are_independent_and_the_bad_one_is_named() {
    let history =
        [put(1, "a", "1", 0), put(2, "b", "1", 0), get(1, "a", "1", 20), get(2, "b", "null", 20)].concat();
    assert_witness("absent after a put", &history, "b", &[3, 7]);
}

#[test]
fn string_values_compare_as_json() {
    let history = [
        put(1, "x", r#""one""#, 0),
        op(1, "ok", "cas", "x", r#"["one",2]"#, "true", 20),
        get(2, "x", "2", 40),
    ]
    .concat();
    assert_linearizable("strings and integers", &history);
    let mut confused = history.clone();
    confused[5] = e(2, "ok", "get", "x", r#""2""#, 50);
    assert_witness("the string \"2\" is not 2", &confused, "x", &[5]);
    let parsed = parse(&confused);
    assert_eq!(parsed.describe(0), r#"put "one" -> ok"#);
    assert_eq!(parsed.describe(2), r#"get -> "2""#);
}

#[test]
fn info_cas_may_swap_late_or_never() {
    let timed_out_cas = || [put(1, "x", "1", 0), op(2, "info", "cas", "x", "[1,2]", "[1,2]", 20)].concat();
    let mut late = timed_out_cas();
    late.extend([get(3, "x", "1", 40), get(3, "x", "2", 60)].concat());
    assert_linearizable("info cas that swapped after a read", &late);
    let mut never = timed_out_cas();
    never.extend([get(3, "x", "1", 40), get(3, "x", "1", 60)].concat());
    assert_linearizable("info cas that never swapped", &never);
    // Once it swapped it cannot swap again after 1 is written back.
    let mut twice = timed_out_cas();
    twice.extend([get(3, "x", "2", 40), put(1, "x", "1", 60), get(3, "x", "2", 80)].concat());
    assert_witness("info cas used twice", &twice, "x", &[5, 7, 9]);
}

#[test]
fn info_cas_cannot_swap_from_a_value_never_held() {
    let history =
        [put(1, "x", "1", 0), op(2, "info", "cas", "x", "[5,2]", "[5,2]", 20), get(3, "x", "2", 40)].concat();
    assert_witness("info cas from a value never held", &history, "x", &[5]);
}

#[test]
fn a_cas_that_reports_a_failed_comparison_must_not_have_matched() {
    let refused = |expected: &str| {
        [put(1, "x", "1", 0), op(2, "ok", "cas", "x", &format!("[{expected},2]"), "false", 20)].concat()
    };
    assert_linearizable("cas refused on a value the key did not hold", &refused("7"));
    assert_witness("cas refused although the key held its expected value", &refused("1"), "x", &[1, 3]);
    // Expecting absence: refused only once the key exists.
    let absent = [op(2, "ok", "cas", "x", "[null,2]", "false", 0)].concat();
    assert_witness("cas expecting absence refused on an absent key", &absent, "x", &[1]);
}

#[test]
fn a_delete_makes_the_key_absent() {
    let deleted = |read: &str| {
        [put(1, "x", "1", 0), op(1, "ok", "delete", "x", "null", "null", 20), get(2, "x", read, 40)].concat()
    };
    assert_linearizable("absent after a delete", &deleted("null"));
    assert_witness("the deleted value read again", &deleted("1"), "x", &[1, 3, 5]);
    // A cas expecting absence succeeds after the delete.
    let recreated = [
        deleted("null"),
        op(3, "ok", "cas", "x", "[null,5]", "true", 60).to_vec(),
        get(2, "x", "5", 80).to_vec(),
    ]
    .concat();
    assert_linearizable("recreated by a cas from absent", &recreated);
}

#[test]
fn an_overlapping_invocation_names_its_line_and_the_pending_one() {
    let text = [e(4, "invoke", "put", "x", "1", 0), e(4, "invoke", "get", "x", "null", 5)].join("\n");
    let error = parse_history(&text).unwrap_err();
    assert_eq!(error.line(), 2);
    assert!(
        error.message().starts_with("process 4 invoked an operation while its invocation on line 1"),
        "{error}"
    );
}

#[test]
fn operations_describe_their_outcome() {
    let history = parse(
        &[
            op(1, "ok", "cas", "x", "[1,2]", "false", 0),
            op(2, "info", "put", "x", "3", "3", 20),
            op(3, "ok", "delete", "x", "null", "null", 40),
        ]
        .concat(),
    );
    assert_eq!(history.describe(0), "cas [1, 2] -> ok (not swapped)");
    assert_eq!(history.describe(1), "put 3 -> unknown");
    assert_eq!(history.describe(2), "delete -> ok");
    assert_eq!(history.describe(3), "no operation 3");
}

/// A stale read (the operations invoked on lines 1, 3 and 5 are its witness).
fn stale() -> History {
    parse(&[put(1, "x", "1", 0), put(2, "x", "2", 20), get(3, "x", "1", 40)].concat())
}

#[test]
fn minimize_without_a_hint_still_finds_the_minimal_witness() {
    let history = stale();
    let minimal = minimize(&history.ops, "x", &[], CheckBudget::default());
    assert!(minimal.minimal, "{minimal:?}");
    assert_eq!(minimal.operations, vec![0, 1, 2]);
}

#[test]
fn minimize_out_of_time_returns_every_completed_operation_unconfirmed() {
    let history = stale();
    let expired = CheckBudget { deadline: Some(std::time::Instant::now()), ..CheckBudget::default() };
    let witness = minimize(&history.ops, "x", &[2], expired);
    assert!(!witness.minimal, "nothing could be confirmed: {witness:?}");
    assert_eq!(witness.operations, vec![0, 1, 2]);
}

/// What a malformed line's error must say.
type Expectation = fn(&ParseError) -> bool;

#[test]
fn malformed_histories_name_the_line() {
    let good = put(1, "x", "1", 0);
    let cases: Vec<(&str, String, Expectation)> = vec![
        ("bad JSON", r#"{"process":1,"type":"invoke","#.to_owned(), |e| matches!(e, ParseError::Json { .. })),
        ("missing field", r#"{"process":1,"type":"invoke","f":"put","value":1,"time":20}"#.to_owned(), |e| {
            e.message().contains("missing field `key`")
        }),
        ("unknown type", e(1, "done", "put", "x", "1", 20), |e| {
            e.message().contains("unknown type \"done\"")
        }),
        ("ok without invoke", e(2, "ok", "put", "x", "1", 20), |e| {
            matches!(e, ParseError::CompletionWithoutInvoke { process: 2, .. })
        }),
        ("wrong value shape for cas", e(1, "invoke", "cas", "x", "[1,2,3]", 20), |e| {
            e.message().contains("cas invocation value must be [expected or null, new]")
        }),
        ("cas value not a pair", e(1, "invoke", "cas", "x", "5", 20), |e| e.message().contains("cas")),
    ];
    for (name, line, expected) in cases {
        let text = format!("{}\n{}\n\n{line}\n", good[0], good[1]);
        let error = parse_history(&text).expect_err(name);
        assert_eq!(error.line(), 4, "{name}: {error}");
        assert!(expected(&error), "{name}: {error:?}");
    }
    // Two invokes for one process: the second is reported, naming the first.
    let text = format!("{}\n{}\n", good[0], e(1, "invoke", "get", "x", "null", 5));
    assert_eq!(
        parse_history(&text),
        Err(ParseError::OverlappingInvoke { line: 2, process: 1, pending_line: 1 })
    );
}
