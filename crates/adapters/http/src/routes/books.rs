//! `/api/v1/books`: the public catalog, and owner-or-admin writes.
//!
//! Bodies are read as JSON objects and parsed field by field, so a client
//! learns every bad field at once, read-only fields (`id`, `owner`, …) are
//! refused rather than silently ignored, and `price` is taken from the JSON
//! text exactly, never through a float.

use std::str::FromStr;

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, delete, get, patch, post, put, web};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::macros::format_description;
use utoipa::{IntoParams, ToSchema};
use waiter_domain::{Author, Book, BookDraft, BookId, Date, Isbn, Price, Title, ValidationErrors};
use waiter_ports::catalog::{
    BookCursor, BookFilter, BookPatch, BookQuery, BookSort, BookSortKey, CatalogUseCases, SortValue,
};
use waiter_ports::idempotency::IdempotencyUseCases;

use crate::dto::PageBody;
use crate::error::{ApiError, Problem};
use crate::extract::{Authenticated, etag, if_match};
use crate::idempotency::{Replayable, run_idempotently, scope};
use crate::pagination::{PageQuery, page_response};

type Catalog = web::Data<dyn CatalogUseCases>;
type Idempotency = web::Data<dyn IdempotencyUseCases>;

/// The fields a client writes.
const WRITABLE: [&str; 5] = ["title", "author", "isbn", "published_date", "price"];
/// The fields the server assigns; a body naming one is refused.
const READ_ONLY: [&str; 5] = ["id", "owner", "version", "created_at", "updated_at"];

/// A book.
#[derive(Debug, Serialize, ToSchema)]
pub struct BookBody {
    #[schema(example = "book_01JD0W5ZK3J2S8Q4V6X7Y9ZABC")]
    pub id: String,
    #[schema(example = "Dune")]
    pub title: String,
    #[schema(example = "Frank Herbert")]
    pub author: String,
    /// ISBN-13, digits only.
    #[schema(example = "9780441172719")]
    pub isbn: String,
    #[schema(value_type = String, format = Date, example = "1965-08-01")]
    pub published_date: String,
    /// An exact decimal with two places.
    #[schema(value_type = f64, example = 9.99)]
    pub price: serde_json::Number,
    /// The account that created it.
    #[schema(example = "acct_01JD0W5ZK3J2S8Q4V6X7Y9ZABC")]
    pub owner: String,
    /// Bumped on every change; also the `ETag`.
    #[schema(example = 1)]
    pub version: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl From<Book> for BookBody {
    fn from(book: Book) -> Self {
        Self {
            id: book.id.to_string(),
            title: book.title.to_string(),
            author: book.author.to_string(),
            isbn: book.isbn.to_string(),
            published_date: book.published_date.to_string(),
            price: serde_json::Number::from_str(&book.price.to_string())
                .expect("a price renders as a decimal number, which is valid JSON"),
            owner: book.owner.to_string(),
            version: book.version.get(),
            created_at: book.created_at,
            updated_at: book.updated_at,
        }
    }
}

/// The writable fields of a book (all required for POST and PUT; any subset for PATCH).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct BookInput {
    /// 1 to 200 characters.
    #[schema(example = "Dune")]
    title: String,
    /// 1 to 100 characters.
    #[schema(example = "Frank Herbert")]
    author: String,
    /// ISBN-13 with a valid check digit, or an ISBN-10 (stored as its ISBN-13).
    #[schema(example = "978-0-441-17271-9")]
    isbn: String,
    /// Not in the future.
    #[schema(value_type = String, format = Date, example = "1965-08-01")]
    published_date: String,
    /// Greater than 0, at most 1000000, at most two decimal places; a JSON number or string.
    #[schema(value_type = f64, example = 9.99)]
    price: String,
}

/// The filters, sort and page of a book list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BooksQuery {
    /// Books by this author (case-insensitive, whole name).
    author: Option<String>,
    /// Books whose title or author contains this (case-insensitive).
    q: Option<String>,
    /// Books published strictly after this date (`YYYY-MM-DD`).
    published_after: Option<String>,
    /// Books published strictly before this date (`YYYY-MM-DD`).
    published_before: Option<String>,
    /// `published_date`, `title`, `price` or `created_at`; prefix `-` for descending. Default `-created_at`.
    sort: Option<String>,
}

fn parse_date(raw: &str) -> Result<Date, String> {
    Date::parse(raw, format_description!("[year]-[month]-[day]"))
        .map_err(|_| "must be a date as YYYY-MM-DD".to_owned())
}

impl BooksQuery {
    fn parse(self) -> Result<(BookFilter, BookSort), ApiError> {
        let bad = |name: &str, why: String| ApiError::BadRequest(format!("{name} {why}"));
        let date = |name: &str, raw: Option<String>| {
            raw.map(|raw| parse_date(&raw).map_err(|why| bad(name, why)))
                .transpose()
        };
        let text = |raw: Option<String>| {
            raw.map(|raw| raw.trim().to_owned())
                .filter(|raw| !raw.is_empty())
        };
        // Nothing longer than a title can match; refusing it bounds the work a search does.
        let bounded = |name: &str, raw: Option<String>| match raw {
            Some(raw) if raw.chars().count() > Title::MAX_CHARS => Err(bad(
                name,
                format!("must be at most {} characters", Title::MAX_CHARS),
            )),
            raw => Ok(raw),
        };
        let filter = BookFilter {
            author: bounded("author", text(self.author))?,
            q: bounded("q", text(self.q))?,
            published_after: date("published_after", self.published_after)?,
            published_before: date("published_before", self.published_before)?,
        };
        let sort = match self.sort {
            Some(raw) => parse_sort(&raw).ok_or_else(|| {
                bad("sort", "must be one of published_date, title, price, created_at, optionally prefixed with -".to_owned())
            })?,
            None => BookSort::default(),
        };
        Ok((filter, sort))
    }
}

/// `title` ascending, `-title` descending.
fn parse_sort(text: &str) -> Option<BookSort> {
    let (descending, name) = match text.strip_prefix('-') {
        Some(name) => (true, name),
        None => (false, text),
    };
    let key = [
        BookSortKey::PublishedDate,
        BookSortKey::Title,
        BookSortKey::Price,
        BookSortKey::CreatedAt,
    ]
    .into_iter()
    .find(|key| key.as_str() == name)?;
    Some(BookSort { key, descending })
}

/// The opaque form of a book cursor: `<id>|<kind><value>`.
fn cursor_text(cursor: &BookCursor) -> String {
    let value = match &cursor.value {
        SortValue::Date(date) => format!("d{date}"),
        SortValue::Text(text) => format!("t{text}"),
        SortValue::Cents(cents) => format!("p{cents}"),
        SortValue::Instant(instant) => format!("c{}", instant.unix_timestamp_nanos()),
    };
    format!("{}|{value}", cursor.id)
}

fn parse_cursor(text: &str) -> Option<BookCursor> {
    let (id, value) = text.split_once('|')?;
    let id = id.parse::<BookId>().ok()?;
    let mut chars = value.chars();
    let kind = chars.next()?;
    let rest = chars.as_str();
    let value = match kind {
        'd' => SortValue::Date(parse_date(rest).ok()?),
        't' => SortValue::Text(rest.to_owned()),
        'p' => SortValue::Cents(rest.parse().ok()?),
        'c' => {
            SortValue::Instant(OffsetDateTime::from_unix_timestamp_nanos(rest.parse().ok()?).ok()?)
        }
        _ => return None,
    };
    Some(BookCursor { value, id })
}

fn location(id: BookId) -> String {
    format!("/api/v1/books/{id}")
}

fn book_id(raw: &str) -> Result<BookId, ApiError> {
    raw.parse().map_err(|_| ApiError::NotFound("no such book"))
}

/// 200 with the book and its `ETag`.
fn book_response(book: Book) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::ETAG, etag(book.version)))
        .json(BookBody::from(book))
}

/// The fields of a book body, each parsed; errors gathered per field.
#[derive(Default)]
struct ParsedFields {
    title: Option<Title>,
    author: Option<Author>,
    isbn: Option<Isbn>,
    published_date: Option<Date>,
    price: Option<Price>,
}

/// Parses the fields present in `body`. `null` is refused: a book's fields cannot be removed.
fn parse_fields(body: &Map<String, Value>, errors: &mut ValidationErrors) -> ParsedFields {
    for name in body.keys() {
        if READ_ONLY.contains(&name.as_str()) {
            errors.add(name.as_str(), "is read-only");
        } else if !WRITABLE.contains(&name.as_str()) {
            errors.add(name.as_str(), "is not a field of a book");
        }
    }
    let text = |name: &str, errors: &mut ValidationErrors| -> Option<String> {
        match body.get(name)? {
            Value::String(text) => Some(text.clone()),
            Value::Null => {
                errors.add(name, "cannot be removed");
                None
            }
            _ => {
                errors.add(name, "must be a string");
                None
            }
        }
    };
    let mut fields = ParsedFields::default();
    if let Some(raw) = text("title", errors) {
        fields.title = errors.check("title", Title::parse(&raw));
    }
    if let Some(raw) = text("author", errors) {
        fields.author = errors.check("author", Author::parse(&raw));
    }
    if let Some(raw) = text("isbn", errors) {
        fields.isbn = errors.check("isbn", Isbn::parse(&raw));
    }
    if let Some(raw) = text("published_date", errors) {
        fields.published_date = errors.check("published_date", parse_date(&raw));
    }
    match body.get("price") {
        None => {}
        Some(Value::Number(number)) => {
            fields.price = errors.check("price", number.to_string().parse::<Price>())
        }
        Some(Value::String(text)) => fields.price = errors.check("price", text.parse::<Price>()),
        Some(Value::Null) => errors.add("price", "cannot be removed"),
        Some(_) => errors.add("price", "must be a number"),
    }
    fields
}

/// A complete book, for POST and PUT.
fn parse_draft(body: &Map<String, Value>) -> Result<BookDraft, ApiError> {
    let mut errors = ValidationErrors::new();
    let fields = parse_fields(body, &mut errors);
    for name in WRITABLE {
        if !body.contains_key(name) {
            errors.add(name, "is required");
        }
    }
    match fields {
        ParsedFields {
            title: Some(title),
            author: Some(author),
            isbn: Some(isbn),
            published_date: Some(published_date),
            price: Some(price),
        } if errors.is_empty() => Ok(BookDraft {
            title,
            author,
            isbn,
            published_date,
            price,
        }),
        _ => Err(ApiError::Validation(errors)),
    }
}

/// A merge patch (RFC 7396), for PATCH.
fn parse_patch(body: &Map<String, Value>) -> Result<BookPatch, ApiError> {
    let mut errors = ValidationErrors::new();
    let ParsedFields {
        title,
        author,
        isbn,
        published_date,
        price,
    } = parse_fields(body, &mut errors);
    errors
        .into_result(|| BookPatch {
            title,
            author,
            isbn,
            published_date,
            price,
        })
        .map_err(ApiError::Validation)
}

/// List books: filter, sort and paginate.
#[utoipa::path(
    tag = "books",
    params(BooksQuery, PageQuery),
    responses(
        (status = 200, description = "One page of books", body = PageBody<BookBody>,
            headers(("Link" = String, description = "The next page, when there is one"))),
        (status = 400, description = "A bad filter, sort, limit or cursor", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/books")]
pub async fn list_books(
    req: HttpRequest,
    catalog: Catalog,
    query: web::Query<BooksQuery>,
    page: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let (filter, sort) = query.into_inner().parse()?;
    let limit = page.limit()?;
    let after = page.position(|text| parse_cursor(text).filter(|cursor| cursor.fits(sort)))?;
    let books = catalog
        .list_books(BookQuery {
            filter,
            sort,
            after,
            limit: limit + 1,
        })
        .await?;
    Ok(page_response(
        &req,
        books,
        limit,
        |last| cursor_text(&BookCursor::after(last, sort)),
        BookBody::from,
    ))
}

/// The five most recently published books.
#[utoipa::path(tag = "books", responses((status = 200, description = "The books, newest first", body = crate::dto::ItemsBody<BookBody>)))]
#[get("/books/recent")]
pub async fn list_recent_books(catalog: Catalog) -> Result<HttpResponse, ApiError> {
    let books = catalog.list_recent_books().await?;
    Ok(HttpResponse::Ok().json(crate::dto::ItemsBody {
        items: books.into_iter().map(BookBody::from).collect::<Vec<_>>(),
    }))
}

/// Add a book; you become its owner.
#[utoipa::path(
    tag = "books",
    security(("bearer" = [])),
    request_body = BookInput,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: a retry with the same key gets the first response")),
    responses(
        (status = 201, description = "Created", body = BookBody,
            headers(("Location" = String, description = "The new book's URL"), ("ETag" = String))),
        (status = 400, description = "Malformed JSON or Idempotency-Key", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "ISBN taken, or the same Idempotency-Key is in flight", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, or an Idempotency-Key reused for another request", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/books")]
pub async fn create_book(
    req: HttpRequest,
    catalog: Catalog,
    idempotency: Idempotency,
    Authenticated(caller): Authenticated,
    body: web::Json<Map<String, Value>>,
) -> Result<HttpResponse, ApiError> {
    let draft = parse_draft(&body)?;
    let scope = scope(&req, Some(caller));
    run_idempotently(&req, idempotency.as_ref(), &scope, &*body, async {
        let book = catalog.create_book(caller, draft).await?;
        Ok(
            Replayable::json(StatusCode::CREATED, &BookBody::from(book.clone()))?
                .header(header::LOCATION, location(book.id))
                .header(header::ETAG, etag(book.version)),
        )
    })
    .await
}

/// True when an `If-None-Match` header names the current version (or is `*`).
fn none_match(req: &HttpRequest, current: &str) -> bool {
    let Some(value) = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    // Weak comparison (RFC 9110 §13.1.2): `W/"3"` matches `"3"`.
    value
        .split(',')
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == "*" || tag == current)
}

/// One book. With `If-None-Match` naming its current `ETag`: 304.
#[utoipa::path(
    tag = "books",
    params(
        ("id" = String, Path, description = "A book id, `book_…`"),
        ("If-None-Match" = Option<String>, Header, description = "Answer 304 if the book still has this ETag"),
    ),
    responses(
        (status = 200, description = "The book", body = BookBody, headers(("ETag" = String))),
        (status = 304, description = "Not modified"),
        (status = 404, description = "No such book", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/books/{id}")]
pub async fn get_book(
    req: HttpRequest,
    catalog: Catalog,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let book = catalog.get_book(book_id(&id)?).await?;
    let tag = etag(book.version);
    if none_match(&req, &tag) {
        return Ok(HttpResponse::NotModified()
            .insert_header((header::ETAG, tag))
            .finish());
    }
    Ok(book_response(book))
}

/// Replace a book (owner or admin).
#[utoipa::path(
    tag = "books",
    security(("bearer" = [])),
    request_body = BookInput,
    params(
        ("id" = String, Path, description = "A book id, `book_…`"),
        ("If-Match" = Option<String>, Header, description = "Apply only if the book's ETag still matches"),
    ),
    responses(
        (status = 200, description = "Replaced", body = BookBody, headers(("ETag" = String))),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Neither the owner nor an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such book", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "ISBN taken", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "The book changed since it was read", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid or read-only fields", body = Problem, content_type = "application/problem+json"),
    )
)]
#[put("/books/{id}")]
pub async fn replace_book(
    req: HttpRequest,
    catalog: Catalog,
    Authenticated(caller): Authenticated,
    id: web::Path<String>,
    body: web::Json<Map<String, Value>>,
) -> Result<HttpResponse, ApiError> {
    let id = book_id(&id)?;
    let draft = parse_draft(&body)?;
    let book = catalog
        .replace_book(caller, id, draft, if_match(&req)?)
        .await?;
    Ok(book_response(book))
}

/// Change some fields of a book (owner or admin): a JSON merge patch.
#[utoipa::path(
    tag = "books",
    security(("bearer" = [])),
    request_body(content = BookInput, content_type = "application/merge-patch+json", description = "Any subset of the writable fields"),
    params(
        ("id" = String, Path, description = "A book id, `book_…`"),
        ("If-Match" = Option<String>, Header, description = "Apply only if the book's ETag still matches"),
    ),
    responses(
        (status = 200, description = "Updated", body = BookBody, headers(("ETag" = String))),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Neither the owner nor an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such book", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "ISBN taken", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "The book changed since it was read", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid or read-only fields", body = Problem, content_type = "application/problem+json"),
    )
)]
#[patch("/books/{id}")]
pub async fn update_book(
    req: HttpRequest,
    catalog: Catalog,
    Authenticated(caller): Authenticated,
    id: web::Path<String>,
    body: web::Json<Map<String, Value>>,
) -> Result<HttpResponse, ApiError> {
    let id = book_id(&id)?;
    let patch = parse_patch(&body)?;
    let book = catalog
        .update_book(caller, id, patch, if_match(&req)?)
        .await?;
    Ok(book_response(book))
}

/// Delete a book (owner or admin).
#[utoipa::path(
    tag = "books",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "A book id, `book_…`"),
        ("If-Match" = Option<String>, Header, description = "Delete only if the book's ETag still matches"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Neither the owner nor an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such book", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "The book changed since it was read", body = Problem, content_type = "application/problem+json"),
    )
)]
#[delete("/books/{id}")]
pub async fn delete_book(
    req: HttpRequest,
    catalog: Catalog,
    Authenticated(caller): Authenticated,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = book_id(&id)?;
    catalog.delete_book(caller, id, if_match(&req)?).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_for_every_sort_value() {
        let id: BookId = "book_01JD0W5ZK3J2S8Q4V6X7Y9ZABC".parse().unwrap();
        for value in [
            SortValue::Date(time::macros::date!(1965 - 08 - 01)),
            SortValue::Text("A | title with a pipe".to_owned()),
            SortValue::Cents(1999),
            SortValue::Instant(time::macros::datetime!(2026-11-21 12:00:00.123456 UTC)),
        ] {
            let cursor = BookCursor { value, id };
            assert_eq!(parse_cursor(&cursor_text(&cursor)), Some(cursor));
        }
        for forged in [
            "",
            "book_x|d2020-01-01",
            "book_01JD0W5ZK3J2S8Q4V6X7Y9ZABC|x1",
            "book_01JD0W5ZK3J2S8Q4V6X7Y9ZABC|pabc",
        ] {
            assert_eq!(parse_cursor(forged), None, "{forged}");
        }
    }
}
