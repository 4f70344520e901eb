//! The in-process [`IdempotencyStore`].

use std::fmt;
use std::future::ready;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use moka::ops::compute::Op;
use waiter_ports::PortError;
use waiter_ports::idempotency::{ClaimOutcome, Fingerprint, IdempotencyStore, StoredResponse};

use crate::expiring::{self, Expiring, ExpiringMap};

/// The shortest claim kept: a zero `claim_ttl` would expire the claim at once
/// and let every concurrent claimer through.
const MIN_CLAIM_TTL: Duration = Duration::from_millis(1);

/// A bounded in-process [`IdempotencyStore`], whose claims and responses each
/// expire after their own TTL.
///
/// Clones share the same records. Claiming, completing and releasing a key
/// are each atomic under moka's per-key compute lock. When full, the least
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
    InFlight(Fingerprint),
    /// Shared, because moka clones a value on every read.
    Completed(Fingerprint, Arc<StoredResponse>),
}

impl Record {
    fn outcome(&self) -> ClaimOutcome {
        match self {
            Self::InFlight(fingerprint) => ClaimOutcome::InFlight {
                fingerprint: *fingerprint,
            },
            Self::Completed(fingerprint, response) => ClaimOutcome::Completed {
                fingerprint: *fingerprint,
                response: StoredResponse::clone(response),
            },
        }
    }
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
                        value: Record::InFlight(fingerprint),
                        ttl: claim_ttl.max(MIN_CLAIM_TTL),
                    }),
                })
            })
            .await;
        Ok(outcome)
    }

    /// A zero `ttl` keeps the response for no time at all: the key is freed.
    async fn complete(
        &self,
        key: &str,
        fingerprint: Fingerprint,
        response: StoredResponse,
        ttl: Duration,
    ) -> Result<(), PortError> {
        let op = if ttl.is_zero() {
            Op::Remove
        } else {
            Op::Put(Expiring {
                value: Record::Completed(fingerprint, Arc::new(response)),
                ttl,
            })
        };
        self.records
            .entry_by_ref(key)
            .and_compute_with(|_| ready(op))
            .await;
        Ok(())
    }

    /// Removes only a claim: a release arriving after `complete` must not
    /// discard the response that retries are waiting to replay.
    async fn release(&self, key: &str) -> Result<(), PortError> {
        self.records
            .entry_by_ref(key)
            .and_compute_with(|existing| {
                ready(match existing {
                    Some(entry) if matches!(entry.value().value, Record::InFlight(_)) => Op::Remove,
                    _ => Op::Nop,
                })
            })
            .await;
        Ok(())
    }
}
