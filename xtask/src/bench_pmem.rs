//! The persistent-memory log in `cargo xtask bench`: the `pmem` backend keeps its log file
//! in each replica's data directory (a disk: `--pmem-flush msync`), and with `--pmem-dir
//! DIR` a second run, `pmem-cl`, keeps it in DIR (tmpfs or a DAX mount: `--pmem-flush
//! cache-lines`, which the server refuses elsewhere). Each figure carries what it used: the
//! flush the server reported when it opened the log, and the file system under the file.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::demo;

/// Size of each replica's persistent-memory log file in the benchmark. On a disk it is
/// allocated but never all written; on tmpfs it is memory (three replicas: 3 GiB).
const PMEM_CAPACITY_BYTES: &str = "1073741824";

/// One way to run the pmem backend.
pub(crate) struct PmemRun {
    /// The backend name the figures carry: `pmem` or `pmem-cl`.
    pub backend: &'static str,
    /// The rsl-kv-server flags that choose it.
    pub server_args: Vec<String>,
    /// The requested flush (`msync` or `cache-lines`).
    pub requested: &'static str,
    /// Where the log files go when not in the data directories; removed on drop.
    scratch: Option<PathBuf>,
}

impl PmemRun {
    /// The runs of the pmem backend: in the data directories (msync), and in `pmem_dir`
    /// with cache-line flushes when given.
    pub(crate) fn all(pmem_dir: Option<&Path>) -> Result<Vec<PmemRun>> {
        let mut runs = vec![PmemRun::new("pmem", "msync", None)];
        if let Some(dir) = pmem_dir {
            if !dir.is_dir() {
                bail!("--pmem-dir {}: not a directory", dir.display());
            }
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let scratch = dir.join(format!("rsl-kv-bench-pmem-{}-{nanos:08x}", std::process::id()));
            fs::create_dir(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
            demo::register_dir(&scratch);
            runs.push(PmemRun::new("pmem-cl", "cache-lines", Some(scratch)));
        }
        Ok(runs)
    }

    fn new(backend: &'static str, requested: &'static str, scratch: Option<PathBuf>) -> PmemRun {
        // The log is a fixed-size area that only a checkpoint lets the ring truncate: at
        // these rates 10,000 slots of full batches outgrow the default 64 MiB before the
        // next checkpoint, so give it room and checkpoint more often.
        let mut server_args: Vec<String> = [
            "--pmem-capacity-bytes",
            PMEM_CAPACITY_BYTES,
            "--checkpoint-interval-slots",
            "1000",
            "--pmem-flush",
            requested,
        ]
        .map(String::from)
        .to_vec();
        if let Some(dir) = &scratch {
            server_args.extend(["--pmem-dir".to_owned(), dir.display().to_string()]);
        }
        PmemRun { backend, server_args, requested, scratch }
    }

    /// What the figures of this run used: the flush the first replica reported in its log
    /// (`node_log`), the requested one, the directory and its file system.
    pub(crate) fn describe(&self, node_log: &Path, data_dir: &Path) -> Value {
        let dir = self.scratch.as_deref().unwrap_or(data_dir);
        let log = fs::read_to_string(node_log).unwrap_or_default();
        json!({
            "requested": self.requested,
            "flush": reported_flush(&log).unwrap_or_else(|| "not reported".into()),
            "dir": dir.display().to_string(),
            "file_system": file_system(dir),
        })
    }
}

impl Drop for PmemRun {
    fn drop(&mut self) {
        if let Some(dir) = self.scratch.take() {
            let _ = fs::remove_dir_all(&dir);
            demo::unregister_dir(&dir);
        }
    }
}

/// The `flush=` field of the server's "pmem log opened" line (escape sequences removed).
fn reported_flush(log: &str) -> Option<String> {
    let line = log.lines().find(|line| line.contains("pmem log opened"))?;
    let mut plain = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // An ANSI sequence: ESC [ parameters final-letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    let value = plain.split_once("flush=")?.1.split_whitespace().next()?;
    let inner = value.strip_prefix("Some(").and_then(|v| v.strip_suffix(')')).unwrap_or(value);
    Some(inner.to_owned())
}

/// The type of the file system under `dir` (`stat -f`), or "unknown".
fn file_system(dir: &Path) -> String {
    Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(dir)
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reported_flush_is_read_from_the_server_log() {
        let log = "2025 INFO rsl_kv::server: starting\n\
            2025 \u{1b}[32m INFO\u{1b}[0m \u{1b}[2mrsl_kv::server::storage\u{1b}[0m: pmem log opened \
            \u{1b}[3mpath\u{1b}[0m\u{1b}[2m=\u{1b}[0m/dev/shm/x/ring-1-node-1.pmem \
            \u{1b}[3mflush\u{1b}[0m\u{1b}[2m=\u{1b}[0mSome(CacheLines(Clwb)) requested=cache-lines\n";
        assert_eq!(reported_flush(log).as_deref(), Some("CacheLines(Clwb)"));
        assert_eq!(reported_flush("pmem log opened flush=Some(Msync)").as_deref(), Some("Msync"));
        assert_eq!(reported_flush("no such line"), None);
    }

    #[test]
    fn a_pmem_dir_adds_a_cache_line_run_in_a_directory_of_its_own() {
        let root = std::env::temp_dir().join(format!("xtask-pmem-{}", std::process::id()));
        fs::create_dir_all(&root).unwrap();
        let runs = PmemRun::all(Some(&root)).unwrap();
        assert_eq!(runs.iter().map(|r| r.backend).collect::<Vec<_>>(), ["pmem", "pmem-cl"]);
        assert!(runs[0].server_args.windows(2).any(|w| w == ["--pmem-flush", "msync"]));
        let scratch = runs[1].scratch.clone().unwrap();
        assert!(scratch.starts_with(&root) && scratch.is_dir());
        assert!(runs[1].server_args.windows(2).any(|w| w[0] == "--pmem-dir" && Path::new(&w[1]) == scratch));
        let described = runs[1].describe(Path::new("/nonexistent.log"), Path::new("/"));
        assert_eq!(described["requested"], "cache-lines");
        assert_eq!(described["flush"], "not reported");
        assert_ne!(described["file_system"], "unknown");
        drop(runs);
        assert!(!scratch.exists(), "the scratch directory is removed with its run");
        assert!(PmemRun::all(Some(&root.join("missing"))).is_err());
        fs::remove_dir_all(root).unwrap();
        assert_eq!(PmemRun::all(None).unwrap().len(), 1);
    }
}
