//! `rsl-ctl`: offline tools for a replica's data directory, while the replica is stopped.
//!
//! - `inspect PATH`: what is there: journal segments or the persistent-memory log
//!   (headers, sizes, records, slot ranges, configuration records, damage) and checkpoints
//!   (slot, sizes, blocks, the configuration each carries), and what recovery would make
//!   of the log.
//! - `verify PATH`: checks every record and block checksum and the log's consistency
//!   across segments; exit code 1 on any damage, each named with file and byte offset.
//! - `dump PATH [--from S] [--to S] [--json]`: the log's records, one per line.
//! - `replay PATH --machine kv [--to S]`: a checkpoint plus the log up to a slot, applied
//!   to a state machine offline (RSL's Replay); prints the resulting state's digest.
//! - `repair PATH --truncate-torn-tail | --salvage-prefix [--dry-run]`: cuts only what the
//!   flag allows, printing exactly what (file, offset, bytes, records and slots).
//!
//! PATH is a data directory (`log/` or `pmem.log`, `checkpoints/`, rsl-kv's `ring.toml`),
//! a journal or checkpoint directory, or a single persistent-memory region or checkpoint
//! file. Every command takes the log's lock first and refuses a log a process holds.
//! Nothing but `repair` writes. Exit codes: 0 success, 1 damage found or a failure (the
//! message names file and offset), 2 a usage error.

mod describe;
mod dump;
mod inspect;
mod layout;
mod repair;
mod replay;
mod stores;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgGroup, Parser, Subcommand};
use rsl::core::Slot;

/// Offline tools for a stopped rsl replica's data directory.
#[derive(Debug, Parser)]
#[command(name = "rsl-ctl", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show what PATH holds: log files, records, slot ranges, configurations, checkpoints
    Inspect {
        /// A data directory, a journal or checkpoint directory, or one file
        path: PathBuf,
        /// One JSON object instead of text
        #[arg(long)]
        json: bool,
    },
    /// Check every record and checksum; exit code 1 on damage
    Verify {
        /// A data directory, a journal or checkpoint directory, or one file
        path: PathBuf,
    },
    /// Print the log's records in log order, with file and offset
    Dump {
        /// A data directory, a journal directory, or a persistent-memory log file
        path: PathBuf,
        /// Only proposals from this slot on
        #[arg(long, value_name = "SLOT")]
        from: Option<u64>,
        /// Only proposals up to this slot
        #[arg(long, value_name = "SLOT")]
        to: Option<u64>,
        /// JSON lines instead of text
        #[arg(long)]
        json: bool,
        /// Print request payloads (escaped text; hexadecimal in JSON)
        #[arg(long)]
        payloads: bool,
    },
    /// Apply a checkpoint plus the log up to a slot to a state machine, offline
    Replay {
        /// A data directory
        path: PathBuf,
        /// The state machine
        #[arg(long, value_enum)]
        machine: replay::MachineKind,
        /// The last slot to apply (default: the last chosen slot of the log)
        #[arg(long, value_name = "SLOT")]
        to: Option<u64>,
        /// Apply accepted slots above the chosen watermark too (their values may not be
        /// the ones the ring chose)
        #[arg(long)]
        accepted: bool,
        /// Replay what a salvage would keep of a damaged log
        #[arg(long)]
        salvage_prefix: bool,
        /// Print every key and value (--machine kv)
        #[arg(long)]
        keys: bool,
        /// One JSON object instead of text
        #[arg(long)]
        json: bool,
    },
    /// Cut a torn tail or salvage a valid prefix, printing exactly what is cut
    #[command(group(ArgGroup::new("mode").required(true).args(["truncate_torn_tail", "salvage_prefix"])))]
    Repair {
        /// A data directory, a journal directory, or a persistent-memory log file
        path: PathBuf,
        /// Cut a write torn by a crash at the end of the log (nothing acknowledged is lost)
        #[arg(long)]
        truncate_torn_tail: bool,
        /// Keep the longest valid prefix and set the rest aside; can drop acknowledged
        /// votes: rebuild the replica from its peers afterwards
        #[arg(long)]
        salvage_prefix: bool,
        /// Print the plan and change nothing
        #[arg(long)]
        dry_run: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Inspect { path, json } => inspect::inspect(&path, json).map(|()| true),
        Command::Verify { path } => inspect::verify(&path),
        Command::Dump { path, from, to, json, payloads } => {
            let options = dump::DumpOptions { from: from.map(Slot), to: to.map(Slot), json, payloads };
            dump::dump(&path, options).map(|()| true)
        }
        Command::Replay { path, machine, to, accepted, salvage_prefix, keys, json } => {
            let options = replay::ReplayOptions {
                machine,
                to: to.map(Slot),
                accepted,
                salvage: salvage_prefix,
                keys,
                json,
            };
            replay::replay(&path, options).map(|()| true)
        }
        Command::Repair { path, truncate_torn_tail, salvage_prefix: _, dry_run } => {
            let mode = if truncate_torn_tail {
                repair::RepairMode::TruncateTornTail
            } else {
                repair::RepairMode::SalvagePrefix
            };
            repair::repair(&path, mode, dry_run).map(|_| true)
        }
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(1)
        }
    }
}
