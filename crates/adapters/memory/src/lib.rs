//! In-process adapters for Waiter's cache and idempotency ports, for a server
//! running as a single instance.
//!
//! Nothing here survives a restart or is shared with another process: a
//! deployment with several instances must use the Redis adapters instead, or
//! each instance would see its own revocations, cached reads and idempotency
//! keys.

mod cache;
mod expiring;
mod idempotency;

pub use cache::MemoryCache;
pub use idempotency::MemoryIdempotencyStore;
