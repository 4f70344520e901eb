//! Idempotency keys for creating requests: a retry gets the first response.
//!
//! What a key remembers is written by the creating store, in the transaction
//! that creates the resource (see [`waiter_ports::idempotency`]); this service
//! only admits requests. A key is "in flight" while a request holding it runs
//! on this instance: a mark in memory, gone with the request however it ends
//! (a crash included), so a request cut short never blocks its key. Requests
//! with one key racing on two instances both run; the store lets only the
//! first commit, and the other replays its response.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use waiter_ports::clock::Clock;
use waiter_ports::idempotency::{
    Admission, Fingerprint, IdempotencyError, IdempotencyStore, IdempotencyUseCases, KeyedRequest,
};

/// How often expired records are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// The longest key a client may send.
const MAX_KEY_LEN: usize = 255;

/// Tunables of idempotent request handling.
#[derive(Debug, Clone, Copy)]
pub struct IdempotencySettings {
    /// How long a response is replayed for (default 24 hours).
    pub retention: Duration,
}

impl Default for IdempotencySettings {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(24 * 3600),
        }
    }
}

/// The keys of the requests running on this instance, with what each asked for.
type InFlightKeys = Arc<Mutex<HashMap<String, Fingerprint>>>;

/// Implements [`IdempotencyUseCases`] over an [`IdempotencyStore`].
pub struct IdempotencyService {
    store: Arc<dyn IdempotencyStore>,
    clock: Arc<dyn Clock>,
    settings: IdempotencySettings,
    in_flight: InFlightKeys,
}

impl IdempotencyService {
    pub fn new(
        store: Arc<dyn IdempotencyStore>,
        clock: Arc<dyn Clock>,
        settings: IdempotencySettings,
    ) -> Self {
        Self {
            store,
            clock,
            settings,
            in_flight: InFlightKeys::default(),
        }
    }
}

impl IdempotencyService {
    /// Deletes expired records now and every [`PRUNE_EVERY`]. Runs until
    /// dropped; the server spawns it. A failure is logged and tried again
    /// at the next round: expired records are ignored meanwhile.
    pub async fn keep_pruned(&self) {
        loop {
            if let Err(err) = self.store.prune(self.clock.now()).await {
                tracing::warn!(%err, "cannot delete expired idempotency keys");
            }
            tokio::time::sleep(PRUNE_EVERY).await;
        }
    }
}

/// Marks a key in flight until dropped.
struct InFlight {
    key: String,
    keys: InFlightKeys,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        lock(&self.keys).remove(&self.key);
    }
}

/// The map, whether or not a panic poisoned it: every update is one call.
fn lock(keys: &InFlightKeys) -> std::sync::MutexGuard<'_, HashMap<String, Fingerprint>> {
    keys.lock().unwrap_or_else(PoisonError::into_inner)
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
        let key = scoped(scope, key);
        let now = self.clock.now();
        if let Some(first) = self.store.find(&key, now).await? {
            return if first.fingerprint == fingerprint {
                Ok(Admission::Replay(first.response))
            } else {
                Err(IdempotencyError::Mismatch)
            };
        }
        let mut keys = lock(&self.in_flight);
        if let Some(&running) = keys.get(&key) {
            return Err(if running == fingerprint {
                IdempotencyError::InFlight
            } else {
                IdempotencyError::Mismatch
            });
        }
        keys.insert(key.clone(), fingerprint);
        drop(keys);
        let in_flight = InFlight {
            key: key.clone(),
            keys: Arc::clone(&self.in_flight),
        };
        Ok(Admission::Proceed(KeyedRequest::new(
            key,
            fingerprint,
            now,
            now + self.settings.retention,
            in_flight,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ManualClock;
    use waiter_domain::Timestamp;
    use waiter_ports::idempotency::{MockIdempotencyStore, Remembered, StoredResponse};

    const MINE: Fingerprint = Fingerprint([1; 32]);
    const OTHER: Fingerprint = Fingerprint([2; 32]);

    fn response() -> StoredResponse {
        StoredResponse {
            status: 201,
            headers: vec![("Location".into(), "/x".into())],
            body: b"{}".to_vec(),
        }
    }

    fn start() -> Timestamp {
        Timestamp::from_unix_timestamp(1_700_000_000).unwrap()
    }

    /// A service whose store remembers `remembered` under every key.
    fn service(remembered: Option<Remembered>) -> IdempotencyService {
        let mut store = MockIdempotencyStore::new();
        store.expect_find().returning(move |key, now| {
            assert!(key.starts_with("account:1|"), "{key}");
            assert_eq!(now, start());
            Ok(remembered.clone())
        });
        IdempotencyService::new(
            Arc::new(store),
            Arc::new(ManualClock::new(start())),
            IdempotencySettings::default(),
        )
    }

    #[tokio::test]
    async fn a_new_key_proceeds_and_a_remembered_one_replays() {
        let admission = service(None).begin("account:1", "k", MINE).await.unwrap();
        let Admission::Proceed(request) = admission else {
            panic!("a new key must proceed: {admission:?}");
        };
        let record = request
            .rendering(Box::new(|_: &()| Ok(response())))
            .record(&())
            .unwrap();
        assert_eq!(record.key, "account:1|k");
        assert_eq!(record.remembered.fingerprint, MINE);
        assert_eq!(record.remembered.response, response());
        assert_eq!(record.created_at, start());
        assert_eq!(
            record.expires_at,
            start() + Duration::from_secs(24 * 3600),
            "replayed for a day"
        );

        let remembered = Remembered {
            fingerprint: MINE,
            response: response(),
        };
        let replay = service(Some(remembered))
            .begin("account:1", "k", MINE)
            .await
            .unwrap();
        assert!(matches!(replay, Admission::Replay(r) if r == response()));
    }

    #[tokio::test]
    async fn a_key_remembered_for_another_request_is_a_mismatch() {
        let remembered = Remembered {
            fingerprint: OTHER,
            response: response(),
        };
        let err = service(Some(remembered))
            .begin("account:1", "k", MINE)
            .await
            .unwrap_err();
        assert!(matches!(err, IdempotencyError::Mismatch), "{err:?}");
    }

    #[tokio::test]
    async fn a_key_is_in_flight_until_its_request_ends() {
        let service = service(None);
        let running = service.begin("account:1", "k", MINE).await.unwrap();

        let again = service.begin("account:1", "k", MINE).await.unwrap_err();
        assert!(matches!(again, IdempotencyError::InFlight), "{again:?}");
        let other = service.begin("account:1", "k", OTHER).await.unwrap_err();
        assert!(matches!(other, IdempotencyError::Mismatch), "{other:?}");
        let unrelated = service.begin("account:1", "k2", MINE).await.unwrap();
        assert!(matches!(unrelated, Admission::Proceed(_)));

        drop(running);
        let after = service.begin("account:1", "k", MINE).await.unwrap();
        assert!(matches!(after, Admission::Proceed(_)), "{after:?}");
    }

    #[tokio::test]
    async fn bad_keys_never_reach_the_store() {
        let mut store = MockIdempotencyStore::new();
        store.expect_find().never();
        let service = IdempotencyService::new(
            Arc::new(store),
            Arc::new(ManualClock::new(start())),
            IdempotencySettings::default(),
        );
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
