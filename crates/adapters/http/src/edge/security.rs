//! The headers every response carries, whatever produced it: a handler, an
//! extractor's failure, the 404/405 fallbacks, CORS or the rate limiter.
//!
//! - `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`,
//!   `X-Frame-Options: DENY` and a `Content-Security-Policy` whose
//!   `frame-ancestors 'none'` says the same to browsers that read only CSP.
//!   API responses are JSON that no browser should render or run, so their
//!   policy allows nothing; Swagger UI under `/docs/` gets a policy that lets
//!   its own scripts, styles and images load (all served from here) and
//!   nothing else.
//! - `Cache-Control: no-store` on responses that may carry a token or account
//!   data: any response to a request with credentials, and anything under
//!   the accounts and sessions paths (sign-up and sign-in carry none yet
//!   answer with account data or tokens). A handler that chose its own
//!   `Cache-Control` keeps it.
//! - `Strict-Transport-Security` when the server itself speaks TLS: over
//!   plain HTTP the header means nothing (RFC 6797 §7.2) and would only
//!   mislead.
//!
//! It also renders the CORS middleware's own refusals (a preflight asking for
//! a method or header that is not allowed) as problem+json, like every other
//! error of this API.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{ResponseError as _, web};

use crate::error::ApiError;

/// The policy of every API response: load nothing, be framed by nothing.
const API_POLICY: &str =
    "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// Swagger UI's policy: its scripts, styles, icons and fonts come from this
/// server, it fetches the OpenAPI document and tries requests against this
/// server, and its stylesheet embeds icons as `data:` URIs. React sets some
/// styles inline, hence `'unsafe-inline'` for styles only; scripts stay
/// `'self'`, so no injected script can run.
const DOCS_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; font-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
     base-uri 'none'; form-action 'none'";

/// Two years, the lifetime HSTS preload lists ask for.
const HSTS: &str = "max-age=63072000";

/// Path prefixes whose every response may carry account data or tokens.
const PRIVATE_PREFIXES: [&str; 2] = ["/api/v1/accounts", "/api/v1/sessions"];

/// What the security headers depend on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Security {
    pub(crate) hsts: bool,
}

/// Sets the security headers on every response (see the module docs).
pub(crate) async fn security_headers(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let hsts = req
        .app_data::<web::Data<Security>>()
        .is_some_and(|security| security.hsts);
    let docs = req.path() == "/docs" || req.path().starts_with("/docs/");
    let private = req.headers().contains_key(header::AUTHORIZATION)
        || PRIVATE_PREFIXES
            .iter()
            .any(|prefix| under(req.path(), prefix));
    let policy = if docs { DOCS_POLICY } else { API_POLICY };
    let mut response = match next.call(req).await {
        Ok(response) => match cors_refusal(&response) {
            Some(problem) => {
                let (request, _) = response.into_parts();
                ServiceResponse::new(request, problem.error_response()).map_into_right_body()
            }
            None => response.map_into_left_body(),
        },
        // An error that escaped every handler becomes its response later,
        // outside this middleware: it gets the same headers then.
        Err(mut err) => {
            err.add_response_mapper(move |mut response| {
                set_security_headers(response.headers_mut(), policy, hsts, private);
                response
            });
            return Err(err);
        }
    };
    set_security_headers(response.headers_mut(), policy, hsts, private);
    Ok(response)
}

fn set_security_headers(headers: &mut HeaderMap, policy: &'static str, hsts: bool, private: bool) {
    if private && !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(policy),
    );
    if hsts {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(HSTS),
        );
    }
}

/// True when `path` is `prefix` or below it (`/api/v1/accounts/me`, not `/api/v1/accountsx`).
fn under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// actix-cors answers a preflight it refuses with plain text; this is the
/// same refusal as a problem.
fn cors_refusal<B>(response: &ServiceResponse<B>) -> Option<ApiError> {
    let refusal = response
        .response()
        .error()?
        .as_error::<actix_cors::CorsError>()?;
    Some(ApiError::BadRequest(format!(
        "CORS preflight refused: {refusal}"
    )))
}

#[cfg(test)]
mod tests {
    use super::under;

    #[test]
    fn private_prefixes_match_whole_segments() {
        assert!(under("/api/v1/accounts", "/api/v1/accounts"));
        assert!(under("/api/v1/accounts/me", "/api/v1/accounts"));
        assert!(!under("/api/v1/accountsx", "/api/v1/accounts"));
        assert!(!under("/api/v1/books", "/api/v1/accounts"));
    }
}
