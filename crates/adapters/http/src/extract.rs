//! Request extractors and the configuration that routes actix's own
//! extractor failures into the problem+json envelope.
//!
//! actix answers a bad JSON body, path or query with plain text that echoes
//! serde's internals; every such failure here becomes an [`ApiError`] instead.

use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::header;
use actix_web::{FromRequest, HttpMessage as _, HttpRequest, mime, web};
use serde::de::DeserializeOwned;
use serde_json::Value;
use utoipa::IntoParams;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::{RefOr, Required, Schema};
use waiter_domain::{ValidationErrors, Version};
use waiter_ports::identity::{Caller, IdentityUseCases};

use crate::error::ApiError;
use crate::fields;
use crate::idempotency::IDEMPOTENCY_KEY;

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

/// Failures of reading a body as JSON: too large, not JSON, or not well formed.
fn json_error(err: JsonPayloadError) -> ApiError {
    match err {
        JsonPayloadError::OverflowKnownLength { limit, .. }
        | JsonPayloadError::Overflow { limit } => ApiError::PayloadTooLarge { limit },
        JsonPayloadError::ContentType => ApiError::UnsupportedMediaType,
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

/// A JSON request body of type `T`: the type whose schema the document
/// publishes for the operation is the type the handler receives.
///
/// The body is read as JSON first (size, media type and syntax: 413, 415,
/// 400), then as a `T`; a document of the wrong shape (a missing, unknown or
/// mistyped field) is a 422 naming the field.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for Body<T> {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, actix_web::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let json = web::Json::<Value>::from_request(req, payload);
        Box::pin(async move {
            let web::Json(value) = json.await?;
            // Every body of this API is an object; serde would also read a
            // struct from an array of its fields in order, which no schema allows.
            if !value.is_object() {
                return Err(ApiError::Validation(ValidationErrors::single(
                    "body",
                    "must be a JSON object",
                ))
                .into());
            }
            serde_path_to_error::deserialize(value)
                .map(Body)
                .map_err(|err| ApiError::Validation(shape_error(&err)).into())
        })
    }
}

/// The field a shape error is about, and what is wrong with it.
fn shape_error(err: &serde_path_to_error::Error<serde_json::Error>) -> ValidationErrors {
    let message = err.inner().to_string();
    let named = |prefix: &str| {
        message
            .strip_prefix(prefix)
            .and_then(|rest| rest.split_once('`'))
            .map(|(name, _)| name.to_owned())
    };
    if let Some(field) = named("missing field `") {
        return ValidationErrors::single(field, "is required");
    }
    if let Some(field) = named("unknown field `") {
        return ValidationErrors::single(field, "is not a field this operation accepts");
    }
    let field = match err.path().to_string() {
        root if root == "." => "body".to_owned(),
        path => path,
    };
    ValidationErrors::single(field, message)
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
        // The rate limits at the edge already verified this request's token.
        if let Some(caller) = req.extensions().get::<Caller>().copied() {
            return Box::pin(ready(Ok(Authenticated(caller))));
        }
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

/// What an `If-Match` header asks of a write: `*` or absent, one strong tag, or a weak tag.
///
/// A malformed value is refused when extracted (400); whether the tag
/// matches is only answered by [`IfMatch::expected`], once the rest of the
/// request is known to be valid (RFC 9110 §13.2.1: preconditions come after
/// the request's own checks).
#[derive(Debug, Clone, Copy)]
pub(crate) struct IfMatch(fields::IfMatch);

impl IfMatch {
    fn read(req: &HttpRequest) -> Result<Self, ApiError> {
        let Some(value) = req.headers().get(header::IF_MATCH) else {
            return Ok(Self(fields::IfMatch::Any));
        };
        let malformed = || {
            ApiError::BadRequest("If-Match must be `*` or one strong ETag such as \"3\"".to_owned())
        };
        let value = value.to_str().map_err(|_| malformed())?.trim();
        fields::if_match(value).map(Self).ok_or_else(malformed)
    }

    /// The version the write requires, `None` for any. A weak tag never
    /// matches for a write (RFC 9110 §13.1.1 uses the strong comparison), so
    /// it fails the precondition; a resource has one current version, so one
    /// strong tag is all a client can usefully send.
    pub(crate) fn expected(self) -> Result<Option<Version>, ApiError> {
        match self.0 {
            fields::IfMatch::Any => Ok(None),
            fields::IfMatch::Version(version) => Ok(Some(version)),
            fields::IfMatch::Weak => Err(ApiError::PreconditionFailed),
        }
    }
}

impl FromRequest for IfMatch {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        ready(Self::read(req))
    }
}

impl IntoParams for IfMatch {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![header_parameter("If-Match", fields::if_match_schema())]
    }
}

/// The client's `Idempotency-Key`, if it sent one; the idempotency use cases judge it.
#[derive(Debug, Clone)]
pub(crate) struct IdempotencyKey(pub Option<String>);

impl FromRequest for IdempotencyKey {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let key = req
            .headers()
            .get(IDEMPOTENCY_KEY)
            .map(|value| {
                value.to_str().map(str::to_owned).map_err(|_| {
                    ApiError::BadRequest("Idempotency-Key must be visible ASCII".to_owned())
                })
            })
            .transpose();
        ready(key.map(Self))
    }
}

impl IntoParams for IdempotencyKey {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![header_parameter(
            "Idempotency-Key",
            fields::idempotency_key_schema(),
        )]
    }
}

/// The `Idempotency-Key` of a message sent to a conversation, checked
/// against the idempotency rule (400 otherwise): the conversation use cases
/// take it as the message's retry key, so sending again with it is a retry.
#[derive(Debug, Clone)]
pub(crate) struct RetryKey(pub Option<String>);

impl RetryKey {
    fn read(req: &HttpRequest) -> Result<Self, ApiError> {
        let Some(value) = req.headers().get(IDEMPOTENCY_KEY) else {
            return Ok(Self(None));
        };
        match value.to_str() {
            Ok(key) if fields::is_idempotency_key(key) => Ok(Self(Some(key.to_owned()))),
            _ => Err(ApiError::BadRequest(
                "Idempotency-Key must be 1 to 255 visible ASCII characters".to_owned(),
            )),
        }
    }
}

impl FromRequest for RetryKey {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        ready(Self::read(req))
    }
}

impl IntoParams for RetryKey {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let schema = fields::described(
            utoipa::openapi::schema::ObjectBuilder::new()
                .schema_type(utoipa::openapi::schema::Type::String)
                .pattern(Some(fields::IDEMPOTENCY_KEY_PATTERN))
                .build(),
            "Makes retries safe: a message sent again with the same key (or the same message \
             `id`) to the same conversation is a retry, answered with what the first send \
             stored and marked `Idempotent-Replayed: true`; nothing new is stored or started. \
             1 to 255 visible ASCII characters.",
        );
        vec![header_parameter("Idempotency-Key", schema)]
    }
}

/// The `Last-Event-ID` of a client resuming an event stream: the position
/// to resume after, 0 when absent. Anything but a non-negative integer is a
/// 400.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LastEventId(pub u64);

impl LastEventId {
    fn read(req: &HttpRequest) -> Result<Self, ApiError> {
        let Some(value) = req.headers().get("last-event-id") else {
            return Ok(Self(0));
        };
        value
            .to_str()
            .ok()
            .and_then(fields::last_event_id)
            .map(Self)
            .ok_or_else(|| {
                ApiError::BadRequest(
                    "Last-Event-ID must be the id of an event received: a non-negative integer"
                        .to_owned(),
                )
            })
    }
}

impl FromRequest for LastEventId {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        ready(Self::read(req))
    }
}

impl IntoParams for LastEventId {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![header_parameter(
            "Last-Event-ID",
            fields::last_event_id_schema(),
        )]
    }
}

/// An optional request header.
fn header_parameter(name: &str, schema: impl Into<RefOr<Schema>>) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .schema(Some(schema))
        .build()
}
