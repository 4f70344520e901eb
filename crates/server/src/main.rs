//! `waiter`: serve the API, migrate, export the OpenAPI document, or bootstrap an admin.

use std::io::{BufRead as _, BufWriter, IsTerminal as _};
use std::net::TcpListener;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser as _;
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;
use waiter::config::{AdminCommand, AdminCreate, LogFormat, SeedBooks, SeedCommand};
use waiter::{Application, Cli, Command, Config, Database, Serving, Wiring};
use waiter_domain::{DisplayName, Email, Password};
use waiter_ports::identity::AccountError;
use waiter_services::SystemClock;

/// mimalloc rather than the system allocator: every request allocates and
/// frees many small buffers (headers, JSON, log lines) across worker
/// threads, where glibc's malloc spent a tenth of the CPU of a cached read.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Lines the log writer may hold before a thread that logs waits for it: a
/// second of the busiest traffic, so waiting only happens when the disk
/// cannot keep up at all (and then no line is dropped).
const LOG_QUEUE_LINES: usize = 65_536;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_writer = init_tracing(&cli.config);
    let runtime = actix_web::rt::System::new();
    let outcome = runtime.block_on(run(cli));
    if let Err(err) = &outcome {
        tracing::error!("{err:#}");
    }
    // Writes out the queued log lines first, so that a failure's summary
    // below is the last line on stderr.
    drop(log_writer);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("waiter: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr through a thread of its own: the threads serving requests
/// format each line and queue it, the log thread writes them out, many lines
/// per `write` when they come fast. The queue never drops a line: when it is
/// full, whoever logs waits. The returned guard flushes it when dropped.
fn init_tracing(config: &Config) -> WorkerGuard {
    let filter = EnvFilter::try_new(&config.log).unwrap_or_else(|err| {
        eprintln!("waiter: WAITER_LOG is not a valid filter ({err}); using `info`");
        EnvFilter::new("info")
    });
    // The log thread flushes the buffer whenever the queue runs empty.
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .thread_name("waiter-log")
        .finish(BufWriter::new(std::io::stderr()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match config.log_format {
        // The request span (request id, method, route, client…) once, as
        // `span`: the list of enclosing spans would only repeat it.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_span_list(false)
            .init(),
        LogFormat::Pretty => builder.init(),
    }
    guard
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = cli.config;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(&config).await,
        Command::Migrate => {
            Database::connect(&config).await?.close().await;
            tracing::info!("migrations are up to date");
            Ok(())
        }
        Command::Openapi => {
            let document = waiter_http::openapi()
                .to_pretty_json()
                .context("cannot render the OpenAPI document")?;
            println!("{document}");
            Ok(())
        }
        Command::Admin(AdminCommand::Create(args)) => create_admin(&config, args).await,
        Command::Seed(SeedCommand::Books(args)) => seed_books(&config, args).await,
    }
}

/// Runs [`waiter::seed::seed_books`] and reports what it did.
async fn seed_books(config: &Config, args: SeedBooks) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let stored = waiter::seed::seed_books(config, &args).await?;
    println!(
        "added {stored} books (of {}) owned by {} in {:.1} s",
        args.count,
        args.owner,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn serve(config: &Config) -> anyhow::Result<()> {
    let serving = Serving::from_config(config)?;
    let scheme = if serving.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let metrics = serving
        .metrics
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()?;
    let wiring = Wiring::connect(config, Arc::new(SystemClock)).await?;
    let listener = TcpListener::bind(config.addr)
        .with_context(|| format!("cannot listen on WAITER_ADDR {}", config.addr))?;
    let app = Application::build(&wiring, listener, serving)?;
    tracing::info!(
        addr = %config.addr,
        docs = %format!("{scheme}://{}/docs/", config.addr),
        metrics = %metrics.map_or_else(|| "off".to_owned(), |addr| format!("http://{addr}/metrics")),
        "waiter is serving"
    );
    let served = app.run_until_stopped().await;
    wiring.close().await;
    served?;
    tracing::info!("waiter stopped");
    Ok(())
}

async fn create_admin(config: &Config, args: AdminCreate) -> anyhow::Result<()> {
    let email = Email::parse(&args.email).context("--email")?;
    let display_name = DisplayName::parse(&args.display_name).context("--display-name")?;
    let wiring = Wiring::connect(config, Arc::new(SystemClock)).await?;
    let password = admin_password()?;
    let account = wiring
        .identity()
        .bootstrap_admin(email, display_name, password)
        .await;
    wiring.close().await;
    let account = account.map_err(|err| match err {
        AccountError::PasswordRequired => {
            anyhow::anyhow!("{err}: give it in WAITER_ADMIN_PASSWORD or on standard input")
        }
        other => other.into(),
    })?;
    println!("{} is an admin ({})", account.email, account.id);
    Ok(())
}

/// The password for a new admin: `WAITER_ADMIN_PASSWORD`, else the first line
/// of stdin (empty when only promoting an existing account).
fn admin_password() -> anyhow::Result<Option<Password>> {
    let raw = match std::env::var("WAITER_ADMIN_PASSWORD") {
        Ok(password) => Some(password),
        Err(_) => {
            if std::io::stdin().is_terminal() {
                eprint!("Password for a new account (empty to only promote an existing one): ");
            }
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("cannot read the password from stdin")?;
            let line = line.trim_end_matches(['\r', '\n']).to_owned();
            (!line.is_empty()).then_some(line)
        }
    };
    raw.map(|raw| Password::parse(&raw).context("WAITER_ADMIN_PASSWORD"))
        .transpose()
}
