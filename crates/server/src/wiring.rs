//! Dependency injection: concrete adapters in, `Arc<dyn Port>` out.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use sha2::{Digest as _, Sha256};
use waiter_assistant::{ApiKey, BuiltInGenerator, OpenAiCompatibleGenerator, OpenAiConfig};
use waiter_http::HttpState;
use waiter_memory::{MemoryCache, MemoryRateLimiter, MemoryReplyEventLog, MemoryReplyLeases};
use waiter_ports::PortError;
use waiter_ports::cache::Cache;
use waiter_ports::catalog::{BookStore, CatalogUseCases};
use waiter_ports::clock::Clock;
use waiter_ports::conversations::{ConversationStore, ReplyEventLog, ReplyGenerator, ReplyLeases};
use waiter_ports::health::{HealthUseCases, Probe};
use waiter_ports::idempotency::{IdempotencyStore, IdempotencyUseCases};
use waiter_ports::identity::{AccountStore, IdentityUseCases, SessionStore};
use waiter_ports::rate_limit::{RateLimitUseCases, RateLimiter};
use waiter_postgres::PostgresDatabase;
use waiter_redis::{RedisCache, RedisRateLimiter, RedisReplyEventLog, RedisReplyLeases};
use waiter_services::{
    AccountEventsFanOut, CatalogService, ConversationPorts, ConversationService,
    ConversationSettings, FailoverRateLimiter, HealthService, IdempotencyService,
    IdempotencySettings, IdentityPorts, IdentityService, IdentitySettings, JwtSecret,
    RateLimitService,
};
use waiter_sqlite::SqliteDatabase;

use crate::config::{Config, DatabaseUrl};
use crate::secret;

/// Entries the in-process cache for reads holds.
const READ_CACHE_ENTRIES: u64 = 100_000;

/// The stores of one database, as ports.
pub struct Stores {
    pub accounts: Arc<dyn AccountStore>,
    pub sessions: Arc<dyn SessionStore>,
    pub books: Arc<dyn BookStore>,
    /// Idempotency keys live in the database, so no restart or cache flush
    /// lets a keyed retry run twice.
    pub idempotency: Arc<dyn IdempotencyStore>,
    pub conversations: Arc<dyn ConversationStore>,
    pub probe: Arc<dyn Probe>,
}

/// The cache-side adapters, as ports.
struct CacheAdapters {
    /// The cache other instances share, through which a session revocation
    /// reaches them at once; `None` in-process, where there are no others.
    shared: Option<Arc<dyn Cache>>,
    /// Cache-aside reads.
    reads: Arc<dyn Cache>,
    probe: Arc<dyn Probe>,
    /// Counts requests for the rate limits: shared through Redis (falling
    /// back to in-process counts while it is down), or in-process.
    rate_limiter: Arc<dyn RateLimiter>,
    /// The events of replies in flight: a Redis Stream each, which any
    /// instance can follow, or in-process.
    reply_events: Arc<dyn ReplyEventLog>,
    /// The leases on replies in flight: in Redis, where instances take
    /// over each other's replies, or in-process.
    reply_leases: Arc<dyn ReplyLeases>,
}

/// `WAITER_DATA_DIR`, created if missing.
fn data_dir(config: &Config) -> anyhow::Result<&Path> {
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "cannot create WAITER_DATA_DIR {}",
            config.data_dir.display()
        )
    })?;
    Ok(&config.data_dir)
}

/// The database a configuration selects, connected and migrated.
#[derive(Debug, Clone)]
pub enum Database {
    Postgres(PostgresDatabase),
    Sqlite(SqliteDatabase),
}

impl Database {
    /// Connects to the configured database (SQLite in the data dir by default)
    /// and applies any pending migrations.
    pub async fn connect(config: &Config) -> anyhow::Result<Self> {
        let database =
            match &config.database_url {
                Some(DatabaseUrl::Postgres(url)) => Database::Postgres(
                    PostgresDatabase::connect(url)
                        .await
                        .context("cannot connect to PostgreSQL (DATABASE_URL)")?,
                ),
                Some(DatabaseUrl::Sqlite(url)) => Database::Sqlite(
                    SqliteDatabase::connect(url)
                        .await
                        .context("cannot open SQLite (DATABASE_URL)")?,
                ),
                None => {
                    let path = data_dir(config)?.join("waiter.db");
                    let url = format!("sqlite://{}", path.display());
                    Database::Sqlite(SqliteDatabase::connect(&url).await.with_context(|| {
                        format!("cannot open the SQLite file {}", path.display())
                    })?)
                }
            };
        database
            .migrate()
            .await
            .context("cannot migrate the database")?;
        Ok(database)
    }

    /// Closes the pool, waiting for connections in use. On SQLite the last
    /// connection to close checkpoints the write-ahead log, leaving the data
    /// in the database file alone.
    pub async fn close(&self) {
        match self {
            Database::Postgres(db) => db.close().await,
            Database::Sqlite(db) => db.close().await,
        }
    }

    async fn migrate(&self) -> Result<(), PortError> {
        match self {
            Database::Postgres(db) => db.migrate().await,
            Database::Sqlite(db) => db.migrate().await,
        }
    }

    /// The database's stores, as ports.
    pub fn stores(&self) -> Stores {
        match self {
            Database::Postgres(db) => Stores {
                accounts: Arc::new(db.accounts()),
                sessions: Arc::new(db.sessions()),
                books: Arc::new(db.books()),
                idempotency: Arc::new(db.idempotency()),
                conversations: Arc::new(db.conversations()),
                probe: Arc::new(db.clone()),
            },
            Database::Sqlite(db) => Stores {
                accounts: Arc::new(db.accounts()),
                sessions: Arc::new(db.sessions()),
                books: Arc::new(db.books()),
                idempotency: Arc::new(db.idempotency()),
                conversations: Arc::new(db.conversations()),
                probe: Arc::new(db.clone()),
            },
        }
    }
}

/// Connects the configured cache: Redis when `REDIS_URL` is set, else in-process.
async fn connect_cache(config: &Config) -> anyhow::Result<CacheAdapters> {
    match &config.redis_url {
        Some(url) => {
            let redis = RedisCache::connect(url, config.redis_prefix.clone())
                .await
                .context("cannot connect to Redis (REDIS_URL)")?;
            // Nothing here must survive: the database holds revocations and
            // idempotency keys, so Redis may evict or lose any key.
            let rate_limiter = FailoverRateLimiter::new(
                Arc::new(RedisRateLimiter::sharing(&redis)),
                Arc::new(MemoryRateLimiter::new()),
            );
            Ok(CacheAdapters {
                shared: Some(Arc::new(redis.clone())),
                reads: Arc::new(redis.clone()),
                reply_events: Arc::new(RedisReplyEventLog::sharing(&redis)),
                reply_leases: Arc::new(RedisReplyLeases::sharing(&redis)),
                probe: Arc::new(redis),
                rate_limiter: Arc::new(rate_limiter),
            })
        }
        None => {
            let reads = MemoryCache::new(READ_CACHE_ENTRIES);
            Ok(CacheAdapters {
                shared: None,
                reads: Arc::new(reads.clone()),
                probe: Arc::new(reads),
                rate_limiter: Arc::new(MemoryRateLimiter::new()),
                reply_events: Arc::new(MemoryReplyEventLog::new()),
                reply_leases: Arc::new(MemoryReplyLeases::new()),
            })
        }
    }
}

/// The configured assistant: an OpenAI-compatible API when
/// `WAITER_ASSISTANT_URL` is set, else the built-in stand-in.
fn reply_generator(config: &Config) -> anyhow::Result<Arc<dyn ReplyGenerator>> {
    let Some(url) = &config.assistant_url else {
        return Ok(Arc::new(BuiltInGenerator::new(config.assistant_delay)));
    };
    let api_key = config.assistant_api_key.clone().map(ApiKey::new);
    let settings = OpenAiConfig::new(url.clone(), config.assistant_model.clone(), api_key);
    let generator =
        OpenAiCompatibleGenerator::new(settings).context("cannot use WAITER_ASSISTANT_URL")?;
    Ok(Arc::new(generator))
}

/// The key resume tokens are signed with: derived from the access tokens'
/// key (so there is one secret to configure and share between instances),
/// yet distinct from it, so neither kind of token can pass for the other.
fn resume_secret(jwt_secret: &JwtSecret) -> JwtSecret {
    let digest = Sha256::new()
        .chain_update(b"waiter resume tokens\0")
        .chain_update(jwt_secret.expose())
        .finalize();
    JwtSecret::new(digest.to_vec()).expect("a SHA-256 digest is 32 bytes")
}

/// The services, built from the configured adapters.
#[derive(Clone)]
pub struct Wiring {
    database: Database,
    /// The services' upkeep: keeping the revocation set in step with the
    /// database, deleting expired idempotency keys, interrupting replies
    /// whose instance died.
    upkeep: Arc<[tokio::task::JoinHandle<()>]>,
    identity: Arc<dyn IdentityUseCases>,
    catalog: Arc<dyn CatalogUseCases>,
    /// The service itself, not only its use cases: shutting down hands its
    /// replies over.
    conversations: Arc<ConversationService>,
    idempotency: Arc<dyn IdempotencyUseCases>,
    health: Arc<dyn HealthUseCases>,
    /// `None` when every policy is off.
    rate_limits: Option<Arc<dyn RateLimitUseCases>>,
}

impl std::fmt::Debug for Wiring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wiring").finish_non_exhaustive()
    }
}

impl Wiring {
    /// Connects every adapter the configuration names and builds the services on them.
    pub async fn connect(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        Self::with_database(config, &Database::connect(config).await?, clock).await
    }

    /// Like [`Self::connect`], on a database the caller has already connected.
    pub async fn with_database(
        config: &Config,
        database: &Database,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let caches = connect_cache(config).await?;
        let jwt_secret = match &config.jwt_secret {
            Some(secret) => secret.clone(),
            None => secret::load_or_generate(data_dir(config)?)?,
        };
        let stores = database.stores();
        let catalog = Arc::new(CatalogService::new(
            stores.books,
            caches.reads.clone(),
            clock.clone(),
        ));
        let conversations = Arc::new(ConversationService::new(
            ConversationPorts {
                store: stores.conversations,
                log: caches.reply_events,
                leases: caches.reply_leases,
                generator: reply_generator(config)?,
                cache: caches.reads,
                clock: clock.clone(),
            },
            ConversationSettings {
                max_messages: config.conversation_max_messages,
                max_message_bytes: usize::try_from(config.message_max_bytes)?,
                max_replies_in_flight: config.replies_in_flight,
                ..ConversationSettings::new(resume_secret(&jwt_secret))
            },
        ));
        let identity = IdentityService::new(
            IdentityPorts {
                accounts: stores.accounts,
                sessions: stores.sessions,
                shared_cache: caches.shared,
                clock: clock.clone(),
                events: Arc::new(AccountEventsFanOut::new(vec![
                    catalog.clone(),
                    conversations.clone(),
                ])),
            },
            IdentitySettings {
                jwt_secret,
                access_token_ttl: config.access_token_ttl,
                refresh_token_ttl: config.refresh_token_ttl,
                max_concurrent_hashes: std::thread::available_parallelism().map_or(1, usize::from),
            },
        )
        .context("cannot start the identity service")
        .map(Arc::new)?;
        let idempotency = Arc::new(IdempotencyService::new(
            stores.idempotency,
            clock,
            IdempotencySettings::default(),
        ));
        let rate_limits = config.rate_limits();
        let rate_limits = (!rate_limits.is_off()).then(|| {
            Arc::new(RateLimitService::new(caches.rate_limiter, rate_limits))
                as Arc<dyn RateLimitUseCases>
        });
        let upkeep = [
            tokio::spawn({
                let identity = identity.clone();
                async move { identity.keep_revocations_in_sync().await }
            }),
            tokio::spawn({
                let idempotency = idempotency.clone();
                async move { idempotency.keep_pruned().await }
            }),
            tokio::spawn(conversations.clone().keep_replies_going()),
        ];
        Ok(Self {
            database: database.clone(),
            upkeep: Arc::new(upkeep),
            identity,
            catalog,
            conversations,
            idempotency,
            health: Arc::new(HealthService::new(vec![stores.probe], vec![caches.probe])),
            rate_limits,
        })
    }

    /// Winds down what outlives requests, within `grace`: replies in flight
    /// are handed over to other instances or finished (see
    /// [`ConversationService::shut_down`]). Call it when the server is
    /// told to stop, while it drains its requests.
    pub async fn shut_down(&self, grace: std::time::Duration) {
        self.conversations.shut_down(grace).await;
    }

    /// Stops the background work and closes the database; call it once
    /// nothing serves requests any more.
    pub async fn close(&self) {
        for task in self.upkeep.iter() {
            task.abort();
        }
        self.database.close().await;
    }

    /// The identity use cases, for the CLI.
    pub fn identity(&self) -> Arc<dyn IdentityUseCases> {
        self.identity.clone()
    }

    /// The catalog use cases, for the CLI.
    pub fn catalog(&self) -> Arc<dyn CatalogUseCases> {
        self.catalog.clone()
    }

    /// The rate limits the edge applies; `None` when every policy is off.
    pub fn rate_limits(&self) -> Option<Arc<dyn RateLimitUseCases>> {
        self.rate_limits.clone()
    }

    /// What the HTTP adapter needs.
    pub fn http_state(&self) -> HttpState {
        HttpState {
            identity: self.identity.clone(),
            catalog: self.catalog.clone(),
            conversations: self.conversations.clone(),
            idempotency: self.idempotency.clone(),
            health: self.health.clone(),
        }
    }
}
