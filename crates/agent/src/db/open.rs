//! Finding, checking and opening the history database.
//!
//! A file is checked before anything writes to it: something that is not
//! a SQLite database, or a database with a newer schema than this program
//! knows, is refused with an error and left exactly as it was.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::schema;

/// How long a connection waits for another writer before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// Why a database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The file exists and is not a SQLite database.
    #[error(
        "{path} is not a SQLite database (it was left untouched); \
         point --db or NU_AGENT_DB at another file"
    )]
    NotADatabase {
        /// The file.
        path: PathBuf,
    },
    /// The file is a SQLite database that can not be read.
    #[error(
        "{path} is a damaged SQLite database ({detail}); it was left untouched. \
         Restore it from a backup, or point --db at another file"
    )]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        detail: String,
    },
    /// The schema is newer than this program.
    #[error(
        "{path} has schema version {found}, newer than this nu-agent knows ({supported}); \
         it was left untouched. Upgrade nu-agent to use it"
    )]
    NewerSchema {
        /// The file.
        path: PathBuf,
        /// Its schema version.
        found: i64,
        /// The newest this program knows.
        supported: i64,
    },
    /// The file or its directory could not be created or opened.
    #[error("could not open {path}: {detail}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
}

/// Returns `$XDG_DATA_HOME/nu-agent/history.db` (or the platform's data
/// directory).
pub fn default_path() -> Option<PathBuf> {
    dirs::data_dir().map(|dir| dir.join("nu-agent").join("history.db"))
}

/// The database path: `explicit` (from `--db` or `NU_AGENT_DB`) or the
/// default.
///
/// # Errors
///
/// No path was given and the platform has no data directory.
pub fn resolve_path(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    match explicit {
        Some(path) => Ok(expand_tilde(path)),
        None => default_path().ok_or_else(|| {
            anyhow::anyhow!("no data directory is known here; pass --db PATH or set NU_AGENT_DB")
        }),
    }
}

/// Expands a leading `~/` to the home directory.
pub fn expand_tilde(path: &Path) -> PathBuf {
    match path.strip_prefix("~") {
        Ok(rest) => dirs::home_dir().map_or_else(|| path.to_owned(), |home| home.join(rest)),
        Err(_) => path.to_owned(),
    }
}

/// Checks that an existing file looks like a SQLite database, reading only
/// its first bytes. An empty file is a new database to SQLite.
fn check_header(path: &Path) -> Result<(), OpenError> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => {
            return Err(OpenError::Io {
                path: path.to_owned(),
                detail: err.to_string(),
            })
        }
    };
    let mut header = Vec::with_capacity(16);
    file.by_ref()
        .take(16)
        .read_to_end(&mut header)
        .map_err(|err| OpenError::Io {
            path: path.to_owned(),
            detail: err.to_string(),
        })?;
    if header.is_empty() || header.as_slice() == SQLITE_HEADER {
        Ok(())
    } else {
        Err(OpenError::NotADatabase {
            path: path.to_owned(),
        })
    }
}

/// Sorts a SQLite error into what the user can do about it: a file that
/// is no database, a damaged one, or a file that could not be opened
/// (permissions, locks, a missing directory).
fn damaged(path: &Path, err: rusqlite::Error) -> OpenError {
    match err.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) => OpenError::NotADatabase {
            path: path.to_owned(),
        },
        Some(rusqlite::ErrorCode::DatabaseCorrupt) => OpenError::Damaged {
            path: path.to_owned(),
            detail: err.to_string(),
        },
        _ => OpenError::Io {
            path: path.to_owned(),
            detail: err.to_string(),
        },
    }
}

/// Reads the schema version of an existing database without writing.
fn existing_version(path: &Path) -> Result<Option<i64>, OpenError> {
    if std::fs::metadata(path).map_or(true, |m| m.len() == 0) {
        return Ok(None);
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| damaged(path, e))?;
    // Reading the schema makes SQLite parse the first pages.
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))
        .map_err(|e| damaged(path, e))?;
    schema::version(&conn)
        .map(Some)
        .map_err(|e| damaged(path, e))
}

/// Checks, without writing anything, that `path` is either missing, empty,
/// or a readable SQLite database whose schema this program knows.
///
/// # Errors
///
/// See [`OpenError`].
pub fn check(path: &Path) -> Result<(), OpenError> {
    check_header(path)?;
    if let Some(found) = existing_version(path)? {
        if found > schema::SCHEMA_VERSION {
            return Err(OpenError::NewerSchema {
                path: path.to_owned(),
                found,
                supported: schema::SCHEMA_VERSION,
            });
        }
    }
    Ok(())
}

/// Opens the history database at `path` for reading and writing, creating
/// it and its directory if needed, in WAL mode, migrated to the current
/// schema.
///
/// # Errors
///
/// See [`OpenError`]; in every case an existing file is left untouched.
pub fn open(path: &Path) -> Result<Connection, OpenError> {
    check(path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|err| OpenError::Io {
            path: path.to_owned(),
            detail: format!("could not create {}: {err}", dir.display()),
        })?;
    }
    let mut conn = connect(path)?;
    schema::migrate(&mut conn).map_err(|e| damaged(path, e))?;
    Ok(conn)
}

/// Opens another connection to a database already opened with [`open`].
///
/// # Errors
///
/// The file can not be opened.
pub fn connect(path: &Path) -> Result<Connection, OpenError> {
    let conn = Connection::open(path).map_err(|e| damaged(path, e))?;
    let setup = || -> rusqlite::Result<()> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        Ok(())
    };
    setup().map_err(|e| damaged(path, e))?;
    Ok(conn)
}

/// Opens an existing database for reading only (for `nu-agent status`).
///
/// # Errors
///
/// The file does not exist, is not a database, or can not be read.
pub fn open_read_only(path: &Path) -> Result<Connection, OpenError> {
    if !path.exists() {
        return Err(OpenError::Io {
            path: path.to_owned(),
            detail: "no such file".to_owned(),
        });
    }
    check_header(path)?;
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| damaged(path, e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| damaged(path, e))?;
    Ok(conn)
}
