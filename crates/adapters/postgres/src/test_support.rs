//! One fresh PostgreSQL database per test, cloned from a migrated template.
//!
//! Migrating takes a while; `CREATE DATABASE … TEMPLATE` takes milliseconds.
//! The template is built once per migration set: its name carries a digest
//! of the embedded migrations, so changing one builds a new template, and
//! concurrent test processes build it under an advisory lock. Only for tests.

use sqlx::{AssertSqlSafe, Connection, PgConnection};
use tokio::sync::OnceCell;
use waiter_contracts::external::{postgres_url, unavailable};

use crate::{MIGRATOR, PostgresDatabase};

/// The advisory lock key under which test processes build templates ("waiter" in ASCII).
const TEMPLATE_LOCK: i64 = 0x7761_6974_6572;

/// The template this process clones, built or found on first use.
static TEMPLATE: OnceCell<String> = OnceCell::const_new();

/// A database of its own for one test, already migrated and empty.
///
/// Call [`TestDatabase::drop_database`] at the end of the test; if the test
/// panics first, dropping the value removes the database instead.
#[derive(Debug)]
pub struct TestDatabase {
    admin_url: String,
    name: String,
    url: String,
    database: PostgresDatabase,
    dropped: bool,
}

impl TestDatabase {
    /// Creates the database, or returns `None` (after a loud notice) when no
    /// PostgreSQL server is reachable and services are not required.
    ///
    /// # Panics
    /// When the server is reachable but the database cannot be set up.
    pub async fn create() -> Option<TestDatabase> {
        let admin_url = postgres_url();
        let mut admin = match PgConnection::connect(&admin_url).await {
            Ok(admin) => admin,
            Err(error) => return unavailable("PostgreSQL", error),
        };
        let template = TEMPLATE
            .get_or_try_init(|| build_template(&admin_url))
            .await
            .unwrap_or_else(|error| panic!("cannot build the test template database: {error:#}"));

        let name = format!("t_{}", uuid::Uuid::now_v7().simple());
        let create = format!("CREATE DATABASE {name} TEMPLATE {template}");
        sqlx::query(AssertSqlSafe(create))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|error| panic!("cannot create test database {name}: {error}"));
        let _ = admin.close().await;

        let url = with_database(&admin_url, &name);
        let database = PostgresDatabase::connect(&url)
            .await
            .unwrap_or_else(|error| panic!("cannot connect to test database {name}: {error}"));
        Some(TestDatabase {
            admin_url,
            name,
            url,
            database,
            dropped: false,
        })
    }

    /// The database's URL, for code that connects by itself (such as the server).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database, connected and migrated.
    pub fn database(&self) -> &PostgresDatabase {
        &self.database
    }

    /// Closes the connections and drops the database.
    pub async fn drop_database(mut self) {
        self.database.close().await;
        if let Err(error) = drop_database(&self.admin_url, &self.name).await {
            eprintln!(
                "warning: could not drop test database {}: {error}",
                self.name
            );
        }
        self.dropped = true;
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        // Reached when a test panicked before `drop_database`. The test's
        // runtime may be unwinding, so a thread with a runtime of its own
        // does the dropping.
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let dropper = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(drop_database(&admin_url, &name))?;
            anyhow::Ok(())
        });
        if !matches!(dropper.join(), Ok(Ok(()))) {
            eprintln!("warning: could not drop test database {}", self.name);
        }
    }
}

/// Drops `name`, disconnecting anyone still connected to it.
async fn drop_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    let mut admin = PgConnection::connect(admin_url).await?;
    let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
    sqlx::query(AssertSqlSafe(drop)).execute(&mut admin).await?;
    admin.close().await?;
    Ok(())
}

/// Finds or builds the template for the embedded migrations, returning its name.
///
/// The template is migrated under a temporary name and renamed when
/// complete, so a process killed half-way never leaves a broken template.
async fn build_template(admin_url: &str) -> anyhow::Result<String> {
    let name = template_name();
    let building = format!("{name}_building");
    let mut admin = PgConnection::connect(admin_url).await?;
    // Held until `admin` is closed, which also releases it if we fail.
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(TEMPLATE_LOCK)
        .execute(&mut admin)
        .await?;

    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await?;
    if !exists {
        for statement in [
            format!("DROP DATABASE IF EXISTS {building} WITH (FORCE)"),
            format!("CREATE DATABASE {building}"),
        ] {
            sqlx::query(AssertSqlSafe(statement))
                .execute(&mut admin)
                .await?;
        }
        let database = PostgresDatabase::connect(&with_database(admin_url, &building)).await?;
        database.migrate().await?;
        database.close().await;
        for statement in [
            format!("ALTER DATABASE {building} RENAME TO {name}"),
            format!("ALTER DATABASE {name} WITH IS_TEMPLATE true"),
        ] {
            sqlx::query(AssertSqlSafe(statement))
                .execute(&mut admin)
                .await?;
        }
    }
    admin.close().await?;
    Ok(name)
}

/// `waiter_template_` followed by a digest of every embedded migration.
fn template_name() -> String {
    use sha2::{Digest, Sha256};

    let mut digest = Sha256::new();
    for migration in MIGRATOR.iter() {
        digest.update(migration.version.to_be_bytes());
        digest.update(&migration.checksum);
    }
    let hex: String = digest.finalize()[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("waiter_template_{hex}")
}

/// `url` with its database name replaced by `name`, keeping any query string.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority = base.find("://").map_or(0, |scheme_end| scheme_end + 3);
    let path = base[authority..]
        .find('/')
        .map_or(base.len(), |slash| authority + slash);
    let mut url = format!("{}/{name}", &base[..path]);
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    url
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn the_database_name_is_replaced_and_the_query_kept() {
        let cases = [
            ("postgres://u@h:5432/postgres", "postgres://u@h:5432/t_1"),
            ("postgres://u@h:5432", "postgres://u@h:5432/t_1"),
            (
                "postgres://u@h/db?sslmode=disable",
                "postgres://u@h/t_1?sslmode=disable",
            ),
        ];
        for (url, expected) in cases {
            assert_eq!(with_database(url, "t_1"), expected);
        }
    }
}
