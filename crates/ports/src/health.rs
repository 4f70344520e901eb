//! Readiness: whether the dependencies a request needs are reachable.

use async_trait::async_trait;

use crate::PortError;

/// A dependency that can be asked whether it is reachable (a database, a cache).
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait Probe: Send + Sync {
    /// A short name for reports, such as `"database"` or `"cache"`.
    fn name(&self) -> &'static str;

    /// Succeeds when the dependency answers a trivial request.
    async fn ping(&self) -> Result<(), PortError>;
}

/// How one dependency is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DependencyState {
    /// It answered in time.
    Ready,
    /// An optional dependency (a cache) did not answer: the instance serves
    /// without it, more slowly.
    Degraded,
    /// An essential dependency (the database) did not answer: the instance
    /// cannot serve and should get no traffic.
    Unavailable,
}

/// The state of one dependency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DependencyStatus {
    /// The probe's [`Probe::name`], which names the check in `/readyz`.
    pub name: &'static str,
    /// Whether it answered in time, and what it means if it did not.
    pub state: DependencyState,
}

/// Readiness as the HTTP adapter asks for it.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait HealthUseCases: Send + Sync {
    /// Pings every dependency, concurrently and with a bound on the wait.
    async fn readiness(&self) -> Vec<DependencyStatus>;
}
