//! Bulk loading books on SQLite: multi-row inserts in one transaction.

use sqlx::{QueryBuilder, Sqlite, SqlitePool};
use waiter_domain::Version;
use waiter_ports::PortError;
use waiter_sql::{BookLoading, Dialect, NewBookRow};

use crate::{SqliteDialect, StoredTimestamp};

/// The most parameters one statement may have (`SQLITE_MAX_VARIABLE_NUMBER`).
const MAX_PARAMETERS: usize = 32_766;

/// The parameters of one row of the load's `VALUES`.
const PARAMETERS_PER_ROW: usize = 12;

impl BookLoading for SqliteDialect {
    /// Every book in one transaction, with multi-row inserts of as many rows
    /// as SQLite's parameter limit allows. SQLite keeps its indexes through
    /// the load: an embedded catalogue is small, and its single writer
    /// already has the database to itself while the transaction lasts.
    async fn bulk_insert(
        pool: &SqlitePool,
        rows: impl Iterator<Item = NewBookRow> + Send,
    ) -> Result<u64, PortError> {
        let mut tx = pool
            .begin_with(Self::BEGIN_WRITE)
            .await
            .map_err(Self::port_error)?;
        let mut rows = rows.peekable();
        let mut inserted = 0;
        while rows.peek().is_some() {
            let batch = rows.by_ref().take(MAX_PARAMETERS / PARAMETERS_PER_ROW);
            // `push_bind` panics if a value fails to encode; none of these
            // can (the instants are UTC, whose encoding is total).
            let mut statement = QueryBuilder::<Sqlite>::new(
                "INSERT INTO books
                     (id, title, title_folded, author, author_folded, isbn, published_date,
                      price_cents, owner_id, version, created_at, updated_at) ",
            );
            statement.push_values(batch, |mut values, row| {
                let created_at = StoredTimestamp::from(row.created_at);
                values
                    .push_bind(row.id)
                    .push_bind(row.title)
                    .push_bind(row.title_folded)
                    .push_bind(row.author)
                    .push_bind(row.author_folded)
                    .push_bind(row.isbn)
                    .push_bind(row.published_date)
                    .push_bind(row.price_cents)
                    .push_bind(row.owner_id)
                    .push_bind(Version::INITIAL.get())
                    .push_bind(created_at)
                    .push_bind(created_at);
            });
            statement.push(" ON CONFLICT (isbn) DO NOTHING");
            let result = statement
                .build()
                .execute(&mut *tx)
                .await
                .map_err(Self::port_error)?;
            inserted += result.rows_affected();
        }
        tx.commit().await.map_err(Self::port_error)?;
        Ok(inserted)
    }
}
