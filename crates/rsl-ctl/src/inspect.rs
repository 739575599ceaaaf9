//! `rsl-ctl inspect` (what a data directory holds) and `rsl-ctl verify` (is every byte
//! of it sound). Both read everything: every record of the log with its checksum, every
//! block of every checkpoint, and a dry run of the log's recovery, which also checks what
//! no single file shows (a missing segment, a segment shorter than its successor says).
//! `inspect` prints what it found; `verify` prints one verdict per file and fails if any
//! is damaged.

use std::path::Path;

use anyhow::Result;
use rsl::core::{DurableState, Slot};
use rsl::log::{RecoveryPolicy, RecoveryReport};
use serde_json::{json, Value as Json};

use crate::describe::{ballot_json, configuration_json, configuration_text, range_text, widen};
use crate::layout::{discover, LogLocation, Stores};
use crate::stores::{
    check_log, refuse_if_running, scan_checkpoints, scan_log, verify_checkpoint, CheckpointEntry, LogScan,
};

/// What a dry run of the log's recovery gives, or why it refuses.
type Recovered = Result<(DurableState, RecoveryReport), String>;

/// Everything `inspect` and `verify` learn about a path.
struct Findings {
    stores: Stores,
    ring_record: Option<String>,
    log: Option<(LogScan, Recovered)>,
    /// The strict dry run: `Err` names the first thing recovery would not accept as is.
    strict: Option<Result<(), String>>,
    checkpoints: Vec<CheckpointEntry>,
    checkpoint_leftovers: Vec<std::path::PathBuf>,
}

fn gather(path: &Path) -> Result<Findings> {
    let stores = discover(path)?;
    let ring_record = match &stores.ring_record {
        Some(record) => Some(std::fs::read_to_string(record)?),
        None => None,
    };
    let (mut log, mut strict) = (None, None);
    if let Some(location) = &stores.log {
        refuse_if_running(location)?;
        let recovered = check_log(location, RecoveryPolicy::TruncateTornTail).map_err(|e| e.to_string());
        strict = Some(check_log(location, RecoveryPolicy::Strict).map(|_| ()).map_err(|e| e.to_string()));
        log = Some((scan_log(location, &mut |_| {})?, recovered));
    }
    let (mut checkpoints, mut checkpoint_leftovers) = (Vec::new(), Vec::new());
    if let Some(dir) = &stores.checkpoints {
        (checkpoints, checkpoint_leftovers) = scan_checkpoints(dir)?;
    }
    if let Some(file) = &stores.checkpoint_file {
        let slot = rsl::log::checkpoint::inspect_file(file).map(|f| f.info.slot).unwrap_or(Slot::ZERO);
        checkpoints.push(CheckpointEntry { path: file.clone(), slot, verified: verify_checkpoint(file) });
    }
    Ok(Findings { stores, ring_record, log, strict, checkpoints, checkpoint_leftovers })
}

/// `rsl-ctl inspect PATH [--json]`.
pub fn inspect(path: &Path, as_json: bool) -> Result<()> {
    let findings = gather(path)?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&findings_json(&findings))?);
        return Ok(());
    }
    if let Some(record) = &findings.ring_record {
        let lines: Vec<&str> = record.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).collect();
        println!("ring record: {}", lines.join(", "));
    }
    if let (Some(location), Some((scan, recovered))) = (&findings.stores.log, &findings.log) {
        let kind = match location {
            LogLocation::Journal(_) => "journal",
            LogLocation::Pmem(_) => "persistent-memory log",
        };
        println!("{kind} {}", location.path().display());
        for file in &scan.files {
            println!("  {}", file.path.display());
            println!("    {}", file.header);
            println!(
                "    {} bytes, {} records in {} bytes, slots {}",
                file.file_bytes,
                file.records,
                file.valid_bytes,
                range_text(file.slots)
            );
            for (slot, configuration) in &file.configurations {
                println!("    slot {slot}: {}", configuration_text(configuration));
            }
            if let Some(damage) = &file.damage {
                let torn = if damage.torn_tail_plausible { " (can be a torn write)" } else { "" };
                println!("    DAMAGE {}{torn}; {} bytes from there on", damage.error, damage.bytes_after);
            }
        }
        for (what, paths) in
            [("temporary", &scan.temporary), ("set aside", &scan.set_aside), ("ignored", &scan.ignored)]
        {
            for path in paths {
                println!("  {what}: {}", path.display());
            }
        }
        match recovered {
            Ok((state, report)) => println!("  recovery would give: {}", recovered_text(state, report)),
            Err(error) => println!("  recovery would refuse: {error}"),
        }
    }
    if let Some(dir) = &findings.stores.checkpoints {
        println!("checkpoints {}", dir.display());
    }
    for entry in &findings.checkpoints {
        match &entry.verified {
            Ok((file, configuration)) => println!(
                "  {}: slot {}, {} bytes of data in {} blocks of up to {} bytes, {} bytes, format version {}, {}",
                entry.path.display(),
                file.info.slot,
                file.info.data_bytes,
                file.blocks,
                file.block_bytes,
                file.info.file_bytes,
                file.version,
                configuration_text(configuration)
            ),
            Err(error) => println!("  {}: DAMAGE {error}", entry.path.display()),
        }
    }
    for leftover in &findings.checkpoint_leftovers {
        println!("  temporary: {}", leftover.display());
    }
    Ok(())
}

/// `rsl-ctl verify PATH`: true when everything verifies.
pub fn verify(path: &Path) -> Result<bool> {
    let findings = gather(path)?;
    let mut sound = true;
    if let Some((scan, recovered)) = &findings.log {
        for file in &scan.files {
            match &file.damage {
                None => println!(
                    "ok      {}: {} records, slots {}",
                    file.path.display(),
                    file.records,
                    range_text(file.slots)
                ),
                Some(damage) => {
                    sound = false;
                    let what = if damage.torn_tail_plausible {
                        format!(
                            " (a torn write if this is the last segment: recovery cuts {} bytes)",
                            damage.bytes_after
                        )
                    } else {
                        String::new()
                    };
                    println!("DAMAGE  {}{what}", damage.error);
                }
            }
        }
        if let Some(Err(error)) = &findings.strict {
            if !scan.damaged() {
                sound = false;
                println!("DAMAGE  {error}");
            }
        }
        if let Err(error) = recovered {
            println!("recovery would refuse to open the log: {error}");
        }
        for path in &scan.temporary {
            println!(
                "note    {}: leftover of an interrupted segment creation (recovery deletes it)",
                path.display()
            );
        }
    }
    for entry in &findings.checkpoints {
        match &entry.verified {
            Ok((file, _)) => println!(
                "ok      {}: slot {}, {} blocks, {} bytes",
                entry.path.display(),
                file.info.slot,
                file.blocks,
                file.info.file_bytes
            ),
            Err(error) => {
                sound = false;
                println!("DAMAGE  {error}");
            }
        }
    }
    println!("{}", if sound { "verified: no damage" } else { "damage found" });
    Ok(sound)
}

/// `promise 3.1, chosen 40, log start 1, 40 proposals (slots 1..=40), torn tail cut ...`.
pub fn recovered_text(state: &DurableState, report: &RecoveryReport) -> String {
    let mut slots = None;
    for proposal in &state.proposals {
        widen(&mut slots, proposal.slot);
    }
    let mut text = format!(
        "promise {}, chosen {}, log start {}, {} proposals (slots {})",
        state.promise,
        state.chosen,
        report.log_start,
        state.proposals.len(),
        range_text(slots)
    );
    for (what, cut) in [("torn tail", &report.torn_tail), ("salvage", &report.salvaged)] {
        if let Some(cut) = cut {
            text += &format!(
                "; {what}: cut {} at byte {} ({} bytes: {})",
                cut.file.display(),
                cut.offset,
                cut.bytes_dropped,
                cut.reason
            );
        }
    }
    text
}

fn findings_json(findings: &Findings) -> Json {
    let log = findings.log.as_ref().map(|(scan, recovered)| {
        let files: Vec<Json> = scan
            .files
            .iter()
            .map(|file| {
                json!({
                    "path": file.path,
                    "header": file.header,
                    "file_bytes": file.file_bytes,
                    "valid_bytes": file.valid_bytes,
                    "records": file.records,
                    "slots": file.slots.map(|(first, last)| json!([first.0, last.0])),
                    "configurations": file.configurations.iter()
                        .map(|(slot, c)| json!({ "slot": slot.0, "configuration": configuration_json(c) }))
                        .collect::<Vec<_>>(),
                    "damage": file.damage.as_ref().map(|d| json!({
                        "error": d.error.to_string(),
                        "offset": d.offset,
                        "bytes_after": d.bytes_after,
                        "torn_tail_plausible": d.torn_tail_plausible,
                    })),
                })
            })
            .collect();
        let recovery = match recovered {
            Ok((state, report)) => json!({
                "promise": ballot_json(state.promise),
                "chosen": state.chosen.0,
                "log_start": report.log_start.0,
                "proposals": state.proposals.len(),
                "torn_tail": report.torn_tail.as_ref().map(|c| json!({ "file": c.file, "offset": c.offset, "bytes": c.bytes_dropped })),
            }),
            Err(error) => json!({ "error": error }),
        };
        json!({
            "path": findings.stores.log.as_ref().map(|l| l.path().to_path_buf()),
            "files": files,
            "temporary": scan.temporary,
            "set_aside": scan.set_aside,
            "ignored": scan.ignored,
            "recovery": recovery,
        })
    });
    let checkpoints: Vec<Json> = findings
        .checkpoints
        .iter()
        .map(|entry| match &entry.verified {
            Ok((file, configuration)) => json!({
                "path": entry.path,
                "slot": file.info.slot.0,
                "data_bytes": file.info.data_bytes,
                "file_bytes": file.info.file_bytes,
                "blocks": file.blocks,
                "block_bytes": file.block_bytes,
                "version": file.version,
                "configuration": configuration_json(configuration),
            }),
            Err(error) => json!({ "path": entry.path, "slot": entry.slot.0, "error": error }),
        })
        .collect();
    json!({
        "ring_record": findings.ring_record,
        "log": log,
        "checkpoints": checkpoints,
        "checkpoint_temporary": findings.checkpoint_leftovers,
    })
}
