//! The OpenAI-compatible generator against fake upstreams: what it sends,
//! how leniently it reads, and how every kind of upstream failure ends a
//! reply with an error instead of a hang.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use waiter_assistant::{ApiKey, ConfigError, OpenAiCompatibleGenerator, OpenAiConfig, Url};
use waiter_ports::conversations::{
    Finish, FinishReason, GenerateError, ReplyChunk, ReplyRequest, Speaker, TokenUsage, Turn,
};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use support::{
    API_KEY, Answer, CHUNKED_HEAD, COMPLETIONS, DONE, IMPATIENT, MODEL, PATIENT, STREAM_HEAD,
    ScriptedUpstream, Step, chunk, config, event, finish, generator, http_chunk, items, role, sse,
    text, texts_then, upstream, usage, user_asks,
};

fn base(server: &MockServer) -> String {
    format!("{}/v1", server.uri())
}

/// The texts and the end of the reply to "Hi?" from an upstream answering `response`.
async fn answer(response: ResponseTemplate) -> Answer {
    let server = upstream(response).await;
    texts_then(items(&generator(config(&base(&server))), user_asks("Hi?")).await)
}

fn finished(reason: Option<FinishReason>, usage: Option<TokenUsage>) -> Option<ReplyChunk> {
    Some(ReplyChunk::Finished(Finish { reason, usage }))
}

/// The end of a reply that finished, or a panic naming the error.
fn ok(end: Option<Result<ReplyChunk, GenerateError>>) -> Option<ReplyChunk> {
    end.map(|end| end.unwrap_or_else(|error| panic!("the reply failed: {error:?}")))
}

/// The error that ended a reply, or a panic naming what did.
fn error(end: Option<Result<ReplyChunk, GenerateError>>) -> GenerateError {
    match end {
        Some(Err(error)) => error,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn assert_no_key(error: &GenerateError) {
    for shown in [error.to_string(), format!("{error:?}")] {
        assert!(!shown.contains(API_KEY), "the key leaked: {shown}");
    }
}

#[tokio::test]
async fn streams_the_text_then_the_finish_and_usage() {
    let body = [
        role(),
        text("Redis"),
        text(" caching"),
        text(" stores data."),
        finish("stop"),
        usage(12, 3),
        DONE.to_owned(),
    ]
    .concat();
    let (texts, end) = answer(sse(body)).await;
    assert_eq!(texts, ["Redis", " caching", " stores data."]);
    let usage = TokenUsage {
        prompt_tokens: 12,
        completion_tokens: 3,
        total_tokens: 15,
    };
    assert_eq!(ok(end), finished(Some(FinishReason::Stop), Some(usage)));
}

#[tokio::test]
async fn a_missing_finish_reason_is_reported_as_unknown() {
    let body = [text("Hello"), text(" there"), DONE.to_owned()].concat();
    let (texts, end) = answer(sse(body)).await;
    assert_eq!(texts, ["Hello", " there"]);
    assert_eq!(ok(end), finished(None, None));
}

#[tokio::test]
async fn null_or_empty_choices_and_odd_deltas_carry_no_text() {
    let body = [
        chunk(Value::Null),
        text("one"),
        chunk(json!([])),
        chunk(json!([{"index": 0, "delta": null, "finish_reason": null}])),
        chunk(json!([{"index": 0, "delta": {"content": null}}])),
        chunk(json!([{"index": 0, "delta": {"content": [{"type": "text"}]}}])),
        chunk(json!([{"index": 0}])),
        event(&json!({"object": "chat.completion.chunk"})),
        text(" two"),
        finish("length"),
        DONE.to_owned(),
    ]
    .concat();
    let (texts, end) = answer(sse(body)).await;
    assert_eq!(texts, ["one", " two"]);
    assert_eq!(ok(end), finished(Some(FinishReason::Length), None));
}

#[tokio::test]
async fn unknown_finish_reasons_are_kept() {
    let body = [text("Hi"), finish("tool_calls"), DONE.to_owned()].concat();
    let (_, end) = answer(sse(body)).await;
    assert_eq!(
        ok(end),
        finished(Some(FinishReason::Other("tool_calls".to_owned())), None)
    );
}

#[tokio::test]
async fn the_end_of_the_stream_without_done_ends_the_reply() {
    let body = [text("Hi"), text(" again"), finish("stop")].concat();
    let (texts, end) = answer(sse(body)).await;
    assert_eq!(texts, ["Hi", " again"]);
    assert_eq!(ok(end), finished(Some(FinishReason::Stop), None));
}

#[tokio::test]
async fn crlf_line_ends_and_comments_are_read() {
    let body = format!(
        ": keep-alive\r\n\r\n{}{}",
        text("Hi").replace("\n\n", "\r\n\r\n"),
        DONE.replace('\n', "\r\n")
    );
    let (texts, end) = answer(sse(body)).await;
    assert_eq!(texts, ["Hi"]);
    assert_eq!(ok(end), finished(None, None));
}

#[tokio::test]
async fn an_error_status_is_rejected_with_the_upstream_message_and_no_key() {
    let body = json!({"error": {
        "message": format!("Incorrect API key provided: {API_KEY}. Find yours online."),
        "type": "invalid_request_error",
    }});
    let (texts, end) = answer(ResponseTemplate::new(401).set_body_json(body)).await;
    assert!(texts.is_empty());
    let error = error(end);
    assert_no_key(&error);
    match error {
        GenerateError::Rejected { status, message } => {
            assert_eq!(status, 401);
            assert_eq!(
                message,
                "Incorrect API key provided: [redacted]. Find yours online."
            );
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
}

#[tokio::test]
async fn an_error_status_with_a_long_plain_body_is_cut_short() {
    let body = format!("{API_KEY} {}", "overloaded ".repeat(10_000));
    let (_, end) = answer(ResponseTemplate::new(503).set_body_string(body)).await;
    let error = error(end);
    assert_no_key(&error);
    match error {
        GenerateError::Rejected { status, message } => {
            assert_eq!(status, 503);
            assert!(
                message.starts_with("[redacted] overloaded overloaded"),
                "{message}"
            );
            assert!(message.chars().count() <= 301, "{} chars", message.len());
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
}

#[tokio::test]
async fn a_chunk_that_is_not_json_is_malformed() {
    let body = [
        text("Hi"),
        "data: {\"choices\": [\n\n".to_owned(),
        text(" there"),
    ]
    .concat();
    let (texts, end) = answer(sse(body)).await;
    assert_eq!(texts, ["Hi"]);
    assert!(
        matches!(error(end), GenerateError::Malformed(_)),
        "a broken chunk ends the reply"
    );
}

#[tokio::test]
async fn a_response_that_is_not_an_event_stream_is_malformed() {
    let body = json!({"choices": [{"message": {"content": "Hi"}}]});
    let (texts, end) = answer(ResponseTemplate::new(200).set_body_json(body)).await;
    assert!(texts.is_empty());
    assert!(matches!(error(end), GenerateError::Malformed(_)));
}

#[tokio::test]
async fn an_error_event_fails_the_reply_without_the_key() {
    let failure = json!({"error": {"message": format!("model overloaded for {API_KEY}")}});
    let body = [text("Hi"), event(&failure), text(" there")].concat();
    let (texts, end) = answer(sse(body)).await;
    assert_eq!(texts, ["Hi"]);
    let error = error(end);
    assert_no_key(&error);
    match error {
        GenerateError::Failed(message) => {
            assert_eq!(message, "model overloaded for [redacted]");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let elsewhere = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(sse(DONE))
        .expect(0)
        .mount(&elsewhere)
        .await;
    let location = format!("{}/v1/chat/completions", elsewhere.uri());
    let response = ResponseTemplate::new(307).insert_header("location", location.as_str());
    let (texts, end) = answer(response).await;
    assert!(texts.is_empty());
    assert!(
        matches!(
            error(end),
            GenerateError::Rejected { status: 307, message } if message == "no explanation given"
        ),
        "a redirect is refused"
    );
    elsewhere.verify().await;
}

#[tokio::test]
async fn a_refused_connection_is_unavailable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let generator = generator(config(&format!("http://{address}/v1")));
    let (texts, end) = texts_then(items(&generator, user_asks("Hi?")).await);
    assert!(texts.is_empty());
    let error = error(end);
    assert!(matches!(error, GenerateError::Unavailable(_)), "{error:?}");
    assert_no_key(&error);
}

/// The answer to "Hi?" of a scripted upstream, with the timeouts given.
/// Only the timeout a test is about is short, so a slow machine cannot
/// trip another one.
async fn scripted_answer(script: Vec<Step>, first_token: Duration, idle: Duration) -> Answer {
    let upstream = ScriptedUpstream::start(script).await;
    let mut config = config(&upstream.base());
    config.first_token_timeout = first_token;
    config.idle_timeout = idle;
    texts_then(items(&generator(config), user_asks("Hi?")).await)
}

#[tokio::test]
async fn an_upstream_that_never_answers_times_out() {
    let (texts, end) = scripted_answer(vec![Step::Hang], IMPATIENT, PATIENT).await;
    assert!(texts.is_empty());
    assert!(matches!(
        error(end),
        GenerateError::FirstTokenTimeout(timeout) if timeout == IMPATIENT
    ));
}

#[tokio::test]
async fn an_upstream_that_answers_but_writes_no_text_times_out() {
    let script = vec![
        Step::Write(STREAM_HEAD.to_owned()),
        Step::Write(role()),
        Step::Write(": still thinking\n\n".to_owned()),
        Step::Hang,
    ];
    let (texts, end) = scripted_answer(script, IMPATIENT, PATIENT).await;
    assert!(texts.is_empty());
    assert!(matches!(error(end), GenerateError::FirstTokenTimeout(_)));
}

#[tokio::test]
async fn a_stall_between_chunks_times_out() {
    let script = vec![
        Step::Write(STREAM_HEAD.to_owned()),
        Step::Write(text("Hello")),
        Step::Hang,
    ];
    let (texts, end) = scripted_answer(script, PATIENT, IMPATIENT).await;
    assert_eq!(texts, ["Hello"]);
    assert!(matches!(
        error(end),
        GenerateError::Stalled(timeout) if timeout == IMPATIENT
    ));
}

#[tokio::test]
async fn events_without_text_do_not_hold_a_reply_open() {
    let script = vec![
        Step::Write(STREAM_HEAD.to_owned()),
        Step::Write(text("Hello")),
        Step::Drip(role(), IMPATIENT / 6),
    ];
    let reply = tokio::time::timeout(PATIENT, scripted_answer(script, PATIENT, IMPATIENT));
    let (texts, end) = reply.await.expect("the reply must not go on forever");
    assert_eq!(texts, ["Hello"]);
    assert!(matches!(error(end), GenerateError::Stalled(_)));
}

#[tokio::test]
async fn silence_after_the_finish_reason_ends_the_reply() {
    let script = vec![
        Step::Write(STREAM_HEAD.to_owned()),
        Step::Write(text("Hello")),
        Step::Write(finish("stop")),
        Step::Hang,
    ];
    let (texts, end) = scripted_answer(script, PATIENT, IMPATIENT).await;
    assert_eq!(texts, ["Hello"]);
    assert_eq!(ok(end), finished(Some(FinishReason::Stop), None));
}

#[tokio::test]
async fn a_connection_broken_mid_reply_is_unavailable() {
    let script = vec![
        Step::Write(CHUNKED_HEAD.to_owned()),
        Step::Write(http_chunk(&text("Hello"))),
        Step::Write("40\r\ndata: {\"choi".to_owned()),
    ];
    let (texts, end) = scripted_answer(script, PATIENT, PATIENT).await;
    assert_eq!(texts, ["Hello"]);
    assert!(matches!(error(end), GenerateError::Unavailable(_)));
}

#[tokio::test]
async fn a_reply_past_the_maximum_is_too_large() {
    let server = upstream(sse(
        [text("Hello"), text(" world"), DONE.to_owned()].concat()
    ))
    .await;
    let mut config = config(&base(&server));
    config.max_reply_bytes = 10;
    let generator = generator(config);

    let (texts, end) = texts_then(items(&generator, user_asks("Hi?")).await);
    assert_eq!(texts, ["Hello"]);
    assert!(matches!(error(end), GenerateError::TooLarge { limit: 10 }));

    let mut continuation = user_asks("Hi?");
    continuation.continue_from = "Hi there".to_owned();
    let (texts, end) = texts_then(items(&generator, continuation).await);
    assert!(
        texts.is_empty(),
        "the continued text counts toward the maximum"
    );
    assert!(matches!(error(end), GenerateError::TooLarge { limit: 10 }));
}

#[tokio::test]
async fn an_endless_event_is_too_large_before_it_ends() {
    let script = vec![
        Step::Write(STREAM_HEAD.to_owned()),
        Step::Write(format!("data: {}", "x".repeat(200 * 1024))),
        Step::Hang,
    ];
    let upstream = ScriptedUpstream::start(script).await;
    let mut config = config(&upstream.base());
    config.max_reply_bytes = 1024;
    let (texts, end) = texts_then(items(&generator(config), user_asks("Hi?")).await);
    assert!(texts.is_empty());
    assert!(matches!(
        error(end),
        GenerateError::TooLarge { limit: 1024 }
    ));
}

#[tokio::test]
async fn the_request_carries_the_model_history_temperature_and_key() {
    let server = upstream(sse([text("Fine."), DONE.to_owned()].concat())).await;
    let generator = generator(config(&format!("{}/v1/", server.uri())));
    let request = ReplyRequest {
        history: vec![
            Turn::new(Speaker::System, "Be brief."),
            Turn::new(Speaker::User, "How are you?"),
            Turn::new(Speaker::Assistant, "Well, thanks."),
            Turn::new(Speaker::User, "And now?"),
        ],
        temperature: Some(0.7),
        continue_from: String::new(),
    };
    let (texts, _) = texts_then(items(&generator, request).await);
    assert_eq!(texts, ["Fine."]);

    let requests = server.received_requests().await.unwrap();
    let [sent] = requests.as_slice() else {
        panic!("expected one request, got {}", requests.len());
    };
    assert_eq!(
        sent.url.path(),
        COMPLETIONS,
        "a trailing slash is not doubled"
    );
    let header = |name: &str| sent.headers.get(name).and_then(|value| value.to_str().ok());
    assert_eq!(
        header("authorization"),
        Some(format!("Bearer {API_KEY}").as_str())
    );
    assert_eq!(header("accept"), Some("text/event-stream"));
    assert_eq!(
        sent.body_json::<Value>().unwrap(),
        json!({
            "model": MODEL,
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "How are you?"},
                {"role": "assistant", "content": "Well, thanks."},
                {"role": "user", "content": "And now?"},
            ],
            "stream": true,
            "stream_options": {"include_usage": true},
            "temperature": 0.7,
        })
    );
}

#[tokio::test]
async fn a_continuation_sends_the_text_so_far_and_streams_only_what_follows() {
    let server = upstream(sse(
        [text(" caching"), text(" stores."), DONE.to_owned()].concat()
    ))
    .await;
    let generator = generator(config(&base(&server)));
    let mut request = user_asks("Explain Redis caching.");
    request.continue_from = "Redis".to_owned();
    let (texts, end) = texts_then(items(&generator, request).await);
    assert_eq!(texts, [" caching", " stores."]);
    assert_eq!(ok(end), finished(None, None));

    let sent: Value = server.received_requests().await.unwrap()[0]
        .body_json()
        .unwrap();
    assert_eq!(
        sent["messages"],
        json!([
            {"role": "user", "content": "Explain Redis caching."},
            {"role": "assistant", "content": "Redis"},
        ])
    );
    assert!(
        sent.get("temperature").is_none(),
        "no temperature means the model's default"
    );
}

#[tokio::test]
async fn without_a_key_no_authorization_is_sent() {
    let server = upstream(sse(DONE)).await;
    let mut config = config(&base(&server));
    config.api_key = None;
    let (_, end) = texts_then(items(&generator(config), user_asks("Hi?")).await);
    assert_eq!(ok(end), finished(None, None));
    let requests = server.received_requests().await.unwrap();
    assert!(requests[0].headers.get("authorization").is_none());
}

#[tokio::test]
async fn the_key_is_never_shown() {
    let config = config("http://127.0.0.1:9/v1");
    assert!(!format!("{config:?}").contains(API_KEY));
    let generator = generator(config);
    let shown = format!("{generator:?}");
    assert!(!shown.contains(API_KEY), "{shown}");
    assert!(shown.contains(MODEL), "{shown}");
}

#[tokio::test]
async fn bad_configurations_are_refused_at_start_up() {
    let url = |url: &str| Url::parse(url).unwrap();
    let refused = |config: OpenAiConfig| OpenAiCompatibleGenerator::new(config).unwrap_err();

    let config = OpenAiConfig::new(url("ftp://example.test/v1"), MODEL, None);
    assert!(matches!(refused(config), ConfigError::UnsupportedScheme(scheme) if scheme == "ftp"));

    let config = OpenAiConfig::new(url("https://me:sk-secret@example.test/v1"), MODEL, None);
    assert!(matches!(refused(config), ConfigError::CredentialsInUrl));

    let config = OpenAiConfig::new(url("http://127.0.0.1/v1"), " ", None);
    assert!(matches!(refused(config), ConfigError::MissingModel));

    let key = "sk-line\nbreak";
    let config = OpenAiConfig::new(url("http://127.0.0.1/v1"), MODEL, Some(ApiKey::new(key)));
    let error = refused(config);
    assert!(matches!(error, ConfigError::InvalidApiKey));
    assert!(!format!("{error} {error:?}").contains("sk-line"));
}
