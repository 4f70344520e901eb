//! Idempotency keys for creating requests: a retry gets the first response.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use waiter_ports::PortError;
use waiter_ports::idempotency::{
    Admission, ClaimOutcome, Fingerprint, IdempotencyError, IdempotencyStore, IdempotencyUseCases,
    StoredResponse,
};

/// The longest key a client may send.
const MAX_KEY_LEN: usize = 255;

/// Tunables of idempotent request handling.
#[derive(Debug, Clone, Copy)]
pub struct IdempotencySettings {
    /// How long a response is replayed for (default 24 hours).
    pub retention: Duration,
    /// How long a request may hold its key before a retry may run again
    /// (default one minute): a crashed request does not block its key forever.
    pub claim_ttl: Duration,
}

impl Default for IdempotencySettings {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(24 * 3600),
            claim_ttl: Duration::from_secs(60),
        }
    }
}

/// Implements [`IdempotencyUseCases`] over an [`IdempotencyStore`].
pub struct IdempotencyService {
    store: Arc<dyn IdempotencyStore>,
    settings: IdempotencySettings,
}

impl IdempotencyService {
    pub fn new(store: Arc<dyn IdempotencyStore>, settings: IdempotencySettings) -> Self {
        Self { store, settings }
    }
}

/// The store key: the caller's scope and their key, so two callers never
/// collide. Scopes never contain `|`, so the first one splits the two unambiguously.
fn scoped(scope: &str, key: &str) -> String {
    format!("{scope}|{key}")
}

fn valid(key: &str) -> bool {
    (1..=MAX_KEY_LEN).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
}

#[async_trait]
impl IdempotencyUseCases for IdempotencyService {
    async fn begin(
        &self,
        scope: &str,
        key: &str,
        fingerprint: Fingerprint,
    ) -> Result<Admission, IdempotencyError> {
        if !valid(key) {
            return Err(IdempotencyError::InvalidKey);
        }
        let outcome = self
            .store
            .claim(&scoped(scope, key), fingerprint, self.settings.claim_ttl)
            .await?;
        match outcome {
            ClaimOutcome::Claimed => Ok(Admission::Proceed),
            ClaimOutcome::InFlight { fingerprint: first } if first != fingerprint => {
                Err(IdempotencyError::Mismatch)
            }
            ClaimOutcome::InFlight { .. } => Err(IdempotencyError::InFlight),
            ClaimOutcome::Completed {
                fingerprint: first, ..
            } if first != fingerprint => Err(IdempotencyError::Mismatch),
            ClaimOutcome::Completed { response, .. } => Ok(Admission::Replay(response)),
        }
    }

    async fn finish(
        &self,
        scope: &str,
        key: &str,
        fingerprint: Fingerprint,
        response: StoredResponse,
    ) -> Result<(), PortError> {
        self.store
            .complete(
                &scoped(scope, key),
                fingerprint,
                response,
                self.settings.retention,
            )
            .await
    }

    async fn abandon(&self, scope: &str, key: &str) -> Result<(), PortError> {
        self.store.release(&scoped(scope, key)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use waiter_ports::idempotency::MockIdempotencyStore;

    fn service(outcome: ClaimOutcome) -> IdempotencyService {
        let mut store = MockIdempotencyStore::new();
        store.expect_claim().returning(move |key, _, ttl| {
            assert!(key.starts_with("account:1|"));
            assert_eq!(ttl, Duration::from_secs(60));
            Ok(outcome.clone())
        });
        IdempotencyService::new(Arc::new(store), IdempotencySettings::default())
    }

    const MINE: Fingerprint = Fingerprint([1; 32]);
    const OTHER: Fingerprint = Fingerprint([2; 32]);

    fn response() -> StoredResponse {
        StoredResponse {
            status: 201,
            headers: vec![("Location".into(), "/x".into())],
            body: b"{}".to_vec(),
        }
    }

    #[tokio::test]
    async fn a_free_key_proceeds_and_a_completed_one_replays() {
        let proceed = service(ClaimOutcome::Claimed)
            .begin("account:1", "k", MINE)
            .await
            .unwrap();
        assert_eq!(proceed, Admission::Proceed);
        let completed = ClaimOutcome::Completed {
            fingerprint: MINE,
            response: response(),
        };
        let replay = service(completed)
            .begin("account:1", "k", MINE)
            .await
            .unwrap();
        assert_eq!(replay, Admission::Replay(response()));
    }

    #[tokio::test]
    async fn a_key_reused_for_another_request_is_a_mismatch() {
        let completed = ClaimOutcome::Completed {
            fingerprint: OTHER,
            response: response(),
        };
        let err = service(completed)
            .begin("account:1", "k", MINE)
            .await
            .unwrap_err();
        assert!(matches!(err, IdempotencyError::Mismatch));
        let running = ClaimOutcome::InFlight { fingerprint: OTHER };
        let err = service(running)
            .begin("account:1", "k", MINE)
            .await
            .unwrap_err();
        assert!(matches!(err, IdempotencyError::Mismatch));
    }

    #[tokio::test]
    async fn a_key_in_flight_is_a_conflict() {
        let running = ClaimOutcome::InFlight { fingerprint: MINE };
        let err = service(running)
            .begin("account:1", "k", MINE)
            .await
            .unwrap_err();
        assert!(matches!(err, IdempotencyError::InFlight));
    }

    #[tokio::test]
    async fn bad_keys_never_reach_the_store() {
        let mut store = MockIdempotencyStore::new();
        store.expect_claim().never();
        let service = IdempotencyService::new(Arc::new(store), IdempotencySettings::default());
        for key in [
            String::new(),
            "x".repeat(256),
            "with space".to_owned(),
            "naïve".to_owned(),
        ] {
            let err = service.begin("account:1", &key, MINE).await.unwrap_err();
            assert!(matches!(err, IdempotencyError::InvalidKey), "{key:?}");
        }
        assert!(valid(&"x".repeat(255)));
    }
}
