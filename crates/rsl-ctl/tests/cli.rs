//! `rsl-ctl`'s command line: bad arguments are refused with exit code 2 naming the
//! argument, paths that hold no log are refused with exit code 1 naming the path, and an
//! empty data directory is described as such.

use std::process::{Command, Output};

fn ctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rsl-ctl")).args(args).output().expect("run rsl-ctl")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn usage_error(output: &Output, word: &str) {
    assert_eq!(output.status.code(), Some(2), "{}", stderr(output));
    assert!(stderr(output).contains(word), "{word:?} not in {}", stderr(output));
}

fn failure(output: &Output, word: &str) {
    assert_eq!(output.status.code(), Some(1), "{}", stderr(output));
    assert!(stderr(output).contains(word), "{word:?} not in {}", stderr(output));
}

#[test]
fn without_a_command_it_prints_usage() {
    usage_error(&ctl(&[]), "Usage");
}

#[test]
fn help_lists_every_command() {
    let output = ctl(&["--help"]);
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    for command in ["inspect", "verify", "dump", "replay", "repair"] {
        assert!(text.contains(command), "{command}: {text}");
    }
}

#[test]
fn repair_needs_a_mode() {
    usage_error(&ctl(&["repair", "/tmp"]), "--truncate-torn-tail");
}

#[test]
fn repair_takes_one_mode_only() {
    usage_error(&ctl(&["repair", "/tmp", "--truncate-torn-tail", "--salvage-prefix"]), "cannot be used with");
}

#[test]
fn replay_needs_a_machine() {
    usage_error(&ctl(&["replay", "/tmp"]), "--machine");
}

#[test]
fn replay_refuses_an_unknown_machine_listing_the_known_ones() {
    usage_error(&ctl(&["replay", "/tmp", "--machine", "sql"]), "possible values");
}

#[test]
fn dump_refuses_a_slot_that_is_not_a_number() {
    usage_error(&ctl(&["dump", "/tmp", "--from", "first"]), "--from");
}

#[test]
fn inspect_needs_a_path() {
    usage_error(&ctl(&["inspect"]), "<PATH>");
}

#[test]
fn inspect_of_a_missing_path_fails_naming_it() {
    failure(&ctl(&["inspect", "/nonexistent/data"]), "/nonexistent/data");
}

#[test]
fn verify_of_a_missing_path_fails_naming_it() {
    failure(&ctl(&["verify", "/nonexistent/data"]), "/nonexistent/data");
}

#[test]
fn dump_of_a_missing_path_fails_naming_it() {
    failure(&ctl(&["dump", "/nonexistent/data"]), "/nonexistent/data");
}

#[test]
fn replay_of_a_missing_path_fails_naming_it() {
    failure(&ctl(&["replay", "/nonexistent/data", "--machine", "kv"]), "/nonexistent/data");
}

#[test]
fn repair_of_a_missing_path_fails_naming_it() {
    failure(&ctl(&["repair", "/nonexistent/data", "--truncate-torn-tail", "--dry-run"]), "/nonexistent/data");
}

#[test]
fn a_file_that_is_no_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, b"hello").unwrap();
    let output = ctl(&["verify", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
}
