//! Which PostgreSQL errors mean what.

use waiter_sql::UniqueKey;

/// SQLSTATE `serialization_failure`.
const SERIALIZATION_FAILURE: &str = "40001";
/// SQLSTATE `deadlock_detected`.
const DEADLOCK_DETECTED: &str = "40P01";

/// True when PostgreSQL aborted the transaction because it conflicted with a
/// concurrent one (SQLSTATE 40001 or 40P01): running it again may succeed.
pub(crate) fn is_transient_conflict(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|db| db.code())
        .is_some_and(|code| code == SERIALIZATION_FAILURE || code == DEADLOCK_DETECTED)
}

/// True when `error` is a unique violation of `key`, which PostgreSQL names.
pub(crate) fn violates_unique(error: &sqlx::Error, key: UniqueKey) -> bool {
    error
        .as_database_error()
        .is_some_and(|db| db.is_unique_violation() && db.constraint() == Some(key.name))
}

#[cfg(test)]
mod tests {
    /// Two transactions each holding the advisory lock the other wants:
    /// PostgreSQL aborts one of them with a deadlock (40P01), which must
    /// classify as `Unavailable`, not `Unexpected`.
    #[cfg(feature = "test-support")]
    #[tokio::test]
    async fn a_deadlock_is_unavailable() {
        use waiter_ports::PortError;
        use waiter_sql::Dialect as _;

        let Some(test) = crate::TestDatabase::create().await else {
            return;
        };
        let pool = test.database().pool();
        let mut first = pool.begin().await.expect("begin first");
        let mut second = pool.begin().await.expect("begin second");
        for (tx, key) in [(&mut first, 1_i64), (&mut second, 2)] {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(key)
                .execute(&mut **tx)
                .await
                .expect("take the first lock");
        }
        let (a, b) = tokio::join!(
            sqlx::query("SELECT pg_advisory_xact_lock(2)").execute(&mut *first),
            sqlx::query("SELECT pg_advisory_xact_lock(1)").execute(&mut *second),
        );
        let error = a.err().or(b.err()).expect("one transaction is aborted");
        let code = error.as_database_error().and_then(|db| db.code());
        assert_eq!(code.as_deref(), Some(super::DEADLOCK_DETECTED));
        let classified = crate::PostgresDialect::port_error(error);
        assert!(
            matches!(classified, PortError::Unavailable(_)),
            "expected Unavailable, got {classified:?}"
        );
        drop((first, second));
        test.drop_database().await;
    }
}
