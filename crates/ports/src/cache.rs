//! A shared key-value cache with expiry: Redis across instances, or in-process for one.

use std::time::Duration;

use async_trait::async_trait;

use crate::PortError;

/// The generation of a name whose generation key holds nothing: no write
/// has touched it, or its token expired.
pub const UNWRITTEN_GENERATION: &str = "0";

/// The key holding the generation of `name` (see [`Cache::get_generational`]).
pub fn generation_key(name: &str) -> String {
    format!("{name}:generation")
}

/// The slot of `name` for the `generations` of its names, in order (`None`
/// for one never written): see [`GenerationalRead::slot`].
pub fn generational_slot(name: &str, generations: &[Option<Vec<u8>>]) -> String {
    let mut slot = name.to_owned();
    for generation in generations {
        slot.push(':');
        match generation {
            Some(token) => slot.push_str(&String::from_utf8_lossy(token)),
            None => slot.push_str(UNWRITTEN_GENERATION),
        }
    }
    slot
}

/// What [`Cache::get_generational`] read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationalRead {
    /// The key of the value for the generations read: the last name, then
    /// `:` and the generation of each name, in order.
    pub slot: String,
    /// What the slot holds.
    pub value: Option<Vec<u8>>,
}

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

    /// A read through generations, the services' cache-aside scheme: the
    /// generation of each of `names` is what [`generation_key`] holds for
    /// it ([`UNWRITTEN_GENERATION`] when nothing); the value is read from
    /// the slot those generations name ([`GenerationalRead::slot`]).
    ///
    /// The default reads key by key, which costs nothing in process; a cache
    /// across the network should read everything in one round trip, since
    /// this is the path of every cached read.
    async fn get_generational<'a>(&self, names: &[&'a str]) -> Result<GenerationalRead, PortError> {
        let mut generations = Vec::with_capacity(names.len());
        for name in names {
            generations.push(self.get(&generation_key(name)).await?);
        }
        let slot = generational_slot(names.last().copied().unwrap_or_default(), &generations);
        let value = self.get(&slot).await?;
        Ok(GenerationalRead { slot, value })
    }
}
