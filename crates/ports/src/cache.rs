//! A shared key-value cache with expiry: Redis across instances, or in-process for one.

use std::time::Duration;

use async_trait::async_trait;

use crate::PortError;

/// A byte cache whose entries expire.
///
/// An entry may also vanish early when the cache is full (moka's eviction, a
/// Redis `maxmemory` policy); what must survive is sized for or configured so.
///
/// Keys are plain strings chosen by the services (`revoked-session:sess_…`);
/// an adapter may prefix them to share a server with other tenants, but must
/// give every instance configured alike the same view.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait Cache: Send + Sync {
    /// The value stored under `key`, or `None` when absent or expired.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, PortError>;

    /// Stores `value` under `key` for `ttl`, replacing any earlier value.
    ///
    /// A zero `ttl` MUST behave as an immediate expiry, never as "forever".
    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), PortError>;

    /// Stores `value` under `key` for `ttl` only if `key` holds nothing;
    /// returns whether it stored. Atomic: of concurrent calls for one absent
    /// key exactly one stores. Cache-aside reads fill the cache with it, so a
    /// slow read can never overwrite what a later write put there.
    async fn set_if_absent(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, PortError>;

    /// Removes `key`; removing an absent key is not an error.
    async fn delete(&self, key: &str) -> Result<(), PortError>;
}
