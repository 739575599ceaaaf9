//! `rsl-log`: arbitrary bytes into every decoder and recovery path. Nothing may panic;
//! where recovery succeeds, its result must be well formed and a second recovery of what it
//! left must agree under the strictest policy.
//!
//! Inputs come in two modes (first byte): raw bytes as files or regions, which the seed
//! corpus fills with real ones; or a valid log built from a seed and then damaged at
//! fuzzer-chosen places (bit flips, zeroed ranges, truncations), which reaches the deep
//! paths that raw bytes rarely pass a CRC to get to.

use std::io::{Read, Write};

use bytes::Bytes;
use rsl_core::SplitMix64;
use rsl_core::{Ballot, DurableState, NodeId, PersistRequest, Proposal, Request, RequestId, Slot, Value};
use rsl_log::codec::Record;
use rsl_log::journal::segment_name;
use rsl_log::sim::{SimDisk, SimPmem};
use rsl_log::{
    CheckpointOptions, CheckpointStore, FileJournal, JournalOptions, LogStore, PmemLog, RecoveryPolicy,
};

const POLICIES: [RecoveryPolicy; 3] =
    [RecoveryPolicy::Strict, RecoveryPolicy::TruncateTornTail, RecoveryPolicy::SalvagePrefix];

fn journal_options() -> JournalOptions {
    JournalOptions { segment_bytes_max: 512, preallocate: false }
}

fn check_state(state: &DurableState, log_start: Slot) {
    for pair in state.proposals.windows(2) {
        assert!(pair[0].slot < pair[1].slot, "proposals sorted and unique");
    }
    assert!(state.proposals.iter().all(|p| p.slot >= log_start), "nothing below the floor");
}

fn workload(rng: &mut SplitMix64, log: &mut dyn LogStore, ops: u64) {
    let mut ticket = 0;
    for _ in 0..ops {
        match rng.below(10) {
            0 => {
                let below = Slot(rng.below(20));
                let _ = log.truncate_below(below);
            }
            1..=3 => {
                let _ = log.flush();
            }
            _ => {
                ticket += 1;
                let proposals = (0..rng.below(3))
                    .map(|_| {
                        let payload: Vec<u8> = (0..rng.below(60)).map(|i| i as u8).collect();
                        Proposal {
                            ballot: Ballot::new(rng.below(5), NodeId(1)),
                            slot: Slot(rng.below(24)),
                            value: Value::Batch(
                                vec![Request {
                                    id: RequestId { client: 1, sequence: ticket },
                                    payload: Bytes::from(payload),
                                }]
                                .into(),
                            ),
                        }
                    })
                    .collect();
                let request = PersistRequest {
                    ticket,
                    promise: (rng.below(3) == 0).then(|| Ballot::new(rng.below(9), NodeId(2))),
                    proposals,
                    chosen: (rng.below(3) == 0).then(|| Slot(rng.below(24))),
                };
                let _ = log.append(&request);
            }
        }
    }
    let _ = log.flush();
}

/// One kind of damage a change applies at a byte.
#[derive(Clone, Copy)]
pub(crate) enum Damage {
    FlipBit,
    ZeroRange,
    Truncate,
    SetByte,
}

/// Damage to files: any kind.
pub(crate) const FILE_DAMAGE: [Damage; 4] =
    [Damage::FlipBit, Damage::ZeroRange, Damage::Truncate, Damage::SetByte];
/// Damage that keeps the length (a truncated region is refused early).
const REGION_DAMAGE: [Damage; 3] = [Damage::FlipBit, Damage::ZeroRange, Damage::SetByte];

/// Applies damage described by `data` (5 bytes per change: kind, offset, argument) to
/// `content`, of the kinds in `kinds`.
pub(crate) fn damage(content: &mut Vec<u8>, data: &[u8], kinds: &[Damage]) {
    for change in data.chunks_exact(5) {
        if content.is_empty() {
            return;
        }
        let at = u32::from_le_bytes([change[1], change[2], change[3], 0]) as usize % content.len();
        match kinds[change[0] as usize % kinds.len()] {
            Damage::FlipBit => content[at] ^= 1 << (change[4] % 8),
            Damage::ZeroRange => {
                let end = (at + change[4] as usize + 1).min(content.len());
                content[at..end].fill(0);
            }
            Damage::Truncate => content.truncate(at),
            Damage::SetByte => content[at] = change[4],
        }
    }
}

fn recover_journal(disk: &SimDisk) {
    for policy in POLICIES {
        let copy = disk.clean_copy();
        let Ok((log, state, report)) =
            FileJournal::open_in(Box::new(copy.clone()), &journal_options(), policy)
        else {
            continue;
        };
        check_state(&state, report.log_start);
        assert_eq!(log.log_start(), report.log_start);
        drop(log);
        // What recovery left is clean.
        let (_, again, _) = FileJournal::open_in(Box::new(copy), &journal_options(), RecoveryPolicy::Strict)
            .expect("a recovered journal reopens under Strict");
        assert_eq!(again, state, "recovery is idempotent");
    }
}

/// Journal recovery from arbitrary segment files, or from a damaged valid journal.
pub fn journal_recovery(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode % 2 == 0 {
        // Files: [count] then per file [name kind][len u16][bytes].
        let Some((&count, mut rest)) = rest.split_first() else { return };
        let mut files = Vec::new();
        for i in 0..(count % 4) as u64 {
            if rest.len() < 3 {
                break;
            }
            let kind = rest[0];
            let len = (u16::from_le_bytes([rest[1], rest[2]]) as usize).min(rest.len() - 3);
            let content = rest[3..3 + len].to_vec();
            rest = &rest[3 + len..];
            let name = match kind % 8 {
                0 => format!("{}.tmp", segment_name(Slot(i * 8 + 1), i + 1)),
                1 => "notes".to_string(),
                _ => segment_name(Slot(u64::from(kind / 8) * 4 + i), i + 1),
            };
            files.push((name, content));
        }
        recover_journal(&SimDisk::from_files(files));
    } else {
        if rest.len() < 2 {
            return;
        }
        let disk = SimDisk::new();
        {
            let Ok((mut log, _, _)) =
                FileJournal::open_in(Box::new(disk.clone()), &journal_options(), RecoveryPolicy::Strict)
            else {
                return;
            };
            let mut rng = SplitMix64::new(u64::from(rest[0]) | u64::from(rest[1]) << 8);
            workload(&mut rng, &mut log, 40);
        }
        let mut names = disk.names();
        names.retain(|n| n.ends_with(".seg"));
        for (i, change) in rest[2..].chunks(5).enumerate() {
            if names.is_empty() || change.len() < 5 {
                break;
            }
            let name = &names[(change[0] as usize + i) % names.len()];
            let mut content = disk.read_file(name).unwrap_or_default();
            damage(&mut content, change, &FILE_DAMAGE);
            disk.write_file(name, content);
        }
        recover_journal(&disk);
    }
}

const PMEM_REGION_BYTES: usize = 256 + 2048;

fn recover_pmem(image: &[u8]) {
    for policy in POLICIES {
        let region = SimPmem::from_image(image.to_vec());
        let Ok((log, state, report)) = PmemLog::recover(Box::new(region.clone()), policy) else { continue };
        check_state(&state, report.log_start);
        drop(log);
        let (_, again, _) =
            PmemLog::recover(Box::new(SimPmem::from_image(region.image())), RecoveryPolicy::Strict)
                .expect("a recovered region reopens under Strict");
        assert_eq!(again, state, "recovery is idempotent");
    }
}

/// Persistent-memory log recovery from an arbitrary region, or a damaged valid one.
pub fn pmem_recovery(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode % 2 == 0 {
        let mut image = rest.to_vec();
        let len = image.len().max(512).div_ceil(8) * 8;
        image.resize(len, 0);
        recover_pmem(&image);
    } else {
        if rest.len() < 2 {
            return;
        }
        let mut pmem = SimPmem::new(PMEM_REGION_BYTES as u64);
        if PmemLog::format(&mut pmem, 1).is_err() {
            return;
        }
        {
            let Ok((mut log, _, _)) = PmemLog::recover(Box::new(pmem.clone()), RecoveryPolicy::Strict) else {
                return;
            };
            let mut rng = SplitMix64::new(u64::from(rest[0]) | u64::from(rest[1]) << 8);
            workload(&mut rng, &mut log, 40);
        }
        let mut image = pmem.image();
        damage(&mut image, &rest[2..], &REGION_DAMAGE);
        recover_pmem(&image);
    }
}

/// The record decoder: decoding never panics, and what decodes re-encodes to the same
/// bytes (the encoding is canonical).
pub fn record_decode(data: &[u8]) {
    let Some((&kind, payload)) = data.split_first() else { return };
    let payload = Bytes::copy_from_slice(payload);
    if let Ok(record) = Record::decode(kind, &payload) {
        assert_eq!(record.kind(), kind);
        let mut encoded = Vec::new();
        record.encode(&mut encoded);
        assert_eq!(encoded, payload.as_ref(), "canonical encoding");
    }
}

/// Checkpoint verification and loading from arbitrary files, or a damaged valid one.
pub fn checkpoint_load(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let options = CheckpointOptions { keep: 2, block_bytes: 64 };
    let disk = if mode % 2 == 0 {
        SimDisk::from_files(vec![(rsl_log::checkpoint::checkpoint_name(Slot(7)), rest.to_vec())])
    } else {
        let disk = SimDisk::new();
        {
            let Ok(mut store) = CheckpointStore::open_in(Box::new(disk.clone()), &options) else { return };
            for slot in [5u64, 7] {
                let Ok(mut writer) = store.writer(Slot(slot)) else { return };
                let _ = writer.write_all(&[slot as u8; 300]);
                let _ = writer.finish();
            }
        }
        let name = rsl_log::checkpoint::checkpoint_name(Slot(7));
        let mut content = disk.read_file(&name).unwrap_or_default();
        damage(&mut content, rest, &FILE_DAMAGE);
        disk.write_file(&name, content);
        disk
    };
    let Ok(store) = CheckpointStore::open_in(Box::new(disk), &options) else { return };
    let _ = store.verify(Slot(7));
    if let Ok(outcome) = store.load_newest() {
        if let Some(mut reader) = outcome.checkpoint {
            let mut out = Vec::new();
            let expected = reader.info().data_bytes;
            reader.read_to_end(&mut out).expect("a verified checkpoint reads back");
            assert_eq!(out.len() as u64, expected);
        }
    }
}
