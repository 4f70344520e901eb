//! `cargo xtask bench`: Waiter's hot paths side by side with the framework's
//! own ceiling, measured in one run on one machine.
//!
//! It builds, in one release build, the `waiter` binary and `bench-ceiling`
//! (a bare actix-web app with the same actix features, answering the same
//! paths with fixed JSON), and starts them side by side on loopback ports:
//!
//! - the bare app, the ceiling every ratio is taken against;
//! - Waiter on the embedded default (SQLite, in-process cache and limits);
//! - Waiter on PostgreSQL and Redis (a scratch database, a key prefix of its own);
//! - with `--baseline [LABEL=]PATH` (as often as wanted), other `waiter`
//!   binaries (say, main's) in both configurations too, so a change is
//!   judged against the code it changes in the same run rather than against
//!   figures from a quieter hour.
//!
//! Waiter runs as in production: JSON request logs on (`info`), written to a
//! file; the metrics listener on; every rate limit on, the per-client one
//! raised so that the bench's one client is counted but never refused. Each
//! Waiter gets an admin account and `--books N` seeded books before it
//! starts; the bench then signs in over HTTP and reads one book twice, so
//! that it is cached.
//!
//! For each request, every target in turn is loaded by `wrk` (`-t2 -c64
//! -d10s` by default) on the same machine, the targets one after the other so
//! that a ratio compares figures taken within a minute of each other:
//!
//! - `GET /api/v1/books/{id}`, cached;
//! - `GET /api/v1/accounts/me`, with a bearer token;
//! - `GET /api/v1/books?limit=10`, the first page, which is never cached;
//! - `POST /api/v1/books`, a different book (title and ISBN) each time.
//!
//! It prints a table per round (`--rounds N`, and then the medians of all
//! rounds): requests per second with the ratio to the ceiling, the p50
//! and p99 latencies `wrk` reports, and the CPU time the server's process
//! spent per request (from `/proc`), which a machine busy with other work
//! disturbs far less than the rate. Answers other than 2xx and socket errors
//! are shown in the cell they happened in. Last it compares each Waiter's
//! request log with the requests `wrk` saw answered: a log line is owed for
//! every request. Everything it creates it removes, unless `--keep` is given.

use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::bench::{Server, postgres, run};
use crate::{Result, root};

/// The admin account every Waiter is seeded with, which the bench signs in as.
const EMAIL: &str = "bench@example.com";
const PASSWORD: &str = "a benchmark password";
/// The books per page of the list the bench loads.
const PAGE_SIZE: u32 = 10;
/// The unit of `/proc/PID/stat`'s CPU times (`getconf CLK_TCK`), 100 on
/// every Linux this runs on.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;
/// How far apart the ISBN numbers of two wrk threads start, in one POST run:
/// more books than one thread could create in it.
const ISBNS_PER_THREAD: u64 = 1_000_000;

/// Makes each `POST /api/v1/books` of a wrk run a different book: its ISBN
/// (prefix `979`, which the seeded books never use) is a counter from the
/// number given after `--`, a range of its own per wrk thread.
const CREATE_BOOK_SCRIPT: &str = r#"
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local threads = 0
function setup(thread)
  thread:set("thread_index", threads)
  threads = threads + 1
end
function init(args)
  number = tonumber(args[1]) + thread_index * tonumber(args[2])
end
function request()
  number = number + 1
  local digits = string.format("979%09d", number)
  local sum = 0
  for i = 1, 12 do
    local weight = (i % 2 == 0) and 3 or 1
    sum = sum + (string.byte(digits, i) - 48) * weight
  end
  local isbn = digits .. ((10 - sum % 10) % 10)
  local body = '{"title":"Bench book ' .. number .. '","author":"Bench Author","isbn":"'
    .. isbn .. '","published_date":"2001-02-03","price":12.5}'
  return wrk.format(nil, nil, nil, body)
end
"#;

struct Options {
    duration: String,
    threads: u32,
    connections: u32,
    rounds: usize,
    books: u64,
    /// The PostgreSQL server; the bench creates a scratch database on it.
    postgres: String,
    redis: String,
    setups: Vec<Setup>,
    /// Other `waiter` binaries to measure beside this one, with their labels.
    baselines: Vec<(String, PathBuf)>,
    keep: bool,
}

const HELP: &str = "use --duration 10s, --threads N, --connections N, --rounds N, --books N, \
     --postgres URL, --redis URL, --only bare,embedded,postgres, --baseline [LABEL=]PATH, --keep";

fn parse(args: &[&str]) -> Result<Options> {
    let mut options = Options {
        duration: "10s".to_owned(),
        threads: 2,
        connections: 64,
        rounds: 1,
        books: 10_000,
        postgres: "postgres://postgres@127.0.0.1:5432".to_owned(),
        redis: "redis://127.0.0.1:6379".to_owned(),
        setups: vec![Setup::Bare, Setup::Embedded, Setup::PostgresRedis],
        baselines: Vec::new(),
        keep: false,
    };
    fn number<T: std::str::FromStr>(value: Option<&&str>, flag: &str) -> Result<T> {
        value
            .and_then(|raw| raw.parse().ok())
            .ok_or_else(|| format!("{flag} needs a number"))
    }
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match *arg {
            "--duration" => {
                let raw = args
                    .next()
                    .ok_or("--duration needs a duration such as 10s")?;
                if !raw.ends_with(['s', 'm', 'h']) {
                    return Err("--duration needs a unit, as wrk takes it: 10s, 1m".to_owned());
                }
                options.duration = (*raw).to_owned();
            }
            "--threads" => options.threads = number(args.next(), "--threads")?,
            "--connections" => options.connections = number(args.next(), "--connections")?,
            "--rounds" => options.rounds = number(args.next(), "--rounds")?,
            "--books" => options.books = number(args.next(), "--books")?,
            "--postgres" => {
                options.postgres = args.next().ok_or("--postgres needs a URL")?.to_string()
            }
            "--redis" => options.redis = args.next().ok_or("--redis needs a URL")?.to_string(),
            "--only" => {
                let list = args.next().ok_or("--only needs a list")?;
                options.setups = list
                    .split(',')
                    .map(|name| match name.trim() {
                        "bare" => Ok(Setup::Bare),
                        "embedded" => Ok(Setup::Embedded),
                        "postgres" => Ok(Setup::PostgresRedis),
                        other => Err(format!(
                            "--only takes bare, embedded and postgres, not {other:?}"
                        )),
                    })
                    .collect::<Result<_>>()?;
            }
            "--baseline" => {
                let raw = args
                    .next()
                    .ok_or("--baseline needs the path of a waiter binary")?;
                let (label, path) = match raw.split_once('=') {
                    Some((label, path)) => (label.to_owned(), path),
                    None => (format!("baseline {}", options.baselines.len() + 1), *raw),
                };
                let path = std::fs::canonicalize(path)
                    .map_err(|err| format!("--baseline {path}: {err}"))?;
                options.baselines.push((label, path));
            }
            "--keep" => options.keep = true,
            other => return Err(format!("unknown bench option {other}; {HELP}")),
        }
    }
    if options.threads == 0 || options.connections < options.threads || options.rounds == 0 {
        return Err(format!(
            "--threads, --rounds and --connections must be positive, with a connection per thread; {HELP}"
        ));
    }
    if !options.setups.contains(&Setup::Bare) {
        return Err("the bare app is the ceiling every ratio needs: keep `bare` in --only".into());
    }
    Ok(options)
}

/// How a target is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setup {
    Bare,
    Embedded,
    PostgresRedis,
}

/// One server the bench loads.
struct Target {
    /// Its column header.
    name: String,
    addr: SocketAddr,
    /// A book that exists (and is cached), and a bearer token of the admin.
    book_id: String,
    token: String,
    /// Where its request log goes (Waiter only).
    log: Option<PathBuf>,
    /// Ends the process when the bench is done with it.
    server: Server,
}

/// The requests measured.
#[derive(Debug, Clone, Copy)]
enum Request {
    CachedBook,
    OwnAccount,
    FirstPage,
    CreateBook,
}

const REQUESTS: [Request; 4] = [
    Request::CachedBook,
    Request::OwnAccount,
    Request::FirstPage,
    Request::CreateBook,
];

impl Request {
    fn label(self) -> &'static str {
        match self {
            Request::CachedBook => "`GET /api/v1/books/{id}` (cached)",
            Request::OwnAccount => "`GET /api/v1/accounts/me`",
            Request::FirstPage => "`GET /api/v1/books?limit=10` (uncached)",
            Request::CreateBook => "`POST /api/v1/books`",
        }
    }

    fn path(self, target: &Target) -> String {
        match self {
            Request::CachedBook => format!("/api/v1/books/{}", target.book_id),
            Request::OwnAccount => "/api/v1/accounts/me".to_owned(),
            Request::FirstPage => format!("/api/v1/books?limit={PAGE_SIZE}"),
            Request::CreateBook => "/api/v1/books".to_owned(),
        }
    }

    fn authenticated(self) -> bool {
        matches!(self, Request::OwnAccount | Request::CreateBook)
    }
}

/// What one wrk run measured.
#[derive(Debug, Clone, Default)]
struct Load {
    requests_per_second: f64,
    /// `requests_per_second` over the bare app's, for the same request in the same round.
    ratio: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Responses answered in that time (wrk's count).
    answered: u64,
    /// The CPU time the server's process spent per answered request, in
    /// microseconds: less at the mercy of a busy machine than the rate,
    /// which also depends on the share of the cores the server got. On
    /// PostgreSQL + Redis it leaves out their own processes.
    cpu_us: f64,
    /// Answers other than 2xx or 3xx, and socket errors.
    non_2xx: u64,
    socket_errors: u64,
}

/// Everything created for one run, removed when it ends (unless kept).
struct Scratch {
    dir: PathBuf,
    databases: Vec<String>,
    redis_prefixes: Vec<String>,
    redis: String,
    keep: bool,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("kept {} and its databases", self.dir.display());
            return;
        }
        for database in &self.databases {
            let _ = postgres("dropdb", database)
                .args(["--if-exists", "--force"])
                .status();
        }
        for prefix in &self.redis_prefixes {
            if let Err(err) = redis_cleanup(&self.redis, prefix) {
                eprintln!("could not remove the Redis keys under {prefix}: {err}");
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(crate) fn bench(args: &[&str]) -> Result {
    let options = parse(args)?;
    Command::new("wrk")
        .arg("--version")
        .output()
        .map_err(|_| "wrk is not installed (apt-get install -y wrk)".to_owned())?;
    crate::cargo(&[
        "build",
        "--release",
        "--package",
        "waiter",
        "--package",
        "bench-ceiling",
    ])?;
    let release = root().join("target/release");
    let run_id = format!("{}-{}", std::process::id(), unix_seconds());
    let mut scratch = Scratch {
        dir: std::env::temp_dir().join(format!("waiter-bench-{run_id}")),
        databases: Vec::new(),
        redis_prefixes: Vec::new(),
        redis: options.redis.clone(),
        keep: options.keep,
    };
    std::fs::create_dir_all(&scratch.dir).map_err(|err| err.to_string())?;
    let script = scratch.dir.join("create_book.lua");
    std::fs::write(&script, CREATE_BOOK_SCRIPT).map_err(|err| err.to_string())?;

    let mut binaries = vec![("Waiter".to_owned(), release.join("waiter"))];
    binaries.extend(options.baselines.iter().cloned());
    let mut targets = vec![bare(&release.join("bench-ceiling"))?];
    for setup in [Setup::Embedded, Setup::PostgresRedis] {
        if !options.setups.contains(&setup) {
            continue;
        }
        for (index, (label, binary)) in binaries.iter().enumerate() {
            let name = match setup {
                Setup::Embedded => format!("{label}, embedded"),
                _ => format!("{label}, PostgreSQL + Redis"),
            };
            let instance = format!("{run_id}-{index}");
            targets.push(waiter(
                &options,
                &mut scratch,
                setup,
                name,
                binary,
                &instance,
            )?);
        }
    }
    // The bare app has no accounts; it is sent the same header as Waiter.
    let token = targets
        .get(1)
        .map(|target| target.token.clone())
        .unwrap_or_default();
    targets[0].token = token;

    let mut rounds = Vec::with_capacity(options.rounds);
    for round in 0..options.rounds {
        let mut loads = Vec::with_capacity(REQUESTS.len());
        for request in REQUESTS {
            let mut row = Vec::with_capacity(targets.len());
            for target in &targets {
                let cpu_before = cpu_seconds(target.server.0.id())?;
                let mut load = wrk(&options, target, request, &script, round)?;
                let cpu = cpu_seconds(target.server.0.id())? - cpu_before;
                load.cpu_us = cpu * 1e6 / load.answered.max(1) as f64;
                eprintln!(
                    "{} on {}: {:.0} req/s",
                    request.label(),
                    target.name,
                    load.requests_per_second
                );
                row.push(load);
            }
            let ceiling = row[0].requests_per_second;
            for load in &mut row {
                load.ratio = load.requests_per_second / ceiling;
            }
            loads.push(row);
        }
        println!(
            "\nround {} of {}:\n\n{}",
            round + 1,
            options.rounds,
            table(&options, &targets, &loads)
        );
        rounds.push(loads);
    }
    if options.rounds > 1 {
        let medians = medians(&rounds);
        println!(
            "\nmedians of {} rounds (each ratio the median of the rounds' ratios):\n\n{}",
            options.rounds,
            table(&options, &targets, &medians)
        );
    }
    check_logs(&targets, &rounds)
}

/// Starts the ceiling on a free port.
fn bare(binary: &Path) -> Result<Target> {
    let addr = free_port()?;
    let server = Server(
        Command::new(binary)
            .arg(addr.to_string())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|err| format!("cannot start {}: {err}", binary.display()))?,
    );
    wait_until_answering(addr, "/api/v1/accounts/me")?;
    Ok(Target {
        name: "bare actix-web".to_owned(),
        addr,
        book_id: "book_01JD0W5ZK3J2S8Q4V6X7Y9ZABC".to_owned(),
        token: String::new(),
        log: None,
        server,
    })
}

/// Seeds and starts one Waiter, signs in and caches a book.
fn waiter(
    options: &Options,
    scratch: &mut Scratch,
    setup: Setup,
    name: String,
    binary: &Path,
    instance: &str,
) -> Result<Target> {
    let addr = free_port()?;
    let metrics = free_port()?;
    let slug = match setup {
        Setup::Embedded => format!("embedded-{instance}"),
        _ => format!("postgres-{instance}"),
    };
    let data_dir = scratch.dir.join(&slug);
    let log = scratch.dir.join(format!("{slug}.log"));
    let mut env: Vec<(&str, String)> = vec![
        ("WAITER_ADDR", addr.to_string()),
        ("WAITER_DATA_DIR", data_dir.display().to_string()),
        ("WAITER_METRICS_ADDR", metrics.to_string()),
        ("WAITER_LOG_FORMAT", "json".to_owned()),
        ("WAITER_ACCESS_TOKEN_TTL", "24h".to_owned()),
        // One client sends every request: the limit counts each one (its
        // cost is part of the figures) but never refuses.
        ("WAITER_RATE_LIMIT_CLIENT", "1000000000/1m".to_owned()),
    ];
    if setup == Setup::PostgresRedis {
        let database = format!("waiter_bench_{}", slug.replace('-', "_"));
        run(&mut postgres("createdb", &database))?;
        scratch.databases.push(database.clone());
        let prefix = format!("waiter-bench-{slug}:");
        scratch.redis_prefixes.push(prefix.clone());
        let url = format!("{}/{database}", options.postgres.trim_end_matches('/'));
        env.extend([
            ("DATABASE_URL", url),
            ("REDIS_URL", options.redis.clone()),
            ("WAITER_REDIS_PREFIX", prefix),
        ]);
    }
    // Only what the bench sets: none of the caller's WAITER_* settings.
    let command = |log: &str| {
        let mut command = Command::new(binary);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("WAITER_LOG", log)
            .envs(env.iter().map(|(key, value)| (key, value)));
        command
    };
    let quiet = |mut command: Command| {
        command.stdout(Stdio::null());
        command
    };
    run(quiet(command("warn"))
        .args(["admin", "create", "--email", EMAIL])
        .env("WAITER_ADMIN_PASSWORD", PASSWORD))?;
    run(quiet(command("warn")).args([
        "seed",
        "books",
        "--count",
        &options.books.to_string(),
        "--owner",
        EMAIL,
    ]))?;
    if setup == Setup::PostgresRedis {
        let database = scratch.databases.last().cloned().unwrap_or_default();
        run(postgres("psql", &database).args(["-qc", "VACUUM ANALYZE books"]))?;
    }
    let log_file = std::fs::File::create(&log).map_err(|err| err.to_string())?;
    let server = Server(
        command("info")
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|err| format!("cannot start {}: {err}", binary.display()))?,
    );
    wait_until_answering(addr, "/readyz")?;
    let tokens = expect(
        201,
        call(
            addr,
            "POST",
            "/api/v1/sessions",
            None,
            Some(&json!({"email": EMAIL, "password": PASSWORD})),
        ),
    )?;
    let token = tokens["access_token"]
        .as_str()
        .ok_or("the sign-in answered no access_token")?
        .to_owned();
    let page = expect(200, call(addr, "GET", "/api/v1/books?limit=1", None, None))?;
    let book_id = page["items"][0]["id"]
        .as_str()
        .ok_or("the seeded catalog is empty")?
        .to_owned();
    for _ in 0..2 {
        expect(
            200,
            call(addr, "GET", &format!("/api/v1/books/{book_id}"), None, None),
        )?;
    }
    eprintln!("{name} is serving on {addr}, logging to {}", log.display());
    Ok(Target {
        name,
        addr,
        book_id,
        token,
        log: Some(log),
        server,
    })
}

/// Loads `target` with `request` for the configured duration.
fn wrk(
    options: &Options,
    target: &Target,
    request: Request,
    script: &Path,
    round: usize,
) -> Result<Load> {
    let mut command = Command::new("wrk");
    command
        .arg(format!("-t{}", options.threads))
        .arg(format!("-c{}", options.connections))
        .arg(format!("-d{}", options.duration))
        .arg("--latency");
    if request.authenticated() {
        command
            .arg("-H")
            .arg(format!("Authorization: Bearer {}", target.token));
    }
    if matches!(request, Request::CreateBook) {
        command.arg("-s").arg(script);
    }
    command.arg(format!("http://{}{}", target.addr, request.path(target)));
    if matches!(request, Request::CreateBook) {
        let threads = u64::from(options.threads);
        let start = round as u64 * threads * ISBNS_PER_THREAD;
        command
            .arg("--")
            .arg(start.to_string())
            .arg(ISBNS_PER_THREAD.to_string());
    }
    let output = command
        .output()
        .map_err(|err| format!("cannot run wrk: {err}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "wrk failed: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    parse_wrk(&text).ok_or_else(|| format!("cannot read wrk's report:\n{text}"))
}

/// The figures of wrk's `--latency` report.
fn parse_wrk(text: &str) -> Option<Load> {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let after = |prefix: &str| {
        lines
            .iter()
            .find_map(|line| line.strip_prefix(prefix))
            .map(str::trim)
    };
    let rate = after("Requests/sec:")?.parse().ok()?;
    let percentile = |which: &str| milliseconds(after(which)?);
    let answered = lines
        .iter()
        .find(|line| line.contains(" requests in "))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let non_2xx = after("Non-2xx or 3xx responses:").map_or(Some(0), |n| n.parse().ok())?;
    // "Socket errors: connect 0, read 0, write 0, timeout 0"
    let socket_errors = after("Socket errors:").map_or(0, |errors| {
        errors
            .split(',')
            .filter_map(|part| part.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum()
    });
    Some(Load {
        requests_per_second: rate,
        ratio: 1.0,
        p50_ms: percentile("50%")?,
        p99_ms: percentile("99%")?,
        cpu_us: 0.0,
        answered,
        non_2xx,
        socket_errors,
    })
}

/// wrk's `520.00us`, `2.10ms` or `1.02s`, in milliseconds.
fn milliseconds(text: &str) -> Option<f64> {
    let (number, scale) = if let Some(us) = text.strip_suffix("us") {
        (us, 0.001)
    } else if let Some(ms) = text.strip_suffix("ms") {
        (ms, 1.0)
    } else if let Some(m) = text.strip_suffix('m') {
        (m, 60_000.0)
    } else {
        (text.strip_suffix('s')?, 1000.0)
    };
    number.parse::<f64>().ok().map(|n| n * scale)
}

/// Each cell's median over the rounds, its ratio included: the median of
/// the rounds' ratios, each taken within its round.
fn medians(rounds: &[Vec<Vec<Load>>]) -> Vec<Vec<Load>> {
    let first = &rounds[0];
    first
        .iter()
        .enumerate()
        .map(|(request, row)| {
            (0..row.len())
                .map(|target| {
                    let cells: Vec<&Load> = rounds.iter().map(|r| &r[request][target]).collect();
                    let of = |figure: fn(&Load) -> f64| median(cells.iter().map(|c| figure(c)));
                    Load {
                        requests_per_second: of(|c| c.requests_per_second),
                        ratio: of(|c| c.ratio),
                        p50_ms: of(|c| c.p50_ms),
                        p99_ms: of(|c| c.p99_ms),
                        cpu_us: of(|c| c.cpu_us),
                        answered: cells.iter().map(|c| c.answered).sum(),
                        non_2xx: cells.iter().map(|c| c.non_2xx).sum(),
                        socket_errors: cells.iter().map(|c| c.socket_errors).sum(),
                    }
                })
                .collect()
        })
        .collect()
}

/// The middle value, or the mean of the two middle values.
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// A markdown table: a row per request, a column per target.
fn table(options: &Options, targets: &[Target], loads: &[Vec<Load>]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "req/s (ratio to the bare app) · p50 / p99 · server CPU per request; wrk -t{} -c{} -d{}",
        options.threads, options.connections, options.duration
    );
    out.push('\n');
    out.push_str("| request |");
    for target in targets {
        let _ = write!(out, " {} |", target.name);
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(targets.len()));
    out.push('\n');
    for (request, row) in REQUESTS.iter().zip(loads) {
        let _ = write!(out, "| {} |", request.label());
        for (index, load) in row.iter().enumerate() {
            let ratio = if index == 0 {
                String::new()
            } else {
                format!(" ({:.0} %)", 100.0 * load.ratio)
            };
            let _ = write!(
                out,
                " {}{ratio} · {} / {} ms · {} µs",
                thousands(load.requests_per_second),
                decimals(load.p50_ms),
                decimals(load.p99_ms),
                thousands(load.cpu_us),
            );
            if load.non_2xx > 0 {
                let _ = write!(out, ", {} not 2xx", load.non_2xx);
            }
            if load.socket_errors > 0 {
                let _ = write!(out, ", {} socket errors", load.socket_errors);
            }
            out.push_str(" |");
        }
        out.push('\n');
    }
    out
}

/// `113089.4` as `113 089`.
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut grouped = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            grouped.push(' ');
        }
        grouped.push(digit);
    }
    grouped
}

/// Two significant decimals under 10, one under 100, none above.
fn decimals(value: f64) -> String {
    if value < 10.0 {
        format!("{value:.2}")
    } else if value < 100.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.0}")
    }
}

/// Fails unless each Waiter logged at least a line for every request wrk saw
/// answered (wrk does not count the answers still in flight when it stops,
/// so a log may hold a few more).
fn check_logs(targets: &[Target], rounds: &[Vec<Vec<Load>>]) -> Result {
    // Give a non-blocking writer time to drain.
    std::thread::sleep(Duration::from_millis(500));
    let mut lost = Vec::new();
    for (index, target) in targets.iter().enumerate() {
        let Some(log) = &target.log else { continue };
        let answered: u64 = rounds
            .iter()
            .flat_map(|round| round.iter().map(|row| row[index].answered))
            .sum();
        let text =
            std::fs::read_to_string(log).map_err(|err| format!("{}: {err}", log.display()))?;
        let logged = text
            .lines()
            .filter(|line| line.contains(r#""message":"request""#))
            .count() as u64;
        eprintln!(
            "{}: {logged} request log lines for {answered} requests wrk saw answered",
            target.name
        );
        if logged < answered {
            lost.push(format!("{} lost {} lines", target.name, answered - logged));
        }
    }
    if lost.is_empty() {
        Ok(())
    } else {
        Err(format!("request logs are incomplete: {}", lost.join("; ")))
    }
}

/// The CPU time (user and system) process `pid` has used, in seconds.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|err| format!("cannot read the CPU time of process {pid}: {err}"))?;
    // The command name, in parentheses, may hold spaces: fields count after it.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15, the 12th and 13th after the name.
    let ticks: f64 = fields
        .get(11..13)
        .ok_or_else(|| format!("an unexpected /proc/{pid}/stat: {stat}"))?
        .iter()
        .map(|field| field.parse::<f64>().unwrap_or(0.0))
        .sum();
    Ok(ticks / CLOCK_TICKS_PER_SECOND)
}

/// Polls `path` until it answers 200, for up to 30 s.
fn wait_until_answering(addr: SocketAddr, path: &str) -> Result {
    let ready = (0..300).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        matches!(call(addr, "GET", path, None, None), Ok((200, _)))
    });
    if ready {
        Ok(())
    } else {
        Err(format!("{addr} did not answer {path} within 30 s"))
    }
}

/// One request over a fresh connection: the status and the body. The server
/// closes the connection, so the body is what follows the head.
fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Result<(u16, String)> {
    let body = body.map(Value::to_string).unwrap_or_default();
    let authorization = token
        .map(|token| format!("Authorization: Bearer {token}\r\n"))
        .unwrap_or_default();
    let mut stream = TcpStream::connect(addr).map_err(|err| format!("{addr}: {err}"))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{authorization}\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|err| err.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|err| err.to_string())?;
    let status = response
        .get(9..12)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {response:?}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

fn expect(status: u16, response: Result<(u16, String)>) -> Result<Value> {
    let (got, body) = response?;
    if got != status {
        return Err(format!(
            "expected {status}, the server answered {got}: {body}"
        ));
    }
    serde_json::from_str(&body).map_err(|err| format!("{err}: {body}"))
}

fn free_port() -> Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map_err(|err| format!("cannot find a free port: {err}"))
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Deletes the keys under `prefix`, with `redis-cli`.
fn redis_cleanup(url: &str, prefix: &str) -> Result {
    let output = Command::new("redis-cli")
        .args(["-u", url, "--scan", "--pattern", &format!("{prefix}*")])
        .output()
        .map_err(|err| format!("cannot run redis-cli: {err}"))?;
    let keys = String::from_utf8_lossy(&output.stdout);
    let keys: Vec<&str> = keys.lines().filter(|key| !key.is_empty()).collect();
    for batch in keys.chunks(500) {
        run(Command::new("redis-cli")
            .args(["-u", url, "DEL"])
            .args(batch)
            .stdout(Stdio::null()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "Running 10s test @ http://127.0.0.1:8080/api/v1/books
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.02ms  612.31us  21.35ms   89.01%
    Req/Sec    31.52k     2.01k   36.10k    71.50%
  Latency Distribution
     50%  520.00us
     75%    1.10ms
     90%    1.80ms
     99%    1.02s
  627394 requests in 10.00s, 299.55MB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 17
Requests/sec:  62739.41
Transfer/sec:     29.95MB
";

    #[test]
    fn wrk_reports_are_read_in_milliseconds() {
        let load = parse_wrk(REPORT).expect("a full report");
        assert_eq!(load.requests_per_second, 62739.41);
        assert_eq!(load.p50_ms, 0.52);
        assert_eq!(load.p99_ms, 1020.0);
        assert_eq!(load.answered, 627_394);
        assert_eq!(load.non_2xx, 17);
        assert_eq!(load.socket_errors, 5);
    }

    #[test]
    fn a_report_without_errors_counts_none() {
        let clean: String = REPORT
            .lines()
            .filter(|line| !line.contains("errors") && !line.contains("Non-2xx"))
            .map(|line| format!("{line}\n"))
            .collect();
        let load = parse_wrk(&clean).expect("a full report");
        assert_eq!((load.non_2xx, load.socket_errors), (0, 0));
    }

    #[test]
    fn a_truncated_report_is_refused() {
        assert!(parse_wrk("Running 10s test @ http://127.0.0.1:8080/\n").is_none());
        assert!(milliseconds("12.5xs").is_none());
    }

    #[test]
    fn figures_are_grouped_and_rounded_for_reading() {
        assert_eq!(thousands(113_089.4), "113 089");
        assert_eq!(thousands(999.6), "1 000");
        assert_eq!(thousands(12.0), "12");
        assert_eq!(decimals(0.523), "0.52");
        assert_eq!(decimals(25.44), "25.4");
        assert_eq!(decimals(128.4), "128");
    }

    #[test]
    fn a_process_cpu_time_is_read_and_an_absent_process_is_an_error() {
        let started = cpu_seconds(std::process::id()).expect("this process's CPU time");
        let spin = std::time::Instant::now();
        while spin.elapsed() < Duration::from_millis(100) {}
        let spun = cpu_seconds(std::process::id()).expect("this process's CPU time");
        assert!(started >= 0.0 && spun > started, "{started} then {spun}");
        assert!(cpu_seconds(u32::MAX).is_err());
    }

    #[test]
    fn medians_take_the_middle_or_the_mean_of_the_two_middles() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), 2.0);
        assert_eq!(median([4.0, 1.0, 3.0, 2.0].into_iter()), 2.5);
        let round = |rate: f64, ratio: f64| {
            vec![vec![Load {
                requests_per_second: rate,
                ratio,
                ..Load::default()
            }]]
        };
        let cell = &medians(&[round(100.0, 0.5), round(300.0, 0.1), round(200.0, 0.3)])[0][0];
        assert_eq!((cell.requests_per_second, cell.ratio), (200.0, 0.3));
    }
}
