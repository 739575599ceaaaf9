//! proptest: arbitrary operation sequences (append, truncate, flush, read, clean restart,
//! crash-restart) against the reference model, on every backend that can crash.

mod common;

use common::*;
use proptest::prelude::*;
use rsl_core::{DurableState, PersistRequest, Proposal, Slot};
use rsl_log::sim::{CrashModel, SimDisk, SimPmem};
use rsl_log::{FileJournal, JournalOptions, LogStore, MemoryDisk, MemoryLog, PmemLog, RecoveryPolicy};

#[derive(Clone, Debug)]
enum Step {
    Append { promise: Option<(u64, u64)>, proposals: Vec<(u64, u64, usize)>, chosen: Option<u64> },
    Truncate(u64),
    Flush,
    Read { first: u64, last: u64, bytes_max: u64 },
    Restart,
    Crash(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => (
            proptest::option::of((1u64..6, 1u64..4)),
            proptest::collection::vec((1u64..40, 1u64..6, 0usize..200), 0..4),
            proptest::option::of(0u64..40)
        )
            .prop_map(|(promise, proposals, chosen)| Step::Append { promise, proposals, chosen }),
        1 => (0u64..40).prop_map(Step::Truncate),
        3 => Just(Step::Flush),
        2 => (0u64..45, 0u64..45, 0u64..2000).prop_map(|(first, last, bytes_max)| Step::Read { first, last, bytes_max }),
        1 => Just(Step::Restart),
        1 => any::<u64>().prop_map(Step::Crash),
    ]
}

/// A store that can restart and crash.
trait Harness {
    fn open(&mut self) -> (Box<dyn LogStore>, DurableState);
    /// A crash: the store is dropped and reopened from crash state number `choice`.
    fn crash(&mut self, choice: u64) -> (Box<dyn LogStore>, DurableState);
}

struct MemoryHarness(MemoryDisk);

impl Harness for MemoryHarness {
    fn open(&mut self) -> (Box<dyn LogStore>, DurableState) {
        let (log, state, _) = MemoryLog::open(&self.0, RecoveryPolicy::Strict).unwrap();
        (Box::new(log), state)
    }
    fn crash(&mut self, _: u64) -> (Box<dyn LogStore>, DurableState) {
        self.open()
    }
}

struct JournalHarness(SimDisk);

fn journal_options() -> JournalOptions {
    JournalOptions { segment_bytes_max: 1024, preallocate: false }
}

impl Harness for JournalHarness {
    fn open(&mut self) -> (Box<dyn LogStore>, DurableState) {
        let (log, state, _) = FileJournal::open_in(
            Box::new(self.0.clone()),
            &journal_options(),
            RecoveryPolicy::TruncateTornTail,
        )
        .unwrap();
        (Box::new(log), state)
    }
    fn crash(&mut self, choice: u64) -> (Box<dyn LogStore>, DurableState) {
        let states = self.0.crash_states(32, choice);
        self.0 = states.into_iter().nth((choice % 32) as usize % 32).unwrap_or_else(|| self.0.clean_copy());
        self.open()
    }
}

struct PmemHarness(SimPmem);

impl Harness for PmemHarness {
    fn open(&mut self) -> (Box<dyn LogStore>, DurableState) {
        let (log, state, _) =
            PmemLog::recover(Box::new(self.0.clone()), RecoveryPolicy::TruncateTornTail).unwrap();
        (Box::new(log), state)
    }
    fn crash(&mut self, choice: u64) -> (Box<dyn LogStore>, DurableState) {
        let states = self.0.crash_states(32, choice);
        let pick = (choice % states.len() as u64) as usize;
        self.0 = states.into_iter().nth(pick).expect("picked");
        self.open()
    }
}

fn expected_read(model: &Model, first: u64, last: u64, bytes_max: u64) -> Vec<Proposal> {
    if first > last {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut total = 0;
    for proposal in model.current().proposals.range(first..=last).map(|(_, p)| p) {
        total += rsl_log::codec::proposal_encoded_bytes(proposal);
        if !out.is_empty() && total > bytes_max {
            break;
        }
        out.push(proposal.clone());
    }
    out
}

fn run(harness: &mut dyn Harness, steps: &[Step]) -> Result<(), TestCaseError> {
    let mut model = Model::default();
    let (mut log, state) = harness.open();
    prop_assert_eq!(&state, &DurableState::default());
    for (i, step) in steps.iter().enumerate() {
        match step {
            Step::Append { promise, proposals, chosen } => {
                let request = PersistRequest {
                    ticket: model.ticket(),
                    promise: promise.map(|(round, node)| ballot(round, node)),
                    proposals: proposals.iter().map(|&(slot, round, len)| batch(slot, round, len)).collect(),
                    chosen: chosen.map(Slot),
                };
                log.append(&request).unwrap();
                model.push(Op::Persist(request));
            }
            Step::Truncate(below) => {
                log.truncate_below(Slot(*below)).unwrap();
                model.push(Op::Truncate(Slot(*below)));
            }
            Step::Flush => {
                prop_assert_eq!(log.flush().unwrap(), model.next_ticket - 1);
                model.mark_durable();
            }
            Step::Read { first, last, bytes_max } => {
                let read = log.read_range(Slot(*first), Slot(*last), *bytes_max).unwrap();
                prop_assert_eq!(read, expected_read(&model, *first, *last, *bytes_max), "step {}", i);
                prop_assert_eq!(log.log_start(), model.current().floor);
            }
            Step::Restart => {
                drop(log);
                model.restart_clean();
                let (reopened, state) = harness.open();
                prop_assert_eq!(&state, &model.states[model.durable], "step {}: restart", i);
                prop_assert_eq!(reopened.log_start(), model.floors[model.durable]);
                log = reopened;
            }
            Step::Crash(choice) => {
                drop(log);
                let (reopened, state) = harness.crash(*choice);
                let prefixes = model.matching_prefixes_with_floor(&state, reopened.log_start());
                prop_assert!(
                    !prefixes.is_empty(),
                    "step {}: crash recovered no durable prefix: {:?}",
                    i,
                    state
                );
                model.restart_at(*prefixes.last().unwrap());
                log = reopened;
            }
        }
    }
    log.flush().unwrap();
    model.mark_durable();
    drop(log);
    let (_, state) = harness.open();
    prop_assert_eq!(&state, &model.states[model.durable]);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn memory_log_follows_the_model(steps in proptest::collection::vec(step(), 1..60)) {
        run(&mut MemoryHarness(MemoryDisk::new()), &steps)?;
    }

    #[test]
    fn file_journal_follows_the_model(steps in proptest::collection::vec(step(), 1..60)) {
        run(&mut JournalHarness(SimDisk::new()), &steps)?;
    }

    #[test]
    fn pmem_log_follows_the_model(steps in proptest::collection::vec(step(), 1..60)) {
        let mut pmem = SimPmem::new(256 << 10);
        PmemLog::format(&mut pmem, 1).unwrap();
        run(&mut PmemHarness(pmem), &steps)?;
    }
}
