//! The problem responses of the OpenAPI document: each status is defined
//! once, as a component, and operations refer to it.
//!
//! Every body is the [`Problem`](crate::error::Problem) that
//! [`ApiError`](crate::error::ApiError) renders; this module only says, per
//! status, what it means and which header comes with it. Operations list the
//! groups below in their `responses(...)`, by what they do: read a JSON body,
//! need a bearer token, take `If-Match`…

use std::collections::BTreeMap;

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{IntoResponses, Modify, ToSchema as _};

use crate::error::{PROBLEM_JSON, Problem};
use crate::extract::JSON_LIMIT;

/// One reusable problem response.
struct ProblemResponse {
    /// Its name under `components/responses`.
    name: &'static str,
    status: u16,
    description: &'static str,
    /// A header every such response carries, and what it says.
    header: Option<(&'static str, &'static str)>,
}

const BAD_REQUEST: ProblemResponse = ProblemResponse {
    name: "BadRequest",
    status: 400,
    description: "Malformed: the body is not JSON, or a query parameter or header does not fit \
                  its schema (an empty query value included).",
    header: None,
};

const UNAUTHENTICATED: ProblemResponse = ProblemResponse {
    name: "Unauthenticated",
    status: 401,
    description: "No valid credentials: the bearer access token (or, where one is sent, the \
                  email and password, refresh token or resume token) is missing, invalid, \
                  expired or revoked.",
    header: Some((
        "WWW-Authenticate",
        "`Bearer`, with `error=\"invalid_token\"` when a token was sent",
    )),
};

const FORBIDDEN: ProblemResponse = ProblemResponse {
    name: "Forbidden",
    status: 403,
    description: "Authenticated, but not allowed: not an admin, not the owner, or (changing an \
                  email or password) without the account's current password.",
    header: None,
};

const NOT_FOUND: ProblemResponse = ProblemResponse {
    name: "NotFound",
    status: 404,
    description: "No such resource, or not the caller's to see; for a list, a cursor it did not \
                  issue; for stopping a reply, no reply in progress.",
    header: None,
};

const CONFLICT: ProblemResponse = ProblemResponse {
    name: "Conflict",
    status: 409,
    description: "Conflicts with the current state: a unique value (email, ISBN) is taken, a \
                  request with the same `Idempotency-Key` is still in progress, or (sending a \
                  message) a reply is already in progress or the conversation is full.",
    header: None,
};

const PRECONDITION_FAILED: ProblemResponse = ProblemResponse {
    name: "PreconditionFailed",
    status: 412,
    description: "`If-Match` does not name the current version (a weak tag never does); fetch \
                  the resource again and retry with its `ETag`.",
    header: None,
};

const PAYLOAD_TOO_LARGE: ProblemResponse = ProblemResponse {
    name: "PayloadTooLarge",
    status: 413,
    description: "The body is larger than the limit (64 KiB).",
    header: None,
};

const UNSUPPORTED_MEDIA_TYPE: ProblemResponse = ProblemResponse {
    name: "UnsupportedMediaType",
    status: 415,
    description: "The body is missing, or its `Content-Type` is not `application/json` (or \
                  another `+json` type).",
    header: None,
};

const VALIDATION_FAILED: ProblemResponse = ProblemResponse {
    name: "ValidationFailed",
    status: 422,
    description: "Well-formed JSON that does not fit: a missing, unknown or mistyped field, or \
                  an invalid value (a message over the configured size included); `errors` \
                  lists each field and why. Also an `Idempotency-Key` reused for a different \
                  request.",
    header: None,
};

const TOO_MANY_REQUESTS: ProblemResponse = ProblemResponse {
    name: "TooManyRequests",
    status: 429,
    description: "Over a rate limit. `RateLimit-Policy` and `RateLimit` \
                  (draft-ietf-httpapi-ratelimit-headers-11) name the limits and what is left \
                  of each, as on every response of a limited operation; retry after \
                  `Retry-After`. A send is also refused so while its account has as many \
                  replies in progress as it may (`replies-in-flight`).",
    header: Some((
        "Retry-After",
        "Whole seconds to wait before retrying, at least 1",
    )),
};

const UNAVAILABLE: ProblemResponse = ProblemResponse {
    name: "Unavailable",
    status: 503,
    description: "A dependency (the database or the cache) is unavailable; retry later.",
    header: Some(("Retry-After", "Seconds to wait before retrying")),
};

const ALL: [&ProblemResponse; 11] = [
    &BAD_REQUEST,
    &UNAUTHENTICATED,
    &FORBIDDEN,
    &NOT_FOUND,
    &CONFLICT,
    &PRECONDITION_FAILED,
    &PAYLOAD_TOO_LARGE,
    &UNSUPPORTED_MEDIA_TYPE,
    &VALIDATION_FAILED,
    &TOO_MANY_REQUESTS,
    &UNAVAILABLE,
];

impl ProblemResponse {
    fn component(&self) -> Response {
        let mut response = ResponseBuilder::new()
            .description(self.description)
            .content(
                PROBLEM_JSON,
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name(Problem::name())))
                    .build(),
            );
        if let Some((name, description)) = self.header {
            let schema = ObjectBuilder::new().schema_type(Type::String).build();
            response = response.header(
                name,
                HeaderBuilder::new()
                    .schema(Some(schema))
                    .description(Some(description))
                    .build(),
            );
        }
        response.build()
    }

    fn reference(&self) -> (String, RefOr<Response>) {
        (
            self.status.to_string(),
            RefOr::Ref(Ref::from_response_name(self.name)),
        )
    }
}

/// Adds every problem response to the document's components.
pub(crate) struct ProblemResponses;

impl Modify for ProblemResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for problem in ALL {
            components
                .responses
                .insert(problem.name.to_owned(), problem.component().into());
        }
    }
}

macro_rules! problems {
    ($($(#[$doc:meta])* $group:ident => [$($problem:ident),+];)+) => {$(
        $(#[$doc])*
        pub(crate) struct $group;

        impl IntoResponses for $group {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                [$(&$problem),+].into_iter().map(ProblemResponse::reference).collect()
            }
        }
    )+};
}

problems! {
    /// Operations that read a JSON body.
    JsonBody => [BAD_REQUEST, PAYLOAD_TOO_LARGE, UNSUPPORTED_MEDIA_TYPE, VALIDATION_FAILED];
    /// Operations that need a bearer access token, or check credentials.
    Bearer => [UNAUTHENTICATED];
    /// Operations only some callers may perform.
    Forbidden => [FORBIDDEN];
    /// Operations on one resource named in the path.
    NotFound => [NOT_FOUND];
    /// Operations that can collide with a unique value.
    Conflict => [CONFLICT];
    /// Operations that take `If-Match`.
    Conditional => [BAD_REQUEST, PRECONDITION_FAILED];
    /// Operations that take `Idempotency-Key`.
    Idempotent => [BAD_REQUEST, CONFLICT, VALIDATION_FAILED];
    /// Lists with filters and a cursor.
    ListQuery => [BAD_REQUEST, NOT_FOUND];
    /// Operations with query parameters or headers of their own that must fit.
    Malformed => [BAD_REQUEST];
    /// Every operation that reaches the database or the cache.
    Unavailable => [UNAVAILABLE];
}

/// Lists the 429 on every operation the rate limits apply to: every one but
/// the probes. The limits are applied to requests whatever their route (see
/// `edge::limits`), so they are documented the same way, after the routes
/// are collected, rather than operation by operation.
pub(crate) fn document_rate_limits(api: &mut utoipa::openapi::OpenApi) {
    for (path, item) in api.paths.paths.iter_mut() {
        if crate::edge::limits::exempt(path) {
            continue;
        }
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            let (status, reference) = TOO_MANY_REQUESTS.reference();
            operation.responses.responses.insert(status, reference);
        }
    }
}

// The 413 description states the limit in words; this keeps it true.
const _: () = assert!(JSON_LIMIT == 64 * 1024);
