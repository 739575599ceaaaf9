//! Crash consistency against a model of what a crash can leave.
//!
//! Random workloads (appends, truncations, flushes, clean restarts, crash-restarts) run on
//! the simulators. Before every sync or fence, and after every operation, the crash states
//! reachable at that instant are enumerated (exhaustively when few, else sampled) and each
//! is recovered: recovery must succeed, and the recovered state must equal the model's
//! state after some prefix of the operations that includes every operation reported
//! durable.
//!
//! Knobs (defaults keep CI fast; raise them to go wide by hand):
//! `RSL_LOG_CRASH_SEEDS` (workloads per backend), `RSL_LOG_CRASH_STEPS` (operations per
//! workload), `RSL_LOG_CRASH_STATES` (crash states per instant), `RSL_LOG_CRASH_SEED`
//! (first seed).

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use common::*;
use parking_lot::Mutex;
use rsl_core::SplitMix64;
use rsl_core::{DurableState, PersistRequest, Slot};
use rsl_log::sim::{CrashModel, SimDisk, SimPmem};
use rsl_log::{FileJournal, JournalOptions, LogError, LogStore, PmemLog, RecoveryPolicy};

struct Knobs {
    seeds: u64,
    steps: u64,
    states: usize,
    first_seed: u64,
}

fn knobs() -> Knobs {
    Knobs {
        seeds: knob("RSL_LOG_CRASH_SEEDS", 16),
        steps: knob("RSL_LOG_CRASH_STEPS", 200),
        states: knob("RSL_LOG_CRASH_STATES", 24) as usize,
        first_seed: knob("RSL_LOG_CRASH_SEED", 1),
    }
}

/// A request over a sliding window of slots, so that truncation and reclaiming matter.
fn windowed_request(rng: &mut SplitMix64, ticket: u64, base: u64, payload_max: u64) -> PersistRequest {
    let mut request = random_request(rng, ticket, 12, payload_max);
    for proposal in &mut request.proposals {
        proposal.slot = Slot(base + proposal.slot.0);
    }
    if let Some(chosen) = request.chosen.as_mut() {
        *chosen = Slot(base + chosen.0);
    }
    request
}

fn assert_prefix(model: &Model, recovered: &DurableState, context: &str) -> usize {
    let prefixes = model.matching_prefixes(recovered);
    assert!(
        !prefixes.is_empty(),
        "{context}: recovered state matches no prefix of at least {} of {} ops\nrecovered: {recovered:?}\ndurable model: {:?}",
        model.durable,
        model.ops.len(),
        model.states[model.durable]
    );
    *prefixes.last().expect("not empty")
}

// ----- The stores on their simulators -----

/// A simulator a store runs on, and how the store opens on it.
trait Medium: CrashModel {
    /// Largest request payload the workload appends.
    const PAYLOAD_MAX: u64;
    /// How far below the window's base the workload truncates, at most.
    const TRUNCATE_BACK: u64;
    fn open(&self, policy: RecoveryPolicy) -> Result<(Box<dyn LogStore>, DurableState), LogError>;
}

fn journal_options() -> JournalOptions {
    // Tiny segments: rotation and deletion happen every few flushes.
    JournalOptions { segment_bytes_max: 2 << 10, preallocate: false }
}

/// The file journal on a simulated disk.
impl Medium for SimDisk {
    const PAYLOAD_MAX: u64 = 300;
    const TRUNCATE_BACK: u64 = 6;
    fn open(&self, policy: RecoveryPolicy) -> Result<(Box<dyn LogStore>, DurableState), LogError> {
        let (journal, state, _) = FileJournal::open_in(Box::new(self.clone()), &journal_options(), policy)?;
        Ok((Box::new(journal), state))
    }
}

const PMEM_REGION_BYTES: u64 = 256 + 6 * 1024;

/// The persistent-memory log on simulated persistent memory.
impl Medium for SimPmem {
    const PAYLOAD_MAX: u64 = 120;
    const TRUNCATE_BACK: u64 = 4;
    fn open(&self, policy: RecoveryPolicy) -> Result<(Box<dyn LogStore>, DurableState), LogError> {
        let (log, state, _) = PmemLog::recover(Box::new(self.clone()), policy)?;
        Ok((Box::new(log), state))
    }
}

fn formatted_pmem() -> SimPmem {
    let mut pmem = SimPmem::new(PMEM_REGION_BYTES);
    PmemLog::format(&mut pmem, 1).unwrap();
    pmem
}

/// Recovers every crash state `medium` could be left in now (at most `states`, sampled
/// with `seed`); each must recover a prefix of the model that holds every durable op.
fn check<M: Medium>(medium: &M, model: &Model, states: usize, seed: u64, context: &str) -> u64 {
    let mut checked = 0;
    for (i, state) in medium.crash_states(states, seed).into_iter().enumerate() {
        let (_, recovered) = state
            .open(RecoveryPolicy::TruncateTornTail)
            .unwrap_or_else(|e| panic!("{context}: recovery of crash state {i} failed: {e}"));
        assert_prefix(model, &recovered, &format!("{context}, crash state {i}"));
        checked += 1;
    }
    checked
}

/// Checks every crash state before each barrier of `medium`.
fn install_hook<M: Medium>(
    medium: &M,
    model: &Arc<Mutex<Model>>,
    checked: &Arc<AtomicU64>,
    states: usize,
    seed: u64,
) {
    let (model, checked) = (model.clone(), checked.clone());
    let counter = AtomicU64::new(0);
    medium.barriers().set_before(move |medium| {
        let model = model.lock();
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let context = format!("seed {seed}, before barrier {n}");
        checked.fetch_add(check(medium, &model, states, seed ^ n, &context), Ordering::Relaxed);
    });
}

fn open<M: Medium>(medium: &M) -> (Box<dyn LogStore>, DurableState) {
    medium.open(RecoveryPolicy::TruncateTornTail).expect("open the store")
}

/// One random workload from `seed` on `medium`; returns how many crash states it checked.
fn workload<M: Medium>(mut medium: M, seed: u64, knobs: &Knobs) -> u64 {
    let mut rng = SplitMix64::new(seed);
    let model = Arc::new(Mutex::new(Model::default()));
    let checked = Arc::new(AtomicU64::new(0));
    install_hook(&medium, &model, &checked, knobs.states, seed);
    let (mut log, _) = open(&medium);
    let mut base = 0;
    let mut full = 0;
    let mut partial = false;
    let trace = std::env::var_os("RSL_LOG_CRASH_TRACE").is_some();
    for step in 0..knobs.steps {
        let context = format!("seed {seed}, step {step}");
        if trace {
            eprintln!("{context}: {log:?}, {:?}", log.statistics());
        }
        match rng.below(100) {
            0..=54 => {
                let ticket = model.lock().ticket();
                let request = windowed_request(&mut rng, ticket, base, M::PAYLOAD_MAX);
                if trace {
                    let slots: Vec<u64> = request.proposals.iter().map(|p| p.slot.0).collect();
                    eprintln!(
                        "  append ticket {ticket} promise {:?} slots {slots:?} chosen {:?}",
                        request.promise, request.chosen
                    );
                }
                log.append(&request).unwrap();
                model.lock().push(Op::Persist(request));
                base += rng.below(2);
            }
            55..=62 => {
                let below = Slot(base.saturating_sub(rng.below(M::TRUNCATE_BACK)));
                if trace {
                    eprintln!("  truncate below {below}");
                }
                log.truncate_below(below).unwrap();
                model.lock().push(Op::Truncate(below));
            }
            63..=89 => match log.flush() {
                Ok(_) => {
                    if trace {
                        eprintln!("  flushed");
                    }
                    partial = false;
                    model.lock().mark_durable()
                }
                Err(LogError::Full { .. }) => {
                    if trace {
                        eprintln!("  full");
                    }
                    // Runs that fit were committed: more than the durable ticket may be
                    // durable now (still a prefix).
                    partial = true;
                    // Make room the way a runtime would: truncate below a checkpoint.
                    full += 1;
                    let below = Slot(base.saturating_sub(1));
                    log.truncate_below(below).unwrap();
                    model.lock().push(Op::Truncate(below));
                }
                Err(error) => panic!("{context}: {error}"),
            },
            90..=93 => {
                drop(log);
                if partial {
                    let (reopened, recovered) = open(&medium);
                    let floor = reopened.log_start();
                    let mut model = model.lock();
                    assert_prefix(&model, &recovered, &format!("{context}: restart after a partial flush"));
                    let k =
                        *model.matching_prefixes_with_floor(&recovered, floor).last().expect("floor matches");
                    model.restart_at(k);
                    partial = false;
                    log = reopened;
                } else {
                    model.lock().restart_clean();
                    let (reopened, recovered) = open(&medium);
                    let model = model.lock();
                    assert_eq!(recovered, model.states[model.durable], "{context}: clean restart");
                    drop(model);
                    log = reopened;
                }
            }
            _ => {
                drop(log);
                let states = medium.crash_states(knobs.states.max(2), rng.next_u64());
                let pick = rng.below(states.len() as u64) as usize;
                if trace {
                    eprintln!("  crash: state {pick} of {}", states.len());
                }
                medium = states.into_iter().nth(pick).expect("picked");
                install_hook(&medium, &model, &checked, knobs.states, seed ^ step);
                let (reopened, recovered) = open(&medium);
                assert_prefix(&model.lock(), &recovered, &format!("{context}: crash-restart"));
                let floor = reopened.log_start();
                let k = *model
                    .lock()
                    .matching_prefixes_with_floor(&recovered, floor)
                    .last()
                    .expect("floor matches");
                model.lock().restart_at(k);
                partial = false;
                log = reopened;
            }
        }
        let model = model.lock();
        checked.fetch_add(check(&medium, &model, knobs.states, seed ^ step, &context), Ordering::Relaxed);
    }
    if trace {
        eprintln!("seed {seed}: {full} flushes found the log full");
    }
    checked.load(Ordering::Relaxed)
}

/// Runs the workloads of every seed on fresh media from `medium`; returns the crash
/// states checked.
fn workloads<M: Medium>(medium: impl Fn() -> M) -> u64 {
    let knobs = knobs();
    (knobs.first_seed..knobs.first_seed + knobs.seeds).map(|seed| workload(medium(), seed, &knobs)).sum()
}

#[test]
fn journal_recovers_a_durable_prefix_from_every_crash_state() {
    let checked = workloads(SimDisk::new);
    eprintln!("journal: {checked} crash states recovered and checked");
    assert!(checked > 1000, "the workloads reached too few crash states: {checked}");
}

#[test]
fn pmem_log_recovers_a_durable_prefix_from_every_crash_state() {
    let checked = workloads(formatted_pmem);
    eprintln!("pmem: {checked} crash images recovered and checked");
    assert!(checked > 1000, "the workloads reached too few crash states: {checked}");
}

/// One flush, every crash state of it, exhaustively: the model exactly (each
/// unsynced write lost or kept, the last torn at every sector boundary).
#[test]
fn journal_single_flush_is_atomic_in_every_crash_state() {
    let disk = SimDisk::new();
    let (mut journal, _) = open(&disk);
    let mut model = Model::default();
    let first = request(1, Some(ballot(1, 1)), vec![batch(1, 1, 700)], None);
    journal.append(&first).unwrap();
    model.push(Op::Persist(first));
    journal.flush().unwrap();
    model.mark_durable();
    let second = request(2, Some(ballot(2, 1)), vec![batch(2, 2, 1500), batch(3, 2, 10)], Some(1));
    journal.append(&second).unwrap();
    model.push(Op::Persist(second));
    let seen = Arc::new(Mutex::new((0usize, std::collections::BTreeSet::new())));
    let hook_seen = seen.clone();
    let hook_model = model.clone();
    disk.barriers().set_before(move |disk| {
        let mut seen = hook_seen.lock();
        let states = disk.crash_states(100_000, 0);
        assert!(states.len() < 100_000, "exhaustive");
        for state in states {
            let (_, recovered, report) =
                FileJournal::open_in(Box::new(state), &journal_options(), RecoveryPolicy::TruncateTornTail)
                    .unwrap();
            let k = assert_prefix(&hook_model, &recovered, "single flush");
            seen.0 += 1;
            seen.1.insert((k, report.torn_tail.is_some()));
        }
    });
    journal.flush().unwrap();
    let (count, outcomes) = &*seen.lock();
    assert!(*count >= 10, "{count} states");
    // Old state (with and without a torn tail cut) and new state were all reached.
    assert!(
        outcomes.contains(&(1, true)) && outcomes.contains(&(1, false)) && outcomes.contains(&(2, false)),
        "{outcomes:?}"
    );
}

/// The commit of one append, crash image by crash image: before the commit-word fence
/// every subset of the data and metadata chunks, and both values of the commit word.
#[test]
fn pmem_append_commits_atomically_through_the_commit_word() {
    let pmem = formatted_pmem();
    let (mut log, _) = open(&pmem);
    let mut model = Model::default();
    let op = request(1, Some(ballot(4, 2)), vec![batch(1, 4, 16)], Some(0));
    log.append(&op).unwrap();
    model.push(Op::Persist(op));
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let (hook_outcomes, hook_model) = (outcomes.clone(), model.clone());
    pmem.barriers().set_before(move |pmem| {
        let mut recovered_prefixes = std::collections::BTreeSet::new();
        for state in pmem.crash_states(1 << 12, 3) {
            let (_, recovered) = state.open(RecoveryPolicy::Strict).unwrap();
            recovered_prefixes.insert(assert_prefix(&hook_model, &recovered, "one append"));
        }
        hook_outcomes.lock().push((pmem.outstanding_chunks(), recovered_prefixes));
    });
    log.flush().unwrap();
    let outcomes = outcomes.lock();
    assert_eq!(outcomes.len(), 2, "two fences per commit: {outcomes:?}");
    // Before the first fence nothing is committed, whatever persisted.
    assert_eq!(outcomes[0].1, [0].into());
    // Before the second, only the commit word is outstanding: old or new state.
    assert_eq!(outcomes[1], (1, [0, 1].into()));
}
