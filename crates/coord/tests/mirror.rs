#![cfg(feature = "sqlite")]

mod common;

use std::time::Duration;

use common::{wait_for, PATIENCE};
use nu_coord::{read_counts, Counts, CountsMirror, Error, WorkerCounter, WorkerKind};
use rusqlite::Connection;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

#[test]
fn another_connection_sees_the_counts_catch_up() -> Result {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("history.db");
    let counter = WorkerCounter::new();
    let mirror = CountsMirror::open(&counter, &path)?;
    let reader = Connection::open(&path)?;
    assert_eq!(read_counts(&reader)?, Counts::default());

    let tokens: Vec<_> = (0..3)
        .map(|_| counter.token(WorkerKind::Orchestrator))
        .collect();
    for token in &tokens {
        token.activate()?;
    }
    let worker = counter.token(WorkerKind::BackgroundWorker);
    worker.activate()?;
    let expected = Counts {
        orchestrators: 3,
        background_workers: 1,
    };
    assert!(wait_for(|| read_counts(&reader).unwrap() == expected));

    drop(tokens);
    assert!(wait_for(|| read_counts(&reader).unwrap().orchestrators == 0));
    assert!(mirror.writes() >= 2);
    assert_eq!(mirror.last_error(), None);

    // Dropping the mirror writes the final state.
    drop(worker);
    drop(mirror);
    assert_eq!(read_counts(&reader)?, Counts::default());
    Ok(())
}

#[test]
fn a_burst_of_changes_costs_few_writes() -> Result {
    let dir = tempfile::tempdir()?;
    let counter = WorkerCounter::new();
    let mirror = CountsMirror::open(&counter, dir.path().join("a.db"))?;
    let token = counter.token(WorkerKind::Orchestrator);
    for _ in 0..100_000 {
        token.activate()?;
        token.release();
    }
    assert!(mirror.flush(PATIENCE)?);
    // Writes are limited to one per MIN_WRITE_INTERVAL, whatever the rate.
    assert!(mirror.writes() < 1_000, "{} writes", mirror.writes());
    Ok(())
}

#[test]
fn starting_a_mirror_resets_a_crashed_runs_counts() -> Result {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("history.db");
    {
        // What a process killed mid-exchange leaves behind.
        let conn = Connection::open(&path)?;
        conn.execute_batch(
            "CREATE TABLE metadata (key TEXT PRIMARY KEY NOT NULL, value);
             INSERT INTO metadata VALUES ('active_orchestrator_count', 2),
                                         ('active_background_worker_count', 3),
                                         ('schema_version', 'kept');",
        )?;
    }
    let counter = WorkerCounter::new();
    let _mirror = CountsMirror::open(&counter, &path)?;
    let reader = Connection::open(&path)?;
    assert_eq!(read_counts(&reader)?, Counts::default());
    let pid: i64 = reader.query_row(
        "SELECT value FROM metadata WHERE key = ?1",
        [nu_coord::OWNER_PID_KEY],
        |row| row.get(0),
    )?;
    assert_eq!(pid, i64::from(std::process::id()));
    let other: String = reader.query_row(
        "SELECT value FROM metadata WHERE key = 'schema_version'",
        [],
        |row| row.get(0),
    )?;
    assert_eq!(other, "kept", "other metadata is left alone");
    Ok(())
}

#[test]
fn a_counter_feeds_one_mirror() -> Result {
    let dir = tempfile::tempdir()?;
    let counter = WorkerCounter::new();
    let _first = CountsMirror::open(&counter, dir.path().join("a.db"))?;
    let second = CountsMirror::open(&counter, dir.path().join("b.db"));
    assert!(matches!(second, Err(Error::AlreadyMirrored)));
    Ok(())
}

#[test]
fn a_file_that_is_not_a_database_is_refused_and_left_alone() -> Result {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("notes.txt");
    let content = b"these are my notes, not a database\n".repeat(200);
    std::fs::write(&path, &content)?;
    let counter = WorkerCounter::new();
    let err = CountsMirror::open(&counter, &path).unwrap_err();
    assert!(matches!(err, Error::Database(_)), "{err:?}");
    assert_eq!(std::fs::read(&path)?, content);
    Ok(())
}

#[test]
fn a_locked_database_delays_the_mirror_without_blocking_tokens() -> Result {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("history.db");
    let counter = WorkerCounter::new();
    let conn = Connection::open(&path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.busy_timeout(Duration::from_millis(20))?;
    let mirror = CountsMirror::start(&counter, conn)?;

    // Another connection holds the write lock.
    let mut blocker = Connection::open(&path)?;
    let tx = blocker.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let token = counter.token(WorkerKind::Orchestrator);
    token.activate()?; // returns at once: counting never waits on the disk
    assert!(matches!(
        mirror.flush(PATIENCE),
        Err(Error::MirrorWrite { .. })
    ));
    assert!(mirror.last_error().is_some());
    tx.commit()?;

    // The change stayed pending and lands once the lock is gone.
    let reader = Connection::open(&path)?;
    assert!(wait_for(|| read_counts(&reader).unwrap().orchestrators == 1));
    assert!(wait_for(|| mirror.last_error().is_none()));
    Ok(())
}
