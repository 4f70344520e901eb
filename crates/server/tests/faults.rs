//! Faults caused for real against the real `waiter` binary: restarts
//! (graceful and `kill -9`), a Redis that loses its keys or stops answering,
//! a PostgreSQL cut off by a proxy, and a SQLite file whose write lock
//! another process holds. What must hold is ARCHITECTURE.md's
//! "Failure modes": nothing revoked comes back, nothing acknowledged is done
//! twice or lost, and dependencies failing turn into prompt 503s that end by
//! themselves.
//!
//! Each test runs its own server process with its own data directory,
//! database and Redis key prefix; the shared PostgreSQL and Redis are never
//! stopped (outages happen in a proxy in front of them).

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::header::{ETAG, LOCATION};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, SqliteConnection};
use waiter_contracts::fault::Link;

mod process;

use process::{PASSWORD, Server, Setup};

impl Server {
    async fn create_book(&self, token: &str, key: &str, isbn: &str) -> Response {
        self.book_request(token, key, isbn).send().await.unwrap()
    }

    /// `POST /books` with an idempotency key, not yet sent.
    fn book_request(&self, token: &str, key: &str, isbn: &str) -> RequestBuilder {
        self.request(Method::POST, "/books")
            .bearer_auth(token)
            .header("idempotency-key", key)
            .json(&json!({
                "title": format!("Book {key}"),
                "author": "Fault Tester",
                "isbn": isbn,
                "published_date": "2020-01-01",
                "price": "10.00",
            }))
    }
}

/// A response as a client sees it, to compare a replay with the original.
#[derive(Debug, PartialEq)]
struct Seen {
    status: StatusCode,
    location: Option<String>,
    etag: Option<String>,
    body: Value,
}

async fn seen(response: Response) -> (Seen, bool) {
    let header = |name| {
        response
            .headers()
            .get(name)
            .map(|value: &reqwest::header::HeaderValue| value.to_str().unwrap().to_owned())
    };
    let replayed = header("idempotent-replayed").is_some_and(|value| value == "true");
    let (location, etag) = (header(LOCATION.as_str()), header(ETAG.as_str()));
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    (
        Seen {
            status,
            location,
            etag,
            body,
        },
        replayed,
    )
}

/// Every valid ISBN-13 with this 12-digit stem: the check digit computed.
fn isbn(n: u64) -> String {
    let stem = format!("978{:09}", n);
    let sum: u32 = stem
        .chars()
        .enumerate()
        .map(|(i, c)| c.to_digit(10).unwrap() * if i % 2 == 0 { 1 } else { 3 })
        .sum();
    format!("{stem}{}", (10 - sum % 10) % 10)
}

/// Asserts `response` is the answer to a dependency being down: 503
/// problem+json with `Retry-After`.
fn assert_unavailable(response: &Response, what: &str) {
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{what}");
    assert!(
        response.headers().contains_key("retry-after"),
        "{what}: no Retry-After"
    );
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json",
        "{what}"
    );
}

/// Takes the embedded database's write lock from outside the server and
/// keeps it until the connection is dropped or rolls back: what the
/// `sqlite3` shell does during an operator's `BEGIN EXCLUSIVE`, a `VACUUM`,
/// or a second process pointed at the same data directory. In WAL mode
/// `EXCLUSIVE` is only the write lock: readers go on, writers wait.
async fn hold_write_lock(data_dir: &Path) -> SqliteConnection {
    let options = SqliteConnectOptions::new().filename(data_dir.join("waiter.db"));
    let mut holder = SqliteConnection::connect_with(&options).await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut holder)
        .await
        .unwrap();
    holder
}

/// Ends sessions in every way the API offers and returns their (now dead)
/// access tokens, plus a token that must stay alive.
async fn revoke_in_every_way(server: &Server, tag: &str) -> (Vec<(&'static str, String)>, String) {
    let email = |who: &str| format!("{who}-{tag}@example.com");
    let mut dead = Vec::new();

    server.sign_up(&email("signout")).await;
    let session = server.sign_in(&email("signout")).await;
    let response = server
        .send(
            server
                .request(Method::DELETE, "/sessions/me")
                .bearer_auth(&session.token),
        )
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    dead.push(("sign-out", session.token));

    server.sign_up(&email("everywhere")).await;
    let (a, b) = (
        server.sign_in(&email("everywhere")).await,
        server.sign_in(&email("everywhere")).await,
    );
    let response = server
        .send(
            server
                .request(Method::DELETE, "/sessions")
                .bearer_auth(&b.token),
        )
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    dead.push(("sign-out everywhere (other session)", a.token));
    dead.push(("sign-out everywhere (own session)", b.token));

    server.sign_up(&email("one")).await;
    let (a, b) = (
        server.sign_in(&email("one")).await,
        server.sign_in(&email("one")).await,
    );
    let response = server
        .send(
            server
                .request(Method::DELETE, &format!("/sessions/{}", a.id))
                .bearer_auth(&b.token),
        )
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    dead.push(("revoking one session", a.token));

    server.sign_up(&email("password")).await;
    let (a, b) = (
        server.sign_in(&email("password")).await,
        server.sign_in(&email("password")).await,
    );
    let response = server
        .send(
            server
                .request(Method::PATCH, "/accounts/me")
                .bearer_auth(&b.token)
                .json(&json!({"password": "a brand new password", "current_password": PASSWORD})),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    dead.push(("password change", a.token));

    let promoted = server.sign_up(&email("role")).await;
    let promoted_session = server.sign_in(&email("role")).await;
    let admin = server.sign_in(&format!("admin-{tag}@example.com")).await;
    let response = server
        .send(
            server
                .request(
                    Method::PATCH,
                    &format!("/accounts/{}", promoted["id"].as_str().unwrap()),
                )
                .bearer_auth(&admin.token)
                .json(&json!({"role": "admin"})),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    dead.push(("role change", promoted_session.token));

    server.sign_up(&email("deleted")).await;
    let (a, b) = (
        server.sign_in(&email("deleted")).await,
        server.sign_in(&email("deleted")).await,
    );
    let response = server
        .send(
            server
                .request(Method::DELETE, "/accounts/me")
                .bearer_auth(&b.token),
        )
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    dead.push(("account deletion", a.token));

    server.sign_up(&email("alive")).await;
    let alive = server.sign_in(&email("alive")).await.token;
    (dead, alive)
}

async fn assert_revoked(server: &Server, dead: &[(&str, String)], alive: &str, after: &str) {
    for (how, token) in dead {
        assert_eq!(
            server.me(token).await,
            StatusCode::UNAUTHORIZED,
            "a token ended by {how} came back after {after}"
        );
    }
    assert_eq!(
        server.me(alive).await,
        StatusCode::OK,
        "a live token died after {after}"
    );
}

async fn revocation_survives_restarts_and_cache_loss(setup: &Setup) {
    let tag = ulid::Ulid::generate().to_string().to_lowercase();
    setup.create_admin(&format!("admin-{tag}@example.com"));
    let server = setup.start().await;
    let (dead, alive) = revoke_in_every_way(&server, &tag).await;
    assert_revoked(&server, &dead, &alive, "nothing").await;

    server.stop();
    let server = setup.start().await;
    assert_revoked(&server, &dead, &alive, "a graceful restart").await;

    server.kill();
    let server = setup.start().await;
    assert_revoked(&server, &dead, &alive, "kill -9").await;

    if let Some(redis) = &setup.redis {
        redis.clear_prefix().await.unwrap();
        assert_revoked(&server, &dead, &alive, "Redis lost every key").await;
    }
}

async fn idempotent_creations_survive_kill_and_cache_loss(setup: &Setup) {
    let server = setup.start().await;
    let email = format!("keys-{}@example.com", ulid::Ulid::generate());
    server.sign_up(&email).await;
    let token = server.sign_in(&email).await.token;
    let key = ulid::Ulid::generate().to_string();
    let (first, replayed) = seen(server.create_book(&token, &key, &isbn(1)).await).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert!(!replayed);

    server.kill();
    let server = setup.start().await;
    let (again, replayed) = seen(server.create_book(&token, &key, &isbn(1)).await).await;
    assert_eq!(
        again, first,
        "the retry after kill -9 replays the first response"
    );
    assert!(replayed);

    if let Some(redis) = &setup.redis {
        redis.clear_prefix().await.unwrap();
        let (again, replayed) = seen(server.create_book(&token, &key, &isbn(1)).await).await;
        assert_eq!(
            again, first,
            "the retry after Redis lost its keys replays too"
        );
        assert!(replayed);
    }

    let (other, _) = seen(server.create_book(&token, &key, &isbn(2)).await).await;
    assert_eq!(
        other.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "the key with another body"
    );
}

/// Keyed creations in flight when the server is killed: after a restart,
/// each key's retry creates its book once (or replays the acknowledged
/// response), so there is exactly one book per key, and a second retry
/// replays the first retry's answer.
async fn keyed_writes_cut_short_by_kill(setup: &Setup) {
    const WRITES: u64 = 40;
    let server = setup.start().await;
    let email = format!("cut-{}@example.com", ulid::Ulid::generate());
    server.sign_up(&email).await;
    let token = server.sign_in(&email).await.token;
    let keys: Vec<String> = (0..WRITES)
        .map(|_| ulid::Ulid::generate().to_string())
        .collect();
    let in_flight: Vec<_> = keys
        .iter()
        .zip(100..)
        .map(|(key, n)| tokio::spawn(server.book_request(&token, key, &isbn(n)).send()))
        .collect();
    // Long enough for some writes to be answered and some to be committed
    // unanswered, on this machine; the assertions hold whatever the split.
    tokio::time::sleep(Duration::from_millis(150)).await;
    server.kill();
    let mut acknowledged = Vec::new();
    for outcome in in_flight {
        acknowledged.push(match outcome.await.unwrap() {
            Ok(response) => Some(seen(response).await.0),
            Err(_) => None,
        });
    }

    let server = setup.start().await;
    let mut retried = Vec::new();
    for ((key, n), first) in keys.iter().zip(100..).zip(&acknowledged) {
        let (retry, replayed) = seen(server.create_book(&token, key, &isbn(n)).await).await;
        assert_eq!(retry.status, StatusCode::CREATED, "{key}: {retry:?}");
        if let Some(first) = first.as_ref().filter(|first| first.status.is_success()) {
            assert_eq!(&retry, first, "an acknowledged creation is replayed");
            assert!(replayed);
        }
        retried.push(retry);
    }
    for ((key, n), retry) in keys.iter().zip(100..).zip(&retried) {
        let (again, replayed) = seen(server.create_book(&token, key, &isbn(n)).await).await;
        assert_eq!(&again, retry, "{key}");
        assert!(replayed, "{key}");
    }
    let listed: Value = server
        .send(
            server
                .request(Method::GET, "/books?limit=100")
                .bearer_auth(&token),
        )
        .await
        .json()
        .await
        .unwrap();
    let titles: std::collections::BTreeSet<String> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|book| book["title"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed["items"].as_array().unwrap().len(), WRITES as usize);
    let expected = keys.iter().map(|key| format!("Book {key}")).collect();
    assert_eq!(titles, expected, "one book per key, no more");
    let done = acknowledged.iter().filter(|first| first.is_some()).count();
    eprintln!("{done} of {WRITES} keyed writes were answered before kill -9");
}

mod sqlite {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn revocation_survives_restarts() {
        let setup = Setup::sqlite();
        revocation_survives_restarts_and_cache_loss(&setup).await;
        setup.cleanup().await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn idempotent_creations_survive_kill() {
        let setup = Setup::sqlite();
        idempotent_creations_survive_kill_and_cache_loss(&setup).await;
        setup.cleanup().await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn keyed_writes_cut_short_by_kill_happen_once() {
        let setup = Setup::sqlite();
        keyed_writes_cut_short_by_kill(&setup).await;
        setup.cleanup().await;
    }

    /// A local file does not drop off the network, but another process can
    /// hold its write lock (see [`hold_write_lock`]). A write then waits for
    /// SQLite's busy timeout (under a second) and fails as 503, and the
    /// writes queued behind it fail at once; reads, which WAL lets past the
    /// lock, are served without waiting; once the lock is released writes
    /// succeed again at once, and a key whose write failed leaves no trace.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_write_lock_held_elsewhere_is_a_503_and_ends_by_itself() {
        /// `waiter-sqlite`'s busy timeout: how long a writer waits for the lock.
        const BUSY_TIMEOUT: Duration = Duration::from_millis(750);
        /// What a loaded machine may add to it.
        const MARGIN: Duration = Duration::from_secs(1);
        /// Concurrent writes while the lock is held: more than the pool's
        /// eight connections, which they must not take from readers.
        const WRITES: u64 = 12;
        let setup = Setup::sqlite();
        let server = setup.start().await;
        let email = format!("locked-{}@example.com", ulid::Ulid::generate());
        server.sign_up(&email).await;
        let token = server.sign_in(&email).await.token;
        let (book, _) = seen(server.create_book(&token, "before", &isbn(7)).await).await;
        let book_path = book.location.clone().unwrap().replace("/api/v1", "");
        let get_book = || server.request(Method::GET, &book_path);
        assert_eq!(server.send(get_book()).await.status(), StatusCode::OK);

        let mut holder = hold_write_lock(&setup.data_dir).await;
        let started = Instant::now();
        let response = server.create_book(&token, "during", &isbn(8)).await;
        let waited = started.elapsed();
        assert_unavailable(&response, "a write while another process holds the lock");
        assert!(waited < BUSY_TIMEOUT + MARGIN, "503 after {waited:?}");
        eprintln!("SQLite write lock held elsewhere: a write's 503 after {waited:?}");

        let started = Instant::now();
        assert_eq!(
            server.me(&token).await,
            StatusCode::OK,
            "reads pass the lock"
        );
        let read = started.elapsed();
        assert!(read < Duration::from_secs(1), "a read took {read:?}");
        assert_eq!(
            server.send(get_book()).await.status(),
            StatusCode::OK,
            "cached reads are served"
        );
        let probe = |path: &'static str| server.client.get(format!("{}{path}", server.base)).send();
        // Ready: reads are served. (The probe could not tell anyway: it pings
        // a connection, which on SQLite never touches the file.)
        assert_eq!(probe("/readyz").await.unwrap().status(), StatusCode::OK);
        assert_eq!(probe("/healthz").await.unwrap().status(), StatusCode::OK);

        // More waiting writers than connections: they queue in the server
        // without holding one, so a read that comes after them is served.
        let started = Instant::now();
        let writes: Vec<_> = (0..WRITES)
            .map(|n| {
                let request = server
                    .book_request(&token, &format!("crowd-{n}"), &isbn(20 + n))
                    .timeout(4 * (BUSY_TIMEOUT + MARGIN));
                tokio::spawn(async move {
                    let response = request.send().await.unwrap();
                    (response, started.elapsed())
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let read_started = Instant::now();
        let read = server
            .send(
                server
                    .request(Method::GET, "/accounts/me")
                    .bearer_auth(&token),
            )
            .await;
        let read_waited = read_started.elapsed();
        assert_eq!(
            read.status(),
            StatusCode::OK,
            "a read behind waiting writers"
        );
        assert!(
            read_waited < MARGIN,
            "a read behind waiting writers: {} after {read_waited:?}",
            read.status()
        );
        eprintln!(
            "  a read behind {WRITES} waiting writes: {} after {read_waited:?}",
            read.status()
        );
        let mut slowest = Duration::ZERO;
        for write in writes {
            let (response, after) = write.await.unwrap();
            assert_unavailable(&response, "one of many writes while the lock is held");
            slowest = slowest.max(after);
        }
        assert!(
            slowest < BUSY_TIMEOUT + MARGIN,
            "the last of {WRITES} writes: 503 after {slowest:?}"
        );
        eprintln!("  {WRITES} writes at once: the last 503 after {slowest:?}");

        sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
        holder.close().await.unwrap();
        let released = Instant::now();
        let created = loop {
            let (retry, _) = seen(server.create_book(&token, "during", &isbn(8)).await).await;
            if retry.status == StatusCode::CREATED {
                break retry;
            }
            assert!(
                released.elapsed() < Duration::from_secs(2),
                "still {:?} {:?} after the lock was released",
                retry.status,
                released.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        eprintln!(
            "lock released: writes succeed after {:?}",
            released.elapsed()
        );
        let (again, replayed) = seen(server.create_book(&token, "during", &isbn(8)).await).await;
        assert_eq!(again, created, "the key's next retry replays its creation");
        assert!(replayed);
        for n in 0..WRITES {
            let response = server
                .create_book(&token, &format!("crowd-{n}"), &isbn(20 + n))
                .await;
            assert_eq!(response.status(), StatusCode::CREATED, "crowd-{n}");
        }
        drop(server);
        setup.cleanup().await;
    }
}

mod postgres_redis {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn revocation_survives_restarts_and_redis_loss() {
        let Some(setup) = Setup::postgres_redis(false).await else {
            return;
        };
        revocation_survives_restarts_and_cache_loss(&setup).await;
        setup.cleanup().await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn idempotent_creations_survive_kill_and_redis_loss() {
        let Some(setup) = Setup::postgres_redis(false).await else {
            return;
        };
        idempotent_creations_survive_kill_and_cache_loss(&setup).await;
        setup.cleanup().await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn keyed_writes_cut_short_by_kill_happen_once() {
        let Some(setup) = Setup::postgres_redis(false).await else {
            return;
        };
        keyed_writes_cut_short_by_kill(&setup).await;
        setup.cleanup().await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_database_outage_is_a_prompt_503_and_ends_by_itself() {
        let Some(setup) = Setup::postgres_redis(true).await else {
            return;
        };
        let server = setup.start().await;
        let email = format!("outage-{}@example.com", ulid::Ulid::generate());
        server.sign_up(&email).await;
        let token = server.sign_in(&email).await.token;
        let (book, _) = seen(server.create_book(&token, "k", &isbn(7)).await).await;
        let book_path = book.location.clone().unwrap().replace("/api/v1", "");
        let get_book = || server.request(Method::GET, &book_path);
        assert_eq!(server.send(get_book()).await.status(), StatusCode::OK);

        let link = setup.database_link.as_ref().unwrap();
        link.set(Link::Silent);
        let started = Instant::now();
        let response = server
            .send(
                server
                    .request(Method::GET, "/accounts/me")
                    .bearer_auth(&token),
            )
            .await;
        let waited = started.elapsed();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().contains_key("retry-after"));
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        assert!(waited < Duration::from_millis(1500), "503 after {waited:?}");
        eprintln!("database down: 503 after {waited:?}");

        let cached = server.send(get_book()).await;
        assert_eq!(
            cached.status(),
            StatusCode::OK,
            "cached reads are still served"
        );
        let probe = |path: &'static str| server.client.get(format!("{}{path}", server.base)).send();
        assert_eq!(
            probe("/readyz").await.unwrap().status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(probe("/healthz").await.unwrap().status(), StatusCode::OK);

        link.set(Link::Up);
        let restored = Instant::now();
        loop {
            let status = server.me(&token).await;
            if status == StatusCode::OK {
                break;
            }
            assert!(
                restored.elapsed() < Duration::from_secs(4),
                "still {status} {:?} after the database came back",
                restored.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!(
            "database back: requests succeed after {:?}",
            restored.elapsed()
        );
        drop(server);
        setup.cleanup().await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_redis_outage_costs_little_and_revives_nothing() {
        let Some(setup) = Setup::postgres_redis(true).await else {
            return;
        };
        let server = setup.start().await;
        let email = format!("redis-{}@example.com", ulid::Ulid::generate());
        server.sign_up(&email).await;
        let token = server.sign_in(&email).await.token;
        let ended = server.sign_in(&email).await.token;
        let response = server
            .send(
                server
                    .request(Method::DELETE, "/sessions/me")
                    .bearer_auth(&ended),
            )
            .await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);

        let link = setup.redis_link.as_ref().unwrap();
        link.set(Link::Silent);
        let started = Instant::now();
        for _ in 0..10 {
            assert_eq!(server.me(&token).await, StatusCode::OK);
            assert_eq!(server.me(&ended).await, StatusCode::UNAUTHORIZED);
        }
        eprintln!(
            "Redis silent: 20 authenticated requests took {:?}",
            started.elapsed()
        );

        let (first, _) = seen(server.create_book(&token, "during-outage", &isbn(9)).await).await;
        assert_eq!(first.status, StatusCode::CREATED);
        let (again, replayed) =
            seen(server.create_book(&token, "during-outage", &isbn(9)).await).await;
        assert_eq!(again, first);
        assert!(replayed);
        let book_path = first.location.clone().unwrap().replace("/api/v1", "");
        let book = server.send(server.request(Method::GET, &book_path)).await;
        assert_eq!(book.status(), StatusCode::OK);
        assert!(
            book.headers().contains_key("ratelimit"),
            "the rate limits count in process while Redis is away"
        );

        let ready = server
            .client
            .get(format!("{}/readyz", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(
            ready.status(),
            StatusCode::OK,
            "the database is enough to serve"
        );
        let ready: Value = ready.json().await.unwrap();
        assert_eq!(ready["checks"]["cache"], "degraded", "{ready}");

        link.set(Link::Up);
        drop(server);
        setup.cleanup().await;
    }
}
