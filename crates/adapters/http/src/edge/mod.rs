//! The production edge: what every request passes through on its way to a
//! handler and every response on its way out, whatever the route.
//!
//! - [`security`]: the security headers on every response (errors and the
//!   404/405 fallbacks included), `Cache-Control: no-store` on whatever may
//!   carry a token or account data, and HSTS when serving TLS;
//! - [`cors`]: CORS for the configured origins only;
//! - [`client`]: the client's address, through trusted proxies only;
//! - [`limits`]: rate limits by policy, with the IETF `RateLimit` fields;
//! - [`metrics`]: request counts, latencies and requests in flight.
//!
//! Nothing here knows a particular route: a route added later (the
//! conversations, say) gets all of it by being routed.

pub(crate) mod client;
pub(crate) mod cors;
pub(crate) mod limits;
pub(crate) mod metrics;
pub(crate) mod security;

use std::sync::Arc;

pub use client::{TrustedProxies, TrustedProxiesError};
pub use cors::{CorsOrigins, CorsOriginsError};
use waiter_ports::rate_limit::RateLimitUseCases;

/// How the edge is configured; the server builds it from its environment.
///
/// The default is the edge with nothing optional turned on: security headers
/// without HSTS, and no CORS.
#[derive(Clone, Default)]
pub struct Edge {
    /// The server answers over TLS, so browsers may be told to insist on it
    /// (`Strict-Transport-Security`).
    pub tls: bool,
    /// The origins allowed to call the API from a browser; empty: no CORS
    /// headers at all.
    pub cors_origins: CorsOrigins,
    /// The reverse proxies whose `X-Forwarded-For` hop names the client.
    pub trusted_proxies: TrustedProxies,
    /// The rate limits; `None` limits nothing (and sends no `RateLimit` fields).
    pub rate_limits: Option<Arc<dyn RateLimitUseCases>>,
}

impl std::fmt::Debug for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edge")
            .field("tls", &self.tls)
            .field("cors_origins", &self.cors_origins)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("rate_limits", &self.rate_limits.is_some())
            .finish()
    }
}
