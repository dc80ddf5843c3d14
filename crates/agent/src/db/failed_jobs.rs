//! Work items that failed: recorded with their error, retried later with
//! backoff, and given up after a few tries.
//!
//! A row per `(worker, item)`. `next_attempt_at` is when the item may be
//! tried again, or NULL once it has been given up on. Workers skip items
//! whose row says "not yet" or "given up", and delete the row when the
//! item finally succeeds.

use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use super::now_ms;

/// When and how often a failed item is retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The wait after the first failure; it doubles after each one.
    pub base: Duration,
    /// Tries in all before an item is given up.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(30),
            max_attempts: 3,
        }
    }
}

/// What happened to a failure once recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// It will be tried again after this long.
    RetryIn(Duration),
    /// It failed `max_attempts` times and will not be tried again.
    GivenUp,
}

/// Records that `item` failed for `worker` with `error`.
///
/// # Errors
///
/// Any database error.
pub fn record_failure(
    conn: &Connection,
    worker: &str,
    item: &str,
    error: &str,
    policy: RetryPolicy,
) -> rusqlite::Result<Recorded> {
    let attempts: u32 = conn
        .query_row(
            "SELECT attempts FROM failed_jobs WHERE worker = ?1 AND item = ?2",
            params![worker, item],
            |row| row.get(0),
        )
        .optional()?
        .unwrap_or(0)
        + 1;
    let now = now_ms();
    let (next, recorded) = if attempts >= policy.max_attempts {
        (None, Recorded::GivenUp)
    } else {
        let wait = policy.base * 2u32.saturating_pow(attempts - 1);
        (Some(now + wait.as_millis() as i64), Recorded::RetryIn(wait))
    };
    conn.execute(
        "INSERT INTO failed_jobs
             (worker, item, error, attempts, next_attempt_at, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
         ON CONFLICT(worker, item) DO UPDATE SET
             error = excluded.error, attempts = excluded.attempts,
             next_attempt_at = excluded.next_attempt_at, updated_at = excluded.updated_at",
        params![worker, item, error, attempts, next, now],
    )?;
    Ok(recorded)
}

/// Forgets a failure once the item has succeeded.
///
/// # Errors
///
/// Any database error.
pub fn clear_failure(conn: &Connection, worker: &str, item: &str) -> rusqlite::Result<()> {
    conn.execute(
        "DELETE FROM failed_jobs WHERE worker = ?1 AND item = ?2",
        params![worker, item],
    )?;
    Ok(())
}

/// SQL that is true when the item named by the SQL expression `item_expr`
/// may be tried now by the worker bound to `:worker`: no failure on record,
/// or its retry time (compared with `:now`) has come.
pub fn may_try_sql(item_expr: &str) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM failed_jobs f WHERE f.worker = :worker \
         AND f.item = {item_expr} AND (f.next_attempt_at IS NULL OR f.next_attempt_at > :now))"
    )
}

/// One recorded failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailedJob {
    /// The worker.
    pub worker: String,
    /// The item, as the worker names it.
    pub item: String,
    /// The last error.
    pub error: String,
    /// Tries so far.
    pub attempts: u32,
    /// `true` once it will not be tried again.
    pub given_up: bool,
}

/// Every recorded failure, newest first.
///
/// # Errors
///
/// Any database error.
pub fn failed_jobs(conn: &Connection) -> rusqlite::Result<Vec<FailedJob>> {
    let mut stmt = conn.prepare(
        "SELECT worker, item, error, attempts, next_attempt_at IS NULL
         FROM failed_jobs ORDER BY updated_at DESC, id DESC",
    )?;
    let rows = stmt.query_map([], |row| {
        Ok(FailedJob {
            worker: row.get(0)?,
            item: row.get(1)?,
            error: row.get(2)?,
            attempts: row.get(3)?,
            given_up: row.get(4)?,
        })
    })?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Connection {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::db::open(&dir.path().join("h.db")).unwrap();
        std::mem::forget(dir);
        conn
    }

    #[test]
    fn failures_back_off_then_give_up_and_success_clears_them() {
        let conn = conn();
        let policy = RetryPolicy {
            base: Duration::from_secs(10),
            max_attempts: 3,
        };
        let first = record_failure(&conn, "w", "7", "boom", policy).unwrap();
        assert_eq!(first, Recorded::RetryIn(Duration::from_secs(10)));
        let second = record_failure(&conn, "w", "7", "boom again", policy).unwrap();
        assert_eq!(second, Recorded::RetryIn(Duration::from_secs(20)));
        let third = record_failure(&conn, "w", "7", "still", policy).unwrap();
        assert_eq!(third, Recorded::GivenUp);
        let jobs = failed_jobs(&conn).unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!((jobs[0].attempts, jobs[0].given_up), (3, true));
        assert_eq!(jobs[0].error, "still");
        clear_failure(&conn, "w", "7").unwrap();
        assert!(failed_jobs(&conn).unwrap().is_empty());
    }
}
