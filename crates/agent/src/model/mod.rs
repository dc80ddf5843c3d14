//! The models behind exchanges, summaries and embeddings.
//!
//! [`Model`] is the one interface the rest of the program uses. Two kinds
//! exist: [`local::LocalModel`], built in and offline, and
//! [`openai::OpenAiModel`], which speaks the OpenAI-compatible HTTP API
//! (OpenAI itself, Ollama, llama.cpp's server, vLLM).

pub mod local;
pub mod openai;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};

/// Who said a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Instructions to the model.
    System,
    /// The person at the keyboard.
    User,
    /// The model.
    Assistant,
}

impl Role {
    /// The role's name in the chat API and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }

    /// Parses a role name as stored in the database.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "system" => Some(Role::System),
            "user" => Some(Role::User),
            "assistant" => Some(Role::Assistant),
            _ => None,
        }
    }
}

/// One message of a chat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Who said it.
    pub role: Role,
    /// What was said.
    pub content: String,
}

impl Message {
    /// A message from `role`.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
        }
    }
}

/// A finished reply.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Completion {
    /// The whole reply text.
    pub text: String,
    /// The model that wrote it, as the server named it.
    pub model: String,
    /// Tokens in the prompt, when the server says.
    pub prompt_tokens: Option<u64>,
    /// Tokens in the reply, when the server says.
    pub completion_tokens: Option<u64>,
    /// What the reply cost in dollars, when known; zero for local models.
    pub cost: f64,
}

/// Vectors for a batch of texts, in the order of the texts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Embeddings {
    /// The model that made them.
    pub model: String,
    /// One vector per text.
    pub vectors: Vec<Vec<f32>>,
    /// What the batch cost in dollars, when known.
    pub cost: f64,
}

/// A request to stop, shared between the REPL and an exchange.
#[derive(Clone, Debug, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// A cancel that has not been requested.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests cancellation.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Returns `true` once cancellation has been requested.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Why a model call failed, in words a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The caller cancelled the call.
    #[error("cancelled")]
    Cancelled,
    /// No connection could be made.
    #[error("could not connect to the model server at {url}: {detail}")]
    Connect {
        /// Where we tried to connect.
        url: String,
        /// What the system said.
        detail: String,
    },
    /// The server stopped answering.
    #[error("the model server did not answer within {0:?}")]
    Timeout(Duration),
    /// HTTP 401 or 403.
    #[error("the model server refused the API key ({status}): {detail}; check OPENAI_API_KEY")]
    Unauthorized {
        /// 401 or 403.
        status: u16,
        /// The server's message.
        detail: String,
    },
    /// HTTP 429.
    #[error("the model server is rate limiting us (429): {detail}")]
    RateLimited {
        /// How long the server asked us to wait, if it said.
        retry_after: Option<Duration>,
        /// The server's message.
        detail: String,
    },
    /// HTTP 5xx.
    #[error("the model server failed ({status}): {detail}")]
    Server {
        /// The status code.
        status: u16,
        /// The server's message.
        detail: String,
    },
    /// Another HTTP 4xx: the request itself was refused (unknown model...).
    #[error("the model server rejected the request ({status}): {detail}")]
    Rejected {
        /// The status code.
        status: u16,
        /// The server's message.
        detail: String,
    },
    /// The reply could not be understood.
    #[error("the model server sent a reply that could not be read: {0}")]
    Malformed(String),
    /// The model itself failed (the local model's own errors).
    #[error("{0}")]
    Other(String),
}

impl ModelError {
    /// Returns `true` for failures worth retrying later: rate limits,
    /// server errors, timeouts and refused connections.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ModelError::RateLimited { .. }
                | ModelError::Server { .. }
                | ModelError::Timeout(_)
                | ModelError::Connect { .. }
        )
    }
}

/// A chat and embedding model.
pub trait Model: Send + Sync {
    /// The name the user chose it by ("local", "openai:gpt-4o-mini").
    fn name(&self) -> &str;

    /// Answers the last user message of `messages`, passing text to
    /// `on_text` as it arrives, and returns the whole reply.
    ///
    /// # Errors
    ///
    /// [`ModelError::Cancelled`] if `cancel` is requested before the reply
    /// is complete; otherwise any failure of the model or its server.
    fn chat(
        &self,
        messages: &[Message],
        on_text: &mut dyn FnMut(&str),
        cancel: &Cancel,
    ) -> Result<Completion, ModelError>;

    /// Embeds each text.
    ///
    /// # Errors
    ///
    /// [`ModelError::Cancelled`] if `cancel` is requested before the
    /// vectors are in (waits between retries end at once); otherwise any
    /// failure of the model or its server.
    fn embed(&self, texts: &[String], cancel: &Cancel) -> Result<Embeddings, ModelError>;

    /// The name of the embedding model, as configured. Stored with every
    /// embedding: vectors are only compared with vectors of the same model,
    /// and a change of model has the summaries embedded again.
    fn embedding_model(&self) -> &str;

    /// Summarises `text` as `instruction` asks, without streaming.
    ///
    /// The default asks [`chat`](Self::chat) with `instruction` as the
    /// system message.
    ///
    /// # Errors
    ///
    /// As for [`chat`](Self::chat).
    fn summarize(
        &self,
        instruction: &str,
        text: &str,
        cancel: &Cancel,
    ) -> Result<Completion, ModelError> {
        let messages = [
            Message::new(Role::System, instruction),
            Message::new(Role::User, text),
        ];
        let mut completion = self.chat(&messages, &mut |_| {}, cancel)?;
        completion.text = completion.text.trim().to_owned();
        Ok(completion)
    }
}

impl fmt::Debug for dyn Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Model({})", self.name())
    }
}

/// Builds the model named by `spec`: `local`, or `openai:NAME`.
///
/// # Errors
///
/// An unknown spec, or an `openai:` model without the settings it needs.
pub fn from_spec(spec: &str) -> Result<Arc<dyn Model>> {
    if spec == "local" {
        return Ok(Arc::new(local::LocalModel::from_env()));
    }
    if let Some(name) = spec.strip_prefix("openai:") {
        if name.is_empty() {
            bail!("--model openai: needs a model name, for example openai:gpt-4o-mini");
        }
        return Ok(Arc::new(openai::OpenAiModel::from_env(name)?));
    }
    bail!(
        "unknown model {spec:?}: use `local` (built in, offline) or `openai:NAME` \
         (any OpenAI-compatible server; set OPENAI_BASE_URL for Ollama, llama.cpp or vLLM)"
    )
}
