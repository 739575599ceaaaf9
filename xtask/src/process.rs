//! Running child processes: every command is echoed before it runs, runs from the
//! workspace root, and a failure names the exact command line that failed.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use anyhow::{Context, Result};

/// The workspace root: the parent of this package's directory.
///
/// Read from the environment `cargo run` sets before falling back to the compile-time path:
/// cargo can reuse an xtask binary built from a copy of the workspace at another path (its
/// artifact hashes do not depend on where the workspace lives), and the tasks must act on the
/// tree they were started from.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.join("Cargo.toml").is_file())
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir.parent().expect("xtask lives one level below the workspace root").to_path_buf()
}

/// A child process exited unsuccessfully. `cargo xtask` exits with the same code, so a
/// caller (CI, a script) sees what the tool itself returned.
#[derive(Debug)]
pub struct CommandFailed {
    pub command: String,
    pub status: ExitStatus,
}

impl CommandFailed {
    /// The exit code to propagate: the child's own, or 1 if a signal ended it.
    pub fn exit_code(&self) -> u8 {
        match self.status.code() {
            Some(code) if (1..=255).contains(&code) => code as u8,
            _ => 1,
        }
    }
}

impl fmt::Display for CommandFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status.code() {
            Some(code) => write!(f, "`{}` exited with code {code}", self.command),
            None => write!(f, "`{}` was ended by a signal ({})", self.command, self.status),
        }
    }
}

impl std::error::Error for CommandFailed {}

/// A command line to run from the workspace root.
#[derive(Debug, Clone)]
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    envs_removed: Vec<OsString>,
}

impl Cmd {
    pub fn new(program: impl AsRef<OsStr>) -> Cmd {
        Cmd {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            envs: Vec::new(),
            envs_removed: Vec::new(),
        }
    }

    /// `cargo`, the same binary that runs this xtask (so the same toolchain).
    pub fn cargo() -> Cmd {
        Cmd::new(std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo")))
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Cmd {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args.extend(args.into_iter().map(|arg| arg.as_ref().to_owned()));
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Cmd {
        self.envs.push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Runs the command without `key` in its environment (a setting of this process that
    /// must not reach it).
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Cmd {
        self.envs_removed.push(key.as_ref().to_owned());
        self
    }

    /// The command line as a user would type it: `cargo` rather than the full path of the
    /// cargo binary, environment assignments first.
    pub fn display(&self) -> String {
        let mut words: Vec<String> = self
            .envs
            .iter()
            .map(|(key, value)| format!("{}={}", key.to_string_lossy(), quote(&value.to_string_lossy())))
            .collect();
        let program = Path::new(&self.program);
        let is_cargo = std::env::var_os("CARGO").is_some_and(|cargo| cargo == self.program);
        let program_name =
            if is_cargo { "cargo".to_string() } else { program.to_string_lossy().into_owned() };
        words.push(program_name);
        words.extend(self.args.iter().map(|arg| quote(&arg.to_string_lossy())));
        words.join(" ")
    }

    /// The [`Command`] to spawn, for a caller that handles the child's output itself.
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args).current_dir(workspace_root());
        for key in &self.envs_removed {
            command.env_remove(key);
        }
        for (key, value) in &self.envs {
            command.env(key, value);
        }
        command
    }

    /// Runs the command with inherited stdio; an unsuccessful exit is a [`CommandFailed`].
    pub fn run(&self) -> Result<()> {
        eprintln!("$ {}", self.display());
        let status =
            self.command().status().with_context(|| format!("could not start `{}`", self.display()))?;
        if status.success() {
            Ok(())
        } else {
            Err(CommandFailed { command: self.display(), status }.into())
        }
    }

    /// Whether the command runs and succeeds, with its output discarded: a probe for a tool.
    pub fn succeeds(&self) -> bool {
        self.command()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Runs the command, capturing stdout (stderr goes to the terminal), and returns stdout.
    pub fn read(&self) -> Result<String> {
        eprintln!("$ {}", self.display());
        let output = self
            .command()
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("could not start `{}`", self.display()))?;
        if !output.status.success() {
            return Err(CommandFailed { command: self.display(), status: output.status }.into());
        }
        String::from_utf8(output.stdout)
            .with_context(|| format!("`{}` printed non-UTF-8 output", self.display()))
    }

    /// Runs the command and hands each line of stdout to `on_line` as it arrives (stderr goes
    /// to the terminal).
    pub fn read_lines(&self, mut on_line: impl FnMut(&str) -> Result<()>) -> Result<()> {
        eprintln!("$ {}", self.display());
        let mut child = self
            .command()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("could not start `{}`", self.display()))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut result = Ok(());
        for line in BufReader::new(stdout).lines() {
            let line = match line {
                Ok(line) => line,
                Err(error) => {
                    result =
                        Err(error).with_context(|| format!("reading the output of `{}`", self.display()));
                    break;
                }
            };
            // After a failure keep draining stdout, so the child never blocks on a full pipe.
            if result.is_ok() {
                result = on_line(&line);
            }
        }
        let status = child.wait().with_context(|| format!("waiting for `{}`", self.display()))?;
        if !status.success() {
            return Err(CommandFailed { command: self.display(), status }.into());
        }
        result
    }
}

/// The command line a task passes through to a tool: each flag with its value where the
/// value is given, each switch where it is on, in the order added.
#[derive(Debug, Default)]
pub struct ArgList(Vec<OsString>);

impl ArgList {
    pub fn new() -> ArgList {
        ArgList::default()
    }

    /// `word` as it is.
    pub fn arg(mut self, word: impl Into<OsString>) -> ArgList {
        self.0.push(word.into());
        self
    }

    /// `flag value` when `value` is given, nothing otherwise.
    pub fn value(mut self, flag: &str, value: Option<impl fmt::Display>) -> ArgList {
        if let Some(value) = value {
            self.0.push(flag.into());
            self.0.push(value.to_string().into());
        }
        self
    }

    /// `flag` when `on`.
    pub fn switch(mut self, flag: &str, on: bool) -> ArgList {
        if on {
            self.0.push(flag.into());
        }
        self
    }

    /// `words` as they are.
    pub fn args(mut self, words: impl IntoIterator<Item = OsString>) -> ArgList {
        self.0.extend(words);
        self
    }

    pub fn into_vec(self) -> Vec<OsString> {
        self.0
    }
}

/// Quotes a word for display if a shell would split or expand it.
fn quote(word: &str) -> String {
    let plain =
        !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "-_=.,/:+@%".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_quotes_only_words_that_need_it() {
        let cmd = Cmd::new("cargo").env("RUSTDOCFLAGS", "-D warnings").args(["doc", "--workspace", ""]);
        assert_eq!(cmd.display(), "RUSTDOCFLAGS='-D warnings' cargo doc --workspace ''");
        assert_eq!(quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn arg_lists_hold_given_values_and_switches_that_are_on() {
        let args = ArgList::new()
            .arg("file")
            .value("--seed", Some(7))
            .value("--name", None::<&str>)
            .switch("--quick", true)
            .switch("--json", false)
            .args(["--", "rest"].map(OsString::from))
            .into_vec();
        assert_eq!(args, ["file", "--seed", "7", "--quick", "--", "rest"]);
    }

    #[test]
    fn workspace_root_holds_the_workspace_manifest() {
        let manifest = std::fs::read_to_string(workspace_root().join("Cargo.toml")).unwrap();
        assert!(manifest.contains("[workspace]"));
    }
}
