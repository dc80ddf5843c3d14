//! One owner per database: an exclusive lock on a file next to it.
//!
//! The lock is an operating-system file lock, so it dies with the process
//! that holds it: after a crash or `kill -9` the next start takes over at
//! once, with no stale-lock clean-up. The file also records the owner's
//! process id, which is how a refused second agent and `nu-agent status`
//! name the owner.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Returns the lock file that guards `db`: `<db>.owner`.
pub fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".owner");
    PathBuf::from(name)
}

/// Ownership of a database; released when dropped (or when the process
/// dies).
#[derive(Debug)]
pub struct Owner {
    _file: File,
    path: PathBuf,
}

impl Owner {
    /// Takes ownership of `db`.
    ///
    /// # Errors
    ///
    /// Another live process owns it (the error names its pid), or the lock
    /// file can not be created.
    pub fn acquire(db: &Path) -> Result<Owner> {
        let path = lock_path(db);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("could not open the lock file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let pid = read_pid(&mut file);
                let who = pid.map_or_else(|| "another process".to_owned(), |p| format!("pid {p}"));
                bail!(
                    "{} is in use by another nu-agent ({who}); only one agent can own a \
                     database at a time. Use that agent, or start this one with --db OTHER_PATH",
                    db.display()
                );
            }
            Err(std::fs::TryLockError::Error(err)) => {
                return Err(err).with_context(|| format!("could not lock {}", path.display()));
            }
        }
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        writeln!(file, "{}", std::process::id())?;
        file.sync_data()?;
        Ok(Owner { _file: file, path })
    }

    /// Returns the lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Who owns `db` right now: the owner's pid if a live process holds the
/// lock, `None` if nobody does.
///
/// # Errors
///
/// The lock file exists but can not be read.
pub fn current_owner(db: &Path) -> Result<Option<u32>> {
    let path = lock_path(db);
    let mut file = match File::open(&path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err).with_context(|| format!("could not read {}", path.display())),
    };
    match file.try_lock_shared() {
        Ok(()) => {
            // Nobody holds it: a clean exit or a crash left the file behind.
            file.unlock()?;
            Ok(None)
        }
        Err(std::fs::TryLockError::WouldBlock) => Ok(Some(read_pid(&mut file).unwrap_or(0))),
        Err(std::fs::TryLockError::Error(err)) => {
            Err(err).with_context(|| format!("could not check {}", path.display()))
        }
    }
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}
