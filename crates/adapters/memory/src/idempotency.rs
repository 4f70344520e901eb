//! The in-process [`IdempotencyStore`].

use std::fmt;
use std::future::ready;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use moka::Entry;
use moka::ops::compute::{CompResult, Op};
use waiter_ports::PortError;
use waiter_ports::idempotency::{
    ClaimOutcome, ClaimToken, Fingerprint, IdempotencyStore, StoredResponse,
};

use crate::expiring::{self, Expiring, ExpiringMap};

/// The shortest claim kept: a zero `claim_ttl` would expire the claim at once
/// and let every concurrent claimer through.
const MIN_CLAIM_TTL: Duration = Duration::from_millis(1);

/// A bounded in-process [`IdempotencyStore`], whose claims and responses each
/// expire after their own TTL.
///
/// Clones share the same records. Claiming, completing and releasing a key
/// are each atomic under moka's per-key compute lock, so a completion or
/// release checks that the key holds its claim and acts in one step. When full, the least
/// useful records are evicted early, as Redis does under `maxmemory`: an
/// evicted response means a retry runs again, so size it for the number of
/// keys expected within the response TTL.
#[derive(Clone)]
pub struct MemoryIdempotencyStore {
    records: ExpiringMap<Record>,
}

/// What a key holds while it is not free.
#[derive(Clone)]
enum Record {
    InFlight(Fingerprint, ClaimToken),
    /// Shared, because moka clones a value on every read.
    Completed(Fingerprint, Arc<StoredResponse>),
}

impl Record {
    fn outcome(&self) -> ClaimOutcome {
        match self {
            Self::InFlight(fingerprint, _) => ClaimOutcome::InFlight {
                fingerprint: *fingerprint,
            },
            Self::Completed(fingerprint, response) => ClaimOutcome::Completed {
                fingerprint: *fingerprint,
                response: StoredResponse::clone(response),
            },
        }
    }
}

/// Whether `existing` is the live claim `claim`: moka never hands an expired
/// entry to a compute, so an expired claim is no longer held.
fn holds(existing: Option<&Entry<String, Expiring<Record>>>, claim: ClaimToken) -> bool {
    existing.is_some_and(
        |entry| matches!(entry.value().value, Record::InFlight(_, held) if held == claim),
    )
}

/// Whether a compute that only ever replaces or removes an existing entry did either.
fn acted<V>(result: CompResult<String, V>) -> bool {
    matches!(result, CompResult::ReplacedWith(_) | CompResult::Removed(_))
}

impl MemoryIdempotencyStore {
    /// A store holding at most `max_entries` claims and responses, so memory
    /// stays bounded whatever the traffic.
    pub fn new(max_entries: u64) -> Self {
        Self {
            records: expiring::bounded(max_entries),
        }
    }
}

/// Shows the size, never the records: keys carry account ids.
impl fmt::Debug for MemoryIdempotencyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        expiring::fmt_sizes("MemoryIdempotencyStore", &self.records, f)
    }
}

#[async_trait]
impl IdempotencyStore for MemoryIdempotencyStore {
    /// An expired record counts as free. A `claim_ttl` under a millisecond is
    /// rounded up to one, so the claim still excludes concurrent claimers.
    async fn claim(
        &self,
        key: &str,
        claim: ClaimToken,
        fingerprint: Fingerprint,
        claim_ttl: Duration,
    ) -> Result<ClaimOutcome, PortError> {
        let mut outcome = ClaimOutcome::Claimed;
        self.records
            .entry_by_ref(key)
            .and_compute_with(|existing| {
                ready(match existing {
                    Some(entry) => {
                        outcome = entry.value().value.outcome();
                        Op::Nop
                    }
                    None => Op::Put(Expiring {
                        value: Record::InFlight(fingerprint, claim),
                        ttl: claim_ttl.max(MIN_CLAIM_TTL),
                    }),
                })
            })
            .await;
        Ok(outcome)
    }

    /// A zero `ttl` keeps the response for no time at all: the key is freed
    /// (and `true` returned, as the claim was there to replace).
    async fn complete(
        &self,
        key: &str,
        claim: ClaimToken,
        fingerprint: Fingerprint,
        response: StoredResponse,
        ttl: Duration,
    ) -> Result<bool, PortError> {
        let result = self
            .records
            .entry_by_ref(key)
            .and_compute_with(|existing| {
                ready(if !holds(existing.as_ref(), claim) {
                    Op::Nop
                } else if ttl.is_zero() {
                    Op::Remove
                } else {
                    Op::Put(Expiring {
                        value: Record::Completed(fingerprint, Arc::new(response)),
                        ttl,
                    })
                })
            })
            .await;
        Ok(acted(result))
    }

    /// Removes only the caller's claim: neither a later request's claim nor a
    /// response that retries are waiting to replay.
    async fn release(&self, key: &str, claim: ClaimToken) -> Result<bool, PortError> {
        let result = self
            .records
            .entry_by_ref(key)
            .and_compute_with(|existing| {
                ready(if holds(existing.as_ref(), claim) {
                    Op::Remove
                } else {
                    Op::Nop
                })
            })
            .await;
        Ok(acted(result))
    }
}
