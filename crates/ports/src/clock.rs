//! Time, behind a port so tests can pin and advance it (token expiry without sleeping).

use waiter_domain::Timestamp;

/// Tells the current time.
#[cfg_attr(feature = "mocks", mockall::automock)]
pub trait Clock: Send + Sync {
    /// The current instant, in UTC.
    fn now(&self) -> Timestamp;
}
