//! `rsl-check-history`: its exit codes and what it prints.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const PUT_1: &str = r#"{"process":1,"type":"invoke","f":"put","key":"x","value":1,"time":100}
{"process":1,"type":"ok","f":"put","key":"x","value":1,"time":200}"#;
const PUT_2: &str = r#"{"process":2,"type":"invoke","f":"put","key":"x","value":2,"time":300}
{"process":2,"type":"ok","f":"put","key":"x","value":2,"time":400}"#;
const GET_1: &str = r#"{"process":3,"type":"invoke","f":"get","key":"x","time":500}
{"process":3,"type":"ok","f":"get","key":"x","value":1,"time":600}"#;
const GET_2: &str = r#"{"process":3,"type":"invoke","f":"get","key":"x","time":500}
{"process":3,"type":"ok","f":"get","key":"x","value":2,"time":600}"#;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(file: &Path, extra: &[&str]) -> Run {
    let output: Output = Command::new(env!("CARGO_BIN_EXE_rsl-check-history"))
        .arg(file)
        .args(extra)
        .output()
        .expect("the binary runs");
    Run {
        code: output.status.code().expect("exited normally"),
        stdout: String::from_utf8(output.stdout).expect("UTF-8"),
        stderr: String::from_utf8(output.stderr).expect("UTF-8"),
    }
}

/// Runs the checker on `file` with `extra` arguments and asserts its exit code.
fn run_exits(file: &Path, extra: &[&str], code: i32) -> Run {
    let run = run(file, extra);
    assert_eq!(run.code, code, "{} {extra:?}: {}{}", file.display(), run.stdout, run.stderr);
    run
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write the history");
    path
}

/// A history file `name` holding `text`, in a directory of its own (removed on drop).
fn history_file(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = write(&dir, name, text);
    (dir, file)
}

#[test]
fn linearizable_history_exits_0() {
    let (_dir, file) = history_file("good.jsonl", &format!("{PUT_1}\n{PUT_2}\n{GET_2}\n"));
    let run = run_exits(&file, &[], 0);
    assert!(run.stdout.contains(": linearizable (6 events, 3 operations on 1 keys"), "{}", run.stdout);

    let json = run_json(&file, 0);
    assert_eq!(json["verdict"], "linearizable");
    assert_eq!(json["stats"]["operations"], 3);
}

#[test]
fn violation_exits_1_with_a_minimal_witness() {
    let (_dir, file) = history_file("stale.jsonl", &format!("{PUT_1}\n{PUT_2}\n{GET_1}\n"));
    let run = run_exits(&file, &[], 1);
    let out = &run.stdout;
    assert!(out.contains("NOT linearizable: key \"x\": no order of these 3 operations is legal"), "{out}");
    assert!(out.contains("1-minimal"), "{out}");
    assert!(out.contains("process 1: put 1 -> ok (invoked at 100 ns, returned at 200 ns)"), "{out}");
    assert!(out.contains("process 3: get -> 1 (invoked at 500 ns, returned at 600 ns)"), "{out}");
    for (number, line) in [PUT_1, PUT_2, GET_1].join("\n").lines().enumerate() {
        assert!(out.contains(&format!("line {}: {line}", number + 1)), "line {}: {out}", number + 1);
    }

    let json = run_json(&file, 1);
    assert_eq!(json["verdict"], "not-linearizable");
    assert_eq!(json["key"], "x");
    assert_eq!(json["minimal"], true);
    let lines: Vec<u64> =
        json["witness"].as_array().unwrap().iter().map(|op| op["invoke_line"].as_u64().unwrap()).collect();
    assert_eq!(lines, [1, 3, 5]);
    assert_eq!(json["witness"][2]["completion_line"], 6);
    assert_eq!(json["witness"][2]["lines"][1], GET_1.lines().nth(1).unwrap());
}

#[test]
fn malformed_file_exits_2_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("bad JSON", "{\"process\":", "malformed JSON"),
        (
            "unknown type",
            r#"{"process":4,"type":"maybe","f":"get","key":"x","time":700}"#,
            "unknown type \"maybe\"",
        ),
        (
            "ok without invoke",
            r#"{"process":4,"type":"ok","f":"get","key":"x","time":700}"#,
            "no outstanding invocation",
        ),
        (
            "cas value",
            r#"{"process":4,"type":"invoke","f":"cas","key":"x","value":[1],"time":700}"#,
            "[expected or null, new]",
        ),
    ];
    for (name, line, expected) in cases {
        let file = write(&dir, "bad.jsonl", &format!("{PUT_1}\n{PUT_2}\n\n{line}\n"));
        let run = run(&file, &[]);
        assert_eq!(run.code, 2, "{name}: {}{}", run.stdout, run.stderr);
        let prefix = format!("{}:6: ", file.display());
        assert!(run.stderr.starts_with(&prefix), "{name}: {}", run.stderr);
        assert!(run.stderr.contains(expected), "{name}: {}", run.stderr);
        let json = run_json(&file, 2);
        assert_eq!(json["verdict"], "malformed");
        assert_eq!(json["line"], 6);
    }
    let run = run(&dir.path().join("missing.jsonl"), &[]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("cannot read"), "{}", run.stderr);
}

#[test]
fn bad_usage_exits_2() {
    let (_dir, file) = history_file("good.jsonl", PUT_1);
    let run = run_exits(&file, &["--timeout", "soon"], 2);
    assert!(run.stderr.contains("--timeout must be a positive number"), "{}", run.stderr);
}

#[test]
fn exhausted_budget_exits_3_and_claims_nothing() {
    // Three concurrent puts and a read: the search needs more than one step.
    let text = r#"{"process":1,"type":"invoke","f":"put","key":"x","value":1,"time":0}
{"process":2,"type":"invoke","f":"put","key":"x","value":2,"time":0}
{"process":3,"type":"invoke","f":"put","key":"x","value":3,"time":0}
{"process":1,"type":"ok","f":"put","key":"x","value":1,"time":10}
{"process":2,"type":"ok","f":"put","key":"x","value":2,"time":10}
{"process":3,"type":"ok","f":"put","key":"x","value":3,"time":10}
{"process":1,"type":"invoke","f":"get","key":"x","time":20}
{"process":1,"type":"ok","f":"get","key":"x","value":2,"time":30}
"#;
    let (_dir, file) = history_file("busy.jsonl", text);
    run_exits(&file, &[], 0);
    let run_steps = run_exits(&file, &["--max-steps", "1"], 3);
    assert!(run_steps.stdout.contains("unknown: could not decide"), "{}", run_steps.stdout);
    assert!(!run_steps.stdout.contains(": linearizable"), "{}", run_steps.stdout);
    let run_time = run_exits(&file, &["--timeout", "0.000000001"], 3);
    assert!(run_time.stdout.contains("time limit"), "{}", run_time.stdout);
    let json = run_json_with(&file, &["--max-steps", "1"], 3);
    assert_eq!(json["verdict"], "unknown");
}

fn run_json(file: &Path, code: i32) -> Value {
    run_json_with(file, &[], code)
}

fn run_json_with(file: &Path, extra: &[&str], code: i32) -> Value {
    let mut args = vec!["--json"];
    args.extend_from_slice(extra);
    let run = run_exits(file, &args, code);
    let json: Value = serde_json::from_str(run.stdout.trim()).expect("one JSON object");
    assert_eq!(json["file"], file.to_str().unwrap());
    json
}

#[test]
fn help_prints_the_usage_and_exits_0() {
    let (_dir, file) = history_file("good.jsonl", PUT_1);
    let run = run_exits(&file, &["--help"], 0);
    assert!(run.stdout.starts_with("usage: rsl-check-history FILE"), "{}", run.stdout);
}

#[test]
fn a_history_on_standard_input_is_checked() {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_rsl-check-history"))
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let text = format!("{PUT_1}\n{PUT_2}\n{GET_1}\n");
    child.stdin.take().expect("a pipe").write_all(text.as_bytes()).expect("written");
    let output = child.wait_with_output().expect("it exits");
    assert_eq!(output.status.code(), Some(1));
    let out = String::from_utf8(output.stdout).expect("UTF-8");
    assert!(out.contains("NOT linearizable: key \"x\""), "{out}");
}

#[test]
fn a_read_of_a_value_nothing_wrote_says_so() {
    let (_dir, file) = history_file("unwritten.jsonl", &format!("{PUT_1}\n{GET_2}\n"));
    let out = run_exits(&file, &[], 1).stdout;
    assert!(out.contains("key \"x\": this operation cannot be linearized"), "{out}");
    assert!(out.contains("(no operation that did not fail writes 2 to this key)"), "{out}");
}

#[test]
fn a_read_of_a_value_written_only_later_names_the_writer() {
    // The read of 2 returns before the put of 2 is invoked (whose outcome is unknown).
    let early = r#"{"process":3,"type":"invoke","f":"get","key":"x","time":10}
{"process":3,"type":"ok","f":"get","key":"x","value":2,"time":20}"#;
    let late = r#"{"process":2,"type":"invoke","f":"put","key":"x","value":2,"time":300}
{"process":2,"type":"info","f":"put","key":"x","value":2,"time":400}"#;
    let (_dir, file) = history_file("early.jsonl", &format!("{early}\n{late}\n"));
    let out = run_exits(&file, &[], 1).stdout;
    assert!(
        out.contains(
            "(2 is written only by the invocation on line 3 (process 2, invoked at 300 ns, outcome unknown))"
        ),
        "{out}"
    );
}
