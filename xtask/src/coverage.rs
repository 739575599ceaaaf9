//! `cargo xtask coverage`: line and region coverage of the library code (crates/*/src),
//! per crate, measured with cargo-llvm-cov over the tests, and floors that fail the run.
//!
//! cargo-llvm-cov is installed with `cargo install cargo-llvm-cov --locked` when missing,
//! and the `llvm-tools-preview` rustup component it needs with `rustup component add`.
//! Only files under `crates/<name>/src/` count: the tests, benches, xtask and fuzz targets
//! are what measures, not what is measured. The process-level tests start the shipped
//! `rsl-kv-server` built on its own (not instrumented), so what only those processes run
//! counts as uncovered here; the in-process tests cover the same code paths for the most part.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::build;
use crate::ci::SERVER_ENV;
use crate::process::{workspace_root, Cmd};

#[derive(Debug, Clone, Default, Args)]
pub struct CoverageArgs {
    /// Measure only these packages' tests (repeatable) [default: the whole workspace]
    #[arg(short = 'p', long = "package", value_name = "NAME")]
    pub packages: Vec<String>,
    /// Fail unless CRATE's line coverage is at least PCT percent (repeatable);
    /// `workspace=PCT` is the floor for all measured crates together
    #[arg(long = "floor", value_name = "CRATE=PCT", value_parser = parse_floor)]
    pub floors: Vec<Floor>,
    /// Also write the per-crate figures as JSON to FILE
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// A coverage floor: a crate (or `workspace`) and the least line coverage it must have.
#[derive(Debug, Clone, PartialEq)]
pub struct Floor {
    pub name: String,
    pub percent: f64,
}

fn parse_floor(text: &str) -> Result<Floor, String> {
    let (name, percent) =
        text.split_once('=').ok_or_else(|| format!("`{text}`: expected CRATE=PCT, e.g. rsl-core=95"))?;
    let percent: f64 =
        percent.trim().parse().map_err(|_| format!("`{percent}` in `{text}` is not a number"))?;
    if !(0.0..=100.0).contains(&percent) || name.trim().is_empty() {
        return Err(format!("`{text}`: a crate name and a percentage in 0..=100 expected"));
    }
    Ok(Floor { name: name.trim().to_owned(), percent })
}

/// Covered and total counts of one kind (lines or regions).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub covered: u64,
    pub total: u64,
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.covered += other.covered;
        self.total += other.total;
    }

    /// Percent covered; 100 when there is nothing to cover.
    pub fn percent(self) -> f64 {
        if self.total == 0 {
            100.0
        } else {
            self.covered as f64 * 100.0 / self.total as f64
        }
    }
}

/// One crate's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CrateCoverage {
    pub lines: Counts,
    pub regions: Counts,
    pub files: u64,
}

pub fn run(args: &CoverageArgs) -> Result<()> {
    install_tools()?;
    let root = workspace_root();
    let summary = summary_path(&root)?;
    // A summary left by an earlier run must not pass for this one's.
    let _ = std::fs::remove_file(&summary);
    let report = ["--json", "--summary-only", "--output-path"];
    let mut command = Cmd::cargo().arg("llvm-cov").args(report).arg(&summary);
    // Only the process-level tests (rsl-tests) start the server.
    if args.packages.is_empty() || args.packages.iter().any(|package| package == "rsl-tests") {
        command = command.env(SERVER_ENV, build::shipped_server()?);
    }
    let mut selection: Vec<&str> = Vec::new();
    if args.packages.is_empty() {
        selection.push("--workspace");
    } else {
        for package in &args.packages {
            selection.extend(["-p", package.as_str()]);
        }
    }
    // Every test runs even when one fails, and the figures are reported either way (a
    // failed run writes no report: it is made from the profiles the tests left); a
    // failure still fails the run, after the table.
    let tests = command
        .args(&selection)
        .args(["--all-targets", "--no-fail-fast"])
        .run()
        .context("the tests under cargo-llvm-cov");
    if tests.is_err() && !summary.is_file() {
        Cmd::cargo()
            .args(["llvm-cov", "report"])
            .args(report)
            .arg(&summary)
            .args(&selection)
            .run()
            .context("the report of the profiles the tests left")?;
    }
    let text = std::fs::read_to_string(&summary).with_context(|| format!("reading {}", summary.display()))?;
    let export: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", summary.display()))?;
    let crates = per_crate(&export, &root)?;
    if crates.is_empty() {
        bail!("{}: no file under crates/*/src was measured", summary.display());
    }
    print!("{}", table(&crates));
    if let Some(path) = &args.json {
        std::fs::write(path, to_json(&crates)).with_context(|| format!("writing {}", path.display()))?;
    }
    check_floors(&crates, &args.floors)?;
    tests
}

/// Where the report goes: cargo's target directory (`CARGO_TARGET_DIR`, relative to the
/// workspace, or `target`), created when it does not exist yet.
fn summary_path(root: &Path) -> Result<PathBuf> {
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |dir| root.join(dir));
    std::fs::create_dir_all(&target).with_context(|| format!("creating {}", target.display()))?;
    Ok(target.join("llvm-cov-summary.json"))
}

/// cargo-llvm-cov and the LLVM tools it drives, each installed when missing.
fn install_tools() -> Result<()> {
    if !Cmd::cargo().args(["llvm-cov", "--version"]).succeeds() {
        eprintln!("coverage: cargo-llvm-cov is not installed; installing it");
        Cmd::cargo()
            .args(["install", "cargo-llvm-cov", "--locked"])
            .env_remove("CARGO_TARGET_DIR")
            .run()
            .context("installing cargo-llvm-cov (needs crates.io)")?;
    }
    let components = Cmd::new("rustup").args(["component", "list", "--installed"]).read().unwrap_or_default();
    if !components.lines().any(|line| line.starts_with("llvm-tools")) {
        eprintln!("coverage: the llvm-tools-preview component is missing; adding it");
        Cmd::new("rustup")
            .args(["component", "add", "llvm-tools-preview"])
            .run()
            .context("adding the llvm-tools-preview rustup component (cargo-llvm-cov needs llvm-cov)")?;
    }
    Ok(())
}

/// The crate a measured file belongs to: `crates/<name>/src/...` under `root`; other files
/// (tests, benches, xtask, dependencies) belong to none.
fn crate_of(file: &str, root: &Path) -> Option<String> {
    let relative = Path::new(file).strip_prefix(root).ok()?;
    let mut parts = relative.components().map(|part| part.as_os_str().to_str());
    match (parts.next()?, parts.next()?, parts.next()?) {
        (Some("crates"), Some(name), Some("src")) => Some(name.to_owned()),
        _ => None,
    }
}

fn counts(summary: &serde_json::Value, kind: &str, file: &str) -> Result<Counts> {
    let field = |name: &str| {
        summary[kind][name].as_u64().with_context(|| format!("{file}: summary.{kind}.{name} is not a count"))
    };
    Ok(Counts { covered: field("covered")?, total: field("count")? })
}

/// Sums llvm-cov's per-file summaries (`data[0].files[].summary`) by crate.
fn per_crate(export: &serde_json::Value, root: &Path) -> Result<BTreeMap<String, CrateCoverage>> {
    let files = export["data"][0]["files"].as_array().context("the summary has no data[0].files")?;
    let mut crates: BTreeMap<String, CrateCoverage> = BTreeMap::new();
    for file in files {
        let name = file["filename"].as_str().context("a file entry without a filename")?;
        let Some(krate) = crate_of(name, root) else { continue };
        let entry = crates.entry(krate).or_default();
        entry.lines.add(counts(&file["summary"], "lines", name)?);
        entry.regions.add(counts(&file["summary"], "regions", name)?);
        entry.files += 1;
    }
    Ok(crates)
}

fn total(crates: &BTreeMap<String, CrateCoverage>) -> CrateCoverage {
    let mut all = CrateCoverage::default();
    for coverage in crates.values() {
        all.lines.add(coverage.lines);
        all.regions.add(coverage.regions);
        all.files += coverage.files;
    }
    all
}

fn table(crates: &BTreeMap<String, CrateCoverage>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:>6} {:>15} {:>8} {:>15} {:>8}",
        "crate", "files", "lines", "%", "regions", "%"
    );
    let row = |out: &mut String, name: &str, c: &CrateCoverage| {
        let _ = writeln!(
            out,
            "{:<16} {:>6} {:>15} {:>7.1}% {:>15} {:>7.1}%",
            name,
            c.files,
            format!("{}/{}", c.lines.covered, c.lines.total),
            c.lines.percent(),
            format!("{}/{}", c.regions.covered, c.regions.total),
            c.regions.percent()
        );
    };
    for (name, coverage) in crates {
        row(&mut out, name, coverage);
    }
    row(&mut out, "workspace", &total(crates));
    out
}

fn to_json(crates: &BTreeMap<String, CrateCoverage>) -> String {
    let entry = |c: &CrateCoverage| {
        serde_json::json!({
            "files": c.files,
            "lines": { "covered": c.lines.covered, "count": c.lines.total, "percent": c.lines.percent() },
            "regions": { "covered": c.regions.covered, "count": c.regions.total, "percent": c.regions.percent() },
        })
    };
    let mut object: serde_json::Map<String, serde_json::Value> =
        crates.iter().map(|(name, c)| (name.clone(), entry(c))).collect();
    object.insert("workspace".into(), entry(&total(crates)));
    serde_json::to_string_pretty(&object).expect("a map of numbers serializes")
}

/// Every floor must be met; a floor on a crate that was not measured is an error too.
fn check_floors(crates: &BTreeMap<String, CrateCoverage>, floors: &[Floor]) -> Result<()> {
    let mut failures = Vec::new();
    for floor in floors {
        let coverage = if floor.name == "workspace" {
            total(crates)
        } else {
            match crates.get(&floor.name) {
                Some(coverage) => *coverage,
                None => {
                    failures.push(format!(
                        "{}: not measured (no file under crates/{}/src)",
                        floor.name, floor.name
                    ));
                    continue;
                }
            }
        };
        let percent = coverage.lines.percent();
        if percent < floor.percent {
            failures.push(format!(
                "{}: {:.1}% of lines covered ({}/{}), below the floor of {}%",
                floor.name, percent, coverage.lines.covered, coverage.lines.total, floor.percent
            ));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        bail!("coverage below its floor:\n  {}", failures.join("\n  "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn export(root: &str) -> serde_json::Value {
        let file = |name: &str, lines: (u64, u64), regions: (u64, u64)| {
            serde_json::json!({
                "filename": format!("{root}/{name}"),
                "summary": {
                    "lines": { "covered": lines.0, "count": lines.1 },
                    "regions": { "covered": regions.0, "count": regions.1 },
                }
            })
        };
        serde_json::json!({ "data": [{ "files": [
            file("crates/rsl-core/src/lib.rs", (90, 100), (45, 50)),
            file("crates/rsl-core/src/replica/mod.rs", (10, 100), (5, 50)),
            file("crates/rsl-log/src/codec.rs", (80, 80), (40, 40)),
            file("crates/rsl-core/tests/contracts.rs", (1, 1000), (1, 1000)),
            file("xtask/src/main.rs", (0, 10), (0, 10)),
        ]}]})
    }

    #[test]
    fn only_library_files_count_and_they_sum_by_crate() {
        let crates = per_crate(&export("/w"), Path::new("/w")).unwrap();
        assert_eq!(crates.keys().collect::<Vec<_>>(), ["rsl-core", "rsl-log"]);
        let core = crates["rsl-core"];
        assert_eq!((core.lines, core.files), (Counts { covered: 100, total: 200 }, 2));
        assert_eq!(core.regions, Counts { covered: 50, total: 100 });
        assert_eq!(total(&crates).lines, Counts { covered: 180, total: 280 });
        let printed = table(&crates);
        assert!(printed.contains("rsl-core") && printed.contains("50.0%"), "{printed}");
        assert!(printed.lines().last().unwrap().starts_with("workspace"), "{printed}");
        let json: serde_json::Value = serde_json::from_str(&to_json(&crates)).unwrap();
        assert_eq!(json["rsl-log"]["lines"]["percent"], 100.0);
    }

    #[test]
    fn floors_fail_by_name_and_number() {
        let crates = per_crate(&export("/w"), Path::new("/w")).unwrap();
        let floor = |text: &str| parse_floor(text).unwrap();
        assert!(check_floors(&crates, &[floor("rsl-log=100"), floor("workspace=64")]).is_ok());
        let error =
            check_floors(&crates, &[floor("rsl-core=51"), floor("rsl-kv=1")]).unwrap_err().to_string();
        assert!(
            error.contains("rsl-core: 50.0% of lines covered (100/200), below the floor of 51%"),
            "{error}"
        );
        assert!(error.contains("rsl-kv: not measured"), "{error}");
    }

    #[test]
    fn bad_floors_and_summaries_are_refused() {
        assert!(parse_floor("rsl-core").unwrap_err().contains("CRATE=PCT"));
        assert!(parse_floor("rsl-core=lots").unwrap_err().contains("not a number"));
        assert!(parse_floor("rsl-core=101").is_err());
        let broken = serde_json::json!({ "data": [{ "files": [{ "filename": "/w/crates/a/src/x.rs", "summary": {} }] }] });
        assert!(per_crate(&broken, Path::new("/w"))
            .unwrap_err()
            .to_string()
            .contains("summary.lines.covered"));
        assert!(per_crate(&serde_json::json!({}), Path::new("/w")).is_err());
    }
}
