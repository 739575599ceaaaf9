//! `rsl-ctl` on data directories written by a real ring (three rsl-kv replicas in one
//! process, file journal or persistent-memory log, checkpoints, a configuration change),
//! intact and with the damage of the log store's bad-input tests: a torn tail, a bit flip
//! in a synced record, a zeroed or foreign segment, a missing segment, a damaged
//! checkpoint, a foreign file, a segment of a newer format version.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use rsl::core::Slot;
use rsl::log::journal::{list, scan_segment, segment_name, StoredRecord};
use serde_json::Value as Json;

/// Every record of segment `path` that verifies, with its offset.
fn records_of(path: &Path) -> Vec<StoredRecord> {
    let listing = list(path.parent().unwrap()).unwrap();
    let segment = listing.segments.iter().find(|s| s.path == path).expect("a segment").clone();
    let mut records = Vec::new();
    scan_segment(&segment, &mut |record| records.push(record.clone())).unwrap();
    records
}

fn json(text: &str) -> Json {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// A copy of `dir` under `root` named `name`.
fn copy(dir: &Path, root: &Path, name: &str) -> PathBuf {
    let target = root.join(name);
    copy_dir(dir, &target);
    target
}

/// All bytes of every file under `dir`, by path, to compare before and after.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(snapshot(&path));
        } else {
            files.push((path.clone(), fs::read(&path).unwrap()));
        }
    }
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_ring_is_inspected_verified_dumped_and_replayed() {
    let root = tempfile::tempdir().unwrap();
    let written = written_ring(root.path(), Backend::Journal, 40).await;
    let dir = &written.dirs[0];

    let (code, out, err) = run("verify", dir, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("verified: no damage") && out.contains("ok      "), "{out}");

    let (code, out, err) = run("inspect", dir, &[]);
    assert_eq!(code, 0, "{err}");
    for expected in [
        "journal ",
        ".seg",
        "segment ",
        "checkpoint-",
        "configuration 1 members [1, 2, 3]",
        "recovery would give",
    ] {
        assert!(out.contains(expected), "inspect should mention {expected:?}:\n{out}");
    }
    let (code, out, _) = run("inspect", dir, &["--json"]);
    assert_eq!(code, 0);
    let found = json(&out);
    let files = found["log"]["files"].as_array().unwrap();
    assert!(files.len() >= 2, "several segments: {out}");
    let configurations: Vec<&Json> =
        files.iter().flat_map(|f| f["configurations"].as_array().unwrap()).collect();
    assert!(
        configurations.iter().any(|c| c["configuration"]["members"] == serde_json::json!([1, 2])),
        "the configuration change is in the log: {out}"
    );
    let checkpoints = found["checkpoints"].as_array().unwrap();
    assert!(!checkpoints.is_empty(), "{out}");
    let oldest_checkpoint = checkpoints[0]["slot"].as_u64().unwrap();

    // The dump: every line parses, names its file and offset; a range keeps to it.
    let (code, out, _) = run("dump", dir, &["--json"]);
    assert_eq!(code, 0);
    let lines: Vec<Json> = out.lines().map(json).collect();
    assert!(lines.iter().all(|l| l["file"].is_string() && l["offset"].is_u64()), "{out}");
    let last_write = written.writes.last().unwrap().0;
    let (from, to) = (last_write.0 - 5, last_write.0 - 2);
    let (code, out, _) = run("dump", dir, &["--json", "--from", &from.to_string(), "--to", &to.to_string()]);
    assert_eq!(code, 0);
    let slots: Vec<u64> = out
        .lines()
        .map(json)
        .flat_map(|l| {
            l["proposals"].as_array().unwrap().iter().map(|p| p["slot"].as_u64().unwrap()).collect::<Vec<_>>()
        })
        .collect();
    assert!(!slots.is_empty() && slots.iter().all(|s| (from..=to).contains(s)), "{slots:?}");
    let (code, out, _) =
        run("dump", dir, &["--from", &from.to_string(), "--to", &from.to_string(), "--payloads"]);
    assert_eq!(code, 0);
    assert!(out.contains(&format!("slot {from} ballot")) && out.contains("key-"), "{out}");

    // Replay: the state at the end is the ring's, and at a slot in between it is the
    // state computed apart from the ring for that slot.
    let mut reached_end = false;
    for node_dir in &written.dirs[..2] {
        let (code, out, err) = run("replay", node_dir, &["--machine", "kv", "--json", "--accepted"]);
        assert_eq!(code, 0, "{err}");
        let replayed = json(&out);
        let applied = Slot(replayed["applied_to"].as_u64().unwrap());
        let expected = written.state_at(applied).digest();
        assert_eq!(replayed["machine"]["digest"].as_u64().unwrap(), u64::from(expected.crc), "{out}");
        assert_eq!(replayed["machine"]["keys"].as_u64().unwrap(), expected.keys, "{out}");
        if applied >= last_write {
            reached_end = true;
            assert_eq!((expected.crc, expected.keys), written.digest, "the ring's own digest");
        }
    }
    assert!(reached_end, "a member's log holds every write");
    let middle = oldest_checkpoint + 3;
    let (code, out, err) = run("replay", dir, &["--machine", "kv", "--json", "--to", &middle.to_string()]);
    assert_eq!(code, 0, "{err}");
    let replayed = json(&out);
    assert_eq!(replayed["applied_to"].as_u64(), Some(middle), "{out}");
    assert_eq!(replayed["checkpoint"]["slot"].as_u64(), Some(oldest_checkpoint), "{out}");
    let expected = written.state_at(Slot(middle)).digest();
    assert_eq!(replayed["machine"]["digest"].as_u64().unwrap(), u64::from(expected.crc), "{out}");
    let (code, out, _) = run("replay", dir, &["--machine", "kv", "--keys", "--accepted"]);
    assert_eq!(code, 0);
    assert!(out.contains("key-0 = value-0") && out.contains("kv state: 44 keys"), "{out}");
    // Before the oldest checkpoint the log is truncated: refused, saying why.
    let (code, _, err) = run("replay", dir, &["--machine", "none", "--to", "2"]);
    assert_eq!(code, 1);
    assert!(err.contains("in neither"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_journals_are_named_and_repaired_only_as_allowed() {
    let root = tempfile::tempdir().unwrap();
    let written = written_ring(root.path(), Backend::Journal, 40).await;
    let original = &written.dirs[0];

    // A write torn by a crash at the end of the last segment.
    let torn = copy(original, root.path(), "torn");
    let last = segments(&torn).last().unwrap().clone();
    let end = fs::metadata(&last).unwrap().len();
    let mut bytes = fs::read(&last).unwrap();
    bytes.extend_from_slice(b"RSLR\x01\x01\0\0\xff\0\0\0");
    bytes.resize(end as usize + 64, 0xab);
    fs::write(&last, &bytes).unwrap();
    let (code, out, _) = run("verify", &torn, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("{} at byte {end}", last.display())) && out.contains("torn write"),
        "{out}"
    );
    let before = snapshot(&torn);
    let (code, out, err) = run("repair", &torn, &["--truncate-torn-tail", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("cut {} at byte {end}: 64 bytes dropped", last.display())), "{out}");
    assert!(out.contains("dry run: nothing changed"), "{out}");
    assert_eq!(snapshot(&torn), before, "a dry run changes nothing");
    let (code, out, err) = run("repair", &torn, &["--truncate-torn-tail"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("repaired"), "{out}");
    assert_eq!(fs::metadata(&last).unwrap().len(), end);
    assert_eq!(run("verify", &torn, &[]).0, 0);
    let (_, out, _) = run("repair", &torn, &["--truncate-torn-tail"]);
    assert!(out.contains("nothing to repair"), "{out}");

    // A bit flip in a synced record of the oldest segment: damage, not a torn write.
    let flipped = copy(original, root.path(), "flipped");
    let first = segments(&flipped)[0].clone();
    let records = records_of(&first);
    let victim = records.iter().find(|r| !r.beyond_damage && r.offset > 64).expect("an own record").offset;
    let slots_after: Vec<u64> = records
        .iter()
        .filter(|r| r.offset >= victim)
        .flat_map(|r| rsl_ctl_proposal_slots(&r.record))
        .collect();
    flip_bit(&first, victim + 40, 2);
    let (code, out, _) = run("verify", &flipped, &[]);
    assert_eq!(code, 1);
    assert!(out.contains(&format!("DAMAGE  corrupt log {} at byte {victim}", first.display())), "{out}");
    let (code, _, err) = run("repair", &flipped, &["--truncate-torn-tail"]);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("at byte {victim}")) && err.contains("not a torn tail"), "{err}");
    let before = snapshot(&flipped);
    let (code, out, err) = run("repair", &flipped, &["--salvage-prefix", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("cut {} at byte {victim}", first.display())), "{out}");
    assert!(out.contains("set aside ") && out.contains(".damaged"), "{out}");
    assert!(slots_after.iter().all(|s| out.contains(&s.to_string())), "the dropped slots are named: {out}");
    assert_eq!(snapshot(&flipped), before);
    let (code, out, err) = run("repair", &flipped, &["--salvage-prefix"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("repaired"), "{out}");
    assert_eq!(fs::metadata(&first).unwrap().len(), victim);
    let (code, out, _) = run("verify", &flipped, &[]);
    assert_eq!(code, 0, "{out}");

    // A foreign file that takes a segment's name, and a zeroed segment.
    let foreign = copy(original, root.path(), "foreign");
    let next = segments(&foreign).len() as u64 + 100;
    let impostor = foreign.join("log").join(segment_name(Slot(1_000_000), next));
    fs::write(&impostor, b"GIF89a and then some bytes that are not a journal. ".repeat(4)).unwrap();
    let (code, out, _) = run("verify", &foreign, &[]);
    assert_eq!(code, 1);
    assert!(out.contains(&format!("{} at byte 0: not a journal segment", impostor.display())), "{out}");
    let zeroed = copy(original, root.path(), "zeroed");
    let first = segments(&zeroed)[0].clone();
    fs::write(&first, vec![0u8; fs::metadata(&first).unwrap().len() as usize]).unwrap();
    let (code, out, _) = run("verify", &zeroed, &[]);
    assert_eq!(code, 1);
    assert!(out.contains(&format!("{} at byte 0: not a journal segment", first.display())), "{out}");

    // A missing segment: every file verifies, the sequence does not.
    let gap = copy(original, root.path(), "gap");
    let all = segments(&gap);
    assert!(all.len() >= 3, "{all:?}");
    fs::remove_file(&all[1]).unwrap();
    let (code, out, _) = run("verify", &gap, &[]);
    assert_eq!(code, 1);
    assert!(out.contains(&format!("{} at byte 0", all[2].display())) && out.contains("missing"), "{out}");

    // A damaged checkpoint: named with its offset, by verify and inspect.
    let checkpoint = copy(original, root.path(), "checkpoint");
    let file = fs::read_dir(checkpoint.join("checkpoints")).unwrap().next().unwrap().unwrap().path();
    flip_bit(&file, 64 + 8 + 3, 1);
    let (code, out, _) = run("verify", &checkpoint, &[]);
    assert_eq!(code, 1);
    assert!(out.contains(&format!("corrupt checkpoint {} at byte 64: block 0 CRC", file.display())), "{out}");
    let (_, out, _) = run("inspect", &checkpoint, &[]);
    assert!(out.contains("DAMAGE corrupt checkpoint"), "{out}");

    // A file of no rsl format given on its own.
    let stranger = root.path().join("photo.gif");
    fs::write(&stranger, b"GIF89a\x01\x00\x01\x00 not a log at all").unwrap();
    for command in ["inspect", "verify", "dump"] {
        let (code, _, err) = run(command, &stranger, &[]);
        assert_eq!(code, 1);
        assert!(err.contains(&format!("{} at byte 0: not an rsl", stranger.display())), "{command}: {err}");
    }

    // A segment a newer build wrote: refused with both versions, never salvaged.
    let newer = copy(original, root.path(), "newer");
    let first = segments(&newer)[0].clone();
    let mut bytes = fs::read(&first).unwrap();
    bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
    bytes[12..16].fill(0);
    let crc = crc32c::crc32c(&bytes[..64]);
    bytes[12..16].copy_from_slice(&crc.to_le_bytes());
    fs::write(&first, &bytes).unwrap();
    let (code, out, _) = run("verify", &newer, &[]);
    assert_eq!(code, 1);
    assert!(
        out.contains(&format!(
            "{} at byte 8 is format version 2; this build reads version 1",
            first.display()
        )),
        "{out}"
    );
    let (code, _, err) = run("repair", &newer, &["--salvage-prefix"]);
    assert_eq!(code, 1);
    assert!(err.contains("format version 2"), "{err}");
    assert_eq!(fs::read(&first).unwrap(), bytes, "untouched");
}

/// The slots of the proposals of `record`.
fn rsl_ctl_proposal_slots(record: &rsl::log::codec::Record) -> Vec<u64> {
    match record {
        rsl::log::codec::Record::Persist { proposals, .. } => proposals.iter().map(|p| p.slot.0).collect(),
        _ => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pmem_ring_is_inspected_replayed_and_salvaged() {
    let root = tempfile::tempdir().unwrap();
    let written = written_ring(root.path(), Backend::Pmem, 30).await;
    let dir = &written.dirs[0];
    let (code, out, err) = run("inspect", dir, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("persistent-memory log") && out.contains("layout version 1"), "{out}");
    assert_eq!(run("verify", dir, &[]).0, 0);
    let (code, out, _) = run("replay", dir, &["--machine", "kv", "--json", "--accepted"]);
    assert_eq!(code, 0);
    let replayed = json(&out);
    let applied = Slot(replayed["applied_to"].as_u64().unwrap());
    assert_eq!(
        replayed["machine"]["digest"].as_u64().unwrap(),
        u64::from(written.state_at(applied).digest().crc)
    );

    // Damage inside the committed log: an error naming the entry's offset; only a salvage
    // repairs it.
    let pmem = dir.join("pmem.log");
    let (_, out, _) = run("dump", &pmem, &["--json"]);
    let entries: Vec<Json> = out.lines().map(json).collect();
    assert!(entries.len() >= 3, "{out}");
    let victim = entries[entries.len() / 2]["offset"].as_u64().unwrap();
    flip_bit(&pmem, victim + 20, 5);
    let (code, out, _) = run("verify", dir, &[]);
    assert_eq!(code, 1);
    assert!(out.contains(&format!("corrupt log {} at byte {victim}", pmem.display())), "{out}");
    assert_eq!(run("repair", dir, &["--truncate-torn-tail"]).0, 1);
    let (code, out, err) = run("repair", dir, &["--salvage-prefix"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("cut {} at byte {victim}", pmem.display())), "{out}");
    assert_eq!(run("verify", dir, &[]).0, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_replica_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let mut ring = KvRing::start(root.path(), Backend::Journal).await;
    ring.put_keys(1, 0..3).await;
    let dir = ring.dirs[0].clone();
    for command in ["inspect", "verify", "dump"] {
        let (code, _, err) = run(command, &dir, &[]);
        assert_eq!(code, 1, "{command}");
        assert!(err.contains("locked") && err.contains("stop the replica first"), "{command}: {err}");
    }
    let (code, _, err) = run("repair", &dir, &["--truncate-torn-tail"]);
    assert!(code == 1 && err.contains("stop the replica first"), "{err}");
    ring.stop().await;
    assert_eq!(run("verify", &dir, &[]).0, 0);
    // Usage errors are clap's: a repair needs its flag.
    assert_eq!(ctl(&["repair", dir.to_str().unwrap()]).status.code(), Some(2));
}
