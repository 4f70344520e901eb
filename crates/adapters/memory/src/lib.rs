//! The in-process adapters for Waiter's cache, rate limiter, reply event
//! log and reply lease ports, for a server running as a single instance (and for rate
//! limits, the fallback of one whose Redis is down).
//!
//! Nothing here survives a restart or is shared with another process: a
//! deployment with several instances must use the Redis adapters instead, or
//! each instance would see its own cached reads.

mod cache;
mod expiring;
mod rate_limit;
mod reply_event_log;
mod reply_leases;

pub use cache::MemoryCache;
pub use rate_limit::{MemoryRateLimiter, PRUNE_EVERY};
pub use reply_event_log::MemoryReplyEventLog;
pub use reply_leases::MemoryReplyLeases;
