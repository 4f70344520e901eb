//! A real `waiter` process for tests that need one: to kill it, stop it
//! with a signal, or run two of it side by side. Each [`Setup`] has its own
//! data directory and, for PostgreSQL + Redis, its own database and key
//! prefix; every server started from one setup shares them (and so its
//! signing secret), as instances behind one load balancer would.

#![allow(dead_code, reason = "each test binary uses what it needs")]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Client, Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use waiter_contracts::external::redis_url;
use waiter_contracts::fault::FaultyProxy;
use waiter_postgres::TestDatabase;
use waiter_redis::RedisCache;

/// The password of every account the tests make.
pub const PASSWORD: &str = "correct horse battery";

/// The services a server is configured with, and what to remove afterwards.
pub struct Setup {
    pub data_dir: PathBuf,
    pub env: Vec<(&'static str, String)>,
    pub database: Option<TestDatabase>,
    pub redis: Option<RedisCache>,
    /// Proxies the server reaches its database and Redis through, when asked for.
    pub database_link: Option<FaultyProxy>,
    pub redis_link: Option<FaultyProxy>,
}

/// Where a proxy for `url`'s `host:port` is, as the same URL through the proxy.
fn through(url: &str, proxy: &FaultyProxy) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, _) = authority
        .rsplit_once('@')
        .map_or((None, authority), |(user, host)| (Some(user), host));
    let user = userinfo.map(|user| format!("{user}@")).unwrap_or_default();
    format!("{scheme}://{user}{}/{path}", proxy.address())
}

fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    authority.rsplit('@').next().unwrap_or(authority).to_owned()
}

impl Setup {
    pub fn sqlite() -> Self {
        Self {
            data_dir: scratch_dir(),
            env: Vec::new(),
            database: None,
            redis: None,
            database_link: None,
            redis_link: None,
        }
    }

    /// PostgreSQL and Redis, each reached through a proxy when `proxied`.
    pub async fn postgres_redis(proxied: bool) -> Option<Self> {
        let database = TestDatabase::create().await?;
        let prefix = format!("waiter-test:{}:", ulid::Ulid::generate());
        let redis = match RedisCache::connect(&redis_url(), prefix.clone()).await {
            Ok(redis) => redis,
            Err(err) => {
                database.drop_database().await;
                return waiter_contracts::external::unavailable("Redis", err);
            }
        };
        let (mut database_url, mut redis_server) = (database.url().to_owned(), redis_url());
        let (mut database_link, mut redis_link) = (None, None);
        if proxied {
            let db_proxy = FaultyProxy::start(&host_port(&database_url)).await.unwrap();
            let redis_proxy = FaultyProxy::start(&host_port(&redis_server)).await.unwrap();
            database_url = through(&database_url, &db_proxy);
            redis_server = through(&redis_server, &redis_proxy);
            database_link = Some(db_proxy);
            redis_link = Some(redis_proxy);
        }
        Some(Self {
            data_dir: scratch_dir(),
            env: vec![
                ("DATABASE_URL", database_url),
                ("REDIS_URL", redis_server),
                ("WAITER_REDIS_PREFIX", prefix),
            ],
            database: Some(database),
            redis: Some(redis),
            database_link,
            redis_link,
        })
    }

    pub fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_waiter"));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("WAITER_DATA_DIR", &self.data_dir)
            .env("WAITER_LOG", "warn")
            .env("WAITER_WORKERS", "2")
            // Several servers run at once: none may claim the default metrics port.
            .env("WAITER_METRICS_ADDR", "off")
            // Retries and polling here are no abuse.
            .env("WAITER_RATE_LIMIT_CLIENT", "100000/1m")
            .env("WAITER_RATE_LIMIT_SIGN_IN", "100000/1m")
            .env("WAITER_RATE_LIMIT_SIGN_IN_ADDRESS", "100000/1m")
            .env("WAITER_RATE_LIMIT_SIGN_UP", "100000/1m")
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())));
        command
    }

    /// Makes `email` an admin with [`PASSWORD`], as an operator would.
    pub fn create_admin(&self, email: &str) {
        let status = self
            .command()
            .args(["admin", "create", "--email", email])
            .env("WAITER_ADMIN_PASSWORD", PASSWORD)
            .stdout(Stdio::null())
            .status()
            .expect("run waiter admin create");
        assert!(status.success());
    }

    pub async fn start(&self) -> Server {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(self.data_dir.join(format!("server-{port}.log")))
            .expect("a log file");
        let child = self
            .command()
            .env("WAITER_ADDR", format!("127.0.0.1:{port}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start waiter");
        let _ = rustls::crypto::ring::default_provider().install_default();
        let server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            client: Client::new(),
        };
        server.wait_until_serving().await;
        server
    }

    pub async fn cleanup(self) {
        if let Some(database) = self.database {
            database.drop_database().await;
        }
        if let Some(redis) = &self.redis {
            let _ = redis.clear_prefix().await;
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

pub fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("waiter-faults-{}", ulid::Ulid::generate()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A running `waiter` process and a client pointed at it.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub client: Client,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub async fn wait_until_serving(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(response) = self
                .client
                .get(format!("{}/healthz", self.base))
                .send()
                .await
                && response.status().is_success()
            {
                return;
            }
            assert!(Instant::now() < deadline, "waiter did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `kill -9`: no shutdown code runs at all.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then waits for the process to finish its graceful shutdown.
    pub fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "a graceful stop exits cleanly: {status}");
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, format!("{}/api/v1{path}", self.base))
            .timeout(Duration::from_secs(10))
    }

    pub async fn sign_up(&self, email: &str) -> Value {
        let response = self
            .request(Method::POST, "/accounts")
            .json(&json!({"email": email, "password": PASSWORD, "display_name": "Tester"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.unwrap()
    }

    pub async fn sign_in(&self, email: &str) -> Session {
        let response = self
            .request(Method::POST, "/sessions")
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let tokens: Value = response.json().await.unwrap();
        Session {
            token: tokens["access_token"].as_str().unwrap().to_owned(),
            id: tokens["session"]["id"].as_str().unwrap().to_owned(),
        }
    }

    pub async fn me(&self, token: &str) -> StatusCode {
        self.request(Method::GET, "/accounts/me")
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
    }

    pub async fn send(&self, request: RequestBuilder) -> Response {
        request.send().await.unwrap()
    }
}

#[derive(Clone)]
pub struct Session {
    pub token: String,
    pub id: String,
}
