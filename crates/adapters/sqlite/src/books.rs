//! [`BookStore`] on SQLite.
//!
//! Lists are SQL built at run time from the query's filter, sort and cursor,
//! but only from this module's fixed fragments: every value a client chose
//! travels as a bind parameter (see [`Statement`]). Each filter and sort but
//! `q` is served by an index (`migrations/sqlite/0002_books.sql`), and a
//! page continues with the row comparison `(sort column, id) > (…)`, which
//! the `(sort column, id)` indexes answer directly however deep the page is.

use async_trait::async_trait;
use sqlx::error::BoxDynError;
use sqlx::sqlite::SqliteArguments;
use sqlx::{Arguments, AssertSqlSafe, Encode, FromRow, Sqlite, SqlitePool, Type};
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
use crate::timestamp::StoredTimestamp;

/// The column whose `books_isbn_key` constraint keeps ISBNs unique;
/// SQLite names the column, not the constraint, when it is violated.
const ISBN_KEY: &str = "books.isbn";

/// The most parameters one statement may have (`SQLITE_MAX_VARIABLE_NUMBER`).
const MAX_PARAMETERS: usize = 32_766;

/// The parameters of one row in [`BookStore::bulk_insert`]'s statements.
const PARAMETERS_PER_ROW: usize = 12;

/// The columns a [`BookRow`] reads, named once so every query selects the same.
macro_rules! book_columns {
    () => {
        "id, title, author, isbn, published_date, price_cents, owner_id, version, created_at, updated_at"
    };
}

/// Books in the `books` table.
#[derive(Debug, Clone)]
pub struct SqliteBookStore {
    pool: SqlitePool,
}

impl SqliteBookStore {
    /// Inserts every record in one transaction, as many rows per statement
    /// as SQLite's parameter limit allows: all of them (bar taken ISBNs) or none.
    async fn insert_all(
        &self,
        records: impl Iterator<Item = NewBookRecord> + Send,
    ) -> Result<u64, PortError> {
        // IMMEDIATE takes the write lock up front, so the transaction waits
        // for other writers (busy timeout) rather than failing half-way.
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(port_error)?;
        let mut inserted = 0;
        let mut records = records.peekable();
        while records.peek().is_some() {
            let mut statement = Statement::new(
                "INSERT INTO books
                     (id, title, title_folded, author, author_folded, isbn, published_date,
                      price_cents, owner_id, version, created_at, updated_at)
                 VALUES ",
            );
            for (index, record) in records
                .by_ref()
                .take(MAX_PARAMETERS / PARAMETERS_PER_ROW)
                .enumerate()
            {
                if index > 0 {
                    statement.push(", ");
                }
                statement.push_row(record);
            }
            statement.push(" ON CONFLICT (isbn) DO NOTHING");
            let (sql, arguments) = statement.finish()?;
            let result = sqlx::query_with(sql, arguments)
                .execute(&mut *tx)
                .await
                .map_err(port_error)?;
            inserted += result.rows_affected();
        }
        tx.commit().await.map_err(port_error)?;
        Ok(inserted)
    }

    pub(crate) fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }

    /// Why a conditional write matched no row: the book is missing, or (only
    /// when a version was expected) it has moved on to another version.
    async fn refusal(&self, id: BookId, expected_version: Option<Version>) -> WriteBookError {
        let current = sqlx::query_scalar::<_, i64>("SELECT version FROM books WHERE id = ?1")
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
    created_at: StoredTimestamp,
    updated_at: StoredTimestamp,
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
            created_at: row.created_at.0,
            updated_at: row.updated_at.0,
        })
    }
}

/// The case-folded form of a title or author, stored beside it and compared
/// with the folded filter, so matching ignores case the same way in every
/// store (SQLite's own `lower()` folds ASCII only).
fn folded(text: &str) -> String {
    text.to_lowercase()
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
    arguments: SqliteArguments,
    /// The first value that failed to encode, if any: the statement then never runs.
    encode_error: Option<BoxDynError>,
}

impl Statement {
    fn new(sql: &'static str) -> Self {
        Self {
            sql: sql.to_owned(),
            arguments: SqliteArguments::default(),
            encode_error: None,
        }
    }

    /// Appends SQL written in this module.
    fn push(&mut self, sql: &'static str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    /// Appends a placeholder (`?`, numbered by position) for `value`.
    fn push_bind<'q, T>(&mut self, value: T) -> &mut Self
    where
        T: Encode<'q, Sqlite> + Type<Sqlite>,
    {
        if self.encode_error.is_none() {
            match self.arguments.add(value) {
                Ok(()) => self.sql.push('?'),
                Err(error) => self.encode_error = Some(error),
            }
        }
        self
    }

    /// Appends a placeholder for a cursor's sort value, encoded as its column is.
    fn push_sort_value(&mut self, value: SortValue) -> &mut Self {
        match value {
            SortValue::Date(date) => self.push_bind(date),
            SortValue::Text(text) => self.push_bind(text),
            SortValue::Cents(cents) => self.push_bind(cents),
            SortValue::Instant(instant) => self.push_bind(StoredTimestamp(instant)),
        }
    }

    /// Appends one parenthesised row of [`BookStore::bulk_insert`]'s `VALUES`.
    fn push_row(&mut self, record: NewBookRecord) -> &mut Self {
        let draft = record.draft;
        self.push("(")
            .push_bind(record.id.as_uuid())
            .push(", ")
            .push_bind(draft.title.as_str().to_owned())
            .push(", ")
            .push_bind(folded(draft.title.as_str()))
            .push(", ")
            .push_bind(draft.author.as_str().to_owned())
            .push(", ")
            .push_bind(folded(draft.author.as_str()))
            .push(", ")
            .push_bind(draft.isbn.as_str().to_owned())
            .push(", ")
            .push_bind(draft.published_date)
            .push(", ")
            .push_bind(draft.price.cents())
            .push(", ")
            .push_bind(record.owner.as_uuid())
            .push(", ")
            .push_bind(Version::INITIAL.get())
            .push(", ")
            .push_bind(StoredTimestamp(record.created_at))
            .push(", ")
            .push_bind(StoredTimestamp(record.created_at))
            .push(")")
    }

    /// The SQL and its arguments, unless a value failed to encode.
    fn finish(self) -> Result<(AssertSqlSafe<String>, SqliteArguments), PortError> {
        match self.encode_error {
            Some(error) => Err(port_error(sqlx::Error::Encode(error))),
            None => Ok((AssertSqlSafe(self.sql), self.arguments)),
        }
    }

    async fn fetch_books(self, pool: &SqlitePool) -> Result<Vec<Book>, PortError> {
        let (sql, arguments) = self.finish()?;
        sqlx::query_as_with::<_, BookRow, _>(sql, arguments)
            .fetch_all(pool)
            .await
            .map_err(port_error)?
            .into_iter()
            .map(Book::try_from)
            .collect()
    }
}

#[async_trait]
impl BookStore for SqliteBookStore {
    async fn insert(&self, record: NewBookRecord) -> Result<Book, InsertBookError> {
        let draft = &record.draft;
        let row = sqlx::query_as::<_, BookRow>(concat!(
            "INSERT INTO books
                 (id, title, title_folded, author, author_folded, isbn, published_date,
                  price_cents, owner_id, version, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11)
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
        .bind(StoredTimestamp(record.created_at))
        .fetch_one(&self.pool)
        .await
        .map_err(|error| match error {
            error if violates_unique(&error, ISBN_KEY) => InsertBookError::IsbnTaken,
            error => port_error(error).into(),
        })?;
        Ok(row.try_into()?)
    }

    /// Every book in one transaction, with multi-row inserts of as many rows
    /// as SQLite's parameter limit allows. SQLite keeps its indexes through the load: an embedded
    /// catalogue is small, and its single writer already has the database to
    /// itself while the transaction lasts.
    async fn bulk_insert(&self, records: BookRecords) -> Result<u64, PortError> {
        let mut records = records.peekable();
        if records.peek().is_none() {
            return Ok(0);
        }
        self.insert_all(records).await
    }

    async fn find(&self, id: BookId) -> Result<Option<Book>, PortError> {
        sqlx::query_as::<_, BookRow>(concat!(
            "SELECT ",
            book_columns!(),
            " FROM books WHERE id = ?1"
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
            // instr() has no wildcards, so `q` needs no escaping.
            let q = folded(&q);
            statement
                .push(" AND (instr(title_folded, ")
                .push_bind(q.clone())
                .push(") > 0 OR instr(author_folded, ")
                .push_bind(q)
                .push(") > 0)");
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
             SET title = ?3, title_folded = ?4, author = ?5, author_folded = ?6, isbn = ?7,
                 published_date = ?8, price_cents = ?9, updated_at = ?10,
                 version = version + 1
             WHERE id = ?1 AND (?2 IS NULL OR version = ?2)
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
        .bind(StoredTimestamp(updated_at))
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
            sqlx::query("DELETE FROM books WHERE id = ?1 AND (?2 IS NULL OR version = ?2)")
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
