//! The catalog service: books, with owner-or-admin writes, optimistic
//! concurrency and cache-aside reads.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use waiter_domain::{
    AccountId, Author, Book, BookDraft, BookId, Date, Isbn, Price, Timestamp, Title, Version,
};
use waiter_ports::PortError;
use waiter_ports::cache::Cache;
use waiter_ports::catalog::{
    BookPatch, BookQuery, BookRecords, BookStore, CatalogError, CatalogUseCases, InsertBookError,
    NewBookRecord, WriteBookError,
};
use waiter_ports::clock::Clock;
use waiter_ports::idempotency::Keyed;
use waiter_ports::identity::{AccountEvents, Caller};

use crate::cache_aside::CacheAside;
use crate::ids::new_book_id;

/// How many books `/books/recent` shows.
const RECENT_COUNT: u32 = 5;
/// How long a cached book or list lives.
const CACHE_TTL: Duration = Duration::from_secs(300);
/// How often a merge patch without `If-Match` is retried when another write
/// wins the race between its read and its conditional update.
const PATCH_ATTEMPTS: usize = 3;
/// The cache name of the recent-books list.
const RECENT: &str = "books:recent";
/// The cache name every cached book lives within, so that books deleted
/// wholesale (with their owner's account) can be invalidated at once.
const ALL_BOOKS: &str = "books";

/// Implements [`CatalogUseCases`].
pub struct CatalogService {
    books: Arc<dyn BookStore>,
    clock: Arc<dyn Clock>,
    cache: CacheAside,
}

impl CatalogService {
    pub fn new(books: Arc<dyn BookStore>, cache: Arc<dyn Cache>, clock: Arc<dyn Clock>) -> Self {
        Self {
            books,
            clock,
            cache: CacheAside::new(cache, CACHE_TTL),
        }
    }

    /// The book, for a write: `NotFound`, or `Forbidden` unless the caller owns it or is an admin.
    async fn writable(&self, caller: Caller, id: BookId) -> Result<Book, CatalogError> {
        let book = self.books.find(id).await?.ok_or(CatalogError::NotFound)?;
        if book.owner != caller.account_id && !caller.role.is_admin() {
            return Err(CatalogError::Forbidden);
        }
        Ok(book)
    }

    fn check_published(&self, draft: &BookDraft) -> Result<(), CatalogError> {
        draft
            .check_published(self.clock.now().date())
            .map_err(CatalogError::Invalid)
    }

    /// Makes every cached view that may include the book stale, both at
    /// once (with Redis, two commands in flight rather than one after the other).
    async fn invalidate(&self, id: BookId) {
        let book = book_cache_name(id);
        futures::join!(self.cache.invalidate(&book), self.cache.invalidate(RECENT));
    }

    /// Makes every cached view of the catalogue stale, for changes to more
    /// books than are worth naming.
    async fn invalidate_everything(&self) {
        futures::join!(
            self.cache.invalidate(ALL_BOOKS),
            self.cache.invalidate(RECENT)
        );
    }

    async fn update(
        &self,
        id: BookId,
        draft: BookDraft,
        expected_version: Version,
    ) -> Result<Book, CatalogError> {
        let updated = self
            .books
            .update(id, draft, Some(expected_version), self.clock.now())
            .await
            .map_err(write_error)?;
        self.invalidate(id).await;
        Ok(updated)
    }
}

fn book_cache_name(id: BookId) -> String {
    format!("book:{id}")
}

fn write_error(err: WriteBookError) -> CatalogError {
    match err {
        WriteBookError::NotFound => CatalogError::NotFound,
        WriteBookError::VersionMismatch { current } => CatalogError::VersionMismatch { current },
        WriteBookError::IsbnTaken => CatalogError::IsbnTaken,
        WriteBookError::Port(err) => CatalogError::Port(err),
    }
}

/// `expected` when the client gave one that the book still has; `VersionMismatch` otherwise.
fn check_expected(book: &Book, expected: Option<Version>) -> Result<Version, CatalogError> {
    match expected {
        Some(expected) if expected != book.version => Err(CatalogError::VersionMismatch {
            current: book.version,
        }),
        _ => Ok(book.version),
    }
}

#[async_trait]
impl CatalogUseCases for CatalogService {
    async fn list_books(&self, query: BookQuery) -> Result<Vec<Book>, CatalogError> {
        Ok(self.books.list(query).await?)
    }

    async fn list_recent_books(&self) -> Result<Vec<Book>, CatalogError> {
        let load = async {
            let books = self.books.recent(RECENT_COUNT).await?;
            Ok(books.iter().map(CachedBook::from).collect::<Vec<_>>())
        };
        let cached: Vec<CachedBook> = self.cache.read(RECENT, load).await?;
        cached
            .into_iter()
            .map(|book| book.into_book().map_err(CatalogError::Port))
            .collect()
    }

    async fn get_book(&self, id: BookId) -> Result<Book, CatalogError> {
        let load = async { Ok(self.books.find(id).await?.as_ref().map(CachedBook::from)) };
        let cached: Option<CachedBook> = self
            .cache
            .read_within(ALL_BOOKS, &book_cache_name(id), load)
            .await?;
        cached
            .ok_or(CatalogError::NotFound)?
            .into_book()
            .map_err(CatalogError::Port)
    }

    async fn create_book(
        &self,
        caller: Caller,
        draft: BookDraft,
        keyed: Option<Keyed<Book>>,
    ) -> Result<Book, CatalogError> {
        self.check_published(&draft)?;
        let now = self.clock.now();
        let record = NewBookRecord {
            id: new_book_id(now),
            draft,
            owner: caller.account_id,
            created_at: now,
        };
        let remember = keyed
            .map(|keyed| keyed.record(&record.book()))
            .transpose()?;
        let book = self
            .books
            .insert(record, remember)
            .await
            .map_err(|err| match err {
                InsertBookError::IsbnTaken => CatalogError::IsbnTaken,
                InsertBookError::KeyTaken(taken) => CatalogError::KeyTaken(taken),
                InsertBookError::Port(err) => CatalogError::Port(err),
            })?;
        // Only the recent list can hold a book that did not exist: its id is
        // new, and a read of an absent book caches nothing, so a generation
        // for it would only be one more write and one more key to keep.
        self.cache.invalidate(RECENT).await;
        Ok(book)
    }

    async fn replace_book(
        &self,
        caller: Caller,
        id: BookId,
        draft: BookDraft,
        expected_version: Option<Version>,
    ) -> Result<Book, CatalogError> {
        self.writable(caller, id).await?;
        self.check_published(&draft)?;
        // Without If-Match a replacement is unconditional, as PUT is by definition.
        let updated = self
            .books
            .update(id, draft, expected_version, self.clock.now())
            .await
            .map_err(write_error)?;
        self.invalidate(id).await;
        Ok(updated)
    }

    async fn update_book(
        &self,
        caller: Caller,
        id: BookId,
        patch: BookPatch,
        expected_version: Option<Version>,
    ) -> Result<Book, CatalogError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let book = self.writable(caller, id).await?;
            let version = check_expected(&book, expected_version)?;
            let current = book.draft();
            let draft = BookDraft {
                title: patch.title.clone().unwrap_or(current.title),
                author: patch.author.clone().unwrap_or(current.author),
                isbn: patch.isbn.clone().unwrap_or(current.isbn),
                published_date: patch.published_date.unwrap_or(current.published_date),
                price: patch.price.unwrap_or(current.price),
            };
            self.check_published(&draft)?;
            // The merge was computed from `version`; apply it only to that version.
            match self.update(id, draft, version).await {
                Err(CatalogError::VersionMismatch { .. })
                    if expected_version.is_none() && attempts < PATCH_ATTEMPTS => {}
                outcome => return outcome,
            }
        }
    }

    async fn delete_book(
        &self,
        caller: Caller,
        id: BookId,
        expected_version: Option<Version>,
    ) -> Result<(), CatalogError> {
        self.writable(caller, id).await?;
        self.books
            .delete(id, expected_version)
            .await
            .map_err(write_error)?;
        self.invalidate(id).await;
        Ok(())
    }

    async fn import_books(&self, books: BookRecords) -> Result<u64, CatalogError> {
        let stored = self.books.bulk_insert(books).await?;
        self.invalidate_everything().await;
        Ok(stored)
    }
}

/// The catalog subscribes to deleted accounts: the database deleted their
/// books with them, so whatever of those books is cached must go.
#[async_trait]
impl AccountEvents for CatalogService {
    async fn account_deleted(&self, _id: AccountId) -> Result<(), PortError> {
        // Which of the owner's books were cached is not known, so every cached
        // book goes. Deleting an account is rare.
        self.invalidate_everything().await;
        Ok(())
    }
}

/// A book as the cache holds it: plain fields, checked again on the way out.
#[derive(Debug, Serialize, Deserialize)]
struct CachedBook {
    id: String,
    title: String,
    author: String,
    isbn: String,
    published_date: Date,
    price_cents: i64,
    owner: String,
    version: i64,
    created_at: Timestamp,
    updated_at: Timestamp,
}

impl From<&Book> for CachedBook {
    fn from(book: &Book) -> Self {
        Self {
            id: book.id.to_string(),
            title: book.title.to_string(),
            author: book.author.to_string(),
            isbn: book.isbn.to_string(),
            published_date: book.published_date,
            price_cents: book.price.cents(),
            owner: book.owner.to_string(),
            version: book.version.get(),
            created_at: book.created_at,
            updated_at: book.updated_at,
        }
    }
}

impl CachedBook {
    fn into_book(self) -> Result<Book, PortError> {
        let corrupt = |field: &str| {
            PortError::unexpected(anyhow::anyhow!("cached book has an invalid {field}"))
        };
        Ok(Book {
            id: self.id.parse().map_err(|_| corrupt("id"))?,
            title: Title::parse(&self.title).map_err(|_| corrupt("title"))?,
            author: Author::parse(&self.author).map_err(|_| corrupt("author"))?,
            isbn: Isbn::parse(&self.isbn).map_err(|_| corrupt("isbn"))?,
            published_date: self.published_date,
            price: Price::from_cents(self.price_cents).map_err(|_| corrupt("price"))?,
            owner: self
                .owner
                .parse::<AccountId>()
                .map_err(|_| corrupt("owner"))?,
            version: Version::new(self.version),
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

#[cfg(test)]
mod tests;
