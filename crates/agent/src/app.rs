//! The running program: its database, owner lock, counts mirror, model,
//! workers and coordinator, and the foreground loop's shared steps.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use nu_coord::{BackgroundWorkers, CountsMirror, WorkCoordinator, WorkerCounter};
use rusqlite::Connection;
use tracing::{debug, info, warn};

use crate::db::{self, failed_jobs::RetryPolicy};
use crate::events::{Event, Events};
use crate::exchange::{self, ExchangeRequest, Finished};
use crate::model::{self, Cancel, Model};
use crate::owner::Owner;
use crate::workers;

/// How long an idle worker sleeps when nothing wakes it: new work wakes it
/// at once; this only bounds how late an item whose retry time has come is
/// picked up.
pub const WORKER_IDLE_INTERVAL: Duration = Duration::from_secs(15);

/// How long shutdown waits for workers to finish their units.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// How long a cancelled exchange is waited for before the prompt returns
/// without it (a model call blocked in the network may take a while to
/// notice; its thread finishes and records the cancellation on its own).
pub const CANCEL_WAIT: Duration = Duration::from_secs(3);

/// Everything the shell runs on.
pub struct App {
    /// The history database's path.
    pub db_path: PathBuf,
    /// The REPL thread's own connection (commands, status).
    pub conn: Connection,
    /// Who answers.
    pub model: Arc<dyn Model>,
    /// Live counts of exchanges and workers.
    pub counter: WorkerCounter,
    /// The background workers.
    pub workers: BackgroundWorkers,
    /// Safe states for backups and editors.
    pub coordinator: WorkCoordinator,
    /// Messages from other threads to the terminal.
    pub events: Events,
    /// `true` for the REPL on a terminal, `false` in pipe mode.
    pub interactive: bool,
    /// Set by the Ctrl-C handler, cleared when an interrupt is acted on.
    pub interrupt_pending: Arc<AtomicBool>,
    conversation_id: Option<i64>,
    /// Exchanges started by this run; numbers their events.
    exchanges: u64,
    /// Shared with the conversation summarizer, which skips it.
    current_conversation: Arc<AtomicI64>,
    /// Ends workers' model calls at shutdown.
    worker_cancel: Cancel,
    notes: Vec<String>,
    mirror: Option<CountsMirror>,
    owner: Option<Owner>,
}

impl App {
    /// Opens the database at `db_path` as its one owner, with the model
    /// named by `model_spec`.
    ///
    /// # Errors
    ///
    /// The database is refused (not a database, newer schema, owned by
    /// another agent) or the model spec is wrong. Nothing is written to a
    /// refused file.
    pub fn open(db_path: &Path, model_spec: &str, interactive: bool) -> Result<App> {
        let model = model::from_spec(model_spec)?;
        db::check(db_path)?;
        if let Some(dir) = db_path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("could not create {}", dir.display()))?;
        }
        let owner = Owner::acquire(db_path)?;
        let conn = db::open(db_path)?;
        let interrupted = db::fail_interrupted(&conn)?;
        if interrupted > 0 {
            warn!("{interrupted} exchange(s) left running by an earlier run were marked failed");
        }

        let counter = WorkerCounter::new();
        // Taking over the counts mirror resets whatever a crashed run left.
        let mirror = CountsMirror::start(&counter, db::connect(db_path)?)
            .context("could not start the counts mirror")?;
        let workers = BackgroundWorkers::new(&counter);
        let coordinator = WorkCoordinator::new(&counter, &workers);
        let events = Events::new();
        let current_conversation = Arc::new(AtomicI64::new(0));
        let worker_cancel = Cancel::new();
        let setup = workers::Setup {
            db_path: db_path.to_owned(),
            model: model.clone(),
            current_conversation: current_conversation.clone(),
            cancel: worker_cancel.clone(),
            retry: RetryPolicy::default(),
            idle_interval: WORKER_IDLE_INTERVAL,
            events: Some(events.tx.clone()),
        };
        workers::register(&workers, &setup)?;
        for name in workers::NAMES {
            if db::config_get(&conn, &workers::enabled_key(name))?.as_deref() == Some("false") {
                workers.disable(name, SHUTDOWN_WAIT)?;
            }
        }
        workers.start_all()?;
        info!(db = %db_path.display(), model = model.name(), "agent started");
        Ok(App {
            db_path: db_path.to_owned(),
            conn,
            model,
            counter,
            workers,
            coordinator,
            events,
            interactive,
            interrupt_pending: Arc::new(AtomicBool::new(false)),
            conversation_id: None,
            exchanges: 0,
            current_conversation,
            worker_cancel,
            notes: Vec::new(),
            mirror: Some(mirror),
            owner: Some(owner),
        })
    }

    /// Runs one exchange to its end, printing the reply as it arrives.
    /// Ctrl-C (an [`Event::Interrupt`]) cancels it.
    ///
    /// # Errors
    ///
    /// Only if no orchestrator thread could be started; a failed exchange
    /// is reported on standard error and recorded, not returned.
    pub fn ask(&mut self, input: &str) -> Result<Finished> {
        self.drain_stale_events();
        let conversation_id = match self.conversation_id {
            Some(id) => id,
            None => {
                let id = db::start_conversation(&self.conn)?;
                self.conversation_id = Some(id);
                self.current_conversation.store(id, Ordering::SeqCst);
                id
            }
        };
        let cancel = Cancel::new();
        self.exchanges += 1;
        let number = self.exchanges;
        exchange::spawn(ExchangeRequest {
            number,
            db_path: self.db_path.clone(),
            conversation_id,
            input: input.to_owned(),
            model: self.model.clone(),
            counter: self.counter.clone(),
            cancel: cancel.clone(),
            events: self.events.tx.clone(),
            on_completed: self.on_exchange_completed(),
        })
        .context("could not start an orchestrator thread")?;

        let mut stdout = std::io::stdout();
        let mut wrote_text = false;
        let mut cancelled_at = None;
        let finished = loop {
            let event = match cancelled_at {
                None => self.events.rx.recv().ok(),
                Some(at) => {
                    let left = CANCEL_WAIT.saturating_sub(std::time::Instant::now() - at);
                    self.events.rx.recv_timeout(left).ok()
                }
            };
            match event {
                Some(Event::Text(n, text)) if n == number => {
                    let _ = write!(stdout, "{text}");
                    let _ = stdout.flush();
                    wrote_text = true;
                }
                Some(Event::Finished(n, finished)) if n == number => break finished,
                // Late words of an earlier exchange abandoned after a
                // cancel: its thread records its own end.
                Some(Event::Text(..) | Event::Finished(..)) => {}
                Some(Event::Interrupt) => {
                    self.interrupt_pending.store(false, Ordering::SeqCst);
                    if cancelled_at.is_none() {
                        cancel.cancel();
                        cancelled_at = Some(std::time::Instant::now());
                    }
                }
                Some(Event::Note(note)) => self.notes.push(note),
                None => {
                    // The thread is still in a model call that has not
                    // noticed the cancel; it records the end on its own.
                    break Finished::Cancelled { id: None };
                }
            }
        };
        if wrote_text {
            let _ = writeln!(stdout);
        }
        match &finished {
            Finished::Completed { id, took } => {
                debug!(exchange = id, ?took, "reply complete");
            }
            Finished::Failed { error, .. } => eprintln!("exchange failed: {error}"),
            Finished::Cancelled { .. } => eprintln!("exchange cancelled"),
        }
        Ok(finished)
    }

    /// What to do when an exchange is recorded: wake the worker that
    /// summarises it.
    fn on_exchange_completed(&self) -> Option<Box<dyn FnOnce() + Send>> {
        let summarizer = self.workers.nudger(workers::EXCHANGE_SUMMARIZER).ok()?;
        Some(Box::new(move || summarizer.nudge()))
    }

    /// Drops Ctrl-C presses and text left over from before this exchange,
    /// keeping worker notes.
    fn drain_stale_events(&mut self) {
        while let Ok(event) = self.events.rx.try_recv() {
            match event {
                Event::Note(note) => self.notes.push(note),
                Event::Interrupt => self.interrupt_pending.store(false, Ordering::SeqCst),
                Event::Text(..) | Event::Finished(..) => {}
            }
        }
    }

    /// Prints worker notes that arrived since the last prompt: on the
    /// terminal between prompts, or on standard error in pipe mode so that
    /// standard output holds replies only.
    pub fn flush_notes(&mut self) {
        self.drain_stale_events();
        for note in self.notes.drain(..) {
            if self.interactive {
                println!("{note}");
            } else {
                eprintln!("{note}");
            }
        }
    }

    /// The current conversation, if it has started.
    pub fn conversation_id(&self) -> Option<i64> {
        self.conversation_id
    }

    /// The size of the database, its write-ahead log included.
    pub fn db_size(&self) -> u64 {
        db_size(&self.db_path)
    }

    /// Stops the workers (bounded), writes the final counts and releases
    /// the database.
    ///
    /// # Errors
    ///
    /// A worker did not stop in time; everything else was still released.
    pub fn shutdown(mut self) -> Result<()> {
        self.worker_cancel.cancel();
        let stopped = self.workers.stop_all(SHUTDOWN_WAIT);
        // Wait (bounded) for an exchange abandoned after a cancel.
        if !self
            .counter
            .wait_for_idle(nu_coord::WorkerKind::Orchestrator, SHUTDOWN_WAIT)
        {
            warn!("an exchange was still running at shutdown");
        }
        drop(self.mirror.take());
        drop(self.owner.take());
        info!("agent stopped");
        stopped.context("stopping the background workers")
    }
}

/// The size of a SQLite database with its write-ahead log.
pub fn db_size(path: &Path) -> u64 {
    let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    size(path) + size(Path::new(&wal))
}

/// `count` with the noun's singular or plural form.
pub fn plural(count: i64, one: &str, many: &str) -> String {
    if count == 1 {
        format!("1 {one}")
    } else {
        format!("{count} {many}")
    }
}

/// Formats a byte count for people.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
