//! Idempotency keys: the store port that remembers creating requests and
//! their responses, and the use cases the HTTP adapter drives.

use std::time::Duration;

use async_trait::async_trait;
use thiserror::Error;

use crate::PortError;

/// A digest of what a request asked for (method, path, body), so a key reused
/// for a different request is told apart from a retry.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Fingerprint({:02x}{:02x}{:02x}{:02x}…)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

/// A response as it is replayed: status, the headers that matter, and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    /// Only headers describing the created resource, such as `Location` and `ETag`.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What the store found under a key when asked to claim it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The key was free and is now claimed by the caller, until `complete`,
    /// `release` or the claim's expiry.
    Claimed,
    /// Another request holds the claim.
    InFlight { fingerprint: Fingerprint },
    /// A request with this key already completed.
    Completed {
        fingerprint: Fingerprint,
        response: StoredResponse,
    },
}

/// Remembers idempotency keys. Keys are opaque strings already scoped by the
/// caller (`account:…:key`); adapters may prefix them.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Atomically claims `key` for a request with `fingerprint` when it is
    /// free, or reports what holds it. Of concurrent claims of one free key,
    /// exactly one MUST get `Claimed`. A claim not completed or released
    /// within `claim_ttl` expires, so a crashed request never blocks its key forever.
    async fn claim(
        &self,
        key: &str,
        fingerprint: Fingerprint,
        claim_ttl: Duration,
    ) -> Result<ClaimOutcome, PortError>;

    /// Records the response of a claimed key, kept for `ttl`.
    async fn complete(
        &self,
        key: &str,
        fingerprint: Fingerprint,
        response: StoredResponse,
        ttl: Duration,
    ) -> Result<(), PortError>;

    /// Frees a claimed key without a response, so a retry runs afresh.
    async fn release(&self, key: &str) -> Result<(), PortError>;
}

/// How a request with an idempotency key should proceed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Run the request, then [`IdempotencyUseCases::finish`] (or `abandon`) it.
    Proceed,
    /// Answer with the first response instead of running again.
    Replay(StoredResponse),
}

/// Why a request with an idempotency key cannot proceed.
#[derive(Debug, Error)]
pub enum IdempotencyError {
    /// The key is longer than allowed or empty.
    #[error("an Idempotency-Key must be 1 to 255 visible ASCII characters")]
    InvalidKey,
    /// The first request with this key is still running.
    #[error("a request with this Idempotency-Key is still in progress")]
    InFlight,
    /// The key was first used for a different request.
    #[error("this Idempotency-Key was used for a different request")]
    Mismatch,
    #[error(transparent)]
    Port(#[from] PortError),
}

/// Idempotent handling of creating requests, as the HTTP adapter drives it.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait IdempotencyUseCases: Send + Sync {
    /// Admits a request with `key` within `scope` (the account, or the client
    /// address when anonymous). `InvalidKey`; `InFlight`; `Mismatch`.
    async fn begin(
        &self,
        scope: &str,
        key: &str,
        fingerprint: Fingerprint,
    ) -> Result<Admission, IdempotencyError>;

    /// Stores the response of an admitted request for replay.
    async fn finish(
        &self,
        scope: &str,
        key: &str,
        fingerprint: Fingerprint,
        response: StoredResponse,
    ) -> Result<(), PortError>;

    /// Frees the key of an admitted request that failed in a way worth retrying.
    async fn abandon(&self, scope: &str, key: &str) -> Result<(), PortError>;
}
