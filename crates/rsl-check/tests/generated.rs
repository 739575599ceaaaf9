//! Generated histories: valid ones must pass, and every seeded mutation that makes
//! one certainly not linearizable must be rejected, with a witness naming the
//! mutated operation. Then the size the checker is for: a ten-minute history of ten
//! clients (in release builds; debug builds check one minute of it, to stay quick).

use std::time::{Duration, Instant};

use rsl_check::generate::{self, Rng, Workload};
use rsl_check::{check, minimize, parse_history, to_jsonl, CheckBudget, CheckResult, Operation, Output};

/// Asserts that `ops` is rejected on the key of `ops[victim]`, and that the minimal
/// witness includes the victim.
fn assert_caught(name: &str, ops: &[Operation], victim: usize) {
    assert_caught_any(name, ops, &[victim]);
}

/// Asserts that `ops` is rejected on the key of the victims, and that the minimal
/// witness includes one of them.
fn assert_caught_any(name: &str, ops: &[Operation], victims: &[usize]) {
    let victim = victims[0];
    let budget = CheckBudget::with_timeout(Duration::from_secs(60));
    match check(ops, budget) {
        CheckResult::NotLinearizable { key, witness } => {
            assert_eq!(key, ops[victim].key, "{name}");
            let minimal = minimize(ops, &key, &witness, budget);
            assert!(minimal.minimal, "{name}: {minimal:?}");
            assert!(
                minimal.operations.iter().any(|op| victims.contains(op)),
                "{name}: witness {:?} has none of {victims:?}",
                minimal.operations
            );
        }
        other => panic!("{name}: mutated operation {victim} {:?} not caught: {other:?}", ops[victim]),
    }
}

fn workload(seed: u64, seconds: u64) -> Workload {
    Workload { duration_ns: seconds * 1_000_000_000, ..Workload::ten_minutes(seed) }
}

#[test]
fn seeded_mutations_of_generated_histories_are_rejected() {
    for seed in 0..12 {
        let generated = generate::generate(&workload(seed, 4));
        let ops = generated.ops;
        assert_eq!(check(&ops, CheckBudget::default()), CheckResult::Linearizable, "seed {seed}");
        let mut rng = Rng::new(seed);
        let mut pick = || rng.below(ops.len() as u64) as usize;

        let mut stale = ops.clone();
        let victim = generate::stale_read(&mut stale, pick()).expect("a read to make stale");
        assert_caught(&format!("seed {seed}: stale read"), &stale, victim);

        let mut unwritten = ops.clone();
        let victim = generate::read_of_unwritten_value(&mut unwritten, pick()).expect("a read");
        assert_caught(&format!("seed {seed}: read of an unwritten value"), &unwritten, victim);

        let mut future = ops.clone();
        let victim = generate::read_from_the_future(&mut future, pick()).expect("a read before a put");
        assert_caught(&format!("seed {seed}: read from the future"), &future, victim);

        // Every read of the dropped write's value is now impossible; the witness may
        // name any of them.
        let (dropped, reader) = generate::drop_observed_write(&ops, pick()).expect("a read of a write");
        let readers: Vec<usize> = std::iter::once(reader)
            .chain((0..dropped.len()).filter(|&i| {
                dropped[i].key == dropped[reader].key
                    && dropped[i].output.is_some()
                    && dropped[i].output == dropped[reader].output
            }))
            .collect();
        assert_caught_any(&format!("seed {seed}: dropped write"), &dropped, &readers);
    }
}

#[test]
fn mutations_survive_the_file_format() {
    let generated = generate::generate(&workload(99, 2));
    let mut ops = generated.ops;
    let victim = generate::stale_read(&mut ops, 12_345).expect("a read to make stale");
    let history = parse_history(&to_jsonl(&ops)).expect("well-formed");
    let index = history
        .ops
        .iter()
        .position(|op| op.call_ns == ops[victim].call_ns && op.process == ops[victim].process)
        .expect("the victim is in the parsed history");
    assert_caught("stale read through the file format", &history.ops, index);
}

/// The ten-minute workload and denser variants, each checked within a minute (so a
/// slow machine fails with `Unknown` instead of hanging), with a stale read deep
/// inside each also caught. Debug builds check the first minute only.
#[test]
fn a_ten_minute_history_checks_in_seconds() {
    let seconds = if cfg!(debug_assertions) { 60 } else { 600 };
    let variants = [
        ("ten minutes, 10 clients, 10 keys", workload(1, seconds)),
        (
            "one hot key, 10 clients, 20 ms operations, 2% timeouts",
            Workload {
                keys: 1,
                latency_ns: 20_000_000,
                think_ns: 1_000_000,
                info_per_mille: 20,
                ..workload(2, seconds)
            },
        ),
    ];
    for (name, workload) in variants {
        let started = Instant::now();
        let generated = generate::generate(&workload);
        let text = generated.to_jsonl();
        let generate_time = started.elapsed();
        let started = Instant::now();
        let history = parse_history(&text).expect("well-formed");
        let parse_time = started.elapsed();
        assert_eq!(history.ops, generated.ops);
        let started = Instant::now();
        let result = check(&history.ops, CheckBudget::with_timeout(Duration::from_secs(60)));
        let check_time = started.elapsed();
        eprintln!(
            "{name}: {} events, {} operations: generated in {generate_time:.2?}, parsed in {parse_time:.2?}, \
             checked in {check_time:.2?}",
            history.events,
            history.ops.len(),
        );
        assert_eq!(result, CheckResult::Linearizable, "{name}");

        // A stale read three quarters of the way through.
        let mut ops = history.ops;
        let gets = ops.iter().filter(|op| matches!(op.output, Some(Output::Get { .. }))).count();
        let victim = generate::stale_read(&mut ops, gets * 3 / 4).expect("a read to make stale");
        let started = Instant::now();
        assert_caught(&format!("{name}, stale read"), &ops, victim);
        eprintln!(
            "{name}: stale read at operation {victim} caught and minimized in {:.2?}",
            started.elapsed()
        );
    }
}
