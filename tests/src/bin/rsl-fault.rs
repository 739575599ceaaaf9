//! `rsl-fault`: fault-injection runs against five real `rsl-kv-server` replicas (see
//! `rsl_tests::fault`). `cargo xtask fault` builds and runs it in release.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use rsl_tests::fault::nemesis::round_robin_duration;
use rsl_tests::fault::net::{self, Mode};
use rsl_tests::fault::skew::{self, Faketime};
use rsl_tests::fault::{self, Nemesis, Report, RunOptions};

/// Fault-injection runs: a 5-replica KV ring of real processes, concurrent clients recording
/// a history, seeded faults; then heal, check linearizability, acknowledged writes and
/// agreement.
#[derive(Debug, Parser)]
#[command(name = "rsl-fault")]
struct Args {
    /// How long faults are injected per run, e.g. 90s, 10m, 1m30s [default: 60s; with
    /// --quick 6s per nemesis, at least 90s]
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Seed of the (first) run [default: from the clock, printed]
    #[arg(long)]
    seed: Option<u64>,
    /// Runs, with seeds seed, seed+1, ...
    #[arg(long, default_value_t = 1)]
    runs: u64,
    /// The short variant CI runs: every nemesis in turn (a seeded order), 6s each (at least
    /// 90s)
    #[arg(long)]
    quick: bool,
    /// Comma-separated faults, or `all`: partition, isolate-primary, bridge, one-way, kill,
    /// kill-primary, pause, delay, loss, torn-tail, corrupt, disk-full, membership,
    /// clock-skew, composed, majority-kill, power-loss, client-cut, client-pause
    #[arg(long, default_value = "all")]
    nemesis: String,
    /// netns (root: namespaces, a bridge, nftables), loopback (proxies), or auto
    #[arg(long, default_value = "auto")]
    network: String,
    /// Keep every run's history (and report) in this directory
    #[arg(long, value_name = "DIR")]
    history_dir: Option<PathBuf>,
    /// Where a failing run saves its history and replica logs (without --history-dir)
    #[arg(long, value_name = "DIR", default_value = "target/fault-failures")]
    failure_dir: PathBuf,
    /// The rsl-kv-server binary [default: rsl-kv-server beside this program, as
    /// `cargo build --release -p rsl-kv --bin rsl-kv-server` puts it]
    #[arg(long, value_name = "PATH")]
    server: Option<PathBuf>,
    /// Concurrent client sessions
    #[arg(long, default_value_t = 5)]
    clients: u64,
    /// Keys the clients use
    #[arg(long, default_value_t = 8)]
    keys: u64,
    /// Read with fast reads from any replica, which are not linearizable: a check that the
    /// checking works (a run with partitions or pauses must then fail)
    #[arg(long)]
    fast_reads: bool,
    /// Clients share one batched `Stream` call (the benchmark's path: write and read
    /// batches) instead of one unary call each
    #[arg(long)]
    stream: bool,
    /// The replicas' transport: grpc, or rdma-emu (the RDMA ring protocol on the emulated
    /// provider; needs rsl-tests built with its feature rdma). Over rdma-emu established
    /// rings are shared memory, which network faults do not cut: use kills, pauses and disk
    /// faults
    #[arg(long, default_value = "grpc", value_parser = ["grpc", "rdma-emu"])]
    transport: String,
    /// Print the rate of this process's monotonic clock against the kernel's uptime and
    /// exit (how the clock-skew nemesis checks that libfaketime works)
    #[arg(long, hide = true)]
    clock_probe: bool,
}

/// Parses `90s`, `10m`, `1m30s`, `1h`, or plain seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let mut total = 0u64;
    let mut number = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return Err(format!("`{text}`: unexpected `{c}`; expected e.g. 90s, 10m or 1m30s")),
        };
        let value: u64 =
            number.parse().map_err(|_| format!("`{text}`: a unit without a number before it"))?;
        total += value * unit;
        number.clear();
    }
    if !number.is_empty() {
        total += number.parse::<u64>().map_err(|error| format!("`{text}`: {error}"))?;
    }
    if total == 0 {
        return Err(format!("`{text}`: the duration must be positive"));
    }
    Ok(Duration::from_secs(total))
}

fn format_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    if seconds.is_multiple_of(60) {
        format!("{}m", seconds / 60)
    } else {
        format!("{seconds}s")
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.clock_probe {
        return match skew::measure_rate() {
            Ok(rate) => {
                println!("{rate:.4}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("rsl-fault: --clock-probe: {error}");
                ExitCode::FAILURE
            }
        };
    }
    let nemeses = match Nemesis::parse_list(&args.nemesis) {
        Ok(nemeses) => nemeses,
        Err(error) => {
            eprintln!("rsl-fault: --nemesis: {error}");
            return ExitCode::from(2);
        }
    };
    let mode = match args.network.as_str() {
        "auto" => match net::namespaces_unavailable() {
            None => Mode::Namespaces,
            Some(why) => {
                eprintln!(
                    "rsl-fault: {why}: falling back to loopback with a fault-injecting proxy per replica \
                     link (cuts close connections instead of dropping packets; no disk-full)"
                );
                Mode::Loopback
            }
        },
        "netns" => match net::namespaces_unavailable() {
            None => Mode::Namespaces,
            Some(why) => {
                eprintln!("rsl-fault: --network netns: {why}");
                return ExitCode::from(2);
            }
        },
        "loopback" => Mode::Loopback,
        other => {
            eprintln!("rsl-fault: --network: expected auto, netns or loopback, found `{other}`");
            return ExitCode::from(2);
        }
    };
    let server = match args.server.clone() {
        Some(server) => server,
        None => match std::env::current_exe() {
            Ok(exe) => exe.with_file_name("rsl-kv-server"),
            Err(error) => {
                eprintln!("rsl-fault: cannot find this program's path ({error}); give --server");
                return ExitCode::from(2);
            }
        },
    };
    if !server.is_file() {
        eprintln!(
            "rsl-fault: no server binary at {}; build it with \
             `cargo build --release -p rsl-kv --bin rsl-kv-server` or give --server",
            server.display()
        );
        return ExitCode::from(2);
    }
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    if let Err(error) = ctrlc::set_handler(move || {
        eprintln!("rsl-fault: interrupted; healing and cleaning up (again to abandon the cleanup)");
        if flag.swap(true, Ordering::Relaxed) {
            std::process::exit(130);
        }
    }) {
        eprintln!(
            "rsl-fault: cannot handle Ctrl-C ({error}); an interrupted run may leave namespaces behind"
        );
    }
    if mode == Mode::Namespaces {
        for leftover in net::clean_leftovers() {
            eprintln!("rsl-fault: removed {leftover}, left by an earlier run that died");
        }
    }

    let skew = nemeses.contains(&Nemesis::ClockSkew);
    let faketime = if skew { find_faketime() } else { Err("clock-skew was not asked for".into()) };
    if let (true, Err(why)) = (skew, &faketime) {
        eprintln!("rsl-fault: clock-skew is unavailable and will be skipped: {why}");
    }
    let duration = args.duration.unwrap_or(if args.quick {
        round_robin_duration(nemeses.len())
    } else {
        Duration::from_secs(60)
    });
    let first_seed = args.seed.unwrap_or_else(|| {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |t| t.as_secs() ^ u64::from(t.subsec_nanos()))
    });
    let names: Vec<&str> = nemeses.iter().map(|n| n.name()).collect();
    let mut totals = Report::default();
    let mut failed = Vec::new();
    for run in 0..args.runs {
        let seed = first_seed.wrapping_add(run);
        let replay = format!(
            "cargo xtask fault --seed {seed} --duration {} --nemesis {} --network {}{}{}",
            format_duration(duration),
            names.join(","),
            mode.name(),
            if args.quick { " --quick" } else { "" },
            replay_extra(args.fast_reads, args.stream, &args.transport),
        );
        eprintln!(
            "rsl-fault: run {}/{} seed={seed} network={} duration={} nemeses={}",
            run + 1,
            args.runs,
            mode.name(),
            format_duration(duration),
            names.join(",")
        );
        // Printed before the run, so that a run that hangs or is killed can be replayed too.
        eprintln!("rsl-fault: replay this run with: {replay}");
        let options = RunOptions {
            server: server.clone(),
            seed,
            duration,
            nemeses: nemeses.clone(),
            mode,
            round_robin: args.quick,
            history_dir: args.history_dir.clone(),
            failure_dir: args.failure_dir.clone(),
            clients: args.clients,
            keys: args.keys,
            fast_reads: args.fast_reads,
            stream: args.stream,
            server_args: vec!["--transport".to_owned(), args.transport.clone()],
            interrupted: interrupted.clone(),
            faketime: faketime.clone(),
        };
        let report = match fault::run(&options) {
            Ok(report) => report,
            Err(error) => {
                eprintln!("rsl-fault: seed {seed}: the run could not be set up: {error}");
                return ExitCode::from(2);
            }
        };
        println!(
            "fault run seed={seed} network={} {:.0}s: {}",
            mode.name(),
            report.seconds,
            verdict(&report)
        );
        println!("{report}");
        if let Some(saved) = &report.saved {
            println!("  history and report saved in {}", saved.display());
        }
        if !report.passed() {
            for problem in &report.problems {
                println!("  PROBLEM: {}", first_line(problem));
            }
            println!("  replay the schedule: {replay}");
            failed.push(seed);
        }
        totals.add(report);
        if interrupted.load(Ordering::Relaxed) {
            break;
        }
    }
    if args.runs > 1 {
        println!(
            "fault: {} runs (seeds {first_seed}..={}), {:.1} minutes, {} failed {failed:?}",
            args.runs,
            first_seed.wrapping_add(args.runs - 1),
            totals.seconds / 60.0,
            failed.len()
        );
        println!("{totals}");
    }
    if failed.is_empty() && !interrupted.load(Ordering::Relaxed) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// libfaketime, checked with this program's `--clock-probe`: does a preloaded `Instant` run
/// at the rate asked for?
fn find_faketime() -> Result<Faketime, String> {
    let faketime = Faketime::find()?;
    let me = std::env::current_exe().map_err(|error| format!("cannot find this program's path: {error}"))?;
    faketime.verify(&me, &["--clock-probe"])?;
    eprintln!(
        "rsl-fault: clock-skew uses {} (checked: the monotonic clock follows it)",
        faketime.library().display()
    );
    Ok(faketime)
}

fn verdict(report: &Report) -> &'static str {
    if report.passed() {
        "PASSED"
    } else {
        "FAILED"
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

/// The replay command's arguments after `--` (passed on to rsl-fault by xtask): the client
/// and transport options that change the run.
fn replay_extra(fast_reads: bool, stream: bool, transport: &str) -> String {
    let mut extra = Vec::new();
    if fast_reads {
        extra.push("--fast-reads".to_owned());
    }
    if stream {
        extra.push("--stream".to_owned());
    }
    if transport != "grpc" {
        extra.push(format!("--transport {transport}"));
    }
    if extra.is_empty() {
        String::new()
    } else {
        format!(" -- {}", extra.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("10x").unwrap_err().contains("unexpected `x`"));
        assert!(parse_duration("m").is_err());
        assert_eq!(format_duration(Duration::from_secs(600)), "10m");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
    }

    #[test]
    fn the_replay_command_keeps_the_options_that_change_the_run() {
        assert_eq!(replay_extra(false, false, "grpc"), "");
        assert_eq!(replay_extra(true, false, "grpc"), " -- --fast-reads");
        assert_eq!(replay_extra(true, true, "rdma-emu"), " -- --fast-reads --stream --transport rdma-emu");
    }
}
