//! A port of the seed design that `nu-coord` reimplements, kept only as a
//! baseline for the benchmarks and the report. The library never uses it.
//!
//! The seed is written in Ruby. It keeps its worker counts in a database
//! `metadata` table and changes them in one transaction per increment or
//! decrement; its token pauses with a mutex and a condition variable; every
//! wait polls. The port keeps all of that, so the numbers measured here are
//! what the seed's design costs, not what a tuned version of it would cost:
//!
//! - [`SeedCounter`] is the seed's `WorkerCounterV2` over one SQLite
//!   connection (a file in a temporary directory, WAL journal,
//!   `synchronous=NORMAL`, statements cached).
//! - [`SeedToken`] is `WorkerTokenV2`.
//! - [`SeedTask`] is `PausableTaskWithToken` with the base task loop it
//!   relies on, plus a measuring hook that tells when the worker really
//!   blocks in its pause.
//! - [`SeedManager`] is the background worker manager the seed's
//!   coordinator calls.
//! - [`SeedCoordinator`] is the seed's `WorkCoordinator`.
//!
//! Each item says what the seed does; where the seed leaves a piece out
//! (the base task loop, the manager), the item says what the port assumes.

#![allow(dead_code)] // shared by the criterion bench and the report, each of which uses only part

use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OptionalExtension};
use tempfile::TempDir;

/// How often the seed's waits poll: `sleep 0.05` in `wait_for_idle` and in
/// `wait_until_paused`.
pub const POLL: Duration = Duration::from_millis(50);

/// How long a paused seed worker sleeps on its condition variable before it
/// looks at the shutdown flag again: `@pause_cv.wait(@mutex, 0.1)`.
pub const PAUSE_WAIT: Duration = Duration::from_millis(100);

/// The seed's default timeout for `wait_until_paused` and `wait_for_idle`
/// (`timeout: 5`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The seed's worker types: `WORKER_TYPES = [:orchestrator, :background_worker]`.
///
/// The seed validates a symbol at run time (`validate_type!`); an enum makes
/// that check unnecessary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SeedKind {
    /// `:orchestrator`
    Orchestrator,
    /// `:background_worker`
    BackgroundWorker,
}

impl SeedKind {
    /// `WORKER_TYPES`, in the seed's order.
    pub const ALL: [SeedKind; 2] = [SeedKind::Orchestrator, SeedKind::BackgroundWorker];

    /// The type's name, as the seed writes the symbol.
    pub fn as_str(self) -> &'static str {
        match self {
            SeedKind::Orchestrator => "orchestrator",
            SeedKind::BackgroundWorker => "background_worker",
        }
    }

    /// `counter_key(type)`: `"active_#{type}_count"`.
    pub fn counter_key(self) -> &'static str {
        match self {
            SeedKind::Orchestrator => "active_orchestrator_count",
            SeedKind::BackgroundWorker => "active_background_worker_count",
        }
    }
}

// ---------------------------------------------------------------------------
// WorkerCounterV2
// ---------------------------------------------------------------------------

/// The seed's `WorkerCounterV2`: worker counts kept in the database.
///
/// The seed holds a database handle and a mutex next to it; every database
/// call happens under that mutex. Here the mutex owns the one connection.
/// Every increment and decrement is a transaction of its own
/// (`BEGIN; SELECT value ...; UPDATE ...; COMMIT`), clamped at zero, and
/// every read of a count is a query.
pub struct SeedCounter {
    db: Mutex<Connection>,
    path: PathBuf,
    /// Keeps the temporary directory (and the database in it) alive.
    _dir: Option<TempDir>,
}

/// The seed's application object calls the counter through its history
/// (`@history.increment_workers(@type)`, `@history.active_count(...)`);
/// for these calls the history only delegates, so the port lets the counter
/// stand for it.
pub type SeedHistory = SeedCounter;

impl SeedCounter {
    /// Opens a fresh database file in a new temporary directory, removed when
    /// the counter is dropped.
    pub fn open_temp() -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("seed.db");
        let mut counter = Self::open(&path)?;
        counter._dir = Some(dir);
        Ok(counter)
    }

    /// Opens (or creates) the database at `path`, creates the `metadata`
    /// table if needed and makes sure both counter keys exist, as the seed's
    /// constructor does (`ensure_metadata_keys`).
    ///
    /// The connection uses a WAL journal with `synchronous=NORMAL`, the
    /// settings the library's mirror uses too, so that the comparison is
    /// about the design and not about a slower journal.
    pub fn open(path: &Path) -> rusqlite::Result<Self> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch("CREATE TABLE IF NOT EXISTS metadata (key TEXT PRIMARY KEY, value)")?;
        let counter = Self {
            db: Mutex::new(conn),
            path: path.to_owned(),
            _dir: None,
        };
        counter.ensure_metadata_keys()?;
        Ok(counter)
    }

    /// The database file, for a second connection to read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `ensure_metadata_keys`: inserts a zero for every type whose key is
    /// missing.
    fn ensure_metadata_keys(&self) -> rusqlite::Result<()> {
        let db = lock(&self.db);
        for kind in SeedKind::ALL {
            let key = kind.counter_key();
            let existing: Option<i64> = db
                .prepare_cached("SELECT 1 FROM metadata WHERE key = ?1")?
                .query_row([key], |row| row.get(0))
                .optional()?;
            if existing.is_none() {
                db.prepare_cached("INSERT INTO metadata (key, value) VALUES (?1, ?2)")?
                    .execute(params![key, 0_i64])?;
            }
        }
        Ok(())
    }

    /// `increment_workers(type)`: one transaction; returns the new count.
    pub fn increment_workers(&self, kind: SeedKind) -> rusqlite::Result<i64> {
        self.modify_counter(kind, 1)
    }

    /// `decrement_workers(type)`: one transaction; returns the new count,
    /// never below zero.
    pub fn decrement_workers(&self, kind: SeedKind) -> rusqlite::Result<i64> {
        self.modify_counter(kind, -1)
    }

    /// `active_count(type)`: a query under the mutex; a missing key reads
    /// as zero.
    pub fn active_count(&self, kind: SeedKind) -> rusqlite::Result<i64> {
        let db = lock(&self.db);
        let value: Option<i64> = db
            .prepare_cached("SELECT value FROM metadata WHERE key = ?1")?
            .query_row([kind.counter_key()], |row| row.get(0))
            .optional()?;
        Ok(value.unwrap_or(0))
    }

    /// `all_counts`: one query per type, one after the other.
    pub fn all_counts(&self) -> rusqlite::Result<Vec<(SeedKind, i64)>> {
        SeedKind::ALL
            .into_iter()
            .map(|kind| Ok((kind, self.active_count(kind)?)))
            .collect()
    }

    /// `any_active?(type = nil)`: with no type, any type with a count above
    /// zero (stopping at the first, like Ruby's `any?`).
    pub fn any_active(&self, kind: Option<SeedKind>) -> rusqlite::Result<bool> {
        match kind {
            Some(kind) => Ok(self.active_count(kind)? > 0),
            None => {
                for kind in SeedKind::ALL {
                    if self.active_count(kind)? > 0 {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
        }
    }

    /// `workers_idle?(type = nil)`.
    pub fn workers_idle(&self, kind: Option<SeedKind>) -> rusqlite::Result<bool> {
        Ok(!self.any_active(kind)?)
    }

    /// `wait_for_idle(type:, timeout:)`: checks, then gives up if the
    /// deadline has passed, then sleeps 50 ms, and again. A release is
    /// noticed only at the next check, so a waiter learns of it up to 50 ms
    /// late.
    pub fn wait_for_idle(
        &self,
        kind: Option<SeedKind>,
        timeout: Duration,
    ) -> rusqlite::Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.workers_idle(kind)? {
                return Ok(true);
            }
            if Instant::now() > deadline {
                return Ok(false);
            }
            thread::sleep(POLL);
        }
    }

    /// `modify_counter(type, delta)`: under the mutex, `BEGIN TRANSACTION`,
    /// read the value, write `max(value + delta, 0)`, `COMMIT`; on any error
    /// `ROLLBACK` and raise.
    fn modify_counter(&self, kind: SeedKind, delta: i64) -> rusqlite::Result<i64> {
        let key = kind.counter_key();
        let db = lock(&self.db);
        db.prepare_cached("BEGIN TRANSACTION")?.execute([])?;
        let body = || -> rusqlite::Result<i64> {
            let current: Option<i64> = db
                .prepare_cached("SELECT value FROM metadata WHERE key = ?1")?
                .query_row([key], |row| row.get(0))
                .optional()?;
            let new_value = (current.unwrap_or(0) + delta).max(0);
            db.prepare_cached("UPDATE metadata SET value = ?1 WHERE key = ?2")?
                .execute(params![new_value, key])?;
            db.prepare_cached("COMMIT")?.execute([])?;
            Ok(new_value)
        };
        body().inspect_err(|_| {
            // The original error is the one raised; a failed rollback adds
            // nothing to it.
            let _ = db.execute_batch("ROLLBACK");
        })
    }
}

impl fmt::Debug for SeedCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeedCounter")
            .field("path", &self.path)
            .finish()
    }
}

// ---------------------------------------------------------------------------
// WorkerTokenV2
// ---------------------------------------------------------------------------

/// The error the seed raises when `pause` or `resume` is called on a token
/// that is not pausable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotPausable(pub String);

impl fmt::Display for NotPausable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Worker {} is not pausable", self.0)
    }
}

impl std::error::Error for NotPausable {}

/// The state the seed keeps in instance variables behind `@mutex`.
#[derive(Debug, Default)]
struct TokenState {
    /// `@active`
    active: bool,
    /// `@paused`
    paused: bool,
}

/// The seed's `WorkerTokenV2`: one mutex guards the active and paused
/// flags, and a condition variable wakes a paused worker.
///
/// `activate` and `release` call the counter (a database transaction) while
/// holding the token's mutex. `check_pause` takes the mutex on every call,
/// paused or not. `wait_until_paused` polls the paused *flag*: it returns as
/// soon as `pause` has been called, whether or not the worker has reached
/// `check_pause` and blocked.
pub struct SeedToken {
    history: Arc<SeedHistory>,
    kind: SeedKind,
    pausable: bool,
    name: String,
    state: Mutex<TokenState>,
    pause_cv: Condvar,
}

impl SeedToken {
    /// `WorkerTokenV2.new(history, type:, pausable:, name:)`; the default
    /// name is the type and an object id, here a process-wide number.
    pub fn new(
        history: &Arc<SeedHistory>,
        kind: SeedKind,
        pausable: bool,
        name: Option<&str>,
    ) -> Self {
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let name = match name {
            Some(name) => name.to_owned(),
            None => format!(
                "{}_{}",
                kind.as_str(),
                NEXT_ID.fetch_add(1, Ordering::Relaxed)
            ),
        };
        Self {
            history: history.clone(),
            kind,
            pausable,
            name,
            state: Mutex::new(TokenState::default()),
            pause_cv: Condvar::new(),
        }
    }

    /// `type`
    pub fn kind(&self) -> SeedKind {
        self.kind
    }

    /// `name`
    pub fn name(&self) -> &str {
        &self.name
    }

    // Counting (all types) -------------------------------------------------

    /// `activate`: under the token's mutex, if not active, increments the
    /// counter (a database transaction) and sets the flag.
    pub fn activate(&self) -> rusqlite::Result<()> {
        let mut state = lock(&self.state);
        if state.active {
            return Ok(());
        }
        self.history.increment_workers(self.kind)?;
        state.active = true;
        Ok(())
    }

    /// `release`: under the token's mutex, if active, decrements the counter
    /// (a database transaction) and clears the flag.
    pub fn release(&self) -> rusqlite::Result<()> {
        let mut state = lock(&self.state);
        if !state.active {
            return Ok(());
        }
        self.history.decrement_workers(self.kind)?;
        state.active = false;
        Ok(())
    }

    /// `active?`
    pub fn is_active(&self) -> bool {
        lock(&self.state).active
    }

    // Pausing (pausable tokens only) --------------------------------------

    /// `pause`: raises unless pausable; sets the flag under the mutex. It
    /// wakes nobody: the worker sees the flag at its next `check_pause`.
    pub fn pause(&self) -> Result<(), NotPausable> {
        if !self.pausable {
            return Err(NotPausable(self.name.clone()));
        }
        let mut state = lock(&self.state);
        if state.paused {
            return Ok(());
        }
        state.paused = true;
        Ok(())
    }

    /// `resume`: raises unless pausable; clears the flag and broadcasts
    /// under the mutex.
    pub fn resume(&self) -> Result<(), NotPausable> {
        if !self.pausable {
            return Err(NotPausable(self.name.clone()));
        }
        let mut state = lock(&self.state);
        if !state.paused {
            return Ok(());
        }
        state.paused = false;
        self.pause_cv.notify_all();
        Ok(())
    }

    /// `check_pause(&shutdown_check)`: returns at once for a token that is
    /// not pausable; otherwise takes the mutex (every call, paused or not)
    /// and, while paused, checks the shutdown block and waits on the
    /// condition variable for at most 0.1 s at a time.
    #[inline]
    pub fn check_pause(&self, shutdown: impl Fn() -> bool) {
        self.check_pause_observed(shutdown, || {});
    }

    /// [`check_pause`](Self::check_pause) with a measuring hook, not part of
    /// the seed: `on_block` runs once, under the mutex, just before the
    /// worker first blocks on the condition variable, that is at the moment
    /// it really parks.
    #[inline]
    pub fn check_pause_observed(&self, shutdown: impl Fn() -> bool, on_block: impl FnOnce()) {
        if !self.pausable {
            return;
        }
        let mut on_block = Some(on_block);
        let mut state = lock(&self.state);
        while state.paused {
            if shutdown() {
                break;
            }
            if let Some(hook) = on_block.take() {
                hook();
            }
            state = self
                .pause_cv
                .wait_timeout(state, PAUSE_WAIT)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// `paused?`
    pub fn is_paused(&self) -> bool {
        lock(&self.state).paused
    }

    /// `wait_until_paused(timeout:)`: `true` at once for a token that is not
    /// pausable or whose flag is set; otherwise polls the flag every 50 ms
    /// until the deadline.
    ///
    /// It looks at the flag that `pause` sets, not at the worker: it returns
    /// `true` right after `pause` even while the worker is still in the
    /// middle of its work.
    pub fn wait_until_paused(&self, timeout: Duration) -> bool {
        if !self.pausable {
            return true;
        }
        if self.is_paused() {
            return true;
        }
        let deadline = Instant::now() + timeout;
        loop {
            if self.is_paused() {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            thread::sleep(POLL);
        }
    }
}

impl fmt::Debug for SeedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.state);
        f.debug_struct("SeedToken")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("active", &state.active)
            .field("paused", &state.paused)
            .finish()
    }
}

// ---------------------------------------------------------------------------
// The shutdown flag
// ---------------------------------------------------------------------------

/// The `shutdown_flag` the seed hands to every task.
///
/// The seed only says a task checks it (`shutdown_requested?`). The port
/// lets the idle sleep between rounds end early when it is set, so a
/// thousand idle threads stop at once instead of each polling.
#[derive(Debug, Default)]
pub struct SeedShutdown {
    requested: AtomicBool,
    lock: Mutex<()>,
    cv: Condvar,
}

impl SeedShutdown {
    /// Sets the flag and wakes every sleeper.
    pub fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
        let _guard = lock(&self.lock);
        self.cv.notify_all();
    }

    /// `shutdown_requested?`
    pub fn is_requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// Sleeps for `duration` or until the flag is set.
    pub fn sleep(&self, duration: Duration) {
        let deadline = Instant::now() + duration;
        let mut guard = lock(&self.lock);
        while !self.is_requested() {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            guard = self
                .cv
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

// ---------------------------------------------------------------------------
// PausableTaskWithToken
// ---------------------------------------------------------------------------

/// The seed's task status hash (`@status`, under `@status_mutex`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeedStatus {
    /// `@status["running"]`
    pub running: bool,
    /// `@status["paused"]`
    pub paused: bool,
}

/// One round of a task's work (`do_work`): returns `true` if it did
/// something, `false` if there was nothing to do.
pub type SeedWork = Box<dyn FnMut() -> bool + Send>;

/// The seed's `PausableTaskWithToken`: a background worker thread under a
/// pausable background-worker token.
///
/// `start_worker` spawns a thread that activates the token (a database
/// transaction), runs the worker loop, and releases the token (another
/// transaction) whatever ends the loop.
///
/// The loop itself lives in the seed's `PausableTask` base class, which the
/// design does not show; the port assumes the plain one the design implies:
/// until shutdown, `check_pause`, then `do_work`, then, if there was
/// nothing to do, sleep the task's interval.
///
/// For measuring only, a task can be given a channel
/// ([`on_park`](Self::on_park)) on which its thread sends the instant at
/// which it really blocks in `check_pause`. The seed's own
/// `wait_until_paused` returns before that moment.
pub struct SeedTask {
    token: Arc<SeedToken>,
    shutdown: Arc<SeedShutdown>,
    status: Arc<Mutex<SeedStatus>>,
    interval: Duration,
    /// The work and the measuring hook, until the thread takes them.
    pending: Mutex<Option<(SeedWork, Option<Sender<Instant>>)>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl SeedTask {
    /// A stopped task named `name` whose thread sleeps `interval` after a
    /// round with nothing to do.
    pub fn new(
        history: &Arc<SeedHistory>,
        shutdown: &Arc<SeedShutdown>,
        name: &str,
        interval: Duration,
        work: impl FnMut() -> bool + Send + 'static,
    ) -> Self {
        Self {
            token: Arc::new(SeedToken::new(
                history,
                SeedKind::BackgroundWorker,
                true,
                Some(name),
            )),
            shutdown: shutdown.clone(),
            status: Arc::new(Mutex::new(SeedStatus::default())),
            interval,
            pending: Mutex::new(Some((Box::new(work), None))),
            thread: Mutex::new(None),
        }
    }

    /// Sets the measuring hook: the thread sends the instant it blocks in a
    /// pause, once per pause. Not part of the seed.
    pub fn on_park(self, parked: Sender<Instant>) -> Self {
        if let Some((_, hook)) = lock(&self.pending).as_mut() {
            *hook = Some(parked);
        }
        self
    }

    /// The task's token.
    pub fn token(&self) -> &SeedToken {
        &self.token
    }

    /// `start_worker`: spawns the worker thread, once.
    pub fn start_worker(&self) {
        let Some((mut work, parked)) = lock(&self.pending).take() else {
            return;
        };
        let token = self.token.clone();
        let shutdown = self.shutdown.clone();
        let status = self.status.clone();
        let interval = self.interval;
        lock(&self.status).running = true;
        let handle = thread::Builder::new()
            .name(self.token.name().to_owned())
            .spawn(move || {
                // `@worker_token.activate`, before the `begin`: if it raises,
                // the thread dies without a release.
                if token.activate().is_err() {
                    lock(&status).running = false;
                    return;
                }
                let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
                    run_worker_loop(&token, &shutdown, &mut work, interval, parked.as_ref());
                }));
                if outcome.is_err() {
                    // `handle_worker_error`: mark not running, then re-raise
                    // after the `ensure`.
                    lock(&status).running = false;
                }
                // `ensure @worker_token.release`
                let _ = token.release();
                if let Err(panic) = outcome {
                    panic::resume_unwind(panic);
                }
            })
            .expect("spawn a seed worker thread");
        *lock(&self.thread) = Some(handle);
    }

    /// `pause`: the token's pause, then `update_status(paused: true)`.
    pub fn pause(&self) {
        self.token.pause().expect("a task's token is pausable");
        lock(&self.status).paused = true;
    }

    /// `resume`: the token's resume, then `update_status(paused: false)`.
    pub fn resume(&self) {
        self.token.resume().expect("a task's token is pausable");
        lock(&self.status).paused = false;
    }

    /// `wait_until_paused(timeout:)`: the token's, which polls the flag.
    pub fn wait_until_paused(&self, timeout: Duration) -> bool {
        self.token.wait_until_paused(timeout)
    }

    /// `paused?` of the token.
    pub fn is_paused(&self) -> bool {
        self.token.is_paused()
    }

    /// A copy of the status hash.
    pub fn status(&self) -> SeedStatus {
        *lock(&self.status)
    }

    /// Waits for the thread to end (after the shutdown flag is set).
    pub fn join(&self) {
        if let Some(handle) = lock(&self.thread).take() {
            let _ = handle.join();
        }
        lock(&self.status).running = false;
    }
}

/// The worker loop the seed's task base class runs, as the port assumes it.
fn run_worker_loop(
    token: &SeedToken,
    shutdown: &SeedShutdown,
    work: &mut SeedWork,
    interval: Duration,
    parked: Option<&Sender<Instant>>,
) {
    while !shutdown.is_requested() {
        // The task's `check_pause`: `@worker_token.check_pause { shutdown_requested? }`.
        token.check_pause_observed(
            || shutdown.is_requested(),
            || {
                if let Some(parked) = parked {
                    let _ = parked.send(Instant::now());
                }
            },
        );
        if shutdown.is_requested() {
            break;
        }
        // `do_work`, then sleep when there was nothing to do.
        if !work() {
            shutdown.sleep(interval);
        }
    }
}

impl fmt::Debug for SeedTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeedTask")
            .field("token", &self.token)
            .field("status", &self.status())
            .finish()
    }
}

// ---------------------------------------------------------------------------
// The background worker manager
// ---------------------------------------------------------------------------

/// The background worker manager the seed's coordinator calls
/// (`pause_all`, `resume_all`, `wait_until_all_paused`, `all_paused?`).
///
/// The design does not show it; the port assumes the plain version: each
/// call goes over the tasks in order, and `wait_until_all_paused` asks each
/// task in turn with the full timeout (Ruby's
/// `@workers.all? { |w| w.wait_until_paused(timeout: timeout) }`).
#[derive(Debug)]
pub struct SeedManager {
    tasks: Vec<SeedTask>,
    shutdown: Arc<SeedShutdown>,
}

impl SeedManager {
    /// A manager over `tasks`, which share `shutdown`.
    pub fn new(tasks: Vec<SeedTask>, shutdown: &Arc<SeedShutdown>) -> Self {
        Self {
            tasks,
            shutdown: shutdown.clone(),
        }
    }

    /// The tasks, in order.
    pub fn tasks(&self) -> &[SeedTask] {
        &self.tasks
    }

    /// `start_all`
    pub fn start_all(&self) {
        for task in &self.tasks {
            task.start_worker();
        }
    }

    /// `pause_all`
    pub fn pause_all(&self) {
        for task in &self.tasks {
            task.pause();
        }
    }

    /// `resume_all`
    pub fn resume_all(&self) {
        for task in &self.tasks {
            task.resume();
        }
    }

    /// `wait_until_all_paused(timeout:)`: every task's own
    /// `wait_until_paused`, each with the full timeout, stopping at the
    /// first that fails. Like theirs, it only looks at the paused flags.
    pub fn wait_until_all_paused(&self, timeout: Duration) -> bool {
        self.tasks
            .iter()
            .all(|task| task.wait_until_paused(timeout))
    }

    /// `all_paused?`
    pub fn all_paused(&self) -> bool {
        self.tasks.iter().all(SeedTask::is_paused)
    }

    /// Sets the shared shutdown flag and waits for every thread to end.
    pub fn stop_all(&self) {
        self.shutdown.request();
        for task in &self.tasks {
            task.join();
        }
    }
}

// ---------------------------------------------------------------------------
// WorkCoordinator
// ---------------------------------------------------------------------------

/// What `capture_worker_state` records before the external editor runs.
#[derive(Clone, Copy, Debug)]
pub struct SeedEditorState {
    /// `timestamp`
    pub at: Instant,
    /// `orchestrators_active`
    pub orchestrators_active: i64,
    /// `workers_active`
    pub workers_active: i64,
    /// `workers_paused`
    pub workers_paused: bool,
}

/// The seed's coordinator `status` hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeedCoordinatorStatus {
    /// `orchestrators:`
    pub orchestrators: i64,
    /// `background_workers:`
    pub background_workers: i64,
    /// `paused:`
    pub paused: bool,
}

/// The seed's `WorkCoordinator`.
///
/// `prepare_for_backup` runs under the coordinator's mutex: pause every
/// worker, wait (polling, up to half the timeout) for the orchestrator count
/// in the database to reach zero, then wait (up to the other half) for every
/// worker's paused flag; on either failure resume every worker and return
/// `false`. `cleanup_after_backup` resumes every worker. Nothing stops new
/// orchestrators from starting meanwhile.
#[derive(Debug)]
pub struct SeedCoordinator {
    history: Arc<SeedHistory>,
    manager: Arc<SeedManager>,
    /// `@mutex`, with `@pre_editor_state` under it.
    mutex: Mutex<Option<SeedEditorState>>,
}

impl SeedCoordinator {
    /// `WorkCoordinator.new(history:, background_worker_manager:)`
    pub fn new(history: &Arc<SeedHistory>, manager: &Arc<SeedManager>) -> Self {
        Self {
            history: history.clone(),
            manager: manager.clone(),
            mutex: Mutex::new(None),
        }
    }

    /// `prepare_for_backup(timeout: 10)`.
    ///
    /// The seed halves an integer number of seconds (`timeout / 2`, so 10
    /// gives 5 and 5 gives 2); a `Duration` halves exactly.
    pub fn prepare_for_backup(&self, timeout: Duration) -> rusqlite::Result<bool> {
        let _guard = lock(&self.mutex);
        // 1. Pause all background workers.
        self.manager.pause_all();
        // 2. Wait for orchestrators to finish.
        if !self
            .history
            .wait_for_idle(Some(SeedKind::Orchestrator), timeout / 2)?
        {
            self.manager.resume_all();
            return Ok(false);
        }
        // 3. Wait for background workers to reach pause state.
        if !self.manager.wait_until_all_paused(timeout / 2) {
            self.manager.resume_all();
            return Ok(false);
        }
        Ok(true)
    }

    /// `cleanup_after_backup`: resumes every worker.
    pub fn cleanup_after_backup(&self) {
        let _guard = lock(&self.mutex);
        self.manager.resume_all();
    }

    /// `prepare_for_external_editor(timeout: 5)`: records the state, pauses
    /// every worker and waits (polling) for the orchestrators, with the
    /// whole timeout. It does not wait for the workers.
    pub fn prepare_for_external_editor(&self, timeout: Duration) -> rusqlite::Result<bool> {
        let mut pre_editor_state = lock(&self.mutex);
        *pre_editor_state = Some(self.capture_worker_state()?);
        self.manager.pause_all();
        self.history
            .wait_for_idle(Some(SeedKind::Orchestrator), timeout)
    }

    /// `restore_after_external_editor`: resumes every worker if a state was
    /// recorded.
    pub fn restore_after_external_editor(&self) {
        let mut pre_editor_state = lock(&self.mutex);
        if pre_editor_state.take().is_some() {
            self.manager.resume_all();
        }
    }

    /// `status`
    pub fn status(&self) -> rusqlite::Result<SeedCoordinatorStatus> {
        Ok(SeedCoordinatorStatus {
            orchestrators: self.history.active_count(SeedKind::Orchestrator)?,
            background_workers: self.history.active_count(SeedKind::BackgroundWorker)?,
            paused: self.manager.all_paused(),
        })
    }

    fn capture_worker_state(&self) -> rusqlite::Result<SeedEditorState> {
        Ok(SeedEditorState {
            at: Instant::now(),
            orchestrators_active: self.history.active_count(SeedKind::Orchestrator)?,
            workers_active: self.history.active_count(SeedKind::BackgroundWorker)?,
            workers_paused: self.manager.all_paused(),
        })
    }
}
