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
        // The agent may refuse to start and exit before reading a byte; a
        // broken pipe then is part of the outcome, not a test failure.
        if let Err(err) = child.stdin.take().unwrap().write_all(input.as_bytes()) {
            assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe, "{err}");
        }
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

/// The three background workers of the library, registered against a
/// database of the test's own, with a fast retry policy and their notes
/// collected, for tests that drive the workers without the binary.
pub struct Workers {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    /// The test's own connection, for writing exchanges and reading
    /// results.
    pub conn: Connection,
    pub workers: nu_coord::BackgroundWorkers,
    /// The conversation the conversation summarizer leaves alone.
    pub current: std::sync::Arc<std::sync::atomic::AtomicI64>,
    pub retry: nu_agent::db::failed_jobs::RetryPolicy,
    notes: std::sync::mpsc::Receiver<nu_agent::events::Event>,
    seen: std::cell::RefCell<Vec<String>>,
    cancel: nu_agent::model::Cancel,
}

/// Retries after 20 ms, then 40 ms, and gives up after the third try.
pub const FAST_RETRY: nu_agent::db::failed_jobs::RetryPolicy =
    nu_agent::db::failed_jobs::RetryPolicy {
        base: Duration::from_millis(20),
        max_attempts: 3,
    };

impl Workers {
    /// Registers the workers with `model`, stopped; [`start`](Self::start)
    /// starts them.
    pub fn new(model: std::sync::Arc<dyn nu_agent::model::Model>) -> Self {
        Self::with_retry(model, FAST_RETRY)
    }

    pub fn with_retry(
        model: std::sync::Arc<dyn nu_agent::model::Model>,
        retry: nu_agent::db::failed_jobs::RetryPolicy,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.db");
        let conn = nu_agent::db::open(&path).unwrap();
        let counter = nu_coord::WorkerCounter::new();
        let workers = nu_coord::BackgroundWorkers::new(&counter);
        let current = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
        let cancel = nu_agent::model::Cancel::new();
        let (tx, notes) = std::sync::mpsc::channel();
        let setup = nu_agent::workers::Setup {
            db_path: path.clone(),
            model,
            current_conversation: current.clone(),
            cancel: cancel.clone(),
            retry,
            // Short, so items whose retry time has come are picked up soon.
            idle_interval: Duration::from_millis(20),
            events: Some(tx),
        };
        nu_agent::workers::register(&workers, &setup).unwrap();
        Self {
            dir,
            path,
            conn,
            workers,
            current,
            retry,
            notes,
            seen: std::cell::RefCell::default(),
            cancel,
        }
    }

    pub fn start(&self) {
        self.workers.start_all().unwrap();
    }

    /// Makes every model call end as cancelled, as at shutdown.
    pub fn cancel_model_calls(&self) {
        self.cancel.cancel();
    }

    /// Makes `id` the conversation in progress.
    pub fn set_current(&self, id: i64) {
        self.current.store(id, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn conversation(&self) -> i64 {
        nu_agent::db::start_conversation(&self.conn).unwrap()
    }

    /// Records an exchange that has begun and not finished.
    pub fn begin(&mut self, conversation: i64, input: &str) -> i64 {
        nu_agent::db::begin_exchange(&mut self.conn, conversation, input, "local").unwrap()
    }

    /// Records the reply of an exchange begun with [`begin`](Self::begin).
    pub fn complete(&mut self, exchange: i64, reply: &str) {
        let completion = nu_agent::model::Completion {
            text: reply.to_owned(),
            model: "local".to_owned(),
            ..Default::default()
        };
        nu_agent::db::complete_exchange(&mut self.conn, exchange, &completion).unwrap();
    }

    /// Records a completed exchange and wakes the exchange summarizer, as
    /// the program does.
    pub fn exchange(&mut self, conversation: i64, input: &str, reply: &str) -> i64 {
        let id = self.begin(conversation, input);
        self.complete(id, reply);
        self.nudge(nu_agent::workers::EXCHANGE_SUMMARIZER);
        id
    }

    pub fn nudge(&self, worker: &str) {
        self.workers.nudge(worker).unwrap();
    }

    /// A number computed by `sql` on the test's connection.
    pub fn count(&self, sql: &str) -> i64 {
        self.conn.query_row(sql, [], |row| row.get(0)).unwrap()
    }

    pub fn exchange_summaries(&self) -> i64 {
        self.count("SELECT count(*) FROM summaries WHERE subject = 'exchange'")
    }

    /// The summary of `subject` `id`: `(summary id, text, model, created_at)`.
    pub fn summary(&self, subject: &str, id: i64) -> Option<(i64, String, String, i64)> {
        use rusqlite::OptionalExtension;
        self.conn
            .query_row(
                "SELECT id, summary, model, created_at FROM summaries
                 WHERE subject = ?1 AND subject_id = ?2",
                rusqlite::params![subject, id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
            .unwrap()
    }

    /// The embedding of summary `summary_id`: `(row id, model, vector)`.
    pub fn embedding(&self, summary_id: i64) -> Option<(i64, String, Vec<f32>)> {
        use rusqlite::OptionalExtension;
        self.conn
            .query_row(
                "SELECT id, model, dimension, vector FROM embeddings WHERE summary_id = ?1",
                [summary_id],
                |r| {
                    let dimension: i64 = r.get(2)?;
                    let vector = nu_agent::workers::blob_to_vector(&r.get::<_, Vec<u8>>(3)?);
                    assert_eq!(dimension as usize, vector.len(), "the stored dimension");
                    Ok((r.get(0)?, r.get(1)?, vector))
                },
            )
            .optional()
            .unwrap()
    }

    /// Summaries that have no embedding yet.
    pub fn unembedded(&self) -> i64 {
        self.count(
            "SELECT count(*) FROM summaries s
             WHERE NOT EXISTS (SELECT 1 FROM embeddings e WHERE e.summary_id = s.id)",
        )
    }

    pub fn failed_jobs(&self) -> Vec<nu_agent::db::failed_jobs::FailedJob> {
        nu_agent::db::failed_jobs::failed_jobs(&self.conn).unwrap()
    }

    pub fn failed_job(
        &self,
        worker: &str,
        item: i64,
    ) -> Option<nu_agent::db::failed_jobs::FailedJob> {
        self.failed_jobs()
            .into_iter()
            .find(|job| job.worker == worker && job.item == item.to_string())
    }

    pub fn status(&self, worker: &str) -> nu_coord::WorkerStatus {
        self.workers.status(worker).unwrap()
    }

    /// Every note the workers have sent so far.
    pub fn notes(&self) -> Vec<String> {
        let mut seen = self.seen.borrow_mut();
        seen.extend(self.notes.try_iter().filter_map(|event| match event {
            nu_agent::events::Event::Note(note) => Some(note),
            _ => None,
        }));
        seen.clone()
    }

    /// Polls `condition` every few milliseconds until it holds; panics
    /// with `what` and the workers' state if it does not within
    /// [`PATIENCE`].
    pub fn wait(&self, what: &str, mut condition: impl FnMut(&Self) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if condition(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if condition(self) {
            return;
        }
        panic!(
            "gave up waiting for {what}\nworkers: {:#?}\nfailed jobs: {:#?}",
            self.workers.statuses(),
            self.failed_jobs()
        );
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.cancel.cancel();
        let _ = self.workers.stop_all(PATIENCE);
    }
}

impl Sandbox {
    /// A number computed by `sql` on this sandbox's database, read through
    /// a connection of the test's own while an agent may be using it;
    /// `None` while the database does not exist or lacks its tables.
    pub fn query(&self, sql: &str) -> Option<i64> {
        use rusqlite::OpenFlags;
        let conn = Connection::open_with_flags(
            self.db(),
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .ok()?;
        conn.busy_timeout(Duration::from_secs(5)).ok()?;
        conn.query_row(sql, [], |row| row.get(0)).ok()
    }
}
