//! HTTP metrics, reported to whatever `metrics` recorder the server
//! installed (none in tests, where this costs next to nothing):
//!
//! - `http_requests_total{method, route, status}`: requests answered;
//! - `http_request_duration_seconds{method, route}`: a histogram of the time
//!   to the response head, for every route but event streams, whose length
//!   is the client's to choose (they are measured by their own metrics);
//! - `http_requests_in_flight`: requests being handled;
//! - `waiter_idempotency_replays_total{route}`: responses replayed for an
//!   `Idempotency-Key` retry.
//!
//! The route is the pattern (`/api/v1/books/{id}`), never the path, and an
//! unknown method counts as `other`, so a client cannot mint new series.

use std::time::Instant;

use actix_web::HttpMessage as _;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, header};
use actix_web::middleware::Next;

use crate::MatchedRoute;

/// Keeps `http_requests_in_flight` right however the request ends, even
/// when the client goes away and the future is dropped.
struct InFlight;

impl InFlight {
    fn start() -> Self {
        metrics::gauge!("http_requests_in_flight").increment(1.0);
        Self
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!("http_requests_in_flight").decrement(1.0);
    }
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Counts and times every request.
pub(crate) async fn measure(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let _in_flight = InFlight::start();
    let started = Instant::now();
    let method = method_label(req.method());
    // Found by the request log, just outside.
    let route = req
        .extensions()
        .get::<MatchedRoute>()
        .map_or(MatchedRoute::UNROUTED, |route| &route.0)
        .to_owned();
    let response = next.call(req).await;
    let status = match &response {
        Ok(response) => response.status(),
        Err(error) => error.as_response_error().status_code(),
    };
    metrics::counter!(
        "http_requests_total",
        "method" => method,
        "route" => route.clone(),
        "status" => status.as_str().to_owned(),
    )
    .increment(1);
    if let Ok(response) = &response {
        let headers = response.headers();
        let streaming = headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|value| value.as_bytes().starts_with(b"text/event-stream"));
        if !streaming {
            metrics::histogram!(
                "http_request_duration_seconds",
                "method" => method,
                "route" => route.clone(),
            )
            .record(started.elapsed().as_secs_f64());
        }
        if headers
            .get(crate::idempotency::IDEMPOTENT_REPLAYED)
            .is_some_and(|value| value == "true")
        {
            metrics::counter!("waiter_idempotency_replays_total", "route" => route).increment(1);
        }
    }
    response
}
