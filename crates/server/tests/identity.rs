//! End-to-end tests of the identity API over real HTTP, through the real
//! wiring, in both configurations: SQLite + in-process cache, and
//! PostgreSQL + Redis.

#[macro_use]
mod support;

use std::time::Duration;

use futures::future::join_all;
use reqwest::{StatusCode, header};
use serde_json::json;
use support::{Anonymous, Backend, PASSWORD, TestApp, access, header_of, id, json_of, refresh};

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

    let me = json_of(app.get_own_account(access(&tokens)).await).await;
    assert_eq!(me["id"], account["id"]);
    let session = json_of(app.get_current_session(access(&tokens)).await).await;
    assert_eq!(session["id"], tokens["session"]["id"]);

    let response = app.refresh_session(refresh(&tokens)).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(header_of(&response, header::CACHE_CONTROL), "no-store");
    let renewed = json_of(response).await;
    assert_eq!(renewed["session"]["id"], tokens["session"]["id"]);
    assert_ne!(refresh(&renewed), refresh(&tokens));
    assert_eq!(
        app.get_own_account(access(&renewed)).await.status(),
        StatusCode::OK
    );

    let signed_out = app.delete_current_session(access(&renewed)).await;
    assert_eq!(signed_out.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.get_own_account(access(&renewed)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get_own_account(access(&tokens)).await.status(),
        StatusCode::UNAUTHORIZED,
        "older tokens of the session too"
    );
    assert_eq!(
        app.refresh_session(refresh(&renewed)).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

async fn replaying_a_refresh_token_revokes_the_session(app: &TestApp) {
    app.sign_up("ann@example.com", PASSWORD).await;
    let stolen = app.sign_in("ann@example.com", PASSWORD).await;
    let legitimate = json_of(app.refresh_session(refresh(&stolen)).await).await;

    let replay = app.refresh_session(refresh(&stolen)).await;
    assert_eq!(replay.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        header_of(&replay, header::WWW_AUTHENTICATE),
        r#"Bearer error="invalid_token""#
    );

    assert_eq!(
        app.get_own_account(access(&legitimate)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.refresh_session(refresh(&legitimate)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let other = app.sign_in("ann@example.com", PASSWORD).await;
    assert_eq!(
        app.get_own_account(access(&other)).await.status(),
        StatusCode::OK,
        "other sessions live on"
    );
}

async fn concurrent_refreshes_with_one_token_let_exactly_one_through(app: &TestApp) {
    app.sign_up("ann@example.com", PASSWORD).await;
    let tokens = app.sign_in("ann@example.com", PASSWORD).await;
    let attempts = join_all((0..2).map(|_| app.refresh_session(refresh(&tokens)).send())).await;
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
        .create_account(
            json!({"email": "ANN@example.com", "password": PASSWORD, "display_name": "Imposter"}),
        )
        .await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    assert_eq!(
        header_of(&again, header::CONTENT_TYPE),
        "application/problem+json"
    );

    let sneaky = app
        .create_account(json!({"email": "bob@example.com", "password": PASSWORD, "display_name": "Bob", "role": "admin"}))
        .await;
    assert_eq!(
        sneaky.status(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "a client cannot choose its role"
    );
    let bob = app
        .create_account(
            json!({"email": "bob@example.com", "password": PASSWORD, "display_name": "Bob"}),
        )
        .await;
    assert_eq!(bob.status(), StatusCode::CREATED);
    let location = header_of(&bob, header::LOCATION).to_owned();
    let body = json_of(bob).await;
    assert_eq!(body["role"], "member");
    assert_eq!(location, format!("/api/v1/accounts/{}", id(&body)));

    let invalid = app
        .create_account(json!({"email": "x", "password": "1234567", "display_name": ""}))
        .await;
    assert_eq!(invalid.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem = json_of(invalid).await;
    assert_eq!(problem["errors"].as_array().unwrap().len(), 3);
}

async fn a_wrong_password_and_an_unknown_email_look_alike(app: &TestApp) {
    app.sign_up("ann@example.com", PASSWORD).await;
    let wrong = app
        .create_session("ann@example.com", "not the password")
        .await;
    let unknown = app.create_session("nobody@example.com", PASSWORD).await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json_of(wrong).await, json_of(unknown).await);
}

async fn a_password_change_ends_every_other_session(app: &TestApp) {
    app.sign_up("ann@example.com", PASSWORD).await;
    let laptop = app.sign_in("ann@example.com", PASSWORD).await;
    let phone = app.sign_in("ann@example.com", PASSWORD).await;

    let new_password = |current: Option<&str>| {
        let mut body = json!({"password": "a brand new password"});
        if let Some(current) = current {
            body["current_password"] = json!(current);
        }
        app.update_own_account(access(&laptop), body)
    };
    assert_eq!(new_password(None).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        new_password(Some("wrong")).await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(new_password(Some(PASSWORD)).await.status(), StatusCode::OK);

    assert_eq!(
        app.get_own_account(access(&laptop)).await.status(),
        StatusCode::OK,
        "the session that changed it lives on"
    );
    assert_eq!(
        app.get_own_account(access(&phone)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.refresh_session(refresh(&phone)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.create_session("ann@example.com", PASSWORD)
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    app.sign_in("ann@example.com", "a brand new password").await;
}

async fn account_changes_are_conditional_on_if_match(app: &TestApp) {
    app.sign_up("ann@example.com", PASSWORD).await;
    let tokens = app.sign_in("ann@example.com", PASSWORD).await;
    let rename =
        |name: &str| app.update_own_account(access(&tokens), json!({"display_name": name}));

    let renamed = rename("Annie").if_match("\"1\"").await;
    assert_eq!(renamed.status(), StatusCode::OK);
    assert_eq!(header_of(&renamed, header::ETAG), "\"2\"");
    assert_eq!(
        rename("Anna").if_match("\"1\"").await.status(),
        StatusCode::PRECONDITION_FAILED
    );
    let me = json_of(app.get_own_account(access(&tokens)).await).await;
    assert_eq!(me["display_name"], "Annie");

    let taken = app.sign_up("bob@example.com", PASSWORD).await;
    let steal = app
        .update_own_account(
            access(&tokens),
            json!({"email": taken["email"], "current_password": PASSWORD}),
        )
        .await;
    assert_eq!(steal.status(), StatusCode::CONFLICT);
}

async fn sessions_are_listed_and_ended_one_by_one(app: &TestApp) {
    app.sign_up("ann@example.com", PASSWORD).await;
    app.sign_up("bob@example.com", PASSWORD).await;
    let first = app.sign_in("ann@example.com", PASSWORD).await;
    app.clock.advance(Duration::from_secs(1));
    let second = app.sign_in("ann@example.com", PASSWORD).await;
    let bobs = app.sign_in("bob@example.com", PASSWORD).await;

    let list = json_of(app.list_sessions(access(&first)).await).await;
    let ids: Vec<&str> = list["items"].as_array().unwrap().iter().map(id).collect();
    assert_eq!(ids, [id(&second["session"]), id(&first["session"])]);

    assert_eq!(
        app.delete_session(access(&first), id(&bobs["session"]))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get_own_account(access(&bobs)).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.delete_session(access(&first), id(&second["session"]))
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.get_own_account(access(&second)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get_own_account(access(&first)).await.status(),
        StatusCode::OK
    );

    assert_eq!(
        app.delete_all_sessions(access(&first)).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.get_own_account(access(&first)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get_own_account(access(&bobs)).await.status(),
        StatusCode::OK
    );
}

async fn deleting_the_account_ends_everything(app: &TestApp) {
    app.sign_up("ann@example.com", PASSWORD).await;
    let tokens = app.sign_in("ann@example.com", PASSWORD).await;
    let other = app.sign_in("ann@example.com", PASSWORD).await;
    assert_eq!(
        app.delete_own_account(access(&tokens)).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.get_own_account(access(&tokens)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get_own_account(access(&other)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.refresh_session(refresh(&other)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.create_session("ann@example.com", PASSWORD)
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    app.sign_up("ann@example.com", PASSWORD).await;
}

async fn access_tokens_expire(app: &TestApp) {
    app.sign_up("ann@example.com", PASSWORD).await;
    let tokens = app.sign_in("ann@example.com", PASSWORD).await;
    app.clock.advance(Duration::from_secs(15 * 60));
    let response = app.get_own_account(access(&tokens)).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        header_of(&response, header::WWW_AUTHENTICATE),
        r#"Bearer error="invalid_token""#
    );
    let renewed = json_of(app.refresh_session(refresh(&tokens)).await).await;
    assert_eq!(
        app.get_own_account(access(&renewed)).await.status(),
        StatusCode::OK
    );

    app.clock.advance(Duration::from_secs(31 * 24 * 3600));
    assert_eq!(
        app.refresh_session(refresh(&renewed)).await.status(),
        StatusCode::UNAUTHORIZED,
        "the session expired"
    );
}

async fn admins_administer_and_members_cannot(app: &TestApp) {
    let root = app.admin().await;
    // Ids are ULIDs, ordered by creation time (to the millisecond) on this clock.
    app.clock.advance(Duration::from_millis(1));
    let member = app.sign_up("ann@example.com", PASSWORD).await;
    for n in 0..3 {
        app.clock.advance(Duration::from_millis(1));
        app.sign_up(&format!("user{n}@example.com"), PASSWORD).await;
    }
    let ann = app.sign_in("ann@example.com", PASSWORD).await;

    assert_eq!(
        app.list_accounts(Anonymous, "").await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.list_accounts(access(&ann), "").await.status(),
        StatusCode::FORBIDDEN
    );

    let mut seen = Vec::new();
    let mut query = "limit=2".to_owned();
    loop {
        let response = app.list_accounts(&root, &query).await;
        assert_eq!(response.status(), StatusCode::OK);
        let link = response
            .headers()
            .get(header::LINK)
            .map(|l| l.to_str().unwrap().to_owned());
        let page = json_of(response).await;
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
                query = format!("limit=2&cursor={cursor}");
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
    assert_eq!(
        app.list_accounts(&root, "cursor=bm90LWFuLWlk")
            .await
            .status(),
        StatusCode::NOT_FOUND
    );

    let read = app.get_account(&root, id(&member)).await;
    assert_eq!(read.status(), StatusCode::OK);
    assert_eq!(json_of(read).await["email"], "ann@example.com");
    assert_eq!(
        app.get_account(access(&ann), id(&member)).await.status(),
        StatusCode::FORBIDDEN,
        "not even one's own account, by id"
    );

    let promote = |who: &str| app.update_account(who, id(&member), json!({"role": "admin"}));
    assert_eq!(promote(access(&ann)).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        app.update_account(&root, id(&member), json!({"role": "emperor"}))
            .await
            .status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let promoted = json_of(promote(&root).await).await;
    assert_eq!(promoted["role"], "admin");
    assert_eq!(
        app.get_own_account(access(&ann)).await.status(),
        StatusCode::UNAUTHORIZED,
        "a role change signs the account out"
    );

    let ann = app.sign_in("ann@example.com", PASSWORD).await;
    assert_eq!(
        app.list_accounts(access(&ann), "").await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.delete_account(&root, id(&member)).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.get_own_account(access(&ann)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.delete_account(&root, id(&member)).await.status(),
        StatusCode::NOT_FOUND
    );
}

async fn readiness_reports_the_dependencies(app: &TestApp) {
    let response = app.readiness().await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        json_of(response).await,
        json!({"status": "ok", "checks": {"cache": "ok", "database": "ok"}})
    );
    assert!(app.liveness().await.status().is_success());
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
    assert_eq!(
        second.get_own_account(access(&tokens)).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        first.delete_current_session(access(&tokens)).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        second.get_own_account(access(&tokens)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    first.cleanup().await;
}
