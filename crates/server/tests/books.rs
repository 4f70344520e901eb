//! End-to-end tests of the books API over real HTTP, in both configurations:
//! CRUD with ETags, ownership, conditional and idempotent writes under
//! concurrency, cache invalidation, search and pagination.

#[macro_use]
mod support;

use futures::future::join_all;
use reqwest::{StatusCode, header};
use serde_json::{Value, json};
use support::{Anonymous, Backend, PASSWORD, TestApp, header_of, id, json_of};

on_both_backends!(
    a_book_lives_and_dies_with_etags,
    writes_are_for_the_owner_or_an_admin,
    fifty_patches_with_one_if_match_let_exactly_one_through,
    twenty_creates_with_one_idempotency_key_make_one_book,
    idempotency_keys_replay_refuse_and_validate,
    prices_are_exact_and_fields_strict,
    reads_after_writes_see_the_writes,
    lists_filter_sort_and_paginate,
    deleting_an_account_deletes_its_books_cached_or_not,
);

/// A valid ISBN-13 made from `n`.
fn isbn(n: u64) -> String {
    let first: Vec<u32> = format!("978{n:09}")
        .chars()
        .map(|c| c.to_digit(10).unwrap())
        .collect();
    let sum: u32 = first
        .iter()
        .enumerate()
        .map(|(i, d)| if i % 2 == 0 { *d } else { d * 3 })
        .sum();
    format!("978{n:09}{}", (10 - sum % 10) % 10)
}

/// "Book n", with an ISBN of its own.
fn book(n: u64) -> Value {
    json!({
        "title": format!("Book {n}"),
        "author": "Ann Author",
        "isbn": isbn(n),
        "published_date": "2001-02-03",
        "price": 12.5,
    })
}

/// The ids of a page of books, in its order.
fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|book| id(book).to_owned())
        .collect()
}

async fn a_book_lives_and_dies_with_etags(app: &TestApp) {
    let token = app.member("ann@example.com").await;
    let response = app.create_book(&token, book(1)).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = header_of(&response, header::LOCATION).to_owned();
    assert_eq!(header_of(&response, header::ETAG), "\"1\"");
    let created = json_of(response).await;
    let book_id = id(&created);
    assert_eq!(location, format!("/api/v1/books/{book_id}"));
    assert_eq!(created["isbn"], isbn(1));

    let fetched = app.get_book(book_id).await;
    assert_eq!(header_of(&fetched, header::ETAG), "\"1\"");
    assert_eq!(
        app.get_book(book_id).if_none_match("\"1\"").await.status(),
        StatusCode::NOT_MODIFIED
    );

    let patched = app
        .update_book(&token, book_id, r#"{"title": "A Better Title"}"#)
        .if_match("\"1\"")
        .await;
    assert_eq!(patched.status(), StatusCode::OK);
    assert_eq!(header_of(&patched, header::ETAG), "\"2\"");
    let patched = json_of(patched).await;
    assert_eq!(
        (patched["title"].as_str(), patched["author"].as_str()),
        (Some("A Better Title"), Some("Ann Author"))
    );
    assert_eq!(
        app.get_book(book_id).if_none_match("\"1\"").await.status(),
        StatusCode::OK,
        "the old ETag no longer matches"
    );

    let replaced = app.replace_book(&token, book_id, book(2)).await;
    assert_eq!(replaced.status(), StatusCode::OK);
    let replaced = json_of(replaced).await;
    assert_eq!(
        (replaced["title"].as_str(), replaced["version"].as_i64()),
        (Some("Book 2"), Some(3))
    );

    assert_eq!(
        app.delete_book(&token, book_id)
            .if_match("\"2\"")
            .await
            .status(),
        StatusCode::PRECONDITION_FAILED
    );
    assert_eq!(
        app.delete_book(&token, book_id)
            .if_match("\"3\"")
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(app.get_book(book_id).await.status(), StatusCode::NOT_FOUND);
}

async fn writes_are_for_the_owner_or_an_admin(app: &TestApp) {
    let owner = app.member("ann@example.com").await;
    let other = app.member("bob@example.com").await;
    let admin = app.admin().await;
    let mut n = 10;

    // (who, expected status of PUT/PATCH/DELETE); None is anonymous.
    let matrix = [
        (None, StatusCode::UNAUTHORIZED),
        (Some(&other), StatusCode::FORBIDDEN),
        (Some(&owner), StatusCode::OK),
        (Some(&admin), StatusCode::OK),
    ];
    for (who, expected) in matrix {
        n += 1;
        let target = app.created_book(&owner, &book(n)).await;
        let book_id = id(&target);
        assert_eq!(
            app.get_book(book_id).bearer(who).await.status(),
            StatusCode::OK,
            "anyone may read"
        );
        n += 1;
        let put = app.replace_book(who, book_id, book(n)).await;
        assert_eq!(put.status(), expected, "PUT by {who:?}");
        let patch = app.update_book(who, book_id, json!({"price": 3})).await;
        assert_eq!(patch.status(), expected, "PATCH by {who:?}");
        let delete = app.delete_book(who, book_id).await;
        let expected_delete = if expected == StatusCode::OK {
            StatusCode::NO_CONTENT
        } else {
            expected
        };
        assert_eq!(delete.status(), expected_delete, "DELETE by {who:?}");
    }
    assert_eq!(
        app.create_book(Anonymous, book(99)).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

async fn fifty_patches_with_one_if_match_let_exactly_one_through(app: &TestApp) {
    let token = app.member("ann@example.com").await;
    let target = app.created_book(&token, &book(1)).await;
    let book_id = id(&target);
    // A loaded machine may answer some with 503 (no connection within
    // 750 ms): a client retries those, as `Retry-After` says, and the
    // retry is judged like any other.
    let token = &token;
    let patches = (0..50).map(|i| async move {
        for _ in 0..20 {
            let status = app
                .update_book(token, book_id, json!({"title": format!("Title {i}")}))
                .if_match("\"1\"")
                .send()
                .await
                .status();
            if status != StatusCode::SERVICE_UNAVAILABLE {
                return status;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        StatusCode::SERVICE_UNAVAILABLE
    });
    let statuses: Vec<StatusCode> = join_all(patches).await;
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let failed = statuses
        .iter()
        .filter(|s| **s == StatusCode::PRECONDITION_FAILED)
        .count();
    assert_eq!((ok, failed), (1, 49), "{statuses:?}");
    assert_eq!(json_of(app.get_book(book_id).await).await["version"], 2);
}

async fn twenty_creates_with_one_idempotency_key_make_one_book(app: &TestApp) {
    let token = app.member("ann@example.com").await;
    let attempts = (0..20).map(|_| {
        app.create_book(&token, book(1))
            .idempotency_key("create-book-1")
            .send()
    });
    let mut ids = Vec::new();
    for response in join_all(attempts).await {
        match response.status() {
            StatusCode::CREATED => ids.push(json_of(response).await["id"].clone()),
            StatusCode::CONFLICT => {} // the first was still in flight
            other => panic!("unexpected {other}"),
        }
    }
    assert!(!ids.is_empty());
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "every success is the same book: {ids:?}"
    );
    let list = json_of(app.list_books("").await).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
}

async fn idempotency_keys_replay_refuse_and_validate(app: &TestApp) {
    let token = app.member("ann@example.com").await;
    let post = |key: &str, body: Value| app.create_book(&token, body).idempotency_key(key);
    let first = post("k", book(1)).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first_location = header_of(&first, header::LOCATION).to_owned();
    let first_body = json_of(first).await;

    let retry = post("k", book(1)).await;
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(header_of(&retry, "idempotent-replayed"), "true");
    assert_eq!(header_of(&retry, header::LOCATION), first_location);
    assert_eq!(header_of(&retry, header::ETAG), "\"1\"");
    assert_eq!(json_of(retry).await, first_body);

    assert_eq!(
        post("k", book(2)).await.status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        post(&"k".repeat(256), book(3)).await.status(),
        StatusCode::BAD_REQUEST
    );
    let other = app.member("bob@example.com").await;
    assert_eq!(
        app.create_book(&other, book(4))
            .idempotency_key("k")
            .await
            .status(),
        StatusCode::CREATED,
        "keys are scoped to the caller"
    );

    let sign_up = |key: &str| {
        app.create_account(
            json!({"email": "cat@example.com", "password": PASSWORD, "display_name": "Cat"}),
        )
        .idempotency_key(key)
    };
    assert_eq!(sign_up("signup").await.status(), StatusCode::CREATED);
    let again = sign_up("signup").await;
    assert_eq!(again.status(), StatusCode::CREATED, "a replay, not a 409");
    assert_eq!(header_of(&again, "idempotent-replayed"), "true");
}

async fn prices_are_exact_and_fields_strict(app: &TestApp) {
    let token = app.member("ann@example.com").await;
    let mut body = book(1);
    body["price"] = json!(19.9);
    let first = app.created_book(&token, &body).await;
    assert_eq!(first["price"].to_string(), "19.90");

    let priced = |n: u64, price: &str| {
        format!(
            r#"{{"title":"T","author":"A","isbn":"{}","published_date":"2001-02-03","price":{price}}}"#,
            isbn(n)
        )
    };
    for (n, price) in [(2, "0.10000000000000000001"), (3, "1000000.01")] {
        assert_eq!(
            app.create_book(&token, priced(n, price)).await.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{price}"
        );
    }

    let mut future = book(4);
    future["published_date"] = json!("2999-01-01");
    assert_eq!(
        app.create_book(&token, future).await.status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let mut isbn10 = book(5);
    isbn10["isbn"] = json!("0-306-40615-2");
    let stored = app.created_book(&token, &isbn10).await;
    assert_eq!(stored["isbn"], "9780306406157");
    let duplicate = app
        .create_book(&token, json!({"title": "Copy", "author": "A", "isbn": "9780306406157", "published_date": "2001-02-03", "price": 1}))
        .await;
    assert_eq!(duplicate.status(), StatusCode::CONFLICT);

    let read_only = app
        .replace_book(&token, id(&first), json!({"title": "T", "author": "A", "isbn": isbn(1), "published_date": "2001-02-03", "price": 1, "owner": "acct_x"}))
        .await;
    assert_eq!(read_only.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

async fn reads_after_writes_see_the_writes(app: &TestApp) {
    let token = app.member("ann@example.com").await;
    let target = app.created_book(&token, &book(1)).await;
    let book_id = id(&target);
    for round in 0..5 {
        assert_eq!(
            app.get_book(book_id).await.status(),
            StatusCode::OK,
            "fills the cache"
        );
        let title = format!("Round {round}");
        let patched = app
            .update_book(&token, book_id, json!({"title": title}))
            // Plain JSON is taken as a merge patch too.
            .content_type("application/json")
            .await;
        assert_eq!(patched.status(), StatusCode::OK);
        assert_eq!(json_of(app.get_book(book_id).await).await["title"], title);
    }

    assert_eq!(app.recent_titles().await, ["Round 4"]);
    let mut newer = book(2);
    newer["published_date"] = json!("2020-01-01");
    app.created_book(&token, &newer).await;
    assert_eq!(app.recent_titles().await, ["Book 2", "Round 4"]);

    assert_eq!(
        app.delete_book(&token, book_id).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(app.get_book(book_id).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.recent_titles().await, ["Book 2"]);
}

async fn lists_filter_sort_and_paginate(app: &TestApp) {
    let token = app.member("ann@example.com").await;
    let authors = ["Ursula Le Guin", "Frank Herbert", "ursula le guin"];
    for n in 0..9_u64 {
        let mut body = book(n);
        body["author"] = json!(authors[(n % 3) as usize]);
        body["price"] = json!(format!("{}.{:02}", 10 + n % 4, n));
        body["published_date"] = json!(format!("19{:02}-01-01", 70 + n));
        body["title"] = json!(format!(
            "{} of Earthsea",
            ["Wizard", "Tombs", "Shore"][(n % 3) as usize]
        ));
        app.created_book(&token, &body).await;
    }

    let by_author = json_of(app.list_books("author=URSULA%20LE%20GUIN").await).await;
    assert_eq!(ids(&by_author).len(), 6, "case-insensitive");
    let q = json_of(app.list_books("q=tOmBs").await).await;
    assert_eq!(ids(&q).len(), 3);
    let dated = json_of(
        app.list_books("published_after=1972-01-01&published_before=1976-01-01")
            .await,
    )
    .await;
    assert_eq!(ids(&dated).len(), 3, "strict bounds: 1973, 1974, 1975");

    let all = json_of(app.list_books("sort=-price&limit=100").await).await;
    let prices: Vec<f64> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["price"].as_f64().unwrap())
        .collect();
    assert!(prices.windows(2).all(|w| w[0] >= w[1]), "{prices:?}");

    let mut paged = Vec::new();
    let mut next = Some("sort=-price&limit=2".to_owned());
    while let Some(query) = next {
        let response = app.list_books(&query).await;
        assert_eq!(response.status(), StatusCode::OK);
        next = response.headers().get(header::LINK).map(|link| {
            let link = link.to_str().unwrap();
            let target = &link[1..link.find('>').unwrap()];
            let query = target.strip_prefix("/api/v1/books?");
            query.expect("the next page is a page of books").to_owned()
        });
        paged.extend(ids(&json_of(response).await));
    }
    assert_eq!(
        paged,
        ids(&all),
        "following Link headers visits every book once, in order"
    );

    assert_eq!(
        app.list_books("cursor=Ym9vay14fGQyMDAx").await.status(),
        StatusCode::NOT_FOUND
    );
    assert!(all["next_cursor"].is_null(), "one page held everything");
    let first_page = json_of(app.list_books("sort=title&limit=1").await).await;
    let title_cursor = first_page["next_cursor"].as_str().unwrap();
    assert_eq!(
        app.list_books(&format!("sort=price&cursor={title_cursor}"))
            .await
            .status(),
        StatusCode::NOT_FOUND,
        "a cursor only fits the sort it came from"
    );
}

async fn deleting_an_account_deletes_its_books_cached_or_not(app: &TestApp) {
    let token = app.member("ann@example.com").await;
    let bob = app.member("bob@example.com").await;
    let kept = app.created_book(&bob, &book(2)).await;
    let doomed = app.created_book(&token, &book(1)).await;
    for book in [&kept, &doomed] {
        assert_eq!(app.get_book(id(book)).await.status(), StatusCode::OK);
    }
    assert_eq!(
        app.delete_own_account(&token).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.get_book(id(&doomed)).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(app.get_book(id(&kept)).await.status(), StatusCode::OK);
    assert_eq!(app.recent_titles().await, ["Book 2"]);
}

/// Two instances sharing PostgreSQL and Redis: a write on one is seen by a
/// read on the other, though the other had the book cached.
#[actix_web::test]
async fn reads_on_one_instance_see_writes_on_another() {
    let Some(first) = TestApp::spawn(Backend::PostgresRedis).await else {
        return;
    };
    let second = first.twin().await;
    let token = first.member("ann@example.com").await;
    let target = first.created_book(&token, &book(1)).await;
    let book_id = id(&target);
    let cached = json_of(second.get_book(book_id).await).await;
    assert_eq!(cached["title"], "Book 1");
    assert_eq!(
        first
            .update_book(&token, book_id, json!({"title": "Changed"}))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        json_of(second.get_book(book_id).await).await["title"],
        "Changed"
    );
    first.cleanup().await;
}

/// `waiter seed books` next to a running server that shares its PostgreSQL
/// and Redis and has the recent list cached: the server lists the seeded
/// books on the very next request.
#[actix_web::test]
async fn seeded_books_are_listed_at_once_by_a_running_server() {
    let Some(app) = TestApp::spawn(Backend::PostgresRedis).await else {
        return;
    };
    app.sign_up("ann@example.com", PASSWORD).await;
    assert!(app.recent_titles().await.is_empty(), "cached while empty");

    assert_eq!(app.seed_books("ann@example.com", 3).await, 3);

    assert_eq!(app.recent_titles().await.len(), 3);
    assert_eq!(
        app.seed_books("ann@example.com", 3).await,
        0,
        "the same seed makes the same books, whose ISBNs are taken"
    );
    app.cleanup().await;
}
