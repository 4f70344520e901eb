//! [`BookStore`] on PostgreSQL.
//!
//! Lists are SQL built at run time from the query's filter, sort and cursor,
//! but only from this module's fixed fragments: every value a client chose
//! travels as a bind parameter (see [`Statement`]). Each filter and sort is
//! served by an index (`migrations/postgres/0002_books.sql`), and a page
//! continues with the row comparison `(sort column, id) > (…)`, which the
//! `(sort column, id)` indexes answer directly however deep the page is.

use async_trait::async_trait;
use sqlx::error::BoxDynError;
use sqlx::postgres::PgArguments;
use sqlx::{Arguments, AssertSqlSafe, Encode, FromRow, PgExecutor, PgPool, Postgres, Type};
use uuid::Uuid;
use waiter_domain::{
    AccountId, Author, Book, BookDraft, BookId, Date, Isbn, Price, Timestamp, Title, Version,
};
use waiter_ports::PortError;
use waiter_ports::catalog::{
    BookQuery, BookRecords, BookSort, BookSortKey, BookStore, InsertBookError, NewBookRecord,
    SortValue, WriteBookError,
};

use crate::error::{port_error, violates_unique};

/// The constraint that keeps ISBNs unique; see `migrations/postgres`.
const ISBN_KEY: &str = "books_isbn_key";

/// How many books [`BookStore::bulk_insert`] sends per statement: enough
/// that per-statement costs vanish, few enough to keep the arrays small.
const BULK_BATCH: usize = 10_000;

/// The columns a [`BookRow`] reads, named once so every query selects the same.
macro_rules! book_columns {
    () => {
        "id, title, author, isbn, published_date, price_cents, owner_id, version, created_at, updated_at"
    };
}

/// Books in the `books` table.
#[derive(Debug, Clone)]
pub struct PostgresBookStore {
    pool: PgPool,
}

impl PostgresBookStore {
    pub(crate) fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Why a conditional write matched no row: the book is missing, or (only
    /// when a version was expected) it has moved on to another version.
    async fn refusal(&self, id: BookId, expected_version: Option<Version>) -> WriteBookError {
        let current = sqlx::query_scalar::<_, i64>("SELECT version FROM books WHERE id = $1")
            .bind(id.as_uuid())
            .fetch_optional(&self.pool)
            .await;
        match (current, expected_version) {
            (Err(error), _) => port_error(error).into(),
            (Ok(Some(current)), Some(_)) => WriteBookError::VersionMismatch {
                current: Version::new(current),
            },
            // Without an expected version only a missing row stops the write.
            (Ok(_), _) => WriteBookError::NotFound,
        }
    }
}

/// A `books` row.
#[derive(Debug, FromRow)]
struct BookRow {
    id: Uuid,
    title: String,
    author: String,
    isbn: String,
    published_date: Date,
    price_cents: i64,
    owner_id: Uuid,
    version: i64,
    created_at: Timestamp,
    updated_at: Timestamp,
}

impl TryFrom<BookRow> for Book {
    type Error = PortError;

    /// Re-validates what was stored: a bad row is corrupt data, never a panic.
    fn try_from(row: BookRow) -> Result<Self, PortError> {
        Ok(Book {
            id: BookId::from_uuid(row.id),
            title: Title::parse(&row.title).map_err(PortError::unexpected)?,
            author: Author::parse(&row.author).map_err(PortError::unexpected)?,
            isbn: Isbn::parse(&row.isbn).map_err(PortError::unexpected)?,
            published_date: row.published_date,
            price: Price::from_cents(row.price_cents).map_err(PortError::unexpected)?,
            owner: AccountId::from_uuid(row.owner_id),
            version: Version::new(row.version),
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

/// The case-folded form of a title or author, stored beside it and compared
/// with the folded filter, so matching ignores case the same way in every store.
fn folded(text: &str) -> String {
    text.to_lowercase()
}

/// A `LIKE` pattern (with `ESCAPE '\'`) for text containing `q`, ignoring
/// case: `%`, `_` and `\` in `q` match only themselves.
fn contains_pattern(q: &str) -> String {
    let mut pattern = String::with_capacity(q.len() + 2);
    pattern.push('%');
    for c in folded(q).chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// The column `key` sorts by; each has a `(column, id)` index.
fn sort_column(key: BookSortKey) -> &'static str {
    match key {
        BookSortKey::PublishedDate => "published_date",
        BookSortKey::Title => "title",
        BookSortKey::Price => "price_cents",
        BookSortKey::CreatedAt => "created_at",
    }
}

/// A statement under construction: SQL text and the arguments for its placeholders.
///
/// [`Statement::push`] takes only `&'static str`, so a client's value can
/// reach the database only through [`Statement::push_bind`], as a parameter.
struct Statement {
    sql: String,
    arguments: PgArguments,
    /// The first value that failed to encode, if any: the statement then never runs.
    encode_error: Option<BoxDynError>,
}

impl Statement {
    fn new(sql: &'static str) -> Self {
        Self {
            sql: sql.to_owned(),
            arguments: PgArguments::default(),
            encode_error: None,
        }
    }

    /// Appends SQL written in this module.
    fn push(&mut self, sql: &'static str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    /// Appends a placeholder (`$n`) for `value`.
    fn push_bind<'q, T>(&mut self, value: T) -> &mut Self
    where
        T: Encode<'q, Postgres> + Type<Postgres>,
    {
        if self.encode_error.is_none() {
            match self.arguments.add(value) {
                Ok(()) => {
                    self.sql.push('$');
                    self.sql.push_str(&self.arguments.len().to_string());
                }
                Err(error) => self.encode_error = Some(error),
            }
        }
        self
    }

    /// Appends a placeholder for a cursor's sort value, in the column's own type.
    fn push_sort_value(&mut self, value: SortValue) -> &mut Self {
        match value {
            SortValue::Date(date) => self.push_bind(date),
            SortValue::Text(text) => self.push_bind(text),
            SortValue::Cents(cents) => self.push_bind(cents),
            SortValue::Instant(instant) => self.push_bind(instant),
        }
    }

    /// The SQL and its arguments, unless a value failed to encode.
    fn finish(self) -> Result<(AssertSqlSafe<String>, PgArguments), PortError> {
        match self.encode_error {
            Some(error) => Err(port_error(sqlx::Error::Encode(error))),
            None => Ok((AssertSqlSafe(self.sql), self.arguments)),
        }
    }

    /// Runs the statement as an unnamed, one-off statement, so PostgreSQL
    /// plans it with the actual values every time. A cached statement may
    /// switch to a generic plan after five runs, and a generic plan cannot
    /// tell a rare `q` (best found through the trigram indexes) from a common
    /// one (best found by walking the sort index): at 1 000 000 books the
    /// generic plan took 430 ms for a rare word, the planned-per-value one 1 ms.
    async fn fetch_books(self, pool: &PgPool) -> Result<Vec<Book>, PortError> {
        let (sql, arguments) = self.finish()?;
        sqlx::query_as_with::<_, BookRow, _>(sql, arguments)
            .persistent(false)
            .fetch_all(pool)
            .await
            .map_err(port_error)?
            .into_iter()
            .map(Book::try_from)
            .collect()
    }
}

/// A batch of records as one array per column, for `UNNEST`.
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

impl FromIterator<NewBookRecord> for Columns {
    fn from_iter<I: IntoIterator<Item = NewBookRecord>>(records: I) -> Self {
        let mut columns = Columns::default();
        for record in records {
            let draft = record.draft;
            columns.id.push(record.id.as_uuid());
            columns.title_folded.push(folded(draft.title.as_str()));
            columns.title.push(draft.title.as_str().to_owned());
            columns.author_folded.push(folded(draft.author.as_str()));
            columns.author.push(draft.author.as_str().to_owned());
            columns.isbn.push(draft.isbn.as_str().to_owned());
            columns.published_date.push(draft.published_date);
            columns.price_cents.push(draft.price.cents());
            columns.owner_id.push(record.owner.as_uuid());
            columns.created_at.push(record.created_at);
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
    .map_err(port_error)?;
    Ok(result.rows_affected())
}

#[async_trait]
impl BookStore for PostgresBookStore {
    async fn insert(&self, record: NewBookRecord) -> Result<Book, InsertBookError> {
        let draft = &record.draft;
        let row = sqlx::query_as::<_, BookRow>(concat!(
            "INSERT INTO books
                 (id, title, title_folded, author, author_folded, isbn, published_date,
                  price_cents, owner_id, version, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)
             RETURNING ",
            book_columns!()
        ))
        .bind(record.id.as_uuid())
        .bind(draft.title.as_str())
        .bind(folded(draft.title.as_str()))
        .bind(draft.author.as_str())
        .bind(folded(draft.author.as_str()))
        .bind(draft.isbn.as_str())
        .bind(draft.published_date)
        .bind(draft.price.cents())
        .bind(record.owner.as_uuid())
        .bind(Version::INITIAL.get())
        .bind(record.created_at)
        .fetch_one(&self.pool)
        .await
        .map_err(|error| match error {
            error if violates_unique(&error, ISBN_KEY) => InsertBookError::IsbnTaken,
            error => port_error(error).into(),
        })?;
        Ok(row.try_into()?)
    }

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
    async fn bulk_insert(&self, records: BookRecords) -> Result<u64, PortError> {
        let mut records = records.peekable();
        if records.peek().is_none() {
            return Ok(0);
        }
        let mut tx = self.pool.begin().await.map_err(port_error)?;
        // Sorting for an index build in memory rather than in temporary files.
        sqlx::query("SET LOCAL maintenance_work_mem = '256MB'")
            .execute(&mut *tx)
            .await
            .map_err(port_error)?;
        // The lock DROP INDEX takes anyway, taken before reading what to drop.
        sqlx::query("LOCK TABLE books IN ACCESS EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await
            .map_err(port_error)?;
        let indexes = sqlx::query_as::<_, (String, String)>(
            "SELECT index.indexrelid::regclass::text, pg_get_indexdef(index.indexrelid)
             FROM pg_index AS index
             WHERE index.indrelid = 'books'::regclass
               AND NOT EXISTS (SELECT FROM pg_constraint WHERE conindid = index.indexrelid)
             ORDER BY index.indexrelid",
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(port_error)?;
        for (name, _) in &indexes {
            // The name comes from the catalog, quoted by regclass's output.
            sqlx::query(AssertSqlSafe(format!("DROP INDEX {name}")))
                .execute(&mut *tx)
                .await
                .map_err(port_error)?;
        }
        let mut inserted = 0;
        while records.peek().is_some() {
            let columns: Columns = records.by_ref().take(BULK_BATCH).collect();
            inserted += insert_columns(&mut *tx, columns).await?;
        }
        for (_, definition) in indexes {
            // A definition PostgreSQL wrote for an index it had.
            sqlx::query(AssertSqlSafe(definition))
                .execute(&mut *tx)
                .await
                .map_err(port_error)?;
        }
        tx.commit().await.map_err(port_error)?;
        Ok(inserted)
    }

    async fn find(&self, id: BookId) -> Result<Option<Book>, PortError> {
        sqlx::query_as::<_, BookRow>(concat!(
            "SELECT ",
            book_columns!(),
            " FROM books WHERE id = $1"
        ))
        .bind(id.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(port_error)?
        .map(Book::try_from)
        .transpose()
    }

    async fn list(&self, query: BookQuery) -> Result<Vec<Book>, PortError> {
        let BookQuery {
            filter,
            sort,
            after,
            limit,
        } = query;
        let column = sort_column(sort.key);
        let mut statement = Statement::new(concat!(
            "SELECT ",
            book_columns!(),
            " FROM books WHERE true"
        ));
        if let Some(author) = filter.author {
            statement
                .push(" AND author_folded = ")
                .push_bind(folded(&author));
        }
        if let Some(q) = filter.q {
            let pattern = contains_pattern(&q);
            statement
                .push(" AND (title_folded LIKE ")
                .push_bind(pattern.clone())
                .push(" ESCAPE '\\' OR author_folded LIKE ")
                .push_bind(pattern)
                .push(" ESCAPE '\\')");
        }
        if let Some(date) = filter.published_after {
            statement.push(" AND published_date > ").push_bind(date);
        }
        if let Some(date) = filter.published_before {
            statement.push(" AND published_date < ").push_bind(date);
        }
        if let Some(after) = after {
            if !after.fits(sort) {
                return Err(port_error(sqlx::Error::InvalidArgument(format!(
                    "a cursor of {:?} cannot continue a list sorted by {}",
                    after.value,
                    sort.key.as_str()
                ))));
            }
            statement
                .push(" AND (")
                .push(column)
                .push(", id) ")
                .push(if sort.descending { "<" } else { ">" })
                .push(" (")
                .push_sort_value(after.value)
                .push(", ")
                .push_bind(after.id.as_uuid())
                .push(")");
        }
        let direction = if sort.descending { " DESC" } else { " ASC" };
        statement
            .push(" ORDER BY ")
            .push(column)
            .push(direction)
            .push(", id")
            .push(direction)
            .push(" LIMIT ")
            .push_bind(i64::from(limit));
        statement.fetch_books(&self.pool).await
    }

    async fn recent(&self, limit: u32) -> Result<Vec<Book>, PortError> {
        self.list(BookQuery {
            filter: Default::default(),
            sort: BookSort {
                key: BookSortKey::PublishedDate,
                descending: true,
            },
            after: None,
            limit,
        })
        .await
    }

    async fn update(
        &self,
        id: BookId,
        draft: BookDraft,
        expected_version: Option<Version>,
        updated_at: Timestamp,
    ) -> Result<Book, WriteBookError> {
        let updated = sqlx::query_as::<_, BookRow>(concat!(
            "UPDATE books
             SET title = $3, title_folded = $4, author = $5, author_folded = $6, isbn = $7,
                 published_date = $8, price_cents = $9, updated_at = $10,
                 version = version + 1
             WHERE id = $1 AND ($2::bigint IS NULL OR version = $2)
             RETURNING ",
            book_columns!()
        ))
        .bind(id.as_uuid())
        .bind(expected_version.map(Version::get))
        .bind(draft.title.as_str())
        .bind(folded(draft.title.as_str()))
        .bind(draft.author.as_str())
        .bind(folded(draft.author.as_str()))
        .bind(draft.isbn.as_str())
        .bind(draft.published_date)
        .bind(draft.price.cents())
        .bind(updated_at)
        .fetch_optional(&self.pool)
        .await
        .map_err(|error| match error {
            error if violates_unique(&error, ISBN_KEY) => WriteBookError::IsbnTaken,
            error => port_error(error).into(),
        })?;
        match updated {
            Some(row) => Ok(row.try_into()?),
            None => Err(self.refusal(id, expected_version).await),
        }
    }

    async fn delete(
        &self,
        id: BookId,
        expected_version: Option<Version>,
    ) -> Result<(), WriteBookError> {
        let result =
            sqlx::query("DELETE FROM books WHERE id = $1 AND ($2::bigint IS NULL OR version = $2)")
                .bind(id.as_uuid())
                .bind(expected_version.map(Version::get))
                .execute(&self.pool)
                .await
                .map_err(port_error)?;
        if result.rows_affected() == 0 {
            return Err(self.refusal(id, expected_version).await);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::contains_pattern;

    /// Every index of `books`, as PostgreSQL would recreate it.
    #[cfg(feature = "test-support")]
    async fn index_definitions(books: &super::PostgresBookStore) -> Vec<String> {
        sqlx::query_scalar(
            "SELECT pg_get_indexdef(indexrelid) FROM pg_index
             WHERE indrelid = 'books'::regclass ORDER BY 1",
        )
        .fetch_all(&books.pool)
        .await
        .expect("index definitions")
    }

    #[cfg(feature = "test-support")]
    #[tokio::test]
    async fn a_bulk_load_leaves_the_indexes_as_the_migrations_made_them() {
        use waiter_contracts::accounts::insert_account;
        use waiter_contracts::books::new_book;
        use waiter_ports::catalog::BookStore as _;

        let Some(test) = crate::TestDatabase::create().await else {
            return;
        };
        let books = test.database().books();
        let before = index_definitions(&books).await;
        assert_eq!(before.len(), 13, "{before:#?}");
        let owner = insert_account(&test.database().accounts()).await.id;
        let load: Vec<_> = (0..100).map(|_| new_book(owner)).collect();
        let stored = books.bulk_insert(Box::new(load.into_iter())).await;
        assert_eq!(stored.expect("bulk load"), 100);
        assert_eq!(index_definitions(&books).await, before);
        test.drop_database().await;
    }

    #[test]
    fn wildcards_in_q_match_only_themselves() {
        assert_eq!(contains_pattern("War"), "%war%");
        assert_eq!(contains_pattern("100%"), "%100\\%%");
        assert_eq!(contains_pattern("a_b\\c"), "%a\\_b\\\\c%");
        assert_eq!(contains_pattern("ÉMILE"), "%émile%");
    }
}
