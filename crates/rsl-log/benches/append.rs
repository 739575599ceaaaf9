//! Durable append throughput with group commit, against the raw sync rate of the disk.
//!
//! - `fdatasync/raw`: write 64 bytes and `fdatasync`, one at a time: the disk's sync rate.
//! - `group_commit/<backend>/<size>`: one producer queues entries (one proposal carrying
//!   one request of `size` bytes each) into a [`GroupCommitter`] as fast as it can and
//!   waits until the last is durable. Backends: the file journal on the disk, the
//!   persistent-memory log on a disk file (`msync`), and the persistent-memory log on tmpfs
//!   with cache-line write-back (what a DAX mapping costs; tmpfs itself is not durable).
//!
//! Besides criterion's figures, each benchmark prints entries/s, MB/s and entries per sync
//! over all its iterations. Scratch files go to `RSL_LOG_BENCH_DIR` (default: the system
//! temporary directory, which must be on the disk under test).

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rsl_core::{Ballot, NodeId, Proposal, Request, RequestId, Slot, Value};
use rsl_log::{
    FileJournal, GroupCommitOptions, GroupCommitter, JournalOptions, LogStore, PmemFlush, PmemLog,
    PmemOptions, RecoveryPolicy,
};

const SIZES: [(usize, &str); 3] = [(64, "64B"), (1024, "1KiB"), (64 << 10, "64KiB")];

fn bench_dir() -> tempfile::TempDir {
    let base = std::env::var_os("RSL_LOG_BENCH_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    tempfile::Builder::new().prefix("rsl-log-bench-").tempdir_in(base).expect("scratch directory")
}

fn raw_fdatasync(c: &mut Criterion) {
    let dir = bench_dir();
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(dir.path().join("raw"))
        .unwrap();
    let mut group = c.benchmark_group("fdatasync");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(1));
    let mut offset = 0u64;
    let (mut syncs, mut elapsed) = (0u64, Duration::ZERO);
    group.bench_function("raw", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                file.write_all_at(&[7u8; 64], offset).unwrap();
                file.sync_data().unwrap();
                offset += 64;
            }
            let took = start.elapsed();
            syncs += iters;
            elapsed += took;
            took
        })
    });
    group.finish();
    eprintln!("REPORT fdatasync/raw: {:.0} syncs/s", syncs as f64 / elapsed.as_secs_f64());
}

fn entry(slot: u64, payload: &Bytes) -> Proposal {
    Proposal {
        ballot: Ballot::new(1, NodeId(1)),
        slot: Slot(slot),
        value: Value::Batch(vec![Request {
            id: RequestId { client: 1, sequence: slot },
            payload: payload.clone(),
        }]),
    }
}

/// Runs the group-commit benchmark for one store.
fn group_commit(
    c: &mut Criterion,
    backend: &str,
    make_dir: &dyn Fn() -> tempfile::TempDir,
    open: &dyn Fn(&std::path::Path) -> Box<dyn LogStore>,
) {
    let mut group = c.benchmark_group(format!("group_commit/{backend}"));
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(6));
    for (size, label) in SIZES {
        let dir = make_dir();
        let committer = GroupCommitter::spawn(open(dir.path()), &GroupCommitOptions::default());
        let payload = Bytes::from(vec![0x5au8; size]);
        let mut slot = 0u64;
        let (mut entries, mut elapsed) = (0u64, Duration::ZERO);
        let syncs_before = committer.statistics().store.syncs;
        // Keep the log (and the disk) small: truncate below a sliding window.
        let truncate_every = (64 << 20) / size as u64;
        group.throughput(Throughput::Elements(1));
        group.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                let mut last = 0;
                for _ in 0..iters {
                    slot += 1;
                    last = committer.append_next(None, vec![entry(slot, &payload)], None).unwrap();
                    if slot % truncate_every == 0 {
                        committer.truncate_below(Slot(slot.saturating_sub(truncate_every / 2))).unwrap();
                    }
                }
                committer.wait_durable(last).unwrap();
                let took = start.elapsed();
                entries += iters;
                elapsed += took;
                took
            })
        });
        let statistics = committer.statistics();
        let syncs = statistics.store.syncs - syncs_before;
        let rate = entries as f64 / elapsed.as_secs_f64();
        eprintln!(
            "REPORT group_commit/{backend}/{label}: {rate:.0} entries/s, {:.1} MB/s, {:.1} entries per sync \
             ({entries} entries, {syncs} syncs, {} flush rounds, largest round {})",
            rate * size as f64 / 1e6,
            entries as f64 / syncs.max(1) as f64,
            statistics.rounds,
            statistics.largest_round,
        );
        drop(committer);
    }
    group.finish();
}

fn journal(c: &mut Criterion) {
    group_commit(c, "journal", &bench_dir, &|dir| {
        let options = JournalOptions::default();
        let (log, _, _) = FileJournal::open(dir, &options, RecoveryPolicy::TruncateTornTail).unwrap();
        Box::new(log)
    });
}

fn pmem_msync(c: &mut Criterion) {
    group_commit(c, "pmem-msync", &bench_dir, &|dir| {
        let options =
            PmemOptions { capacity_bytes: 256 << 20, flush: PmemFlush::Msync, ..PmemOptions::default() };
        let (log, _, _) =
            PmemLog::open(dir.join("log.pmem"), &options, RecoveryPolicy::TruncateTornTail).unwrap();
        Box::new(log)
    });
}

fn pmem_cache_lines(c: &mut Criterion) {
    if !std::path::Path::new("/dev/shm").is_dir() {
        return;
    }
    let shm = || tempfile::Builder::new().prefix("rsl-log-bench-").tempdir_in("/dev/shm").unwrap();
    group_commit(c, "pmem-clwb-tmpfs", &shm, &|dir| {
        let options =
            PmemOptions { capacity_bytes: 256 << 20, flush: PmemFlush::CacheLines, ..PmemOptions::default() };
        let (log, _, _) =
            PmemLog::open(dir.join("log.pmem"), &options, RecoveryPolicy::TruncateTornTail).unwrap();
        Box::new(log)
    });
}

criterion_group!(benches, raw_fdatasync, journal, pmem_msync, pmem_cache_lines);
criterion_main!(benches);
