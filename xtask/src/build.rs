//! Building the tools the tasks run: `cargo build --release` of named binaries, whose paths
//! are read from cargo's JSON messages, so `CARGO_TARGET_DIR` and `build.target-dir` are
//! honoured wherever they point.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::process::Cmd;

/// Builds `binaries` of `package` in release and returns their executables, in the order
/// given, as cargo reports them.
pub fn release_binaries<const N: usize>(package: &str, binaries: [&str; N]) -> Result<[PathBuf; N]> {
    release_binaries_with_features(package, &[], binaries)
}

/// [`release_binaries`] with cargo `features` of `package` enabled.
pub fn release_binaries_with_features<const N: usize>(
    package: &str,
    features: &[&str],
    binaries: [&str; N],
) -> Result<[PathBuf; N]> {
    let mut cmd = Cmd::cargo().args(["build", "--release", "-p", package]);
    if !features.is_empty() {
        cmd = cmd.args(["--features", &features.join(",")]);
    }
    built_binaries(cmd, binaries)
}

/// Builds `binaries` of the package whose manifest is `manifest` (one outside the workspace,
/// such as `benches/openraft`) in release and returns their executables, in the order given.
pub fn release_binaries_of_manifest<const N: usize>(
    manifest: &Path,
    binaries: [&str; N],
) -> Result<[PathBuf; N]> {
    let cmd = Cmd::cargo().args(["build", "--release", "--manifest-path"]).arg(manifest);
    built_binaries(cmd, binaries)
}

/// Runs the build `cmd` for `binaries` and returns their executables as cargo reports them.
fn built_binaries<const N: usize>(mut cmd: Cmd, binaries: [&str; N]) -> Result<[PathBuf; N]> {
    for binary in binaries {
        cmd = cmd.args(["--bin", binary]);
    }
    let cmd = cmd.arg("--message-format=json-render-diagnostics");
    let mut built = BTreeMap::new();
    cmd.read_lines(|line| {
        if let Some((name, path)) = built_binary(line)? {
            built.insert(name, path);
        }
        Ok(())
    })
    .with_context(|| format!("building {} (release)", binaries.join(", ")))?;
    let missing: Vec<&str> = binaries.into_iter().filter(|&binary| !built.contains_key(binary)).collect();
    if !missing.is_empty() {
        bail!("`{}` succeeded but reported no executable for {}", cmd.display(), missing.join(", "));
    }
    Ok(binaries.map(|binary| built[binary].clone()))
}

/// The shipped replica server: `cargo build --release -p rsl-kv --bin rsl-kv-server`, in an
/// invocation of its own so that no test-support package's features reach it.
pub fn shipped_server() -> Result<PathBuf> {
    let [server] = release_binaries("rsl-kv", ["rsl-kv-server"])?;
    Ok(server)
}

/// The name and executable of the binary in a cargo `compiler-artifact` message, if `line`
/// is one for a binary.
fn built_binary(line: &str) -> Result<Option<(String, PathBuf)>> {
    if !line.starts_with('{') {
        return Ok(None);
    }
    let message: serde_json::Value = serde_json::from_str(line)
        .with_context(|| format!("cargo printed a malformed JSON message: {line}"))?;
    let is_binary = message["reason"] == "compiler-artifact"
        && message["target"]["kind"].as_array().is_some_and(|kinds| kinds.iter().any(|kind| kind == "bin"));
    let name = message["target"]["name"].as_str();
    let executable = message["executable"].as_str();
    Ok(name.zip(executable).filter(|_| is_binary).map(|(name, path)| (name.to_string(), PathBuf::from(path))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_binaries_in_cargo_messages() {
        let artifact = r#"{"reason":"compiler-artifact","target":{"name":"rsl-sim","kind":["bin"]},"executable":"/t/release/rsl-sim"}"#;
        assert_eq!(
            built_binary(artifact).unwrap(),
            Some(("rsl-sim".to_string(), PathBuf::from("/t/release/rsl-sim")))
        );
        let library =
            r#"{"reason":"compiler-artifact","target":{"name":"rsl_sim","kind":["lib"]},"executable":null}"#;
        assert_eq!(built_binary(library).unwrap(), None);
        let finished = r#"{"reason":"build-finished","success":true}"#;
        assert_eq!(built_binary(finished).unwrap(), None);
        assert_eq!(built_binary("not json").unwrap(), None);
        assert!(built_binary("{not json").is_err());
    }
}
