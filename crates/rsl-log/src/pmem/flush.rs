//! How a mapped region file is made persistent, chosen explicitly ([`PmemFlush`]) or from
//! the file system under the file: cache-line write-back and a store fence where the
//! mapping *is* the memory (a DAX file, or tmpfs), `msync` where it is the page cache of a
//! disk (ext4, xfs, ...), which cache-line flushes do not make durable. The choice is
//! made once, when the file is opened, and checked: asking for cache lines on a page-cache
//! file system is refused rather than silently losing durability.

use std::fmt;
use std::fs::File;
use std::path::Path;
use std::str::FromStr;

use super::region::Persistence;
use crate::error::LogError;
use crate::sys::{self, FileSystemProbe};

/// How a [`PmemLog`](super::PmemLog) persists its stores (`PmemOptions::flush`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PmemFlush {
    /// Cache lines on a DAX file or tmpfs (where the CPU has a cache-line write-back
    /// instruction), `msync` everywhere else. The default.
    #[default]
    Auto,
    /// `msync(MS_SYNC)` of the written range at every fence: durable on any file system,
    /// and the only durable choice for a file in the page cache.
    Msync,
    /// `clwb` (else `clflushopt`, else `clflush`) per written 64-byte line and `sfence`,
    /// as on real persistent memory. Refused unless the file is in DAX mode or on tmpfs
    /// (tmpfs is RAM: nothing survives a power loss there, so on tmpfs this measures the
    /// flush path's cost, not durability) and the CPU is x86_64.
    CacheLines,
}

impl PmemFlush {
    /// The names [`FromStr`] takes, in order: `auto`, `msync`, `cache-lines`.
    pub const NAMES: [&'static str; 3] = ["auto", "msync", "cache-lines"];

    fn name(self) -> &'static str {
        match self {
            PmemFlush::Auto => Self::NAMES[0],
            PmemFlush::Msync => Self::NAMES[1],
            PmemFlush::CacheLines => Self::NAMES[2],
        }
    }

    /// The persistence for the region file `file` at `path` under this choice.
    pub(super) fn resolve(self, path: &Path, file: &File) -> Result<Persistence, LogError> {
        if self == PmemFlush::Msync {
            return Ok(Persistence::Msync);
        }
        let probe = sys::probe_file_system(file).map_err(|e| LogError::io(path, e))?;
        let mapping = Mapping::of(probe);
        match (self, mapping.is_memory(), sys::detect_cache_line_flush()) {
            (_, true, Some(method)) => Ok(Persistence::CacheLines(method)),
            (PmemFlush::Auto, _, _) => Ok(Persistence::Msync),
            (_, false, _) => Err(LogError::InvalidOption {
                reason: format!(
                    "pmem flush `cache-lines` needs a file on a DAX mount or tmpfs, but {} is on {mapping}, \
                     where only msync makes stores durable; use `msync` or `auto`",
                    path.display()
                ),
            }),
            (_, true, None) => Err(LogError::InvalidOption {
                reason: format!(
                    "pmem flush `cache-lines` needs a cache-line write-back instruction (x86_64), which \
                     this CPU architecture does not have ({} is on {mapping}); use `msync` or `auto`",
                    path.display()
                ),
            }),
        }
    }
}

impl fmt::Display for PmemFlush {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PmemFlush {
    type Err = String;

    fn from_str(text: &str) -> Result<PmemFlush, String> {
        [PmemFlush::Auto, PmemFlush::Msync, PmemFlush::CacheLines]
            .into_iter()
            .find(|choice| choice.name() == text)
            .ok_or_else(|| format!("unknown pmem flush mode {text:?}; expected auto, msync or cache-lines"))
    }
}

/// What a file's mapping is, from its file system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mapping {
    /// A file in DAX mode: the mapping is the device's memory.
    Dax,
    /// tmpfs (or ramfs): the mapping is RAM.
    Ram(&'static str),
    /// The page cache of a file system on a disk, by its magic number.
    PageCache(u64),
}

const TMPFS_MAGIC: u64 = 0x0102_1994;
const RAMFS_MAGIC: u64 = 0x8584_58f6;

impl Mapping {
    fn of(probe: FileSystemProbe) -> Mapping {
        match probe {
            FileSystemProbe { dax: true, .. } => Mapping::Dax,
            FileSystemProbe { magic: TMPFS_MAGIC, .. } => Mapping::Ram("tmpfs"),
            FileSystemProbe { magic: RAMFS_MAGIC, .. } => Mapping::Ram("ramfs"),
            FileSystemProbe { magic, .. } => Mapping::PageCache(magic),
        }
    }

    /// Stores to the mapping reach the medium without the page cache's write-back.
    fn is_memory(self) -> bool {
        !matches!(self, Mapping::PageCache(_))
    }
}

impl fmt::Display for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Mapping::Dax => f.write_str("a DAX file system"),
            Mapping::Ram(name) => f.write_str(name),
            Mapping::PageCache(0) => f.write_str("a file system this platform cannot identify"),
            Mapping::PageCache(magic) => {
                let name = match magic {
                    0xef53 => "ext2/ext3/ext4",
                    0x5846_5342 => "xfs",
                    0x9123_683e => "btrfs",
                    0x794c_7630 => "overlayfs",
                    0x6969 => "nfs",
                    0x2fc1_2fc1 => "zfs",
                    0x6573_5546 => "fuse",
                    _ => "a page-cache file system",
                };
                write!(f, "{name} (file system magic {magic:#x})")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_a_wrong_one_says_what_is_expected() {
        for choice in [PmemFlush::Auto, PmemFlush::Msync, PmemFlush::CacheLines] {
            assert_eq!(choice.to_string().parse::<PmemFlush>(), Ok(choice));
        }
        assert_eq!(
            "dax".parse::<PmemFlush>(),
            Err(r#"unknown pmem flush mode "dax"; expected auto, msync or cache-lines"#.to_owned())
        );
        assert_eq!(PmemFlush::default(), PmemFlush::Auto);
    }

    #[test]
    fn only_dax_and_ram_mappings_count_as_memory() {
        let probe = |magic, dax| Mapping::of(FileSystemProbe { magic, dax });
        assert_eq!(probe(0xef53, true), Mapping::Dax);
        assert_eq!(probe(TMPFS_MAGIC, false), Mapping::Ram("tmpfs"));
        assert!(probe(RAMFS_MAGIC, false).is_memory());
        assert!(!probe(0xef53, false).is_memory());
        assert!(!probe(0, false).is_memory(), "an unknown file system is not assumed to be memory");
        assert_eq!(probe(0x5846_5342, false).to_string(), "xfs (file system magic 0x58465342)");
    }
}
