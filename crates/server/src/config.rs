//! Configuration: command-line flags, each backed by an environment variable
//! (12-factor), parsed and validated before anything starts.
//!
//! A bad value stops start-up with one line naming the variable, because each
//! flag's value name *is* its variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use waiter_assistant::Url;
use waiter_http::edge::{CorsOrigins, TrustedProxies};
use waiter_ports::rate_limit::{Policy, Quota};
use waiter_services::{JwtSecret, RateLimitSettings};

/// Waiter: a REST/JSON API server for accounts, books and conversations.
#[derive(Debug, Parser)]
#[command(name = "waiter", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What to do; `serve` when omitted.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run migrations, then serve HTTP until SIGTERM or Ctrl-C.
    Serve,
    /// Run the database migrations and exit.
    Migrate,
    /// Print the OpenAPI document as JSON.
    Openapi,
    /// Administer accounts.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Load generated data, for trying things out and for benchmarks.
    #[command(subcommand)]
    Seed(SeedCommand),
}

/// What to generate.
#[derive(Debug, Subcommand)]
pub enum SeedCommand {
    /// Add varied, realistic books owned by an existing account.
    Books(SeedBooks),
}

/// How many books, and whose.
#[derive(Debug, Args)]
pub struct SeedBooks {
    /// How many books to add.
    #[arg(long, default_value_t = 1000)]
    pub count: usize,
    /// The email of the account that will own them (it must exist).
    #[arg(long)]
    pub owner: String,
    /// Seed of the generator: the same seed gives the same books.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Operator commands on accounts.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create an admin account, or promote an existing account to admin.
    ///
    /// A new account's password comes from WAITER_ADMIN_PASSWORD, or else
    /// from the first line of standard input.
    Create(AdminCreate),
}

/// The account to create or promote.
#[derive(Debug, Args)]
pub struct AdminCreate {
    /// The account's email.
    #[arg(long)]
    pub email: String,
    /// The display name of a new account.
    #[arg(long, default_value = "Administrator")]
    pub display_name: String,
}

/// Where logs go and how they look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable, for development.
    Pretty,
    /// One JSON object per line, for production.
    Json,
}

/// Settings shared by every command.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// The address to listen on.
    #[arg(
        long,
        global = true,
        env = "WAITER_ADDR",
        value_name = "WAITER_ADDR",
        default_value = "127.0.0.1:8080"
    )]
    pub addr: SocketAddr,

    /// Holds the SQLite database and the generated signing key.
    #[arg(
        long,
        global = true,
        env = "WAITER_DATA_DIR",
        value_name = "WAITER_DATA_DIR",
        default_value = "./data"
    )]
    pub data_dir: PathBuf,

    /// `postgres://…` selects PostgreSQL, `sqlite:…` a SQLite file; default: SQLite in the data dir.
    #[arg(long, global = true, env = "DATABASE_URL", value_name = "DATABASE_URL", value_parser = parse_database_url)]
    pub database_url: Option<DatabaseUrl>,

    /// `redis://…` selects Redis as the shared cache; default: in-process.
    #[arg(long, global = true, env = "REDIS_URL", value_name = "REDIS_URL", value_parser = parse_redis_url)]
    pub redis_url: Option<String>,

    /// Prefix for every Redis key, so several deployments can share a server.
    #[arg(
        long,
        global = true,
        env = "WAITER_REDIS_PREFIX",
        value_name = "WAITER_REDIS_PREFIX",
        default_value = "waiter:"
    )]
    pub redis_prefix: String,

    /// The HS256 signing key for access tokens, at least 32 bytes; default:
    /// generated on first start and kept in the data dir.
    #[arg(long, global = true, env = "WAITER_JWT_SECRET", value_name = "WAITER_JWT_SECRET", value_parser = parse_jwt_secret, hide_env_values = true)]
    pub jwt_secret: Option<JwtSecret>,

    /// Access token lifetime, such as `15m`.
    #[arg(long, global = true, env = "WAITER_ACCESS_TOKEN_TTL", value_name = "WAITER_ACCESS_TOKEN_TTL", default_value = "15m", value_parser = parse_ttl)]
    pub access_token_ttl: Duration,

    /// Refresh token lifetime, renewed on each refresh, such as `30d`.
    #[arg(long, global = true, env = "WAITER_REFRESH_TOKEN_TTL", value_name = "WAITER_REFRESH_TOKEN_TTL", default_value = "30d", value_parser = parse_ttl)]
    pub refresh_token_ttl: Duration,

    /// Log filter in `tracing` syntax, such as `info` or `waiter=debug,info`.
    #[arg(
        long,
        global = true,
        env = "WAITER_LOG",
        value_name = "WAITER_LOG",
        default_value = "info"
    )]
    pub log: String,

    /// `pretty` for people, `json` for log collectors.
    #[arg(
        long,
        global = true,
        env = "WAITER_LOG_FORMAT",
        value_name = "WAITER_LOG_FORMAT",
        value_enum,
        default_value = "pretty"
    )]
    pub log_format: LogFormat,

    /// HTTP worker threads; default: one per CPU.
    #[arg(
        long,
        global = true,
        env = "WAITER_WORKERS",
        value_name = "WAITER_WORKERS"
    )]
    pub workers: Option<std::num::NonZeroUsize>,

    /// Origins allowed to call the API from a browser (CORS), comma-separated,
    /// each exactly `scheme://host[:port]`; empty: no CORS.
    #[arg(long, global = true, env = "WAITER_CORS_ORIGINS", value_name = "WAITER_CORS_ORIGINS", default_value = "", value_parser = parse_cors_origins)]
    pub cors_origins: CorsOrigins,

    /// Reverse proxies (addresses or CIDR networks, comma-separated) whose
    /// `X-Forwarded-For` hop names the client; empty: the header is ignored.
    #[arg(long, global = true, env = "WAITER_TRUSTED_PROXIES", value_name = "WAITER_TRUSTED_PROXIES", default_value = "", value_parser = parse_trusted_proxies)]
    pub trusted_proxies: TrustedProxies,

    /// Requests per client (the account, else the address): `N/window` or `off`.
    #[arg(long, global = true, env = "WAITER_RATE_LIMIT_CLIENT", value_name = "WAITER_RATE_LIMIT_CLIENT", default_value = "300/1m", value_parser = parse_rate_limit)]
    pub rate_limit_client: RateLimit,

    /// Sign-in attempts per email and client address, reset by a success.
    #[arg(long, global = true, env = "WAITER_RATE_LIMIT_SIGN_IN", value_name = "WAITER_RATE_LIMIT_SIGN_IN", default_value = "5/5m", value_parser = parse_rate_limit)]
    pub rate_limit_sign_in: RateLimit,

    /// Sign-in attempts per client address, whatever the email.
    #[arg(long, global = true, env = "WAITER_RATE_LIMIT_SIGN_IN_ADDRESS", value_name = "WAITER_RATE_LIMIT_SIGN_IN_ADDRESS", default_value = "30/5m", value_parser = parse_rate_limit)]
    pub rate_limit_sign_in_address: RateLimit,

    /// Sign-ups per client address.
    #[arg(long, global = true, env = "WAITER_RATE_LIMIT_SIGN_UP", value_name = "WAITER_RATE_LIMIT_SIGN_UP", default_value = "10/1h", value_parser = parse_rate_limit)]
    pub rate_limit_sign_up: RateLimit,

    /// Token refreshes per session.
    #[arg(long, global = true, env = "WAITER_RATE_LIMIT_REFRESH", value_name = "WAITER_RATE_LIMIT_REFRESH", default_value = "10/1m", value_parser = parse_rate_limit)]
    pub rate_limit_refresh: RateLimit,

    /// Messages sent to the assistant per account (each starts a reply).
    #[arg(long, global = true, env = "WAITER_RATE_LIMIT_MESSAGES", value_name = "WAITER_RATE_LIMIT_MESSAGES", default_value = "20/1m", value_parser = parse_rate_limit)]
    pub rate_limit_messages: RateLimit,

    /// Where `/metrics` (Prometheus) is served, apart from the API; `off` disables it.
    #[arg(long, global = true, env = "WAITER_METRICS_ADDR", value_name = "WAITER_METRICS_ADDR", default_value = "127.0.0.1:9464", value_parser = parse_metrics_addr)]
    pub metrics_addr: MetricsAddr,

    /// An OpenAI-compatible API (`https://api.openai.com/v1`, a local
    /// llama.cpp or Ollama `…/v1`) that writes the assistant's replies;
    /// default: the built-in deterministic stand-in.
    #[arg(
        long,
        global = true,
        env = "WAITER_ASSISTANT_URL",
        value_name = "WAITER_ASSISTANT_URL"
    )]
    pub assistant_url: Option<Url>,

    /// The bearer key of WAITER_ASSISTANT_URL; never logged or shown.
    #[arg(
        long,
        global = true,
        env = "WAITER_ASSISTANT_API_KEY",
        value_name = "WAITER_ASSISTANT_API_KEY",
        hide_env_values = true,
        requires = "assistant_url"
    )]
    pub assistant_api_key: Option<String>,

    /// The model WAITER_ASSISTANT_URL is asked for.
    #[arg(
        long,
        global = true,
        env = "WAITER_ASSISTANT_MODEL",
        value_name = "WAITER_ASSISTANT_MODEL",
        default_value = "gpt-4o-mini"
    )]
    pub assistant_model: String,

    /// The built-in assistant's pause before each word, such as `20ms`.
    #[arg(long, global = true, env = "WAITER_ASSISTANT_DELAY", value_name = "WAITER_ASSISTANT_DELAY", default_value = "20ms", value_parser = parse_delay)]
    pub assistant_delay: Duration,

    /// The most messages one conversation may hold.
    #[arg(long, global = true, env = "WAITER_CONVERSATION_MAX_MESSAGES", value_name = "WAITER_CONVERSATION_MAX_MESSAGES", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(2..))]
    pub conversation_max_messages: u32,

    /// The most replies one account may have in progress at once, across
    /// its conversations; a send over it is 429.
    #[arg(long, global = true, env = "WAITER_REPLIES_IN_FLIGHT", value_name = "WAITER_REPLIES_IN_FLIGHT", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub replies_in_flight: u32,

    /// The longest message a user may send, in bytes of UTF-8.
    #[arg(long, global = true, env = "WAITER_MESSAGE_MAX_BYTES", value_name = "WAITER_MESSAGE_MAX_BYTES", default_value_t = 32 * 1024, value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    pub message_max_bytes: u32,

    /// PEM certificate chain: with WAITER_TLS_KEY, serve HTTPS (HTTP/2 by ALPN).
    #[arg(
        long,
        global = true,
        env = "WAITER_TLS_CERT",
        value_name = "WAITER_TLS_CERT",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of WAITER_TLS_CERT.
    #[arg(
        long,
        global = true,
        env = "WAITER_TLS_KEY",
        value_name = "WAITER_TLS_KEY",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
}

impl Config {
    /// The quota of every rate limit policy.
    pub fn rate_limits(&self) -> RateLimitSettings {
        [
            (Policy::Client, self.rate_limit_client),
            (Policy::SignIn, self.rate_limit_sign_in),
            (Policy::SignInAddress, self.rate_limit_sign_in_address),
            (Policy::SignUp, self.rate_limit_sign_up),
            (Policy::Refresh, self.rate_limit_refresh),
            (Policy::Messages, self.rate_limit_messages),
        ]
        .into_iter()
        .fold(RateLimitSettings::off(), |settings, (policy, limit)| {
            settings.with(policy, limit.0)
        })
    }
}

/// One policy's quota, `None` when it is `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit(pub Option<Quota>);

/// `N/window` (`300/1m`, `5/15m`; the window in whole seconds) or `off`.
fn parse_rate_limit(raw: &str) -> Result<RateLimit, String> {
    if raw.trim().eq_ignore_ascii_case("off") {
        return Ok(RateLimit(None));
    }
    let (limit, window) = raw
        .split_once('/')
        .ok_or("must be `N/window`, such as `300/1m`, or `off`")?;
    let limit: u32 = limit
        .trim()
        .parse()
        .map_err(|_| format!("{limit:?} is not a whole number of requests"))?;
    let window = humantime::parse_duration(window.trim())
        .map_err(|err| format!("{err} (try `1m`, `15m` or `1h`)"))?;
    if window.subsec_nanos() != 0 {
        return Err("the window must be whole seconds".to_owned());
    }
    Quota::new(limit, window)
        .map(|quota| RateLimit(Some(quota)))
        .ok_or_else(|| {
            "the limit and the window must not be zero; say `off` to switch it off".to_owned()
        })
}

/// Where the metrics listener binds, if anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsAddr(pub Option<SocketAddr>);

fn parse_metrics_addr(raw: &str) -> Result<MetricsAddr, String> {
    if raw.trim().eq_ignore_ascii_case("off") {
        return Ok(MetricsAddr(None));
    }
    raw.trim()
        .parse()
        .map(|addr| MetricsAddr(Some(addr)))
        .map_err(|err| format!("{err}: must be `host:port` (such as 127.0.0.1:9464) or `off`"))
}

fn parse_cors_origins(raw: &str) -> Result<CorsOrigins, String> {
    CorsOrigins::parse(raw).map_err(|err| err.to_string())
}

fn parse_trusted_proxies(raw: &str) -> Result<TrustedProxies, String> {
    TrustedProxies::parse(raw).map_err(|err| err.to_string())
}

/// Which database a URL selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Postgres(String),
    Sqlite(String),
}

fn parse_database_url(raw: &str) -> Result<DatabaseUrl, String> {
    if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
        Ok(DatabaseUrl::Postgres(raw.to_owned()))
    } else if raw.starts_with("sqlite:") {
        Ok(DatabaseUrl::Sqlite(raw.to_owned()))
    } else {
        Err("must start with postgres://, postgresql:// or sqlite:".to_owned())
    }
}

fn parse_redis_url(raw: &str) -> Result<String, String> {
    if raw.starts_with("redis://") || raw.starts_with("rediss://") {
        Ok(raw.to_owned())
    } else {
        Err("must start with redis:// or rediss://".to_owned())
    }
}

fn parse_jwt_secret(raw: &str) -> Result<JwtSecret, String> {
    JwtSecret::new(raw.as_bytes()).map_err(|err| err.to_string())
}

fn parse_delay(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw).map_err(|err| format!("{err} (try `20ms` or `0s`)"))
}

fn parse_ttl(raw: &str) -> Result<Duration, String> {
    let ttl = humantime::parse_duration(raw)
        .map_err(|err| format!("{err} (try `15m`, `1h` or `30d`)"))?;
    if ttl < Duration::from_secs(1) {
        return Err("must be at least one second".to_owned());
    }
    Ok(ttl)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("waiter").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_serve_sqlite_on_localhost() {
        let cli = parse(&[]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.config.addr.to_string(), "127.0.0.1:8080");
        assert_eq!(cli.config.access_token_ttl, Duration::from_secs(15 * 60));
        assert_eq!(
            cli.config.refresh_token_ttl,
            Duration::from_secs(30 * 24 * 3600)
        );
        assert_eq!(cli.config.database_url, None);
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        let err = parse(&["--access-token-ttl", "soon"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("WAITER_ACCESS_TOKEN_TTL"), "{err}");
        let err = parse(&["--jwt-secret", "short"]).unwrap_err().to_string();
        assert!(
            err.contains("WAITER_JWT_SECRET") && err.contains("at least 32 bytes"),
            "{err}"
        );
        let err = parse(&["--database-url", "mysql://x"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("DATABASE_URL"), "{err}");
    }

    #[test]
    fn rate_limits_are_quotas_or_off() {
        let cli = parse(&[]).unwrap();
        let settings = cli.config.rate_limits();
        assert_eq!(
            settings.quota(Policy::Client),
            Quota::new(300, Duration::from_secs(60))
        );
        assert_eq!(
            settings.quota(Policy::SignIn),
            Quota::new(5, Duration::from_secs(300))
        );
        assert_eq!(
            settings.quota(Policy::Messages),
            Quota::new(20, Duration::from_secs(60))
        );
        let cli = parse(&["--rate-limit-sign-up", "off", "--rate-limit-client", "2/1s"]).unwrap();
        let settings = cli.config.rate_limits();
        assert_eq!(settings.quota(Policy::SignUp), None);
        let cli = parse(&["--rate-limit-messages", "off"]).unwrap();
        assert_eq!(cli.config.rate_limits().quota(Policy::Messages), None);
        let cli = parse(&["--rate-limit-messages", "3/10s"]).unwrap();
        assert_eq!(
            cli.config.rate_limits().quota(Policy::Messages),
            Quota::new(3, Duration::from_secs(10))
        );
        assert_eq!(
            settings.quota(Policy::Client),
            Quota::new(2, Duration::from_secs(1))
        );
        for bad in ["300", "0/1m", "10/0s", "10/1.5s", "x/1m", "10/soon"] {
            let err = parse(&["--rate-limit-client", bad])
                .unwrap_err()
                .to_string();
            assert!(err.contains("WAITER_RATE_LIMIT_CLIENT"), "{bad}: {err}");
        }
        let err = parse(&["--rate-limit-messages", "20"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("WAITER_RATE_LIMIT_MESSAGES"), "{err}");
    }

    #[test]
    fn edge_settings_name_their_variable_when_bad() {
        let cli = parse(&[]).unwrap();
        assert_eq!(
            cli.config.metrics_addr,
            MetricsAddr(Some("127.0.0.1:9464".parse().unwrap()))
        );
        assert!(cli.config.cors_origins.is_empty());
        let cli = parse(&["--metrics-addr", "off"]).unwrap();
        assert_eq!(cli.config.metrics_addr, MetricsAddr(None));
        for (flag, value, variable) in [
            ("--metrics-addr", "localhost", "WAITER_METRICS_ADDR"),
            ("--cors-origins", "*", "WAITER_CORS_ORIGINS"),
            ("--trusted-proxies", "10.0.0.0/40", "WAITER_TRUSTED_PROXIES"),
        ] {
            let err = parse(&[flag, value]).unwrap_err().to_string();
            assert!(err.contains(variable), "{err}");
        }
        let err = parse(&["--tls-cert", "cert.pem"]).unwrap_err().to_string();
        assert!(err.contains("WAITER_TLS_KEY"), "{err}");
    }

    #[test]
    fn conversations_default_to_the_built_in_assistant() {
        let cli = parse(&[]).unwrap();
        assert_eq!(cli.config.assistant_url, None);
        assert_eq!(cli.config.assistant_delay, Duration::from_millis(20));
        assert_eq!(cli.config.conversation_max_messages, 1000);
        assert_eq!(cli.config.message_max_bytes, 32 * 1024);
        assert_eq!(cli.config.replies_in_flight, 3);
        let err = parse(&["--assistant-api-key", "sk-secret"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("WAITER_ASSISTANT_URL"), "{err}");
        assert!(!err.contains("sk-secret"), "{err}");
        for (flag, value, variable) in [
            ("--assistant-url", "not a url", "WAITER_ASSISTANT_URL"),
            ("--assistant-delay", "slow", "WAITER_ASSISTANT_DELAY"),
            (
                "--conversation-max-messages",
                "1",
                "WAITER_CONVERSATION_MAX_MESSAGES",
            ),
            ("--message-max-bytes", "0", "WAITER_MESSAGE_MAX_BYTES"),
            ("--replies-in-flight", "0", "WAITER_REPLIES_IN_FLIGHT"),
        ] {
            let err = parse(&[flag, value]).unwrap_err().to_string();
            assert!(err.contains(variable), "{err}");
        }
    }

    #[test]
    fn postgres_urls_select_postgres() {
        let cli = parse(&["--database-url", "postgres://localhost/w"]).unwrap();
        assert_eq!(
            cli.config.database_url,
            Some(DatabaseUrl::Postgres("postgres://localhost/w".into()))
        );
    }
}
