//! Response bodies, and their conversions from domain types.
//!
//! Request bodies live beside the handler that reads them; the problem body
//! lives with the errors, in `error.rs`.

use std::collections::BTreeMap;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use waiter_domain::{
    Account, Book, Conversation, Message, MessageMetadata, MessageRole, MessageStatus, Role,
    Session, Timestamp,
};
use waiter_ports::conversations::{ConversationDetail, ConversationSummary, LAST_MESSAGE_CHARS};
use waiter_ports::identity::IssuedTokens;

/// What an account may do beyond its own resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RoleName {
    Member,
    Admin,
}

impl From<Role> for RoleName {
    fn from(role: Role) -> Self {
        match role {
            Role::Member => RoleName::Member,
            Role::Admin => RoleName::Admin,
        }
    }
}

impl From<RoleName> for Role {
    fn from(role: RoleName) -> Self {
        match role {
            RoleName::Member => Role::Member,
            RoleName::Admin => Role::Admin,
        }
    }
}

/// An account as its owner or an admin sees it. Never carries a secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountBody {
    #[schema(example = "acct_01JD0W5ZK3J2S8Q4V6X7Y9ZABC")]
    pub id: String,
    #[schema(example = "ann@example.com")]
    pub email: String,
    #[schema(example = "Ann")]
    pub display_name: String,
    pub role: RoleName,
    /// Bumped on every change; also the `ETag`.
    #[schema(example = 1)]
    pub version: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl From<Account> for AccountBody {
    fn from(account: Account) -> Self {
        Self {
            id: account.id.to_string(),
            email: account.email.to_string(),
            display_name: account.display_name.to_string(),
            role: account.role.into(),
            version: account.version.get(),
            created_at: account.created_at,
            updated_at: account.updated_at,
        }
    }
}

/// A sign-in session.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionBody {
    #[schema(example = "sess_7ZQ4M1T9K2W8X3C5V6B0N1P2QR")]
    pub id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When the refresh token was last rotated.
    #[serde(with = "time::serde::rfc3339")]
    pub refreshed_at: OffsetDateTime,
    /// When the session ends unless its refresh token is rotated before.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

impl From<Session> for SessionBody {
    fn from(session: Session) -> Self {
        Self {
            id: session.id.to_string(),
            created_at: session.created_at,
            refreshed_at: session.refreshed_at,
            expires_at: session.expires_at,
        }
    }
}

/// A new token pair (RFC 6749 §5.1 field names).
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenBody {
    /// A JWT for `Authorization: Bearer …`.
    pub access_token: String,
    /// Always `Bearer`.
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    #[schema(example = 900)]
    pub expires_in: u64,
    /// Opaque; exchange it at `POST /api/v1/sessions/refresh`. Usable once.
    pub refresh_token: String,
    pub session: SessionBody,
}

impl From<IssuedTokens> for TokenBody {
    fn from(tokens: IssuedTokens) -> Self {
        Self {
            access_token: tokens.access_token,
            token_type: "Bearer",
            expires_in: tokens.expires_in.as_secs(),
            refresh_token: tokens.refresh_token,
            session: tokens.session.into(),
        }
    }
}

/// A list of items with no further pages.
#[derive(Debug, Serialize, ToSchema)]
pub struct ItemsBody<T> {
    pub items: Vec<T>,
}

/// One page of a keyset-paginated list.
#[derive(Debug, Serialize, ToSchema)]
pub struct PageBody<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A book.
#[derive(Debug, Serialize, ToSchema)]
pub struct BookBody {
    #[schema(example = "book_01JD0W5ZK3J2S8Q4V6X7Y9ZABC")]
    pub id: String,
    #[schema(example = "Dune")]
    pub title: String,
    #[schema(example = "Frank Herbert")]
    pub author: String,
    /// ISBN-13, digits only.
    #[schema(example = "9780441172719")]
    pub isbn: String,
    #[schema(value_type = String, format = Date, example = "1965-08-01")]
    pub published_date: String,
    /// An exact decimal with two places.
    #[schema(value_type = f64, example = 9.99)]
    pub price: serde_json::Number,
    /// The account that created it.
    #[schema(example = "acct_01JD0W5ZK3J2S8Q4V6X7Y9ZABC")]
    pub owner: String,
    /// Bumped on every change; also the `ETag`.
    #[schema(example = 1)]
    pub version: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl From<Book> for BookBody {
    fn from(book: Book) -> Self {
        Self {
            id: book.id.to_string(),
            title: book.title.to_string(),
            author: book.author.to_string(),
            isbn: book.isbn.to_string(),
            published_date: book.published_date.to_string(),
            price: serde_json::Number::from_str(&book.price.to_string())
                .expect("a price renders as a decimal number, which is valid JSON"),
            owner: book.owner.to_string(),
            version: book.version.get(),
            created_at: book.created_at,
            updated_at: book.updated_at,
        }
    }
}

/// A conversation, without its messages.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationBody {
    #[schema(example = "conv_01JD0W5ZK3J2S8Q4V6X7Y9ZABC")]
    pub id: String,
    #[schema(example = "Redis caching explained")]
    pub title: String,
    /// Bumped on every change, a new message included; also the `ETag`.
    #[schema(example = 1)]
    pub version: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it last changed: a rename or a new message.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl From<Conversation> for ConversationBody {
    fn from(conversation: Conversation) -> Self {
        Self {
            id: conversation.id.to_string(),
            title: conversation.title.to_string(),
            version: conversation.version.get(),
            created_at: conversation.created_at,
            updated_at: conversation.updated_at,
        }
    }
}

/// A conversation in a list, with the start of its newest message.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationSummaryBody {
    #[schema(example = "conv_01JD0W5ZK3J2S8Q4V6X7Y9ZABC")]
    pub id: String,
    #[schema(example = "Redis caching explained")]
    pub title: String,
    /// The first 100 characters of its newest message (whoever wrote it),
    /// followed by `…` when there is more; `null` when it has no messages.
    #[schema(
        required = true,
        max_length = 101,
        example = "Redis caching stores frequently used data in memory…"
    )]
    pub last_message: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl From<ConversationSummary> for ConversationSummaryBody {
    fn from(summary: ConversationSummary) -> Self {
        let conversation = summary.conversation;
        Self {
            id: conversation.id.to_string(),
            title: conversation.title.to_string(),
            last_message: summary.last_message.map(|text| glimpse(&text)),
            created_at: conversation.created_at,
            updated_at: conversation.updated_at,
        }
    }
}

/// `text` cut to what a list shows, with `…` when it was cut.
fn glimpse(text: &str) -> String {
    let mut chars = text.chars();
    let shown: String = chars.by_ref().take(LAST_MESSAGE_CHARS).collect();
    if chars.next().is_some() {
        format!("{shown}…")
    } else {
        shown
    }
}

/// One page of an account's conversations, by offset.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationPageBody {
    pub items: Vec<ConversationSummaryBody>,
    /// The page size asked for.
    #[schema(example = 20)]
    pub limit: u32,
    /// How many were skipped.
    #[schema(example = 0)]
    pub offset: u32,
    /// How many conversations the account has in all.
    #[schema(example = 2)]
    pub total: u64,
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageRoleName {
    User,
    Assistant,
}

impl From<MessageRole> for MessageRoleName {
    fn from(role: MessageRole) -> Self {
        match role {
            MessageRole::User => MessageRoleName::User,
            MessageRole::Assistant => MessageRoleName::Assistant,
        }
    }
}

/// Where a message is in its life: a reply is `in_progress` while it is
/// generated, then `finished_successfully`, `interrupted` (stopped; the text
/// so far is kept) or `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatusName {
    InProgress,
    FinishedSuccessfully,
    Interrupted,
    Failed,
}

impl From<MessageStatus> for MessageStatusName {
    fn from(status: MessageStatus) -> Self {
        match status {
            MessageStatus::InProgress => MessageStatusName::InProgress,
            MessageStatus::FinishedSuccessfully => MessageStatusName::FinishedSuccessfully,
            MessageStatus::Interrupted => MessageStatusName::Interrupted,
            MessageStatus::Failed => MessageStatusName::Failed,
        }
    }
}

/// The kind of a message's content: text is all there is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ContentType {
    Text,
}

/// A message's content: its text as the one part.
#[derive(Debug, Serialize, ToSchema)]
pub struct ContentBody {
    pub content_type: ContentType,
    /// Always one part, the whole text.
    #[schema(min_items = 1, max_items = 1)]
    pub parts: Vec<String>,
}

impl ContentBody {
    fn text(text: String) -> Self {
        Self {
            content_type: ContentType::Text,
            parts: vec![text],
        }
    }
}

/// One message of a conversation.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageBody {
    /// Unique within its conversation: the client's own id, or `msg_…`.
    #[schema(example = "msg_001")]
    pub id: String,
    pub role: MessageRoleName,
    pub content: ContentBody,
    pub status: MessageStatusName,
    /// The message it answers (a reply's user message, or a user message's
    /// preceding reply); `null` for the first.
    #[schema(required = true)]
    pub parent_id: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl From<Message> for MessageBody {
    fn from(message: Message) -> Self {
        Self {
            id: message.id.to_string(),
            role: message.role.into(),
            content: ContentBody::text(message.text),
            status: message.status.into(),
            parent_id: message.parent_id.map(|id| id.to_string()),
            created_at: message.created_at,
        }
    }
}

/// A conversation with all its messages, oldest first (the seed's detail).
#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationDetailBody {
    #[schema(example = "conv_01JD0W5ZK3J2S8Q4V6X7Y9ZABC")]
    pub conversation_id: String,
    #[schema(example = "Redis caching explained")]
    pub title: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    pub messages: Vec<MessageBody>,
}

impl From<ConversationDetail> for ConversationDetailBody {
    fn from(detail: ConversationDetail) -> Self {
        let conversation = detail.conversation;
        Self {
            conversation_id: conversation.id.to_string(),
            title: conversation.title.to_string(),
            created_at: conversation.created_at,
            updated_at: conversation.updated_at,
            messages: detail.messages.into_iter().map(MessageBody::from).collect(),
        }
    }
}

/// A message sent and its reply, once the reply has ended.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExchangeBody {
    /// The message sent, as stored.
    pub input_message: MessageBody,
    /// The reply, as it ended (`finished_successfully`, `interrupted` or `failed`).
    pub message: MessageBody,
}

/// A conversation started with a first message, and the reply to it.
#[derive(Debug, Serialize, ToSchema)]
pub struct StartedConversationBody {
    /// The conversation as it was when the message was stored.
    pub conversation: ConversationBody,
    /// The message sent, as stored.
    pub input_message: MessageBody,
    /// The reply, as it ended.
    pub message: MessageBody,
}

/// What starting a conversation answers: the conversation alone, or, when
/// it started with a message, the conversation, the message and its reply.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum CreatedConversationBody {
    Empty(ConversationBody),
    Started(StartedConversationBody),
}

/// A message as the seed's event stream shows it (`input_message`, and the
/// reply in the `add` delta): times in seconds since the epoch, the author
/// as an object, what is known of how it was made under `metadata`.
#[derive(Debug, Serialize)]
pub struct SeedMessageBody {
    pub id: String,
    pub author: SeedAuthorBody,
    pub create_time: f64,
    pub update_time: f64,
    pub content: ContentBody,
    pub status: MessageStatusName,
    /// A reply's: `null` until it ends (its end comes as a delta); absent on
    /// a user's message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_turn: Option<Option<bool>>,
    pub metadata: SeedMetadataBody,
}

/// The seed's `author`.
#[derive(Debug, Serialize)]
pub struct SeedAuthorBody {
    pub role: MessageRoleName,
}

/// A message's metadata in the seed's stream; fields unknown are left out.
#[derive(Debug, Default, Serialize)]
pub struct SeedMetadataBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_slug: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl From<Message> for SeedMessageBody {
    fn from(message: Message) -> Self {
        let MessageMetadata {
            model_slug,
            finish_reason,
            temperature,
            error,
            ..
        } = message.metadata;
        let end_turn = match message.role {
            MessageRole::User => None,
            MessageRole::Assistant => Some(message.status.is_final().then_some(true)),
        };
        Self {
            id: message.id.to_string(),
            author: SeedAuthorBody {
                role: message.role.into(),
            },
            create_time: unix_seconds(message.created_at),
            update_time: unix_seconds(message.updated_at),
            content: ContentBody::text(message.text),
            status: message.status.into(),
            end_turn,
            metadata: SeedMetadataBody {
                model_slug,
                parent_id: message.parent_id.map(|id| id.to_string()),
                temperature,
                finish_reason,
                error,
            },
        }
    }
}

/// Seconds since the epoch to the millisecond, as the seed writes times
/// (`1762484546.479`): whole milliseconds divide into the shortest decimal.
fn unix_seconds(at: Timestamp) -> f64 {
    let millis = at.unix_timestamp_nanos() / 1_000_000;
    // Milliseconds since the epoch fit an f64's 53 bits for 285,000 years.
    millis as f64 / 1000.0
}

/// The state of the server and its dependencies.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthBody {
    /// `ok`; `degraded` when an optional dependency (the cache) is down and
    /// the server serves without it; `unavailable` when it cannot serve.
    #[schema(example = "ok")]
    pub status: &'static str,
    /// Each dependency by name, with `ok`, `degraded` or `unavailable`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub checks: BTreeMap<&'static str, &'static str>,
}

/// One Server-Sent Event of a reply's stream, as a client parses it: what
/// the `text/event-stream` responses document per event (OpenAPI 3.1 has no
/// `itemSchema`; tools such as Schemathesis read `schema` as the per-event
/// schema). Never serialized: the stream is written as SSE text.
#[derive(Debug, ToSchema)]
#[expect(dead_code, reason = "a schema only: the stream is written as SSE text")]
pub struct ServerSentEvent {
    /// The event's position in the reply, from 1: what `Last-Event-ID` resumes after.
    #[schema(pattern = "^[0-9]+$")]
    pub id: String,
    /// `delta_encoding`, `delta`, `resume` (the stream ends early: follow the
    /// reply again after this `id`), or `message` (the default, for
    /// data-only events).
    pub event: String,
    /// A JSON value (the seed's event objects, or `"v1"`), or `[DONE]` for the last event.
    pub data: String,
}
