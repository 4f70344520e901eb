//! `cargo xtask bench --streams N`: many assistant replies streaming at once
//! from one instance, measured from outside the server.
//!
//! It builds the release binary (or takes an earlier build's, `--binary
//! PATH`, to measure a change side by side with what it replaces) and starts
//! `waiter serve` on a free loopback port with a scratch data dir: the embedded default (SQLite and the
//! in-process cache and event logs) unless `--database URL` or `--redis URL`
//! say otherwise, every rate limit off (and the accounts' replies in flight
//! allowed up to their share of N), the metrics listener off unless
//! `--metrics ADDR` gives it an address to be scraped at during the load,
//! logs at `warn`, and the built-in assistant at its default pace
//! (`--delay` to change it). It signs `--accounts K` accounts up and in (one per ten streams
//! unless told), creates N conversations shared among them, and then
//! opens N streams at once, one per conversation (a conversation has one reply
//! in flight at a time), each sending `--replies M` messages one after the
//! other, each answered as an event stream. `--streams 1 --replies 100` gives
//! the sequential figures: one reply at a time, a hundred times. By default
//! the streams all start at the same instant, so the first tokens measure a
//! burst of N sends; `--ramp 2s` spreads their starts evenly over two
//! seconds instead, so that (with replies of about two seconds) the last of
//! them are sent while nearly all the others are streaming: the first-token
//! latency of a steady load of N open streams.
//!
//! The client is a task per stream on one thread (a single-threaded tokio
//! runtime), speaking HTTP/1.1 by hand over a `TcpStream` (a connection per
//! reply). For each reply it times the first `append` delta from the moment
//! the request is written (first-token latency) and the gaps between
//! consecutive `append` deltas (inter-chunk latency), and checks that the
//! stream ends with `data: [DONE]`. Meanwhile it samples the server's
//! resident memory from `/proc/PID/status`. The client shares the machine
//! with the server, so on a small machine its work is part of the load the
//! figures show; one thread waiting on all its sockets at once keeps that
//! part small. (It was a thread per stream: a thousand threads, each woken
//! for every event, which the kernel scheduled as the server's equals.)

use std::cell::Cell;
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

use crate::bench::{Server, percentile};
use crate::{Result, root};

/// What every stream asks the assistant.
const QUESTION: &str =
    "How would one small server keep a thousand replies streaming at once without falling behind?";
/// The password of the bench's account.
const PASSWORD: &str = "a benchmark password";
/// The longest a reply may stay silent before its stream counts as failed.
const SILENCE: Duration = Duration::from_secs(120);
/// How often the server's memory is sampled during the load.
const SAMPLE_EVERY: Duration = Duration::from_millis(20);
/// The most stream failures printed in full.
const FAILURES_SHOWN: usize = 5;

struct Options {
    streams: usize,
    replies: usize,
    accounts: Option<usize>,
    ramp: Duration,
    delay: Option<String>,
    database: Option<String>,
    redis: Option<String>,
    /// Where the server's Prometheus metrics listen, to scrape during the
    /// load (the store's timings, the replies' first text); off unless given.
    metrics: Option<String>,
    /// A `waiter` binary to run instead of building the workspace's: an
    /// earlier build, to measure a change side by side with what it replaces.
    binary: Option<PathBuf>,
}

fn parse(args: &[&str]) -> Result<Options> {
    const HELP: &str = "use --streams N, --replies M, --accounts K, --ramp DURATION, --delay DURATION, --database URL, --redis URL, --metrics ADDR, --binary PATH";
    let count = |value: Option<&&str>, flag: &str| -> Result<usize> {
        value
            .and_then(|n| n.parse().ok())
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("{flag} needs a positive number"))
    };
    let mut options = Options {
        streams: 0,
        replies: 1,
        accounts: None,
        ramp: Duration::ZERO,
        delay: None,
        database: None,
        redis: None,
        metrics: None,
        binary: None,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match *arg {
            "--streams" => options.streams = count(args.next(), "--streams")?,
            "--replies" => options.replies = count(args.next(), "--replies")?,
            "--accounts" => options.accounts = Some(count(args.next(), "--accounts")?),
            "--ramp" => {
                options.ramp = args
                    .next()
                    .and_then(|raw| duration(raw))
                    .ok_or("--ramp needs a duration such as 2s or 500ms")?;
            }
            "--delay" => {
                options.delay = Some(args.next().ok_or("--delay needs a duration")?.to_string())
            }
            "--database" => {
                options.database = Some(args.next().ok_or("--database needs a URL")?.to_string())
            }
            "--redis" => {
                options.redis = Some(args.next().ok_or("--redis needs a URL")?.to_string())
            }
            "--metrics" => {
                let addr = args.next().ok_or("--metrics needs an address")?;
                addr.parse::<SocketAddr>().map_err(|_| {
                    format!("--metrics needs an address such as 127.0.0.1:9100, not {addr}")
                })?;
                options.metrics = Some(addr.to_string());
            }
            "--binary" => {
                options.binary = Some(args.next().ok_or("--binary needs a path")?.into());
            }
            other => return Err(format!("unknown bench option {other}; {HELP}")),
        }
    }
    if options.streams == 0 {
        return Err(format!("--streams is required; {HELP}"));
    }
    if options
        .accounts
        .is_some_and(|accounts| accounts > options.streams)
    {
        return Err("--accounts cannot exceed --streams".to_owned());
    }
    Ok(options)
}

impl Options {
    /// How many accounts share the streams: `--accounts`, or one per ten
    /// streams, as on a server many people use at once.
    fn accounts(&self) -> usize {
        self.accounts.unwrap_or(self.streams.div_ceil(10))
    }
}

/// `500ms` or `2s`.
fn duration(raw: &str) -> Option<Duration> {
    if let Some(millis) = raw.strip_suffix("ms") {
        millis.parse().ok().map(Duration::from_millis)
    } else {
        Duration::try_from_secs_f64(raw.strip_suffix('s')?.parse().ok()?).ok()
    }
}

pub(crate) fn bench(args: &[&str]) -> Result {
    let options = parse(args)?;
    let binary = match &options.binary {
        Some(binary) => binary.clone(),
        None => {
            crate::cargo(&["build", "--release", "--package", "waiter"])?;
            root().join("target/release/waiter")
        }
    };
    let addr = free_port()?;
    let run_id = format!("{}-{}", std::process::id(), unix_seconds());
    let data_dir = std::env::temp_dir().join(format!("waiter-streams-bench-{run_id}"));
    let redis_prefix = format!("waiter-bench-{run_id}:");

    let mut command = Command::new(&binary);
    command
        .env("WAITER_ADDR", addr.to_string())
        .env("WAITER_DATA_DIR", &data_dir)
        .env("WAITER_LOG", "warn")
        .env(
            "WAITER_METRICS_ADDR",
            options.metrics.as_deref().unwrap_or("off"),
        )
        .env("WAITER_REDIS_PREFIX", &redis_prefix)
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env_remove("WAITER_ASSISTANT_URL")
        .env_remove("WAITER_ASSISTANT_DELAY");
    for policy in [
        "CLIENT",
        "SIGN_IN",
        "SIGN_IN_ADDRESS",
        "SIGN_UP",
        "REFRESH",
        "MESSAGES",
    ] {
        command.env(format!("WAITER_RATE_LIMIT_{policy}"), "off");
    }
    // Each account may have all of its streams' replies in progress at once.
    command.env(
        "WAITER_REPLIES_IN_FLIGHT",
        options.streams.div_ceil(options.accounts()).to_string(),
    );
    if let Some(delay) = &options.delay {
        command.env("WAITER_ASSISTANT_DELAY", delay);
    }
    if let Some(url) = &options.database {
        command.env("DATABASE_URL", url);
    }
    if let Some(url) = &options.redis {
        command.env("REDIS_URL", url);
    }
    let server = Server(
        command
            .arg("serve")
            .stdout(Stdio::null())
            .spawn()
            .map_err(|err| format!("cannot start waiter: {err}"))?,
    );
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| format!("cannot start the client's runtime: {err}"))?
        .block_on(measure(&options, addr, server.0.id()));
    drop(server);
    let _ = std::fs::remove_dir_all(&data_dir);
    if let Some(url) = &options.redis {
        match redis_cleanup(url, &redis_prefix) {
            Ok(removed) => eprintln!("removed {removed} Redis keys under {redis_prefix}"),
            Err(err) => eprintln!("could not remove the Redis keys under {redis_prefix}: {err}"),
        }
    }
    outcome
}

/// Sets up the account and conversations, runs the streams, prints the figures.
async fn measure(options: &Options, addr: SocketAddr, pid: u32) -> Result {
    let mut ready = false;
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if matches!(call(addr, "GET", "/readyz", None, None).await, Ok((200, _))) {
            ready = true;
            break;
        }
    }
    if !ready {
        return Err("the server did not become ready in 30 s".to_owned());
    }
    let started = Instant::now();
    let mut tokens = Vec::with_capacity(options.accounts());
    for account in 0..options.accounts() {
        tokens.push(sign_up(addr, account).await?);
    }
    eprintln!(
        "signed {} accounts up and in in {:.1} s",
        tokens.len(),
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let mut conversations = Vec::with_capacity(options.streams);
    for token in tokens.iter().cycle().take(options.streams) {
        let title = json!({"title": "bench"});
        let conversation = expect(
            201,
            call(
                addr,
                "POST",
                "/api/v1/conversations",
                Some(token),
                Some(&title),
            )
            .await,
        )?;
        let id = conversation["id"]
            .as_str()
            .ok_or("a created conversation has no id")?;
        conversations.push((Rc::clone(token), id.to_owned()));
    }
    eprintln!(
        "created {} conversations in {:.1} s",
        options.streams,
        started.elapsed().as_secs_f64()
    );

    let before = memory(pid)?;
    let cpu_before = (cpu_time("self")?, cpu_time(&pid.to_string())?);
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = Arc::clone(&sampling);
        std::thread::spawn(move || {
            let mut peak = 0;
            while sampling.load(Ordering::Relaxed) {
                if let Ok(now) = memory(pid) {
                    peak = peak.max(now.rss_kib);
                }
                std::thread::sleep(SAMPLE_EVERY);
            }
            peak
        })
    };

    let open = Rc::new(OpenStreams::default());
    let streams = u32::try_from(options.streams).map_err(|_| "too many streams")?;
    let started = Instant::now();
    let clients = tokio::task::LocalSet::new();
    let mut handles = Vec::with_capacity(options.streams);
    for (index, (token, conversation)) in (0..streams).zip(conversations) {
        let open = Rc::clone(&open);
        let replies = options.replies;
        let start = started + options.ramp * index / streams;
        handles.push(clients.spawn_local(async move {
            tokio::time::sleep_until(start).await;
            let mut done = Vec::with_capacity(replies);
            for _ in 0..replies {
                done.push(reply(addr, &token, &conversation, &open).await);
            }
            done
        }));
    }
    let replies = clients
        .run_until(async {
            let mut replies = Vec::with_capacity(options.streams * options.replies);
            for handle in handles {
                replies.extend(handle.await.map_err(|_| "a client task panicked")?);
            }
            Ok::<_, String>(replies)
        })
        .await?;
    let duration = started.elapsed();
    sampling.store(false, Ordering::Relaxed);
    let peak_rss = sampler.join().map_err(|_| "the memory sampler panicked")?;
    let after = memory(pid)?;
    let cpu = (
        cpu_time("self")? - cpu_before.0,
        cpu_time(&pid.to_string())? - cpu_before.1,
    );

    report(
        options,
        &Figures {
            replies: &replies,
            most_open: open.most.get(),
            duration,
            cpu,
            before,
            peak_rss,
            after,
        },
    );
    Ok(())
}

/// Signs up account number `account` of this run and signs it in; returns
/// its access token.
async fn sign_up(addr: SocketAddr, account: usize) -> Result<Rc<str>> {
    // Unique, so that a database named with --database can be reused.
    let email = format!(
        "bench-{}-{}-{account}@example.com",
        std::process::id(),
        unix_seconds()
    );
    let account = json!({"email": email, "password": PASSWORD, "display_name": "Bench"});
    expect(
        201,
        call(addr, "POST", "/api/v1/accounts", None, Some(&account)).await,
    )?;
    let sign_in = json!({"email": email, "password": PASSWORD});
    let tokens = expect(
        201,
        call(addr, "POST", "/api/v1/sessions", None, Some(&sign_in)).await,
    )?;
    Ok(tokens["access_token"]
        .as_str()
        .ok_or("the sign-in answered no access_token")?
        .into())
}

/// How many streams are open now, and the most that were at once.
#[derive(Default)]
struct OpenStreams {
    now: Cell<usize>,
    most: Cell<usize>,
}

impl OpenStreams {
    fn opened(&self) {
        self.now.set(self.now.get() + 1);
        self.most.set(self.most.get().max(self.now.get()));
    }

    fn closed(&self) {
        self.now.set(self.now.get() - 1);
    }
}

/// What one reply's stream showed.
#[derive(Default)]
struct Reply {
    /// From writing the request to the first `append` delta.
    first_token: Option<Duration>,
    /// Between consecutive `append` deltas.
    gaps: Vec<Duration>,
    /// The stream ended with `data: [DONE]`.
    done: bool,
    failure: Option<String>,
}

/// Sends one message to `conversation` and follows its reply's stream.
async fn reply(addr: SocketAddr, token: &str, conversation: &str, open: &OpenStreams) -> Reply {
    let mut reply = Reply::default();
    if let Err(err) = follow(addr, token, conversation, open, &mut reply).await {
        reply.failure = Some(err);
    }
    reply
}

async fn follow(
    addr: SocketAddr,
    token: &str,
    conversation: &str,
    open: &OpenStreams,
    reply: &mut Reply,
) -> Result {
    let body = json!({"role": "user", "content": {"content_type": "text", "parts": [QUESTION]}})
        .to_string();
    let request = format!(
        "POST /api/v1/conversations/{conversation}/messages HTTP/1.1\r\nHost: {addr}\r\n\
         Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = connect(addr).await?;
    let sent = Instant::now();
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|err| format!("cannot send: {err}"))?;
    let mut response = timeout(SILENCE, Response::read(stream))
        .await
        .map_err(|_| format!("no answer in {SILENCE:?}"))??;
    if response.status != 200 {
        let body = response.text().await.unwrap_or_default();
        return Err(format!("answered {}: {body}", response.status));
    }
    open.opened();
    let mut events = EventParser::default();
    let mut last_append = None;
    let outcome = async {
        while let Some(chunk) = timeout(SILENCE, response.next_chunk())
            .await
            .map_err(|_| format!("the reply was silent for {SILENCE:?}"))??
        {
            let arrived = Instant::now();
            for event in events.feed(&chunk) {
                match event {
                    Event::Append => {
                        match last_append {
                            None => reply.first_token = Some(arrived - sent),
                            Some(last) => reply.gaps.push(arrived - last),
                        }
                        last_append = Some(arrived);
                    }
                    Event::Done => reply.done = true,
                    Event::Other => {}
                }
            }
        }
        Ok(())
    }
    .await;
    open.closed();
    outcome
}

/// What the bench needs to know of an SSE event.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    /// A delta appending text to the reply.
    Append,
    /// `data: [DONE]`, the end of the reply.
    Done,
    Other,
}

/// Splits an event stream's bytes into events, whatever chunks they come in.
#[derive(Default)]
struct EventParser {
    pending: Vec<u8>,
    data: Vec<String>,
}

impl EventParser {
    fn feed(&mut self, bytes: &[u8]) -> Vec<Event> {
        self.pending.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !self.data.is_empty() {
                    events.push(classify(&self.data.join("\n")));
                    self.data.clear();
                }
            } else if let Some(data) = line.strip_prefix("data:") {
                self.data
                    .push(data.strip_prefix(' ').unwrap_or(data).to_owned());
            }
            // `id:`, `event:` and `: ping` comments tell nothing timed here.
        }
        events
    }
}

fn classify(data: &str) -> Event {
    if data == "[DONE]" {
        return Event::Done;
    }
    let appends = serde_json::from_str::<Value>(data)
        .ok()
        .and_then(|value| {
            value["v"].as_array().map(|ops| {
                ops.iter()
                    .any(|op| op["o"] == "append" && op["p"] == "/message/content/parts/0")
            })
        })
        .unwrap_or(false);
    if appends { Event::Append } else { Event::Other }
}

/// An HTTP/1.1 response being read: its status, then its body piece by piece.
struct Response {
    status: u16,
    framing: Framing,
    reader: BufReader<TcpStream>,
}

/// How the end of a body is known.
enum Framing {
    Chunked,
    Length(usize),
    Close,
    Finished,
}

impl Response {
    async fn read(stream: TcpStream) -> Result<Self> {
        let mut reader = BufReader::new(stream);
        let status_line = line(&mut reader).await?;
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| format!("not an HTTP status line: {status_line:?}"))?;
        let mut headers = HashMap::new();
        loop {
            let header = line(&mut reader).await?;
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
            }
        }
        let chunked = headers
            .get("transfer-encoding")
            .is_some_and(|coding| coding.to_ascii_lowercase().contains("chunked"));
        let framing = match headers.get("content-length") {
            _ if chunked => Framing::Chunked,
            Some(length) => Framing::Length(
                length
                    .parse()
                    .map_err(|_| format!("a bad Content-Length: {length}"))?,
            ),
            None => Framing::Close,
        };
        Ok(Self {
            status,
            framing,
            reader,
        })
    }

    /// The body's next piece as it came off the wire (a chunk, when
    /// chunked); `None` at its end.
    async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>> {
        let io = |err: std::io::Error| format!("reading the response: {err}");
        match self.framing {
            Framing::Finished => Ok(None),
            Framing::Length(length) => {
                let mut body = vec![0; length];
                self.reader.read_exact(&mut body).await.map_err(io)?;
                self.framing = Framing::Finished;
                Ok(Some(body))
            }
            Framing::Close => {
                let mut body = Vec::new();
                self.reader.read_to_end(&mut body).await.map_err(io)?;
                self.framing = Framing::Finished;
                Ok(Some(body))
            }
            Framing::Chunked => {
                let size_line = line(&mut self.reader).await?;
                let size = size_line.split(';').next().unwrap_or_default().trim();
                let size = usize::from_str_radix(size, 16)
                    .map_err(|_| format!("a bad chunk size line: {size_line:?}"))?;
                if size == 0 {
                    // Trailers, if any, up to the blank line.
                    while !line(&mut self.reader).await?.is_empty() {}
                    self.framing = Framing::Finished;
                    return Ok(None);
                }
                let mut chunk = vec![0; size + 2];
                self.reader.read_exact(&mut chunk).await.map_err(io)?;
                if !chunk.ends_with(b"\r\n") {
                    return Err("a chunk does not end with CRLF".to_owned());
                }
                chunk.truncate(size);
                Ok(Some(chunk))
            }
        }
    }

    /// The whole body, as text.
    async fn text(&mut self) -> Result<String> {
        let mut body = Vec::new();
        while let Some(chunk) = self.next_chunk().await? {
            body.extend(chunk);
        }
        String::from_utf8(body).map_err(|err| err.to_string())
    }
}

/// One line of a response's head or chunk framing, without its CRLF.
async fn line(reader: &mut BufReader<TcpStream>) -> Result<String> {
    let mut line = String::new();
    let read = reader
        .read_line(&mut line)
        .await
        .map_err(|err| format!("reading the response: {err}"))?;
    if read == 0 {
        return Err("the connection closed early".to_owned());
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

async fn connect(addr: SocketAddr) -> Result<TcpStream> {
    TcpStream::connect(addr).await.map_err(|err| {
        // EMFILE: each stream is a socket on both sides.
        if err.raw_os_error() == Some(24) {
            format!("cannot connect: {err} (raise the limit with `ulimit -n`)")
        } else {
            format!("cannot connect: {err}")
        }
    })
}

/// One request over a fresh connection: the status and the body.
async fn call(
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
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{authorization}\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = connect(addr).await?;
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|err| format!("cannot send: {err}"))?;
    let mut response = Response::read(stream).await?;
    let text = response.text().await?;
    Ok((response.status, text))
}

/// The JSON body of a response that must have `status`.
fn expect(status: u16, response: Result<(u16, String)>) -> Result<Value> {
    let (got, body) = response?;
    if got != status {
        return Err(format!(
            "expected {status}, the server answered {got}: {body}"
        ));
    }
    serde_json::from_str(&body).map_err(|err| format!("{err}: {body}"))
}

/// A loopback address no one listens on (there is a small race with other
/// processes until the server binds it).
fn free_port() -> Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map_err(|err| format!("cannot find a free port: {err}"))
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_secs())
        .unwrap_or_default()
}

/// The server's resident memory now (`VmRSS`) and at its highest since it
/// started (`VmHWM`), in KiB.
#[derive(Clone, Copy)]
struct Memory {
    rss_kib: u64,
    hwm_kib: u64,
}

fn memory(pid: u32) -> Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|err| format!("cannot read the server's memory: {err}"))?;
    let kib = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|value| value.parse().ok())
            .ok_or_else(|| format!("no {name} in /proc/{pid}/status"))
    };
    Ok(Memory {
        rss_kib: kib("VmRSS:")?,
        hwm_kib: kib("VmHWM:")?,
    })
}

/// The CPU time (user and system) a process has used so far, in seconds,
/// from `/proc/{process}/stat` (`process` is a pid or `self`).
fn cpu_time(process: &str) -> Result<f64> {
    /// Linux reports it in USER_HZ, 100 a second on every mainstream platform.
    const TICKS_PER_SECOND: f64 = 100.0;
    let stat = std::fs::read_to_string(format!("/proc/{process}/stat"))
        .map_err(|err| format!("cannot read /proc/{process}/stat: {err}"))?;
    // The command name, in parentheses, may hold spaces: count after it.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime, fields 14 and 15 of the whole line.
    let ticks = |index: usize| -> Result<f64> {
        fields
            .get(index)
            .and_then(|value| value.parse::<u64>().ok())
            .map(|ticks| ticks as f64 / TICKS_PER_SECOND)
            .ok_or_else(|| format!("no CPU times in /proc/{process}/stat"))
    };
    Ok(ticks(11)? + ticks(12)?)
}

struct Figures<'a> {
    replies: &'a [Reply],
    most_open: usize,
    duration: Duration,
    before: Memory,
    peak_rss: u64,
    after: Memory,
    /// CPU seconds this client and the server spent during the load.
    cpu: (f64, f64),
}

fn report(options: &Options, figures: &Figures<'_>) {
    let replies = figures.replies;
    let completed = replies.iter().filter(|reply| reply.done).count();
    let mut first: Vec<Duration> = replies
        .iter()
        .filter_map(|reply| reply.first_token)
        .collect();
    let mut gaps: Vec<Duration> = replies
        .iter()
        .flat_map(|reply| reply.gaps.iter().copied())
        .collect();
    first.sort();
    gaps.sort();
    let failures: Vec<&str> = replies
        .iter()
        .filter_map(|reply| reply.failure.as_deref())
        .collect();
    for failure in failures.iter().take(FAILURES_SHOWN) {
        eprintln!("a stream failed: {failure}");
    }

    let store = match options.database.as_deref() {
        None => "SQLite",
        Some(url) if url.starts_with("postgres") => "PostgreSQL",
        Some(_) => "the DATABASE_URL given",
    };
    let cache = if options.redis.is_some() {
        "Redis"
    } else {
        "in-process cache and event logs"
    };
    let delay = options.delay.as_deref().unwrap_or("20ms (default)");
    let ramp = if options.ramp.is_zero() {
        "all started at once".to_owned()
    } else {
        format!("started evenly over {:.2} s", options.ramp.as_secs_f64())
    };
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "streams: {} of {} accounts, {ramp}, {} {} each ({store}, {cache}; built-in assistant, {delay} a word)",
        options.streams,
        options.accounts(),
        options.replies,
        if options.replies == 1 {
            "reply"
        } else {
            "replies one after another"
        },
    );
    println!(
        "replies completed ([DONE]): {completed} of {}, failed: {}; most streams open at once: {}",
        replies.len(),
        failures.len(),
        figures.most_open
    );
    println!(
        "first token:  {} ({} replies)",
        percentiles(&first, &[("p50", 0.5), ("p90", 0.9), ("p99", 0.99)]),
        first.len()
    );
    println!(
        "inter-chunk:  {} ({} gaps)",
        percentiles(&gaps, &[("p50", 0.5), ("p99", 0.99)]),
        gaps.len()
    );
    println!(
        "total:        {:.2} s; CPU time in it: server {:.2} s, this client {:.2} s",
        figures.duration.as_secs_f64(),
        figures.cpu.1,
        figures.cpu.0
    );
    println!(
        "server RSS:   {:.1} MiB before the load, {:.1} MiB at its peak during it \
         (sampled every {} ms), {:.1} MiB after; VmHWM {:.1} MiB since start",
        mib(figures.before.rss_kib),
        mib(figures.peak_rss.max(figures.before.rss_kib)),
        SAMPLE_EVERY.as_millis(),
        mib(figures.after.rss_kib),
        mib(figures.after.hwm_kib),
    );
}

/// `p50 1.23 ms, …, max 4.56 ms`, or a dash when nothing was measured.
fn percentiles(sorted: &[Duration], which: &[(&str, f64)]) -> String {
    let Some(max) = sorted.last() else {
        return "-".to_owned();
    };
    let mut parts: Vec<String> = which
        .iter()
        .map(|(name, fraction)| format!("{name} {:.2} ms", percentile(sorted, *fraction)))
        .collect();
    parts.push(format!("max {:.2} ms", max.as_secs_f64() * 1000.0));
    parts.join(", ")
}

/// Removes the keys the server left under `prefix` in the Redis at `url`
/// (`redis://[[user]:password@]host[:port][/db]`), speaking RESP by hand.
fn redis_cleanup(url: &str, prefix: &str) -> Result<usize> {
    let rest = url
        .strip_prefix("redis://")
        .ok_or("only redis:// URLs are cleaned up")?;
    let (authority, db) = rest.split_once('/').unwrap_or((rest, ""));
    let (credentials, host) = match authority.rsplit_once('@') {
        Some((credentials, host)) => (Some(credentials), host),
        None => (None, authority),
    };
    let host = if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:6379")
    };
    let stream = std::net::TcpStream::connect(&host).map_err(|err| format!("{host}: {err}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|err| err.to_string())?;
    let mut redis = Redis {
        reader: std::io::BufReader::new(stream.try_clone().map_err(|err| err.to_string())?),
        writer: stream,
    };
    if let Some(credentials) = credentials {
        match credentials.split_once(':') {
            Some(("", password)) => redis.command(&["AUTH", password])?,
            Some((user, password)) => redis.command(&["AUTH", user, password])?,
            None => redis.command(&["AUTH", credentials])?,
        };
    }
    if !db.is_empty() {
        redis.command(&["SELECT", db])?;
    }
    let pattern = format!("{prefix}*");
    let mut cursor = "0".to_owned();
    let mut removed = 0;
    loop {
        let page = redis.command(&["SCAN", &cursor, "MATCH", &pattern, "COUNT", "1000"])?;
        let (next, keys) = match page {
            Resp::Array(mut parts) if parts.len() == 2 => {
                let keys = parts.pop();
                (parts.pop(), keys)
            }
            other => return Err(format!("an unexpected SCAN reply: {other:?}")),
        };
        if let Some(Resp::Array(keys)) = keys {
            let keys: Vec<String> = keys
                .into_iter()
                .filter_map(|key| match key {
                    Resp::Text(key) => Some(key),
                    _ => None,
                })
                .collect();
            if !keys.is_empty() {
                let mut del = vec!["DEL"];
                del.extend(keys.iter().map(String::as_str));
                if let Resp::Integer(count) = redis.command(&del)? {
                    removed += usize::try_from(count).unwrap_or_default();
                }
            }
        }
        match next {
            Some(Resp::Text(next)) if next != "0" => cursor = next,
            _ => return Ok(removed),
        }
    }
}

/// A connection to Redis, used once the load is over: blocking.
struct Redis {
    reader: std::io::BufReader<std::net::TcpStream>,
    writer: std::net::TcpStream,
}

/// A RESP reply.
#[derive(Debug)]
enum Resp {
    Text(String),
    Integer(i64),
    Array(Vec<Resp>),
    Nil,
}

impl Redis {
    fn command(&mut self, args: &[&str]) -> Result<Resp> {
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        std::io::Write::write_all(&mut self.writer, request.as_bytes())
            .map_err(|err| err.to_string())?;
        self.reply()
    }

    fn reply(&mut self) -> Result<Resp> {
        let mut line = String::new();
        match std::io::BufRead::read_line(&mut self.reader, &mut line) {
            Ok(0) => return Err("Redis closed the connection".to_owned()),
            Ok(_) => {}
            Err(err) => return Err(err.to_string()),
        }
        let line = line.trim_end_matches(['\r', '\n']);
        let (kind, rest) = line.split_at_checked(1).ok_or("an empty RESP line")?;
        let number = || {
            rest.parse::<i64>()
                .map_err(|_| format!("a bad RESP line: {line:?}"))
        };
        match kind {
            "+" => Ok(Resp::Text(rest.to_owned())),
            "-" => Err(format!("Redis: {rest}")),
            ":" => Ok(Resp::Integer(number()?)),
            "$" => match usize::try_from(number()?) {
                Err(_) => Ok(Resp::Nil),
                Ok(length) => {
                    let mut bytes = vec![0; length + 2];
                    std::io::Read::read_exact(&mut self.reader, &mut bytes)
                        .map_err(|err| err.to_string())?;
                    bytes.truncate(length);
                    Ok(Resp::Text(String::from_utf8_lossy(&bytes).into_owned()))
                }
            },
            "*" => match usize::try_from(number()?) {
                Err(_) => Ok(Resp::Nil),
                Ok(count) => (0..count)
                    .map(|_| self.reply())
                    .collect::<Result<Vec<_>>>()
                    .map(Resp::Array),
            },
            _ => Err(format!("a bad RESP line: {line:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_are_classified() {
        let mut parser = EventParser::default();
        let append = "id: 6\nevent: delta\ndata: {\"v\":[{\"p\":\"/message/content/parts/0\",\"o\":\"append\",\"v\":\" word\"}]}\n\n";
        let (head, tail) = append.split_at(30);
        assert!(parser.feed(head.as_bytes()).is_empty());
        assert_eq!(parser.feed(tail.as_bytes()), vec![Event::Append]);
        let end = "id: 9\nevent: delta\ndata: {\"v\":[{\"p\":\"/message/metadata\",\"o\":\"append\",\"v\":{\"is_complete\":true}}]}\n\n: ping\n\nid: 11\ndata: [DONE]\n\n";
        assert_eq!(parser.feed(end.as_bytes()), vec![Event::Other, Event::Done]);
    }

    #[test]
    fn options_need_streams() {
        assert!(parse(&["--replies", "3"]).is_err());
        assert!(parse(&["--streams", "0"]).is_err());
        let options = parse(&[
            "--streams",
            "2",
            "--replies",
            "3",
            "--delay",
            "5ms",
            "--ramp",
            "1.5s",
            "--metrics",
            "127.0.0.1:9100",
        ])
        .unwrap();
        assert_eq!(options.metrics.as_deref(), Some("127.0.0.1:9100"));
        assert!(parse(&["--streams", "2", "--metrics", "nowhere"]).is_err());
        assert_eq!((options.streams, options.replies), (2, 3));
        assert_eq!(options.ramp, Duration::from_millis(1500));
        assert_eq!(duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(duration("2"), None);
        assert_eq!(duration("-1s"), None);
        assert_eq!(options.delay.as_deref(), Some("5ms"));
    }
}
