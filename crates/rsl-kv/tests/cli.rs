//! The shipped binaries' command lines: `rsl-kv` and `rsl-kv-server` refuse bad arguments
//! and bad configurations with exit code 2 and a message naming what is wrong, and the
//! commands that need no server (`hash-token`, `snapshot verify`) print what they promise.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

fn kv(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rsl-kv"))
        .args(args)
        .env_remove("RSL_KV_TOKEN")
        .output()
        .expect("run rsl-kv")
}

fn server(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rsl-kv-server")).args(args).output().expect("run rsl-kv-server")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Asserts a usage error (exit code 2) whose message contains every one of `words`.
fn usage_error(output: &Output, words: &[&str]) {
    assert_eq!(output.status.code(), Some(2), "stderr: {}", stderr(output));
    let message = stderr(output);
    for word in words {
        assert!(message.contains(word), "{word:?} not in: {message}");
    }
}

// ---- rsl-kv ----

#[test]
fn rsl_kv_without_a_command_prints_usage() {
    usage_error(&kv(&[]), &["Usage"]);
}

#[test]
fn rsl_kv_help_lists_its_commands() {
    let output = kv(&["--help"]);
    assert!(output.status.success());
    let text = stdout(&output);
    for command in
        ["put", "get", "delete", "cas", "status", "members", "reconfigure", "snapshot", "hash-token"]
    {
        assert!(text.contains(command), "{command} missing from: {text}");
    }
}

#[test]
fn rsl_kv_version_prints_the_package_version() {
    let output = kv(&["--version"]);
    assert!(output.status.success());
    assert!(stdout(&output).contains(env!("CARGO_PKG_VERSION")), "{}", stdout(&output));
}

#[test]
fn an_unknown_command_is_refused() {
    usage_error(&kv(&["frobnicate"]), &["frobnicate"]);
}

#[test]
fn get_needs_a_key() {
    usage_error(&kv(&["get"]), &["<KEY>"]);
}

#[test]
fn put_needs_a_value() {
    usage_error(&kv(&["put", "k"]), &["<VALUE>"]);
}

#[test]
fn cas_needs_an_expectation() {
    usage_error(&kv(&["cas", "k", "new"]), &["--expected"]);
}

#[test]
fn cas_refuses_both_an_expected_value_and_absence() {
    usage_error(&kv(&["cas", "k", "new", "--expected", "old", "--absent"]), &["--absent"]);
}

#[test]
fn a_minimum_slot_needs_a_fast_read() {
    usage_error(&kv(&["get", "k", "--min-slot", "3"]), &["--fast"]);
}

#[test]
fn a_client_key_needs_a_client_certificate() {
    usage_error(&kv(&["--key", "k.pem", "get", "k"]), &["--cert"]);
}

#[test]
fn a_server_name_needs_a_ca() {
    usage_error(&kv(&["--server-name", "x", "get", "k"]), &["--cacert"]);
}

#[test]
fn a_token_and_a_token_file_conflict() {
    usage_error(&kv(&["--token", "t", "--token-file", "f", "get", "k"]), &["--token"]);
}

#[test]
fn reconfigure_needs_members() {
    usage_error(&kv(&["reconfigure"]), &["ID"]);
}

#[test]
fn reconfigure_refuses_a_member_that_is_not_a_number() {
    usage_error(&kv(&["reconfigure", "1,x,3"]), &["invalid value", "x"]);
}

#[test]
fn a_timeout_that_is_not_a_number_is_refused() {
    usage_error(&kv(&["--timeout-ms", "soon", "get", "k"]), &["--timeout-ms", "soon"]);
}

#[test]
fn promote_needs_a_node() {
    usage_error(&kv(&["promote"]), &["--node"]);
}

#[test]
fn hash_token_prints_the_sha256_of_the_first_line() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rsl-kv"))
        .arg("hash-token")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run rsl-kv");
    child.stdin.take().unwrap().write_all(b"s3cret\nignored\n").unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    assert_eq!(stdout(&output).trim(), rsl_kv::auth::hash_token("s3cret"));
}

#[test]
fn a_token_file_that_does_not_exist_is_refused_naming_it() {
    let output = kv(&["--servers", "127.0.0.1:1", "--token-file", "/nonexistent/token", "get", "k"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains("/nonexistent/token"), "{}", stderr(&output));
}

#[test]
fn snapshot_verify_of_a_missing_file_fails_naming_it() {
    let output = kv(&["snapshot", "verify", "/nonexistent/snapshot"]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("/nonexistent/snapshot"), "{}", stderr(&output));
}

#[test]
fn snapshot_verify_refuses_a_file_that_is_not_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("garbage");
    std::fs::write(&file, b"this is not a snapshot at all").unwrap();
    let output = kv(&["snapshot", "verify", file.to_str().unwrap()]);
    assert!(!output.status.success());
    assert!(stderr(&output).starts_with("rsl-kv: "), "{}", stderr(&output));
}

#[test]
fn snapshot_restore_needs_a_node_and_a_data_dir() {
    usage_error(&kv(&["snapshot", "restore", "file"]), &["required"]);
}

// ---- rsl-kv-server ----

#[test]
fn the_server_without_a_node_refuses_to_start() {
    let output = server(&[]);
    usage_error(&output, &["rsl-kv-server: config key `node`: missing"]);
}

#[test]
fn the_server_refuses_node_zero() {
    usage_error(&server(&["--node", "0", "--members", "1=127.0.0.1:7001"]), &["node ids start at 1"]);
}

#[test]
fn the_server_refuses_a_malformed_member() {
    usage_error(&server(&["--node", "1", "--members", "1=nowhere"]), &["config key `members`", "host:port"]);
}

#[test]
fn the_server_refuses_a_node_outside_the_members() {
    usage_error(
        &server(&["--node", "4", "--members", "1=127.0.0.1:7001", "--log", "memory"]),
        &["this node (4) is not among the members [1]"],
    );
}

#[test]
fn the_server_refuses_an_unknown_log_backend() {
    usage_error(&server(&["--node", "1", "--log", "tape"]), &["tape", "file, pmem or memory"]);
}

#[test]
fn the_server_refuses_an_unknown_place_to_apply() {
    usage_error(&server(&["--node", "1", "--apply-on", "sideways"]), &["--apply-on", "thread or ring-task"]);
}

#[test]
fn the_server_refuses_join_with_bootstrap() {
    usage_error(&server(&["--node", "1", "--join", "--bootstrap"]), &["--bootstrap"]);
}

#[test]
fn the_server_refuses_a_config_file_it_cannot_read() {
    usage_error(
        &server(&["--config", "/nonexistent/kv.toml"]),
        &["cannot read config file /nonexistent/kv.toml"],
    );
}

#[test]
fn the_server_refuses_a_config_file_with_an_unknown_key_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.toml");
    std::fs::write(&path, "node = 1\nmemberz = []\n").unwrap();
    usage_error(&server(&["--config", path.to_str().unwrap()]), &["kv.toml", "memberz"]);
}

#[test]
fn flags_override_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.toml");
    std::fs::write(&path, "node = 1\nmembers = [\"1=127.0.0.1:7001\"]\nlog = \"memory\"\n").unwrap();
    // The file's node 1 would start; the flag's node 5 is not a member.
    usage_error(&server(&["--config", path.to_str().unwrap(), "--node", "5"]), &["this node (5)"]);
}

#[test]
fn the_server_refuses_a_bad_tuning_flag_under_its_key() {
    usage_error(
        &server(&[
            "--node",
            "1",
            "--members",
            "1=127.0.0.1:7001",
            "--client-listen",
            "127.0.0.1:7101",
            "--log",
            "memory",
            "--heartbeat-interval-ms",
            "0",
        ]),
        &["tuning.heartbeat_interval_ms"],
    );
}

#[test]
fn the_server_help_names_its_flags() {
    let output = server(&["--help"]);
    assert!(output.status.success());
    let text = stdout(&output);
    for flag in ["--config", "--node", "--members", "--data-dir", "--log", "--join", "--bootstrap"] {
        assert!(text.contains(flag), "{flag} missing: {text}");
    }
}
