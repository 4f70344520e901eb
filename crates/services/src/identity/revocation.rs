//! The revocation set: ended sessions whose access tokens may still be unexpired.
//!
//! An entry lives exactly as long as the longest-lived access token the
//! session could have issued, so the set stays small and needs no sweeping.

use std::sync::Arc;
use std::time::Duration;

use waiter_domain::SessionId;
use waiter_ports::PortError;
use waiter_ports::cache::Cache;

/// Session revocations kept in the shared [`Cache`].
#[derive(Clone)]
pub(crate) struct RevokedSessions {
    cache: Arc<dyn Cache>,
    /// The access token lifetime: after it, no token of the session survives anyway.
    ttl: Duration,
}

fn key(id: SessionId) -> String {
    format!("revoked-session:{id}")
}

impl RevokedSessions {
    pub(crate) fn new(cache: Arc<dyn Cache>, access_token_ttl: Duration) -> Self {
        // A second of margin for tokens issued in the same second as the revocation.
        Self {
            cache,
            ttl: access_token_ttl + Duration::from_secs(1),
        }
    }

    /// Marks every access token of the session as dead from now on.
    pub(crate) async fn revoke(&self, id: SessionId) -> Result<(), PortError> {
        self.cache.set(&key(id), b"1", self.ttl).await
    }

    /// True when the session was revoked.
    pub(crate) async fn contains(&self, id: SessionId) -> Result<bool, PortError> {
        Ok(self.cache.get(&key(id)).await?.is_some())
    }
}
