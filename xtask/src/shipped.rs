//! The check that no shipped build contains test-only code: in the feature graph of each
//! shipped package, rsl-core's `contracts` (the O(n) invariant checks) and `mutations`
//! (seeded protocol bugs) are off, whatever features of the package are chosen and whatever
//! the target.
//!
//! The graph comes from `cargo tree -p PACKAGE -e normal,features --target all -i rsl-core`.
//! Unlike `cargo metadata`, whose `resolve` unifies features across the whole workspace
//! (every member, dev-dependencies included, so rsl-core would always show rsl-sim's
//! `mutations`), `cargo tree` runs cargo's own feature resolver for exactly the packages,
//! edge kinds and targets asked: with normal edges only it resolves as `cargo build -p
//! PACKAGE` does (dev-dependencies are not built into a binary or library, build
//! dependencies run on the host and are resolved apart), and `--target all` includes
//! platform-specific dependencies whatever host runs the check. The inverted tree names,
//! under each rsl-core feature, the chain of dependents that turned it on.

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::process::Cmd;

/// The packages whose builds ship: the key-value service (its server and CLI binaries and
/// library), the offline tool `rsl-ctl` and the facade library. Every other shipped
/// library is a dependency of these.
pub const PACKAGES: &[&str] = &["rsl-kv", "rsl-ctl", "rsl"];

/// rsl-core features that must never reach a shipped build.
pub const TEST_ONLY_FEATURES: &[&str] = &["contracts", "mutations"];

/// Checks [`PACKAGES`] of the workspace, with their default features and with all of them.
pub fn run() -> Result<()> {
    check(None, PACKAGES)
}

/// Checks `packages` of the workspace at `manifest` (the current workspace when `None`).
pub fn check(manifest: Option<&Path>, packages: &[&str]) -> Result<()> {
    let mut failures = Vec::new();
    for package in packages {
        for all_features in [false, true] {
            let label =
                format!("{package} ({})", if all_features { "all features" } else { "default features" });
            let mut cmd = Cmd::cargo().args(["tree", "-p", package]);
            if let Some(manifest) = manifest {
                cmd = cmd.arg("--manifest-path").arg(manifest);
            }
            if all_features {
                cmd = cmd.arg("--all-features");
            }
            let cmd = cmd.args([
                "-e",
                "normal,features",
                "--target",
                "all",
                "-i",
                "rsl-core",
                "--prefix",
                "depth",
                "--no-dedupe",
            ]);
            let tree =
                cmd.read().with_context(|| format!("listing the rsl-core features {label} enables"))?;
            let found = test_only_features(&tree).with_context(|| format!("reading `{}`", cmd.display()))?;
            if found.is_empty() {
                eprintln!("  {label}: ok, rsl-core without {}", TEST_ONLY_FEATURES.join(" or "));
            }
            for (feature, path) in found {
                eprintln!("  {label}: FAILED, rsl-core feature `{feature}` through {path}");
                failures.push(format!("{label} builds rsl-core with `{feature}` through {path}"));
            }
        }
    }
    if !failures.is_empty() {
        bail!(
            "a shipped build would contain test-only code: {}; make the dependency that enables it a \
             dev-dependency, or build the shipped package in a cargo invocation of its own",
            failures.join("; ")
        );
    }
    Ok(())
}

/// The test-only rsl-core features in an inverted feature tree (`cargo tree -i rsl-core -e
/// features --prefix depth`), each with the chain of packages that enables it, from the
/// package built down to rsl-core.
fn test_only_features(tree: &str) -> Result<Vec<(String, String)>> {
    let nodes: Vec<(usize, &str)> = tree
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let digits = line.len() - line.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            let depth = line[..digits].parse().with_context(|| format!("no depth prefix on `{line}`"))?;
            Ok((depth, line[digits..].trim()))
        })
        .collect::<Result<_>>()?;
    match nodes.first() {
        Some((0, root)) if root.starts_with("rsl-core ") => {}
        _ => bail!("expected the tree to start at rsl-core, found {:?}", nodes.first()),
    }
    let mut found = Vec::new();
    for (index, &(depth, node)) in nodes.iter().enumerate() {
        let Some(feature) = node.strip_prefix("rsl-core feature \"").and_then(|rest| rest.split('"').next())
        else {
            continue;
        };
        if depth != 1 || !TEST_ONLY_FEATURES.contains(&feature) {
            continue;
        }
        // The first chain below the feature: each next node one level deeper, up to a leaf.
        let mut chain = vec![format!("{} feature \"{feature}\"", nodes[0].1)];
        let mut level = depth;
        for &(next_depth, next) in &nodes[index + 1..] {
            if next_depth <= depth {
                break;
            }
            if next_depth == level + 1 {
                level = next_depth;
                if !next.contains(" feature \"") {
                    chain.push(next.trim_end_matches(" (*)").to_string());
                }
            }
        }
        chain.reverse();
        found.push((feature.to_string(), chain.join(" -> ")));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::process::workspace_root;

    #[test]
    fn reads_features_and_the_chain_that_enables_them() {
        let tree = "0rsl-core v0.1.0 (/w/crates/rsl-core)\n\
                    1rsl-core feature \"default\"\n\
                    2rsl v0.1.0 (/w/crates/rsl)\n\
                    3rsl feature \"default\" (command-line)\n\
                    1rsl-core feature \"mutations\"\n\
                    2rsl-sim v0.1.0 (/w/crates/rsl-sim)\n\
                    3rsl-sim feature \"default\"\n\
                    4rsl-kv v0.1.0 (/w/crates/rsl-kv)\n\
                    5rsl-kv feature \"default\" (command-line)\n\
                    2other v0.1.0 (/w/other)\n";
        assert_eq!(
            test_only_features(tree).unwrap(),
            [(
                "mutations".to_string(),
                "rsl-kv v0.1.0 (/w/crates/rsl-kv) -> rsl-sim v0.1.0 (/w/crates/rsl-sim) -> \
                 rsl-core v0.1.0 (/w/crates/rsl-core) feature \"mutations\""
                    .to_string()
            )]
        );
        assert!(test_only_features("rsl-core v0.1.0\n").is_err(), "no depth prefix");
        assert!(test_only_features("0bytes v1.0.0\n").is_err(), "not rsl-core's tree");
    }

    /// A throwaway package outside the workspace whose manifest has `dependencies` (TOML
    /// lines naming `{core}` for the path of rsl-core), with the workspace's lock file so
    /// nothing new is resolved.
    fn probe(name: &str, dependencies: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::Builder::new().prefix("xtask-shipped-").tempdir().unwrap();
        let core = workspace_root().join("crates/rsl-core");
        let dependencies = dependencies.replace("{core}", &core.display().to_string());
        let manifest = dir.path().join("Cargo.toml");
        fs::write(
            &manifest,
            format!(
                "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n\n\
                 {dependencies}\n\n[workspace]\n"
            ),
        )
        .unwrap();
        fs::create_dir(dir.path().join("src")).unwrap();
        fs::write(dir.path().join("src/lib.rs"), "").unwrap();
        fs::copy(workspace_root().join("Cargo.lock"), dir.path().join("Cargo.lock")).unwrap();
        (dir, manifest)
    }

    #[test]
    fn refuses_a_shipped_package_that_enables_mutations() {
        let (dir, manifest) = probe(
            "shipped-probe",
            "[dependencies]\nrsl-core = { path = \"{core}\", features = [\"mutations\"] }",
        );
        let error = format!("{:#}", check(Some(&manifest), &["shipped-probe"]).unwrap_err());
        assert!(error.contains("`mutations`"), "{error}");
        assert!(!error.contains("`contracts`"), "{error}");
        let probe_node = format!("shipped-probe v0.1.0 ({}) -> rsl-core v0.1.0", dir.path().display());
        assert!(error.contains(&probe_node), "the dependency's path is named: {error}");
        assert!(error.contains("shipped-probe (default features)"), "{error}");
        assert!(error.contains("shipped-probe (all features)"), "{error}");
    }

    #[test]
    fn refuses_test_features_behind_a_feature_or_another_platform() {
        // Only with --all-features, and only on Windows: still refused, on any host.
        let (_dir, manifest) = probe(
            "shipped-probe",
            "[features]\nchecked = [\"rsl-core/contracts\"]\n\n\
             [target.'cfg(windows)'.dependencies]\nrsl-core = { path = \"{core}\" }",
        );
        let error = format!("{:#}", check(Some(&manifest), &["shipped-probe"]).unwrap_err());
        assert!(error.contains("shipped-probe (all features) builds rsl-core with `contracts`"), "{error}");
        assert!(!error.contains("(default features) builds"), "{error}");
    }

    #[test]
    fn accepts_test_features_on_dev_dependencies_only() {
        let (_dir, manifest) = probe(
            "shipped-probe",
            "[dependencies]\nrsl-core = { path = \"{core}\" }\n\n\
             [dev-dependencies]\nrsl-core = { path = \"{core}\", features = [\"contracts\", \"mutations\"] }",
        );
        check(Some(&manifest), &["shipped-probe"]).unwrap();
    }

    #[test]
    fn the_shipped_packages_of_this_workspace_have_no_test_features() {
        run().unwrap();
    }
}
