//! `cargo xtask`: the project's automation, in Rust so it runs wherever cargo does.
//!
//! Every subcommand runs cargo (or a binary cargo built) as a child process from the
//! workspace root, echoes the command line first, and stops at the first failure with an
//! error naming the command. xtask depends on no rsl crate, so it builds even when they don't.

mod bench;
mod bench_openraft;
mod bench_pmem;
mod bench_rates;
mod build;
mod check_history;
mod ci;
mod contracts;
mod coverage;
mod demo;
mod deny;
mod fault;
mod fuzz;
mod process;
mod scan;
mod shipped;
mod sim;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::process::CommandFailed;
use crate::sim::SimArgs;

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Project automation for rsl: CI, tests, contracts, the simulator",
    after_help = "Run `cargo xtask <COMMAND> --help` for what a command runs."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run exactly what CI runs, in order, stopping at the first failing step
    #[command(
        long_about = "Run exactly what CI (.ci/run) runs, in order, stopping at the first failing step:\n\
        \n  1. fmt        cargo fmt --all -- --check\
        \n  2. clippy     cargo clippy --workspace --all-targets -- -D warnings\
        \n  3. test       cargo xtask test\
        \n  4. rdma       bash .ci/rdma\
        \n  5. contracts  cargo xtask contracts\
        \n  6. sim-3      cargo xtask sim --seeds N --replicas 3\
        \n  7. sim-5      cargo xtask sim --seeds N --replicas 5\
        \n  8. mutations-3  cargo xtask sim --mutation all --until-caught --seeds 1000 --replicas 3\
        \n  9. mutations-5  cargo xtask sim --mutation all --until-caught --seeds 1000 --replicas 5\
        \n 10. fault      cargo xtask fault --quick (a new seed each run; its replay command is printed)\
        \n 11. doc        RUSTDOCFLAGS='-D warnings' cargo doc --workspace --no-deps\
        \n 12. deny       cargo xtask deny\
        \n 13. fuzz       cargo xtask fuzz --smoke\n\
        \nN is 1000, or the value of RSL_CI_SIM_SEEDS. Each step prints a header and its time; \
        the run ends with the time of every step."
    )]
    Ci,

    /// Build the shipped server, run every test target and the doctests, then the build without TLS
    #[command(long_about = "Build the shipped server on its own, run every test target of the \
        workspace (the process-level tests start that server), the doctests, then build and test \
        the packages whose TLS is a feature without it:\n\
        \n  cargo build --release -p rsl-kv --bin rsl-kv-server\
        \n  RSL_KV_SERVER=<that binary> cargo test --workspace --all-targets\
        \n  cargo test --workspace --doc\
        \n  cargo test -p rsl-transport -p rsl-kv --no-default-features --all-targets")]
    Test,

    /// Check rsl-core's dependencies and shipped features, count checks, run tests with contracts on
    #[command(long_about = "Check the contracts machinery, in four parts:\n\
        \n  1. Dependency hygiene: `cargo tree -p rsl-core -e normal` (with and without\
        \n     --features contracts,mutations, for every target) must not contain tokio, tonic,\
        \n     libc, mio, getrandom, rand, rand_core, socket2, nix, or any crate whose name\
        \n     contains \"async\": rsl-core is sans-IO.\
        \n  2. Shipped builds: in the feature graph of rsl-kv and of rsl (normal edges, every\
        \n     target, default and all features), rsl-core has neither `contracts` nor\
        \n     `mutations`; a failure names the chain of dependencies that turns one on.\
        \n  3. Census of both tiers per file of crates/*/src (outside contracts.rs and\
        \n     #[cfg(test)] code): tier 2, precondition!/postcondition!/invariant! (only with\
        \n     `contracts`); tier 1, safety!(Rule, ..) sites by rule and plain asserts (every\
        \n     build). Every rule of rsl_core::contracts::Rule must have a safety! site.\
        \n  4. cargo test -p rsl-core (contracts on through its dev-dependency on itself);\
        \n     cargo test -p rsl-sim; then the simulator in release, which builds rsl-core\
        \n     with contracts, for 200 seeds.")]
    Contracts,

    /// Build the deterministic simulator in release and run it
    #[command(long_about = "Build the deterministic simulator (rsl-sim) in release and run it with \
        these arguments, streaming its output. It ends with a line \
        `sim: seeds=N passed=P failed=F seeds_per_sec=X`; every failing seed prints the command \
        that replays it. The exit code is the simulator's.")]
    Sim(SimArgs),

    /// Run 3 rsl-kv replica processes under load, kill the primary, restart it, check agreement
    #[command(long_about = "Build rsl-kv in release and run the demo on 127.0.0.1: start 3 \
        `rsl-kv-server` processes with file logs in a fresh temporary directory, wait for a primary, \
        run a closed-loop put/get workload (`rsl-kv load`) with a progress bar, kill the primary with \
        SIGKILL partway (showing the new primary and the time to the next successful write), restart it \
        and show it catching up, check that every replica holds the same state digest, and print \
        throughput and latency percentiles. Every process and the directory are cleaned up at the end, \
        on failure and on Ctrl-C.")]
    Demo(demo::DemoArgs),

    /// Check a history file (JSON lines) for linearizability: exit 0 yes, 1 no, 2 malformed, 3 unknown
    #[command(long_about = "Build the linearizability checker (rsl-check) in release and run \
        `rsl-check-history FILE` on a history written as JSON lines, one event per line (the format \
        is in docs/TESTING.md). Exits 0 if the history is linearizable; 1 if not, printing a 1-minimal \
        witness (operations of one key that cannot be ordered, with their lines and times); 2 if the \
        file is malformed (FILE:LINE: what is wrong); 3 if the time limit or the search budget ran \
        out (unknown: nothing is claimed). `--self-test` instead runs the checker's release test on \
        generated ten-minute histories and prints how long they take.")]
    CheckHistory(check_history::CheckHistoryArgs),

    /// Whole-cluster benchmark: 3 rsl-kv processes per log backend, a concurrency sweep, etcd beside it
    #[command(long_about = "Build rsl-kv in release; for each log backend start 3 `rsl-kv-server` \
        processes on 127.0.0.1 and run `rsl-kv load` (batched gRPC streams) at each point of a \
        concurrency sweep (clients × operations in flight), closed-loop, --runs times per point \
        (figures are medians), then open-loop at half the best throughput. Prints committed ops/s \
        and client-side latency percentiles (p50, p90, p99, p99.9), the ratios to a saved baseline \
        (benches/baseline.json) and, with --peer etcd, to a 3-member etcd on the same workload. \
        --peer openraft instead builds benches/openraft (outside the workspace) and compares rsl's \
        facade with openraft in one process: 3 members each, in-memory network and logs, empty \
        requests, --peer-clients closed-loop tasks, --requests per run (baseline \
        benches/baseline-openraft.json). \
        --json writes the figures, --plot draws p99 against throughput (SVG), --quick finishes in \
        under a minute. The criterion component benchmarks are `cargo bench -p rsl-benches` (and \
        `-p rsl-log --bench append`, `-p rsl-transport --bench codec`).")]
    Bench(bench::BenchArgs),

    /// Fault-injection runs against 5 real rsl-kv replicas; checks the history
    #[command(long_about = "Build the shipped replica server (rsl-kv-server) and rsl-fault (rsl-tests) \
        in release, each on its own, and run rsl-fault against that server: a 5-replica KV ring of real processes (as root in network namespaces on a private bridge \
        with nftables cuts and a bounded tmpfs per replica; otherwise on loopback with fault-injecting \
        proxies, and it says so), concurrent put/get/cas clients recording a JSON-lines history, and \
        faults scheduled from the seed (partitions, kills, pauses, delay, loss, torn and corrupt logs, \
        a full disk). At the end it heals, checks linearizability, that no acknowledged write is lost \
        and that all replicas agree, and prints the figures. A failing run saves its history and logs \
        and prints the command that replays its schedule. The exit code is rsl-fault's.")]
    Fault(fault::FaultArgs),

    /// Run the fuzz targets (cargo-fuzz, nightly): every one briefly with --smoke, or longer
    #[command(long_about = "Run the fuzz targets of fuzz/ under libFuzzer with `cargo +nightly fuzz` \
        (cargo-fuzz is installed with `cargo install cargo-fuzz --locked` when missing; the nightly \
        toolchain must be installed). --smoke runs every target for 20 seconds, as CI does; otherwise \
        --target NAME (default: every target) runs for --seconds S (default 600) or --runs N each. \
        Each target starts from fuzz/corpus/NAME (kept between runs, not committed) and the committed \
        seeds in fuzz/seeds/NAME. Every target runs even if one crashes; the run ends with each \
        target's executions and time, and for each crash the command that reproduces it. Fails if \
        any target crashed.")]
    Fuzz(fuzz::FuzzArgs),

    /// Line and region coverage of crates/*/src per crate (cargo-llvm-cov), with floors
    #[command(long_about = "Run the tests under cargo-llvm-cov (installed with `cargo install \
        cargo-llvm-cov --locked` when missing, with the llvm-tools-preview rustup component) and \
        print line and region coverage of each crate's library code (files under crates/NAME/src; \
        tests, benches and xtask do not count) and of all of it together. -p limits the run to \
        some packages' tests; --floor CRATE=PCT (or workspace=PCT) fails the run when a crate's \
        line coverage is below PCT. The process-level tests start the shipped server built \
        without instrumentation, so code only those processes run counts as uncovered.")]
    Coverage(coverage::CoverageArgs),

    /// Check the dependency graph against deny.toml: cargo deny check bans licenses sources
    #[command(long_about = "Run `cargo deny check bans licenses sources` against deny.toml \
        (banned crates and duplicate versions, licenses, registries and git sources), installing \
        cargo-deny with `cargo install cargo-deny --locked` when missing. The advisories check needs \
        the network and is not run: `cargo deny check advisories` by hand.")]
    Deny,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Ci => ci::run(),
        Command::Test => ci::test(),
        Command::Contracts => contracts::run(),
        Command::Sim(args) => sim::run(&args),
        Command::Demo(args) => demo::run(&args),
        Command::CheckHistory(args) => check_history::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Fault(args) => fault::run(&args),
        Command::Fuzz(args) => fuzz::run(&args),
        Command::Coverage(args) => coverage::run(&args),
        Command::Deny => deny::run(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            let code = error
                .chain()
                .find_map(|cause| cause.downcast_ref::<CommandFailed>())
                .map_or(1, CommandFailed::exit_code);
            ExitCode::from(code)
        }
    }
}
