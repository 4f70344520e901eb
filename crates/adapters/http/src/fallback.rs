//! What the documented paths answer before routing: `OPTIONS` gets 204 with
//! `Allow`, and a method the path does not serve gets 405 with `Allow`, both
//! for that exact path. Requests for no documented path go on to routing,
//! and, when nothing takes them, to [`not_routed`]: 404.
//!
//! The table of paths comes from the OpenAPI document, which is itself
//! collected from the routes, so the two cannot drift apart.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, header};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, ResponseError as _, web};
use utoipa::openapi::OpenApi;

use crate::error::ApiError;

/// Every documented path template with the methods it serves.
#[derive(Debug)]
pub(crate) struct KnownRoutes(Vec<Route>);

#[derive(Debug)]
struct Route {
    /// The template's segments; `None` stands for a parameter such as `{id}`.
    segments: Vec<Option<String>>,
    methods: Vec<Method>,
    /// `methods` as an `Allow` value, with `HEAD` (answered like `GET`) and `OPTIONS`.
    allow: String,
    /// Where the parameters are, a bit per segment, the first segment the
    /// highest: of two templates a path fits (as many segments), the one with
    /// a literal where the other has a parameter first is the smaller.
    parameters: u64,
}

impl Route {
    fn new(template: &str, mut methods: Vec<Method>) -> Self {
        let segments: Vec<Option<String>> = template
            .split('/')
            .map(|segment| (!segment.starts_with('{')).then(|| segment.to_owned()))
            .collect();
        let parameters = segments
            .iter()
            .fold(0, |bits, segment| bits << 1 | u64::from(segment.is_none()));
        if methods.contains(&Method::GET) {
            methods.push(Method::HEAD);
        }
        methods.push(Method::OPTIONS);
        let mut names: Vec<&str> = methods.iter().map(Method::as_str).collect();
        names.sort_unstable();
        let allow = names.join(", ");
        Self {
            segments,
            methods,
            allow,
            parameters,
        }
    }

    /// True when `path` fits the template: as many segments, literals equal,
    /// and a parameter never empty (actix does not route `/books/` to `/books/{id}`).
    fn fits(&self, path: &[&str]) -> bool {
        self.segments.len() == path.len()
            && self
                .segments
                .iter()
                .zip(path)
                .all(|(template, segment)| match template {
                    Some(literal) => literal == segment,
                    None => !segment.is_empty(),
                })
    }
}

impl KnownRoutes {
    pub(crate) fn from_openapi(api: &OpenApi) -> Self {
        let routes = api
            .paths
            .paths
            .iter()
            .map(|(template, item)| {
                let methods = [
                    (Method::GET, item.get.is_some()),
                    (Method::POST, item.post.is_some()),
                    (Method::PUT, item.put.is_some()),
                    (Method::PATCH, item.patch.is_some()),
                    (Method::DELETE, item.delete.is_some()),
                ]
                .into_iter()
                .filter_map(|(method, served)| served.then_some(method))
                .collect();
                Route::new(template, methods)
            })
            .collect();
        Self(routes)
    }

    /// The route of `path`: of the templates it fits, the one with a literal
    /// where another has a parameter (`/books/recent`, not `/books/{id}`).
    fn route(&self, path: &str) -> Option<&Route> {
        let path: Vec<&str> = path.split('/').collect();
        self.0
            .iter()
            .filter(|route| route.fits(&path))
            .min_by_key(|route| route.parameters)
    }
}

/// Answers `OPTIONS`, and methods a documented path does not serve, before
/// routing: a handler for a path with a parameter (`/books/{id}`) would
/// otherwise take a request meant for a literal path (`DELETE /books/recent`).
/// Runs after `HEAD` became `GET`.
pub(crate) async fn answer_by_path(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let routes = req.app_data::<web::Data<KnownRoutes>>().cloned();
    let Some(route) = routes
        .as_deref()
        .and_then(|routes| routes.route(req.path()))
    else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    };
    let response = if req.method() == Method::OPTIONS {
        HttpResponse::NoContent()
            .insert_header((header::ALLOW, route.allow.as_str()))
            .finish()
    } else if !route.methods.contains(req.method()) {
        ApiError::MethodNotAllowed {
            method: req.method().to_string(),
            allow: route.allow.clone(),
        }
        .error_response()
    } else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    };
    Ok(req.into_response(response).map_into_right_body())
}

/// The default service: no route took the request.
pub(crate) async fn not_routed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("no route matches this path"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes() -> KnownRoutes {
        KnownRoutes(vec![
            Route::new(
                "/books/{id}",
                vec![Method::GET, Method::PUT, Method::DELETE],
            ),
            Route::new("/books/recent", vec![Method::GET]),
            Route::new("/books", vec![Method::GET, Method::POST]),
        ])
    }

    #[test]
    fn a_literal_path_is_its_own_route() {
        let routes = routes();
        let allow = |path| routes.route(path).map(|route| route.allow.as_str());
        assert_eq!(allow("/books/recent"), Some("GET, HEAD, OPTIONS"));
        assert_eq!(
            allow("/books/book_1"),
            Some("DELETE, GET, HEAD, OPTIONS, PUT")
        );
        assert_eq!(allow("/books"), Some("GET, HEAD, OPTIONS, POST"));
        assert_eq!(allow("/books/"), None);
        assert_eq!(allow("/books/recent/x"), None);
    }
}
