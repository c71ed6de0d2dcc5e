//! Answer-quality objectives per tenant (docs/observability.md): tenant-adjustable targets, a
//! breach recorded once as an event and sent to the tenant's webhook, the recovery, the
//! platform's count of tenants in breach.
use std::time::Duration;

use domain::Role;
use integration_tests::{wait_for, TestApp};
use reqwest::Method;
use serde_json::{json, Value};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

async fn events_of(app: &TestApp, event_type: &str) -> Vec<Value> {
    sqlx::query_scalar::<_, Value>(
        "SELECT payload -> event_type FROM events WHERE event_type = $1 ORDER BY position",
    )
    .bind(event_type)
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

async fn vote(app: &TestApp, token: &str, conversation: &str, answer: &str, reaction: &str) {
    let (status, body) = app
        .call(
            Method::PUT,
            &format!("/v1/conversations/{conversation}/answers/{answer}/feedback"),
            token,
            Some(json!({"reaction": reaction})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

fn breached_tenants(metrics: &str) -> Option<f64> {
    integration_tests::metric_value(metrics, "answers_quality_breached_tenants", &[])
}

#[tokio::test]
async fn a_breach_is_recorded_once_sent_to_the_tenant_and_cleared_on_recovery() {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&receiver)
        .await;
    let app = TestApp::builder()
        .configure(|s| {
            s.quality.interval_ms = 200;
            s.webhooks.allow_private = true;
            s.webhooks.allow_http = true;
            s.webhooks.interval_ms = 100;
        })
        .streaming()
        .spawn()
        .await;
    let admin = app.create_tenant("quality-acme", "alice").await;
    let (status, body) = app
        .call(
            Method::POST,
            "/v1/tenant/webhooks",
            &admin,
            Some(json!({"url": receiver.uri(), "topics": ["quality.changed"]})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    // Small samples decide here; the default needs 20 votes.
    let (status, body) = app
        .call(
            Method::PUT,
            "/v1/tenant/quality-objectives",
            &admin,
            Some(json!({"helpful_rate": 0.8, "answered_rate": 0.5, "window_days": 7, "min_sample": 4})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // Four answers, three downvoted: 25 % helpful.
    let mut answers = Vec::new();
    for i in 0..4 {
        answers.push(app.ask(&admin, &format!("quality question {i}")).await);
    }
    for (i, (conversation, answer)) in answers.iter().enumerate() {
        let reaction = if i == 0 { "upvote" } else { "downvote" };
        vote(&app, &admin, conversation, answer, reaction).await;
    }
    let breach = wait_for("the breach recorded", Duration::from_secs(30), || async {
        events_of(&app, "QualityObjectiveBreached").await.pop()
    })
    .await;
    assert_eq!(breach["objective"], "helpful_rate");
    assert_eq!(breach["value"], 0.25);
    assert_eq!(breach["target"], 0.8);
    assert_eq!(breach["window_days"], 7);
    assert_eq!(breach["sample"], 4);
    // The tenant hears of it.
    let delivered = wait_for("the webhook", Duration::from_secs(30), || async {
        receiver
            .received_requests()
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap())
            .find(|b| b["type"] == "quality.changed")
    })
    .await;
    assert_eq!(delivered["data"]["event_type"], "QualityObjectiveBreached");
    assert_eq!(delivered["data"]["event"]["objective"], "helpful_rate");
    // Where it stands, for any member.
    let viewer = app.token("quality-acme", Role::Viewer, "victor");
    let quality = wait_for(
        "the breach in the read model",
        Duration::from_secs(30),
        || async {
            let (status, body) = app
                .call(Method::GET, "/v1/tenant/quality", &viewer, None)
                .await;
            assert_eq!(status, 200, "{body}");
            (body["measured"][0]["status"] == "breached").then_some(body)
        },
    )
    .await;
    assert_eq!(quality["measured"][0]["objective"], "helpful_rate");
    assert_eq!(quality["measured"][0]["good"], 1);
    assert_eq!(quality["measured"][0]["total"], 4);
    assert_eq!(quality["measured"][1]["objective"], "answered_rate");
    assert_eq!(quality["measured"][1]["status"], "met");
    assert_eq!(quality["objectives"]["min_sample"], 4);
    // The platform counts the tenant.
    let metrics = app.operator_get("/metrics").await.text().await.unwrap();
    assert_eq!(breached_tenants(&metrics), Some(1.0));
    // Viewers do not set objectives; nonsense targets are refused.
    let (status, _) = app
        .call(
            Method::PUT,
            "/v1/tenant/quality-objectives",
            &viewer,
            Some(json!({"helpful_rate": 0.1, "answered_rate": 0.1, "window_days": 7, "min_sample": 1})),
        )
        .await;
    assert_eq!(status, 403);
    let (status, problem) = app
        .call(
            Method::PUT,
            "/v1/tenant/quality-objectives",
            &admin,
            Some(json!({"helpful_rate": 1.5, "answered_rate": 0.1, "window_days": 7, "min_sample": 1})),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["code"], "invalid_settings");

    // Several rounds later the breach is still recorded once.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(events_of(&app, "QualityObjectiveBreached").await.len(), 1);

    // The downvotes become upvotes: recovered.
    for (conversation, answer) in &answers[1..] {
        vote(&app, &admin, conversation, answer, "upvote").await;
    }
    let recovered = wait_for("the recovery", Duration::from_secs(30), || async {
        events_of(&app, "QualityObjectiveRecovered").await.pop()
    })
    .await;
    assert_eq!(recovered["objective"], "helpful_rate");
    assert_eq!(recovered["value"], 1.0);
    wait_for("the count drops", Duration::from_secs(30), || async {
        let metrics = app.operator_get("/metrics").await.text().await.unwrap();
        (breached_tenants(&metrics) == Some(0.0)).then_some(())
    })
    .await;
}
