//! The three background workers against a real SQLite database with the
//! built-in local model, or a wrapper around it that fails, dawdles or
//! blocks when a test asks it to.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{Workers, PATIENCE};
use nu_agent::model::local::{embed_text, LocalModel, EMBEDDING_DIM, LOCAL_MODEL_NAME};
use nu_agent::model::{Cancel, Completion, Embeddings, Message, Model, ModelError};
use nu_agent::workers::{CONVERSATION_SUMMARIZER, EMBEDDING_GENERATOR, EXCHANGE_SUMMARIZER};
use nu_coord::WorkerState;

/// A door that embedding calls wait at while it is shut.
#[derive(Default)]
struct Door {
    shut: Mutex<bool>,
    opened: Condvar,
    /// Calls that have arrived at the door while it was shut.
    arrived: AtomicUsize,
}

impl Door {
    fn shut(&self) {
        *self.shut.lock().unwrap() = true;
    }

    fn open(&self) {
        *self.shut.lock().unwrap() = false;
        self.opened.notify_all();
    }

    fn pass(&self) {
        let mut shut = self.shut.lock().unwrap();
        if *shut {
            self.arrived.fetch_add(1, Ordering::SeqCst);
        }
        while *shut {
            shut = self.opened.wait(shut).unwrap();
        }
    }
}

/// The local model, with faults a test switches on: summaries of texts
/// that mention "poison" always fail, those that mention "wobbly" fail the
/// first time only, every embedding fails while `fail_embed` is set, and
/// embeddings wait at `door` while it is shut.
#[derive(Default)]
struct TestModel {
    local: LocalModel,
    /// How long each summary takes.
    summarize_delay: Duration,
    fail_embed: AtomicBool,
    door: Door,
    /// Every text given to `summarize`, with when.
    summarized: Mutex<Vec<(String, Instant)>>,
}

impl TestModel {
    fn slow(delay: Duration) -> Self {
        Self {
            summarize_delay: delay,
            ..Self::default()
        }
    }

    /// When `summarize` was called with a text starting with `prefix`.
    fn calls_starting(&self, prefix: &str) -> Vec<Instant> {
        self.summarized
            .lock()
            .unwrap()
            .iter()
            .filter(|(text, _)| text.starts_with(prefix))
            .map(|(_, at)| *at)
            .collect()
    }

    fn summarize_calls(&self) -> usize {
        self.summarized.lock().unwrap().len()
    }
}

impl Model for TestModel {
    fn name(&self) -> &str {
        "test"
    }

    fn chat(
        &self,
        messages: &[Message],
        on_text: &mut dyn FnMut(&str),
        cancel: &Cancel,
    ) -> Result<Completion, ModelError> {
        self.local.chat(messages, on_text, cancel)
    }

    fn embed(&self, texts: &[String], cancel: &Cancel) -> Result<Embeddings, ModelError> {
        self.door.pass();
        if self.fail_embed.load(Ordering::SeqCst) {
            return Err(ModelError::Other("the embedding service is down".into()));
        }
        if texts.iter().any(|t| t.contains("toxic")) {
            return Err(ModelError::Rejected {
                status: 400,
                detail: "this input is not accepted".into(),
            });
        }
        self.local.embed(texts, cancel)
    }

    fn embedding_model(&self) -> &str {
        self.local.embedding_model()
    }

    fn summarize(
        &self,
        instruction: &str,
        text: &str,
        cancel: &Cancel,
    ) -> Result<Completion, ModelError> {
        let earlier = self.calls_starting(text).len();
        self.summarized
            .lock()
            .unwrap()
            .push((text.to_owned(), Instant::now()));
        if !self.summarize_delay.is_zero() {
            thread::sleep(self.summarize_delay);
        }
        if text.contains("poison") {
            return Err(ModelError::Other("the model chokes on poison".into()));
        }
        if text.contains("wobbly") && earlier == 0 {
            return Err(ModelError::Other("a wobbly first try".into()));
        }
        self.local.summarize(instruction, text, cancel)
    }
}

/// Every summary has an embedding by `model`, and each embedding is the
/// local embedding of its summary's current text.
fn assert_embeddings_match_summaries(w: &Workers, model: &str) {
    let mut stmt = w
        .conn
        .prepare("SELECT s.id, s.summary FROM summaries s ORDER BY s.id")
        .unwrap();
    let summaries: Vec<(i64, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(!summaries.is_empty());
    for (id, text) in summaries {
        let (_, embedded_by, vector) = w
            .embedding(id)
            .unwrap_or_else(|| panic!("summary {id} ({text:?}) has no embedding"));
        assert_eq!(embedded_by, model);
        assert_eq!(vector.len(), EMBEDDING_DIM);
        assert_eq!(vector, embed_text(&text), "summary {id} embeds {text:?}");
    }
}

#[test]
fn every_exchange_and_past_conversation_is_summarised_and_embedded() {
    let mut w = Workers::new(Arc::new(LocalModel::new()));
    let past = w.conversation();
    let backups = w.exchange(
        past,
        "Backups of the database run every night. They copy the file with the online API.",
        "Noted.",
    );
    let cake = w.exchange(
        past,
        "A lemon cake needs three lemons. The icing takes the juice of one.",
        "Noted.",
    );
    let current = w.conversation();
    let cat = w.exchange(
        current,
        "My cat is called Ferdinand. He sleeps all day.",
        "Nice.",
    );
    w.set_current(current);
    w.start();

    w.wait("a summary and an embedding for everything", |w| {
        w.exchange_summaries() == 3 && w.summary("conversation", past).is_some() && {
            w.unembedded() == 0
        }
    });
    for (id, first_sentence) in [
        (backups, "Backups of the database run every night."),
        (cake, "A lemon cake needs three lemons."),
        (cat, "My cat is called Ferdinand."),
    ] {
        let (_, text, model, _) = w.summary("exchange", id).unwrap();
        assert!(text.contains(first_sentence), "exchange {id}: {text:?}");
        assert_eq!(model, LOCAL_MODEL_NAME);
    }
    let (_, text, _, _) = w.summary("conversation", past).unwrap();
    assert!(
        text.contains("lemon") && text.contains("Backups"),
        "the past conversation's summary covers its exchanges: {text:?}"
    );
    assert_embeddings_match_summaries(&w, LOCAL_MODEL_NAME);
    assert_eq!(
        w.count("SELECT count(*) FROM embeddings WHERE model = 'local' AND dimension = 256"),
        w.count("SELECT count(*) FROM summaries")
    );

    // The conversation in progress is left alone, however long one waits.
    thread::sleep(Duration::from_millis(200));
    assert_eq!(w.summary("conversation", current), None);

    // Once another conversation is in progress, it is summarised too.
    let next = w.conversation();
    w.set_current(next);
    w.nudge(CONVERSATION_SUMMARIZER);
    w.wait(
        "the previous conversation's summary and its embedding",
        |w| w.summary("conversation", current).is_some() && w.unembedded() == 0,
    );
    let (_, text, _, _) = w.summary("conversation", current).unwrap();
    assert!(text.contains("Ferdinand"), "{text:?}");
    assert_embeddings_match_summaries(&w, LOCAL_MODEL_NAME);
    assert!(w.failed_jobs().is_empty(), "{:?}", w.failed_jobs());
    for name in [
        EXCHANGE_SUMMARIZER,
        CONVERSATION_SUMMARIZER,
        EMBEDDING_GENERATOR,
    ] {
        let status = w.status(name);
        assert!(status.running && status.failed == 0, "{status:?}");
    }
}

#[test]
fn a_running_exchange_is_never_summarised() {
    let mut w = Workers::new(Arc::new(LocalModel::new()));
    let conversation = w.conversation();
    let done = w.exchange(
        conversation,
        "The garden needs watering on Sundays.",
        "Noted.",
    );
    let running = w.begin(
        conversation,
        "Tell me about the tomato plants in the greenhouse.",
    );
    w.start();

    w.wait("the completed exchange's summary and embedding", |w| {
        w.summary("exchange", done).is_some() && w.unembedded() == 0
    });
    // Neither the running exchange nor its conversation, still in
    // progress, is summarised while it runs.
    thread::sleep(Duration::from_millis(300));
    assert_eq!(w.summary("exchange", running), None);
    assert_eq!(w.summary("conversation", conversation), None);
    assert_eq!(w.exchange_summaries(), 1);

    w.complete(running, "They need stakes.");
    w.nudge(EXCHANGE_SUMMARIZER);
    w.nudge(CONVERSATION_SUMMARIZER);
    w.wait("summaries once the exchange has completed", |w| {
        w.summary("exchange", running).is_some()
            && w.summary("conversation", conversation).is_some()
            && w.unembedded() == 0
    });
    let (_, text, _, _) = w.summary("exchange", running).unwrap();
    assert!(text.contains("tomato plants"), "{text:?}");
    assert_embeddings_match_summaries(&w, LOCAL_MODEL_NAME);
}

#[test]
fn a_failing_item_is_retried_with_backoff_then_given_up_while_the_others_go_on() {
    let model = Arc::new(TestModel::default());
    let mut w = Workers::new(model.clone());
    let past = w.conversation();
    let before = w.exchange(past, "Sourdough needs a starter fed daily.", "Noted.");
    let poison = w.exchange(past, "This text is poison to the model.", "Noted.");
    let wobbly = w.exchange(past, "A wobbly table needs a shim.", "Noted.");
    let after = w.exchange(past, "Tea is best with fresh water.", "Noted.");
    let current = w.conversation();
    w.set_current(current);
    w.start();

    w.wait("the exchange summarizer to give up on the poison", |w| {
        w.failed_job(EXCHANGE_SUMMARIZER, poison)
            .is_some_and(|job| job.given_up)
    });
    let job = w.failed_job(EXCHANGE_SUMMARIZER, poison).unwrap();
    assert_eq!(job.attempts, w.retry.max_attempts);
    assert!(job.error.contains("chokes on poison"), "{job:?}");
    assert_eq!(w.summary("exchange", poison), None);

    // Tried exactly max_attempts times, each retry after the backoff: the
    // base, then twice the base.
    let exchange_tries = model.calls_starting("User: This text is poison");
    assert_eq!(exchange_tries.len(), 3, "{exchange_tries:?}");
    let base = w.retry.base;
    // Stored times are whole milliseconds: allow one either side.
    let slack = Duration::from_millis(2);
    assert!(exchange_tries[1] - exchange_tries[0] + slack >= base);
    assert!(exchange_tries[2] - exchange_tries[1] + slack >= base * 2);

    // The others were summarised meanwhile; the wobbly one on its retry,
    // after which its failure is forgotten.
    w.wait("the other exchanges' summaries and embeddings", |w| {
        [before, wobbly, after]
            .iter()
            .all(|id| w.summary("exchange", *id).is_some())
            && w.unembedded() == 0
    });
    assert_eq!(w.failed_job(EXCHANGE_SUMMARIZER, wobbly), None);
    assert_eq!(model.calls_starting("User: A wobbly table").len(), 2);
    assert_embeddings_match_summaries(&w, "local");

    // The past conversation's transcript holds the poison too.
    w.wait("the conversation summarizer to give up on it", |w| {
        w.failed_job(CONVERSATION_SUMMARIZER, past)
            .is_some_and(|job| job.given_up && job.attempts == 3)
    });

    // Three failures of the poison and one of the wobbly exchange, three
    // successes, and still running.
    w.wait("the summarizer's counts", |w| {
        let status = w.status(EXCHANGE_SUMMARIZER);
        status.running && status.failed == 4 && status.completed == 3
    });
    w.wait("a note for each item given up", |w| {
        let notes = w.notes();
        notes.iter().any(|n| {
            n.contains(EXCHANGE_SUMMARIZER)
                && n.contains("gave up")
                && n.contains(&format!("exchange {poison}"))
                && n.contains("chokes on poison")
        }) && notes
            .iter()
            .any(|n| n.contains(CONVERSATION_SUMMARIZER) && n.contains("gave up"))
    });
    assert_eq!(
        w.notes().iter().filter(|n| n.contains("gave up")).count(),
        2,
        "{:?}",
        w.notes()
    );

    // Given up means given up: no more tries, whatever wakes the worker.
    w.nudge(EXCHANGE_SUMMARIZER);
    thread::sleep(Duration::from_millis(200));
    assert_eq!(model.calls_starting("User: This text is poison").len(), 3);
    assert!(w.status(EXCHANGE_SUMMARIZER).running);

    // And the worker still takes new work.
    let later = w.exchange(past, "Bread keeps best in a linen bag.", "Noted.");
    w.wait("a later exchange's summary", |w| {
        w.summary("exchange", later).is_some()
    });
}

#[test]
fn failed_embeddings_are_given_up_and_later_summaries_are_still_embedded() {
    let model = Arc::new(TestModel::default());
    model.fail_embed.store(true, Ordering::SeqCst);
    let mut w = Workers::new(model.clone());
    let conversation = w.conversation();
    w.set_current(conversation);
    let first = w.exchange(conversation, "The boiler is serviced in October.", "Noted.");
    let second = w.exchange(conversation, "The car needs new tyres soon.", "Noted.");
    w.start();

    w.wait("both summaries", |w| w.exchange_summaries() == 2);
    let summary_ids: Vec<i64> = [first, second]
        .iter()
        .map(|id| w.summary("exchange", *id).unwrap().0)
        .collect();
    w.wait("the embedding generator to give up on both", |w| {
        summary_ids.iter().all(|id| {
            w.failed_job(EMBEDDING_GENERATOR, *id)
                .is_some_and(|job| job.given_up)
        })
    });
    for id in &summary_ids {
        let job = w.failed_job(EMBEDDING_GENERATOR, *id).unwrap();
        assert_eq!(job.attempts, 3, "{job:?}");
        assert!(job.error.contains("embedding service is down"), "{job:?}");
        assert_eq!(w.embedding(*id), None);
    }
    w.wait("the generator's failures and a note", |w| {
        let status = w.status(EMBEDDING_GENERATOR);
        status.running
            && status.failed >= 1
            && w.notes()
                .iter()
                .any(|n| n.contains(EMBEDDING_GENERATOR) && n.contains("gave up"))
    });

    // The service is back: a new summary is embedded, the given-up ones
    // stay as they are.
    model.fail_embed.store(false, Ordering::SeqCst);
    let third = w.exchange(conversation, "The roof was checked in spring.", "Noted.");
    w.wait("the new summary's embedding", |w| {
        w.summary("exchange", third)
            .is_some_and(|(id, ..)| w.embedding(id).is_some())
    });
    let (id, text, _, _) = w.summary("exchange", third).unwrap();
    assert_eq!(w.embedding(id).unwrap().2, embed_text(&text));
    thread::sleep(Duration::from_millis(100));
    for id in &summary_ids {
        assert_eq!(w.embedding(*id), None);
    }
}

#[test]
fn a_paused_summarizer_writes_nothing_and_resumes_where_it_stopped() {
    const EXCHANGES: i64 = 40;
    let model = Arc::new(TestModel::slow(Duration::from_millis(25)));
    let mut w = Workers::new(model.clone());
    let conversation = w.conversation();
    w.set_current(conversation);
    for i in 0..EXCHANGES {
        w.exchange(
            conversation,
            &format!("Note number {i} about the allotment."),
            "Noted.",
        );
    }
    w.start();

    w.wait("a few summaries", |w| w.exchange_summaries() >= 3);
    assert!(w.workers.pause(EXCHANGE_SUMMARIZER).unwrap());
    let worker = w.workers.get(EXCHANGE_SUMMARIZER).unwrap();
    assert!(worker.wait_until_paused(PATIENCE), "the summarizer parks");
    let paused_at = w.exchange_summaries();
    let calls = model.summarize_calls();
    assert!(paused_at < EXCHANGES, "paused before the end: {paused_at}");
    assert_eq!(w.status(EXCHANGE_SUMMARIZER).state, WorkerState::Paused);

    // Nothing is written, nor asked of the model, while paused, even when
    // the worker is woken.
    w.nudge(EXCHANGE_SUMMARIZER);
    thread::sleep(Duration::from_millis(300));
    assert_eq!(w.exchange_summaries(), paused_at);
    assert_eq!(model.summarize_calls(), calls);
    assert!(worker.is_parked());

    assert!(w.workers.resume(EXCHANGE_SUMMARIZER).unwrap());
    w.wait("every summary", |w| w.exchange_summaries() == EXCHANGES);
    assert_eq!(
        w.count("SELECT count(DISTINCT subject_id) FROM summaries WHERE subject = 'exchange'"),
        EXCHANGES
    );
    assert_eq!(
        w.count(
            "SELECT count(*) FROM exchanges e WHERE NOT EXISTS (SELECT 1 FROM summaries s
             WHERE s.subject = 'exchange' AND s.subject_id = e.id)"
        ),
        0
    );
    // Each exchange was summarised once: the pause lost and redid nothing.
    assert_eq!(model.summarize_calls(), EXCHANGES as usize);
    w.wait("the summarizer's count", |w| {
        w.status(EXCHANGE_SUMMARIZER).completed == EXCHANGES as u64
    });
    w.wait("every embedding", |w| w.unembedded() == 0);
    assert_embeddings_match_summaries(&w, "local");
}

#[test]
fn a_conversation_with_newer_exchanges_is_summarised_again_and_re_embedded() {
    let mut w = Workers::new(Arc::new(LocalModel::new()));
    let past = w.conversation();
    w.exchange(past, "The piano was tuned in March.", "Noted.");
    let current = w.conversation();
    w.set_current(current);
    w.start();

    w.wait("the conversation's summary and embedding", |w| {
        w.summary("conversation", past)
            .is_some_and(|(id, ..)| w.embedding(id).is_some())
    });
    let (summary_id, old_text, _, old_at) = w.summary("conversation", past).unwrap();
    let (_, _, old_vector) = w.embedding(summary_id).unwrap();
    assert!(old_text.contains("piano"), "{old_text:?}");

    // An exchange is added to the old conversation (as an import or a
    // resumed conversation would), later than its summary.
    thread::sleep(Duration::from_millis(5));
    w.exchange(past, "The violin needs new strings.", "Noted.");
    w.nudge(CONVERSATION_SUMMARIZER);
    w.wait("a newer summary with its own embedding", |w| {
        w.summary("conversation", past)
            .is_some_and(|(id, text, _, at)| {
                at > old_at
                    && text.contains("violin")
                    && w.embedding(id)
                        .is_some_and(|(_, _, v)| v == embed_text(&text))
            })
    });
    let (new_id, new_text, _, _) = w.summary("conversation", past).unwrap();
    assert!(new_text.contains("piano"), "{new_text:?}");
    assert_eq!(
        w.count("SELECT count(*) FROM summaries WHERE subject = 'conversation'"),
        1,
        "the summary is replaced, not added"
    );
    let (_, _, new_vector) = w.embedding(new_id).unwrap();
    assert_ne!(new_vector, old_vector, "the old embedding is replaced");
    w.wait("every embedding", |w| w.unembedded() == 0);
    assert_embeddings_match_summaries(&w, "local");
}

#[test]
fn a_summary_replaced_while_it_is_being_embedded_gets_a_fresh_embedding() {
    let model = Arc::new(TestModel::default());
    let mut w = Workers::new(model.clone());
    let past = w.conversation();
    w.exchange(past, "The kayak is stored in the shed.", "Noted.");
    let current = w.conversation();
    w.set_current(current);
    // The embedder waits until both summaries exist.
    w.workers.pause(EMBEDDING_GENERATOR).unwrap();
    w.start();
    w.wait("the exchange's and the conversation's summaries", |w| {
        w.exchange_summaries() == 1 && w.summary("conversation", past).is_some()
    });
    let (_, old_text, _, _) = w.summary("conversation", past).unwrap();

    // The embedder takes the summaries and is held inside the model call.
    model.door.shut();
    w.workers.resume(EMBEDDING_GENERATOR).unwrap();
    w.wait("the embedder inside the model", |_| {
        model.door.arrived.load(Ordering::SeqCst) == 1
    });

    // Meanwhile the conversation goes on and its summary is replaced.
    thread::sleep(Duration::from_millis(5));
    w.exchange(past, "The paddles hang on the wall.", "Noted.");
    w.nudge(CONVERSATION_SUMMARIZER);
    w.wait("the replaced conversation summary", |w| {
        w.summary("conversation", past)
            .is_some_and(|(_, text, ..)| text != old_text)
    });

    // The embedding of the old text must not stand for the new one.
    model.door.open();
    w.wait("an embedding of every summary's current text", |w| {
        w.unembedded() == 0
            && w.summary("conversation", past)
                .is_some_and(|(id, text, ..)| {
                    w.embedding(id)
                        .is_some_and(|(_, _, v)| v == embed_text(&text))
                })
    });
    assert_embeddings_match_summaries(&w, "local");
}

#[test]
fn a_conversation_that_becomes_current_during_a_look_up_is_left_alone() {
    let mut w = Workers::new(Arc::new(LocalModel::new()));
    // Many conversations without exchanges make each look-up take a while.
    w.conn
        .execute_batch(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200000)
             INSERT INTO conversations (started_at) SELECT 0 FROM n",
        )
        .unwrap();
    w.workers.start(CONVERSATION_SUMMARIZER).unwrap();
    let mut previous = None;
    for round in 0..5 {
        // While the summarizer is inside a look-up, a new conversation
        // starts, becomes the current one and has an exchange, as the
        // first input of a run does.
        w.wait("the summarizer inside a look-up", |w| {
            w.status(CONVERSATION_SUMMARIZER).state == WorkerState::Running
        });
        let conversation = w.conversation();
        w.set_current(conversation);
        w.exchange(
            conversation,
            &format!("Round {round} of the test."),
            "Noted.",
        );
        thread::sleep(Duration::from_millis(300));
        assert_eq!(
            w.summary("conversation", conversation),
            None,
            "round {round}: the current conversation was summarised"
        );
        if let Some(previous) = previous {
            w.wait("the previous conversation's summary", |w| {
                w.summary("conversation", previous).is_some()
            });
        }
        previous = Some(conversation);
    }
}

#[test]
fn a_text_the_embedder_refuses_does_not_hold_back_the_others_of_its_batch() {
    let model = Arc::new(TestModel::default());
    let mut w = Workers::new(model);
    let conversation = w.conversation();
    w.set_current(conversation);
    let inputs = [
        "The garden needs water.",
        "A toxic mould grows in the shed.",
        "The gutters are clear.",
        "The fence was painted.",
    ];
    let ids: Vec<i64> = inputs
        .iter()
        .map(|input| w.exchange(conversation, input, "Noted."))
        .collect();
    w.start();
    w.wait("the refused summary to be given up", |w| {
        w.summary("exchange", ids[1])
            .and_then(|(id, ..)| w.failed_job(EMBEDDING_GENERATOR, id))
            .is_some_and(|job| job.given_up)
    });
    for (i, exchange) in ids.iter().enumerate() {
        let (summary, ..) = w.summary("exchange", *exchange).unwrap();
        let embedded = w.embedding(summary).is_some();
        assert_eq!(embedded, i != 1, "exchange {exchange}: {}", inputs[i]);
        if i != 1 {
            assert!(w.failed_job(EMBEDDING_GENERATOR, summary).is_none());
        }
    }
}

#[test]
fn a_model_call_cut_short_by_shutdown_is_not_held_against_the_item() {
    let model = Arc::new(TestModel::default());
    let mut w = Workers::new(model.clone());
    let conversation = w.conversation();
    w.set_current(conversation);
    w.exchange(conversation, "The windows are cleaned in May.", "Noted.");
    w.cancel_model_calls();
    w.start();
    w.wait("the summarizer to try", |_| {
        !model.calls_starting("User:").is_empty()
    });
    w.wait("the attempt to end", |w| {
        w.status(EXCHANGE_SUMMARIZER).failed >= 1
    });
    assert_eq!(w.exchange_summaries(), 0);
    assert!(
        w.failed_jobs().is_empty(),
        "nothing is recorded against the item: {:?}",
        w.failed_jobs()
    );
}
