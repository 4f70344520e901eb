//! SQLite-specific behaviour beyond the store contracts.

use sqlx::{Connection, SqliteConnection};
use std::time::Duration;

use waiter_contracts::accounts::{insert_account, new_account};
use waiter_contracts::{conversations, sessions};
use waiter_ports::PortError;
use waiter_ports::conversations::ConversationStore as _;
use waiter_ports::health::Probe;
use waiter_ports::identity::{AccountStore, InsertAccountError};
use waiter_sqlite::SqliteDatabase;

/// A directory of its own under the temp directory (not yet created).
fn scratch_directory() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("waiter-sqlite-{}", uuid::Uuid::new_v4()))
}

#[tokio::test]
async fn connect_creates_the_file_and_its_directory_in_wal_mode() {
    let directory = scratch_directory().join("nested");
    let file = directory.join("waiter.db");
    let database = SqliteDatabase::connect(&format!("sqlite://{}", file.display()))
        .await
        .expect("connect");
    database.migrate().await.expect("migrate");
    database
        .migrate()
        .await
        .expect("migrations already applied are skipped");
    assert_eq!(database.name(), "database");
    database.ping().await.expect("ping");
    database.close().await;
    assert!(file.exists());

    let mut raw = SqliteConnection::connect(&format!("sqlite://{}", file.display()))
        .await
        .expect("connect");
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut raw)
        .await
        .expect("journal mode");
    assert_eq!(mode, "wal");
    raw.close().await.expect("close");
    std::fs::remove_dir_all(directory.parent().expect("parent")).expect("clean up");
}

#[tokio::test]
async fn an_in_memory_database_keeps_its_data_and_honours_the_contract() {
    let database = SqliteDatabase::connect("sqlite::memory:")
        .await
        .expect("connect");
    database.migrate().await.expect("migrate");
    let accounts = database.accounts();
    let account = insert_account(&accounts).await;
    assert_eq!(
        accounts.find(account.id).await.expect("find"),
        Some(account)
    );
    sessions::of_twenty_concurrent_rotations_of_one_token_exactly_one_wins(
        &accounts,
        &database.sessions(),
    )
    .await;
}

/// Writes run on the database's own runtime: one whose caller stops
/// waiting for it (a client gone, a timeout) still ends, committed, rather
/// than being cut off where its caller left it.
#[tokio::test]
async fn a_write_whose_caller_stops_waiting_still_commits() {
    let database = SqliteDatabase::connect("sqlite::memory:")
        .await
        .expect("connect");
    database.migrate().await.expect("migrate");
    let accounts = database.accounts();
    let account = new_account();
    let id = account.id;
    // Polled once, which starts the write, and then dropped.
    let _ = tokio::time::timeout(Duration::ZERO, accounts.insert(account, None)).await;
    for _ in 0..200 {
        if accounts.find(id).await.expect("find").is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the write was dropped with its caller");
}

/// Refused appends read the message already sent after abandoning their
/// transaction; on the one connection of an in-memory database that read
/// must wait for the abandoned transaction's connection, not for itself.
#[tokio::test]
async fn an_in_memory_database_refuses_appends_without_waiting_on_itself() {
    let database = SqliteDatabase::connect("sqlite::memory:")
        .await
        .expect("connect");
    database.migrate().await.expect("migrate");
    let (accounts, store) = (database.accounts(), database.conversations());
    conversations::a_resent_message_id_is_already_sent(&accounts, &store).await;
    conversations::a_reused_retry_key_is_already_sent(&accounts, &store).await;
    conversations::of_concurrent_appends_exactly_one_starts_a_reply(&accounts, &store).await;
    conversations::a_full_conversation_refuses_more_messages(&accounts, &store).await;
}

#[tokio::test]
async fn an_unopenable_file_is_an_error_not_a_panic() {
    let directory = scratch_directory();
    std::fs::create_dir_all(&directory).expect("create directory");
    // The path is a directory, which SQLite cannot open as a database.
    let result = SqliteDatabase::connect(&format!("sqlite://{}", directory.display())).await;
    assert!(result.is_err(), "expected an error, got {result:?}");
    std::fs::remove_dir_all(directory).expect("clean up");
}

#[tokio::test]
async fn a_corrupt_row_is_an_unexpected_error_not_a_panic() {
    let directory = scratch_directory();
    let url = format!("sqlite://{}", directory.join("waiter.db").display());
    let database = SqliteDatabase::connect(&url).await.expect("connect");
    database.migrate().await.expect("migrate");
    let accounts = database.accounts();
    let account = insert_account(&accounts).await;

    let mut raw = SqliteConnection::connect(&url).await.expect("connect");
    sqlx::raw_sql("PRAGMA ignore_check_constraints = ON; UPDATE accounts SET role = 'root';")
        .execute(&mut raw)
        .await
        .expect("corrupt the row");
    raw.close().await.expect("close");

    let result = accounts.find(account.id).await;
    assert!(
        matches!(result, Err(PortError::Unexpected(_))),
        "expected Unexpected, got {result:?}"
    );
    database.close().await;
    std::fs::remove_dir_all(directory).expect("clean up");
}

#[tokio::test]
async fn corrupt_message_metadata_is_an_unexpected_error_not_a_panic() {
    let directory = scratch_directory();
    let url = format!("sqlite://{}", directory.join("waiter.db").display());
    let database = SqliteDatabase::connect(&url).await.expect("connect");
    database.migrate().await.expect("migrate");
    let store = database.conversations();
    let owner = insert_account(&database.accounts()).await;
    let conversation =
        conversations::insert_conversation(&store, conversations::new_conversation(owner.id)).await;
    store
        .append_exchange(conversations::exchange(
            conversation.id,
            conversation.created_at,
        ))
        .await
        .expect("append");

    let mut raw = SqliteConnection::connect(&url).await.expect("connect");
    sqlx::query("UPDATE messages SET metadata = '{\"usage\": 3}'")
        .execute(&mut raw)
        .await
        .expect("corrupt the row");
    raw.close().await.expect("close");

    let result = store.messages(conversation.id).await;
    assert!(
        matches!(result, Err(PortError::Unexpected(_))),
        "expected Unexpected, got {result:?}"
    );
    database.close().await;
    std::fs::remove_dir_all(directory).expect("clean up");
}

#[tokio::test]
async fn a_file_that_cannot_be_written_is_unavailable_not_a_bug() {
    let directory = scratch_directory();
    let file = directory.join("waiter.db");
    let database = SqliteDatabase::connect(&format!("sqlite://{}", file.display()))
        .await
        .expect("connect");
    database.migrate().await.expect("migrate");
    database.close().await;

    // Read-only, as a file on a disk remounted read-only or full behaves:
    // SQLite answers every write with a storage error.
    let read_only = SqliteDatabase::connect(&format!("sqlite://{}?mode=ro", file.display()))
        .await
        .expect("connect read-only");
    let err = read_only
        .accounts()
        .insert(new_account(), None)
        .await
        .expect_err("a read-only file takes no writes");
    assert!(
        matches!(err, InsertAccountError::Port(PortError::Unavailable(_))),
        "a storage failure is worth retrying later, not a 500: {err:?}"
    );
    read_only.close().await;
    std::fs::remove_dir_all(directory).expect("remove the test database");
}
