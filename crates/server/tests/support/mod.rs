// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

//! Spawns the real application on port 0 for black-box tests, in either
//! configuration: the embedded default (SQLite file + in-process cache) or
//! PostgreSQL + Redis, each test with its own database / key prefix.
//!
//! [`TestApp`] has one method per endpoint, named after its operation id
//! (`app.create_book(&token, &body)`), returning a [`Call`] that is sent when
//! awaited, so a scenario reads as what it does rather than how requests are
//! built. A few helpers on top (`sign_up`, `member`, `created_book`) do the
//! setup a scenario needs on the way to what it is about, asserting it worked.

use std::future::IntoFuture;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;
use reqwest::header::{self, HeaderName};
use reqwest::{Client, Method, Response, StatusCode};
use serde_json::{Value, json};
use waiter::config::SeedCommand;
use waiter::{Application, Cli, Command, Serving, Wiring};
use waiter_contracts::external::redis_url;
use waiter_domain::{DisplayName, Email, Password};
use waiter_postgres::TestDatabase;
use waiter_redis::RedisCache;
use waiter_services::ManualClock;

/// The password of every account the helpers create.
pub const PASSWORD: &str = "correct horse battery";

/// Runs each scenario (an `async fn(&TestApp)` in the calling file) once per
/// configuration, as its own test: `sqlite::<name>` and `postgres_redis::<name>`.
#[allow(unused_macros)]
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(#[actix_web::test]
            async fn $scenario() {
                if let Some(app) = crate::support::TestApp::spawn(crate::support::Backend::Sqlite).await {
                    super::$scenario(&app).await;
                    app.cleanup().await;
                }
            })*
        }
        mod postgres_redis {
            $(#[actix_web::test]
            async fn $scenario() {
                if let Some(app) = crate::support::TestApp::spawn(crate::support::Backend::PostgresRedis).await {
                    super::$scenario(&app).await;
                    app.cleanup().await;
                }
            })*
        }
    };
}

/// Which adapters a test app is wired with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    PostgresRedis,
}

/// What a test app must remove when it is done.
enum Scratch {
    Dir(PathBuf),
    Services {
        database: TestDatabase,
        /// Boxed: a Redis client is large, a directory is not.
        redis: Box<RedisCache>,
    },
}

/// Who sends a request: an access token, or nobody ([`Anonymous`]).
pub trait Credential {
    fn into_token(self) -> Option<String>;
}

/// No credential at all: the request carries no `Authorization`.
pub struct Anonymous;

impl Credential for Anonymous {
    fn into_token(self) -> Option<String> {
        None
    }
}

impl Credential for &str {
    fn into_token(self) -> Option<String> {
        Some(self.to_owned())
    }
}

impl Credential for &String {
    fn into_token(self) -> Option<String> {
        Some(self.clone())
    }
}

impl<T: Credential> Credential for Option<T> {
    fn into_token(self) -> Option<String> {
        self.and_then(Credential::into_token)
    }
}

/// A request body: JSON built with `json!`, or JSON text exactly as written
/// (for numbers and syntax a `Value` cannot hold).
pub struct Body(String);

impl From<&Value> for Body {
    fn from(value: &Value) -> Self {
        Self(value.to_string())
    }
}

impl From<Value> for Body {
    fn from(value: Value) -> Self {
        Self(value.to_string())
    }
}

impl From<&str> for Body {
    fn from(text: &str) -> Self {
        Self(text.to_owned())
    }
}

impl From<String> for Body {
    fn from(text: String) -> Self {
        Self(text)
    }
}

/// One request to the app, sent when awaited (or by [`Call::send`], to run
/// several at once). The methods add the HTTP details a scenario is about.
#[must_use = "a request is only sent when awaited"]
pub struct Call {
    client: Client,
    method: Method,
    url: String,
    token: Option<String>,
    headers: Vec<(HeaderName, String)>,
    body: Option<(&'static str, String)>,
}

impl Call {
    /// Sends the access token of `who`, for endpoints that anyone may call.
    pub fn bearer(mut self, who: impl Credential) -> Self {
        self.token = who.into_token();
        self
    }

    pub fn if_match(self, etag: &str) -> Self {
        self.header(header::IF_MATCH, etag)
    }

    pub fn if_none_match(self, etag: &str) -> Self {
        self.header(header::IF_NONE_MATCH, etag)
    }

    pub fn idempotency_key(self, key: &str) -> Self {
        self.header(HeaderName::from_static("idempotency-key"), key)
    }

    /// Sends the body as `content_type` rather than the endpoint's usual type.
    pub fn content_type(mut self, content_type: &'static str) -> Self {
        if let Some((current, _)) = &mut self.body {
            *current = content_type;
        }
        self
    }

    /// Asks for a Server-Sent Events stream rather than JSON.
    pub fn event_stream(self) -> Self {
        self.header(header::ACCEPT, "text/event-stream")
    }

    /// Resumes a stream after the event with this id.
    pub fn last_event_id(self, id: u64) -> Self {
        self.header(HeaderName::from_static("last-event-id"), &id.to_string())
    }

    /// As if it came through a proxy from `address` (`X-Forwarded-For`).
    pub fn forwarded_for(self, address: &str) -> Self {
        self.header(HeaderName::from_static("x-forwarded-for"), address)
    }

    fn header(mut self, name: HeaderName, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }

    fn body(mut self, content_type: &'static str, body: impl Into<Body>) -> Self {
        self.body = Some((content_type, body.into().0));
        self
    }

    /// Sends the request; the response, whatever its status.
    pub fn send(self) -> BoxFuture<'static, Response> {
        let mut request = self.client.request(self.method, self.url);
        if let Some(token) = self.token {
            request = request.bearer_auth(token);
        }
        for (name, value) in self.headers {
            request = request.header(name, value);
        }
        if let Some((content_type, body)) = self.body {
            request = request
                .header(header::CONTENT_TYPE, content_type)
                .body(body);
        }
        Box::pin(async move { request.send().await.expect("the app answers") })
    }
}

impl IntoFuture for Call {
    type Output = Response;
    type IntoFuture = BoxFuture<'static, Response>;

    fn into_future(self) -> Self::IntoFuture {
        self.send()
    }
}

/// A running server and a client pointed at it.
pub struct TestApp {
    pub base: String,
    /// The port `/metrics` is served on, when the app serves it.
    pub metrics_port: Option<u16>,
    pub client: Client,
    pub clock: Arc<ManualClock>,
    pub wiring: Wiring,
    /// The command-line arguments it was configured with, to start a twin.
    args: Vec<String>,
    scratch: Option<Scratch>,
}

/// The edge of a test app: rate limits that every test stays far below (so
/// they count, and their headers show, without refusing anything), and no
/// metrics listener. A test of the edge itself overrides them; clap takes
/// the last occurrence of a flag.
const EDGE_FOR_TESTS: [(&str, &str); 7] = [
    ("--rate-limit-client", "100000/1m"),
    ("--rate-limit-sign-in", "100000/1m"),
    ("--rate-limit-sign-in-address", "100000/1m"),
    ("--rate-limit-sign-up", "100000/1m"),
    ("--rate-limit-refresh", "100000/1m"),
    ("--rate-limit-messages", "100000/1m"),
    ("--metrics-addr", "off"),
];

fn unique(label: &str) -> String {
    format!("{label}-{}", ulid::Ulid::generate())
}

const JSON: &str = "application/json";

impl TestApp {
    /// Starts an app, or returns `None` when its services are unreachable and not required.
    pub async fn spawn(backend: Backend) -> Option<Self> {
        Self::spawn_with(backend, &[]).await
    }

    /// Starts an app with some flags of its edge (`--rate-limit-sign-in`,
    /// `--trusted-proxies`…) set to other values than the tests' defaults.
    pub async fn spawn_with(backend: Backend, flags: &[(&str, &str)]) -> Option<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let data_dir = std::env::temp_dir().join(unique("waiter-e2e"));
        let mut args: Vec<String> = vec![
            "waiter".into(),
            "--data-dir".into(),
            data_dir.display().to_string(),
        ];
        for (flag, value) in EDGE_FOR_TESTS {
            if !flags.iter().any(|(set, _)| *set == flag) {
                args.extend([flag.to_owned(), value.to_owned()]);
            }
        }
        for (flag, value) in flags {
            args.extend([(*flag).to_owned(), (*value).to_owned()]);
        }
        let scratch = match backend {
            Backend::Sqlite => Scratch::Dir(data_dir.clone()),
            Backend::PostgresRedis => {
                let database = TestDatabase::create().await?;
                let prefix = format!("{}:", unique("waiter-test"));
                let redis = match RedisCache::connect(&redis_url(), prefix.clone()).await {
                    Ok(redis) => redis,
                    Err(err) => {
                        database.drop_database().await;
                        return waiter_contracts::external::unavailable("Redis", err);
                    }
                };
                args.extend([
                    "--database-url".into(),
                    database.url().to_owned(),
                    "--redis-url".into(),
                    redis_url(),
                    "--redis-prefix".into(),
                    prefix,
                    "--jwt-secret".into(),
                    "a shared test secret of at least 32 bytes".into(),
                ]);
                Scratch::Services {
                    database,
                    redis: Box::new(redis),
                }
            }
        };
        let mut app = Self::start(args).await;
        app.scratch = Some(scratch);
        Some(app)
    }

    /// A second instance sharing this one's database, cache and signing key.
    pub async fn twin(&self) -> Self {
        Self::start(self.args.clone()).await
    }

    async fn start(args: Vec<String>) -> Self {
        use clap::Parser as _;
        let cli = Cli::try_parse_from(&args).expect("test configuration parses");
        let clock = Arc::new(ManualClock::new(time::OffsetDateTime::now_utc()));
        let wiring = Wiring::connect(&cli.config, clock.clone())
            .await
            .expect("the app wires up");
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let mut serving = Serving::from_config(&cli.config).expect("the serving settings load");
        serving.workers = Some(1);
        let scheme = if serving.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let app = Application::build(&wiring, listener, serving).expect("the app binds");
        let base = format!("{scheme}://127.0.0.1:{}", app.port());
        let metrics_port = app.metrics_port();
        actix_web::rt::spawn(app.run_until_stopped());
        Self {
            base,
            metrics_port,
            client: Client::new(),
            clock,
            wiring,
            args,
            scratch: None,
        }
    }

    /// The database file of an app on SQLite, `None` on PostgreSQL.
    pub fn sqlite_file(&self) -> Option<PathBuf> {
        match &self.scratch {
            Some(Scratch::Dir(dir)) => Some(dir.join("waiter.db")),
            _ => None,
        }
    }

    /// Removes the database, keys or files this app created.
    pub async fn cleanup(mut self) {
        match self.scratch.take() {
            Some(Scratch::Dir(dir)) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Some(Scratch::Services { database, redis }) => {
                database.drop_database().await;
                if let Err(err) = redis.clear_prefix().await {
                    eprintln!("warning: could not clear test keys: {err}");
                }
            }
            None => {}
        }
    }

    /// A request to `path` with nothing more to it.
    pub fn call(&self, method: Method, path: &str) -> Call {
        Call {
            client: self.client.clone(),
            method,
            url: format!("{}{path}", self.base),
            token: None,
            headers: Vec::new(),
            body: None,
        }
    }

    /// A request to an endpoint that wants an access token.
    fn authenticated(&self, method: Method, path: &str, who: impl Credential) -> Call {
        self.call(method, path).bearer(who)
    }

    pub fn create_account(&self, body: impl Into<Body>) -> Call {
        self.call(Method::POST, "/api/v1/accounts").body(JSON, body)
    }

    pub fn get_own_account(&self, who: impl Credential) -> Call {
        self.authenticated(Method::GET, "/api/v1/accounts/me", who)
    }

    pub fn update_own_account(&self, who: impl Credential, changes: impl Into<Body>) -> Call {
        self.authenticated(Method::PATCH, "/api/v1/accounts/me", who)
            .body(JSON, changes)
    }

    pub fn delete_own_account(&self, who: impl Credential) -> Call {
        self.authenticated(Method::DELETE, "/api/v1/accounts/me", who)
    }

    /// `GET /accounts?{query}`, e.g. `limit=2&cursor=…`, or `""`.
    pub fn list_accounts(&self, who: impl Credential, query: &str) -> Call {
        self.authenticated(Method::GET, &format!("/api/v1/accounts?{query}"), who)
    }

    pub fn get_account(&self, who: impl Credential, id: &str) -> Call {
        self.authenticated(Method::GET, &format!("/api/v1/accounts/{id}"), who)
    }

    pub fn update_account(&self, who: impl Credential, id: &str, changes: impl Into<Body>) -> Call {
        self.authenticated(Method::PATCH, &format!("/api/v1/accounts/{id}"), who)
            .body(JSON, changes)
    }

    pub fn delete_account(&self, who: impl Credential, id: &str) -> Call {
        self.authenticated(Method::DELETE, &format!("/api/v1/accounts/{id}"), who)
    }

    pub fn create_session(&self, email: &str, password: &str) -> Call {
        self.call(Method::POST, "/api/v1/sessions")
            .body(JSON, json!({"email": email, "password": password}))
    }

    pub fn refresh_session(&self, refresh_token: &str) -> Call {
        self.call(Method::POST, "/api/v1/sessions/refresh")
            .body(JSON, json!({"refresh_token": refresh_token}))
    }

    pub fn get_current_session(&self, who: impl Credential) -> Call {
        self.authenticated(Method::GET, "/api/v1/sessions/me", who)
    }

    pub fn delete_current_session(&self, who: impl Credential) -> Call {
        self.authenticated(Method::DELETE, "/api/v1/sessions/me", who)
    }

    pub fn list_sessions(&self, who: impl Credential) -> Call {
        self.authenticated(Method::GET, "/api/v1/sessions", who)
    }

    pub fn delete_all_sessions(&self, who: impl Credential) -> Call {
        self.authenticated(Method::DELETE, "/api/v1/sessions", who)
    }

    pub fn delete_session(&self, who: impl Credential, id: &str) -> Call {
        self.authenticated(Method::DELETE, &format!("/api/v1/sessions/{id}"), who)
    }

    /// `GET /books?{query}`, e.g. `sort=-price&limit=2`, or `""`.
    pub fn list_books(&self, query: &str) -> Call {
        self.call(Method::GET, &format!("/api/v1/books?{query}"))
    }

    pub fn list_recent_books(&self) -> Call {
        self.call(Method::GET, "/api/v1/books/recent")
    }

    pub fn create_book(&self, who: impl Credential, book: impl Into<Body>) -> Call {
        self.authenticated(Method::POST, "/api/v1/books", who)
            .body(JSON, book)
    }

    pub fn get_book(&self, id: &str) -> Call {
        self.call(Method::GET, &format!("/api/v1/books/{id}"))
    }

    pub fn replace_book(&self, who: impl Credential, id: &str, book: impl Into<Body>) -> Call {
        self.authenticated(Method::PUT, &format!("/api/v1/books/{id}"), who)
            .body(JSON, book)
    }

    /// A JSON merge patch, sent as `application/merge-patch+json`.
    pub fn update_book(&self, who: impl Credential, id: &str, patch: impl Into<Body>) -> Call {
        self.authenticated(Method::PATCH, &format!("/api/v1/books/{id}"), who)
            .body("application/merge-patch+json", patch)
    }

    pub fn delete_book(&self, who: impl Credential, id: &str) -> Call {
        self.authenticated(Method::DELETE, &format!("/api/v1/books/{id}"), who)
    }

    pub fn create_conversation(&self, who: impl Credential, body: impl Into<Body>) -> Call {
        self.authenticated(Method::POST, "/api/v1/conversations", who)
            .body(JSON, body)
    }

    pub fn list_conversations(&self, who: impl Credential, query: &str) -> Call {
        self.authenticated(Method::GET, &format!("/api/v1/conversations{query}"), who)
    }

    pub fn get_conversation(&self, who: impl Credential, id: &str) -> Call {
        self.authenticated(Method::GET, &format!("/api/v1/conversations/{id}"), who)
    }

    pub fn update_conversation(
        &self,
        who: impl Credential,
        id: &str,
        body: impl Into<Body>,
    ) -> Call {
        self.authenticated(Method::PATCH, &format!("/api/v1/conversations/{id}"), who)
            .body("application/merge-patch+json", body)
    }

    pub fn delete_conversation(&self, who: impl Credential, id: &str) -> Call {
        self.authenticated(Method::DELETE, &format!("/api/v1/conversations/{id}"), who)
    }

    pub fn send_message(&self, who: impl Credential, id: &str, body: impl Into<Body>) -> Call {
        let path = format!("/api/v1/conversations/{id}/messages");
        self.authenticated(Method::POST, &path, who)
            .body(JSON, body)
    }

    pub fn stop_generation(&self, who: impl Credential, id: &str) -> Call {
        let path = format!("/api/v1/conversations/{id}/generation");
        self.authenticated(Method::DELETE, &path, who)
    }

    /// `GET …/stream`, with a bearer token (`who`) or a resume token (`token`).
    pub fn resume_stream(&self, who: impl Credential, id: &str, token: Option<&str>) -> Call {
        let query = token.map_or(String::new(), |token| format!("?token={token}"));
        let path = format!("/api/v1/conversations/{id}/stream{query}");
        self.authenticated(Method::GET, &path, who)
    }

    /// The seed's `POST /backend-api/f/conversation`.
    pub fn seed_send(&self, who: impl Credential, body: impl Into<Body>) -> Call {
        self.authenticated(Method::POST, "/backend-api/f/conversation", who)
            .body(JSON, body)
            .event_stream()
    }

    /// The seed's `GET /backend-api/conversations`.
    pub fn seed_list(&self, who: impl Credential, query: &str) -> Call {
        self.authenticated(
            Method::GET,
            &format!("/backend-api/conversations{query}"),
            who,
        )
    }

    /// The seed's `GET /backend-api/conversation/{id}`.
    pub fn seed_detail(&self, who: impl Credential, id: &str) -> Call {
        self.authenticated(Method::GET, &format!("/backend-api/conversation/{id}"), who)
    }

    pub fn liveness(&self) -> Call {
        self.call(Method::GET, "/healthz")
    }

    pub fn readiness(&self) -> Call {
        self.call(Method::GET, "/readyz")
    }

    /// Signs up an account named "Tester" and returns its JSON.
    pub async fn sign_up(&self, email: &str, password: &str) -> Value {
        let body = json!({"email": email, "password": password, "display_name": "Tester"});
        let response = self.create_account(body).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        json_of(response).await
    }

    /// Signs in and returns the token response.
    pub async fn sign_in(&self, email: &str, password: &str) -> Value {
        let response = self.create_session(email, password).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        json_of(response).await
    }

    /// Signs up and in with [`PASSWORD`]; returns the access token.
    pub async fn member(&self, email: &str) -> String {
        self.sign_up(email, PASSWORD).await;
        access(&self.sign_in(email, PASSWORD).await).to_owned()
    }

    /// Makes `root@example.com` an admin (as `waiter admin create` does) and
    /// signs it in; returns the access token.
    pub async fn admin(&self) -> String {
        let admin = self
            .wiring
            .identity()
            .bootstrap_admin(
                Email::parse("root@example.com").unwrap(),
                DisplayName::parse("Root").unwrap(),
                Some(Password::parse(PASSWORD).unwrap()),
            )
            .await
            .unwrap();
        assert!(admin.role.is_admin());
        access(&self.sign_in("root@example.com", PASSWORD).await).to_owned()
    }

    /// Creates a book and returns its JSON.
    pub async fn created_book(&self, who: impl Credential, book: &Value) -> Value {
        let response = self.create_book(who, book).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        json_of(response).await
    }

    /// The titles `GET /books/recent` lists, in its order.
    pub async fn recent_titles(&self) -> Vec<String> {
        let response = self.list_recent_books().await;
        assert_eq!(response.status(), StatusCode::OK);
        json_of(response).await["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|book| book["title"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Runs `waiter seed books --owner <owner> --count <count>` on this
    /// app's configuration, as an operator would next to the running
    /// server; returns how many books it added.
    pub async fn seed_books(&self, owner: &str, count: usize) -> u64 {
        use clap::Parser as _;
        let mut args = self.args.clone();
        args.extend(
            [
                "seed",
                "books",
                "--owner",
                owner,
                "--count",
                &count.to_string(),
            ]
            .map(String::from),
        );
        let cli = Cli::try_parse_from(&args).expect("the seed command parses");
        let Some(Command::Seed(SeedCommand::Books(seed))) = cli.command else {
            panic!("{args:?} is not `seed books`");
        };
        waiter::seed::seed_books(&cli.config, &seed)
            .await
            .expect("seeding succeeds")
    }
}

/// The JSON body of `response`.
pub async fn json_of(response: Response) -> Value {
    response.json().await.expect("a JSON body")
}

/// The value of header `name` in `response`, which must have it.
pub fn header_of(response: &Response, name: impl header::AsHeaderName) -> &str {
    response
        .headers()
        .get(name)
        .expect("the header is present")
        .to_str()
        .expect("the header is text")
}

/// One Server-Sent Event as received.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub id: Option<u64>,
    pub event: Option<String>,
    pub data: String,
}

impl SseEvent {
    /// The data as JSON (`[DONE]` is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|err| panic!("{err}: {}", self.data))
    }
}

/// Parses the events of an SSE body; comments (`: ping`) are skipped.
pub fn parse_events(body: &str) -> Vec<SseEvent> {
    body.split("\n\n")
        .filter_map(|block| {
            let mut event = SseEvent {
                id: None,
                event: None,
                data: String::new(),
            };
            let mut has_data = false;
            for line in block.lines() {
                if let Some(id) = line.strip_prefix("id: ") {
                    event.id = Some(id.parse().expect("numeric event ids"));
                } else if let Some(name) = line.strip_prefix("event: ") {
                    event.event = Some(name.to_owned());
                } else if let Some(data) = line.strip_prefix("data: ") {
                    if has_data {
                        event.data.push('\n');
                    }
                    event.data.push_str(data);
                    has_data = true;
                }
            }
            has_data.then_some(event)
        })
        .collect()
}

/// Reads a whole SSE response and parses its events.
pub async fn events_of(response: Response) -> Vec<SseEvent> {
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header_of(&response, header::CONTENT_TYPE),
        "text/event-stream"
    );
    parse_events(&response.text().await.expect("the stream ends"))
}

/// The `id` of a resource's JSON.
pub fn id(resource: &Value) -> &str {
    resource["id"].as_str().expect("the resource has an id")
}

/// The `access_token` of a token response.
pub fn access(tokens: &Value) -> &str {
    tokens["access_token"].as_str().unwrap()
}

/// The `refresh_token` of a token response.
pub fn refresh(tokens: &Value) -> &str {
    tokens["refresh_token"].as_str().unwrap()
}
