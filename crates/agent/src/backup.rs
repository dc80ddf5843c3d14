//! Copying the live database to a verified backup file.
//!
//! The safe state lasts only as long as it takes to pin a read snapshot:
//! [`run`] takes the safe state, opens a read transaction on the connection
//! it copies from, and releases the safe state at once. Workers and new
//! exchanges then go on while SQLite's online backup API copies exactly the
//! pinned snapshot, page by page, into a temporary file next to the
//! destination. The copy is checked (`PRAGMA quick_check`, or the full
//! `integrity_check`, and every table's row count against the snapshot),
//! synced, and renamed into place. Any failure removes the temporary file
//! and leaves the live database as it was.
//!
//! So the pause window does not grow with the size of the database: it is
//! the time to reach the safe state plus one `BEGIN` and one read.

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
    /// Tables whose row counts were compared.
    pub tables: usize,
    /// Rows in the snapshot, all tables together.
    pub rows: u64,
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

/// Turns what the user typed into the destination file: `~` expanded, an
/// existing directory gets the default name inside it.
pub fn resolve_dest(typed: Option<&str>) -> PathBuf {
    match typed.map(str::trim).filter(|t| !t.is_empty()) {
        None => default_dest(),
        Some(typed) => {
            let path = db::expand_tilde(Path::new(typed));
            if path.is_dir() {
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
/// # Errors
///
/// The first check that fails, in one line.
pub fn precheck(source: &Path, dest: &Path) -> Result<(), BackupError> {
    if dest.exists() {
        return Err(already_exists(dest));
    }
    let dir = parent_dir(dest);
    fs::create_dir_all(&dir).map_err(fail(&format!("could not create {}", dir.display())))?;
    // Writable? Create and remove a probe file, the surest test.
    let probe = dir.join(format!(".nu-agent-probe-{}", std::process::id()));
    File::create(&probe).map_err(fail(&format!("{} is not writable", dir.display())))?;
    let _ = fs::remove_file(&probe);
    let needed = crate::app::db_size(source) + SPACE_MARGIN;
    let available = fs4::available_space(&dir)
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
    precheck(source, &options.dest)?;

    // The connection the copy reads from. Opened before the safe state so
    // that opening costs nothing inside it. Reading through a memory map
    // spares a system call per page.
    let src = db::connect(source).map_err(fail("could not open the database"))?;
    src.pragma_update(None, "mmap_size", MMAP_SIZE)
        .map_err(fail("could not set up the database for copying"))?;

    // Pin the snapshot inside the safe state, then release it at once.
    let pause_started = Instant::now();
    let safe = match coordinator {
        Some(c) => Some(c.prepare_for_backup(options.timeout).map_err(|e| {
            BackupError::new(format!(
                "backup not started, nothing was paused or changed: {e}"
            ))
        })?),
        None => None,
    };
    let pinned = src.execute_batch("BEGIN; SELECT count(*) FROM sqlite_master;");
    drop(safe);
    let pause_window = pause_started.elapsed();
    pinned.map_err(fail("could not pin a snapshot of the database"))?;

    let result = copy_and_verify(&src, options, pause_window, started);
    let _ = src.execute_batch("ROLLBACK");
    result
}

fn copy_and_verify(
    src: &Connection,
    options: &Options,
    pause_window: Duration,
    started: Instant,
) -> Result<Report, BackupError> {
    let counts = table_counts(src).map_err(fail("could not read the snapshot"))?;
    let temp_path = temp_path(&options.dest);
    let temp = TempFile(temp_path.clone());

    // Copy the snapshot into the temporary file.
    let copy_started = Instant::now();
    {
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
        // A self-contained file: no write-ahead log beside it.
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
        tables: counts.len(),
        rows,
    })
}

fn copy_pages(src: &Connection, dst: &mut Connection, progress: bool) -> Result<(), BackupError> {
    let backup = Backup::new(src, dst).map_err(fail("could not start the copy"))?;
    let bar = progress.then(|| {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("backing up {bar:30} {percent:>3}% {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    });
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
            _ => std::thread::sleep(Duration::from_millis(5)),
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
