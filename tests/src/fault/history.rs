//! The history of a fault run: every client operation as an `invoke` event and then an
//! `ok`, `fail` or `info` completion, written as Jepsen-style JSON lines as it happens and
//! kept in memory for the figures and the checks.
//!
//! One line per event:
//! `{"process":int,"type":"invoke"|"ok"|"fail"|"info","f":"put"|"get"|"cas","key":str,"value":...,"time":ns}`
//! with `time` in nanoseconds since the run started (monotonic). Values are integers, each
//! written at most once per run. `value` is the integer written (put), null then the value
//! read or null for a missing key (get), `[expected or null, new]` (cas); a cas that did not
//! swap completes `ok` with value `false` (it took effect as a read: the key did not hold
//! `expected`). `fail` means the operation certainly did not take effect, `info` that its
//! outcome is unknown (a timeout); a process never invokes again after an `info`.

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{json, Value};

/// The operation of an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Function {
    /// Set a key.
    Put,
    /// Read a key (linearizably).
    Get,
    /// Compare-and-set a key.
    Cas,
}

impl Function {
    /// The name in the history.
    pub fn name(self) -> &'static str {
        match self {
            Function::Put => "put",
            Function::Get => "get",
            Function::Cas => "cas",
        }
    }
}

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It took effect (and `value` says what it saw).
    Ok,
    /// It certainly did not take effect.
    Fail,
    /// Unknown: it may take effect at any time after its invocation, or never.
    Info,
}

impl Outcome {
    fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Fail => "fail",
            Outcome::Info => "info",
        }
    }
}

/// One complete operation, as the figures and the durability check need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// The client process.
    pub process: u64,
    /// put, get or cas.
    pub f: Function,
    /// The key.
    pub key: String,
    /// put: the value written; cas: the new value; get: unused (0).
    pub written: i64,
    /// How it ended (`None` while it is still running).
    pub outcome: Option<Outcome>,
    /// get: the value read; cas: whether it swapped (as 1 or 0).
    pub read: Option<i64>,
    /// Invocation time, ns since the run started.
    pub invoke_ns: u64,
    /// Completion time, ns since the run started.
    pub complete_ns: Option<u64>,
}

impl Operation {
    /// Whether this operation wrote its value for certain (an ok put, or an ok cas that
    /// swapped): an acknowledged write.
    pub fn acknowledged_write(&self) -> bool {
        self.outcome == Some(Outcome::Ok)
            && match self.f {
                Function::Put => true,
                Function::Cas => self.read == Some(1),
                Function::Get => false,
            }
    }

    /// Whether this operation may have written its value (acknowledged, or unknown).
    pub fn may_have_written(&self) -> bool {
        self.f != Function::Get
            && match self.outcome {
                Some(Outcome::Info) | None => true,
                Some(Outcome::Ok) => self.acknowledged_write(),
                Some(Outcome::Fail) => false,
            }
    }
}

#[derive(Debug)]
struct Inner {
    out: Option<BufWriter<File>>,
    text: String,
    operations: Vec<Operation>,
    write_error: Option<String>,
}

/// The recorder every client shares; cheap to clone.
#[derive(Clone, Debug)]
pub struct History {
    start: Instant,
    inner: Arc<Mutex<Inner>>,
}

/// An invoked operation; complete it with [`History::complete`].
#[derive(Debug)]
pub struct Pending {
    index: usize,
}

impl History {
    /// A history whose times count from `start`, streamed to `path` as well if given.
    pub fn new(start: Instant, path: Option<&Path>) -> std::io::Result<History> {
        let out = match path {
            Some(path) => Some(BufWriter::new(File::create(path)?)),
            None => None,
        };
        let inner = Inner { out, text: String::new(), operations: Vec::new(), write_error: None };
        Ok(History { start, inner: Arc::new(Mutex::new(inner)) })
    }

    /// Nanoseconds since the run started.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Records the invocation of `f` on `key` by `process`. `value` is the integer written
    /// (put), `[expected, new]` (cas) or null (get).
    pub fn invoke(&self, process: u64, f: Function, key: &str, written: i64, value: Value) -> Pending {
        let mut inner = self.inner.lock().expect("the history lock is never poisoned");
        // The time is taken under the lock, so the lines are in time order.
        let time = self.now_ns();
        let line = json!({"process": process, "type": "invoke", "f": f.name(), "key": key, "value": value, "time": time});
        inner.push_line(&line);
        inner.operations.push(Operation {
            process,
            f,
            key: key.to_owned(),
            written,
            outcome: None,
            read: None,
            invoke_ns: time,
            complete_ns: None,
        });
        Pending { index: inner.operations.len() - 1 }
    }

    /// Records how `pending` ended: `value` as the history shows it, `read` as
    /// [`Operation::read`] keeps it.
    pub fn complete(&self, pending: Pending, outcome: Outcome, value: Value, read: Option<i64>) {
        let mut inner = self.inner.lock().expect("the history lock is never poisoned");
        let time = self.now_ns();
        let op = &mut inner.operations[pending.index];
        assert!(op.outcome.is_none(), "an operation completes once");
        op.outcome = Some(outcome);
        op.read = read;
        op.complete_ns = Some(time);
        let line = json!({
            "process": op.process, "type": outcome.name(), "f": op.f.name(), "key": op.key,
            "value": value, "time": time,
        });
        inner.push_line(&line);
    }

    /// Every operation so far, in invocation order.
    pub fn operations(&self) -> Vec<Operation> {
        self.inner.lock().expect("the history lock is never poisoned").operations.clone()
    }

    /// The history as JSON lines.
    pub fn jsonl(&self) -> String {
        self.inner.lock().expect("the history lock is never poisoned").text.clone()
    }

    /// Flushes the file copy; returns the first error writing it, if any.
    pub fn flush(&self) -> Result<(), String> {
        let mut inner = self.inner.lock().expect("the history lock is never poisoned");
        if let Some(out) = inner.out.as_mut() {
            if let Err(error) = out.flush() {
                inner.write_error.get_or_insert(error.to_string());
            }
        }
        inner.write_error.clone().map_or(Ok(()), Err)
    }
}

impl Inner {
    fn push_line(&mut self, line: &Value) {
        let text = line.to_string();
        self.text.push_str(&text);
        self.text.push('\n');
        if let Some(out) = self.out.as_mut() {
            if let Err(error) = writeln!(out, "{text}") {
                self.write_error.get_or_insert(error.to_string());
            }
        }
    }
}

/// The linearizability checker's verdict on a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Linearizable.
    Linearizable,
    /// Not linearizable: the key and the checker's witness, as text.
    Violation(String),
    /// The history could not be read, or the checker ran out of budget.
    Unchecked(String),
}

/// Checks a JSON-lines history for linearizability. The one place that names the checker.
pub fn check_linearizable(jsonl: &str) -> Verdict {
    use rsl_check::{check, parse_jsonl, CheckBudget, CheckResult};
    let operations = match parse_jsonl(jsonl) {
        Ok(operations) => operations,
        Err(error) => return Verdict::Unchecked(format!("the history does not parse: {error}")),
    };
    match check(&operations, CheckBudget::default()) {
        CheckResult::Linearizable => Verdict::Linearizable,
        CheckResult::NotLinearizable { key, witness } => {
            let steps: Vec<String> = witness.iter().map(|&i| format!("{:?}", operations[i])).collect();
            Verdict::Violation(format!(
                "key {key:?} is not linearizable; the furthest partial linearization, then the \
                 operation that cannot follow it:\n  {}",
                steps.join("\n  ")
            ))
        }
        CheckResult::Unknown { key, reason } => Verdict::Unchecked(format!("key {key:?}: {reason}")),
    }
}

/// Acknowledged writes the final state contradicts: for each key, given the value it holds
/// at the end (`final_values`, read linearizably after the cluster healed), every
/// acknowledged write that was invoked after the final value's writer had completed must
/// have been overwritten by it, which is impossible, so it was lost. A final value nobody
/// may have written is reported too. Returns one line per problem.
pub fn lost_writes(operations: &[Operation], final_values: &[(String, Option<i64>)]) -> Vec<String> {
    let mut problems = Vec::new();
    for (key, value) in final_values {
        let on_key: Vec<&Operation> = operations.iter().filter(|op| &op.key == key).collect();
        let acknowledged = on_key.iter().filter(|op| op.acknowledged_write());
        let Some(value) = value else {
            // Nothing deletes: an absent key lost every acknowledged write to it.
            for op in acknowledged {
                problems.push(format!(
                    "{key}: acknowledged write of {} (process {}, invoked at {} ns) is lost: the key \
                     ends absent",
                    op.written, op.process, op.invoke_ns
                ));
            }
            continue;
        };
        let writers: Vec<&&Operation> =
            on_key.iter().filter(|op| op.may_have_written() && op.written == *value).collect();
        let writer = match writers.as_slice() {
            [writer] => writer,
            [] => {
                problems.push(format!("{key}: holds {value}, which no operation wrote"));
                continue;
            }
            _ => {
                problems.push(format!("{key}: value {value} was written more than once"));
                continue;
            }
        };
        // An unknown outcome may land at any time: no write is necessarily after it.
        let Some(completed) = writer.complete_ns.filter(|_| writer.outcome == Some(Outcome::Ok)) else {
            continue;
        };
        for op in acknowledged.filter(|op| op.invoke_ns > completed) {
            problems.push(format!(
                "{key}: acknowledged write of {} (process {}, invoked at {} ns) is lost: the key \
                 ends holding {value}, written by an operation that completed at {completed} ns",
                op.written, op.process, op.invoke_ns
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(key: &str, value: i64, outcome: Outcome, invoke_ns: u64, complete_ns: u64) -> Operation {
        Operation {
            process: 0,
            f: Function::Put,
            key: key.into(),
            written: value,
            outcome: Some(outcome),
            read: None,
            invoke_ns,
            complete_ns: Some(complete_ns),
        }
    }

    #[test]
    fn a_write_after_the_final_value_was_written_is_lost() {
        let ops = [
            write("a", 1, Outcome::Ok, 0, 10),
            write("a", 2, Outcome::Ok, 20, 30),
            write("b", 3, Outcome::Info, 0, 5),
        ];
        assert!(lost_writes(&ops, &[("a".into(), Some(2)), ("b".into(), Some(3))]).is_empty());
        assert!(lost_writes(&ops, &[("b".into(), None)]).is_empty(), "an unknown write may never land");
        let lost = lost_writes(&ops, &[("a".into(), Some(1))]);
        assert_eq!(lost.len(), 1, "{lost:?}");
        assert!(lost[0].contains("acknowledged write of 2"), "{lost:?}");
        let gone = lost_writes(&ops, &[("a".into(), None)]);
        assert_eq!(gone.len(), 2, "{gone:?}");
        let invented = lost_writes(&ops, &[("a".into(), Some(7))]);
        assert!(invented[0].contains("no operation wrote"), "{invented:?}");
    }

    #[test]
    fn concurrent_writes_may_end_in_either_order() {
        let ops = [write("a", 1, Outcome::Ok, 0, 30), write("a", 2, Outcome::Ok, 10, 20)];
        assert!(lost_writes(&ops, &[("a".into(), Some(1))]).is_empty());
        assert!(lost_writes(&ops, &[("a".into(), Some(2))]).is_empty());
    }

    #[test]
    fn recorded_histories_check_and_violations_are_found() {
        let history = History::new(Instant::now(), None).unwrap();
        let put = history.invoke(1, Function::Put, "k", 5, json!(5));
        history.complete(put, Outcome::Ok, json!(5), None);
        let get = history.invoke(2, Function::Get, "k", 0, Value::Null);
        history.complete(get, Outcome::Ok, json!(5), Some(5));
        let cas = history.invoke(2, Function::Cas, "k", 6, json!([4, 6]));
        history.complete(cas, Outcome::Ok, json!(false), Some(0));
        let lost = history.invoke(3, Function::Put, "k", 7, json!(7));
        history.complete(lost, Outcome::Info, Value::Null, None);
        assert_eq!(check_linearizable(&history.jsonl()), Verdict::Linearizable);
        assert_eq!(history.operations().len(), 4);

        // A read of the old value after a later write completed: stale.
        let put = history.invoke(1, Function::Put, "k", 8, json!(8));
        history.complete(put, Outcome::Ok, json!(8), None);
        let get = history.invoke(2, Function::Get, "k", 0, Value::Null);
        history.complete(get, Outcome::Ok, json!(5), Some(5));
        assert!(matches!(check_linearizable(&history.jsonl()), Verdict::Violation(_)));
        assert!(matches!(check_linearizable("{"), Verdict::Unchecked(_)));
    }
}
