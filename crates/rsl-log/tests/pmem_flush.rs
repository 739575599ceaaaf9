//! The persistent-memory log's two ways of persisting a mapped file (`PmemFlush`): a
//! writer process killed with SIGKILL in the middle of its flushes leaves every flush it
//! saw return, in `msync` mode and in cache-line mode, and the region reopens in either
//! mode; a choice the file system cannot honour is refused with an error that names the
//! file, its file system and the way out.
//!
//! The writer is this test binary run again with `RSL_LOG_PMEM_CRASH_CHILD` set (only the
//! `pmem_crash_child` test then runs, and writes until it is killed).

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use rsl_core::{DurableState, Slot};
use rsl_log::{LogError, LogStore, Persistence, PmemFlush, PmemLog, PmemOptions, RecoveryPolicy};

const CHILD: &str = "RSL_LOG_PMEM_CRASH_CHILD";
/// Slots the writer keeps in its log: it truncates below `ticket - WINDOW` as it goes, so
/// the circular log reclaims and wraps many times in a 256 KiB region.
const WINDOW: u64 = 48;
/// The flushes the parent waits to see return before it kills the writer.
const KILL_AFTER: u64 = 600;

fn options(flush: PmemFlush) -> PmemOptions {
    PmemOptions { capacity_bytes: 256 << 10, flush, log_id: 9 }
}

/// The cache-line mode where this CPU and the scratch directory allow it.
fn cache_lines_available(dir: &Path) -> bool {
    rsl_log::detect_cache_line_flush().is_some() && dir.starts_with("/dev/shm")
}

/// Appends one request per ticket (a proposal for slot `ticket`, the chosen hint one
/// behind), flushes each, and reports it on stdout once the flush returned; truncates as
/// it goes. Stops after `tickets` (never, for the child: it is killed).
fn write(path: &Path, flush: PmemFlush, tickets: u64) {
    let (mut log, state, _) = PmemLog::open(path, &options(flush), RecoveryPolicy::Strict).unwrap();
    assert!(state.proposals.is_empty(), "the writer starts on a new region");
    for ticket in 1..=tickets {
        log.append(&request(
            ticket,
            Some(ballot(1, 1)),
            vec![batch(ticket, 1, 40 + ticket as usize % 200)],
            Some(ticket - 1),
        ))
        .unwrap();
        if ticket % 16 == 0 && ticket > WINDOW {
            log.truncate_below(Slot(ticket - WINDOW)).unwrap();
        }
        assert_eq!(log.flush().unwrap(), ticket);
        println!("durable {ticket}");
    }
}

/// The recovered log holds a contiguous run of the writer's proposals, each exactly as
/// written, reaching at least slot `durable`; returns its last slot.
fn assert_writer_prefix(state: &DurableState, durable: u64, context: &str) -> u64 {
    let last = state.proposals.last().map_or(0, |p| p.slot.0);
    assert!(last >= durable, "{context}: flush {durable} returned but the log ends at slot {last}");
    let first = state.proposals.first().map_or(1, |p| p.slot.0);
    assert!(last - first < WINDOW + 16, "{context}: slots {first}..={last} outlive the truncations");
    for (offset, proposal) in state.proposals.iter().enumerate() {
        let slot = first + offset as u64;
        assert_eq!(*proposal, batch(slot, 1, 40 + slot as usize % 200), "{context}: slot {slot}");
    }
    assert_eq!(state.promise, ballot(1, 1), "{context}");
    assert!(state.chosen.0 + 1 >= last, "{context}: chosen {} behind slot {last}", state.chosen.0);
    last
}

/// Runs the writer in a child process on `path` and kills it (SIGKILL) once it reported
/// `KILL_AFTER` flushes; returns the last flush it reported.
fn kill_writer(path: &Path, flush: PmemFlush) -> u64 {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "pmem_crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD, format!("{}|{flush}", path.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut durable = 0;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(ticket) = line.strip_prefix("durable ") {
            durable = ticket.parse().unwrap();
            if durable >= KILL_AFTER {
                break;
            }
        }
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(durable >= KILL_AFTER, "the writer stopped after {durable} flushes ({status})");
    durable
}

/// Not a test of its own when run normally: the writer writes a bounded run and the log
/// reopens in the other mode with everything (a region is the same bytes in both modes).
/// Run as the child of `a_killed_writer_loses_no_returned_flush_in_either_mode`, it writes
/// until it is killed.
#[test]
fn pmem_crash_child() {
    if let Ok(spec) = std::env::var(CHILD) {
        let (path, flush) = spec.split_once('|').expect("path|mode");
        write(Path::new(path), flush.parse().unwrap(), u64::MAX);
        unreachable!("the writer runs until it is killed");
    }
    let dir = scratch_dir();
    let path = dir.path().join("log.pmem");
    let modes = if cache_lines_available(dir.path()) {
        [PmemFlush::CacheLines, PmemFlush::Msync]
    } else {
        [PmemFlush::Msync, PmemFlush::Msync]
    };
    write(&path, modes[0], 300);
    let (log, state, _) = PmemLog::open(&path, &options(modes[1]), RecoveryPolicy::Strict).unwrap();
    assert_eq!(assert_writer_prefix(&state, 300, "reopened in the other mode"), 300);
    assert!(log.used_bytes() > 0);
}

#[test]
fn a_killed_writer_loses_no_returned_flush_in_either_mode() {
    // msync where it is meant for (the page cache of the disk), cache lines on tmpfs.
    let (disk, scratch) = (disk_dir("killed-writer"), scratch_dir());
    let mut runs = vec![(PmemFlush::Msync, disk.clone())];
    if cache_lines_available(scratch.path()) {
        runs.push((PmemFlush::CacheLines, scratch.path().to_path_buf()));
    }
    for (flush, dir) in runs {
        let path = dir.join(format!("{flush}.pmem"));
        let durable = kill_writer(&path, flush);
        let context = format!("{flush}: killed after flush {durable}");
        let (log, state, report) = PmemLog::open(&path, &options(flush), RecoveryPolicy::Strict)
            .unwrap_or_else(|e| panic!("{context}: recovery failed: {e}"));
        assert!(
            !report.created && report.salvaged.is_none() && report.torn_tail.is_none(),
            "{context}: {report:?}"
        );
        let expected = match flush {
            PmemFlush::CacheLines => Persistence::CacheLines(rsl_log::detect_cache_line_flush().unwrap()),
            _ => Persistence::Msync,
        };
        assert_eq!(log.persistence(), Some(expected), "{context}");
        let last = assert_writer_prefix(&state, durable, &context);
        drop(log);
        // A power loss is not what this kills; but the region must also reopen in the
        // other mode and say the same.
        let other = if flush == PmemFlush::Msync { PmemFlush::Auto } else { PmemFlush::Msync };
        let (_, again, _) = PmemLog::open(&path, &options(other), RecoveryPolicy::Strict).unwrap();
        assert_eq!(again.proposals.last().map(|p| p.slot.0), Some(last), "{context}, reopened with {other}");
    }
    std::fs::remove_dir_all(&disk).unwrap();
}

/// The target directory is on the disk (not tmpfs) on every machine this runs on.
fn disk_dir(name: &str) -> PathBuf {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("pmem-flush-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn cache_lines_on_a_page_cache_file_system_are_refused_with_the_reason() {
    let dir = disk_dir("refused");
    let path = dir.join("log.pmem");
    let refused = PmemLog::open(&path, &options(PmemFlush::CacheLines), RecoveryPolicy::Strict);
    let memory = refused.is_ok();
    match refused {
        Ok((log, _, _)) => {
            // Only where the target directory is itself on tmpfs or DAX: then auto agrees.
            drop(log);
            let (log, _, _) =
                PmemLog::open(&path, &options(PmemFlush::Auto), RecoveryPolicy::Strict).unwrap();
            assert!(matches!(log.persistence(), Some(Persistence::CacheLines(_))));
        }
        Err(LogError::InvalidOption { reason }) => {
            assert!(reason.contains(&path.display().to_string()), "{reason}");
            assert!(
                reason.contains("needs a file on a DAX mount or tmpfs") || reason.contains("x86_64"),
                "{reason}"
            );
            assert!(reason.contains("use `msync` or `auto`"), "{reason}");
            let left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
            assert!(left.is_empty(), "a refused option leaves no file behind: {left:?}");
        }
        Err(other) => panic!("expected InvalidOption, got {other}"),
    }
    // msync and auto work on any file system; auto picks msync on a page-cache one.
    let (log, _, _) = PmemLog::open(&path, &options(PmemFlush::Auto), RecoveryPolicy::Strict).unwrap();
    let expected_auto = if memory { "CacheLines" } else { "Msync" };
    assert!(format!("{:?}", log.persistence()).contains(expected_auto), "{:?}", log.persistence());
    drop(log);
    let (log, _, _) = PmemLog::open(&path, &options(PmemFlush::Msync), RecoveryPolicy::Strict).unwrap();
    assert_eq!(log.persistence(), Some(Persistence::Msync));
    drop(log);
    std::fs::remove_dir_all(&dir).unwrap();
}
