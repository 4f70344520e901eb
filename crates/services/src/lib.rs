//! Waiter's services: every business rule, implementing the inbound ports
//! over the outbound ones.
//!
//! A service holds its dependencies as `Arc<dyn Port>` and never names an
//! adapter; it never speaks HTTP or SQL. Services never call each other:
//! what one announces reaches the others through an outbound port
//! ([`AccountEvents`](waiter_ports::identity::AccountEvents)), fanned out by
//! [`AccountEventsFanOut`].

mod cache_aside;
pub mod catalog;
pub mod clock;
pub mod conversations;
pub mod events;
pub mod health;
pub mod idempotency;
pub mod identity;
mod ids;
pub mod rate_limit;

pub use catalog::CatalogService;
pub use clock::{ManualClock, SystemClock};
pub use conversations::{ConversationPorts, ConversationService, ConversationSettings};
pub use events::AccountEventsFanOut;
pub use health::HealthService;
pub use idempotency::{IdempotencyService, IdempotencySettings};
pub use identity::{IdentityPorts, IdentityService, IdentitySettings, JwtSecret, JwtSecretError};
pub use rate_limit::{FailoverRateLimiter, RateLimitService, RateLimitSettings};
