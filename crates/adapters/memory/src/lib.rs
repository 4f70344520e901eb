//! The in-process adapter for Waiter's cache port, for a server
//! running as a single instance.
//!
//! Nothing here survives a restart or is shared with another process: a
//! deployment with several instances must use the Redis adapters instead, or
//! each instance would see its own cached reads.

mod cache;
mod expiring;

pub use cache::MemoryCache;
