//! The revocation check: is this ended session's access token still around?
//!
//! The database is the source of truth: a session is deleted and its
//! revocation recorded in one transaction ([`SessionStore::delete`]). Reading
//! the database on every request would be the price of that, so each
//! instance keeps every revocation in force in memory: loaded from the
//! database when it starts, added to the moment it ends a session itself,
//! and brought up to date every [`SYNC_EVERY`] with what other instances
//! recorded. An entry goes when the last access token of its session has
//! expired anyway, so the set stays as small as one token lifetime of
//! sign-outs, and nothing ever evicts an entry early.
//!
//! With several instances, the one that ends a session also writes it to the
//! shared cache (Redis), so the others refuse its tokens on the very next
//! request rather than after their next sync. That cache only makes things
//! faster: losing it (a restart, a flush, an eviction) loses nothing the
//! database and the in-memory sets do not hold, and while it is unreachable
//! the check asks the database instead.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use waiter_domain::{SessionId, Timestamp};
use waiter_ports::PortError;
use waiter_ports::cache::Cache;
use waiter_ports::identity::{Revocation, SessionStore};

/// How often an instance reads the revocations other instances recorded.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);
/// How far before its last sync an instance reads again, so a revocation
/// whose transaction committed late, or whose instance's clock runs a little
/// behind, is not missed.
const SYNC_OVERLAP: Duration = Duration::from_secs(30);

/// The revocations this instance knows of, and where to ask about the rest.
pub(crate) struct Revocations {
    store: Arc<dyn SessionStore>,
    /// The cache shared with other instances, when there is one.
    shared: Option<Arc<dyn Cache>>,
    /// Session → the moment its revocation lapses.
    known: RwLock<HashMap<SessionId, Timestamp>>,
    /// When the last successful sync started; `None` until the first, and
    /// until then every check asks the database.
    synced_at: RwLock<Option<Timestamp>>,
}

fn key(id: SessionId) -> String {
    format!("revoked-session:{id}")
}

impl Revocations {
    pub(crate) fn new(store: Arc<dyn SessionStore>, shared: Option<Arc<dyn Cache>>) -> Self {
        Self {
            store,
            shared,
            known: RwLock::default(),
            synced_at: RwLock::default(),
        }
    }

    /// Learns of revocations the store recorded (by this instance or another).
    /// A cache write that fails is logged, not returned: the revocation is
    /// already durable, and other instances will read it at their next sync.
    pub(crate) async fn recorded(&self, ids: &[SessionId], until: Timestamp, now: Timestamp) {
        {
            let mut known = self.known.write().unwrap_or_else(|p| p.into_inner());
            for &id in ids {
                known.insert(id, until);
            }
        }
        let Some(shared) = &self.shared else { return };
        let ttl = Duration::try_from(until - now).unwrap_or(Duration::ZERO);
        for &id in ids {
            if let Err(err) = shared.set(&key(id), b"1", ttl).await {
                tracing::warn!(%err, session_id = %id, "cannot share a revocation; other instances will read it from the database");
            }
        }
    }

    /// Whether the session's access tokens must be refused at `now`.
    ///
    /// Never answers "not revoked" from a source that may have lost entries:
    /// memory is complete once synced, the shared cache only adds, and while
    /// memory is not yet synced or the cache is unreachable the database answers.
    pub(crate) async fn contains(&self, id: SessionId, now: Timestamp) -> Result<bool, PortError> {
        let until = self
            .known
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .copied();
        if until.is_some_and(|until| until > now) {
            return Ok(true);
        }
        if self
            .synced_at
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
        {
            return self.store.is_revoked(id, now).await;
        }
        let Some(shared) = &self.shared else {
            return Ok(false);
        };
        match shared.get(&key(id)).await {
            Ok(found) => Ok(found.is_some()),
            Err(err) => {
                tracing::debug!(%err, "the shared cache is unreachable; asking the database about a revocation");
                self.store.is_revoked(id, now).await
            }
        }
    }

    /// Reads what the store recorded since shortly before the last sync (or
    /// everything in force, the first time), and forgets what has lapsed.
    pub(crate) async fn sync(&self, now: Timestamp) -> Result<(), PortError> {
        let last = *self.synced_at.read().unwrap_or_else(|p| p.into_inner());
        let since = match last {
            Some(last) => last - SYNC_OVERLAP,
            None => Timestamp::UNIX_EPOCH,
        };
        let recorded = self.store.revocations_since(since, now).await?;
        {
            let mut known = self.known.write().unwrap_or_else(|p| p.into_inner());
            known.retain(|_, until| *until > now);
            for Revocation {
                session_id,
                revoked_until,
                ..
            } in recorded
            {
                known.insert(session_id, revoked_until);
            }
        }
        *self.synced_at.write().unwrap_or_else(|p| p.into_inner()) = Some(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use mockall::predicate::eq;
    use time::macros::datetime;
    use waiter_ports::cache::MockCache;
    use waiter_ports::identity::MockSessionStore;

    use super::*;

    const NOW: Timestamp = datetime!(2026-12-02 12:00 UTC);
    const LATER: Timestamp = datetime!(2026-12-02 12:15 UTC);

    fn id(n: u128) -> SessionId {
        SessionId::from_ulid(ulid::Ulid::from(n))
    }

    fn revocation(n: u128, until: Timestamp) -> Revocation {
        Revocation {
            session_id: id(n),
            revoked_at: NOW,
            revoked_until: until,
        }
    }

    fn unavailable() -> PortError {
        PortError::Unavailable(anyhow::anyhow!("down"))
    }

    #[tokio::test]
    async fn before_the_first_sync_the_database_answers() {
        let mut store = MockSessionStore::new();
        store
            .expect_is_revoked()
            .with(eq(id(1)), eq(NOW))
            .times(1)
            .returning(|_, _| Ok(true));
        let revocations = Revocations::new(Arc::new(store), None);
        assert!(revocations.contains(id(1), NOW).await.unwrap());
    }

    #[tokio::test]
    async fn once_synced_memory_answers_without_any_io_until_the_revocation_lapses() {
        let mut store = MockSessionStore::new();
        store
            .expect_revocations_since()
            .with(eq(Timestamp::UNIX_EPOCH), eq(NOW))
            .times(1)
            .returning(|_, _| Ok(vec![revocation(1, LATER)]));
        store.expect_is_revoked().never();
        let revocations = Revocations::new(Arc::new(store), None);
        revocations.sync(NOW).await.unwrap();
        assert!(revocations.contains(id(1), NOW).await.unwrap());
        assert!(!revocations.contains(id(2), NOW).await.unwrap());
        assert!(!revocations.contains(id(1), LATER).await.unwrap(), "lapsed");
    }

    #[tokio::test]
    async fn later_syncs_read_back_past_the_last_one_and_forget_what_lapsed() {
        let mut store = MockSessionStore::new();
        let mut calls = 0;
        store
            .expect_revocations_since()
            .times(2)
            .returning(move |since, now| {
                calls += 1;
                if calls == 1 {
                    Ok(vec![revocation(1, NOW + Duration::from_secs(5))])
                } else {
                    assert_eq!(since, NOW - SYNC_OVERLAP);
                    assert_eq!(now, NOW + Duration::from_secs(10));
                    Ok(vec![revocation(2, LATER)])
                }
            });
        let revocations = Revocations::new(Arc::new(store), None);
        revocations.sync(NOW).await.unwrap();
        revocations
            .sync(NOW + Duration::from_secs(10))
            .await
            .unwrap();
        let known = revocations.known.read().unwrap();
        assert_eq!(known.keys().copied().collect::<Vec<_>>(), vec![id(2)]);
    }

    #[tokio::test]
    async fn the_shared_cache_adds_what_other_instances_revoked_since_the_last_sync() {
        let mut store = MockSessionStore::new();
        store
            .expect_revocations_since()
            .returning(|_, _| Ok(vec![]));
        store.expect_is_revoked().never();
        let mut cache = MockCache::new();
        cache.expect_get().returning(|key| {
            Ok((key == format!("revoked-session:{}", id(1))).then(|| b"1".to_vec()))
        });
        let revocations = Revocations::new(Arc::new(store), Some(Arc::new(cache)));
        revocations.sync(NOW).await.unwrap();
        assert!(revocations.contains(id(1), NOW).await.unwrap());
        assert!(!revocations.contains(id(2), NOW).await.unwrap());
    }

    #[tokio::test]
    async fn an_unreachable_shared_cache_sends_the_question_to_the_database() {
        let mut store = MockSessionStore::new();
        store
            .expect_revocations_since()
            .returning(|_, _| Ok(vec![]));
        store.expect_is_revoked().times(2).returning(|id, _| {
            if id == self::id(1) {
                Ok(true)
            } else {
                Err(unavailable())
            }
        });
        let mut cache = MockCache::new();
        cache.expect_get().returning(|_| Err(unavailable()));
        let revocations = Revocations::new(Arc::new(store), Some(Arc::new(cache)));
        revocations.sync(NOW).await.unwrap();
        assert!(revocations.contains(id(1), NOW).await.unwrap());
        assert!(
            revocations.contains(id(2), NOW).await.is_err(),
            "with neither cache nor database, the check fails closed"
        );
    }

    #[tokio::test]
    async fn a_recorded_revocation_is_known_at_once_and_shared_for_its_lifetime() {
        let mut store = MockSessionStore::new();
        store
            .expect_revocations_since()
            .returning(|_, _| Ok(vec![]));
        let mut cache = MockCache::new();
        cache
            .expect_set()
            .withf(|key, _, ttl| {
                key == format!("revoked-session:{}", id(1)) && *ttl == Duration::from_secs(15 * 60)
            })
            .times(1)
            .returning(|_, _, _| Err(unavailable()));
        cache.expect_get().never();
        let revocations = Revocations::new(Arc::new(store), Some(Arc::new(cache)));
        revocations.sync(NOW).await.unwrap();
        revocations.recorded(&[id(1)], LATER, NOW).await;
        assert!(
            revocations.contains(id(1), NOW).await.unwrap(),
            "known from memory, although the cache refused it"
        );
    }
}
