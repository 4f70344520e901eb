//! The Redis adapters for Waiter's cache, rate limiter, reply event log and
//! reply lease ports, for several instances sharing one Redis.
//!
//! Every key is stored under a prefix chosen by the caller, so one Redis
//! server can hold Waiter beside other tenants (and each test in its own
//! namespace); instances configured with the same prefix see the same
//! entries. A Redis that is down or slow must never hang a request: every
//! connection attempt and command is bounded by a timeout, and such failures
//! surface as [`PortError::Unavailable`](waiter_ports::PortError::Unavailable).

mod cache;
mod connection;
mod rate_limit;
mod reply_event_log;
mod reply_leases;

pub use cache::RedisCache;
pub use rate_limit::RedisRateLimiter;
pub use reply_event_log::RedisReplyEventLog;
pub use reply_leases::RedisReplyLeases;
