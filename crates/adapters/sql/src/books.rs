//! [`BookStore`] on the `books` table.
//!
//! Lists are SQL built at run time from the query's filter, sort and cursor
//! with sqlx's [`QueryBuilder`], but only from this module's fixed fragments:
//! every value a client chose travels as a bind parameter. Each filter and
//! sort is served by an index (`migrations/*/0002_books.sql`; on SQLite, `q`
//! scans), and a page continues with the row comparison
//! `(sort column, id) > (…)`, which the `(sort column, id)` indexes answer
//! directly however deep the page is.

use std::future::Future;

use async_trait::async_trait;
use sqlx::{ColumnIndex, Executor, FromRow, Pool, QueryBuilder};
use uuid::Uuid;
use waiter_domain::{
    AccountId, Author, Book, BookDraft, BookId, Date, Isbn, Price, Timestamp, Title, Version,
};
use waiter_ports::PortError;
use waiter_ports::catalog::{
    BookFilter, BookQuery, BookRecords, BookSort, BookSortKey, BookStore, InsertBookError,
    NewBookRecord, SortValue, WriteBookError,
};
use waiter_ports::idempotency::IdempotencyRecord;

use crate::calls::Calls;
use crate::idempotency::begin_creating;
use crate::{Column, Connection, Db, Dialect, Param, Row, UniqueKey, stale_version};

/// The constraint that keeps ISBNs unique.
const ISBN_KEY: UniqueKey = UniqueKey {
    name: "books_isbn_key",
    table: "books",
    columns: &["isbn"],
};

/// The columns a [`BookRow`] reads, named once so every query selects the same.
macro_rules! book_columns {
    () => {
        "id, title, author, isbn, published_date, price_cents, owner_id, version, created_at, updated_at"
    };
}

const INSERT: &str = concat!(
    "INSERT INTO books
         (id, title, title_folded, author, author_folded, isbn, published_date,
          price_cents, owner_id, created_at, version, updated_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $10)
     RETURNING ",
    book_columns!()
);
const FIND: &str = concat!("SELECT ", book_columns!(), " FROM books WHERE id = $1");
const LIST: &str = concat!("SELECT ", book_columns!(), " FROM books WHERE true");
/// Replaces the book if the version matches `$2`, or whatever the version
/// when `$2` is `NULL`.
const UPDATE: &str = concat!(
    "UPDATE books
     SET title = $3, title_folded = $4, author = $5, author_folded = $6, isbn = $7,
         published_date = $8, price_cents = $9, updated_at = $10,
         version = version + 1
     WHERE id = $1 AND version = COALESCE($2, version)
     RETURNING ",
    book_columns!()
);
const DELETE: &str =
    "DELETE FROM books WHERE id = $1 AND version = COALESCE($2, version) RETURNING id";
const VERSION: &str = "SELECT version FROM books WHERE id = $1";

/// How a dialect loads many books at once ([`BookStore::bulk_insert`]):
/// the fastest way differs too much between databases to share.
pub trait BookLoading: Dialect {
    /// Inserts `rows` (at least one) in one transaction, skipping those whose
    /// ISBN is taken, and returns how many were stored.
    fn bulk_insert(
        pool: &Pool<Self::Database>,
        rows: impl Iterator<Item = NewBookRow> + Send,
    ) -> impl Future<Output = Result<u64, PortError>> + Send;
}

/// Books in the `books` table.
#[derive(Debug)]
pub struct SqlBookStore<D: Dialect> {
    pub(crate) pool: Pool<D::Database>,
    pub(crate) calls: Calls<D>,
}

/// A `books` row, with instants stored as `T`.
#[derive(Debug, FromRow)]
struct BookRow<T> {
    id: Uuid,
    title: String,
    author: String,
    isbn: String,
    published_date: Date,
    price_cents: i64,
    owner_id: Uuid,
    version: i64,
    created_at: T,
    updated_at: T,
}

impl<T: Into<Timestamp>> TryFrom<BookRow<T>> for Book {
    type Error = PortError;

    /// Re-validates what was stored: a bad row is corrupt data, never a panic.
    fn try_from(row: BookRow<T>) -> Result<Self, PortError> {
        Ok(Book {
            id: BookId::from_uuid(row.id),
            title: Title::parse(&row.title).map_err(PortError::unexpected)?,
            author: Author::parse(&row.author).map_err(PortError::unexpected)?,
            isbn: Isbn::parse(&row.isbn).map_err(PortError::unexpected)?,
            published_date: row.published_date,
            price: Price::from_cents(row.price_cents).map_err(PortError::unexpected)?,
            owner: AccountId::from_uuid(row.owner_id),
            version: Version::new(row.version),
            created_at: row.created_at.into(),
            updated_at: row.updated_at.into(),
        })
    }
}

/// The values of a new `books` row: `version` is [`Version::INITIAL`] and
/// `updated_at` is `created_at`.
#[derive(Debug, Clone)]
pub struct NewBookRow {
    pub id: Uuid,
    pub title: String,
    pub title_folded: String,
    pub author: String,
    pub author_folded: String,
    pub isbn: String,
    pub published_date: Date,
    pub price_cents: i64,
    pub owner_id: Uuid,
    pub created_at: Timestamp,
}

impl From<NewBookRecord> for NewBookRow {
    fn from(record: NewBookRecord) -> Self {
        let draft = record.draft;
        Self {
            id: record.id.as_uuid(),
            title_folded: folded(draft.title.as_str()),
            title: draft.title.as_str().to_owned(),
            author_folded: folded(draft.author.as_str()),
            author: draft.author.as_str().to_owned(),
            isbn: draft.isbn.as_str().to_owned(),
            published_date: draft.published_date,
            price_cents: draft.price.cents(),
            owner_id: record.owner.as_uuid(),
            created_at: record.created_at,
        }
    }
}

/// The case-folded form of a title or author, stored beside it and compared
/// with the folded filter, so matching ignores case the same way in every
/// store (SQLite's `lower()` folds ASCII only, PostgreSQL's depends on the
/// locale).
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

impl<D: Dialect> SqlBookStore<D>
where
    for<'c> &'c mut Connection<D>: Executor<'c, Database = Db<D>>,
    usize: ColumnIndex<Row<D>>,
    Uuid: Column<Db<D>>,
    i64: Column<Db<D>>,
{
    /// Why a conditional write of book `id` matched no row.
    async fn refusal(&self, id: BookId, expected_version: Option<Version>) -> WriteBookError {
        match stale_version::<D>(self.calls.writer(), VERSION, id.as_uuid(), expected_version).await
        {
            Ok(Some(current)) => WriteBookError::VersionMismatch { current },
            Ok(None) => WriteBookError::NotFound,
            Err(error) => error.into(),
        }
    }
}

#[async_trait]
impl<D: BookLoading> BookStore for SqlBookStore<D>
where
    for<'c> &'c mut Connection<D>: Executor<'c, Database = Db<D>>,
    for<'n> &'n str: ColumnIndex<Row<D>>,
    usize: ColumnIndex<Row<D>>,
    Uuid: Column<Db<D>>,
    String: Column<Db<D>>,
    i64: Column<Db<D>>,
    Date: Column<Db<D>>,
    i32: Column<Db<D>>,
    for<'q> &'q str: Param<'q, Db<D>>,
    for<'q> &'q [u8]: Param<'q, Db<D>>,
    for<'q> Option<i64>: Param<'q, Db<D>>,
{
    async fn insert(
        &self,
        record: NewBookRecord,
        remember: Option<IdempotencyRecord>,
    ) -> Result<Book, InsertBookError> {
        let store = self.clone();
        self.calls
            .write("books.insert", async move {
                let row = NewBookRow::from(record);
                let insert = sqlx::query_as::<_, BookRow<D::Timestamp>>(INSERT)
                    .bind(row.id)
                    .bind(row.title)
                    .bind(row.title_folded)
                    .bind(row.author)
                    .bind(row.author_folded)
                    .bind(row.isbn)
                    .bind(row.published_date)
                    .bind(row.price_cents)
                    .bind(row.owner_id)
                    .bind(D::Timestamp::from(row.created_at))
                    .bind(Version::INITIAL.get());
                let refused = |error: sqlx::Error| -> InsertBookError {
                    match error {
                        error if D::violates(&error, ISBN_KEY) => InsertBookError::IsbnTaken,
                        error => D::port_error(error).into(),
                    }
                };
                // A lone INSERT commits by itself, as durably: a transaction
                // is only needed to write the idempotency record with it, and
                // would cost two more round trips (BEGIN, COMMIT) holding a
                // pooled connection.
                let stored = match remember {
                    None => insert
                        .fetch_one(store.calls.writer())
                        .await
                        .map_err(refused)?,
                    Some(remember) => {
                        let mut tx =
                            begin_creating::<D>(store.calls.writer(), Some(&remember)).await??;
                        let stored = insert.fetch_one(&mut *tx).await.map_err(refused)?;
                        tx.commit().await.map_err(D::port_error)?;
                        stored
                    }
                };
                Ok(stored.try_into()?)
            })
            .await
    }

    async fn bulk_insert(&self, records: BookRecords) -> Result<u64, PortError> {
        let store = self.clone();
        self.calls
            .write("books.bulk_insert", async move {
                let mut rows = records.map(NewBookRow::from).peekable();
                if rows.peek().is_none() {
                    return Ok(0);
                }
                D::bulk_insert(store.calls.writer(), rows).await
            })
            .await
    }

    async fn find(&self, id: BookId) -> Result<Option<Book>, PortError> {
        let pool = self.pool.clone();
        self.calls
            .read("books.find", async move {
                sqlx::query_as::<_, BookRow<D::Timestamp>>(FIND)
                    .bind(id.as_uuid())
                    .fetch_optional(&pool)
                    .await
                    .map_err(D::port_error)?
                    .map(Book::try_from)
                    .transpose()
            })
            .await
    }

    async fn list(&self, query: BookQuery) -> Result<Vec<Book>, PortError> {
        let pool = self.pool.clone();
        self.calls
            .read("books.list", async move {
                let BookQuery {
                    filter,
                    sort,
                    after,
                    limit,
                } = query;
                let column = sort_column(sort.key);
                let unfiltered = filter == BookFilter::default();
                // `push_bind` panics if a value fails to encode; none of these can
                // (a cursor's instant is UTC, whose encodings are total).
                let mut statement = QueryBuilder::<Db<D>>::new(LIST);
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
                        return Err(D::port_error(sqlx::Error::InvalidArgument(format!(
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
                        .push(" (");
                    match after.value {
                        SortValue::Date(date) => statement.push_bind(date),
                        SortValue::Text(text) => statement.push_bind(text),
                        SortValue::Cents(cents) => statement.push_bind(cents),
                        SortValue::Instant(instant) => {
                            statement.push_bind(D::Timestamp::from(instant))
                        }
                    };
                    statement.push(", ").push_bind(after.id.as_uuid()).push(")");
                }
                let direction = if sort.descending { " DESC" } else { " ASC" };
                statement
                    .push(" ORDER BY ")
                    .push(column)
                    .push(direction)
                    .push(", id")
                    .push(direction)
                    // Written in, not bound: see `limited`.
                    .push(" LIMIT ")
                    .push(limit);
                // A filtered list is a one-off statement, so PostgreSQL plans it
                // with the actual values every time. A cached statement may
                // switch to a generic plan after five runs, and a generic plan
                // cannot tell a rare `q` (best found through the trigram indexes)
                // from a common one (best found by walking the sort index): at
                // 1 000 000 books the generic plan took 430 ms for a rare word,
                // the planned-per-value one 1 ms. An unfiltered list is a walk of
                // its `(column, id)` index whatever the cursor, so it is prepared
                // once per connection: a one-off statement costs another round
                // trip (parse and describe before binding) and a plan per call.
                statement
                    .build_query_as::<BookRow<D::Timestamp>>()
                    .persistent(unfiltered)
                    .fetch_all(&pool)
                    .await
                    .map_err(D::port_error)?
                    .into_iter()
                    .map(Book::try_from)
                    .collect()
            })
            .await
    }

    async fn recent(&self, limit: u32) -> Result<Vec<Book>, PortError> {
        let store = self.clone();
        self.calls
            .read("books.recent", async move {
                store
                    .list(BookQuery {
                        filter: Default::default(),
                        sort: BookSort {
                            key: BookSortKey::PublishedDate,
                            descending: true,
                        },
                        after: None,
                        limit,
                    })
                    .await
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
        let store = self.clone();
        self.calls
            .write("books.update", async move {
                let updated = sqlx::query_as::<_, BookRow<D::Timestamp>>(UPDATE)
                    .bind(id.as_uuid())
                    .bind(expected_version.map(Version::get))
                    .bind(draft.title.as_str())
                    .bind(folded(draft.title.as_str()))
                    .bind(draft.author.as_str())
                    .bind(folded(draft.author.as_str()))
                    .bind(draft.isbn.as_str())
                    .bind(draft.published_date)
                    .bind(draft.price.cents())
                    .bind(D::Timestamp::from(updated_at))
                    .fetch_optional(store.calls.writer())
                    .await
                    .map_err(|error| match error {
                        error if D::violates(&error, ISBN_KEY) => WriteBookError::IsbnTaken,
                        error => D::port_error(error).into(),
                    })?;
                match updated {
                    Some(row) => Ok(row.try_into()?),
                    None => Err(store.refusal(id, expected_version).await),
                }
            })
            .await
    }

    async fn delete(
        &self,
        id: BookId,
        expected_version: Option<Version>,
    ) -> Result<(), WriteBookError> {
        let store = self.clone();
        self.calls
            .write("books.delete", async move {
                let deleted = sqlx::query_scalar::<_, Uuid>(DELETE)
                    .bind(id.as_uuid())
                    .bind(expected_version.map(Version::get))
                    .fetch_optional(store.calls.writer())
                    .await
                    .map_err(D::port_error)?;
                match deleted {
                    Some(_) => Ok(()),
                    None => Err(store.refusal(id, expected_version).await),
                }
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::contains_pattern;

    #[test]
    fn wildcards_in_q_match_only_themselves() {
        assert_eq!(contains_pattern("War"), "%war%");
        assert_eq!(contains_pattern("100%"), "%100\\%%");
        assert_eq!(contains_pattern("a_b\\c"), "%a\\_b\\\\c%");
        assert_eq!(contains_pattern("ÉMILE"), "%émile%");
    }
}
