//! The [`AccountStore`] contract, run against every adapter that implements it.
//!
//! Each check is a `pub async fn` taking a store over an empty database; an
//! adapter's test file runs every one of them as its own test with
//! [`account_store_contract_tests!`](crate::account_store_contract_tests).
//! Checks create their own accounts with fresh ids and emails and never
//! depend on what else a database holds.

use std::collections::HashSet;

use ulid::Ulid;
use waiter_domain::{
    Account, AccountId, DisplayName, Email, PasswordHash, Role, Timestamp, Version,
};
use waiter_ports::identity::{
    AccountChanges, AccountPage, AccountStore, InsertAccountError, NewAccountRecord,
    UpdateAccountError,
};

/// Generates one `#[tokio::test]` per account store check.
///
/// `$fixture` is an `async fn(check: impl AsyncFnOnce(&dyn AccountStore))`
/// that sets up a fresh store, runs `check` on it and cleans up.
#[macro_export]
macro_rules! account_store_contract_tests {
    ($fixture:path) => {
        $crate::__contract_tests!(accounts, $fixture:
            insert_then_find_round_trips,
            timestamps_are_kept_to_the_microsecond,
            a_taken_email_cannot_be_inserted,
            of_two_concurrent_inserts_with_one_email_exactly_one_wins,
            credentials_are_found_by_email_and_by_id,
            update_changes_each_field_and_bumps_the_version,
            update_with_the_expected_version_applies,
            update_with_a_stale_version_reports_the_current_one,
            update_of_a_missing_account_is_not_found,
            update_to_a_taken_email_fails_and_changes_nothing,
            delete_removes_the_account,
            list_pages_in_id_order_without_gaps_or_duplicates,
        );
    };
}

/// The current time, cut to whole microseconds: the precision stores keep.
pub fn now() -> Timestamp {
    truncate_to_micros(Timestamp::now_utc())
}

/// `at` without its sub-microsecond part.
pub fn truncate_to_micros(at: Timestamp) -> Timestamp {
    at.replace_nanosecond(at.nanosecond() / 1_000 * 1_000)
        .expect("a whole number of microseconds is a valid nanosecond value")
}

/// A new account with a fresh id and email, created at `now()`.
pub fn new_account() -> NewAccountRecord {
    NewAccountRecord {
        id: AccountId::from_ulid(Ulid::generate()),
        email: fresh_email(),
        display_name: DisplayName::parse("Ann Lee").expect("valid display name"),
        role: Role::Member,
        password_hash: PasswordHash::new("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"),
        created_at: now(),
    }
}

/// Inserts a new account, failing the test if the store refuses it.
pub async fn insert_account(store: &dyn AccountStore) -> Account {
    store
        .insert(new_account(), None)
        .await
        .expect("inserting a new account succeeds")
}

/// An email no other check uses.
fn fresh_email() -> Email {
    Email::parse(&format!("{}@example.com", Ulid::generate())).expect("valid email")
}

/// An inserted account comes back exactly as stored, from `insert` and from `find`.
pub async fn insert_then_find_round_trips(store: &dyn AccountStore) {
    let record = NewAccountRecord {
        role: Role::Admin,
        ..new_account()
    };
    let inserted = store.insert(record.clone(), None).await.expect("insert");
    assert_eq!(inserted, record.account());
    assert_eq!(store.find(record.id).await.expect("find"), Some(inserted));

    let missing = AccountId::from_ulid(Ulid::generate());
    assert_eq!(store.find(missing).await.expect("find missing"), None);
}

/// Timestamps are cut to whole microseconds, identically on the way in and out.
pub async fn timestamps_are_kept_to_the_microsecond(store: &dyn AccountStore) {
    let precise = now()
        .replace_nanosecond(123_456_789)
        .expect("valid nanosecond");
    let record = NewAccountRecord {
        created_at: precise,
        ..new_account()
    };
    let inserted = store.insert(record.clone(), None).await.expect("insert");
    assert_eq!(inserted.created_at, truncate_to_micros(precise));
    assert_eq!(inserted.updated_at, inserted.created_at);
    assert_eq!(store.find(record.id).await.expect("find"), Some(inserted));
}

/// A second account with the same email is refused and the first is untouched.
pub async fn a_taken_email_cannot_be_inserted(store: &dyn AccountStore) {
    let first = insert_account(store).await;
    let second = NewAccountRecord {
        email: first.email.clone(),
        ..new_account()
    };
    let result = store.insert(second.clone(), None).await;
    assert!(
        matches!(result, Err(InsertAccountError::EmailTaken)),
        "expected EmailTaken, got {result:?}"
    );
    assert_eq!(store.find(second.id).await.expect("find"), None);
    assert_eq!(store.find(first.id).await.expect("find"), Some(first));
}

/// Racing inserts with one email: one succeeds, the other is `EmailTaken`.
pub async fn of_two_concurrent_inserts_with_one_email_exactly_one_wins(store: &dyn AccountStore) {
    let email = fresh_email();
    let first = NewAccountRecord {
        email: email.clone(),
        ..new_account()
    };
    let second = NewAccountRecord {
        email,
        ..new_account()
    };
    let (a, b) = tokio::join!(store.insert(first, None), store.insert(second, None));
    let taken = [&a, &b]
        .iter()
        .filter(|result| matches!(result, Err(InsertAccountError::EmailTaken)))
        .count();
    assert!(
        a.is_ok() != b.is_ok() && taken == 1,
        "expected one success and one EmailTaken, got {a:?} and {b:?}"
    );
}

/// Credentials carry the account and its hash, by email and by id.
pub async fn credentials_are_found_by_email_and_by_id(store: &dyn AccountStore) {
    let record = new_account();
    let account = store.insert(record.clone(), None).await.expect("insert");

    let by_email = store
        .find_credentials_by_email(&record.email)
        .await
        .expect("find by email")
        .expect("account found by email");
    assert_eq!(by_email.account, account);
    assert_eq!(by_email.password_hash, record.password_hash);

    let by_id = store
        .find_credentials(record.id)
        .await
        .expect("find by id")
        .expect("account found by id");
    assert_eq!(by_id.account, account);
    assert_eq!(by_id.password_hash, record.password_hash);

    let by_unknown_email = store.find_credentials_by_email(&fresh_email()).await;
    assert!(by_unknown_email.expect("find by email").is_none());
    let by_unknown_id = store
        .find_credentials(AccountId::from_ulid(Ulid::generate()))
        .await;
    assert!(by_unknown_id.expect("find by id").is_none());
}

/// Each field can change alone; every update bumps the version by one and
/// stamps `updated_at`, leaving `created_at` alone.
pub async fn update_changes_each_field_and_bumps_the_version(store: &dyn AccountStore) {
    let original = insert_account(store).await;
    let hash = PasswordHash::new("$argon2id$v=19$m=19456,t=2,p=1$bmV3$bmV3");
    let unchanged = AccountChanges::at(original.created_at);
    let steps = [
        AccountChanges {
            email: Some(fresh_email()),
            ..unchanged.clone()
        },
        AccountChanges {
            display_name: Some(DisplayName::parse("Bea Ng").expect("valid display name")),
            ..unchanged.clone()
        },
        AccountChanges {
            role: Some(Role::Admin),
            ..unchanged.clone()
        },
        AccountChanges {
            password_hash: Some(hash.clone()),
            ..unchanged.clone()
        },
        // An empty change still counts as a change.
        unchanged,
    ];

    let mut expected = original.clone();
    for (seconds, changes) in (1..).zip(steps) {
        let changes = AccountChanges {
            updated_at: original.created_at + time::Duration::seconds(seconds),
            ..changes
        };
        expected.email = changes.email.clone().unwrap_or(expected.email);
        expected.display_name = changes
            .display_name
            .clone()
            .unwrap_or(expected.display_name);
        expected.role = changes.role.unwrap_or(expected.role);
        expected.version = expected.version.next();
        expected.updated_at = changes.updated_at;
        let updated = store.update(original.id, changes).await.expect("update");
        assert_eq!(updated, expected);
    }

    assert_eq!(expected.version, Version::new(Version::INITIAL.get() + 5));
    assert_eq!(
        store.find(original.id).await.expect("find"),
        Some(expected.clone())
    );
    let credentials = store
        .find_credentials_by_email(&expected.email)
        .await
        .expect("find by the new email")
        .expect("the new email finds the account");
    assert_eq!(credentials.password_hash, hash);
    let by_old_email = store
        .find_credentials_by_email(&original.email)
        .await
        .expect("find by the old email");
    assert!(
        by_old_email.is_none(),
        "the old email no longer finds the account"
    );
}

/// An update conditional on the current version applies.
pub async fn update_with_the_expected_version_applies(store: &dyn AccountStore) {
    let account = insert_account(store).await;
    let changes = AccountChanges {
        role: Some(Role::Admin),
        expected_version: Some(account.version),
        ..AccountChanges::at(now())
    };
    let updated = store.update(account.id, changes).await.expect("update");
    assert_eq!(updated.role, Role::Admin);
    assert_eq!(updated.version, account.version.next());
}

/// An update conditional on an old version is refused, names the stored
/// version and changes nothing.
pub async fn update_with_a_stale_version_reports_the_current_one(store: &dyn AccountStore) {
    let account = insert_account(store).await;
    let current = store
        .update(account.id, AccountChanges::at(now()))
        .await
        .expect("first update");
    let stale = AccountChanges {
        role: Some(Role::Admin),
        expected_version: Some(account.version),
        ..AccountChanges::at(now())
    };
    let result = store.update(account.id, stale).await;
    assert!(
        matches!(result, Err(UpdateAccountError::VersionMismatch { current: v }) if v == current.version),
        "expected VersionMismatch at {:?}, got {result:?}",
        current.version
    );
    assert_eq!(store.find(account.id).await.expect("find"), Some(current));
}

/// Updating an account that does not exist is `NotFound`, with or without a version.
pub async fn update_of_a_missing_account_is_not_found(store: &dyn AccountStore) {
    let missing = AccountId::from_ulid(Ulid::generate());
    for expected_version in [None, Some(Version::INITIAL)] {
        let changes = AccountChanges {
            role: Some(Role::Admin),
            expected_version,
            ..AccountChanges::at(now())
        };
        let result = store.update(missing, changes).await;
        assert!(
            matches!(result, Err(UpdateAccountError::NotFound)),
            "expected NotFound, got {result:?}"
        );
    }
}

/// Taking another account's email is `EmailTaken`, and the update is not applied.
pub async fn update_to_a_taken_email_fails_and_changes_nothing(store: &dyn AccountStore) {
    let first = insert_account(store).await;
    let second = insert_account(store).await;
    let changes = AccountChanges {
        email: Some(first.email.clone()),
        display_name: Some(DisplayName::parse("Changed").expect("valid display name")),
        ..AccountChanges::at(now())
    };
    let result = store.update(second.id, changes).await;
    assert!(
        matches!(result, Err(UpdateAccountError::EmailTaken)),
        "expected EmailTaken, got {result:?}"
    );
    assert_eq!(store.find(second.id).await.expect("find"), Some(second));
}

/// Deleting reports whether there was an account, and the account is gone.
pub async fn delete_removes_the_account(store: &dyn AccountStore) {
    let account = insert_account(store).await;
    assert!(store.delete(account.id).await.expect("delete"));
    assert_eq!(store.find(account.id).await.expect("find"), None);
    assert!(!store.delete(account.id).await.expect("delete again"));
    // The email is free again.
    let reused = NewAccountRecord {
        email: account.email,
        ..new_account()
    };
    store
        .insert(reused, None)
        .await
        .expect("insert with the freed email");
}

/// Following `after` page by page visits every account once, in id order.
pub async fn list_pages_in_id_order_without_gaps_or_duplicates(store: &dyn AccountStore) {
    let mut ours = Vec::new();
    for _ in 0..7 {
        ours.push(insert_account(store).await);
    }
    ours.sort_by_key(|account| account.id);

    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list(AccountPage { after, limit: 3 })
            .await
            .expect("list");
        assert!(page.len() <= 3, "a page holds at most `limit` accounts");
        assert!(
            page.windows(2).all(|pair| pair[0].id < pair[1].id),
            "a page is in ascending id order"
        );
        let Some(last) = page.last() else { break };
        if let Some(after) = after {
            assert!(page[0].id > after, "a page starts after `after`");
        }
        after = Some(last.id);
        seen.extend(page);
    }
    let ids: HashSet<AccountId> = ours.iter().map(|account| account.id).collect();
    seen.retain(|account| ids.contains(&account.id));
    assert_eq!(seen, ours);

    let empty = store
        .list(AccountPage {
            after: None,
            limit: 0,
        })
        .await
        .expect("list");
    assert!(empty.is_empty(), "a zero limit gives an empty page");
}
