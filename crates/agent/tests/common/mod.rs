//! Running the built `nu-agent` binary against a database of the test's
//! own, and reading what it left in the database.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rusqlite::Connection;

/// Long enough that a test never hits it unless something is broken.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A private home for one test: its database and data directory.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("history.db")
    }

    /// The agent, with this sandbox's database and data directory, and no
    /// model settings from the environment of whoever runs the tests.
    pub fn command(&self) -> Command {
        let mut cmd = self.bare_command();
        cmd.arg("--db").arg(self.db());
        cmd
    }

    /// The agent with this sandbox's environment but no `--db`.
    pub fn bare_command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nu-agent"));
        cmd.env("XDG_DATA_HOME", self.dir.path().join("data"))
            .env("HOME", self.dir.path())
            .env_remove("NU_AGENT_DB")
            .env_remove("NU_AGENT_MODEL")
            .env_remove("NU_AGENT_LOCAL_LATENCY_MS")
            .env_remove("OPENAI_API_KEY")
            .env_remove("OPENAI_BASE_URL")
            .env_remove("OPENAI_API_BASE")
            .env_remove("RUST_LOG");
        cmd
    }

    /// Runs the agent in pipe mode on `input` and waits for it.
    pub fn pipe(&self, input: &str) -> Output {
        self.pipe_with(self.command(), input)
    }

    pub fn pipe_with(&self, mut cmd: Command, input: &str) -> Output {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// Starts the agent in pipe mode with standard input left open.
    pub fn spawn(&self, mut cmd: Command) -> Child {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Runs `nu-agent status` on this sandbox's database; its output, or
    /// its error when it failed (the database may not exist yet).
    pub fn status(&self) -> String {
        let out = self.command().arg("status").output().unwrap();
        if out.status.success() {
            text(&out.stdout)
        } else {
            format!("failed: {}", text(&out.stderr))
        }
    }

    pub fn conn(&self) -> Connection {
        Connection::open(self.db()).unwrap()
    }

    /// `(status, user_input)` of every exchange, in order.
    pub fn exchanges(&self) -> Vec<(String, String)> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT status, user_input FROM exchanges ORDER BY id")
            .unwrap();
        stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Polls `condition` until it holds or `PATIENCE` passes; only to observe
/// another process from a test.
pub fn wait_for(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    condition()
}

/// The value of `field:` in `nu-agent status` output.
pub fn field(status: &str, name: &str) -> Option<String> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name}:")))
        .map(|v| v.trim().to_owned())
}

pub fn file_bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}
