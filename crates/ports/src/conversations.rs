//! Conversations: their store and use cases, the log a reply's events are
//! written to, and the port through which assistant replies are generated.
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

use async_trait::async_trait;
use futures_core::Stream;
use thiserror::Error;
use waiter_domain::{
    AccountId, Conversation, ConversationId, ConversationTitle, Message, MessageId,
    MessageMetadata, MessageStatus, MessageText, Timestamp, Version,
};

use crate::PortError;
use crate::idempotency::{IdempotencyRecord, KeyTaken, Keyed};
use crate::identity::Caller;

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

/// Tokens a reply cost, when the model reports them: the domain's [`Usage`].
pub use waiter_domain::Usage as TokenUsage;

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

// ---------------------------------------------------------------------------
// The store
// ---------------------------------------------------------------------------

/// A conversation to store.
#[derive(Debug, Clone)]
pub struct NewConversationRecord {
    /// Chosen by the caller, so the store never invents identity.
    pub id: ConversationId,
    /// The account it belongs to; the store deletes it with the account.
    pub owner: AccountId,
    /// Its title, given or derived.
    pub title: ConversationTitle,
    /// From the caller's clock; also the first `updated_at`.
    pub created_at: Timestamp,
}

impl NewConversationRecord {
    /// The conversation as the store will hold it once inserted, at
    /// [`Version::INITIAL`], so a response can be rendered before the commit.
    pub fn conversation(&self) -> Conversation {
        Conversation {
            id: self.id,
            owner: self.owner,
            title: self.title.clone(),
            version: Version::INITIAL,
            created_at: self.created_at,
            updated_at: self.created_at,
        }
    }
}

/// A user's message and the reply to it, stored together: a reply starts
/// the moment its message is stored, so neither exists without the other.
#[derive(Debug, Clone)]
pub struct NewExchange {
    /// The user's message: role `User`, status `FinishedSuccessfully`.
    pub message: Message,
    /// The reply: role `Assistant`, status `InProgress`, empty text, its
    /// `parent_id` the message's id, in the same conversation.
    pub reply: Message,
    /// An idempotency key the send came with, if any: a second exchange with
    /// the same key in the conversation is refused as
    /// [`AppendError::AlreadySent`], like a reused message id.
    pub retry_key: Option<String>,
    /// The most messages the conversation may hold, these two included.
    pub max_messages: u32,
    /// The most replies of the conversation's owner, across all their
    /// conversations, that may be `InProgress` at once, this one included.
    pub max_replies_in_flight: u32,
}

/// A conversation and its first exchange, stored together
/// ([`ConversationStore::start`]), so that a retried first send finds the
/// conversation the first one started rather than starting another.
#[derive(Debug, Clone)]
pub struct NewOpening {
    /// The conversation.
    pub conversation: NewConversationRecord,
    /// Its first exchange, in that conversation.
    pub exchange: NewExchange,
    /// What tells a retry of this send among the owner's conversations,
    /// chosen by the caller (from the send's retry key, or its message id
    /// and text); at most one conversation of an owner holds a key. `None`:
    /// this send cannot be retried.
    pub opening_key: Option<String>,
    /// A conversation started with the key before this instant no longer
    /// answers for it: the key passes to the new conversation.
    pub opening_key_since: Timestamp,
}

/// Why an exchange could not be appended. Nothing was stored.
#[derive(Debug, Error)]
pub enum AppendError {
    /// No conversation has the id (perhaps deleted meanwhile).
    #[error("no such conversation")]
    NotFound,
    /// Another reply of the conversation is still in progress; the store
    /// enforces one at a time whatever the race.
    #[error("a reply is already in progress")]
    ReplyInFlight,
    /// The conversation would hold more than `limit` messages.
    #[error("the conversation is full")]
    TooManyMessages {
        /// The limit it was appended under.
        limit: u32,
    },
    /// The owner already has `limit` replies in progress, across their
    /// conversations; the store enforces it whatever the race.
    #[error("too many replies in progress")]
    TooManyReplies {
        /// The limit it was appended under.
        limit: u32,
    },
    /// The message id, or the retry key, is already the conversation's: this
    /// is a retry of the user message with the id given here.
    #[error("this message was already sent")]
    AlreadySent(MessageId),
    /// A conversation of the owner already holds the opening key
    /// ([`ConversationStore::start`] only): this is a retry of the send
    /// that started it, whose user message has the id given here.
    #[error("this conversation was already started")]
    AlreadyStarted {
        /// The conversation the first send started.
        conversation: ConversationId,
        /// Its first user message.
        message: MessageId,
    },
    /// Infrastructure failed (see [`PortError`]).
    #[error(transparent)]
    Port(#[from] PortError),
}

/// Why a conversation could not be inserted.
#[derive(Debug, Error)]
pub enum InsertConversationError {
    /// The idempotency record's key was recorded first by another request.
    #[error(transparent)]
    KeyTaken(#[from] KeyTaken),
    /// Infrastructure failed (see [`PortError`]).
    #[error(transparent)]
    Port(#[from] PortError),
}

/// Why a conversation could not be renamed or deleted.
#[derive(Debug, Error)]
pub enum WriteConversationError {
    /// No conversation has the id.
    #[error("no such conversation")]
    NotFound,
    /// The conversation is no longer at the expected version; nothing changed.
    #[error("the conversation changed since the expected version")]
    VersionMismatch {
        /// The stored version.
        current: Version,
    },
    /// Infrastructure failed (see [`PortError`]).
    #[error(transparent)]
    Port(#[from] PortError),
}

/// What a list of conversations is ordered by, newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ConversationOrder {
    /// Most recently changed first: the seed's default.
    #[default]
    Updated,
    /// Most recently started first.
    Created,
}

impl ConversationOrder {
    /// The name clients use in `order=`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConversationOrder::Updated => "updated",
            ConversationOrder::Created => "created",
        }
    }
}

/// One page of an account's conversations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConversationQuery {
    /// Whose.
    pub owner: AccountId,
    /// In which order (ties broken by id, descending).
    pub order: ConversationOrder,
    /// How many to skip.
    pub offset: u32,
    /// The most to return; the caller bounds it (1 to 100 over HTTP).
    pub limit: u32,
}

/// A conversation in a list, with a glimpse of where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationSummary {
    /// The conversation.
    pub conversation: Conversation,
    /// The start of the text of its newest message (the last appended,
    /// whatever its role or status): at most [`LAST_MESSAGE_CHARS`] + 1
    /// characters, one more than is shown so the caller can tell it was
    /// cut. `None` when it has no messages.
    pub last_message: Option<String>,
}

/// How much of a conversation's newest message a list shows.
pub const LAST_MESSAGE_CHARS: usize = 100;

/// A page of conversations and how many there are in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationPage {
    /// The page, in the query's order.
    pub items: Vec<ConversationSummary>,
    /// How many conversations the owner has, on every page.
    pub total: u64,
}

/// Stores conversations and their messages.
///
/// Messages keep the order they were appended in: a user message is always
/// directly followed by its reply.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait ConversationStore: Send + Sync {
    /// Stores a new conversation ([`NewConversationRecord::conversation`])
    /// and `remember` with it in one transaction. `KeyTaken` as for books.
    async fn insert(
        &self,
        record: NewConversationRecord,
        remember: Option<IdempotencyRecord>,
    ) -> Result<Conversation, InsertConversationError>;

    /// The conversation with this id, if any.
    async fn find(&self, id: ConversationId) -> Result<Option<Conversation>, PortError>;

    /// One page of the owner's conversations and their total count.
    async fn list(&self, query: ConversationQuery) -> Result<ConversationPage, PortError>;

    /// Sets the title in one conditional statement, bumps the version and
    /// sets `updated_at`. `NotFound`; `VersionMismatch` when
    /// `expected_version` is set and differs.
    async fn rename(
        &self,
        id: ConversationId,
        title: ConversationTitle,
        expected_version: Option<Version>,
        updated_at: Timestamp,
    ) -> Result<Conversation, WriteConversationError>;

    /// Deletes the conversation and its messages. `NotFound`; `VersionMismatch`.
    async fn delete(
        &self,
        id: ConversationId,
        expected_version: Option<Version>,
    ) -> Result<(), WriteConversationError>;

    /// Every message of the conversation, in the order appended; empty for a
    /// conversation that does not exist.
    async fn messages(&self, id: ConversationId) -> Result<Vec<Message>, PortError>;

    /// Appends the exchange's two messages in one transaction, bumps the
    /// conversation's version and sets its `updated_at` to the message's
    /// `created_at`; returns the conversation as it now is. `NotFound`;
    /// `AlreadySent` when the message id or the retry key is taken in the
    /// conversation; `ReplyInFlight` when a reply of the conversation is
    /// `InProgress` (at most one can be, whatever the race);
    /// `TooManyMessages`; `TooManyReplies` when the owner would have more
    /// than [`NewExchange::max_replies_in_flight`] replies in progress
    /// (whatever the race, too). A retry is `AlreadySent` before any limit.
    async fn append_exchange(&self, exchange: NewExchange) -> Result<Conversation, AppendError>;

    /// Stores a new conversation and its first exchange in one
    /// transaction: the conversation as [`insert`](Self::insert) would,
    /// then the exchange as [`append_exchange`](Self::append_exchange)
    /// would (so it is returned at the version after one append), with its
    /// opening key. `AlreadyStarted`, storing nothing, when a conversation
    /// of the owner started since [`NewOpening::opening_key_since`] holds
    /// the key, whatever the race (an older one gives its key up);
    /// `TooManyReplies` and `TooManyMessages`, storing nothing, as for an
    /// append; `NotFound` when the owner's account does not exist.
    async fn start(&self, opening: NewOpening) -> Result<Conversation, AppendError>;

    /// Writes a reply's text, status and metadata, and its `updated_at`, if
    /// it is still `InProgress`; returns whether it was. A final status also
    /// bumps the conversation's version and `updated_at`. Writing a reply
    /// that is gone (its conversation deleted) or already final changes
    /// nothing and returns `false`.
    async fn save_reply(
        &self,
        conversation: ConversationId,
        reply: MessageId,
        update: ReplyUpdate,
    ) -> Result<bool, PortError>;

    /// Marks `Interrupted` every reply still `InProgress` that was last
    /// written before `written_before` (its writer died), keeping its text;
    /// returns those it changed, so the caller can make whatever it cached
    /// of their conversations stale.
    async fn interrupt_abandoned(
        &self,
        written_before: Timestamp,
        now: Timestamp,
    ) -> Result<Vec<InterruptedReply>, PortError>;

    /// Writes many replies' progress in one transaction, as
    /// [`save_reply`](Self::save_reply) would each (they are normally
    /// `InProgress` updates: an instance saves all the replies it generates
    /// at once, so a thousand replies cost one commit a second, not a
    /// thousand). Returns, in the same order, whether each was still
    /// `InProgress`; one failure fails the whole batch, changing nothing.
    async fn save_replies(&self, saves: Vec<ReplySave>) -> Result<Vec<bool>, PortError>;
}

/// One reply's state in a [`ConversationStore::save_replies`] batch.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplySave {
    /// The reply's conversation.
    pub conversation: ConversationId,
    /// The reply.
    pub reply: MessageId,
    /// What to write.
    pub update: ReplyUpdate,
}

/// A reply [`ConversationStore::interrupt_abandoned`] marked `Interrupted`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InterruptedReply {
    /// Its conversation.
    pub conversation: ConversationId,
    /// The conversation's owner, whose cached lists show it.
    pub owner: AccountId,
    /// The reply.
    pub reply: MessageId,
}

/// A reply's state, as [`ConversationStore::save_reply`] writes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplyUpdate {
    /// The whole text so far (not a delta).
    pub text: String,
    /// `InProgress` while it grows, then its final status.
    pub status: MessageStatus,
    /// The whole metadata (not a delta).
    pub metadata: MessageMetadata,
    /// When this was written.
    pub updated_at: Timestamp,
}

// ---------------------------------------------------------------------------
// The reply event log
// ---------------------------------------------------------------------------

/// Names one reply's event log: its conversation and its message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReplyKey {
    /// The conversation.
    pub conversation: ConversationId,
    /// The assistant message being generated.
    pub reply: MessageId,
}

impl std::fmt::Display for ReplyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.conversation, self.reply)
    }
}

/// An event as the log holds it: its position and its encoded form (the
/// service's business; the log never looks inside).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedEvent {
    /// 1 for the first event of a reply, then one more for each.
    pub seq: u64,
    /// The encoded event.
    pub payload: Vec<u8>,
}

/// Events read from a log, in order. An `Err` item ends the stream.
pub type LoggedEvents = Pin<Box<dyn Stream<Item = Result<LoggedEvent, PortError>> + Send>>;

/// The events of each reply in flight, in order, so that any number of
/// clients, connected from the start or resuming after a disconnect, and on
/// any instance sharing the log, see the same sequence.
///
/// One writer per reply (the task generating it) appends; readers follow.
/// Logs are bounded: a closed log is dropped after the time given to
/// [`close`](Self::close), and one never closed (its writer died) after
/// [`ABANDONED_LOG_TTL`] without an append.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait ReplyEventLog: Send + Sync {
    /// Appends `payload` as event `seq`, which MUST be one more than the last
    /// appended to this log (1 for the first). Appending the last event
    /// again, with the same payload, succeeds and changes nothing: it is
    /// the retry of an append whose answer was lost (a timeout), which the
    /// writer cannot tell from one that failed.
    async fn append(&self, key: &ReplyKey, seq: u64, payload: &[u8]) -> Result<(), PortError>;

    /// Ends the log: nothing more is appended, followers end after the last
    /// event, and the whole log is dropped `keep` from now.
    async fn close(&self, key: &ReplyKey, keep: Duration) -> Result<(), PortError>;

    /// The events after `after` (0 for all), then, as they are appended,
    /// every later one, ending after the last event of a closed log. A log
    /// that does not exist (never written, or dropped) ends at once with
    /// nothing. Dropping the stream stops following.
    fn follow(&self, key: &ReplyKey, after: u64) -> LoggedEvents;

    /// Every event of the log as it is now, without waiting for more: what
    /// an instance continuing a reply another one started reads to learn
    /// the text and position its followers have seen. An empty, open
    /// snapshot for a log that does not exist.
    async fn snapshot(&self, key: &ReplyKey) -> Result<LogSnapshot, PortError>;
}

/// A reply's log as [`ReplyEventLog::snapshot`] found it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogSnapshot {
    /// Its events, in order, from the first.
    pub events: Vec<LoggedEvent>,
    /// True when it was closed: nothing more will be appended.
    pub closed: bool,
}

/// How long a log that was never closed lives after its last append.
pub const ABANDONED_LOG_TTL: Duration = Duration::from_secs(3600);

// ---------------------------------------------------------------------------
// Leases on replies in flight
// ---------------------------------------------------------------------------

/// Names one running instance of Waiter, the holder of leases: chosen at
/// random when it starts, never reused.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InstanceId(String);

impl InstanceId {
    /// An instance named `name`: at most 64 characters of
    /// `[A-Za-z0-9_-]`, so it can be stored anywhere as is.
    ///
    /// # Panics
    ///
    /// When `name` is empty or breaks that rule: names are chosen by code,
    /// never read from outside.
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        assert!(
            !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
            "an instance id is 1 to 64 characters of [A-Za-z0-9_-], not {name:?}"
        );
        Self(name)
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for InstanceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A lease [`ReplyLeases::claim_expired`] took over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedLease {
    /// The reply.
    pub key: ReplyKey,
    /// How long ago the lease had expired when it was claimed: about zero
    /// for one handed over, a few seconds for one whose holder died while
    /// others ran, longer for one orphaned while every instance was down.
    pub expired_for: Duration,
}

/// Stop requests as they come: the key of each reply some instance was
/// asked to stop. Dropping the stream stops listening.
pub type StopRequests = Pin<Box<dyn Stream<Item = ReplyKey> + Send>>;

/// Who generates each reply in flight: a lease per reply, held by one
/// instance and renewed while it lives, so that when it dies (or hands its
/// replies over on shutdown) another instance claims the lease and
/// continues the reply; and the signal that asks a lease's holder to stop.
///
/// Leases expire by the clock of the store that keeps them (Redis's, not
/// the instances'), so instances' clocks may disagree. An expired lease
/// stays listed, claimable, until claimed or released: that is how an
/// orphan is found after every instance was down.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait ReplyLeases: Send + Sync {
    /// True when other instances share these leases (Redis). An instance
    /// that stops hands its replies over only then; otherwise no other
    /// instance could take them.
    fn is_shared(&self) -> bool;

    /// Takes the lease on a new reply for `holder`, for `ttl`; false when
    /// another holder has it.
    async fn acquire(
        &self,
        key: &ReplyKey,
        holder: &InstanceId,
        ttl: Duration,
    ) -> Result<bool, PortError>;

    /// Extends to `ttl` from now each lease among `keys` that `holder`
    /// holds, taking again any that is missing (the store lost it); returns
    /// the keys among them another holder has: their replies are no longer
    /// `holder`'s to generate.
    async fn renew(
        &self,
        holder: &InstanceId,
        keys: &[ReplyKey],
        ttl: Duration,
    ) -> Result<Vec<ReplyKey>, PortError>;

    /// Ends the lease (its reply ended), if `holder` holds it.
    async fn release(&self, key: &ReplyKey, holder: &InstanceId) -> Result<(), PortError>;

    /// Makes the lease expire now, if `holder` holds it, so that another
    /// instance claims it at its next look and continues the reply.
    async fn hand_over(&self, key: &ReplyKey, holder: &InstanceId) -> Result<(), PortError>;

    /// Takes for `holder`, for `ttl`, up to `max` leases that have expired,
    /// longest expired first. Each expired lease goes to exactly one
    /// claimer, whatever the race.
    async fn claim_expired(
        &self,
        holder: &InstanceId,
        ttl: Duration,
        max: usize,
    ) -> Result<Vec<ClaimedLease>, PortError>;

    /// Asks whichever instance generates the reply to stop it: every
    /// [`stop_requests`](Self::stop_requests) stream open at the time, on
    /// any instance, yields `key` within milliseconds. A request nobody
    /// listens to is lost, not kept.
    async fn request_stop(&self, key: &ReplyKey) -> Result<(), PortError>;

    /// Every stop request made from now on, on any instance sharing the
    /// leases, for the listener to act on those it holds. Survives the
    /// store's outages (it listens again), missing the requests made
    /// meanwhile.
    fn stop_requests(&self) -> StopRequests;
}

// ---------------------------------------------------------------------------
// The use cases
// ---------------------------------------------------------------------------

/// One event of a reply's stream, in the order the seed's protocol sends
/// them: [`DeltaEncoding`](Self::DeltaEncoding), [`ResumeToken`](Self::ResumeToken),
/// [`InputMessage`](Self::InputMessage), [`ReplyAdded`](Self::ReplyAdded),
/// [`FirstText`](Self::FirstText), one [`Append`](Self::Append) per chunk,
/// [`Ended`](Self::Ended), [`StreamComplete`](Self::StreamComplete),
/// [`Done`](Self::Done).
#[derive(Debug, Clone, PartialEq)]
pub enum ReplyEvent {
    /// The stream's encoding, `v1`.
    DeltaEncoding,
    /// A token to follow the reply with after a disconnect.
    ResumeToken(String),
    /// The user message being answered, as stored.
    InputMessage(Message),
    /// The reply, as it starts: empty and `InProgress`.
    ReplyAdded(Message),
    /// The first text of the reply with this id is about to follow (the
    /// seed's `message_marker`, which names the reply: a client resuming
    /// after `ReplyAdded` learns it here).
    FirstText(MessageId),
    /// Text to append to the reply.
    Append(String),
    /// The reply ended: its final status (`FinishedSuccessfully`,
    /// `Interrupted` or `Failed`) and its whole metadata.
    Ended {
        /// The final status.
        status: MessageStatus,
        /// The reply's metadata, `finish_reason`, usage or error included.
        metadata: MessageMetadata,
    },
    /// No more deltas follow.
    StreamComplete,
    /// The last event.
    Done,
    /// Never logged: the instance serving this stream is shutting down, so
    /// the stream ends here, before the reply does. The reader follows the
    /// reply again (on another instance) after the position this event
    /// carries, which is the last event it was given.
    Resume,
}

/// A [`ReplyEvent`] and its position in the reply's stream (from 1), which
/// clients resume after (`Last-Event-ID`).
#[derive(Debug, Clone, PartialEq)]
pub struct SequencedEvent {
    /// The position.
    pub seq: u64,
    /// The event.
    pub event: ReplyEvent,
}

/// A reply's events, in order, from where the reader asked until
/// [`ReplyEvent::Done`], or until the log failed (the client resumes).
pub type ReplyEvents = Pin<Box<dyn Stream<Item = SequencedEvent> + Send>>;

/// A user message to send.
#[derive(Debug, Clone)]
pub struct SendMessage {
    /// The conversation; `None` starts one (titled `title`, or after the text).
    pub conversation: Option<ConversationId>,
    /// The title of a conversation this starts; ignored otherwise.
    pub title: Option<ConversationTitle>,
    /// The client's id for the message: sending it again is a retry.
    pub id: Option<MessageId>,
    /// An idempotency key, scoped to the caller: sending it again is a retry.
    pub retry_key: Option<String>,
    /// What the user says.
    pub text: MessageText,
    /// The sampling temperature asked for, 0 to 2.
    pub temperature: Option<f32>,
}

/// What a send did.
#[derive(Debug, Clone)]
pub struct Sent {
    /// The conversation, as it is after the send.
    pub conversation: Conversation,
    /// The user message as stored.
    pub message: Message,
    /// The reply as it started (or, for a retry, as it now is).
    pub reply: Message,
    /// True when this was a retry: nothing new was stored or started.
    pub replayed: bool,
}

/// A conversation with all its messages, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationDetail {
    /// The conversation.
    pub conversation: Conversation,
    /// Its messages.
    pub messages: Vec<Message>,
}

/// Who may follow a reply: its owner signed in, or anyone holding the
/// reply's resume token (browsers' `EventSource` cannot send a bearer token).
#[derive(Debug, Clone)]
pub enum Follower {
    /// A signed-in caller: the conversation must be theirs.
    Caller(Caller),
    /// A resume token from the reply's stream.
    ResumeToken(String),
}

/// Failures of the conversation use cases.
#[derive(Debug, Error)]
pub enum ConversationError {
    /// No conversation has the id, or it is another account's (the same
    /// answer, so ids cannot be probed).
    #[error("conversation not found")]
    NotFound,
    /// No reply of the conversation is in progress (to stop).
    #[error("no reply is in progress")]
    NoReplyInProgress,
    /// A reply of the conversation is in progress; one at a time.
    #[error("a reply is already in progress in this conversation")]
    ReplyInProgress,
    /// The conversation holds as many messages as it may.
    #[error("the conversation has reached its limit of {limit} messages")]
    TooManyMessages {
        /// The configured limit.
        limit: u32,
    },
    /// The caller has as many replies in progress as they may, across
    /// their conversations: one must end first.
    #[error("{limit} replies are already in progress; wait for one to end")]
    TooManyReplies {
        /// The configured limit.
        limit: u32,
    },
    /// The message is longer than allowed.
    #[error("the message is longer than {limit} bytes")]
    MessageTooLong {
        /// The configured limit, in bytes.
        limit: usize,
    },
    /// The temperature is outside 0 to 2.
    #[error("temperature must be between 0 and 2")]
    InvalidTemperature,
    /// `If-Match` named a version that is no longer current.
    #[error("the conversation has changed since it was read")]
    VersionMismatch {
        /// The version it is at now.
        current: Version,
    },
    /// The resume token is malformed, expired, or for another conversation.
    #[error("the resume token is invalid or expired")]
    InvalidResumeToken,
    /// Another request with the same idempotency key created first.
    #[error(transparent)]
    KeyTaken(#[from] KeyTaken),
    /// Infrastructure failed (see [`PortError`]).
    #[error(transparent)]
    Port(#[from] PortError),
}

/// Conversations as the outside world drives them. Every operation is the
/// caller's own: another account's conversation is `NotFound`.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait ConversationUseCases: Send + Sync {
    /// Starts an empty conversation, remembering its response under
    /// `keyed`'s idempotency key in the same transaction. `KeyTaken`.
    async fn create_conversation(
        &self,
        caller: Caller,
        title: ConversationTitle,
        keyed: Option<Keyed<Conversation>>,
    ) -> Result<Conversation, ConversationError>;

    /// One page of the caller's conversations.
    async fn list_conversations(
        &self,
        caller: Caller,
        order: ConversationOrder,
        offset: u32,
        limit: u32,
    ) -> Result<ConversationPage, ConversationError>;

    /// A conversation and its messages. `NotFound`.
    async fn get_conversation(
        &self,
        caller: Caller,
        id: ConversationId,
    ) -> Result<ConversationDetail, ConversationError>;

    /// Renames. `NotFound`; `VersionMismatch`.
    async fn rename_conversation(
        &self,
        caller: Caller,
        id: ConversationId,
        title: ConversationTitle,
        expected_version: Option<Version>,
    ) -> Result<Conversation, ConversationError>;

    /// Deletes, with its messages, stopping a reply in progress. `NotFound`;
    /// `VersionMismatch`.
    async fn delete_conversation(
        &self,
        caller: Caller,
        id: ConversationId,
        expected_version: Option<Version>,
    ) -> Result<(), ConversationError>;

    /// Stores the message and starts the reply, which is generated by a task
    /// of its own: it goes on whether or not anyone follows it, until it
    /// ends or is stopped. A retry (same message id or retry key) returns
    /// what the first send stored and starts nothing. `NotFound`;
    /// `ReplyInProgress`; `TooManyMessages`; `TooManyReplies`; `MessageTooLong`;
    /// `InvalidTemperature`.
    async fn send_message(
        &self,
        caller: Caller,
        message: SendMessage,
    ) -> Result<Sent, ConversationError>;

    /// The events of the conversation's latest reply after `after` (0 for
    /// all), then live ones until it ends; `None` when it has no reply in
    /// progress and none whose events are still kept. `NotFound`;
    /// `InvalidResumeToken`.
    async fn follow_reply(
        &self,
        follower: Follower,
        id: ConversationId,
        after: u64,
    ) -> Result<Option<ReplyEvents>, ConversationError>;

    /// The events of the reply of `sent`, as [`send_message`] answered it
    /// to the caller, from the first, then live ones until it ends; `None`
    /// when its events are no longer kept (a retry of a send long done).
    /// Unlike [`follow_reply`] it reads nothing from the store: the send
    /// has just checked the conversation is the caller's, and names the
    /// reply, so the sender's stream starts without two more reads on the
    /// way to its first token.
    ///
    /// [`send_message`]: ConversationUseCases::send_message
    /// [`follow_reply`]: ConversationUseCases::follow_reply
    async fn follow_sent(&self, sent: &Sent) -> Result<Option<ReplyEvents>, ConversationError>;

    /// Waits until the reply ends, and returns it as stored. `NotFound`.
    async fn wait_for_reply(
        &self,
        caller: Caller,
        id: ConversationId,
        reply: MessageId,
    ) -> Result<Message, ConversationError>;

    /// Stops the reply in progress: its text so far is kept, its status
    /// becomes `Interrupted`, and its stream ends with the closing events.
    /// `NotFound`; `NoReplyInProgress`.
    async fn stop_reply(&self, caller: Caller, id: ConversationId)
    -> Result<(), ConversationError>;
}
