//! The three background workers with the OpenAI-compatible model, against
//! a real HTTP server on 127.0.0.1 that writes summaries and embeddings.

mod common;
#[path = "support/http_server.rs"]
mod http_server;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::Workers;
use http_server::{Reply, Request, Server};
use nu_agent::model::openai::{OpenAiConfig, OpenAiModel};
use nu_agent::workers::{
    CONVERSATION_SUMMARIZER, EMBEDDING_BATCH, EMBEDDING_GENERATOR, EXCHANGE_SUMMARIZER,
};
use serde_json::{json, Value};

/// The chat model as the server names it in its replies.
const CHAT_MODEL: &str = "gpt-4o-mini-2024-07-18";
/// The embedding model as the server names it in its replies.
const EMBED_MODEL: &str = "test-embed-001";
/// Tokens the server reports for every summary.
const PROMPT_TOKENS: u64 = 1000;
const COMPLETION_TOKENS: u64 = 100;

/// What a summary costs at gpt-4o-mini's prices ($0.15 and $0.60 per
/// million prompt and completion tokens).
fn summary_cost() -> f64 {
    PROMPT_TOKENS as f64 * 0.15 / 1e6 + COMPLETION_TOKENS as f64 * 0.60 / 1e6
}

fn model(server: &Server) -> Arc<OpenAiModel> {
    let mut config = OpenAiConfig::new("gpt-4o-mini", server.base_url());
    config.embedding_model = "test-embed".to_owned();
    config.timeout = Duration::from_secs(10);
    config.connect_timeout = Duration::from_secs(5);
    config.retry_base_delay = Duration::from_millis(5);
    Arc::new(OpenAiModel::new(config))
}

fn is_chat(request: &Request) -> bool {
    request.path.ends_with("/chat/completions")
}

fn is_embeddings(request: &Request) -> bool {
    request.path.ends_with("/embeddings")
}

/// The text a chat request asks to summarise.
fn text_to_summarise(request: &Request) -> String {
    let body = request.json();
    let messages = body["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 2, "an instruction and a text: {body}");
    assert_eq!(messages[0]["role"], "system");
    assert_eq!(messages[1]["role"], "user");
    messages[1]["content"].as_str().unwrap().to_owned()
}

/// The server's summary of `text`: its first line, labelled.
fn summary_of(text: &str) -> String {
    let first = text.lines().next().unwrap_or_default();
    format!("Summary: {}", first.strip_prefix("User: ").unwrap_or(first))
}

/// The server's vector for `text`: a few numbers computed from it.
fn vector_for(text: &str) -> Vec<f32> {
    vec![
        text.len() as f32,
        text.split_whitespace().count() as f32,
        0.5,
        -1.0,
    ]
}

/// A chat reply holding `text`: one JSON body, or an event stream in two
/// pieces with the usage in a last chunk.
fn chat_reply(text: &str, streamed: bool) -> Reply {
    let usage = json!({
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": COMPLETION_TOKENS,
        "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
    });
    if !streamed {
        return Reply::json(
            200,
            &json!({
                "object": "chat.completion",
                "model": CHAT_MODEL,
                "choices": [{
                    "index": 0,
                    "message": { "role": "assistant", "content": text },
                    "finish_reason": "stop",
                }],
                "usage": usage,
            }),
        );
    }
    let (head, tail) = text.split_at(text.len() / 2);
    let chunk = |content: &str| {
        json!({
            "object": "chat.completion.chunk",
            "model": CHAT_MODEL,
            "choices": [{ "index": 0, "delta": { "content": content } }],
        })
        .to_string()
    };
    let last = json!({
        "object": "chat.completion.chunk",
        "model": CHAT_MODEL,
        "choices": [],
        "usage": usage,
    });
    Reply::events(&[
        chunk(head),
        chunk(tail),
        last.to_string(),
        "[DONE]".to_owned(),
    ])
}

fn embeddings_reply(request: &Request) -> Reply {
    let body = request.json();
    assert_eq!(body["model"], "test-embed", "the configured model is asked");
    let data: Vec<Value> = body["input"]
        .as_array()
        .expect("an input array")
        .iter()
        .enumerate()
        .map(|(index, text)| {
            json!({
                "object": "embedding",
                "index": index,
                "embedding": vector_for(text.as_str().unwrap()),
            })
        })
        .collect();
    Reply::json(
        200,
        &json!({
            "object": "list",
            "data": data,
            "model": EMBED_MODEL,
            "usage": { "prompt_tokens": 10, "total_tokens": 10 },
        }),
    )
}

/// A server that summarises and embeds, streaming every other summary.
fn summarising_server() -> Server {
    let chats = AtomicUsize::new(0);
    Server::start(move |request, _| {
        if is_chat(request) {
            let n = chats.fetch_add(1, Ordering::SeqCst);
            chat_reply(
                &summary_of(&text_to_summarise(request)),
                !n.is_multiple_of(2),
            )
        } else if is_embeddings(request) {
            embeddings_reply(request)
        } else {
            Reply::json(404, &json!({ "error": { "message": "no such endpoint" } }))
        }
    })
}

/// The sizes of the `input` arrays of the embeddings requests received.
fn batch_sizes(server: &Server) -> Vec<usize> {
    server
        .requests()
        .iter()
        .filter(|r| is_embeddings(r))
        .map(|r| r.json()["input"].as_array().unwrap().len())
        .collect()
}

/// Every summary has the server's embedding of its text.
fn assert_embedded_by_the_server(w: &Workers) {
    let mut stmt = w
        .conn
        .prepare("SELECT id, summary FROM summaries ORDER BY id")
        .unwrap();
    let summaries: Vec<(i64, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(!summaries.is_empty());
    for (id, text) in summaries {
        let (_, model, vector) = w
            .embedding(id)
            .unwrap_or_else(|| panic!("summary {id} has no embedding"));
        // Stored under the configured name, which is what identifies the
        // vectors, whatever name the server echoes.
        assert_eq!(model, "test-embed");
        assert_eq!(vector, vector_for(&text), "summary {id}: {text:?}");
    }
}

#[test]
fn summaries_and_embeddings_come_from_the_server() {
    let server = summarising_server();
    let mut w = Workers::new(model(&server));
    let past = w.conversation();
    let inputs = [
        "How do I back up the database while it is in use?",
        "What goes into a lemon cake?",
        "My cat is called Ferdinand.",
    ];
    let ids: Vec<i64> = inputs
        .iter()
        .map(|input| w.exchange(past, input, "An answer."))
        .collect();
    let current = w.conversation();
    w.set_current(current);
    w.start();

    w.wait("every summary and embedding", |w| {
        w.exchange_summaries() == 3
            && w.summary("conversation", past).is_some()
            && w.unembedded() == 0
    });
    for (id, input) in ids.iter().zip(inputs) {
        let (_, text, model, _) = w.summary("exchange", *id).unwrap();
        assert_eq!(text, format!("Summary: {input}"));
        assert_eq!(model, CHAT_MODEL, "the server's name for its model");
    }
    let (_, text, model, _) = w.summary("conversation", past).unwrap();
    assert!(text.starts_with("Summary: "), "{text:?}");
    assert_eq!(model, CHAT_MODEL);
    let costs = w.count(&format!(
        "SELECT count(*) FROM summaries WHERE abs(cost - {}) < 1e-12",
        summary_cost()
    ));
    assert_eq!(costs, 4, "each summary carries its estimated cost");
    assert_embedded_by_the_server(&w);
    assert_eq!(
        w.count("SELECT count(*) FROM embeddings WHERE dimension = 4"),
        4
    );

    // Replies came both whole and streamed, and were asked for streamed.
    let chats: Vec<Request> = server.requests().into_iter().filter(is_chat).collect();
    assert!(chats.len() >= 4, "{} chat requests", chats.len());
    for request in &chats {
        assert_eq!(request.json()["stream"], true);
        assert_eq!(request.json()["model"], "gpt-4o-mini");
    }
    assert_eq!(batch_sizes(&server).iter().sum::<usize>(), 4);

    w.wait("the summarizers' spend", |w| {
        let spend = w.status(EXCHANGE_SUMMARIZER).spend;
        (spend - 3.0 * summary_cost()).abs() < 1e-9
            && (w.status(CONVERSATION_SUMMARIZER).spend - summary_cost()).abs() < 1e-9
    });
    assert!(w.failed_jobs().is_empty(), "{:?}", w.failed_jobs());
}

#[test]
fn embeddings_are_requested_in_batches() {
    const EXCHANGES: usize = 2 * EMBEDDING_BATCH + EMBEDDING_BATCH / 2;
    let server = summarising_server();
    let mut w = Workers::new(model(&server));
    let conversation = w.conversation();
    w.set_current(conversation);
    for i in 0..EXCHANGES {
        w.exchange(
            conversation,
            &format!("Question {i} about the garden shed."),
            "An answer.",
        );
    }
    // The embedder starts paused, so it finds every summary waiting.
    w.workers.pause(EMBEDDING_GENERATOR).unwrap();
    w.start();
    w.wait("every summary", |w| {
        w.exchange_summaries() == EXCHANGES as i64
    });
    assert!(batch_sizes(&server).is_empty());

    w.workers.resume(EMBEDDING_GENERATOR).unwrap();
    w.wait("every embedding", |w| w.unembedded() == 0);
    assert_eq!(
        batch_sizes(&server),
        [EMBEDDING_BATCH, EMBEDDING_BATCH, EMBEDDING_BATCH / 2],
        "one request per batch of at most {EMBEDDING_BATCH} summaries"
    );
    assert_embedded_by_the_server(&w);
    w.wait("one unit per batch", |w| {
        w.status(EMBEDDING_GENERATOR).completed == 3
    });

    // Each summary was sent once, in order of their ids.
    let sent: Vec<String> = server
        .requests()
        .iter()
        .filter(|r| is_embeddings(r))
        .flat_map(|r| {
            r.json()["input"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    let mut stmt = w
        .conn
        .prepare("SELECT summary FROM summaries ORDER BY id")
        .unwrap();
    let stored: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(sent, stored);
}

#[test]
fn a_rate_limited_embeddings_request_is_retried() {
    let chats = AtomicUsize::new(0);
    let embeddings = AtomicUsize::new(0);
    let server = Server::start(move |request, _| {
        if is_chat(request) {
            let n = chats.fetch_add(1, Ordering::SeqCst);
            chat_reply(
                &summary_of(&text_to_summarise(request)),
                n.is_multiple_of(2),
            )
        } else if embeddings.fetch_add(1, Ordering::SeqCst) < 2 {
            Reply::json(
                429,
                &json!({ "error": { "message": "slow down", "type": "rate_limit" } }),
            )
            .with_header("retry-after-ms", "10")
        } else {
            embeddings_reply(request)
        }
    });
    let mut w = Workers::new(model(&server));
    let conversation = w.conversation();
    w.set_current(conversation);
    let id = w.exchange(conversation, "When is the bin collected?", "An answer.");
    w.start();

    w.wait("the embedding, after the rate limit", |w| {
        w.summary("exchange", id)
            .is_some_and(|(summary, ..)| w.embedding(summary).is_some())
    });
    assert_embedded_by_the_server(&w);
    // Two refusals, then the same batch again, within one unit of work:
    // nothing failed as far as the worker is concerned.
    let requests: Vec<Request> = server
        .requests()
        .into_iter()
        .filter(is_embeddings)
        .collect();
    assert_eq!(requests.len(), 3);
    assert!(requests.iter().all(|r| r.body == requests[0].body));
    assert!(w.failed_jobs().is_empty(), "{:?}", w.failed_jobs());
    w.wait("the generator's count", |w| {
        w.status(EMBEDDING_GENERATOR).completed == 1
    });
    assert_eq!(w.status(EMBEDDING_GENERATOR).failed, 0);
}

#[test]
fn a_rate_limit_that_lasts_is_recorded_as_a_failed_job() {
    let server = Server::start(|request, _| {
        if is_chat(request) {
            chat_reply(&summary_of(&text_to_summarise(request)), false)
        } else {
            Reply::json(429, &json!({ "error": { "message": "quota exceeded" } }))
        }
    });
    let mut w = Workers::new(model(&server));
    let conversation = w.conversation();
    w.set_current(conversation);
    let id = w.exchange(conversation, "Where are the spare keys?", "An answer.");
    w.start();

    w.wait("the summary", |w| w.summary("exchange", id).is_some());
    let (summary, ..) = w.summary("exchange", id).unwrap();
    w.wait("the embedding given up", |w| {
        w.failed_job(EMBEDDING_GENERATOR, summary)
            .is_some_and(|job| job.given_up)
    });
    let job = w.failed_job(EMBEDDING_GENERATOR, summary).unwrap();
    assert_eq!(job.attempts, 3);
    assert!(
        job.error.contains("429") && job.error.contains("quota exceeded"),
        "{job:?}"
    );
    assert_eq!(w.embedding(summary), None);
}

#[test]
fn a_server_error_on_chat_puts_the_exchange_in_failed_jobs() {
    let server = Server::start(|request, _| {
        if is_chat(request) {
            let text = text_to_summarise(request);
            if text.contains("poison") {
                Reply::json(
                    500,
                    &json!({ "error": { "message": "the model crashed", "type": "server_error" } }),
                )
            } else {
                chat_reply(&summary_of(&text), true)
            }
        } else {
            embeddings_reply(request)
        }
    });
    let mut w = Workers::new(model(&server));
    let conversation = w.conversation();
    w.set_current(conversation);
    let poison = w.exchange(conversation, "Here is some poison for you.", "Hm.");
    let fine = w.exchange(conversation, "Where is the nearest bakery?", "Hm.");
    w.start();

    w.wait("the failing exchange given up", |w| {
        w.failed_job(EXCHANGE_SUMMARIZER, poison)
            .is_some_and(|job| job.given_up)
    });
    let job = w.failed_job(EXCHANGE_SUMMARIZER, poison).unwrap();
    assert_eq!(job.attempts, 3);
    assert!(
        job.error.contains("(500)") && job.error.contains("the model crashed"),
        "{job:?}"
    );
    assert_eq!(w.summary("exchange", poison), None);
    let tries = server
        .requests()
        .iter()
        .filter(|r| is_chat(r) && text_to_summarise(r).contains("poison"))
        .count();
    assert_eq!(tries, 3, "one request per try");

    w.wait("the other exchange's summary and embedding", |w| {
        w.summary("exchange", fine).is_some() && w.unembedded() == 0
    });
    assert_embedded_by_the_server(&w);
    w.wait("the summarizer's counts and a note", |w| {
        let status = w.status(EXCHANGE_SUMMARIZER);
        status.running
            && status.failed == 3
            && status.completed == 1
            && w.notes()
                .iter()
                .any(|n| n.contains("gave up") && n.contains(&format!("exchange {poison}")))
    });
}
