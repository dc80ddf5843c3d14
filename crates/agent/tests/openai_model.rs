//! The OpenAI-compatible client against a real HTTP server on 127.0.0.1.

#[path = "support/http_server.rs"]
mod http_server;

use std::collections::HashMap;
use std::thread;
use std::time::{Duration, Instant};

use http_server::{refused_base_url, Reply, Request, Server};
use nu_agent::model::openai::{OpenAiConfig, OpenAiModel, DEFAULT_BASE_URL};
use nu_agent::model::{Cancel, Completion, Message, Model, ModelError, Role};
use serde_json::{json, Value};

/// A model at `base_url` with test-friendly timeouts and retries.
fn config(base_url: &str) -> OpenAiConfig {
    let mut config = OpenAiConfig::new("gpt-4o-mini", base_url);
    config.timeout = Duration::from_secs(5);
    config.connect_timeout = Duration::from_secs(2);
    config.retry_base_delay = Duration::from_millis(5);
    config
}

fn model(server: &Server) -> OpenAiModel {
    OpenAiModel::new(config(&server.base_url()))
}

fn conversation() -> Vec<Message> {
    vec![
        Message::new(Role::System, "Be brief."),
        Message::new(Role::User, "Hello"),
        Message::new(Role::Assistant, "Hi."),
        Message::new(Role::User, "What is 2 + 2?"),
    ]
}

/// Chats, returning the result and every piece passed to `on_text`.
fn chat(model: &OpenAiModel) -> (Result<Completion, ModelError>, Vec<String>) {
    let mut pieces = Vec::new();
    let result = model.chat(
        &conversation(),
        &mut |t| pieces.push(t.to_owned()),
        &Cancel::new(),
    );
    (result, pieces)
}

fn chat_error(model: &OpenAiModel) -> ModelError {
    match chat(model).0 {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => e,
    }
}

/// A streamed chunk carrying `content`.
fn chunk(content: &str) -> String {
    json!({
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{ "index": 0, "delta": { "content": content }, "finish_reason": null }],
    })
    .to_string()
}

fn completion_body(content: &str) -> Value {
    json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": content },
            "finish_reason": "stop",
        }],
        "usage": { "prompt_tokens": 1000, "completion_tokens": 2000, "total_tokens": 3000 },
    })
}

fn openai_error(message: &str, kind: &str) -> Value {
    json!({ "error": { "message": message, "type": kind, "param": null, "code": null } })
}

fn assert_one_line(error: &ModelError) {
    let text = error.to_string();
    assert!(!text.contains('\n'), "not one line: {text:?}");
}

#[test]
fn a_plain_json_reply_is_accepted() {
    let server = Server::start(|_, _| Reply::json(200, &completion_body("Four.")));
    let (result, pieces) = chat(&model(&server));
    let completion = result.unwrap();
    assert_eq!(pieces, ["Four."]);
    assert_eq!(completion.text, "Four.");
    assert_eq!(completion.model, "gpt-4o-mini-2024-07-18");
    assert_eq!(completion.prompt_tokens, Some(1000));
    assert_eq!(completion.completion_tokens, Some(2000));
    // gpt-4o-mini: $0.15 per 1M prompt tokens, $0.60 per 1M completion tokens.
    let expected = 1000.0 * 0.15 / 1e6 + 2000.0 * 0.60 / 1e6;
    assert!(
        (completion.cost - expected).abs() < 1e-12,
        "{}",
        completion.cost
    );
}

#[test]
fn a_streamed_reply_arrives_piece_by_piece() {
    let server = Server::start(|_, _| {
        let role = json!({
            "object": "chat.completion.chunk",
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [{ "index": 0, "delta": { "role": "assistant", "content": "" } }],
        });
        let stop = json!({
            "object": "chat.completion.chunk",
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [{ "index": 0, "delta": {}, "finish_reason": "stop" }],
        });
        let usage = json!({
            "object": "chat.completion.chunk",
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [],
            "usage": { "prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16 },
        });
        Reply::events(&[
            role.to_string(),
            chunk("Two"),
            chunk(" plus two"),
            chunk(" is"),
            chunk(" four."),
            stop.to_string(),
            usage.to_string(),
            "[DONE]".to_owned(),
        ])
        .paced(Duration::from_millis(10))
    });
    let (result, pieces) = chat(&model(&server));
    let completion = result.unwrap();
    assert_eq!(pieces, ["Two", " plus two", " is", " four."]);
    assert_eq!(completion.text, "Two plus two is four.");
    assert_eq!(completion.model, "gpt-4o-mini-2024-07-18");
    assert_eq!(completion.prompt_tokens, Some(12));
    assert_eq!(completion.completion_tokens, Some(4));
    assert!(completion.cost > 0.0);
}

#[test]
fn event_stream_details_are_tolerated() {
    // Keep-alive comments, CRLF line ends, `data:` without a space, an
    // event split over two reads, no usage and no `[DONE]` (some local
    // servers send neither).
    let server = Server::start(|_, _| {
        let mut first = chunk("Hel");
        first.insert_str(0, ": keep-alive\r\n\r\ndata:");
        first.push_str("\r\n\r\n");
        let second = format!("data: {}", chunk("lo"));
        Reply::stream(vec![
            first,
            second[..10].to_owned(),
            format!("{}\n\n", &second[10..]),
        ])
    });
    let (result, pieces) = chat(&model(&server));
    let completion = result.unwrap();
    assert_eq!(pieces, ["Hel", "lo"]);
    assert_eq!(completion.text, "Hello");
    assert_eq!(completion.prompt_tokens, None);
    assert_eq!(completion.cost, 0.0);
}

#[test]
fn cancelling_mid_stream_stops_at_once() {
    let server = Server::start(|_, _| {
        Reply::events(&[chunk("first"), chunk("second"), "[DONE]".to_owned()])
            .paced(Duration::from_secs(10))
    });
    let model = model(&server);
    let cancel = Cancel::new();
    let mut pieces = Vec::new();
    let started = Instant::now();
    let result = model.chat(
        &conversation(),
        &mut |t| {
            pieces.push(t.to_owned());
            cancel.cancel();
        },
        &cancel,
    );
    assert!(matches!(result, Err(ModelError::Cancelled)), "{result:?}");
    assert_eq!(pieces, ["first"]);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn cancelling_while_the_server_is_silent_stops_at_once() {
    let server = Server::start(|_, _| {
        Reply::events(&[chunk("late"), "[DONE]".to_owned()]).delayed(Duration::from_secs(10))
    });
    let model = model(&server);
    let cancel = Cancel::new();
    let canceller = {
        let cancel = cancel.clone();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(200));
            cancel.cancel();
        })
    };
    let started = Instant::now();
    let mut pieces = Vec::new();
    let result = model.chat(&conversation(), &mut |t| pieces.push(t.to_owned()), &cancel);
    canceller.join().unwrap();
    assert!(matches!(result, Err(ModelError::Cancelled)), "{result:?}");
    assert!(pieces.is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn an_already_cancelled_chat_sends_nothing() {
    let server = Server::start(|_, _| Reply::json(200, &completion_body("x")));
    let cancel = Cancel::new();
    cancel.cancel();
    let result = model(&server).chat(&conversation(), &mut |_| {}, &cancel);
    assert!(matches!(result, Err(ModelError::Cancelled)), "{result:?}");
    assert!(server.requests().is_empty());
}

#[test]
fn a_refused_connection_is_a_connect_error() {
    let base = refused_base_url();
    let error = chat_error(&OpenAiModel::new(config(&base)));
    match &error {
        ModelError::Connect { url, detail } => {
            assert_eq!(url, &format!("{base}/chat/completions"));
            assert!(!detail.is_empty());
        }
        other => panic!("expected Connect, got {other:?}"),
    }
    assert!(error.is_transient());
    assert_one_line(&error);
}

#[test]
fn a_silent_server_times_out() {
    let server = Server::start(|_, _| {
        Reply::json(200, &completion_body("too late")).delayed(Duration::from_secs(4))
    });
    let mut config = config(&server.base_url());
    config.timeout = Duration::from_secs(1);
    let started = Instant::now();
    let error = chat_error(&OpenAiModel::new(config));
    assert!(
        matches!(error, ModelError::Timeout(d) if d == Duration::from_secs(1)),
        "{error:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_stream_that_stalls_times_out() {
    let server = Server::start(|_, _| {
        Reply::events(&[chunk("one"), chunk("two")]).paced(Duration::from_secs(4))
    });
    let mut config = config(&server.base_url());
    config.timeout = Duration::from_secs(1);
    let started = Instant::now();
    let mut pieces = Vec::new();
    let result = OpenAiModel::new(config).chat(
        &conversation(),
        &mut |t| pieces.push(t.to_owned()),
        &Cancel::new(),
    );
    assert!(matches!(result, Err(ModelError::Timeout(_))), "{result:?}");
    assert_eq!(pieces, ["one"]);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_refused_key_is_unauthorized_with_the_servers_message() {
    let server = Server::start(|_, _| {
        Reply::json(
            401,
            &openai_error(
                "Incorrect API key provided: sk-bad.\nFind your key on the dashboard.",
                "invalid_request_error",
            ),
        )
    });
    let error = chat_error(&model(&server));
    match &error {
        ModelError::Unauthorized { status, detail } => {
            assert_eq!(*status, 401);
            assert_eq!(
                detail,
                "Incorrect API key provided: sk-bad. Find your key on the dashboard."
            );
        }
        other => panic!("expected Unauthorized, got {other:?}"),
    }
    assert!(!error.is_transient());
    assert_one_line(&error);
}

#[test]
fn a_rate_limit_carries_retry_after_and_chat_does_not_retry() {
    let server = Server::start(|_, _| {
        Reply::json(429, &openai_error("Rate limit reached", "requests"))
            .with_header("Retry-After", "7")
    });
    let error = chat_error(&model(&server));
    match &error {
        ModelError::RateLimited {
            retry_after,
            detail,
        } => {
            assert_eq!(*retry_after, Some(Duration::from_secs(7)));
            assert_eq!(detail, "Rate limit reached");
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn a_server_failure_reports_a_short_excerpt_of_the_body() {
    let page = format!(
        "<html>\n<head><title>500 Internal Server Error</title></head>\n<body>\n{}</body></html>",
        "something broke\n".repeat(100)
    );
    let server = Server::start(move |_, _| Reply::body(500, "text/html", page.clone()));
    let error = chat_error(&model(&server));
    match &error {
        ModelError::Server { status, detail } => {
            assert_eq!(*status, 500);
            assert!(
                detail.starts_with("<html> <head><title>500 Internal"),
                "{detail}"
            );
            assert!(detail.chars().count() <= 200, "{}", detail.chars().count());
        }
        other => panic!("expected Server, got {other:?}"),
    }
    assert_one_line(&error);
}

#[test]
fn an_unknown_model_is_rejected() {
    let server = Server::start(|_, _| {
        Reply::json(
            404,
            &openai_error("The model `gpt-9` does not exist", "invalid_request_error"),
        )
    });
    let error = chat_error(&model(&server));
    assert!(
        matches!(&error, ModelError::Rejected { status: 404, detail } if detail.contains("gpt-9")),
        "{error:?}"
    );
    assert!(!error.is_transient());
}

#[test]
fn an_empty_error_body_is_named_by_its_status() {
    let server = Server::start(|_, _| Reply::body(503, "text/plain", ""));
    let error = chat_error(&model(&server));
    assert!(
        matches!(&error, ModelError::Server { status: 503, detail } if detail == "Service Unavailable"),
        "{error:?}"
    );
}

#[test]
fn malformed_replies_are_reported_as_such() {
    let replies = [
        Reply::body(200, "application/json", "{\"choices\": [ not json"),
        Reply::json(200, &json!({ "object": "chat.completion", "choices": [] })),
        Reply::events(&[chunk("ok"), "{broken".to_owned()]),
        Reply::body(200, "text/html", "<!DOCTYPE html><p>Wrong place</p>"),
        Reply::body(200, "application/json", ""),
    ];
    let count = replies.len();
    let server = Server::start(move |_, n| replies[n].clone());
    let model = model(&server);
    for case in 0..count {
        let error = chat_error(&model);
        assert!(
            matches!(error, ModelError::Malformed(_)),
            "case {case}: {error:?}"
        );
        assert_one_line(&error);
    }
}

#[test]
fn an_error_inside_the_stream_is_reported() {
    let server = Server::start(|_, _| {
        Reply::events(&[
            chunk("partial"),
            json!({ "error": { "message": "model overloaded", "type": "server_error" } })
                .to_string(),
        ])
    });
    let error = chat_error(&model(&server));
    assert!(
        matches!(&error, ModelError::Server { detail, .. } if detail == "model overloaded"),
        "{error:?}"
    );
}

#[test]
fn the_request_carries_model_messages_and_key() {
    let server = Server::start(|_, _| Reply::events(&[chunk("ok"), "[DONE]".to_owned()]));
    let mut with_key = config(&server.base_url());
    with_key.api_key = Some("sk-test-123".to_owned());
    chat(&OpenAiModel::new(with_key)).0.unwrap();
    chat(&model(&server)).0.unwrap();

    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    let first: &Request = &requests[0];
    assert_eq!(first.method, "POST");
    assert_eq!(first.path, "/v1/chat/completions");
    assert_eq!(first.header("authorization"), Some("Bearer sk-test-123"));
    assert!(first
        .header("content-type")
        .is_some_and(|v| v.starts_with("application/json")));
    let body = first.json();
    assert_eq!(body["model"], "gpt-4o-mini");
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"]["include_usage"], true);
    assert_eq!(
        body["messages"],
        json!([
            { "role": "system", "content": "Be brief." },
            { "role": "user", "content": "Hello" },
            { "role": "assistant", "content": "Hi." },
            { "role": "user", "content": "What is 2 + 2?" },
        ])
    );
    assert_eq!(requests[1].header("authorization"), None);
}

/// An embeddings server: each vector is `[global index, batch number]`,
/// read back from the text `text-N`; items are listed in reverse order.
fn embeddings_reply(request: &Request, batch: usize) -> Reply {
    let body = request.json();
    let inputs = body["input"].as_array().expect("input is a list");
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .rev()
        .map(|(i, text)| {
            let n: f32 = text.as_str().unwrap()["text-".len()..].parse().unwrap();
            json!({ "object": "embedding", "index": i, "embedding": [n, batch as f32] })
        })
        .collect();
    Reply::json(
        200,
        &json!({
            "object": "list",
            "data": data,
            "model": "text-embedding-3-small",
            "usage": { "prompt_tokens": 1_000_000, "total_tokens": 1_000_000 },
        }),
    )
}

fn texts(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("text-{i}")).collect()
}

#[test]
fn embeddings_go_in_batches_and_come_back_in_order() {
    let server = Server::start(embeddings_reply);
    let mut config = config(&server.base_url());
    config.api_key = Some("sk-embed".to_owned());
    config.embedding_model = "text-embedding-3-small".to_owned();
    assert_eq!(config.embedding_batch, 64);
    let embeddings = OpenAiModel::new(config)
        .embed(&texts(150), &Cancel::new())
        .unwrap();

    let requests = server.requests();
    let sizes: Vec<usize> = requests
        .iter()
        .map(|r| r.json()["input"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, [64, 64, 22]);
    for request in &requests {
        assert_eq!(request.path, "/v1/embeddings");
        assert_eq!(request.json()["model"], "text-embedding-3-small");
        assert_eq!(request.header("authorization"), Some("Bearer sk-embed"));
    }
    assert_eq!(embeddings.vectors.len(), 150);
    for (i, vector) in embeddings.vectors.iter().enumerate() {
        assert_eq!(vector[0], i as f32, "vector {i} is out of place");
        assert_eq!(vector[1], (i / 64) as f32);
    }
    assert_eq!(embeddings.model, "text-embedding-3-small");
    // Three batches of 1M tokens at $0.02 per 1M.
    assert!((embeddings.cost - 0.06).abs() < 1e-9, "{}", embeddings.cost);
}

#[test]
fn no_texts_need_no_request() {
    let server = Server::start(embeddings_reply);
    let embeddings = model(&server).embed(&[], &Cancel::new()).unwrap();
    assert!(embeddings.vectors.is_empty());
    assert!(server.requests().is_empty());
}

#[test]
fn embeddings_retry_after_a_rate_limit() {
    let server = Server::start(|request, n| match n {
        0 => {
            Reply::json(429, &openai_error("slow down", "requests")).with_header("Retry-After", "0")
        }
        1 => Reply::body(502, "text/plain", "bad gateway"),
        _ => embeddings_reply(request, 0),
    });
    let started = Instant::now();
    let embeddings = model(&server).embed(&texts(3), &Cancel::new()).unwrap();
    assert_eq!(
        embeddings.vectors,
        [vec![0.0, 0.0], vec![1.0, 0.0], vec![2.0, 0.0]]
    );
    assert_eq!(server.requests().len(), 3);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn embeddings_honour_retry_after() {
    let server = Server::start(|request, n| match n {
        0 => {
            Reply::json(429, &openai_error("slow down", "requests")).with_header("Retry-After", "1")
        }
        _ => embeddings_reply(request, 0),
    });
    let started = Instant::now();
    model(&server).embed(&texts(2), &Cancel::new()).unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn embeddings_give_up_after_the_last_retry() {
    let server =
        Server::start(|_, _| Reply::json(503, &openai_error("overloaded", "server_error")));
    let error = model(&server).embed(&texts(2), &Cancel::new()).unwrap_err();
    assert!(
        matches!(&error, ModelError::Server { status: 503, detail } if detail == "overloaded"),
        "{error:?}"
    );
    // The first try and three retries.
    assert_eq!(server.requests().len(), 4);
}

#[test]
fn embeddings_do_not_retry_a_rejected_request() {
    let server = Server::start(|_, _| {
        Reply::json(
            400,
            &openai_error("input too long", "invalid_request_error"),
        )
    });
    let error = model(&server).embed(&texts(2), &Cancel::new()).unwrap_err();
    assert!(
        matches!(error, ModelError::Rejected { status: 400, .. }),
        "{error:?}"
    );
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn embeddings_retry_a_refused_connection_then_fail() {
    let mut config = config(&refused_base_url());
    config.max_retries = 2;
    let error = OpenAiModel::new(config)
        .embed(&texts(1), &Cancel::new())
        .unwrap_err();
    assert!(matches!(error, ModelError::Connect { .. }), "{error:?}");
}

#[test]
fn embeddings_that_do_not_match_the_texts_are_malformed() {
    let replies = [
        json!({ "data": [{ "index": 0, "embedding": [1.0] }] }),
        json!({ "data": [{ "index": 0, "embedding": [1.0] }, { "index": 0, "embedding": [2.0] }] }),
        json!({ "data": [{ "index": 0, "embedding": [1.0] }, { "index": 5, "embedding": [2.0] }] }),
        json!({ "object": "list" }),
    ];
    let count = replies.len();
    let server = Server::start(move |_, n| Reply::json(200, &replies[n]));
    let model = model(&server);
    for case in 0..count {
        let error = model.embed(&texts(2), &Cancel::new()).unwrap_err();
        assert!(
            matches!(error, ModelError::Malformed(_)),
            "case {case}: {error:?}"
        );
    }
}

fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |key| map.get(key).cloned()
}

#[test]
fn openai_itself_needs_a_key() {
    let error = OpenAiConfig::from_vars(vars(&[]), "gpt-4o-mini").unwrap_err();
    assert!(error.to_string().contains("OPENAI_API_KEY"), "{error}");

    let config =
        OpenAiConfig::from_vars(vars(&[("OPENAI_API_KEY", "sk-1")]), "gpt-4o-mini").unwrap();
    assert_eq!(config.base_url, DEFAULT_BASE_URL);
    assert_eq!(config.api_key.as_deref(), Some("sk-1"));
    assert_eq!(config.model, "gpt-4o-mini");
    assert_eq!(config.embedding_model, "text-embedding-3-small");
    assert_eq!(config.timeout, Duration::from_secs(60));
    assert_eq!(config.embedding_batch, 64);
    assert!(
        !format!("{config:?}").contains("sk-1"),
        "the key leaks into Debug"
    );
}

#[test]
fn a_local_server_needs_no_key() {
    let config = OpenAiConfig::from_vars(
        vars(&[
            ("OPENAI_BASE_URL", "http://localhost:11434/v1/"),
            ("NU_AGENT_EMBEDDING_MODEL", "nomic-embed-text"),
            ("NU_AGENT_HTTP_TIMEOUT_SECS", "5"),
        ]),
        "llama3.2",
    )
    .unwrap();
    assert_eq!(config.base_url, "http://localhost:11434/v1");
    assert_eq!(config.api_key, None);
    assert_eq!(config.embedding_model, "nomic-embed-text");
    assert_eq!(config.timeout, Duration::from_secs(5));

    let fallback = OpenAiConfig::from_vars(
        vars(&[("OPENAI_API_BASE", "http://127.0.0.1:8080/v1")]),
        "local",
    )
    .unwrap();
    assert_eq!(fallback.base_url, "http://127.0.0.1:8080/v1");

    let both = OpenAiConfig::from_vars(
        vars(&[
            ("OPENAI_BASE_URL", "http://a:1/v1"),
            ("OPENAI_API_BASE", "http://b:2/v1"),
        ]),
        "m",
    )
    .unwrap();
    assert_eq!(both.base_url, "http://a:1/v1");
}

#[test]
fn unusable_settings_are_explained() {
    let bad_timeout = OpenAiConfig::from_vars(
        vars(&[
            ("OPENAI_BASE_URL", "http://localhost:8000/v1"),
            ("NU_AGENT_HTTP_TIMEOUT_SECS", "soon"),
        ]),
        "m",
    )
    .unwrap_err();
    assert!(
        bad_timeout
            .to_string()
            .contains("NU_AGENT_HTTP_TIMEOUT_SECS"),
        "{bad_timeout}"
    );

    let bad_url =
        OpenAiConfig::from_vars(vars(&[("OPENAI_BASE_URL", "localhost:8000")]), "m").unwrap_err();
    assert!(bad_url.to_string().contains("OPENAI_BASE_URL"), "{bad_url}");

    let no_name = OpenAiConfig::from_vars(vars(&[("OPENAI_API_KEY", "k")]), " ").unwrap_err();
    assert!(no_name.to_string().contains("name"), "{no_name}");
}

#[test]
fn the_model_is_named_by_its_spec() {
    let model = OpenAiModel::new(OpenAiConfig::new("llama3.2", "http://127.0.0.1:1/v1/"));
    assert_eq!(model.name(), "openai:llama3.2");
    assert_eq!(model.config().base_url, "http://127.0.0.1:1/v1");
}
