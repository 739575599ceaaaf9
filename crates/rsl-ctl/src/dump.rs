//! `rsl-ctl dump`: the log's records in log order, one per line, as text or JSON, each
//! with the file and byte offset it is stored at. With a slot range only the proposals in
//! it are shown, and only records holding one (truncations and snapshots name no slot and
//! are left out). Records after damage, which recovery does not read, are marked.

use std::io::Write as _;
use std::path::Path;

use anyhow::{bail, Result};
use rsl::core::{Proposal, Slot};
use serde_json::json;

use crate::describe::{proposals, record_json, record_text};
use crate::layout::discover;
use crate::stores::{in_range, refuse_if_running, scan_log};

/// What `dump` shows.
#[derive(Clone, Copy, Debug, Default)]
pub struct DumpOptions {
    /// The first slot shown.
    pub from: Option<Slot>,
    /// The last slot shown.
    pub to: Option<Slot>,
    /// JSON lines instead of text.
    pub json: bool,
    /// Request payloads too (escaped text, or hexadecimal in JSON).
    pub payloads: bool,
}

/// `rsl-ctl dump PATH [--from SLOT] [--to SLOT] [--json] [--payloads]`.
pub fn dump(path: &Path, options: DumpOptions) -> Result<()> {
    let stores = discover(path)?;
    let Some(log) = &stores.log else { bail!("{} holds no log to dump", path.display()) };
    refuse_if_running(log)?;
    let ranged = options.from.is_some() || options.to.is_some();
    let keep = |proposal: &Proposal| in_range(proposal, options.from, options.to);
    let mut out = std::io::stdout().lock();
    let mut failed = None;
    let scan = scan_log(log, &mut |stored| {
        if failed.is_some() || (ranged && !proposals(&stored.record).iter().any(keep)) {
            return;
        }
        let written = if options.json {
            let mut line = record_json(&stored.record, &keep, options.payloads);
            line["file"] = json!(stored.file);
            line["offset"] = json!(stored.offset);
            line["frame_bytes"] = json!(stored.frame_bytes);
            if stored.beyond_damage {
                line["beyond_damage"] = json!(true);
            }
            writeln!(out, "{line}")
        } else {
            let mark = if stored.beyond_damage { " (after damage)" } else { "" };
            let name = stored.file.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            let text = record_text(&stored.record, &keep, options.payloads);
            writeln!(out, "{name} @{}{mark}: {text}", stored.offset)
        };
        if let Err(error) = written {
            failed = Some(error);
        }
    })?;
    if let Some(error) = failed {
        // A closed pipe (`| head`) ends the dump quietly.
        if error.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(error.into());
        }
        return Ok(());
    }
    drop(out);
    for file in &scan.files {
        if let Some(damage) = &file.damage {
            eprintln!("damage: {}", damage.error);
        }
    }
    Ok(())
}
