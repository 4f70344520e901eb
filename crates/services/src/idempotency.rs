//! Idempotency keys for creating requests: a retry gets the first response.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use waiter_ports::PortError;
use waiter_ports::idempotency::{
    Admission, ClaimOutcome, ClaimToken, Fingerprint, IdempotencyError, IdempotencyStore,
    IdempotencyUseCases, StoredResponse,
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
        let claim = ClaimToken(rand::random());
        let outcome = self
            .store
            .claim(
                &scoped(scope, key),
                claim,
                fingerprint,
                self.settings.claim_ttl,
            )
            .await?;
        match outcome {
            ClaimOutcome::Claimed => Ok(Admission::Proceed { claim }),
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
        claim: ClaimToken,
        fingerprint: Fingerprint,
        response: StoredResponse,
    ) -> Result<bool, PortError> {
        self.store
            .complete(
                &scoped(scope, key),
                claim,
                fingerprint,
                response,
                self.settings.retention,
            )
            .await
    }

    async fn abandon(&self, scope: &str, key: &str, claim: ClaimToken) -> Result<bool, PortError> {
        self.store.release(&scoped(scope, key), claim).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use waiter_ports::idempotency::MockIdempotencyStore;

    fn service(outcome: ClaimOutcome) -> IdempotencyService {
        let mut store = MockIdempotencyStore::new();
        store.expect_claim().returning(move |key, _, _, ttl| {
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
        assert!(matches!(proceed, Admission::Proceed { .. }), "{proceed:?}");
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

    /// The claim `begin` hands out is the one it claimed the key with, fresh
    /// for every request, and `finish` and `abandon` pass it back to the store
    /// along with the store's answer.
    #[tokio::test]
    async fn the_claim_is_fresh_per_request_and_threaded_through() {
        let claimed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut store = MockIdempotencyStore::new();
        let seen = Arc::clone(&claimed);
        store.expect_claim().returning(move |_, claim, _, _| {
            seen.lock().unwrap().push(claim);
            Ok(ClaimOutcome::Claimed)
        });
        let seen = Arc::clone(&claimed);
        store
            .expect_complete()
            .withf(move |key, claim, fingerprint, _, ttl| {
                key == "account:1|k"
                    && *claim == seen.lock().unwrap()[0]
                    && *fingerprint == MINE
                    && *ttl == Duration::from_secs(24 * 3600)
            })
            .returning(|_, _, _, _, _| Ok(false));
        let seen = Arc::clone(&claimed);
        store
            .expect_release()
            .withf(move |key, claim| key == "account:1|k" && *claim == seen.lock().unwrap()[1])
            .returning(|_, _| Ok(true));
        let service = IdempotencyService::new(Arc::new(store), IdempotencySettings::default());

        let Admission::Proceed { claim: first } =
            service.begin("account:1", "k", MINE).await.unwrap()
        else {
            panic!("a claimed key must proceed");
        };
        let Admission::Proceed { claim: second } =
            service.begin("account:1", "k", MINE).await.unwrap()
        else {
            panic!("a claimed key must proceed");
        };
        assert_eq!(*claimed.lock().unwrap(), [first, second]);
        assert_ne!(first, second, "every request gets its own claim");

        let stored = service
            .finish("account:1", "k", first, MINE, response())
            .await
            .unwrap();
        assert!(!stored, "finish reports that the store did not act");
        let released = service.abandon("account:1", "k", second).await.unwrap();
        assert!(released);
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
