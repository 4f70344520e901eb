//! The store contracts, each check against a fresh PostgreSQL database.

use waiter_ports::catalog::BookStore;
use waiter_ports::conversations::ConversationStore;
use waiter_ports::idempotency::IdempotencyStore;
use waiter_ports::identity::{AccountStore, SessionStore};
use waiter_postgres::TestDatabase;

/// Runs `check` on the account store of a fresh database.
async fn with_accounts(check: impl AsyncFnOnce(&dyn AccountStore)) {
    let Some(test) = TestDatabase::create().await else {
        return;
    };
    check(&test.database().accounts()).await;
    test.drop_database().await;
}

/// Runs `check` on the account and session stores of a fresh database.
async fn with_sessions(check: impl AsyncFnOnce(&dyn AccountStore, &dyn SessionStore)) {
    let Some(test) = TestDatabase::create().await else {
        return;
    };
    let database = test.database();
    check(&database.accounts(), &database.sessions()).await;
    test.drop_database().await;
}

/// Runs `check` on the account and book stores of a fresh database.
async fn with_books(check: impl AsyncFnOnce(&dyn AccountStore, &dyn BookStore)) {
    let Some(test) = TestDatabase::create().await else {
        return;
    };
    let database = test.database();
    check(&database.accounts(), &database.books()).await;
    test.drop_database().await;
}

/// Runs `check` on the account, book and idempotency-key stores of a fresh database.
async fn with_idempotency(
    check: impl AsyncFnOnce(&dyn AccountStore, &dyn BookStore, &dyn IdempotencyStore),
) {
    let Some(test) = TestDatabase::create().await else {
        return;
    };
    let database = test.database();
    check(
        &database.accounts(),
        &database.books(),
        &database.idempotency(),
    )
    .await;
    test.drop_database().await;
}

/// Runs `check` on the account and conversation stores of a fresh database.
async fn with_conversations(check: impl AsyncFnOnce(&dyn AccountStore, &dyn ConversationStore)) {
    let Some(test) = TestDatabase::create().await else {
        return;
    };
    let database = test.database();
    check(&database.accounts(), &database.conversations()).await;
    test.drop_database().await;
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
