//! Conversation handler tests: the HTTP surface of the conversation use
//! cases, mocked, with `actix_web::test`: bodies and their validation,
//! statuses and headers, the error mapping, the seed's aliases, and the event
//! stream byte for byte.

#[path = "fixtures/conversations.rs"]
mod conversation_fixtures;
mod fixtures;

use std::sync::Arc;

use actix_web::http::{StatusCode, header};
use actix_web::test::{self, TestRequest};
use actix_web::web::Bytes;
use conversation_fixtures::{
    CONVERSATION, conversation, conversation_id, events_after, question, reply,
};
use fixtures::member;
use serde_json::{Value, json};
use waiter_domain::{MessageStatus, Version};
use waiter_http::{Edge, HttpState, app};
use waiter_ports::PortError;
use waiter_ports::catalog::MockCatalogUseCases;
use waiter_ports::conversations::{
    ConversationDetail, ConversationError, ConversationOrder, ConversationPage,
    ConversationSummary, Follower, MockConversationUseCases, Sent,
};
use waiter_ports::health::MockHealthUseCases;
use waiter_ports::idempotency::{Admission, KeyedRequest, MockIdempotencyUseCases};
use waiter_ports::identity::{AuthError, MockIdentityUseCases};

/// The SSE body of the whole scripted reply ([`conversation_fixtures::reply_events`]).
const WHOLE_STREAM: &str = concat!(
    "id: 1\nevent: delta_encoding\ndata: \"v1\"\n\n",
    "id: 2\ndata: {\"type\":\"resume_conversation_token\",\"token\":\"tok.en\",\"conversation_id\":\"conv_01JD0W5ZK3J2S8Q4V6X7Y9ZABC\"}\n\n",
    "id: 3\ndata: {\"type\":\"input_message\",\"input_message\":{\"id\":\"msg_001\",\"author\":{\"role\":\"user\"},\"create_time\":1762484546.479,\"update_time\":1762484546.479,\"content\":{\"content_type\":\"text\",\"parts\":[\"Can you explain Redis caching?\"]},\"status\":\"finished_successfully\",\"metadata\":{\"temperature\":0.5}},\"conversation_id\":\"conv_01JD0W5ZK3J2S8Q4V6X7Y9ZABC\"}\n\n",
    "id: 4\nevent: delta\ndata: {\"o\":\"add\",\"v\":{\"message\":{\"id\":\"msg_002\",\"author\":{\"role\":\"assistant\"},\"create_time\":1762484547.338,\"update_time\":1762484547.817,\"content\":{\"content_type\":\"text\",\"parts\":[\"\"]},\"status\":\"in_progress\",\"end_turn\":null,\"metadata\":{\"model_slug\":\"waiter-echo\",\"parent_id\":\"msg_001\"}},\"conversation_id\":\"conv_01JD0W5ZK3J2S8Q4V6X7Y9ZABC\"}}\n\n",
    "id: 5\ndata: {\"type\":\"message_marker\",\"conversation_id\":\"conv_01JD0W5ZK3J2S8Q4V6X7Y9ZABC\",\"message_id\":\"msg_002\",\"marker\":\"user_visible_token\",\"event\":\"first\"}\n\n",
    "id: 6\nevent: delta\ndata: {\"v\":[{\"p\":\"/message/content/parts/0\",\"o\":\"append\",\"v\":\"Redis\"}]}\n\n",
    "id: 7\nevent: delta\ndata: {\"v\":[{\"p\":\"/message/content/parts/0\",\"o\":\"append\",\"v\":\" caching \\\"quoted\\\"\\nline\"}]}\n\n",
    "id: 8\nevent: delta\ndata: {\"v\":[{\"p\":\"/message/status\",\"o\":\"replace\",\"v\":\"finished_successfully\"},{\"p\":\"/message/end_turn\",\"o\":\"replace\",\"v\":true},{\"p\":\"/message/metadata\",\"o\":\"append\",\"v\":{\"is_complete\":true,\"finish_reason\":\"stop\"}}]}\n\n",
    "id: 9\ndata: {\"type\":\"message_stream_complete\",\"conversation_id\":\"conv_01JD0W5ZK3J2S8Q4V6X7Y9ZABC\"}\n\n",
    "id: 10\ndata: [DONE]\n\n",
);

/// The use cases behind the app under test; the token `good` is `member()`.
struct Mocks {
    conversations: MockConversationUseCases,
    idempotency: MockIdempotencyUseCases,
}

impl Mocks {
    fn new() -> Self {
        Self {
            conversations: MockConversationUseCases::new(),
            idempotency: MockIdempotencyUseCases::new(),
        }
    }
}

/// What came back.
struct Answer {
    status: StatusCode,
    headers: header::HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    fn is_problem(&self) -> bool {
        self.header("content-type") == "application/problem+json"
    }

    /// The field the first error of a 422 names.
    fn field(&self) -> Value {
        self.json()["errors"][0]["field"].clone()
    }
}

async fn send(mocks: Mocks, request: TestRequest) -> Answer {
    let mut identity = MockIdentityUseCases::new();
    identity.expect_authenticate().returning(|token| {
        if token == "good" {
            Ok(member())
        } else {
            Err(AuthError::InvalidToken)
        }
    });
    let state = HttpState {
        identity: Arc::new(identity),
        catalog: Arc::new(MockCatalogUseCases::new()),
        conversations: Arc::new(mocks.conversations),
        idempotency: Arc::new(mocks.idempotency),
        health: Arc::new(MockHealthUseCases::new()),
    };
    let service = test::init_service(app(state, Edge::default())).await;
    let response = test::call_service(&service, request.to_request()).await;
    Answer {
        status: response.status(),
        headers: response.headers().clone(),
        body: test::read_body(response).await,
    }
}

fn signed_in(request: TestRequest) -> TestRequest {
    request.insert_header((header::AUTHORIZATION, "Bearer good"))
}

fn streaming(request: TestRequest) -> TestRequest {
    request.insert_header((header::ACCEPT, "text/event-stream"))
}

/// The seed's message body, asking `text`.
fn message_json(text: &str) -> Value {
    json!({
        "id": "msg_001",
        "role": "user",
        "content": {"content_type": "text", "parts": [text]},
        "metadata": {"temperature": 0.5}
    })
}

fn sent(replayed: bool) -> Sent {
    Sent {
        conversation: conversation(2),
        message: question(),
        reply: reply(MessageStatus::InProgress, ""),
        replayed,
    }
}

/// Expects one send of the fixture question, answered with `sent(replayed)`.
fn expect_send(mocks: &mut Mocks, conversation: Option<&'static str>, replayed: bool) {
    mocks
        .conversations
        .expect_send_message()
        .withf(move |caller, message| {
            caller.account_id == member().account_id
                && message.conversation.map(|id| id.to_string()).as_deref() == conversation
                && message.id.as_ref().map(|id| id.as_str()) == Some("msg_001")
                && message.text.as_str() == "Can you explain Redis caching?"
                && message.temperature == Some(0.5)
        })
        .times(1)
        .returning(move |_, _| Ok(sent(replayed)));
}

/// Expects the reply of the fixture's send to be followed by its sender.
fn expect_follow_sent(mocks: &mut Mocks) {
    mocks
        .conversations
        .expect_follow_sent()
        .withf(|sent| sent.conversation.id == conversation_id())
        .times(1)
        .returning(|_| Ok(Some(events_after(0))));
}

fn expect_wait(mocks: &mut Mocks) {
    mocks
        .conversations
        .expect_wait_for_reply()
        .withf(|_, id, reply| *id == conversation_id() && reply.as_str() == "msg_002")
        .times(1)
        .returning(|_, _, _| {
            Ok(reply(
                MessageStatus::FinishedSuccessfully,
                "Redis caching stores data in memory.",
            ))
        });
}

fn assert_event_stream(answer: &Answer) {
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.header("content-type"), "text/event-stream");
    assert_eq!(answer.header("cache-control"), "no-cache");
    assert_eq!(answer.header("x-accel-buffering"), "no");
    assert_eq!(answer.header("content-encoding"), "identity");
}

/// The frames of an event stream: each one's `id`, `event` and `data`.
fn frames(text: &str) -> Vec<(Option<&str>, Option<&str>, &str)> {
    assert!(text.ends_with("\n\n"), "{text:?}");
    text.trim_end_matches("\n\n")
        .split("\n\n")
        .map(|frame| {
            let field = |name: &str| {
                frame
                    .lines()
                    .find_map(|line| line.strip_prefix(name).and_then(|l| l.strip_prefix(": ")))
            };
            (field("id"), field("event"), field("data").unwrap())
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Starting a conversation
// ---------------------------------------------------------------------------

#[actix_web::test]
async fn an_empty_conversation_is_201_with_location_and_etag() {
    let mut mocks = Mocks::new();
    mocks
        .conversations
        .expect_create_conversation()
        .withf(|_, title, keyed| title.as_str() == "Redis" && keyed.is_none())
        .times(1)
        .returning(|_, _, _| Ok(conversation(1)));
    let request = signed_in(TestRequest::post().uri("/api/v1/conversations"))
        .set_json(json!({"title": " Redis "}));
    let answer = send(mocks, request).await;
    assert_eq!(answer.status, StatusCode::CREATED);
    assert_eq!(
        answer.header("location"),
        format!("/api/v1/conversations/{CONVERSATION}")
    );
    assert_eq!(answer.header("etag"), "\"1\"");
    assert_eq!(
        answer.json(),
        json!({
            "id": CONVERSATION,
            "title": "Redis caching explained",
            "version": 1,
            "created_at": "2025-11-07T03:02:26.479Z",
            "updated_at": "2025-11-07T03:02:26.479Z",
        })
    );
}

#[actix_web::test]
async fn a_conversation_without_title_or_message_is_a_new_conversation() {
    let mut mocks = Mocks::new();
    mocks
        .conversations
        .expect_create_conversation()
        .withf(|_, title, _| title.as_str() == "New conversation")
        .times(1)
        .returning(|_, _, _| Ok(conversation(1)));
    let request = signed_in(TestRequest::post().uri("/api/v1/conversations")).set_json(json!({}));
    assert_eq!(send(mocks, request).await.status, StatusCode::CREATED);
}

#[actix_web::test]
async fn a_keyed_empty_conversation_is_created_idempotently() {
    let mut mocks = Mocks::new();
    mocks
        .idempotency
        .expect_begin()
        .times(1)
        .returning(|scope, key, fingerprint| {
            assert_eq!(key, "k1");
            let at = time::OffsetDateTime::UNIX_EPOCH;
            Ok(Admission::Proceed(KeyedRequest::new(
                format!("{scope}|{key}"),
                fingerprint,
                at,
                at,
                (),
            )))
        });
    mocks
        .conversations
        .expect_create_conversation()
        .times(1)
        .returning(|_, _, keyed| {
            let keyed = keyed.expect("the key is handed on");
            let record = keyed.record(&conversation(1)).unwrap();
            assert_eq!(record.remembered.response.status, 201);
            Ok(conversation(1))
        });
    let request = signed_in(TestRequest::post().uri("/api/v1/conversations"))
        .insert_header(("Idempotency-Key", "k1"))
        .set_json(json!({"title": "Redis"}));
    let answer = send(mocks, request).await;
    assert_eq!(answer.status, StatusCode::CREATED);
    assert_eq!(answer.json()["id"], CONVERSATION);
}

#[actix_web::test]
async fn a_conversation_started_with_a_message_answers_once_the_reply_ended() {
    let mut mocks = Mocks::new();
    mocks
        .conversations
        .expect_send_message()
        .withf(|_, message| {
            message.conversation.is_none()
                && message.title.is_none()
                && message.retry_key.as_deref() == Some("k2")
                && message.text.as_str() == "Can you explain Redis caching?"
        })
        .times(1)
        .returning(|_, _| Ok(sent(false)));
    expect_wait(&mut mocks);
    let request = signed_in(TestRequest::post().uri("/api/v1/conversations"))
        .insert_header(("Idempotency-Key", "k2"))
        .set_json(json!({"message": message_json("Can you explain Redis caching?")}));
    let answer = send(mocks, request).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text());
    assert_eq!(
        answer.header("location"),
        format!("/api/v1/conversations/{CONVERSATION}")
    );
    assert!(answer.headers.get("idempotent-replayed").is_none());
    let body = answer.json();
    assert_eq!(body["conversation"]["id"], CONVERSATION);
    assert_eq!(body["conversation"]["version"], 2);
    assert_eq!(
        body["input_message"],
        json!({
            "id": "msg_001",
            "role": "user",
            "content": {"content_type": "text", "parts": ["Can you explain Redis caching?"]},
            "status": "finished_successfully",
            "parent_id": null,
            "created_at": "2025-11-07T03:02:26.479Z",
        })
    );
    assert_eq!(body["message"]["status"], "finished_successfully");
    assert_eq!(body["message"]["parent_id"], "msg_001");
    assert_eq!(
        body["message"]["content"]["parts"],
        json!(["Redis caching stores data in memory."])
    );
}

#[actix_web::test]
async fn a_conversation_started_with_a_message_can_stream_its_reply() {
    let mut mocks = Mocks::new();
    mocks
        .conversations
        .expect_send_message()
        .withf(|_, message| {
            message.conversation.is_none() && message.title.as_ref().unwrap().as_str() == "Redis"
        })
        .times(1)
        .returning(|_, _| Ok(sent(false)));
    expect_follow_sent(&mut mocks);
    let request = streaming(signed_in(TestRequest::post().uri("/api/v1/conversations"))).set_json(
        json!({"title": "Redis", "message": message_json("Can you explain Redis caching?")}),
    );
    let answer = send(mocks, request).await;
    assert_event_stream(&answer);
    assert_eq!(answer.text(), WHOLE_STREAM);
}

#[actix_web::test]
async fn an_invalid_new_conversation_names_every_bad_field() {
    for (body, fields) in [
        (json!({"title": " "}), vec!["title"]),
        (json!({"title": null}), vec!["title"]),
        (json!({"message": null}), vec!["message"]),
        (json!({"colour": "red"}), vec!["colour"]),
        (
            json!({"title": "x".repeat(201), "message": {"role": "user", "content": {"content_type": "text", "parts": [" "]}}}),
            vec!["title", "message.content.parts"],
        ),
        (
            json!({"message": {"id": "a/b", "role": "user", "content": {"content_type": "text", "parts": ["hi"]}}}),
            vec!["message.id"],
        ),
        (
            json!({"message": {"role": "assistant", "content": {"content_type": "text", "parts": ["hi"]}}}),
            vec!["message.role"],
        ),
    ] {
        let mut mocks = Mocks::new();
        mocks.conversations.expect_create_conversation().never();
        mocks.conversations.expect_send_message().never();
        let request = signed_in(TestRequest::post().uri("/api/v1/conversations")).set_json(&body);
        let answer = send(mocks, request).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(answer.is_problem());
        let named: Vec<_> = answer.json()["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(named, fields, "{body}");
    }
}

// ---------------------------------------------------------------------------
// Listing and reading
// ---------------------------------------------------------------------------

fn summaries() -> ConversationPage {
    ConversationPage {
        items: vec![
            ConversationSummary {
                conversation: conversation(3),
                last_message: Some("x".repeat(101)),
            },
            ConversationSummary {
                conversation: conversation(1),
                last_message: None,
            },
        ],
        total: 7,
    }
}

#[actix_web::test]
async fn the_list_passes_its_page_and_answers_with_the_total() {
    for uri in [
        "/api/v1/conversations?offset=5&limit=2&order=created",
        "/backend-api/conversations?offset=5&limit=2&order=created",
    ] {
        let mut mocks = Mocks::new();
        mocks
            .conversations
            .expect_list_conversations()
            .withf(|caller, order, offset, limit| {
                caller.account_id == member().account_id
                    && *order == ConversationOrder::Created
                    && (*offset, *limit) == (5, 2)
            })
            .times(1)
            .returning(|_, _, _, _| Ok(summaries()));
        let answer = send(mocks, signed_in(TestRequest::get().uri(uri))).await;
        assert_eq!(answer.status, StatusCode::OK, "{uri}");
        let body = answer.json();
        assert_eq!(
            (
                body["limit"].clone(),
                body["offset"].clone(),
                body["total"].clone()
            ),
            (json!(2), json!(5), json!(7))
        );
        let first = &body["items"][0];
        assert_eq!(first["id"], CONVERSATION);
        assert_eq!(first["title"], "Redis caching explained");
        assert_eq!(first["last_message"], format!("{}…", "x".repeat(100)));
        assert_eq!(first["updated_at"], "2025-11-07T03:02:26.479Z");
        assert_eq!(body["items"][1]["last_message"], Value::Null);
    }
}

#[actix_web::test]
async fn the_list_defaults_to_the_first_20_most_recently_updated() {
    let mut mocks = Mocks::new();
    mocks
        .conversations
        .expect_list_conversations()
        .withf(|_, order, offset, limit| {
            *order == ConversationOrder::Updated && (*offset, *limit) == (0, 20)
        })
        .times(1)
        .returning(|_, _, _, _| Ok(summaries()));
    let answer = send(
        mocks,
        signed_in(TestRequest::get().uri("/api/v1/conversations")),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json()["limit"], 20);
}

#[actix_web::test]
async fn bad_list_parameters_are_400s() {
    for query in [
        "limit=0",
        "limit=101",
        "limit=",
        "limit=x",
        "offset=-1",
        "offset=",
        "offset=2147483648",
        "order=colour",
        "order=",
    ] {
        let mut mocks = Mocks::new();
        mocks.conversations.expect_list_conversations().never();
        let uri = format!("/api/v1/conversations?{query}");
        let answer = send(mocks, signed_in(TestRequest::get().uri(&uri))).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(answer.is_problem());
    }
}

fn detail() -> ConversationDetail {
    ConversationDetail {
        conversation: conversation(4),
        messages: vec![
            question(),
            reply(MessageStatus::Interrupted, "Redis caching"),
        ],
    }
}

#[actix_web::test]
async fn a_conversation_is_read_with_its_messages_and_etag() {
    for path in ["/api/v1/conversations/", "/backend-api/conversation/"] {
        let mut mocks = Mocks::new();
        mocks
            .conversations
            .expect_get_conversation()
            .withf(|_, id| *id == conversation_id())
            .times(1)
            .returning(|_, _| Ok(detail()));
        let uri = format!("{path}{CONVERSATION}");
        let answer = send(mocks, signed_in(TestRequest::get().uri(&uri))).await;
        assert_eq!(answer.status, StatusCode::OK, "{uri}");
        assert_eq!(answer.header("etag"), "\"4\"");
        assert_eq!(
            answer.json(),
            json!({
                "conversation_id": CONVERSATION,
                "title": "Redis caching explained",
                "created_at": "2025-11-07T03:02:26.479Z",
                "updated_at": "2025-11-07T03:02:26.479Z",
                "messages": [
                    {
                        "id": "msg_001",
                        "role": "user",
                        "content": {"content_type": "text", "parts": ["Can you explain Redis caching?"]},
                        "status": "finished_successfully",
                        "parent_id": null,
                        "created_at": "2025-11-07T03:02:26.479Z",
                    },
                    {
                        "id": "msg_002",
                        "role": "assistant",
                        "content": {"content_type": "text", "parts": ["Redis caching"]},
                        "status": "interrupted",
                        "parent_id": "msg_001",
                        "created_at": "2025-11-07T03:02:27.338Z",
                    },
                ],
            })
        );
    }
}

#[actix_web::test]
async fn an_unknown_or_malformed_conversation_is_a_404() {
    let mut mocks = Mocks::new();
    mocks
        .conversations
        .expect_get_conversation()
        .times(1)
        .returning(|_, _| Err(ConversationError::NotFound));
    let uri = format!("/api/v1/conversations/{CONVERSATION}");
    let answer = send(mocks, signed_in(TestRequest::get().uri(&uri))).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert!(answer.is_problem());

    for uri in [
        "/api/v1/conversations/book_01JD0W5ZK3J2S8Q4V6X7Y9ZABC",
        "/backend-api/conversation/690d5b6c-02d8-8321-a91e-65ea55b781f7",
    ] {
        let mut mocks = Mocks::new();
        mocks.conversations.expect_get_conversation().never();
        let answer = send(mocks, signed_in(TestRequest::get().uri(uri))).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{uri}");
    }
}

// ---------------------------------------------------------------------------
// Renaming and deleting
// ---------------------------------------------------------------------------

#[actix_web::test]
async fn a_rename_passes_if_match_and_answers_with_the_new_etag() {
    let mut mocks = Mocks::new();
    mocks
        .conversations
        .expect_rename_conversation()
        .withf(|_, id, title, expected| {
            *id == conversation_id()
                && title.as_str() == "Caching"
                && *expected == Some(Version::new(2))
        })
        .times(1)
        .returning(|_, _, _, _| Ok(conversation(3)));
    let uri = format!("/api/v1/conversations/{CONVERSATION}");
    let request = signed_in(TestRequest::patch().uri(&uri))
        .insert_header((header::IF_MATCH, "\"2\""))
        .set_json(json!({"title": "Caching "}));
    let answer = send(mocks, request).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("etag"), "\"3\"");
    assert_eq!(answer.json()["version"], 3);
}

#[actix_web::test]
async fn a_stale_rename_is_a_412_and_a_bad_title_a_422_first() {
    let mut mocks = Mocks::new();
    mocks
        .conversations
        .expect_rename_conversation()
        .returning(|_, _, _, _| {
            Err(ConversationError::VersionMismatch {
                current: Version::new(3),
            })
        });
    let uri = format!("/api/v1/conversations/{CONVERSATION}");
    let request = signed_in(TestRequest::patch().uri(&uri))
        .insert_header((header::IF_MATCH, "\"2\""))
        .set_json(json!({"title": "Caching"}));
    let answer = send(mocks, request).await;
    assert_eq!(answer.status, StatusCode::PRECONDITION_FAILED);
    assert!(answer.is_problem());

    for body in [
        json!({"title": ""}),
        json!({}),
        json!({"title": "a", "version": 2}),
    ] {
        let mut mocks = Mocks::new();
        mocks.conversations.expect_rename_conversation().never();
        let request = signed_in(TestRequest::patch().uri(&uri))
            .insert_header((header::IF_MATCH, "W/\"2\""))
            .set_json(&body);
        let answer = send(mocks, request).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    }
}

#[actix_web::test]
async fn a_delete_is_204_and_passes_if_match() {
    let mut mocks = Mocks::new();
    mocks
        .conversations
        .expect_delete_conversation()
        .withf(|_, id, expected| *id == conversation_id() && *expected == Some(Version::new(5)))
        .times(1)
        .returning(|_, _, _| Ok(()));
    let uri = format!("/api/v1/conversations/{CONVERSATION}");
    let request =
        signed_in(TestRequest::delete().uri(&uri)).insert_header((header::IF_MATCH, "\"5\""));
    let answer = send(mocks, request).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert!(answer.body.is_empty());
}

// ---------------------------------------------------------------------------
// Sending messages
// ---------------------------------------------------------------------------

fn messages_uri() -> String {
    format!("/api/v1/conversations/{CONVERSATION}/messages")
}

#[actix_web::test]
async fn a_message_is_201_with_both_messages_once_the_reply_ended() {
    let mut mocks = Mocks::new();
    expect_send(&mut mocks, Some(CONVERSATION), false);
    expect_wait(&mut mocks);
    let request = signed_in(TestRequest::post().uri(&messages_uri()))
        .set_json(message_json("Can you explain Redis caching?"));
    let answer = send(mocks, request).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text());
    let body = answer.json();
    assert_eq!(body["input_message"]["id"], "msg_001");
    assert_eq!(body["message"]["id"], "msg_002");
    assert_eq!(body["message"]["status"], "finished_successfully");
    assert!(body.get("conversation").is_none());
}

#[actix_web::test]
async fn a_message_streams_its_reply_when_asked_to() {
    let mut mocks = Mocks::new();
    expect_send(&mut mocks, Some(CONVERSATION), false);
    expect_follow_sent(&mut mocks);
    mocks.conversations.expect_wait_for_reply().never();
    let request = streaming(signed_in(TestRequest::post().uri(&messages_uri())))
        .set_json(message_json("Can you explain Redis caching?"));
    let answer = send(mocks, request).await;
    assert_event_stream(&answer);
    assert!(answer.headers.get("idempotent-replayed").is_none());
    assert_eq!(answer.text(), WHOLE_STREAM);
}

/// The stream is the seed's: each frame parses, in the seed's order.
#[actix_web::test]
async fn each_event_is_one_frame_of_seed_json_with_its_position() {
    let mut mocks = Mocks::new();
    expect_send(&mut mocks, Some(CONVERSATION), false);
    expect_follow_sent(&mut mocks);
    let request = streaming(signed_in(TestRequest::post().uri(&messages_uri())))
        .set_json(message_json("Can you explain Redis caching?"));
    let answer = send(mocks, request).await;
    let frames = frames(answer.text());
    let ids: Vec<_> = frames.iter().map(|(id, _, _)| id.unwrap()).collect();
    assert_eq!(ids, ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10"]);
    let names: Vec<_> = frames.iter().map(|(_, event, _)| *event).collect();
    assert_eq!(
        names,
        [
            Some("delta_encoding"),
            None,
            None,
            Some("delta"),
            None,
            Some("delta"),
            Some("delta"),
            Some("delta"),
            None,
            None
        ]
    );
    let data: Vec<Value> = frames[..9]
        .iter()
        .map(|(_, _, data)| serde_json::from_str(data).unwrap())
        .collect();
    assert_eq!(data[0], "v1");
    assert_eq!(data[1]["type"], "resume_conversation_token");
    assert_eq!(data[2]["input_message"]["author"]["role"], "user");
    assert_eq!(data[3]["v"]["message"]["status"], "in_progress");
    assert_eq!(data[4]["message_id"], "msg_002");
    assert_eq!(data[6]["v"][0]["v"], " caching \"quoted\"\nline");
    assert_eq!(data[7]["v"][2]["v"]["is_complete"], true);
    assert_eq!(data[8]["type"], "message_stream_complete");
    assert_eq!(frames[9].2, "[DONE]");
}

#[actix_web::test]
async fn a_retried_message_is_marked_as_a_replay() {
    let mut mocks = Mocks::new();
    mocks
        .conversations
        .expect_send_message()
        .withf(|_, message| message.retry_key.as_deref() == Some("retry-1"))
        .times(1)
        .returning(|_, _| Ok(sent(true)));
    expect_wait(&mut mocks);
    let request = signed_in(TestRequest::post().uri(&messages_uri()))
        .insert_header(("Idempotency-Key", "retry-1"))
        .set_json(message_json("Can you explain Redis caching?"));
    let answer = send(mocks, request).await;
    assert_eq!(answer.status, StatusCode::CREATED);
    assert_eq!(answer.header("idempotent-replayed"), "true");

    let mut mocks = Mocks::new();
    expect_send(&mut mocks, Some(CONVERSATION), true);
    expect_follow_sent(&mut mocks);
    let request = streaming(signed_in(TestRequest::post().uri(&messages_uri())))
        .set_json(message_json("Can you explain Redis caching?"));
    let answer = send(mocks, request).await;
    assert_event_stream(&answer);
    assert_eq!(answer.header("idempotent-replayed"), "true");
}

/// A retry whose events are no longer kept still gets its answer, as JSON.
#[actix_web::test]
async fn a_stream_no_longer_kept_falls_back_to_the_json_answer() {
    let mut mocks = Mocks::new();
    expect_send(&mut mocks, Some(CONVERSATION), true);
    mocks
        .conversations
        .expect_follow_sent()
        .times(1)
        .returning(|_| Ok(None));
    expect_wait(&mut mocks);
    let request = streaming(signed_in(TestRequest::post().uri(&messages_uri())))
        .set_json(message_json("Can you explain Redis caching?"));
    let answer = send(mocks, request).await;
    assert_eq!(answer.status, StatusCode::CREATED);
    assert_eq!(answer.header("idempotent-replayed"), "true");
}

#[actix_web::test]
async fn a_malformed_retry_key_is_a_400() {
    for key in ["", &"k".repeat(256), "with space"] {
        let mut mocks = Mocks::new();
        mocks.conversations.expect_send_message().never();
        let request = signed_in(TestRequest::post().uri(&messages_uri()))
            .insert_header(("Idempotency-Key", key))
            .set_json(message_json("hi"));
        let answer = send(mocks, request).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{key:?}");
    }
}

#[actix_web::test]
async fn a_message_of_the_wrong_shape_names_the_field() {
    let content = |parts: Value| json!({"content_type": "text", "parts": parts});
    for (body, field) in [
        (
            json!({"role": "assistant", "content": content(json!(["hi"]))}),
            "role",
        ),
        (
            json!({"role": "system", "content": content(json!(["hi"]))}),
            "role",
        ),
        (json!({"content": content(json!(["hi"]))}), "role"),
        (json!({"role": "user"}), "content"),
        (
            json!({"role": "user", "content": content(json!([]))}),
            "content.parts",
        ),
        (
            json!({"role": "user", "content": content(json!(["a", "b"]))}),
            "content.parts",
        ),
        (
            json!({"role": "user", "content": content(json!([" \n"]))}),
            "content.parts",
        ),
        (
            json!({"role": "user", "content": content(json!(["a\u{0}b"]))}),
            "content.parts",
        ),
        (
            json!({"role": "user", "content": content(json!([7]))}),
            "content.parts[0]",
        ),
        (
            json!({"role": "user", "content": {"content_type": "image", "parts": ["hi"]}}),
            "content.content_type",
        ),
        (
            json!({"role": "user", "content": {"content_type": "text", "parts": ["hi"], "x": 1}}),
            "x",
        ),
        (
            json!({"id": "a/b", "role": "user", "content": content(json!(["hi"]))}),
            "id",
        ),
        (
            json!({"id": "", "role": "user", "content": content(json!(["hi"]))}),
            "id",
        ),
        (
            json!({"id": null, "role": "user", "content": content(json!(["hi"]))}),
            "id",
        ),
        (
            json!({"role": "user", "content": content(json!(["hi"])), "metadata": null}),
            "metadata",
        ),
        (
            json!({"role": "user", "content": content(json!(["hi"])), "metadata": {"temperature": "hot"}}),
            "metadata.temperature",
        ),
        (
            json!({"role": "user", "content": content(json!(["hi"])), "metadata": {"top_p": 1}}),
            "top_p",
        ),
        (
            json!({"role": "user", "content": content(json!(["hi"])), "conversation_id": CONVERSATION}),
            "conversation_id",
        ),
    ] {
        let mut mocks = Mocks::new();
        mocks.conversations.expect_send_message().never();
        let request = signed_in(TestRequest::post().uri(&messages_uri())).set_json(&body);
        let answer = send(mocks, request).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(answer.is_problem());
        assert_eq!(answer.field(), field, "{body}: {}", answer.json());
    }
}

#[actix_web::test]
async fn send_failures_map_to_their_statuses() {
    /// A failure, the status it maps to, and the field a 422 names.
    type Case = (fn() -> ConversationError, StatusCode, Option<&'static str>);
    let cases: [Case; 9] = [
        (|| ConversationError::NotFound, StatusCode::NOT_FOUND, None),
        (
            || ConversationError::TooManyReplies { limit: 3 },
            StatusCode::TOO_MANY_REQUESTS,
            None,
        ),
        (
            || ConversationError::ReplyInProgress,
            StatusCode::CONFLICT,
            None,
        ),
        (
            || ConversationError::TooManyMessages { limit: 200 },
            StatusCode::CONFLICT,
            None,
        ),
        (
            || ConversationError::MessageTooLong { limit: 32768 },
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("content.parts"),
        ),
        (
            || ConversationError::InvalidTemperature,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("metadata.temperature"),
        ),
        (
            || ConversationError::KeyTaken(waiter_ports::idempotency::KeyTaken),
            StatusCode::CONFLICT,
            None,
        ),
        (
            || {
                ConversationError::Port(PortError::Unavailable(anyhow::anyhow!(
                    "redis at 10.0.0.9"
                )))
            },
            StatusCode::SERVICE_UNAVAILABLE,
            None,
        ),
        (
            || ConversationError::Port(PortError::unexpected(std::io::Error::other("bug"))),
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
        ),
    ];
    for (error, expected, field) in cases {
        let mut mocks = Mocks::new();
        mocks
            .conversations
            .expect_send_message()
            .returning(move |_, _| Err(error()));
        mocks.conversations.expect_follow_sent().never();
        let request = streaming(signed_in(TestRequest::post().uri(&messages_uri())))
            .set_json(message_json("Can you explain Redis caching?"));
        let answer = send(mocks, request).await;
        assert_eq!(answer.status, expected);
        assert!(answer.is_problem(), "{expected}");
        if expected == StatusCode::TOO_MANY_REQUESTS {
            // One of the account's replies ends soon: try again shortly.
            assert_eq!(answer.header("retry-after"), "1");
        }
        assert!(!answer.text().contains("10.0.0.9"));
        if let Some(field) = field {
            assert_eq!(answer.field(), field);
        }
    }
}

// ---------------------------------------------------------------------------
// Stopping and resuming
// ---------------------------------------------------------------------------

#[actix_web::test]
async fn stopping_a_reply_is_204_and_404_when_none_is_in_progress() {
    let uri = format!("/api/v1/conversations/{CONVERSATION}/generation");
    let mut mocks = Mocks::new();
    mocks
        .conversations
        .expect_stop_reply()
        .withf(|_, id| *id == conversation_id())
        .times(1)
        .returning(|_, _| Ok(()));
    let answer = send(mocks, signed_in(TestRequest::delete().uri(&uri))).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);

    let mut mocks = Mocks::new();
    mocks
        .conversations
        .expect_stop_reply()
        .returning(|_, _| Err(ConversationError::NoReplyInProgress));
    let answer = send(mocks, signed_in(TestRequest::delete().uri(&uri))).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert!(answer.is_problem());
}

fn stream_uri() -> String {
    format!("/api/v1/conversations/{CONVERSATION}/stream")
}

#[actix_web::test]
async fn a_stream_resumes_after_the_last_event_id() {
    let mut mocks = Mocks::new();
    mocks
        .conversations
        .expect_follow_reply()
        .withf(|follower, id, after| {
            matches!(follower, Follower::Caller(caller) if caller.account_id == member().account_id)
                && *id == conversation_id()
                && *after == 7
        })
        .times(1)
        .returning(|_, _, after| Ok(Some(events_after(after))));
    let request =
        signed_in(TestRequest::get().uri(&stream_uri())).insert_header(("Last-Event-ID", "7"));
    let answer = send(mocks, request).await;
    assert_event_stream(&answer);
    let rest = WHOLE_STREAM.split_once("id: 8\n").unwrap().1;
    assert_eq!(answer.text(), format!("id: 8\n{rest}"));
}

#[actix_web::test]
async fn a_resume_token_follows_without_a_bearer_token() {
    let mut mocks = Mocks::new();
    mocks
        .conversations
        .expect_follow_reply()
        .withf(|follower, _, after| {
            matches!(follower, Follower::ResumeToken(token) if token == "tok.en") && *after == 0
        })
        .times(1)
        .returning(|_, _, after| Ok(Some(events_after(after))));
    let uri = format!("{}?token=tok.en", stream_uri());
    let answer = send(mocks, TestRequest::get().uri(&uri)).await;
    assert_event_stream(&answer);
    assert_eq!(answer.text(), WHOLE_STREAM);
}

/// Resumed after the reply was added, the marker still names the reply.
#[actix_web::test]
async fn a_stream_resumed_before_the_first_text_still_names_the_reply() {
    let mut mocks = Mocks::new();
    mocks
        .conversations
        .expect_follow_reply()
        .times(1)
        .returning(|_, _, after| Ok(Some(events_after(after))));
    let request =
        signed_in(TestRequest::get().uri(&stream_uri())).insert_header(("Last-Event-ID", "4"));
    let answer = send(mocks, request).await;
    assert_event_stream(&answer);
    let rest = WHOLE_STREAM.split_once("id: 5\n").unwrap().1;
    assert_eq!(answer.text(), format!("id: 5\n{rest}"));
}

#[actix_web::test]
async fn no_reply_to_follow_is_a_204() {
    let mut mocks = Mocks::new();
    mocks
        .conversations
        .expect_follow_reply()
        .times(1)
        .returning(|_, _, _| Ok(None));
    let answer = send(mocks, signed_in(TestRequest::get().uri(&stream_uri()))).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert!(answer.body.is_empty());
}

#[actix_web::test]
async fn a_bad_last_event_id_or_token_is_refused() {
    for (request, expected) in [
        (
            signed_in(TestRequest::get().uri(&stream_uri())).insert_header(("Last-Event-ID", "-1")),
            StatusCode::BAD_REQUEST,
        ),
        (
            signed_in(TestRequest::get().uri(&stream_uri())).insert_header(("Last-Event-ID", "x")),
            StatusCode::BAD_REQUEST,
        ),
        (
            signed_in(TestRequest::get().uri(&stream_uri())).insert_header(("Last-Event-ID", "")),
            StatusCode::BAD_REQUEST,
        ),
        (
            TestRequest::get().uri(&format!("{}?token=", stream_uri())),
            StatusCode::BAD_REQUEST,
        ),
        (
            TestRequest::get().uri(&stream_uri()),
            StatusCode::UNAUTHORIZED,
        ),
        (
            TestRequest::get()
                .uri(&stream_uri())
                .insert_header((header::AUTHORIZATION, "Bearer forged")),
            StatusCode::UNAUTHORIZED,
        ),
    ] {
        let mut mocks = Mocks::new();
        mocks.conversations.expect_follow_reply().never();
        let answer = send(mocks, request).await;
        assert_eq!(answer.status, expected, "{}", answer.text());
        assert!(answer.is_problem());
    }

    let mut mocks = Mocks::new();
    mocks
        .conversations
        .expect_follow_reply()
        .returning(|_, _, _| Err(ConversationError::InvalidResumeToken));
    let uri = format!("{}?token=expired", stream_uri());
    let answer = send(mocks, TestRequest::get().uri(&uri)).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        answer.header("www-authenticate"),
        r#"Bearer error="invalid_token""#
    );
}

// ---------------------------------------------------------------------------
// The seed's own endpoints
// ---------------------------------------------------------------------------

fn seed_body(conversation_id: Option<&str>) -> Value {
    let mut body = json!({
        "user_id": "user_123",
        "messages": [
            {"role": "user", "content": {"content_type": "text", "parts": ["An earlier question"]}},
            {"id": "msg_001", "role": "user", "content": {"content_type": "text", "parts": ["Can you explain Redis caching?"]}},
        ],
        "metadata": {"temperature": 0.5},
    });
    if let Some(id) = conversation_id {
        body["conversation_id"] = json!(id);
    }
    body
}

#[actix_web::test]
async fn the_seed_send_always_streams_to_a_new_or_given_conversation() {
    for conversation in [None, Some(CONVERSATION)] {
        let mut mocks = Mocks::new();
        expect_send(&mut mocks, conversation, false);
        expect_follow_sent(&mut mocks);
        let request = signed_in(TestRequest::post().uri("/backend-api/f/conversation"))
            .set_json(seed_body(conversation));
        let answer = send(mocks, request).await;
        assert_event_stream(&answer);
        assert_eq!(answer.text(), WHOLE_STREAM);
    }
}

#[actix_web::test]
async fn the_seed_send_accepts_a_null_conversation_id() {
    let mut mocks = Mocks::new();
    expect_send(&mut mocks, None, false);
    expect_follow_sent(&mut mocks);
    let mut body = seed_body(None);
    body["conversation_id"] = Value::Null;
    let request = signed_in(TestRequest::post().uri("/backend-api/f/conversation")).set_json(&body);
    assert_event_stream(&send(mocks, request).await);
}

#[actix_web::test]
async fn a_bad_seed_send_is_refused_before_anything_is_sent() {
    let mut last_not_users = seed_body(None);
    last_not_users["messages"][1]["role"] = json!("assistant");
    let mut no_messages = seed_body(None);
    no_messages["messages"] = json!([]);
    let mut blank = seed_body(None);
    blank["messages"][1]["content"]["parts"] = json!([""]);
    let mut earlier_blank = seed_body(None);
    earlier_blank["messages"][0]["content"]["parts"] = json!([" "]);
    for (body, expected, field) in [
        (
            last_not_users,
            StatusCode::UNPROCESSABLE_ENTITY,
            json!("messages[1].role"),
        ),
        (
            no_messages,
            StatusCode::UNPROCESSABLE_ENTITY,
            json!("messages"),
        ),
        (
            blank,
            StatusCode::UNPROCESSABLE_ENTITY,
            json!("messages[1].content.parts"),
        ),
        (
            earlier_blank,
            StatusCode::UNPROCESSABLE_ENTITY,
            json!("messages[0].content.parts"),
        ),
        (
            seed_body(Some("690d5b6c-02d8-8321-a91e-65ea55b781f7")),
            StatusCode::NOT_FOUND,
            Value::Null,
        ),
    ] {
        let mut mocks = Mocks::new();
        mocks.conversations.expect_send_message().never();
        let request =
            signed_in(TestRequest::post().uri("/backend-api/f/conversation")).set_json(&body);
        let answer = send(mocks, request).await;
        assert_eq!(answer.status, expected, "{body}");
        assert_eq!(answer.field(), field, "{body}");
    }
}

// ---------------------------------------------------------------------------
// Authentication and the document
// ---------------------------------------------------------------------------

#[actix_web::test]
async fn every_conversation_route_needs_a_bearer_token() {
    let item = format!("/api/v1/conversations/{CONVERSATION}");
    for request in [
        TestRequest::post()
            .uri("/api/v1/conversations")
            .set_json(json!({})),
        TestRequest::get().uri("/api/v1/conversations"),
        TestRequest::get().uri(&item),
        TestRequest::patch()
            .uri(&item)
            .set_json(json!({"title": "x"})),
        TestRequest::delete().uri(&item),
        TestRequest::post()
            .uri(&messages_uri())
            .set_json(message_json("hi")),
        TestRequest::delete().uri(&format!("{item}/generation")),
        TestRequest::get().uri(&stream_uri()),
        TestRequest::post()
            .uri("/backend-api/f/conversation")
            .set_json(seed_body(None)),
        TestRequest::get().uri("/backend-api/conversations"),
        TestRequest::get().uri(&format!("/backend-api/conversation/{CONVERSATION}")),
    ] {
        let request = request.to_request();
        let described = format!("{} {}", request.method(), request.path());
        let mut identity = MockIdentityUseCases::new();
        identity.expect_authenticate().never();
        let state = HttpState {
            identity: Arc::new(identity),
            catalog: Arc::new(MockCatalogUseCases::new()),
            conversations: Arc::new(MockConversationUseCases::new()),
            idempotency: Arc::new(MockIdempotencyUseCases::new()),
            health: Arc::new(MockHealthUseCases::new()),
        };
        let service = test::init_service(app(state, Edge::default())).await;
        let response = test::call_service(&service, request).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{described}");
        assert_eq!(
            response.headers().get("www-authenticate").unwrap(),
            "Bearer"
        );
    }
}

#[actix_web::test]
async fn the_document_describes_the_conversations_and_their_streams() {
    let document = serde_json::to_value(waiter_http::openapi()).unwrap();
    let paths = &document["paths"];
    for (path, method, status) in [
        ("/api/v1/conversations", "post", "200"),
        ("/api/v1/conversations/{id}/messages", "post", "200"),
        ("/api/v1/conversations/{id}/stream", "get", "200"),
        ("/backend-api/f/conversation", "post", "200"),
    ] {
        let response = &paths[path][method]["responses"][status];
        assert!(
            response["content"]["text/event-stream"].is_object(),
            "{method} {path}: {response}"
        );
    }
    for (path, method) in [
        ("/backend-api/f/conversation", "post"),
        ("/backend-api/conversations", "get"),
        ("/backend-api/conversation/{conversation_id}", "get"),
    ] {
        assert_eq!(
            paths[path][method]["tags"],
            json!(["compatibility"]),
            "{path}"
        );
    }
    let schemas = &document["components"]["schemas"];
    for name in [
        "MessageInput",
        "ContentInput",
        "NewConversationInput",
        "SeedConversationInput",
    ] {
        assert_eq!(schemas[name]["additionalProperties"], false, "{name}");
    }
    assert_eq!(
        schemas["ContentInput"]["properties"]["parts"]["maxItems"],
        1
    );
}
