//! HTTP hardening (docs/security.md): security headers, CORS allow-list, request deadlines.
use std::sync::Arc;
use std::time::Duration;

use domain::Role;
use integration_tests::{SlowEngine, TestApp};
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn every_response_carries_security_headers_and_the_docs_page_a_strict_csp() {
    let app = TestApp::spawn().await;
    let token = app.token("acme", Role::Admin, "alice");
    let json_response = app.send(Method::GET, "/v1/auth/me", &token, None).await;
    let h = json_response.headers();
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(
        h["content-security-policy"],
        "default-src 'none'; frame-ancestors 'none'"
    );
    assert!(
        !h.contains_key("strict-transport-security"),
        "no HSTS unless served over TLS"
    );
    let problem = app.send(Method::GET, "/v1/nowhere", &token, None).await;
    assert_eq!(problem.headers()["x-content-type-options"], "nosniff");
    let docs = app
        .client
        .get(format!("{}/docs", app.address))
        .send()
        .await
        .unwrap();
    let csp = docs.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("frame-ancestors 'none'")
            && csp.contains("script-src https://cdn.jsdelivr.net 'sha256-"),
        "{csp}"
    );
    let script_src = csp
        .split(';')
        .find(|d| d.trim().starts_with("script-src"))
        .unwrap();
    assert!(
        !script_src.contains("unsafe-inline"),
        "scripts only by hash: {csp}"
    );

    let tls = TestApp::builder()
        .configure(|s| s.http.hsts = true)
        .spawn()
        .await;
    let r = tls
        .client
        .get(format!("{}/health/live", tls.address))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["strict-transport-security"],
        "max-age=31536000; includeSubDomains"
    );
}

#[tokio::test]
async fn cors_answers_only_the_configured_origins() {
    let app = TestApp::builder()
        .configure(|s| {
            s.http.cors_origins = "https://app.example.com, https://admin.example.com/".into()
        })
        .spawn()
        .await;
    let preflight = |origin: &'static str| {
        app.client
            .request(Method::OPTIONS, format!("{}/v1/conversations", app.address))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type, idempotency-key",
            )
            .send()
    };
    let allowed = preflight("https://admin.example.com").await.unwrap();
    assert!(allowed.status().is_success());
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://admin.example.com"
    );
    assert_eq!(
        allowed.headers()["access-control-allow-credentials"],
        "true"
    );
    let refused = preflight("https://evil.example.com").await.unwrap();
    assert!(!refused
        .headers()
        .contains_key("access-control-allow-origin"));
    let token = app.token("acme", Role::Admin, "alice");
    let simple = app
        .client
        .get(format!("{}/v1/auth/me", app.address))
        .bearer_auth(&token)
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(
        simple.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let exposed = simple.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        exposed.contains("ratelimit") && exposed.contains("retry-after"),
        "{exposed}"
    );
}

#[tokio::test]
async fn a_request_that_runs_too_long_ends_with_a_503_problem() {
    let app = TestApp::builder()
        .engine(Arc::new(SlowEngine(Duration::from_secs(3))))
        .configure(|s| s.http.request_timeout_ms = 300)
        .spawn()
        .await;
    let token = app.create_tenant("acme", "alice").await;
    let started = std::time::Instant::now();
    let (status, body) = app
        .call(
            Method::POST,
            "/v1/conversations",
            &token,
            Some(json!({"question": "slow?"})),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("request_timed_out")),
        "{body}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn postgres_cancels_a_statement_past_its_timeout() {
    let app = TestApp::builder()
        .configure(|s| {
            s.database.statement_timeout_ms = 200;
            s.database.api_statement_timeout_ms = 300;
        })
        .spawn()
        .await;
    // Each role its own: the owner's pool and the API's.
    let owner: String = sqlx::query_scalar("SHOW statement_timeout")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let api: String = sqlx::query_scalar("SHOW statement_timeout")
        .fetch_one(app.tenant_pool.unscoped())
        .await
        .unwrap();
    assert_eq!((owner.as_str(), api.as_str()), ("200ms", "300ms"));
    for pool in [&app.pool, app.tenant_pool.unscoped()] {
        let error = sqlx::query("SELECT pg_sleep(1)")
            .execute(pool)
            .await
            .unwrap_err();
        let code = error
            .as_database_error()
            .and_then(|e| e.code())
            .unwrap_or_default();
        assert_eq!(code, "57014", "query_canceled: {error}");
    }
}
