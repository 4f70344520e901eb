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

/// Who holds a claim: a random 128-bit token the claimer picks (the service
/// draws a fresh one per request), so a request whose claim expired and was
/// taken over by a later request can neither complete nor release the later
/// request's claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClaimToken(pub u128);

/// A response as it is replayed: status, the headers that matter, and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// The HTTP status of the first response, replayed as it was (`201`).
    pub status: u16,
    /// Only headers describing the created resource, such as `Location` and `ETag`.
    pub headers: Vec<(String, String)>,
    /// The body as sent, byte for byte, so a replay is indistinguishable.
    pub body: Vec<u8>,
}

/// What the store found under a key when asked to claim it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The key was free and is now claimed by the caller, under the
    /// [`ClaimToken`] it passed, until `complete`, `release` or the claim's expiry.
    Claimed,
    /// Another request holds the claim.
    InFlight {
        /// What the holder asked for, to tell a retry (409) from a misused key (422).
        fingerprint: Fingerprint,
    },
    /// A request with this key already completed.
    Completed {
        /// What the first request asked for, to tell a retry from a misused key.
        fingerprint: Fingerprint,
        /// What it was answered, to replay to a retry.
        response: StoredResponse,
    },
}

/// Remembers idempotency keys. Keys are opaque strings already scoped by the
/// caller (`account:…:key`); adapters may prefix them.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Atomically claims `key` under `claim` for a request with `fingerprint`
    /// when it is free, or reports what holds it. Of concurrent claims of one
    /// free key, exactly one MUST get `Claimed`. A claim not completed or
    /// released within `claim_ttl` expires, so a crashed request never blocks
    /// its key forever. `claim` MUST be fresh and unguessable (128 random
    /// bits): it is all that tells this claim's holder from a later one's.
    async fn claim(
        &self,
        key: &str,
        claim: ClaimToken,
        fingerprint: Fingerprint,
        claim_ttl: Duration,
    ) -> Result<ClaimOutcome, PortError>;

    /// Records the response of the request holding `claim` on `key`, kept for
    /// `ttl`, in place of the claim. Atomically, and only while `key` still
    /// holds that very claim: returns `Ok(true)` when the response was
    /// stored, and `Ok(false)`, changing nothing, when the claim is gone —
    /// it expired (whether or not another request has claimed the key
    /// since), was released, or was already completed.
    async fn complete(
        &self,
        key: &str,
        claim: ClaimToken,
        fingerprint: Fingerprint,
        response: StoredResponse,
        ttl: Duration,
    ) -> Result<bool, PortError>;

    /// Frees `key` without a response, so a retry runs afresh. Atomically,
    /// and only while `key` still holds `claim`: returns `Ok(true)` when the
    /// claim was removed, and `Ok(false)`, changing nothing, otherwise — so
    /// neither a later request's claim nor a completed response is ever
    /// discarded. Releasing a free key is not an error.
    async fn release(&self, key: &str, claim: ClaimToken) -> Result<bool, PortError>;
}

/// How a request with an idempotency key should proceed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Run the request, then [`IdempotencyUseCases::finish`] (or `abandon`)
    /// it with this claim.
    Proceed {
        /// Proves this request holds the key when it finishes or abandons it.
        claim: ClaimToken,
    },
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
    /// Infrastructure failed (see [`PortError`]): not the caller's doing.
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

    /// Stores the response of a request admitted with `claim` for replay.
    /// `Ok(false)` when nothing was stored because the claim had expired (the
    /// request outlived the claim TTL): a later request with the key may have
    /// run or be running, and its claim or response stands.
    async fn finish(
        &self,
        scope: &str,
        key: &str,
        claim: ClaimToken,
        fingerprint: Fingerprint,
        response: StoredResponse,
    ) -> Result<bool, PortError>;

    /// Frees the key of a request admitted with `claim` that failed in a way
    /// worth retrying. `Ok(false)` when the claim had already expired, so
    /// there was nothing of this request's left to free.
    async fn abandon(&self, scope: &str, key: &str, claim: ClaimToken) -> Result<bool, PortError>;
}
