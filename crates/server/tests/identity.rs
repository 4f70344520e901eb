//! End-to-end tests of the identity API over real HTTP, through the real
//! wiring, in both configurations: SQLite + in-process cache, and
//! PostgreSQL + Redis.

#[macro_use]
mod support;

use std::time::Duration;

use futures::future::join_all;
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use support::{Backend, TestApp, access, refresh};
use waiter_domain::{DisplayName, Email, Password};

const PASSWORD: &str = "correct horse battery";

on_both_backends!(
    the_whole_session_lifecycle,
    replaying_a_refresh_token_revokes_the_session,
    concurrent_refreshes_with_one_token_let_exactly_one_through,
    sign_up_normalises_and_guards_the_email,
    a_wrong_password_and_an_unknown_email_look_alike,
    a_password_change_ends_every_other_session,
    account_changes_are_conditional_on_if_match,
    sessions_are_listed_and_ended_one_by_one,
    deleting_the_account_ends_everything,
    access_tokens_expire,
    admins_administer_and_members_cannot,
    readiness_reports_the_dependencies,
);

async fn the_whole_session_lifecycle(app: &TestApp) {
    let account = app.sign_up("ann@example.com", PASSWORD).await;
    let tokens = app.sign_in("ann@example.com", PASSWORD).await;
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 900);

    let me: Value = app
        .get("/api/v1/accounts/me", access(&tokens))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["id"], account["id"]);

    let session: Value = app
        .get("/api/v1/sessions/me", access(&tokens))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(session["id"], tokens["session"]["id"]);

    let response = app.refresh(refresh(&tokens)).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    let renewed: Value = response.json().await.unwrap();
    assert_eq!(renewed["session"]["id"], tokens["session"]["id"]);
    assert_ne!(refresh(&renewed), refresh(&tokens));
    assert_eq!(app.me_status(access(&renewed)).await, StatusCode::OK);

    let response = app
        .request(Method::DELETE, "/api/v1/sessions/me")
        .bearer_auth(access(&renewed))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.me_status(access(&renewed)).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.me_status(access(&tokens)).await,
        StatusCode::UNAUTHORIZED,
        "older tokens of the session too"
    );
    assert_eq!(
        app.refresh(refresh(&renewed)).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

async fn replaying_a_refresh_token_revokes_the_session(app: &TestApp) {
    app.sign_up("ann@example.com", PASSWORD).await;
    let stolen = app.sign_in("ann@example.com", PASSWORD).await;
    let legitimate: Value = app.refresh(refresh(&stolen)).await.json().await.unwrap();

    let replay = app.refresh(refresh(&stolen)).await;
    assert_eq!(replay.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        replay.headers()[header::WWW_AUTHENTICATE],
        r#"Bearer error="invalid_token""#
    );

    assert_eq!(
        app.me_status(access(&legitimate)).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.refresh(refresh(&legitimate)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let other = app.sign_in("ann@example.com", PASSWORD).await;
    assert_eq!(
        app.me_status(access(&other)).await,
        StatusCode::OK,
        "other sessions live on"
    );
}

async fn concurrent_refreshes_with_one_token_let_exactly_one_through(app: &TestApp) {
    app.sign_up("ann@example.com", PASSWORD).await;
    let tokens = app.sign_in("ann@example.com", PASSWORD).await;
    let attempts = join_all((0..2).map(|_| app.refresh(refresh(&tokens)))).await;
    let created = attempts
        .iter()
        .filter(|r| r.status() == StatusCode::CREATED)
        .count();
    let refused = attempts
        .iter()
        .filter(|r| r.status() == StatusCode::UNAUTHORIZED)
        .count();
    assert_eq!((created, refused), (1, 1));
}

async fn sign_up_normalises_and_guards_the_email(app: &TestApp) {
    let account = app.sign_up("  Ann@Example.COM ", PASSWORD).await;
    assert_eq!(account["email"], "ann@example.com");
    assert_eq!(account["role"], "member");

    let again = app
        .request(Method::POST, "/api/v1/accounts")
        .json(
            &json!({"email": "ANN@example.com", "password": PASSWORD, "display_name": "Imposter"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::CONFLICT);
    assert_eq!(
        again.headers()[header::CONTENT_TYPE],
        "application/problem+json"
    );

    let sneaky = app
        .request(Method::POST, "/api/v1/accounts")
        .json(&json!({"email": "bob@example.com", "password": PASSWORD, "display_name": "Bob", "role": "admin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        sneaky.status(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "a client cannot choose its role"
    );
    let bob = app
        .request(Method::POST, "/api/v1/accounts")
        .json(&json!({"email": "bob@example.com", "password": PASSWORD, "display_name": "Bob"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bob.status(), StatusCode::CREATED);
    let location = bob.headers()[header::LOCATION].to_str().unwrap().to_owned();
    let body: Value = bob.json().await.unwrap();
    assert_eq!(body["role"], "member");
    assert_eq!(
        location,
        format!("/api/v1/accounts/{}", body["id"].as_str().unwrap())
    );

    let invalid = app
        .request(Method::POST, "/api/v1/accounts")
        .json(&json!({"email": "x", "password": "1234567", "display_name": ""}))
        .send()
        .await
        .unwrap();
    assert_eq!(invalid.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = invalid.json().await.unwrap();
    assert_eq!(problem["errors"].as_array().unwrap().len(), 3);
}

async fn a_wrong_password_and_an_unknown_email_look_alike(app: &TestApp) {
    app.sign_up("ann@example.com", PASSWORD).await;
    let wrong = app.try_sign_in("ann@example.com", "not the password").await;
    let unknown = app.try_sign_in("nobody@example.com", PASSWORD).await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    let wrong: Value = wrong.json().await.unwrap();
    let unknown: Value = unknown.json().await.unwrap();
    assert_eq!(wrong, unknown);
}

async fn a_password_change_ends_every_other_session(app: &TestApp) {
    app.sign_up("ann@example.com", PASSWORD).await;
    let laptop = app.sign_in("ann@example.com", PASSWORD).await;
    let phone = app.sign_in("ann@example.com", PASSWORD).await;

    let change = |current: Option<&str>| {
        let mut body = json!({"password": "a brand new password"});
        if let Some(current) = current {
            body["current_password"] = json!(current);
        }
        app.request(Method::PATCH, "/api/v1/accounts/me")
            .bearer_auth(access(&laptop))
            .json(&body)
            .send()
    };
    assert_eq!(change(None).await.unwrap().status(), StatusCode::FORBIDDEN);
    assert_eq!(
        change(Some("wrong")).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        change(Some(PASSWORD)).await.unwrap().status(),
        StatusCode::OK
    );

    assert_eq!(
        app.me_status(access(&laptop)).await,
        StatusCode::OK,
        "the session that changed it lives on"
    );
    assert_eq!(
        app.me_status(access(&phone)).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.refresh(refresh(&phone)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.try_sign_in("ann@example.com", PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    app.sign_in("ann@example.com", "a brand new password").await;
}

async fn account_changes_are_conditional_on_if_match(app: &TestApp) {
    app.sign_up("ann@example.com", PASSWORD).await;
    let tokens = app.sign_in("ann@example.com", PASSWORD).await;
    let rename = |name: &str, etag: &str| {
        app.request(Method::PATCH, "/api/v1/accounts/me")
            .bearer_auth(access(&tokens))
            .header(header::IF_MATCH, etag)
            .json(&json!({"display_name": name}))
            .send()
    };
    let renamed = rename("Annie", "\"1\"").await.unwrap();
    assert_eq!(renamed.status(), StatusCode::OK);
    assert_eq!(renamed.headers()[header::ETAG], "\"2\"");
    assert_eq!(
        rename("Anna", "\"1\"").await.unwrap().status(),
        StatusCode::PRECONDITION_FAILED
    );
    let me: Value = app
        .get("/api/v1/accounts/me", access(&tokens))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["display_name"], "Annie");

    let taken = app.sign_up("bob@example.com", PASSWORD).await;
    let steal = app
        .request(Method::PATCH, "/api/v1/accounts/me")
        .bearer_auth(access(&tokens))
        .json(&json!({"email": taken["email"], "current_password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(steal.status(), StatusCode::CONFLICT);
}

async fn sessions_are_listed_and_ended_one_by_one(app: &TestApp) {
    app.sign_up("ann@example.com", PASSWORD).await;
    app.sign_up("bob@example.com", PASSWORD).await;
    let first = app.sign_in("ann@example.com", PASSWORD).await;
    app.clock.advance(Duration::from_secs(1));
    let second = app.sign_in("ann@example.com", PASSWORD).await;
    let bobs = app.sign_in("bob@example.com", PASSWORD).await;

    let list: Value = app
        .get("/api/v1/sessions", access(&first))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<_> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].clone())
        .collect();
    assert_eq!(
        ids,
        [
            second["session"]["id"].clone(),
            first["session"]["id"].clone()
        ]
    );

    let end = |token: &str, id: &Value| {
        app.request(
            Method::DELETE,
            &format!("/api/v1/sessions/{}", id.as_str().unwrap()),
        )
        .bearer_auth(token.to_owned())
        .send()
    };
    assert_eq!(
        end(access(&first), &bobs["session"]["id"])
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(app.me_status(access(&bobs)).await, StatusCode::OK);
    assert_eq!(
        end(access(&first), &second["session"]["id"])
            .await
            .unwrap()
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.me_status(access(&second)).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.me_status(access(&first)).await, StatusCode::OK);

    let everywhere = app
        .request(Method::DELETE, "/api/v1/sessions")
        .bearer_auth(access(&first))
        .send()
        .await
        .unwrap();
    assert_eq!(everywhere.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.me_status(access(&first)).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.me_status(access(&bobs)).await, StatusCode::OK);
}

async fn deleting_the_account_ends_everything(app: &TestApp) {
    app.sign_up("ann@example.com", PASSWORD).await;
    let tokens = app.sign_in("ann@example.com", PASSWORD).await;
    let other = app.sign_in("ann@example.com", PASSWORD).await;
    let response = app
        .request(Method::DELETE, "/api/v1/accounts/me")
        .bearer_auth(access(&tokens))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.me_status(access(&tokens)).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.me_status(access(&other)).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.refresh(refresh(&other)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.try_sign_in("ann@example.com", PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    app.sign_up("ann@example.com", PASSWORD).await;
}

async fn access_tokens_expire(app: &TestApp) {
    app.sign_up("ann@example.com", PASSWORD).await;
    let tokens = app.sign_in("ann@example.com", PASSWORD).await;
    app.clock.advance(Duration::from_secs(15 * 60));
    let response = app
        .get("/api/v1/accounts/me", access(&tokens))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.headers()[header::WWW_AUTHENTICATE],
        r#"Bearer error="invalid_token""#
    );
    let renewed: Value = app.refresh(refresh(&tokens)).await.json().await.unwrap();
    assert_eq!(app.me_status(access(&renewed)).await, StatusCode::OK);

    app.clock.advance(Duration::from_secs(31 * 24 * 3600));
    assert_eq!(
        app.refresh(refresh(&renewed)).await.status(),
        StatusCode::UNAUTHORIZED,
        "the session expired"
    );
}

async fn admins_administer_and_members_cannot(app: &TestApp) {
    let admin = app
        .wiring
        .identity()
        .bootstrap_admin(
            Email::parse("root@example.com").unwrap(),
            DisplayName::parse("Root").unwrap(),
            Some(Password::parse(PASSWORD).unwrap()),
        )
        .await
        .unwrap();
    assert!(admin.role.is_admin());
    // Ids are ULIDs, ordered by creation time (to the millisecond) on this clock.
    app.clock.advance(Duration::from_millis(1));
    let member = app.sign_up("ann@example.com", PASSWORD).await;
    for n in 0..3 {
        app.clock.advance(Duration::from_millis(1));
        app.sign_up(&format!("user{n}@example.com"), PASSWORD).await;
    }
    let root = app.sign_in("root@example.com", PASSWORD).await;
    let ann = app.sign_in("ann@example.com", PASSWORD).await;

    assert_eq!(
        app.request(Method::GET, "/api/v1/accounts")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get("/api/v1/accounts", access(&ann))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::FORBIDDEN
    );

    let mut seen = Vec::new();
    let mut path = "/api/v1/accounts?limit=2".to_owned();
    loop {
        let response = app.get(&path, access(&root)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let link = response
            .headers()
            .get(header::LINK)
            .map(|l| l.to_str().unwrap().to_owned());
        let page: Value = response.json().await.unwrap();
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["email"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => {
                assert!(link.unwrap().contains(cursor));
                path = format!("/api/v1/accounts?limit=2&cursor={cursor}");
            }
            None => break,
        }
    }
    assert_eq!(
        seen,
        [
            "root@example.com",
            "ann@example.com",
            "user0@example.com",
            "user1@example.com",
            "user2@example.com"
        ]
    );
    let forged = app
        .get("/api/v1/accounts?cursor=bm90LWFuLWlk", access(&root))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::NOT_FOUND);

    let member_path = format!("/api/v1/accounts/{}", member["id"].as_str().unwrap());
    let promote = |token: &str| {
        app.request(Method::PATCH, &member_path)
            .bearer_auth(token.to_owned())
            .json(&json!({"role": "admin"}))
            .send()
    };
    assert_eq!(
        promote(access(&ann)).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    let bad_role = app
        .request(Method::PATCH, &member_path)
        .bearer_auth(access(&root))
        .json(&json!({"role": "emperor"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_role.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let promoted: Value = promote(access(&root)).await.unwrap().json().await.unwrap();
    assert_eq!(promoted["role"], "admin");
    assert_eq!(
        app.me_status(access(&ann)).await,
        StatusCode::UNAUTHORIZED,
        "a role change signs the account out"
    );

    let ann = app.sign_in("ann@example.com", PASSWORD).await;
    assert_eq!(
        app.get("/api/v1/accounts", access(&ann))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let delete = app
        .request(Method::DELETE, &member_path)
        .bearer_auth(access(&root))
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.me_status(access(&ann)).await, StatusCode::UNAUTHORIZED);
    let again = app
        .request(Method::DELETE, &member_path)
        .bearer_auth(access(&root))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
}

async fn readiness_reports_the_dependencies(app: &TestApp) {
    let response = app.request(Method::GET, "/readyz").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"status": "ok", "checks": {"cache": "ok", "database": "ok"}})
    );
    assert!(
        app.request(Method::GET, "/healthz")
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );
}

/// Two instances sharing PostgreSQL and Redis: ending a session on one is
/// seen by the other on the very next request.
#[actix_web::test]
async fn revocation_reaches_every_instance_sharing_the_cache() {
    let Some(first) = TestApp::spawn(Backend::PostgresRedis).await else {
        return;
    };
    let second = first.twin().await;
    first.sign_up("ann@example.com", PASSWORD).await;
    let tokens = first.sign_in("ann@example.com", PASSWORD).await;
    assert_eq!(second.me_status(access(&tokens)).await, StatusCode::OK);
    let signed_out = first
        .request(Method::DELETE, "/api/v1/sessions/me")
        .bearer_auth(access(&tokens))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_out.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        second.me_status(access(&tokens)).await,
        StatusCode::UNAUTHORIZED
    );
    first.cleanup().await;
}
