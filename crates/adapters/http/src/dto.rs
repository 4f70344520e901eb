//! Response bodies shared by several routes, and their conversions from domain types.
//!
//! Request bodies live beside the handler that reads them.

use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;
use waiter_domain::{Account, Session};
use waiter_ports::identity::IssuedTokens;

/// An account as its owner or an admin sees it. Never carries a secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountBody {
    #[schema(example = "acct_01JD0W5ZK3J2S8Q4V6X7Y9ZABC")]
    pub id: String,
    #[schema(example = "ann@example.com")]
    pub email: String,
    #[schema(example = "Ann")]
    pub display_name: String,
    /// `member` or `admin`.
    #[schema(example = "member")]
    pub role: String,
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
            role: account.role.to_string(),
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
