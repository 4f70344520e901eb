//! Conversations end to end, on both configurations: the REST resources,
//! replies streamed as the seed's Server-Sent Events, resuming, stopping,
//! retries, and who may see what.

#[macro_use]
mod support;

use std::time::Duration;

use futures::StreamExt as _;
use reqwest::StatusCode;
use reqwest::header;
use serde_json::{Value, json};
use support::{Anonymous, Backend, SseEvent, TestApp, events_of, header_of, json_of, parse_events};
use waiter_assistant::BuiltInGenerator;
use waiter_ports::conversations::{ReplyChunk, ReplyGenerator, ReplyRequest, Speaker, Turn};

/// The built-in assistant's whole reply to a conversation of user messages.
async fn built_in_reply(said: &[&str]) -> String {
    let history = said
        .iter()
        .map(|text| Turn::new(Speaker::User, *text))
        .collect();
    let mut stream = BuiltInGenerator::new(Duration::ZERO).generate(ReplyRequest::new(history));
    let mut reply = String::new();
    while let Some(chunk) = stream.next().await {
        if let ReplyChunk::Text(text) = chunk.expect("the built-in generator never fails") {
            reply.push_str(&text);
        }
    }
    reply
}

fn user_message(text: &str) -> Value {
    json!({"role": "user", "content": {"content_type": "text", "parts": [text]}})
}

/// A new, empty conversation of `who`; its JSON.
async fn conversation(app: &TestApp, who: &str) -> Value {
    let response = app
        .create_conversation(who, json!({"title": "Testing"}))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    json_of(response).await
}

fn conversation_id(conversation: &Value) -> &str {
    conversation["id"].as_str().expect("a conversation id")
}

/// The text a stream's `append` deltas add up to.
fn appended_text(events: &[SseEvent]) -> String {
    events
        .iter()
        .filter(|event| event.event.as_deref() == Some("delta"))
        .filter_map(|event| {
            let ops = event.json()["v"].as_array()?.clone();
            Some(
                ops.iter()
                    .filter(|op| op["o"] == "append" && op["p"] == "/message/content/parts/0")
                    .filter_map(|op| op["v"].as_str().map(str::to_owned))
                    .collect::<String>(),
            )
        })
        .collect()
}

/// The `type` of a data-only event, the `event:` name otherwise.
fn kind(event: &SseEvent) -> String {
    match &event.event {
        Some(name) if name != "delta" => name.clone(),
        Some(_) => {
            let data = event.json();
            match data["o"].as_str() {
                Some(op) => format!("delta:{op}"),
                None => {
                    let first = &data["v"][0];
                    format!(
                        "delta:{}:{}",
                        first["o"].as_str().unwrap(),
                        first["p"].as_str().unwrap()
                    )
                }
            }
        }
        None if event.data == "[DONE]" => "[DONE]".to_owned(),
        None => event.json()["type"].as_str().unwrap().to_owned(),
    }
}

/// Polls the conversation until its last message is no longer in progress.
async fn settled(app: &TestApp, who: &str, id: &str) -> Value {
    for _ in 0..200 {
        let detail = json_of(app.get_conversation(who, id).await).await;
        let last = detail["messages"].as_array().unwrap().last().cloned();
        if last.is_some_and(|message| message["status"] != "in_progress") {
            return detail;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the reply never ended");
}

async fn a_streamed_reply_is_the_seeds_event_sequence(app: &TestApp) {
    let ann = app.member("ann@example.com").await;
    let id = conversation_id(&conversation(app, &ann).await).to_owned();
    let text = "Can you explain Redis caching?";
    let response = app
        .send_message(&ann, &id, user_message(text))
        .event_stream()
        .await;
    assert_eq!(header_of(&response, header::CACHE_CONTROL), "no-cache");
    assert_eq!(header_of(&response, "x-accel-buffering"), "no");
    let events = events_of(response).await;

    let kinds: Vec<String> = events.iter().map(kind).collect();
    let chunks = kinds
        .iter()
        .filter(|k| *k == "delta:append:/message/content/parts/0")
        .count();
    assert!(chunks > 5, "{kinds:?}");
    let mut expected = vec![
        "delta_encoding",
        "resume_conversation_token",
        "input_message",
        "delta:add",
        "message_marker",
    ];
    expected.extend(std::iter::repeat_n(
        "delta:append:/message/content/parts/0",
        chunks,
    ));
    expected.extend([
        "delta:replace:/message/status",
        "message_stream_complete",
        "[DONE]",
    ]);
    assert_eq!(kinds, expected);
    let ids: Vec<u64> = events
        .iter()
        .map(|event| event.id.expect("every event has an id"))
        .collect();
    assert_eq!(ids, (1..=events.len() as u64).collect::<Vec<_>>());
    assert_eq!(events[0].data, "\"v1\"");
    let input = &events[2].json()["input_message"];
    assert_eq!(input["author"]["role"], "user");
    assert_eq!(input["content"]["parts"][0], text);
    let added = &events[3].json()["v"]["message"];
    assert_eq!(added["status"], "in_progress");
    assert_eq!(
        added["metadata"]["model_slug"],
        BuiltInGenerator::MODEL_SLUG
    );
    assert_eq!(added["metadata"]["parent_id"], input["id"]);
    let ended = &events[events.len() - 3].json()["v"];
    assert_eq!(ended[0]["v"], "finished_successfully");
    assert_eq!(ended[1]["p"], "/message/end_turn");

    let reply = built_in_reply(&[text]).await;
    assert_eq!(appended_text(&events), reply);
    let detail = json_of(app.get_conversation(&ann, &id).await).await;
    let messages = detail["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["content"]["parts"][0], text);
    assert_eq!(messages[1]["role"], "assistant");
    assert_eq!(messages[1]["status"], "finished_successfully");
    assert_eq!(messages[1]["content"]["parts"][0], reply.as_str());
    assert_eq!(messages[1]["parent_id"], messages[0]["id"]);
}

async fn conversations_are_listed_renamed_and_deleted(app: &TestApp) {
    let ann = app.member("ann@example.com").await;
    let first = conversation(app, &ann).await;
    // The app's clock stands still unless moved: order the two by time, not by chance.
    app.clock.advance(Duration::from_secs(1));
    let response = app
        .create_conversation(&ann, json!({"message": user_message("What is a B-tree?")}))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let second = json_of(response).await;
    let second_id = second["conversation"]["id"].as_str().unwrap().to_owned();
    assert_eq!(second["conversation"]["title"], "What is a B-tree?");
    assert_eq!(second["message"]["status"], "finished_successfully");

    let page = json_of(app.list_conversations(&ann, "?limit=1").await).await;
    assert_eq!(page["total"], 2);
    assert_eq!(page["limit"], 1);
    assert_eq!(page["offset"], 0);
    assert_eq!(page["items"][0]["id"], second_id.as_str());
    let last = page["items"][0]["last_message"].as_str().unwrap();
    assert!(last.starts_with("You wrote:"), "{last}");
    let page = json_of(app.list_conversations(&ann, "?limit=1&offset=1").await).await;
    assert_eq!(page["items"][0]["id"], first["id"]);

    let first_id = conversation_id(&first);
    let response = app.get_conversation(&ann, first_id).await;
    let etag = header_of(&response, header::ETAG).to_owned();
    let renamed = app
        .update_conversation(&ann, first_id, json!({"title": "Renamed"}))
        .if_match(&etag)
        .await;
    assert_eq!(renamed.status(), StatusCode::OK);
    let stale = app
        .update_conversation(&ann, first_id, json!({"title": "Again"}))
        .if_match(&etag)
        .await;
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
    let detail = json_of(app.get_conversation(&ann, first_id).await).await;
    assert_eq!(detail["title"], "Renamed");

    assert_eq!(
        app.delete_conversation(&ann, first_id).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.get_conversation(&ann, first_id).await.status(),
        StatusCode::NOT_FOUND
    );
    let page = json_of(app.list_conversations(&ann, "").await).await;
    assert_eq!(page["total"], 1);
}

async fn a_reply_outlives_its_connection(app: &TestApp) {
    let ann = app.member("ann@example.com").await;
    let id = conversation_id(&conversation(app, &ann).await).to_owned();
    let text = "Tell me about write-ahead logs";
    let response = app
        .send_message(&ann, &id, user_message(text))
        .event_stream()
        .await;
    let mut body = response.bytes_stream();
    let first = body.next().await.expect("a first chunk").expect("readable");
    assert!(!first.is_empty());
    drop(body);

    let detail = settled(app, &ann, &id).await;
    let reply = &detail["messages"][1];
    assert_eq!(reply["status"], "finished_successfully");
    assert_eq!(
        reply["content"]["parts"][0],
        built_in_reply(&[text]).await.as_str()
    );
}

async fn a_stopped_reply_keeps_its_text(app: &TestApp) {
    let ann = app.member("ann@example.com").await;
    let id = conversation_id(&conversation(app, &ann).await).to_owned();
    let text = "Explain consensus protocols in detail";
    let response = app
        .send_message(&ann, &id, user_message(text))
        .event_stream()
        .await;
    let mut body = response.bytes_stream();
    let mut received = String::new();
    while !received.contains("\"o\":\"append\"") {
        let chunk = body.next().await.expect("more events").expect("readable");
        received.push_str(&String::from_utf8_lossy(&chunk));
    }
    let busy = app
        .send_message(&ann, &id, user_message("And another thing"))
        .await;
    assert_eq!(busy.status(), StatusCode::CONFLICT);

    assert_eq!(
        app.stop_generation(&ann, &id).await.status(),
        StatusCode::NO_CONTENT
    );
    while let Some(chunk) = body.next().await {
        received.push_str(&String::from_utf8_lossy(&chunk.expect("readable")));
    }
    let events = parse_events(&received);
    let kinds: Vec<String> = events.iter().map(kind).collect();
    assert_eq!(
        &kinds[kinds.len() - 3..],
        [
            "delta:replace:/message/status",
            "message_stream_complete",
            "[DONE]"
        ]
    );
    assert_eq!(events[events.len() - 3].json()["v"][0]["v"], "interrupted");

    let detail = json_of(app.get_conversation(&ann, &id).await).await;
    let reply = &detail["messages"][1];
    assert_eq!(reply["status"], "interrupted");
    let stored = reply["content"]["parts"][0].as_str().unwrap();
    let full = built_in_reply(&[text]).await;
    assert!(stored.len() < full.len(), "{stored}");
    assert!(full.starts_with(stored), "{stored}");
    assert_eq!(appended_text(&events), stored);
    assert_eq!(
        app.stop_generation(&ann, &id).await.status(),
        StatusCode::NOT_FOUND
    );
}

async fn a_resumed_stream_loses_and_repeats_nothing(app: &TestApp) {
    let ann = app.member("ann@example.com").await;
    let id = conversation_id(&conversation(app, &ann).await).to_owned();
    let all = events_of(
        app.send_message(&ann, &id, user_message("Resume me"))
            .event_stream()
            .await,
    )
    .await;
    let token = all[1].json()["token"].as_str().unwrap().to_owned();

    for after in [0, 4, 7, all.len() as u64 - 1] {
        let resumed = events_of(
            app.resume_stream(&ann, &id, None)
                .event_stream()
                .last_event_id(after)
                .await,
        )
        .await;
        assert_eq!(resumed, all[after as usize..], "after {after}");
    }
    let by_token = events_of(
        app.resume_stream(Anonymous, &id, Some(&token))
            .last_event_id(5)
            .await,
    )
    .await;
    assert_eq!(by_token, all[5..]);
    let nothing_left = app
        .resume_stream(&ann, &id, None)
        .last_event_id(all.len() as u64)
        .await;
    assert_eq!(nothing_left.status(), StatusCode::NO_CONTENT);
    let forged = app.resume_stream(Anonymous, &id, Some("not-a-token")).await;
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
}

async fn a_retried_send_starts_no_second_reply(app: &TestApp) {
    let ann = app.member("ann@example.com").await;
    let id = conversation_id(&conversation(app, &ann).await).to_owned();
    let mut message = user_message("Only once, please");
    message["id"] = json!("msg_001");
    let first = app.send_message(&ann, &id, &message).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first = json_of(first).await;
    assert_eq!(first["input_message"]["id"], "msg_001");
    let again = app.send_message(&ann, &id, &message).await;
    assert!(again.status().is_success(), "{}", again.status());
    assert_eq!(header_of(&again, "idempotent-replayed"), "true");
    let again = json_of(again).await;
    assert_eq!(again["message"]["id"], first["message"]["id"]);

    let keyed = user_message("Keyed, once");
    let first = json_of(
        app.send_message(&ann, &id, &keyed)
            .idempotency_key("send-1")
            .await,
    )
    .await;
    let again = app
        .send_message(&ann, &id, &keyed)
        .idempotency_key("send-1")
        .await;
    assert_eq!(header_of(&again, "idempotent-replayed"), "true");
    assert_eq!(
        json_of(again).await["input_message"]["id"],
        first["input_message"]["id"]
    );

    let detail = json_of(app.get_conversation(&ann, &id).await).await;
    assert_eq!(detail["messages"].as_array().unwrap().len(), 4);
}

/// A send that starts a conversation, retried (the seed's first request,
/// with its `"id": "msg_001"`, or a start with an `Idempotency-Key`), finds
/// the conversation the first one started: no second conversation, no
/// second reply.
async fn a_retried_first_send_starts_no_second_conversation(app: &TestApp) {
    let ann = app.member("ann@example.com").await;
    let seed_body = json!({
        "messages": [{"id": "msg_001", "role": "user", "content": {"content_type": "text", "parts": ["Start once"]}}],
    });
    let first = events_of(app.seed_send(&ann, seed_body.clone()).await).await;
    let id = first[1].json()["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let again = app.seed_send(&ann, seed_body).await;
    assert_eq!(header_of(&again, "idempotent-replayed"), "true");
    let again = events_of(again).await;
    assert_eq!(again[1].json()["conversation_id"], id.as_str());
    assert_eq!(appended_text(&again), appended_text(&first));

    let body = json!({"message": user_message("Start once, keyed")});
    let started = app
        .create_conversation(&ann, &body)
        .idempotency_key("start-1")
        .await;
    assert_eq!(started.status(), StatusCode::CREATED);
    let started = json_of(started).await;
    let retried = app
        .create_conversation(&ann, &body)
        .idempotency_key("start-1")
        .await;
    assert!(retried.status().is_success(), "{}", retried.status());
    assert_eq!(header_of(&retried, "idempotent-replayed"), "true");
    let retried = json_of(retried).await;
    assert_eq!(retried["conversation"]["id"], started["conversation"]["id"]);
    assert_eq!(retried["message"]["id"], started["message"]["id"]);

    let list = json_of(app.list_conversations(&ann, "").await).await;
    assert_eq!(list["total"], 2);
    for item in list["items"].as_array().unwrap() {
        let id = item["id"].as_str().unwrap();
        let detail = json_of(app.get_conversation(&ann, id).await).await;
        assert_eq!(detail["messages"].as_array().unwrap().len(), 2, "{detail}");
    }
}

async fn another_accounts_conversation_does_not_exist(app: &TestApp) {
    let ann = app.member("ann@example.com").await;
    let bob = app.member("bob@example.com").await;
    let id = conversation_id(&conversation(app, &ann).await).to_owned();
    let not_found = [
        app.get_conversation(&bob, &id).await,
        app.update_conversation(&bob, &id, json!({"title": "Mine"}))
            .await,
        app.send_message(&bob, &id, user_message("Hi")).await,
        app.stop_generation(&bob, &id).await,
        app.resume_stream(&bob, &id, None).await,
        app.seed_detail(&bob, &id).await,
        app.delete_conversation(&bob, &id).await,
    ];
    for response in not_found {
        assert_eq!(
            response.status(),
            StatusCode::NOT_FOUND,
            "{}",
            response.url()
        );
    }
    assert_eq!(
        json_of(app.list_conversations(&bob, "").await).await["total"],
        0
    );
    let detail = json_of(app.get_conversation(&ann, &id).await).await;
    assert_eq!(detail["title"], "Testing");
    assert_eq!(detail["messages"], json!([]));
    assert_eq!(
        app.list_conversations(Anonymous, "").await.status(),
        StatusCode::UNAUTHORIZED
    );
}

async fn the_seeds_own_endpoints_work(app: &TestApp) {
    let ann = app.member("ann@example.com").await;
    let text = "Hello! Can you explain Redis caching?";
    let events = events_of(
        app.seed_send(
            &ann,
            json!({
                "user_id": "user_123",
                "messages": [{"id": "msg_001", "role": "user", "content": {"content_type": "text", "parts": [text]}}],
                "metadata": {"temperature": 0.7}
            }),
        )
        .await,
    )
    .await;
    let id = events[1].json()["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(events.last().unwrap().data, "[DONE]");
    assert_eq!(appended_text(&events), built_in_reply(&[text]).await);

    let events = events_of(
        app.seed_send(
            &ann,
            json!({"conversation_id": id, "messages": [{"role": "user", "content": {"content_type": "text", "parts": ["And Memcached?"]}}]}),
        )
        .await,
    )
    .await;
    assert_eq!(
        appended_text(&events),
        built_in_reply(&[text, "And Memcached?"]).await
    );

    let list = json_of(
        app.seed_list(&ann, "?offset=0&limit=20&order=updated")
            .await,
    )
    .await;
    assert_eq!(list["total"], 1);
    assert_eq!(list["items"][0]["id"], id.as_str());
    let detail = json_of(app.seed_detail(&ann, &id).await).await;
    assert_eq!(detail["conversation_id"], id.as_str());
    assert_eq!(detail["messages"].as_array().unwrap().len(), 4);
    assert_eq!(detail["messages"][0]["id"], "msg_001");
}

async fn bad_messages_are_refused_clearly(app: &TestApp) {
    let ann = app.member("ann@example.com").await;
    let id = conversation_id(&conversation(app, &ann).await).to_owned();
    let too_long = "x".repeat(32 * 1024 + 1);
    for body in [
        user_message("   "),
        user_message(&too_long),
        json!({"role": "assistant", "content": {"content_type": "text", "parts": ["I am the model"]}}),
        json!({"role": "user", "content": {"content_type": "text", "parts": ["hot"]}, "metadata": {"temperature": 9}}),
        json!({"role": "user", "content": {"content_type": "text", "parts": ["bad id"]}, "id": "a/b"}),
    ] {
        let response = app.send_message(&ann, &id, &body).await;
        assert!(
            response.status().is_client_error(),
            "{body}: {}",
            response.status()
        );
        assert_eq!(
            header_of(&response, header::CONTENT_TYPE),
            "application/problem+json"
        );
    }
    let detail = json_of(app.get_conversation(&ann, &id).await).await;
    assert_eq!(detail["messages"], json!([]));
}

on_both_backends!(
    a_streamed_reply_is_the_seeds_event_sequence,
    conversations_are_listed_renamed_and_deleted,
    a_reply_outlives_its_connection,
    a_stopped_reply_keeps_its_text,
    a_resumed_stream_loses_and_repeats_nothing,
    a_retried_send_starts_no_second_reply,
    a_retried_first_send_starts_no_second_conversation,
    another_accounts_conversation_does_not_exist,
    the_seeds_own_endpoints_work,
    bad_messages_are_refused_clearly,
);

/// A conversation holds at most `WAITER_CONVERSATION_MAX_MESSAGES` messages.
#[actix_web::test]
async fn a_full_conversation_refuses_more() {
    let Some(app) =
        TestApp::spawn_with(Backend::Sqlite, &[("--conversation-max-messages", "2")]).await
    else {
        return;
    };
    let ann = app.member("ann@example.com").await;
    let id = conversation_id(&conversation(&app, &ann).await).to_owned();
    let first = app.send_message(&ann, &id, user_message("One")).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let full = app.send_message(&ann, &id, user_message("Two")).await;
    assert_eq!(full.status(), StatusCode::CONFLICT);
    assert_eq!(
        header_of(&full, header::CONTENT_TYPE),
        "application/problem+json"
    );
    app.cleanup().await;
}

/// An account has at most `WAITER_REPLIES_IN_FLIGHT` replies in progress
/// across its conversations: one more is 429 with `Retry-After: 1`, and
/// stores nothing; once one ends, the next send passes.
#[actix_web::test]
async fn an_account_has_at_most_its_replies_in_flight() {
    let Some(app) = TestApp::spawn_with(
        Backend::Sqlite,
        &[("--replies-in-flight", "1"), ("--assistant-delay", "100ms")],
    )
    .await
    else {
        return;
    };
    let ann = app.member("ann@example.com").await;
    let bob = app.member("bob@example.com").await;
    let first = conversation_id(&conversation(&app, &ann).await).to_owned();
    let second = conversation_id(&conversation(&app, &ann).await).to_owned();
    let streaming = app
        .send_message(&ann, &first, user_message("Take your time"))
        .event_stream()
        .await;
    assert_eq!(streaming.status(), StatusCode::OK);

    let refused = app
        .send_message(&ann, &second, user_message("Me too"))
        .await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header_of(&refused, header::RETRY_AFTER), "1");
    assert_eq!(
        header_of(&refused, header::CONTENT_TYPE),
        "application/problem+json"
    );
    let started = app
        .create_conversation(&ann, json!({"message": user_message("A new one")}))
        .await;
    assert_eq!(started.status(), StatusCode::TOO_MANY_REQUESTS);
    let detail = json_of(app.get_conversation(&ann, &second).await).await;
    assert_eq!(detail["messages"], json!([]));
    assert_eq!(
        json_of(app.list_conversations(&ann, "").await).await["total"],
        2,
        "a refused start leaves no conversation behind"
    );
    let theirs = conversation_id(&conversation(&app, &bob).await).to_owned();
    let others = app
        .send_message(&bob, &theirs, user_message("Mine"))
        .event_stream()
        .await;
    assert_eq!(others.status(), StatusCode::OK, "another account's limit");
    drop(others);

    drop(streaming);
    assert_eq!(
        app.stop_generation(&ann, &first).await.status(),
        StatusCode::NO_CONTENT
    );
    let passes = app
        .send_message(&ann, &second, user_message("Now?"))
        .event_stream()
        .await;
    assert_eq!(passes.status(), StatusCode::OK);
    drop(passes);
    app.cleanup().await;
}

/// Replies show in `/metrics`: counted by outcome, the time to their first
/// text as a histogram with its own buckets, and the replies in progress.
#[actix_web::test]
async fn replies_are_measured() {
    let Some(app) =
        TestApp::spawn_with(Backend::Sqlite, &[("--metrics-addr", "127.0.0.1:0")]).await
    else {
        return;
    };
    let ann = app.member("ann@example.com").await;
    let id = conversation_id(&conversation(&app, &ann).await).to_owned();
    let sent = app.send_message(&ann, &id, user_message("Count me")).await;
    assert_eq!(sent.status(), StatusCode::CREATED);
    let streamed = app
        .send_message(&ann, &id, user_message("Stream me"))
        .event_stream()
        .await;
    assert_eq!(events_of(streamed).await.last().unwrap().data, "[DONE]");

    let port = app.metrics_port.expect("metrics are served");
    // The recorder is the process's: other tests' replies count too. A
    // reply's duration and its stream's are recorded as they wind down,
    // just after their last event: scrape until they are in.
    let expected = [
        "waiter_replies_total{outcome=\"started\"}",
        "waiter_replies_total{outcome=\"finished\"}",
        "waiter_reply_first_text_seconds_bucket{le=\"60\"}",
        "waiter_replies_active",
        "waiter_reply_duration_seconds_count",
        "waiter_event_streams_open",
        "waiter_event_stream_duration_seconds_count",
    ];
    let mut scrape = String::new();
    for _ in 0..50 {
        scrape = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .expect("scrape")
            .text()
            .await
            .expect("scrape body");
        if expected.iter().all(|line| scrape.contains(line)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for line in expected {
        assert!(scrape.contains(line), "{line} in:\n{scrape}");
    }
    app.cleanup().await;
}

/// A reply streamed by one instance can be followed from another sharing
/// PostgreSQL and Redis.
#[actix_web::test]
async fn a_reply_is_followed_from_another_instance() {
    let Some(app) = TestApp::spawn(Backend::PostgresRedis).await else {
        return;
    };
    let other = app.twin().await;
    let ann = app.member("ann@example.com").await;
    let id = conversation_id(&conversation(&app, &ann).await).to_owned();
    let all = events_of(
        app.send_message(&ann, &id, user_message("Across instances"))
            .event_stream()
            .await,
    )
    .await;
    let resumed = events_of(other.resume_stream(&ann, &id, None).last_event_id(3).await).await;
    assert_eq!(resumed, all[3..]);
    app.cleanup().await;
}
