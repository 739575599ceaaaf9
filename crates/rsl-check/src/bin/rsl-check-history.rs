//! `rsl-check-history`: checks a JSON-lines history for linearizability.
//!
//! ```text
//! rsl-check-history FILE [--json] [--timeout SECS] [--max-steps N]
//! ```
//!
//! Exit codes: 0 linearizable; 1 not linearizable (a 1-minimal witness is printed:
//! operations of one key that cannot be ordered, with their lines and times);
//! 2 malformed file (`FILE:LINE: what is wrong`) or bad usage; 3 unknown (the time
//! limit or the search budget ran out: nothing is claimed). FILE `-` reads stdin.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use rsl_check::{
    check, minimize, parse_history, CheckBudget, CheckResult, History, Input, Operation, Output, Witness,
};
use serde_json::{json, Value};

const LINEARIZABLE: u8 = 0;
const NOT_LINEARIZABLE: u8 = 1;
const MALFORMED: u8 = 2;
const UNKNOWN: u8 = 3;

/// Most witness operations listed in the text report (a witness that could not be
/// shrunk in time can be long).
const WITNESS_LISTED_MAX: usize = 100;

const USAGE: &str = "usage: rsl-check-history FILE [--json] [--timeout SECS] [--max-steps N]

Checks that the history in FILE (JSON lines, one event per line; `-` for stdin) is
linearizable, per key, as a map of registers that start absent.

  --json           print the verdict as one JSON object on stdout
  --timeout SECS   give up after SECS seconds (checking and shrinking the witness)
  --max-steps N    give up on a key after N search steps (default 50000000)

exit codes: 0 linearizable, 1 not linearizable (a minimal witness is printed),
2 malformed file or bad usage, 3 unknown (time or step budget exhausted)";

#[derive(Debug)]
struct Args {
    file: String,
    json: bool,
    timeout: Option<Duration>,
    max_steps: u64,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut file = None;
    let mut json = false;
    let mut timeout = None;
    let mut max_steps = CheckBudget::default().max_steps;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--json" => json = true,
            "--timeout" => {
                let value = args.next().ok_or("--timeout needs a number of seconds")?;
                let seconds: f64 = value
                    .parse()
                    .ok()
                    .filter(|seconds: &f64| seconds.is_finite() && *seconds > 0.0)
                    .ok_or_else(|| {
                        format!("--timeout must be a positive number of seconds, found `{value}`")
                    })?;
                timeout = Some(Duration::from_secs_f64(seconds));
            }
            "--max-steps" => {
                let value = args.next().ok_or("--max-steps needs a number")?;
                max_steps = value
                    .parse()
                    .ok()
                    .filter(|&steps| steps > 0)
                    .ok_or_else(|| format!("--max-steps must be a positive integer, found `{value}`"))?;
            }
            "-h" | "--help" => return Err(String::new()),
            flag if flag.starts_with("--") => return Err(format!("unknown option `{flag}`")),
            path => {
                if file.replace(path.to_owned()).is_some() {
                    return Err("more than one FILE given".to_owned());
                }
            }
        }
    }
    let file = file.ok_or("no FILE given")?;
    Ok(Args { file, json, timeout, max_steps })
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) if message.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("rsl-check-history: {message}\n\n{USAGE}");
            return ExitCode::from(MALFORMED);
        }
    };
    ExitCode::from(run(&args))
}

/// Prints a verdict: `text` on stdout (or stderr for a malformed file), or `object`
/// as JSON on stdout with `--json`.
fn report(args: &Args, code: u8, text: &str, mut object: Value) -> u8 {
    if args.json {
        object["file"] = Value::from(args.file.as_str());
        println!("{object}");
    } else if code == MALFORMED {
        eprintln!("{text}");
    } else {
        println!("{text}");
    }
    code
}

fn run(args: &Args) -> u8 {
    let started = Instant::now();
    let budget = CheckBudget {
        max_steps: args.max_steps,
        deadline: args.timeout.and_then(|timeout| started.checked_add(timeout)),
    };
    let text = match read(&args.file) {
        Ok(text) => text,
        Err(error) => {
            let message = format!("{}: cannot read: {error}", args.file);
            return report(args, MALFORMED, &message, json!({"verdict": "malformed", "message": message}));
        }
    };
    let history = match parse_history(&text) {
        Ok(history) => history,
        Err(error) => {
            return report(
                args,
                MALFORMED,
                &format!("{}:{}: {}", args.file, error.line(), error.message()),
                json!({"verdict": "malformed", "line": error.line(), "message": error.message()}),
            );
        }
    };
    let parsed = started.elapsed();
    let result = check(&history.ops, budget);
    let checked = started.elapsed() - parsed;
    let stats = Stats::of(&history, parsed, checked);
    match result {
        CheckResult::Linearizable => report(
            args,
            LINEARIZABLE,
            &format!("{}: linearizable ({})", args.file, stats.text()),
            json!({"verdict": "linearizable", "stats": stats.json()}),
        ),
        CheckResult::Unknown { key, reason } => report(
            args,
            UNKNOWN,
            &format!(
                "{}: unknown: could not decide whether the history is linearizable: key {key:?}: {reason} ({})",
                args.file,
                stats.text()
            ),
            json!({"verdict": "unknown", "key": key, "reason": reason, "stats": stats.json()}),
        ),
        CheckResult::NotLinearizable { key, witness } => {
            let shrinking = Instant::now();
            let witness = minimize(&history.ops, &key, &witness, budget);
            let stats = Stats { shrink: shrinking.elapsed(), ..stats };
            let lines = witness_lines(&text, &history, &witness);
            report(
                args,
                NOT_LINEARIZABLE,
                &not_linearizable_text(&args.file, &history, &witness, &lines, &stats),
                not_linearizable_json(&history, &witness, &lines, &stats),
            )
        }
    }
}

fn read(file: &str) -> std::io::Result<String> {
    if file == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        Ok(text)
    } else {
        std::fs::read_to_string(file)
    }
}

/// Figures about the history and the run.
struct Stats {
    events: usize,
    operations: usize,
    keys: usize,
    unknown: usize,
    failed: usize,
    parse: Duration,
    check: Duration,
    /// Time spent shrinking the witness.
    shrink: Duration,
}

impl Stats {
    fn of(history: &History, parse: Duration, check: Duration) -> Stats {
        let keys: HashSet<&str> = history.ops.iter().map(|op| op.key.as_str()).collect();
        Stats {
            events: history.events,
            operations: history.ops.len(),
            keys: keys.len(),
            unknown: history.ops.iter().filter(|op| op.output.is_none()).count(),
            failed: history.failed,
            parse,
            check,
            shrink: Duration::ZERO,
        }
    }

    fn text(&self) -> String {
        format!(
            "{} events, {} operations on {} keys, {} of unknown outcome, {} failed; read and parsed in {:.3} s, \
             checked in {:.3} s",
            self.events,
            self.operations,
            self.keys,
            self.unknown,
            self.failed,
            self.parse.as_secs_f64(),
            self.check.as_secs_f64()
        )
    }

    fn json(&self) -> Value {
        json!({
            "events": self.events,
            "operations": self.operations,
            "keys": self.keys,
            "unknown_outcome": self.unknown,
            "failed": self.failed,
            "parse_seconds": self.parse.as_secs_f64(),
            "check_seconds": self.check.as_secs_f64(),
            "shrink_seconds": self.shrink.as_secs_f64(),
        })
    }
}

/// The text of every line a witness operation came from, by line number.
fn witness_lines<'a>(text: &'a str, history: &History, witness: &Witness) -> HashMap<usize, &'a str> {
    let mut wanted: HashMap<usize, &str> = HashMap::new();
    for &index in &witness.operations {
        let origin = history.origins[index];
        wanted.insert(origin.invoke_line, "");
        if let Some(line) = origin.completion_line {
            wanted.insert(line, "");
        }
    }
    for (index, line) in text.lines().enumerate() {
        if let Some(slot) = wanted.get_mut(&(index + 1)) {
            *slot = line;
        }
    }
    wanted
}

fn not_linearizable_text(
    file: &str,
    history: &History,
    witness: &Witness,
    lines: &HashMap<usize, &str>,
    stats: &Stats,
) -> String {
    let count = witness.operations.len();
    let what = if count == 1 {
        "this operation cannot be linearized".to_owned()
    } else {
        format!("no order of these {count} operations is legal")
    };
    let mut out = format!(
        "{file}: NOT linearizable: key {:?}: {what},\n\
         even with each of the key's {} other writes allowed to take effect at any time after its\n\
         invocation, or not at all.\n",
        witness.key, witness.relaxed_writes,
    );
    if !witness.minimal {
        out.push_str("The witness may not be minimal: the budget ran out while shrinking it.\n");
    } else if count > 1 {
        out.push_str("The witness is 1-minimal: without any one of them, the rest can be ordered.\n");
    }
    for (number, &index) in witness.operations.iter().enumerate().take(WITNESS_LISTED_MAX) {
        let op = &history.ops[index];
        let origin = history.origins[index];
        let interval = match op.return_ns {
            Some(ret) => format!("invoked at {} ns, returned at {} ns", op.call_ns, ret),
            None => format!("invoked at {} ns, outcome unknown", op.call_ns),
        };
        out.push_str(&format!(
            "  {}. process {}: {} ({interval})\n",
            number + 1,
            op.process,
            history.describe(index)
        ));
        for line in std::iter::once(origin.invoke_line).chain(origin.completion_line) {
            out.push_str(&format!("       line {line}: {}\n", lines.get(&line).copied().unwrap_or("")));
        }
        if let Some(note) = provenance(history, witness, index) {
            out.push_str(&format!("       ({note})\n"));
        }
    }
    if count > WITNESS_LISTED_MAX {
        out.push_str(&format!("  ... and {} more (--json lists them all)\n", count - WITNESS_LISTED_MAX));
    }
    out.push_str(&format!(
        "({}; witness shrunk in {:.3} s, {} checks)",
        stats.text(),
        stats.shrink.as_secs_f64(),
        witness.checks
    ));
    out
}

/// For a witness operation that needs the register to hold a value (a read, a
/// successful cas) that no other witness operation writes: who in the history
/// writes it. `None` for absence, which is also the initial state.
fn provenance(history: &History, witness: &Witness, index: usize) -> Option<String> {
    let op = &history.ops[index];
    let needed = match (&op.input, &op.output) {
        (_, Some(Output::Get { value: Some(value) })) => *value,
        (Input::Cas { expected: Some(value), .. }, Some(Output::Cas { ok: true })) => *value,
        _ => return None,
    };
    let writes = |other: &Operation| match other.input {
        Input::Put { value } | Input::Cas { new: value, .. } => other.key == op.key && value == needed,
        Input::Get | Input::Delete => false,
    };
    if witness.operations.iter().any(|&w| writes(&history.ops[w])) {
        return None;
    }
    let shown = history.value_json(needed);
    let writers: Vec<usize> = (0..history.ops.len()).filter(|&w| writes(&history.ops[w])).collect();
    if writers.is_empty() {
        return Some(format!("no operation that did not fail writes {shown} to this key"));
    }
    let mut list: Vec<String> = writers
        .iter()
        .take(3)
        .map(|&w| {
            let writer = &history.ops[w];
            let unknown = if writer.output.is_none() { ", outcome unknown" } else { "" };
            format!(
                "line {} (process {}, invoked at {} ns{unknown})",
                history.origins[w].invoke_line, writer.process, writer.call_ns
            )
        })
        .collect();
    if writers.len() > 3 {
        list.push(format!("{} more", writers.len() - 3));
    }
    Some(format!(
        "{shown} is written only by the invocation{} on {}",
        if writers.len() == 1 { "" } else { "s" },
        list.join(", ")
    ))
}

fn not_linearizable_json(
    history: &History,
    witness: &Witness,
    lines: &HashMap<usize, &str>,
    stats: &Stats,
) -> Value {
    let operations: Vec<Value> = witness
        .operations
        .iter()
        .map(|&index| {
            let op = &history.ops[index];
            let origin = history.origins[index];
            json!({
                "process": op.process,
                "operation": history.describe(index),
                "call_ns": op.call_ns,
                "return_ns": op.return_ns,
                "invoke_line": origin.invoke_line,
                "completion_line": origin.completion_line,
                "lines": std::iter::once(origin.invoke_line)
                    .chain(origin.completion_line)
                    .map(|line| lines.get(&line).copied().unwrap_or(""))
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "verdict": "not-linearizable",
        "key": witness.key,
        "witness": operations,
        "minimal": witness.minimal,
        "relaxed_writes": witness.relaxed_writes,
        "stats": stats.json(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Result<Args, String> {
        parse_args(words.iter().map(|word| word.to_string()))
    }

    #[test]
    fn parses_arguments() {
        let parsed = args(&["h.jsonl", "--json", "--timeout", "2.5", "--max-steps", "10"]).unwrap();
        assert_eq!(parsed.file, "h.jsonl");
        assert!(parsed.json);
        assert_eq!(parsed.timeout, Some(Duration::from_millis(2500)));
        assert_eq!(parsed.max_steps, 10);
        let plain = args(&["-"]).unwrap();
        assert!(!plain.json);
        assert_eq!(plain.timeout, None);
        assert_eq!(plain.max_steps, CheckBudget::default().max_steps);
    }

    #[test]
    fn rejects_bad_arguments() {
        for (words, expected) in [
            (&[][..], "no FILE"),
            (&["a", "b"][..], "more than one"),
            (&["a", "--timeout"][..], "needs"),
            (&["a", "--timeout", "0"][..], "positive"),
            (&["a", "--timeout", "x"][..], "positive"),
            (&["a", "--max-steps", "-3"][..], "positive"),
            (&["a", "--frobnicate"][..], "unknown option"),
        ] {
            let error = args(words).unwrap_err();
            assert!(error.contains(expected), "{words:?}: {error}");
        }
        assert_eq!(args(&["--help"]).unwrap_err(), "");
    }
}
