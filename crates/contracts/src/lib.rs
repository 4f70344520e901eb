//! Contract test suites for Waiter's outbound ports.
//!
//! Each suite is written once, against the port trait, and run by every
//! adapter crate's tests against its own implementation (PostgreSQL and
//! SQLite for the stores; Redis and in-process for the cache, the reply
//! event log and the reply leases). A behaviour the suites do not pin down
//! is not part of a port's contract.

pub mod accounts;
pub mod books;
pub mod cache;
pub mod conversations;
pub mod external;
pub mod fault;
pub mod idempotency;
pub mod rate_limiter;
pub mod reply_event_log;
pub mod reply_generator;
pub mod reply_leases;
pub mod sessions;

/// Generates one `#[tokio::test]` per check of the suite module `$suite`,
/// each running its check through `$fixture`: what every
/// `…_contract_tests!` macro expands to, so that a suite only lists its
/// checks.
#[doc(hidden)]
#[macro_export]
macro_rules! __contract_tests {
    ($suite:ident, $fixture:path: $($check:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $check() {
                $fixture($crate::$suite::$check).await;
            }
        )*
    };
}
