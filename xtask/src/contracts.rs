//! `cargo xtask contracts`: dependency hygiene of rsl-core, the check that no shipped build
//! contains test-only code, a census of both tiers of checks, and the test suites and
//! simulator runs with contracts compiled in.
//!
//! The tiers (see `rsl_core::contracts`): tier 1 is the always-on `safety!(Rule, ...)`
//! sites, in release too, one or more per rule; tier 2 is `precondition!`,
//! `postcondition!` and `invariant!`, compiled in only with rsl-core's `contracts` feature.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::process::{workspace_root, Cmd};
use crate::scan;
use crate::shipped;
use crate::sim::{self, SimArgs};

/// Crates rsl-core must never depend on: it is sans-IO, so no async runtime, no OS
/// bindings and no OS entropy source. Any crate whose name contains "async" is banned too.
pub const BANNED_CRATES: &[&str] =
    &["tokio", "tonic", "libc", "mio", "getrandom", "rand", "rand_core", "socket2", "nix"];

const CONTRACT_MACROS: &[&str] = &["precondition", "postcondition", "invariant"];
/// The tier-1 macro: `safety!(Rule, cond, ...)`.
const SAFETY_MACRO: &str = "safety";
const ASSERT_MACROS: &[&str] = &["assert", "assert_eq", "assert_ne"];
/// Where the tier-1 rules are declared (`pub enum Rule { ... }`).
const RULES_FILE: &str = "crates/rsl-core/src/contracts.rs";

/// Seeds the simulator runs with contracts on.
const SIM_SEEDS: u64 = 200;

pub fn run() -> Result<()> {
    eprintln!("contracts: [1/4] dependency hygiene of rsl-core");
    check_core_dependencies()?;
    eprintln!();
    eprintln!(
        "contracts: [2/4] no shipped build has rsl-core's {}: the feature graphs of {}",
        shipped::TEST_ONLY_FEATURES.join(" or "),
        shipped::PACKAGES.join(", ")
    );
    shipped::run()?;
    eprintln!();
    eprintln!("contracts: [3/4] checks per module, both tiers");
    let root = workspace_root();
    let census = census(&root)?;
    print!("{}", census.render());
    check_every_rule_is_checked(&census, &rules(&root)?)?;
    eprintln!();
    eprintln!("contracts: [4/4] tests and simulator runs with contracts compiled in");
    // rsl-core's dev-dependency on itself turns `contracts` on for its tests.
    Cmd::cargo().args(["test", "-p", "rsl-core"]).run()?;
    Cmd::cargo().args(["test", "-p", "rsl-sim"]).run()?;
    check_sim_enables_contracts()?;
    sim::run(&SimArgs { seeds: Some(SIM_SEEDS), ..SimArgs::default() })
        .with_context(|| format!("the simulator with contracts on ({SIM_SEEDS} seeds)"))?;
    eprintln!("contracts: ok");
    Ok(())
}

fn check_core_dependencies() -> Result<()> {
    eprintln!("  banned: {}, and any crate whose name contains \"async\"", BANNED_CRATES.join(", "));
    let mut failures = Vec::new();
    for features in [None, Some("contracts,mutations")] {
        // Every target, so a platform-specific dependency (`[target.'cfg(unix)'.dependencies]`)
        // cannot slip through on the host that happens to run the check.
        let mut cmd = Cmd::cargo()
            .args(["tree", "-p", "rsl-core", "-e", "normal", "--prefix", "none", "--target", "all"]);
        if let Some(features) = features {
            cmd = cmd.args(["--features", features]);
        }
        let tree = cmd.read().context("listing the dependencies of rsl-core")?;
        let crates = crate_names(&tree);
        let banned = banned_crates(&crates);
        let label = features.map_or("default features".to_string(), |f| format!("features {f}"));
        let others: Vec<&str> =
            crates.iter().map(String::as_str).filter(|&name| name != "rsl-core").collect();
        if banned.is_empty() {
            eprintln!("  {label}: ok, {} dependencies: {}", others.len(), others.join(", "));
        } else {
            eprintln!("  {label}: FAILED, banned: {}", banned.join(", "));
            failures.push(format!("{label}: {}", banned.join(", ")));
        }
    }
    if !failures.is_empty() {
        bail!(
            "rsl-core depends on banned crates ({}); run `cargo tree -p rsl-core -i <crate>` to see why",
            failures.join("; ")
        );
    }
    Ok(())
}

/// Crate names in `cargo tree --prefix none` output: the first word of each line.
fn crate_names(tree: &str) -> BTreeSet<String> {
    tree.lines().filter_map(|line| line.split_whitespace().next()).map(str::to_string).collect()
}

fn banned_crates(crates: &BTreeSet<String>) -> Vec<String> {
    crates
        .iter()
        .filter(|name| BANNED_CRATES.contains(&name.as_str()) || name.contains("async"))
        .cloned()
        .collect()
}

/// The simulator's whole point is to run with contracts on; check the feature reaches
/// rsl-core when rsl-sim is built on its own (as `cargo run -p rsl-sim` does).
fn check_sim_enables_contracts() -> Result<()> {
    let tree = Cmd::cargo()
        .args([
            "tree", "-p", "rsl-sim", "-e", "features", "-i", "rsl-core", "--depth", "1", "--prefix", "none",
        ])
        .read()
        .context("listing the rsl-core features rsl-sim enables")?;
    if !tree.lines().any(|line| line.trim() == "rsl-core feature \"contracts\"") {
        bail!("rsl-sim does not build rsl-core with the `contracts` feature; the simulator would run without contracts");
    }
    eprintln!("  rsl-sim builds rsl-core with `contracts`: yes");
    Ok(())
}

/// The rules declared by `pub enum Rule { ... }` in rsl-core's contracts module.
fn rules(root: &Path) -> Result<Vec<String>> {
    let path = root.join(RULES_FILE);
    let source = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    enum_variants(&scan::code_only(&source), "Rule")
        .with_context(|| format!("{} declares no `pub enum Rule {{ ... }}`", path.display()))
}

/// The variants of the field-less `enum name { A, B, ... }` in `code` (comments blanked).
fn enum_variants(code: &[u8], name: &str) -> Option<Vec<String>> {
    let text = String::from_utf8_lossy(code);
    let header = format!("enum {name} {{");
    let start = text.find(&header)? + header.len();
    let body = &text[start..start + text[start..].find('}')?];
    Some(body.split(',').map(str::trim).filter(|word| !word.is_empty()).map(str::to_string).collect())
}

/// Every rule must have an always-on check, and every check must name a rule.
fn check_every_rule_is_checked(census: &Census, rules: &[String]) -> Result<()> {
    let counts = census.rules();
    let unchecked: Vec<&str> =
        rules.iter().filter(|rule| !counts.contains_key(rule.as_str())).map(String::as_str).collect();
    let unknown: Vec<&str> = counts.keys().filter(|rule| !rules.contains(rule)).map(String::as_str).collect();
    if !unchecked.is_empty() || !unknown.is_empty() {
        bail!(
            "tier 1 is incomplete: rules with no safety! site: [{}]; safety! sites naming no rule of {RULES_FILE}: [{}]",
            unchecked.join(", "),
            unknown.join(", ")
        );
    }
    eprintln!("  every one of the {} safety rules has an always-on check", rules.len());
    Ok(())
}

/// Check sites in one source file.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sites {
    pub precondition: u32,
    pub postcondition: u32,
    pub invariant: u32,
    /// Tier 1: `safety!` sites, by the rule each names.
    pub safety: BTreeMap<String, u32>,
    pub assert: u32,
    pub assert_eq: u32,
    pub assert_ne: u32,
}

impl Sites {
    fn contracts(&self) -> u32 {
        self.precondition + self.postcondition + self.invariant
    }

    fn asserts(&self) -> u32 {
        self.assert + self.assert_eq + self.assert_ne
    }

    fn safety(&self) -> u32 {
        self.safety.values().sum()
    }

    fn add(&mut self, other: &Sites) {
        self.precondition += other.precondition;
        self.postcondition += other.postcondition;
        self.invariant += other.invariant;
        for (rule, count) in &other.safety {
            *self.safety.entry(rule.clone()).or_default() += count;
        }
        self.assert += other.assert;
        self.assert_eq += other.assert_eq;
        self.assert_ne += other.assert_ne;
    }
}

#[derive(Debug, Default)]
pub struct Census {
    /// Per file, by path relative to the workspace root.
    pub files: Vec<(String, Sites)>,
}

impl Census {
    /// Tier-1 sites by rule, over every file.
    pub fn rules(&self) -> BTreeMap<String, u32> {
        let mut total = Sites::default();
        for (_, sites) in &self.files {
            total.add(sites);
        }
        total.safety
    }

    pub fn render(&self) -> String {
        let width = self.files.iter().map(|(path, _)| path.len()).max().unwrap_or(0).max("module".len());
        let mut out = format!(
            "{:<width$}  {:>5} {:>5} {:>5} {:>6}   {:>6} {:>6}\n",
            "", "tier 2", "", "", "", "tier 1", "",
        );
        out += &format!(
            "{:<width$}  {:>5} {:>5} {:>5} {:>6}   {:>6} {:>6}\n",
            "module", "pre", "post", "inv", "total", "safety", "assert"
        );
        let mut total = Sites::default();
        let mut silent = 0;
        for (path, sites) in &self.files {
            total.add(sites);
            if sites.contracts() == 0 && sites.safety() == 0 && sites.asserts() == 0 {
                silent += 1;
                continue;
            }
            out += &row(path, sites, width);
        }
        out += &row("total", &total, width);
        out += &format!(
            "{} files scanned ({silent} with no check); tier 2 (pre/post/inv) runs only with rsl-core's \
             `contracts` feature; tier 1 runs in every build: `safety` counts safety!(Rule, ..) sites, \
             `assert` the plain assert!/assert_eq!/assert_ne! outside #[cfg(test)] code\n",
            self.files.len()
        );
        let rules: Vec<String> = total.safety.iter().map(|(rule, count)| format!("{rule} {count}")).collect();
        out += &format!("tier 1 safety! sites by rule: {}\n", rules.join(", "));
        out
    }
}

fn row(name: &str, sites: &Sites, width: usize) -> String {
    format!(
        "{name:<width$}  {:>5} {:>5} {:>5} {:>6}   {:>6} {:>6}\n",
        sites.precondition,
        sites.postcondition,
        sites.invariant,
        sites.contracts(),
        sites.safety(),
        sites.asserts()
    )
}

/// Counts contract and assert sites in `crates/*/src/**/*.rs` under `root`. Files named
/// `contracts.rs` define the macros and are skipped, as are `#[cfg(test)]` items and the
/// files of `#[cfg(test)] mod name;` modules.
pub fn census(root: &Path) -> Result<Census> {
    let crates_dir = root.join("crates");
    let mut files = Vec::new();
    for entry in fs::read_dir(&crates_dir).with_context(|| format!("reading {}", crates_dir.display()))? {
        let src = entry.with_context(|| format!("reading {}", crates_dir.display()))?.path().join("src");
        if src.is_dir() {
            collect_rust_files(&src, &mut files)?;
        }
    }
    files.sort();

    let mut sources = Vec::new();
    let mut test_paths: Vec<PathBuf> = Vec::new();
    for path in files {
        let source = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let code = scan::code_only(&source);
        let (test_ranges, test_modules) = scan::test_items(&code);
        let children = child_module_dir(&path);
        for name in test_modules {
            test_paths.push(children.join(format!("{name}.rs")));
            test_paths.push(children.join(&name));
        }
        sources.push((path, code, test_ranges));
    }

    let mut census = Census::default();
    for (path, code, test_ranges) in sources {
        let is_definitions = path.file_name().is_some_and(|name| name == "contracts.rs");
        let is_test_module = test_paths.iter().any(|test_path| path.starts_with(test_path));
        if is_definitions || is_test_module {
            continue;
        }
        let names: Vec<&str> = CONTRACT_MACROS.iter().chain(ASSERT_MACROS).copied().collect();
        let counts = scan::count_macros(&code, &names, &test_ranges);
        let mut safety = BTreeMap::new();
        for rule in scan::first_words(&code, SAFETY_MACRO, &test_ranges) {
            *safety.entry(rule).or_default() += 1;
        }
        let sites = Sites {
            precondition: counts["precondition"],
            postcondition: counts["postcondition"],
            invariant: counts["invariant"],
            safety,
            assert: counts["assert"],
            assert_eq: counts["assert_eq"],
            assert_ne: counts["assert_ne"],
        };
        let relative = path.strip_prefix(root).unwrap_or(&path);
        let display =
            relative.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
        census.files.push((display, sites));
    }
    Ok(census)
}

/// Where the files of `mod name;` declared in `file` live: beside it for `lib.rs`, `main.rs`
/// and `mod.rs`, in a directory named after it otherwise.
fn child_module_dir(file: &Path) -> PathBuf {
    let parent = file.parent().unwrap_or(Path::new(""));
    let stem = file.file_stem().unwrap_or_default();
    if ["lib", "main", "mod"].iter().any(|root| stem == *root) {
        parent.to_path_buf()
    } else {
        parent.join(stem)
    }
}

fn collect_rust_files(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry.with_context(|| format!("reading {}", dir.display()))?.path();
        if path.is_dir() {
            collect_rust_files(&path, files)?;
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_crate_names_from_cargo_tree() {
        let tree =
            "rsl-core v0.1.0 (/w/crates/rsl-core)\nbytes v1.12.2\nthiserror-impl v2.0.21 (proc-macro)\n\
                    proc-macro2 v1.0.107 (*)\n";
        let names: Vec<String> = crate_names(tree).into_iter().collect();
        assert_eq!(names, ["bytes", "proc-macro2", "rsl-core", "thiserror-impl"]);
    }

    #[test]
    fn bans_listed_crates_and_async_names_only() {
        let crates: BTreeSet<String> =
            ["bytes", "tokio", "async-trait", "futures-async-stream", "rand_core", "randomize", "libc"]
                .into_iter()
                .map(str::to_string)
                .collect();
        assert_eq!(
            banned_crates(&crates),
            ["async-trait", "futures-async-stream", "libc", "rand_core", "tokio"]
        );
    }

    #[test]
    fn census_of_a_small_tree() {
        let root = std::env::temp_dir().join(format!("xtask-census-{}", std::process::id()));
        let src = root.join("crates/demo/src");
        fs::create_dir_all(src.join("tests")).unwrap();
        fs::write(
            src.join("lib.rs"),
            "mod a;\n#[cfg(test)]\nmod tests;\nfn f() { precondition!(true); assert!(true); }\n\
             fn g() { safety!(TruncateOnlyChosen, true, \"x\"); safety!(\n    TruncateOnlyChosen, true, \"y\"); }\n",
        )
        .unwrap();
        fs::write(src.join("a.rs"), "fn g() { invariant!(true); postcondition!(true); invariant!(true); }\n")
            .unwrap();
        fs::write(src.join("contracts.rs"), "macro_rules! invariant { ($c:expr) => { assert!($c) }; }\n")
            .unwrap();
        fs::write(src.join("tests/mod.rs"), "fn t() { assert!(false); invariant!(true); }\n").unwrap();
        fs::write(src.join("tests.rs"), "fn t() { assert!(false); }\n").unwrap();

        let census = census(&root).unwrap();
        fs::remove_dir_all(&root).unwrap();
        let files: Vec<(&str, u32, u32)> =
            census.files.iter().map(|(path, s)| (path.as_str(), s.contracts(), s.asserts())).collect();
        assert_eq!(files, [("crates/demo/src/a.rs", 3, 0), ("crates/demo/src/lib.rs", 1, 1)]);
        assert_eq!(census.rules(), BTreeMap::from([("TruncateOnlyChosen".to_string(), 2)]));
        let table = census.render();
        assert!(table.contains("total"), "{table}");
        assert!(table.contains("tier 1 safety! sites by rule: TruncateOnlyChosen 2"), "{table}");

        let rules = |names: &[&str]| names.iter().map(|name| name.to_string()).collect::<Vec<_>>();
        check_every_rule_is_checked(&census, &rules(&["TruncateOnlyChosen"])).unwrap();
        let error =
            check_every_rule_is_checked(&census, &rules(&["TruncateOnlyChosen", "ChosenValueImmutable"]))
                .unwrap_err()
                .to_string();
        assert!(error.contains("no safety! site: [ChosenValueImmutable]"), "{error}");
        let error =
            check_every_rule_is_checked(&census, &rules(&["ChosenValueImmutable"])).unwrap_err().to_string();
        assert!(
            error.contains("naming no rule of crates/rsl-core/src/contracts.rs: [TruncateOnlyChosen]"),
            "{error}"
        );
    }

    #[test]
    fn reads_the_variants_of_an_enum() {
        let code = scan::code_only(
            "/// Rules.\npub enum Rule {\n    /// One.\n    A,\n    /// Two, with a comma.\n    B,\n}\n",
        );
        assert_eq!(enum_variants(&code, "Rule").unwrap(), ["A", "B"]);
        assert_eq!(enum_variants(&code, "Other"), None);
    }

    #[test]
    fn census_of_this_workspace_runs_and_checks_every_rule() {
        // The real tree must scan without error; its numbers change as the code grows.
        let root = workspace_root();
        let census = census(&root).unwrap();
        assert!(census.files.iter().any(|(path, _)| path.starts_with("crates/rsl-core/src/")));
        let rules = rules(&root).unwrap();
        assert!(rules.len() >= 5, "{rules:?}");
        check_every_rule_is_checked(&census, &rules).unwrap();
    }
}
