//! `/api/v1/accounts`: sign-up, the caller's own account, and administration.

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, delete, get, patch, post, web};
use serde::Deserialize;
use utoipa::ToSchema;
use waiter_domain::{Account, AccountId, DisplayName, SignUp, ValidationErrors};
use waiter_ports::idempotency::IdempotencyUseCases;
use waiter_ports::identity::AccountPage;
use waiter_ports::identity::{IdentityUseCases, OwnAccountChanges};

use crate::dto::{AccountBody, PageBody, RoleName};
use crate::error::ApiError;
use crate::extract::{Authenticated, Body, IdempotencyKey, IfMatch, etag};
use crate::fields::{self, present};
use crate::idempotency::{Replayable, create_idempotently, scope};
use crate::pagination::{PageQuery, page_response};
use crate::responses::{
    Bearer, Conditional, Conflict, Forbidden, Idempotent, JsonBody, ListQuery, NotFound,
    Unavailable,
};

type Identity = web::Data<dyn IdentityUseCases>;

/// The body of a sign-up. The server chooses everything else: a sign-up is
/// always a `member`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignUpRequest {
    #[schema(schema_with = fields::email_schema)]
    pub email: String,
    #[schema(schema_with = fields::password_schema)]
    pub password: String,
    #[schema(schema_with = fields::text_schema::<DisplayName>)]
    pub display_name: String,
}

impl SignUpRequest {
    fn parse(&self) -> Result<SignUp, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        let email = errors.check("email", fields::email(&self.email));
        let password = errors.check("password", fields::password(&self.password));
        let display_name = errors.check("display_name", fields::text(&self.display_name));
        match (email, password, display_name) {
            (Some(email), Some(password), Some(display_name)) => Ok(SignUp {
                email,
                password,
                display_name,
            }),
            _ => Err(errors),
        }
    }
}

/// A JSON merge patch of one's own account; absent fields stay as they are,
/// and none can be removed. Changing `email` or `password` needs
/// `current_password` (403 without it, or with a wrong one).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateOwnAccountRequest {
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = fields::text_schema::<DisplayName>)]
    pub display_name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = fields::email_schema)]
    pub email: Option<String>,
    /// The new password; changing it ends every other session.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = fields::password_schema)]
    pub password: Option<String>,
    /// The account's current password, as proof for changing `email` or `password`.
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    pub current_password: Option<String>,
}

/// An administrator's change to an account.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAccountRequest {
    /// Changing it signs the account out everywhere.
    pub role: RoleName,
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
    params(IdempotencyKey),
    responses(
        (status = 201, description = "Created", body = AccountBody,
            headers(("Location" = String, description = "The new account's URL"), ("ETag" = String))),
        JsonBody, Idempotent, Conflict, Unavailable,
    )
)]
#[post("/accounts")]
pub async fn create_account(
    req: HttpRequest,
    identity: Identity,
    idempotency: web::Data<dyn IdempotencyUseCases>,
    key: IdempotencyKey,
    Body(body): Body<SignUpRequest>,
) -> Result<HttpResponse, ApiError> {
    let sign_up = body.parse()?;
    let scope = scope(&req, None);
    // The password is left out of the fingerprint, so no digest of it is ever stored.
    let fingerprinted = (&body.email, &body.display_name);
    create_idempotently(
        &req,
        key,
        idempotency.as_ref(),
        &scope,
        &fingerprinted,
        created,
        async |keyed| Ok(identity.create_account(sign_up, keyed).await?),
    )
    .await
}

/// The response to a created account, also what its idempotency key replays.
fn created(account: &Account) -> Result<Replayable, ApiError> {
    Ok(
        Replayable::json(StatusCode::CREATED, &AccountBody::from(account.clone()))?
            .header(header::LOCATION, location(account.id))
            .header(header::ETAG, etag(account.version)),
    )
}

/// The caller's own account.
#[utoipa::path(
    tag = "accounts",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The account", body = AccountBody, headers(("ETag" = String))),
        Bearer, Unavailable,
    )
)]
#[get("/accounts/me")]
pub async fn get_own_account(
    identity: Identity,
    Authenticated(caller): Authenticated,
) -> Result<HttpResponse, ApiError> {
    Ok(account_response(identity.get_own_account(caller).await?))
}

/// Change the caller's display name, email or password. An empty patch changes nothing.
#[utoipa::path(
    tag = "accounts",
    security(("bearer" = [])),
    request_body(content = UpdateOwnAccountRequest, content_type = "application/merge-patch+json"),
    params(IfMatch),
    responses(
        (status = 200, description = "Updated", body = AccountBody, headers(("ETag" = String))),
        JsonBody, Bearer, Forbidden, Conflict, Conditional, Unavailable,
    )
)]
#[patch("/accounts/me")]
pub async fn update_own_account(
    identity: Identity,
    Authenticated(caller): Authenticated,
    if_match: IfMatch,
    Body(body): Body<UpdateOwnAccountRequest>,
) -> Result<HttpResponse, ApiError> {
    let mut errors = ValidationErrors::new();
    let display_name = body
        .display_name
        .and_then(|raw| errors.check("display_name", fields::text(&raw)));
    let email = body
        .email
        .and_then(|raw| errors.check("email", fields::email(&raw)));
    let new_password = body
        .password
        .and_then(|raw| errors.check("password", fields::password(&raw)));
    errors.into_result(|| ())?;
    let changes = OwnAccountChanges {
        display_name,
        email,
        new_password,
        current_password: body.current_password,
        expected_version: if_match.expected()?,
    };
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
        Bearer, Unavailable,
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
        Bearer, Forbidden, ListQuery, Unavailable,
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
        Bearer, Forbidden, NotFound, Unavailable,
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
    params(("id" = String, Path, description = "An account id, `acct_…`"), IfMatch),
    responses(
        (status = 200, description = "Updated", body = AccountBody, headers(("ETag" = String))),
        JsonBody, Bearer, Forbidden, NotFound, Conditional, Unavailable,
    )
)]
#[patch("/accounts/{id}")]
pub async fn update_account(
    identity: Identity,
    Authenticated(caller): Authenticated,
    id: web::Path<String>,
    if_match: IfMatch,
    Body(body): Body<UpdateAccountRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = account_id(&id)?;
    let account = identity
        .update_account(caller, id, body.role.into(), if_match.expected()?)
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
        Bearer, Forbidden, NotFound, Unavailable,
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
