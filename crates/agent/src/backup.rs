//! Copying the live database to a verified backup file.
//!
//! The safe state lasts only as long as it takes to pin a read snapshot:
//! [`run`] takes the safe state, opens a read transaction on the connection
//! it copies from, and releases the safe state at once. Workers and new
//! exchanges then go on while the pinned snapshot is copied into a
//! temporary file next to the destination. The copy is checked (`PRAGMA
//! quick_check`, or the full `integrity_check`, and every table's row count
//! against the snapshot), synced, and linked into place without ever
//! replacing a file. Any failure removes the temporary file (and any
//! directory the backup created) and leaves the live database as it was.
//!
//! # Two ways to copy
//!
//! In WAL mode a checkpoint copies committed pages from the write-ahead log
//! into the database file, but never past the snapshot of the oldest open
//! reader: SQLite must not change a page under a reader. So once every
//! frame up to our snapshot has been checkpointed, the database file *is*
//! our snapshot, and stays so for as long as our read transaction is open,
//! whatever other connections write (their frames wait in the log). The
//! backup then copies the file with the operating system's fast file copy.
//!
//! A first checkpoint runs before the safe state and copies the bulk of the
//! log; the one inside the safe state, right after the snapshot is pinned,
//! only has the few pages written in between, so the pause window stays
//! short and does not grow with the database. When that checkpoint can not
//! reach the end of the log (an older reader holds it back, or the log is
//! not in use), the backup falls back to SQLite's online backup API, which
//! copies the pinned snapshot page by page through SQLite. Either way the checks above run on
//! the result, so a wrong assumption would fail the backup, never pass a
//! bad copy.
//!
//! So the pause window does not grow with the size of the database: it is
//! the time to reach the safe state, one `BEGIN` and one read, and a
//! checkpoint of whatever was written since the first one.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use nu_coord::WorkCoordinator;
use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use crate::db;

/// Pages copied per step of the online backup.
const PAGES_PER_STEP: i32 = 4096;

/// How much of the source the copy maps into memory (address space, not
/// memory: pages are read from the file as they are touched).
const MMAP_SIZE: i64 = 1 << 40;

/// Room asked for beyond the database's own size: the copy's journal and
/// the file system's own bookkeeping.
const SPACE_MARGIN: u64 = 1024 * 1024;

/// What a backup should do.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where the backup goes; it must not exist.
    pub dest: PathBuf,
    /// Run the full `integrity_check` instead of `quick_check`.
    pub full_check: bool,
    /// How long to wait for a safe state.
    pub timeout: Duration,
    /// Show a progress bar (on a terminal only).
    pub progress: bool,
}

/// What a finished backup reports.
#[derive(Clone, Debug)]
pub struct Report {
    /// The backup file.
    pub path: PathBuf,
    /// Its size.
    pub size: u64,
    /// From the first check to the rename.
    pub total: Duration,
    /// Workers paused and exchanges held back: from asking for the safe
    /// state to releasing it once the snapshot was pinned.
    pub pause_window: Duration,
    /// Copying the snapshot into the temporary file, synced.
    pub copy: Duration,
    /// Checking the copy.
    pub verify: Duration,
    /// How the snapshot was copied.
    pub method: CopyMethod,
    /// Tables whose row counts were compared.
    pub tables: usize,
    /// Rows in the snapshot, all tables together.
    pub rows: u64,
}

/// How a backup copied the snapshot; see the module doc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyMethod {
    /// The database file, frozen at the snapshot, copied as a file.
    File,
    /// SQLite's online backup API, page by page.
    Pages,
}

/// Why a backup failed; the message is one line and says what to do.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BackupError(String);

impl BackupError {
    fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

fn fail<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> BackupError + '_ {
    move |err| BackupError::new(format!("{what}: {err}"))
}

/// The default backup name in the current directory:
/// `memory-YYYY-MM-DD-HHMMSS.db`.
pub fn default_dest() -> PathBuf {
    PathBuf::from(format!(
        "memory-{}.db",
        chrono::Local::now().format("%Y-%m-%d-%H%M%S")
    ))
}

/// Turns what the user typed into the destination file: `~` expanded; an
/// existing directory, or a path ending in `/`, gets the default name
/// inside it.
pub fn resolve_dest(typed: Option<&str>) -> PathBuf {
    match typed.map(str::trim).filter(|t| !t.is_empty()) {
        None => default_dest(),
        Some(typed) => {
            let path = db::expand_tilde(Path::new(typed));
            if path.is_dir() || typed.ends_with(std::path::MAIN_SEPARATOR) {
                path.join(default_dest())
            } else {
                path
            }
        }
    }
}

/// Checks what can be checked before anything is paused: the destination
/// is new, its directory exists (created if missing) and is writable, and
/// it has room for the database.
///
/// Returns the directories it created, to be removed if the backup fails.
///
/// # Errors
///
/// The first check that fails, in one line; directories it created are
/// removed again.
pub fn precheck(source: &Path, dest: &Path) -> Result<CreatedDirs, BackupError> {
    if dest.exists() {
        return Err(already_exists(dest));
    }
    let dir = parent_dir(dest);
    let created = CreatedDirs::create(&dir)?;
    let result = precheck_dir(source, &dir);
    match result {
        Ok(()) => Ok(created),
        Err(err) => {
            created.remove();
            Err(err)
        }
    }
}

fn precheck_dir(source: &Path, dir: &Path) -> Result<(), BackupError> {
    // Writable? Create and remove a probe file, the surest test.
    let probe = dir.join(format!(".nu-agent-probe-{}", std::process::id()));
    File::create(&probe).map_err(fail(&format!("{} is not writable", dir.display())))?;
    let _ = fs::remove_file(&probe);
    let needed = crate::app::db_size(source) + SPACE_MARGIN;
    let available = fs4::available_space(dir)
        .map_err(fail(&format!("could not check room in {}", dir.display())))?;
    if available < needed {
        return Err(BackupError::new(format!(
            "not enough room in {}: the backup needs about {} and {} is free",
            dir.display(),
            crate::app::human_size(needed),
            crate::app::human_size(available)
        )));
    }
    Ok(())
}

/// The error for a destination whose name is taken.
fn already_exists(dest: &Path) -> BackupError {
    let stem = dest
        .file_stem()
        .map_or("backup".into(), |s| s.to_string_lossy());
    BackupError::new(format!(
        "{} already exists and backups never overwrite; choose another name, such as {}",
        dest.display(),
        dest.with_file_name(format!("{stem}-2.db")).display()
    ))
}

/// Directories a backup created for its destination, deepest first.
#[derive(Debug, Default)]
pub struct CreatedDirs(Vec<PathBuf>);

impl CreatedDirs {
    /// Creates `dir` and its missing parents, remembering which were new.
    fn create(dir: &Path) -> Result<Self, BackupError> {
        let mut missing = Vec::new();
        let mut next = Some(dir);
        while let Some(d) = next.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
            missing.push(d.to_owned());
            next = d.parent();
        }
        fs::create_dir_all(dir).map_err(fail(&format!("could not create {}", dir.display())))?;
        Ok(Self(missing))
    }

    /// Removes the directories again, if they are still empty.
    fn remove(self) {
        for dir in &self.0 {
            let _ = fs::remove_dir(dir);
        }
    }
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// The temporary file next to `dest` that the copy goes into.
fn temp_path(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map_or("backup".into(), |n| n.to_string_lossy());
    dest.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

/// Removes the temporary file and anything SQLite made beside it.
struct TempFile(PathBuf);

impl TempFile {
    fn keep(self) {
        std::mem::forget(self);
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        for suffix in ["", "-journal", "-wal", "-shm"] {
            let mut name = self.0.as_os_str().to_owned();
            name.push(suffix);
            let _ = fs::remove_file(PathBuf::from(name));
        }
    }
}

/// Backs `source` up to `options.dest`. With a coordinator, a safe state is
/// taken (and released as soon as the snapshot is pinned); without one
/// (no agent runs), the snapshot is pinned directly.
///
/// # Errors
///
/// A failed check, no safe state within the timeout, or a failure while
/// copying, checking or renaming. In every case no file is left at the
/// destination and the live database is untouched.
pub fn run(
    source: &Path,
    coordinator: Option<&WorkCoordinator>,
    options: &Options,
) -> Result<Report, BackupError> {
    let started = Instant::now();
    let created = precheck(source, &options.dest)?;
    let result = run_checked(source, coordinator, options, started);
    if result.is_err() {
        created.remove();
    }
    result
}

fn run_checked(
    source: &Path,
    coordinator: Option<&WorkCoordinator>,
    options: &Options,
    started: Instant,
) -> Result<Report, BackupError> {
    // The connection the copy reads from. Opened before the safe state so
    // that opening costs nothing inside it. Reading through a memory map
    // spares a system call per page.
    let src = db::connect(source).map_err(fail("could not open the database"))?;
    src.pragma_update(None, "mmap_size", MMAP_SIZE)
        .map_err(fail("could not set up the database for copying"))?;

    // A checkpoint now, outside the safe state, copies the bulk of the log
    // into the database file, so that the one inside it has little or
    // nothing left to do.
    let checkpointer = db::connect(source).ok();
    if let Some(conn) = &checkpointer {
        checkpoint(conn);
    }

    // Pin the snapshot inside the safe state, then release it at once.
    let pause_started = Instant::now();
    let safe = match coordinator {
        Some(c) => Some(
            c.prepare_for_backup(options.timeout)
                .map_err(|e| BackupError::new(format!("backup not started: {e}")))?,
        ),
        None => None,
    };
    let pinned = src.execute_batch("BEGIN; SELECT count(*) FROM sqlite_master;");
    let frozen = pinned.is_ok()
        && checkpointer
            .as_ref()
            .is_some_and(|conn| checkpoint(conn) == Checkpointed::All);
    drop(safe);
    let pause_window = pause_started.elapsed();
    pinned.map_err(fail("could not pin a snapshot of the database"))?;

    let result = copy_and_verify(source, &src, frozen, options, pause_window, started);
    let _ = src.execute_batch("ROLLBACK");
    result
}

/// How far a checkpoint got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Checkpointed {
    /// Every frame of the log is in the database file.
    All,
    /// Some frames are not (a reader holds them back, or the checkpoint
    /// failed), or the database is not in WAL mode.
    Partly,
}

/// Checkpoints the log as far as the open readers allow, on a connection
/// of its own (a checkpoint can not run inside a transaction).
///
/// Run right after our snapshot is pinned, inside the safe state where
/// nothing else writes, [`Checkpointed::All`] means the database file holds
/// exactly our snapshot: a checkpoint never goes past the oldest reader's
/// snapshot, so "every frame" can only be reached if no frame lies beyond
/// ours. And the file stays so while our read transaction is open (see the
/// module doc).
fn checkpoint(conn: &Connection) -> Checkpointed {
    // (busy, frames in the log, frames checkpointed); -1s outside WAL mode.
    let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, i64>(1)?,
            row.get::<_, i64>(2)?,
        ))
    });
    match result {
        Ok((0, log, done)) if log >= 0 && done == log => Checkpointed::All,
        _ => Checkpointed::Partly,
    }
}

fn copy_and_verify(
    source: &Path,
    src: &Connection,
    frozen: bool,
    options: &Options,
    pause_window: Duration,
    started: Instant,
) -> Result<Report, BackupError> {
    let counts = table_counts(src).map_err(fail("could not read the snapshot"))?;
    let temp_path = temp_path(&options.dest);
    // A file left under this name by a run that crashed (with a process id
    // since reused) goes first, journals included; then the file is
    // created afresh, never opened through a link someone put there.
    drop(TempFile(temp_path.clone()));
    let temp_file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp_path)
        .map_err(fail(&format!("could not create {}", temp_path.display())))?;
    let temp = TempFile(temp_path.clone());

    // Copy the snapshot into the temporary file.
    let copy_started = Instant::now();
    if frozen {
        copy_file(source, temp_file, options.progress)?;
        // A self-contained file: no write-ahead log beside it.
        let dst = Connection::open(&temp_path)
            .map_err(fail(&format!("could not open {}", temp_path.display())))?;
        dst.pragma_update(None, "journal_mode", "DELETE")
            .map_err(fail("could not finish the copy"))?;
        dst.close()
            .map_err(|(_, e)| BackupError::new(format!("could not close the copy: {e}")))?;
    } else {
        // SQLite takes the empty file as a new database.
        drop(temp_file);
        let mut dst = Connection::open(&temp_path)
            .map_err(fail(&format!("could not create {}", temp_path.display())))?;
        // The copy is synced once at the end; no journal and no locking
        // dance are needed for a file nobody else can see yet.
        dst.execute_batch(
            "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; \
             PRAGMA locking_mode = EXCLUSIVE;",
        )
        .map_err(fail("could not prepare the copy"))?;
        copy_pages(src, &mut dst, options.progress)?;
        dst.pragma_update(None, "journal_mode", "DELETE")
            .map_err(fail("could not finish the copy"))?;
        dst.close()
            .map_err(|(_, e)| BackupError::new(format!("could not close the copy: {e}")))?;
    }
    File::open(&temp_path)
        .and_then(|f| f.sync_all())
        .map_err(fail("could not sync the copy to disk"))?;
    let copy = copy_started.elapsed();

    // Check it.
    let verify_started = Instant::now();
    let rows = verify(&temp_path, &counts, options.full_check)?;
    let verify = verify_started.elapsed();

    // Put it in place, never over a file that appeared at the destination
    // since the check: a hard link fails if the name is taken, where a
    // rename would replace the file. The temporary name then goes with
    // `temp`. A file system without hard links gets a rename after one
    // more check.
    match fs::hard_link(&temp_path, &options.dest) {
        Ok(()) => drop(temp),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(already_exists(&options.dest));
        }
        Err(_) => {
            if fs::symlink_metadata(&options.dest).is_ok() {
                return Err(already_exists(&options.dest));
            }
            fs::rename(&temp_path, &options.dest).map_err(fail(&format!(
                "could not move the copy to {}",
                options.dest.display()
            )))?;
            temp.keep();
        }
    }
    if let Ok(dir) = File::open(parent_dir(&options.dest)) {
        let _ = dir.sync_all();
    }
    let size = fs::metadata(&options.dest).map_or(0, |m| m.len());
    Ok(Report {
        path: options.dest.clone(),
        size,
        total: started.elapsed(),
        pause_window,
        copy,
        verify,
        method: if frozen {
            CopyMethod::File
        } else {
            CopyMethod::Pages
        },
        tables: counts.len(),
        rows,
    })
}

/// Copies the frozen database file into `to`, in large chunks with a
/// progress bar on a terminal, or in one call (which the kernel may do
/// without copying through user space) without one.
fn copy_file(source: &Path, mut to: File, progress: bool) -> Result<(), BackupError> {
    let what = "could not copy the database file";
    let mut from = File::open(source).map_err(fail(what))?;
    if !progress {
        // File to file, this copies inside the kernel where it can.
        std::io::copy(&mut from, &mut to).map_err(fail(what))?;
        return Ok(());
    }
    let length = from.metadata().map_err(fail(what))?.len();
    let bar = progress_bar(length);
    let mut buffer = vec![0u8; 8 << 20];
    loop {
        let read = std::io::Read::read(&mut from, &mut buffer).map_err(fail(what))?;
        if read == 0 {
            break;
        }
        std::io::Write::write_all(&mut to, &buffer[..read]).map_err(fail(what))?;
        bar.inc(read as u64);
    }
    bar.finish_and_clear();
    Ok(())
}

fn progress_bar(length: u64) -> ProgressBar {
    let bar = ProgressBar::new(length);
    bar.set_style(
        ProgressStyle::with_template("backing up {bar:30} {percent:>3}% {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

fn copy_pages(src: &Connection, dst: &mut Connection, progress: bool) -> Result<(), BackupError> {
    let backup = Backup::new(src, dst).map_err(fail("could not start the copy"))?;
    let bar = progress.then(|| progress_bar(0));
    loop {
        let step = backup
            .step(PAGES_PER_STEP)
            .map_err(fail("the copy failed"))?;
        let p = backup.progress();
        if let Some(bar) = &bar {
            bar.set_length(p.pagecount.max(1) as u64);
            bar.set_position((p.pagecount - p.remaining).max(0) as u64);
        }
        match step {
            StepResult::Done => break,
            StepResult::More => {}
            // Our read transaction pins the source, so a busy or locked
            // source only means another connection holds a lock for a
            // moment; wait and go on.
            StepResult::Busy | StepResult::Locked => std::thread::sleep(Duration::from_millis(5)),
            other => {
                return Err(BackupError::new(format!(
                    "the copy stopped with an unexpected step result ({other:?})"
                )))
            }
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(())
}

/// Row counts of every table, as `(name, rows)`.
fn table_counts(conn: &Connection) -> rusqlite::Result<Vec<(String, u64)>> {
    let mut stmt = conn.prepare(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'
         ORDER BY name",
    )?;
    let names = stmt
        .query_map([], |row| row.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    names
        .into_iter()
        .map(|name| {
            let rows: i64 = conn.query_row(
                &format!("SELECT count(*) FROM \"{}\"", name.replace('"', "\"\"")),
                [],
                |row| row.get(0),
            )?;
            Ok((name, rows as u64))
        })
        .collect()
}

/// Checks the copy; returns the number of rows it holds.
fn verify(path: &Path, expected: &[(String, u64)], full: bool) -> Result<u64, BackupError> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(fail("could not open the copy to check it"))?;
    let pragma = if full {
        "integrity_check"
    } else {
        "quick_check"
    };
    let verdict: String = conn
        .query_row(&format!("PRAGMA {pragma}"), [], |row| row.get(0))
        .map_err(fail("could not check the copy"))?;
    if verdict != "ok" {
        return Err(BackupError::new(format!(
            "the copy failed its {pragma}: {verdict}; nothing was kept"
        )));
    }
    let actual = table_counts(&conn).map_err(fail("could not count the copy's rows"))?;
    if actual != expected {
        return Err(BackupError::new(
            "the copy's row counts differ from the snapshot's; nothing was kept",
        ));
    }
    Ok(actual.iter().map(|(_, rows)| rows).sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(dest: PathBuf) -> Options {
        Options {
            dest,
            full_check: true,
            timeout: Duration::from_secs(10),
            progress: false,
        }
    }

    /// A database whose rows are all rewritten in place by another
    /// connection, checkpointing after every commit, while it is backed
    /// up: the copy must hold exactly one snapshot (the sum of a column
    /// only ever jumps by the row count), whichever way it was copied.
    #[test]
    fn a_copy_is_one_snapshot_while_another_connection_rewrites_every_row() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("live.db");
        {
            let conn = db::connect(&source).unwrap();
            conn.execute_batch(
                "CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER NOT NULL, pad BLOB);
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 4000)
                 INSERT INTO t SELECT i, 0, randomblob(2000) FROM n;",
            )
            .unwrap();
        }
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (source, stop) = (source.clone(), stop.clone());
            std::thread::spawn(move || {
                let conn = db::connect(&source).unwrap();
                conn.pragma_update(None, "wal_autocheckpoint", 1).unwrap();
                let mut rounds = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    conn.execute("UPDATE t SET v = v + 1", []).unwrap();
                    rounds += 1;
                }
                rounds
            })
        };
        let mut methods = Vec::new();
        for i in 0..6 {
            let report = run(&source, None, &options(dir.path().join(format!("b{i}.db"))))
                .expect("the backup works");
            methods.push(report.method);
            let copy = Connection::open(&report.path).unwrap();
            let (rows, sum, min, max): (i64, i64, i64, i64) = copy
                .query_row("SELECT count(*), sum(v), min(v), max(v) FROM t", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .unwrap();
            assert_eq!(rows, 4000);
            assert_eq!(min, max, "a copy mixing two snapshots");
            assert_eq!(sum, min * 4000);
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(writer.join().unwrap() > 0);
        // Which way each copy went depends on where the writer was; both
        // must give one snapshot, and the file copy must have been tried.
        assert!(methods.contains(&CopyMethod::File), "{methods:?}");
    }

    /// A live database whose table `t` has 500 rows, all with `v = 0`,
    /// and the connection that made it.
    fn live_table(dir: &Path) -> (PathBuf, Connection) {
        let source = dir.join("live.db");
        let writer = db::connect(&source).unwrap();
        writer
            .execute_batch(
                "CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER NOT NULL);
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500)
                 INSERT INTO t SELECT i, 0 FROM n;",
            )
            .unwrap();
        (source, writer)
    }

    /// Rows of `t` in the copy at `dest` that are no longer as pinned.
    fn rows_changed_in(dest: &Path) -> i64 {
        Connection::open(dest)
            .unwrap()
            .query_row("SELECT count(*) FROM t WHERE v != 0", [], |r| r.get(0))
            .unwrap()
    }

    /// The claim the file copy rests on: while our read transaction is
    /// open, a checkpoint by another connection does not write newer pages
    /// into the database file.
    #[test]
    fn a_checkpoint_does_not_write_past_a_pinned_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let (source, writer) = live_table(dir.path());

        let src = db::connect(&source).unwrap();
        src.execute_batch("BEGIN; SELECT count(*) FROM sqlite_master;")
            .unwrap();
        let checkpointer = db::connect(&source).unwrap();
        assert_eq!(
            checkpoint(&checkpointer),
            Checkpointed::All,
            "nothing else reads: the log is caught up"
        );

        // After the pin: every row changes, and a checkpoint is asked for.
        writer.execute("UPDATE t SET v = 1", []).unwrap();
        let (_, log, done): (i64, i64, i64) = writer
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        assert!(done < log, "the checkpoint stopped at our snapshot");

        let dest = dir.path().join("b.db");
        let report = copy_and_verify(
            &source,
            &src,
            true,
            &options(dest.clone()),
            Duration::ZERO,
            Instant::now(),
        )
        .unwrap();
        assert_eq!(report.method, CopyMethod::File);
        assert_eq!(rows_changed_in(&dest), 0, "the copy is the pinned snapshot");

        // Once the reader is gone, the checkpoint goes through.
        src.execute_batch("ROLLBACK").unwrap();
        drop(src);
        assert_eq!(checkpoint(&checkpointer), Checkpointed::All);
    }

    /// The usual case in `run`: the log is caught up before the pin, so
    /// the snapshot is read from the file alone; a writer then restarts
    /// the log from its start and asks for a full checkpoint. The file
    /// must still be the snapshot.
    #[test]
    fn a_snapshot_read_from_the_file_alone_survives_a_log_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (source, writer) = live_table(dir.path());
        let checkpointer = db::connect(&source).unwrap();
        assert_eq!(checkpoint(&checkpointer), Checkpointed::All);

        let src = db::connect(&source).unwrap();
        src.execute_batch("BEGIN; SELECT count(*) FROM sqlite_master;")
            .unwrap();
        assert_eq!(checkpoint(&checkpointer), Checkpointed::All);

        // Log fully checkpointed: this write starts the log over. The
        // truncating checkpoints do all they can without waiting for our
        // reader (which would only time out).
        writer.busy_timeout(Duration::ZERO).unwrap();
        for round in 1..=3 {
            writer.execute("UPDATE t SET v = ?1", [round]).unwrap();
            let _: (i64, i64, i64) = writer
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .unwrap();
        }

        let dest = dir.path().join("b.db");
        copy_and_verify(
            &source,
            &src,
            true,
            &options(dest.clone()),
            Duration::ZERO,
            Instant::now(),
        )
        .unwrap();
        assert_eq!(rows_changed_in(&dest), 0, "the copy is the pinned snapshot");
        let live: i64 = writer
            .query_row("SELECT min(v) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(live, 3, "the writer's rounds all committed");
    }

    #[test]
    fn a_stale_temporary_file_is_replaced_not_reused() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("live.db");
        db::open(&source).unwrap();
        let dest = dir.path().join("b.db");
        std::fs::write(temp_path(&dest), b"left by a crashed run").unwrap();
        let mut wal = temp_path(&dest).into_os_string();
        wal.push("-wal");
        std::fs::write(&wal, b"not a log").unwrap();
        run(&source, None, &options(dest.clone())).unwrap();
        assert!(dest.exists());
        assert!(!temp_path(&dest).exists());
        assert!(!std::path::Path::new(&wal).exists());
    }

    #[test]
    fn created_directories_are_removed_again_but_not_older_ones() {
        let dir = tempfile::tempdir().unwrap();
        let created = CreatedDirs::create(&dir.path().join("new/deeper")).unwrap();
        assert!(dir.path().join("new/deeper").is_dir());
        created.remove();
        assert!(!dir.path().join("new").exists());
        assert!(dir.path().is_dir(), "what existed before stays");
    }

    #[test]
    fn a_failed_backup_leaves_no_directory_behind() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("live.db");
        db::open(&source).unwrap();
        let dest = dir.path().join("new/deeper/b.db");
        // Something other than a file sits where the copy's temporary file
        // goes, so the copy fails after the checks.
        std::fs::create_dir_all(temp_path(&dest)).unwrap();
        let err = run(&source, None, &options(dest.clone())).unwrap_err();
        assert!(!dest.exists(), "{err}");
        std::fs::remove_dir(temp_path(&dest)).unwrap();
        // The directories existed before this run, so they stay.
        assert!(dest.parent().unwrap().is_dir());
    }

    #[test]
    fn a_trailing_separator_names_a_directory() {
        let dest = resolve_dest(Some("some/new/dir/"));
        assert!(dest.starts_with("some/new/dir"));
        assert!(dest
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("memory-"));
    }
}
