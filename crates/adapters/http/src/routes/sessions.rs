//! `/api/v1/sessions`: sign in, refresh, inspect and end sessions.

use actix_web::http::header;
use actix_web::{HttpResponse, delete, get, post, web};
use serde::Deserialize;
use utoipa::ToSchema;
use waiter_domain::{Email, SessionId};
use waiter_ports::identity::{Credentials, IdentityUseCases};
use waiter_ports::rate_limit::Policy;

use crate::dto::{ItemsBody, SessionBody, TokenBody};
use crate::edge::limits::Throttle;
use crate::error::ApiError;
use crate::extract::{Authenticated, Body};
use crate::responses::{Bearer, JsonBody, NotFound, Unavailable};

type Identity = web::Data<dyn IdentityUseCases>;

/// The body of a sign-in. Any email and password may be tried; a wrong pair is a 401.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignInRequest {
    #[schema(example = "ann@example.com")]
    pub email: String,
    #[schema(example = "correct horse battery staple")]
    pub password: String,
}

/// The body of a refresh.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The refresh token from the last sign-in or refresh.
    pub refresh_token: String,
}

/// Token responses must never be cached (RFC 6749 §5.1).
fn tokens_response(tokens: TokenBody) -> HttpResponse {
    HttpResponse::Created()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(tokens)
}

/// Sign in: open a session and get an access and a refresh token.
///
/// Attempts are limited per email and client address (guessing one
/// account's password), reset by a success, and per client address whatever
/// the email (at the edge): failures elsewhere never lock the owner out.
#[utoipa::path(
    tag = "sessions",
    request_body = SignInRequest,
    responses(
        (status = 201, description = "Signed in", body = TokenBody),
        JsonBody, Bearer, Unavailable,
    )
)]
#[post("/sessions")]
pub async fn create_session(
    identity: Identity,
    throttle: Throttle,
    Body(body): Body<SignInRequest>,
) -> Result<HttpResponse, ApiError> {
    let SignInRequest { email, password } = body;
    // The email as the account is known by, so `Ann@…` and `ann@…` count together.
    let account = Email::parse(&email).map_or_else(
        |_| email.trim().to_lowercase(),
        |email| email.as_str().to_owned(),
    );
    let attempt = format!("{account} from {}", throttle.address());
    throttle.check(Policy::SignIn, &attempt).await?;
    let tokens = identity
        .create_session(Credentials { email, password })
        .await?;
    throttle.reset(Policy::SignIn, &attempt).await;
    Ok(tokens_response(tokens.into()))
}

/// Exchange a refresh token for a new token pair. The old refresh token dies;
/// presenting it again revokes the whole session. Refreshes are limited per
/// session.
#[utoipa::path(
    tag = "sessions",
    request_body = RefreshRequest,
    responses(
        (status = 201, description = "A new token pair", body = TokenBody),
        JsonBody, Bearer, Unavailable,
    )
)]
#[post("/sessions/refresh")]
pub async fn refresh_session(
    identity: Identity,
    throttle: Throttle,
    Body(body): Body<RefreshRequest>,
) -> Result<HttpResponse, ApiError> {
    if let Some(session) = identity.refresh_token_session(&body.refresh_token) {
        throttle
            .check(Policy::Refresh, &session.to_string())
            .await?;
    }
    let tokens = identity.refresh_session(&body.refresh_token).await?;
    Ok(tokens_response(tokens.into()))
}

/// The session the access token belongs to.
#[utoipa::path(
    tag = "sessions",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The current session", body = SessionBody),
        Bearer, NotFound, Unavailable,
    )
)]
#[get("/sessions/me")]
pub async fn get_current_session(
    identity: Identity,
    Authenticated(caller): Authenticated,
) -> Result<HttpResponse, ApiError> {
    let session = identity.get_current_session(caller).await?;
    Ok(HttpResponse::Ok().json(SessionBody::from(session)))
}

/// Sign out: end the current session.
#[utoipa::path(
    tag = "sessions",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Signed out"),
        Bearer, NotFound, Unavailable,
    )
)]
#[delete("/sessions/me")]
pub async fn delete_current_session(
    identity: Identity,
    Authenticated(caller): Authenticated,
) -> Result<HttpResponse, ApiError> {
    identity.delete_session(caller, caller.session_id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The caller's live sessions, newest first.
#[utoipa::path(
    tag = "sessions",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The sessions", body = ItemsBody<SessionBody>),
        Bearer, Unavailable,
    )
)]
#[get("/sessions")]
pub async fn list_sessions(
    identity: Identity,
    Authenticated(caller): Authenticated,
) -> Result<HttpResponse, ApiError> {
    let sessions = identity.list_sessions(caller).await?;
    Ok(HttpResponse::Ok().json(ItemsBody {
        items: sessions.into_iter().map(SessionBody::from).collect(),
    }))
}

/// Sign out everywhere: end every session of the caller.
#[utoipa::path(
    tag = "sessions",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Every session ended"),
        Bearer, Unavailable,
    )
)]
#[delete("/sessions")]
pub async fn delete_all_sessions(
    identity: Identity,
    Authenticated(caller): Authenticated,
) -> Result<HttpResponse, ApiError> {
    identity.delete_all_sessions(caller).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// End one of the caller's sessions.
#[utoipa::path(
    tag = "sessions",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "A session id, `sess_…`")),
    responses(
        (status = 204, description = "Session ended"),
        Bearer, NotFound, Unavailable,
    )
)]
#[delete("/sessions/{id}")]
pub async fn delete_session(
    identity: Identity,
    Authenticated(caller): Authenticated,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id: SessionId = id
        .parse()
        .map_err(|_| ApiError::NotFound("no such session"))?;
    identity.delete_session(caller, id).await?;
    Ok(HttpResponse::NoContent().finish())
}
