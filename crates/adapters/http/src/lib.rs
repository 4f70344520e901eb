//! Waiter's HTTP adapter (actix-web).
//!
//! It translates HTTP into calls on the inbound ports and their results back
//! into HTTP: routes, request and response bodies, extractors, the error
//! envelope, the OpenAPI document and Swagger UI. It never touches a store,
//! hashes a password or decides a business rule.

mod docs;
mod dto;
pub mod edge;
pub mod error;
mod extract;
mod fallback;
mod fields;
mod idempotency;
mod pagination;
mod responses;
mod routes;
mod sse;

use std::rc::Rc;
use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::{Condition, Next, from_fn};
use actix_web::{App, HttpMessage as _, web};
use std::time::Instant;

use tracing::Span;
use tracing_actix_web::{RequestId, RootSpanBuilder, TracingLogger};
use utoipa::OpenApi as _;
use utoipa_actix_web::service_config::ServiceConfig;
use utoipa_actix_web::{AppExt, scope};
use utoipa_swagger_ui::SwaggerUi;
use waiter_ports::catalog::CatalogUseCases;
use waiter_ports::conversations::ConversationUseCases;
use waiter_ports::health::HealthUseCases;
use waiter_ports::idempotency::IdempotencyUseCases;
use waiter_ports::identity::IdentityUseCases;

pub use docs::ApiDoc;
pub use edge::Edge;
pub use extract::JSON_LIMIT;

/// The use cases the HTTP adapter drives, injected by the server.
#[derive(Clone)]
pub struct HttpState {
    pub identity: Arc<dyn IdentityUseCases>,
    pub catalog: Arc<dyn CatalogUseCases>,
    pub conversations: Arc<dyn ConversationUseCases>,
    pub idempotency: Arc<dyn IdempotencyUseCases>,
    pub health: Arc<dyn HealthUseCases>,
}

/// Registers every documented route. The order matters where paths overlap:
/// `/accounts/me` must come before `/accounts/{id}`, `/books/recent` before `/books/{id}`.
/// The seed's own conversation endpoints live under `/backend-api`, as aliases.
fn routes(config: &mut ServiceConfig) {
    use routes::{accounts, books, conversations, health, sessions};
    config
        .service(health::liveness)
        .service(health::readiness)
        .service(
            scope("/api/v1")
                .service(accounts::create_account)
                .service(accounts::list_accounts)
                .service(accounts::get_own_account)
                .service(accounts::update_own_account)
                .service(accounts::delete_own_account)
                .service(accounts::get_account)
                .service(accounts::update_account)
                .service(accounts::delete_account)
                .service(sessions::create_session)
                .service(sessions::refresh_session)
                .service(sessions::list_sessions)
                .service(sessions::delete_all_sessions)
                .service(sessions::get_current_session)
                .service(sessions::delete_current_session)
                .service(sessions::delete_session)
                .service(books::list_books)
                .service(books::list_recent_books)
                .service(books::create_book)
                .service(books::get_book)
                .service(books::replace_book)
                .service(books::update_book)
                .service(books::delete_book)
                .service(conversations::create_conversation)
                .service(conversations::list_conversations)
                .service(conversations::get_conversation)
                .service(conversations::update_conversation)
                .service(conversations::delete_conversation)
                .service(conversations::send_message)
                .service(conversations::stop_generation)
                .service(conversations::follow_reply),
        )
        .service(
            scope("/backend-api")
                .service(conversations::seed_send_message)
                .service(conversations::seed_list_conversations)
                .service(conversations::seed_get_conversation),
        );
}

/// The OpenAPI document, collected from the routes themselves.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, api) = App::new()
        .into_utoipa_app()
        .openapi(ApiDoc::openapi())
        .configure(routes)
        .split_for_parts();
    with_rate_limits(api)
}

/// The document with the rate limits' 429 listed on every limited operation.
fn with_rate_limits(mut api: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    responses::document_rate_limits(&mut api);
    api
}

/// The whole application: API routes, docs, probes, the fallback for unknown
/// routes, request ids, per-request logging, and the [`Edge`] around them all.
pub fn app(
    state: HttpState,
    edge: Edge,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let (app, api) = App::new()
        .into_utoipa_app()
        .openapi(ApiDoc::openapi())
        .app_data(web::Data::from(state.identity))
        .app_data(web::Data::from(state.catalog))
        .app_data(web::Data::from(state.conversations))
        .app_data(web::Data::from(state.idempotency))
        .app_data(web::Data::from(state.health))
        .app_data(extract::json_config())
        .app_data(extract::path_config())
        .app_data(extract::query_config())
        .configure(routes)
        .split_for_parts();
    let api = with_rate_limits(api);
    let known_routes = web::Data::new(fallback::KnownRoutes::from_openapi(&api));
    let security = web::Data::new(edge::security::Security { hsts: edge.tls });
    let limits = web::Data::new(edge::limits::Limits {
        use_cases: edge.rate_limits.clone(),
        proxies: edge.trusted_proxies.clone(),
    });
    // Outermost last: logging sees every response as it leaves; the security
    // headers go on everything CORS and the routes answer.
    app.service(web::redirect("/docs", "/docs/"))
        .service(SwaggerUi::new("/docs/{_:.*}").url("/openapi.json", api))
        .app_data(known_routes)
        .app_data(security)
        .app_data(limits)
        .default_service(web::to(fallback::not_routed))
        .wrap(from_fn(fallback::answer_by_path))
        .wrap(from_fn(head_as_get))
        .wrap(from_fn(edge::limits::limit_requests))
        .wrap(Condition::new(
            !edge.cors_origins.is_empty(),
            edge.cors_origins.middleware(),
        ))
        .wrap(from_fn(edge::security::security_headers))
        .wrap(from_fn(edge::metrics::measure))
        .wrap(from_fn(log_request))
        .wrap(TracingLogger::<RequestSpan>::new())
}

/// The route pattern a request matched (`/api/v1/books/{id}`), or
/// `(unrouted)`: found once by [`log_request`], which logs it, and kept in
/// the request for the metrics to label with.
#[derive(Clone)]
pub(crate) struct MatchedRoute(pub(crate) Rc<str>);

impl MatchedRoute {
    /// The route label of a request no route matched.
    pub(crate) const UNROUTED: &str = "(unrouted)";

    fn of(req: &ServiceRequest) -> Self {
        Self(
            req.match_pattern()
                .map_or_else(|| Self::UNROUTED.into(), Rc::from),
        )
    }
}

/// Logs one line per request (method, route, status, latency; the request id
/// comes from the enclosing span) and echoes the request id that
/// [`TracingLogger`] assigned as `X-Request-Id`, so a client can quote it
/// when reporting a failure.
async fn log_request(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let request_id = req.extensions().get::<RequestId>().copied();
    let method = req.method().clone();
    let route = MatchedRoute::of(&req);
    req.extensions_mut().insert(route.clone());
    let mut response = next.call(req).await?;
    tracing::info!(
        %method,
        route = &*route.0,
        status = response.status().as_u16(),
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    if let Some(id) = request_id.and_then(|id| HeaderValue::from_str(&id.to_string()).ok()) {
        response
            .headers_mut()
            .insert(HeaderName::from_static("x-request-id"), id);
    }
    Ok(response)
}

/// Answers `HEAD` like `GET` (RFC 9110 §9.3.2): routing sees a `GET`, and
/// actix still sends no body, because it remembers the request was `HEAD`.
async fn head_as_get(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if req.method() == Method::HEAD {
        req.head_mut().method = Method::GET;
    }
    next.call(req).await
}

/// The request span, around everything logged while a request is handled:
/// its id, the path asked for and the client's address, told from the
/// proxies in front ([`edge::client`]) and kept in the request for the
/// rate limits. All three are known when the span opens, so it is
/// formatted once; recording the address later formatted it again. Only these:
/// [`log_request`] logs the method, route and status once, and
/// tracing-actix-web's own span (a dozen OpenTelemetry fields, the client
/// address taken from any `X-Forwarded-For`) cost a tenth of a cached
/// read's time to build and again to print on every line. No event per
/// error response either: `ApiError` logs every internal failure.
struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let request_id = request.extensions().get::<RequestId>().copied();
        let client = request
            .app_data::<web::Data<edge::limits::Limits>>()
            .and_then(|limits| limits.proxies.client_of(request.request()));
        if let Some(address) = client {
            request
                .extensions_mut()
                .insert(edge::client::ClientAddress(address));
        }
        tracing::info_span!(
            "request",
            request_id = request_id.map(tracing::field::display),
            path = request.path(),
            client_ip = client.map(tracing::field::display),
        )
    }

    fn on_request_end<B: MessageBody>(
        _span: Span,
        _outcome: &Result<ServiceResponse<B>, actix_web::Error>,
    ) {
    }
}
