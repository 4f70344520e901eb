//! Waiter's services: every business rule, implementing the inbound ports
//! over the outbound ones.
//!
//! A service holds its dependencies as `Arc<dyn Port>` and never names an
//! adapter; it never speaks HTTP or SQL. Services talk to each other only
//! through inbound ports.

mod cache_aside;
pub mod catalog;
pub mod clock;
pub mod health;
pub mod idempotency;
pub mod identity;
mod ids;

pub use catalog::CatalogService;
pub use clock::{ManualClock, SystemClock};
pub use health::HealthService;
pub use idempotency::{IdempotencyService, IdempotencySettings};
pub use identity::{IdentityPorts, IdentityService, IdentitySettings, JwtSecret, JwtSecretError};
