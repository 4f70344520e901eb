//! PostgreSQL-specific behaviour beyond the store contracts.

use sqlx::{Connection, PgConnection};
use waiter_contracts::accounts::insert_account;
use waiter_ports::PortError;
use waiter_ports::health::Probe;
use waiter_ports::identity::AccountStore;
use waiter_postgres::{PostgresDatabase, TestDatabase};

#[tokio::test]
async fn the_probe_answers_and_migrating_again_changes_nothing() {
    let Some(test) = TestDatabase::create().await else {
        return;
    };
    let database = test.database();
    assert_eq!(database.name(), "database");
    database.ping().await.expect("ping");
    database
        .migrate()
        .await
        .expect("migrations already applied are skipped");
    test.drop_database().await;
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable() {
    let result = PostgresDatabase::connect("postgres://postgres@127.0.0.1:1/waiter").await;
    assert!(
        matches!(result, Err(PortError::Unavailable(_))),
        "expected Unavailable, got {result:?}"
    );
}

#[tokio::test]
async fn a_corrupt_row_is_an_unexpected_error_not_a_panic() {
    let Some(test) = TestDatabase::create().await else {
        return;
    };
    let accounts = test.database().accounts();
    let account = insert_account(&accounts).await;

    let mut raw = PgConnection::connect(test.url()).await.expect("connect");
    sqlx::raw_sql(
        "ALTER TABLE accounts DROP CONSTRAINT accounts_role_check;
         UPDATE accounts SET role = 'root';",
    )
    .execute(&mut raw)
    .await
    .expect("corrupt the row");
    raw.close().await.expect("close");

    let result = accounts.find(account.id).await;
    assert!(
        matches!(result, Err(PortError::Unexpected(_))),
        "expected Unexpected, got {result:?}"
    );
    test.drop_database().await;
}

#[tokio::test]
async fn a_test_database_is_removed_even_without_drop_database() {
    let Some(test) = TestDatabase::create().await else {
        return;
    };
    let url = test.url().to_owned();
    drop(test);
    let result = PgConnection::connect(&url).await;
    assert!(result.is_err(), "the database still accepts connections");
}
