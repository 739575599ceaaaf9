//! [`SharedKvStateMachine`]: the key-value machine behind a reader-writer lock, so that
//! reads are served on the callers' tasks while the ring's apply thread executes writes
//! (rsl's [`ConcurrentReader`]; RSL's fast reads with `serializeFastReadsWithReplicates`
//! off). The server runs this one.
//!
//! Execution stays what it was: one thread (the ring's apply thread) executes every write
//! in slot order, each under the write lock, so every replica goes through the same states.
//! Readers take the read lock: they see the state between two writes, never half of one,
//! and never an older state than one they could have seen before (the state only moves
//! forward; a checkpoint install swaps in a newer one).

use std::io;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;
use rsl::{ConcurrentReader, Slot, StateMachine};

use crate::machine::{CheckpointFormatError, KvStateMachine};

/// A [`KvStateMachine`] shared between the apply thread (which executes writes) and any
/// number of concurrent readers. See the module documentation.
#[derive(Debug, Default)]
pub struct SharedKvStateMachine {
    machine: Arc<RwLock<KvStateMachine>>,
}

impl SharedKvStateMachine {
    /// Shares `machine`.
    pub fn new(machine: KvStateMachine) -> SharedKvStateMachine {
        SharedKvStateMachine { machine: Arc::new(RwLock::new(machine)) }
    }

    /// A copy of the current state.
    pub fn snapshot(&self) -> KvStateMachine {
        self.read().clone()
    }

    /// The state, for reading. A panic while the lock was held (a bug in the machine)
    /// leaves the state as the panicking call left it; the ring's apply thread stopped then.
    fn read(&self) -> RwLockReadGuard<'_, KvStateMachine> {
        read_lock(&self.machine)
    }

    fn write(&self) -> RwLockWriteGuard<'_, KvStateMachine> {
        self.machine.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn read_lock(machine: &RwLock<KvStateMachine>) -> RwLockReadGuard<'_, KvStateMachine> {
    machine.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Serves reads from the shared machine on the caller's thread.
#[derive(Debug)]
struct SharedReader {
    machine: Arc<RwLock<KvStateMachine>>,
}

impl ConcurrentReader for SharedReader {
    fn read(&self, request: &[u8]) -> Bytes {
        read_lock(&self.machine).execute_read(request)
    }
}

impl StateMachine for SharedKvStateMachine {
    fn execute(&mut self, slot: Slot, request: &[u8]) -> Bytes {
        self.write().execute_write(slot.0, request)
    }

    fn read(&self, request: &[u8]) -> Bytes {
        self.read().execute_read(request)
    }

    fn reader(&self) -> Option<Arc<dyn ConcurrentReader>> {
        Some(Arc::new(SharedReader { machine: self.machine.clone() }))
    }

    fn save_checkpoint(&self, slot: Slot, writer: &mut dyn io::Write) -> io::Result<()> {
        // Readers go on meanwhile; writes wait anyway (they run on this thread).
        self.read().save(slot.0, writer)
    }

    fn load_checkpoint(&mut self, slot: Slot, reader: &mut dyn io::Read) -> io::Result<()> {
        // Load outside the lock: readers keep the old state until the new one is whole.
        let sessions_max = self.read().sessions_max();
        let (found, machine) = KvStateMachine::load(reader, sessions_max)?;
        if found != slot.0 {
            return Err(CheckpointFormatError::Slot { expected: slot.0, found }.into());
        }
        *self.write() = machine;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Read, ReadOutcome, Write, WriteId};

    fn put(key: &str, value: &str, sequence: u64) -> Vec<u8> {
        let id = WriteId { client: 1, sequence };
        Write::Put { id, key: key.into(), value: Bytes::copy_from_slice(value.as_bytes()) }.encode().to_vec()
    }

    fn get(reader: &dyn ConcurrentReader, key: &str) -> Option<Bytes> {
        match ReadOutcome::decode(&reader.read(&Read::Get { key: key.into() }.encode())).unwrap() {
            ReadOutcome::Value(value) => value,
            other => panic!("a get answered {other:?}"),
        }
    }

    #[test]
    fn the_reader_sees_what_execute_wrote_and_what_a_checkpoint_installed() {
        let mut shared = SharedKvStateMachine::default();
        let reader = shared.reader().expect("a concurrent reader");
        assert_eq!(get(&*reader, "a"), None);
        shared.execute(Slot(1), &put("a", "1", 1));
        assert_eq!(get(&*reader, "a").as_deref(), Some(&b"1"[..]));

        let mut other = KvStateMachine::new();
        other.execute_write(1, &put("a", "2", 1));
        other.execute_write(2, &put("b", "3", 2));
        let mut checkpoint = Vec::new();
        other.save(2, &mut checkpoint).unwrap();
        shared.load_checkpoint(Slot(2), &mut checkpoint.as_slice()).unwrap();
        assert_eq!(
            get(&*reader, "b").as_deref(),
            Some(&b"3"[..]),
            "the same reader sees the installed state"
        );
        assert_eq!(shared.snapshot(), other);
        let error = shared.load_checkpoint(Slot(9), &mut checkpoint.as_slice()).unwrap_err();
        assert!(error.to_string().contains("expected slot 9"), "{error}");
        assert_eq!(shared.snapshot(), other, "a refused checkpoint changes nothing");
    }

    #[test]
    fn readers_on_other_threads_never_see_a_state_go_back() {
        let mut shared = SharedKvStateMachine::default();
        let reader = shared.reader().expect("a concurrent reader");
        std::thread::scope(|scope| {
            let readers: Vec<_> = (0..3)
                .map(|_| {
                    let reader = reader.clone();
                    scope.spawn(move || {
                        let mut last = 0u64;
                        while last < 500 {
                            let seen = get(&*reader, "n")
                                .map_or(0, |v| std::str::from_utf8(&v).unwrap().parse().unwrap());
                            assert!(seen >= last, "went back from {last} to {seen}");
                            last = seen;
                        }
                    })
                })
                .collect();
            for n in 1..=500u64 {
                shared.execute(Slot(n), &put("n", &n.to_string(), n));
            }
            for reader in readers {
                reader.join().unwrap();
            }
        });
    }
}
