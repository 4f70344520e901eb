//! `bench-ceiling ADDR`: the framework's own ceiling, for `cargo xtask bench`.
//!
//! A bare actix-web app, built from the workspace's actix-web with the same
//! features as Waiter and run with actix's default one worker per CPU (as
//! Waiter is), that answers the paths the bench measures with fixed JSON of
//! the size Waiter sends: no middleware, no state, no logging, no
//! serialization. Whatever Waiter does beyond this is the application's
//! cost, which is what the bench's ratios show.
//!
//! It must stay this bare: a ceiling that does work lowers every ratio's
//! denominator and flatters the application.

use actix_web::http::header::ContentType;
use actix_web::{App, HttpResponse, HttpServer, web};

/// A book as Waiter renders one.
const BOOK: &str = r#"{"id":"book_01JD0W5ZK3J2S8Q4V6X7Y9ZABC","title":"The Quiet Harbour of Winter","author":"Maria Tanaka","isbn":"9780441172719","published_date":"1965-08-01","price":12.50,"owner":"acct_01JD0W5ZK3J2S8Q4V6X7Y9ZABC","version":1,"created_at":"2026-11-21T10:30:00.123456Z","updated_at":"2026-11-21T10:30:00.123456Z"}"#;

/// An account as Waiter renders one.
const ACCOUNT: &str = r#"{"id":"acct_01JD0W5ZK3J2S8Q4V6X7Y9ZABC","email":"bench@example.com","display_name":"Bench","role":"admin","version":1,"created_at":"2026-11-21T10:30:00.123456Z","updated_at":"2026-11-21T10:30:00.123456Z"}"#;

/// How many books a page of the bench's list holds (`?limit=10`).
const PAGE_SIZE: usize = 10;

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let page: &'static str = Box::leak(page().into_boxed_str());
    actix_web::rt::System::new().block_on(
        HttpServer::new(move || {
            App::new()
                .route("/api/v1/books", web::get().to(move || json(page)))
                .route("/api/v1/books", web::post().to(create_book))
                .route("/api/v1/books/{id}", web::get().to(|| json(BOOK)))
                .route("/api/v1/accounts/me", web::get().to(|| json(ACCOUNT)))
        })
        .bind(&addr)?
        .run(),
    )
}

/// A first page of books, with the cursor of the next.
fn page() -> String {
    let items = [BOOK; PAGE_SIZE].join(",");
    format!(
        r#"{{"items":[{items}],"next_cursor":"Ym9va18wMUpEMFc1WkszSjJTOFE0VjZYN1k5WkFCQ3xjMTc2MzcyMTAwMDEyMzQ1NjAwMA"}}"#
    )
}

async fn json(body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::json())
        .body(body)
}

/// Reads the whole body, as Waiter must, and answers 201 with a fixed book.
async fn create_book(_body: web::Bytes) -> HttpResponse {
    HttpResponse::Created()
        .content_type(ContentType::json())
        .body(BOOK)
}
