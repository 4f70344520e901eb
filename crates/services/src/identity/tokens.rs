//! Access tokens (short-lived HS256 JWTs) and refresh tokens (opaque random strings).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;
use waiter_domain::{SessionId, Timestamp};
use waiter_ports::PortError;
use waiter_ports::identity::Caller;
use waiter_ports::identity::RefreshTokenHash;

/// The key access tokens are signed with: at least 32 bytes, as RFC 7518 §3.2
/// requires for HS256. `Debug` never prints it.
#[derive(Clone)]
pub struct JwtSecret(Vec<u8>);

/// Why a secret cannot sign tokens.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("must be at least {min} bytes long, got {actual}", min = JwtSecret::MIN_LEN)]
pub struct JwtSecretError {
    pub actual: usize,
}

impl JwtSecret {
    /// The shortest acceptable secret.
    pub const MIN_LEN: usize = 32;

    /// Accepts a secret of at least [`Self::MIN_LEN`] bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, JwtSecretError> {
        let bytes = bytes.into();
        if bytes.len() < Self::MIN_LEN {
            return Err(JwtSecretError {
                actual: bytes.len(),
            });
        }
        Ok(Self(bytes))
    }

    /// A fresh random 64-byte secret.
    pub fn generate() -> Self {
        let bytes: [u8; 64] = rand::random();
        Self(bytes.to_vec())
    }

    /// The key bytes, for persisting a generated secret.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for JwtSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtSecret(<redacted>)")
    }
}

/// The claims of an access token.
#[derive(Debug, Serialize, Deserialize)]
struct AccessClaims {
    /// The account id.
    sub: String,
    /// The session id, checked against the revocation set.
    sid: String,
    role: String,
    iat: i64,
    exp: i64,
}

/// Issues and verifies access tokens.
pub(crate) struct AccessTokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl std::fmt::Debug for AccessTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessTokens")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl AccessTokens {
    pub(crate) fn new(secret: &JwtSecret, ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        // Expiry is checked against the injected clock instead, with no leeway.
        validation.validate_exp = false;
        validation.required_spec_claims = ["exp", "sub"].map(String::from).into();
        Self {
            encoding: EncodingKey::from_secret(secret.expose()),
            decoding: DecodingKey::from_secret(secret.expose()),
            validation,
            ttl,
        }
    }

    /// How long an access token lives.
    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Signs a token for `caller` valid from `now` for the configured lifetime.
    pub(crate) fn issue(&self, caller: Caller, now: Timestamp) -> Result<String, PortError> {
        let iat = now.unix_timestamp();
        let claims = AccessClaims {
            sub: caller.account_id.to_string(),
            sid: caller.session_id.to_string(),
            role: caller.role.as_str().to_owned(),
            iat,
            exp: iat + i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX / 2),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(PortError::unexpected)
    }

    /// The caller a token speaks for, if it is well-formed, signed with our
    /// key using HS256, and not expired at `now`.
    pub(crate) fn verify(&self, token: &str, now: Timestamp) -> Option<Caller> {
        let claims = jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &self.validation)
            .ok()?
            .claims;
        if claims.exp <= now.unix_timestamp() {
            return None;
        }
        Some(Caller {
            account_id: claims.sub.parse().ok()?,
            session_id: claims.sid.parse().ok()?,
            role: claims.role.parse().ok()?,
        })
    }
}

/// Random bytes in a refresh token: 256 bits.
const REFRESH_TOKEN_BYTES: usize = 32;
/// The length of a refresh token's secret (unpadded base64url of 32 bytes).
const REFRESH_TOKEN_CHARS: usize = 43;

/// A new refresh token of `session` and the digest to store for it.
///
/// The token names its session before its secret (`sess_….<secret>`), so a
/// refresh can be rate-limited per session before the store is asked. The
/// digest covers the whole text, so a token naming another session than its
/// own matches nothing. `None` makes a token of the older form, a bare
/// secret, for a session that only has such tokens.
pub(crate) fn new_refresh_token(session: Option<SessionId>) -> (String, RefreshTokenHash) {
    let bytes: [u8; REFRESH_TOKEN_BYTES] = rand::random();
    let secret = URL_SAFE_NO_PAD.encode(bytes);
    let token = match session {
        Some(session) => format!("{session}.{secret}"),
        None => secret,
    };
    let hash = hash_refresh_token(&token);
    (token, hash)
}

/// A presented refresh token that could be one of ours: the session it
/// names (unverified; `None` for the older, bare form) and its digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PresentedRefreshToken {
    pub(crate) session: Option<SessionId>,
    pub(crate) hash: RefreshTokenHash,
}

/// The presented token, or `None` when it cannot be one of ours (so garbage
/// never reaches the store).
pub(crate) fn parse_refresh_token(token: &str) -> Option<PresentedRefreshToken> {
    let (session, secret) = match token.split_once('.') {
        Some((session, secret)) => (Some(session.parse::<SessionId>().ok()?), secret),
        None => (None, token),
    };
    let plausible = secret.len() == REFRESH_TOKEN_CHARS
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    plausible.then(|| PresentedRefreshToken {
        session,
        hash: hash_refresh_token(token),
    })
}

fn hash_refresh_token(token: &str) -> RefreshTokenHash {
    RefreshTokenHash(Sha256::digest(token.as_bytes()).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;
    use waiter_domain::{AccountId, Role, SessionId};

    const NOW: Timestamp = datetime!(2026-11-21 12:00 UTC);

    fn caller() -> Caller {
        Caller {
            account_id: AccountId::from_ulid(ulid::Ulid::from(1_u128)),
            session_id: SessionId::from_ulid(ulid::Ulid::from(2_u128)),
            role: Role::Admin,
        }
    }

    fn tokens(secret: &[u8]) -> AccessTokens {
        AccessTokens::new(&JwtSecret::new(secret).unwrap(), Duration::from_secs(900))
    }

    #[test]
    fn short_secrets_are_refused() {
        assert_eq!(
            JwtSecret::new(vec![7; 31]).unwrap_err(),
            JwtSecretError { actual: 31 }
        );
        assert!(JwtSecret::new(vec![7; 32]).is_ok());
    }

    #[test]
    fn a_token_verifies_until_it_expires_with_no_leeway() {
        let tokens = tokens(&[1; 32]);
        let token = tokens.issue(caller(), NOW).unwrap();
        assert_eq!(tokens.verify(&token, NOW), Some(caller()));
        assert_eq!(
            tokens.verify(&token, NOW + Duration::from_secs(899)),
            Some(caller())
        );
        assert_eq!(tokens.verify(&token, NOW + Duration::from_secs(900)), None);
    }

    #[test]
    fn a_token_signed_with_another_key_is_refused() {
        let token = tokens(&[1; 32]).issue(caller(), NOW).unwrap();
        assert_eq!(tokens(&[2; 32]).verify(&token, NOW), None);
    }

    #[test]
    fn a_tampered_token_is_refused() {
        let tokens = tokens(&[1; 32]);
        let token = tokens.issue(caller(), NOW).unwrap();
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let claims = URL_SAFE_NO_PAD.decode(&parts[1]).unwrap();
        let forged = String::from_utf8(claims)
            .unwrap()
            .replace("admin", "member");
        parts[1] = URL_SAFE_NO_PAD.encode(forged);
        assert_eq!(tokens.verify(&parts.join("."), NOW), None);
    }

    #[test]
    fn an_unsigned_token_is_refused() {
        let tokens = tokens(&[1; 32]);
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let claims = format!(
            r#"{{"sub":"{}","sid":"{}","role":"admin","iat":0,"exp":{}}}"#,
            caller().account_id,
            caller().session_id,
            NOW.unix_timestamp() + 600
        );
        let token = format!("{header}.{}.", URL_SAFE_NO_PAD.encode(claims));
        assert_eq!(tokens.verify(&token, NOW), None);
    }

    #[test]
    fn refresh_tokens_are_random_and_only_ours_parse() {
        let session = caller().session_id;
        let (first, first_hash) = new_refresh_token(Some(session));
        let (second, _) = new_refresh_token(Some(session));
        assert_ne!(first, second);
        assert!(first.starts_with(&format!("{session}.")), "{first}");
        assert_eq!(
            parse_refresh_token(&first),
            Some(PresentedRefreshToken {
                session: Some(session),
                hash: first_hash
            })
        );
        let (bare, bare_hash) = new_refresh_token(None);
        assert_eq!(
            parse_refresh_token(&bare),
            Some(PresentedRefreshToken {
                session: None,
                hash: bare_hash
            })
        );
        assert_eq!(parse_refresh_token("short"), None);
        assert_eq!(parse_refresh_token(&format!("{}!", &bare[1..])), None);
        assert_eq!(parse_refresh_token(&format!("sess_nonsense.{bare}")), None);
        let access = tokens(&[1; 32]).issue(caller(), NOW).unwrap();
        assert_eq!(parse_refresh_token(&access), None);
    }

    #[test]
    fn a_token_naming_another_session_has_another_digest() {
        let (token, hash) = new_refresh_token(Some(caller().session_id));
        let secret = token.split_once('.').unwrap().1;
        let other = SessionId::from_ulid(ulid::Ulid::from(7_u128));
        let forged = parse_refresh_token(&format!("{other}.{secret}")).unwrap();
        assert_eq!(forged.session, Some(other));
        assert_ne!(forged.hash, hash);
    }
}
