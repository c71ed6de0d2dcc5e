use std::sync::Arc;
use std::time::Duration;

use integration_tests::{SlowEngine, TestApp};
use serde_json::{json, Value};

async fn post_with_key(
    app: &TestApp,
    token: &str,
    path: &str,
    key: &str,
    body: Value,
) -> (u16, Value) {
    let response = app
        .client
        .post(format!("{}{path}", app.address))
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn fifty_racing_retries_with_one_key_store_one_set_of_events_and_answer_alike() {
    let app = TestApp::builder()
        .engine(Arc::new(SlowEngine(Duration::from_millis(200))))
        .spawn()
        .await;
    let admin = app.create_tenant("acme", "alice").await;
    let before = app.event_count().await;

    let body = json!({"question": "How do I rotate my API key?"});
    let results = futures::future::join_all(
        (0..50).map(|_| post_with_key(&app, &admin, "/v1/conversations", "key-1", body.clone())),
    )
    .await;

    let (status, first) = &results[0];
    assert_eq!(*status, 201, "{first}");
    assert_eq!(first["answer"]["status"], "answered");
    for (s, b) in &results {
        assert_eq!(
            (s, b),
            (status, first),
            "every retry answers like the first"
        );
    }
    assert_eq!(
        app.event_count().await - before,
        2,
        "QuestionAsked + AnswerRecorded, once"
    );
    let keyed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE idempotency_key = 'key-1'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    // The question carries the key (its recording settled it); the answer, recorded after
    // the engine call, is the same request's but not under its key.
    assert_eq!(keyed, 1);
}

#[tokio::test]
async fn a_retry_after_completion_replays_and_a_different_body_is_refused() {
    let app = TestApp::spawn().await;
    let admin = app.create_tenant("acme", "alice").await;
    let body = json!({"kind": "website", "name": "Site", "location": "https://acme.test"});
    let first = post_with_key(&app, &admin, "/v1/sources", "src-1", body.clone()).await;
    let again = post_with_key(&app, &admin, "/v1/sources", "src-1", body).await;
    assert_eq!(first.0, 201);
    assert_eq!(first, again);
    let sources: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'SourceAdded'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(sources, 1);

    let other = json!({"kind": "website", "name": "Other", "location": "https://other.test"});
    let (status, problem) = post_with_key(&app, &admin, "/v1/sources", "src-1", other).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (422, Some("idempotency_key_reused"))
    );

    // Keys are per user: another user's identical key is a new request.
    let bob = app.token("acme", domain::Role::Operator, "bob");
    let body = json!({"kind": "website", "name": "Site", "location": "https://acme.test"});
    let (status, theirs) = post_with_key(&app, &bob, "/v1/sources", "src-1", body).await;
    assert_eq!(status, 201);
    assert_ne!(theirs["id"], first.1["id"]);
}

#[tokio::test]
async fn a_rejected_command_is_replayed_as_the_same_rejection_and_stores_nothing() {
    let app = TestApp::spawn().await;
    let admin = app.create_tenant("acme", "alice").await;
    let before = app.event_count().await;
    let body = json!({"kind": "website", "name": "Site", "location": "not a url"});
    let first = post_with_key(&app, &admin, "/v1/sources", "bad-1", body.clone()).await;
    let again = post_with_key(&app, &admin, "/v1/sources", "bad-1", body).await;
    assert_eq!(first.0, 422);
    assert_eq!(first.1["code"], "invalid_location");
    assert_eq!(first, again);
    assert_eq!(app.event_count().await, before);
}

#[tokio::test]
async fn a_malformed_idempotency_key_is_a_400() {
    let app = TestApp::spawn().await;
    let admin = app.create_tenant("acme", "alice").await;
    let long = "k".repeat(300);
    let (status, problem) = post_with_key(&app, &admin, "/v1/sources", &long, json!({})).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (400, Some("invalid_idempotency_key"))
    );
}
