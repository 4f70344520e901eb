// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

//! Spawns the real application on port 0 for black-box tests, in either
//! configuration: the embedded default (SQLite file + in-process cache) or
//! PostgreSQL + Redis, each test with its own database / key prefix.

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;

use reqwest::{Client, Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use waiter::{Application, Cli, Wiring};
use waiter_contracts::external::redis_url;
use waiter_postgres::TestDatabase;
use waiter_redis::RedisCache;
use waiter_services::ManualClock;

/// Runs each scenario (an `async fn(&TestApp)` in the calling file) once per
/// configuration, as its own test: `sqlite::<name>` and `postgres_redis::<name>`.
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
        redis: RedisCache,
    },
}

/// A running server and a client pointed at it.
pub struct TestApp {
    pub base: String,
    pub client: Client,
    pub clock: Arc<ManualClock>,
    pub wiring: Wiring,
    /// The command-line arguments it was configured with, to start a twin.
    args: Vec<String>,
    scratch: Option<Scratch>,
}

fn unique(label: &str) -> String {
    format!("{label}-{}", ulid::Ulid::generate())
}

impl TestApp {
    /// Starts an app, or returns `None` when its services are unreachable and not required.
    pub async fn spawn(backend: Backend) -> Option<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let data_dir = std::env::temp_dir().join(unique("waiter-e2e"));
        let mut args: Vec<String> = vec![
            "waiter".into(),
            "--data-dir".into(),
            data_dir.display().to_string(),
        ];
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
                Scratch::Services { database, redis }
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
        let app = Application::build(&wiring, listener, Some(1)).expect("the app binds");
        let base = format!("http://127.0.0.1:{}", app.port());
        actix_web::rt::spawn(app.run_until_stopped());
        Self {
            base,
            client: Client::new(),
            clock,
            wiring,
            args,
            scratch: None,
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

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, format!("{}{path}", self.base))
    }

    pub fn get(&self, path: &str, token: &str) -> RequestBuilder {
        self.request(Method::GET, path).bearer_auth(token)
    }

    /// Signs up an account and returns its JSON.
    pub async fn sign_up(&self, email: &str, password: &str) -> Value {
        let response = self
            .request(Method::POST, "/api/v1/accounts")
            .json(&json!({"email": email, "password": password, "display_name": "Tester"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.unwrap()
    }

    /// Signs in and returns the token response.
    pub async fn sign_in(&self, email: &str, password: &str) -> Value {
        let response = self.try_sign_in(email, password).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.unwrap()
    }

    pub async fn try_sign_in(&self, email: &str, password: &str) -> Response {
        self.request(Method::POST, "/api/v1/sessions")
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .unwrap()
    }

    pub async fn refresh(&self, refresh_token: &str) -> Response {
        self.request(Method::POST, "/api/v1/sessions/refresh")
            .json(&json!({"refresh_token": refresh_token}))
            .send()
            .await
            .unwrap()
    }

    /// The status of `GET /accounts/me` with this token.
    pub async fn me_status(&self, token: &str) -> StatusCode {
        self.get("/api/v1/accounts/me", token)
            .send()
            .await
            .unwrap()
            .status()
    }
}

/// The `access_token` of a token response.
pub fn access(tokens: &Value) -> &str {
    tokens["access_token"].as_str().unwrap()
}

/// The `refresh_token` of a token response.
pub fn refresh(tokens: &Value) -> &str {
    tokens["refresh_token"].as_str().unwrap()
}
