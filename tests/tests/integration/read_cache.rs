//! The read cache (docs/read-cache.md): dashboard answers served from Redis while the read model
//! holds exactly what they were computed from, recomputed as soon as an event of the tenant is
//! applied or a rebuild swaps the model in, and computed uncached while Redis is down. Each test
//! runs a Redis of its own (`PrivateRedis`, a real `redis-server`), so that it can stop it.
use std::time::Duration;

use integration_tests::{metric_value, wait_for, PrivateRedis, TestApp};
use reqwest::Method;
use serde_json::Value;

async fn cached_app(redis: &PrivateRedis) -> TestApp {
    let url = redis.url();
    TestApp::builder()
        .embedded()
        .configure(move |s| {
            s.read_cache.redis_url = url;
            // Deterministic hits and misses: the pre-warmer is driven by hand where tested.
            s.read_cache.prewarm_lead_ms = 0;
        })
        .spawn()
        .await
}

/// The dashboard of `token`'s tenant over 7 days: (X-Cache, body).
/// The dashboard over a fixed window (yesterday to tomorrow, whole days): its key does not
/// change when the minute rolls over, as a relative window's does, so hits and misses depend
/// on the model's versions only.
async fn dashboard(app: &TestApp, token: &str) -> (String, Value) {
    let today = chrono::Utc::now().date_naive();
    let day = |d: chrono::NaiveDate| format!("{d}T00:00:00Z");
    let query = format!(
        "/v1/analytics?from={}&to={}",
        day(today - chrono::Duration::days(1)),
        day(today + chrono::Duration::days(1))
    );
    dashboard_at(app, token, &query).await
}

/// `path`'s answer and how it was served (`X-Cache`).
async fn dashboard_at(app: &TestApp, token: &str, path: &str) -> (String, Value) {
    let response = app.send(Method::GET, path, token, None).await;
    assert_eq!(response.status(), 200);
    let cache = response
        .headers()
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("absent")
        .to_string();
    (cache, response.json().await.unwrap())
}

fn answered(body: &Value) -> i64 {
    body["outcomes"]["answered"].as_i64().unwrap_or(-1)
        + body["outcomes"]["uncertain"].as_i64().unwrap_or(0)
}

/// Waits for the first dashboard showing `n` answered questions; returns how it was served.
async fn first_showing(app: &TestApp, token: &str, n: i64) -> (String, Value) {
    wait_for(
        "the dashboard to show the answers",
        Duration::from_secs(20),
        || async {
            let (cache, body) = dashboard(app, token).await;
            assert!(answered(&body) <= n, "{body}");
            (answered(&body) == n).then_some((cache, body))
        },
    )
    .await
}

/// Waits until the questions read model holds `n` questions.
async fn questions_applied(app: &TestApp, n: i64) {
    wait_for(
        "the questions to be applied",
        Duration::from_secs(20),
        || async {
            let questions: i64 = sqlx::query_scalar("SELECT count(*) FROM rm_questions")
                .fetch_one(&app.pool)
                .await
                .unwrap();
            (questions == n).then_some(())
        },
    )
    .await;
}

async fn lookups(app: &TestApp, result: &str) -> f64 {
    let text = app.operator_get("/metrics").await.text().await.unwrap();
    metric_value(
        &text,
        "answers_read_cache_lookups_total",
        &[("view", "analytics"), ("result", result)],
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn a_dashboard_is_served_from_the_cache_until_an_event_of_its_tenant_is_applied() {
    let redis = PrivateRedis::start();
    let app = cached_app(&redis).await;
    let acme = app.create_tenant("acme", "alice").await;
    let globex = app.create_tenant("globex", "bob").await;
    app.ask(&acme, "How do I export my data?").await;
    let (first, shown) = first_showing(&app, &acme, 1).await;
    assert_eq!(
        first, "miss",
        "computed at a version nobody asked for before"
    );
    let (again, cached) = dashboard(&app, &acme).await;
    assert_eq!(again, "hit");
    assert_eq!(cached, shown, "the cached answer is the computed one");

    // Another tenant's question changes nothing of acme's, and acme's answer is not globex's.
    app.ask(&globex, "How do I set up SSO?").await;
    let (globex_first, globex_body) = first_showing(&app, &globex, 1).await;
    assert_eq!(globex_first, "miss");
    assert_eq!(globex_body["totals"]["questions"], 1);
    assert_eq!(dashboard(&app, &acme).await.0, "hit");

    // An applied event of acme's: the next answer is computed again, and shows it.
    app.ask(&acme, "How do I export to CSV?").await;
    let (after, body) = first_showing(&app, &acme, 2).await;
    assert_eq!(
        after, "miss",
        "a cached answer older than the model was served"
    );
    assert_eq!(body["totals"]["questions"], 2);
    assert_eq!(dashboard(&app, &acme).await, ("hit".to_string(), body));
    assert!(lookups(&app, "hit").await >= 3.0);
    assert!(lookups(&app, "miss").await >= 3.0);
}

#[tokio::test]
async fn dashboards_are_computed_uncached_while_redis_is_down_and_cached_again_after() {
    let mut redis = PrivateRedis::start();
    let app = cached_app(&redis).await;
    let acme = app.create_tenant("acme", "alice").await;
    app.ask(&acme, "How do I export my data?").await;
    first_showing(&app, &acme, 1).await;
    assert_eq!(dashboard(&app, &acme).await.0, "hit");

    redis.stop();
    let (down, body) = dashboard(&app, &acme).await;
    assert_eq!(down, "miss", "computed without the cache");
    assert_eq!(answered(&body), 1);
    // New events are shown at once: nothing stale is served from anywhere.
    app.ask(&acme, "Which plans include billing exports?").await;
    let (_, body) = first_showing(&app, &acme, 2).await;
    assert_eq!(body["totals"]["questions"], 2);
    assert!(
        lookups(&app, "error").await >= 2.0,
        "the failed lookups are counted"
    );

    redis.restart();
    wait_for(
        "the cache to serve again",
        Duration::from_secs(15),
        || async { (dashboard(&app, &acme).await.0 == "hit").then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn a_rebuild_swapping_the_model_in_retires_the_cached_answers() {
    let redis = PrivateRedis::start();
    let app = cached_app(&redis).await;
    let acme = app.create_tenant("acme", "alice").await;
    app.ask(&acme, "How do I export my data?").await;
    let (_, shown) = first_showing(&app, &acme, 1).await;
    assert_eq!(dashboard(&app, &acme).await.0, "hit");

    let questions = projections::find("questions").unwrap();
    projections::rebuild(&app.pool, questions.as_ref())
        .await
        .unwrap();
    let (after, body) = dashboard(&app, &acme).await;
    assert_eq!(
        after, "miss",
        "the rebuilt model is read, not an answer from before"
    );
    assert_eq!(body, shown, "the same events give the same figures");
    assert_eq!(dashboard(&app, &acme).await.0, "hit");
}

#[tokio::test]
async fn concurrent_misses_of_one_dashboard_are_computed_once_and_shared() {
    let redis = PrivateRedis::start();
    let app = cached_app(&redis).await;
    let acme = app.create_tenant("acme", "alice").await;
    for i in 0..5 {
        app.ask(&acme, &format!("How do I export report {i}?"))
            .await;
    }
    first_showing(&app, &acme, 5).await;
    // A new event: the next answer is a miss, asked by eight readers at once.
    app.ask(&acme, "How do I export to CSV?").await;
    questions_applied(&app, 6).await;
    let answers = futures::future::join_all((0..8).map(|_| dashboard(&app, &acme))).await;
    let served: Vec<&str> = answers.iter().map(|(how, _)| how.as_str()).collect();
    assert_eq!(
        served.iter().filter(|how| **how == "miss").count(),
        1,
        "computed once: {served:?}"
    );
    assert!(
        served
            .iter()
            .all(|how| ["miss", "shared", "hit"].contains(how)),
        "{served:?}"
    );
    assert!(
        answers.iter().all(|(_, body)| *body == answers[0].1),
        "every reader got the same answer"
    );
    assert_eq!(answers[0].1["totals"]["questions"], 6);
}

#[tokio::test]
async fn the_pre_warmer_computes_a_dashboard_read_lately_before_its_reader_asks() {
    use answers_api::read_cache::{ReadCache, View};
    use answers_api::routes::analytics::{end_of_minute, prewarm, HotQueries, WindowQuery};
    let redis = PrivateRedis::start();
    let app = cached_app(&redis).await;
    let acme = app.create_tenant("acme", "alice").await;
    app.ask(&acme, "How do I export my data?").await;
    first_showing(&app, &acme, 1).await;
    // The reader's query is read lately; then an event moves the tenant's versions.
    let cache = ReadCache::new(&app.settings.read_cache).unwrap();
    let hot = HotQueries::new(true);
    let tenant: domain::TenantId = "acme".parse().unwrap();
    hot.note(
        &tenant,
        View::Analytics,
        &WindowQuery {
            range: Some("7d".into()),
            from: None,
            to: None,
            bucket: None,
            tz: None,
            format: None,
        },
    );
    app.ask(&acme, "How do I export to CSV?").await;
    questions_applied(&app, 2).await;
    // Pre-warmed for the minute we are in (the service does it for the next one), the reader's
    // first request is a hit showing the new question. Tried again if the minute rolls over.
    for _ in 0..3 {
        let minute = end_of_minute(chrono::Utc::now());
        let computed = prewarm(&app.tenant_pool, &cache, &hot, minute).await;
        let (served, body) = dashboard_at(&app, &acme, "/v1/analytics?range=7d").await;
        if end_of_minute(chrono::Utc::now()) != minute {
            continue;
        }
        assert_eq!(computed, 1);
        assert_eq!(served, "hit");
        assert_eq!(body["totals"]["questions"], 2, "never older than the model");
        assert_eq!(
            prewarm(&app.tenant_pool, &cache, &hot, minute).await,
            0,
            "what Redis holds is not computed again"
        );
        return;
    }
    panic!("three minutes rolled over during the test");
}
