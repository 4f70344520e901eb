//! End-to-end tests of the books API over real HTTP, in both configurations:
//! CRUD with ETags, ownership, conditional and idempotent writes under
//! concurrency, cache invalidation, search and pagination.

#[macro_use]
mod support;

use futures::future::join_all;
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use support::{Backend, TestApp, access};
use waiter_domain::{DisplayName, Email, Password};

const PASSWORD: &str = "correct horse battery";

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

async fn deleting_an_account_deletes_its_books_cached_or_not(app: &TestApp) {
    let token = member(app, "ann@example.com").await;
    let kept = created(app, &member(app, "bob@example.com").await, &book(2)).await;
    let doomed = created(app, &token, &book(1)).await;
    for book in [&kept, &doomed] {
        assert_eq!(
            app.request(Method::GET, &path(book))
                .send()
                .await
                .unwrap()
                .status(),
            StatusCode::OK
        );
    }
    let deleted = app
        .request(Method::DELETE, "/api/v1/accounts/me")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.request(Method::GET, &path(&doomed))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.request(Method::GET, &path(&kept))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(recent_titles(app).await, ["Book 2"]);
}

/// Signs up and in; returns the access token.
async fn member(app: &TestApp, email: &str) -> String {
    app.sign_up(email, PASSWORD).await;
    access(&app.sign_in(email, PASSWORD).await).to_owned()
}

async fn admin(app: &TestApp) -> String {
    app.wiring
        .identity()
        .bootstrap_admin(
            Email::parse("root@example.com").unwrap(),
            DisplayName::parse("Root").unwrap(),
            Some(Password::parse(PASSWORD).unwrap()),
        )
        .await
        .unwrap();
    access(&app.sign_in("root@example.com", PASSWORD).await).to_owned()
}

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

fn book(n: u64) -> Value {
    json!({
        "title": format!("Book {n}"),
        "author": "Ann Author",
        "isbn": isbn(n),
        "published_date": "2001-02-03",
        "price": 12.5,
    })
}

async fn create(app: &TestApp, token: &str, body: &Value) -> reqwest::Response {
    app.request(Method::POST, "/api/v1/books")
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn created(app: &TestApp, token: &str, body: &Value) -> Value {
    let response = create(app, token, body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json().await.unwrap()
}

fn path(book: &Value) -> String {
    format!("/api/v1/books/{}", book["id"].as_str().unwrap())
}

async fn a_book_lives_and_dies_with_etags(app: &TestApp) {
    let token = member(app, "ann@example.com").await;
    let response = create(app, &token, &book(1)).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()[header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(response.headers()[header::ETAG], "\"1\"");
    let created: Value = response.json().await.unwrap();
    assert_eq!(location, path(&created));
    assert_eq!(created["isbn"], isbn(1));

    let fetched = app.request(Method::GET, &location).send().await.unwrap();
    assert_eq!(fetched.headers()[header::ETAG], "\"1\"");
    let not_modified = app
        .request(Method::GET, &location)
        .header(header::IF_NONE_MATCH, "\"1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(not_modified.status(), StatusCode::NOT_MODIFIED);

    let patched = app
        .request(Method::PATCH, &location)
        .bearer_auth(&token)
        .header(header::CONTENT_TYPE, "application/merge-patch+json")
        .header(header::IF_MATCH, "\"1\"")
        .body(r#"{"title": "A Better Title"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), StatusCode::OK);
    assert_eq!(patched.headers()[header::ETAG], "\"2\"");
    let patched: Value = patched.json().await.unwrap();
    assert_eq!(
        (patched["title"].as_str(), patched["author"].as_str()),
        (Some("A Better Title"), Some("Ann Author"))
    );
    let stale = app
        .request(Method::GET, &location)
        .header(header::IF_NONE_MATCH, "\"1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(
        stale.status(),
        StatusCode::OK,
        "the old ETag no longer matches"
    );

    let replaced = app
        .request(Method::PUT, &location)
        .bearer_auth(&token)
        .json(&book(2))
        .send()
        .await
        .unwrap();
    assert_eq!(replaced.status(), StatusCode::OK);
    let replaced: Value = replaced.json().await.unwrap();
    assert_eq!(
        (replaced["title"].as_str(), replaced["version"].as_i64()),
        (Some("Book 2"), Some(3))
    );

    let stale_delete = app
        .request(Method::DELETE, &location)
        .bearer_auth(&token)
        .header(header::IF_MATCH, "\"2\"")
        .send()
        .await
        .unwrap();
    assert_eq!(stale_delete.status(), StatusCode::PRECONDITION_FAILED);
    let deleted = app
        .request(Method::DELETE, &location)
        .bearer_auth(&token)
        .header(header::IF_MATCH, "\"3\"")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.request(Method::GET, &location)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
}

async fn writes_are_for_the_owner_or_an_admin(app: &TestApp) {
    let owner = member(app, "ann@example.com").await;
    let other = member(app, "bob@example.com").await;
    let admin = admin(app).await;
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
        let target = created(app, &owner, &book(n)).await;
        let send = |method: Method, body: Option<Value>| {
            let mut request = app.request(method, &path(&target));
            if let Some(token) = who {
                request = request.bearer_auth(token);
            }
            if let Some(body) = body {
                request = request.json(&body);
            }
            request.send()
        };
        let get = send(Method::GET, None).await.unwrap();
        assert_eq!(get.status(), StatusCode::OK, "anyone may read");
        n += 1;
        let put = send(Method::PUT, Some(book(n))).await.unwrap();
        assert_eq!(put.status(), expected, "PUT by {who:?}");
        let patch = send(Method::PATCH, Some(json!({"price": 3})))
            .await
            .unwrap();
        assert_eq!(patch.status(), expected, "PATCH by {who:?}");
        let delete = send(Method::DELETE, None).await.unwrap();
        let expected_delete = if expected == StatusCode::OK {
            StatusCode::NO_CONTENT
        } else {
            expected
        };
        assert_eq!(delete.status(), expected_delete, "DELETE by {who:?}");
    }
    let anonymous = app
        .request(Method::POST, "/api/v1/books")
        .json(&book(99))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

async fn fifty_patches_with_one_if_match_let_exactly_one_through(app: &TestApp) {
    let token = member(app, "ann@example.com").await;
    let target = created(app, &token, &book(1)).await;
    let location = path(&target);
    let patches = (0..50).map(|i| {
        app.request(Method::PATCH, &location)
            .bearer_auth(&token)
            .header(header::IF_MATCH, "\"1\"")
            .json(&json!({"title": format!("Title {i}")}))
            .send()
    });
    let statuses: Vec<StatusCode> = join_all(patches)
        .await
        .into_iter()
        .map(|r| r.unwrap().status())
        .collect();
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let failed = statuses
        .iter()
        .filter(|s| **s == StatusCode::PRECONDITION_FAILED)
        .count();
    assert_eq!((ok, failed), (1, 49), "{statuses:?}");
    let now: Value = app
        .request(Method::GET, &location)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(now["version"], 2);
}

async fn twenty_creates_with_one_idempotency_key_make_one_book(app: &TestApp) {
    let token = member(app, "ann@example.com").await;
    let attempts = (0..20).map(|_| {
        app.request(Method::POST, "/api/v1/books")
            .bearer_auth(&token)
            .header("Idempotency-Key", "create-book-1")
            .json(&book(1))
            .send()
    });
    let responses = join_all(attempts).await;
    let mut ids = Vec::new();
    for response in responses {
        let response = response.unwrap();
        match response.status() {
            StatusCode::CREATED => ids.push(response.json::<Value>().await.unwrap()["id"].clone()),
            StatusCode::CONFLICT => {} // the first was still in flight
            other => panic!("unexpected {other}"),
        }
    }
    assert!(!ids.is_empty());
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "every success is the same book: {ids:?}"
    );
    let list: Value = app
        .request(Method::GET, "/api/v1/books")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
}

async fn idempotency_keys_replay_refuse_and_validate(app: &TestApp) {
    let token = member(app, "ann@example.com").await;
    let post = |key: &str, body: Value| {
        app.request(Method::POST, "/api/v1/books")
            .bearer_auth(&token)
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
    };
    let first = post("k", book(1)).await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first_location = first.headers()[header::LOCATION].clone();
    let first_body: Value = first.json().await.unwrap();

    let retry = post("k", book(1)).await.unwrap();
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(retry.headers()[header::LOCATION], first_location);
    assert_eq!(retry.headers()[header::ETAG], "\"1\"");
    assert_eq!(retry.json::<Value>().await.unwrap(), first_body);

    assert_eq!(
        post("k", book(2)).await.unwrap().status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        post(&"k".repeat(256), book(3)).await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );
    let other = member(app, "bob@example.com").await;
    let theirs = app
        .request(Method::POST, "/api/v1/books")
        .bearer_auth(&other)
        .header("Idempotency-Key", "k")
        .json(&book(4))
        .send()
        .await
        .unwrap();
    assert_eq!(
        theirs.status(),
        StatusCode::CREATED,
        "keys are scoped to the caller"
    );

    let sign_up = |key: &str| {
        app.request(Method::POST, "/api/v1/accounts")
            .header("Idempotency-Key", key)
            .json(&json!({"email": "cat@example.com", "password": PASSWORD, "display_name": "Cat"}))
            .send()
    };
    let first = sign_up("signup").await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let again = sign_up("signup").await.unwrap();
    assert_eq!(again.status(), StatusCode::CREATED, "a replay, not a 409");
    assert_eq!(again.headers()["idempotent-replayed"], "true");
}

async fn prices_are_exact_and_fields_strict(app: &TestApp) {
    let token = member(app, "ann@example.com").await;
    let mut body = book(1);
    body["price"] = json!(19.9);
    let first = created(app, &token, &body).await;
    assert_eq!(first["price"].to_string(), "19.90");

    let raw = |payload: &str| {
        app.request(Method::POST, "/api/v1/books")
            .bearer_auth(&token)
            .header(header::CONTENT_TYPE, "application/json")
            .body(payload.to_owned())
            .send()
    };
    let too_precise = raw(&format!(r#"{{"title":"T","author":"A","isbn":"{}","published_date":"2001-02-03","price":0.10000000000000000001}}"#, isbn(2))).await.unwrap();
    assert_eq!(too_precise.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let huge = raw(&format!(r#"{{"title":"T","author":"A","isbn":"{}","published_date":"2001-02-03","price":1000000.01}}"#, isbn(3))).await.unwrap();
    assert_eq!(huge.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let mut future = book(4);
    future["published_date"] = json!("2999-01-01");
    assert_eq!(
        create(app, &token, &future).await.status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let mut isbn10 = book(5);
    isbn10["isbn"] = json!("0-306-40615-2");
    let stored = created(app, &token, &isbn10).await;
    assert_eq!(stored["isbn"], "9780306406157");
    let duplicate = create(app, &token, &json!({"title": "Copy", "author": "A", "isbn": "9780306406157", "published_date": "2001-02-03", "price": 1})).await;
    assert_eq!(duplicate.status(), StatusCode::CONFLICT);

    let read_only = app
        .request(Method::PUT, &path(&first))
        .bearer_auth(&token)
        .json(&json!({"title": "T", "author": "A", "isbn": isbn(1), "published_date": "2001-02-03", "price": 1, "owner": "acct_x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(read_only.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

async fn reads_after_writes_see_the_writes(app: &TestApp) {
    let token = member(app, "ann@example.com").await;
    let target = created(app, &token, &book(1)).await;
    let location = path(&target);
    let read = || async { app.request(Method::GET, &location).send().await.unwrap() };
    for round in 0..5 {
        assert_eq!(read().await.status(), StatusCode::OK, "fills the cache");
        let title = format!("Round {round}");
        let patched = app
            .request(Method::PATCH, &location)
            .bearer_auth(&token)
            .json(&json!({"title": title}))
            .send()
            .await
            .unwrap();
        assert_eq!(patched.status(), StatusCode::OK);
        let after: Value = read().await.json().await.unwrap();
        assert_eq!(after["title"], title);
    }

    assert_eq!(recent_titles(app).await, ["Round 4"]);
    let mut newer = book(2);
    newer["published_date"] = json!("2020-01-01");
    created(app, &token, &newer).await;
    assert_eq!(recent_titles(app).await, ["Book 2", "Round 4"]);

    let deleted = app
        .request(Method::DELETE, &location)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_eq!(read().await.status(), StatusCode::NOT_FOUND);
    assert_eq!(recent_titles(app).await, ["Book 2"]);
}

async fn recent_titles(app: &TestApp) -> Vec<String> {
    let list: Value = app
        .request(Method::GET, "/api/v1/books/recent")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["title"].as_str().unwrap().to_owned())
        .collect()
}

async fn lists_filter_sort_and_paginate(app: &TestApp) {
    let token = member(app, "ann@example.com").await;
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
        created(app, &token, &body).await;
    }
    let titles = |page: &Value| {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };

    let by_author: Value = app
        .request(Method::GET, "/api/v1/books?author=URSULA%20LE%20GUIN")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(titles(&by_author).len(), 6, "case-insensitive");
    let q: Value = app
        .request(Method::GET, "/api/v1/books?q=tOmBs")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(titles(&q).len(), 3);
    let dated: Value = app
        .request(
            Method::GET,
            "/api/v1/books?published_after=1972-01-01&published_before=1976-01-01",
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(titles(&dated).len(), 3, "strict bounds: 1973, 1974, 1975");

    let all: Value = app
        .request(Method::GET, "/api/v1/books?sort=-price&limit=100")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let prices: Vec<f64> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["price"].as_f64().unwrap())
        .collect();
    assert!(prices.windows(2).all(|w| w[0] >= w[1]), "{prices:?}");

    let mut paged = Vec::new();
    let mut next = Some("/api/v1/books?sort=-price&limit=2".to_owned());
    while let Some(url) = next {
        let response = app.request(Method::GET, &url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        next = response.headers().get(header::LINK).map(|link| {
            let link = link.to_str().unwrap();
            link[1..link.find('>').unwrap()].to_owned()
        });
        paged.extend(titles(&response.json().await.unwrap()));
    }
    assert_eq!(
        paged,
        titles(&all),
        "following Link headers visits every book once, in order"
    );

    let forged = app
        .request(Method::GET, "/api/v1/books?cursor=Ym9vay14fGQyMDAx")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::NOT_FOUND);
    let other_sort_cursor = all["next_cursor"].as_str().map(str::to_owned);
    assert!(other_sort_cursor.is_none(), "one page held everything");
    let first_page: Value = app
        .request(Method::GET, "/api/v1/books?sort=title&limit=1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let title_cursor = first_page["next_cursor"].as_str().unwrap();
    let mismatched = app
        .request(
            Method::GET,
            &format!("/api/v1/books?sort=price&cursor={title_cursor}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        mismatched.status(),
        StatusCode::NOT_FOUND,
        "a cursor only fits the sort it came from"
    );
}

/// Two instances sharing PostgreSQL and Redis: a write on one is seen by a
/// read on the other, though the other had the book cached.
#[actix_web::test]
async fn reads_on_one_instance_see_writes_on_another() {
    let Some(first) = TestApp::spawn(Backend::PostgresRedis).await else {
        return;
    };
    let second = first.twin().await;
    let token = member(&first, "ann@example.com").await;
    let target = created(&first, &token, &book(1)).await;
    let location = path(&target);
    let cached: Value = second
        .request(Method::GET, &location)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cached["title"], "Book 1");
    let patched = first
        .request(Method::PATCH, &location)
        .bearer_auth(&token)
        .json(&json!({"title": "Changed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), StatusCode::OK);
    let seen: Value = second
        .request(Method::GET, &location)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen["title"], "Changed");
    first.cleanup().await;
}
