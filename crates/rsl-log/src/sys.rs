//! Every `unsafe` operation of the crate, each with the argument for why it is sound:
//! mapping a file into memory, writing cache lines back and fencing (x86_64), and the
//! system calls std does not offer at the workspace's minimum Rust version (`flock`,
//! `fallocate`, and `fstatfs`/`statx` to tell what a file's mapping is). Everything here
//! exposes a safe interface.

use std::fs::File;
use std::io;
use std::os::unix::io::AsRawFd;

use memmap2::MmapMut;

/// Releases the `flock` held through `file`'s open file description. Dropping the file
/// releases it too, but only once every copy of the descriptor is closed: a child forked
/// by another thread meanwhile holds a copy until it execs, and would keep the lock.
pub(crate) fn unlock(file: &File) -> io::Result<()> {
    // SAFETY: flock reads two integers; the descriptor stays open for the call because
    // `file` is borrowed. No memory is passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Takes an exclusive advisory lock on `file` without waiting. Returns false when another
/// open file description (another process, or another handle in this one) holds it.
pub(crate) fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    // SAFETY: flock reads two integers; the descriptor stays open for the call because
    // `file` is borrowed. No memory is passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let error = io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(error)
    }
}

/// Reserves blocks for the first `len` bytes of `file` and extends it to `len` (the new
/// part reads as zeros). Returns false where the file system does not support it.
#[cfg(target_os = "linux")]
pub(crate) fn allocate(file: &File, len: u64) -> io::Result<bool> {
    let len = libc::off_t::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "allocation length overflows off_t"))?;
    // SAFETY: fallocate reads integers only; the descriptor stays open for the call because
    // `file` is borrowed. Mode 0 allocates and extends; it never discards data.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
    if rc == 0 {
        return Ok(true);
    }
    let error = io::Error::last_os_error();
    match error.raw_os_error() {
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => Ok(false),
        _ => Err(error),
    }
}

/// Reserves blocks (unsupported off Linux: the file grows as it is written).
#[cfg(not(target_os = "linux"))]
pub(crate) fn allocate(_file: &File, _len: u64) -> io::Result<bool> {
    Ok(false)
}

/// Maps all of `file` read-write and shared.
///
/// The caller must hold an exclusive lock on the file (see [`try_lock_exclusive`]) for as
/// long as the mapping lives, and must not change the file's length meanwhile.
pub(crate) fn map_file(file: &File) -> io::Result<MmapMut> {
    // SAFETY: memmap2 requires that the mapped file is not truncated or modified by anyone
    // else while mapped, otherwise slices of the mapping could change (or fault) under a
    // live reference. Every caller holds the file's exclusive flock for the mapping's whole
    // life and never changes its length while mapped, so no cooperating process touches
    // it. A process that ignores the advisory lock and writes the file is outside this
    // crate's contract (as for any database file).
    unsafe { MmapMut::map_mut(file) }
}

/// What the file system says about a file, as far as persisting its mapping goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FileSystemProbe {
    /// The file system's magic number (`statfs.f_type`); 0 where it cannot be read.
    pub magic: u64,
    /// The file is in DAX mode (`STATX_ATTR_DAX`): its mapping is the device's memory.
    pub dax: bool,
}

/// Asks the kernel which file system `file` lives on (`fstatfs`) and whether it is in DAX
/// mode (`statx`, Linux 5.8 and later; older kernels report no DAX).
#[cfg(target_os = "linux")]
pub(crate) fn probe_file_system(file: &File) -> io::Result<FileSystemProbe> {
    let fd = file.as_raw_fd();
    let mut buffer = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: fstatfs writes one `statfs` into the buffer it is given, which is sized and
    // aligned for it; the descriptor stays open for the call because `file` is borrowed.
    let rc = unsafe { libc::fstatfs(fd, buffer.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstatfs returned 0, so it filled the whole struct (and it started zeroed).
    let statfs = unsafe { buffer.assume_init() };
    // `f_type` is signed on some targets: the magic is its bit pattern.
    #[allow(clippy::unnecessary_cast)]
    let magic = statfs.f_type as u64 & 0xffff_ffff;
    Ok(FileSystemProbe { magic, dax: statx_dax(fd) })
}

/// Whether `statx` reports the file behind `fd` in DAX mode; false where it cannot say.
#[cfg(all(target_os = "linux", any(target_env = "gnu", target_env = "musl")))]
fn statx_dax(fd: std::os::unix::io::RawFd) -> bool {
    let mut buffer = std::mem::MaybeUninit::<libc::statx>::zeroed();
    let empty = c"";
    // SAFETY: statx reads the NUL-terminated empty path (AT_EMPTY_PATH: the descriptor
    // itself is examined) and writes one `statx` into the buffer, sized and aligned for it.
    let rc = unsafe {
        libc::statx(fd, empty.as_ptr(), libc::AT_EMPTY_PATH, libc::STATX_BASIC_STATS, buffer.as_mut_ptr())
    };
    if rc != 0 {
        return false;
    }
    // SAFETY: statx returned 0, so it filled the struct (which started zeroed).
    let statx = unsafe { buffer.assume_init() };
    let dax = libc::STATX_ATTR_DAX as u64;
    statx.stx_attributes_mask & dax != 0 && statx.stx_attributes & dax != 0
}

/// No `statx` in this C library: DAX cannot be seen.
#[cfg(all(target_os = "linux", not(any(target_env = "gnu", target_env = "musl"))))]
fn statx_dax(_fd: std::os::unix::io::RawFd) -> bool {
    false
}

/// Off Linux the file system is not probed: it is unknown (magic 0) and not DAX.
#[cfg(not(target_os = "linux"))]
pub(crate) fn probe_file_system(_file: &File) -> io::Result<FileSystemProbe> {
    Ok(FileSystemProbe { magic: 0, dax: false })
}

/// The size of a cache line, the unit of write-back.
pub(crate) const CACHE_LINE_BYTES: usize = 64;

/// How cache lines are written back to persistent memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CacheLineFlush {
    /// `clwb`: writes the line back and may keep it cached. Needs a fence to order.
    Clwb,
    /// `clflushopt`: writes back and evicts. Needs a fence to order.
    ClflushOpt,
    /// `clflush`: writes back and evicts, ordered by itself (x86_64 baseline).
    Clflush,
}

/// The best cache-line write-back instruction this CPU has, checked at run time; `None`
/// on architectures without one (persistence then needs `msync`).
pub fn detect_cache_line_flush() -> Option<CacheLineFlush> {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{__cpuid, __cpuid_count};
        // SAFETY: CPUID exists on every x86_64 CPU and only reads identification
        // registers. (Newer compilers consider the call safe; older ones need the block.)
        #[allow(unused_unsafe)]
        let leaves = unsafe { __cpuid(0) }.eax;
        if leaves >= 7 {
            // SAFETY: as above; leaf 7 exists because `leaves >= 7`.
            #[allow(unused_unsafe)]
            let features = unsafe { __cpuid_count(7, 0) }.ebx;
            if features & (1 << 24) != 0 {
                return Some(CacheLineFlush::Clwb);
            }
            if features & (1 << 23) != 0 {
                return Some(CacheLineFlush::ClflushOpt);
            }
        }
        Some(CacheLineFlush::Clflush)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

/// Writes back every cache line that `bytes` touches. Durable only after
/// [`store_fence`], and only where the mapping is persistent memory (DAX).
#[cfg(target_arch = "x86_64")]
pub(crate) fn write_back(bytes: &[u8], method: CacheLineFlush) {
    use std::arch::asm;
    if bytes.is_empty() {
        return;
    }
    let misalignment = bytes.as_ptr() as usize % CACHE_LINE_BYTES;
    let lines = (misalignment + bytes.len()).div_ceil(CACHE_LINE_BYTES);
    let first = bytes.as_ptr().wrapping_sub(misalignment);
    for i in 0..lines {
        let line = first.wrapping_add(i * CACHE_LINE_BYTES);
        match method {
            // SAFETY: `line` is the start of a cache line containing at least one byte of
            // `bytes`, so the line is mapped; clwb changes no memory contents, only when
            // the line reaches memory. `method` came from CPUID, so the CPU has clwb.
            CacheLineFlush::Clwb => unsafe {
                asm!("clwb [{0}]", in(reg) line, options(nostack, preserves_flags));
            },
            // SAFETY: as for clwb; clflushopt also evicts the line, which changes no
            // contents. The CPU has it (CPUID).
            CacheLineFlush::ClflushOpt => unsafe {
                asm!("clflushopt [{0}]", in(reg) line, options(nostack, preserves_flags));
            },
            // SAFETY: as above; clflush is part of the x86_64 baseline (SSE2).
            CacheLineFlush::Clflush => unsafe {
                asm!("clflush [{0}]", in(reg) line, options(nostack, preserves_flags));
            },
        }
    }
}

/// No cache-line write-back off x86_64: callers use `msync` instead.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn write_back(_bytes: &[u8], _method: CacheLineFlush) {}

/// Orders every earlier store and cache-line write-back before every later store.
pub(crate) fn store_fence() {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: sfence is part of the x86_64 baseline (SSE) and changes no memory contents.
        unsafe {
            std::arch::asm!("sfence", options(nostack, preserves_flags));
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_back_and_fence_run_on_unaligned_ranges() {
        let buffer = vec![7u8; 1000];
        if let Some(method) = detect_cache_line_flush() {
            for method in [method, CacheLineFlush::Clflush] {
                write_back(&buffer[3..997], method);
                write_back(&buffer[64..65], method);
                write_back(&buffer[0..0], method);
            }
        }
        store_fence();
        assert!(buffer.iter().all(|&b| b == 7), "write-back changes no contents");
    }

    #[test]
    fn the_probe_tells_tmpfs_from_a_disk_file_system() {
        let shm = std::path::Path::new("/dev/shm");
        if cfg!(target_os = "linux") && shm.is_dir() {
            let dir = tempfile::tempdir_in(shm).unwrap();
            let file = File::create(dir.path().join("probe")).unwrap();
            let probe = probe_file_system(&file).unwrap();
            assert_eq!(probe.magic, 0x0102_1994, "/dev/shm is tmpfs");
            assert!(!probe.dax, "tmpfs is not DAX");
        }
        let manifest = File::open(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
        let probe = probe_file_system(&manifest).unwrap();
        assert_eq!(probe.magic != 0, cfg!(target_os = "linux"), "the magic is read on Linux only");
    }

    #[test]
    fn a_second_lock_on_the_same_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let a = File::create(&path).unwrap();
        let b = File::open(&path).unwrap();
        assert!(try_lock_exclusive(&a).unwrap());
        assert!(!try_lock_exclusive(&b).unwrap());
        drop(a);
        assert!(try_lock_exclusive(&b).unwrap());
    }
}
