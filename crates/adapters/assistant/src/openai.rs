//! A reply generator speaking OpenAI's streaming chat-completions API, which
//! OpenAI, vLLM, llama.cpp's server, Ollama and many others serve.
//!
//! It sends `POST {url}/chat/completions` with `stream: true` and reads the
//! `chat.completion.chunk` events leniently, because servers differ: some
//! never send a `finish_reason`, some send `choices: null`, a usage chunk has
//! no choices, and some end the stream without `data: [DONE]`. What it does
//! not tolerate is unbounded waiting or growth: each reply has a deadline for
//! its first text, an idle timeout between texts, and a maximum size, and
//! no redirect is ever followed. The API key goes only into the
//! `Authorization` header; it is never printed, and is cut out of any
//! upstream message an error repeats.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures::stream::{self, Stream, StreamExt};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use reqwest::{Client, Response, redirect};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::time::{Instant, timeout_at};
use waiter_ports::conversations::{
    Finish, FinishReason, GenerateError, ReplyChunk, ReplyGenerator, ReplyRequest, ReplyStream,
    TokenUsage,
};

pub use reqwest::Url;

/// The most of an upstream error body read, and the most of its message kept.
const ERROR_BODY_BYTES: usize = 16 * 1024;
const ERROR_MESSAGE_CHARS: usize = 300;
/// The longest `finish_reason` kept verbatim.
const FINISH_REASON_BYTES: usize = 64;
/// What one SSE event may add to its text in JSON framing; see [`EventSizeGuard`].
const EVENT_OVERHEAD_BYTES: usize = 64 * 1024;

/// A secret API key. Its `Debug` shows nothing of it, and nothing here
/// prints it.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps `key`, as given in `WAITER_ASSISTANT_API_KEY`.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Where the model is and how long to wait for it.
#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// The API's base URL, up to and including its version (`https://api.openai.com/v1`);
    /// `/chat/completions` is appended to its path.
    pub url: Url,
    /// Sent as a bearer token when present; local servers often need none.
    pub api_key: Option<ApiKey>,
    /// The model to ask for, also recorded as the replies' `model_slug`.
    pub model: String,
    /// How long establishing a connection (TCP and TLS) may take.
    pub connect_timeout: Duration,
    /// How long after the request the first text may come, connecting and
    /// the model's thinking included.
    pub first_token_timeout: Duration,
    /// How long the stream may then go without more text. Events without
    /// text (keep-alives, empty deltas) do not count, so an upstream cannot
    /// hold a reply open by chattering.
    pub idle_timeout: Duration,
    /// The largest reply, in bytes of text, counting the text it continues.
    pub max_reply_bytes: usize,
}

impl OpenAiConfig {
    /// Connecting takes milliseconds when the server is up.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    /// Long enough for a loaded server or a model that thinks before it writes.
    pub const DEFAULT_FIRST_TOKEN_TIMEOUT: Duration = Duration::from_secs(60);
    /// Models stream several chunks a second; half a minute of silence is a stall.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
    /// Far above a chat answer (a long one is a few KiB), far below trouble.
    pub const DEFAULT_MAX_REPLY_BYTES: usize = 128 * 1024;

    /// A configuration for `model` at `url` with the default limits.
    pub fn new(url: Url, model: impl Into<String>, api_key: Option<ApiKey>) -> Self {
        Self {
            url,
            api_key,
            model: model.into(),
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            first_token_timeout: Self::DEFAULT_FIRST_TOKEN_TIMEOUT,
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
            max_reply_bytes: Self::DEFAULT_MAX_REPLY_BYTES,
        }
    }
}

/// Why an [`OpenAiConfig`] cannot be used. No variant contains the API key.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// Only `http` and `https` URLs can be reached.
    #[error("the assistant URL must be http or https, not {0}")]
    UnsupportedScheme(String),
    /// A user name or password in the URL would end up wherever the URL is
    /// shown; the key belongs in [`OpenAiConfig::api_key`].
    #[error("the assistant URL must not carry credentials; give the API key on its own")]
    CredentialsInUrl,
    /// The model's name is empty.
    #[error("the assistant model must be named")]
    MissingModel,
    /// The key has characters an HTTP header cannot carry.
    #[error("the assistant API key contains characters not allowed in an HTTP header")]
    InvalidApiKey,
    /// The HTTP client could not be built (TLS set-up).
    #[error("cannot build the HTTP client for the assistant")]
    Client(#[source] reqwest::Error),
}

/// A [`ReplyGenerator`] for any OpenAI-compatible chat-completions server.
///
/// Continuing a reply sends the text so far as a final, partial assistant
/// message and streams what the model adds. Servers that prefill from a
/// trailing assistant message (llama.cpp, Ollama, vLLM with
/// `continue_final_message`) continue it seamlessly; OpenAI's own API answers
/// it as a new turn, which is then appended all the same.
#[derive(Clone)]
pub struct OpenAiCompatibleGenerator {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    endpoint: Url,
    /// The `Authorization` header, marked sensitive so no HTTP log shows it.
    authorization: Option<HeaderValue>,
    /// Kept to cut the key out of upstream messages.
    api_key: Option<ApiKey>,
    model: String,
    first_token_timeout: Duration,
    idle_timeout: Duration,
    max_reply_bytes: usize,
}

impl std::fmt::Debug for OpenAiCompatibleGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = &self.inner;
        f.debug_struct("OpenAiCompatibleGenerator")
            .field("endpoint", &inner.endpoint.as_str())
            .field("model", &inner.model)
            .field("api_key", &inner.api_key)
            .field("first_token_timeout", &inner.first_token_timeout)
            .field("idle_timeout", &inner.idle_timeout)
            .field("max_reply_bytes", &inner.max_reply_bytes)
            .finish_non_exhaustive()
    }
}

impl OpenAiCompatibleGenerator {
    /// A generator for `config`, checked now so that a bad configuration
    /// stops the server at start-up rather than failing every reply.
    ///
    /// reqwest is built without a default TLS crypto provider; when the
    /// process has none installed yet, this installs ring's.
    pub fn new(config: OpenAiConfig) -> Result<Self, ConfigError> {
        let OpenAiConfig {
            url,
            api_key,
            model,
            connect_timeout,
            first_token_timeout,
            idle_timeout,
            max_reply_bytes,
        } = config;
        let unsupported = || ConfigError::UnsupportedScheme(url.scheme().to_owned());
        if !matches!(url.scheme(), "http" | "https") {
            return Err(unsupported());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ConfigError::CredentialsInUrl);
        }
        if model.trim().is_empty() {
            return Err(ConfigError::MissingModel);
        }
        let mut endpoint = url.clone();
        endpoint
            .path_segments_mut()
            // Only URLs without a path (`mailto:`) fail, and no http URL is one.
            .map_err(|()| unsupported())?
            .pop_if_empty()
            .extend(["chat", "completions"]);
        let authorization = api_key
            .as_ref()
            .map(|key| {
                let mut value = HeaderValue::try_from(format!("Bearer {}", key.0))
                    .map_err(|_| ConfigError::InvalidApiKey)?;
                value.set_sensitive(true);
                Ok(value)
            })
            .transpose()?;
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            // Losing a race to another installer is fine: either way one is installed.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = Client::builder()
            .redirect(redirect::Policy::none())
            .connect_timeout(connect_timeout)
            .user_agent(concat!("waiter/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ConfigError::Client)?;
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                endpoint,
                authorization,
                api_key,
                model,
                first_token_timeout,
                idle_timeout,
                max_reply_bytes,
            }),
        })
    }
}

impl ReplyGenerator for OpenAiCompatibleGenerator {
    fn model_slug(&self) -> &str {
        &self.inner.model
    }

    fn generate(&self, request: ReplyRequest) -> ReplyStream {
        let exchange = Exchange {
            inner: self.inner.clone(),
            reading: Reading {
                started: false,
                size: request.continue_from.len(),
                finish: Finish::default(),
            },
            body: ChatRequest::new(&self.inner.model, request),
            open: None,
        };
        Box::pin(stream::unfold(Some(exchange), |exchange| async move {
            let mut exchange = exchange?;
            let item = exchange.next().await;
            let more = matches!(item, Ok(ReplyChunk::Text(_)));
            Some((item, more.then_some(exchange)))
        }))
    }
}

/// The request body: the conversation as chat messages.
#[derive(Serialize)]
struct ChatRequest {
    model: String,
    messages: Vec<ChatMessage>,
    stream: bool,
    /// Asks for the usage chunk; servers that do not know it ignore it.
    stream_options: StreamOptions,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
}

#[derive(Serialize)]
struct ChatMessage {
    role: &'static str,
    content: String,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

impl ChatRequest {
    fn new(model: &str, request: ReplyRequest) -> Self {
        let mut messages: Vec<ChatMessage> = request
            .history
            .into_iter()
            .map(|turn| ChatMessage {
                role: turn.speaker.as_str(),
                content: turn.text,
            })
            .collect();
        if !request.continue_from.is_empty() {
            messages.push(ChatMessage {
                role: "assistant",
                content: request.continue_from,
            });
        }
        Self {
            model: model.to_owned(),
            messages,
            stream: true,
            stream_options: StreamOptions {
                include_usage: true,
            },
            temperature: request.temperature,
        }
    }
}

/// One `chat.completion.chunk`, with every field optional: servers differ.
#[derive(Deserialize)]
struct Chunk {
    choices: Option<Vec<Choice>>,
    usage: Option<Usage>,
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Choice {
    delta: Option<Delta>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Delta {
    /// A string; anything else (a refusal, tool calls) is no text.
    content: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Usage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    total_tokens: Option<u64>,
}

type Events = Pin<Box<dyn Stream<Item = Result<Event, EventStreamError<BodyError>>> + Send>>;

/// What can go wrong under the SSE parser.
#[derive(Debug)]
enum BodyError {
    Transport(reqwest::Error),
    EventTooLarge,
}

/// One reply's exchange with the upstream, advanced one chunk at a time.
struct Exchange {
    inner: Arc<Inner>,
    body: ChatRequest,
    /// The response, once the request has been answered.
    open: Option<Open>,
    reading: Reading,
}

/// What has been read of a reply so far.
struct Reading {
    /// Whether any text has come.
    started: bool,
    /// Bytes of reply text so far, the continued text included.
    size: usize,
    /// The finish reason and usage seen so far.
    finish: Finish,
}

/// A successful response being read.
struct Open {
    events: Events,
    /// When the next text must have come by: the first-token timeout after
    /// the request, then the idle timeout after each text.
    deadline: Instant,
}

impl Exchange {
    /// The next chunk: text, the finish, or the error that ends the reply.
    async fn next(&mut self) -> Result<ReplyChunk, GenerateError> {
        let Self {
            inner,
            body,
            open,
            reading,
        } = self;
        let open = match open {
            Some(open) => open,
            None => {
                let deadline = Instant::now() + inner.first_token_timeout;
                let events = inner.open(body, deadline).await?;
                open.insert(Open { events, deadline })
            }
        };
        loop {
            let next = timeout_at(open.deadline, open.events.next()).await;
            let event = match next {
                Ok(Some(Ok(event))) => event,
                Ok(Some(Err(error))) => return Err(inner.body_error(error)),
                Ok(None) => return Ok(reading.finished()),
                // Only the `[DONE]` or the close was missing: the reply is whole.
                Err(_) if reading.finish.reason.is_some() => return Ok(reading.finished()),
                Err(_) if reading.started => {
                    return Err(GenerateError::Stalled(inner.idle_timeout));
                }
                Err(_) => return Err(GenerateError::FirstTokenTimeout(inner.first_token_timeout)),
            };
            if let Some(chunk) = reading.read(inner, &event.data)? {
                open.deadline = Instant::now() + inner.idle_timeout;
                return Ok(chunk);
            }
        }
    }
}

impl Reading {
    /// What one event's data says: text, the end, or nothing to pass on.
    fn read(&mut self, inner: &Inner, data: &str) -> Result<Option<ReplyChunk>, GenerateError> {
        if data.trim() == "[DONE]" {
            return Ok(Some(self.finished()));
        }
        let chunk: Chunk = serde_json::from_str(data)
            .map_err(|error| GenerateError::Malformed(format!("a chunk is not JSON: {error}")))?;
        if let Some(error) = chunk.error {
            return Err(GenerateError::Failed(inner.upstream_message(&error)));
        }
        if let Some(usage) = chunk.usage {
            self.finish.usage = Some(usage.into());
        }
        let Some(choice) = chunk.choices.and_then(|choices| choices.into_iter().next()) else {
            return Ok(None);
        };
        if let Some(reason) = choice.finish_reason.filter(|reason| !reason.is_empty()) {
            self.finish.reason = Some(finish_reason(reason));
        }
        let text = match choice.delta.and_then(|delta| delta.content) {
            Some(serde_json::Value::String(text)) if !text.is_empty() => text,
            _ => return Ok(None),
        };
        self.size = self.size.saturating_add(text.len());
        if self.size > inner.max_reply_bytes {
            return Err(GenerateError::TooLarge {
                limit: inner.max_reply_bytes,
            });
        }
        self.started = true;
        Ok(Some(ReplyChunk::Text(text)))
    }

    fn finished(&mut self) -> ReplyChunk {
        ReplyChunk::Finished(std::mem::take(&mut self.finish))
    }
}

impl Inner {
    /// Sends the request and returns the events of a successful response.
    async fn open(&self, body: &ChatRequest, deadline: Instant) -> Result<Events, GenerateError> {
        let mut request = self
            .client
            .post(self.endpoint.clone())
            .header(ACCEPT, "text/event-stream")
            .json(body);
        if let Some(authorization) = &self.authorization {
            request = request.header(AUTHORIZATION, authorization.clone());
        }
        let response = match timeout_at(deadline, request.send()).await {
            Ok(response) => response.map_err(unavailable)?,
            Err(_) => return Err(GenerateError::FirstTokenTimeout(self.first_token_timeout)),
        };
        let status = response.status();
        if !status.is_success() {
            let body = timeout_at(deadline, read_prefix(response, ERROR_BODY_BYTES))
                .await
                .unwrap_or_default();
            let message = match serde_json::from_slice::<serde_json::Value>(&body) {
                Ok(json) => self.upstream_message(&json),
                Err(_) => self.redact(&String::from_utf8_lossy(&body)),
            };
            return Err(GenerateError::Rejected {
                status: status.as_u16(),
                message,
            });
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).to_ascii_lowercase());
        if let Some(content_type) = content_type
            && !content_type.starts_with("text/event-stream")
        {
            return Err(GenerateError::Malformed(format!(
                "expected an event stream, got {:?}",
                truncate(&content_type, 100)
            )));
        }
        let mut guard = EventSizeGuard::new(
            self.max_reply_bytes
                .saturating_mul(6)
                .saturating_add(EVENT_OVERHEAD_BYTES),
        );
        let bytes = response.bytes_stream().map(move |chunk| {
            let chunk = chunk.map_err(BodyError::Transport)?;
            guard.admit(&chunk)?;
            Ok(chunk)
        });
        Ok(Box::pin(bytes.eventsource()))
    }

    fn body_error(&self, error: EventStreamError<BodyError>) -> GenerateError {
        match error {
            EventStreamError::Transport(BodyError::Transport(error)) => unavailable(error),
            EventStreamError::Transport(BodyError::EventTooLarge) => GenerateError::TooLarge {
                limit: self.max_reply_bytes,
            },
            EventStreamError::Utf8(_) => {
                GenerateError::Malformed("the event stream is not UTF-8".to_owned())
            }
            EventStreamError::Parser(_) => {
                GenerateError::Malformed("the event stream cannot be parsed".to_owned())
            }
        }
    }

    /// The explanation in an upstream error (`{"error": {"message": …}}`,
    /// `{"error": "…"}`, `{"message": …}`), or the whole JSON when it has
    /// none, redacted and cut short.
    fn upstream_message(&self, json: &serde_json::Value) -> String {
        let error = json.get("error").unwrap_or(json);
        let message = error
            .get("message")
            .unwrap_or(error)
            .as_str()
            .map_or_else(|| json.to_string(), str::to_owned);
        self.redact(&message)
    }

    /// `text` with the API key cut out, on one line, and at most a few hundred characters.
    fn redact(&self, text: &str) -> String {
        let text = match &self.api_key {
            Some(key) if !key.0.is_empty() => text.replace(&key.0, "[redacted]"),
            _ => text.to_owned(),
        };
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let cut = truncate(&text, ERROR_MESSAGE_CHARS);
        if text.is_empty() {
            "no explanation given".to_owned()
        } else if cut.len() < text.len() {
            format!("{cut}…")
        } else {
            text
        }
    }
}

/// At most `limit` bytes of `response`'s body; whatever came before a failure.
async fn read_prefix(mut response: Response, limit: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk[..chunk.len().min(limit - body.len())])
            }
            Ok(None) | Err(_) => break,
        }
    }
    body
}

fn unavailable(error: reqwest::Error) -> GenerateError {
    GenerateError::Unavailable(error.without_url().into())
}

fn finish_reason(reason: String) -> FinishReason {
    match reason.as_str() {
        "stop" => FinishReason::Stop,
        "length" => FinishReason::Length,
        "content_filter" => FinishReason::ContentFilter,
        other => FinishReason::Other(truncate_bytes(other, FINISH_REASON_BYTES).to_owned()),
    }
}

impl From<Usage> for TokenUsage {
    fn from(usage: Usage) -> Self {
        let prompt_tokens = usage.prompt_tokens.unwrap_or_default();
        let completion_tokens = usage.completion_tokens.unwrap_or_default();
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: usage
                .total_tokens
                .unwrap_or(prompt_tokens.saturating_add(completion_tokens)),
        }
    }
}

/// `text` cut to at most `max_chars` characters.
fn truncate(text: &str, max_chars: usize) -> &str {
    text.char_indices()
        .nth(max_chars)
        .map_or(text, |(end, _)| &text[..end])
}

/// `text` cut to at most `max_bytes` bytes, at a character boundary.
fn truncate_bytes(text: &str, max_bytes: usize) -> &str {
    let mut end = text.len().min(max_bytes);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Bounds what the SSE parser buffers: the bytes of one event, from one
/// blank line to the next. The parser keeps an unfinished event whole, so an
/// upstream sending one endless line, or endless `data:` lines with no blank
/// line between, would otherwise grow memory without bound. An honest event
/// is one chunk of text in JSON: `max_reply_bytes` of text, escaped at worst
/// six bytes a byte (`\u0000`), plus the framing.
struct EventSizeGuard {
    limit: usize,
    /// Bytes since the last blank line, line ends excepted.
    event: usize,
    /// Whether the current line is empty so far.
    line_empty: bool,
    /// Whether the last byte was a CR, whose LF then ends no second line.
    after_cr: bool,
}

impl EventSizeGuard {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            event: 0,
            line_empty: true,
            after_cr: false,
        }
    }

    fn admit(&mut self, bytes: &[u8]) -> Result<(), BodyError> {
        for &byte in bytes {
            match byte {
                b'\n' if self.after_cr => {}
                b'\n' | b'\r' => {
                    if self.line_empty {
                        self.event = 0;
                    }
                    self.line_empty = true;
                }
                _ => {
                    self.line_empty = false;
                    self.event += 1;
                    if self.event > self.limit {
                        return Err(BodyError::EventTooLarge);
                    }
                }
            }
            self.after_cr = byte == b'\r';
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admitted(limit: usize, parts: &[&str]) -> bool {
        let mut guard = EventSizeGuard::new(limit);
        parts
            .iter()
            .all(|part| guard.admit(part.as_bytes()).is_ok())
    }

    #[test]
    fn the_guard_counts_each_event_from_blank_line_to_blank_line() {
        assert!(admitted(8, &["data: a\n\n", "data: b\n\n", "data: c\n\n"]));
        assert!(admitted(
            8,
            &["data: a\r\n\r\n", "data: b\r\r", "data: c\n\n"]
        ));
        assert!(!admitted(8, &["data: abc\n\n"]));
        assert!(
            !admitted(8, &["data", ": a\n", "data: b\n\n"]),
            "lines of one event add up"
        );
        assert!(
            !admitted(8, &["data: a\r\n", "data: b\r\n\r\n"]),
            "a CRLF is one line end"
        );
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate("héllo", 2), "hé");
        assert_eq!(truncate("hé", 5), "hé");
        assert_eq!(truncate_bytes("héllo", 2), "h");
        assert_eq!(truncate_bytes("héllo", 3), "hé");
    }

    #[test]
    fn finish_reasons_are_named_or_kept_short() {
        assert_eq!(finish_reason("stop".into()), FinishReason::Stop);
        assert_eq!(finish_reason("length".into()), FinishReason::Length);
        assert_eq!(
            finish_reason("content_filter".into()),
            FinishReason::ContentFilter
        );
        assert_eq!(
            finish_reason("x".repeat(100)),
            FinishReason::Other("x".repeat(64))
        );
    }

    #[test]
    fn usage_fills_in_a_missing_total() {
        let usage = Usage {
            prompt_tokens: Some(3),
            completion_tokens: Some(4),
            total_tokens: None,
        };
        assert_eq!(TokenUsage::from(usage).total_tokens, 7);
    }
}
