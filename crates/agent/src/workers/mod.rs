//! The three background workers over the history: they summarise finished
//! exchanges and past conversations, and embed every summary so `/search`
//! can find related exchanges.
//!
//! Each is a [`nu_coord::BackgroundTask`] that does one item per unit of
//! work, so a pause never waits for more than one model call. Each opens
//! its own database connection, is woken when new work is recorded, and
//! keeps failed items in the `failed_jobs` table, retrying them later with
//! backoff and giving up after a few tries.

mod conversation_summarizer;
mod embedding_generator;
mod exchange_summarizer;

use std::path::PathBuf;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use nu_coord::{BackgroundWorkers, Unit, WorkerOptions};
use rusqlite::Connection;

pub use conversation_summarizer::ConversationSummarizer;
pub use embedding_generator::{
    blob_to_vector, vector_to_blob, EmbeddingGenerator, EMBEDDING_BATCH,
};
pub use exchange_summarizer::ExchangeSummarizer;

use crate::db::failed_jobs::{self, Recorded, RetryPolicy};
use crate::events::{Event, EventSender};
use crate::model::{Cancel, Model, ModelError};

/// The exchange summarizer's name.
pub const EXCHANGE_SUMMARIZER: &str = "exchange_summarizer";
/// The conversation summarizer's name.
pub const CONVERSATION_SUMMARIZER: &str = "conversation_summarizer";
/// The embedding generator's name.
pub const EMBEDDING_GENERATOR: &str = "embedding_generator";

/// Every worker, in the order they are listed.
pub const NAMES: [&str; 3] = [
    EXCHANGE_SUMMARIZER,
    CONVERSATION_SUMMARIZER,
    EMBEDDING_GENERATOR,
];

/// What the workers share.
#[derive(Clone)]
pub struct Setup {
    /// The history database.
    pub db_path: PathBuf,
    /// The model that writes summaries and embeddings.
    pub model: Arc<dyn Model>,
    /// The conversation in progress (0 before it starts), which the
    /// conversation summarizer leaves alone.
    pub current_conversation: Arc<AtomicI64>,
    /// Set at shutdown, to end model calls early.
    pub cancel: Cancel,
    /// How failed items are retried.
    pub retry: RetryPolicy,
    /// How long an idle worker sleeps when nothing wakes it (it looks for
    /// items whose retry time has come when it wakes).
    pub idle_interval: Duration,
    /// Where the workers' notes to the user go.
    pub events: Option<EventSender>,
}

impl Setup {
    fn options(&self) -> WorkerOptions {
        WorkerOptions::default()
            .idle_interval(self.idle_interval)
            .retry_interval(Duration::from_secs(1))
            .on_thread_start(lower_priority)
    }

    fn connect(&self) -> Result<Connection> {
        Ok(crate::db::connect(&self.db_path)?)
    }
}

/// The `config` key that remembers whether a worker is enabled.
pub fn enabled_key(name: &str) -> String {
    format!("worker.{name}.enabled")
}

/// Runs the calling thread at a lower scheduling priority (about `nice 10`
/// on Linux), so that work in the background yields the processor to the
/// foreground: an exchange being answered, a backup being copied. Not the
/// lowest: a worker asked to pause must still finish its unit promptly
/// when the machine is busy. Where the system does not allow it, the
/// worker runs at normal priority.
fn lower_priority() {
    use thread_priority::{set_current_thread_priority, ThreadPriority, ThreadPriorityValue};
    let Ok(value) = ThreadPriorityValue::try_from(25u8) else {
        return;
    };
    if let Err(err) = set_current_thread_priority(ThreadPriority::Crossplatform(value)) {
        tracing::debug!("could not lower a worker's priority: {err:?}");
    }
}

/// Registers the three workers (stopped) in `workers`.
///
/// # Errors
///
/// A worker's database connection could not be opened, or a name is taken.
pub fn register(workers: &BackgroundWorkers, setup: &Setup) -> Result<()> {
    workers.register(
        EMBEDDING_GENERATOR,
        EmbeddingGenerator::new(setup)?,
        setup.options(),
    )?;
    let embedder = workers.nudger(EMBEDDING_GENERATOR)?;
    workers.register(
        EXCHANGE_SUMMARIZER,
        ExchangeSummarizer::new(setup, Some(embedder.clone()))?,
        setup.options(),
    )?;
    workers.register(
        CONVERSATION_SUMMARIZER,
        ConversationSummarizer::new(setup, Some(embedder))?,
        setup.options(),
    )?;
    Ok(())
}

/// The parts of a unit of work that name its item, for the failure record.
struct Item<'a> {
    worker: &'a str,
    key: &'a str,
    what: &'a str,
}

/// Asks the model for a summary of `text`, counted as parked while the
/// model works (it touches nothing of ours; a pause or a backup need not
/// wait for it). A failure (an empty summary counts as one) is recorded
/// for the item as [`fail`] does, and returned.
fn summarize(
    conn: &Connection,
    setup: &Setup,
    unit: &Unit<'_>,
    item: Item<'_>,
    instruction: &str,
    text: &str,
) -> Result<crate::model::Completion, nu_coord::TaskError> {
    let (result, checkpoint) =
        unit.parked(|| setup.model.summarize(instruction, text, &setup.cancel));
    if checkpoint.is_shutdown() {
        return Err(stopped());
    }
    let Item { worker, key, what } = item;
    let error = match result {
        Ok(summary) if !summary.text.is_empty() => return Ok(summary),
        Ok(_) => "the model returned an empty summary".to_owned(),
        Err(ModelError::Cancelled) => return Err(stopped()),
        Err(err) => err.to_string(),
    };
    Err(fail(conn, setup, worker, key, what, &error))
}

/// The error of a unit cut short by shutdown: not the item's fault, so
/// nothing is recorded against it.
fn stopped() -> nu_coord::TaskError {
    "stopped before the model answered; the item is done at the next start".into()
}

/// Records a failed item and, when it is given up, tells the user; returns
/// the error for the worker's status.
fn fail(
    conn: &Connection,
    setup: &Setup,
    worker: &str,
    item: &str,
    what: &str,
    error: &str,
) -> nu_coord::TaskError {
    match failed_jobs::record_failure(conn, worker, item, error, setup.retry) {
        Ok(Recorded::RetryIn(wait)) => {
            tracing::debug!(worker, item, "failed, retrying in {wait:?}: {error}");
            format!("{what}: {error} (retrying in {}s)", wait.as_secs()).into()
        }
        Ok(Recorded::GivenUp) => {
            tracing::debug!(worker, item, "given up: {error}");
            if let Some(events) = &setup.events {
                let _ = events.send(Event::Note(format!(
                    "{worker}: gave up on {what} after {} tries: {error}",
                    setup.retry.max_attempts
                )));
            }
            format!("{what}: {error} (given up)").into()
        }
        Err(db_err) => format!("{what}: {error} (and could not record it: {db_err})").into(),
    }
}

/// Backlogs are counted up to this many items (shown as "1000+"), so that counting stays
/// cheap inside a unit of work however long the history is.
pub const BACKLOG_CAP: u64 = 1_000;

/// Wraps a query selecting pending items into a count capped at
/// [`BACKLOG_CAP`].
fn capped_count_sql(select_pending: &str) -> String {
    format!("SELECT count(*) FROM ({select_pending} LIMIT {BACKLOG_CAP})")
}

/// Shortens text to one line of at most `max` characters.
pub(crate) fn short(text: &str, max: usize) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        flat
    } else {
        let cut: String = flat.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}
