//! Service level indicators recorded in Postgres and the operator routes over them
//! (docs/observability.md): objectives with error budgets and burn rates, health trends.
use std::time::Duration;

use domain::Role;
use integration_tests::{wait_for, TestApp};
use reqwest::Method;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

/// Adds `good`/`total` to `series` in the minute `ago` before now.
async fn plant(pool: &PgPool, series: &str, ago: &str, good: i64, total: i64) {
    sqlx::query(
        "INSERT INTO sli_minutes (series, minute, good, total)
         VALUES ($1, date_trunc('minute', now()) - $2::interval, $3, $4)",
    )
    .bind(series)
    .bind(ago)
    .bind(good)
    .bind(total)
    .execute(pool)
    .await
    .unwrap();
}

async fn operator_json(app: &TestApp, path: &str) -> (u16, Value) {
    let response = app.operator_get(path).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn objective<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["objectives"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == name)
        .unwrap_or_else(|| panic!("{name} in {report}"))
}

fn close(actual: &Value, expected: f64) -> bool {
    actual.as_f64().is_some_and(|a| (a - expected).abs() < 1e-9)
}

/// An app that never flushes during the test: what the routes show is exactly what was
/// planted.
async fn quiet_app() -> TestApp {
    TestApp::builder()
        .configure(|s| s.slo.flush_interval_ms = 3_600_000)
        .spawn()
        .await
}

#[tokio::test]
async fn objectives_show_the_budget_left_and_the_burn_rates_over_each_window() {
    let app = quiet_app().await;
    // Commands: one error in the last hour out of 20,000 in the window; a bad minute 40 days
    // ago lies outside the 30-day window.
    plant(&app.pool, "commands_availability", "30 minutes", 999, 1000).await;
    plant(&app.pool, "commands_availability", "2 days", 10_000, 10_000).await;
    plant(&app.pool, "commands_availability", "10 days", 9_000, 9_000).await;
    plant(&app.pool, "commands_availability", "40 days", 0, 1_000).await;
    // Reads: 2 % errors in the last ten minutes (20x the budgeted rate) over a good month.
    plant(&app.pool, "reads_availability", "10 minutes", 980, 1000).await;
    plant(&app.pool, "reads_availability", "20 days", 99_000, 99_000).await;
    // Latency: more slow requests than the whole budget allows.
    plant(&app.pool, "latency", "5 hours", 500, 1000).await;

    let (status, report) = operator_json(&app, "/v1/platform/slos").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["window_days"], 30);

    let commands = objective(&report, "commands_availability");
    assert_eq!(commands["target"], 0.999);
    assert_eq!(commands["good"], 19_999);
    assert_eq!(commands["total"], 20_000);
    assert!(
        close(&commands["current"], 19_999.0 / 20_000.0),
        "{commands}"
    );
    // 1 bad of the 20 allowed.
    assert!(
        close(&commands["error_budget_remaining"], 0.95),
        "{commands}"
    );
    assert!(
        close(&commands["burn_rates"]["one_hour"], 1.0),
        "{commands}"
    );
    assert!(
        close(&commands["burn_rates"]["six_hours"], 1.0),
        "{commands}"
    );
    assert!(
        close(
            &commands["burn_rates"]["three_days"],
            1.0 / 11_000.0 / 0.001
        ),
        "{commands}"
    );
    assert_eq!(commands["status"], "ok");

    let reads = objective(&report, "reads_availability");
    assert!(close(&reads["burn_rates"]["one_hour"], 20.0), "{reads}");
    // 20 bad of the 100 allowed.
    assert!(close(&reads["error_budget_remaining"], 0.8), "{reads}");
    assert_eq!(reads["status"], "burning");

    let latency = objective(&report, "latency");
    assert_eq!(latency["burn_rates"]["one_hour"], Value::Null, "no events");
    assert!(
        close(&latency["burn_rates"]["six_hours"], 10.0),
        "{latency}"
    );
    assert!(close(&latency["error_budget_remaining"], -9.0), "{latency}");
    assert_eq!(latency["status"], "exhausted");

    let freshness = objective(&report, "freshness");
    assert_eq!(freshness["target"], 0.99);
    // Nothing flushed during the test: no sample, the budget untouched, no burn rate.
    assert_eq!(freshness["total"], 0, "{freshness}");
    assert!(
        close(&freshness["error_budget_remaining"], 1.0),
        "{freshness}"
    );
    assert_eq!(freshness["current"], Value::Null);
    assert_eq!(freshness["status"], "ok");

    // Operators only.
    let token = app.token("acme", Role::Admin, "alice");
    let (status, problem) = app
        .call(Method::GET, "/v1/platform/slos", &token, None)
        .await;
    assert!(matches!(status, 401 | 403), "{status} {problem}");
}

#[tokio::test]
async fn requests_engine_calls_and_server_errors_are_recorded_per_minute_by_every_instance() {
    let app = TestApp::builder()
        .configure(|s| s.slo.flush_interval_ms = 100)
        .spawn()
        .await;
    let token = app.create_tenant("acme", "alice").await;
    for i in 0..3 {
        app.ask(&token, &format!("question {i}")).await;
    }
    for _ in 0..4 {
        let (status, _) = app
            .call(
                Method::GET,
                &format!("/v1/conversations/{}", Uuid::now_v7()),
                &token,
                None,
            )
            .await;
        assert_eq!(status, 404);
    }
    // No route: counts for no objective.
    let (status, _) = app
        .call(Method::GET, "/v1/no-such-thing", &token, None)
        .await;
    assert_eq!(status, 404);
    // Two server errors: the read model is taken from the API's role.
    sqlx::query("REVOKE SELECT ON rm_conversations FROM answers_api")
        .execute(&app.pool)
        .await
        .unwrap();
    for _ in 0..2 {
        let (status, body) = app
            .call(Method::GET, "/v1/conversations", &token, None)
            .await;
        assert!(status >= 500, "{status} {body}");
    }
    // Commands: the tenant and three questions; reads: four 404s and two server errors.
    let tally = |series: &'static str| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_as::<_, (i64, i64)>(
                "SELECT coalesce(sum(good), 0)::bigint, coalesce(sum(total), 0)::bigint
                   FROM sli_minutes WHERE series = $1",
            )
            .bind(series)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    wait_for("every request flushed", Duration::from_secs(15), || async {
        let commands = tally("commands_availability").await;
        let reads = tally("reads_availability").await;
        (commands.1 == 4 && reads.1 == 6).then_some(())
    })
    .await;
    assert_eq!(tally("commands_availability").await, (4, 4));
    assert_eq!(tally("reads_availability").await, (4, 6));
    // Latency leaves the three questions (they wait for the engine) out.
    let latency = tally("latency").await;
    assert_eq!(latency.1, 4 - 3 + 6, "{latency:?}");
    assert_eq!(tally("engine_availability").await, (3, 3));
    let freshness = tally("freshness").await;
    assert!(freshness.1 >= 1, "the read side is sampled: {freshness:?}");
    let http: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(x), 0)::bigint FROM distribution_minutes, unnest(counts) AS x
          WHERE series = 'http_latency_seconds'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(http, latency.1, "one latency observation per request timed");

    let (status, report) = operator_json(&app, "/v1/platform/slos").await;
    assert_eq!(status, 200, "{report}");
    let reads = objective(&report, "reads_availability");
    assert!(reads["total"].as_i64().unwrap() >= 6, "{reads}");
    assert!(reads["total"].as_i64().unwrap() - reads["good"].as_i64().unwrap() == 2);

    let (status, trends) = operator_json(&app, "/v1/platform/health/trends").await;
    assert_eq!(status, 200, "{trends}");
    let points = trends["points"].as_array().unwrap();
    assert_eq!(points.len(), 24, "hourly points over a day");
    assert_eq!(trends["step_seconds"], 3600);
    let last = points.last().unwrap();
    assert!(last["requests"].as_i64().unwrap() >= 10, "{last}");
    assert!(last["error_rate"].as_f64().unwrap() > 0.0, "{last}");
    assert!(last["latency_p95_ms"].as_f64().unwrap() > 0.0, "{last}");
    assert_eq!(last["engine_calls"], 3);
    assert_eq!(last["engine_error_rate"], 0.0);
    assert!(last["engine_latency_p95_ms"].as_f64().is_some(), "{last}");
    assert!(last["freshness"].as_f64().is_some(), "{last}");
    assert!(points[0]["requests"] == 0 && points[0]["error_rate"].is_null());
}

#[tokio::test]
async fn trends_sum_minutes_into_periods_and_refuse_an_unreadable_distribution() {
    let app = quiet_app().await;
    // Two minutes of one hourly period (periods end at the next minute boundary, so 3 h 30
    // and 3 h 31 before this minute share one): 100 commands, 2 errors; latencies: 90 in
    // the 10-25 ms bucket, 10 in the 250-500 ms one.
    for ago in ["3 hours 30 minutes", "3 hours 31 minutes"] {
        plant(&app.pool, "commands_availability", ago, 49, 50).await;
    }
    let bounds = answers_api::metrics::LATENCY_BUCKETS;
    let mut planted = vec![0i64; bounds.len() + 1];
    planted[bounds.iter().position(|b| *b == 0.025).unwrap()] = 90;
    planted[bounds.iter().position(|b| *b == 0.5).unwrap()] = 10;
    sqlx::query(
        "INSERT INTO distribution_minutes (series, minute, counts, sum, max)
         VALUES ('http_latency_seconds',
                 date_trunc('minute', now()) - interval '3 hours 30 minutes', $1, 5.0, 0.42)",
    )
    .bind(&planted)
    .execute(&app.pool)
    .await
    .unwrap();

    let (status, trends) = operator_json(&app, "/v1/platform/health/trends?range=24h").await;
    assert_eq!(status, 200, "{trends}");
    let busy: Vec<&Value> = trends["points"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["requests"].as_i64().unwrap_or(0) > 0)
        .collect();
    assert_eq!(busy.len(), 1, "{trends}");
    let point = busy[0];
    assert_eq!(point["requests"], 100);
    assert!(close(&point["error_rate"], 0.02), "{point}");
    assert!(
        close(&point["requests_per_second"], 100.0 / 3600.0),
        "{point}"
    );
    // p95: rank 95 of 100 falls in the 250-500 ms bucket, half way through its 10.
    let p95 = point["latency_p95_ms"].as_f64().unwrap();
    assert!((p95 - 375.0).abs() < 1e-6, "{p95}");

    for range in ["7d", "30d"] {
        let (status, trends) =
            operator_json(&app, &format!("/v1/platform/health/trends?range={range}")).await;
        assert_eq!(status, 200, "{trends}");
        let points = trends["points"].as_array().unwrap();
        assert_eq!(points.len(), if range == "7d" { 28 } else { 30 });
        let requests: i64 = points.iter().map(|p| p["requests"].as_i64().unwrap()).sum();
        assert_eq!(requests, 100, "{range}");
    }
    let (status, problem) = operator_json(&app, "/v1/platform/health/trends?range=1y").await;
    assert_eq!(status, 400, "{problem}");

    // A row with another bucket layout is an error, not a silently wrong figure.
    sqlx::query(
        "INSERT INTO distribution_minutes (series, minute, counts, sum, max)
         VALUES ('http_latency_seconds', date_trunc('minute', now() - interval '2 hours'), '{1,2,3}', 1.0, 1.0)",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let (status, problem) = operator_json(&app, "/v1/platform/health/trends").await;
    assert_eq!(status, 500, "{problem}");
    assert_eq!(problem["code"], "stored_data_unreadable");
}

#[tokio::test]
async fn slo_routes_are_not_found_when_recording_is_off() {
    let app = TestApp::builder()
        .configure(|s| s.slo.enabled = false)
        .spawn()
        .await;
    let token = app.create_tenant("acme", "alice").await;
    app.ask(&token, "recorded nowhere").await;
    for path in ["/v1/platform/slos", "/v1/platform/health/trends"] {
        let (status, problem) = operator_json(&app, path).await;
        assert_eq!(status, 404, "{problem}");
        assert_eq!(problem["code"], "route_not_found");
    }
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM sli_minutes")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(rows, 0);
}
