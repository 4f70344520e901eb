//! Handler tests: the HTTP surface over mocked use cases, with `actix_web::test`.
//!
//! These pin the translation layer: statuses, headers and the problem+json
//! envelope, including for failures actix itself detects (bad JSON, wrong
//! media type, unknown routes and methods).

use std::sync::Arc;

use actix_web::http::{StatusCode, header};
use actix_web::test::{self, TestRequest};
use serde_json::{Value, json};
use time::macros::datetime;
use waiter_domain::{Account, AccountId, DisplayName, Email, Role, SessionId, Version};
use waiter_http::{HttpState, JSON_LIMIT, app};
use waiter_ports::PortError;
use waiter_ports::health::{DependencyStatus, MockHealthUseCases};
use waiter_ports::identity::{AccountError, AuthError, Caller, MockIdentityUseCases};

fn account() -> Account {
    Account {
        id: AccountId::from_ulid(ulid::Ulid::from(1_u128)),
        email: Email::parse("ann@example.com").unwrap(),
        display_name: DisplayName::parse("Ann").unwrap(),
        role: Role::Member,
        version: Version::new(3),
        created_at: datetime!(2026-11-21 12:00 UTC),
        updated_at: datetime!(2026-11-21 12:00 UTC),
    }
}

fn member() -> Caller {
    Caller {
        account_id: account().id,
        session_id: SessionId::from_ulid(ulid::Ulid::from(2_u128)),
        role: Role::Member,
    }
}

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

async fn call(
    identity: MockIdentityUseCases,
    request: TestRequest,
) -> (StatusCode, header::HeaderMap, Value) {
    let mut health = MockHealthUseCases::new();
    health.expect_readiness().returning(|| {
        vec![DependencyStatus {
            name: "database",
            ready: false,
        }]
    });
    let state = HttpState {
        identity: Arc::new(identity),
        health: Arc::new(health),
    };
    let service = test::init_service(app(state)).await;
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
        .expect_sign_up()
        .withf(|sign_up| sign_up.email.as_str() == "ann@example.com")
        .returning(|_| Ok(account()));
    let request = TestRequest::post().uri("/api/v1/accounts").set_json(json!({
        "email": " Ann@Example.com", "password": "correct horse", "display_name": "Ann", "role": "admin"
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
async fn invalid_sign_up_fields_are_all_listed_in_a_422() {
    let mut identity = identity();
    identity.expect_sign_up().never();
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
        .expect_sign_up()
        .returning(|_| Err(AccountError::EmailTaken));
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
    identity.expect_own_account().returning(|_| Ok(account()));
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
        StatusCode::BAD_REQUEST,
        "a weak tag cannot match for a write"
    );
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
    assert_eq!(value(&headers, header::ALLOW), "DELETE, GET, PATCH");
}

#[actix_web::test]
async fn malformed_ids_are_404_not_500() {
    let mut identity = identity();
    identity.expect_end_session().never();
    let request = TestRequest::delete()
        .uri("/api/v1/sessions/acct_01JD0W5ZK3J2S8Q4V6X7Y9ZABC")
        .insert_header((header::AUTHORIZATION, "Bearer good"));
    let (status, _, _) = call(identity, request).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[actix_web::test]
async fn an_unavailable_dependency_is_a_503_without_details() {
    let mut identity = identity();
    identity.expect_own_account().returning(|_| {
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
