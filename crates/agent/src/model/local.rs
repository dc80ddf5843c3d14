//! The built-in offline model.
//!
//! It is not a language model and does not pretend to be one. It answers
//! from what the conversation holds: it recognises greetings and questions
//! about the conversation, finds the earlier message that shares the most
//! words with the input, and says plainly that it is offline. Everything it
//! does is deterministic, so a new user sees the whole program work with
//! no account and no network, and tests can assert on its replies.
//!
//! Its embeddings are hashed word and word-pair features, normalised to
//! unit length: texts that share words land close together, which is
//! enough for `/search` to find related exchanges.

use std::collections::HashSet;
use std::thread;
use std::time::Duration;

use super::{Cancel, Completion, Embeddings, Message, Model, ModelError, Role};

/// How every reply of this model begins, so its summaries can skip them.
const OWN_REPLY_MARK: &str = "(offline model)";

/// Dimension of the local embeddings.
pub const EMBEDDING_DIM: usize = 256;

/// The name stored with everything the local model writes.
pub const LOCAL_MODEL_NAME: &str = "local";

/// The offline model.
#[derive(Clone, Debug, Default)]
pub struct LocalModel {
    /// Simulated time to produce a reply, spread over its words; zero by
    /// default. Lets a user try cancelling an exchange, or a backup while
    /// one runs, without a network model.
    latency: Duration,
}

impl LocalModel {
    /// A local model that answers at once.
    pub fn new() -> Self {
        Self::default()
    }

    /// A local model that takes `latency` to reply.
    pub fn with_latency(latency: Duration) -> Self {
        Self { latency }
    }

    /// Reads `NU_AGENT_LOCAL_LATENCY_MS` (a simulated reply time).
    pub fn from_env() -> Self {
        let latency = std::env::var("NU_AGENT_LOCAL_LATENCY_MS")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_millis)
            .unwrap_or_default();
        Self { latency }
    }

    /// Summarises `text` in at most `max_sentences` sentences and about
    /// `max_chars` characters, keeping the first sentences.
    pub fn extract(text: &str, max_sentences: usize, max_chars: usize) -> String {
        let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let mut out = String::new();
        let mut sentences = 0;
        for piece in flat.split_inclusive(['.', '!', '?']) {
            let piece = piece.trim();
            if piece.is_empty() {
                continue;
            }
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(piece);
            sentences += 1;
            if sentences >= max_sentences || out.chars().count() >= max_chars {
                break;
            }
        }
        if out.chars().count() > max_chars {
            let cut: String = out.chars().take(max_chars.saturating_sub(1)).collect();
            let cut = cut.rsplit_once(' ').map_or(cut.as_str(), |(head, _)| head);
            return format!("{}…", cut.trim_end_matches([',', ';', ':']));
        }
        out
    }

    fn reply_to(&self, messages: &[Message]) -> String {
        let Some(last) = messages.iter().rev().find(|m| m.role == Role::User) else {
            return "There is nothing to answer yet.".to_owned();
        };
        let input = last.content.trim();
        let earlier: Vec<&Message> = messages
            .iter()
            .filter(|m| m.role == Role::User && !std::ptr::eq(*m, last))
            .collect();
        let words = word_set(input);

        let greeting = ["hello", "hi", "hey", "morning", "evening"];
        if words.len() <= 3 && words.iter().any(|w| greeting.contains(&w.as_str())) {
            return "Hello! I am nu-agent's built-in offline model: I answer from this \
                    conversation's history, without a network. Start nu-agent with \
                    `--model openai:NAME` for a real language model."
                .to_owned();
        }

        let mut reply = String::new();
        if earlier.is_empty() {
            reply.push_str(&format!(
                "{OWN_REPLY_MARK} This is the first message of the conversation. I noted \
                 {} {}: \"{}\".",
                input.split_whitespace().count(),
                if input.split_whitespace().count() == 1 {
                    "word"
                } else {
                    "words"
                },
                Self::extract(input, 1, 80)
            ));
        } else {
            let best = earlier
                .iter()
                .map(|m| (overlap(&words, &word_set(&m.content)), *m))
                .filter(|(score, _)| *score > 0)
                .max_by_key(|(score, _)| *score);
            match best {
                Some((_, m)) => reply.push_str(&format!(
                    "{OWN_REPLY_MARK} Earlier in this conversation you said: \"{}\".",
                    Self::extract(&m.content, 1, 120)
                )),
                None => reply.push_str(&format!(
                    "{OWN_REPLY_MARK} Nothing earlier in this conversation matches \"{}\".",
                    Self::extract(input, 1, 80)
                )),
            }
            reply.push_str(&format!(
                " The conversation has {} earlier message{}.",
                earlier.len(),
                if earlier.len() == 1 { "" } else { "s" }
            ));
        }
        if input.ends_with('?') {
            reply.push_str(" I can not answer questions beyond what the history holds.");
        }
        reply
    }
}

fn word_set(text: &str) -> HashSet<String> {
    words(text).collect()
}

/// Lower-case words, with a plural `s` dropped so that "backup" and
/// "backups" are the same word.
fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| {
            let w = w.to_lowercase();
            match w.strip_suffix('s') {
                Some(stem) if stem.chars().count() >= 3 && !stem.ends_with('s') => stem.to_owned(),
                _ => w,
            }
        })
}

/// Shared words, ignoring the very short ones ("a", "is", "to").
fn overlap(a: &HashSet<String>, b: &HashSet<String>) -> usize {
    a.intersection(b).filter(|w| w.chars().count() > 3).count()
}

/// FNV-1a: a small, stable hash, so embeddings are the same on every run
/// and every machine.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The local embedding of `text`: hashed words and word pairs, with a sign
/// bit from the hash to spread collisions, normalised to unit length.
pub fn embed_text(text: &str) -> Vec<f32> {
    let mut vector = vec![0f32; EMBEDDING_DIM];
    let tokens: Vec<String> = words(text).collect();
    let mut add = |feature: &str, weight: f32| {
        let h = fnv1a(feature.as_bytes());
        let index = (h % EMBEDDING_DIM as u64) as usize;
        let sign = if h >> 63 == 0 { 1.0 } else { -1.0 };
        vector[index] += sign * weight;
    };
    for token in &tokens {
        add(token, 1.0);
    }
    for pair in tokens.windows(2) {
        add(&format!("{} {}", pair[0], pair[1]), 0.5);
    }
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        for x in &mut vector {
            *x /= norm;
        }
    }
    vector
}

impl Model for LocalModel {
    fn name(&self) -> &str {
        LOCAL_MODEL_NAME
    }

    fn chat(
        &self,
        messages: &[Message],
        on_text: &mut dyn FnMut(&str),
        cancel: &Cancel,
    ) -> Result<Completion, ModelError> {
        let reply = self.reply_to(messages);
        let pieces: Vec<&str> = reply.split_inclusive(' ').collect();
        let pause = self.latency / pieces.len().max(1) as u32;
        for piece in &pieces {
            if cancel.is_cancelled() {
                return Err(ModelError::Cancelled);
            }
            if !pause.is_zero() {
                thread::sleep(pause);
            }
            on_text(piece);
        }
        if cancel.is_cancelled() {
            return Err(ModelError::Cancelled);
        }
        Ok(Completion {
            text: reply,
            model: LOCAL_MODEL_NAME.to_owned(),
            prompt_tokens: None,
            completion_tokens: None,
            cost: 0.0,
        })
    }

    /// Extractive: the first sentence of each line of `text` (each line is
    /// one speaker or one summary), within a few hundred characters. Lines
    /// that hold this model's own replies are left out: they only restate
    /// the history, and would make every summary look alike.
    fn summarize(
        &self,
        _instruction: &str,
        text: &str,
        cancel: &Cancel,
    ) -> Result<Completion, ModelError> {
        if cancel.is_cancelled() {
            return Err(ModelError::Cancelled);
        }
        let parts: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.contains(OWN_REPLY_MARK))
            .map(|line| {
                let line = line.strip_prefix("User:").unwrap_or(line).trim();
                LocalModel::extract(line, 1, 160)
            })
            .collect();
        Ok(Completion {
            text: LocalModel::extract(&parts.join(" "), 4, 320),
            model: LOCAL_MODEL_NAME.to_owned(),
            ..Completion::default()
        })
    }

    fn embedding_model(&self) -> &str {
        LOCAL_MODEL_NAME
    }

    fn embed(&self, texts: &[String], cancel: &Cancel) -> Result<Embeddings, ModelError> {
        if cancel.is_cancelled() {
            return Err(ModelError::Cancelled);
        }
        Ok(Embeddings {
            model: LOCAL_MODEL_NAME.to_owned(),
            vectors: texts.iter().map(|t| embed_text(t)).collect(),
            cost: 0.0,
        })
    }
}

/// Cosine similarity of two vectors of the same length.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(messages: &[Message]) -> String {
        let mut streamed = String::new();
        let done = LocalModel::new()
            .chat(messages, &mut |t| streamed.push_str(t), &Cancel::new())
            .unwrap();
        assert_eq!(streamed, done.text, "the stream adds up to the reply");
        done.text
    }

    #[test]
    fn greets_and_says_what_it_is() {
        let reply = chat(&[Message::new(Role::User, "hello")]);
        assert!(reply.contains("offline"), "{reply}");
    }

    #[test]
    fn recalls_the_closest_earlier_message() {
        let reply = chat(&[
            Message::new(Role::User, "My cat is called Ferdinand."),
            Message::new(Role::Assistant, "noted"),
            Message::new(Role::User, "The weather is grey today."),
            Message::new(Role::Assistant, "noted"),
            Message::new(Role::User, "What is my cat called?"),
        ]);
        assert!(reply.contains("Ferdinand"), "{reply}");
        assert!(reply.contains("2 earlier messages"), "{reply}");
    }

    #[test]
    fn is_deterministic() {
        let messages = [Message::new(Role::User, "Plan a trip to Lisbon in May.")];
        assert_eq!(chat(&messages), chat(&messages));
    }

    #[test]
    fn cancels_between_words() {
        let cancel = Cancel::new();
        cancel.cancel();
        let result = LocalModel::new().chat(&[Message::new(Role::User, "x")], &mut |_| {}, &cancel);
        assert!(matches!(result, Err(ModelError::Cancelled)));
    }

    #[test]
    fn summaries_keep_the_first_sentences_within_bounds() {
        let text = "First point here. Second point follows! Third one? Fourth.";
        assert_eq!(
            LocalModel::extract(text, 2, 200),
            "First point here. Second point follows!"
        );
        let long = "word ".repeat(100);
        let short = LocalModel::extract(&long, 2, 40);
        assert!(short.chars().count() <= 40, "{short}");
        assert!(short.ends_with('…'));
    }

    #[test]
    fn summaries_keep_what_the_user_said_and_skip_own_replies() {
        let text = "User: Backups need a pinned snapshot. More detail here.\n\
                    Assistant: (offline model) This is the first message.";
        let summary = LocalModel::new()
            .summarize("", text, &Cancel::new())
            .unwrap()
            .text;
        assert_eq!(summary, "Backups need a pinned snapshot.");
    }

    #[test]
    fn plurals_count_as_the_same_word() {
        let a = embed_text("database backups");
        let b = embed_text("database backup");
        assert!(cosine(&a, &b) > 0.99);
    }

    #[test]
    fn similar_texts_embed_close_together() {
        let a = embed_text("backup the sqlite database to a file");
        let b = embed_text("make a backup of the database file");
        let c = embed_text("a recipe for lemon cake with icing");
        assert!((a.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-4);
        assert!(cosine(&a, &b) > cosine(&a, &c) + 0.2);
        assert_eq!(embed_text("same text"), embed_text("same text"));
    }
}
