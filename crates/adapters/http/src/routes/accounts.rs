//! `/api/v1/accounts`: sign-up, the caller's own account, and administration.

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, delete, get, patch, post, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use waiter_domain::{AccountId, DisplayName, Email, Password, Role, SignUp, ValidationErrors};
use waiter_ports::idempotency::IdempotencyUseCases;
use waiter_ports::identity::AccountPage;
use waiter_ports::identity::{IdentityUseCases, OwnAccountChanges};

use crate::dto::{AccountBody, PageBody};
use crate::error::{ApiError, Problem};
use crate::extract::{Authenticated, etag, if_match};
use crate::idempotency::{Replayable, run_idempotently, scope};
use crate::pagination::{PageQuery, page_response};

type Identity = web::Data<dyn IdentityUseCases>;

/// The body of a sign-up. Fields a client may not set (such as `role`) are ignored.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct SignUpRequest {
    #[schema(example = "ann@example.com")]
    pub email: String,
    /// 8 to 128 characters.
    #[schema(example = "correct horse battery staple")]
    // Left out of the idempotency fingerprint, so no digest of it is ever stored.
    #[serde(skip_serializing)]
    pub password: String,
    /// 1 to 64 characters after trimming.
    #[schema(example = "Ann")]
    pub display_name: String,
}

/// Changes to one's own account; absent fields stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateOwnAccountRequest {
    pub display_name: Option<String>,
    /// Requires `current_password`.
    pub email: Option<String>,
    /// The new password; requires `current_password`, and ends every other session.
    pub password: Option<String>,
    pub current_password: Option<String>,
}

/// An administrator's change to an account.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateAccountRequest {
    /// `member` or `admin`. Changing it signs the account out everywhere.
    #[schema(example = "admin")]
    pub role: String,
}

fn location(id: AccountId) -> String {
    format!("/api/v1/accounts/{id}")
}

/// 200 with the account and its `ETag`.
fn account_response(account: waiter_domain::Account) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::ETAG, etag(account.version)))
        .json(AccountBody::from(account))
}

/// An account id from the path; one that cannot parse cannot exist.
fn account_id(raw: &str) -> Result<AccountId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::NotFound("no such account"))
}

/// Sign up: create a member account.
#[utoipa::path(
    tag = "accounts",
    request_body = SignUpRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: a retry with the same key gets the first response")),
    responses(
        (status = 201, description = "Created", body = AccountBody,
            headers(("Location" = String, description = "The new account's URL"), ("ETag" = String))),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Email already taken, or the same Idempotency-Key is in flight", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/accounts")]
pub async fn create_account(
    req: HttpRequest,
    identity: Identity,
    idempotency: web::Data<dyn IdempotencyUseCases>,
    body: web::Json<SignUpRequest>,
) -> Result<HttpResponse, ApiError> {
    let sign_up = SignUp::parse(&body.email, &body.password, &body.display_name)?;
    let scope = scope(&req, None);
    run_idempotently(&req, idempotency.as_ref(), &scope, &*body, async {
        let account = identity.create_account(sign_up).await?;
        Ok(
            Replayable::json(StatusCode::CREATED, &AccountBody::from(account.clone()))?
                .header(header::LOCATION, location(account.id))
                .header(header::ETAG, etag(account.version)),
        )
    })
    .await
}

/// The caller's own account.
#[utoipa::path(
    tag = "accounts",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The account", body = AccountBody, headers(("ETag" = String))),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/accounts/me")]
pub async fn get_own_account(
    identity: Identity,
    Authenticated(caller): Authenticated,
) -> Result<HttpResponse, ApiError> {
    Ok(account_response(identity.get_own_account(caller).await?))
}

/// Change the caller's display name, email or password.
#[utoipa::path(
    tag = "accounts",
    security(("bearer" = [])),
    request_body = UpdateOwnAccountRequest,
    params(("If-Match" = Option<String>, Header, description = "Apply only if the account's ETag still matches")),
    responses(
        (status = 200, description = "Updated", body = AccountBody, headers(("ETag" = String))),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Email already taken", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "The account changed since it was read", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, or a missing or wrong current_password", body = Problem, content_type = "application/problem+json"),
    )
)]
#[patch("/accounts/me")]
pub async fn update_own_account(
    req: HttpRequest,
    identity: Identity,
    Authenticated(caller): Authenticated,
    body: web::Json<UpdateOwnAccountRequest>,
) -> Result<HttpResponse, ApiError> {
    let expected_version = if_match(&req)?;
    let body = body.into_inner();
    let mut errors = ValidationErrors::new();
    let display_name = body
        .display_name
        .and_then(|raw| errors.check("display_name", DisplayName::parse(&raw)));
    let email = body
        .email
        .and_then(|raw| errors.check("email", Email::parse(&raw)));
    let new_password = body
        .password
        .and_then(|raw| errors.check("password", Password::parse(&raw)));
    if errors.is_empty() && display_name.is_none() && email.is_none() && new_password.is_none() {
        errors.add(
            "body",
            "must change at least one of display_name, email, password",
        );
    }
    let changes = errors.into_result(|| OwnAccountChanges {
        display_name,
        email,
        new_password,
        current_password: body.current_password,
        expected_version,
    })?;
    Ok(account_response(
        identity.update_own_account(caller, changes).await?,
    ))
}

/// Delete the caller's account and end all its sessions.
#[utoipa::path(
    tag = "accounts",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
    )
)]
#[delete("/accounts/me")]
pub async fn delete_own_account(
    identity: Identity,
    Authenticated(caller): Authenticated,
) -> Result<HttpResponse, ApiError> {
    identity.delete_own_account(caller).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// List all accounts, oldest first (admins only).
#[utoipa::path(
    tag = "accounts",
    security(("bearer" = [])),
    params(PageQuery),
    responses(
        (status = 200, description = "One page of accounts", body = PageBody<AccountBody>,
            headers(("Link" = String, description = "The next page, when there is one"))),
        (status = 400, description = "Bad limit or cursor", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/accounts")]
pub async fn list_accounts(
    req: HttpRequest,
    identity: Identity,
    Authenticated(caller): Authenticated,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit()?;
    let after = query.position(|text| text.parse::<AccountId>().ok())?;
    let accounts = identity
        .list_accounts(
            caller,
            AccountPage {
                after,
                limit: limit + 1,
            },
        )
        .await?;
    Ok(page_response(
        &req,
        accounts,
        limit,
        |last| last.id.to_string(),
        AccountBody::from,
    ))
}

/// One account (admins only).
#[utoipa::path(
    tag = "accounts",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "An account id, `acct_…`")),
    responses(
        (status = 200, description = "The account", body = AccountBody, headers(("ETag" = String))),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such account", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/accounts/{id}")]
pub async fn get_account(
    identity: Identity,
    Authenticated(caller): Authenticated,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = account_id(&id)?;
    Ok(account_response(identity.get_account(caller, id).await?))
}

/// Change an account's role (admins only).
#[utoipa::path(
    tag = "accounts",
    security(("bearer" = [])),
    request_body = UpdateAccountRequest,
    params(
        ("id" = String, Path, description = "An account id, `acct_…`"),
        ("If-Match" = Option<String>, Header, description = "Apply only if the account's ETag still matches"),
    ),
    responses(
        (status = 200, description = "Updated", body = AccountBody, headers(("ETag" = String))),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such account", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "The account changed since it was read", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown role", body = Problem, content_type = "application/problem+json"),
    )
)]
#[patch("/accounts/{id}")]
pub async fn update_account(
    req: HttpRequest,
    identity: Identity,
    Authenticated(caller): Authenticated,
    id: web::Path<String>,
    body: web::Json<UpdateAccountRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = account_id(&id)?;
    let role: Role = body
        .role
        .parse()
        .map_err(|err| ValidationErrors::single("role", err))?;
    let account = identity
        .update_account(caller, id, role, if_match(&req)?)
        .await?;
    Ok(account_response(account))
}

/// Delete an account and end its sessions (admins only).
#[utoipa::path(
    tag = "accounts",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "An account id, `acct_…`")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such account", body = Problem, content_type = "application/problem+json"),
    )
)]
#[delete("/accounts/{id}")]
pub async fn delete_account(
    identity: Identity,
    Authenticated(caller): Authenticated,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = account_id(&id)?;
    identity.delete_account(caller, id).await?;
    Ok(HttpResponse::NoContent().finish())
}
