//! Turning sqlx errors into the ports' errors, in one place.

use waiter_ports::PortError;

/// Classifies a failure: the server being out of reach is `Unavailable`
/// (503, worth retrying); anything else is a bug or corrupt data.
pub(crate) fn port_error(error: sqlx::Error) -> PortError {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_) => PortError::Unavailable(error.into()),
        error => PortError::Unexpected(error.into()),
    }
}

/// True when `error` is a unique violation of the named constraint.
pub(crate) fn violates_unique(error: &sqlx::Error, constraint: &str) -> bool {
    error
        .as_database_error()
        .is_some_and(|db| db.is_unique_violation() && db.constraint() == Some(constraint))
}

/// Classifies a failed migration like any other query failure when the
/// database could not run it, and as unexpected when the migrations themselves are wrong.
pub(crate) fn migrate_error(error: sqlx::migrate::MigrateError) -> PortError {
    match error {
        sqlx::migrate::MigrateError::Execute(error) => port_error(error),
        error => PortError::unexpected(error),
    }
}
