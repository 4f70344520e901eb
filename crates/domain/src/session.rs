//! Sign-in sessions: one per sign-in, kept alive by rotating refresh tokens.

use crate::id::prefixed_id;
use crate::{AccountId, Timestamp};

prefixed_id!(
    /// Identifies a session: `sess_` followed by 128 random bits in ULID text form.
    ///
    /// Unlike other ids it is *not* time-ordered: a session id appears in every
    /// access token, and must not leak when its owner signed in or be guessable
    /// from a neighbour's.
    SessionId,
    "sess"
);

/// A live sign-in session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Carried by every access token of the session, so ending it ends them.
    pub id: SessionId,
    /// Whose session it is.
    pub account_id: AccountId,
    /// When the account signed in, which the session list shows.
    pub created_at: Timestamp,
    /// When the refresh token was last rotated (equal to `created_at` until then).
    pub refreshed_at: Timestamp,
    /// When the current refresh token stops working, unless rotated before.
    pub expires_at: Timestamp,
}
