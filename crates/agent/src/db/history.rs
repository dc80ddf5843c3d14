//! Queries on conversations, exchanges and messages.

use rusqlite::{params, Connection, OptionalExtension};

use super::now_ms;
use crate::model::{Completion, Message, Role};

/// Where an exchange is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExchangeStatus {
    /// The model is still answering.
    Running,
    /// The reply is recorded.
    Completed,
    /// The model or its server failed.
    Failed,
    /// The user cancelled it.
    Cancelled,
}

impl ExchangeStatus {
    /// The status as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeStatus::Running => "running",
            ExchangeStatus::Completed => "completed",
            ExchangeStatus::Failed => "failed",
            ExchangeStatus::Cancelled => "cancelled",
        }
    }
}

/// Starts a new conversation and returns its id.
///
/// # Errors
///
/// Any database error.
pub fn start_conversation(conn: &Connection) -> rusqlite::Result<i64> {
    conn.execute(
        "INSERT INTO conversations (started_at) VALUES (?1)",
        [now_ms()],
    )?;
    Ok(conn.last_insert_rowid())
}

/// Records the start of an exchange: its row, as running, and the user's
/// message, in one transaction. Returns the exchange id.
///
/// # Errors
///
/// Any database error; nothing is recorded then.
pub fn begin_exchange(
    conn: &mut Connection,
    conversation_id: i64,
    input: &str,
    model: &str,
) -> rusqlite::Result<i64> {
    let tx = conn.transaction()?;
    let now = now_ms();
    tx.execute(
        "INSERT INTO exchanges (conversation_id, status, user_input, model, started_at)
         VALUES (?1, 'running', ?2, ?3, ?4)",
        params![conversation_id, input, model, now],
    )?;
    let id = tx.last_insert_rowid();
    tx.execute(
        "INSERT INTO messages (conversation_id, exchange_id, role, content, created_at)
         VALUES (?1, ?2, 'user', ?3, ?4)",
        params![conversation_id, id, input, now],
    )?;
    tx.commit()?;
    Ok(id)
}

/// Records a completed exchange: the reply on its row and as a message.
///
/// # Errors
///
/// Any database error; the exchange stays as it was then.
pub fn complete_exchange(
    conn: &mut Connection,
    exchange_id: i64,
    completion: &Completion,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    let now = now_ms();
    tx.execute(
        "UPDATE exchanges SET status = 'completed', reply = ?2, prompt_tokens = ?3,
                completion_tokens = ?4, cost = ?5, ended_at = ?6
         WHERE id = ?1",
        params![
            exchange_id,
            completion.text,
            completion.prompt_tokens.map(|t| t as i64),
            completion.completion_tokens.map(|t| t as i64),
            completion.cost,
            now
        ],
    )?;
    tx.execute(
        "INSERT INTO messages (conversation_id, exchange_id, role, content, created_at)
         SELECT conversation_id, id, 'assistant', ?2, ?3 FROM exchanges WHERE id = ?1",
        params![exchange_id, completion.text, now],
    )?;
    tx.execute(
        "UPDATE conversations SET last_completed_at = ?2
         WHERE id = (SELECT conversation_id FROM exchanges WHERE id = ?1)",
        params![exchange_id, now],
    )?;
    tx.commit()
}

/// Records that an exchange ended without a reply: failed or cancelled,
/// with what happened.
///
/// # Errors
///
/// Any database error.
pub fn end_exchange(
    conn: &Connection,
    exchange_id: i64,
    status: ExchangeStatus,
    error: &str,
) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE exchanges SET status = ?2, error = ?3, ended_at = ?4 WHERE id = ?1",
        params![exchange_id, status.as_str(), error, now_ms()],
    )?;
    Ok(())
}

/// Marks exchanges left running by a program that stopped without
/// finishing them as failed. Returns how many there were.
///
/// # Errors
///
/// Any database error.
pub fn fail_interrupted(conn: &Connection) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE exchanges SET status = 'failed', ended_at = ?1,
                error = 'interrupted: the agent stopped before the exchange finished'
         WHERE status = 'running'",
        [now_ms()],
    )
}

/// Returns the last `limit` messages of a conversation's finished
/// exchanges, oldest first: the context sent with the next input.
///
/// # Errors
///
/// Any database error.
pub fn conversation_context(
    conn: &Connection,
    conversation_id: i64,
    limit: usize,
) -> rusqlite::Result<Vec<Message>> {
    let mut stmt = conn.prepare_cached(
        "SELECT m.role, m.content FROM messages m
         JOIN exchanges e ON e.id = m.exchange_id
         WHERE m.conversation_id = ?1 AND e.status = 'completed'
         ORDER BY m.id DESC LIMIT ?2",
    )?;
    let mut messages = stmt
        .query_map(params![conversation_id, limit as i64], |row| {
            let role: String = row.get(0)?;
            let content: String = row.get(1)?;
            Ok(Message::new(
                Role::parse(&role).unwrap_or(Role::User),
                content,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    messages.reverse();
    Ok(messages)
}

/// One exchange as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct ExchangeRow {
    /// Its id.
    pub id: i64,
    /// Its conversation.
    pub conversation_id: i64,
    /// Its status, as stored.
    pub status: String,
    /// What the user typed.
    pub user_input: String,
    /// The reply, once completed.
    pub reply: Option<String>,
    /// What went wrong, if it failed or was cancelled.
    pub error: Option<String>,
    /// When it started.
    pub started_at: i64,
    /// When it ended.
    pub ended_at: Option<i64>,
}

/// Returns one exchange.
///
/// # Errors
///
/// Any database error.
pub fn exchange(conn: &Connection, id: i64) -> rusqlite::Result<Option<ExchangeRow>> {
    conn.query_row(
        "SELECT id, conversation_id, status, user_input, reply, error, started_at, ended_at
         FROM exchanges WHERE id = ?1",
        [id],
        |row| {
            Ok(ExchangeRow {
                id: row.get(0)?,
                conversation_id: row.get(1)?,
                status: row.get(2)?,
                user_input: row.get(3)?,
                reply: row.get(4)?,
                error: row.get(5)?,
                started_at: row.get(6)?,
                ended_at: row.get(7)?,
            })
        },
    )
    .optional()
}

/// Counts of what the history holds, for `/status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistoryCounts {
    /// Conversations.
    pub conversations: i64,
    /// Exchanges of every status.
    pub exchanges: i64,
    /// Summaries of exchanges and conversations.
    pub summaries: i64,
    /// Embeddings.
    pub embeddings: i64,
}

/// Counts what the history holds.
///
/// # Errors
///
/// Any database error.
pub fn history_counts(conn: &Connection) -> rusqlite::Result<HistoryCounts> {
    conn.query_row(
        "SELECT (SELECT count(*) FROM conversations), (SELECT count(*) FROM exchanges),
                (SELECT count(*) FROM summaries), (SELECT count(*) FROM embeddings)",
        [],
        |row| {
            Ok(HistoryCounts {
                conversations: row.get(0)?,
                exchanges: row.get(1)?,
                summaries: row.get(2)?,
                embeddings: row.get(3)?,
            })
        },
    )
}

/// Reads a configuration value.
///
/// # Errors
///
/// Any database error.
pub fn config_get(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row("SELECT value FROM config WHERE key = ?1", [key], |row| {
        row.get(0)
    })
    .optional()
}

/// Writes a configuration value.
///
/// # Errors
///
/// Any database error.
pub fn config_set(conn: &Connection, key: &str, value: &str) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO config (key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}
