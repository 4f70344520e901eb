//! Rate limits at the edge: every request is counted against the client
//! policy (the account when the bearer token is valid, else the client
//! address), and some routes against their own policies as well; handlers
//! that count by what is in the body or by who asks (sign-in by email,
//! refresh by session, messages by account)
//! do so with the [`Throttle`] extractor, into the same record.
//!
//! Every response of a limited request carries the IETF `RateLimit-Policy`
//! and `RateLimit` fields (draft-ietf-httpapi-ratelimit-headers-11), one
//! item per policy that counted it:
//!
//! ```text
//! RateLimit-Policy: "client";q=300;w=60, "sign-in";q=5;w=300
//! RateLimit: "client";r=297;t=1, "sign-in";r=4;t=60
//! ```
//!
//! A refused request gets 429 problem+json with `Retry-After`. A limiter
//! that fails lets the request through (logged): losing a limit for a moment
//! beats refusing every client.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::future::{Ready, ready};
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpMessage as _, HttpRequest, ResponseError as _, web};
use waiter_ports::identity::{Caller, IdentityUseCases};
use waiter_ports::rate_limit::{Limited, Policy, RateLimitUseCases};

use super::client::{ClientAddress, TrustedProxies};
use crate::error::ApiError;

const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// Paths no rate limit applies to: the probes a load balancer polls, and
/// the documentation.
pub(crate) fn exempt(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/openapi.json" | "/docs") || path.starts_with("/docs/")
}

/// Routes with a policy of their own, counted per client address on top of
/// the client policy: sign-ups, and sign-in attempts whatever the email.
const ROUTE_POLICIES: [(Method, &str, Policy); 2] = [
    (Method::POST, "/api/v1/accounts", Policy::SignUp),
    (Method::POST, "/api/v1/sessions", Policy::SignInAddress),
];

/// What the edge needs to count requests.
#[derive(Clone, Default)]
pub(crate) struct Limits {
    pub(crate) use_cases: Option<Arc<dyn RateLimitUseCases>>,
    pub(crate) proxies: TrustedProxies,
}

/// The decisions made about one request, in the order they were made.
#[derive(Debug, Clone, Default)]
struct Record(Rc<RefCell<Vec<Limited>>>);

impl Record {
    fn push(&self, limited: Limited) {
        self.0.borrow_mut().push(limited);
    }

    /// The first refusal, as the error the client gets.
    fn refusal(&self) -> Option<ApiError> {
        self.0
            .borrow()
            .iter()
            .find(|limited| !limited.decision.allowed)
            .map(too_many_requests)
    }

    /// Sets `RateLimit-Policy` and `RateLimit`, one item per policy.
    fn write(&self, headers: &mut HeaderMap) {
        let decisions = self.0.borrow();
        if decisions.is_empty() {
            return;
        }
        let (mut policies, mut states) = (String::new(), String::new());
        for (i, limited) in decisions.iter().enumerate() {
            let separator = if i == 0 { "" } else { ", " };
            let name = limited.policy.name();
            let window = limited.quota.window.as_secs_f64().ceil();
            let _ = write!(
                policies,
                "{separator}\"{name}\";q={};w={window}",
                limited.quota.limit
            );
            let reset = limited.decision.reset_after.as_secs_f64().ceil();
            let _ = write!(
                states,
                "{separator}\"{name}\";r={};t={reset}",
                limited.decision.remaining
            );
        }
        if let (Ok(policies), Ok(states)) = (
            HeaderValue::from_str(&policies),
            HeaderValue::from_str(&states),
        ) {
            headers.insert(RATELIMIT_POLICY, policies);
            headers.insert(RATELIMIT, states);
        }
    }
}

fn too_many_requests(limited: &Limited) -> ApiError {
    let seconds = limited.decision.retry_after.as_secs_f64().ceil();
    // At least one second, as a whole number: what `Retry-After` can say.
    let retry_after = if seconds >= 1.0 { seconds as u64 } else { 1 };
    ApiError::TooManyRequests {
        policy: limited.policy.name(),
        retry_after,
    }
}

/// Counts `subject` under `policy` into `record`; a failing limiter is logged
/// and counts nothing.
async fn count(use_cases: &dyn RateLimitUseCases, record: &Record, policy: Policy, subject: &str) {
    match use_cases.check(policy, subject).await {
        Ok(Some(limited)) => record.push(limited),
        Ok(None) => {}
        Err(error) => {
            tracing::warn!(?error, %policy, "the rate limiter failed; the request is not limited");
        }
    }
}

/// `subject` of the client policy: the account of a valid bearer token (kept
/// in the request for the `Authenticated` extractor, so the token is checked
/// once), else the client address.
async fn client_subject(req: &ServiceRequest, address: &str) -> String {
    let identity = req.app_data::<web::Data<dyn IdentityUseCases>>().cloned();
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().to_owned());
    if let (Some(identity), Some(token)) = (identity, token)
        && let Ok(caller) = identity.authenticate(&token).await
    {
        req.extensions_mut().insert::<Caller>(caller);
        return format!("account {}", caller.account_id);
    }
    format!("address {address}")
}

/// The client address as a subject; "unknown" only for connections without a
/// peer address, which real sockets always have.
fn address_subject(address: Option<IpAddr>) -> String {
    address.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string())
}

/// Determines the client address, counts the request under the client
/// policy and its route's policy, refuses it when over a limit, and writes
/// the rate limit headers on its response.
pub(crate) async fn limit_requests(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let Some(limits) = req.app_data::<web::Data<Limits>>().cloned() else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    };
    // Told from the proxies in front when the request span was opened.
    let address = req
        .extensions()
        .get::<ClientAddress>()
        .map(|client| client.0);
    let Some(use_cases) = limits.use_cases.clone().filter(|_| !exempt(req.path())) else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    };
    let address = address_subject(address);
    let record = Record::default();
    let subject = client_subject(&req, &address).await;
    count(&*use_cases, &record, Policy::Client, &subject).await;
    for (method, path, policy) in &ROUTE_POLICIES {
        if req.method() == method && req.path() == *path {
            count(&*use_cases, &record, *policy, &address).await;
        }
    }
    if let Some(refusal) = record.refusal() {
        let mut response = refusal.error_response();
        record.write(response.headers_mut());
        return Ok(req.into_response(response).map_into_right_body());
    }
    req.extensions_mut().insert(record.clone());
    let mut response = next.call(req).await?;
    record.write(response.headers_mut());
    Ok(response.map_into_left_body())
}

/// Lets a handler count a request under a policy whose subject only the
/// handler knows (the email of a sign-in, the session of a refresh); its
/// decisions join the edge's in the response headers.
pub(crate) struct Throttle {
    use_cases: Option<Arc<dyn RateLimitUseCases>>,
    record: Record,
    address: Option<IpAddr>,
}

impl Throttle {
    /// The client address, as a subject.
    pub(crate) fn address(&self) -> String {
        address_subject(self.address)
    }

    /// Counts the request of `subject` under `policy`; a 429 when over the limit.
    pub(crate) async fn check(&self, policy: Policy, subject: &str) -> Result<(), ApiError> {
        let Some(use_cases) = &self.use_cases else {
            return Ok(());
        };
        count(&**use_cases, &self.record, policy, subject).await;
        self.record.refusal().map_or(Ok(()), Err)
    }

    /// Gives `subject` its whole quota under `policy` again; a failure is logged.
    pub(crate) async fn reset(&self, policy: Policy, subject: &str) {
        if let Some(use_cases) = &self.use_cases
            && let Err(error) = use_cases.reset(policy, subject).await
        {
            tracing::warn!(?error, %policy, "could not reset a rate limit");
        }
    }
}

impl FromRequest for Throttle {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let extensions = req.extensions();
        let record = extensions.get::<Record>().cloned();
        let use_cases = record.as_ref().and_then(|_| {
            req.app_data::<web::Data<Limits>>()
                .and_then(|limits| limits.use_cases.clone())
        });
        ready(Ok(Self {
            use_cases,
            record: record.unwrap_or_default(),
            address: extensions.get::<ClientAddress>().map(|client| client.0),
        }))
    }
}
