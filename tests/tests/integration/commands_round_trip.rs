use std::collections::BTreeSet;

use domain::Role;
use integration_tests::TestApp;
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::Row;

/// Sends one command with a known request id and checks its answer.
async fn command(
    app: &integration_tests::TestApp,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
    request_id: &str,
    expected_status: u16,
) -> Value {
    let mut request = app
        .client
        .request(method, format!("{}{path}", app.address))
        .bearer_auth(token)
        .header("X-Request-Id", request_id);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    assert_eq!(
        response.headers()["x-request-id"].to_str().unwrap(),
        request_id,
        "the request id is echoed"
    );
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, expected_status, "{path}: {body}");
    body
}

/// Creates the tenant `acme` (its first events carry the correlation id `req-create`).
async fn create_acme(app: &TestApp, admin: &str) {
    let r = command(
        app,
        admin,
        Method::POST,
        "/v1/tenant",
        Some(json!({"name": "Acme"})),
        "req-create",
        201,
    )
    .await;
    assert_eq!(r, json!({"id": "acme", "version": 2}));
}

/// Every event type in `expected` reached the store, and nothing else; each event carries its
/// complete metadata, the request id as correlation id, and the acting user and role.
async fn assert_stored_with_metadata(app: &TestApp, expected: &[&str]) {
    // Every event type reached the store...
    let rows = sqlx::query(
        "SELECT event_type, event_version, event_id, tenant_id, actor_id, actor_role, correlation_id, \
           recorded_at, transaction_id::text AS tx, aggregate_type, metadata FROM events ORDER BY position",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let types: BTreeSet<String> = rows.iter().map(|r| r.get("event_type")).collect();
    let expected: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
    assert_eq!(types, expected);
    // ...with complete metadata, the request id as correlation id, and the acting user and role.
    let mut event_ids = BTreeSet::new();
    for row in &rows {
        let event_type: String = row.get("event_type");
        assert_eq!(row.get::<String, _>("event_version"), "1.0");
        assert_eq!(row.get::<String, _>("tenant_id"), "acme");
        let correlation: String = row.get("correlation_id");
        assert!(
            correlation.starts_with("req-"),
            "{event_type}: {correlation}"
        );
        let (actor, role): (String, String) = (row.get("actor_id"), row.get("actor_role"));
        match row.get::<String, _>("aggregate_type").as_str() {
            "tenant" => assert_eq!(
                (actor.as_str(), role.as_str()),
                ("alice", "admin"),
                "{event_type}"
            ),
            _ => assert_eq!(
                (actor.as_str(), role.as_str()),
                ("olga", "operator"),
                "{event_type}"
            ),
        }
        let tx: String = row.get("tx");
        assert!(tx.parse::<u64>().unwrap() > 0);
        let metadata: Value = row.get("metadata");
        assert_eq!(metadata["correlation_id"], Value::String(correlation));
        assert!(metadata["occurred_at"].is_string());
        assert!(event_ids.insert(row.get::<uuid::Uuid, _>("event_id")));
    }
}

#[tokio::test]
async fn every_tenant_command_round_trips_and_its_events_carry_complete_metadata() {
    let app = TestApp::spawn().await;
    let admin = app.token("acme", Role::Admin, "alice");
    let operator = app.token("acme", Role::Operator, "olga");
    let post = Method::POST;
    let put = Method::PUT;

    create_acme(&app, &admin).await;
    command(
        &app,
        &admin,
        put.clone(),
        "/v1/tenant/name",
        Some(json!({"name": "Acme Inc"})),
        "req-rename",
        200,
    )
    .await;
    command(
        &app,
        &admin,
        put.clone(),
        "/v1/tenant/kapa",
        Some(
            json!({"project_id": "p-1", "integration_id": "web", "api_key_ref": "env://KAPA_KEY"}),
        ),
        "req-kapa",
        200,
    )
    .await;
    command(
        &app,
        &admin,
        put.clone(),
        "/v1/tenant/feature-flags/streaming-answers",
        Some(json!({"enabled": true, "rollout_percentage": 25})),
        "req-flag",
        200,
    )
    .await;
    command(
        &app,
        &admin,
        Method::DELETE,
        "/v1/tenant/feature-flags/streaming-answers",
        None,
        "req-unflag",
        200,
    )
    .await;
    command(
        &app,
        &admin,
        post.clone(),
        "/v1/tenant/members",
        Some(json!({"user_id": "olga", "email": "olga@acme.test", "role": "viewer"})),
        "req-invite",
        200,
    )
    .await;
    command(
        &app,
        &admin,
        put.clone(),
        "/v1/tenant/members/olga/role",
        Some(json!({"role": "operator"})),
        "req-role",
        200,
    )
    .await;
    command(
        &app,
        &admin,
        post.clone(),
        "/v1/tenant/members",
        Some(json!({"user_id": "tmp", "role": "viewer"})),
        "req-invite2",
        200,
    )
    .await;
    command(
        &app,
        &admin,
        Method::DELETE,
        "/v1/tenant/members/tmp",
        None,
        "req-remove",
        200,
    )
    .await;
    // The tenant as its events say now (no broker in this test: the read models stay empty).
    let now = chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    let state = command(
        &app,
        &admin,
        Method::GET,
        &format!("/v1/audit/state/tenant/acme?at={now}"),
        None,
        "req-get-tenant",
        200,
    )
    .await;
    let tenant = &state["state"];
    assert_eq!(tenant["name"], "Acme Inc");
    assert_eq!(tenant["kapa"]["api_key_ref"], "env://KAPA_KEY");
    assert_eq!(tenant["members"].as_array().unwrap().len(), 2);

    command(
        &app,
        &admin,
        post.clone(),
        "/v1/tenant/suspend",
        Some(json!({"reason": "unpaid"})),
        "req-suspend",
        200,
    )
    .await;
    let refused = command(
        &app,
        &operator,
        post.clone(),
        "/v1/conversations",
        Some(json!({"question": "Still there?"})),
        "req-refused",
        409,
    )
    .await;
    assert_eq!(refused["code"], "tenant_suspended");
    command(
        &app,
        &admin,
        post.clone(),
        "/v1/tenant/reactivate",
        None,
        "req-reactivate",
        200,
    )
    .await;
    assert_stored_with_metadata(
        &app,
        &[
            "TenantCreated",
            "TenantRenamed",
            "KapaSettingsSet",
            "FeatureFlagSet",
            "FeatureFlagCleared",
            "MemberInvited",
            "MemberRoleChanged",
            "MemberRemoved",
            "TenantSuspended",
            "TenantReactivated",
        ],
    )
    .await;
}

#[tokio::test]
async fn every_conversation_command_round_trips_and_its_events_carry_complete_metadata() {
    let app = TestApp::spawn().await;
    let admin = app.token("acme", Role::Admin, "alice");
    let operator = app.token("acme", Role::Operator, "olga");
    let post = Method::POST;
    let put = Method::PUT;
    create_acme(&app, &admin).await;

    // Conversations.
    let asked = command(
        &app,
        &operator,
        post.clone(),
        "/v1/conversations",
        Some(json!({"question": "How do I export my data?", "channel": "web"})),
        "req-ask",
        201,
    )
    .await;
    assert_eq!(asked["version"], 2);
    assert_eq!(asked["answer"]["status"], "answered");
    assert!(asked["answer"]["text"]
        .as_str()
        .unwrap()
        .contains("How do I export my data?"));
    let conversation = asked["id"].as_str().unwrap().to_string();
    let answer = asked["answer"]["answer_id"].as_str().unwrap().to_string();
    let follow = command(
        &app,
        &operator,
        post.clone(),
        &format!("/v1/conversations/{conversation}/questions"),
        Some(json!({"question": "And to CSV?"})),
        "req-follow",
        200,
    )
    .await;
    assert_eq!(follow["version"], 4);
    command(
        &app,
        &operator,
        put.clone(),
        &format!("/v1/conversations/{conversation}/answers/{answer}/feedback"),
        Some(json!({"reaction": "upvote"})),
        "req-up",
        200,
    )
    .await;
    let changed = command(
        &app,
        &operator,
        put.clone(),
        &format!("/v1/conversations/{conversation}/answers/{answer}/feedback"),
        Some(json!({"reaction": "downvote", "reasons": ["incorrect"], "comment": "outdated"})),
        "req-down",
        200,
    )
    .await;
    assert_eq!(changed["version"], 6);
    command(
        &app,
        &operator,
        post.clone(),
        &format!("/v1/conversations/{conversation}/escalate"),
        Some(json!({"reason": "needs a human"})),
        "req-escalate",
        200,
    )
    .await;
    command(
        &app,
        &operator,
        post.clone(),
        &format!("/v1/conversations/{conversation}/resolve"),
        None,
        "req-resolve",
        200,
    )
    .await;
    let blocked = command(
        &app,
        &operator,
        post.clone(),
        "/v1/conversations",
        Some(json!({"question": "card 4111 1111 1111 1111 was declined"})),
        "req-blocked",
        201,
    )
    .await;
    assert_eq!(blocked["answer"]["status"], "blocked");
    assert_stored_with_metadata(
        &app,
        &[
            "TenantCreated",
            "MemberInvited",
            "QuestionAsked",
            "AnswerRecorded",
            "QuestionBlocked",
            "FeedbackGiven",
            "FeedbackChanged",
            "ConversationEscalated",
            "ConversationResolved",
        ],
    )
    .await;
    let ask_events: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM events WHERE correlation_id = 'req-ask' ORDER BY sequence",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(ask_events, ["QuestionAsked", "AnswerRecorded"]);
}

#[tokio::test]
async fn every_knowledge_source_command_round_trips_and_its_events_carry_complete_metadata() {
    let app = TestApp::spawn().await;
    let admin = app.token("acme", Role::Admin, "alice");
    let operator = app.token("acme", Role::Operator, "olga");
    let post = Method::POST;
    create_acme(&app, &admin).await;

    // Knowledge sources.
    let added = command(
        &app,
        &operator,
        post.clone(),
        "/v1/sources",
        Some(json!({"kind": "docs", "name": "Docs", "location": "https://docs.acme.test"})),
        "req-add",
        201,
    )
    .await;
    let source = added["id"].as_str().unwrap().to_string();
    command(
        &app,
        &operator,
        Method::PATCH,
        &format!("/v1/sources/{source}"),
        Some(json!({"name": "Product docs"})),
        "req-update",
        200,
    )
    .await;
    command(
        &app,
        &operator,
        post.clone(),
        &format!("/v1/sources/{source}/sync"),
        None,
        "req-sync",
        200,
    )
    .await;
    let run1 = uuid::Uuid::new_v4();
    command(
        &app,
        &operator,
        post.clone(),
        &format!("/v1/sources/{source}/sync/start"),
        Some(json!({"sync_id": run1})),
        "req-start",
        200,
    )
    .await;
    command(
        &app,
        &operator,
        post.clone(),
        &format!("/v1/sources/{source}/sync/complete"),
        Some(json!({"sync_id": run1, "document_count": 120})),
        "req-complete",
        200,
    )
    .await;
    command(
        &app,
        &operator,
        post.clone(),
        &format!("/v1/sources/{source}/sync"),
        None,
        "req-sync2",
        200,
    )
    .await;
    let run2 = uuid::Uuid::new_v4();
    command(
        &app,
        &operator,
        post.clone(),
        &format!("/v1/sources/{source}/sync/start"),
        Some(json!({"sync_id": run2})),
        "req-start2",
        200,
    )
    .await;
    command(
        &app,
        &operator,
        post.clone(),
        &format!("/v1/sources/{source}/sync/fail"),
        Some(json!({"sync_id": run2, "error": "403 from site"})),
        "req-fail",
        200,
    )
    .await;
    let view = command(
        &app,
        &operator,
        Method::GET,
        &format!("/v1/sources/{source}"),
        None,
        "req-get-source",
        200,
    )
    .await;
    assert_eq!(view["name"], "Product docs");
    assert_eq!(view["document_count"], 120);
    assert_eq!(view["sync_state"], "idle");
    command(
        &app,
        &operator,
        Method::DELETE,
        &format!("/v1/sources/{source}"),
        None,
        "req-delete",
        200,
    )
    .await;
    let no_sync = command(
        &app,
        &operator,
        post.clone(),
        &format!("/v1/sources/{source}/sync"),
        None,
        "req-sync3",
        409,
    )
    .await;
    assert_eq!(no_sync["code"], "source_removed");
    assert_stored_with_metadata(
        &app,
        &[
            "TenantCreated",
            "MemberInvited",
            "SourceAdded",
            "SourceUpdated",
            "SourceRemoved",
            "SyncRequested",
            "SyncStarted",
            "SyncCompleted",
            "SyncFailed",
        ],
    )
    .await;
}

#[tokio::test]
async fn a_request_without_an_id_gets_one_and_it_is_stored() {
    let app = TestApp::spawn().await;
    let token = app.token("acme", Role::Admin, "alice");
    let response = app
        .post("/v1/tenant", &token, json!({"name": "Acme"}))
        .await;
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(uuid::Uuid::parse_str(&id).is_ok());
    let stored: Vec<String> = sqlx::query_scalar("SELECT DISTINCT correlation_id FROM events")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, [id]);
}

#[tokio::test]
async fn the_last_admin_cannot_leave_over_http() {
    let app = TestApp::spawn().await;
    let admin = app.create_tenant("acme", "alice").await;
    let (status, body) = app
        .call(
            Method::PUT,
            "/v1/tenant/members/alice/role",
            &admin,
            Some(json!({"role": "viewer"})),
        )
        .await;
    assert_eq!((status, body["code"].as_str()), (409, Some("last_admin")));
    let (status, body) = app
        .call(Method::DELETE, "/v1/tenant/members/alice", &admin, None)
        .await;
    assert_eq!((status, body["code"].as_str()), (409, Some("last_admin")));
}

#[tokio::test]
async fn feedback_on_an_answer_that_does_not_exist_is_404() {
    let app = TestApp::spawn().await;
    let admin = app.create_tenant("acme", "alice").await;
    let (conversation, _) = app.ask(&admin, "How do I export?").await;
    let (status, body) = app
        .call(
            Method::PUT,
            &format!(
                "/v1/conversations/{conversation}/answers/{}/feedback",
                uuid::Uuid::new_v4()
            ),
            &admin,
            Some(json!({"reaction": "upvote"})),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("answer_not_found"))
    );
}

struct FailingEngine;

#[async_trait::async_trait]
impl domain::engine::AnswerEngine for FailingEngine {
    async fn answer(
        &self,
        _: domain::engine::AnswerRequest,
        _: Option<std::sync::Arc<dyn domain::engine::ChunkSink>>,
    ) -> Result<domain::engine::EngineAnswer, domain::engine::EngineFailure> {
        Err(domain::engine::EngineFailure::new(
            domain::engine::FailureKind::Unavailable,
            "kapa answered 503",
        ))
    }
}

#[tokio::test]
async fn an_engine_failure_is_stored_and_answered_as_failed() {
    let app = TestApp::builder()
        .engine(std::sync::Arc::new(FailingEngine))
        .spawn()
        .await;
    let admin = app.create_tenant("acme", "alice").await;
    let (status, body) = app
        .call(
            Method::POST,
            "/v1/conversations",
            &admin,
            Some(json!({"question": "Hello there?"})),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(body["answer"]["status"], "failed");
    assert_eq!(body["answer"]["retryable"], true);
    let types: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM events WHERE aggregate_type = 'conversation' ORDER BY sequence",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(types, ["QuestionAsked", "AnswerFailed"]);
}
