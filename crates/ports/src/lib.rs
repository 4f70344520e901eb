#![warn(missing_docs)]
//! Waiter's ports: traits only, plus the record and error types that cross them.
//!
//! One module per feature, each holding that feature's inbound use cases and
//! the outbound ports it needs, with their records and errors:
//! [`identity`] (accounts, sessions, and the [`identity::AccountEvents`] it
//! announces), [`catalog`] (books), [`conversations`] (the
//! [`conversations::ReplyGenerator`] that writes assistant replies),
//! [`idempotency`] (keyed retries), [`rate_limit`] (how often a client may
//! call) and [`health`]. [`cache`] and [`clock`]
//! are infrastructure every feature may use.
//!
//! *Inbound* ports (`…UseCases`) are what the HTTP adapter and the CLI drive.
//! *Outbound* ports are what the services need from the world; adapters
//! implement them. Every trait is object safe and is used as `Arc<dyn Trait>`;
//! with the `mocks` feature each gets a mockall `Mock…` type.

pub mod cache;
pub mod catalog;
pub mod clock;
pub mod conversations;
pub mod health;
pub mod idempotency;
pub mod identity;
pub mod rate_limit;

use thiserror::Error;

/// A failure of infrastructure behind an outbound port, as opposed to a
/// business outcome. Adapters choose the variant; the HTTP adapter turns
/// `Unavailable` into 503 and `Unexpected` into a bare 500.
#[derive(Debug, Error)]
pub enum PortError {
    /// The dependency could not be reached in time (connection refused, pool exhausted, timeout).
    #[error("a dependency is unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// Anything else: a bug, corrupt data, a constraint nobody expected.
    #[error("unexpected failure in a dependency")]
    Unexpected(#[source] anyhow::Error),
}

impl PortError {
    /// Wraps an error that should never happen in normal operation.
    pub fn unexpected(error: impl Into<anyhow::Error>) -> Self {
        Self::Unexpected(error.into())
    }
}
