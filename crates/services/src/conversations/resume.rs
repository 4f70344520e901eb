//! Resume tokens: short-lived HS256 JWTs that let whoever holds one follow a
//! reply's events, for clients (browsers' `EventSource`) that cannot send a
//! bearer token when they reconnect.
//!
//! A resume token names its account, conversation and reply, and carries
//! an audience of its own ([`AUDIENCE`]), so it is never accepted as an
//! access token nor an access token as one, even signed with the same key.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use waiter_domain::{AccountId, ConversationId, Timestamp};
use waiter_ports::PortError;
use waiter_ports::conversations::ReplyKey;

use crate::JwtSecret;

/// The audience of every resume token.
const AUDIENCE: &str = "waiter-resume";

#[derive(Debug, Serialize, Deserialize)]
struct ResumeClaims {
    /// The account that owns the conversation.
    sub: String,
    /// The conversation.
    conv: String,
    /// The reply the token was issued for.
    reply: String,
    aud: String,
    iat: i64,
    exp: i64,
}

/// What a valid resume token grants: following the conversation's replies,
/// as long as the account still owns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ResumeGrant {
    pub(super) account: AccountId,
    pub(super) conversation: ConversationId,
}

/// Issues and verifies resume tokens.
pub(super) struct ResumeTokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl std::fmt::Debug for ResumeTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResumeTokens")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl ResumeTokens {
    pub(super) fn new(secret: &JwtSecret, ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        // Expiry is checked against the injected clock instead, with no leeway.
        validation.validate_exp = false;
        validation.set_audience(&[AUDIENCE]);
        validation.required_spec_claims = ["exp", "sub", "aud"].map(String::from).into();
        Self {
            encoding: EncodingKey::from_secret(secret.expose()),
            decoding: DecodingKey::from_secret(secret.expose()),
            validation,
            ttl,
        }
    }

    /// A token for following the reply `key` of `account`'s conversation,
    /// valid from `now` for the configured lifetime.
    pub(super) fn issue(
        &self,
        account: AccountId,
        key: &ReplyKey,
        now: Timestamp,
    ) -> Result<String, PortError> {
        let iat = now.unix_timestamp();
        let claims = ResumeClaims {
            sub: account.to_string(),
            conv: key.conversation.to_string(),
            reply: key.reply.to_string(),
            aud: AUDIENCE.to_owned(),
            iat,
            exp: iat + i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX / 2),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(PortError::unexpected)
    }

    /// What the token grants, if it is well-formed, signed with our key
    /// using HS256, meant for resuming, and not expired at `now`.
    pub(super) fn verify(&self, token: &str, now: Timestamp) -> Option<ResumeGrant> {
        let claims = jsonwebtoken::decode::<ResumeClaims>(token, &self.decoding, &self.validation)
            .ok()?
            .claims;
        if claims.exp <= now.unix_timestamp() {
            return None;
        }
        Some(ResumeGrant {
            account: claims.sub.parse().ok()?,
            conversation: claims.conv.parse().ok()?,
        })
    }
}
