//! CORS (the Fetch standard's cross-origin checks) for an exact list of
//! origins, with actix-cors.
//!
//! Bearer tokens travel in `Authorization`, never in cookies, so credentialed
//! requests (`Access-Control-Allow-Credentials`) are not offered: a page may
//! send the header, and nothing the browser would attach by itself is
//! exposed. An allowed origin is echoed back exactly; any other origin is
//! never echoed, and `*` is never sent. A preflight from another origin, or
//! asking for a method or header that is not listed, is refused (400).

use std::fmt;

use actix_cors::Cors;
use actix_web::http::{Method, header};

/// Request headers a page may send.
const ALLOWED_HEADERS: [&str; 8] = [
    "authorization",
    "content-type",
    "accept",
    "idempotency-key",
    "if-match",
    "if-none-match",
    "last-event-id",
    "x-request-id",
];

/// Response headers a page may read.
const EXPOSED_HEADERS: [&str; 9] = [
    "etag",
    "location",
    "link",
    "ratelimit",
    "ratelimit-policy",
    "retry-after",
    "x-request-id",
    "idempotent-replayed",
    "www-authenticate",
];

/// How long a browser may cache a preflight's answer, in seconds.
const PREFLIGHT_MAX_AGE: usize = 600;

/// The exact origins (`https://app.example.com`, `http://localhost:5173`)
/// allowed to call the API from a browser.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CorsOrigins(Vec<String>);

/// Why a `WAITER_CORS_ORIGINS` value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin:?} is not an origin: {why}")]
pub struct CorsOriginsError {
    origin: String,
    why: &'static str,
}

impl CorsOrigins {
    /// Parses a comma-separated list of origins, each `scheme://host[:port]`
    /// exactly as a browser sends it in `Origin`: no path, no trailing slash,
    /// no wildcard. An empty (or blank) list allows no origin.
    pub fn parse(raw: &str) -> Result<Self, CorsOriginsError> {
        let mut origins = Vec::new();
        for origin in raw.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            check_origin(origin).map_err(|why| CorsOriginsError {
                origin: origin.to_owned(),
                why,
            })?;
            if !origins.iter().any(|known| known == origin) {
                origins.push(origin.to_owned());
            }
        }
        Ok(Self(origins))
    }

    /// True when no origin is allowed: no CORS at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The actix-cors middleware for these origins.
    pub(crate) fn middleware(&self) -> Cors {
        let mut cors = Cors::default()
            .allowed_methods([
                Method::GET,
                Method::HEAD,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
                Method::OPTIONS,
            ])
            .allowed_headers(ALLOWED_HEADERS)
            .expose_headers(EXPOSED_HEADERS)
            .max_age(PREFLIGHT_MAX_AGE)
            // A simple request from another origin goes on, with no CORS
            // headers: the browser then keeps its answer from the page.
            .block_on_origin_mismatch(false);
        for origin in &self.0 {
            cors = cors.allowed_origin(origin);
        }
        cors
    }
}

impl fmt::Display for CorsOrigins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

/// `Ok` for `scheme://host[:port]` with an `http` or `https` scheme.
fn check_origin(origin: &str) -> Result<(), &'static str> {
    if origin == "*" || origin.contains('*') {
        return Err("wildcards are not allowed; list each origin");
    }
    let Some((scheme, authority)) = origin.split_once("://") else {
        return Err("it needs a scheme, such as https://");
    };
    if scheme != "http" && scheme != "https" {
        return Err("the scheme must be http or https");
    }
    if authority.is_empty() {
        return Err("it has no host");
    }
    if authority.contains(['/', '?', '#']) {
        return Err("an origin has no path, not even a trailing slash");
    }
    if authority.contains('@') {
        return Err("an origin has no user information");
    }
    if origin
        .chars()
        .any(|c| c.is_ascii_uppercase() || !c.is_ascii_graphic())
    {
        return Err("browsers send origins in lower case, without spaces");
    }
    origin
        .parse::<header::HeaderValue>()
        .map(drop)
        .map_err(|_| "it is not a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_origins_parse_and_anything_else_is_refused() {
        let origins =
            CorsOrigins::parse(" https://app.example.com,http://localhost:5173 ,").unwrap();
        assert_eq!(
            origins.to_string(),
            "https://app.example.com,http://localhost:5173"
        );
        assert!(CorsOrigins::parse("").unwrap().is_empty());
        assert!(CorsOrigins::parse(" , ").unwrap().is_empty());
        for bad in [
            "*",
            "https://*.example.com",
            "app.example.com",
            "ftp://example.com",
            "https://example.com/",
            "https://example.com/app",
            "https://user@example.com",
            "https://Example.com",
            "https://",
        ] {
            assert!(CorsOrigins::parse(bad).is_err(), "{bad} was accepted");
        }
    }
}
