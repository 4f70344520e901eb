//! Request extractors and the configuration that routes actix's own
//! extractor failures into the problem+json envelope.
//!
//! actix answers a bad JSON body, path or query with plain text that echoes
//! serde's internals; every such failure here becomes an [`ApiError`] instead.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, mime, web};
use waiter_domain::{ValidationErrors, Version};
use waiter_ports::identity::{Caller, IdentityUseCases};

use crate::error::ApiError;

/// The largest JSON body accepted.
pub const JSON_LIMIT: usize = 64 * 1024;

/// JSON bodies: limited in size, `application/json` (or `+json`) only, errors as problems.
pub(crate) fn json_config() -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(JSON_LIMIT)
        .content_type_required(true)
        .content_type(|mime| mime.suffix() == Some(mime::JSON) || mime.subtype() == mime::JSON)
        .error_handler(|err, _req| json_error(err).into())
}

fn json_error(err: JsonPayloadError) -> ApiError {
    match err {
        JsonPayloadError::OverflowKnownLength { limit, .. }
        | JsonPayloadError::Overflow { limit } => ApiError::PayloadTooLarge { limit },
        JsonPayloadError::ContentType => ApiError::UnsupportedMediaType,
        JsonPayloadError::Deserialize(err) if err.is_data() => {
            // A well-formed document with a missing or mistyped field.
            ApiError::Validation(ValidationErrors::single("body", strip_position(&err)))
        }
        JsonPayloadError::Deserialize(err) => ApiError::BadRequest(format!(
            "the body is not valid JSON: {}",
            strip_position(&err)
        )),
        other => {
            tracing::debug!(%other, "unreadable request body");
            ApiError::BadRequest("the body could not be read".to_owned())
        }
    }
}

/// serde_json's message without its " at line 1 column 9" suffix.
fn strip_position(err: &serde_json::Error) -> String {
    let message = err.to_string();
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message,
    }
}

/// Path parameters that fail to parse mean the resource cannot exist.
pub(crate) fn path_config() -> web::PathConfig {
    web::PathConfig::default()
        .error_handler(|_err: PathError, _req| ApiError::NotFound("no such resource").into())
}

/// Query strings that fail to parse are malformed requests.
pub(crate) fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err: QueryPayloadError, _req| {
        // serde's message names the parameter and what it expected, nothing internal.
        let detail = match err {
            QueryPayloadError::Deserialize(err) => format!("invalid query string: {err}"),
            _ => "invalid query string".to_owned(),
        };
        ApiError::BadRequest(detail).into()
    })
}

/// The caller of a request that must carry a valid bearer access token.
///
/// Extracting it verifies the token (signature, expiry, revocation); a handler
/// that takes an `Authenticated` argument cannot run for an anonymous request.
#[derive(Debug, Clone, Copy)]
pub struct Authenticated(pub Caller);

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let token = bearer_token(req);
        let identity = req.app_data::<web::Data<dyn IdentityUseCases>>().cloned();
        Box::pin(async move {
            let token = token?;
            let identity: Arc<dyn IdentityUseCases> = identity
                .ok_or_else(|| {
                    tracing::error!("identity use cases are not registered as app data");
                    ApiError::Internal
                })?
                .into_inner();
            Ok(Authenticated(identity.authenticate(&token).await?))
        })
    }
}

/// The token of an `Authorization: Bearer …` header.
fn bearer_token(req: &HttpRequest) -> Result<String, ApiError> {
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or_else(ApiError::missing_token)?;
    let value = value.to_str().map_err(|_| ApiError::invalid_token())?;
    let (scheme, token) = value.split_once(' ').ok_or_else(ApiError::invalid_token)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(ApiError::invalid_token());
    }
    Ok(token.trim().to_owned())
}

/// A resource version as an entity tag: `"3"`.
pub(crate) fn etag(version: Version) -> String {
    format!("\"{}\"", version.get())
}

/// The version an `If-Match` header requires, if any.
///
/// `None` when the header is absent or `*`. A weak tag never matches for a
/// write (RFC 9110 §13.1.1 uses the strong comparison), so it fails the
/// precondition; a resource has one current version, so one strong tag is
/// all a client can usefully send, and anything else is malformed.
pub(crate) fn if_match(req: &HttpRequest) -> Result<Option<Version>, ApiError> {
    let Some(value) = req.headers().get(header::IF_MATCH) else {
        return Ok(None);
    };
    let malformed =
        || ApiError::BadRequest("If-Match must be `*` or one strong ETag such as \"3\"".to_owned());
    let value = value.to_str().map_err(|_| malformed())?.trim();
    if value == "*" {
        return Ok(None);
    }
    if value.starts_with("W/") {
        return Err(ApiError::PreconditionFailed);
    }
    let number = value
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
        .ok_or_else(malformed)?;
    let version = number.parse::<i64>().map_err(|_| malformed())?;
    Ok(Some(Version::new(version)))
}
