//! The `waiter` binary's library half: configuration, wiring and running.
//!
//! This crate is the only one that names concrete adapters. It picks them
//! from the configuration, hands them to the services as `Arc<dyn Port>`, and
//! hands the services to the HTTP adapter. End-to-end tests drive the same
//! [`Application`] the binary runs.

pub mod config;
mod secret;
pub mod seed;
mod wiring;

use std::net::TcpListener;
use std::time::Duration;

use actix_web::HttpServer;
use actix_web::dev::Server;

pub use config::{Cli, Command, Config};
pub use wiring::{Database, Stores, Wiring};

/// How long in-flight requests may take to finish after SIGTERM or Ctrl-C.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// A bound, ready-to-run HTTP server.
pub struct Application {
    server: Server,
    port: u16,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Binds `listener` and prepares to serve the wired use cases. Port 0 in
    /// the listener picks a free port (as tests do); see [`Self::port`].
    pub fn build(
        wiring: &Wiring,
        listener: TcpListener,
        workers: Option<usize>,
    ) -> std::io::Result<Self> {
        let port = listener.local_addr()?.port();
        let state = wiring.http_state();
        let mut server = HttpServer::new(move || waiter_http::app(state.clone()))
            .shutdown_timeout(SHUTDOWN_GRACE.as_secs())
            .listen(listener)?;
        if let Some(workers) = workers {
            server = server.workers(workers);
        }
        Ok(Self {
            server: server.run(),
            port,
        })
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until SIGTERM or Ctrl-C, then drains in-flight requests.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}
