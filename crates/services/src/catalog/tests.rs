//! Catalog rules: permissions, conditional writes and cache-aside reads,
//! over a mocked store and an in-memory fake cache.

use std::sync::Mutex;

use mockall::predicate::eq;
use time::macros::{date, datetime};
use waiter_domain::Role;
use waiter_ports::catalog::MockBookStore;

use super::*;
use crate::ManualClock;
use crate::cache_aside::tests::FakeCache;

const OWNER: u128 = 1;
const STRANGER: u128 = 2;

fn caller(account: u128, role: Role) -> Caller {
    Caller {
        account_id: AccountId::from_ulid(ulid::Ulid::from(account)),
        session_id: waiter_domain::SessionId::from_ulid(ulid::Ulid::from(9_u128)),
        role,
    }
}

fn book(version: i64, title: &str) -> Book {
    Book {
        id: BookId::from_ulid(ulid::Ulid::from(77_u128)),
        title: Title::parse(title).unwrap(),
        author: Author::parse("Frank Herbert").unwrap(),
        isbn: Isbn::parse("9780441172719").unwrap(),
        published_date: date!(1965 - 08 - 01),
        price: "9.99".parse().unwrap(),
        owner: AccountId::from_ulid(ulid::Ulid::from(OWNER)),
        version: Version::new(version),
        created_at: datetime!(2026-11-01 12:00 UTC),
        updated_at: datetime!(2026-11-01 12:00 UTC),
    }
}

fn service(store: MockBookStore) -> CatalogService {
    CatalogService::new(
        Arc::new(store),
        Arc::new(FakeCache::default()),
        Arc::new(ManualClock::new(datetime!(2026-11-21 12:00 UTC))),
    )
}

#[tokio::test]
async fn reads_are_served_from_the_cache_after_the_first() {
    let mut store = MockBookStore::new();
    store
        .expect_find()
        .times(1)
        .returning(|_| Ok(Some(book(1, "Dune"))));
    let catalog = service(store);
    let id = book(1, "Dune").id;
    assert_eq!(catalog.get_book(id).await.unwrap(), book(1, "Dune"));
    assert_eq!(catalog.get_book(id).await.unwrap(), book(1, "Dune"));
}

#[tokio::test]
async fn a_write_makes_the_next_read_see_the_new_book() {
    let mut store = MockBookStore::new();
    let stored = Arc::new(Mutex::new(book(1, "Dune")));
    let found = stored.clone();
    store
        .expect_find()
        .returning(move |_| Ok(Some(found.lock().unwrap().clone())));
    let written = stored.clone();
    store
        .expect_update()
        .times(1)
        .returning(move |_, draft, expected, _| {
            assert_eq!(expected, Some(Version::new(1)));
            let mut book = written.lock().unwrap();
            book.title = draft.title;
            book.version = book.version.next();
            Ok(book.clone())
        });
    let catalog = service(store);
    let id = book(1, "Dune").id;
    assert_eq!(catalog.get_book(id).await.unwrap().title.as_str(), "Dune");
    let patch = BookPatch {
        title: Some(Title::parse("Dune Messiah").unwrap()),
        ..BookPatch::default()
    };
    catalog
        .update_book(
            caller(OWNER, Role::Member),
            id,
            patch,
            Some(Version::new(1)),
        )
        .await
        .unwrap();
    let read = catalog.get_book(id).await.unwrap();
    assert_eq!(
        (read.title.as_str(), read.version),
        ("Dune Messiah", Version::new(2))
    );
}

#[tokio::test]
async fn only_the_owner_or_an_admin_may_write() {
    let mut store = MockBookStore::new();
    store.expect_find().returning(|_| Ok(Some(book(1, "Dune"))));
    store
        .expect_delete()
        .with(eq(book(1, "Dune").id), eq(None))
        .times(2)
        .returning(|_, _| Ok(()));
    let catalog = service(store);
    let id = book(1, "Dune").id;
    let err = catalog
        .delete_book(caller(STRANGER, Role::Member), id, None)
        .await
        .unwrap_err();
    assert!(matches!(err, CatalogError::Forbidden));
    catalog
        .delete_book(caller(OWNER, Role::Member), id, None)
        .await
        .unwrap();
    catalog
        .delete_book(caller(STRANGER, Role::Admin), id, None)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_stale_if_match_fails_before_any_write() {
    let mut store = MockBookStore::new();
    store.expect_find().returning(|_| Ok(Some(book(3, "Dune"))));
    store.expect_update().never();
    let catalog = service(store);
    let patch = BookPatch {
        title: Some(Title::parse("Other").unwrap()),
        ..BookPatch::default()
    };
    let err = catalog
        .update_book(
            caller(OWNER, Role::Member),
            book(3, "Dune").id,
            patch,
            Some(Version::new(2)),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, CatalogError::VersionMismatch { current } if current == Version::new(3)));
}

#[tokio::test]
async fn a_patch_without_if_match_retries_a_lost_race_then_gives_up() {
    let mut store = MockBookStore::new();
    store.expect_find().returning(|_| Ok(Some(book(1, "Dune"))));
    store
        .expect_update()
        .times(PATCH_ATTEMPTS)
        .returning(|_, _, _, _| {
            Err(WriteBookError::VersionMismatch {
                current: Version::new(2),
            })
        });
    let catalog = service(store);
    let err = catalog
        .update_book(
            caller(OWNER, Role::Member),
            book(1, "Dune").id,
            BookPatch::default(),
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, CatalogError::VersionMismatch { .. }));
}

#[tokio::test]
async fn books_cannot_be_published_in_the_future() {
    let mut store = MockBookStore::new();
    store.expect_insert().never();
    let catalog = service(store);
    let mut draft = book(1, "Dune").draft();
    draft.published_date = date!(2026 - 11 - 22);
    let err = catalog
        .create_book(caller(OWNER, Role::Member), draft, None)
        .await
        .unwrap_err();
    assert!(matches!(err, CatalogError::Invalid(_)));
}

/// A keyed create has the store record, with the book, the response
/// rendered from exactly the book the store is asked to insert.
#[tokio::test]
async fn a_keyed_book_is_stored_with_the_response_it_renders() {
    use waiter_ports::catalog::InsertBookError;
    use waiter_ports::idempotency::{Fingerprint, KeyTaken, KeyedRequest, StoredResponse};
    let keyed = || {
        let at = Timestamp::UNIX_EPOCH;
        KeyedRequest::new("account:1|k".to_owned(), Fingerprint([7; 32]), at, at, ()).rendering(
            Box::new(|book: &Book| {
                Ok(StoredResponse {
                    status: 201,
                    headers: Vec::new(),
                    body: book.id.to_string().into_bytes(),
                })
            }),
        )
    };
    let mut store = MockBookStore::new();
    let mut outcomes = vec![Err(InsertBookError::KeyTaken(KeyTaken))].into_iter();
    store
        .expect_insert()
        .times(2)
        .withf(|record, remember| {
            remember.as_ref().is_some_and(|remember| {
                remember.key == "account:1|k"
                    && remember.remembered.response.body == record.id.to_string().as_bytes()
            })
        })
        .returning(move |record, _| outcomes.next().unwrap_or_else(|| Ok(record.book())));
    let catalog = service(store);
    let draft = book(1, "Dune").draft();
    let err = catalog
        .create_book(caller(OWNER, Role::Member), draft.clone(), Some(keyed()))
        .await
        .unwrap_err();
    assert!(matches!(err, CatalogError::KeyTaken(_)), "{err:?}");
    let created = catalog
        .create_book(caller(OWNER, Role::Member), draft, Some(keyed()))
        .await
        .unwrap();
    assert_eq!(created.owner, caller(OWNER, Role::Member).account_id);
}

#[tokio::test]
async fn recent_books_are_cached_until_a_write() {
    let mut store = MockBookStore::new();
    store
        .expect_recent()
        .with(eq(RECENT_COUNT))
        .times(2)
        .returning(|_| Ok(vec![book(1, "Dune")]));
    store.expect_insert().times(1).returning(|record, _| {
        let mut created = book(1, "New");
        created.id = record.id;
        Ok(created)
    });
    let catalog = service(store);
    assert_eq!(catalog.list_recent_books().await.unwrap().len(), 1);
    assert_eq!(catalog.list_recent_books().await.unwrap().len(), 1);
    let mut draft = book(1, "New").draft();
    draft.isbn = Isbn::parse("9780306406157").unwrap();
    catalog
        .create_book(caller(OWNER, Role::Member), draft, None)
        .await
        .unwrap();
    assert_eq!(catalog.list_recent_books().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_deleted_owner_takes_every_cached_book_along() {
    let mut store = MockBookStore::new();
    let mut found = vec![Some(book(1, "Dune")), None].into_iter();
    store
        .expect_find()
        .times(2)
        .returning(move |_| Ok(found.next().unwrap()));
    let catalog = service(store);
    let id = book(1, "Dune").id;
    assert!(catalog.get_book(id).await.is_ok());
    assert!(catalog.get_book(id).await.is_ok(), "cached");
    catalog
        .account_deleted(AccountId::from_ulid(ulid::Ulid::from(OWNER)))
        .await
        .unwrap();
    assert!(matches!(
        catalog.get_book(id).await,
        Err(CatalogError::NotFound)
    ));
}

#[tokio::test]
async fn imported_books_show_at_once_in_every_cached_view() {
    let mut store = MockBookStore::new();
    let mut recent = vec![
        vec![book(1, "Dune")],
        vec![book(1, "Imported"), book(1, "Dune")],
    ]
    .into_iter();
    store
        .expect_recent()
        .times(2)
        .returning(move |_| Ok(recent.next().unwrap()));
    store
        .expect_find()
        .times(2)
        .returning(|_| Ok(Some(book(1, "Dune"))));
    store
        .expect_bulk_insert()
        .times(1)
        .returning(|records| Ok(records.count() as u64));
    let catalog = service(store);
    let id = book(1, "Dune").id;
    assert_eq!(catalog.list_recent_books().await.unwrap().len(), 1);
    assert!(catalog.get_book(id).await.is_ok());
    assert!(catalog.get_book(id).await.is_ok(), "cached");

    let owner = AccountId::from_ulid(ulid::Ulid::from(OWNER));
    let records = (0..2_u128).map(move |n| NewBookRecord {
        id: BookId::from_ulid(ulid::Ulid::from(100 + n)),
        draft: book(1, "Imported").draft(),
        owner,
        created_at: datetime!(2026-11-21 12:00 UTC),
    });
    assert_eq!(catalog.import_books(Box::new(records)).await.unwrap(), 2);

    assert_eq!(
        catalog.list_recent_books().await.unwrap().len(),
        2,
        "the recent list is read again"
    );
    assert!(catalog.get_book(id).await.is_ok(), "and so is every book");
}

#[tokio::test]
async fn a_failed_import_reports_the_store_failure() {
    let mut store = MockBookStore::new();
    store.expect_bulk_insert().times(1).returning(|_| {
        Err(PortError::Unavailable(anyhow::anyhow!(
            "the database went away"
        )))
    });
    let catalog = service(store);
    let err = catalog
        .import_books(Box::new(std::iter::empty()))
        .await
        .unwrap_err();
    assert!(matches!(err, CatalogError::Port(PortError::Unavailable(_))));
}
