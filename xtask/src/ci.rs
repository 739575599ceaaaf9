//! `cargo xtask ci` and `cargo xtask test`.
//!
//! `cargo xtask ci` is the local equivalent of `.ci/run`: the same steps in the same order.
//! `.ci/run` lists them itself (so CI prints each step's own timing even if xtask does not
//! build); a test below checks that the two lists agree.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::build;
use crate::contracts;
use crate::coverage::{self, CoverageArgs, Floor};
use crate::deny;
use crate::fault::{self, FaultArgs};
use crate::fuzz::{self, FuzzArgs};
use crate::process::Cmd;
use crate::sim::{self, SimArgs};

/// Overrides the number of seeds of CI's simulator runs.
pub const SIM_SEEDS_ENV: &str = "RSL_CI_SIM_SEEDS";
const DEFAULT_SIM_SEEDS: u64 = 1000;

#[derive(Debug, Clone, Copy)]
enum Action {
    Fmt,
    Clippy,
    Test,
    Coverage,
    Rdma,
    Contracts,
    Sim { replicas: u8 },
    Mutations { replicas: u8 },
    Fault,
    Doc,
    Deny,
    Fuzz,
}

/// CI's coverage floor: rsl-core's own tests, the fast part of `cargo xtask coverage` (the
/// whole workspace is measured by hand; docs/TESTING.md has the command and the figures).
const COVERAGE_SCRIPT: &str = "cargo xtask coverage -p rsl-core --floor rsl-core=95";
const COVERAGE_FLOOR_CORE: f64 = 95.0;

#[derive(Debug)]
struct Step {
    name: &'static str,
    /// The command as `.ci/run` spells it.
    script: &'static str,
    action: Action,
}

const STEPS: &[Step] = &[
    Step { name: "fmt", script: "cargo fmt --all -- --check", action: Action::Fmt },
    Step {
        name: "clippy",
        script: "cargo clippy --workspace --all-targets -- -D warnings",
        action: Action::Clippy,
    },
    Step { name: "test", script: "cargo xtask test", action: Action::Test },
    Step { name: "coverage", script: COVERAGE_SCRIPT, action: Action::Coverage },
    Step { name: "rdma", script: "bash .ci/rdma", action: Action::Rdma },
    Step { name: "contracts", script: "cargo xtask contracts", action: Action::Contracts },
    Step {
        name: "sim-3",
        script: "cargo xtask sim --seeds \"$sim_seeds\" --replicas 3",
        action: Action::Sim { replicas: 3 },
    },
    Step {
        name: "sim-5",
        script: "cargo xtask sim --seeds \"$sim_seeds\" --replicas 5",
        action: Action::Sim { replicas: 5 },
    },
    Step {
        name: "mutations-3",
        script: "cargo xtask sim --mutation all --until-caught --seeds 1000 --replicas 3",
        action: Action::Mutations { replicas: 3 },
    },
    Step {
        name: "mutations-5",
        script: "cargo xtask sim --mutation all --until-caught --seeds 1000 --replicas 5",
        action: Action::Mutations { replicas: 5 },
    },
    Step { name: "fault", script: "cargo xtask fault --quick", action: Action::Fault },
    Step { name: "doc", script: "cargo doc --workspace --no-deps", action: Action::Doc },
    Step { name: "deny", script: "cargo xtask deny", action: Action::Deny },
    Step { name: "fuzz", script: "cargo xtask fuzz --smoke", action: Action::Fuzz },
];

pub fn run() -> Result<()> {
    let sim_seeds = sim_seeds()?;
    let started = Instant::now();
    let mut timings: Vec<(&str, Duration)> = Vec::new();
    for (index, step) in STEPS.iter().enumerate() {
        let number = format!("[{}/{}]", index + 1, STEPS.len());
        let command = step.script.replace("\"$sim_seeds\"", &sim_seeds.to_string());
        eprintln!();
        eprintln!("==> ci {number} {}: {command}", step.name);
        let step_started = Instant::now();
        let result = run_action(step.action, sim_seeds);
        let elapsed = step_started.elapsed();
        if let Err(error) = result {
            eprintln!("<== ci {number} {}: FAILED after {}", step.name, format_duration(elapsed));
            return Err(error).with_context(|| {
                format!(
                    "ci stopped at step {number} {} ({} in all)",
                    step.name,
                    format_duration(started.elapsed())
                )
            });
        }
        eprintln!("<== ci {number} {}: ok in {}", step.name, format_duration(elapsed));
        timings.push((step.name, elapsed));
    }
    eprintln!();
    eprintln!("ci: all {} steps passed in {}", STEPS.len(), format_duration(started.elapsed()));
    for (name, elapsed) in timings {
        eprintln!("  {name:<10} {:>9}", format_duration(elapsed));
    }
    Ok(())
}

fn run_action(action: Action, sim_seeds: u64) -> Result<()> {
    match action {
        Action::Fmt => Cmd::cargo().args(["fmt", "--all", "--", "--check"]).run().context(
            "code is not formatted (run `cargo fmt --all`; if rustfmt is missing, `rustup component add rustfmt`)",
        ),
        Action::Clippy => Cmd::cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]).run(),
        Action::Test => test(),
        Action::Coverage => coverage::run(&CoverageArgs {
            packages: vec!["rsl-core".into()],
            floors: vec![Floor { name: "rsl-core".into(), percent: COVERAGE_FLOOR_CORE }],
            json: None,
        }),
        Action::Rdma => Cmd::new("bash").arg(crate::process::workspace_root().join(".ci/rdma")).run(),
        Action::Contracts => contracts::run(),
        Action::Sim { replicas } => {
            sim::run(&SimArgs { seeds: Some(sim_seeds), replicas: Some(replicas), ..SimArgs::default() })
        }
        Action::Mutations { replicas } => sim::run(&SimArgs {
            seeds: Some(1000),
            replicas: Some(replicas),
            mutation: Some("all".into()),
            until_caught: true,
            ..SimArgs::default()
        }),
        Action::Fault => fault::run(&FaultArgs { quick: true, ..FaultArgs::default() }),
        Action::Doc => {
            let flags = match std::env::var("RUSTDOCFLAGS") {
                Ok(flags) if !flags.trim().is_empty() => format!("{flags} -D warnings"),
                _ => "-D warnings".to_string(),
            };
            Cmd::cargo().env("RUSTDOCFLAGS", flags).args(["doc", "--workspace", "--no-deps"]).run()
        }
        Action::Deny => deny::run(),
        Action::Fuzz => fuzz::run(&FuzzArgs { smoke: true, ..FuzzArgs::default() }),
    }
}

/// Names the `rsl-kv-server` the process-level tests start (read by `rsl_tests::server`).
pub const SERVER_ENV: &str = "RSL_KV_SERVER";

/// `cargo xtask test`: the shipped server built on its own, every test target (the
/// process-level tests start that server), the doctests, then the packages whose TLS is a
/// feature built and tested without it.
pub fn test() -> Result<()> {
    let server = build::shipped_server()?;
    Cmd::cargo().env(SERVER_ENV, &server).args(["test", "--workspace", "--all-targets"]).run()?;
    Cmd::cargo().args(["test", "--workspace", "--doc"]).run()?;
    Cmd::cargo().args(WITHOUT_TLS).run().context("the build without TLS")
}

/// The build without TLS: rsl-transport has no default features, rsl-kv's default is `tls`.
/// Package-level, so only these two and what they depend on build a second time.
const WITHOUT_TLS: [&str; 7] =
    ["test", "-p", "rsl-transport", "-p", "rsl-kv", "--no-default-features", "--all-targets"];

fn sim_seeds() -> Result<u64> {
    match std::env::var(SIM_SEEDS_ENV) {
        Err(std::env::VarError::NotPresent) => Ok(DEFAULT_SIM_SEEDS),
        Err(std::env::VarError::NotUnicode(value)) => {
            bail!("{SIM_SEEDS_ENV} must be a positive number of seeds, found {value:?}")
        }
        Ok(value) => match value.trim().parse::<u64>() {
            Ok(seeds) if seeds > 0 => Ok(seeds),
            _ => bail!("{SIM_SEEDS_ENV} must be a positive number of seeds, found `{value}`"),
        },
    }
}

fn format_duration(duration: Duration) -> String {
    let seconds = duration.as_secs_f64();
    if seconds < 60.0 {
        format!("{seconds:.1}s")
    } else {
        let whole = duration.as_secs();
        format!("{}m{:02}s", whole / 60, whole % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::workspace_root;

    #[test]
    fn ci_script_runs_the_same_steps_in_the_same_order() {
        let path = workspace_root().join(".ci/run");
        let script = std::fs::read_to_string(&path).unwrap();
        let code: Vec<&str> =
            script.lines().map(str::trim).filter(|line| !line.starts_with('#') && !line.is_empty()).collect();
        let mut from = 0;
        for step in STEPS {
            let found = code[from..].iter().position(|line| line.contains(step.script));
            let Some(found) = found else {
                panic!("{} does not run `{}` after the previous step", path.display(), step.script);
            };
            from += found + 1;
        }
        assert!(
            script.contains(&format!("step_count={}", STEPS.len())),
            ".ci/run must count {} steps",
            STEPS.len()
        );
        assert!(script.contains(SIM_SEEDS_ENV), ".ci/run must honour {SIM_SEEDS_ENV}");
        // `cargo xtask ci` holds the floor `.ci/run` spells.
        assert!(
            COVERAGE_SCRIPT.ends_with(&format!("--floor rsl-core={COVERAGE_FLOOR_CORE}")),
            "{COVERAGE_SCRIPT}"
        );
        assert!(script.contains("RUSTDOCFLAGS"), ".ci/run must deny rustdoc warnings");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(format_duration(Duration::from_millis(1300)), "1.3s");
        assert_eq!(format_duration(Duration::from_secs(754)), "12m34s");
    }
}
