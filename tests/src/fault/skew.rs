//! Clock skew for real replicas: Debian's libfaketime, preloaded into a replica
//! (`LD_PRELOAD`), makes every clock it reads (`CLOCK_MONOTONIC` included, which is what
//! Rust's `Instant` and tokio's timers read) run at a rate other than 1.
//!
//! [`Faketime::find`] locates the library (installing the `faketime` package with apt-get
//! when running as root and it is missing) and [`Faketime::verify`] checks, in a child
//! process, that a preloaded `Instant` really runs at the rate asked for: the child compares
//! it with `/proc/uptime`, which libfaketime does not touch. Rates stay within
//! [`skew_ppm_max`], below half the drift bound the servers assume, so any two replicas
//! drift apart by less than the bound and a run must still pass.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The Debian package that ships the library.
const PACKAGE: &str = "faketime";
/// The library names, the multi-threaded build first (the server is multi-threaded).
const LIBRARIES: [&str; 2] = ["libfaketimeMT.so.1", "libfaketime.so.1"];
/// The rate [`Faketime::verify`] asks for, and how far the measured rate may be from it.
const PROBE_RATE: f64 = 2.0;
const PROBE_TOLERANCE: f64 = 0.2;
/// How long (real time) the probe measures.
const PROBE_SPAN: Duration = Duration::from_millis(500);

/// The relative clock rate drift the servers assume at most (`clock_drift_max_ppm` of the
/// consensus configuration, which `rsl-kv-server` leaves at its default).
pub fn drift_bound_ppm() -> u64 {
    use rsl_core::{Config, NodeId, RingId};
    Config::new(RingId(1), NodeId(1), vec![NodeId(1)]).clock_drift_max_ppm
}

/// The largest skew a replica gets, in ppm of real time: 40% of the drift bound, so two
/// replicas skewed in opposite directions drift apart by 80% of it.
pub fn skew_ppm_max() -> u64 {
    drift_bound_ppm() * 2 / 5
}

/// libfaketime, found and checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Faketime {
    library: PathBuf,
}

impl Faketime {
    /// Finds the library in the usual places; as root with apt-get, installs the package
    /// when it is missing. Says why when it cannot be had.
    pub fn find() -> Result<Faketime, String> {
        if let Some(library) = locate() {
            return Ok(Faketime { library });
        }
        if !crate::fault::net::is_root() {
            return Err(format!("libfaketime is not installed (package {PACKAGE}) and this is not root"));
        }
        eprintln!("fault: libfaketime is missing; installing {PACKAGE} with apt-get");
        let installed = Command::new("apt-get")
            .args(["install", "-y", "-qq", PACKAGE])
            .stdout(Stdio::null())
            .status()
            .map_err(|error| format!("libfaketime is not installed and apt-get cannot run: {error}"))?;
        match locate() {
            Some(library) => Ok(Faketime { library }),
            None => Err(format!(
                "libfaketime is not installed and `apt-get install {PACKAGE}` did not install it ({installed})"
            )),
        }
    }

    /// The preloaded library.
    pub fn library(&self) -> &Path {
        &self.library
    }

    /// The environment that runs a program's clocks `ppm` parts per million fast (negative:
    /// slow), from the moment it starts.
    pub fn environment(&self, ppm: i64) -> Vec<(String, String)> {
        vec![
            ("LD_PRELOAD".to_owned(), self.library.display().to_string()),
            ("FAKETIME".to_owned(), rate_spec(ppm)),
            ("FAKETIME_DONT_FAKE_MONOTONIC".to_owned(), "0".to_owned()),
        ]
    }

    /// Runs `probe` (a program that calls [`measure_rate`] and prints its result) with the
    /// library preloaded at twice the real rate, and checks that it measured that.
    pub fn verify(&self, probe: &Path, args: &[&str]) -> Result<(), String> {
        let ppm = ((PROBE_RATE - 1.0) * 1e6) as i64;
        let output = Command::new(probe)
            .args(args)
            .envs(self.environment(ppm))
            .stdin(Stdio::null())
            .output()
            .map_err(|error| format!("running the clock probe {}: {error}", probe.display()))?;
        let text = String::from_utf8_lossy(&output.stdout);
        let rate: f64 = text.trim().parse().map_err(|_| {
            format!(
                "the clock probe under {} printed {:?} ({}), not a rate; stderr: {}",
                self.library.display(),
                text.trim(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )
        })?;
        if (rate - PROBE_RATE).abs() > PROBE_TOLERANCE {
            return Err(format!(
                "under {} at x{PROBE_RATE} the monotonic clock ran at x{rate:.3}: libfaketime does not \
                 reach Rust's Instant here",
                self.library.display()
            ));
        }
        Ok(())
    }
}

/// libfaketime's `FAKETIME` value for a clock `ppm` parts per million fast: no offset, a
/// rate (`+0 x1.004000`).
pub fn rate_spec(ppm: i64) -> String {
    let rate = 1.0 + ppm as f64 / 1e6;
    format!("+0 x{rate:.6}")
}

/// The rate of this process's monotonic clock (`Instant`) against the kernel's uptime,
/// measured over about half a second of uptime. For the probe process of
/// [`Faketime::verify`].
pub fn measure_rate() -> Result<f64, String> {
    let uptime = || -> Result<f64, String> {
        let text =
            std::fs::read_to_string("/proc/uptime").map_err(|error| format!("/proc/uptime: {error}"))?;
        text.split_whitespace()
            .next()
            .and_then(|seconds| seconds.parse().ok())
            .ok_or_else(|| format!("/proc/uptime holds {text:?}"))
    };
    let (real_start, fake_start) = (uptime()?, Instant::now());
    let mut real = uptime()?;
    while real - real_start < PROBE_SPAN.as_secs_f64() {
        // Sleeps may be scaled by the library too: the loop reads the real clock each time.
        std::thread::sleep(Duration::from_millis(5));
        real = uptime()?;
    }
    Ok(fake_start.elapsed().as_secs_f64() / (real - real_start))
}

/// The library, if installed where Debian (or a local build) puts it.
fn locate() -> Option<PathBuf> {
    let mut dirs = vec![PathBuf::from("/usr/lib/faketime"), PathBuf::from("/usr/local/lib/faketime")];
    if let Ok(entries) = std::fs::read_dir("/usr/lib") {
        // Multiarch: /usr/lib/x86_64-linux-gnu/faketime and the like.
        dirs.extend(entries.flatten().map(|entry| entry.path().join("faketime")));
    }
    dirs.iter().flat_map(|dir| LIBRARIES.map(|name| dir.join(name))).find(|path| path.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_written_as_libfaketime_reads_them() {
        assert_eq!(rate_spec(4000), "+0 x1.004000");
        assert_eq!(rate_spec(-2500), "+0 x0.997500");
        assert_eq!(rate_spec(0), "+0 x1.000000");
    }

    #[test]
    fn skews_stay_below_half_the_drift_bound() {
        assert!(skew_ppm_max() > 0);
        assert!(2 * skew_ppm_max() < drift_bound_ppm(), "two opposite skews stay within the bound");
        let faketime = Faketime { library: PathBuf::from("/lib/libfaketimeMT.so.1") };
        let environment = faketime.environment(-100);
        assert!(environment.contains(&("FAKETIME".to_owned(), "+0 x0.999900".to_owned())));
        assert!(environment.contains(&("LD_PRELOAD".to_owned(), "/lib/libfaketimeMT.so.1".to_owned())));
    }

    #[test]
    fn an_unfaked_clock_runs_at_the_real_rate() {
        let rate = measure_rate().unwrap();
        assert!((rate - 1.0).abs() < 0.1, "{rate}");
    }
}
