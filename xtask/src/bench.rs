//! `cargo xtask bench --catalog`: HTTP latency of the catalog on PostgreSQL with a
//! large seeded catalog, measured from outside the server.
//!
//! It builds the release binary, creates and seeds a scratch database (or
//! reuses one with `--reuse`), starts `waiter serve` on a loopback port, walks
//! 5 000 pages of 20 to find a deep keyset cursor, and then measures each
//! scenario twice: sequential single requests (p50/p99, one connection per
//! request) and, when `wrk` is installed, a short concurrent load. Everything
//! it creates it removes, unless `--keep` is given.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Result, root};

const ADDR: &str = "127.0.0.1:18090";
const PAGE_SIZE: u32 = 20;
const DEEP_PAGES: u32 = 5_000;
const SAMPLES: usize = 300;
const OWNER: &str = "bench@example.com";

struct Options {
    books: u64,
    database: String,
    reuse: bool,
    keep: bool,
}

fn parse(args: &[&str]) -> Result<Options> {
    let mut options = Options {
        books: 1_000_000,
        database: "waiter_bench".to_owned(),
        reuse: false,
        keep: false,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match *arg {
            "--books" => {
                options.books = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or("--books needs a number")?;
            }
            "--database" => {
                options.database = args.next().ok_or("--database needs a name")?.to_string()
            }
            "--reuse" => options.reuse = true,
            "--keep" => options.keep = true,
            other => {
                return Err(format!(
                    "unknown bench option {other}; use --books N, --database NAME, --reuse, --keep"
                ));
            }
        }
    }
    Ok(options)
}

pub(crate) fn run(command: &mut Command) -> Result {
    let status = command
        .status()
        .map_err(|err| format!("cannot run {command:?}: {err}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{command:?} failed ({status})"))
    }
}

/// `tool` (`psql`, `createdb`, `dropdb`) on the local PostgreSQL, for `database`.
pub(crate) fn postgres(tool: &str, database: &str) -> Command {
    let mut command = Command::new(tool);
    command.args(["-h", "127.0.0.1", "-p", "5432", "-U", "postgres", database]);
    command
}

/// Stops the server when dropped, even on an early return.
pub(crate) struct Server(pub(crate) Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One `GET` over a fresh connection: the status and the body.
fn get(path: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect(ADDR).map_err(|err| err.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {ADDR}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|err| err.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|err| err.to_string())?;
    let status = response
        .get(9..12)
        .and_then(|code| code.parse().ok())
        .ok_or("no HTTP status")?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// The value of a top-level string field in a JSON body (ids and cursors need no unescaping).
fn field(body: &str, name: &str) -> Option<String> {
    let start = body.find(&format!("\"{name}\":\""))? + name.len() + 4;
    let end = body[start..].find('"')? + start;
    Some(body[start..end].to_owned())
}

pub(crate) fn percentile(sorted: &[Duration], fraction: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

/// Sequential latency of `path`: (p50, p99) in milliseconds.
fn sample(path: &str) -> Result<(f64, f64)> {
    let mut timings = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let started = Instant::now();
        let (status, _) = get(path)?;
        timings.push(started.elapsed());
        if status != 200 {
            return Err(format!("GET {path} answered {status}"));
        }
    }
    timings.sort();
    Ok((percentile(&timings, 0.5), percentile(&timings, 0.99)))
}

/// `wrk`'s requests per second and p99 latency, if wrk is installed.
fn load(path: &str) -> Option<String> {
    let output = Command::new("wrk")
        .args([
            "-t2",
            "-c16",
            "-d5s",
            "--latency",
            &format!("http://{ADDR}{path}"),
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let rate = text
        .lines()
        .find(|l| l.starts_with("Requests/sec:"))?
        .split_whitespace()
        .nth(1)?
        .to_owned();
    let p99 = text
        .lines()
        .find(|l| l.trim_start().starts_with("99%"))?
        .split_whitespace()
        .nth(1)?
        .to_owned();
    Some(format!("{rate} req/s, p99 {p99}"))
}

pub(crate) fn bench(args: &[&str]) -> Result {
    let options = parse(args)?;
    crate::cargo(&["build", "--release", "--package", "waiter"])?;
    let binary = root().join("target/release/waiter");
    let database_url = format!("postgres://postgres@127.0.0.1:5432/{}", options.database);
    let data_dir = std::env::temp_dir().join("waiter-bench");
    let waiter = || {
        let mut command = Command::new(&binary);
        command
            .env("DATABASE_URL", &database_url)
            .env("WAITER_DATA_DIR", &data_dir)
            .env("WAITER_ADDR", ADDR)
            .env("WAITER_LOG", "warn")
            // One client sends every request: the limits still count each
            // one (their cost is part of the figures) but never refuse.
            .env("WAITER_RATE_LIMIT_CLIENT", "1000000000/1m")
            .env("WAITER_METRICS_ADDR", "off");
        command
    };

    if !options.reuse {
        run(postgres("dropdb", &options.database).args(["--if-exists", "--force"]))?;
        run(&mut postgres("createdb", &options.database))?;
        run(waiter().arg("migrate"))?;
        run(waiter()
            .args(["admin", "create", "--email", OWNER])
            .env("WAITER_ADMIN_PASSWORD", "a benchmark password"))?;
        let started = Instant::now();
        run(waiter().args([
            "seed",
            "books",
            "--count",
            &options.books.to_string(),
            "--owner",
            OWNER,
        ]))?;
        eprintln!(
            "seeded {} books in {:.1} s",
            options.books,
            started.elapsed().as_secs_f64()
        );
        run(postgres("psql", &options.database).args(["-qc", "VACUUM ANALYZE books"]))?;
    }

    let server = Server(
        waiter()
            .stdout(Stdio::null())
            .spawn()
            .map_err(|err| format!("cannot start waiter: {err}"))?,
    );
    let ready = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        matches!(get("/readyz"), Ok((200, _)))
    });
    if !ready {
        return Err("the server did not become ready".to_owned());
    }

    let first = format!("/api/v1/books?limit={PAGE_SIZE}");
    let (_, body) = get(&first)?;
    let book_id = field(&body, "id").ok_or("the catalog is empty")?;
    let started = Instant::now();
    let mut path = first.clone();
    for _ in 0..DEEP_PAGES {
        let (_, body) = get(&path)?;
        let cursor =
            field(&body, "next_cursor").ok_or("the catalog ran out of pages before 5 000")?;
        path = format!("{first}&cursor={cursor}");
    }
    let walk = started.elapsed();
    eprintln!(
        "walked {DEEP_PAGES} pages in {:.1} s ({:.2} ms a page)",
        walk.as_secs_f64(),
        walk.as_secs_f64() * 1000.0 / f64::from(DEEP_PAGES)
    );

    let scenarios = [
        ("first page (newest first)", first.clone()),
        ("page 5 001 (keyset, 100 000 rows in)", path),
        ("q=war", format!("/api/v1/books?q=war&limit={PAGE_SIZE}")),
        (
            "q=tolstoy, sort=title",
            format!("/api/v1/books?q=tolstoy&sort=title&limit={PAGE_SIZE}"),
        ),
        (
            "author=Maria Tanaka, sort=-price",
            format!("/api/v1/books?author=Maria%20Tanaka&sort=-price&limit={PAGE_SIZE}"),
        ),
        ("one book (cached)", format!("/api/v1/books/{book_id}")),
        ("recent", "/api/v1/books/recent".to_owned()),
    ];
    println!("| scenario | sequential p50 | sequential p99 | wrk -t2 -c16 -d5s |");
    println!("|---|---|---|---|");
    for (name, path) in &scenarios {
        let (p50, p99) = sample(path)?;
        let loaded = load(path).unwrap_or_else(|| "(wrk not installed)".to_owned());
        println!("| {name} | {p50:.2} ms | {p99:.2} ms | {loaded} |");
    }

    if !options.keep && !options.reuse {
        drop(server);
        run(postgres("dropdb", &options.database).args(["--if-exists", "--force"]))?;
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    Ok(())
}
