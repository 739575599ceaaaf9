//! `cargo xtask deny`: `cargo deny check bans licenses sources` against `deny.toml`, with
//! cargo-deny installed (`cargo install cargo-deny --locked`) when missing.
//!
//! The advisories check is left out: it fetches the RustSec database over the network,
//! which CI does not have. Run `cargo deny check advisories` by hand before a release.

use anyhow::{Context, Result};

use crate::process::Cmd;

/// The checks CI runs, in the order cargo-deny reports them.
pub const CHECKS: [&str; 3] = ["bans", "licenses", "sources"];

pub fn run() -> Result<()> {
    if !Cmd::cargo().args(["deny", "--version"]).succeeds() {
        eprintln!("deny: cargo-deny is not installed; installing it");
        Cmd::cargo()
            .args(["install", "cargo-deny", "--locked"])
            .env_remove("CARGO_TARGET_DIR")
            .run()
            .context("installing cargo-deny (needs crates.io)")?;
    }
    Cmd::cargo()
        .args(["deny", "check"])
        .args(CHECKS)
        .run()
        .context("the dependency graph breaks a rule of deny.toml (bans, licenses or sources; see above)")
}
