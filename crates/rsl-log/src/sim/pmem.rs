//! The crash-model simulator of persistent memory: a region that remembers which 8-byte
//! chunks are persistent, and enumerates the regions a crash could leave (see the module
//! docs of `sim`).

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use rsl_core::SplitMix64;

use super::{Barriers, CrashModel};
use crate::pmem::PersistentMemory;

/// The unit of persistence of simulated persistent memory.
pub const CHUNK_BYTES: u64 = 8;

struct PmemState {
    durable: Vec<u8>,
    current: Vec<u8>,
    /// Chunks written and not yet persistent.
    outstanding: BTreeSet<u64>,
    /// Outstanding chunks flushed since their last write: persistent at the next fence.
    flushed: BTreeSet<u64>,
}

/// Simulated persistent memory; clones share the region.
#[derive(Clone)]
pub struct SimPmem {
    inner: Arc<Mutex<PmemState>>,
    barriers: Arc<Barriers<SimPmem>>,
    name: PathBuf,
}

impl std::fmt::Debug for SimPmem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.inner.lock();
        f.debug_struct("SimPmem")
            .field("len", &state.current.len())
            .field("outstanding_chunks", &state.outstanding.len())
            .field("fences", &self.barriers.reached())
            .finish()
    }
}

impl SimPmem {
    /// A zeroed region of `len` bytes (a multiple of [`CHUNK_BYTES`]).
    pub fn new(len: u64) -> SimPmem {
        SimPmem::from_image(vec![0; len as usize])
    }

    /// A region holding `image`, all persistent.
    pub fn from_image(image: Vec<u8>) -> SimPmem {
        let state = PmemState {
            durable: image.clone(),
            current: image,
            outstanding: BTreeSet::new(),
            flushed: BTreeSet::new(),
        };
        SimPmem {
            inner: Arc::new(Mutex::new(state)),
            barriers: Arc::default(),
            name: PathBuf::from("/sim/pmem"),
        }
    }

    /// The current contents (what a load would see).
    pub fn image(&self) -> Vec<u8> {
        self.inner.lock().current.clone()
    }

    /// Overwrites bytes durably, e.g. to inject damage.
    pub fn corrupt(&self, offset: u64, bytes: &[u8]) {
        let mut state = self.inner.lock();
        let range = offset as usize..offset as usize + bytes.len();
        state.current[range.clone()].copy_from_slice(bytes);
        state.durable[range].copy_from_slice(bytes);
    }

    /// Chunks written and not yet persistent.
    pub fn outstanding_chunks(&self) -> usize {
        self.inner.lock().outstanding.len()
    }

    fn crash_images(&self, max: usize, seed: u64) -> Vec<Vec<u8>> {
        let state = self.inner.lock();
        let chunks: Vec<u64> = state.outstanding.iter().copied().collect();
        let build = |persisted: &dyn Fn(usize) -> bool| {
            let mut image = state.durable.clone();
            for (i, &chunk) in chunks.iter().enumerate() {
                if persisted(i) {
                    let range = (chunk * CHUNK_BYTES) as usize..((chunk + 1) * CHUNK_BYTES) as usize;
                    image[range.clone()].copy_from_slice(&state.current[range]);
                }
            }
            image
        };
        if chunks.len() < 63 && (1u64 << chunks.len()) <= max as u64 {
            return (0..1u64 << chunks.len()).map(|mask| build(&|i| mask >> i & 1 == 1)).collect();
        }
        let mut rng = SplitMix64::new(seed);
        let mut images = vec![build(&|_| false), build(&|_| true)];
        while images.len() < max {
            // Vary the density: some states keep few chunks, some most.
            let keep_per_256 = rng.below(257);
            let mask: Vec<bool> = chunks.iter().map(|_| rng.below(256) < keep_per_256).collect();
            images.push(build(&|i| mask[i]));
        }
        images
    }
}

impl CrashModel for SimPmem {
    /// The regions a crash now could leave: every subset of the outstanding chunks
    /// persisted when there are at most `max` subsets, otherwise `max` sampled with `seed`,
    /// always including "none persisted" and "all persisted".
    fn crash_states(&self, max: usize, seed: u64) -> Vec<SimPmem> {
        self.crash_images(max, seed).into_iter().map(SimPmem::from_image).collect()
    }

    /// The region's barriers: every fence.
    fn barriers(&self) -> &Barriers<SimPmem> {
        &self.barriers
    }
}

impl PersistentMemory for SimPmem {
    fn len(&self) -> u64 {
        self.inner.lock().current.len() as u64
    }

    fn name(&self) -> &Path {
        &self.name
    }

    fn read(&self, offset: u64, buf: &mut [u8]) {
        let state = self.inner.lock();
        buf.copy_from_slice(&state.current[offset as usize..offset as usize + buf.len()]);
    }

    fn write(&mut self, offset: u64, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut state = self.inner.lock();
        state.current[offset as usize..offset as usize + bytes.len()].copy_from_slice(bytes);
        let (first, last) = (offset / CHUNK_BYTES, (offset + bytes.len() as u64 - 1) / CHUNK_BYTES);
        for chunk in first..=last {
            state.outstanding.insert(chunk);
            state.flushed.remove(&chunk);
        }
    }

    fn flush(&mut self, offset: u64, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        let mut state = self.inner.lock();
        let (first, last) = (offset / CHUNK_BYTES, (offset + len - 1) / CHUNK_BYTES);
        let chunks: Vec<u64> = state.outstanding.range(first..=last).copied().collect();
        state.flushed.extend(chunks);
        Ok(())
    }

    fn fence(&mut self) -> io::Result<()> {
        self.barriers.reach(self, "fence")?;
        let mut state = self.inner.lock();
        let flushed = std::mem::take(&mut state.flushed);
        for chunk in flushed {
            let range = (chunk * CHUNK_BYTES) as usize..((chunk + 1) * CHUNK_BYTES) as usize;
            let bytes = state.current[range.clone()].to_vec();
            state.durable[range].copy_from_slice(&bytes);
            state.outstanding.remove(&chunk);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outstanding_chunks_persist_independently_until_fenced() {
        let mut pmem = SimPmem::new(64);
        pmem.write(0, &[9; 16]);
        let images: BTreeSet<Vec<u8>> = pmem.crash_states(100, 1).iter().map(SimPmem::image).collect();
        assert_eq!(images.len(), 4);
        pmem.flush(0, 8).unwrap();
        pmem.fence().unwrap();
        assert_eq!(pmem.outstanding_chunks(), 1, "the unflushed chunk is still outstanding");
        assert!(pmem.crash_states(100, 1).iter().all(|region| region.image()[..8] == [9; 8]));
    }
}
