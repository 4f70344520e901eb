//! `Idempotency-Key` handling for creating requests, shared by every POST
//! that creates: the first response is stored and replayed to retries.
//!
//! A handler renders what it creates as a [`Replayable`] (status, the headers
//! that describe the created resource, and the JSON body) and creates through
//! [`create_idempotently`], which admits the request and hands the key to the
//! creating use case.

use std::future::Future;

use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse};
use serde::Serialize;
use sha2::{Digest, Sha256};
use waiter_ports::PortError;
use waiter_ports::idempotency::{
    Admission, Fingerprint, IdempotencyUseCases, Keyed, StoredResponse,
};
use waiter_ports::identity::Caller;

use crate::error::ApiError;
use crate::extract::IdempotencyKey;

/// The request header carrying the client's key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Set on a response that is a replay of an earlier one.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// A successful response that can be stored and replayed byte for byte.
#[derive(Debug, Clone)]
pub(crate) struct Replayable {
    status: StatusCode,
    headers: Vec<(HeaderName, String)>,
    body: Vec<u8>,
}

impl Replayable {
    /// A JSON response.
    pub(crate) fn json(status: StatusCode, body: &impl Serialize) -> Result<Self, ApiError> {
        let body = serde_json::to_vec(body).map_err(|err| {
            tracing::error!(%err, "cannot encode a response body");
            ApiError::Internal
        })?;
        Ok(Self {
            status,
            headers: Vec::new(),
            body,
        })
    }

    /// Adds a header that describes the result (`Location`, `ETag`).
    pub(crate) fn header(mut self, name: HeaderName, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    fn into_response(self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        response.content_type("application/json");
        for (name, value) in self.headers {
            response.insert_header((name, value));
        }
        response.body(self.body)
    }

    fn stored(&self) -> StoredResponse {
        StoredResponse {
            status: self.status.as_u16(),
            headers: self
                .headers
                .iter()
                .map(|(n, v)| (n.as_str().to_owned(), v.clone()))
                .collect(),
            body: self.body.clone(),
        }
    }

    fn from_stored(stored: StoredResponse) -> Result<Self, ApiError> {
        let corrupt = || {
            tracing::error!("a stored idempotent response cannot be replayed");
            ApiError::Internal
        };
        let status = StatusCode::from_u16(stored.status).map_err(|_| corrupt())?;
        let headers = stored
            .headers
            .into_iter()
            .map(|(name, value)| Ok((HeaderName::try_from(name).map_err(|_| corrupt())?, value)))
            .collect::<Result<_, ApiError>>()?;
        Ok(Self {
            status,
            headers,
            body: stored.body,
        })
    }
}

/// Who a key belongs to: the account when signed in, else the client address.
pub(crate) fn scope(req: &HttpRequest, caller: Option<Caller>) -> String {
    match caller {
        Some(caller) => format!("account:{}", caller.account_id),
        None => match req.peer_addr() {
            Some(addr) => format!("client:{}", addr.ip()),
            None => "client:unknown".to_owned(),
        },
    }
}

/// What the request asks for: method, path and body, digested.
fn fingerprint(req: &HttpRequest, body: &impl Serialize) -> Result<Fingerprint, ApiError> {
    let body = serde_json::to_vec(body).map_err(|_| ApiError::Internal)?;
    let mut digest = Sha256::new();
    digest.update(req.method().as_str());
    digest.update([0]);
    digest.update(req.path());
    digest.update([0]);
    digest.update(&body);
    Ok(Fingerprint(digest.finalize().into()))
}

/// Runs `create` once per `Idempotency-Key`: a retry with the same key and
/// request gets the first response (marked `Idempotent-Replayed: true`); the
/// same key with another request is 422; while the first runs, 409. Without
/// the header, `create` simply runs.
///
/// `create` gets the key (with `render`, which turns what it creates into the
/// response) to hand to its use case, whose store writes the response in the
/// transaction that creates the resource. When another request with the key
/// committed first (on another instance), `create` fails with
/// [`ApiError::KeyTaken`] having created nothing, and the other's response
/// is replayed.
pub(crate) async fn create_idempotently<T: 'static, Create>(
    req: &HttpRequest,
    IdempotencyKey(key): IdempotencyKey,
    idempotency: &dyn IdempotencyUseCases,
    scope: &str,
    body: &impl Serialize,
    render: fn(&T) -> Result<Replayable, ApiError>,
    create: impl FnOnce(Option<Keyed<T>>) -> Create,
) -> Result<HttpResponse, ApiError>
where
    Create: Future<Output = Result<T, ApiError>>,
{
    let Some(key) = key.as_deref() else {
        return Ok(render(&create(None).await?)?.into_response());
    };
    let fingerprint = fingerprint(req, body)?;
    let request = match idempotency.begin(scope, key, fingerprint).await? {
        Admission::Replay(stored) => return replay(stored),
        Admission::Proceed(request) => request,
    };
    let keyed = request.rendering(Box::new(move |created: &T| {
        render(created)
            .map(|replayable| replayable.stored())
            .map_err(|_| {
                PortError::unexpected(std::io::Error::other("cannot render a created resource"))
            })
    }));
    match create(Some(keyed)).await {
        Ok(created) => Ok(render(&created)?.into_response()),
        Err(ApiError::KeyTaken) => match idempotency.begin(scope, key, fingerprint).await? {
            Admission::Replay(stored) => replay(stored),
            // What the other request remembered has expired since: no
            // replay is due, and running again is the client's call.
            Admission::Proceed(_) => Err(ApiError::KeyTaken),
        },
        Err(err) => Err(err),
    }
}

/// The first response to a key, sent again.
fn replay(stored: StoredResponse) -> Result<HttpResponse, ApiError> {
    let mut response = Replayable::from_stored(stored)?.into_response();
    mark_replayed(&mut response);
    Ok(response)
}

/// Marks `response` as the answer to a retry (`Idempotent-Replayed: true`):
/// a replayed response, or what a retried send answers.
pub(crate) fn mark_replayed(response: &mut HttpResponse) {
    response.headers_mut().insert(
        HeaderName::from_static(IDEMPOTENT_REPLAYED),
        HeaderValue::from_static("true"),
    );
}
