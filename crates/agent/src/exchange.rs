//! Exchanges: one input answered by the model, on an orchestrator thread
//! that holds an orchestrator token for as long as it runs.
//!
//! The thread is the only place an exchange touches the database: it
//! records the user's message as the exchange starts, the reply (or what
//! went wrong) as it ends, and releases its token before it reports the end,
//! so counts are right by the time the prompt comes back.

use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use nu_coord::{Admission, WorkerCounter, WorkerKind};
use tracing::debug;

use crate::db::{self, ExchangeStatus};
use crate::events::{Event, EventSender};
use crate::model::{Cancel, Message, Model, ModelError, Role};

/// How long a new exchange waits for a safe state (a backup, an editor) to
/// end before it gives up.
pub const ADMISSION_WAIT: Duration = Duration::from_secs(30);

/// How many earlier messages of the conversation go with each input.
pub const CONTEXT_MESSAGES: usize = 40;

/// How an exchange ended.
#[derive(Debug)]
pub enum Finished {
    /// The reply is recorded.
    Completed {
        /// The exchange's id.
        id: i64,
        /// How long it took.
        took: Duration,
    },
    /// The model failed; the exchange is recorded as failed.
    Failed {
        /// The exchange's id, if it was recorded at all.
        id: Option<i64>,
        /// One line on what went wrong.
        error: String,
    },
    /// The user cancelled it; it is recorded as cancelled.
    Cancelled {
        /// The exchange's id.
        id: Option<i64>,
    },
}

/// What an orchestrator needs.
pub struct ExchangeRequest {
    /// Numbers this exchange's events, so that a late event of an earlier,
    /// abandoned exchange is never taken for this one's.
    pub number: u64,
    /// The database.
    pub db_path: PathBuf,
    /// The conversation it belongs to.
    pub conversation_id: i64,
    /// What the user typed.
    pub input: String,
    /// Who answers.
    pub model: Arc<dyn Model>,
    /// Counts the orchestrator.
    pub counter: WorkerCounter,
    /// Set by Ctrl-C.
    pub cancel: Cancel,
    /// Where text and the end are reported.
    pub events: EventSender,
    /// Called once the exchange is recorded as completed (to wake the
    /// summarizer).
    pub on_completed: Option<Box<dyn FnOnce() + Send>>,
}

/// Starts an exchange on its own orchestrator thread.
///
/// Exactly one [`Event::Finished`] is sent for it, whatever happens,
/// panics included.
pub fn spawn(request: ExchangeRequest) -> std::io::Result<thread::JoinHandle<()>> {
    thread::Builder::new()
        .name("orchestrator".into())
        .spawn(move || {
            let mut reporter = Reporter {
                number: request.number,
                events: request.events.clone(),
                sent: false,
            };
            let finished = run(request, &mut reporter);
            reporter.send(finished);
        })
}

/// Sends the one `Finished` event; if the thread unwinds before it could,
/// the drop sends a failure instead, so the REPL never waits forever.
struct Reporter {
    number: u64,
    events: EventSender,
    sent: bool,
}

impl Reporter {
    fn send(&mut self, finished: Finished) {
        self.sent = true;
        let _ = self.events.send(Event::Finished(self.number, finished));
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        if !self.sent {
            let _ = self.events.send(Event::Finished(
                self.number,
                Finished::Failed {
                    id: None,
                    error: "the exchange stopped unexpectedly (a panic; see --debug)".to_owned(),
                },
            ));
        }
    }
}

/// Marks the exchange's row failed if the thread unwinds before it could
/// record how the exchange ended, so no row is left `running`.
struct RowGuard<'a> {
    conn: &'a rusqlite::Connection,
    id: i64,
    armed: bool,
}

impl Drop for RowGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            record_end(
                self.conn,
                self.id,
                ExchangeStatus::Failed,
                "the exchange stopped unexpectedly (a panic)",
            );
        }
    }
}

fn run(request: ExchangeRequest, reporter: &mut Reporter) -> Finished {
    let started = Instant::now();
    let token = request
        .counter
        .token(WorkerKind::Orchestrator)
        .named("exchange");
    // Up to the exchange's row, a failure leaves nothing recorded.
    let not_recorded = |error: String| Finished::Failed { id: None, error };
    if let Err(err) = token.activate_with(Admission::Wait(ADMISSION_WAIT)) {
        return not_recorded(err.to_string());
    }
    let mut conn = match db::connect(&request.db_path) {
        Ok(conn) => conn,
        Err(err) => return not_recorded(err.to_string()),
    };
    let mut messages =
        match db::conversation_context(&conn, request.conversation_id, CONTEXT_MESSAGES) {
            Ok(context) => context,
            Err(err) => return not_recorded(format!("could not read the conversation: {err}")),
        };
    let id = match db::begin_exchange(
        &mut conn,
        request.conversation_id,
        &request.input,
        request.model.name(),
    ) {
        Ok(id) => id,
        Err(err) => return not_recorded(format!("could not record the exchange: {err}")),
    };
    debug!(exchange = id, "exchange started");
    messages.push(Message::new(Role::User, request.input.clone()));

    let events = reporter.events.clone();
    let number = request.number;
    let result = {
        let mut guard = RowGuard {
            conn: &conn,
            id,
            armed: true,
        };
        let result = request.model.chat(
            &messages,
            &mut |text| {
                let _ = events.send(Event::Text(number, text.to_owned()));
            },
            &request.cancel,
        );
        guard.armed = false;
        result
    };

    let finished = match result {
        Ok(completion) => match db::complete_exchange(&mut conn, id, &completion) {
            Ok(()) => Finished::Completed {
                id,
                took: started.elapsed(),
            },
            Err(err) => {
                let error = format!("the reply could not be recorded: {err}");
                record_end(&conn, id, ExchangeStatus::Failed, &error);
                Finished::Failed {
                    id: Some(id),
                    error,
                }
            }
        },
        Err(ModelError::Cancelled) => {
            record_end(
                &conn,
                id,
                ExchangeStatus::Cancelled,
                "cancelled by the user",
            );
            Finished::Cancelled { id: Some(id) }
        }
        Err(err) => {
            let error = err.to_string();
            record_end(&conn, id, ExchangeStatus::Failed, &error);
            Finished::Failed {
                id: Some(id),
                error,
            }
        }
    };
    debug!(exchange = id, outcome = ?finished, "exchange ended");
    drop(conn);
    // Uncount before reporting, so the prompt comes back with counts right.
    drop(token);
    if let (Finished::Completed { .. }, Some(callback)) = (&finished, request.on_completed) {
        callback();
    }
    finished
}

fn record_end(conn: &rusqlite::Connection, id: i64, status: ExchangeStatus, error: &str) {
    if let Err(err) = db::end_exchange(conn, id, status, error) {
        tracing::warn!(
            exchange = id,
            "could not record how the exchange ended: {err}"
        );
    }
}
