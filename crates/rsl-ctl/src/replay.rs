//! `rsl-ctl replay` (RSL's Replay): rebuild a state machine offline from a checkpoint plus
//! the log up to a slot, as the replica would at start, for debugging: which state did slot
//! N leave behind, does the log replay at all.
//!
//! The checkpoint is the newest one that verifies at or below the target slot (none: an
//! empty machine at slot 0); the log is what recovery would give (a dry run, the default
//! policy, or a salvage with `--salvage-prefix`). Slots are applied in order from the one
//! after the checkpoint, up to the target but no further than the log's chosen watermark:
//! a slot above it is accepted, not known chosen, and another value may have been chosen
//! for it (`--accepted` applies those too, saying so). A slot missing below the end is an
//! error naming it.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context as _, Result};
use bytes::Bytes;
use rsl::core::{Configuration, Slot, Value};
use rsl::log::RecoveryPolicy;
use rsl::StateMachine as _;
use rsl_kv::KvStateMachine;
use serde_json::{json, Value as Json};

use crate::describe::{configuration_json, configuration_text, escape};
use crate::layout::discover;
use crate::stores::{check_log, refuse_if_running, scan_checkpoints, verify_checkpoint, CheckpointEntry};

/// The state machine to replay into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MachineKind {
    /// rsl-kv's key-value map: prints its digest (and keys with `--keys`).
    Kv,
    /// No machine: checks that the slots replay and counts requests.
    None,
}

/// What `replay` does.
#[derive(Clone, Copy, Debug)]
pub struct ReplayOptions {
    /// The machine.
    pub machine: MachineKind,
    /// The last slot to apply (default: the end of the log).
    pub to: Option<Slot>,
    /// Apply slots above the chosen watermark too.
    pub accepted: bool,
    /// Replay what a salvage would keep of a damaged log.
    pub salvage: bool,
    /// Print every key and value (kv).
    pub keys: bool,
    /// One JSON object instead of text.
    pub json: bool,
}

/// The machine being replayed into.
enum Machine {
    Kv(Box<KvStateMachine>),
    None,
}

impl Machine {
    fn load(&mut self, slot: Slot, reader: &mut dyn std::io::Read) -> std::io::Result<()> {
        match self {
            Machine::Kv(machine) => machine.load_checkpoint(slot, reader),
            Machine::None => std::io::copy(reader, &mut std::io::sink()).map(|_| ()),
        }
    }

    fn execute(&mut self, slot: Slot, request: &[u8]) {
        if let Machine::Kv(machine) = self {
            machine.execute(slot, request);
        }
    }

    fn configuration_changed(&mut self, slot: Slot, configuration: &Configuration) {
        if let Machine::Kv(machine) = self {
            machine.configuration_changed(slot, configuration);
        }
    }
}

/// `rsl-ctl replay PATH --machine kv [--to SLOT] [--accepted] [--salvage-prefix] [--keys] [--json]`.
pub fn replay(path: &Path, options: ReplayOptions) -> Result<()> {
    let stores = discover(path)?;
    if let Some(log) = &stores.log {
        refuse_if_running(log)?;
    }
    let policy =
        if options.salvage { RecoveryPolicy::SalvagePrefix } else { RecoveryPolicy::TruncateTornTail };
    let durable = match &stores.log {
        Some(log) => Some(check_log(log, policy).map_err(|error| {
            let hint =
                if options.salvage { "" } else { " (--salvage-prefix replays what a salvage would keep)" };
            anyhow::anyhow!("the log does not recover: {error}{hint}")
        })?),
        None => None,
    };

    // The newest checkpoint that verifies at or below the target.
    let mut entries = match &stores.checkpoints {
        Some(dir) => scan_checkpoints(dir)?.0,
        None => Vec::new(),
    };
    if let Some(file) = &stores.checkpoint_file {
        let verified = verify_checkpoint(file);
        let slot = verified.as_ref().map_or(Slot::ZERO, |(f, _)| f.info.slot);
        entries.push(CheckpointEntry { path: file.clone(), slot, verified });
    }
    let mut skipped = Vec::new();
    let mut chosen_checkpoint = None;
    for entry in entries.into_iter().rev() {
        match &entry.verified {
            Ok(_) if options.to.is_none_or(|to| entry.slot <= to) => {
                chosen_checkpoint = Some(entry);
                break;
            }
            Ok(_) => {}
            Err(error) => skipped.push(error.clone()),
        }
    }

    let mut machine = match options.machine {
        MachineKind::Kv => Machine::Kv(Box::new(KvStateMachine::new())),
        MachineKind::None => Machine::None,
    };
    let (start, mut configuration) = match &chosen_checkpoint {
        Some(entry) => {
            let mut reader = rsl::log::checkpoint::open_file(&entry.path)?;
            let configuration = rsl::runtime::framing::read_configuration(&mut reader)
                .with_context(|| format!("{}: configuration record", entry.path.display()))?;
            machine.load(entry.slot, &mut reader).with_context(|| {
                format!("{}: the state machine refused the checkpoint", entry.path.display())
            })?;
            (entry.slot, Some(configuration))
        }
        None => (Slot::ZERO, None),
    };

    let (proposals, chosen, log_start) = match &durable {
        Some((state, report)) => {
            let proposals: BTreeMap<Slot, &Value> =
                state.proposals.iter().map(|p| (p.slot, &p.value)).collect();
            (proposals, state.chosen, report.log_start)
        }
        None => (BTreeMap::new(), start, Slot::ZERO),
    };
    let last_held = proposals.keys().next_back().copied().unwrap_or(Slot::ZERO);
    let mut stop = options.to.unwrap_or(last_held.max(start)).min(last_held.max(start));
    if !options.accepted {
        stop = stop.min(chosen.max(start));
    }
    let first = start.next();
    if first <= stop && log_start > first && !proposals.contains_key(&first) {
        bail!(
            "the log starts at slot {log_start} and the newest usable checkpoint is at slot {start}: \
             slots {first}..{log_start} are in neither"
        );
    }
    let (mut requests, mut applied) = (0u64, start);
    let mut slot = first;
    let mut closed = false;
    while slot <= stop {
        let Some(value) = proposals.get(&slot) else {
            bail!("slot {slot} is missing from the log (it holds slots up to {last_held}): cannot replay past {applied}");
        };
        match value {
            // After the ring's last request every chosen value applies as a no-op.
            _ if closed => {}
            Value::Noop => {}
            Value::Last(request) => {
                machine.execute(slot, &request.payload);
                requests += 1;
                closed = true;
            }
            Value::Batch(batch) => {
                for request in batch {
                    machine.execute(slot, &request.payload);
                    requests += 1;
                }
            }
            Value::Configuration(next) => {
                machine.configuration_changed(slot, next);
                configuration = Some(next.clone());
            }
        }
        applied = slot;
        slot = slot.next();
    }

    let unchosen = options.accepted && applied > chosen;
    let summary = json!({
        "checkpoint": chosen_checkpoint.as_ref().map(|e| json!({ "path": e.path, "slot": e.slot.0 })),
        "skipped_checkpoints": skipped,
        "applied_from": first.0,
        "applied_to": applied.0,
        "requests": requests,
        "chosen": chosen.0,
        "beyond_chosen": unchosen,
        "configuration": configuration.as_ref().map(configuration_json),
        "machine": machine_json(&machine, options.keys),
    });
    if options.json {
        println!("{summary}");
        return Ok(());
    }
    for error in &skipped {
        println!("skipped checkpoint: {error}");
    }
    match &chosen_checkpoint {
        Some(entry) => println!("checkpoint {} (slot {})", entry.path.display(), entry.slot),
        None => println!("no checkpoint: starting from an empty state at slot 0"),
    }
    println!("applied slots {first}..={applied}: {requests} requests (chosen watermark {chosen})");
    if unchosen {
        println!("note: slots {}..={applied} are accepted, not known chosen", chosen.next());
    } else if options.to.is_some_and(|to| to > applied) {
        println!("note: stopped at {applied}, the last chosen slot the log holds (--accepted goes further)");
    }
    if let Some(configuration) = &configuration {
        println!("{}", configuration_text(configuration));
    }
    if let Machine::Kv(kv) = &machine {
        let digest = kv.digest();
        println!(
            "kv state: {} keys, digest {:#010x}, {} client sessions",
            digest.keys,
            digest.crc,
            kv.sessions()
        );
        if options.keys {
            for (key, value) in kv.entries() {
                println!("  {key} = {}", escape(value));
            }
        }
    }
    Ok(())
}

fn machine_json(machine: &Machine, keys: bool) -> Json {
    match machine {
        Machine::None => json!({ "kind": "none" }),
        Machine::Kv(kv) => {
            let digest = kv.digest();
            let mut value =
                json!({ "kind": "kv", "keys": digest.keys, "digest": digest.crc, "sessions": kv.sessions() });
            if keys {
                let entries: serde_json::Map<String, Json> = kv
                    .entries()
                    .map(|(key, value): (&str, &Bytes)| (key.to_owned(), Json::String(escape(value))))
                    .collect();
                value["entries"] = Json::Object(entries);
            }
            value
        }
    }
}
