//! The one place where errors become HTTP responses.
//!
//! Every failure a handler or extractor can produce is an [`ApiError`], and
//! every `ApiError` renders as RFC 9457 `application/problem+json`. Use-case
//! errors convert with `From`, so handlers just use `?`. Internal failures are
//! logged here, inside the request's span (which carries its request id), and
//! reach the client as a bare 500 or 503 with no detail.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;
use waiter_domain::ValidationErrors;
use waiter_ports::PortError;
use waiter_ports::catalog::CatalogError;
use waiter_ports::conversations::ConversationError;
use waiter_ports::idempotency::IdempotencyError;
use waiter_ports::identity::{AccountError, AuthError, RefreshError, SessionError, SignInError};

/// The detail of a plain 403.
const NOT_ALLOWED: &str = "you are not allowed to do this";

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Every way a request can fail, by what the client should understand.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed: unparseable JSON, a bad header or query.
    #[error("{0}")]
    BadRequest(String),
    /// No credentials, or credentials that are not valid.
    #[error("{detail}")]
    Unauthenticated {
        detail: &'static str,
        invalid_token: bool,
    },
    /// Authenticated, but not allowed.
    #[error("{0}")]
    Forbidden(&'static str),
    /// Absent, or not the caller's to see.
    #[error("{0}")]
    NotFound(&'static str),
    #[error("this resource does not support {method}")]
    MethodNotAllowed { method: String, allow: String },
    #[error("{0}")]
    Conflict(&'static str),
    /// Another request with the same idempotency key created first, so this
    /// one created nothing. `create_idempotently` answers it with the other
    /// request's response; it reaches the client only if that has expired.
    #[error("another request with this Idempotency-Key was completed meanwhile; retry")]
    KeyTaken,
    #[error("the resource has changed; fetch it again and retry with its current ETag")]
    PreconditionFailed,
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the request body must be application/json")]
    UnsupportedMediaType,
    /// Well-formed, but some values are invalid.
    #[error("{0}")]
    Validation(ValidationErrors),
    /// Over a rate limit: `policy` refused it, and one more request fits
    /// after `retry_after` seconds (at least one).
    #[error("too many requests under the \"{policy}\" limit; retry in {retry_after} s")]
    TooManyRequests {
        policy: &'static str,
        retry_after: u64,
    },
    #[error("a dependency is unavailable; retry later")]
    Unavailable,
    #[error("internal error")]
    Internal,
}

/// An RFC 9457 problem details object.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI identifying the kind of problem.
    #[schema(example = "urn:waiter:problem:validation-failed")]
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind of problem.
    #[schema(example = "Validation failed")]
    pub title: &'static str,
    /// The HTTP status code.
    #[schema(example = 422)]
    pub status: u16,
    /// What went wrong with this request, in words.
    pub detail: String,
    /// For validation failures: each invalid field and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldProblem>,
}

/// One invalid field of a request.
#[derive(Debug, Serialize, ToSchema)]
pub struct FieldProblem {
    #[schema(example = "email")]
    pub field: String,
    #[schema(example = "is not a valid email address")]
    pub message: String,
}

impl ApiError {
    /// The problem type's slug and title.
    fn kind(&self) -> (&'static str, &'static str) {
        match self {
            ApiError::BadRequest(_) => ("bad-request", "Bad request"),
            ApiError::Unauthenticated { .. } => ("unauthenticated", "Authentication required"),
            ApiError::Forbidden(_) => ("forbidden", "Forbidden"),
            ApiError::NotFound(_) => ("not-found", "Not found"),
            ApiError::MethodNotAllowed { .. } => ("method-not-allowed", "Method not allowed"),
            ApiError::Conflict(_) | ApiError::KeyTaken => ("conflict", "Conflict"),
            ApiError::PreconditionFailed => ("precondition-failed", "Precondition failed"),
            ApiError::PayloadTooLarge { .. } => ("payload-too-large", "Payload too large"),
            ApiError::UnsupportedMediaType => ("unsupported-media-type", "Unsupported media type"),
            ApiError::Validation(_) => ("validation-failed", "Validation failed"),
            ApiError::TooManyRequests { .. } => ("rate-limited", "Too many requests"),
            ApiError::Unavailable => ("unavailable", "Service unavailable"),
            ApiError::Internal => ("internal", "Internal server error"),
        }
    }

    fn problem(&self) -> Problem {
        let (slug, title) = self.kind();
        let errors = match self {
            ApiError::Validation(errors) => errors
                .fields()
                .iter()
                .map(|error| FieldProblem {
                    field: error.field.clone(),
                    message: error.message.clone(),
                })
                .collect(),
            _ => Vec::new(),
        };
        Problem {
            kind: format!("urn:waiter:problem:{slug}"),
            title,
            status: self.status_code().as_u16(),
            detail: self.to_string(),
            errors,
        }
    }

    /// Logs an infrastructure failure and returns the error the client sees.
    fn from_port(err: PortError) -> Self {
        match err {
            PortError::Unavailable(source) => {
                // Its causes, without the backtrace `?` would print: under
                // overload every shed request lands here, and resolving a
                // backtrace's symbols costs far more than the request did.
                tracing::error!(error = %format!("{source:#}"), "dependency unavailable");
                ApiError::Unavailable
            }
            PortError::Unexpected(source) => {
                tracing::error!(error = ?source, "unexpected failure");
                ApiError::Internal
            }
        }
    }

    /// The 401 for a request that carried no usable credentials.
    pub fn missing_token() -> Self {
        ApiError::Unauthenticated {
            detail: "this operation needs a bearer access token",
            invalid_token: false,
        }
    }

    /// The 401 for a request whose token is invalid, expired or revoked.
    pub fn invalid_token() -> Self {
        ApiError::Unauthenticated {
            detail: "the access token is invalid, expired or revoked",
            invalid_token: true,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) | ApiError::KeyTaken => StatusCode::CONFLICT,
            ApiError::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        response.content_type(PROBLEM_JSON);
        match self {
            ApiError::Unauthenticated {
                invalid_token: true,
                ..
            } => {
                response.insert_header((
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Bearer error="invalid_token""#),
                ));
            }
            ApiError::Unauthenticated {
                invalid_token: false,
                ..
            } => {
                response
                    .insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
            }
            ApiError::MethodNotAllowed { allow, .. } => {
                response.insert_header((header::ALLOW, allow.as_str()));
            }
            ApiError::Unavailable => {
                response.insert_header((header::RETRY_AFTER, HeaderValue::from_static("5")));
            }
            ApiError::TooManyRequests { retry_after, .. } => {
                response.insert_header((header::RETRY_AFTER, (*retry_after).max(1)));
            }
            _ => {}
        }
        response.json(self.problem())
    }
}

impl From<PortError> for ApiError {
    fn from(err: PortError) -> Self {
        ApiError::from_port(err)
    }
}

impl From<AccountError> for ApiError {
    fn from(err: AccountError) -> Self {
        match err {
            AccountError::NotFound => ApiError::NotFound("no such account"),
            AccountError::Forbidden => ApiError::Forbidden(NOT_ALLOWED),
            AccountError::EmailTaken => {
                ApiError::Conflict("an account with this email already exists")
            }
            // Well-formed, but the caller has not proven it may make this change.
            AccountError::CurrentPasswordMismatch => ApiError::Forbidden(
                "changing the email or password needs current_password, the account's current password",
            ),
            AccountError::VersionMismatch { .. } => ApiError::PreconditionFailed,
            AccountError::PasswordRequired => {
                ApiError::Validation(ValidationErrors::single("password", "is required"))
            }
            AccountError::KeyTaken(_) => ApiError::KeyTaken,
            AccountError::Port(err) => err.into(),
        }
    }
}

impl From<SignInError> for ApiError {
    fn from(err: SignInError) -> Self {
        match err {
            SignInError::InvalidCredentials => ApiError::Unauthenticated {
                detail: "invalid email or password",
                invalid_token: false,
            },
            SignInError::Port(err) => err.into(),
        }
    }
}

impl From<RefreshError> for ApiError {
    fn from(err: RefreshError) -> Self {
        match err {
            RefreshError::InvalidToken | RefreshError::Reused => ApiError::Unauthenticated {
                detail: "the refresh token is invalid, expired or already used",
                invalid_token: true,
            },
            RefreshError::Port(err) => err.into(),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::InvalidToken => ApiError::invalid_token(),
            AuthError::Port(err) => err.into(),
        }
    }
}

impl From<SessionError> for ApiError {
    fn from(err: SessionError) -> Self {
        match err {
            SessionError::NotFound => ApiError::NotFound("no such session"),
            SessionError::Port(err) => err.into(),
        }
    }
}

impl From<CatalogError> for ApiError {
    fn from(err: CatalogError) -> Self {
        match err {
            CatalogError::NotFound => ApiError::NotFound("no such book"),
            CatalogError::Forbidden => ApiError::Forbidden(NOT_ALLOWED),
            CatalogError::IsbnTaken => ApiError::Conflict("a book with this ISBN already exists"),
            CatalogError::VersionMismatch { .. } => ApiError::PreconditionFailed,
            CatalogError::Invalid(errors) => ApiError::Validation(errors),
            CatalogError::KeyTaken(_) => ApiError::KeyTaken,
            CatalogError::Port(err) => err.into(),
        }
    }
}

impl From<IdempotencyError> for ApiError {
    fn from(err: IdempotencyError) -> Self {
        match err {
            IdempotencyError::InvalidKey => ApiError::BadRequest(err.to_string()),
            IdempotencyError::InFlight => ApiError::Conflict(
                "a request with this Idempotency-Key is still in progress; retry later",
            ),
            IdempotencyError::Mismatch => ApiError::Validation(ValidationErrors::single(
                "Idempotency-Key",
                "was already used for a different request",
            )),
            IdempotencyError::Port(err) => err.into(),
        }
    }
}

impl From<ValidationErrors> for ApiError {
    fn from(errors: ValidationErrors) -> Self {
        ApiError::Validation(errors)
    }
}

/// Conversations. A message over the configured size is a 422 naming the
/// text's field, not a 413: 413 is the body's own limit (64 KiB), which the
/// message limit sits well inside, and the client fixes the one field.
impl From<ConversationError> for ApiError {
    fn from(err: ConversationError) -> Self {
        match err {
            ConversationError::NotFound => ApiError::NotFound("no such conversation"),
            ConversationError::NoReplyInProgress => {
                ApiError::NotFound("no reply is in progress in this conversation")
            }
            ConversationError::ReplyInProgress => ApiError::Conflict(
                "a reply is already in progress in this conversation; wait for it or stop it",
            ),
            ConversationError::TooManyMessages { .. } => ApiError::Conflict(
                "the conversation has reached its limit of messages; start a new one",
            ),
            // Too many at once, not a state of this conversation: one of
            // the caller's replies ends soon, so a retry shortly may pass.
            ConversationError::TooManyReplies { .. } => ApiError::TooManyRequests {
                policy: "replies-in-flight",
                retry_after: 1,
            },
            ConversationError::MessageTooLong { limit } => ApiError::Validation(
                ValidationErrors::single("content.parts", format!("must be at most {limit} bytes")),
            ),
            ConversationError::InvalidTemperature => ApiError::Validation(
                ValidationErrors::single("metadata.temperature", "must be between 0 and 2"),
            ),
            ConversationError::VersionMismatch { .. } => ApiError::PreconditionFailed,
            ConversationError::InvalidResumeToken => ApiError::Unauthenticated {
                detail: "the resume token is invalid or expired",
                invalid_token: true,
            },
            ConversationError::KeyTaken(_) => ApiError::KeyTaken,
            ConversationError::Port(err) => err.into(),
        }
    }
}
