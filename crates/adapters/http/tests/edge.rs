//! The edge every response passes through, whatever its route: security
//! headers, `Cache-Control` on private responses, HSTS with TLS, and CORS.
//!
//! Driven with `actix_web::test` over mocked use cases, like the handler tests.

mod fixtures;

use std::sync::Arc;

use actix_web::http::{Method, StatusCode, header};
use actix_web::test::{self, TestRequest};
use fixtures::{a_book, account, member};
use serde_json::Value;
use waiter_http::edge::CorsOrigins;
use waiter_http::{Edge, HttpState, app};
use waiter_ports::PortError;
use waiter_ports::catalog::MockCatalogUseCases;
use waiter_ports::conversations::MockConversationUseCases;
use waiter_ports::health::{DependencyState, DependencyStatus, MockHealthUseCases};
use waiter_ports::idempotency::MockIdempotencyUseCases;
use waiter_ports::identity::{AuthError, MockIdentityUseCases};

const APP_ORIGIN: &str = "https://app.example.com";

/// Use cases that answer every request these tests send: the token `good`
/// is a member whose account reads fail with 503, and one book exists.
fn state() -> HttpState {
    let mut identity = MockIdentityUseCases::new();
    identity.expect_authenticate().returning(|token| {
        if token == "good" {
            Ok(member())
        } else {
            Err(AuthError::InvalidToken)
        }
    });
    identity
        .expect_get_own_account()
        .returning(|_| Ok(account()));
    identity
        .expect_list_sessions()
        .returning(|_| Err(PortError::Unavailable(anyhow::anyhow!("database down")).into()));
    let mut catalog = MockCatalogUseCases::new();
    catalog.expect_get_book().returning(|_| Ok(a_book(1)));
    let mut health = MockHealthUseCases::new();
    health.expect_readiness().returning(|| {
        vec![DependencyStatus {
            name: "database",
            state: DependencyState::Ready,
        }]
    });
    HttpState {
        identity: Arc::new(identity),
        catalog: Arc::new(catalog),
        conversations: Arc::new(MockConversationUseCases::new()),
        idempotency: Arc::new(MockIdempotencyUseCases::new()),
        health: Arc::new(health),
    }
}

struct Answer {
    status: StatusCode,
    headers: header::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: impl header::AsHeaderName) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

async fn send(edge: Edge, request: TestRequest) -> Answer {
    let service = test::init_service(app(state(), edge)).await;
    let response = test::call_service(&service, request.to_request()).await;
    let status = response.status();
    let headers = response.headers().clone();
    let body = test::read_body(response).await.to_vec();
    Answer {
        status,
        headers,
        body,
    }
}

const BOOK: &str = "/api/v1/books/book_01JD0W5ZK3J2S8Q4V6X7Y9ZABC";

/// One request of every kind of answer: success, conditional, each error
/// the edge or the routes produce, the fallbacks, the probes and the docs.
fn every_kind_of_response() -> Vec<(&'static str, TestRequest, StatusCode)> {
    vec![
        ("a success", TestRequest::get().uri(BOOK), StatusCode::OK),
        (
            "a 304",
            TestRequest::get()
                .uri(BOOK)
                .insert_header((header::IF_NONE_MATCH, "\"1\"")),
            StatusCode::NOT_MODIFIED,
        ),
        (
            "a 401",
            TestRequest::get().uri("/api/v1/accounts/me"),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "a 400",
            TestRequest::post()
                .uri("/api/v1/sessions")
                .insert_header((header::CONTENT_TYPE, "application/json"))
                .set_payload("{not json"),
            StatusCode::BAD_REQUEST,
        ),
        (
            "a 415",
            TestRequest::post()
                .uri("/api/v1/sessions")
                .set_payload("email=ann"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "a 503",
            TestRequest::get()
                .uri("/api/v1/sessions")
                .insert_header((header::AUTHORIZATION, "Bearer good")),
            StatusCode::SERVICE_UNAVAILABLE,
        ),
        (
            "an unrouted 404",
            TestRequest::get().uri("/nowhere"),
            StatusCode::NOT_FOUND,
        ),
        (
            "a 405",
            TestRequest::default()
                .method(Method::PUT)
                .uri("/api/v1/books/recent"),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            "an OPTIONS",
            TestRequest::default()
                .method(Method::OPTIONS)
                .uri("/api/v1/books"),
            StatusCode::NO_CONTENT,
        ),
        (
            "a HEAD",
            TestRequest::default().method(Method::HEAD).uri(BOOK),
            StatusCode::OK,
        ),
        (
            "liveness",
            TestRequest::get().uri("/healthz"),
            StatusCode::OK,
        ),
        (
            "the OpenAPI document",
            TestRequest::get().uri("/openapi.json"),
            StatusCode::OK,
        ),
        (
            "the docs redirect",
            TestRequest::get().uri("/docs"),
            StatusCode::TEMPORARY_REDIRECT,
        ),
        (
            "Swagger UI",
            TestRequest::get().uri("/docs/"),
            StatusCode::OK,
        ),
    ]
}

#[actix_web::test]
async fn every_kind_of_response_carries_the_security_headers() {
    for (what, request, status) in every_kind_of_response() {
        let answer = send(Edge::default(), request).await;
        assert_eq!(answer.status, status, "{what}");
        assert_eq!(
            answer.header("x-content-type-options"),
            Some("nosniff"),
            "{what}"
        );
        assert_eq!(
            answer.header("referrer-policy"),
            Some("no-referrer"),
            "{what}"
        );
        assert_eq!(answer.header("x-frame-options"), Some("DENY"), "{what}");
        let policy = answer.header("content-security-policy").unwrap_or_default();
        assert!(
            policy.contains("frame-ancestors 'none'"),
            "{what}: {policy}"
        );
        assert_eq!(
            answer.header("strict-transport-security"),
            None,
            "{what}: HSTS over plain HTTP"
        );
    }
}

#[actix_web::test]
async fn api_responses_may_load_nothing_and_swagger_ui_only_its_own_files() {
    let api = send(Edge::default(), TestRequest::get().uri(BOOK)).await;
    assert!(
        api.header("content-security-policy")
            .unwrap()
            .starts_with("default-src 'none';")
    );

    let docs = send(Edge::default(), TestRequest::get().uri("/docs/")).await;
    let policy = docs.header("content-security-policy").unwrap();
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert!(policy.contains("connect-src 'self'"), "{policy}");
    assert!(!policy.contains("unsafe-eval"), "{policy}");
    assert!(
        !policy
            .split(';')
            .any(|d| d.trim().starts_with("script-src") && d.contains("unsafe-inline")),
        "{policy}"
    );
    // Every script the page loads comes from this server, so the policy admits it.
    let page = String::from_utf8(docs.body).unwrap();
    assert!(
        page.contains("<script src=\"./swagger-ui-bundle.js\""),
        "{page}"
    );
    assert!(
        !page.contains("<script>"),
        "an inline script would be blocked: {page}"
    );
    let script = send(
        Edge::default(),
        TestRequest::get().uri("/docs/swagger-initializer.js"),
    )
    .await;
    assert_eq!(script.status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&script.body).contains("/openapi.json"));
}

#[actix_web::test]
async fn strict_transport_security_only_when_serving_tls() {
    let tls = Edge {
        tls: true,
        ..Edge::default()
    };
    for (what, request, _) in every_kind_of_response() {
        let answer = send(tls.clone(), request).await;
        let hsts = answer
            .header("strict-transport-security")
            .unwrap_or_default();
        assert!(hsts.starts_with("max-age="), "{what}: {hsts:?}");
    }
}

#[actix_web::test]
async fn responses_with_tokens_or_account_data_are_never_stored() {
    let private = [
        TestRequest::get()
            .uri("/api/v1/accounts/me")
            .insert_header((header::AUTHORIZATION, "Bearer good")),
        TestRequest::get().uri("/api/v1/accounts/me"),
        TestRequest::post()
            .uri("/api/v1/sessions")
            .insert_header((header::CONTENT_TYPE, "application/json"))
            .set_payload("{not json"),
        TestRequest::get()
            .uri(BOOK)
            .insert_header((header::AUTHORIZATION, "Bearer good")),
    ];
    for request in private {
        let request = request.to_request();
        let what = format!("{} {}", request.method(), request.path());
        let service = test::init_service(app(state(), Edge::default())).await;
        let response = test::call_service(&service, request).await;
        assert_eq!(
            response.headers().get(header::CACHE_CONTROL).unwrap(),
            "no-store",
            "{what}"
        );
    }
    let public = send(Edge::default(), TestRequest::get().uri(BOOK)).await;
    assert_eq!(public.header(header::CACHE_CONTROL), None);
}

fn with_cors() -> Edge {
    Edge {
        cors_origins: CorsOrigins::parse(&format!("{APP_ORIGIN},http://localhost:5173")).unwrap(),
        ..Edge::default()
    }
}

#[actix_web::test]
async fn without_configured_origins_there_are_no_cors_headers_at_all() {
    let simple = send(
        Edge::default(),
        TestRequest::get()
            .uri(BOOK)
            .insert_header((header::ORIGIN, APP_ORIGIN)),
    )
    .await;
    let preflight = send(
        Edge::default(),
        TestRequest::default()
            .method(Method::OPTIONS)
            .uri(BOOK)
            .insert_header((header::ORIGIN, APP_ORIGIN))
            .insert_header((header::ACCESS_CONTROL_REQUEST_METHOD, "PUT")),
    )
    .await;
    for answer in [simple, preflight] {
        assert!(
            !answer
                .headers
                .keys()
                .any(|name| name.as_str().starts_with("access-control-")),
            "{:?}",
            answer.headers
        );
    }
}

#[actix_web::test]
async fn an_allowed_origin_is_echoed_with_the_exposed_headers() {
    let answer = send(
        with_cors(),
        TestRequest::get()
            .uri(BOOK)
            .insert_header((header::ORIGIN, APP_ORIGIN)),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.header("access-control-allow-origin"),
        Some(APP_ORIGIN)
    );
    assert_eq!(answer.header("access-control-allow-credentials"), None);
    let exposed = answer.header("access-control-expose-headers").unwrap();
    for name in [
        "etag",
        "location",
        "ratelimit",
        "ratelimit-policy",
        "retry-after",
        "x-request-id",
    ] {
        assert!(exposed.contains(name), "{name} not in {exposed}");
    }
    assert!(answer.header(header::VARY).unwrap().contains("Origin"));
}

#[actix_web::test]
async fn a_refused_origin_is_never_echoed() {
    for origin in [
        "https://evil.example.com",
        "https://app.example.com.evil.net",
        "null",
    ] {
        let answer = send(
            with_cors(),
            TestRequest::get()
                .uri(BOOK)
                .insert_header((header::ORIGIN, origin)),
        )
        .await;
        assert_eq!(
            answer.header("access-control-allow-origin"),
            None,
            "{origin}"
        );
        assert!(
            !answer
                .headers
                .iter()
                .any(|(_, v)| v.as_bytes() == origin.as_bytes()),
            "{origin} echoed in {:?}",
            answer.headers
        );

        let preflight = send(
            with_cors(),
            TestRequest::default()
                .method(Method::OPTIONS)
                .uri(BOOK)
                .insert_header((header::ORIGIN, origin))
                .insert_header((header::ACCESS_CONTROL_REQUEST_METHOD, "PUT")),
        )
        .await;
        assert_eq!(preflight.status, StatusCode::BAD_REQUEST, "{origin}");
        assert_eq!(preflight.header("access-control-allow-origin"), None);
        assert_eq!(
            preflight.header(header::CONTENT_TYPE),
            Some("application/problem+json")
        );
        assert_eq!(preflight.json()["status"], 400);
        assert_eq!(preflight.header("x-content-type-options"), Some("nosniff"));
    }
}

#[actix_web::test]
async fn a_preflight_lists_the_methods_and_headers_a_page_may_use() {
    let answer = send(
        with_cors(),
        TestRequest::default()
            .method(Method::OPTIONS)
            .uri(BOOK)
            .insert_header((header::ORIGIN, APP_ORIGIN))
            .insert_header((header::ACCESS_CONTROL_REQUEST_METHOD, "PATCH"))
            .insert_header((
                header::ACCESS_CONTROL_REQUEST_HEADERS,
                "authorization, content-type, if-match, idempotency-key, last-event-id",
            )),
    )
    .await;
    assert!(answer.status.is_success(), "{}", answer.status);
    assert_eq!(
        answer.header("access-control-allow-origin"),
        Some(APP_ORIGIN)
    );
    let methods = answer.header("access-control-allow-methods").unwrap();
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
        assert!(methods.contains(method), "{method} not in {methods}");
    }
    let headers = answer
        .header("access-control-allow-headers")
        .unwrap()
        .to_ascii_lowercase();
    for name in [
        "authorization",
        "idempotency-key",
        "if-match",
        "last-event-id",
    ] {
        assert!(headers.contains(name), "{name} not in {headers}");
    }
    assert!(answer.header("access-control-max-age").is_some());
    assert_eq!(answer.header("x-frame-options"), Some("DENY"));

    let unlisted = send(
        with_cors(),
        TestRequest::default()
            .method(Method::OPTIONS)
            .uri(BOOK)
            .insert_header((header::ORIGIN, APP_ORIGIN))
            .insert_header((header::ACCESS_CONTROL_REQUEST_METHOD, "PUT"))
            .insert_header((header::ACCESS_CONTROL_REQUEST_HEADERS, "x-secret-sauce")),
    )
    .await;
    assert_eq!(unlisted.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        unlisted.header(header::CONTENT_TYPE),
        Some("application/problem+json")
    );
}

#[actix_web::test]
async fn a_plain_options_without_cors_still_answers_allow() {
    let answer = send(
        with_cors(),
        TestRequest::default().method(Method::OPTIONS).uri(BOOK),
    )
    .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert!(answer.header(header::ALLOW).unwrap().contains("GET"));
}

mod rate_limits {
    use std::time::Duration;

    use waiter_ports::identity::SignInError;
    use waiter_ports::rate_limit::{
        Decision, Limited, MockRateLimitUseCases, Policy, Quota, RateLimitUseCases,
    };

    use super::*;

    fn limited(policy: Policy, limit: u32, window: u64, remaining: u32) -> Limited {
        Limited {
            policy,
            quota: Quota::new(limit, Duration::from_secs(window)).unwrap(),
            decision: Decision {
                allowed: true,
                remaining,
                reset_after: Duration::from_millis(2_500),
                retry_after: Duration::ZERO,
            },
        }
    }

    fn edge(limits: MockRateLimitUseCases) -> Edge {
        Edge {
            rate_limits: Some(Arc::new(limits) as Arc<dyn RateLimitUseCases>),
            ..Edge::default()
        }
    }

    fn with_sign_in(state: &mut HttpState) {
        let mut identity = MockIdentityUseCases::new();
        identity
            .expect_create_session()
            .returning(|_| Err(SignInError::InvalidCredentials));
        state.identity = Arc::new(identity);
    }

    #[actix_web::test]
    async fn the_fields_list_every_policy_that_counted_the_request() {
        let mut limits = MockRateLimitUseCases::new();
        limits.expect_check().returning(|policy, subject| {
            Ok(Some(match policy {
                Policy::Client => limited(policy, 300, 60, 299),
                Policy::SignInAddress => limited(policy, 30, 300, 29),
                Policy::SignIn => {
                    assert_eq!(subject, "ann@example.com from unknown");
                    limited(policy, 5, 300, 4)
                }
                other => panic!("{other} counted a sign-in"),
            }))
        });
        limits.expect_reset().never();
        let mut state = state();
        with_sign_in(&mut state);
        let service = test::init_service(app(state, edge(limits))).await;
        let request = TestRequest::post()
            .uri("/api/v1/sessions")
            .set_json(serde_json::json!({"email": " Ann@Example.com", "password": "wrong"}))
            .to_request();
        let response = test::call_service(&service, request).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers().get("ratelimit-policy").unwrap(),
            r#""client";q=300;w=60, "sign-in-address";q=30;w=300, "sign-in";q=5;w=300"#
        );
        assert_eq!(
            response.headers().get("ratelimit").unwrap(),
            r#""client";r=299;t=3, "sign-in-address";r=29;t=3, "sign-in";r=4;t=3"#
        );
    }

    #[actix_web::test]
    async fn a_refusal_is_a_429_problem_with_a_whole_retry_after_of_at_least_a_second() {
        let mut limits = MockRateLimitUseCases::new();
        limits.expect_check().returning(|policy, _| {
            let mut refused = limited(policy, 300, 60, 0);
            refused.decision.allowed = false;
            refused.decision.retry_after = Duration::from_millis(10);
            Ok(Some(refused))
        });
        let answer = send(edge(limits), TestRequest::get().uri(BOOK)).await;
        assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(answer.header(header::RETRY_AFTER), Some("1"));
        assert_eq!(
            answer.header(header::CONTENT_TYPE),
            Some("application/problem+json")
        );
        assert_eq!(answer.json()["type"], "urn:waiter:problem:rate-limited");
        assert_eq!(answer.header("ratelimit"), Some(r#""client";r=0;t=3"#));
        assert_eq!(answer.header("x-content-type-options"), Some("nosniff"));
    }

    #[actix_web::test]
    async fn a_failing_limiter_lets_requests_through() {
        let mut limits = MockRateLimitUseCases::new();
        limits
            .expect_check()
            .returning(|_, _| Err(PortError::Unavailable(anyhow::anyhow!("no limiter"))));
        let answer = send(edge(limits), TestRequest::get().uri(BOOK)).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.header("ratelimit"), None);
    }

    #[actix_web::test]
    async fn a_valid_token_is_counted_as_its_account_and_checked_once() {
        let mut limits = MockRateLimitUseCases::new();
        limits
            .expect_check()
            .withf(|policy, subject| {
                *policy == Policy::Client && subject == format!("account {}", account().id)
            })
            .times(1)
            .returning(|policy, _| Ok(Some(limited(policy, 300, 60, 1))));
        let mut state = state();
        let mut identity = MockIdentityUseCases::new();
        identity
            .expect_authenticate()
            .times(1)
            .returning(|_| Ok(member()));
        identity
            .expect_get_own_account()
            .returning(|_| Ok(account()));
        state.identity = Arc::new(identity);
        let service = test::init_service(app(state, edge(limits))).await;
        let request = TestRequest::get()
            .uri("/api/v1/accounts/me")
            .insert_header((header::AUTHORIZATION, "Bearer good"))
            .to_request();
        let response = test::call_service(&service, request).await;
        assert_eq!(response.status(), StatusCode::OK);
    }

    /// A user message, as the API's own routes take it.
    fn message() -> Value {
        serde_json::json!({"role": "user", "content": {"content_type": "text", "parts": ["Hi"]}})
    }

    /// Limits under which Ann's messages are over their quota, and every
    /// other policy has room.
    fn messages_exhausted() -> MockRateLimitUseCases {
        let mut limits = MockRateLimitUseCases::new();
        limits.expect_check().returning(|policy, subject| {
            Ok(Some(match policy {
                Policy::Client => limited(policy, 300, 60, 299),
                Policy::Messages => {
                    assert_eq!(subject, account().id.to_string());
                    let mut refused = limited(policy, 20, 60, 0);
                    refused.decision.allowed = false;
                    refused.decision.retry_after = Duration::from_millis(2_100);
                    refused
                }
                other => panic!("{other} counted a message"),
            }))
        });
        limits
    }

    #[actix_web::test]
    async fn every_route_that_sends_a_message_counts_it_against_the_accounts_messages() {
        let sends = [
            (
                "/api/v1/conversations",
                serde_json::json!({"title": "Redis", "message": message()}),
            ),
            (
                "/api/v1/conversations/conv_01JD0W5ZK3J2S8Q4V6X7Y9ZABC/messages",
                message(),
            ),
            (
                "/backend-api/f/conversation",
                serde_json::json!({"messages": [message()]}),
            ),
        ];
        for (path, body) in sends {
            let mut state = state();
            let mut conversations = MockConversationUseCases::new();
            conversations.expect_send_message().never();
            state.conversations = Arc::new(conversations);
            let service = test::init_service(app(state, edge(messages_exhausted()))).await;
            let request = TestRequest::post()
                .uri(path)
                .insert_header((header::AUTHORIZATION, "Bearer good"))
                .set_json(body)
                .to_request();
            let response = test::call_service(&service, request).await;
            assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS, "{path}");
            let headers = response.headers();
            assert_eq!(headers.get(header::RETRY_AFTER).unwrap(), "3", "{path}");
            assert_eq!(
                headers.get("ratelimit-policy").unwrap(),
                r#""client";q=300;w=60, "messages";q=20;w=60"#,
                "{path}"
            );
            assert_eq!(
                headers.get("ratelimit").unwrap(),
                r#""client";r=299;t=3, "messages";r=0;t=3"#,
                "{path}"
            );
            let problem: Value = test::read_body_json(response).await;
            assert_eq!(problem["type"], "urn:waiter:problem:rate-limited", "{path}");
        }
    }

    #[actix_web::test]
    async fn starting_a_conversation_without_a_message_is_not_counted_as_one() {
        let mut limits = MockRateLimitUseCases::new();
        limits
            .expect_check()
            .withf(|policy, _| *policy == Policy::Client)
            .times(1)
            .returning(|policy, _| Ok(Some(limited(policy, 300, 60, 299))));
        let mut state = state();
        let mut conversations = MockConversationUseCases::new();
        conversations
            .expect_create_conversation()
            .times(1)
            .returning(|_, _, _| Err(PortError::Unavailable(anyhow::anyhow!("down")).into()));
        state.conversations = Arc::new(conversations);
        let service = test::init_service(app(state, edge(limits))).await;
        let request = TestRequest::post()
            .uri("/api/v1/conversations")
            .insert_header((header::AUTHORIZATION, "Bearer good"))
            .set_json(serde_json::json!({"title": "Redis"}))
            .to_request();
        let response = test::call_service(&service, request).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response.headers().get("ratelimit-policy").unwrap(),
            r#""client";q=300;w=60"#
        );
    }

    #[actix_web::test]
    async fn the_probes_and_the_docs_are_never_limited() {
        for path in ["/healthz", "/readyz", "/openapi.json", "/docs", "/docs/"] {
            let mut limits = MockRateLimitUseCases::new();
            limits.expect_check().never();
            let answer = send(edge(limits), TestRequest::get().uri(path)).await;
            assert!(
                answer.status.is_success() || answer.status.is_redirection(),
                "{path}: {}",
                answer.status
            );
            assert_eq!(answer.header("ratelimit"), None, "{path}");
        }
    }

    #[actix_web::test]
    async fn every_limited_operation_documents_its_429_and_the_probes_do_not() {
        let document = serde_json::to_value(waiter_http::openapi()).unwrap();
        for (path, item) in document["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let documented = operation["responses"]["429"]["$ref"].as_str();
                if path == "/healthz" || path == "/readyz" {
                    assert_eq!(documented, None, "{method} {path}");
                } else {
                    assert_eq!(
                        documented,
                        Some("#/components/responses/TooManyRequests"),
                        "{method} {path}"
                    );
                }
            }
        }
    }
}
