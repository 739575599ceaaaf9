//! Histories as JSON lines: [`parse_history`] reads them, [`Event`] and [`to_jsonl`]
//! write them. The format is described in the crate documentation.

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::Deserialize;
use serde_json::Value;

use crate::{Input, Operation, Output};

/// An error in a JSON-lines history. Every variant carries the 1-based line
/// number it was found on ([`ParseError::line`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// The line is not valid JSON.
    Json {
        /// 1-based line number.
        line: usize,
        /// 1-based column reported by the JSON parser.
        column: usize,
        /// What the JSON parser objected to.
        message: String,
    },
    /// The line is JSON but not a valid event: not an object, a missing or
    /// ill-typed field, an unknown `type` or `f`, or a `value` of the wrong
    /// shape.
    InvalidEvent {
        /// 1-based line number.
        line: usize,
        /// What was wrong.
        message: String,
    },
    /// A completion (`ok`, `fail`, `info`) for a process with no outstanding
    /// invocation.
    CompletionWithoutInvoke {
        /// 1-based line number of the completion.
        line: usize,
        /// The process named by the completion.
        process: u64,
    },
    /// An invocation by a process whose previous invocation has not completed.
    OverlappingInvoke {
        /// 1-based line number of the second invocation.
        line: usize,
        /// The process.
        process: u64,
        /// 1-based line number of the outstanding invocation.
        pending_line: usize,
    },
    /// A completion that does not match its invocation (different `f` or
    /// `key`, an earlier `time`, or a `value` that contradicts the request).
    MismatchedCompletion {
        /// 1-based line number of the completion.
        line: usize,
        /// 1-based line number of the invocation it was paired with.
        invoke_line: usize,
        /// What did not match.
        message: String,
    },
}

impl ParseError {
    /// The 1-based line number the error was found on.
    pub fn line(&self) -> usize {
        match self {
            ParseError::Json { line, .. }
            | ParseError::InvalidEvent { line, .. }
            | ParseError::CompletionWithoutInvoke { line, .. }
            | ParseError::OverlappingInvoke { line, .. }
            | ParseError::MismatchedCompletion { line, .. } => *line,
        }
    }

    /// What is wrong, without the line number (for `FILE:LINE: message`).
    pub fn message(&self) -> String {
        match self {
            ParseError::Json { column, message, .. } => format!("column {column}: malformed JSON: {message}"),
            ParseError::InvalidEvent { message, .. } => format!("invalid event: {message}"),
            ParseError::CompletionWithoutInvoke { process, .. } => {
                format!("completion for process {process}, which has no outstanding invocation")
            }
            ParseError::OverlappingInvoke { process, pending_line, .. } => format!(
                "process {process} invoked an operation while its invocation on line {pending_line} \
                 is still outstanding"
            ),
            ParseError::MismatchedCompletion { invoke_line, message, .. } => {
                format!("completion does not match the invocation on line {invoke_line}: {message}")
            }
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line(), self.message())
    }
}

impl std::error::Error for ParseError {}

/// An event's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// The client sent the request.
    Invoke,
    /// The operation happened, with the result in `value`.
    Ok,
    /// The operation certainly did not take effect.
    Fail,
    /// The outcome is unknown (a timeout, a lost connection).
    Info,
}

impl EventType {
    /// The name used in the format.
    pub fn name(self) -> &'static str {
        match self {
            EventType::Invoke => "invoke",
            EventType::Ok => "ok",
            EventType::Fail => "fail",
            EventType::Info => "info",
        }
    }
}

/// An event's `f`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// Write a value.
    Put,
    /// Read the value.
    Get,
    /// Compare-and-set.
    Cas,
    /// Remove the key.
    Delete,
}

impl Function {
    /// The function of an operation's request.
    pub fn of(input: &Input) -> Function {
        match input {
            Input::Put { .. } => Function::Put,
            Input::Get => Function::Get,
            Input::Cas { .. } => Function::Cas,
            Input::Delete => Function::Delete,
        }
    }

    /// The name used in the format.
    pub fn name(self) -> &'static str {
        match self {
            Function::Put => "put",
            Function::Get => "get",
            Function::Cas => "cas",
            Function::Delete => "delete",
        }
    }
}

/// One line of a history.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The client.
    pub process: u64,
    /// `invoke`, `ok`, `fail` or `info`.
    pub kind: EventType,
    /// `put`, `get`, `cas` or `delete`.
    pub f: Function,
    /// The key.
    pub key: String,
    /// The value (see the crate documentation for its shape); `Null` is written out.
    pub value: Value,
    /// Nanoseconds.
    pub time: u64,
}

impl Event {
    /// The event as one line of JSON, without the newline, fields in the order of the
    /// crate documentation.
    pub fn to_json_line(&self) -> String {
        format!(
            "{{\"process\":{},\"type\":\"{}\",\"f\":\"{}\",\"key\":{},\"value\":{},\"time\":{}}}",
            self.process,
            self.kind.name(),
            self.f.name(),
            Value::from(self.key.as_str()),
            self.value,
            self.time
        )
    }

    /// The invocation event of `op` (values written as integers).
    pub fn invoke(op: &Operation) -> Event {
        let value = match &op.input {
            Input::Put { value } => Value::from(*value),
            Input::Get | Input::Delete => Value::Null,
            Input::Cas { expected, new } => cas_pair_json(*expected, *new),
        };
        Event::of(op, EventType::Invoke, value, op.call_ns)
    }

    /// The `ok` event of completed operation `op` at `time`, or `None` if its outcome is
    /// unknown. A cas reported as not applied is written as `ok` with value `false`.
    pub fn ok(op: &Operation, time: u64) -> Option<Event> {
        let value = match (&op.input, op.output.as_ref()?) {
            (Input::Put { value }, _) => Value::from(*value),
            (_, Output::Get { value }) => value.map_or(Value::Null, Value::from),
            (Input::Cas { expected, new }, Output::Cas { ok: true }) => cas_pair_json(*expected, *new),
            (_, Output::Cas { ok }) => Value::Bool(*ok),
            (_, Output::Put | Output::Delete) => Value::Null,
        };
        Some(Event::of(op, EventType::Ok, value, time))
    }

    /// A completion of `op` of the given kind (`fail` or `info`) at `time`.
    pub fn completion(op: &Operation, kind: EventType, time: u64) -> Event {
        Event::of(op, kind, Value::Null, time)
    }

    fn of(op: &Operation, kind: EventType, value: Value, time: u64) -> Event {
        Event { process: op.process, kind, f: Function::of(&op.input), key: op.key.clone(), value, time }
    }
}

/// How an operation of a [`History`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// An `ok` event.
    Ok,
    /// An `info` event: the outcome is unknown.
    Info,
    /// No completion before the end of the file: the outcome is unknown.
    Missing,
}

/// Where an operation of a [`History`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// 1-based line of the invocation.
    pub invoke_line: usize,
    /// 1-based line of the completion, if there was one.
    pub completion_line: Option<usize>,
    /// How it ended.
    pub completion: Completion,
}

/// A parsed history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// The operations, in invocation order; `fail`ed ones are left out.
    pub ops: Vec<Operation>,
    /// For each of `ops`, the lines it came from.
    pub origins: Vec<Origin>,
    /// Number of non-blank lines (events) read.
    pub events: usize,
    /// Number of operations that completed with `fail` (left out of `ops`).
    pub failed: usize,
    /// String values and the integers that stand for them in `ops`. Integer values
    /// stand for themselves; each distinct string gets an integer no integer value
    /// of the file uses, so equality is kept exactly.
    pub value_names: HashMap<i64, String>,
}

impl History {
    /// Value `value` of `ops` as the file wrote it: an integer, or a JSON string.
    pub fn value_json(&self, value: i64) -> Value {
        match self.value_names.get(&value) {
            Some(text) => Value::from(text.as_str()),
            None => Value::from(value),
        }
    }

    /// An optional value (`None`: absent) as the file wrote it.
    pub fn optional_value_json(&self, value: Option<i64>) -> Value {
        value.map_or(Value::Null, |value| self.value_json(value))
    }

    /// A short description of operation `index`, e.g. `put 5`, `get -> null`,
    /// `cas [1, 2] -> ok`, `put 3 -> unknown`.
    pub fn describe(&self, index: usize) -> String {
        let Some(op) = self.ops.get(index) else {
            return format!("no operation {index}");
        };
        let input = match &op.input {
            Input::Put { value } => format!("put {}", self.value_json(*value)),
            Input::Get => "get".to_owned(),
            Input::Delete => "delete".to_owned(),
            Input::Cas { expected, new } => {
                format!("cas [{}, {}]", self.optional_value_json(*expected), self.value_json(*new))
            }
        };
        let output = match &op.output {
            None => "unknown".to_owned(),
            Some(Output::Get { value }) => self.optional_value_json(*value).to_string(),
            Some(Output::Cas { ok: true }) => "ok (swapped)".to_owned(),
            Some(Output::Cas { ok: false }) => "ok (not swapped)".to_owned(),
            Some(Output::Put | Output::Delete) => "ok".to_owned(),
        };
        format!("{input} -> {output}")
    }
}

/// A value as read, before strings are given integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Datum {
    Int(i64),
    /// Index into the interned strings.
    Text(usize),
}

/// A request as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RawInput {
    Put(Datum),
    Get,
    Delete,
    Cas(Option<Datum>, Datum),
}

impl RawInput {
    fn function(self) -> Function {
        match self {
            RawInput::Put(_) => Function::Put,
            RawInput::Get => Function::Get,
            RawInput::Delete => Function::Delete,
            RawInput::Cas(..) => Function::Cas,
        }
    }
}

/// A response as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RawOutput {
    Put,
    Get(Option<Datum>),
    Delete,
    Cas(bool),
}

/// An operation as read.
#[derive(Debug)]
struct RawOp {
    process: u64,
    key: String,
    input: RawInput,
    output: Option<RawOutput>,
    call_ns: u64,
    return_ns: Option<u64>,
    origin: Origin,
    failed: bool,
}

/// One decoded line, before its value is interpreted.
#[derive(Debug)]
struct Line {
    process: u64,
    kind: EventType,
    f: Function,
    key: String,
    value: Value,
    time: u64,
}

/// Interns string values.
#[derive(Debug, Default)]
struct Strings {
    ids: HashMap<String, usize>,
    names: Vec<String>,
}

impl Strings {
    /// A value: an integer or a string; anything else is an error message.
    fn datum(&mut self, value: &Value) -> Option<Datum> {
        match value {
            Value::String(text) => {
                let next = self.names.len();
                let id = *self.ids.entry(text.clone()).or_insert(next);
                if id == next {
                    self.names.push(text.clone());
                }
                Some(Datum::Text(id))
            }
            other => other.as_i64().map(Datum::Int),
        }
    }

    /// An optional value: null, an integer or a string.
    fn optional_datum(&mut self, value: &Value) -> Option<Option<Datum>> {
        if value.is_null() {
            Some(None)
        } else {
            self.datum(value).map(Some)
        }
    }

    /// Decodes `[expected or null, new]`.
    fn cas_pair(&mut self, value: &Value) -> Option<(Option<Datum>, Datum)> {
        match value.as_array()?.as_slice() {
            [expected, new] => Some((self.optional_datum(expected)?, self.datum(new)?)),
            _ => None,
        }
    }
}

/// The usual shape of a line, decoded without building a JSON tree: plain
/// (unescaped) strings, a string key. Anything else takes the general path,
/// which also words the errors.
#[derive(Deserialize)]
struct PlainLine<'a> {
    process: u64,
    #[serde(rename = "type")]
    kind: &'a str,
    f: &'a str,
    key: &'a str,
    #[serde(default)]
    value: Value,
    time: u64,
}

impl Line {
    fn parse(text: &str, line: usize) -> Result<Line, ParseError> {
        if let Ok(plain) = serde_json::from_str::<PlainLine<'_>>(text) {
            let kind = match plain.kind {
                "invoke" => Some(EventType::Invoke),
                "ok" => Some(EventType::Ok),
                "fail" => Some(EventType::Fail),
                "info" => Some(EventType::Info),
                _ => None,
            };
            let f = match plain.f {
                "put" => Some(Function::Put),
                "get" => Some(Function::Get),
                "cas" => Some(Function::Cas),
                "delete" => Some(Function::Delete),
                _ => None,
            };
            if let (Some(kind), Some(f)) = (kind, f) {
                let (process, key, value, time) =
                    (plain.process, plain.key.to_owned(), plain.value, plain.time);
                return Ok(Line { process, kind, f, key, value, time });
            }
        }
        Line::parse_general(text, line)
    }

    fn parse_general(text: &str, line: usize) -> Result<Line, ParseError> {
        let json: Value = serde_json::from_str(text).map_err(|error| ParseError::Json {
            line,
            column: error.column(),
            message: json_message(&error),
        })?;
        let invalid = |message: String| ParseError::InvalidEvent { line, message };
        let Value::Object(mut map) = json else {
            return Err(invalid("expected a JSON object".to_owned()));
        };
        let mut field =
            |name: &str| map.remove(name).ok_or_else(|| invalid(format!("missing field `{name}`")));

        let process_value = field("process")?;
        let process = process_value.as_u64().ok_or_else(|| {
            invalid(format!("`process` must be a non-negative integer, got {process_value}"))
        })?;
        let kind = match field("type")? {
            Value::String(s) => match s.as_str() {
                "invoke" => EventType::Invoke,
                "ok" => EventType::Ok,
                "fail" => EventType::Fail,
                "info" => EventType::Info,
                _ => {
                    return Err(invalid(format!("unknown type \"{s}\" (expected invoke, ok, fail or info)")))
                }
            },
            other => return Err(invalid(format!("`type` must be a string, got {other}"))),
        };
        let f = match field("f")? {
            Value::String(s) => match s.as_str() {
                "put" => Function::Put,
                "get" => Function::Get,
                "cas" => Function::Cas,
                "delete" => Function::Delete,
                _ => return Err(invalid(format!("unknown f \"{s}\" (expected put, get, cas or delete)"))),
            },
            other => return Err(invalid(format!("`f` must be a string, got {other}"))),
        };
        let key = match field("key")? {
            Value::String(s) => s,
            Value::Number(number) if number.is_i64() || number.is_u64() => number.to_string(),
            other => return Err(invalid(format!("`key` must be a string or an integer, got {other}"))),
        };
        let time_value = field("time")?;
        let time = time_value
            .as_u64()
            .ok_or_else(|| invalid(format!("`time` must be a non-negative integer, got {time_value}")))?;
        let value = field("value").unwrap_or(Value::Null);
        Ok(Line { process, kind, f, key, value, time })
    }

    /// The request of an invocation.
    fn input(&self, line: usize, strings: &mut Strings) -> Result<RawInput, ParseError> {
        let invalid = |message: String| ParseError::InvalidEvent { line, message };
        match self.f {
            Function::Put => match strings.datum(&self.value) {
                Some(value) => Ok(RawInput::Put(value)),
                None => Err(invalid(format!(
                    "put invocation value must be an integer or a string, got {}",
                    self.value
                ))),
            },
            Function::Get | Function::Delete => {
                if self.value.is_null() {
                    Ok(if self.f == Function::Get { RawInput::Get } else { RawInput::Delete })
                } else {
                    Err(invalid(format!(
                        "{} invocation value must be null, got {}",
                        self.f.name(),
                        self.value
                    )))
                }
            }
            Function::Cas => strings
                .cas_pair(&self.value)
                .map(|(expected, new)| RawInput::Cas(expected, new))
                .ok_or_else(|| {
                    invalid(format!(
                        "cas invocation value must be [expected or null, new] (integers or strings), got {}",
                        self.value
                    ))
                }),
        }
    }

    /// The response of an `ok` completion of `input`.
    fn output(
        &self,
        input: RawInput,
        line: usize,
        invoke_line: usize,
        strings: &mut Strings,
    ) -> Result<RawOutput, ParseError> {
        let mismatch = |message: String| ParseError::MismatchedCompletion { line, invoke_line, message };
        let invalid = |message: String| ParseError::InvalidEvent { line, message };
        let v = &self.value;
        match input {
            RawInput::Put(value) => match strings.optional_datum(v) {
                Some(None) => Ok(RawOutput::Put),
                Some(Some(read)) if read == value => Ok(RawOutput::Put),
                Some(Some(_)) => {
                    Err(mismatch(format!("put completion value {v} differs from the value written")))
                }
                None => Err(invalid(format!(
                    "put completion value must be an integer, a string or null, got {v}"
                ))),
            },
            RawInput::Get => strings.optional_datum(v).map(RawOutput::Get).ok_or_else(|| {
                invalid(format!("get completion value must be an integer, a string or null, got {v}"))
            }),
            RawInput::Delete => match v {
                Value::Null => Ok(RawOutput::Delete),
                v => Err(invalid(format!("delete completion value must be null, got {v}"))),
            },
            RawInput::Cas(expected, new) => match v {
                Value::Bool(ok) => Ok(RawOutput::Cas(*ok)),
                v => match strings.cas_pair(v) {
                    Some(pair) if pair == (expected, new) => Ok(RawOutput::Cas(true)),
                    Some(_) => Err(mismatch(format!(
                        "cas completion value {v} differs from the invoked [expected, new]"
                    ))),
                    None => Err(invalid(format!(
                        "cas completion value must be [expected or null, new], true or false, got {v}"
                    ))),
                },
            },
        }
    }
}

/// A serde_json error message without its (single-line, hence redundant)
/// "at line 1 column N" suffix.
fn json_message(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    match text.strip_suffix(&suffix) {
        Some(stripped) => stripped.to_owned(),
        None => text,
    }
}

/// Parses a JSON-lines history (the format of the crate documentation).
///
/// Each non-blank line is one event:
/// `{"process": int, "type": "invoke"|"ok"|"fail"|"info", "f": "put"|"get"|"cas"|"delete", "key": str, "value": ..., "time": ns}`
/// (`key` may also be an integer; other fields are ignored). `value` is:
///
/// | `f`      | invoke                     | ok                                                      |
/// |----------|----------------------------|---------------------------------------------------------|
/// | `put`    | the value written          | the same value, or null                                 |
/// | `get`    | null (or absent)           | the value read, or null if the key was absent           |
/// | `delete` | null (or absent)           | null (or absent)                                        |
/// | `cas`    | `[expected or null, new]`  | the same pair or `true` (swapped); `false` (not swapped) |
///
/// and is ignored on `fail` and `info` events. Values are integers or strings.
///
/// Each invocation is paired with the next completion of the same process,
/// which must have the same `f` and `key` and a `time` no earlier than the
/// invocation's. `ok` gives a completed operation; `fail` removes the
/// operation (it did not happen); `info`, or no completion before the end of
/// the input, gives an operation of unknown outcome (`output` and `return_ns`
/// are `None`). Operations are returned in invocation order.
///
/// The first line that breaks a rule is reported, with its line number.
pub fn parse_history(text: &str) -> Result<History, ParseError> {
    let mut raw: Vec<RawOp> = Vec::new();
    let mut strings = Strings::default();
    let mut events = 0;
    // process -> index in `raw` of its outstanding invocation
    let mut pending: HashMap<u64, usize> = HashMap::new();

    for (index, text) in text.lines().enumerate() {
        let line = index + 1;
        if text.trim().is_empty() {
            continue;
        }
        events += 1;
        let event = Line::parse(text, line)?;
        if event.kind == EventType::Invoke {
            if let Some(&outstanding) = pending.get(&event.process) {
                let pending_line = raw.get(outstanding).map_or(0, |op| op.origin.invoke_line);
                return Err(ParseError::OverlappingInvoke { line, process: event.process, pending_line });
            }
            let input = event.input(line, &mut strings)?;
            pending.insert(event.process, raw.len());
            raw.push(RawOp {
                process: event.process,
                key: event.key,
                input,
                output: None,
                call_ns: event.time,
                return_ns: None,
                origin: Origin { invoke_line: line, completion_line: None, completion: Completion::Missing },
                failed: false,
            });
            continue;
        }

        let Some(op) = pending.remove(&event.process).and_then(|index| raw.get_mut(index)) else {
            return Err(ParseError::CompletionWithoutInvoke { line, process: event.process });
        };
        let invoke_line = op.origin.invoke_line;
        let mismatch = |message: String| ParseError::MismatchedCompletion { line, invoke_line, message };
        let invoked_f = op.input.function();
        if event.f != invoked_f {
            return Err(mismatch(format!(
                "f is \"{}\" but the invocation's is \"{}\"",
                event.f.name(),
                invoked_f.name()
            )));
        }
        if event.key != op.key {
            return Err(mismatch(format!("key is {:?} but the invocation's is {:?}", event.key, op.key)));
        }
        if event.time < op.call_ns {
            return Err(mismatch(format!(
                "{} at time {} precedes the invocation at time {}",
                event.kind.name(),
                event.time,
                op.call_ns
            )));
        }
        op.origin.completion_line = Some(line);
        match event.kind {
            EventType::Ok => {
                op.output = Some(event.output(op.input, line, invoke_line, &mut strings)?);
                op.return_ns = Some(event.time);
                op.origin.completion = Completion::Ok;
            }
            EventType::Fail => op.failed = true,
            EventType::Info | EventType::Invoke => op.origin.completion = Completion::Info,
        }
    }

    // Give each string an integer that no integer value of the file uses.
    let mut value_names = HashMap::new();
    let mut string_ids = Vec::with_capacity(strings.names.len());
    if !strings.names.is_empty() {
        let mut used: HashSet<i64> = HashSet::new();
        let mut note = |datum: Option<Datum>| {
            if let Some(Datum::Int(value)) = datum {
                used.insert(value);
            }
        };
        for op in &raw {
            match op.input {
                RawInput::Put(value) => note(Some(value)),
                RawInput::Cas(expected, new) => {
                    note(expected);
                    note(Some(new));
                }
                RawInput::Get | RawInput::Delete => {}
            }
            if let Some(RawOutput::Get(read)) = op.output {
                note(read);
            }
        }
        let mut candidate = i64::MIN;
        for name in strings.names {
            while used.contains(&candidate) {
                candidate += 1;
            }
            string_ids.push(candidate);
            value_names.insert(candidate, name);
            candidate += 1;
        }
    }
    let resolve = |datum: Datum| match datum {
        Datum::Int(value) => value,
        Datum::Text(index) => string_ids.get(index).copied().unwrap_or(i64::MIN),
    };

    let mut history = History { events, value_names, ..History::default() };
    for op in raw {
        if op.failed {
            history.failed += 1;
            continue;
        }
        let input = match op.input {
            RawInput::Put(value) => Input::Put { value: resolve(value) },
            RawInput::Get => Input::Get,
            RawInput::Delete => Input::Delete,
            RawInput::Cas(expected, new) => Input::Cas { expected: expected.map(resolve), new: resolve(new) },
        };
        let output = op.output.map(|output| match output {
            RawOutput::Put => Output::Put,
            RawOutput::Get(read) => Output::Get { value: read.map(resolve) },
            RawOutput::Delete => Output::Delete,
            RawOutput::Cas(ok) => Output::Cas { ok },
        });
        history.ops.push(Operation {
            process: op.process,
            key: op.key,
            input,
            output,
            call_ns: op.call_ns,
            return_ns: op.return_ns,
        });
        history.origins.push(op.origin);
    }
    Ok(history)
}

/// Parses a JSON-lines history into its operations: [`parse_history`] without the
/// line numbers.
pub fn parse_jsonl(text: &str) -> Result<Vec<Operation>, ParseError> {
    parse_history(text).map(|history| history.ops)
}

/// Writes `ops` as JSON lines in the format read by [`parse_history`]: an
/// `invoke` event at `call_ns` and a completion per operation, all ordered by
/// time (ties keep each process's own sequence).
///
/// A completed operation gets an `ok` event at `return_ns` (or at
/// `u64::MAX` if `return_ns` is `None`); an operation of unknown outcome gets
/// an `info` event at `return_ns`, or at `call_ns` if `return_ns` is `None`
/// (so a process may go on to issue further operations). A cas reported as
/// not swapped (`ok: false`) is written as an `ok` event with value `false`.
///
/// `parse_jsonl(&to_jsonl(ops))` gives back `ops` (in invocation order) as
/// long as no process has two operations outstanding at once and every
/// unknown-outcome operation has `return_ns: None`.
pub fn to_jsonl(ops: &[Operation]) -> String {
    let completion_time = |op: &Operation| {
        let time = match (&op.output, op.return_ns) {
            (Some(_), ret) => ret.unwrap_or(u64::MAX),
            (None, ret) => ret.unwrap_or(op.call_ns),
        };
        time.max(op.call_ns)
    };
    // Rank operations by invocation, so that events at equal times keep
    // each process's invoke / complete / invoke sequence.
    let mut by_call: Vec<usize> = (0..ops.len()).collect();
    by_call.sort_by_key(|&i| (ops[i].call_ns, completion_time(&ops[i]), i));
    // (time, rank, is_completion, index)
    let mut order: Vec<(u64, usize, bool, usize)> = Vec::with_capacity(2 * ops.len());
    for (rank, &i) in by_call.iter().enumerate() {
        order.push((ops[i].call_ns, rank, false, i));
        order.push((completion_time(&ops[i]), rank, true, i));
    }
    order.sort_unstable();

    let mut out = String::new();
    for (time, _, is_completion, i) in order {
        let op = &ops[i];
        let event = if is_completion {
            Event::ok(op, time).unwrap_or_else(|| Event::completion(op, EventType::Info, time))
        } else {
            Event::invoke(op)
        };
        out.push_str(&event.to_json_line());
        out.push('\n');
    }
    out
}

fn cas_pair_json(expected: Option<i64>, new: i64) -> Value {
    Value::Array(vec![expected.map_or(Value::Null, Value::from), Value::from(new)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{check, CheckBudget, CheckResult};

    fn op(
        process: u64,
        key: &str,
        input: Input,
        output: Option<Output>,
        call_ns: u64,
        return_ns: Option<u64>,
    ) -> Operation {
        Operation { process, key: key.to_owned(), input, output, call_ns, return_ns }
    }

    #[test]
    fn jsonl_round_trip() {
        let history = vec![
            op(1, "a \"quoted\" key", Input::Put { value: -3 }, Some(Output::Put), 0, Some(10)),
            op(2, "b", Input::Cas { expected: None, new: 4 }, Some(Output::Cas { ok: true }), 5, Some(10)),
            op(
                1,
                "b",
                Input::Cas { expected: Some(9), new: 5 },
                Some(Output::Cas { ok: false }),
                10,
                Some(10),
            ),
            op(3, "a \"quoted\" key", Input::Get, Some(Output::Get { value: None }), 11, Some(12)),
            op(2, "a \"quoted\" key", Input::Delete, None, 13, None),
            op(2, "b", Input::Get, Some(Output::Get { value: Some(4) }), 14, Some(20)),
        ];
        let text = to_jsonl(&history);
        assert_eq!(text.lines().count(), 12);
        assert_eq!(parse_jsonl(&text), Ok(history));
    }

    #[test]
    fn jsonl_pairs_events_and_handles_fail_and_info() {
        let text = r#"
{"process":0,"type":"invoke","f":"put","key":"x","value":1,"time":0}
{"process":1,"type":"invoke","f":"cas","key":"x","value":[null,2],"time":1}
{"process":0,"type":"ok","f":"put","key":"x","value":1,"time":2}
{"process":1,"type":"info","f":"cas","key":"x","value":[null,2],"time":3}
{"process":0,"type":"invoke","f":"get","key":"x","value":null,"time":4}
{"process":0,"type":"ok","f":"get","key":"x","value":1,"time":5}
{"process":0,"type":"invoke","f":"delete","key":"x","time":6}
{"process":0,"type":"fail","f":"delete","key":"x","time":7,"error":"nope"}
{"process":2,"type":"invoke","f":"cas","key":"x","value":[1,3],"time":8}
{"process":2,"type":"ok","f":"cas","key":"x","value":[1,3],"time":9}
{"process":3,"type":"invoke","f":"put","key":"x","value":4,"time":10}
"#;
        let history = parse_jsonl(text).expect("valid");
        let expected = vec![
            op(0, "x", Input::Put { value: 1 }, Some(Output::Put), 0, Some(2)),
            op(1, "x", Input::Cas { expected: None, new: 2 }, None, 1, None),
            op(0, "x", Input::Get, Some(Output::Get { value: Some(1) }), 4, Some(5)),
            op(2, "x", Input::Cas { expected: Some(1), new: 3 }, Some(Output::Cas { ok: true }), 8, Some(9)),
            op(3, "x", Input::Put { value: 4 }, None, 10, None),
        ];
        assert_eq!(history, expected);
        assert_eq!(check(&history, CheckBudget::default()), CheckResult::Linearizable);
    }

    fn parse_error(text: &str) -> ParseError {
        match parse_jsonl(text) {
            Err(error) => error,
            Ok(ops) => panic!("expected a parse error, got {ops:?}"),
        }
    }

    const INVOKE_PUT: &str = r#"{"process":0,"type":"invoke","f":"put","key":"k","value":1,"time":0}"#;
    const OK_PUT: &str = r#"{"process":0,"type":"ok","f":"put","key":"k","value":1,"time":1}"#;

    #[test]
    fn parse_error_malformed_json() {
        let text = format!("{INVOKE_PUT}\n{OK_PUT}\n{{\"process\":1,\"type\":\n");
        let error = parse_error(&text);
        assert!(matches!(error, ParseError::Json { line: 3, .. }), "{error:?}");
        assert_eq!(error.line(), 3);
        assert!(error.to_string().starts_with("line 3"), "{error}");
    }

    #[test]
    fn parse_error_unknown_type() {
        let text = format!(
            "{INVOKE_PUT}\n{}\n",
            r#"{"process":0,"type":"done","f":"put","key":"k","value":1,"time":1}"#
        );
        let error = parse_error(&text);
        assert_eq!(error.line(), 2);
        assert!(
            matches!(&error, ParseError::InvalidEvent { message, .. } if message.contains("done")),
            "{error:?}"
        );
    }

    #[test]
    fn parse_error_completion_without_invoke() {
        let text = format!("{INVOKE_PUT}\n{OK_PUT}\n{OK_PUT}\n");
        assert_eq!(parse_error(&text), ParseError::CompletionWithoutInvoke { line: 3, process: 0 });
        let error = parse_error(&format!("\n{OK_PUT}"));
        assert_eq!(error.line(), 2);
    }

    #[test]
    fn parse_error_overlapping_invoke() {
        let text = format!("{INVOKE_PUT}\n{INVOKE_PUT}\n");
        assert_eq!(
            parse_error(&text),
            ParseError::OverlappingInvoke { line: 2, process: 0, pending_line: 1 }
        );
    }

    #[test]
    fn parse_error_bad_fields() {
        let cases = [
            (r#"[1,2,3]"#, "object"),
            (r#"{"type":"invoke","f":"put","key":"k","value":1,"time":0}"#, "process"),
            (r#"{"process":-1,"type":"invoke","f":"put","key":"k","value":1,"time":0}"#, "process"),
            (r#"{"process":0,"type":"invoke","f":"incr","key":"k","value":1,"time":0}"#, "incr"),
            (r#"{"process":0,"type":"invoke","f":"put","value":1,"time":0}"#, "key"),
            (r#"{"process":0,"type":"invoke","f":"put","key":"k","value":1}"#, "time"),
            (r#"{"process":0,"type":"invoke","f":"put","key":"k","value":true,"time":0}"#, "put"),
            (r#"{"process":0,"type":"invoke","f":"put","key":"k","value":[1],"time":0}"#, "put"),
            (r#"{"process":0,"type":"invoke","f":"put","key":"k","time":0}"#, "put"),
            (r#"{"process":0,"type":"invoke","f":"put","key":"k","value":1.5,"time":0}"#, "put"),
            (r#"{"process":0,"type":"invoke","f":"get","key":"k","value":1,"time":0}"#, "get"),
            (r#"{"process":0,"type":"invoke","f":"cas","key":"k","value":[1],"time":0}"#, "cas"),
        ];
        for (line, expected) in cases {
            let text = format!("{INVOKE_PUT}\n{OK_PUT}\n{line}\n");
            let error = parse_error(&text);
            assert_eq!(error.line(), 3, "{line}: {error}");
            assert!(matches!(error, ParseError::InvalidEvent { .. }), "{line}: {error:?}");
            assert!(error.to_string().contains(expected), "{line}: {error}");
        }
    }

    #[test]
    fn parse_error_mismatched_completion() {
        let cases = [
            r#"{"process":0,"type":"ok","f":"get","key":"k","value":1,"time":1}"#,
            r#"{"process":0,"type":"ok","f":"put","key":"j","value":1,"time":1}"#,
            r#"{"process":0,"type":"ok","f":"put","key":"k","value":2,"time":1}"#,
        ];
        for completion in cases {
            let text = format!("\n{INVOKE_PUT}\n{completion}\n");
            match parse_error(&text) {
                ParseError::MismatchedCompletion { line, invoke_line, .. } => {
                    assert_eq!((line, invoke_line), (3, 2), "{completion}")
                }
                other => panic!("{completion}: unexpected {other:?}"),
            }
        }
        let early = r#"{"process":0,"type":"invoke","f":"get","key":"k","time":5}
{"process":0,"type":"ok","f":"get","key":"k","value":null,"time":4}"#;
        assert_eq!(parse_error(early).line(), 2);
    }

    #[test]
    fn origins_name_the_lines_of_each_operation() {
        let text = r#"{"process":0,"type":"invoke","f":"put","key":"x","value":1,"time":0}

{"process":1,"type":"invoke","f":"get","key":"x","time":1}
{"process":0,"type":"ok","f":"put","key":"x","value":1,"time":2}
{"process":2,"type":"invoke","f":"put","key":"x","value":3,"time":3}
{"process":2,"type":"fail","f":"put","key":"x","time":4}
{"process":1,"type":"info","f":"get","key":"x","time":5}
{"process":3,"type":"invoke","f":"delete","key":"x","time":6}
"#;
        let history = parse_history(text).expect("valid");
        assert_eq!(history.events, 7);
        assert_eq!(history.failed, 1);
        assert_eq!(
            history.origins,
            [
                Origin { invoke_line: 1, completion_line: Some(4), completion: Completion::Ok },
                Origin { invoke_line: 3, completion_line: Some(7), completion: Completion::Info },
                Origin { invoke_line: 8, completion_line: None, completion: Completion::Missing },
            ]
        );
        assert_eq!(history.describe(0), "put 1 -> ok");
        assert_eq!(history.describe(1), "get -> unknown");
        assert_eq!(history.describe(2), "delete -> unknown");
    }

    #[test]
    fn string_values_get_integers_no_integer_value_uses() {
        // i64::MIN is taken by an integer value, so the string must not get it.
        let text = format!(
            "{}\n{}\n{}\n{}\n",
            r#"{"process":0,"type":"invoke","f":"put","key":"x","value":-9223372036854775808,"time":0}"#,
            r#"{"process":0,"type":"ok","f":"put","key":"x","time":1}"#,
            r#"{"process":0,"type":"invoke","f":"cas","key":"x","value":["a","b"],"time":2}"#,
            r#"{"process":0,"type":"ok","f":"cas","key":"x","value":["a","b"],"time":3}"#,
        );
        let history = parse_history(&text).expect("valid");
        let Input::Cas { expected: Some(a), new: b } = history.ops[1].input else {
            panic!("{:?}", history.ops[1]);
        };
        assert_ne!(a, i64::MIN);
        assert_ne!(b, i64::MIN);
        assert_ne!(a, b);
        assert_eq!(history.value_json(a), Value::from("a"));
        assert_eq!(history.value_json(b), Value::from("b"));
        assert_eq!(history.value_json(i64::MIN), Value::from(i64::MIN));
        assert_eq!(history.describe(1), r#"cas ["a", "b"] -> ok (swapped)"#);
        // The cas expected "a" while the key held the integer: not linearizable.
        assert!(!crate::check(&history.ops, crate::CheckBudget::default()).is_linearizable());
    }

    #[test]
    fn escaped_and_integer_keys_take_the_general_path() {
        let text = r#"{"process":0,"type":"invoke","f":"put","key":"a\"b","value":1,"time":0}
{"process":0,"type":"ok","f":"put","key":"a\"b","value":1,"time":1}
{"process":1,"type":"invoke","f":"get","key":7,"time":2}
{"process":1,"type":"ok","f":"get","key":"7","value":null,"time":3}
"#;
        let history = parse_history(text).expect("valid");
        assert_eq!(history.ops[0].key, "a\"b");
        assert_eq!(history.ops[1].key, "7");
    }
}
