//! Writes a generated history (see `rsl_check::generate`) to stdout as JSON lines, to
//! feed `rsl-check-history` / `cargo xtask check-history`.
//!
//! ```text
//! cargo run --release -p rsl-check --example generate_history -- \
//!     [--seed S] [--seconds N] [--processes P] [--keys K] [--latency-us L] [--think-us T] \
//!     [--info-per-mille I] \
//!     [--mutate stale-read|unwritten-read|future-read|drop-write [--pick N]] > history.jsonl
//! ```
//!
//! The defaults are `Workload::ten_minutes`. Without `--mutate` the history is linearizable by construction; each mutation makes
//! it certainly not linearizable (and says which operation it changed on stderr); it
//! starts looking for a place to apply at the `N`th completed get (default: the seed).

use std::io::Write;

use anyhow::{bail, Context, Result};
use rsl_check::generate::{self, Workload};
use rsl_check::to_jsonl;

fn main() -> Result<()> {
    let mut workload = Workload::ten_minutes(1);
    let mut mutation = None;
    let mut pick = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--seed" => workload.seed = value()?.parse().context("--seed")?,
            "--seconds" => {
                workload.duration_ns = value()?.parse::<u64>().context("--seconds")? * 1_000_000_000
            }
            "--processes" => workload.processes = value()?.parse().context("--processes")?,
            "--keys" => workload.keys = value()?.parse().context("--keys")?,
            "--latency-us" => workload.latency_ns = value()?.parse::<u64>().context("--latency-us")? * 1_000,
            "--think-us" => workload.think_ns = value()?.parse::<u64>().context("--think-us")? * 1_000,
            "--info-per-mille" => workload.info_per_mille = value()?.parse().context("--info-per-mille")?,
            "--mutate" => mutation = Some(value()?),
            "--pick" => pick = Some(value()?.parse::<usize>().context("--pick")?),
            other => bail!("unknown option `{other}`"),
        }
    }
    let generated = generate::generate(&workload);
    let text = match mutation.as_deref() {
        None => generated.to_jsonl(),
        Some(name) => {
            let mut ops = generated.ops;
            let pick = pick.unwrap_or(workload.seed as usize);
            let victim = match name {
                "stale-read" => generate::stale_read(&mut ops, pick),
                "unwritten-read" => generate::read_of_unwritten_value(&mut ops, pick),
                "future-read" => generate::read_from_the_future(&mut ops, pick),
                "drop-write" => generate::drop_observed_write(&ops, pick).map(|(mutated, reader)| {
                    ops = mutated;
                    reader
                }),
                other => bail!("unknown mutation `{other}`"),
            };
            let victim = victim.context("the history has no operation that mutation applies to")?;
            eprintln!("mutated: {:?}", ops[victim]);
            to_jsonl(&ops)
        }
    };
    std::io::stdout().lock().write_all(text.as_bytes()).context("writing the history")?;
    Ok(())
}
