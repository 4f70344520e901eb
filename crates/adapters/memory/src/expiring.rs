//! The bounded, per-entry-expiring moka map both in-process adapters store into.
//!
//! Every mutation that depends on what a key holds goes through moka's
//! `and_compute_with`/`and_upsert_with`, which serialise callers per key;
//! plain `insert` and `or_insert_with` take other (or no) per-key locks, so
//! mixing them with a compute could let one write silently undo another.

use std::fmt;
use std::time::{Duration, Instant};

use moka::Expiry;

/// A bounded map from keys to values that each expire after their own TTL.
pub(crate) type ExpiringMap<T> = moka::future::Cache<String, Expiring<T>>;

/// A value together with the TTL it was stored for, which [`PerEntryTtl`] reads.
#[derive(Clone)]
pub(crate) struct Expiring<T> {
    pub(crate) value: T,
    pub(crate) ttl: Duration,
}

/// Tells moka to expire each entry after the TTL of its latest write.
struct PerEntryTtl;

impl<T> Expiry<String, Expiring<T>> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _key: &String,
        entry: &Expiring<T>,
        _now: Instant,
    ) -> Option<Duration> {
        Some(entry.ttl)
    }

    /// A replaced value brings its own TTL; moka's default would keep the old one.
    fn expire_after_update(
        &self,
        _key: &String,
        entry: &Expiring<T>,
        _now: Instant,
        _remaining: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.ttl)
    }
}

/// A map holding at most `max_entries` entries, so memory stays bounded
/// whatever the traffic; when full, the least useful entries are evicted early.
pub(crate) fn bounded<T>(max_entries: u64) -> ExpiringMap<T>
where
    T: Clone + Send + Sync + 'static,
{
    moka::future::Cache::builder()
        .max_capacity(max_entries)
        .expire_after(PerEntryTtl)
        .build()
}

/// Formats an adapter as its size only, never its entries: keys can be
/// session ids or carry account ids.
pub(crate) fn fmt_sizes<T>(
    name: &str,
    entries: &ExpiringMap<T>,
    f: &mut fmt::Formatter<'_>,
) -> fmt::Result
where
    T: Clone + Send + Sync + 'static,
{
    f.debug_struct(name)
        .field("entry_count", &entries.entry_count())
        .field("max_capacity", &entries.policy().max_capacity())
        .finish_non_exhaustive()
}
