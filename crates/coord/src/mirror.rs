//! A copy of the live counts in a SQLite `metadata` table, for other
//! processes to read.
//!
//! The counts themselves live in memory ([`WorkerCounter`]); activating and
//! releasing a token never touches the disk. A mirror thread owns its own
//! connection, sleeps until the counter signals a change, and writes the
//! counts in one transaction, at most once per [`MIN_WRITE_INTERVAL`]. So
//! the table is never behind by more than that interval plus one write
//! once activity stops, and a burst of a million changes costs a handful of
//! writes.

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::counter::{ChangeSignal, Counts, WorkerCounter};
use crate::kind::WorkerKind;
use crate::Error;

/// The shortest time between two writes of the mirror.
pub const MIN_WRITE_INTERVAL: Duration = Duration::from_millis(10);

/// `metadata` key holding the process id of the program that owns the
/// mirrored counts.
pub const OWNER_PID_KEY: &str = "counts_owner_pid";

/// `metadata` key holding when the counts were last written, in
/// milliseconds since the Unix epoch.
pub const UPDATED_AT_KEY: &str = "counts_updated_at_ms";

/// Creates the `metadata(key, value)` table if it does not exist.
///
/// # Errors
///
/// Any error from SQLite.
pub fn ensure_metadata_table(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS metadata (key TEXT PRIMARY KEY NOT NULL, value)")
}

/// Reads the mirrored counts, as another process sees them.
///
/// A missing table or key reads as zero.
///
/// # Errors
///
/// Any error from SQLite other than a missing table.
pub fn read_counts(conn: &Connection) -> rusqlite::Result<Counts> {
    let table: Option<String> = conn
        .query_row(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'metadata'",
            [],
            |row| row.get(0),
        )
        .optional()?;
    if table.is_none() {
        return Ok(Counts::default());
    }
    let read = |kind: WorkerKind| -> rusqlite::Result<usize> {
        let value: Option<i64> = conn
            .query_row(
                "SELECT CAST(value AS INTEGER) FROM metadata WHERE key = ?1",
                [kind.metadata_key()],
                |row| row.get(0),
            )
            .optional()?;
        Ok(value.unwrap_or(0).max(0) as usize)
    };
    Ok(Counts {
        orchestrators: read(WorkerKind::Orchestrator)?,
        background_workers: read(WorkerKind::BackgroundWorker)?,
    })
}

/// Writes a counter's live counts to a SQLite `metadata` table from a
/// thread of its own.
///
/// Starting a mirror *takes ownership* of the mirrored counts: it
/// overwrites whatever is in the table (a crashed run's counts, say) with
/// the live ones at once, together with this process's id under
/// [`OWNER_PID_KEY`]. Dropping the mirror writes the counts a last time and
/// stops the thread.
///
/// A counter feeds at most one mirror in its life.
///
/// Write errors (a database locked for longer than the connection's busy
/// timeout, a full disk) do not reach the counting: the mirror keeps the
/// change pending, retries after [`MIN_WRITE_INTERVAL`], and reports the
/// error through [`last_error`](Self::last_error).
///
/// # Examples
///
/// ```
/// use nu_coord::{read_counts, CountsMirror, WorkerCounter, WorkerKind};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("state.db");
/// let counter = WorkerCounter::new();
/// let mirror = CountsMirror::open(&counter, &path)?;
///
/// let token = counter.token(WorkerKind::Orchestrator);
/// token.activate()?;
/// mirror.flush(std::time::Duration::from_secs(5))?;
///
/// let reader = rusqlite::Connection::open(&path)?;
/// assert_eq!(read_counts(&reader)?.orchestrators, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct CountsMirror {
    counter: WorkerCounter,
    shared: Arc<MirrorShared>,
    thread: Option<thread::JoinHandle<()>>,
}

struct MirrorShared {
    stop: AtomicBool,
    progress: Mutex<Progress>,
    written: Condvar,
}

#[derive(Default)]
struct Progress {
    /// Writes begun (the dirty flag cleared and the counts read).
    started: u64,
    /// Writes finished, successfully or not.
    finished: u64,
    /// Successful writes.
    succeeded: u64,
    last_error: Option<String>,
}

impl CountsMirror {
    /// Opens (or creates) the SQLite database at `path` in WAL mode and
    /// mirrors `counter` into it.
    ///
    /// # Errors
    ///
    /// [`Error::Database`] if the file can not be opened or written,
    /// [`Error::AlreadyMirrored`] if the counter already has a mirror,
    /// [`Error::Spawn`] if its thread can not be started.
    pub fn open(counter: &WorkerCounter, path: impl AsRef<Path>) -> Result<Self, Error> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        Self::start(counter, conn)
    }

    /// Mirrors `counter` through `conn`, which the mirror's thread takes
    /// over. The connection's settings (busy timeout, journal mode) are
    /// left as the caller made them.
    ///
    /// # Errors
    ///
    /// [`Error::Database`] if the table can not be created or the first
    /// write fails, [`Error::AlreadyMirrored`] if the counter already has
    /// a mirror, [`Error::Spawn`] if its thread can not be started. Nothing
    /// is started then.
    pub fn start(counter: &WorkerCounter, mut conn: Connection) -> Result<Self, Error> {
        if counter.inner.changes.get().is_some() {
            return Err(Error::AlreadyMirrored);
        }
        ensure_metadata_table(&conn)?;
        // Take ownership at once, on the caller's thread, so an error is
        // reported here and not lost in the background.
        write_counts(&mut conn, counter.all_counts())?;

        let shared = Arc::new(MirrorShared {
            stop: AtomicBool::new(false),
            progress: Mutex::new(Progress {
                succeeded: 1,
                ..Progress::default()
            }),
            written: Condvar::new(),
        });
        let thread = {
            let shared = shared.clone();
            let counter = counter.clone();
            thread::Builder::new()
                .name("nu-coord-mirror".into())
                .spawn(move || mirror_loop(&counter, conn, &shared))
                .map_err(|source| Error::Spawn {
                    name: "nu-coord-mirror".into(),
                    source,
                })?
        };
        let signal = ChangeSignal {
            // Dirty from the start: changes between the first write and now
            // are written at once.
            dirty: AtomicBool::new(true),
            listener: thread.thread().clone(),
        };
        if counter.inner.changes.set(signal).is_err() {
            shared.stop.store(true, Ordering::SeqCst);
            thread.thread().unpark();
            let _ = thread.join();
            return Err(Error::AlreadyMirrored);
        }
        thread.thread().unpark();
        Ok(Self {
            counter: counter.clone(),
            shared,
            thread: Some(thread),
        })
    }

    /// Writes the current counts now (or waits for a write that began
    /// after this call) and waits up to `timeout` for it to finish.
    ///
    /// Returns `Ok(false)` if the timeout passed first.
    ///
    /// # Errors
    ///
    /// [`Error::MirrorWrite`] if that write failed; the mirror keeps the
    /// change pending and retries.
    pub fn flush(&self, timeout: Duration) -> Result<bool, Error> {
        let deadline = Instant::now().checked_add(timeout);
        let mut progress = self
            .shared
            .progress
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let target = progress.started + 1;
        if let Some(signal) = self.counter.inner.changes.get() {
            signal.dirty.store(true, Ordering::SeqCst);
        }
        if let Some(thread) = &self.thread {
            thread.thread().unpark();
        }
        while progress.finished < target {
            let now = Instant::now();
            progress = match deadline {
                Some(deadline) if now >= deadline => return Ok(false),
                Some(deadline) => {
                    self.shared
                        .written
                        .wait_timeout(progress, deadline - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
                None => self
                    .shared
                    .written
                    .wait(progress)
                    .unwrap_or_else(|p| p.into_inner()),
            };
        }
        match &progress.last_error {
            Some(message) => Err(Error::MirrorWrite {
                message: message.clone(),
            }),
            None => Ok(true),
        }
    }

    /// Returns the error of the last write if it failed, `None` after a
    /// successful write.
    pub fn last_error(&self) -> Option<String> {
        let progress = self
            .shared
            .progress
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        progress.last_error.clone()
    }

    /// Returns how many writes have succeeded, the first one included.
    pub fn writes(&self) -> u64 {
        let progress = self
            .shared
            .progress
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        progress.succeeded
    }
}

impl Drop for CountsMirror {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

impl fmt::Debug for CountsMirror {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CountsMirror")
            .field("writes", &self.writes())
            .field("last_error", &self.last_error())
            .finish()
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn write_counts(conn: &mut Connection, counts: Counts) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut upsert = tx.prepare_cached(
            "INSERT INTO metadata (key, value) VALUES (?1, ?2) \
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        )?;
        for kind in WorkerKind::ALL {
            upsert.execute(params![kind.metadata_key(), counts.get(kind) as i64])?;
        }
        upsert.execute(params![OWNER_PID_KEY, i64::from(std::process::id())])?;
        upsert.execute(params![UPDATED_AT_KEY, now_ms()])?;
    }
    tx.commit()
}

fn mirror_loop(counter: &WorkerCounter, mut conn: Connection, shared: &MirrorShared) {
    // The signal is installed right after this thread is spawned; wait for
    // it (`start` unparks us once it is set, or sets `stop`).
    let signal = loop {
        if let Some(signal) = counter.inner.changes.get() {
            break signal;
        }
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        thread::park();
    };
    let mut last_write: Option<Instant> = None;
    loop {
        let stopping = shared.stop.load(Ordering::SeqCst);
        if !stopping && !signal.dirty.load(Ordering::SeqCst) {
            thread::park();
            continue;
        }
        if !stopping {
            if let Some(at) = last_write {
                let since = at.elapsed();
                if since < MIN_WRITE_INTERVAL {
                    thread::park_timeout(MIN_WRITE_INTERVAL - since);
                    continue;
                }
            }
        }

        // Clear first, then read (SeqCst both): a change after our read
        // sets the flag again and unparks us. See `ChangeSignal::notify`.
        signal.dirty.store(false, Ordering::SeqCst);
        {
            let mut p = shared.progress.lock().unwrap_or_else(|p| p.into_inner());
            p.started += 1;
        }
        let counts = counter.all_counts();
        let result = write_counts(&mut conn, counts);
        last_write = Some(Instant::now());
        {
            let mut p = shared.progress.lock().unwrap_or_else(|p| p.into_inner());
            p.finished += 1;
            match result {
                Ok(()) => {
                    p.succeeded += 1;
                    p.last_error = None;
                }
                Err(err) => {
                    p.last_error = Some(err.to_string());
                    // Keep the change pending; retry after the interval.
                    signal.dirty.store(true, Ordering::SeqCst);
                }
            }
            shared.written.notify_all();
        }
        if stopping {
            return;
        }
    }
}
