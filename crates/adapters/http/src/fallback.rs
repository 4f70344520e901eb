//! Answers for requests no route took: 405 with `Allow` when the path exists
//! under other methods, else 404, both as problem+json.
//!
//! The table of known paths comes from the OpenAPI document, which is itself
//! collected from the routes, so the two cannot drift apart.

use actix_web::http::Method;
use actix_web::{HttpRequest, HttpResponse, web};

use crate::error::ApiError;

/// Every documented path template with the methods it serves.
#[derive(Debug)]
pub(crate) struct KnownRoutes(Vec<(Vec<String>, Vec<String>)>);

/// A path's segments, exactly as routed: `/books/` is not `/books`.
fn segments(path: &str) -> Vec<String> {
    path.split('/').map(str::to_owned).collect()
}

impl KnownRoutes {
    pub(crate) fn from_openapi(api: &utoipa::openapi::OpenApi) -> Self {
        let routes = api
            .paths
            .paths
            .iter()
            .map(|(template, item)| {
                let methods = [
                    (Method::GET, item.get.is_some()),
                    (Method::HEAD, item.get.is_some()),
                    (Method::POST, item.post.is_some()),
                    (Method::PUT, item.put.is_some()),
                    (Method::PATCH, item.patch.is_some()),
                    (Method::DELETE, item.delete.is_some()),
                ];
                let allowed = methods
                    .into_iter()
                    .filter(|(_, present)| *present)
                    .map(|(method, _)| method.to_string())
                    .collect();
                (segments(template), allowed)
            })
            .collect();
        Self(routes)
    }

    /// The methods served at `path`, if some template matches it.
    fn allowed(&self, path: &str) -> Option<String> {
        let wanted = segments(path);
        let matches = |template: &[String]| {
            template.len() == wanted.len()
                && template
                    .iter()
                    .zip(&wanted)
                    .all(|(pattern, segment)| pattern.starts_with('{') || pattern == segment)
        };
        let mut methods: Vec<&str> = self
            .0
            .iter()
            .filter(|(template, _)| matches(template))
            .flat_map(|(_, methods)| methods.iter().map(String::as_str))
            .collect();
        methods.sort_unstable();
        methods.dedup();
        (!methods.is_empty()).then(|| methods.join(", "))
    }
}

pub(crate) async fn not_routed(
    req: HttpRequest,
    routes: web::Data<KnownRoutes>,
) -> Result<HttpResponse, ApiError> {
    let method = req.method().to_string();
    Err(match routes.allowed(req.path()) {
        // A method the path serves only reaches here when nothing else did
        // (say, an unparseable id): the path's resource is what is missing.
        Some(allow) if !allow.split(", ").any(|m| m == method) => {
            ApiError::MethodNotAllowed { method, allow }
        }
        _ => ApiError::NotFound("no route matches this path"),
    })
}
