//! `rsl-ctl repair`: make a damaged log open again, only as far as the operator's flag
//! allows, saying exactly what is cut before cutting it.
//!
//! - `--truncate-torn-tail`: cut a write torn by a crash at the end of the last segment
//!   (what a replica's own start does under its default policy; nothing acknowledged is
//!   lost). Damage anywhere else is refused.
//! - `--salvage-prefix`: keep the longest valid prefix; cut at the first damage and set
//!   every later segment aside (`.damaged`). This can drop acknowledged promises and
//!   accepts: the replica should rejoin as a new member and be rebuilt from its peers.
//!
//! The plan is a dry run of the store's own recovery (`FileJournal::check`,
//! `PmemLog::check`), printed with the records and slots it drops; the repair is that
//! recovery run for real (`FileJournal::open`, `PmemLog::open`), so the tool never cuts
//! differently from the store.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use rsl::core::Slot;
use rsl::log::{FileJournal, JournalOptions, PmemLog, PmemOptions, RecoveryPolicy, RecoveryReport};

use crate::describe::{proposals, range_text, widen};
use crate::inspect::recovered_text;
use crate::layout::{discover, LogLocation};
use crate::stores::{check_log, refuse_if_running, scan_log, LogRecord};

/// Which repair the operator allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RepairMode {
    /// Cut a torn tail only.
    TruncateTornTail,
    /// Keep the longest valid prefix.
    SalvagePrefix,
}

impl RepairMode {
    fn policy(self) -> RecoveryPolicy {
        match self {
            RepairMode::TruncateTornTail => RecoveryPolicy::TruncateTornTail,
            RepairMode::SalvagePrefix => RecoveryPolicy::SalvagePrefix,
        }
    }
}

/// `rsl-ctl repair PATH (--truncate-torn-tail | --salvage-prefix) [--dry-run]`. Returns
/// whether anything was (or, in a dry run, would be) changed.
pub fn repair(path: &Path, mode: RepairMode, dry_run: bool) -> Result<bool> {
    let stores = discover(path)?;
    let Some(log) = &stores.log else { bail!("{} holds no log to repair", path.display()) };
    refuse_if_running(log)?;
    let (state, plan) = match check_log(log, mode.policy()) {
        Ok(planned) => planned,
        Err(error) => {
            let hint = match mode {
                RepairMode::TruncateTornTail => {
                    "\nthis is not a torn tail; --salvage-prefix keeps the valid prefix and sets the rest \
                     aside (it can drop acknowledged votes: rebuild the replica from its peers afterwards)"
                }
                RepairMode::SalvagePrefix => "",
            };
            bail!("cannot repair: {error}{hint}");
        }
    };
    if !changes_anything(&plan) {
        println!("nothing to repair: the log recovers as it is ({})", recovered_text(&state, &plan));
        return Ok(false);
    }

    let mut records = Vec::new();
    scan_log(log, &mut |record| records.push(record.clone()))?;
    let mut lost: Vec<&LogRecord> = Vec::new();
    for cut in [&plan.torn_tail, &plan.salvaged].into_iter().flatten() {
        println!(
            "cut {} at byte {}: {} bytes dropped ({})",
            cut.file.display(),
            cut.offset,
            cut.bytes_dropped,
            cut.reason
        );
        lost.extend(records.iter().filter(|r| r.file == cut.file && r.offset >= cut.offset));
    }
    for aside in &plan.set_aside {
        let original = original_name(aside);
        println!("set aside {} as {}", original.display(), aside.display());
        lost.extend(records.iter().filter(|r| r.file == original));
    }
    for leftover in &plan.removed_temporary {
        println!("delete {} (leftover of an interrupted segment creation)", leftover.display());
    }
    let mut slots = None;
    let mut gone: Vec<Slot> = Vec::new();
    for record in &lost {
        for proposal in proposals(&record.record) {
            widen(&mut slots, proposal.slot);
            if !state.proposals.iter().any(|kept| kept.slot == proposal.slot)
                && !gone.contains(&proposal.slot)
            {
                gone.push(proposal.slot);
            }
        }
    }
    gone.sort_unstable();
    println!(
        "records dropped that still verify: {} (proposals for slots {}); slots no longer held after the repair: {}",
        lost.len(),
        range_text(slots),
        if gone.is_empty() { "none".to_owned() } else { format!("{:?}", gone.iter().map(|s| s.0).collect::<Vec<_>>()) }
    );
    println!("after the repair: {}", recovered_text(&state, &plan));
    if dry_run {
        println!("dry run: nothing changed");
        return Ok(true);
    }

    let done = match log {
        LogLocation::Journal(dir) => {
            let options = JournalOptions { preallocate: false, ..JournalOptions::default() };
            FileJournal::open(dir, &options, mode.policy()).map(|(_, _, report)| report)?
        }
        LogLocation::Pmem(file) => {
            PmemLog::open(file, &PmemOptions::default(), mode.policy()).map(|(_, _, report)| report)?
        }
    };
    if done.torn_tail != plan.torn_tail || done.salvaged != plan.salvaged || done.set_aside != plan.set_aside
    {
        bail!("the repair cut differently from its plan: {done:?}");
    }
    println!("repaired");
    Ok(true)
}

fn changes_anything(report: &RecoveryReport) -> bool {
    report.torn_tail.is_some()
        || report.salvaged.is_some()
        || !report.set_aside.is_empty()
        || !report.removed_temporary.is_empty()
}

/// The name a segment had before it was set aside (`X.damaged` -> `X`).
fn original_name(aside: &Path) -> PathBuf {
    let text = aside.to_string_lossy();
    PathBuf::from(text.strip_suffix(".damaged").unwrap_or(&text).to_owned())
}
