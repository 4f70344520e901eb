//! The idempotency contract of the stores: a key is recorded by the store
//! that creates the resource, in the same transaction, and read back by the
//! [`IdempotencyStore`].
//!
//! Each check is a `pub async fn` taking an account store, a book store and
//! an idempotency store over one fresh database; an adapter's test file runs
//! every one of them as its own test with
//! [`idempotency_store_contract_tests!`](crate::idempotency_store_contract_tests).

use futures::future::join_all;
use time::Duration;
use waiter_domain::Timestamp;
use waiter_ports::catalog::{BookStore, InsertBookError};
use waiter_ports::idempotency::{
    Fingerprint, IdempotencyRecord, IdempotencyStore, KeyTaken, Remembered, StoredResponse,
};
use waiter_ports::identity::{AccountStore, InsertAccountError};

use crate::accounts::{insert_account, new_account, now};
use crate::books::{insert_book, new_book};

/// Generates one `#[tokio::test]` per idempotency check.
///
/// `$fixture` is an `async fn(check: impl AsyncFnOnce(&dyn AccountStore,
/// &dyn BookStore, &dyn IdempotencyStore))` that sets up fresh, empty stores
/// on one database, runs `check` and cleans up.
#[macro_export]
macro_rules! idempotency_store_contract_tests {
    ($fixture:path) => {
        $crate::__contract_tests!(idempotency, $fixture:
            a_key_recorded_with_a_book_replays_its_response,
            a_key_recorded_with_an_account_replays_its_response,
            a_recorded_key_refuses_another_record_and_its_resource,
            a_refused_resource_records_no_key,
            an_expired_key_is_recorded_anew,
            of_concurrent_records_of_one_key_exactly_one_commits,
            prune_forgets_only_what_expired,
        );
    };
}

/// A response exercising what must survive storage: several headers in a
/// significant order (one repeated), and a body that is not UTF-8.
fn created_response() -> StoredResponse {
    StoredResponse {
        status: 201,
        headers: vec![
            ("location".to_owned(), "/books/01JD3Y".to_owned()),
            ("etag".to_owned(), "\"1\"".to_owned()),
            ("link".to_owned(), "</books>; rel=\"collection\"".to_owned()),
            ("link".to_owned(), "</authors/7>; rel=\"author\"".to_owned()),
        ],
        body: vec![b'{', 0xff, 0xfe, 0x00, 0xc3, 0x28, b'}'],
    }
}

/// A record of `key` for a request told apart by `seed`, made at `at` and
/// kept for `ttl`.
fn record(key: &str, seed: u8, at: Timestamp, ttl: Duration) -> IdempotencyRecord {
    IdempotencyRecord {
        key: key.to_owned(),
        remembered: Remembered {
            fingerprint: Fingerprint([seed; 32]),
            response: StoredResponse {
                status: 201,
                headers: vec![("etag".to_owned(), format!("\"{seed}\""))],
                body: vec![seed],
            },
        },
        created_at: at,
        expires_at: at + ttl,
    }
}

async fn find(store: &dyn IdempotencyStore, key: &str, now: Timestamp) -> Option<Remembered> {
    store
        .find(key, now)
        .await
        .unwrap_or_else(|error| panic!("find {key:?} failed: {error:?}"))
}

/// A book inserted with a record: the key replays exactly what was recorded,
/// until it expires.
pub async fn a_key_recorded_with_a_book_replays_its_response(
    accounts: &dyn AccountStore,
    books: &dyn BookStore,
    keys: &dyn IdempotencyStore,
) {
    let owner = insert_account(accounts).await;
    let at = now();
    let mut remember = record("account:a|k", 1, at, Duration::hours(24));
    remember.remembered.response = created_response();
    let book = new_book(owner.id);
    let inserted = books
        .insert(book.clone(), Some(remember.clone()))
        .await
        .expect("a book with a new key is inserted");
    assert_eq!(inserted, book.book());
    assert_eq!(
        find(keys, "account:a|k", at).await,
        Some(remember.remembered.clone())
    );
    assert_eq!(
        find(
            keys,
            "account:a|k",
            remember.expires_at - Duration::microseconds(1)
        )
        .await,
        Some(remember.remembered),
        "kept until it expires"
    );
    assert_eq!(find(keys, "account:a|k", remember.expires_at).await, None);
    assert_eq!(find(keys, "account:a|other", at).await, None);
}

/// The same for an account: any creating store can record a key.
pub async fn a_key_recorded_with_an_account_replays_its_response(
    accounts: &dyn AccountStore,
    _books: &dyn BookStore,
    keys: &dyn IdempotencyStore,
) {
    let at = now();
    let remember = record("client:127.0.0.1|k", 2, at, Duration::hours(24));
    let account = new_account();
    let inserted = accounts
        .insert(account.clone(), Some(remember.clone()))
        .await
        .expect("an account with a new key is inserted");
    assert_eq!(inserted, account.account());
    assert_eq!(
        find(keys, "client:127.0.0.1|k", at).await,
        Some(remember.remembered)
    );
}

/// A key holding a live record refuses another, and the resource that came
/// with it is not stored.
pub async fn a_recorded_key_refuses_another_record_and_its_resource(
    accounts: &dyn AccountStore,
    books: &dyn BookStore,
    keys: &dyn IdempotencyStore,
) {
    let owner = insert_account(accounts).await;
    let at = now();
    let first = record("account:a|k", 1, at, Duration::hours(24));
    books
        .insert(new_book(owner.id), Some(first.clone()))
        .await
        .expect("first insert");

    let refused = new_book(owner.id);
    let later = record(
        "account:a|k",
        2,
        at + Duration::seconds(1),
        Duration::hours(24),
    );
    let result = books.insert(refused.clone(), Some(later.clone())).await;
    assert!(
        matches!(result, Err(InsertBookError::KeyTaken(KeyTaken))),
        "{result:?}"
    );
    assert_eq!(books.find(refused.id).await.expect("find"), None);

    let account = new_account();
    let result = accounts.insert(account.clone(), Some(later)).await;
    assert!(
        matches!(result, Err(InsertAccountError::KeyTaken(KeyTaken))),
        "{result:?}"
    );
    assert_eq!(accounts.find(account.id).await.expect("find"), None);
    assert_eq!(
        find(keys, "account:a|k", at).await,
        Some(first.remembered),
        "the first record stands"
    );
}

/// A resource the store refuses (a taken ISBN or email) leaves no record:
/// the key stays free for a retry.
pub async fn a_refused_resource_records_no_key(
    accounts: &dyn AccountStore,
    books: &dyn BookStore,
    keys: &dyn IdempotencyStore,
) {
    let owner = insert_account(accounts).await;
    let taken = insert_book(books, new_book(owner.id)).await;
    let mut twin = new_book(owner.id);
    twin.draft.isbn = taken.isbn;
    let at = now();
    let result = books
        .insert(
            twin,
            Some(record("account:a|book", 1, at, Duration::hours(1))),
        )
        .await;
    assert!(
        matches!(result, Err(InsertBookError::IsbnTaken)),
        "{result:?}"
    );
    assert_eq!(find(keys, "account:a|book", at).await, None);

    let mut same_email = new_account();
    same_email.email = owner.email;
    let result = accounts
        .insert(
            same_email,
            Some(record("client:x|account", 2, at, Duration::hours(1))),
        )
        .await;
    assert!(
        matches!(result, Err(InsertAccountError::EmailTaken)),
        "{result:?}"
    );
    assert_eq!(find(keys, "client:x|account", at).await, None);
}

/// Once a record has expired, its key takes a new one.
pub async fn an_expired_key_is_recorded_anew(
    accounts: &dyn AccountStore,
    books: &dyn BookStore,
    keys: &dyn IdempotencyStore,
) {
    let owner = insert_account(accounts).await;
    let at = now();
    let first = record("account:a|k", 1, at, Duration::seconds(10));
    insert_with(books, owner.id, first.clone())
        .await
        .expect("first");

    let just_before = record(
        "account:a|k",
        2,
        first.expires_at - Duration::microseconds(1),
        Duration::hours(1),
    );
    let result = insert_with(books, owner.id, just_before).await;
    assert!(
        matches!(result, Err(InsertBookError::KeyTaken(_))),
        "{result:?}"
    );

    let after = record("account:a|k", 3, first.expires_at, Duration::hours(1));
    insert_with(books, owner.id, after.clone())
        .await
        .expect("an expired key is free");
    assert_eq!(
        find(keys, "account:a|k", after.created_at).await,
        Some(after.remembered)
    );
}

async fn insert_with(
    books: &dyn BookStore,
    owner: waiter_domain::AccountId,
    remember: IdempotencyRecord,
) -> Result<waiter_domain::Book, InsertBookError> {
    books.insert(new_book(owner), Some(remember)).await
}

/// Requests racing with one key (on several instances): exactly one
/// commits its book and record; every other is refused with `KeyTaken`
/// and leaves nothing behind.
pub async fn of_concurrent_records_of_one_key_exactly_one_commits(
    accounts: &dyn AccountStore,
    books: &dyn BookStore,
    keys: &dyn IdempotencyStore,
) {
    let owner = insert_account(accounts).await;
    let at = now();
    let attempts: Vec<_> = (1..=8u8)
        .map(|seed| {
            (
                new_book(owner.id),
                record("account:a|race", seed, at, Duration::hours(1)),
            )
        })
        .collect();
    let results = join_all(
        attempts
            .iter()
            .map(|(book, remember)| books.insert(book.clone(), Some(remember.clone()))),
    )
    .await;
    let winners: Vec<usize> = results
        .iter()
        .enumerate()
        .filter_map(|(i, result)| result.is_ok().then_some(i))
        .collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    for (i, result) in results.iter().enumerate() {
        if i != winners[0] {
            assert!(
                matches!(result, Err(InsertBookError::KeyTaken(_))),
                "{result:?}"
            );
            let lost = &attempts[i].0;
            assert_eq!(books.find(lost.id).await.expect("find"), None);
        }
    }
    assert_eq!(
        find(keys, "account:a|race", at).await,
        Some(attempts[winners[0]].1.remembered.clone())
    );
}

/// Pruning deletes the records that expired and keeps the others.
pub async fn prune_forgets_only_what_expired(
    accounts: &dyn AccountStore,
    books: &dyn BookStore,
    keys: &dyn IdempotencyStore,
) {
    let owner = insert_account(accounts).await;
    let at = now();
    let short = record("account:a|short", 1, at, Duration::seconds(1));
    let long = record("account:a|long", 2, at, Duration::hours(1));
    insert_with(books, owner.id, short).await.expect("short");
    insert_with(books, owner.id, long.clone())
        .await
        .expect("long");

    keys.prune(at + Duration::seconds(1)).await.expect("prune");
    // Asked about a time before either expired, only what survived answers.
    assert_eq!(find(keys, "account:a|short", at).await, None);
    assert_eq!(
        find(keys, "account:a|long", at).await,
        Some(long.remembered)
    );
}
