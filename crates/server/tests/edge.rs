//! The production edge end to end, over real HTTP: rate limits (a burst, the
//! sign-in lockout case, sign-ups, refreshes, messages, whom a limit counts), the
//! client address behind trusted proxies, `/metrics` on its own listener,
//! and HTTPS with a certificate made by the test.
//!
//! Each scenario runs in both configurations, in-process limits with SQLite
//! and limits shared through Redis with PostgreSQL, with its own limits.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::Connection as _;
use support::{Backend, PASSWORD, TestApp, access, header_of, json_of, refresh};

/// Runs each scenario once per configuration, on an app with the flags it names.
macro_rules! on_both_backends_with {
    ($($scenario:ident: $flags:expr;)*) => {
        mod sqlite {
            $(#[actix_web::test]
            async fn $scenario() {
                if let Some(app) = crate::TestApp::spawn_with(crate::Backend::Sqlite, $flags).await {
                    super::$scenario(&app).await;
                    app.cleanup().await;
                }
            })*
        }
        mod postgres_redis {
            $(#[actix_web::test]
            async fn $scenario() {
                if let Some(app) = crate::TestApp::spawn_with(crate::Backend::PostgresRedis, $flags).await {
                    super::$scenario(&app).await;
                    app.cleanup().await;
                }
            })*
        }
    };
}

/// The test's proxy is loopback: `X-Forwarded-For` names the client.
const BEHIND_A_PROXY: (&str, &str) = ("--trusted-proxies", "127.0.0.1/32");

on_both_backends_with! {
    a_burst_over_the_client_limit_is_refused_with_the_ratelimit_fields:
        &[("--rate-limit-client", "5/1m")];
    without_trusted_proxies_a_forwarded_address_changes_nothing:
        &[("--rate-limit-client", "2/1m")];
    behind_a_trusted_proxy_each_client_address_has_its_own_limit:
        &[crate::BEHIND_A_PROXY, ("--rate-limit-client", "2/1m")];
    a_signed_in_client_is_counted_by_account_wherever_it_calls_from:
        &[crate::BEHIND_A_PROXY, ("--rate-limit-client", "3/1m")];
    failed_sign_ins_from_elsewhere_never_lock_the_owner_out:
        &[crate::BEHIND_A_PROXY, ("--rate-limit-sign-in", "3/5m"), ("--rate-limit-sign-in-address", "8/5m")];
    a_successful_sign_in_resets_the_count_of_its_email_and_address:
        &[crate::BEHIND_A_PROXY, ("--rate-limit-sign-in", "3/5m")];
    sign_ups_are_limited_per_client_address:
        &[crate::BEHIND_A_PROXY, ("--rate-limit-sign-up", "2/1h")];
    refreshes_are_limited_per_session:
        &[crate::BEHIND_A_PROXY, ("--rate-limit-refresh", "2/1m")];
    messages_are_limited_per_account_on_every_route_that_sends_one:
        &[("--rate-limit-messages", "2/1m")];
    the_request_log_line_names_the_client_behind_a_trusted_proxy:
        &[crate::BEHIND_A_PROXY];
}

/// What every server of this test binary logs, as the JSON lines written in
/// production; installed once, for the whole process (the servers' workers
/// run on threads of their own).
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    Arc::clone(LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&logs);
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
            .json()
            .flatten_event(true)
            .with_span_list(false)
            .with_writer(move || Appender(Arc::clone(&sink)))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber");
        logs
    }))
}

struct Appender(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Appender {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The items of a structured-field list (`"a";q=1;w=2, "b";…`), by name,
/// each with its parameters.
fn items(field: &str) -> HashMap<String, HashMap<String, u64>> {
    field
        .split(',')
        .map(|item| {
            let mut parts = item.trim().split(';');
            let name = parts.next().unwrap().trim_matches('"').to_owned();
            let params = parts
                .map(|param| {
                    let (key, value) = param.split_once('=').unwrap();
                    (key.to_owned(), value.parse().unwrap())
                })
                .collect();
            (name, params)
        })
        .collect()
}

fn ratelimit(response: &reqwest::Response, policy: &str) -> (u64, u64) {
    let state = &items(header_of(response, "ratelimit"))[policy];
    (state["r"], state["t"])
}

fn ratelimit_policy(response: &reqwest::Response, policy: &str) -> (u64, u64) {
    let quota = &items(header_of(response, "ratelimit-policy"))[policy];
    (quota["q"], quota["w"])
}

/// Checks a 429: problem+json naming `policy`, an integer `Retry-After` of at
/// least a second, and the policy's state with nothing remaining.
async fn assert_limited(response: reqwest::Response, policy: &str) -> u64 {
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = header_of(&response, "retry-after")
        .parse()
        .expect("whole seconds");
    assert!(retry_after >= 1, "Retry-After: {retry_after}");
    assert_eq!(ratelimit(&response, policy).0, 0);
    assert_eq!(
        header_of(&response, "content-type"),
        "application/problem+json"
    );
    assert!(response.headers().get("x-ratelimit-limit").is_none());
    let problem = json_of(response).await;
    assert_eq!(problem["status"], 429);
    assert_eq!(problem["type"], "urn:waiter:problem:rate-limited");
    assert!(
        problem["detail"].as_str().unwrap().contains(policy),
        "{problem}"
    );
    retry_after
}

async fn a_burst_over_the_client_limit_is_refused_with_the_ratelimit_fields(app: &TestApp) {
    for expected_remaining in (0..5).rev() {
        let response = app.list_recent_books().await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(ratelimit_policy(&response, "client"), (5, 60));
        let (remaining, reset) = ratelimit(&response, "client");
        assert_eq!(remaining, expected_remaining);
        assert!((1..=60).contains(&reset), "t={reset}");
    }
    let refused = app.get_book("book_01JD0W5ZK3J2S8Q4V6X7Y9ZABC").await;
    assert_eq!(ratelimit_policy(&refused, "client"), (5, 60));
    let retry_after = assert_limited(refused, "client").await;
    assert!(
        retry_after <= 12,
        "one request fits every 12 s: {retry_after}"
    );

    // Every route is limited, the unknown ones too; the probes never are.
    assert_eq!(
        app.call(Method::GET, "/nowhere").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    let probe = app.liveness().await;
    assert_eq!(probe.status(), StatusCode::OK);
    assert!(probe.headers().get("ratelimit").is_none());
}

async fn without_trusted_proxies_a_forwarded_address_changes_nothing(app: &TestApp) {
    for address in ["203.0.113.1", "203.0.113.2"] {
        let response = app.list_recent_books().forwarded_for(address).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let refused = app.list_recent_books().forwarded_for("203.0.113.3").await;
    assert_limited(refused, "client").await;
}

async fn behind_a_trusted_proxy_each_client_address_has_its_own_limit(app: &TestApp) {
    for _ in 0..2 {
        let response = app.list_recent_books().forwarded_for("203.0.113.1").await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let refused = app.list_recent_books().forwarded_for("203.0.113.1").await;
    assert_limited(refused, "client").await;
    // A client forging a hop to the left of the one the proxy appended is still itself.
    let forged = app
        .list_recent_books()
        .forwarded_for("198.51.100.7, 203.0.113.1")
        .await;
    assert_eq!(forged.status(), StatusCode::TOO_MANY_REQUESTS);
    let other = app.list_recent_books().forwarded_for("203.0.113.2").await;
    assert_eq!(other.status(), StatusCode::OK);
    assert_eq!(ratelimit(&other, "client").0, 1);
}

async fn the_request_log_line_names_the_client_behind_a_trusted_proxy(app: &TestApp) {
    let logs = captured_logs();
    let id = format!("book_{}", ulid::Ulid::generate());
    let response = app.get_book(&id).forwarded_for("203.0.113.9").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let path = format!("/api/v1/books/{id}");
    let logs = String::from_utf8(logs.lock().unwrap().clone()).expect("UTF-8 lines");
    let line: Value = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["message"] == "request" && line["span"]["path"] == path.as_str())
        .expect("a request line for the call");
    assert_eq!(line["span"]["client_ip"], "203.0.113.9");
    assert_eq!(line["status"], 404);
    assert_eq!(line["route"], "/api/v1/books/{id}");
    assert!(line["span"]["request_id"].is_string());
}

async fn a_signed_in_client_is_counted_by_account_wherever_it_calls_from(app: &TestApp) {
    let body = json!({"email": "ann@example.com", "password": PASSWORD, "display_name": "Ann"});
    let signed_up = app.create_account(body).forwarded_for("192.0.2.1").await;
    assert_eq!(signed_up.status(), StatusCode::CREATED);
    let signed_in = app
        .create_session("ann@example.com", PASSWORD)
        .forwarded_for("192.0.2.2")
        .await;
    let token = access(&json_of(signed_in).await).to_owned();
    for address in ["203.0.113.1", "203.0.113.2", "203.0.113.3"] {
        let response = app.get_own_account(&token).forwarded_for(address).await;
        assert_eq!(response.status(), StatusCode::OK, "from {address}");
    }
    let refused = app
        .get_own_account(&token)
        .forwarded_for("203.0.113.4")
        .await;
    assert_limited(refused, "client").await;
    // The addresses themselves still have their own quota for anonymous calls.
    let anonymous = app.list_recent_books().forwarded_for("203.0.113.4").await;
    assert_eq!(anonymous.status(), StatusCode::OK);
    // An invalid token counts against the address, not an account.
    let forged = app
        .get_own_account("not.a.token")
        .forwarded_for("203.0.113.5")
        .await;
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(ratelimit(&forged, "client").0, 2);
}

async fn failed_sign_ins_from_elsewhere_never_lock_the_owner_out(app: &TestApp) {
    let owner = "203.0.113.10";
    let attacker = "198.51.100.66";
    let body = json!({"email": "victim@example.com", "password": PASSWORD, "display_name": "V"});
    assert_eq!(
        app.create_account(body).forwarded_for(owner).await.status(),
        StatusCode::CREATED
    );
    for _ in 0..3 {
        let failed = app
            .create_session("victim@example.com", "a wrong guess")
            .forwarded_for(attacker)
            .await;
        assert_eq!(failed.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(ratelimit_policy(&failed, "sign-in"), (3, 300));
        assert!(items(header_of(&failed, "ratelimit")).contains_key("sign-in-address"));
    }
    // The attacker is locked out of this account, even with the right password.
    let refused = app
        .create_session("victim@example.com", PASSWORD)
        .forwarded_for(attacker)
        .await;
    assert_limited(refused, "sign-in").await;
    // The owner, from their own address, is not.
    let owner_signs_in = app
        .create_session("victim@example.com", PASSWORD)
        .forwarded_for(owner)
        .await;
    assert_eq!(owner_signs_in.status(), StatusCode::CREATED);
    assert_eq!(header_of(&owner_signs_in, "cache-control"), "no-store");

    // Spraying other accounts from one address meets the per-address limit
    // (eight attempts, of which four were spent above).
    for i in 0..4 {
        let failed = app
            .create_session(&format!("someone{i}@example.com"), "a wrong guess")
            .forwarded_for(attacker)
            .await;
        assert_eq!(failed.status(), StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    let refused = app
        .create_session("someone-else@example.com", "a wrong guess")
        .forwarded_for(attacker)
        .await;
    assert_limited(refused, "sign-in-address").await;
}

async fn a_successful_sign_in_resets_the_count_of_its_email_and_address(app: &TestApp) {
    let home = "203.0.113.20";
    let body = json!({"email": "forgetful@example.com", "password": PASSWORD, "display_name": "F"});
    assert_eq!(
        app.create_account(body).forwarded_for(home).await.status(),
        StatusCode::CREATED
    );
    let attempt = |password: &'static str| {
        app.create_session("Forgetful@Example.com", password)
            .forwarded_for(home)
    };
    for _ in 0..2 {
        assert_eq!(attempt("not it").await.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(attempt(PASSWORD).await.status(), StatusCode::CREATED);
    // Without the reset, this third failure would be the fourth attempt of three.
    for _ in 0..2 {
        let failed = attempt("not it either").await;
        assert_eq!(failed.status(), StatusCode::UNAUTHORIZED);
    }
    let third = attempt("still not").await;
    assert_eq!(third.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(ratelimit(&third, "sign-in").0, 0);
    assert_limited(attempt("and again").await, "sign-in").await;
}

async fn sign_ups_are_limited_per_client_address(app: &TestApp) {
    let sign_up = |i: u32, address: &str| {
        let body = json!({"email": format!("new{i}@example.com"), "password": PASSWORD, "display_name": "N"});
        app.create_account(body).forwarded_for(address)
    };
    for i in 0..2 {
        let created = sign_up(i, "203.0.113.30").await;
        assert_eq!(created.status(), StatusCode::CREATED);
        assert_eq!(ratelimit_policy(&created, "sign-up"), (2, 3600));
    }
    assert_limited(sign_up(2, "203.0.113.30").await, "sign-up").await;
    assert_eq!(
        sign_up(3, "203.0.113.31").await.status(),
        StatusCode::CREATED
    );
}

async fn refreshes_are_limited_per_session(app: &TestApp) {
    app.sign_up("roller@example.com", PASSWORD).await;
    let first = app.sign_in("roller@example.com", PASSWORD).await;
    let mut token = refresh(&first).to_owned();
    for _ in 0..2 {
        let response = app.refresh_session(&token).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        assert_eq!(ratelimit_policy(&response, "refresh"), (2, 60));
        token = refresh(&json_of(response).await).to_owned();
    }
    assert_limited(app.refresh_session(&token).await, "refresh").await;
    // The refused token was not used up: it is not treated as a reuse later,
    // and another session refreshes freely meanwhile.
    let second = app.sign_in("roller@example.com", PASSWORD).await;
    let other = app.refresh_session(refresh(&second)).await;
    assert_eq!(other.status(), StatusCode::CREATED);
    let me = app.get_current_session(access(&first)).await;
    assert_eq!(me.status(), StatusCode::OK, "the limited session lives on");
}

fn user_message(text: &str) -> Value {
    json!({"role": "user", "content": {"content_type": "text", "parts": [text]}})
}

async fn messages_are_limited_per_account_on_every_route_that_sends_one(app: &TestApp) {
    let ann = app.member("ann@example.com").await;
    let started = app
        .create_conversation(&ann, json!({"message": user_message("Hello")}))
        .await;
    assert_eq!(started.status(), StatusCode::CREATED);
    assert_eq!(ratelimit_policy(&started, "messages"), (2, 60));
    assert_eq!(ratelimit(&started, "messages").0, 1);
    let id = json_of(started).await["conversation"]["id"]
        .as_str()
        .expect("a conversation id")
        .to_owned();
    let sent = app.send_message(&ann, &id, user_message("And?")).await;
    assert_eq!(sent.status(), StatusCode::CREATED);
    assert_eq!(ratelimit(&sent, "messages").0, 0);

    // Every route that sends a message is now refused, with the fields.
    let refused = app.send_message(&ann, &id, user_message("More?")).await;
    assert_eq!(ratelimit_policy(&refused, "messages"), (2, 60));
    assert!(items(header_of(&refused, "ratelimit")).contains_key("client"));
    let retry_after = assert_limited(refused, "messages").await;
    assert!(
        retry_after <= 30,
        "one message fits every 30 s: {retry_after}"
    );
    let seed = json!({"conversation_id": id, "messages": [user_message("Still there?")]});
    assert_limited(app.seed_send(&ann, seed).await, "messages").await;
    let another = json!({"title": "Again", "message": user_message("Hi")});
    assert_limited(app.create_conversation(&ann, another).await, "messages").await;

    // Starting a conversation without a message sends none, and reads go on.
    let empty = app
        .create_conversation(&ann, json!({"title": "Later"}))
        .await;
    assert_eq!(empty.status(), StatusCode::CREATED);
    assert!(!items(header_of(&empty, "ratelimit")).contains_key("messages"));
    assert_eq!(
        app.get_conversation(&ann, &id).await.status(),
        StatusCode::OK
    );

    // Another account has its own quota.
    let bob = app.member("bob@example.com").await;
    let seed = json!({"messages": [user_message("Hello from Bob")]});
    let bobs = app.seed_send(&bob, seed).await;
    assert_eq!(bobs.status(), StatusCode::OK);
    assert_eq!(ratelimit(&bobs, "messages").0, 1);
}

/// Parses the Prometheus text format line by line: comments are `# HELP` or
/// `# TYPE` lines, samples are `name{labels} value`. Returns each sample's
/// name with its labels, and its value; panics on any other line.
fn parse_prometheus(text: &str) -> Vec<(String, HashMap<String, String>, f64)> {
    let name_ok = |name: &str| {
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !name.starts_with(|c: char| c.is_ascii_digit())
    };
    let mut types = HashMap::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.splitn(3, ' ');
            let kind = words.next().unwrap();
            let name = words.next().unwrap_or_default();
            assert!(kind == "HELP" || kind == "TYPE", "comment line: {line}");
            assert!(name_ok(name), "metric name in: {line}");
            if kind == "TYPE" {
                let kind = words.next().unwrap_or_default();
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                    "{line}"
                );
                types.insert(name.to_owned(), kind.to_owned());
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("sample line: {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            other => other.parse().unwrap_or_else(|_| panic!("value in: {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("labels in: {line}"));
                let mut parsed = HashMap::new();
                let mut rest = labels;
                while !rest.is_empty() {
                    let (key, after) = rest
                        .split_once("=\"")
                        .unwrap_or_else(|| panic!("label in: {line}"));
                    assert!(name_ok(key), "label name in: {line}");
                    let mut value = String::new();
                    let mut chars = after.char_indices();
                    let end = loop {
                        match chars.next() {
                            Some((_, '\\')) => value.push(chars.next().unwrap().1),
                            Some((i, '"')) => break i,
                            Some((_, c)) => value.push(c),
                            None => panic!("unterminated label in: {line}"),
                        }
                    };
                    parsed.insert(key.to_owned(), value);
                    rest = after[end + 1..].trim_start_matches(',');
                }
                (name, parsed)
            }
            None => (series, HashMap::new()),
        };
        assert!(name_ok(name), "metric name in: {line}");
        samples.push((name.to_owned(), labels, value));
    }
    assert_eq!(
        types
            .get("http_request_duration_seconds")
            .map(String::as_str),
        Some("histogram"),
        "latencies are histograms, not summaries"
    );
    samples
}

fn sum(
    samples: &[(String, HashMap<String, String>, f64)],
    name: &str,
    labels: &[(&str, &str)],
) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, value)| value)
        .sum()
}

#[actix_web::test]
async fn a_scrape_after_some_traffic_is_valid_prometheus_text() {
    let Some(app) = TestApp::spawn_with(
        Backend::Sqlite,
        &[
            ("--metrics-addr", "127.0.0.1:0"),
            ("--rate-limit-sign-in", "1/1m"),
        ],
    )
    .await
    else {
        return;
    };
    let token = app.member("meter@example.com").await;
    let book = json!({"title": "Dune", "author": "Frank Herbert", "isbn": "0-441-17271-7", "published_date": "1965-08-01", "price": 9.99});
    for _ in 0..2 {
        let created = app
            .create_book(&token, &book)
            .idempotency_key("metered-once")
            .await;
        assert_eq!(created.status(), StatusCode::CREATED);
    }
    let id = support::id(&app.created_book(&token, &json!({"title": "Emma", "author": "Jane Austen", "isbn": "978-0-14-143958-7", "published_date": "1815-12-23", "price": 5})).await).to_owned();
    for _ in 0..3 {
        assert_eq!(app.get_book(&id).await.status(), StatusCode::OK);
    }
    assert_eq!(
        app.call(Method::GET, "/nowhere").await.status(),
        StatusCode::NOT_FOUND
    );
    // The sign-in above reset its count; one failure spends the limit of one.
    assert_eq!(
        app.create_session("meter@example.com", "a wrong guess")
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.create_session("meter@example.com", PASSWORD)
            .await
            .status(),
        StatusCode::TOO_MANY_REQUESTS
    );

    // A write that waits out SQLite's busy timeout behind another process's
    // write lock: the database failed, and says so by operation and kind.
    let file = app.sqlite_file().expect("the app runs on SQLite");
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(file);
    let mut holder = sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut holder)
        .await
        .unwrap();
    let ulysses = json!({"title": "Ulysses", "author": "James Joyce", "isbn": "978-0-679-72276-2", "published_date": "1922-02-02", "price": 12});
    let locked_out = app.create_book(&token, ulysses).await;
    assert_eq!(locked_out.status(), StatusCode::SERVICE_UNAVAILABLE);
    holder.close().await.unwrap();

    let port = app.metrics_port.expect("metrics are served");
    let scrape = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap();
    assert_eq!(scrape.status(), StatusCode::OK);
    assert!(header_of(&scrape, "content-type").starts_with("text/plain"));
    let samples = parse_prometheus(&scrape.text().await.unwrap());

    let book_route = [
        ("route", "/api/v1/books/{id}"),
        ("method", "GET"),
        ("status", "200"),
    ];
    assert!(sum(&samples, "http_requests_total", &book_route) >= 3.0);
    assert!(
        sum(
            &samples,
            "http_requests_total",
            &[("route", "(unrouted)"), ("status", "404")]
        ) >= 1.0
    );
    assert!(sum(&samples, "http_requests_total", &[("status", "429")]) >= 1.0);
    assert!(
        sum(
            &samples,
            "http_request_duration_seconds_count",
            &[("route", "/api/v1/books/{id}")]
        ) >= 3.0
    );
    assert!(
        sum(
            &samples,
            "http_request_duration_seconds_bucket",
            &[("route", "/api/v1/books/{id}"), ("le", "+Inf")]
        ) >= 3.0
    );
    assert!(
        samples
            .iter()
            .any(|(name, _, _)| name == "http_requests_in_flight")
    );
    assert!(
        sum(
            &samples,
            "waiter_password_hash_queue_wait_seconds_count",
            &[]
        ) >= 2.0
    );
    assert!(
        sum(
            &samples,
            "waiter_rate_limit_decisions_total",
            &[("policy", "client"), ("decision", "allowed")]
        ) >= 5.0
    );
    assert!(
        sum(
            &samples,
            "waiter_rate_limit_decisions_total",
            &[("policy", "sign-in"), ("decision", "limited")]
        ) >= 1.0
    );
    assert!(sum(&samples, "waiter_idempotency_replays_total", &[]) >= 1.0);
    assert!(sum(&samples, "waiter_cache_reads_total", &[("outcome", "hit")]) >= 1.0);
    for operation in ["accounts.insert", "books.insert", "books.find"] {
        assert!(
            sum(
                &samples,
                "waiter_db_query_duration_seconds_count",
                &[("operation", operation)]
            ) >= 1.0,
            "{operation}"
        );
    }
    assert!(
        sum(
            &samples,
            "waiter_db_query_duration_seconds_bucket",
            &[("operation", "books.insert"), ("le", "+Inf")]
        ) >= 2.0
    );
    assert!(
        samples.iter().any(|(name, labels, _)| {
            name == "waiter_db_query_duration_seconds_bucket"
                && labels.get("le").map(String::as_str) == Some("0.0001")
        }),
        "database queries have buckets of their own"
    );
    assert!(
        sum(
            &samples,
            "waiter_db_errors_total",
            &[("operation", "books.insert"), ("kind", "unavailable")]
        ) >= 1.0
    );
    assert!(sum(&samples, "process_cpu_seconds_total", &[]) > 0.0);
    assert!(sum(&samples, "process_resident_memory_bytes", &[]) > 0.0);
    assert!(sum(&samples, "process_open_fds", &[]) > 0.0);
    // The metrics are not on the API's port.
    assert_eq!(
        app.call(Method::GET, "/metrics").await.status(),
        StatusCode::NOT_FOUND
    );
    app.cleanup().await;
}

/// A self-signed certificate for 127.0.0.1 and its key, as PEM files in a
/// fresh directory: `(directory, certificate, key, certificate PEM)`.
fn certificate() -> (std::path::PathBuf, String, String, String) {
    let dir = std::env::temp_dir().join(format!("waiter-tls-{}", ulid::Ulid::generate()));
    std::fs::create_dir_all(&dir).unwrap();
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let cert_pem = certified.cert.pem();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, &cert_pem).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    (
        dir,
        cert.display().to_string(),
        key.display().to_string(),
        cert_pem,
    )
}

#[actix_web::test]
async fn https_with_a_test_certificate_speaks_http2_and_asks_for_https_from_then_on() {
    let (dir, cert, key, cert_pem) = certificate();
    let Some(app) = TestApp::spawn_with(
        Backend::Sqlite,
        &[("--tls-cert", cert.as_str()), ("--tls-key", key.as_str())],
    )
    .await
    else {
        return;
    };
    assert!(app.base.starts_with("https://"), "{}", app.base);
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap()])
        .build()
        .unwrap();
    let response = client
        .get(format!("{}/api/v1/books/recent", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.version(),
        reqwest::Version::HTTP_2,
        "HTTP/2 by ALPN"
    );
    assert!(header_of(&response, "strict-transport-security").starts_with("max-age="));
    let body: Value = response.json().await.unwrap();
    assert!(body["items"].is_array());

    // HTTP/1.1 clients are still served.
    let old = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap()])
        .http1_only()
        .build()
        .unwrap();
    let response = old
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    app.cleanup().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Runs the real binary with `env`, expecting it to stop at once; returns
/// what it printed on stderr.
fn failed_start(env: &[(&str, &str)]) -> String {
    let data = std::env::temp_dir().join(format!("waiter-tls-start-{}", ulid::Ulid::generate()));
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_waiter"))
        .env_clear()
        .env("WAITER_DATA_DIR", &data)
        .env("WAITER_ADDR", "127.0.0.1:0")
        .env("WAITER_METRICS_ADDR", "off")
        .envs(env.iter().copied())
        .output()
        .expect("run waiter");
    let _ = std::fs::remove_dir_all(data);
    assert!(!output.status.success());
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_missing_unreadable_or_mismatched_tls_file_stops_start_up_naming_its_variable() {
    let (dir, cert, key, _) = certificate();
    let (other_dir, _, other_key, _) = certificate();
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let garbage = garbage.display().to_string();
    let missing = dir.join("missing.pem").display().to_string();
    for (env, variable) in [
        (
            vec![
                ("WAITER_TLS_CERT", missing.as_str()),
                ("WAITER_TLS_KEY", key.as_str()),
            ],
            "WAITER_TLS_CERT",
        ),
        (
            vec![
                ("WAITER_TLS_CERT", garbage.as_str()),
                ("WAITER_TLS_KEY", key.as_str()),
            ],
            "WAITER_TLS_CERT",
        ),
        (
            vec![
                ("WAITER_TLS_CERT", cert.as_str()),
                ("WAITER_TLS_KEY", missing.as_str()),
            ],
            "WAITER_TLS_KEY",
        ),
        (
            vec![
                ("WAITER_TLS_CERT", cert.as_str()),
                ("WAITER_TLS_KEY", garbage.as_str()),
            ],
            "WAITER_TLS_KEY",
        ),
        (
            vec![
                ("WAITER_TLS_CERT", cert.as_str()),
                ("WAITER_TLS_KEY", other_key.as_str()),
            ],
            "WAITER_TLS_KEY",
        ),
    ] {
        let stderr = failed_start(&env);
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("waiter: ") && last.contains(variable),
            "{env:?}: {stderr}"
        );
    }
    let stderr = failed_start(&[("WAITER_TLS_CERT", cert.as_str())]);
    assert!(stderr.contains("WAITER_TLS_KEY"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(other_dir);
}
