//! Prometheus metrics: the global recorder every crate's `metrics::…!` calls
//! report to, and the `/metrics` listener that renders it, apart from the API
//! so that it is not open to the world by default.
//!
//! Histograms get explicit buckets, so they render as Prometheus histograms
//! (aggregatable across instances) rather than summaries; a thread runs the
//! recorder's upkeep, without which histogram memory grows. Process metrics
//! (CPU, resident memory, open file descriptors) are read from `/proc` at
//! each scrape, where there is one.

use std::net::TcpListener;
use std::sync::OnceLock;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context as _;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets in seconds: from a cached read (well under a
/// millisecond) to a request that waited out the argon2 queue (five seconds).
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Database query buckets in seconds: finer at the bottom, where a SQLite
/// read by primary key (tens of microseconds) and a PostgreSQL round trip
/// (a fraction of a millisecond) fall, up to the five seconds a SQLite
/// writer waits for the write lock before it gives up.
const DB_QUERY_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Buckets in seconds for the wait from a send to its reply's first text:
/// a model may think for tens of seconds before it writes anything (up to
/// its first-token timeout).
const FIRST_TEXT_BUCKETS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// How often the recorder's upkeep runs (draining histogram buffers).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The process's recorder; one per process, since the `metrics` facade has one.
static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();

/// The recorder, installed on first use, with its upkeep thread.
pub fn recorder() -> anyhow::Result<PrometheusHandle> {
    if let Some(handle) = RECORDER.get() {
        return Ok(handle.clone());
    }
    // A full name takes precedence over a suffix, whatever the order here.
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &LATENCY_BUCKETS)
        .context("invalid histogram buckets")?
        // A full name takes precedence over a suffix.
        .set_buckets_for_metric(
            Matcher::Full("waiter_db_query_duration_seconds".to_owned()),
            &DB_QUERY_BUCKETS,
        )
        .context("invalid histogram buckets")?
        .set_buckets_for_metric(
            Matcher::Full("waiter_reply_first_text_seconds".to_owned()),
            &FIRST_TEXT_BUCKETS,
        )
        .context("invalid histogram buckets")?
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    let handle = RECORDER.get_or_init(|| handle).clone();
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                upkeep.run_upkeep();
            }
        })
        .context("cannot start the metrics upkeep thread")?;
    Ok(handle)
}

/// A one-worker server answering `GET /metrics` on `listener`.
pub fn serve(listener: TcpListener, handle: PrometheusHandle) -> std::io::Result<Server> {
    let handle = web::Data::new(handle);
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(handle.clone())
            .route("/metrics", web::get().to(scrape))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run())
}

async fn scrape(handle: web::Data<PrometheusHandle>) -> HttpResponse {
    process::record();
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(handle.render())
}

/// The process's own metrics, under the names Prometheus's client libraries use.
mod process {
    /// Clock ticks per second in `/proc/self/stat`: Linux's `USER_HZ`, 100
    /// on every architecture it supports (Prometheus's own `procfs` assumes the same).
    const TICKS_PER_SECOND: f64 = 100.0;

    pub(super) fn record() {
        if let Some(seconds) = cpu_seconds() {
            metrics::gauge!("process_cpu_seconds_total").set(seconds);
        }
        if let Some(bytes) = resident_bytes() {
            metrics::gauge!("process_resident_memory_bytes").set(bytes);
        }
        if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
            metrics::gauge!("process_open_fds").set(entries.count() as f64);
        }
        if let Some(limit) = max_fds() {
            metrics::gauge!("process_max_fds").set(limit);
        }
    }

    /// User plus system CPU time: fields 14 and 15 of `/proc/self/stat`,
    /// counted after the command name, which may itself hold spaces.
    fn cpu_seconds() -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let user: f64 = fields.get(11)?.parse().ok()?;
        let system: f64 = fields.get(12)?.parse().ok()?;
        Some((user + system) / TICKS_PER_SECOND)
    }

    /// `VmRSS` of `/proc/self/status`, in bytes.
    fn resident_bytes() -> Option<f64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024.0)
    }

    /// The soft limit on open files, from `/proc/self/limits`.
    fn max_fds() -> Option<f64> {
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        let line = limits
            .lines()
            .find(|line| line.starts_with("Max open files"))?;
        line.split_whitespace().nth(3)?.parse().ok()
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn the_process_can_read_its_own_figures() {
            if !std::path::Path::new("/proc/self/stat").exists() {
                return;
            }
            assert!(super::cpu_seconds().is_some());
            assert!(super::resident_bytes().is_some_and(|bytes| bytes > 0.0));
            assert!(super::max_fds().is_some_and(|fds| fds > 0.0));
        }
    }
}
