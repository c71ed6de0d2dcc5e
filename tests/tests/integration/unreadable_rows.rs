//! Bad stored data is never silently turned into other data: a read-model row that does not
//! decode makes the next event for it a dead letter (the row is left as it was, not reset), a
//! read of it is a 500 problem, and a change the database refuses for good (a constraint) is
//! dead-lettered while the runner goes on, instead of restarting forever.
use std::time::Duration;

use integration_tests::{wait_for, TestApp};
use reqwest::Method;
use serde_json::{json, Value};

/// Waits for a dead letter of `projection` and returns its error text.
async fn dead_letter(app: &TestApp, projection: &str) -> String {
    wait_for(
        &format!("a dead letter of {projection}"),
        Duration::from_secs(60),
        || async {
            sqlx::query_scalar::<_, String>(
                "SELECT error FROM dead_letters WHERE projection = $1 ORDER BY id LIMIT 1",
            )
            .bind(projection)
            .fetch_optional(&app.pool)
            .await
            .unwrap()
        },
    )
    .await
}

async fn add_source(app: &TestApp, admin: &str, name: &str) -> String {
    let (status, body) = app
        .call(
            Method::POST,
            "/v1/sources",
            admin,
            Some(json!({"kind": "docs", "name": name, "location": "https://docs.acme.example"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_string()
}

/// Waits until the sources read model shows `id` at `version` or later.
async fn source_at(app: &TestApp, admin: &str, id: &str, version: i64) -> Value {
    wait_for(
        "the source in the read model",
        Duration::from_secs(60),
        || async {
            let (status, list) = app.call(Method::GET, "/v1/sources", admin, None).await;
            if status != 200 {
                return None;
            }
            list.as_array()?
                .iter()
                .find(|s| s["id"] == id && s["version"].as_i64() >= Some(version))
                .cloned()
        },
    )
    .await
}

/// Waits until `path` answers 200 (its read model has caught up).
async fn readable(app: &TestApp, path: &str, token: &str) {
    wait_for(path, Duration::from_secs(60), || async {
        let (status, _) = app.call(Method::GET, path, token, None).await;
        (status == 200).then_some(())
    })
    .await
}

async fn assert_unreadable(app: &TestApp, path: &str, token: &str) {
    let response = app.send(Method::GET, path, token, None).await;
    assert_eq!(response.status().as_u16(), 500, "{path}");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json",
        "{path}"
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(
        problem["code"], "stored_data_unreadable",
        "{path}: {problem}"
    );
}

#[tokio::test]
async fn an_unreadable_sync_history_is_dead_lettered_not_reset_and_reads_say_so() {
    let app = TestApp::builder().streaming().spawn().await;
    let admin = app.create_tenant("acme", "alice").await;
    let id = add_source(&app, &admin, "Docs").await;
    source_at(&app, &admin, &id, 1).await;
    let broken = json!({"broken": true});
    sqlx::query("UPDATE rm_sources SET history = $1 WHERE source_id = $2::uuid")
        .bind(&broken)
        .bind(&id)
        .execute(&app.pool)
        .await
        .unwrap();

    let (status, body) = app
        .call(
            Method::POST,
            &format!("/v1/sources/{id}/sync"),
            &admin,
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let error = dead_letter(&app, "sources").await;
    assert!(error.contains("sync history is unreadable"), "{error}");
    let (history, version): (Value, i64) =
        sqlx::query_as("SELECT history, version FROM rm_sources WHERE source_id = $1::uuid")
            .bind(&id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(history, broken, "the row is left as it was, not reset");
    assert_eq!(version, 1);
    assert_unreadable(&app, "/v1/sources", &admin).await;
}

#[tokio::test]
async fn unreadable_feedback_is_dead_lettered_and_the_vote_counts_stay_as_they_were() {
    let app = TestApp::builder().streaming().spawn().await;
    let admin = app.create_tenant("acme", "alice").await;
    let (conversation, answer) = app.ask(&admin, "How do I export my data?").await;
    wait_for(
        "the question in the analytics model",
        Duration::from_secs(60),
        || async {
            sqlx::query_scalar::<_, i64>(
                "SELECT 1::bigint FROM rm_questions WHERE answer_id = $1::uuid",
            )
            .bind(&answer)
            .fetch_optional(&app.pool)
            .await
            .unwrap()
        },
    )
    .await;
    sqlx::query(
        "UPDATE rm_questions SET feedback = '\"garbage\"', upvotes = 3 WHERE answer_id = $1::uuid",
    )
    .bind(&answer)
    .execute(&app.pool)
    .await
    .unwrap();

    let (status, body) = app
        .call(
            Method::PUT,
            &format!("/v1/conversations/{conversation}/answers/{answer}/feedback"),
            &admin,
            Some(json!({"reaction": "upvote"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let error = dead_letter(&app, "questions").await;
    assert!(
        error.contains("feedback of the answer is unreadable"),
        "{error}"
    );
    let (feedback, upvotes): (Value, i32) =
        sqlx::query_as("SELECT feedback, upvotes FROM rm_questions WHERE answer_id = $1::uuid")
            .bind(&answer)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((feedback, upvotes), (json!("garbage"), 3));
}

#[tokio::test]
async fn unreadable_conversation_and_tenant_rows_are_errors_on_read_and_on_apply() {
    let app = TestApp::builder().streaming().spawn().await;
    let admin = app.create_tenant("acme", "alice").await;
    let (conversation, _) = app.ask(&admin, "First question").await;
    let path = format!("/v1/conversations/{conversation}");
    readable(&app, &path, &admin).await;
    readable(&app, "/v1/tenant", &admin).await;
    sqlx::query("UPDATE rm_conversations SET document = '\"broken\"'")
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE rm_tenants SET state = '\"broken\"'")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_unreadable(&app, &path, &admin).await;
    assert_unreadable(&app, "/v1/tenant", &admin).await;
    // A word no enum knows, in a typed column: unreadable too, not "retry shortly".
    sqlx::query("UPDATE rm_conversations SET status = 'weird'")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_unreadable(&app, "/v1/conversations", &admin).await;
    sqlx::query("UPDATE rm_conversations SET status = 'open'")
        .execute(&app.pool)
        .await
        .unwrap();

    // Applying to the broken row dead-letters the event (it used to retry forever), and the
    // projection goes on with other conversations.
    let (status, body) = app
        .call(
            Method::POST,
            &format!("{path}/questions"),
            &admin,
            Some(json!({"question": "A follow-up"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let error = dead_letter(&app, "conversations").await;
    assert!(
        error.contains("conversation document is unreadable"),
        "{error}"
    );
    let (other, _) = app.ask(&admin, "Another conversation").await;
    readable(&app, &format!("/v1/conversations/{other}"), &admin).await;
}

#[tokio::test]
async fn a_change_the_database_refuses_for_good_is_dead_lettered_and_the_runner_goes_on() {
    let app = TestApp::builder().streaming().spawn().await;
    let admin = app.create_tenant("acme", "alice").await;
    // A rule the read model's table enforces and the command side knows nothing of.
    sqlx::query(
        "ALTER TABLE rm_sources ADD CONSTRAINT no_forbidden_names CHECK (name <> 'Forbidden')",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let id = add_source(&app, &admin, "Docs").await;
    source_at(&app, &admin, &id, 1).await;
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/v1/sources/{id}"),
            &admin,
            Some(json!({"name": "Forbidden"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // The next event of the same source (same partition, after the refused one) still applies.
    let (status, body) = app
        .call(
            Method::POST,
            &format!("/v1/sources/{id}/sync"),
            &admin,
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let source = source_at(&app, &admin, &id, 3).await;
    assert_eq!(source["sync_state"], "requested");
    assert_eq!(source["name"], "Docs");
    let error = dead_letter(&app, "sources").await;
    assert!(error.contains("no_forbidden_names"), "{error}");
}
