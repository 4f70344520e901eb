//! The catalog: the books store port, list queries, and the catalog use cases.

use async_trait::async_trait;
use thiserror::Error;
use waiter_domain::{
    AccountId, Author, Book, BookDraft, BookId, Date, Isbn, Price, Timestamp, Title,
    ValidationErrors, Version,
};

use crate::PortError;
use crate::idempotency::{IdempotencyRecord, KeyTaken, Keyed};
use crate::identity::Caller;

/// What a list of books may be sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BookSortKey {
    /// Publication date, for "newest releases" and "classics first".
    PublishedDate,
    /// Code-point order, the same in every database.
    Title,
    /// Price in cents, exact, so equal prices tie and fall back to the id.
    Price,
    /// When the book joined the catalog: the default, newest first.
    CreatedAt,
}

impl BookSortKey {
    /// The name clients use in `sort=`.
    pub fn as_str(self) -> &'static str {
        match self {
            BookSortKey::PublishedDate => "published_date",
            BookSortKey::Title => "title",
            BookSortKey::Price => "price",
            BookSortKey::CreatedAt => "created_at",
        }
    }
}

/// A sort key and a direction; ties are always broken by id in the same direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BookSort {
    /// What to order by.
    pub key: BookSortKey,
    /// Largest first (`sort=-price`) rather than smallest first.
    pub descending: bool,
}

impl Default for BookSort {
    /// Newest first.
    fn default() -> Self {
        Self {
            key: BookSortKey::CreatedAt,
            descending: true,
        }
    }
}

/// Which books a list includes. All present conditions must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BookFilter {
    /// The author, compared case-insensitively with the whole author field.
    pub author: Option<String>,
    /// A case-insensitive substring of the title or the author.
    pub q: Option<String>,
    /// Only books published strictly after this date.
    pub published_after: Option<Date>,
    /// Only books published strictly before this date.
    pub published_before: Option<Date>,
}

/// The sort-key value of the last book of a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SortValue {
    /// For [`BookSortKey::PublishedDate`].
    Date(Date),
    /// For [`BookSortKey::Title`].
    Text(String),
    /// For [`BookSortKey::Price`].
    Cents(i64),
    /// For [`BookSortKey::CreatedAt`].
    Instant(Timestamp),
}

/// Where the next page starts: strictly after this (sort value, id) in the sort order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookCursor {
    /// The last book's sort-key value: where in the order the next page starts.
    pub value: SortValue,
    /// The last book's id, which breaks ties between books with equal values.
    pub id: BookId,
}

impl BookCursor {
    /// The cursor just past `book` in `sort` order.
    pub fn after(book: &Book, sort: BookSort) -> Self {
        let value = match sort.key {
            BookSortKey::PublishedDate => SortValue::Date(book.published_date),
            BookSortKey::Title => SortValue::Text(book.title.as_str().to_owned()),
            BookSortKey::Price => SortValue::Cents(book.price.cents()),
            BookSortKey::CreatedAt => SortValue::Instant(book.created_at),
        };
        Self { value, id: book.id }
    }

    /// True when the cursor's value has the type `sort` orders by, so a cursor
    /// from one sort cannot be replayed against another.
    pub fn fits(&self, sort: BookSort) -> bool {
        matches!(
            (&self.value, sort.key),
            (SortValue::Date(_), BookSortKey::PublishedDate)
                | (SortValue::Text(_), BookSortKey::Title)
                | (SortValue::Cents(_), BookSortKey::Price)
                | (SortValue::Instant(_), BookSortKey::CreatedAt)
        )
    }
}

/// One page of a filtered, sorted list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookQuery {
    /// Which books qualify.
    pub filter: BookFilter,
    /// Their order.
    pub sort: BookSort,
    /// Start after this position; `None` for the first page. Always [`BookCursor::fits`] `sort`.
    pub after: Option<BookCursor>,
    /// The most books to return; the caller bounds it (1 to 100 over HTTP).
    pub limit: u32,
}

/// A book to store.
#[derive(Debug, Clone)]
pub struct NewBookRecord {
    /// Chosen by the caller, so the store never invents identity.
    pub id: BookId,
    /// The owner's fields, already validated.
    pub draft: BookDraft,
    /// The account the book belongs to; the store deletes the book with it.
    pub owner: AccountId,
    /// From the caller's clock, so stores never read their own; also the first `updated_at`.
    pub created_at: Timestamp,
}

impl NewBookRecord {
    /// The book as the store will hold it once inserted, so what a request
    /// creates can be rendered before its transaction commits.
    pub fn book(&self) -> Book {
        let draft = self.draft.clone();
        Book {
            id: self.id,
            title: draft.title,
            author: draft.author,
            isbn: draft.isbn,
            published_date: draft.published_date,
            price: draft.price,
            owner: self.owner,
            version: Version::INITIAL,
            created_at: self.created_at,
            updated_at: self.created_at,
        }
    }
}

/// New books produced one at a time, so that a bulk load never holds them all in memory.
pub type BookRecords = Box<dyn Iterator<Item = NewBookRecord> + Send>;

/// Why a book could not be inserted.
#[derive(Debug, Error)]
pub enum InsertBookError {
    /// Another book has the ISBN, found by the store's unique constraint
    /// rather than a read before the write, so no race can slip past it.
    #[error("a book with this ISBN already exists")]
    IsbnTaken,
    /// The idempotency record's key was recorded first by another request.
    #[error(transparent)]
    KeyTaken(#[from] KeyTaken),
    /// Infrastructure failed (see [`PortError`]): not the caller's doing.
    #[error(transparent)]
    Port(#[from] PortError),
}

/// Why a book could not be changed or deleted.
#[derive(Debug, Error)]
pub enum WriteBookError {
    /// No book has the id (perhaps deleted meanwhile).
    #[error("no such book")]
    NotFound,
    /// The book is no longer at the expected version; nothing changed.
    #[error("the book changed since the expected version")]
    VersionMismatch {
        /// The stored version, so the caller can report it.
        current: Version,
    },
    /// The new ISBN belongs to another book; nothing changed.
    #[error("a book with this ISBN already exists")]
    IsbnTaken,
    /// Infrastructure failed (see [`PortError`]): not the caller's doing.
    #[error(transparent)]
    Port(#[from] PortError),
}

/// Stores books.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait BookStore: Send + Sync {
    /// Stores a new book at [`Version::INITIAL`] with `updated_at = created_at`
    /// ([`NewBookRecord::book`]), and `remember` with it in one transaction.
    /// MUST return `IsbnTaken` when another book has the ISBN, and `KeyTaken`
    /// when `remember`'s key holds a record that has not expired, whatever
    /// the race; either way nothing is stored.
    async fn insert(
        &self,
        record: NewBookRecord,
        remember: Option<IdempotencyRecord>,
    ) -> Result<Book, InsertBookError>;

    /// Stores every book `records` yields, skipping any whose ISBN is taken,
    /// all of them or (on error) none; returns how many were stored. For
    /// filling an idle catalogue (`waiter seed`): it MAY lock the books
    /// against all readers and writers until it returns, and drop and
    /// rebuild secondary indexes around the load, which makes a million
    /// books take seconds rather than minutes. Every index and constraint is
    /// as before when it returns, whether it succeeded or not.
    async fn bulk_insert(&self, records: BookRecords) -> Result<u64, PortError>;

    /// The book with this id, if any.
    async fn find(&self, id: BookId) -> Result<Option<Book>, PortError>;

    /// One page of books matching `query.filter`, in `query.sort` order with
    /// ties broken by id (in the same direction), starting strictly after
    /// `query.after`, at most `query.limit` of them. Concatenating pages must
    /// give the full sorted result with no gaps or duplicates, even when books
    /// are inserted between pages.
    async fn list(&self, query: BookQuery) -> Result<Vec<Book>, PortError>;

    /// The `limit` most recently published books: `published_date` descending, then id descending.
    async fn recent(&self, limit: u32) -> Result<Vec<Book>, PortError>;

    /// Replaces the writable fields in one conditional statement and bumps the
    /// version. `NotFound`; `VersionMismatch` (with the stored version) when
    /// `expected_version` is set and differs; `IsbnTaken`.
    async fn update(
        &self,
        id: BookId,
        draft: BookDraft,
        expected_version: Option<Version>,
        updated_at: Timestamp,
    ) -> Result<Book, WriteBookError>;

    /// Deletes in one conditional statement. `NotFound`; `VersionMismatch`.
    async fn delete(
        &self,
        id: BookId,
        expected_version: Option<Version>,
    ) -> Result<(), WriteBookError>;
}

/// A JSON merge patch (RFC 7396) of a book, already parsed: `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BookPatch {
    /// A new [`BookDraft::title`].
    pub title: Option<Title>,
    /// A new [`BookDraft::author`].
    pub author: Option<Author>,
    /// A new [`BookDraft::isbn`].
    pub isbn: Option<Isbn>,
    /// A new [`BookDraft::published_date`].
    pub published_date: Option<Date>,
    /// A new [`BookDraft::price`].
    pub price: Option<Price>,
}

/// Failures of the catalog use cases.
#[derive(Debug, Error)]
pub enum CatalogError {
    /// No book has the id.
    #[error("book not found")]
    NotFound,
    /// Signed in, but neither the owner nor an admin.
    #[error("only the book's owner or an admin may change it")]
    Forbidden,
    /// Another book has the ISBN.
    #[error("a book with this ISBN already exists")]
    IsbnTaken,
    /// `If-Match` named a version that is no longer current.
    #[error("the book has changed since it was read")]
    VersionMismatch {
        /// The version the book is at now, for the client to read again.
        current: Version,
    },
    /// Values that parse but break a rule needing context (a future publication date).
    #[error("{0}")]
    Invalid(ValidationErrors),
    /// Another request with the same idempotency key created first; nothing
    /// was created, and the key now replays the other request's response.
    #[error(transparent)]
    KeyTaken(#[from] KeyTaken),
    /// Infrastructure failed (see [`PortError`]): not the caller's doing.
    #[error(transparent)]
    Port(#[from] PortError),
}

/// The catalog as the outside world drives it.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait CatalogUseCases: Send + Sync {
    /// One page of books; `query.after`, when set, fits `query.sort`.
    async fn list_books(&self, query: BookQuery) -> Result<Vec<Book>, CatalogError>;

    /// The five most recently published books.
    async fn list_recent_books(&self) -> Result<Vec<Book>, CatalogError>;

    /// One book. `NotFound`.
    async fn get_book(&self, id: BookId) -> Result<Book, CatalogError>;

    /// Adds a book owned by the caller, remembering its response under
    /// `keyed`'s idempotency key in the same transaction. `Invalid` for a
    /// future publication date; `IsbnTaken`; `KeyTaken`.
    async fn create_book(
        &self,
        caller: Caller,
        draft: BookDraft,
        keyed: Option<Keyed<Book>>,
    ) -> Result<Book, CatalogError>;

    /// Replaces a book's writable fields. `NotFound`; `Forbidden`;
    /// `VersionMismatch` when `expected_version` is stale; `Invalid`; `IsbnTaken`.
    async fn replace_book(
        &self,
        caller: Caller,
        id: BookId,
        draft: BookDraft,
        expected_version: Option<Version>,
    ) -> Result<Book, CatalogError>;

    /// Merges `patch` into a book; errors as for [`Self::replace_book`].
    async fn update_book(
        &self,
        caller: Caller,
        id: BookId,
        patch: BookPatch,
        expected_version: Option<Version>,
    ) -> Result<Book, CatalogError>;

    /// Deletes a book. `NotFound`; `Forbidden`; `VersionMismatch`.
    async fn delete_book(
        &self,
        caller: Caller,
        id: BookId,
        expected_version: Option<Version>,
    ) -> Result<(), CatalogError>;

    /// Stores every book `books` yields with [`BookStore::bulk_insert`]
    /// (skipping taken ISBNs; it may lock the books until it returns) and
    /// returns how many it stored, then makes every cached view of the
    /// catalogue stale, so readers see the new books at once rather than
    /// after the cache's TTL. An operator's command (`waiter seed books`),
    /// not a request: the records, owner included, are taken as they are.
    async fn import_books(&self, books: BookRecords) -> Result<u64, CatalogError>;
}
