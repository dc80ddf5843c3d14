//! Summarises each completed exchange that has no summary.

use anyhow::Result;
use nu_coord::{BackgroundTask, Nudger, Outcome, TaskError, Unit};
use rusqlite::{named_params, Connection, OptionalExtension};
use tracing::debug;

use super::{capped_count_sql, short, summarize, Item, Setup, EXCHANGE_SUMMARIZER};
use crate::db::{self, failed_jobs};

const INSTRUCTION: &str = "Summarize the following exchange between a user and an assistant \
    in one or two sentences. Reply with the summary only.";

/// A completed exchange waiting for its summary.
#[derive(Debug)]
pub struct PendingExchange {
    id: i64,
    input: String,
    reply: String,
}

/// The exchange summarizer.
pub struct ExchangeSummarizer {
    conn: Connection,
    setup: Setup,
    embedder: Option<Nudger>,
    pending_sql: String,
    count_sql: String,
}

impl ExchangeSummarizer {
    /// Creates it, with its own connection; `embedder` is woken after each
    /// summary.
    ///
    /// # Errors
    ///
    /// The database can not be opened.
    pub fn new(setup: &Setup, embedder: Option<Nudger>) -> Result<Self> {
        // Only completed exchanges: one still running is never touched.
        // The first two terms match the partial index `exchanges_to_summarize`.
        let filter = format!(
            "e.status = 'completed' AND e.summarized = 0 AND {}",
            failed_jobs::may_try_sql("CAST(e.id AS TEXT)")
        );
        Ok(Self {
            conn: setup.connect()?,
            setup: setup.clone(),
            embedder,
            pending_sql: format!(
                "SELECT e.id, e.user_input, e.reply FROM exchanges e WHERE {filter}
                 ORDER BY e.id LIMIT 1"
            ),
            count_sql: capped_count_sql(&format!("SELECT 1 FROM exchanges e WHERE {filter}")),
        })
    }
}

impl BackgroundTask for ExchangeSummarizer {
    type Item = PendingExchange;

    fn next_item(&mut self, unit: &Unit<'_>) -> Result<Option<PendingExchange>, TaskError> {
        let params = named_params! { ":worker": EXCHANGE_SUMMARIZER, ":now": db::now_ms() };
        let backlog: i64 = self
            .conn
            .query_row(&self.count_sql, params, |row| row.get(0))?;
        unit.set_backlog(backlog as u64);
        let item = self
            .conn
            .query_row(&self.pending_sql, params, |row| {
                Ok(PendingExchange {
                    id: row.get(0)?,
                    input: row.get(1)?,
                    reply: row.get::<_, Option<String>>(2)?.unwrap_or_default(),
                })
            })
            .optional()?;
        Ok(item)
    }

    fn describe(&self, item: &PendingExchange) -> String {
        format!("exchange {}", item.id)
    }

    fn run_item(&mut self, item: PendingExchange, unit: &Unit<'_>) -> Result<Outcome, TaskError> {
        let text = format!("User: {}\nAssistant: {}", item.input, item.reply);
        let key = item.id.to_string();
        let what = format!("exchange {}", item.id);
        let named = Item {
            worker: EXCHANGE_SUMMARIZER,
            key: &key,
            what: &what,
        };
        let summary = summarize(&self.conn, &self.setup, unit, named, INSTRUCTION, &text)?;
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO summaries (subject, subject_id, summary, model, cost, created_at)
             VALUES ('exchange', ?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(subject, subject_id) DO NOTHING",
            rusqlite::params![
                item.id,
                summary.text,
                summary.model,
                summary.cost,
                db::now_ms()
            ],
        )?;
        tx.execute(
            "UPDATE exchanges SET summarized = 1 WHERE id = ?1",
            [item.id],
        )?;
        failed_jobs::clear_failure(&tx, EXCHANGE_SUMMARIZER, &key)?;
        tx.commit()?;
        debug!(exchange = item.id, "exchange summarised");
        if let Some(embedder) = &self.embedder {
            embedder.nudge();
        }
        Ok(Outcome::new(short(&summary.text, 80)).with_cost(summary.cost))
    }
}
