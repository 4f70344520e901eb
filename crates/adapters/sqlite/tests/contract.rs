//! The store contracts, each check against a fresh SQLite database file.
//!
//! Files rather than `:memory:`, so the pool has several connections and
//! the concurrency checks exercise SQLite's locking for real.

use std::path::PathBuf;

use waiter_ports::catalog::BookStore;
use waiter_ports::conversations::ConversationStore;
use waiter_ports::idempotency::IdempotencyStore;
use waiter_ports::identity::{AccountStore, SessionStore};
use waiter_sqlite::SqliteDatabase;

/// A migrated database in a directory of its own, removed by [`remove`].
async fn create() -> (SqliteDatabase, PathBuf) {
    let directory = std::env::temp_dir().join(format!("waiter-sqlite-{}", uuid::Uuid::new_v4()));
    let url = format!("sqlite://{}", directory.join("waiter.db").display());
    let database = SqliteDatabase::connect(&url).await.expect("connect");
    database.migrate().await.expect("migrate");
    (database, directory)
}

async fn remove(database: SqliteDatabase, directory: PathBuf) {
    database.close().await;
    std::fs::remove_dir_all(directory).expect("remove the test database");
}

/// Runs `check` on the account store of a fresh database.
async fn with_accounts(check: impl AsyncFnOnce(&dyn AccountStore)) {
    let (database, directory) = create().await;
    check(&database.accounts()).await;
    remove(database, directory).await;
}

/// Runs `check` on the account and session stores of a fresh database.
async fn with_sessions(check: impl AsyncFnOnce(&dyn AccountStore, &dyn SessionStore)) {
    let (database, directory) = create().await;
    check(&database.accounts(), &database.sessions()).await;
    remove(database, directory).await;
}

/// Runs `check` on the account and book stores of a fresh database.
async fn with_books(check: impl AsyncFnOnce(&dyn AccountStore, &dyn BookStore)) {
    let (database, directory) = create().await;
    check(&database.accounts(), &database.books()).await;
    remove(database, directory).await;
}

/// Runs `check` on the account, book and idempotency-key stores of a fresh database.
async fn with_idempotency(
    check: impl AsyncFnOnce(&dyn AccountStore, &dyn BookStore, &dyn IdempotencyStore),
) {
    let (database, directory) = create().await;
    check(
        &database.accounts(),
        &database.books(),
        &database.idempotency(),
    )
    .await;
    remove(database, directory).await;
}

/// Runs `check` on the account and conversation stores of a fresh database.
async fn with_conversations(check: impl AsyncFnOnce(&dyn AccountStore, &dyn ConversationStore)) {
    let (database, directory) = create().await;
    check(&database.accounts(), &database.conversations()).await;
    remove(database, directory).await;
}

mod accounts {
    waiter_contracts::account_store_contract_tests!(super::with_accounts);
}

mod sessions {
    waiter_contracts::session_store_contract_tests!(super::with_sessions);
}

mod books {
    waiter_contracts::book_store_contract_tests!(super::with_books);
}

mod idempotency {
    waiter_contracts::idempotency_store_contract_tests!(super::with_idempotency);
}

mod conversations {
    waiter_contracts::conversation_store_contract_tests!(super::with_conversations);
}
