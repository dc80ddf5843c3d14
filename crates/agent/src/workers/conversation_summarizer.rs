//! Summarises each conversation other than the current one that has no
//! summary, or whose summary is older than its last exchange.

use std::sync::atomic::Ordering;

use anyhow::Result;
use nu_coord::{BackgroundTask, Nudger, Outcome, TaskError, Unit};
use rusqlite::{named_params, params, Connection, OptionalExtension};
use tracing::debug;

use super::{
    capped_count_sql, short, summarize, Item, Setup, CONVERSATION_SUMMARIZER, EMBEDDING_GENERATOR,
};
use crate::db::{self, failed_jobs};

const INSTRUCTION: &str = "Summarize the following conversation between a user and an \
    assistant in two or three sentences: what it was about and what came of it. Reply with \
    the summary only.";

/// How many of a conversation's last exchanges go into its summary.
const MAX_EXCHANGES: i64 = 50;

/// The conversation summarizer.
pub struct ConversationSummarizer {
    conn: Connection,
    setup: Setup,
    embedder: Option<Nudger>,
    pending_sql: String,
    count_sql: String,
}

impl ConversationSummarizer {
    /// Creates it, with its own connection; `embedder` is woken after each
    /// summary.
    ///
    /// # Errors
    ///
    /// The database can not be opened.
    pub fn new(setup: &Setup, embedder: Option<Nudger>) -> Result<Self> {
        // Conversations are few (one per run); each test below is an index
        // look-up, none scans the conversation's exchanges.
        let filter = format!(
            "c.id != :current
             AND c.last_completed_at IS NOT NULL
             AND coalesce((SELECT s.created_at FROM summaries s
                           WHERE s.subject = 'conversation' AND s.subject_id = c.id), -1)
                 < c.last_completed_at
             AND NOT EXISTS (SELECT 1 FROM exchanges e
                             WHERE e.status = 'running' AND e.conversation_id = c.id)
             AND {}",
            failed_jobs::may_try_sql("CAST(c.id AS TEXT)")
        );
        Ok(Self {
            conn: setup.connect()?,
            setup: setup.clone(),
            embedder,
            pending_sql: format!(
                "SELECT c.id FROM conversations c WHERE {filter} ORDER BY c.id LIMIT 1"
            ),
            count_sql: capped_count_sql(&format!("SELECT 1 FROM conversations c WHERE {filter}")),
        })
    }

    /// The conversation's last exchanges as text, oldest first: each one's
    /// summary when it has one, else what was said.
    fn transcript(&self, conversation_id: i64) -> rusqlite::Result<String> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT e.user_input, e.reply, s.summary FROM exchanges e
             LEFT JOIN summaries s ON s.subject = 'exchange' AND s.subject_id = e.id
             WHERE e.conversation_id = ?1 AND e.status = 'completed'
             ORDER BY e.id DESC LIMIT ?2",
        )?;
        let mut lines = stmt
            .query_map(params![conversation_id, MAX_EXCHANGES], |row| {
                let input: String = row.get(0)?;
                let reply: Option<String> = row.get(1)?;
                let summary: Option<String> = row.get(2)?;
                Ok(match summary {
                    Some(summary) => summary,
                    None => format!("User: {input}\nAssistant: {}", reply.unwrap_or_default()),
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        lines.reverse();
        Ok(lines.join("\n"))
    }
}

impl BackgroundTask for ConversationSummarizer {
    type Item = i64;

    fn next_item(&mut self, unit: &Unit<'_>) -> Result<Option<i64>, TaskError> {
        // A conversation becomes current before its first exchange is
        // recorded, so a look-up that may have seen that exchange is made
        // again when the current conversation changed while it ran.
        let mut current = self.setup.current_conversation.load(Ordering::SeqCst);
        loop {
            let params = named_params! {
                ":worker": CONVERSATION_SUMMARIZER,
                ":now": db::now_ms(),
                ":current": current,
            };
            let backlog: i64 = self
                .conn
                .query_row(&self.count_sql, params, |row| row.get(0))?;
            let id = self
                .conn
                .query_row(&self.pending_sql, params, |row| row.get(0))
                .optional()?;
            let now_current = self.setup.current_conversation.load(Ordering::SeqCst);
            if now_current == current {
                unit.set_backlog(backlog as u64);
                return Ok(id);
            }
            current = now_current;
        }
    }

    fn describe(&self, id: &i64) -> String {
        format!("conversation {id}")
    }

    fn run_item(&mut self, id: i64, unit: &Unit<'_>) -> Result<Outcome, TaskError> {
        let key = id.to_string();
        let what = format!("conversation {id}");
        let transcript = self.transcript(id)?;
        let named = Item {
            worker: CONVERSATION_SUMMARIZER,
            key: &key,
            what: &what,
        };
        let summary = summarize(
            &self.conn,
            &self.setup,
            unit,
            named,
            INSTRUCTION,
            &transcript,
        )?;
        let tx = self.conn.transaction()?;
        // A newer summary replaces the old one, and its embedding goes with
        // it so the embedding generator makes a fresh one.
        tx.execute(
            "DELETE FROM embeddings WHERE summary_id IN
                 (SELECT id FROM summaries WHERE subject = 'conversation' AND subject_id = ?1)",
            [id],
        )?;
        tx.execute(
            "INSERT INTO summaries (subject, subject_id, summary, model, cost, created_at)
             VALUES ('conversation', ?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(subject, subject_id) DO UPDATE SET summary = excluded.summary,
                 model = excluded.model, cost = excluded.cost, created_at = excluded.created_at,
                 embedded = 0",
            params![id, summary.text, summary.model, summary.cost, db::now_ms()],
        )?;
        failed_jobs::clear_failure(&tx, CONVERSATION_SUMMARIZER, &key)?;
        // The new text deserves its own tries at an embedding, whatever
        // became of the old one's.
        let summary_id: i64 = tx.query_row(
            "SELECT id FROM summaries WHERE subject = 'conversation' AND subject_id = ?1",
            [id],
            |row| row.get(0),
        )?;
        failed_jobs::clear_failure(&tx, EMBEDDING_GENERATOR, &summary_id.to_string())?;
        tx.commit()?;
        debug!(conversation = id, "conversation summarised");
        if let Some(embedder) = &self.embedder {
            embedder.nudge();
        }
        Ok(Outcome::new(short(&summary.text, 80)).with_cost(summary.cost))
    }
}
