//! `rsl-sim`: runs seeds of the whole-cluster simulator in parallel threads.
//!
//! ```text
//! rsl-sim [--seeds N] [--seed S] [--first-seed F] [--replicas 3|5] [--mutation NAME]
//!         [--threads T] [--verbose]
//! ```
//! `--seed S` runs exactly one seed (the replay form every failure prints). Without it,
//! seeds `F..F+N` run. Exits 1 when any seed fails.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use rsl_sim::matrix::{self, MatrixRow};
use rsl_sim::options::Options;
use rsl_sim::{mutation_name, replay_command, run_seed, MUTATIONS};

struct Args {
    seeds: u64,
    first_seed: u64,
    replicas: usize,
    mutation: Option<rsl_core::Mutation>,
    all_mutations: bool,
    threads: usize,
    verbose: bool,
    until_caught: bool,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        seeds: 100,
        first_seed: 0,
        replicas: 3,
        mutation: None,
        all_mutations: false,
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        verbose: false,
        until_caught: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        let number = |name: &str, text: String| {
            text.parse::<u64>().map_err(|_| format!("{name}: `{text}` is not a number"))
        };
        match flag.as_str() {
            "--seeds" => args.seeds = number("--seeds", value("--seeds")?)?,
            "--seed" => {
                args.first_seed = number("--seed", value("--seed")?)?;
                args.seeds = 1;
                args.verbose = true;
            }
            "--first-seed" => args.first_seed = number("--first-seed", value("--first-seed")?)?,
            "--replicas" => {
                args.replicas = match value("--replicas")?.as_str() {
                    "3" => 3,
                    "5" => 5,
                    other => return Err(format!("--replicas must be 3 or 5, not `{other}`")),
                }
            }
            "--mutation" => {
                let name = value("--mutation")?;
                if name == "all" {
                    args.all_mutations = true;
                    continue;
                }
                args.mutation = Some(matrix::mutation_by_name(&name).ok_or_else(|| {
                    let names: Vec<&str> = MUTATIONS.iter().map(|m| mutation_name(*m)).collect();
                    format!("unknown mutation `{name}`; known: {}", names.join(", "))
                })?);
            }
            "--threads" => args.threads = number("--threads", value("--threads")?)?.max(1) as usize,
            "--verbose" => args.verbose = true,
            "--until-caught" => args.until_caught = true,
            "--help" | "-h" => {
                println!(
                    "rsl-sim: deterministic whole-cluster simulation of rsl-core\n\n\
                     --seeds N        seeds to run (default 100)\n\
                     --seed S         run (replay) exactly seed S, verbosely\n\
                     --first-seed F   first seed of the range (default 0)\n\
                     --replicas 3|5   ring size (default 3)\n\
                     --mutation NAME  switch on a seeded bug (or `all`, one after another): {}\n\
                     --threads T      worker threads (default: all cores)\n\
                     --verbose        print every seed's counters\n\
                     --until-caught   with --mutation: stop at the first seed the bug's own checker\n\
                     \x20                fails, and succeed only if it does within --seeds",
                    MUTATIONS.iter().map(|m| mutation_name(*m)).collect::<Vec<_>>().join(", ")
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument `{other}` (try --help)")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let mut args = match parse() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("rsl-sim: {message}");
            return ExitCode::from(2);
        }
    };
    if args.all_mutations {
        // Every seeded bug in turn; all must be caught.
        let mut rows = Vec::new();
        let mut code = ExitCode::SUCCESS;
        for mutation in MUTATIONS {
            args.mutation = Some(mutation);
            let (exit, row) = run(&args);
            if exit != ExitCode::SUCCESS {
                code = ExitCode::FAILURE;
            }
            rows.extend(row);
        }
        if args.until_caught {
            println!(
                "\nmutation matrix, seeds {}..{}:\n{}",
                args.first_seed,
                args.first_seed + args.seeds,
                matrix::table(&rows)
            );
        }
        return code;
    }
    run(&args).0
}

/// Runs the seeds; with `--until-caught`, also the matrix row of the mutation.
fn run(args: &Args) -> (ExitCode, Option<MatrixRow>) {
    let start = Instant::now();
    let next = AtomicU64::new(args.first_seed);
    let end = args.first_seed + args.seeds;
    let passed = AtomicU64::new(0);
    let failures = Mutex::new(Vec::new());
    // With --until-caught, the lowest seed the bug's own checker failed so far; workers
    // skip seeds above it.
    let caught = AtomicU64::new(u64::MAX);
    let named = args.mutation.map(|m| matrix::seeded_bug(m).checker);
    std::thread::scope(|scope| {
        for _ in 0..args.threads.min(args.seeds.max(1) as usize) {
            scope.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= end || seed > caught.load(Ordering::Relaxed) {
                    break;
                }
                let options = Options::from_seed(seed, args.replicas, args.mutation);
                if args.verbose {
                    println!("seed {seed}: {options:?}");
                }
                let outcome = run_seed(seed, options);
                if args.verbose {
                    println!("seed {seed}: {:?}", outcome.stats);
                }
                match outcome.failure {
                    None => {
                        passed.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(failure) => {
                        if args.until_caught && Some(failure.checker) == named {
                            caught.fetch_min(seed, Ordering::Relaxed);
                        }
                        println!("seed {seed} FAILED: {failure}");
                        println!("  replay: {}", replay_command(seed, args.replicas, args.mutation));
                        failures.lock().expect("no poisoning").push((seed, failure.checker));
                    }
                }
            });
        }
    });
    let elapsed = start.elapsed().as_secs_f64();
    let mut failures = failures.into_inner().expect("no poisoning");
    if let (true, Some(mutation)) = (args.until_caught, args.mutation) {
        failures.sort_unstable();
        let row = MatrixRow::new(
            matrix::seeded_bug(mutation),
            args.replicas,
            args.first_seed,
            args.seeds,
            &failures,
        );
        println!("sim: {} ({elapsed:.1}s)", row.verdict());
        let code = if row.passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE };
        return (code, Some(row));
    }
    let passed = passed.load(Ordering::Relaxed);
    println!(
        "sim: seeds={} passed={} failed={} seconds={:.1} seeds_per_sec={:.1} replicas={}{}",
        args.seeds,
        passed,
        failures.len(),
        elapsed,
        args.seeds as f64 / elapsed.max(1e-9),
        args.replicas,
        args.mutation.map(|m| format!(" mutation={}", mutation_name(m))).unwrap_or_default(),
    );
    if failures.is_empty() {
        (ExitCode::SUCCESS, None)
    } else {
        let mut by_checker: Vec<&str> = failures.iter().map(|(_, c)| *c).collect();
        by_checker.sort_unstable();
        by_checker.dedup();
        println!("violations by checker: {}", by_checker.join(", "));
        (ExitCode::FAILURE, None)
    }
}
