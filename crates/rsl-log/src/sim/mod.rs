//! Crash-model simulators of a disk ([`SimDisk`], a [`crate::vfs::Directory`]) and of
//! persistent memory ([`SimPmem`], a [`crate::pmem::PersistentMemory`]), on which the
//! crash-consistency tests, the model tests and the fuzz targets run the stores.
//!
//! Test support only: this module exists with the cargo feature `sim`, which no shipped
//! build enables (the crate's own tests enable it through a dev-dependency on the crate
//! itself). Production code that wants storage in memory uses
//! [`crate::vfs::MemoryDirectory`] or [`crate::MemoryLog`], which model no crash.
//!
//! Each simulator keeps what is durable apart from what was only written, and enumerates
//! (or samples) the states a crash can leave:
//! - **Disk**: per file, the writes since its last `sync_data` are kept as a prefix, and
//!   the first write not kept may be torn at any sector boundary, either short (the file
//!   ends there) or zero-filled (the file has the write's length, the rest of the write
//!   reads as the old bytes or zeros). Names created, renamed or removed since the last
//!   directory sync are kept as a prefix of those operations.
//! - **Persistent memory**: every 8-byte chunk written since it last became persistent
//!   (flushed and then fenced) independently holds either its old or its new value.
//!
//! A hook runs before every durability barrier (a sync, a fence), when the set of crash
//! states is largest, so a test sees every state a crash at any instruction could leave;
//! barriers can also be made to fail ([`Barriers`]). Both simulators are a [`CrashModel`].

use std::fmt;
use std::io;

use parking_lot::Mutex;

mod disk;
mod pmem;

pub use disk::{SimDisk, SECTOR_BYTES};
pub use pmem::{SimPmem, CHUNK_BYTES};

/// What a crash test asks of a simulator, of a disk's and of persistent memory's alike.
pub trait CrashModel: Clone + Send + 'static {
    /// The simulators a crash now could leave; see each implementation.
    fn crash_states(&self, max: usize, seed: u64) -> Vec<Self>;

    /// The simulator's durability barriers.
    fn barriers(&self) -> &Barriers<Self>;
}

type Hook<T> = Box<dyn FnMut(&T) + Send>;

/// The durability barriers of a simulator `T` (the file and directory syncs of a
/// [`SimDisk`], the fences of a [`SimPmem`]): a hook run before each one, and injected
/// failures. Clones of a simulator share them; the states a crash leaves start afresh.
pub struct Barriers<T> {
    state: Mutex<BarrierState<T>>,
}

struct BarrierState<T> {
    hook: Option<Hook<T>>,
    reached: u64,
    fail_after: Option<u64>,
}

impl<T> Default for Barriers<T> {
    fn default() -> Self {
        Barriers { state: Mutex::new(BarrierState { hook: None, reached: 0, fail_after: None }) }
    }
}

impl<T> fmt::Debug for Barriers<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.lock();
        f.debug_struct("Barriers")
            .field("hook", &state.hook.is_some())
            .field("reached", &state.reached)
            .field("fail_after", &state.fail_after)
            .finish()
    }
}

impl<T> Barriers<T> {
    /// Runs `hook` before every barrier, with the simulator as it is then.
    pub fn set_before(&self, hook: impl FnMut(&T) + Send + 'static) {
        self.state.lock().hook = Some(Box::new(hook));
    }

    /// Makes every barrier after the next `count` fail with an I/O error.
    pub fn fail_after(&self, count: u64) {
        self.state.lock().fail_after = Some(count);
    }

    /// Barriers reached so far, failed ones included.
    pub fn reached(&self) -> u64 {
        self.state.lock().reached
    }

    /// `simulator` reaches a barrier (a `what`): the hook runs (without the lock, so it
    /// may use the simulator), then the barrier is counted and fails if it is to.
    fn reach(&self, simulator: &T, what: &str) -> io::Result<()> {
        let hook = self.state.lock().hook.take();
        if let Some(mut hook) = hook {
            hook(simulator);
            self.state.lock().hook = Some(hook);
        }
        let mut state = self.state.lock();
        state.reached += 1;
        if let Some(remaining) = state.fail_after.as_mut() {
            if *remaining == 0 {
                return Err(io::Error::other(format!("simulated {what} failure")));
            }
            *remaining -= 1;
        }
        Ok(())
    }
}
