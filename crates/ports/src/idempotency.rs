//! Idempotency keys: a creating request sent again with the same key gets
//! the first response instead of creating again.
//!
//! The key and the response it replays are written by the store that creates
//! the resource, in the same transaction (an [`IdempotencyRecord`] passed to
//! its `insert`), so "created" and "remembered" can never disagree: a request
//! cut short before its commit leaves neither behind, and one that committed
//! leaves both. The [`IdempotencyStore`] only reads what was remembered.

use std::any::Any;
use std::fmt;

use async_trait::async_trait;
use thiserror::Error;
use waiter_domain::Timestamp;

use crate::PortError;

/// A digest of what a request asked for (method, path, body), so a key reused
/// for a different request is told apart from a retry.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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
    /// The HTTP status of the first response, replayed as it was (`201`).
    pub status: u16,
    /// Only headers describing the created resource, such as `Location` and `ETag`.
    pub headers: Vec<(String, String)>,
    /// The body as sent, byte for byte, so a replay is indistinguishable.
    pub body: Vec<u8>,
}

/// What a key remembers: the request that first used it and its response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remembered {
    /// What the first request asked for, to tell a retry from a misused key.
    pub fingerprint: Fingerprint,
    /// What it was answered, to replay to a retry.
    pub response: StoredResponse,
}

/// A key and the response to replay under it, for a creating store to write
/// in the transaction that creates the resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// Already scoped to its caller (`account:…|<key>`): unique in the store.
    pub key: String,
    /// What was remembered.
    pub remembered: Remembered,
    /// From the service's clock. A record of the same key that expired by
    /// now is replaced; others that expired by now may be pruned.
    pub created_at: Timestamp,
    /// Until when the response is replayed.
    pub expires_at: Timestamp,
}

/// Why a creating store wrote nothing: another request recorded the key
/// first (between this request's admission and its commit, on another
/// instance). The created resource was rolled back with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("another request recorded this idempotency key first")]
pub struct KeyTaken;

/// Reads what keys remember, and forgets it when it expires.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// What `key` remembers, unless nothing or only a record that expired by `now`.
    async fn find(&self, key: &str, now: Timestamp) -> Result<Option<Remembered>, PortError>;

    /// Deletes the records that expired by `now`: they are ignored already,
    /// this only keeps the store small.
    async fn prune(&self, now: Timestamp) -> Result<(), PortError>;
}

/// Renders a created resource as the response to remember. It fails only if
/// the response cannot be encoded, which is no fault of the caller's.
pub type Render<T> = Box<dyn Fn(&T) -> Result<StoredResponse, PortError> + Send + Sync>;

/// A request admitted to run under its key, until it is dropped: while it
/// lives, the same key sent again to this instance is answered "in flight".
pub struct KeyedRequest {
    key: String,
    fingerprint: Fingerprint,
    created_at: Timestamp,
    expires_at: Timestamp,
    /// Whatever the admitting service keeps the key marked in flight with;
    /// dropping it unmarks the key, however the request ends.
    _in_flight: Box<dyn Any + Send + Sync>,
}

impl KeyedRequest {
    /// A request admitted under the scoped `key` at `created_at`, whose
    /// response is to be replayed until `expires_at`, marked in flight by
    /// `in_flight` until dropped.
    pub fn new(
        key: String,
        fingerprint: Fingerprint,
        created_at: Timestamp,
        expires_at: Timestamp,
        in_flight: impl Any + Send + Sync,
    ) -> Self {
        Self {
            key,
            fingerprint,
            created_at,
            expires_at,
            _in_flight: Box::new(in_flight),
        }
    }

    /// The same request, with how to render what it creates: what a
    /// creating use case takes.
    pub fn rendering<T>(self, render: Render<T>) -> Keyed<T> {
        Keyed {
            request: self,
            render,
        }
    }
}

impl fmt::Debug for KeyedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRequest")
            .field("key", &self.key)
            .field("fingerprint", &self.fingerprint)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A creating request with an idempotency key, as a creating use case takes
/// it: the use case renders what it is about to create and has the store
/// write the record with it.
pub struct Keyed<T> {
    request: KeyedRequest,
    render: Render<T>,
}

impl<T> Keyed<T> {
    /// The record to write with `created`, the resource as it will be stored.
    pub fn record(&self, created: &T) -> Result<IdempotencyRecord, PortError> {
        Ok(IdempotencyRecord {
            key: self.request.key.clone(),
            remembered: Remembered {
                fingerprint: self.request.fingerprint,
                response: (self.render)(created)?,
            },
            created_at: self.request.created_at,
            expires_at: self.request.expires_at,
        })
    }
}

impl<T> fmt::Debug for Keyed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyed")
            .field("request", &self.request)
            .finish_non_exhaustive()
    }
}

/// How a request with an idempotency key should proceed.
#[derive(Debug)]
pub enum Admission {
    /// Run the request, handing it to the creating use case.
    Proceed(KeyedRequest),
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

/// Admission of creating requests with an idempotency key, as the HTTP
/// adapter drives it.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait IdempotencyUseCases: Send + Sync {
    /// Admits a request with `key` within `scope` (the account, or the client
    /// address when anonymous): a replay of what the key remembers, or a
    /// [`KeyedRequest`] to run. `InvalidKey`; `InFlight` while a request with
    /// the key runs on this instance; `Mismatch` when the key was used for
    /// another request.
    async fn begin(
        &self,
        scope: &str,
        key: &str,
        fingerprint: Fingerprint,
    ) -> Result<Admission, IdempotencyError>;
}
