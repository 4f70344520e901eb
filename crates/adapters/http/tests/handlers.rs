//! Handler tests: the HTTP surface over mocked use cases, with `actix_web::test`.
//!
//! These pin the translation layer: statuses, headers and the problem+json
//! envelope, including for failures actix itself detects (bad JSON, wrong
//! media type, unknown routes and methods).

mod fixtures;

use std::sync::Arc;

use actix_web::http::{StatusCode, header};
use actix_web::test::{self, TestRequest};
use fixtures::{a_book, account, member};
use serde_json::{Value, json};
use waiter_domain::Version;
use waiter_http::{Edge, HttpState, JSON_LIMIT, app};
use waiter_ports::PortError;
use waiter_ports::catalog::MockCatalogUseCases;
use waiter_ports::conversations::MockConversationUseCases;
use waiter_ports::health::{DependencyState, DependencyStatus, MockHealthUseCases};
use waiter_ports::idempotency::MockIdempotencyUseCases;
use waiter_ports::identity::{AccountError, AuthError, MockIdentityUseCases};

/// An identity mock that accepts the token `good` as `member()`.
fn identity() -> MockIdentityUseCases {
    let mut identity = MockIdentityUseCases::new();
    identity.expect_authenticate().returning(|token| {
        if token == "good" {
            Ok(member())
        } else {
            Err(AuthError::InvalidToken)
        }
    });
    identity
}

/// The use cases behind the app under test.
struct Mocks {
    identity: MockIdentityUseCases,
    catalog: MockCatalogUseCases,
    idempotency: MockIdempotencyUseCases,
}

impl Mocks {
    fn new(identity: MockIdentityUseCases) -> Self {
        Self {
            identity,
            catalog: MockCatalogUseCases::new(),
            idempotency: MockIdempotencyUseCases::new(),
        }
    }
}

async fn call(
    identity: MockIdentityUseCases,
    request: TestRequest,
) -> (StatusCode, header::HeaderMap, Value) {
    send(Mocks::new(identity), request).await
}

async fn send(mocks: Mocks, request: TestRequest) -> (StatusCode, header::HeaderMap, Value) {
    let mut health = MockHealthUseCases::new();
    health.expect_readiness().returning(|| {
        vec![DependencyStatus {
            name: "database",
            state: DependencyState::Unavailable,
        }]
    });
    let state = HttpState {
        identity: Arc::new(mocks.identity),
        catalog: Arc::new(mocks.catalog),
        conversations: Arc::new(MockConversationUseCases::new()),
        idempotency: Arc::new(mocks.idempotency),
        health: Arc::new(health),
    };
    let service = test::init_service(app(state, Edge::default())).await;
    let response = test::call_service(&service, request.to_request()).await;
    let status = response.status();
    let headers = response.headers().clone();
    let body = test::read_body(response).await;
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (status, headers, json)
}

fn value(headers: &header::HeaderMap, name: header::HeaderName) -> &str {
    headers
        .get(&name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

fn is_problem(headers: &header::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v == "application/problem+json")
}

#[actix_web::test]
async fn sign_up_answers_201_with_location_and_etag_and_no_secret() {
    let mut identity = identity();
    identity
        .expect_create_account()
        .withf(|sign_up, keyed| sign_up.email.as_str() == "ann@example.com" && keyed.is_none())
        .returning(|_, _| Ok(account()));
    let request = TestRequest::post().uri("/api/v1/accounts").set_json(json!({
        "email": " Ann@Example.com", "password": "correct horse", "display_name": "Ann"
    }));
    let (status, headers, body) = call(identity, request).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        value(&headers, header::LOCATION),
        format!("/api/v1/accounts/{}", account().id).as_str()
    );
    assert_eq!(value(&headers, header::ETAG), "\"3\"");
    assert_eq!(body["role"], "member");
    assert!(body.get("password").is_none() && body.get("password_hash").is_none());
}

#[actix_web::test]
async fn a_sign_up_cannot_choose_its_role() {
    let mut identity = identity();
    identity.expect_create_account().never();
    let request = TestRequest::post().uri("/api/v1/accounts").set_json(json!({
        "email": "ann@example.com", "password": "correct horse", "display_name": "Ann", "role": "admin"
    }));
    let (status, _, body) = call(identity, request).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["errors"][0]["field"], "role");
}

#[actix_web::test]
async fn invalid_sign_up_fields_are_all_listed_in_a_422() {
    let mut identity = identity();
    identity.expect_create_account().never();
    let request = TestRequest::post()
        .uri("/api/v1/accounts")
        .set_json(json!({"email": "nope", "password": "short", "display_name": " "}));
    let (status, headers, body) = call(identity, request).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(is_problem(&headers));
    assert_eq!(body["status"], 422);
    let fields: Vec<_> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].clone())
        .collect();
    assert_eq!(
        fields,
        [json!("email"), json!("password"), json!("display_name")]
    );
}

#[actix_web::test]
async fn a_taken_email_is_a_409() {
    let mut identity = identity();
    identity
        .expect_create_account()
        .returning(|_, _| Err(AccountError::EmailTaken));
    let request = TestRequest::post().uri("/api/v1/accounts").set_json(
        json!({"email": "ann@example.com", "password": "correct horse", "display_name": "Ann"}),
    );
    let (status, headers, _) = call(identity, request).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(is_problem(&headers));
}

#[actix_web::test]
async fn malformed_bodies_get_problems_not_plain_text() {
    let cases = [
        (
            TestRequest::post()
                .uri("/api/v1/sessions")
                .insert_header(header::ContentType::json())
                .set_payload("{not json"),
            StatusCode::BAD_REQUEST,
        ),
        (
            TestRequest::post()
                .uri("/api/v1/sessions")
                .insert_header(header::ContentType::json())
                .set_payload(r#"{"email": "a@b.co"}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            TestRequest::post()
                .uri("/api/v1/sessions")
                .insert_header(header::ContentType::json())
                .set_payload(r#"{"email": 5, "password": "x"}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            TestRequest::post()
                .uri("/api/v1/sessions")
                .insert_header(header::ContentType::plaintext())
                .set_payload(r#"{"email": "a@b.co", "password": "x"}"#),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            TestRequest::post()
                .uri("/api/v1/sessions")
                .set_payload("{}"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            TestRequest::post()
                .uri("/api/v1/sessions")
                .insert_header(header::ContentType::json())
                .set_payload(vec![b' '; JSON_LIMIT + 1]),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ];
    for (request, expected) in cases {
        let (status, headers, body) = call(identity(), request).await;
        assert_eq!(status, expected, "{body}");
        assert!(is_problem(&headers), "{expected}: {headers:?}");
        assert_eq!(body["status"], expected.as_u16());
        assert!(
            !body["detail"].as_str().unwrap().contains("line"),
            "no parser positions: {body}"
        );
    }
}

#[actix_web::test]
async fn protected_routes_demand_a_valid_bearer_token() {
    let (status, headers, body) =
        call(identity(), TestRequest::get().uri("/api/v1/accounts/me")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(value(&headers, header::WWW_AUTHENTICATE), "Bearer");
    assert_eq!(body["type"], "urn:waiter:problem:unauthenticated");

    for authorization in ["Bearer forged", "Basic Z29vZA==", "Bearer", "good"] {
        let request = TestRequest::get()
            .uri("/api/v1/accounts/me")
            .insert_header((header::AUTHORIZATION, authorization));
        let (status, headers, _) = call(identity(), request).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{authorization}");
        assert_eq!(
            value(&headers, header::WWW_AUTHENTICATE),
            r#"Bearer error="invalid_token""#
        );
    }
}

#[actix_web::test]
async fn own_account_carries_its_etag() {
    let mut identity = identity();
    identity
        .expect_get_own_account()
        .returning(|_| Ok(account()));
    let request = TestRequest::get()
        .uri("/api/v1/accounts/me")
        .insert_header((header::AUTHORIZATION, "Bearer good"));
    let (status, headers, body) = call(identity, request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(value(&headers, header::ETAG), "\"3\"");
    assert_eq!(body["id"], account().id.to_string());
    assert_eq!(body["created_at"], "2026-11-21T12:00:00Z");
}

#[actix_web::test]
async fn if_match_reaches_the_use_case_and_a_stale_one_is_412() {
    let mut identity = identity();
    identity
        .expect_update_own_account()
        .withf(|_, changes| changes.expected_version == Some(Version::new(2)))
        .returning(|_, _| {
            Err(AccountError::VersionMismatch {
                current: Version::new(3),
            })
        });
    let request = TestRequest::patch()
        .uri("/api/v1/accounts/me")
        .insert_header((header::AUTHORIZATION, "Bearer good"))
        .insert_header((header::IF_MATCH, "\"2\""))
        .set_json(json!({"display_name": "Annie"}));
    let (status, headers, _) = call(identity, request).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    assert!(is_problem(&headers));

    let request = TestRequest::patch()
        .uri("/api/v1/accounts/me")
        .insert_header((header::AUTHORIZATION, "Bearer good"))
        .insert_header((header::IF_MATCH, "W/\"2\""))
        .set_json(json!({"display_name": "Annie"}));
    let (status, _, _) = call(MockIdentityUseCases::new().tap_auth(), request).await;
    assert_eq!(
        status,
        StatusCode::PRECONDITION_FAILED,
        "a weak tag never matches for a write"
    );
}

#[actix_web::test]
async fn a_malformed_if_match_is_a_400() {
    for tag in ["3", "\"-1\"", "\"1\", \"2\"", "W/3"] {
        let mut identity = identity();
        identity.expect_update_own_account().never();
        let request = TestRequest::patch()
            .uri("/api/v1/accounts/me")
            .insert_header((header::AUTHORIZATION, "Bearer good"))
            .insert_header((header::IF_MATCH, tag))
            .set_json(json!({"display_name": "Annie"}));
        let (status, _, _) = call(identity, request).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{tag}");
    }
}

/// serde would read a struct of optional fields from an empty array; the
/// schema says every body is an object, and so does the server.
#[actix_web::test]
async fn a_body_that_is_not_an_object_is_a_422_even_when_every_field_is_optional() {
    for body in [json!([]), json!(["Annie"]), json!("Annie"), json!(null)] {
        let mut identity = identity();
        identity.expect_update_own_account().never();
        let request = TestRequest::patch()
            .uri("/api/v1/accounts/me")
            .insert_header((header::AUTHORIZATION, "Bearer good"))
            .insert_header((header::IF_MATCH, "W/\"\""))
            .set_json(&body);
        let (status, _, problem) = call(identity, request).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(problem["errors"][0]["field"], "body", "{body}");
    }
}

/// RFC 9110 §13.2.1: a precondition is judged once the request is otherwise valid.
#[actix_web::test]
async fn an_invalid_body_is_refused_before_its_precondition() {
    let mut mocks = Mocks::new(identity());
    mocks.catalog.expect_update_book().never();
    let request = TestRequest::patch()
        .uri("/api/v1/books/book_01JD0W5ZK3J2S8Q4V6X7Y9ZABC")
        .insert_header((header::AUTHORIZATION, "Bearer good"))
        .insert_header((header::IF_MATCH, "W/\"1\""))
        .set_json(json!({"title": ""}));
    let (status, _, _) = send(mocks, request).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[actix_web::test]
async fn a_missing_or_wrong_current_password_is_a_403() {
    let mut identity = identity();
    identity
        .expect_update_own_account()
        .returning(|_, _| Err(AccountError::CurrentPasswordMismatch));
    let request = TestRequest::patch()
        .uri("/api/v1/accounts/me")
        .insert_header((header::AUTHORIZATION, "Bearer good"))
        .set_json(json!({"email": "new@example.com", "current_password": "wrong"}));
    let (status, headers, body) = call(identity, request).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(is_problem(&headers));
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("current_password")
    );
}

/// A merge patch that names nothing changes nothing; it is not an error.
#[actix_web::test]
async fn an_empty_patch_of_ones_account_is_accepted() {
    let mut identity = identity();
    identity
        .expect_update_own_account()
        .withf(|_, changes| {
            changes.display_name.is_none()
                && changes.email.is_none()
                && changes.new_password.is_none()
        })
        .returning(|_, _| Ok(account()));
    let request = TestRequest::patch()
        .uri("/api/v1/accounts/me")
        .insert_header((header::AUTHORIZATION, "Bearer good"))
        .set_json(json!({}));
    let (status, _, _) = call(identity, request).await;
    assert_eq!(status, StatusCode::OK);
}

trait TapAuth {
    fn tap_auth(self) -> MockIdentityUseCases;
}

impl TapAuth for MockIdentityUseCases {
    fn tap_auth(mut self) -> MockIdentityUseCases {
        self.expect_authenticate().returning(|_| Ok(member()));
        self
    }
}

#[actix_web::test]
async fn members_get_403_from_admin_routes() {
    let mut identity = identity();
    identity
        .expect_list_accounts()
        .returning(|_, _| Err(AccountError::Forbidden));
    let request = TestRequest::get()
        .uri("/api/v1/accounts")
        .insert_header((header::AUTHORIZATION, "Bearer good"));
    let (status, headers, _) = call(identity, request).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(is_problem(&headers));
}

#[actix_web::test]
async fn bad_pagination_is_a_400() {
    for uri in [
        "/api/v1/accounts?limit=0",
        "/api/v1/accounts?limit=101",
        "/api/v1/accounts?limit=x",
        "/api/v1/accounts?cursor=%%%",
    ] {
        let mut identity = identity();
        identity.expect_list_accounts().never();
        let request = TestRequest::get()
            .uri(uri)
            .insert_header((header::AUTHORIZATION, "Bearer good"));
        let (status, headers, _) = call(identity, request).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(is_problem(&headers));
    }
}

#[actix_web::test]
async fn unknown_routes_are_404_and_wrong_methods_405_with_allow() {
    let (status, headers, _) =
        call(identity(), TestRequest::get().uri("/api/v1/nothing-here")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(is_problem(&headers));

    let (status, headers, _) =
        call(identity(), TestRequest::put().uri("/api/v1/accounts/me")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(is_problem(&headers));
    assert_eq!(
        value(&headers, header::ALLOW),
        "DELETE, GET, HEAD, OPTIONS, PATCH"
    );
}

/// Seed 002: OPTIONS lists the methods allowed on the resource, and a path
/// with a literal segment is its own resource, not an id of its neighbour.
#[actix_web::test]
async fn options_and_405_answer_with_the_methods_of_that_exact_path() {
    for (method, path, expected, allow) in [
        (
            "OPTIONS",
            "/api/v1/books/recent",
            StatusCode::NO_CONTENT,
            "GET, HEAD, OPTIONS",
        ),
        (
            "DELETE",
            "/api/v1/books/recent",
            StatusCode::METHOD_NOT_ALLOWED,
            "GET, HEAD, OPTIONS",
        ),
        (
            "OPTIONS",
            "/api/v1/books/book_01JD0W5ZK3J2S8Q4V6X7Y9ZABC",
            StatusCode::NO_CONTENT,
            "DELETE, GET, HEAD, OPTIONS, PATCH, PUT",
        ),
        (
            "DELETE",
            "/api/v1/sessions/refresh",
            StatusCode::METHOD_NOT_ALLOWED,
            "OPTIONS, POST",
        ),
        (
            "OPTIONS",
            "/api/v1/books",
            StatusCode::NO_CONTENT,
            "GET, HEAD, OPTIONS, POST",
        ),
        (
            "OPTIONS",
            "/healthz",
            StatusCode::NO_CONTENT,
            "GET, HEAD, OPTIONS",
        ),
    ] {
        let request = TestRequest::default()
            .method(method.parse().unwrap())
            .uri(path);
        let (status, headers, _) = call(MockIdentityUseCases::new(), request).await;
        assert_eq!(status, expected, "{method} {path}");
        assert_eq!(value(&headers, header::ALLOW), allow, "{method} {path}");
    }
    for path in ["/api/v1/nothing-here", "/api/v1/books/"] {
        let request = TestRequest::default()
            .method(actix_web::http::Method::OPTIONS)
            .uri(path);
        let (status, headers, _) = call(MockIdentityUseCases::new(), request).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert!(headers.get(header::ALLOW).is_none());
    }
}

#[actix_web::test]
async fn malformed_ids_are_404_not_500() {
    let mut identity = identity();
    identity.expect_delete_session().never();
    let request = TestRequest::delete()
        .uri("/api/v1/sessions/acct_01JD0W5ZK3J2S8Q4V6X7Y9ZABC")
        .insert_header((header::AUTHORIZATION, "Bearer good"));
    let (status, _, _) = call(identity, request).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[actix_web::test]
async fn an_unavailable_dependency_is_a_503_without_details() {
    let mut identity = identity();
    identity.expect_get_own_account().returning(|_| {
        Err(AccountError::Port(PortError::Unavailable(anyhow::anyhow!(
            "pg at 10.0.0.1 refused"
        ))))
    });
    let request = TestRequest::get()
        .uri("/api/v1/accounts/me")
        .insert_header((header::AUTHORIZATION, "Bearer good"));
    let (status, headers, body) = call(identity, request).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(headers.contains_key(header::RETRY_AFTER));
    assert!(!body.to_string().contains("10.0.0.1"));
}

#[actix_web::test]
async fn readiness_reports_each_dependency() {
    let (status, _, body) = call(identity(), TestRequest::get().uri("/readyz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body,
        json!({"status": "unavailable", "checks": {"database": "unavailable"}})
    );
    let (status, _, _) = call(identity(), TestRequest::get().uri("/healthz")).await;
    assert_eq!(status, StatusCode::OK);
}

#[actix_web::test]
async fn the_openapi_document_declares_the_bearer_scheme() {
    let (status, _, body) = call(identity(), TestRequest::get().uri("/openapi.json")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert!(body["paths"]["/api/v1/sessions/refresh"]["post"].is_object());
    let (status, _, _) = call(identity(), TestRequest::get().uri("/docs/")).await;
    assert_eq!(status, StatusCode::OK);
}

/// Every problem status is one component, and every operation lists the
/// problems its inputs can cause: a body (400, 413, 415, 422), a bearer token
/// (401), a dependency (503).
#[actix_web::test]
async fn every_operation_documents_the_problems_of_its_inputs() {
    let document = serde_json::to_value(waiter_http::openapi()).unwrap();
    let components = &document["components"]["responses"];
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let responses = operation["responses"].as_object().unwrap();
            let mut expected = Vec::new();
            if operation.get("requestBody").is_some() {
                expected.extend(["400", "413", "415", "422"]);
            }
            if operation.get("security").is_some() {
                expected.push("401");
            }
            if path.starts_with("/api/v1/") {
                expected.push("503");
            }
            for status in expected {
                assert!(
                    responses.contains_key(status),
                    "{method} {path} lacks {status}"
                );
            }
            for (status, response) in responses {
                if let Some(reference) = response["$ref"].as_str() {
                    let name = reference.trim_start_matches("#/components/responses/");
                    assert!(
                        components[name].is_object(),
                        "{method} {path} {status}: {reference}"
                    );
                } else {
                    assert!(
                        status.starts_with('2') || status.starts_with('3') || path == "/readyz",
                        "{method} {path}: the problem {status} is not the shared one"
                    );
                }
            }
        }
    }
}

fn book_json() -> Value {
    json!({"title": "Dune", "author": "Frank Herbert", "isbn": "978-0-441-17271-9", "published_date": "1965-08-01", "price": 19.90})
}

#[actix_web::test]
async fn a_created_book_has_location_etag_and_an_exact_price() {
    let mut mocks = Mocks::new(identity());
    mocks
        .catalog
        .expect_create_book()
        .withf(|_, draft, _| draft.price.cents() == 1990 && draft.isbn.as_str() == "9780441172719")
        .returning(|_, _, _| Ok(a_book(1)));
    let request = TestRequest::post()
        .uri("/api/v1/books")
        .insert_header((header::AUTHORIZATION, "Bearer good"))
        .set_json(book_json());
    let (status, headers, body) = send(mocks, request).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        value(&headers, header::LOCATION),
        "/api/v1/books/book_01JD0W5ZK3J2S8Q4V6X7Y9ZABC"
    );
    assert_eq!(value(&headers, header::ETAG), "\"1\"");
    assert_eq!(
        body["price"].to_string(),
        "19.90",
        "two places, as a JSON number"
    );
}

#[actix_web::test]
async fn book_bodies_are_checked_field_by_field() {
    let mut mocks = Mocks::new(identity());
    mocks.catalog.expect_create_book().never();
    let request = TestRequest::post()
        .uri("/api/v1/books")
        .insert_header((header::AUTHORIZATION, "Bearer good"))
        .set_payload(r#"{"title": "", "author": " ", "isbn": "978-0-441-17271-8", "published_date": "1965-13-01", "price": 19.999999999999999999999}"#)
        .insert_header(header::ContentType::json());
    let (status, _, body) = send(mocks, request).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        ["title", "author", "isbn", "published_date", "price"]
    );
}

/// The body's shape is its schema's: what the document refuses, the server refuses.
#[actix_web::test]
async fn a_book_body_of_the_wrong_shape_names_the_field() {
    let with = |field: &str, value: Value| {
        let mut body = book_json();
        body[field] = value;
        body
    };
    let mut without_author = book_json();
    without_author.as_object_mut().unwrap().remove("author");
    for (body, field) in [
        (with("owner", json!("acct_x")), "owner"),
        (with("colour", json!("red")), "colour"),
        (without_author, "author"),
        (with("title", json!(7)), "title"),
        (with("price", json!(0)), "price"),
        (with("price", json!("0.00")), "price"),
        (with("price", json!(true)), "price"),
        (with("title", json!("x".repeat(200) + " ")), "title"),
    ] {
        let mut mocks = Mocks::new(identity());
        mocks.catalog.expect_create_book().never();
        let request = TestRequest::post()
            .uri("/api/v1/books")
            .insert_header((header::AUTHORIZATION, "Bearer good"))
            .set_json(&body);
        let (status, _, problem) = send(mocks, request).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
}

#[actix_web::test]
async fn a_merge_patch_cannot_remove_fields_or_touch_read_only_ones() {
    for patch in [
        json!({"title": null}),
        json!({"version": 7}),
        json!({"id": "book_x"}),
    ] {
        let mut mocks = Mocks::new(identity());
        mocks.catalog.expect_update_book().never();
        let request = TestRequest::patch()
            .uri("/api/v1/books/book_01JD0W5ZK3J2S8Q4V6X7Y9ZABC")
            .insert_header((header::AUTHORIZATION, "Bearer good"))
            .insert_header((header::CONTENT_TYPE, "application/merge-patch+json"))
            .set_payload(patch.to_string());
        let (status, _, _) = send(mocks, request).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{patch}");
    }
}

#[actix_web::test]
async fn a_matching_if_none_match_is_304_without_a_body() {
    for (tag, expected) in [
        ("\"4\"", StatusCode::NOT_MODIFIED),
        ("W/\"4\"", StatusCode::NOT_MODIFIED),
        ("\"3\"", StatusCode::OK),
        ("*", StatusCode::NOT_MODIFIED),
    ] {
        let mut mocks = Mocks::new(identity());
        mocks.catalog.expect_get_book().returning(|_| Ok(a_book(4)));
        let request = TestRequest::get()
            .uri("/api/v1/books/book_01JD0W5ZK3J2S8Q4V6X7Y9ZABC")
            .insert_header((header::IF_NONE_MATCH, tag));
        let (status, headers, _) = send(mocks, request).await;
        assert_eq!(status, expected, "{tag}");
        assert_eq!(value(&headers, header::ETAG), "\"4\"");
    }
}

#[actix_web::test]
async fn bad_list_parameters_are_400s() {
    for uri in [
        "/api/v1/books?sort=colour",
        "/api/v1/books?published_after=yesterday",
        "/api/v1/books?cursor=not%20base64",
        "/api/v1/books?limit=1000",
        "/api/v1/books?q=%01",
    ] {
        let mut mocks = Mocks::new(identity());
        mocks.catalog.expect_list_books().never();
        let (status, headers, _) = send(mocks, TestRequest::get().uri(uri)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(is_problem(&headers));
    }
}

/// One rule for the whole API: an empty query value is a value, and none fits.
#[actix_web::test]
async fn empty_query_values_are_400s() {
    for parameter in [
        "author",
        "q",
        "published_after",
        "published_before",
        "sort",
        "limit",
        "cursor",
    ] {
        let mut mocks = Mocks::new(identity());
        mocks.catalog.expect_list_books().never();
        let uri = format!("/api/v1/books?{parameter}=");
        let (status, headers, _) = send(mocks, TestRequest::get().uri(&uri)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(is_problem(&headers));
    }
}

/// A well-formed cursor that this list, in this sort, did not issue names no page.
#[actix_web::test]
async fn a_cursor_the_list_did_not_issue_is_a_404() {
    let mut mocks = Mocks::new(identity());
    mocks.catalog.expect_list_books().never();
    let (status, headers, _) = send(
        mocks,
        TestRequest::get().uri("/api/v1/books?cursor=Zm9yZ2Vk"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(is_problem(&headers));
}

#[actix_web::test]
async fn the_next_link_keeps_filters_and_sort() {
    let mut mocks = Mocks::new(identity());
    mocks.catalog.expect_list_books().returning(|query| {
        assert_eq!(
            query.limit, 2,
            "one more than asked, to see if a page follows"
        );
        assert_eq!(query.filter.author.as_deref(), Some("Frank Herbert"));
        Ok(vec![a_book(1), a_book(1)])
    });
    let (status, headers, body) = send(
        mocks,
        TestRequest::get().uri("/api/v1/books?author=Frank%20Herbert&sort=-price&limit=1"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let cursor = body["next_cursor"].as_str().unwrap();
    assert_eq!(
        value(&headers, header::LINK),
        format!(
            "</api/v1/books?author=Frank%20Herbert&sort=-price&limit=1&cursor={cursor}>; rel=\"next\""
        )
    );
}

#[actix_web::test]
async fn idempotency_failures_map_to_their_statuses() {
    use waiter_ports::idempotency::IdempotencyError;
    let cases: [(fn() -> IdempotencyError, StatusCode); 3] = [
        (|| IdempotencyError::InvalidKey, StatusCode::BAD_REQUEST),
        (|| IdempotencyError::InFlight, StatusCode::CONFLICT),
        (
            || IdempotencyError::Mismatch,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ];
    for (error, expected) in cases {
        let mut mocks = Mocks::new(identity());
        mocks
            .idempotency
            .expect_begin()
            .returning(move |_, _, _| Err(error()));
        mocks.catalog.expect_create_book().never();
        let request = TestRequest::post()
            .uri("/api/v1/books")
            .insert_header((header::AUTHORIZATION, "Bearer good"))
            .insert_header(("Idempotency-Key", "k1"))
            .set_json(book_json());
        let (status, headers, _) = send(mocks, request).await;
        assert_eq!(status, expected);
        assert!(is_problem(&headers));
    }
}

/// `POST /books`, signed in, with the idempotency key `k1`.
fn keyed_book_post() -> TestRequest {
    TestRequest::post()
        .uri("/api/v1/books")
        .insert_header((header::AUTHORIZATION, "Bearer good"))
        .insert_header(("Idempotency-Key", "k1"))
        .set_json(book_json())
}

/// What `begin` answers for a key seen for the first time.
fn proceed(
    scope: &str,
    key: &str,
    fingerprint: waiter_ports::idempotency::Fingerprint,
) -> waiter_ports::idempotency::Admission {
    let at = time::OffsetDateTime::UNIX_EPOCH;
    let key = format!("{scope}|{key}");
    waiter_ports::idempotency::Admission::Proceed(waiter_ports::idempotency::KeyedRequest::new(
        key,
        fingerprint,
        at,
        at,
        (),
    ))
}

#[actix_web::test]
async fn a_replay_returns_the_stored_response_marked_as_such() {
    use waiter_ports::idempotency::{Admission, StoredResponse};
    let mut mocks = Mocks::new(identity());
    mocks.idempotency.expect_begin().returning(|scope, key, _| {
        assert_eq!(scope, format!("account:{}", member().account_id));
        assert_eq!(key, "k1");
        Ok(Admission::Replay(StoredResponse {
            status: 201,
            headers: vec![("location".into(), "/api/v1/books/book_1".into())],
            body: br#"{"first":true}"#.to_vec(),
        }))
    });
    mocks.catalog.expect_create_book().never();
    let (status, headers, body) = send(mocks, keyed_book_post()).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(value(&headers, header::LOCATION), "/api/v1/books/book_1");
    assert_eq!(headers.get("idempotent-replayed").unwrap(), "true");
    assert_eq!(body, json!({"first": true}));
}

/// A keyed request hands its key to the use case with the renderer of the
/// response, and what the use case would record is the response sent.
#[actix_web::test]
async fn a_keyed_create_records_exactly_the_response_it_sends() {
    use std::sync::{Arc, Mutex};
    use waiter_ports::idempotency::{Fingerprint, StoredResponse};
    let mut mocks = Mocks::new(identity());
    mocks
        .idempotency
        .expect_begin()
        .times(1)
        .returning(|scope, key, fingerprint| Ok(proceed(scope, key, fingerprint)));
    let recorded: Arc<Mutex<Option<StoredResponse>>> = Arc::default();
    let slot = Arc::clone(&recorded);
    mocks
        .catalog
        .expect_create_book()
        .times(1)
        .returning(move |_, _, keyed| {
            let keyed = keyed.expect("a keyed request hands its key on");
            let record = keyed.record(&a_book(1)).expect("renders");
            assert_eq!(record.key, format!("account:{}|k1", member().account_id));
            assert_ne!(record.remembered.fingerprint, Fingerprint([0; 32]));
            *slot.lock().unwrap() = Some(record.remembered.response);
            Ok(a_book(1))
        });
    let (status, headers, body) = send(mocks, keyed_book_post()).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(headers.get("idempotent-replayed").is_none());
    let stored = recorded.lock().unwrap().clone().expect("recorded");
    assert_eq!(stored.status, 201);
    assert_eq!(serde_json::from_slice::<Value>(&stored.body).unwrap(), body);
    for name in [header::LOCATION, header::ETAG] {
        let sent = (
            name.as_str().to_owned(),
            value(&headers, name.clone()).to_owned(),
        );
        assert!(
            stored.headers.contains(&sent),
            "{sent:?} in {:?}",
            stored.headers
        );
    }
}

/// When another request with the key committed first, this one created
/// nothing, and the client gets the other's response as a replay.
#[actix_web::test]
async fn a_key_taken_meanwhile_replays_the_first_response() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use waiter_ports::catalog::CatalogError;
    use waiter_ports::idempotency::{Admission, KeyTaken, StoredResponse};
    let mut mocks = Mocks::new(identity());
    let calls = AtomicUsize::new(0);
    mocks
        .idempotency
        .expect_begin()
        .times(2)
        .returning(move |scope, key, fingerprint| {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                Ok(proceed(scope, key, fingerprint))
            } else {
                Ok(Admission::Replay(StoredResponse {
                    status: 201,
                    headers: vec![("location".to_owned(), "/api/v1/books/book_9".to_owned())],
                    body: br#"{"first": true}"#.to_vec(),
                }))
            }
        });
    mocks
        .catalog
        .expect_create_book()
        .times(1)
        .returning(|_, _, _| Err(CatalogError::KeyTaken(KeyTaken)));
    let (status, headers, body) = send(mocks, keyed_book_post()).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(value(&headers, header::LOCATION), "/api/v1/books/book_9");
    assert_eq!(headers.get("idempotent-replayed").unwrap(), "true");
    assert_eq!(body, json!({"first": true}));
}

#[actix_web::test]
async fn a_trailing_slash_is_a_404_not_a_405_for_its_own_method() {
    let (status, headers, _) = call(identity(), TestRequest::get().uri("/api/v1/books/")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(headers.get(header::ALLOW).is_none());
}

#[actix_web::test]
async fn every_response_carries_a_request_id_and_a_500_tells_nothing() {
    let mut failing = identity();
    failing.expect_get_own_account().returning(|_| {
        Err(AccountError::Port(PortError::Unexpected(anyhow::anyhow!(
            "relation \"accounts\" does not exist"
        ))))
    });
    let request = TestRequest::get()
        .uri("/api/v1/accounts/me")
        .insert_header((header::AUTHORIZATION, "Bearer good"));
    let (status, headers, body) = call(failing, request).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(is_problem(&headers));
    assert!(!body.to_string().contains("relation"), "{body}");
    assert_eq!(body["detail"], "internal error");
    let request_id = headers.get("x-request-id").expect("a request id");
    assert_eq!(request_id.len(), 36, "a UUID");

    let (_, headers, _) = call(identity(), TestRequest::get().uri("/healthz")).await;
    assert!(headers.contains_key("x-request-id"));
}

#[actix_web::test]
async fn an_overlong_search_is_refused() {
    let mut mocks = Mocks::new(identity());
    mocks.catalog.expect_list_books().never();
    let uri = format!("/api/v1/books?q={}", "x".repeat(201));
    let (status, _, _) = send(mocks, TestRequest::get().uri(&uri)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[actix_web::test]
async fn head_is_answered_like_get_without_a_body() {
    let mut mocks = Mocks::new(identity());
    mocks.catalog.expect_get_book().returning(|_| Ok(a_book(4)));
    let state_request = TestRequest::default()
        .method(actix_web::http::Method::HEAD)
        .uri("/api/v1/books/book_01JD0W5ZK3J2S8Q4V6X7Y9ZABC");
    let (status, headers, _) = send(mocks, state_request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(value(&headers, header::ETAG), "\"4\"");

    let (status, headers, _) = call(identity(), TestRequest::delete().uri("/healthz")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(value(&headers, header::ALLOW), "GET, HEAD, OPTIONS");
}
