//! Conversations: the port through which assistant replies are generated.
//!
//! A [`ReplyGenerator`] turns a conversation's history into a stream of text
//! chunks. The conversations service owns each reply: it appends the chunks to
//! the stored message and to the reply's event log as they come, and when an
//! instance dies mid-reply another one asks the generator to continue from
//! the text stored so far ([`ReplyRequest::continue_from`]). Generators know
//! nothing of storage or of Waiter's own event stream; they only speak to a
//! model.

use std::pin::Pin;
use std::time::Duration;

use futures_core::Stream;
use thiserror::Error;

/// Who said a turn of a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Speaker {
    /// The account that owns the conversation.
    User,
    /// The assistant: replies generated earlier.
    Assistant,
    /// Instructions that frame the conversation rather than take part in it.
    System,
}

impl Speaker {
    /// The name chat-completion APIs and the seed's `author.role` use.
    pub fn as_str(self) -> &'static str {
        match self {
            Speaker::User => "user",
            Speaker::Assistant => "assistant",
            Speaker::System => "system",
        }
    }
}

/// One message of a conversation, as a generator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    /// Who said it.
    pub speaker: Speaker,
    /// What was said.
    pub text: String,
}

impl Turn {
    /// A turn of `speaker` saying `text`.
    pub fn new(speaker: Speaker, text: impl Into<String>) -> Self {
        Self {
            speaker,
            text: text.into(),
        }
    }
}

/// What a generator is asked to reply to.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplyRequest {
    /// The conversation so far, oldest first, normally ending with the user
    /// message to answer. It excludes the reply being generated: its text so
    /// far goes in [`continue_from`](Self::continue_from).
    pub history: Vec<Turn>,
    /// Sampling temperature from the request's metadata (0 to 2, validated by
    /// the caller); `None` leaves the model's default.
    pub temperature: Option<f32>,
    /// The reply's text already generated and stored, when an instance
    /// continues a reply another one started; empty for a new reply. The
    /// stream then carries only what follows it.
    pub continue_from: String,
}

impl ReplyRequest {
    /// A request for a new reply to `history`, at the model's default temperature.
    pub fn new(history: Vec<Turn>) -> Self {
        Self {
            history,
            temperature: None,
            continue_from: String::new(),
        }
    }
}

/// Why a reply ended, as the model reports it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FinishReason {
    /// The model ended its answer.
    Stop,
    /// The model hit its token limit: the answer is cut short.
    Length,
    /// The model's provider withheld the rest.
    ContentFilter,
    /// Another reason the model named, kept verbatim (at most 64 bytes).
    Other(String),
}

impl FinishReason {
    /// The name chat-completion APIs use, stored in the message's metadata.
    pub fn as_str(&self) -> &str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ContentFilter => "content_filter",
            FinishReason::Other(reason) => reason,
        }
    }
}

/// Tokens a reply cost, when the model reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenUsage {
    /// Tokens of the history sent (and, for a continuation, of the prefix).
    pub prompt_tokens: u64,
    /// Tokens generated.
    pub completion_tokens: u64,
    /// Their sum, or what the model reported as the total.
    pub total_tokens: u64,
}

/// How a reply ended, for the assistant message's metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Finish {
    /// Why it ended; `None` when the model never said (some servers don't).
    pub reason: Option<FinishReason>,
    /// What it cost; `None` when the model never said.
    pub usage: Option<TokenUsage>,
}

/// One item of a reply stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyChunk {
    /// Text to append to the reply; never empty.
    Text(String),
    /// The reply is complete; always the last item.
    Finished(Finish),
}

/// A reply as it is generated: [`ReplyChunk::Text`] items, then exactly one
/// [`ReplyChunk::Finished`] or one error, and nothing after it.
///
/// The stream does its work only while polled. Dropping it stops the
/// generation and closes any connection to the model, which is how a reply
/// is stopped.
pub type ReplyStream = Pin<Box<dyn Stream<Item = Result<ReplyChunk, GenerateError>> + Send>>;

/// Why a reply could not be generated, or stopped part way.
///
/// Text already streamed before the error stays valid: the caller keeps it
/// as a partial reply. No variant ever carries a credential: messages taken
/// from the model's responses have any API key replaced and are cut short.
#[derive(Debug, Error)]
pub enum GenerateError {
    /// The model could not be reached (refused, unresolvable, no connection
    /// within the connect timeout, TLS failure), or the connection broke
    /// mid-reply.
    #[error("the reply generator is unreachable")]
    Unavailable(#[source] anyhow::Error),
    /// No text arrived within this long of the request.
    #[error("the reply generator sent no text within {0:?}")]
    FirstTokenTimeout(Duration),
    /// The reply had started, then no more text arrived for this long.
    #[error("the reply generator stalled for {0:?}")]
    Stalled(Duration),
    /// The model answered with a status other than 2xx (a redirect included:
    /// none is followed).
    #[error("the reply generator refused the request with status {status}: {message}")]
    Rejected {
        /// The HTTP status.
        status: u16,
        /// The model's own explanation, cut to a few hundred characters.
        message: String,
    },
    /// The model reported an error in the middle of its stream.
    #[error("the reply generator failed: {0}")]
    Failed(String),
    /// The model's response could not be read as a reply stream.
    #[error("the reply generator sent an unreadable response: {0}")]
    Malformed(String),
    /// The reply, counting the text it continues, grew past this many bytes.
    #[error("the reply grew past {limit} bytes")]
    TooLarge {
        /// The configured maximum.
        limit: usize,
    },
}

/// Generates assistant replies: a model behind an API, or the built-in
/// stand-in.
///
/// # Contract
///
/// - [`generate`](Self::generate) never fails up front: every failure is an
///   `Err` item of the stream, after which the stream ends. Failures are
///   bounded in time (connect, first-text and between-text timeouts) and
///   size; none hangs or panics.
/// - A new reply to a conversation ending with a user message has at least
///   one [`ReplyChunk::Text`].
/// - With a non-empty [`ReplyRequest::continue_from`], the stream carries
///   only the text that follows it, possibly none: the full reply is
///   `continue_from` followed by the chunks. A deterministic generator (the
///   built-in) continuing from a prefix of a reply it gave yields exactly the
///   rest of that reply, so a reply continued after a failover equals an
///   uninterrupted one.
#[cfg_attr(feature = "mocks", mockall::automock)]
pub trait ReplyGenerator: Send + Sync {
    /// The model's name, recorded as the assistant message's `model_slug`;
    /// not empty, and the same for every reply of this generator.
    fn model_slug(&self) -> &str;

    /// Starts generating the reply to `request`; see the trait's contract.
    fn generate(&self, request: ReplyRequest) -> ReplyStream;
}
