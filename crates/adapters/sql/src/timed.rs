//! Database metrics, recorded in one place: every store method runs inside
//! [`timed`], which records how long it took and, when the database failed,
//! how.
//!
//! An operation is one port method (`accounts.insert`,
//! `conversations.append_exchange`), whatever number of statements it runs:
//! that is the unit a caller waits for, and the one an alert can name.
//! A refusal the port defines (an email taken, a stale version) is an
//! answer, not a database error, and is not counted as one.

use std::future::Future;
use std::time::Instant;

use waiter_ports::PortError;
use waiter_ports::catalog::{InsertBookError, WriteBookError};
use waiter_ports::conversations::{AppendError, InsertConversationError, WriteConversationError};
use waiter_ports::identity::{InsertAccountError, RotateRefreshTokenError, UpdateAccountError};

/// The latency of each operation, successful or not, by `operation`.
const DURATION: &str = "waiter_db_query_duration_seconds";
/// Operations the database failed, by `operation` and `kind`.
const ERRORS: &str = "waiter_db_errors_total";

/// An error a store method returns: the database's failure, if it is one.
pub(crate) trait StoreError {
    /// The infrastructure failure inside, `None` for the port's own refusals.
    fn failure(&self) -> Option<&PortError>;
}

impl StoreError for PortError {
    fn failure(&self) -> Option<&PortError> {
        Some(self)
    }
}

/// The ports' per-operation errors, which all carry the database's failures
/// as their `Port` variant.
macro_rules! store_errors {
    ($($error:ty),* $(,)?) => {$(
        impl StoreError for $error {
            fn failure(&self) -> Option<&PortError> {
                match self {
                    Self::Port(error) => Some(error),
                    _ => None,
                }
            }
        }
    )*};
}

store_errors!(
    InsertAccountError,
    UpdateAccountError,
    RotateRefreshTokenError,
    InsertBookError,
    WriteBookError,
    InsertConversationError,
    WriteConversationError,
    AppendError,
);

/// The `kind` label of a failure: `unavailable` (the database could not be
/// reached in time) or `unexpected` (anything else).
fn kind(error: &PortError) -> &'static str {
    match error {
        PortError::Unavailable(_) => "unavailable",
        PortError::Unexpected(_) => "unexpected",
    }
}

/// Runs `operation`, recording its latency under `waiter_db_query_duration_seconds`
/// and, when the database failed, one `waiter_db_errors_total` of its kind.
pub(crate) async fn timed<T, E: StoreError>(
    operation: &'static str,
    run: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let started = Instant::now();
    let outcome = run.await;
    metrics::histogram!(DURATION, "operation" => operation).record(started.elapsed().as_secs_f64());
    if let Some(failure) = outcome.as_ref().err().and_then(StoreError::failure) {
        metrics::counter!(ERRORS, "operation" => operation, "kind" => kind(failure)).increment(1);
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_of_the_port_is_not_a_database_failure() {
        assert!(InsertAccountError::EmailTaken.failure().is_none());
        let failure = InsertAccountError::Port(PortError::Unavailable(anyhow::anyhow!("down")));
        assert_eq!(failure.failure().map(kind), Some("unavailable"));
        let failure = PortError::unexpected(anyhow::anyhow!("corrupt row"));
        assert_eq!(failure.failure().map(kind), Some("unexpected"));
    }
}
