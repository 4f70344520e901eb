//! `/api/v1/books`: the public catalog, and owner-or-admin writes.
//!
//! Each body is a typed request ([`BookInput`], [`BookPatchInput`]) whose
//! schema is the document's; its fields are then parsed all together, so a
//! client learns every bad value at once, and `price` is taken from the JSON
//! text exactly, never through a float.

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, delete, get, patch, post, put, web};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::openapi::Object;
use utoipa::{IntoParams, ToSchema};
use waiter_domain::{Author, Book, BookDraft, BookId, Title, ValidationErrors};
use waiter_ports::catalog::{
    BookCursor, BookFilter, BookPatch, BookQuery, BookSort, BookSortKey, CatalogUseCases, SortValue,
};
use waiter_ports::idempotency::IdempotencyUseCases;

use crate::dto::{BookBody, ItemsBody, PageBody};
use crate::error::ApiError;
use crate::extract::{Authenticated, Body, IdempotencyKey, IfMatch, etag};
use crate::fields::{self, present};
use crate::idempotency::{Replayable, create_idempotently, scope};
use crate::pagination::{PageQuery, page_response};
use crate::responses::{
    Bearer, Conditional, Conflict, Forbidden, Idempotent, JsonBody, ListQuery, NotFound,
    Unavailable,
};

type Catalog = web::Data<dyn CatalogUseCases>;
type Idempotency = web::Data<dyn IdempotencyUseCases>;

/// A whole book as its owner writes it, for POST and PUT; the server assigns
/// everything else (`id`, `owner`, `version`, timestamps).
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BookInput {
    #[schema(schema_with = fields::text_schema::<Title>)]
    title: String,
    #[schema(schema_with = fields::text_schema::<Author>)]
    author: String,
    #[schema(schema_with = fields::isbn_schema)]
    isbn: String,
    #[schema(schema_with = fields::published_date_schema)]
    published_date: String,
    #[schema(schema_with = fields::price_schema)]
    price: Value,
}

/// A JSON merge patch (RFC 7396) of a book: any of its writable fields. No
/// field can be removed, so none may be `null`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BookPatchInput {
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = fields::text_schema::<Title>)]
    title: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = fields::text_schema::<Author>)]
    author: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = fields::isbn_schema)]
    isbn: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = fields::published_date_schema)]
    published_date: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = fields::price_schema)]
    price: Option<Value>,
}

impl BookInput {
    fn parse(&self) -> Result<BookDraft, ApiError> {
        let mut errors = ValidationErrors::new();
        let title = errors.check("title", fields::text(&self.title));
        let author = errors.check("author", fields::text(&self.author));
        let isbn = errors.check("isbn", fields::isbn(&self.isbn));
        let published_date = errors.check("published_date", fields::date(&self.published_date));
        let price = errors.check("price", fields::price(&self.price));
        match (title, author, isbn, published_date, price) {
            (Some(title), Some(author), Some(isbn), Some(published_date), Some(price)) => {
                Ok(BookDraft {
                    title,
                    author,
                    isbn,
                    published_date,
                    price,
                })
            }
            _ => Err(ApiError::Validation(errors)),
        }
    }
}

impl BookPatchInput {
    fn parse(&self) -> Result<BookPatch, ApiError> {
        fn field<R: ?Sized, T>(
            errors: &mut ValidationErrors,
            name: &str,
            raw: Option<&R>,
            parse: impl FnOnce(&R) -> Result<T, String>,
        ) -> Option<T> {
            raw.and_then(|raw| errors.check(name, parse(raw)))
        }
        let mut errors = ValidationErrors::new();
        let e = &mut errors;
        let title = field(e, "title", self.title.as_deref(), fields::text);
        let author = field(e, "author", self.author.as_deref(), fields::text);
        let isbn = field(e, "isbn", self.isbn.as_deref(), fields::isbn);
        let published_date = field(
            e,
            "published_date",
            self.published_date.as_deref(),
            fields::date,
        );
        let price = field(e, "price", self.price.as_ref(), fields::price);
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
}

/// How a list of books is sorted: a field, ascending, or descending with `-`.
#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
pub enum SortParam {
    #[serde(rename = "published_date")]
    PublishedDate,
    #[serde(rename = "-published_date")]
    PublishedDateDescending,
    #[serde(rename = "title")]
    Title,
    #[serde(rename = "-title")]
    TitleDescending,
    #[serde(rename = "price")]
    Price,
    #[serde(rename = "-price")]
    PriceDescending,
    #[serde(rename = "created_at")]
    CreatedAt,
    #[default]
    #[serde(rename = "-created_at")]
    CreatedAtDescending,
}

impl From<SortParam> for BookSort {
    fn from(sort: SortParam) -> Self {
        let (key, descending) = match sort {
            SortParam::PublishedDate => (BookSortKey::PublishedDate, false),
            SortParam::PublishedDateDescending => (BookSortKey::PublishedDate, true),
            SortParam::Title => (BookSortKey::Title, false),
            SortParam::TitleDescending => (BookSortKey::Title, true),
            SortParam::Price => (BookSortKey::Price, false),
            SortParam::PriceDescending => (BookSortKey::Price, true),
            SortParam::CreatedAt => (BookSortKey::CreatedAt, false),
            SortParam::CreatedAtDescending => (BookSortKey::CreatedAt, true),
        };
        BookSort { key, descending }
    }
}

/// The filters and sort of a book list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BooksQuery {
    #[param(schema_with = author_filter)]
    author: Option<String>,
    #[param(schema_with = search_filter)]
    q: Option<String>,
    #[param(schema_with = published_after_filter)]
    published_after: Option<String>,
    #[param(schema_with = published_before_filter)]
    published_before: Option<String>,
    /// The order of the list; default `-created_at`, newest first.
    #[param(inline)]
    sort: Option<SortParam>,
}

// utoipa leaves a parameter's doc comment out when `schema_with` is set, so
// these schemas say what each filter does.

fn author_filter() -> Object {
    fields::described(
        fields::text_schema::<Author>(),
        "Books by this author (case-insensitive, whole name).",
    )
}

fn search_filter() -> Object {
    fields::described(
        fields::text_schema::<Title>(),
        "Books whose title or author contains this (case-insensitive).",
    )
}

fn published_after_filter() -> Object {
    fields::date_schema("Books published strictly after this date, `YYYY-MM-DD`.")
}

fn published_before_filter() -> Object {
    fields::date_schema("Books published strictly before this date, `YYYY-MM-DD`.")
}

impl BooksQuery {
    fn parse(self) -> Result<(BookFilter, BookSort), ApiError> {
        let bad = |name: &str, why: String| ApiError::BadRequest(format!("{name} {why}"));
        let date = |name: &str, raw: Option<String>| {
            raw.map(|raw| fields::date(&raw).map_err(|why| bad(name, why)))
                .transpose()
        };
        let author = self
            .author
            .map(|raw| fields::text::<Author>(&raw).map_err(|why| bad("author", why)))
            .transpose()?;
        let q = self
            .q
            .map(|raw| fields::text::<Title>(&raw).map_err(|why| bad("q", why)))
            .transpose()?;
        let filter = BookFilter {
            author: author.map(|author| author.to_string()),
            q: q.map(|q| q.to_string()),
            published_after: date("published_after", self.published_after)?,
            published_before: date("published_before", self.published_before)?,
        };
        Ok((filter, self.sort.unwrap_or_default().into()))
    }
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
        'd' => SortValue::Date(fields::date(rest).ok()?),
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

/// List books: filter, sort and paginate.
#[utoipa::path(
    tag = "books",
    params(BooksQuery, PageQuery),
    responses(
        (status = 200, description = "One page of books", body = PageBody<BookBody>,
            headers(("Link" = String, description = "The next page, when there is one"))),
        ListQuery, Unavailable,
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
#[utoipa::path(
    tag = "books",
    responses(
        (status = 200, description = "The books, newest first", body = ItemsBody<BookBody>),
        Unavailable,
    )
)]
#[get("/books/recent")]
pub async fn list_recent_books(catalog: Catalog) -> Result<HttpResponse, ApiError> {
    let books = catalog.list_recent_books().await?;
    Ok(HttpResponse::Ok().json(ItemsBody {
        items: books.into_iter().map(BookBody::from).collect::<Vec<_>>(),
    }))
}

/// Add a book; you become its owner.
#[utoipa::path(
    tag = "books",
    security(("bearer" = [])),
    request_body = BookInput,
    params(IdempotencyKey),
    responses(
        (status = 201, description = "Created", body = BookBody,
            headers(("Location" = String, description = "The new book's URL"), ("ETag" = String))),
        JsonBody, Bearer, Idempotent, Conflict, Unavailable,
    )
)]
#[post("/books")]
pub async fn create_book(
    req: HttpRequest,
    catalog: Catalog,
    idempotency: Idempotency,
    Authenticated(caller): Authenticated,
    key: IdempotencyKey,
    Body(body): Body<BookInput>,
) -> Result<HttpResponse, ApiError> {
    let draft = body.parse()?;
    let scope = scope(&req, Some(caller));
    create_idempotently(
        &req,
        key,
        idempotency.as_ref(),
        &scope,
        &body,
        created,
        async |keyed| Ok(catalog.create_book(caller, draft, keyed).await?),
    )
    .await
}

/// The response to a created book, also what its idempotency key replays.
fn created(book: &Book) -> Result<Replayable, ApiError> {
    Ok(
        Replayable::json(StatusCode::CREATED, &BookBody::from(book.clone()))?
            .header(header::LOCATION, location(book.id))
            .header(header::ETAG, etag(book.version)),
    )
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
        (status = 304, description = "Not modified", headers(("ETag" = String))),
        NotFound, Unavailable,
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
    params(("id" = String, Path, description = "A book id, `book_…`"), IfMatch),
    responses(
        (status = 200, description = "Replaced", body = BookBody, headers(("ETag" = String))),
        JsonBody, Bearer, Forbidden, NotFound, Conflict, Conditional, Unavailable,
    )
)]
#[put("/books/{id}")]
pub async fn replace_book(
    catalog: Catalog,
    Authenticated(caller): Authenticated,
    id: web::Path<String>,
    if_match: IfMatch,
    Body(body): Body<BookInput>,
) -> Result<HttpResponse, ApiError> {
    let id = book_id(&id)?;
    let draft = body.parse()?;
    let book = catalog
        .replace_book(caller, id, draft, if_match.expected()?)
        .await?;
    Ok(book_response(book))
}

/// Change some fields of a book (owner or admin): a JSON merge patch.
#[utoipa::path(
    tag = "books",
    security(("bearer" = [])),
    request_body(content = BookPatchInput, content_type = "application/merge-patch+json"),
    params(("id" = String, Path, description = "A book id, `book_…`"), IfMatch),
    responses(
        (status = 200, description = "Updated", body = BookBody, headers(("ETag" = String))),
        JsonBody, Bearer, Forbidden, NotFound, Conflict, Conditional, Unavailable,
    )
)]
#[patch("/books/{id}")]
pub async fn update_book(
    catalog: Catalog,
    Authenticated(caller): Authenticated,
    id: web::Path<String>,
    if_match: IfMatch,
    Body(body): Body<BookPatchInput>,
) -> Result<HttpResponse, ApiError> {
    let id = book_id(&id)?;
    let patch = body.parse()?;
    let book = catalog
        .update_book(caller, id, patch, if_match.expected()?)
        .await?;
    Ok(book_response(book))
}

/// Delete a book (owner or admin).
#[utoipa::path(
    tag = "books",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "A book id, `book_…`"), IfMatch),
    responses(
        (status = 204, description = "Deleted"),
        Bearer, Forbidden, NotFound, Conditional, Unavailable,
    )
)]
#[delete("/books/{id}")]
pub async fn delete_book(
    catalog: Catalog,
    Authenticated(caller): Authenticated,
    id: web::Path<String>,
    if_match: IfMatch,
) -> Result<HttpResponse, ApiError> {
    let id = book_id(&id)?;
    catalog
        .delete_book(caller, id, if_match.expected()?)
        .await?;
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
