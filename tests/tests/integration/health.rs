//! Readiness: each dependency failing makes the service not ready, saying which.
use integration_tests::TestApp;
use reqwest::Method;
use serde_json::Value;

async fn ready(app: &TestApp) -> (u16, Value) {
    app.call(Method::GET, "/health/ready", "", None).await
}

#[tokio::test]
async fn ready_until_a_migration_is_missing() {
    let app = TestApp::spawn().await;
    assert_eq!(ready(&app).await.0, 200);
    sqlx::query(
        "DELETE FROM _sqlx_migrations WHERE version = (SELECT max(version) FROM _sqlx_migrations)",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let (status, body) = ready(&app).await;
    assert_eq!((status, body["code"].as_str()), (503, Some("not_ready")));
    assert_eq!(body["detail"], "not ready: migrations", "{body}");
}

#[tokio::test]
async fn not_ready_when_the_database_does_not_answer() {
    let app = TestApp::spawn().await;
    // The owner's pool closed: nothing of it answers any more.
    app.pool.close().await;
    let (status, body) = ready(&app).await;
    assert_eq!(status, 503, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("database (owner)"), "{detail}");
    // Named, not explained: the causes are in the log, not in an anonymous answer.
    assert!(!detail.contains("closed"), "{detail}");
}

#[tokio::test]
async fn not_ready_when_kafka_is_the_transport_and_the_broker_does_not_answer() {
    let app = TestApp::builder()
        .configure(|s| {
            s.kafka.enabled = true;
            s.kafka.bootstrap_servers = "127.0.0.1:1".into();
            s.kafka.relay.in_process = false;
            s.kafka.projections_in_process = false;
        })
        .spawn()
        .await;
    let (status, body) = ready(&app).await;
    assert_eq!(
        (status, body["detail"].as_str()),
        (503, Some("not ready: broker")),
        "{body}"
    );
}
