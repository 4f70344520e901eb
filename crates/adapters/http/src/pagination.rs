//! Keyset pagination: `limit` plus an opaque `cursor`, answered with
//! `next_cursor` and a `Link: <…>; rel="next"` header.
//!
//! A cursor is the base64url encoding of a position the store understands
//! (for accounts, the last id seen). Clients must treat it as opaque. One
//! that is not base64url is malformed (400); one that does not decode to a
//! position of this list, in its sort, names no page (404), the way an id
//! that cannot parse names no resource.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;

use crate::dto::PageBody;
use crate::error::ApiError;
use crate::fields;

/// The page size when `limit` is absent.
pub const DEFAULT_LIMIT: u32 = 20;
/// The largest page a client may ask for.
pub const MAX_LIMIT: u32 = 100;

/// The query parameters of a paginated list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    #[param(schema_with = fields::cursor_schema)]
    pub cursor: Option<String>,
}

impl PageQuery {
    /// The requested page size, checked against the bounds. Fetch one more
    /// than this, and pass the result to [`page_response`].
    pub fn limit(&self) -> Result<u32, ApiError> {
        match self.limit.unwrap_or(DEFAULT_LIMIT) {
            limit @ 1..=MAX_LIMIT => Ok(limit),
            _ => Err(ApiError::BadRequest(format!(
                "limit must be between 1 and {MAX_LIMIT}"
            ))),
        }
    }

    /// The decoded position, parsed by `parse`; `None` for the first page.
    pub fn position<T>(
        &self,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<Option<T>, ApiError> {
        let Some(cursor) = &self.cursor else {
            return Ok(None);
        };
        if !fields::is_cursor(cursor) {
            return Err(ApiError::BadRequest(
                "cursor is malformed; use a next_cursor from a previous page, as it was given"
                    .to_owned(),
            ));
        }
        URL_SAFE_NO_PAD
            .decode(cursor)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .and_then(|text| parse(&text))
            .map(Some)
            .ok_or(ApiError::NotFound(
                "no such page: this list, in this sort, did not issue that cursor",
            ))
    }
}

/// The opaque cursor for a position.
fn encode_cursor(position: &str) -> String {
    URL_SAFE_NO_PAD.encode(position)
}

/// The response for one page. `items` was fetched with a limit of
/// `limit + 1`: the extra item, if present, only tells that another page
/// follows, and is dropped. `position` gives the cursor text of the last item kept.
pub fn page_response<T, B: Serialize>(
    req: &HttpRequest,
    mut items: Vec<T>,
    limit: u32,
    position: impl Fn(&T) -> String,
    body: impl Fn(T) -> B,
) -> HttpResponse {
    let has_more = items.len() > limit as usize;
    items.truncate(limit as usize);
    let next_cursor = items
        .last()
        .filter(|_| has_more)
        .map(|last| encode_cursor(&position(last)));
    let mut response = HttpResponse::Ok();
    if let Some(cursor) = &next_cursor {
        response.insert_header((header::LINK, next_link(req, cursor)));
    }
    response.json(PageBody {
        items: items.into_iter().map(body).collect(),
        next_cursor,
    })
}

/// The `Link` header value pointing at the next page: the same request, with
/// the same filters and sort, and `cursor` set to `cursor`.
fn next_link(req: &HttpRequest, cursor: &str) -> String {
    let mut query: Vec<&str> = req
        .query_string()
        .split('&')
        .filter(|pair| !pair.is_empty() && !pair.starts_with("cursor="))
        .collect();
    let cursor = format!("cursor={cursor}");
    query.push(&cursor);
    format!("<{}?{}>; rel=\"next\"", req.path(), query.join("&"))
}
