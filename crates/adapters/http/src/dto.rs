//! Response bodies, and their conversions from domain types.
//!
//! Request bodies live beside the handler that reads them; the problem body
//! lives with the errors, in `error.rs`.

use std::collections::BTreeMap;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use waiter_domain::{Account, Book, Role, Session};
use waiter_ports::identity::IssuedTokens;

/// What an account may do beyond its own resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RoleName {
    Member,
    Admin,
}

impl From<Role> for RoleName {
    fn from(role: Role) -> Self {
        match role {
            Role::Member => RoleName::Member,
            Role::Admin => RoleName::Admin,
        }
    }
}

impl From<RoleName> for Role {
    fn from(role: RoleName) -> Self {
        match role {
            RoleName::Member => Role::Member,
            RoleName::Admin => Role::Admin,
        }
    }
}

/// An account as its owner or an admin sees it. Never carries a secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountBody {
    #[schema(example = "acct_01JD0W5ZK3J2S8Q4V6X7Y9ZABC")]
    pub id: String,
    #[schema(example = "ann@example.com")]
    pub email: String,
    #[schema(example = "Ann")]
    pub display_name: String,
    pub role: RoleName,
    /// Bumped on every change; also the `ETag`.
    #[schema(example = 1)]
    pub version: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl From<Account> for AccountBody {
    fn from(account: Account) -> Self {
        Self {
            id: account.id.to_string(),
            email: account.email.to_string(),
            display_name: account.display_name.to_string(),
            role: account.role.into(),
            version: account.version.get(),
            created_at: account.created_at,
            updated_at: account.updated_at,
        }
    }
}

/// A sign-in session.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionBody {
    #[schema(example = "sess_7ZQ4M1T9K2W8X3C5V6B0N1P2QR")]
    pub id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When the refresh token was last rotated.
    #[serde(with = "time::serde::rfc3339")]
    pub refreshed_at: OffsetDateTime,
    /// When the session ends unless its refresh token is rotated before.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

impl From<Session> for SessionBody {
    fn from(session: Session) -> Self {
        Self {
            id: session.id.to_string(),
            created_at: session.created_at,
            refreshed_at: session.refreshed_at,
            expires_at: session.expires_at,
        }
    }
}

/// A new token pair (RFC 6749 §5.1 field names).
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenBody {
    /// A JWT for `Authorization: Bearer …`.
    pub access_token: String,
    /// Always `Bearer`.
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    #[schema(example = 900)]
    pub expires_in: u64,
    /// Opaque; exchange it at `POST /api/v1/sessions/refresh`. Usable once.
    pub refresh_token: String,
    pub session: SessionBody,
}

impl From<IssuedTokens> for TokenBody {
    fn from(tokens: IssuedTokens) -> Self {
        Self {
            access_token: tokens.access_token,
            token_type: "Bearer",
            expires_in: tokens.expires_in.as_secs(),
            refresh_token: tokens.refresh_token,
            session: tokens.session.into(),
        }
    }
}

/// A list of items with no further pages.
#[derive(Debug, Serialize, ToSchema)]
pub struct ItemsBody<T> {
    pub items: Vec<T>,
}

/// One page of a keyset-paginated list.
#[derive(Debug, Serialize, ToSchema)]
pub struct PageBody<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A book.
#[derive(Debug, Serialize, ToSchema)]
pub struct BookBody {
    #[schema(example = "book_01JD0W5ZK3J2S8Q4V6X7Y9ZABC")]
    pub id: String,
    #[schema(example = "Dune")]
    pub title: String,
    #[schema(example = "Frank Herbert")]
    pub author: String,
    /// ISBN-13, digits only.
    #[schema(example = "9780441172719")]
    pub isbn: String,
    #[schema(value_type = String, format = Date, example = "1965-08-01")]
    pub published_date: String,
    /// An exact decimal with two places.
    #[schema(value_type = f64, example = 9.99)]
    pub price: serde_json::Number,
    /// The account that created it.
    #[schema(example = "acct_01JD0W5ZK3J2S8Q4V6X7Y9ZABC")]
    pub owner: String,
    /// Bumped on every change; also the `ETag`.
    #[schema(example = 1)]
    pub version: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl From<Book> for BookBody {
    fn from(book: Book) -> Self {
        Self {
            id: book.id.to_string(),
            title: book.title.to_string(),
            author: book.author.to_string(),
            isbn: book.isbn.to_string(),
            published_date: book.published_date.to_string(),
            price: serde_json::Number::from_str(&book.price.to_string())
                .expect("a price renders as a decimal number, which is valid JSON"),
            owner: book.owner.to_string(),
            version: book.version.get(),
            created_at: book.created_at,
            updated_at: book.updated_at,
        }
    }
}

/// The state of the server and its dependencies.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthBody {
    /// `ok`; `degraded` when an optional dependency (the cache) is down and
    /// the server serves without it; `unavailable` when it cannot serve.
    #[schema(example = "ok")]
    pub status: &'static str,
    /// Each dependency by name, with `ok`, `degraded` or `unavailable`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub checks: BTreeMap<&'static str, &'static str>,
}
