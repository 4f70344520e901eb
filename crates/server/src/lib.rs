//! The `waiter` binary's library half: configuration, wiring and running.
//!
//! This crate is the only one that names concrete adapters. It picks them
//! from the configuration, hands them to the services as `Arc<dyn Port>`, and
//! hands the services to the HTTP adapter. End-to-end tests drive the same
//! [`Application`] the binary runs.

pub mod config;
pub mod metrics;
mod secret;
pub mod seed;
pub mod tls;
mod wiring;

use std::net::TcpListener;
use std::time::Duration;

use actix_web::HttpServer;
use actix_web::dev::Server;
use anyhow::Context as _;
use waiter_http::Edge;
use waiter_http::edge::{CorsOrigins, TrustedProxies};

pub use config::{Cli, Command, Config};
pub use wiring::{Database, Stores, Wiring};

/// How long in-flight requests may take to finish after SIGTERM or Ctrl-C.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// How the API is served, apart from what it serves: workers, TLS, CORS,
/// proxies, and the metrics listener. Read from the configuration, with every
/// file read and every port bound, so a mistake stops start-up.
pub struct Serving {
    /// HTTP worker threads; `None`: one per CPU.
    pub workers: Option<usize>,
    /// `Some` to serve HTTPS.
    pub tls: Option<rustls::ServerConfig>,
    pub cors_origins: CorsOrigins,
    pub trusted_proxies: TrustedProxies,
    /// The bound metrics listener, `None` when metrics are off.
    pub metrics: Option<TcpListener>,
}

impl Serving {
    /// Loads the TLS files and binds the metrics listener the configuration names.
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(tls::load(cert, key)?),
            _ => None,
        };
        let metrics = config
            .metrics_addr
            .0
            .map(|addr| {
                TcpListener::bind(addr)
                    .with_context(|| format!("cannot listen on WAITER_METRICS_ADDR {addr}"))
            })
            .transpose()?;
        Ok(Self {
            workers: config.workers.map(usize::from),
            tls,
            cors_origins: config.cors_origins.clone(),
            trusted_proxies: config.trusted_proxies.clone(),
            metrics,
        })
    }
}

/// A bound, ready-to-run HTTP server, and its metrics listener if any.
pub struct Application {
    server: Server,
    port: u16,
    metrics: Option<(Server, u16)>,
    /// What winds down with it: replies in flight.
    wiring: Wiring,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Binds `listener` and prepares to serve the wired use cases as
    /// `serving` says. Port 0 in a listener picks a free port (as tests do);
    /// see [`Self::port`] and [`Self::metrics_port`].
    pub fn build(wiring: &Wiring, listener: TcpListener, serving: Serving) -> anyhow::Result<Self> {
        let port = listener.local_addr()?.port();
        let state = wiring.http_state();
        let edge = Edge {
            tls: serving.tls.is_some(),
            cors_origins: serving.cors_origins,
            trusted_proxies: serving.trusted_proxies,
            rate_limits: wiring.rate_limits(),
        };
        // The signals are ours to handle (`run_until_stopped`): replies
        // must wind down while the server drains its requests.
        let mut server = HttpServer::new(move || waiter_http::app(state.clone(), edge.clone()))
            .shutdown_timeout(SHUTDOWN_GRACE.as_secs())
            .disable_signals();
        server = match serving.tls {
            Some(tls) => server.listen_rustls_0_23(listener, tls)?,
            None => server.listen(listener)?,
        };
        if let Some(workers) = serving.workers {
            server = server.workers(workers);
        }
        let metrics = match serving.metrics {
            Some(listener) => {
                let port = listener.local_addr()?.port();
                Some((metrics::serve(listener, metrics::recorder()?)?, port))
            }
            None => None,
        };
        Ok(Self {
            server: server.run(),
            port,
            metrics,
            wiring: wiring.clone(),
        })
    }

    /// The port `/metrics` is served on, when it is.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics.as_ref().map(|(_, port)| *port)
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until SIGTERM or Ctrl-C. Then, within [`SHUTDOWN_GRACE`],
    /// it stops accepting connections and drains in-flight requests while
    /// replies in flight wind down: handed over to other instances (their
    /// event streams told to reconnect) or finished. The metrics listener
    /// stops with the API.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let metrics = self.metrics.map(|(server, _)| {
            let handle = server.handle();
            (actix_web::rt::spawn(server), handle)
        });
        let handle = self.server.handle();
        let mut server = actix_web::rt::spawn(self.server);
        let served = tokio::select! {
            served = &mut server => served,
            () = stop_signal() => {
                tracing::info!("stopping: draining requests and winding replies down");
                tokio::join!(self.wiring.shut_down(SHUTDOWN_GRACE), handle.stop(true));
                server.await
            }
        };
        if let Some((task, handle)) = metrics {
            handle.stop(true).await;
            let _ = task.await;
        }
        served.unwrap_or_else(|err| Err(std::io::Error::other(err)))
    }
}

/// Resolves at the first SIGTERM or Ctrl-C (SIGINT); never, where signals
/// cannot be listened to (logged).
async fn stop_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                terminate.recv().await;
            }
            Err(err) => {
                tracing::error!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    let interrupt = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(%err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = terminate => {}
        () = interrupt => {}
    }
}
