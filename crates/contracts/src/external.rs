//! Finding the external services (PostgreSQL, Redis) that some tests need.
//!
//! Such tests are skipped with a loud message when the service is not
//! configured or reachable, and fail instead when `WAITER_REQUIRE_SERVICES=1`
//! (which CI sets), so a green CI run always means they ran.

/// The PostgreSQL server tests use: `WAITER_TEST_DATABASE_URL`, or the local default.
pub fn postgres_url() -> String {
    std::env::var("WAITER_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// The Redis server tests use: `WAITER_TEST_REDIS_URL`, or the local default.
pub fn redis_url() -> String {
    std::env::var("WAITER_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// True when tests must fail rather than skip without their services.
pub fn services_required() -> bool {
    std::env::var("WAITER_REQUIRE_SERVICES").is_ok_and(|value| value == "1")
}

/// Reports that `service` could not be reached: panics when services are
/// required, otherwise prints a loud skip notice. Returns `None` so a test
/// can `let Some(x) = … else { return };`.
pub fn unavailable<T>(service: &str, error: impl std::fmt::Display) -> Option<T> {
    if services_required() {
        panic!("{service} is required (WAITER_REQUIRE_SERVICES=1) but unreachable: {error}");
    }
    eprintln!(
        "\n*** SKIPPED: {service} is unreachable ({error}); set WAITER_REQUIRE_SERVICES=1 to make this a failure ***\n"
    );
    None
}
