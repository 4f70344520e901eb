//! `/api/v1/conversations`: conversations with the assistant, whose replies
//! stream back as Server-Sent Events; and, under `/backend-api`, the seed's
//! own endpoints and bodies as aliases over the same use cases.
//!
//! Sending a message starts a reply that a task of the service generates
//! whoever listens. With `Accept: text/event-stream` the response follows
//! that reply's events as they come (see [`crate::sse`]); otherwise it waits
//! for the reply to end and answers 201 with both messages. A client that
//! lost its stream resumes it with `GET …/stream` and `Last-Event-ID`.
//!
//! Every body that carries a message counts against the caller's
//! [`Policy::Messages`] rate limit, once its JSON is read and before anything
//! else is checked: a message sent is counted whether it is then accepted,
//! refused or a retry, as a sign-in attempt is whatever its outcome. Starting
//! a conversation without a message sends nothing, and is not counted.
//!
//! A message's content is text, as exactly one part: the seed's `parts` is
//! a list, but Waiter stores one text per message, and joining several parts
//! would change what the client sent. A body with no part, or several, is a
//! 422 naming `content.parts`.

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{FromRequest as _, HttpRequest, HttpResponse, delete, get, patch, post, web};
use serde::{Deserialize, Serialize};
use utoipa::openapi::Object;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
use utoipa::{IntoParams, ToSchema};
use waiter_domain::{
    Conversation, ConversationId, ConversationTitle, MessageId, MessageText, ValidationErrors,
};
use waiter_ports::conversations::{
    ConversationOrder, ConversationUseCases, Follower, SendMessage, Sent,
};
use waiter_ports::idempotency::IdempotencyUseCases;
use waiter_ports::identity::Caller;
use waiter_ports::rate_limit::Policy;

use crate::dto::{
    ContentType, ConversationBody, ConversationDetailBody, ConversationPageBody,
    ConversationSummaryBody, CreatedConversationBody, ExchangeBody, MessageBody, ServerSentEvent,
    StartedConversationBody,
};
use crate::edge::limits::Throttle;
use crate::error::ApiError;
use crate::extract::{Authenticated, Body, IdempotencyKey, IfMatch, LastEventId, RetryKey, etag};
use crate::fields::{self, present};
use crate::idempotency::{Replayable, create_idempotently, mark_replayed, scope};
use crate::pagination::{DEFAULT_LIMIT, MAX_LIMIT};
use crate::responses::{
    Bearer, Conditional, Conflict, Idempotent, JsonBody, Malformed, NotFound, Unavailable,
};
use crate::sse;

type Conversations = web::Data<dyn ConversationUseCases>;
type Idempotency = web::Data<dyn IdempotencyUseCases>;

/// The largest `offset`: what the document's `int32` allows.
const MAX_OFFSET: u32 = i32::MAX as u32;

/// The title of a conversation started with neither a title nor a message.
const UNTITLED: &str = "New conversation";

/// What the event-stream responses are, for the document.
const STREAM_DESCRIPTION: &str = "The reply's events as Server-Sent Events, in the seed's \
    protocol, each with `id:` its position (send it back as `Last-Event-ID` to resume): \
    `event: delta_encoding` (`\"v1\"`), `resume_conversation_token`, `input_message`, \
    `event: delta` adding the reply, `message_marker`, one `event: delta` appending each piece of \
    text to `/message/content/parts/0`, an `event: delta` replacing `/message/status` and \
    `/message/end_turn`, `message_stream_complete`, then `data: [DONE]`. A `: ping` comment \
    comes every 15 s of silence. When the instance serving the stream shuts down mid-reply, \
    the stream ends early with `event: resume`, whose `id` is the last event's: follow the reply \
    again (`GET /conversations/{id}/stream`) with that `Last-Event-ID`, and another instance \
    carries it on.";

/// A message the user sends: the seed's message object.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageInput {
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(schema_with = fields::message_id_schema)]
    id: Option<String>,
    /// Who writes it: a client sends only its user's messages.
    role: UserRole,
    content: ContentInput,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(nullable = false)]
    metadata: Option<MetadataInput>,
}

/// The author a client may write as.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UserRole {
    User,
}

/// A message's content: text, as exactly one part.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContentInput {
    content_type: ContentType,
    #[schema(schema_with = parts_schema)]
    parts: Vec<String>,
}

fn parts_schema() -> utoipa::openapi::Array {
    ArrayBuilder::new()
        .items(fields::message_text_schema())
        .min_items(Some(1))
        .max_items(Some(1))
        .description(Some(
            "The text, as exactly one part (Waiter stores one text per message).",
        ))
        .build()
}

/// How the reply should be generated.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MetadataInput {
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(schema_with = temperature_schema)]
    temperature: Option<f32>,
}

fn temperature_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Number)
        .minimum(Some(0))
        .maximum(Some(2))
        .description(Some(
            "The sampling temperature, 0 to 2; absent: the model's default.",
        ))
        .examples([0.7])
        .build()
}

/// A message, parsed.
struct ParsedMessage {
    id: Option<MessageId>,
    text: MessageText,
    temperature: Option<f32>,
}

/// Checks a message's id and content, naming fields under `prefix`
/// (`message.` inside a conversation to start, nothing for a message alone).
fn parse_message(
    errors: &mut ValidationErrors,
    prefix: &str,
    id: Option<&str>,
    content: &ContentInput,
    temperature: Option<f32>,
) -> Option<ParsedMessage> {
    let id = match id {
        Some(raw) => Some(errors.check(&format!("{prefix}id"), fields::message_id(raw))?),
        None => None,
    };
    let text = match content.parts.as_slice() {
        [text] => errors.check(
            &format!("{prefix}content.parts"),
            fields::message_text(text),
        ),
        _ => {
            errors.add(
                format!("{prefix}content.parts"),
                "must hold exactly one text part",
            );
            None
        }
    }?;
    Some(ParsedMessage {
        id,
        text,
        temperature,
    })
}

impl MessageInput {
    fn parse(&self, errors: &mut ValidationErrors, prefix: &str) -> Option<ParsedMessage> {
        parse_message(
            errors,
            prefix,
            self.id.as_deref(),
            &self.content,
            self.metadata.as_ref().and_then(|m| m.temperature),
        )
    }
}

/// A conversation to start: titled, or with a first message, or both.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewConversationInput {
    /// Absent: derived from the first message, or `New conversation`
    /// without one.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(schema_with = fields::text_schema::<ConversationTitle>)]
    title: Option<String>,
    /// A first message: the conversation starts with it and its reply.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(nullable = false)]
    message: Option<MessageInput>,
}

impl NewConversationInput {
    fn parse(&self) -> Result<(Option<ConversationTitle>, Option<ParsedMessage>), ApiError> {
        let mut errors = ValidationErrors::new();
        let title = self
            .title
            .as_deref()
            .and_then(|raw| errors.check("title", fields::text::<ConversationTitle>(raw)));
        let message = self
            .message
            .as_ref()
            .and_then(|message| message.parse(&mut errors, "message."));
        errors
            .into_result(|| (title, message))
            .map_err(ApiError::Validation)
    }
}

/// A conversation's new title.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConversationPatchInput {
    #[schema(schema_with = fields::text_schema::<ConversationTitle>)]
    title: String,
}

/// The order of a conversation list, newest first.
#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OrderParam {
    /// Most recently changed first.
    #[default]
    Updated,
    /// Most recently started first.
    Created,
}

impl From<OrderParam> for ConversationOrder {
    fn from(order: OrderParam) -> Self {
        match order {
            OrderParam::Updated => ConversationOrder::Updated,
            OrderParam::Created => ConversationOrder::Created,
        }
    }
}

/// A page of the caller's conversations, by offset.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConversationsQuery {
    /// How many to skip (default 0).
    #[param(minimum = 0, maximum = 2147483647)]
    offset: Option<u32>,
    /// How many to return, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// `updated` (default: most recently changed first) or `created`.
    #[param(inline)]
    order: Option<OrderParam>,
}

/// The resume token of a stream, for clients that cannot send a bearer token.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    #[param(schema_with = token_schema)]
    token: Option<String>,
}

fn token_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .description(Some(
            "The `resume_conversation_token` the stream gave, instead of a bearer token \
             (browsers' `EventSource` cannot send one). Invalid or expired: 401.",
        ))
        .build()
}

/// The seed's body for sending a message: `POST /backend-api/f/conversation`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SeedConversationInput {
    /// Ignored: the caller is whoever the bearer token names.
    #[expect(dead_code, reason = "accepted from the seed's clients, and ignored")]
    user_id: Option<String>,
    /// The conversation to continue; absent or `null`: a new one, titled
    /// after the message. An id that names none of the caller's
    /// conversations is a 404.
    #[schema(example = "conv_01JD0W5ZK3J2S8Q4V6X7Y9ZABC")]
    conversation_id: Option<String>,
    /// The last is the message sent; those before it are checked like it
    /// and otherwise ignored (the server keeps the history, so only the
    /// user's own messages are taken).
    #[schema(min_items = 1)]
    messages: Vec<SeedMessageInput>,
    #[schema(nullable = false)]
    #[serde(default, deserialize_with = "present")]
    metadata: Option<MetadataInput>,
}

/// A message of the seed's body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SeedMessageInput {
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = fields::message_id_schema)]
    id: Option<String>,
    #[expect(dead_code, reason = "always `user`, which deserializing checks")]
    role: UserRole,
    content: ContentInput,
}

impl SeedConversationInput {
    /// Checks every message as the schema describes it, and returns the
    /// last, the one to send.
    fn parse(&self) -> Result<(Option<ConversationId>, ParsedMessage), ApiError> {
        let mut errors = ValidationErrors::new();
        let temperature = self.metadata.as_ref().and_then(|m| m.temperature);
        let mut last = None;
        for (at, message) in self.messages.iter().enumerate() {
            let prefix = format!("messages[{at}].");
            last = parse_message(
                &mut errors,
                &prefix,
                message.id.as_deref(),
                &message.content,
                temperature,
            );
        }
        if self.messages.is_empty() {
            errors.add("messages", "must hold at least the message to send");
        }
        let conversation = self
            .conversation_id
            .as_deref()
            .map(conversation_id)
            .transpose();
        match (errors.into_result(|| last), conversation) {
            (Err(errors), _) => Err(ApiError::Validation(errors)),
            (_, Err(err)) => Err(err),
            (Ok(Some(message)), Ok(conversation)) => Ok((conversation, message)),
            // No error means at least one message, and the last parsed.
            (Ok(None), _) => Err(ApiError::Internal),
        }
    }
}

fn conversation_id(raw: &str) -> Result<ConversationId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::NotFound("no such conversation"))
}

fn location(id: ConversationId) -> String {
    format!("/api/v1/conversations/{id}")
}

/// The title of a conversation started with nothing to name it after.
fn untitled() -> Result<ConversationTitle, ApiError> {
    ConversationTitle::parse(UNTITLED).map_err(|err| {
        tracing::error!(%err, "the default conversation title is not a title");
        ApiError::Internal
    })
}

/// 200 with the conversation and its `ETag`.
fn conversation_response(conversation: Conversation) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::ETAG, etag(conversation.version)))
        .json(ConversationBody::from(conversation))
}

/// The response to an empty conversation created, also what its
/// idempotency key replays.
fn created(conversation: &Conversation) -> Result<Replayable, ApiError> {
    let body = CreatedConversationBody::Empty(ConversationBody::from(conversation.clone()));
    Ok(Replayable::json(StatusCode::CREATED, &body)?
        .header(header::LOCATION, location(conversation.id))
        .header(header::ETAG, etag(conversation.version)))
}

/// The reply of `sent` as an event stream from its first event; `None` when
/// its events are no longer kept (a retry of a send long done).
async fn follow_sent(
    conversations: &dyn ConversationUseCases,
    sent: &Sent,
) -> Result<Option<HttpResponse>, ApiError> {
    let events = conversations.follow_sent(sent).await?;
    Ok(events.map(|events| sse::response(events, sent.conversation.id, sent.replayed)))
}

/// What a send answers: its reply's event stream when the client asked for
/// one (and it is still kept), else, once the reply ended, `respond` with
/// the message sent and the reply as stored.
async fn answer_send(
    req: &HttpRequest,
    conversations: &dyn ConversationUseCases,
    caller: Caller,
    sent: Sent,
    respond: impl FnOnce(Sent, MessageBody, MessageBody) -> HttpResponse,
) -> Result<HttpResponse, ApiError> {
    if sse::wants_event_stream(req)
        && let Some(stream) = follow_sent(conversations, &sent).await?
    {
        return Ok(stream);
    }
    let reply = conversations
        .wait_for_reply(caller, sent.conversation.id, sent.reply.id.clone())
        .await?;
    let input = MessageBody::from(sent.message.clone());
    let replayed = sent.replayed;
    let mut response = respond(sent, input, MessageBody::from(reply));
    if replayed {
        mark_replayed(&mut response);
    }
    Ok(response)
}

/// Counts one message `caller` sends under [`Policy::Messages`]; a 429 when
/// the account is over its limit.
async fn count_message(throttle: &Throttle, caller: Caller) -> Result<(), ApiError> {
    throttle
        .check(Policy::Messages, &caller.account_id.to_string())
        .await
}

/// Start a conversation, empty or with a first message.
///
/// Without a message: 201 with the conversation (`Idempotency-Key` makes
/// retries safe). With one: the message is sent and its reply generated; with
/// `Accept: text/event-stream` the reply streams back (200), else the answer
/// waits for it to end (201 with the conversation and both messages); an
/// `Idempotency-Key` then works as for sending a message, as do its limits:
/// the message counts against the account's limit on messages, and the
/// reply against its replies in progress (over either, 429).
#[utoipa::path(
    tag = "conversations",
    security(("bearer" = [])),
    request_body = NewConversationInput,
    params(IdempotencyKey),
    responses(
        (status = 201, description = "Started; with a message, once its reply ended",
            body = CreatedConversationBody,
            headers(("Location" = String, description = "The new conversation's URL"),
                ("ETag" = String, description = "Without a message: the conversation's version"),
                ("Idempotent-Replayed" = String, description = "`true` when this was a retry"))),
        (status = 200, description = STREAM_DESCRIPTION, content_type = "text/event-stream", body = ServerSentEvent),
        JsonBody, Bearer, Idempotent, Conflict, Unavailable,
    )
)]
#[post("/conversations")]
pub async fn create_conversation(
    req: HttpRequest,
    conversations: Conversations,
    idempotency: Idempotency,
    Authenticated(caller): Authenticated,
    throttle: Throttle,
    key: IdempotencyKey,
    Body(body): Body<NewConversationInput>,
) -> Result<HttpResponse, ApiError> {
    if body.message.is_some() {
        count_message(&throttle, caller).await?;
    }
    let (title, message) = body.parse()?;
    let Some(message) = message else {
        let title = match title {
            Some(title) => title,
            None => untitled()?,
        };
        let scope = scope(&req, Some(caller));
        return create_idempotently(
            &req,
            key,
            idempotency.as_ref(),
            &scope,
            &body,
            created,
            async |keyed| {
                Ok(conversations
                    .create_conversation(caller, title, keyed)
                    .await?)
            },
        )
        .await;
    };
    let IdempotencyKey(retry_key) = key;
    if retry_key
        .as_deref()
        .is_some_and(|key| !fields::is_idempotency_key(key))
    {
        return Err(ApiError::BadRequest(
            "Idempotency-Key must be 1 to 255 visible ASCII characters".to_owned(),
        ));
    }
    let sent = conversations
        .send_message(
            caller,
            SendMessage {
                conversation: None,
                title,
                id: message.id,
                retry_key,
                text: message.text,
                temperature: message.temperature,
            },
        )
        .await?;
    answer_send(
        &req,
        conversations.as_ref(),
        caller,
        sent,
        |sent, input_message, message| {
            let id = sent.conversation.id;
            HttpResponse::Created()
                .insert_header((header::LOCATION, location(id)))
                .json(CreatedConversationBody::Started(StartedConversationBody {
                    conversation: sent.conversation.into(),
                    input_message,
                    message,
                }))
        },
    )
    .await
}

/// The caller's conversations, a page at a time.
#[utoipa::path(
    tag = "conversations",
    security(("bearer" = [])),
    params(ConversationsQuery),
    responses(
        (status = 200, description = "One page of conversations", body = ConversationPageBody),
        Malformed, Bearer, Unavailable,
    )
)]
#[get("/conversations")]
pub async fn list_conversations(
    conversations: Conversations,
    Authenticated(caller): Authenticated,
    query: web::Query<ConversationsQuery>,
) -> Result<HttpResponse, ApiError> {
    list(conversations.as_ref(), caller, query.into_inner()).await
}

async fn list(
    conversations: &dyn ConversationUseCases,
    caller: Caller,
    query: ConversationsQuery,
) -> Result<HttpResponse, ApiError> {
    let limit = match query.limit.unwrap_or(DEFAULT_LIMIT) {
        limit @ 1..=MAX_LIMIT => limit,
        _ => {
            return Err(ApiError::BadRequest(format!(
                "limit must be between 1 and {MAX_LIMIT}"
            )));
        }
    };
    let offset = match query.offset.unwrap_or(0) {
        offset @ 0..=MAX_OFFSET => offset,
        _ => {
            return Err(ApiError::BadRequest(format!(
                "offset must be between 0 and {MAX_OFFSET}"
            )));
        }
    };
    let page = conversations
        .list_conversations(
            caller,
            query.order.unwrap_or_default().into(),
            offset,
            limit,
        )
        .await?;
    Ok(HttpResponse::Ok().json(ConversationPageBody {
        items: page
            .items
            .into_iter()
            .map(ConversationSummaryBody::from)
            .collect(),
        limit,
        offset,
        total: page.total,
    }))
}

/// A conversation with all its messages.
#[utoipa::path(
    tag = "conversations",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "A conversation id, `conv_…`")),
    responses(
        (status = 200, description = "The conversation", body = ConversationDetailBody,
            headers(("ETag" = String))),
        Bearer, NotFound, Unavailable,
    )
)]
#[get("/conversations/{id}")]
pub async fn get_conversation(
    conversations: Conversations,
    Authenticated(caller): Authenticated,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    detail(conversations.as_ref(), caller, &id).await
}

async fn detail(
    conversations: &dyn ConversationUseCases,
    caller: Caller,
    id: &str,
) -> Result<HttpResponse, ApiError> {
    let detail = conversations
        .get_conversation(caller, conversation_id(id)?)
        .await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::ETAG, etag(detail.conversation.version)))
        .json(ConversationDetailBody::from(detail)))
}

/// Rename a conversation.
#[utoipa::path(
    tag = "conversations",
    security(("bearer" = [])),
    request_body(content = ConversationPatchInput, content_type = "application/merge-patch+json"),
    params(("id" = String, Path, description = "A conversation id, `conv_…`"), IfMatch),
    responses(
        (status = 200, description = "Renamed", body = ConversationBody, headers(("ETag" = String))),
        JsonBody, Bearer, NotFound, Conditional, Unavailable,
    )
)]
#[patch("/conversations/{id}")]
pub async fn update_conversation(
    conversations: Conversations,
    Authenticated(caller): Authenticated,
    id: web::Path<String>,
    if_match: IfMatch,
    Body(body): Body<ConversationPatchInput>,
) -> Result<HttpResponse, ApiError> {
    let id = conversation_id(&id)?;
    let title = fields::text::<ConversationTitle>(&body.title)
        .map_err(|why| ApiError::Validation(ValidationErrors::single("title", why)))?;
    let conversation = conversations
        .rename_conversation(caller, id, title, if_match.expected()?)
        .await?;
    Ok(conversation_response(conversation))
}

/// Delete a conversation and its messages, stopping a reply in progress.
#[utoipa::path(
    tag = "conversations",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "A conversation id, `conv_…`"), IfMatch),
    responses(
        (status = 204, description = "Deleted"),
        Bearer, NotFound, Conditional, Unavailable,
    )
)]
#[delete("/conversations/{id}")]
pub async fn delete_conversation(
    conversations: Conversations,
    Authenticated(caller): Authenticated,
    id: web::Path<String>,
    if_match: IfMatch,
) -> Result<HttpResponse, ApiError> {
    let id = conversation_id(&id)?;
    conversations
        .delete_conversation(caller, id, if_match.expected()?)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Send a message; the assistant replies.
///
/// With `Accept: text/event-stream` the reply streams back as it is
/// generated (200); otherwise the answer waits for it to end (201). One
/// reply at a time: while one is in progress, 409. Each message counts
/// against the account's limit on messages, and at most a configured number
/// of replies may be in progress per account, across its conversations (3
/// by default): over either, 429 with `Retry-After`.
#[utoipa::path(
    tag = "conversations",
    security(("bearer" = [])),
    request_body = MessageInput,
    params(("id" = String, Path, description = "A conversation id, `conv_…`"), RetryKey),
    responses(
        (status = 201, description = "Sent, and the reply ended", body = ExchangeBody,
            headers(("Idempotent-Replayed" = String, description = "`true` when this was a retry"))),
        (status = 200, description = STREAM_DESCRIPTION, content_type = "text/event-stream", body = ServerSentEvent,
            headers(("Idempotent-Replayed" = String, description = "`true` when this was a retry"))),
        JsonBody, Bearer, NotFound, Conflict, Unavailable,
    )
)]
#[post("/conversations/{id}/messages")]
pub async fn send_message(
    req: HttpRequest,
    conversations: Conversations,
    Authenticated(caller): Authenticated,
    throttle: Throttle,
    id: web::Path<String>,
    RetryKey(retry_key): RetryKey,
    Body(body): Body<MessageInput>,
) -> Result<HttpResponse, ApiError> {
    count_message(&throttle, caller).await?;
    let id = conversation_id(&id)?;
    let mut errors = ValidationErrors::new();
    let message = body.parse(&mut errors, "");
    let message = errors
        .into_result(|| message)
        .map_err(ApiError::Validation)?
        .ok_or(ApiError::Internal)?;
    let sent = conversations
        .send_message(
            caller,
            SendMessage {
                conversation: Some(id),
                title: None,
                id: message.id,
                retry_key,
                text: message.text,
                temperature: message.temperature,
            },
        )
        .await?;
    answer_send(
        &req,
        conversations.as_ref(),
        caller,
        sent,
        |_, input_message, message| {
            HttpResponse::Created().json(ExchangeBody {
                input_message,
                message,
            })
        },
    )
    .await
}

/// Stop the reply in progress; its text so far is kept, as `interrupted`.
#[utoipa::path(
    tag = "conversations",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "A conversation id, `conv_…`")),
    responses(
        (status = 204, description = "Stopped; its stream ends with the closing events"),
        Bearer, NotFound, Unavailable,
    )
)]
#[delete("/conversations/{id}/generation")]
pub async fn stop_generation(
    conversations: Conversations,
    Authenticated(caller): Authenticated,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = conversation_id(&id)?;
    conversations.stop_reply(caller, id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Follow the conversation's latest reply: its events after `Last-Event-ID`,
/// then live ones until it ends.
///
/// Authenticated by the bearer token, or by the stream's resume token as
/// `?token=`. 204 when the conversation has no reply in progress and none
/// whose events are still kept.
#[utoipa::path(
    tag = "conversations",
    security(("bearer" = []), ()),
    params(("id" = String, Path, description = "A conversation id, `conv_…`"), StreamQuery, LastEventId),
    responses(
        (status = 200, description = STREAM_DESCRIPTION, content_type = "text/event-stream", body = ServerSentEvent),
        (status = 204, description = "No reply to follow"),
        Malformed, Bearer, NotFound, Unavailable,
    )
)]
#[get("/conversations/{id}/stream")]
pub async fn follow_reply(
    req: HttpRequest,
    conversations: Conversations,
    id: web::Path<String>,
    query: web::Query<StreamQuery>,
    LastEventId(after): LastEventId,
) -> Result<HttpResponse, ApiError> {
    let follower = match query.into_inner().token {
        Some(token) if token.is_empty() => {
            return Err(ApiError::BadRequest("token must not be empty".to_owned()));
        }
        Some(token) => Follower::ResumeToken(token),
        None => {
            let Authenticated(caller) =
                Authenticated::from_request(&req, &mut Payload::None).await?;
            Follower::Caller(caller)
        }
    };
    let id = conversation_id(&id)?;
    let conversations = conversations.into_inner();
    let Some(events) = conversations
        .follow_reply(follower.clone(), id, after)
        .await?
    else {
        return Ok(HttpResponse::NoContent().finish());
    };
    Ok(sse::response(events, id, false))
}

/// Send a message, the seed's way: the reply always streams back.
///
/// The seed's `POST /backend-api/f/conversation`: the last of `messages` is
/// sent, to `conversation_id` or to a new conversation. A retry of a send
/// whose events are no longer kept answers 201 with both messages instead.
/// Each message counts against the account's limit on messages, and the
/// reply against its replies in progress (over either, 429).
#[utoipa::path(
    tag = "compatibility",
    security(("bearer" = [])),
    request_body = SeedConversationInput,
    params(RetryKey),
    responses(
        (status = 200, description = STREAM_DESCRIPTION, content_type = "text/event-stream", body = ServerSentEvent,
            headers(("Idempotent-Replayed" = String, description = "`true` when this was a retry"))),
        (status = 201, description = "A retry whose events are gone: the message and its reply",
            body = ExchangeBody),
        JsonBody, Bearer, NotFound, Conflict, Unavailable,
    )
)]
#[post("/f/conversation")]
pub async fn seed_send_message(
    conversations: Conversations,
    Authenticated(caller): Authenticated,
    throttle: Throttle,
    RetryKey(retry_key): RetryKey,
    Body(body): Body<SeedConversationInput>,
) -> Result<HttpResponse, ApiError> {
    count_message(&throttle, caller).await?;
    let (conversation, message) = body.parse()?;
    let sent = conversations
        .send_message(
            caller,
            SendMessage {
                conversation,
                title: None,
                id: message.id,
                retry_key,
                text: message.text,
                temperature: message.temperature,
            },
        )
        .await?;
    if let Some(stream) = follow_sent(conversations.as_ref(), &sent).await? {
        return Ok(stream);
    }
    let reply = conversations
        .wait_for_reply(caller, sent.conversation.id, sent.reply.id.clone())
        .await?;
    let mut response = HttpResponse::Created().json(ExchangeBody {
        input_message: sent.message.into(),
        message: reply.into(),
    });
    if sent.replayed {
        mark_replayed(&mut response);
    }
    Ok(response)
}

/// The caller's conversations: the seed's `GET /backend-api/conversations`.
#[utoipa::path(
    tag = "compatibility",
    security(("bearer" = [])),
    params(ConversationsQuery),
    responses(
        (status = 200, description = "One page of conversations", body = ConversationPageBody),
        Malformed, Bearer, Unavailable,
    )
)]
#[get("/conversations")]
pub async fn seed_list_conversations(
    conversations: Conversations,
    Authenticated(caller): Authenticated,
    query: web::Query<ConversationsQuery>,
) -> Result<HttpResponse, ApiError> {
    list(conversations.as_ref(), caller, query.into_inner()).await
}

/// A conversation with its messages: the seed's
/// `GET /backend-api/conversation/{conversation_id}`.
#[utoipa::path(
    tag = "compatibility",
    security(("bearer" = [])),
    params(("conversation_id" = String, Path, description = "A conversation id, `conv_…`")),
    responses(
        (status = 200, description = "The conversation", body = ConversationDetailBody,
            headers(("ETag" = String))),
        Bearer, NotFound, Unavailable,
    )
)]
#[get("/conversation/{conversation_id}")]
pub async fn seed_get_conversation(
    conversations: Conversations,
    Authenticated(caller): Authenticated,
    conversation_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    detail(conversations.as_ref(), caller, &conversation_id).await
}
