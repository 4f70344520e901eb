//! The [`BookStore`] contract, run against every adapter that implements it.
//!
//! Each check is a `pub async fn` taking an account store and a book store
//! over the same empty database (books belong to accounts); an adapter's
//! test file runs every one of them as its own test with
//! [`book_store_contract_tests!`](crate::book_store_contract_tests).
//! Unlike the account checks, list checks compare whole lists, so the
//! database must start empty.
//!
//! [`sort_order`] and [`matches`] are the reference for what a list holds
//! and in which order; the checks compare stores against them and, for the
//! cases that are easy to get wrong, against lists written out by hand.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

use time::Duration;
use time::macros::date;
use ulid::Ulid;
use waiter_domain::{
    AccountId, Author, Book, BookDraft, BookId, Date, Isbn, Price, Timestamp, Title, Version,
};
use waiter_ports::catalog::{
    BookCursor, BookFilter, BookQuery, BookSort, BookSortKey, BookStore, InsertBookError,
    NewBookRecord, WriteBookError,
};
use waiter_ports::identity::AccountStore;

use crate::accounts::{insert_account, now};

/// Generates one `#[tokio::test]` per book store check.
///
/// `$fixture` is an
/// `async fn(check: impl AsyncFnOnce(&dyn AccountStore, &dyn BookStore))`
/// that sets up fresh, empty stores on one database, runs `check` and cleans up.
#[macro_export]
macro_rules! book_store_contract_tests {
    ($fixture:path) => {
        $crate::__contract_tests!(books, $fixture:
            insert_then_find_round_trips,
            a_taken_isbn_cannot_be_inserted,
            of_two_concurrent_inserts_with_one_isbn_exactly_one_wins,
            update_replaces_the_fields_and_bumps_the_version,
            update_with_a_stale_version_reports_the_current_one,
            update_of_a_missing_book_is_not_found,
            update_to_a_taken_isbn_fails_and_changes_nothing,
            delete_honours_the_expected_version,
            filters_select_books_alone_and_combined,
            every_sort_orders_ties_by_id,
            pages_concatenate_to_the_whole_sorted_list,
            pages_stay_consistent_when_books_are_inserted_between_them,
            recent_lists_the_latest_published_first,
            bulk_insert_skips_taken_isbns_and_counts_the_rest,
            bulk_insert_stores_everything_and_keeps_the_constraints,
            deleting_an_account_deletes_its_books,
        );
    };
}

/// Every sort key in both directions.
pub const ALL_SORTS: [BookSort; 8] = {
    const fn sort(key: BookSortKey, descending: bool) -> BookSort {
        BookSort { key, descending }
    }
    [
        sort(BookSortKey::PublishedDate, false),
        sort(BookSortKey::PublishedDate, true),
        sort(BookSortKey::Title, false),
        sort(BookSortKey::Title, true),
        sort(BookSortKey::Price, false),
        sort(BookSortKey::Price, true),
        sort(BookSortKey::CreatedAt, false),
        sort(BookSortKey::CreatedAt, true),
    ]
};

/// The order of `a` and `b` in a list sorted by `sort`: the key (titles by
/// code point), then the id, both in `sort`'s direction.
pub fn sort_order(sort: BookSort, a: &Book, b: &Book) -> Ordering {
    let by_key = match sort.key {
        BookSortKey::PublishedDate => a.published_date.cmp(&b.published_date),
        BookSortKey::Title => a.title.as_str().cmp(b.title.as_str()),
        BookSortKey::Price => a.price.cmp(&b.price),
        BookSortKey::CreatedAt => a.created_at.cmp(&b.created_at),
    };
    let order = by_key.then(a.id.cmp(&b.id));
    if sort.descending {
        order.reverse()
    } else {
        order
    }
}

/// True when `book` belongs in a list filtered by `filter`. Case is ignored
/// as [`str::to_lowercase`] ignores it, for every script, not just ASCII.
pub fn matches(filter: &BookFilter, book: &Book) -> bool {
    let title = book.title.as_str().to_lowercase();
    let author = book.author.as_str().to_lowercase();
    filter
        .author
        .as_ref()
        .is_none_or(|wanted| wanted.to_lowercase() == author)
        && filter.q.as_ref().is_none_or(|q| {
            let q = q.to_lowercase();
            title.contains(&q) || author.contains(&q)
        })
        && filter
            .published_after
            .is_none_or(|after| book.published_date > after)
        && filter
            .published_before
            .is_none_or(|before| book.published_date < before)
}

/// A valid ISBN-13 made from `n`: `978`, the last nine digits of `n`, and
/// the check digit. Distinct below one billion.
pub fn isbn(n: u64) -> Isbn {
    let first_twelve = format!("978{:09}", n % 1_000_000_000);
    let sum: u32 = first_twelve
        .chars()
        .filter_map(|c| c.to_digit(10))
        .zip([1, 3].into_iter().cycle())
        .map(|(digit, weight)| digit * weight)
        .sum();
    let check = (10 - sum % 10) % 10;
    Isbn::parse(&format!("{first_twelve}{check}")).expect("a valid ISBN-13")
}

/// An ISBN no other book in this process has.
pub fn fresh_isbn() -> Isbn {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    isbn(NEXT.fetch_add(1, AtomicOrdering::Relaxed))
}

/// A draft with these fields and a fresh ISBN.
pub fn draft(title: &str, author: &str, published_date: Date, cents: i64) -> BookDraft {
    BookDraft {
        title: Title::parse(title).expect("valid title"),
        author: Author::parse(author).expect("valid author"),
        isbn: fresh_isbn(),
        published_date,
        price: Price::from_cents(cents).expect("valid price"),
    }
}

/// A new book of `owner` with a fresh id, created at `created_at`.
pub fn record_of(owner: AccountId, draft: BookDraft, created_at: Timestamp) -> NewBookRecord {
    NewBookRecord {
        id: BookId::from_ulid(Ulid::generate()),
        draft,
        owner,
        created_at,
    }
}

/// A new book of `owner` with a fresh id and ISBN, created at `now()`.
pub fn new_book(owner: AccountId) -> NewBookRecord {
    let draft = draft("Dune", "Frank Herbert", date!(1965 - 08 - 01), 999);
    record_of(owner, draft, now())
}

/// Inserts `record`, failing the test if the store refuses it.
pub async fn insert_book(books: &dyn BookStore, record: NewBookRecord) -> Book {
    books
        .insert(record, None)
        .await
        .expect("inserting a new book succeeds")
}

/// A query for the first `limit` books matching `filter`, in `sort` order.
fn first_page(filter: BookFilter, sort: BookSort, limit: u32) -> BookQuery {
    BookQuery {
        filter,
        sort,
        after: None,
        limit,
    }
}

/// Every book matching `filter` in `sort` order, in one page.
async fn list_all(books: &dyn BookStore, filter: &BookFilter, sort: BookSort) -> Vec<Book> {
    books
        .list(first_page(filter.clone(), sort, 10_000))
        .await
        .expect("list")
}

/// `books` sorted by `sort`.
fn sorted(mut books: Vec<Book>, sort: BookSort) -> Vec<Book> {
    books.sort_by(|a, b| sort_order(sort, a, b));
    books
}

/// Follows the cursor page by page until an empty page, calling `between`
/// with the last book of each page before fetching the next; returns the
/// pages concatenated. Checks that no page exceeds `limit`.
async fn page_through(
    books: &dyn BookStore,
    filter: &BookFilter,
    sort: BookSort,
    limit: u32,
    mut between: impl AsyncFnMut(&Book),
) -> Vec<Book> {
    let mut seen: Vec<Book> = Vec::new();
    let mut after = None;
    loop {
        let query = BookQuery {
            filter: filter.clone(),
            sort,
            after: after.take(),
            limit,
        };
        let page = books.list(query).await.expect("list a page");
        assert!(
            page.len() <= limit as usize,
            "a page of {sort:?} holds at most {limit} books, got {}",
            page.len()
        );
        let Some(last) = page.last().cloned() else {
            return seen;
        };
        after = Some(BookCursor::after(&last, sort));
        seen.extend(page);
        between(&last).await;
    }
}

/// Asserts that no book appears twice in `books`.
fn assert_distinct(books: &[Book], context: &str) {
    let ids: HashSet<BookId> = books.iter().map(|book| book.id).collect();
    assert_eq!(ids.len(), books.len(), "duplicate books {context}");
}

/// Inserts forty books of one owner with deliberate ties in every sort key
/// (titles that differ only in case or accents, shared dates, prices and
/// creation instants), returning them as stored.
async fn insert_catalogue(accounts: &dyn AccountStore, books: &dyn BookStore) -> Vec<Book> {
    const TITLES: [&str; 9] = [
        "Dune",
        "dune",
        "Émile",
        "Zebra",
        "apple",
        "Apple",
        "Äpfel",
        "Ångström",
        "zebra",
    ];
    const AUTHORS: [&str; 4] = ["Leo Tolstoy", "Sun Tzu", "Émile Zola", "Frank Herbert"];
    const CENTS: [i64; 5] = [999, 1_999, 500, 999, 2_500];
    let owner = insert_account(accounts).await;
    let start = now();
    let mut catalogue = Vec::new();
    for i in 0..40_usize {
        let days = i64::try_from(i * 7 % 10).expect("small");
        let minutes = i64::try_from(i % 6).expect("small");
        let draft = draft(
            TITLES[i % TITLES.len()],
            AUTHORS[i % AUTHORS.len()],
            date!(2000 - 01 - 01) + Duration::days(days),
            CENTS[i % CENTS.len()],
        );
        let record = record_of(owner.id, draft, start - Duration::minutes(minutes));
        catalogue.push(insert_book(books, record).await);
    }
    catalogue
}

/// An inserted book comes back exactly as stored, from `insert` and `find`.
pub async fn insert_then_find_round_trips(accounts: &dyn AccountStore, books: &dyn BookStore) {
    let owner = insert_account(accounts).await;
    for record in [
        new_book(owner.id),
        record_of(
            owner.id,
            draft(
                "Ångström’s «Ödes» 📚",
                "Émile Zola",
                date!(1885 - 03 - 01),
                1,
            ),
            now() - Duration::days(400),
        ),
        record_of(
            owner.id,
            draft("A", "B", date!(1900 - 01 - 01), Price::MAX_CENTS),
            now(),
        ),
    ] {
        let inserted = books.insert(record.clone(), None).await.expect("insert");
        assert_eq!(inserted, record.book());
        assert_eq!(books.find(record.id).await.expect("find"), Some(inserted));
    }

    let missing = BookId::from_ulid(Ulid::generate());
    assert_eq!(books.find(missing).await.expect("find missing"), None);
}

/// A second book with the same ISBN is refused and the first is untouched.
pub async fn a_taken_isbn_cannot_be_inserted(accounts: &dyn AccountStore, books: &dyn BookStore) {
    let owner = insert_account(accounts).await;
    let first = insert_book(books, new_book(owner.id)).await;
    let mut second = new_book(owner.id);
    second.draft.isbn = first.isbn.clone();
    let result = books.insert(second.clone(), None).await;
    assert!(
        matches!(result, Err(InsertBookError::IsbnTaken)),
        "expected IsbnTaken, got {result:?}"
    );
    assert_eq!(books.find(second.id).await.expect("find"), None);
    assert_eq!(books.find(first.id).await.expect("find"), Some(first));
}

/// Racing inserts with one ISBN: one succeeds, the other is `IsbnTaken`.
pub async fn of_two_concurrent_inserts_with_one_isbn_exactly_one_wins(
    accounts: &dyn AccountStore,
    books: &dyn BookStore,
) {
    let owner = insert_account(accounts).await;
    let first = new_book(owner.id);
    let mut second = new_book(owner.id);
    second.draft.isbn = first.draft.isbn.clone();
    let (a, b) = tokio::join!(books.insert(first, None), books.insert(second, None));
    let taken = [&a, &b]
        .iter()
        .filter(|result| matches!(result, Err(InsertBookError::IsbnTaken)))
        .count();
    assert!(
        a.is_ok() != b.is_ok() && taken == 1,
        "expected one success and one IsbnTaken, got {a:?} and {b:?}"
    );
}

/// An update replaces every writable field, bumps the version by one and
/// stamps `updated_at`, leaving the id, owner and `created_at` alone; keeping
/// one's own ISBN is not a conflict.
pub async fn update_replaces_the_fields_and_bumps_the_version(
    accounts: &dyn AccountStore,
    books: &dyn BookStore,
) {
    let owner = insert_account(accounts).await;
    let original = insert_book(books, new_book(owner.id)).await;
    let replacement = draft(
        "Children of Dune",
        "F. Herbert",
        date!(1976 - 04 - 01),
        1_250,
    );
    let later = original.created_at + Duration::seconds(1);

    let updated = books
        .update(original.id, replacement.clone(), None, later)
        .await
        .expect("update");
    let expected = Book {
        title: replacement.title.clone(),
        author: replacement.author.clone(),
        isbn: replacement.isbn.clone(),
        published_date: replacement.published_date,
        price: replacement.price,
        version: original.version.next(),
        updated_at: later,
        ..original.clone()
    };
    assert_eq!(updated, expected);
    assert_eq!(
        books.find(original.id).await.expect("find"),
        Some(expected.clone())
    );

    let same_isbn = BookDraft {
        price: Price::from_cents(1_300).expect("valid price"),
        ..replacement
    };
    let even_later = later + Duration::seconds(1);
    let again = books
        .update(original.id, same_isbn, Some(expected.version), even_later)
        .await
        .expect("update with the expected version");
    assert_eq!(again.version, expected.version.next());
    assert_eq!(again.price.cents(), 1_300);
    assert_eq!(again.updated_at, even_later);
    assert_eq!(again.created_at, original.created_at);
}

/// An update conditional on an old version is refused, names the stored
/// version and changes nothing.
pub async fn update_with_a_stale_version_reports_the_current_one(
    accounts: &dyn AccountStore,
    books: &dyn BookStore,
) {
    let owner = insert_account(accounts).await;
    let book = insert_book(books, new_book(owner.id)).await;
    let current = books
        .update(book.id, book.draft(), None, now())
        .await
        .expect("first update");
    let stale = draft("Stale", "Writer", date!(2001 - 01 - 01), 100);
    let result = books
        .update(book.id, stale, Some(book.version), now())
        .await;
    assert!(
        matches!(result, Err(WriteBookError::VersionMismatch { current: v }) if v == current.version),
        "expected VersionMismatch at {:?}, got {result:?}",
        current.version
    );
    assert_eq!(books.find(book.id).await.expect("find"), Some(current));
}

/// Updating a book that does not exist is `NotFound`, with or without a version.
pub async fn update_of_a_missing_book_is_not_found(
    accounts: &dyn AccountStore,
    books: &dyn BookStore,
) {
    let owner = insert_account(accounts).await;
    let missing = new_book(owner.id);
    for expected_version in [None, Some(Version::INITIAL)] {
        let result = books
            .update(missing.id, missing.draft.clone(), expected_version, now())
            .await;
        assert!(
            matches!(result, Err(WriteBookError::NotFound)),
            "expected NotFound, got {result:?}"
        );
    }
}

/// Taking another book's ISBN is `IsbnTaken`, and the update is not applied.
pub async fn update_to_a_taken_isbn_fails_and_changes_nothing(
    accounts: &dyn AccountStore,
    books: &dyn BookStore,
) {
    let owner = insert_account(accounts).await;
    let first = insert_book(books, new_book(owner.id)).await;
    let second = insert_book(books, new_book(owner.id)).await;
    let taking = BookDraft {
        isbn: first.isbn.clone(),
        title: Title::parse("Changed").expect("valid title"),
        ..second.draft()
    };
    let result = books
        .update(second.id, taking, Some(second.version), now())
        .await;
    assert!(
        matches!(result, Err(WriteBookError::IsbnTaken)),
        "expected IsbnTaken, got {result:?}"
    );
    assert_eq!(books.find(second.id).await.expect("find"), Some(second));
}

/// Deleting with a stale version is refused and names the stored version;
/// with the current one, or none, it deletes; a missing book is `NotFound`;
/// a deleted book's ISBN is free again.
pub async fn delete_honours_the_expected_version(
    accounts: &dyn AccountStore,
    books: &dyn BookStore,
) {
    let owner = insert_account(accounts).await;
    let book = insert_book(books, new_book(owner.id)).await;
    let current = books
        .update(book.id, book.draft(), None, now())
        .await
        .expect("update");

    let stale = books.delete(book.id, Some(book.version)).await;
    assert!(
        matches!(stale, Err(WriteBookError::VersionMismatch { current: v }) if v == current.version),
        "expected VersionMismatch at {:?}, got {stale:?}",
        current.version
    );
    assert_eq!(
        books.find(book.id).await.expect("find"),
        Some(current.clone())
    );

    books
        .delete(book.id, Some(current.version))
        .await
        .expect("delete at the current version");
    assert_eq!(books.find(book.id).await.expect("find"), None);
    for expected_version in [None, Some(current.version)] {
        let again = books.delete(book.id, expected_version).await;
        assert!(
            matches!(again, Err(WriteBookError::NotFound)),
            "expected NotFound, got {again:?}"
        );
    }

    let unconditional = insert_book(books, new_book(owner.id)).await;
    books
        .delete(unconditional.id, None)
        .await
        .expect("delete without a version");
    assert_eq!(books.find(unconditional.id).await.expect("find"), None);

    let mut reused = new_book(owner.id);
    reused.draft.isbn = book.isbn;
    insert_book(books, reused).await;
}

/// Each filter alone and in combination: `author` is the whole author
/// ignoring case; `q` is a substring of the title or the author ignoring
/// case, in which `%`, `_` and `\` are plain characters; date bounds are strict.
pub async fn filters_select_books_alone_and_combined(
    accounts: &dyn AccountStore,
    books: &dyn BookStore,
) {
    let owner = insert_account(accounts).await;
    let shelf = [
        ("War and Peace", "Leo Tolstoy", date!(1869 - 01 - 01)),
        ("Anna Karenina", "Leo Tolstoy", date!(1878 - 01 - 01)),
        ("Memoirs", "Leo Tolstoy Jr.", date!(1920 - 06 - 01)),
        ("The Art of War", "Sun Tzu", date!(1910 - 01 - 01)),
        ("Germinal", "Émile Zola", date!(1885 - 03 - 01)),
        ("100% Pure", "Ann Percent", date!(2001 - 05 - 05)),
        ("1000 Years", "Ann Percent", date!(2001 - 05 - 05)),
        ("snake_case", "Bea Under", date!(2010 - 01 - 01)),
        ("One-Case Study", "Bea Under", date!(2011 - 01 - 01)),
        (r"C:\Path", "Dee Slash", date!(2012 - 01 - 01)),
        ("Pathfinder", "Dee Slash", date!(2013 - 01 - 01)),
    ];
    let mut all = Vec::new();
    for (title, author, published) in shelf {
        let record = record_of(owner.id, draft(title, author, published, 1_000), now());
        all.push(insert_book(books, record).await);
    }

    let by_author = |author: &str| BookFilter {
        author: Some(author.to_owned()),
        ..BookFilter::default()
    };
    let by_q = |q: &str| BookFilter {
        q: Some(q.to_owned()),
        ..BookFilter::default()
    };
    let cases: Vec<(BookFilter, Vec<&str>)> = vec![
        (
            BookFilter::default(),
            shelf.iter().map(|book| book.0).collect(),
        ),
        (
            by_author("leo tolstoy"),
            vec!["War and Peace", "Anna Karenina"],
        ),
        (
            by_author("LEO TOLSTOY"),
            vec!["War and Peace", "Anna Karenina"],
        ),
        (by_author("tolstoy"), vec![]),
        (by_author("ÉMILE ZOLA"), vec!["Germinal"]),
        (by_q("WAR"), vec!["War and Peace", "The Art of War"]),
        (
            by_q("tolst"),
            vec!["War and Peace", "Anna Karenina", "Memoirs"],
        ),
        (by_q("ÉMILE"), vec!["Germinal"]),
        (by_q("100%"), vec!["100% Pure"]),
        (by_q("%"), vec!["100% Pure"]),
        (by_q("e_c"), vec!["snake_case"]),
        (by_q("_"), vec!["snake_case"]),
        (by_q(r"\p"), vec![r"C:\Path"]),
        (by_q("no such words"), vec![]),
        (
            BookFilter {
                published_after: Some(date!(1878 - 01 - 01)),
                published_before: Some(date!(1910 - 01 - 01)),
                ..BookFilter::default()
            },
            vec!["Germinal"],
        ),
        (
            BookFilter {
                published_before: Some(date!(1878 - 01 - 01)),
                ..BookFilter::default()
            },
            vec!["War and Peace"],
        ),
        (
            BookFilter {
                published_after: Some(date!(2011 - 01 - 01)),
                ..BookFilter::default()
            },
            vec![r"C:\Path", "Pathfinder"],
        ),
        (
            BookFilter {
                q: Some("war".to_owned()),
                ..by_author("Leo Tolstoy")
            },
            vec!["War and Peace"],
        ),
        (
            BookFilter {
                published_after: Some(date!(1869 - 01 - 01)),
                ..by_author("leo TOLSTOY")
            },
            vec!["Anna Karenina"],
        ),
        (
            BookFilter {
                author: Some("ann percent".to_owned()),
                q: Some("100".to_owned()),
                published_after: Some(date!(2001 - 05 - 04)),
                published_before: Some(date!(2001 - 05 - 06)),
            },
            vec!["100% Pure", "1000 Years"],
        ),
    ];

    let sort = BookSort {
        key: BookSortKey::Title,
        descending: false,
    };
    for (filter, titles) in cases {
        let listed = list_all(books, &filter, sort).await;
        let mut expected_titles = titles;
        expected_titles.sort_unstable();
        let listed_titles: Vec<&str> = listed.iter().map(|book| book.title.as_str()).collect();
        assert_eq!(listed_titles, expected_titles, "titles for {filter:?}");
        let reference: Vec<Book> = all
            .iter()
            .filter(|book| matches(&filter, book))
            .cloned()
            .collect();
        assert_eq!(listed, sorted(reference, sort), "books for {filter:?}");
    }
}

/// Every sort key in both directions gives the reference order, ties
/// (equal titles, dates, prices and instants) broken by id in the same direction.
pub async fn every_sort_orders_ties_by_id(accounts: &dyn AccountStore, books: &dyn BookStore) {
    let catalogue = insert_catalogue(accounts, books).await;
    for sort in ALL_SORTS {
        let listed = list_all(books, &BookFilter::default(), sort).await;
        assert_eq!(listed, sorted(catalogue.clone(), sort), "order of {sort:?}");
    }
}

/// Paging through with any limit visits every book exactly once, in order:
/// the pages concatenate to the whole sorted list, filtered or not.
pub async fn pages_concatenate_to_the_whole_sorted_list(
    accounts: &dyn AccountStore,
    books: &dyn BookStore,
) {
    let catalogue = insert_catalogue(accounts, books).await;
    let one_author = BookFilter {
        author: Some("émile zola".to_owned()),
        ..BookFilter::default()
    };
    for sort in ALL_SORTS {
        let whole = sorted(catalogue.clone(), sort);
        for limit in 1..=7 {
            let pages = page_through(
                books,
                &BookFilter::default(),
                sort,
                limit,
                async |_: &Book| {},
            )
            .await;
            assert_eq!(pages, whole, "pages of {limit} in {sort:?}");
        }
        let filtered: Vec<Book> = whole
            .iter()
            .filter(|book| matches(&one_author, book))
            .cloned()
            .collect();
        let pages = page_through(books, &one_author, sort, 3, async |_: &Book| {}).await;
        assert_eq!(pages, filtered, "filtered pages in {sort:?}");
    }

    let empty = books
        .list(first_page(BookFilter::default(), ALL_SORTS[0], 0))
        .await
        .expect("list");
    assert!(empty.is_empty(), "a zero limit gives an empty page");
}

/// Books inserted between pages never make a page repeat or skip a book:
/// the concatenation is the original list plus exactly those new books
/// that sort after the cursor they were inserted behind, all in order.
pub async fn pages_stay_consistent_when_books_are_inserted_between_them(
    accounts: &dyn AccountStore,
    books: &dyn BookStore,
) {
    const TITLES: [&str; 6] = ["Aardvark", "dune", "Middle", "Émile", "Zebra", "apple"];
    insert_catalogue(accounts, books).await;
    let owner = insert_account(accounts).await;
    let start = now();
    for sort in ALL_SORTS {
        let original = list_all(books, &BookFilter::default(), sort).await;
        // Each new book with the cursor it was inserted behind.
        let mut inserted: Vec<(Book, Book)> = Vec::new();
        let pages = page_through(
            books,
            &BookFilter::default(),
            sort,
            4,
            async |last: &Book| {
                let n = inserted.len();
                if n >= 12 {
                    return;
                }
                // Spread the new books before and after every cursor position.
                let step = i64::try_from(n).expect("small") * 5 - 30;
                let draft = draft(
                    TITLES[n % TITLES.len()],
                    "New Author",
                    date!(2000 - 01 - 05) + Duration::days(step / 10),
                    1_300 + step * 40,
                );
                let record = record_of(owner.id, draft, start + Duration::minutes(step / 5));
                inserted.push((insert_book(books, record).await, last.clone()));
            },
        )
        .await;

        assert_distinct(&pages, &format!("in pages of {sort:?}"));
        for book in &original {
            let count = pages.iter().filter(|seen| seen.id == book.id).count();
            assert_eq!(count, 1, "{:?} appears once in {sort:?}", book.id);
        }
        let behind_cursor = inserted
            .into_iter()
            .filter(|(book, cursor)| sort_order(sort, book, cursor) == Ordering::Greater)
            .map(|(book, _)| book);
        let expected = sorted(original.into_iter().chain(behind_cursor).collect(), sort);
        assert_eq!(pages, expected, "pages of {sort:?} with inserts");
    }
}

/// `recent` is the most recently published books, latest first, ties by id descending.
pub async fn recent_lists_the_latest_published_first(
    accounts: &dyn AccountStore,
    books: &dyn BookStore,
) {
    let owner = insert_account(accounts).await;
    let mut all = Vec::new();
    for days in [3, 9, 1, 9, 7, 3, 9, 0] {
        let published = date!(2020 - 01 - 01) + Duration::days(days);
        let record = record_of(
            owner.id,
            draft("Recent", "R. Writer", published, 500),
            now(),
        );
        all.push(insert_book(books, record).await);
    }
    let mut expected = sorted(
        all,
        BookSort {
            key: BookSortKey::PublishedDate,
            descending: true,
        },
    );
    expected.truncate(5);
    assert_eq!(books.recent(5).await.expect("recent"), expected);
    assert!(books.recent(0).await.expect("recent").is_empty());
}

/// A bulk load stores every book whose ISBN is free, skipping those taken
/// before or earlier in the same load, and counts what it stored. Books
/// stored this way are exactly as if inserted one by one, loads larger than
/// any one statement's parameter limit included; an empty load stores nothing.
pub async fn bulk_insert_skips_taken_isbns_and_counts_the_rest(
    accounts: &dyn AccountStore,
    books: &dyn BookStore,
) {
    let owner = insert_account(accounts).await;
    let existing = insert_book(books, new_book(owner.id)).await;
    assert_eq!(
        books
            .bulk_insert(Box::new(std::iter::empty()))
            .await
            .expect("empty load"),
        0
    );

    let mut batch: Vec<NewBookRecord> = (0..10).map(|_| new_book(owner.id)).collect();
    batch[3].draft.isbn = existing.isbn.clone();
    batch[7].draft.isbn = batch[5].draft.isbn.clone();
    assert_eq!(
        books
            .bulk_insert(Box::new(batch.clone().into_iter()))
            .await
            .expect("load"),
        8
    );

    assert_eq!(
        books.find(existing.id).await.expect("find"),
        Some(existing.clone())
    );
    assert_eq!(books.find(batch[3].id).await.expect("find"), None);
    let twins = [
        books.find(batch[5].id).await.expect("find"),
        books.find(batch[7].id).await.expect("find"),
    ];
    assert_eq!(
        twins.iter().flatten().count(),
        1,
        "one of two books sharing an ISBN in a batch is stored"
    );
    for (index, record) in batch.iter().enumerate() {
        if ![3, 5, 7].contains(&index) {
            let found = books.find(record.id).await.expect("find");
            assert_eq!(found, Some(record.book()));
        }
    }

    let large: Vec<NewBookRecord> = (0..3_000).map(|_| new_book(owner.id)).collect();
    assert_eq!(
        books
            .bulk_insert(Box::new(large.clone().into_iter()))
            .await
            .expect("large load"),
        3_000
    );
    for record in [&large[0], &large[1_500], &large[2_999]] {
        let found = books.find(record.id).await.expect("find");
        assert_eq!(found, Some(record.book()));
    }
    let stored = list_all(books, &BookFilter::default(), ALL_SORTS[0]).await;
    assert_eq!(stored.len(), 1 + 8 + 3_000);
}

/// A bulk load stores every book whose ISBN is free, skipping those taken
/// before or earlier in the load, in more rows than one statement carries;
/// afterwards the books list in every sort, and the ISBN constraint still
/// holds for inserts and updates.
pub async fn bulk_insert_stores_everything_and_keeps_the_constraints(
    accounts: &dyn AccountStore,
    books: &dyn BookStore,
) {
    let owner = insert_account(accounts).await;
    let existing = insert_book(books, new_book(owner.id)).await;
    assert_eq!(
        books
            .bulk_insert(Box::new(std::iter::empty()))
            .await
            .expect("empty load"),
        0
    );

    let mut load: Vec<NewBookRecord> = (0..12_500).map(|_| new_book(owner.id)).collect();
    load[3].draft.isbn = existing.isbn.clone();
    load[11_000].draft.isbn = load[5].draft.isbn.clone();
    let stored = books
        .bulk_insert(Box::new(load.clone().into_iter()))
        .await
        .expect("bulk load");
    assert_eq!(stored, 12_498);
    assert_eq!(books.find(load[3].id).await.expect("find"), None);
    assert_eq!(books.find(load[11_000].id).await.expect("find"), None);
    for record in [&load[0], &load[5], &load[10_000], &load[12_499]] {
        let found = books.find(record.id).await.expect("find");
        assert_eq!(found, Some(record.book()));
    }
    for sort in ALL_SORTS {
        let first = books
            .list(BookQuery {
                filter: BookFilter::default(),
                sort,
                after: None,
                limit: 3,
            })
            .await
            .expect("list");
        assert_eq!(first.len(), 3, "{sort:?}");
    }

    let mut twin = new_book(owner.id);
    twin.draft.isbn = load[12_499].draft.isbn.clone();
    assert!(matches!(
        books.insert(twin, None).await,
        Err(InsertBookError::IsbnTaken)
    ));
    assert!(matches!(
        books
            .update(existing.id, load[0].draft.clone(), None, now())
            .await,
        Err(WriteBookError::IsbnTaken)
    ));
}

/// Deleting an account deletes its books and no one else's.
pub async fn deleting_an_account_deletes_its_books(
    accounts: &dyn AccountStore,
    books: &dyn BookStore,
) {
    let leaving = insert_account(accounts).await;
    let staying = insert_account(accounts).await;
    let theirs = [
        insert_book(books, new_book(leaving.id)).await,
        insert_book(books, new_book(leaving.id)).await,
    ];
    let kept = insert_book(books, new_book(staying.id)).await;

    assert!(accounts.delete(leaving.id).await.expect("delete account"));
    for book in &theirs {
        assert_eq!(books.find(book.id).await.expect("find"), None);
    }
    assert_eq!(books.find(kept.id).await.expect("find"), Some(kept.clone()));
    let listed = list_all(books, &BookFilter::default(), ALL_SORTS[0]).await;
    assert_eq!(listed, [kept]);
}
