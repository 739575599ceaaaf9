//! The `rsl-kv-server` the process-level tests start: the shipped binary of package rsl-kv
//! (mimalloc, transparent huge pages off, TLS), built in a cargo invocation of its own.
//!
//! Cargo unifies features across everything one invocation builds, and this package's tests
//! need rsl-sim, which turns on rsl-core's `contracts` and `mutations`: a server built as a
//! binary of this package, or as part of `cargo test`, would not be the one users run.
//! Cargo cannot depend on another package's binary on stable, so [`binary`] finds it:
//!
//! 1. `RSL_KV_SERVER`, when set, names it (`cargo xtask test` builds it with
//!    `cargo build --release -p rsl-kv --bin rsl-kv-server` before the tests and sets it);
//! 2. otherwise it runs that build itself, once per test process, into `shipped/` inside the
//!    target directory. A directory of its own because the `cargo test` that runs the tests
//!    holds the lock of its own target directory until they end; a nested build there would
//!    wait for it forever. The first such build compiles the server's dependencies in
//!    release once; later ones are cargo's no-op check of a fresh build.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// Names the `rsl-kv-server` binary to test, built beforehand.
pub const SERVER_ENV: &str = "RSL_KV_SERVER";

/// The command that builds the shipped server (into cargo's usual place: `target/release`).
pub const BUILD_COMMAND: &str = "cargo build --release -p rsl-kv --bin rsl-kv-server";

/// The path of the shipped `rsl-kv-server`: `RSL_KV_SERVER` if set, else built once by this
/// process (see the module docs). Panics with what went wrong and how to fix it.
pub fn binary() -> PathBuf {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BINARY.get_or_init(|| find(std::env::var_os(SERVER_ENV))) {
        Ok(path) => path.clone(),
        Err(error) => panic!("{error}"),
    }
}

fn find(configured: Option<OsString>) -> Result<PathBuf, String> {
    if let Some(path) = configured.filter(|path| !path.is_empty()) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            return Err(format!(
                "{SERVER_ENV}={} is not a file; build the server with `{BUILD_COMMAND}` and point \
                 {SERVER_ENV} at target/release/rsl-kv-server, or unset it to let the tests build it",
                path.display()
            ));
        }
        return Ok(path);
    }
    build(&shipped_target_dir()?)
}

/// `shipped/` in the target directory this test executable was built into
/// (`<target>/<profile>/deps/<test>`).
fn shipped_target_dir() -> Result<PathBuf, String> {
    let executable = std::env::current_exe().map_err(|error| {
        format!("cannot find this test's executable ({error}); set {SERVER_ENV} (build it with `{BUILD_COMMAND}`)")
    })?;
    let target = executable.ancestors().nth(3).ok_or_else(|| {
        format!(
            "{} is not inside a cargo target directory; set {SERVER_ENV} (build it with `{BUILD_COMMAND}`)",
            executable.display()
        )
    })?;
    Ok(target.join(if SERVER_FEATURES.is_empty() { "shipped" } else { "shipped-rdma" }))
}

/// Features the server is built with beyond its defaults: with this package's feature `rdma`,
/// the tests start rings over the emulated RDMA provider, which the server needs built in.
const SERVER_FEATURES: &[&str] = if cfg!(feature = "rdma") { &["--features", "rsl-kv/rdma"] } else { &[] };

/// Builds the server with cargo into `target_dir` and returns the executable cargo reports.
fn build(target_dir: &Path) -> Result<PathBuf, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let mut command = Command::new(&cargo);
    command
        .args(["build", "--release", "-p", "rsl-kv", "--bin", "rsl-kv-server"])
        .args(SERVER_FEATURES)
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir)
        .arg("--message-format=json-render-diagnostics")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let shown =
        format!("{BUILD_COMMAND} {} --target-dir {}", SERVER_FEATURES.join(" "), target_dir.display());
    eprintln!("rsl-tests: {SERVER_ENV} is not set; building the shipped server: {shown}");
    let mut child = command.spawn().map_err(|error| format!("cannot run `{shown}`: {error}"))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut executable = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|error| format!("reading the output of `{shown}`: {error}"))?;
        if let Some(path) = server_executable(&line) {
            executable = Some(path);
        }
    }
    let status = child.wait().map_err(|error| format!("waiting for `{shown}`: {error}"))?;
    if !status.success() {
        return Err(format!("`{shown}` failed ({status}); see its output above"));
    }
    executable.ok_or_else(|| format!("`{shown}` succeeded but reported no rsl-kv-server executable"))
}

/// The executable in a cargo `compiler-artifact` message for the `rsl-kv-server` binary.
fn server_executable(line: &str) -> Option<PathBuf> {
    let message: serde_json::Value = serde_json::from_str(line).ok()?;
    let is_server = message["reason"] == "compiler-artifact"
        && message["target"]["name"] == "rsl-kv-server"
        && message["target"]["kind"].as_array().is_some_and(|kinds| kinds.iter().any(|kind| kind == "bin"));
    is_server.then(|| message["executable"].as_str().map(PathBuf::from)).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_server_from_cargo_messages() {
        let server = r#"{"reason":"compiler-artifact","target":{"name":"rsl-kv-server","kind":["bin"]},"executable":"/t/release/rsl-kv-server"}"#;
        assert_eq!(server_executable(server), Some(PathBuf::from("/t/release/rsl-kv-server")));
        let cli = r#"{"reason":"compiler-artifact","target":{"name":"rsl-kv","kind":["bin"]},"executable":"/t/release/rsl-kv"}"#;
        assert_eq!(server_executable(cli), None);
        assert_eq!(server_executable(r#"{"reason":"build-finished","success":true}"#), None);
        assert_eq!(server_executable("Compiling rsl-kv"), None);
    }

    #[test]
    fn a_configured_path_must_be_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let error = find(Some(dir.path().join("absent").into())).unwrap_err();
        assert!(error.contains(SERVER_ENV) && error.contains(BUILD_COMMAND), "{error}");
        let present = dir.path().join("rsl-kv-server");
        std::fs::write(&present, b"").unwrap();
        assert_eq!(find(Some(present.clone().into())).unwrap(), present);
    }
}
