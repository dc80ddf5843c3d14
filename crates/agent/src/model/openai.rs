//! A client for OpenAI-compatible chat and embedding servers.
//!
//! [`OpenAiModel`] speaks the HTTP API that OpenAI defined and that Ollama,
//! llama.cpp's server and vLLM also serve, so one client covers a hosted
//! model and a model on the same machine.
//!
//! # What is supported
//!
//! - Chat: `POST {base}/chat/completions` with the conversation as plain
//!   text messages. The reply is streamed (`"stream": true`, with
//!   `stream_options.include_usage` so the server reports token counts):
//!   each piece of text reaches the caller as it arrives, and a
//!   [`Cancel`] stops the call at once, even while the server is still
//!   thinking. A server that ignores `stream` and answers with one JSON
//!   `chat.completion` body is accepted too.
//! - Embeddings: `POST {base}/embeddings`, in batches of at most
//!   [`OpenAiConfig::embedding_batch`] texts. A batch that fails for a
//!   passing reason (429, 5xx, refused connection, timeout) is retried with
//!   exponential backoff, honouring the server's `Retry-After` up to
//!   [`MAX_RETRY_AFTER`].
//! - Authentication with a bearer API key, optional for local servers.
//! - Cost estimates for a few well-known OpenAI models, from a small
//!   built-in price table; other models cost `0.0`.
//!
//! # What is not supported
//!
//! - Tool (function) calls, images, audio or any content other than text.
//! - Sampling settings (temperature, maximum tokens...): the server's
//!   defaults apply.
//! - More than one choice per reply, the legacy completions endpoint and
//!   the newer responses API.
//! - Base64-encoded embeddings, `Retry-After` given as a date, and Azure
//!   OpenAI's `api-key` header and deployment URLs.
//! - Chat calls are not retried: the caller sees the first failure and
//!   decides.
//!
//! # Settings
//!
//! [`OpenAiModel::from_env`] reads:
//!
//! | Variable | Meaning | Default |
//! |---|---|---|
//! | `OPENAI_BASE_URL` (or `OPENAI_API_BASE`) | the API root, e.g. `http://localhost:11434/v1` | `https://api.openai.com/v1` |
//! | `OPENAI_API_KEY` | the bearer key; required for the default base URL | none |
//! | `NU_AGENT_EMBEDDING_MODEL` | the model used by `embed` | `text-embedding-3-small` |
//! | `NU_AGENT_HTTP_TIMEOUT_SECS` | how long a silent server is waited for | 60 |
//!
//! # Errors
//!
//! Every failure is one [`ModelError`] with a one-line message: a refused
//! connection is [`ModelError::Connect`], a silent server
//! [`ModelError::Timeout`], 401/403 [`ModelError::Unauthorized`], 429
//! [`ModelError::RateLimited`], 5xx [`ModelError::Server`], other 4xx
//! [`ModelError::Rejected`], and a reply that can not be read
//! [`ModelError::Malformed`]. The detail is the server's own
//! `error.message` when it sends one, else a short excerpt of the body.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;
use serde_json::{json, Value};
use ureq::http::{HeaderMap, Response, StatusCode};
use ureq::{Agent, Body};

use super::{Cancel, Completion, Embeddings, Message, Model, ModelError};

/// The API root used when neither `OPENAI_BASE_URL` nor `OPENAI_API_BASE`
/// is set.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// The embedding model used when `NU_AGENT_EMBEDDING_MODEL` is not set.
pub const DEFAULT_EMBEDDING_MODEL: &str = "text-embedding-3-small";

/// How long a silent server is waited for by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long establishing a connection may take by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The most texts sent in one embeddings request by default.
pub const DEFAULT_EMBEDDING_BATCH: usize = 64;

/// How many times a failed embeddings batch is retried by default.
pub const DEFAULT_MAX_RETRIES: u32 = 3;

/// The first backoff before retrying an embeddings batch by default; each
/// further retry waits twice as long.
pub const DEFAULT_RETRY_BASE_DELAY: Duration = Duration::from_millis(200);

/// The longest a server's `Retry-After` is honoured for; a longer request
/// is cut to this, so a batch never stalls for minutes.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(5);

/// The longest detail taken from a server's error body, in characters.
const DETAIL_MAX_CHARS: usize = 200;

/// The most bytes read from an error body.
const ERROR_BODY_LIMIT: u64 = 64 * 1024;

/// The most bytes read from a whole (non-streamed) reply.
const REPLY_BODY_LIMIT: u64 = 64 * 1024 * 1024;

/// How often a waiting chat call looks at its [`Cancel`].
const CANCEL_POLL: Duration = Duration::from_millis(20);

/// Dollars per million tokens (prompt, completion) for the models whose
/// prices are known. Estimates only: prices change, and a dated snapshot
/// is priced like its family.
const PRICES: &[(&str, f64, f64)] = &[
    ("gpt-4o", 2.50, 10.00),
    ("gpt-4o-mini", 0.15, 0.60),
    ("gpt-4.1", 2.00, 8.00),
    ("gpt-4.1-mini", 0.40, 1.60),
    ("text-embedding-3-small", 0.02, 0.0),
    ("text-embedding-3-large", 0.13, 0.0),
];

/// Everything [`OpenAiModel`] needs to reach its server.
///
/// Build one with [`OpenAiConfig::new`] and adjust the fields, or read the
/// environment with [`OpenAiConfig::from_vars`].
#[derive(Clone)]
pub struct OpenAiConfig {
    /// The chat model's name as the server knows it (`gpt-4o-mini`,
    /// `llama3.2`...).
    pub model: String,
    /// The API root without a trailing slash, e.g.
    /// `https://api.openai.com/v1`; requests go to `{base_url}/chat/completions`
    /// and `{base_url}/embeddings`.
    pub base_url: String,
    /// The bearer key; no `Authorization` header is sent when `None`.
    pub api_key: Option<String>,
    /// The model used by [`Model::embed`].
    pub embedding_model: String,
    /// How long the server may stay silent: waiting for the reply to
    /// start, and between two reads of a streamed reply. An embeddings
    /// request must also finish within it.
    pub timeout: Duration,
    /// How long establishing a connection may take.
    pub connect_timeout: Duration,
    /// The most texts sent in one embeddings request (0 counts as 1).
    pub embedding_batch: usize,
    /// How many times a failed embeddings batch is retried.
    pub max_retries: u32,
    /// The backoff before the first retry; it doubles with each retry.
    pub retry_base_delay: Duration,
}

impl OpenAiConfig {
    /// A configuration for `model` at `base_url` (a trailing slash is
    /// removed), with no API key and the default embedding model,
    /// timeouts, batch size and retries.
    pub fn new(model: impl Into<String>, base_url: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            base_url: normalize_base_url(&base_url.into()),
            api_key: None,
            embedding_model: DEFAULT_EMBEDDING_MODEL.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            embedding_batch: DEFAULT_EMBEDDING_BATCH,
            max_retries: DEFAULT_MAX_RETRIES,
            retry_base_delay: DEFAULT_RETRY_BASE_DELAY,
        }
    }

    /// Builds the configuration for the chat model `name` from the
    /// variables that `get` returns (see the [module docs](self) for the
    /// list). [`OpenAiModel::from_env`] passes the process environment;
    /// tests pass a map. Empty values count as unset.
    ///
    /// # Errors
    ///
    /// An empty model name, a base URL that is not `http://` or
    /// `https://`, a missing `OPENAI_API_KEY` when the base URL is
    /// OpenAI's, or a timeout that is not a positive number of seconds.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>, name: &str) -> anyhow::Result<Self> {
        let var = |key: &str| {
            get(key)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let name = name.trim();
        if name.is_empty() {
            bail!("the OpenAI-compatible model needs a name, for example openai:gpt-4o-mini");
        }

        let (base_var, base) = match (var("OPENAI_BASE_URL"), var("OPENAI_API_BASE")) {
            (Some(url), _) => ("OPENAI_BASE_URL", url),
            (None, Some(url)) => ("OPENAI_API_BASE", url),
            (None, None) => ("OPENAI_BASE_URL", DEFAULT_BASE_URL.to_owned()),
        };
        let mut config = Self::new(name, base);
        let lower = config.base_url.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) {
            bail!(
                "{base_var} must start with http:// or https://, got {:?}",
                config.base_url
            );
        }

        config.api_key = var("OPENAI_API_KEY");
        if config.api_key.is_none() && config.base_url == DEFAULT_BASE_URL {
            bail!(
                "OPENAI_API_KEY is not set: set it to your OpenAI API key, or set \
                 OPENAI_BASE_URL to an OpenAI-compatible server that needs no key \
                 (for example http://localhost:11434/v1 for Ollama)"
            );
        }

        if let Some(model) = var("NU_AGENT_EMBEDDING_MODEL") {
            config.embedding_model = model;
        }
        if let Some(secs) = var("NU_AGENT_HTTP_TIMEOUT_SECS") {
            config.timeout = secs
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s > 0.0)
                .and_then(|s| Duration::try_from_secs_f64(s).ok())
                .with_context(|| {
                    format!(
                        "NU_AGENT_HTTP_TIMEOUT_SECS must be a positive number of seconds, \
                         got {secs:?}"
                    )
                })?;
        }
        Ok(config)
    }
}

impl fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiConfig")
            .field("model", &self.model)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("embedding_model", &self.embedding_model)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("embedding_batch", &self.embedding_batch)
            .field("max_retries", &self.max_retries)
            .field("retry_base_delay", &self.retry_base_delay)
            .finish()
    }
}

/// A chat and embedding model behind an OpenAI-compatible HTTP server.
///
/// See the [module docs](self) for what it supports.
pub struct OpenAiModel {
    spec: String,
    config: OpenAiConfig,
    /// Shared by the embeddings requests; each chat call gets an agent of
    /// its own, so cancelling it can close its connection without
    /// touching anyone else's.
    agent: Agent,
}

impl OpenAiModel {
    /// A model using `config`. Nothing is sent until the first call.
    pub fn new(config: OpenAiConfig) -> Self {
        Self {
            spec: format!("openai:{}", config.model),
            agent: new_agent(&config),
            config,
        }
    }

    /// The model `name` (as in `--model openai:NAME`), configured from the
    /// process environment; see [`OpenAiConfig::from_vars`].
    ///
    /// # Errors
    ///
    /// A missing `OPENAI_API_KEY` for OpenAI itself, or an unusable
    /// setting, explained in the message.
    pub fn from_env(name: &str) -> anyhow::Result<Self> {
        let config = OpenAiConfig::from_vars(|key| std::env::var(key).ok(), name)?;
        Ok(Self::new(config))
    }

    /// The configuration in use.
    pub fn config(&self) -> &OpenAiConfig {
        &self.config
    }

    /// Embeds one batch, retrying passing failures; a cancel ends the wait
    /// between tries at once.
    fn embed_batch_with_retries(
        &self,
        texts: &[String],
        cancel: &Cancel,
    ) -> Result<BatchReply, ModelError> {
        let mut retries = 0;
        loop {
            if cancel.is_cancelled() {
                return Err(ModelError::Cancelled);
            }
            match embed_batch(&self.config, &self.agent, texts) {
                Err(e) if is_retryable(&e) && retries < self.config.max_retries => {
                    sleep_unless_cancelled(retry_delay(&self.config, retries, &e), cancel)?;
                    retries += 1;
                }
                other => return other,
            }
        }
    }
}

impl fmt::Debug for OpenAiModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiModel")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Model for OpenAiModel {
    fn name(&self) -> &str {
        &self.spec
    }

    fn chat(
        &self,
        messages: &[Message],
        on_text: &mut dyn FnMut(&str),
        cancel: &Cancel,
    ) -> Result<Completion, ModelError> {
        if cancel.is_cancelled() {
            return Err(ModelError::Cancelled);
        }
        let body = json!({
            "model": self.config.model,
            "messages": messages
                .iter()
                .map(|m| json!({ "role": m.role.as_str(), "content": m.content }))
                .collect::<Vec<_>>(),
            "stream": true,
            "stream_options": { "include_usage": true },
        });

        // The request runs on a thread of its own and hands the text over
        // piece by piece, so this thread can watch `cancel` even while the
        // server is silent; cancelling shuts the agent down, which breaks
        // the thread's blocked read at once.
        let agent = new_agent(&self.config);
        let (tx, rx) = mpsc::channel::<Result<Piece, ModelError>>();
        {
            let agent = agent.clone();
            let config = self.config.clone();
            thread::Builder::new()
                .name("openai-chat".to_owned())
                .spawn(move || {
                    let result = stream_chat(&config, &agent, &body, &mut |text| {
                        tx.send(Ok(Piece::Text(text))).is_ok()
                    });
                    let _ = tx.send(result.map(Piece::End));
                })
                .map_err(|e| ModelError::Other(format!("could not start the chat request: {e}")))?;
        }

        let mut text = String::new();
        loop {
            if cancel.is_cancelled() {
                agent.shutdown();
                return Err(ModelError::Cancelled);
            }
            match rx.recv_timeout(CANCEL_POLL) {
                Ok(Ok(Piece::Text(piece))) => {
                    on_text(&piece);
                    text.push_str(&piece);
                }
                Ok(Ok(Piece::End(end))) => {
                    let model = end.model.unwrap_or_else(|| self.config.model.clone());
                    let cost = estimate_cost(&model, end.prompt_tokens, end.completion_tokens);
                    return Ok(Completion {
                        text,
                        model,
                        prompt_tokens: end.prompt_tokens,
                        completion_tokens: end.completion_tokens,
                        cost,
                    });
                }
                Ok(Err(e)) => return Err(e),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(ModelError::Other(
                        "the chat request stopped without a result".to_owned(),
                    ))
                }
            }
        }
    }

    fn embedding_model(&self) -> &str {
        &self.config.embedding_model
    }

    /// The vectors come back under the configured embedding model's name
    /// (not the name the server echoes), which is what identifies them.
    fn embed(&self, texts: &[String], cancel: &Cancel) -> Result<Embeddings, ModelError> {
        let mut out = Embeddings {
            model: self.config.embedding_model.clone(),
            vectors: Vec::with_capacity(texts.len()),
            cost: 0.0,
        };
        for batch in texts.chunks(self.config.embedding_batch.max(1)) {
            let reply = self.embed_batch_with_retries(batch, cancel)?;
            out.vectors.extend(reply.vectors);
            let model = reply
                .model
                .as_deref()
                .unwrap_or(&self.config.embedding_model);
            out.cost += estimate_cost(model, reply.prompt_tokens, None);
        }
        Ok(out)
    }
}

/// Sleeps for `wait`, in short slices so that a cancel ends it at once.
fn sleep_unless_cancelled(wait: Duration, cancel: &Cancel) -> Result<(), ModelError> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        if cancel.is_cancelled() {
            return Err(ModelError::Cancelled);
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        thread::sleep(left.min(Duration::from_millis(20)));
    }
}

/// What the chat thread hands over.
enum Piece {
    /// A piece of the reply text.
    Text(String),
    /// The reply is complete.
    End(ReplyEnd),
}

/// What is known about a reply once it is complete.
#[derive(Debug, Default)]
struct ReplyEnd {
    model: Option<String>,
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
}

impl ReplyEnd {
    /// Takes the model name and token counts from a chunk or a whole
    /// reply, keeping what is already known when the object lacks them.
    fn note(&mut self, object: &Value) {
        if self.model.is_none() {
            if let Some(model) = object.get("model").and_then(Value::as_str) {
                if !model.is_empty() {
                    self.model = Some(model.to_owned());
                }
            }
        }
        if let Some(usage) = object.get("usage").filter(|u| u.is_object()) {
            if let Some(n) = usage.get("prompt_tokens").and_then(Value::as_u64) {
                self.prompt_tokens = Some(n);
            }
            if let Some(n) = usage.get("completion_tokens").and_then(Value::as_u64) {
                self.completion_tokens = Some(n);
            }
        }
    }
}

/// One embeddings batch's result.
struct BatchReply {
    vectors: Vec<Vec<f32>>,
    model: Option<String>,
    prompt_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct EmbeddingList {
    data: Vec<EmbeddingItem>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<EmbeddingUsage>,
}

#[derive(Deserialize)]
struct EmbeddingItem {
    #[serde(default)]
    index: Option<usize>,
    embedding: Vec<f32>,
}

#[derive(Deserialize)]
struct EmbeddingUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    total_tokens: Option<u64>,
}

/// An agent that hands every status code back to us (so error bodies can
/// be read), follows no redirects, and gives up on a silent server.
fn new_agent(config: &OpenAiConfig) -> Agent {
    Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_connect(Some(config.connect_timeout))
        .timeout_recv_response(Some(config.timeout))
        .timeout_per_read(Some(config.timeout))
        .timeout_per_write(Some(config.timeout))
        .user_agent(concat!("nu-agent/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// A POST to `url` with the key, when there is one.
fn post(
    config: &OpenAiConfig,
    agent: &Agent,
    url: &str,
    accept: &str,
) -> ureq::RequestBuilder<ureq::typestate::WithBody> {
    let request = agent.post(url).header("Accept", accept);
    match &config.api_key {
        Some(key) => request.header("Authorization", format!("Bearer {key}")),
        None => request,
    }
}

/// Sends the chat request and reads the reply, passing each piece of text
/// to `on_piece`; stops early when `on_piece` returns `false`.
fn stream_chat(
    config: &OpenAiConfig,
    agent: &Agent,
    body: &Value,
    on_piece: &mut dyn FnMut(String) -> bool,
) -> Result<ReplyEnd, ModelError> {
    let url = format!("{}/chat/completions", config.base_url);
    let response = post(config, agent, &url, "text/event-stream")
        .send_json(body)
        .map_err(|e| http_error(config, &url, e))?;
    let response = check_status(config, response)?;
    let reader = BufReader::new(response.into_body().into_reader());
    read_chat_reply(reader, on_piece, &|e| {
        read_error(config, &url, ureq::Error::from(e))
    })
}

/// Reads a chat reply: an event stream, or one JSON body from a server
/// that does not stream.
fn read_chat_reply(
    mut reader: impl BufRead,
    on_piece: &mut dyn FnMut(String) -> bool,
    io_error: &dyn Fn(io::Error) -> ModelError,
) -> Result<ReplyEnd, ModelError> {
    let mut raw = Vec::new();
    // The first line that holds anything tells which kind of reply this is.
    let first = loop {
        raw.clear();
        if reader.read_until(b'\n', &mut raw).map_err(io_error)? == 0 {
            return Err(ModelError::Malformed("the reply was empty".to_owned()));
        }
        let line = String::from_utf8_lossy(&raw);
        let line = line.trim_start_matches('\u{feff}');
        if !line.trim().is_empty() {
            break line.to_owned();
        }
    };

    let start = first.trim_start();
    if start.starts_with('{') {
        let mut whole = first.into_bytes();
        reader
            .take(REPLY_BODY_LIMIT)
            .read_to_end(&mut whole)
            .map_err(io_error)?;
        return read_whole_completion(&whole, on_piece);
    }
    let is_field = ["data", "event", "id", "retry"]
        .iter()
        .any(|f| start.strip_prefix(f).is_some_and(|r| r.starts_with(':')));
    if !(start.starts_with(':') || is_field) {
        return Err(ModelError::Malformed(format!(
            "expected a chat completion, got: {}",
            one_line(start, DETAIL_MAX_CHARS)
        )));
    }

    let mut stream = EventStream::default();
    let mut line = first;
    loop {
        if let Some(data) = stream.feed(&line) {
            if stream.handle(&data, on_piece)? {
                return Ok(stream.end);
            }
        }
        raw.clear();
        if reader.read_until(b'\n', &mut raw).map_err(io_error)? == 0 {
            break;
        }
        line = String::from_utf8_lossy(&raw).into_owned();
    }
    // The stream ended without `[DONE]`; some servers never send it.
    if let Some(data) = stream.take_pending() {
        if stream.handle(&data, on_piece)? {
            return Ok(stream.end);
        }
    }
    if !stream.saw_choice {
        return Err(ModelError::Malformed(
            "the event stream ended before any reply arrived".to_owned(),
        ));
    }
    Ok(stream.end)
}

/// The state of a server-sent event stream being read.
#[derive(Default)]
struct EventStream {
    /// The `data` lines of the event being read, joined by newlines.
    data: String,
    has_data: bool,
    saw_choice: bool,
    end: ReplyEnd,
}

impl EventStream {
    /// Takes one line; returns an event's data once a blank line ends it.
    fn feed(&mut self, line: &str) -> Option<String> {
        let line = line.trim_end_matches(['\n', '\r']);
        if line.is_empty() {
            return self.take_pending();
        }
        if line.starts_with(':') {
            return None; // a comment, such as a keep-alive
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        if field == "data" {
            if self.has_data {
                self.data.push('\n');
            }
            self.data.push_str(value.strip_prefix(' ').unwrap_or(value));
            self.has_data = true;
        }
        None
    }

    /// The data of an event not yet ended by a blank line.
    fn take_pending(&mut self) -> Option<String> {
        if !self.has_data {
            return None;
        }
        self.has_data = false;
        Some(std::mem::take(&mut self.data))
    }

    /// Handles one event's data; returns `true` at `[DONE]`.
    fn handle(
        &mut self,
        data: &str,
        on_piece: &mut dyn FnMut(String) -> bool,
    ) -> Result<bool, ModelError> {
        let data = data.trim();
        if data == "[DONE]" {
            return Ok(true);
        }
        if data.is_empty() {
            return Ok(false);
        }
        let chunk: Value = serde_json::from_str(data).map_err(|e| {
            ModelError::Malformed(format!(
                "an event of the stream is not valid JSON ({e}): {}",
                one_line(data, DETAIL_MAX_CHARS)
            ))
        })?;
        if let Some(error) = chunk.get("error").filter(|e| !e.is_null()) {
            return Err(error_in_reply(error));
        }
        self.end.note(&chunk);
        let Some(choices) = chunk.get("choices").and_then(Value::as_array) else {
            return Ok(false);
        };
        let Some(choice) = first_choice(choices) else {
            return Ok(false);
        };
        self.saw_choice = true;
        if let Some(text) = choice.pointer("/delta/content").and_then(Value::as_str) {
            if !text.is_empty() && !on_piece(text.to_owned()) {
                return Err(ModelError::Cancelled);
            }
        }
        Ok(false)
    }
}

/// Reads a whole `chat.completion` body.
fn read_whole_completion(
    body: &[u8],
    on_piece: &mut dyn FnMut(String) -> bool,
) -> Result<ReplyEnd, ModelError> {
    let reply: Value = serde_json::from_slice(body).map_err(|e| {
        ModelError::Malformed(format!(
            "the reply is not valid JSON ({e}): {}",
            one_line(&String::from_utf8_lossy(body), DETAIL_MAX_CHARS)
        ))
    })?;
    if let Some(error) = reply.get("error").filter(|e| !e.is_null()) {
        return Err(error_in_reply(error));
    }
    let message = reply
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|choices| first_choice(choices))
        .and_then(|choice| choice.get("message"))
        .ok_or_else(|| {
            ModelError::Malformed(format!(
                "the reply has no choices[0].message: {}",
                one_line(&reply.to_string(), DETAIL_MAX_CHARS)
            ))
        })?;
    let text = match message.get("content") {
        Some(Value::String(text)) => text.clone(),
        // No text, e.g. a refusal or a tool call we did not ask for.
        None | Some(Value::Null) => String::new(),
        Some(other) => {
            return Err(ModelError::Malformed(format!(
                "choices[0].message.content is not text: {}",
                one_line(&other.to_string(), DETAIL_MAX_CHARS)
            )))
        }
    };
    if !text.is_empty() && !on_piece(text) {
        return Err(ModelError::Cancelled);
    }
    let mut end = ReplyEnd::default();
    end.note(&reply);
    Ok(end)
}

/// The choice with index 0, or the first one listed.
fn first_choice(choices: &[Value]) -> Option<&Value> {
    choices
        .iter()
        .find(|c| c.get("index").and_then(Value::as_u64) == Some(0))
        .or_else(|| choices.first())
}

/// Sends one embeddings request and puts the vectors in the order of
/// `texts`.
fn embed_batch(
    config: &OpenAiConfig,
    agent: &Agent,
    texts: &[String],
) -> Result<BatchReply, ModelError> {
    let url = format!("{}/embeddings", config.base_url);
    let body = json!({ "model": config.embedding_model, "input": texts });
    let response = post(config, agent, &url, "application/json")
        .config()
        .timeout_global(Some(config.timeout))
        .build()
        .send_json(&body)
        .map_err(|e| http_error(config, &url, e))?;
    let response = check_status(config, response)?;
    let raw = response
        .into_body()
        .into_with_config()
        .limit(REPLY_BODY_LIMIT)
        .read_to_vec()
        .map_err(|e| read_error(config, &url, e))?;

    let value: Value = serde_json::from_slice(&raw).map_err(|e| {
        ModelError::Malformed(format!(
            "the embeddings reply is not valid JSON ({e}): {}",
            one_line(&String::from_utf8_lossy(&raw), DETAIL_MAX_CHARS)
        ))
    })?;
    if let Some(error) = value.get("error").filter(|e| !e.is_null()) {
        return Err(error_in_reply(error));
    }
    let list: EmbeddingList = serde_json::from_value(value).map_err(|e| {
        ModelError::Malformed(format!("the embeddings reply could not be read: {e}"))
    })?;
    if list.data.len() != texts.len() {
        return Err(ModelError::Malformed(format!(
            "the embeddings reply holds {} vectors for {} texts",
            list.data.len(),
            texts.len()
        )));
    }

    let mut slots: Vec<Option<Vec<f32>>> = vec![None; texts.len()];
    for (position, item) in list.data.into_iter().enumerate() {
        let index = item.index.unwrap_or(position);
        match slots.get_mut(index) {
            Some(slot @ None) => *slot = Some(item.embedding),
            Some(Some(_)) => {
                return Err(ModelError::Malformed(format!(
                    "the embeddings reply holds index {index} twice"
                )))
            }
            None => {
                return Err(ModelError::Malformed(format!(
                    "the embeddings reply holds index {index} for {} texts",
                    texts.len()
                )))
            }
        }
    }
    Ok(BatchReply {
        // Every slot is filled: as many items as slots, none twice.
        vectors: slots.into_iter().flatten().collect(),
        model: list.model.filter(|m| !m.is_empty()),
        prompt_tokens: list.usage.and_then(|u| u.prompt_tokens.or(u.total_tokens)),
    })
}

/// Passes a successful response through; turns any other into the
/// matching error, with the server's explanation.
fn check_status(
    config: &OpenAiConfig,
    response: Response<Body>,
) -> Result<Response<Body>, ModelError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry_after = retry_after(response.headers());
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // An unreadable error body still leaves the status to report.
    let body = response
        .into_body()
        .into_with_config()
        .limit(ERROR_BODY_LIMIT)
        .lossy_utf8(true)
        .read_to_string()
        .unwrap_or_default();
    let mut detail = error_detail(status, &body);
    if status.is_redirection() {
        detail = format!(
            "redirected to {}; check the base URL ({})",
            location.as_deref().unwrap_or("an unnamed place"),
            config.base_url
        );
    }
    Err(status_error(status.as_u16(), retry_after, detail))
}

/// The error for an HTTP status that is not a success.
fn status_error(status: u16, retry_after: Option<Duration>, detail: String) -> ModelError {
    match status {
        401 | 403 => ModelError::Unauthorized { status, detail },
        429 => ModelError::RateLimited {
            retry_after,
            detail,
        },
        500..=599 => ModelError::Server { status, detail },
        _ => ModelError::Rejected { status, detail },
    }
}

/// The error for an `error` object sent with a successful status, as some
/// servers do mid-stream.
fn error_in_reply(error: &Value) -> ModelError {
    let detail = error_message(error)
        .map(|m| one_line(&m, DETAIL_MAX_CHARS))
        .unwrap_or_else(|| one_line(&error.to_string(), DETAIL_MAX_CHARS));
    let code = error
        .get("code")
        .and_then(|c| {
            c.as_u64()
                .or_else(|| c.as_str().and_then(|s| s.parse().ok()))
        })
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| (400..=599).contains(c));
    match code {
        Some(status) => status_error(status, None, detail),
        // The server failed after it had said all was well.
        None => ModelError::Server {
            status: 500,
            detail,
        },
    }
}

/// The text of an `error` value: `{"message": ...}` or a plain string.
fn error_message(error: &Value) -> Option<String> {
    match error {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Object(map) => map
            .get("message")
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .map(str::to_owned),
        _ => None,
    }
}

/// The server's explanation of a failed request: `error.message` (or a
/// plain `error`, `message` or `detail` string) from a JSON body, else an
/// excerpt of the body, else the status's name.
fn error_detail(status: StatusCode, body: &str) -> String {
    if let Ok(value) = serde_json::from_str::<Value>(body) {
        let message = value.get("error").and_then(error_message).or_else(|| {
            ["message", "detail"].iter().find_map(|key| {
                value
                    .get(*key)
                    .and_then(Value::as_str)
                    .filter(|s| !s.trim().is_empty())
                    .map(str::to_owned)
            })
        });
        if let Some(message) = message {
            return one_line(&message, DETAIL_MAX_CHARS);
        }
    }
    let excerpt = one_line(body, DETAIL_MAX_CHARS);
    if excerpt.is_empty() {
        status.canonical_reason().unwrap_or("no details").to_owned()
    } else {
        excerpt
    }
}

/// How long the server asked us to wait: `retry-after-ms` or
/// `retry-after` in seconds. Dates are not understood.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let number = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|n| n.is_finite() && *n >= 0.0)
    };
    number("retry-after-ms")
        .and_then(|ms| Duration::try_from_secs_f64(ms / 1000.0).ok())
        .or_else(|| number("retry-after").and_then(|s| Duration::try_from_secs_f64(s).ok()))
}

/// Turns a transport failure into the matching error.
fn http_error(config: &OpenAiConfig, url: &str, error: ureq::Error) -> ModelError {
    let connect = |detail: String| ModelError::Connect {
        url: url.to_owned(),
        detail: one_line(&detail, DETAIL_MAX_CHARS),
    };
    match error {
        ureq::Error::Timeout(ureq::Timeout::Connect | ureq::Timeout::Resolve) => {
            ModelError::Timeout(config.connect_timeout)
        }
        ureq::Error::Timeout(_) => ModelError::Timeout(config.timeout),
        ureq::Error::Io(e) if e.kind() == io::ErrorKind::TimedOut => {
            ModelError::Timeout(config.timeout)
        }
        ureq::Error::Io(e) => connect(e.to_string()),
        ureq::Error::HostNotFound => connect("host not found".to_owned()),
        ureq::Error::BadUri(uri) => connect(format!("not a usable URL: {uri}")),
        e @ (ureq::Error::Protocol(_)
        | ureq::Error::LargeResponseHeader(..)
        | ureq::Error::BodyExceedsLimit(_)
        | ureq::Error::Json(_)) => {
            ModelError::Malformed(one_line(&e.to_string(), DETAIL_MAX_CHARS))
        }
        e => connect(e.to_string()),
    }
}

/// Turns a failure while reading a reply into the matching error; a
/// broken connection says so rather than suggesting it never connected.
fn read_error(config: &OpenAiConfig, url: &str, error: ureq::Error) -> ModelError {
    match http_error(config, url, error) {
        ModelError::Connect { url, detail } => ModelError::Connect {
            url,
            detail: format!("the connection broke during the reply: {detail}"),
        },
        other => other,
    }
}

/// Whether an embeddings batch that failed with `error` is worth sending
/// again: passing failures, except a server saying it can not do this at
/// all.
fn is_retryable(error: &ModelError) -> bool {
    error.is_transient() && !matches!(error, ModelError::Server { status: 501, .. })
}

/// The wait before retry number `retries` (from 0): the doubling backoff,
/// or longer when the server asked for it, up to [`MAX_RETRY_AFTER`].
fn retry_delay(config: &OpenAiConfig, retries: u32, error: &ModelError) -> Duration {
    let backoff = config
        .retry_base_delay
        .saturating_mul(1u32 << retries.min(16));
    match error {
        ModelError::RateLimited {
            retry_after: Some(asked),
            ..
        } => backoff.max((*asked).min(MAX_RETRY_AFTER)),
        _ => backoff,
    }
}

/// The estimated cost in dollars of `prompt` and `completion` tokens of
/// `model`; 0.0 for unknown models or unreported counts.
fn estimate_cost(model: &str, prompt: Option<u64>, completion: Option<u64>) -> f64 {
    let family = strip_date_suffix(model);
    let Some(&(_, per_prompt, per_completion)) = PRICES.iter().find(|(name, ..)| *name == family)
    else {
        return 0.0;
    };
    let tokens = |n: Option<u64>| n.unwrap_or(0) as f64 / 1_000_000.0;
    tokens(prompt) * per_prompt + tokens(completion) * per_completion
}

/// `gpt-4o-mini-2024-07-18` → `gpt-4o-mini`.
fn strip_date_suffix(model: &str) -> &str {
    let bytes = model.as_bytes();
    let n = bytes.len();
    let is_date = n > 11
        && bytes[n - 11] == b'-'
        && bytes[n - 6] == b'-'
        && bytes[n - 3] == b'-'
        && [1, 2, 3, 4, 6, 7, 9, 10]
            .iter()
            .all(|i| bytes[n - 11 + i].is_ascii_digit());
    if is_date {
        &model[..n - 11]
    } else {
        model
    }
}

/// Removes trailing slashes and surrounding blanks.
fn normalize_base_url(url: &str) -> String {
    url.trim().trim_end_matches('/').to_owned()
}

/// `text` on one line: blanks (newlines included) collapsed to single
/// spaces, cut to `max` characters with an ellipsis.
fn one_line(text: &str, max: usize) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        return flat;
    }
    let mut cut: String = flat.chars().take(max.saturating_sub(1)).collect();
    cut.truncate(cut.trim_end().len());
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dated_snapshots_are_priced_like_their_family() {
        assert_eq!(strip_date_suffix("gpt-4o-mini-2024-07-18"), "gpt-4o-mini");
        assert_eq!(strip_date_suffix("gpt-4o"), "gpt-4o");
        assert_eq!(strip_date_suffix("llama3.2"), "llama3.2");
        let cost = estimate_cost("gpt-4o-mini-2024-07-18", Some(1_000_000), Some(1_000_000));
        assert!((cost - 0.75).abs() < 1e-9, "{cost}");
        assert_eq!(estimate_cost("llama3.2", Some(1000), Some(1000)), 0.0);
        assert_eq!(estimate_cost("gpt-4o", None, None), 0.0);
    }

    #[test]
    fn details_are_one_short_line() {
        let long = "line one\n\nline two ".repeat(50);
        let line = one_line(&long, DETAIL_MAX_CHARS);
        assert!(!line.contains('\n'));
        assert_eq!(line.chars().count(), DETAIL_MAX_CHARS);
        assert!(line.ends_with('…'));
        assert_eq!(one_line("  a \r\n b  ", 10), "a b");
    }

    #[test]
    fn retry_waits_double_and_honour_the_server_up_to_the_cap() {
        let mut config = OpenAiConfig::new("m", "http://x");
        config.retry_base_delay = Duration::from_millis(100);
        let server = ModelError::Server {
            status: 503,
            detail: String::new(),
        };
        assert_eq!(retry_delay(&config, 0, &server), Duration::from_millis(100));
        assert_eq!(retry_delay(&config, 2, &server), Duration::from_millis(400));
        let limited = |secs| ModelError::RateLimited {
            retry_after: Some(Duration::from_secs(secs)),
            detail: String::new(),
        };
        assert_eq!(retry_delay(&config, 0, &limited(2)), Duration::from_secs(2));
        assert_eq!(retry_delay(&config, 0, &limited(600)), MAX_RETRY_AFTER);
    }
}
