//! Bulk loading books on PostgreSQL: one `UNNEST` per batch, with the
//! secondary indexes dropped during the load and rebuilt after it.

use sqlx::{AssertSqlSafe, PgExecutor, PgPool};
use uuid::Uuid;
use waiter_domain::{Date, Timestamp, Version};
use waiter_ports::PortError;
use waiter_sql::{BookLoading, Dialect, NewBookRow};

use crate::PostgresDialect;

/// How many books [`BookLoading::bulk_insert`] sends per statement: enough
/// that per-statement costs vanish, few enough to keep the arrays small.
const BULK_BATCH: usize = 10_000;

impl BookLoading for PostgresDialect {
    /// One transaction that locks `books`, drops its secondary indexes (all
    /// but those behind the primary key and the ISBN constraint, which the
    /// load needs), inserts in batches of [`BULK_BATCH`], and recreates the
    /// indexes from the definitions PostgreSQL gave before dropping them, so
    /// the migrations stay the only place that spells them out.
    ///
    /// Building an index over all rows at once is a sort; keeping it up to
    /// date row by row is a descent to a random leaf per row and index. At
    /// 1 000 000 books with PostgreSQL's default settings the first took
    /// about 25 s for the whole load, the second about two minutes.
    async fn bulk_insert(
        pool: &PgPool,
        rows: impl Iterator<Item = NewBookRow> + Send,
    ) -> Result<u64, PortError> {
        let mut tx = pool.begin().await.map_err(Self::port_error)?;
        // Sorting for an index build in memory rather than in temporary files.
        sqlx::query("SET LOCAL maintenance_work_mem = '256MB'")
            .execute(&mut *tx)
            .await
            .map_err(Self::port_error)?;
        // The lock DROP INDEX takes anyway, taken before reading what to drop.
        sqlx::query("LOCK TABLE books IN ACCESS EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await
            .map_err(Self::port_error)?;
        let indexes = sqlx::query_as::<_, (String, String)>(
            "SELECT index.indexrelid::regclass::text, pg_get_indexdef(index.indexrelid)
             FROM pg_index AS index
             WHERE index.indrelid = 'books'::regclass
               AND NOT EXISTS (SELECT FROM pg_constraint WHERE conindid = index.indexrelid)
             ORDER BY index.indexrelid",
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(Self::port_error)?;
        for (name, _) in &indexes {
            // The name comes from the catalog, quoted by regclass's output.
            sqlx::query(AssertSqlSafe(format!("DROP INDEX {name}")))
                .execute(&mut *tx)
                .await
                .map_err(Self::port_error)?;
        }
        let mut rows = rows.peekable();
        let mut inserted = 0;
        while rows.peek().is_some() {
            let columns: Columns = rows.by_ref().take(BULK_BATCH).collect();
            inserted += insert_columns(&mut *tx, columns).await?;
        }
        for (_, definition) in indexes {
            // A definition PostgreSQL wrote for an index it had.
            sqlx::query(AssertSqlSafe(definition))
                .execute(&mut *tx)
                .await
                .map_err(Self::port_error)?;
        }
        tx.commit().await.map_err(Self::port_error)?;
        Ok(inserted)
    }
}

/// A batch of rows as one array per column, for `UNNEST`.
#[derive(Default)]
struct Columns {
    id: Vec<Uuid>,
    title: Vec<String>,
    title_folded: Vec<String>,
    author: Vec<String>,
    author_folded: Vec<String>,
    isbn: Vec<String>,
    published_date: Vec<Date>,
    price_cents: Vec<i64>,
    owner_id: Vec<Uuid>,
    created_at: Vec<Timestamp>,
}

impl FromIterator<NewBookRow> for Columns {
    fn from_iter<I: IntoIterator<Item = NewBookRow>>(rows: I) -> Self {
        let mut columns = Columns::default();
        for row in rows {
            columns.id.push(row.id);
            columns.title.push(row.title);
            columns.title_folded.push(row.title_folded);
            columns.author.push(row.author);
            columns.author_folded.push(row.author_folded);
            columns.isbn.push(row.isbn);
            columns.published_date.push(row.published_date);
            columns.price_cents.push(row.price_cents);
            columns.owner_id.push(row.owner_id);
            columns.created_at.push(row.created_at);
        }
        columns
    }
}

/// Inserts a batch in one statement, skipping rows whose ISBN is taken:
/// the columns travel as ten arrays, so the statement and its parse are the
/// same whatever the batch size.
async fn insert_columns<'e>(
    executor: impl PgExecutor<'e>,
    columns: Columns,
) -> Result<u64, PortError> {
    let result = sqlx::query(
        "INSERT INTO books
                 (id, title, title_folded, author, author_folded, isbn, published_date,
                  price_cents, owner_id, created_at, version, updated_at)
             SELECT batch.*, $11, batch.created_at
             FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
                         $6::text[], $7::date[], $8::bigint[], $9::uuid[], $10::timestamptz[])
                  AS batch (id, title, title_folded, author, author_folded, isbn,
                            published_date, price_cents, owner_id, created_at)
             ON CONFLICT (isbn) DO NOTHING",
    )
    .bind(columns.id)
    .bind(columns.title)
    .bind(columns.title_folded)
    .bind(columns.author)
    .bind(columns.author_folded)
    .bind(columns.isbn)
    .bind(columns.published_date)
    .bind(columns.price_cents)
    .bind(columns.owner_id)
    .bind(columns.created_at)
    .bind(Version::INITIAL.get())
    .execute(executor)
    .await
    .map_err(PostgresDialect::port_error)?;
    Ok(result.rows_affected())
}

#[cfg(all(test, feature = "test-support"))]
mod tests {
    use sqlx::PgPool;

    /// Every index of `books`, as PostgreSQL would recreate it.
    async fn index_definitions(pool: &PgPool) -> Vec<String> {
        sqlx::query_scalar(
            "SELECT pg_get_indexdef(indexrelid) FROM pg_index
             WHERE indrelid = 'books'::regclass ORDER BY 1",
        )
        .fetch_all(pool)
        .await
        .expect("index definitions")
    }

    #[tokio::test]
    async fn a_bulk_load_leaves_the_indexes_as_the_migrations_made_them() {
        use waiter_contracts::accounts::insert_account;
        use waiter_contracts::books::new_book;
        use waiter_ports::catalog::BookStore as _;

        let Some(test) = crate::TestDatabase::create().await else {
            return;
        };
        let pool = test.database().pool();
        let books = test.database().books();
        let before = index_definitions(pool).await;
        assert_eq!(before.len(), 13, "{before:#?}");
        let owner = insert_account(&test.database().accounts()).await.id;
        let load: Vec<_> = (0..100).map(|_| new_book(owner)).collect();
        let stored = books.bulk_insert(Box::new(load.into_iter())).await;
        assert_eq!(stored.expect("bulk load"), 100);
        assert_eq!(index_definitions(pool).await, before);
        test.drop_database().await;
    }
}
