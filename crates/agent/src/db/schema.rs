//! The schema, as a list of migrations applied in order.
//!
//! `PRAGMA user_version` records how many have been applied. A database
//! whose version is newer than this program knows is refused before
//! anything is written to it.

use rusqlite::Connection;

/// Migrations, in order; the schema version is their number.
const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "
    CREATE TABLE conversations (
        id                 INTEGER PRIMARY KEY,
        started_at         INTEGER NOT NULL,
        -- When its last exchange completed: the conversation summarizer
        -- compares it with the summary's time without scanning exchanges.
        last_completed_at  INTEGER
    );

    CREATE TABLE exchanges (
        id                 INTEGER PRIMARY KEY,
        conversation_id    INTEGER NOT NULL REFERENCES conversations(id),
        status             TEXT NOT NULL
                           CHECK (status IN ('running', 'completed', 'failed', 'cancelled')),
        user_input         TEXT NOT NULL,
        reply              TEXT,
        error              TEXT,
        model              TEXT NOT NULL,
        prompt_tokens      INTEGER,
        completion_tokens  INTEGER,
        cost               REAL NOT NULL DEFAULT 0,
        started_at         INTEGER NOT NULL,
        ended_at           INTEGER,
        -- Set with the exchange's summary, so the exchanges still waiting
        -- for one are found through the small index below, however long
        -- the history.
        summarized         INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX exchanges_by_conversation ON exchanges(conversation_id, id);
    CREATE INDEX exchanges_by_status ON exchanges(status);
    CREATE INDEX exchanges_to_summarize ON exchanges(id)
        WHERE status = 'completed' AND summarized = 0;

    CREATE TABLE messages (
        id               INTEGER PRIMARY KEY,
        conversation_id  INTEGER NOT NULL REFERENCES conversations(id),
        exchange_id      INTEGER REFERENCES exchanges(id),
        role             TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
        content          TEXT NOT NULL,
        created_at       INTEGER NOT NULL
    );
    CREATE INDEX messages_by_conversation ON messages(conversation_id, id);

    CREATE TABLE summaries (
        id          INTEGER PRIMARY KEY,
        subject     TEXT NOT NULL CHECK (subject IN ('exchange', 'conversation')),
        subject_id  INTEGER NOT NULL,
        summary     TEXT NOT NULL,
        model       TEXT NOT NULL,
        cost        REAL NOT NULL DEFAULT 0,
        created_at  INTEGER NOT NULL,
        -- Set with the summary's embedding; cleared when the summary is
        -- replaced.
        embedded    INTEGER NOT NULL DEFAULT 0,
        UNIQUE (subject, subject_id)
    );
    CREATE INDEX summaries_to_embed ON summaries(id) WHERE embedded = 0;

    CREATE TABLE embeddings (
        id          INTEGER PRIMARY KEY,
        summary_id  INTEGER NOT NULL UNIQUE REFERENCES summaries(id) ON DELETE CASCADE,
        model       TEXT NOT NULL,
        dimension   INTEGER NOT NULL,
        vector      BLOB NOT NULL,
        created_at  INTEGER NOT NULL
    );

    CREATE TABLE metadata (
        key    TEXT PRIMARY KEY NOT NULL,
        value
    );

    CREATE TABLE failed_jobs (
        id               INTEGER PRIMARY KEY,
        worker           TEXT NOT NULL,
        item             TEXT NOT NULL,
        error            TEXT NOT NULL,
        attempts         INTEGER NOT NULL,
        next_attempt_at  INTEGER,
        created_at       INTEGER NOT NULL,
        updated_at       INTEGER NOT NULL,
        UNIQUE (worker, item)
    );

    CREATE TABLE config (
        key    TEXT PRIMARY KEY NOT NULL,
        value  TEXT NOT NULL
    );
    ",
];

/// The schema version this program writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Returns the schema version recorded in the database.
pub(crate) fn version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |row| row.get(0))
}

/// Applies every migration the database has not had, each in its own
/// transaction together with the version bump.
pub(crate) fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let current = version(conn)?;
    for (index, sql) in MIGRATIONS.iter().enumerate() {
        let target = index as i64 + 1;
        if target <= current {
            continue;
        }
        let tx = conn.transaction()?;
        // A file made by another program may already have a `metadata`
        // table (the coordination library creates one); keep its rows.
        let sql = if tx
            .query_row(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'metadata'",
                [],
                |_| Ok(()),
            )
            .is_ok()
        {
            sql.replace(
                "CREATE TABLE metadata",
                "CREATE TABLE IF NOT EXISTS metadata",
            )
        } else {
            (*sql).to_owned()
        };
        tx.execute_batch(&sql)?;
        tx.pragma_update(None, "user_version", target)?;
        tx.commit()?;
    }
    Ok(())
}
