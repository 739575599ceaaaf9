//! Every unsafe block of the RDMA transport: raw access to registered memory (which a NIC,
//! or the emulated provider acting as one, writes behind the CPU's back), the futex calls
//! of the emulated provider's completion channels and, with the `rdma-verbs` feature, the
//! libibverbs calls in `ibverbs.rs`.
//!
//! Registered memory is a mapping this module owns: anonymous for local-only regions, a
//! file (on tmpfs) for regions the emulated provider shares with other processes. Nothing
//! outside this module holds a Rust reference to it except through the methods below, each
//! of which states which bytes it touches and why no one else writes them meanwhile.

#[cfg(feature = "rdma-verbs")]
pub(crate) mod ibverbs;

use memmap2::{MmapOptions, MmapRaw};
use std::fs::File;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::time::Duration;

/// A mapping of registered memory. Every method takes offsets from the start of the
/// mapping and asserts they are in bounds (an offset out of bounds is a bug of this crate:
/// callers check what a peer asked for before they get here).
#[derive(Debug)]
pub(crate) struct RegionMemory {
    map: MmapRaw,
    pointer: NonNull<u8>,
    len: usize,
}

// SAFETY: the memory is only reached through the methods below: atomics for words that
// another writer (a peer's one-sided write) may store concurrently, and plain accesses only
// for ranges that the ring protocol gives to one side at a time.
unsafe impl Send for RegionMemory {}
// SAFETY: as for `Send`.
unsafe impl Sync for RegionMemory {}

impl RegionMemory {
    /// `len` bytes of zeroed, page-aligned anonymous memory.
    pub(crate) fn anonymous(len: usize) -> std::io::Result<RegionMemory> {
        let map = MmapOptions::new().len(len.max(1)).map_anon()?;
        RegionMemory::from_raw(MmapRaw::from(map), len)
    }

    /// Maps all of `file` (shared: writes are seen by every process that maps it).
    pub(crate) fn map_file(file: &File) -> std::io::Result<RegionMemory> {
        let len = usize::try_from(file.metadata()?.len()).map_err(std::io::Error::other)?;
        let map = MmapRaw::map_raw(file)?;
        RegionMemory::from_raw(map, len)
    }

    fn from_raw(map: MmapRaw, len: usize) -> std::io::Result<RegionMemory> {
        let pointer = NonNull::new(map.as_mut_ptr()).ok_or_else(|| std::io::Error::other("null mapping"))?;
        Ok(RegionMemory { map, pointer, len })
    }

    /// Bytes mapped.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The virtual address of byte `offset` (what verbs calls an address).
    pub(crate) fn address(&self, offset: usize) -> u64 {
        self.check(offset, 0);
        self.pointer.as_ptr() as u64 + offset as u64
    }

    fn check(&self, offset: usize, len: usize) {
        assert!(
            offset.checked_add(len).is_some_and(|end| end <= self.len),
            "registered memory access [{offset}, +{len}) outside a mapping of {} bytes",
            self.len
        );
        debug_assert_eq!(self.map.len(), self.len.max(1));
    }

    fn word(&self, offset: usize) -> &AtomicU64 {
        self.check(offset, 8);
        assert_eq!(offset % 8, 0, "unaligned word at {offset}");
        // SAFETY: in bounds and 8-aligned (mappings are page-aligned); the mapping lives as
        // long as `self`; every concurrent access to a word goes through an atomic.
        unsafe { AtomicU64::from_ptr(self.pointer.as_ptr().add(offset).cast::<u64>()) }
    }

    /// Reads the word at `offset` (8-aligned) with acquire ordering: whatever a writer
    /// stored before its release store of this word is visible after.
    pub(crate) fn load_u64(&self, offset: usize) -> u64 {
        u64::from_le(self.word(offset).load(Ordering::Acquire))
    }

    /// Stores the word at `offset` (8-aligned) with release ordering.
    pub(crate) fn store_u64(&self, offset: usize, value: u64) {
        self.word(offset).store(value.to_le(), Ordering::Release);
    }

    fn word32(&self, offset: usize) -> &AtomicU32 {
        self.check(offset, 4);
        assert_eq!(offset % 4, 0, "unaligned 32-bit word at {offset}");
        // SAFETY: in bounds and 4-aligned (mappings are page-aligned); the mapping lives as
        // long as `self`; every concurrent access to the word goes through an atomic.
        unsafe { AtomicU32::from_ptr(self.pointer.as_ptr().add(offset).cast::<u32>()) }
    }

    /// Reads the 32-bit word at `offset` (4-aligned), sequentially consistent.
    pub(crate) fn load_u32(&self, offset: usize) -> u32 {
        self.word32(offset).load(Ordering::SeqCst)
    }

    /// Adds `value` (wrapping) to the 32-bit word at `offset`, sequentially consistent.
    pub(crate) fn fetch_add_u32(&self, offset: usize, value: u32) -> u32 {
        self.word32(offset).fetch_add(value, Ordering::SeqCst)
    }

    /// Swaps the word at `offset` (8-aligned), sequentially consistent; returns the old value.
    pub(crate) fn swap_u64(&self, offset: usize, value: u64) -> u64 {
        u64::from_le(self.word(offset).swap(value.to_le(), Ordering::SeqCst))
    }

    /// Sleeps while the 32-bit word at `offset` holds `expected`, for at most `timeout`,
    /// until a `futex_wake` of the word (from any process that maps the same file).
    pub(crate) fn futex_wait(&self, offset: usize, expected: u32, timeout: Duration) {
        let word = self.word32(offset);
        let timeout = libc::timespec {
            tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
        };
        // SAFETY: FUTEX_WAIT (shared, not private: other processes map the word) on a live,
        // aligned word of this mapping, with a valid relative timeout; the kernel only reads
        // the word. Interruptions and spurious returns are fine: callers re-check.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT,
                expected,
                &timeout as *const libc::timespec,
                std::ptr::null::<u32>(),
                0,
            );
        }
    }

    /// Wakes every waiter on the 32-bit word at `offset`.
    pub(crate) fn futex_wake(&self, offset: usize) {
        let word = self.word32(offset);
        // SAFETY: FUTEX_WAKE (shared) on a live, aligned word of this mapping.
        unsafe {
            libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX);
        }
    }

    /// Writes `bytes` at `offset` in increasing address order, each aligned word with a
    /// release store: a reader that sees the last word (acquire) sees every byte before it.
    /// This is how the emulated provider places a one-sided write, the way an RC NIC places
    /// a write's payload in order.
    pub(crate) fn write_ordered(&self, offset: usize, bytes: &[u8]) {
        self.check(offset, bytes.len());
        let base = self.pointer.as_ptr();
        let mut at = 0;
        while at < bytes.len() {
            let position = offset + at;
            if position % 8 == 0 && bytes.len() - at >= 8 {
                let mut word = [0u8; 8];
                word.copy_from_slice(&bytes[at..at + 8]);
                // SAFETY: in bounds (checked above) and 8-aligned; atomic store.
                let atomic = unsafe { AtomicU64::from_ptr(base.add(position).cast::<u64>()) };
                atomic.store(u64::from_ne_bytes(word), Ordering::Release);
                at += 8;
            } else {
                // SAFETY: in bounds (checked above); atomic store of one byte.
                let atomic = unsafe { AtomicU8::from_ptr(base.add(position)) };
                atomic.store(bytes[at], Ordering::Release);
                at += 1;
            }
        }
    }

    /// Copies `out.len()` bytes from `offset` into `out`, word by word with acquire loads
    /// (the emulated provider reading a work request's local source, which the CPU of this
    /// process may have written on another thread).
    pub(crate) fn read_ordered(&self, offset: usize, out: &mut [u8]) {
        self.check(offset, out.len());
        let base = self.pointer.as_ptr();
        let mut at = 0;
        while at < out.len() {
            let position = offset + at;
            if position % 8 == 0 && out.len() - at >= 8 {
                // SAFETY: in bounds and 8-aligned; atomic load.
                let atomic = unsafe { AtomicU64::from_ptr(base.add(position).cast::<u64>()) };
                out[at..at + 8].copy_from_slice(&atomic.load(Ordering::Acquire).to_ne_bytes());
                at += 8;
            } else {
                // SAFETY: in bounds; atomic load of one byte.
                let atomic = unsafe { AtomicU8::from_ptr(base.add(position)) };
                out[at] = atomic.load(Ordering::Acquire);
                at += 1;
            }
        }
    }

    /// Copies `len` bytes from `offset` to `destination` at `destination_offset`, reading
    /// with acquire loads and placing with release stores in increasing address order (the
    /// emulated provider executing an RDMA WRITE from a registered source).
    pub(crate) fn copy_to(
        &self,
        offset: usize,
        destination: &RegionMemory,
        destination_offset: usize,
        len: usize,
    ) {
        self.check(offset, len);
        destination.check(destination_offset, len);
        let mut chunk = [0u8; 512];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(chunk.len());
            self.read_ordered(offset + done, &mut chunk[..n]);
            destination.write_ordered(destination_offset + done, &chunk[..n]);
            done += n;
        }
    }

    /// The bytes `[offset, offset + len)`, read in place.
    ///
    /// The ring protocol makes this sound: the receiver calls it only for a frame whose
    /// trailer it has loaded (acquire), so the frame's writes happened before; and the
    /// sender writes that range again only after the receiver's credit says it was consumed,
    /// which happens after the slice is dropped. A peer that ignores credits could change
    /// the bytes under the reader, as with any DMA; the reader then sees garbage, which
    /// validation refuses, never memory outside the mapping.
    pub(crate) fn bytes(&self, offset: usize, len: usize) -> &[u8] {
        self.check(offset, len);
        // SAFETY: in bounds; no writer touches the range while the slice lives (see above).
        unsafe { std::slice::from_raw_parts(self.pointer.as_ptr().add(offset), len) }
    }

    /// The bytes `[offset, offset + len)` for writing in place: the sender building a frame
    /// in its staging buffer. Only the producer of a connection calls it, on one thread, for
    /// a range the receiver's credit has released, and it drops the slice before posting
    /// the write that reads the range.
    #[allow(clippy::mut_from_ref)]
    pub(crate) fn bytes_mut(&self, offset: usize, len: usize) -> &mut [u8] {
        self.check(offset, len);
        // SAFETY: in bounds; the producer is the only accessor of the range (see above).
        unsafe { std::slice::from_raw_parts_mut(self.pointer.as_ptr().add(offset), len) }
    }
}

/// Whether a process with this id is alive (used to sweep shared-memory files that a killed
/// process left behind).
pub(crate) fn process_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_ordered_copies_round_trip() {
        let memory = RegionMemory::anonymous(4096).unwrap();
        memory.store_u64(8, 0xdead_beef);
        assert_eq!(memory.load_u64(8), 0xdead_beef);
        let bytes: Vec<u8> = (0..37).collect();
        memory.write_ordered(101, &bytes);
        let mut out = vec![0; 37];
        memory.read_ordered(101, &mut out);
        assert_eq!(out, bytes);
        assert_eq!(memory.bytes(101, 37), &bytes[..]);
        memory.bytes_mut(0, 4).copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(memory.bytes(0, 4), &[1, 2, 3, 4]);
        assert_eq!(memory.address(16) - memory.address(0), 16);
    }

    #[test]
    fn a_futex_wait_ends_on_wake_or_timeout_or_a_changed_word() {
        let memory = std::sync::Arc::new(RegionMemory::anonymous(64).unwrap());
        let started = std::time::Instant::now();
        memory.futex_wait(8, 0, Duration::from_millis(20));
        assert!(started.elapsed() >= Duration::from_millis(15), "timed out");
        memory.fetch_add_u32(8, 1);
        let started = std::time::Instant::now();
        memory.futex_wait(8, 0, Duration::from_secs(30));
        assert!(started.elapsed() < Duration::from_secs(10), "the word is not 0: no wait");
        let waker = std::sync::Arc::clone(&memory);
        let thread = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            waker.fetch_add_u32(8, 1);
            waker.futex_wake(8);
        });
        while memory.load_u32(8) == 1 {
            memory.futex_wait(8, 1, Duration::from_secs(30));
        }
        assert!(started.elapsed() < Duration::from_secs(10), "woken, not timed out");
        assert_eq!(memory.load_u32(8), 2);
        thread.join().unwrap();
        assert_eq!(memory.swap_u64(16, 5), 0);
        assert_eq!(memory.load_u64(16), 5);
    }

    #[test]
    #[should_panic(expected = "outside a mapping")]
    fn out_of_bounds_is_a_bug() {
        let memory = RegionMemory::anonymous(64).unwrap();
        memory.bytes(60, 8);
    }
}
