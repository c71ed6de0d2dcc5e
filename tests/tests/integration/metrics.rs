//! Prometheus metrics (docs/metrics.md), scraped from `/metrics` as Prometheus would.
use domain::Role;
use integration_tests::TestApp;
use reqwest::Method;
use serde_json::json;
use uuid::Uuid;

/// Scrapes `/metrics` with the platform operator credential.
async fn scrape(app: &TestApp) -> String {
    let response = app.operator_get("/metrics").await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    response.text().await.unwrap()
}

use integration_tests::metric_value as value;

fn series(text: &str, name: &str) -> usize {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .count()
}

#[tokio::test]
async fn requests_are_counted_by_route_template_method_status_class_and_problem_code() {
    let app = TestApp::spawn().await;
    // Operators only.
    let anonymous = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let token = app.token("acme", Role::Admin, "alice");
    let mut ids = Vec::new();
    for _ in 0..3 {
        let id = Uuid::now_v7();
        ids.push(id);
        let (status, _) = app
            .call(
                Method::GET,
                &format!("/v1/conversations/{id}"),
                &token,
                None,
            )
            .await;
        assert_eq!(status, 404);
    }
    for _ in 0..2 {
        let (status, _) = app
            .call(Method::GET, "/v1/tenant/webhooks", &token, None)
            .await;
        assert_eq!(status, 200);
    }
    let text = scrape(&app).await;
    let route = [("route", "/v1/conversations/{id}"), ("method", "GET")];
    assert_eq!(
        value(
            &text,
            "http_requests_total",
            &[route[0], route[1], ("status_class", "4xx")]
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "http_requests_total",
            &[("route", "/v1/tenant/webhooks"), ("status_class", "2xx")]
        ),
        Some(2.0)
    );
    assert_eq!(
        value(&text, "http_request_duration_seconds_count", &route),
        Some(3.0)
    );
    assert_eq!(
        value(
            &text,
            "http_problems_total",
            &[("code", "conversation_not_found")]
        ),
        Some(3.0)
    );
    // Never the raw path: one series per route, whatever the ids.
    for id in ids {
        assert!(!text.contains(&id.to_string()), "a raw path in the metrics");
    }
    assert_eq!(
        value(
            &text,
            "answers_tenant_requests_total",
            &[("tenant", "acme")]
        ),
        Some(5.0)
    );
    // The scrape itself is in flight while it is rendered.
    assert_eq!(value(&text, "http_requests_in_flight", &[]), Some(1.0));
    for pool in ["owner", "api"] {
        assert!(
            value(&text, "db_pool_connections", &[("pool", pool)]).is_some_and(|v| v >= 1.0),
            "{pool} pool"
        );
        assert!(value(&text, "db_pool_idle_connections", &[("pool", pool)]).is_some());
    }
    // (CPU is counted in whole seconds by the collector: present, maybe 0 this early.)
    assert!(value(&text, "process_cpu_seconds_total", &[]).is_some());
    for process in ["process_resident_memory_bytes", "process_open_fds"] {
        assert!(
            value(&text, process, &[]).is_some_and(|v| v > 0.0),
            "{process}"
        );
    }
    // Help text on every metric.
    for name in [
        "http_requests_total",
        "http_request_duration_seconds",
        "http_requests_in_flight",
        "http_problems_total",
        "answers_tenant_requests_total",
        "db_pool_connections",
    ] {
        assert!(text.contains(&format!("# HELP {name} ")), "{name} has help");
    }
}

#[tokio::test]
async fn tenant_labels_are_capped_so_many_tenants_cannot_explode_the_series() {
    let app = TestApp::builder()
        .configure(|s| s.metrics.tenant_label_cap = 5)
        .spawn()
        .await;
    for n in 0..12 {
        let token = app.token(&format!("tenant-{n}"), Role::Admin, "alice");
        let (status, _) = app
            .call(Method::GET, "/v1/tenant/webhooks", &token, None)
            .await;
        assert_eq!(status, 200);
    }
    let text = scrape(&app).await;
    assert_eq!(series(&text, "answers_tenant_requests_total"), 6, "{text}");
    assert_eq!(
        value(
            &text,
            "answers_tenant_requests_total",
            &[("tenant", "other")]
        ),
        Some(7.0)
    );
    for n in 0..5 {
        assert_eq!(
            value(
                &text,
                "answers_tenant_requests_total",
                &[("tenant", &format!("tenant-{n}"))]
            ),
            Some(1.0)
        );
    }
}

#[tokio::test]
async fn questions_and_rate_limit_refusals_are_counted_per_tenant() {
    let app = TestApp::builder()
        .configure(|s| s.rate_limits.questions_per_user_per_minute = 2)
        .spawn()
        .await;
    let token = app.create_tenant("acme", "alice").await;
    let mut refused = 0;
    for n in 0..3 {
        let response = app
            .post(
                "/v1/conversations",
                &token,
                json!({"question": format!("How do I export, take {n}?")}),
            )
            .await;
        if response.status() == 429 {
            refused += 1;
        }
    }
    assert_eq!(refused, 1);
    let text = scrape(&app).await;
    assert_eq!(
        value(
            &text,
            "answers_tenant_questions_total",
            &[("tenant", "acme")]
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            &text,
            "answers_tenant_rate_limited_total",
            &[("tenant", "acme")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "http_problems_total", &[("code", "rate_limited")]),
        Some(1.0)
    );
    // No broker in this test, so no projection runs: the questions' events are its lag.
    let lag = value(
        &text,
        "answers_projection_lag_events",
        &[("projection", "conversations")],
    )
    .unwrap();
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = 'conversation'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(stored > 0);
    assert_eq!(lag, stored as f64);
    assert_eq!(
        value(
            &text,
            "answers_projection_applied_events",
            &[("projection", "conversations")]
        ),
        Some(0.0)
    );
}

/// Answers every other question, fails the rest as unavailable.
#[derive(Default)]
struct FlakyEngine(std::sync::atomic::AtomicUsize);

#[async_trait::async_trait]
impl domain::engine::AnswerEngine for FlakyEngine {
    async fn answer(
        &self,
        request: domain::engine::AnswerRequest,
        chunks: Option<std::sync::Arc<dyn domain::engine::ChunkSink>>,
    ) -> Result<domain::engine::EngineAnswer, domain::engine::EngineFailure> {
        if self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst) % 2 == 1 {
            return Err(domain::engine::EngineFailure {
                kind: domain::engine::FailureKind::Unavailable,
                reason: "down for the test".into(),
                retryable: true,
            });
        }
        commands::LocalAnswerEngine.answer(request, chunks).await
    }
}

#[tokio::test]
async fn engine_calls_are_counted_by_outcome_and_timed_and_answers_by_status() {
    let app = TestApp::builder()
        .engine(std::sync::Arc::new(FlakyEngine::default()))
        .spawn()
        .await;
    let token = app.create_tenant("acme", "alice").await;
    let mut statuses = Vec::new();
    for n in 0..4 {
        let response = app
            .post(
                "/v1/conversations",
                &token,
                json!({"question": format!("How do I export, take {n}?")}),
            )
            .await;
        let body: serde_json::Value = response.json().await.unwrap();
        statuses.push(body["answer"]["status"].as_str().unwrap().to_string());
    }
    let answered = statuses.iter().filter(|s| *s == "answered").count() as f64;
    let failed = statuses.iter().filter(|s| *s == "failed").count() as f64;
    assert_eq!((answered, failed), (2.0, 2.0), "{statuses:?}");
    let text = scrape(&app).await;
    let engine = [("engine", "local")];
    assert_eq!(
        value(
            &text,
            "answer_engine_calls_total",
            &[engine[0], ("outcome", "answered")]
        ),
        Some(answered)
    );
    assert_eq!(
        value(
            &text,
            "answer_engine_calls_total",
            &[engine[0], ("outcome", "unavailable")]
        ),
        Some(failed)
    );
    assert_eq!(
        value(&text, "answer_engine_latency_seconds_count", &engine),
        Some(4.0)
    );
    assert_eq!(
        value(&text, "answers_answers_total", &[("status", "answered")]),
        Some(answered)
    );
    assert_eq!(
        value(&text, "answers_answers_total", &[("status", "failed")]),
        Some(failed)
    );
    // Per tenant, under the capped label.
    let tenant = [("tenant", "acme")];
    assert_eq!(
        value(&text, "answers_tenant_engine_calls_total", &tenant),
        Some(4.0)
    );
    assert_eq!(
        value(&text, "answers_tenant_engine_failures_total", &tenant),
        Some(failed)
    );
    // Nothing is waiting for the API's pool once the requests are answered.
    assert_eq!(value(&text, "db_pool_pending_acquires", &[]), Some(0.0));
}

#[tokio::test]
async fn metrics_off_count_nothing_and_the_route_says_so() {
    let app = TestApp::builder()
        .configure(|s| s.metrics.enabled = false)
        .spawn()
        .await;
    let token = app.create_tenant("acme", "alice").await;
    let asked = app
        .post(
            "/v1/conversations",
            &token,
            json!({"question": "How do I export?"}),
        )
        .await;
    assert_eq!(asked.status(), 201);
    let response = app.operator_get("/metrics").await;
    assert_eq!(response.status(), 404);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "route_not_found");
}

#[tokio::test]
async fn the_command_side_counts_appends_replays_store_round_trips_and_objective_events() {
    let app = TestApp::spawn().await;
    let admin = app.create_tenant("acme", "alice").await;
    let source = json!({"kind": "docs", "name": "Docs", "location": "https://docs.test"});
    let mut ids = Vec::new();
    for _ in 0..2 {
        let response = app
            .client
            .post(format!("{}/v1/sources", app.address))
            .bearer_auth(&admin)
            .header("Idempotency-Key", "add-docs-once")
            .json(&source)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let body: serde_json::Value = response.json().await.unwrap();
        ids.push(body["id"].as_str().unwrap().to_string());
    }
    assert_eq!(
        ids[0], ids[1],
        "the retry was answered from the first request"
    );
    let text = scrape(&app).await;
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = 'knowledge_source'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        value(
            &text,
            "answers_event_store_appended_events_total",
            &[("aggregate", "knowledge_source")]
        ),
        Some(stored as f64)
    );
    assert_eq!(
        value(
            &text,
            "answers_idempotent_replays_total",
            &[("aggregate", "knowledge_source")]
        ),
        Some(1.0)
    );
    let commits = value(
        &text,
        "answers_event_store_duration_seconds_count",
        &[("operation", "commit")],
    );
    // The tenant's creation and the source's first request; the replay committed nothing.
    assert_eq!(commits, Some(2.0), "{text}");
    // Objective events, judged as the Postgres indicators are: three commands so far.
    assert_eq!(
        value(
            &text,
            "answers_sli_events_total",
            &[("sli", "commands_availability")]
        ),
        Some(3.0)
    );
    assert_eq!(
        value(
            &text,
            "answers_sli_good_events_total",
            &[("sli", "commands_availability")]
        ),
        Some(3.0)
    );
    assert_eq!(
        value(&text, "answers_slo_target_ratio", &[("sli", "latency")]),
        Some(0.95)
    );
}

#[tokio::test]
async fn a_running_rebuild_shows_its_progress_and_a_finished_one_none() {
    let app = TestApp::spawn().await;
    let admin = app.create_tenant("acme", "alice").await;
    app.ask(&admin, "Something to rebuild").await;
    // A rebuild a quarter of the way through (as its batches record it).
    sqlx::query(
        "INSERT INTO projection_status (projection, rebuild_started_at, rebuild_target,
                                        rebuild_position, rebuild_applied)
         VALUES ('audit', now(), 200, 50, 40)
         ON CONFLICT (projection) DO UPDATE SET rebuild_started_at = now(), rebuild_target = 200,
           rebuild_position = 50, rebuild_applied = 40",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let status: serde_json::Value = app
        .operator_get("/v1/admin/projections")
        .await
        .json()
        .await
        .unwrap();
    let audit = status["projections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["projection"] == "audit")
        .unwrap()
        .clone();
    assert_eq!(audit["rebuild"]["progress"], 0.25, "{audit}");
    assert_eq!(audit["rebuild"]["applied_events"], 40);
    assert_eq!(audit["rebuild"]["target_position"], 200);
    let text = scrape(&app).await;
    assert_eq!(
        value(
            &text,
            "answers_projection_rebuild_progress_ratio",
            &[("projection", "audit")]
        ),
        Some(0.25)
    );
    // A real rebuild runs, swaps and leaves no progress behind.
    let response = app
        .client
        .post(format!(
            "{}/v1/admin/projections/audit/rebuild",
            app.address
        ))
        .bearer_auth(&app.platform_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    integration_tests::wait_for(
        "the rebuild swapped in",
        std::time::Duration::from_secs(30),
        || async {
            let done: Option<(Option<chrono::DateTime<chrono::Utc>>, Option<i64>)> = sqlx::query_as(
            "SELECT rebuilt_at, rebuild_position FROM projection_status WHERE projection = 'audit'",
        )
        .fetch_optional(&app.pool)
        .await
        .unwrap();
            matches!(done, Some((Some(_), None))).then_some(())
        },
    )
    .await;
    let text = scrape(&app).await;
    assert_eq!(
        value(
            &text,
            "answers_projection_rebuild_progress_ratio",
            &[("projection", "audit")]
        ),
        None
    );
}
