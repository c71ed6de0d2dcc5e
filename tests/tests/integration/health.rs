//! Readiness: each dependency failing makes the service not ready, saying which.
use domain::Role;
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
async fn not_ready_when_this_process_streams_over_kafka_and_the_broker_does_not_answer() {
    let app = TestApp::builder()
        .configure(|s| {
            s.kafka.enabled = true;
            s.kafka.bootstrap_servers = "127.0.0.1:1".into();
            s.kafka.relay.in_process = true;
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

/// The chart's API pods run no relay and no projection (docs/deployment.md): a broker outage
/// must not take them out of rotation, since every command and read works without it.
#[tokio::test]
async fn an_api_process_without_streaming_stays_ready_while_the_broker_is_away() {
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
    assert_eq!(status, 200, "{body}");
    let admin = app.create_tenant("acme", "alice").await;
    app.ask(&admin, "Does this work without the broker?").await;
}

async fn details(app: &TestApp) -> Value {
    let response = app.operator_get("/health/details").await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

fn named<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .unwrap_or_else(|| panic!("{name} in {list}"))
}

#[tokio::test]
async fn details_show_each_dependency_and_the_read_side_lag_to_operators_only() {
    let app = TestApp::builder()
        .configure(|s| s.health.max_lag_events = 0)
        .spawn()
        .await;
    let (status, _) = app
        .call(
            Method::GET,
            "/health/details",
            &app.token("acme", Role::Admin, "alice"),
            None,
        )
        .await;
    assert!(matches!(status, 401 | 403), "{status}");
    let all = details(&app).await;
    assert_eq!(all["status"], "up", "{all}");
    assert!(all["uptime_seconds"].as_f64().unwrap() > 0.0);
    assert!(!all["version"].as_str().unwrap().is_empty());
    // What the process and its pools use now.
    let resources = &all["resources"];
    assert!(
        resources["resident_memory_bytes"].as_f64().unwrap() > 1e6,
        "{resources}"
    );
    assert!(resources["open_fds"].as_f64().unwrap() > 0.0, "{resources}");
    // Whole seconds, as the process collector counts them.
    assert!(
        resources["cpu_seconds"].as_f64().unwrap() >= 0.0,
        "{resources}"
    );
    let pools = resources["pools"].as_array().unwrap();
    let api = pools.iter().find(|p| p["name"] == "api").unwrap();
    assert_eq!(api["max"], app.settings.database.api_max_connections);
    assert_eq!(api["pending"], 0);
    let owner = pools.iter().find(|p| p["name"] == "owner").unwrap();
    assert_eq!(owner["max"], app.settings.database.max_connections);
    assert!(owner["open"].as_u64().unwrap() >= 1);
    let deps = &all["dependencies"];
    for name in ["postgres (owner)", "postgres (api role)", "redis"] {
        assert_eq!(named(deps, name)["status"], "up", "{name}");
        assert!(named(deps, name)["latency_ms"].as_f64().is_some());
    }
    assert_eq!(named(deps, "kafka")["status"], "disabled");
    // No breaker open yet: up when the Kapa engine is configured.
    let kapa = if app.settings.kapa.enabled {
        "up"
    } else {
        "disabled"
    };
    assert_eq!(named(deps, "kapa")["status"], kapa);
    assert_eq!(named(&all["projections"], "tenants")["status"], "ok");
    // Events no projection applies (no broker here): behind the threshold of 0.
    app.create_tenant("acme", "alice").await;
    let all = details(&app).await;
    assert_eq!(all["status"], "degraded", "{all}");
    let projection = projections::all()
        .into_iter()
        .find(|p| p.name() == "tenants")
        .unwrap();
    let types: Vec<String> = projection
        .aggregate_types()
        .iter()
        .map(|t| t.to_string())
        .collect();
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = ANY($1)")
            .bind(&types)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(stored > 0);
    let tenants = named(&all["projections"], "tenants");
    assert_eq!(
        (tenants["status"].as_str(), tenants["lag_events"].as_i64()),
        (Some("behind"), Some(stored))
    );
    // The database gone: down, and said so.
    app.pool.close().await;
    let all = details(&app).await;
    assert_eq!(all["status"], "down", "{all}");
    assert_eq!(
        named(&all["dependencies"], "postgres (owner)")["status"],
        "down"
    );
}
