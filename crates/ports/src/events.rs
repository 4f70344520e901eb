//! Events one service announces and others react to, without either naming the other.

use async_trait::async_trait;
use waiter_domain::AccountId;

use crate::PortError;

/// Told about changes to accounts that other services' data depends on.
///
/// The identity service calls it; the server wires it to the services that
/// keep data per account (the catalog, whose cached books of a deleted
/// owner must go). Services thus never reach into each other's stores.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait AccountEvents: Send + Sync {
    /// The account and everything the database deletes with it are gone.
    async fn account_deleted(&self, id: AccountId) -> Result<(), PortError>;
}
