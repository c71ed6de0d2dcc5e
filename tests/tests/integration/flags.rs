//! Feature flags end to end: evaluation for the signed-in user, tenant and operator overrides,
//! a real code path gated, exposures, usage reports and adoption.
use domain::Role;
use integration_tests::TestApp;
use reqwest::Method;
use serde_json::{json, Value};

async fn flags(app: &TestApp, token: &str) -> Value {
    let (status, body) = app.call(Method::GET, "/v1/flags", token, None).await;
    assert_eq!(status, 200, "{body}");
    body
}

fn flag<'a>(all: &'a Value, key: &str) -> &'a Value {
    all.as_array()
        .unwrap()
        .iter()
        .find(|f| f["key"] == key)
        .unwrap()
}

async fn operator(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = app
        .client
        .request(method, format!("{}{path}", app.address))
        .bearer_auth(&app.platform_token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn ask_streaming(app: &TestApp, token: &str) -> (u16, String) {
    let response = app
        .client
        .post(format!("{}/v1/conversations", app.address))
        .bearer_auth(token)
        .header("Accept", "text/event-stream")
        .json(&json!({"question": "How do I export my data?"}))
        .send()
        .await
        .unwrap();
    let content_type = response
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    (response.status().as_u16(), content_type)
}

#[tokio::test]
async fn a_tenant_override_gates_streaming_per_user_and_platform_flags_are_for_operators() {
    let app = TestApp::spawn().await;
    let admin = app.create_tenant("flags", "alice").await;
    let bob = app.token("flags", Role::Operator, "bob");
    let all = flags(&app, &bob).await;
    assert_eq!(flag(&all, "streaming-answers")["value"], true);
    assert_eq!(flag(&all, "streaming-answers")["reason"], "default");
    assert_eq!(
        ask_streaming(&app, &bob).await,
        (200, "text/event-stream".into())
    );

    // Off for the tenant except alice: bob's request for a stream gets the JSON answer.
    let (status, body) = app
        .call(
            Method::PUT,
            "/v1/tenant/feature-flags/streaming-answers",
            &admin,
            Some(json!({"enabled": false, "rollout_percentage": 0, "allow": ["alice"]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let all = flags(&app, &bob).await;
    assert_eq!(flag(&all, "streaming-answers")["value"], false);
    assert_eq!(flag(&all, "streaming-answers")["reason"], "off");
    assert_eq!(
        ask_streaming(&app, &bob).await,
        (201, "application/json".into())
    );
    assert_eq!(
        ask_streaming(&app, &admin).await,
        (200, "text/event-stream".into())
    );
    let all = flags(&app, &admin).await;
    assert_eq!(flag(&all, "streaming-answers")["reason"], "target_allow");

    // A platform-only flag: refused to the tenant's Admin, taken from an operator.
    let (status, body) = app
        .call(
            Method::PUT,
            "/v1/tenant/feature-flags/fallback-engine",
            &admin,
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("flag_not_tenant_controllable"))
    );
    let (status, body) = app.call(Method::GET, "/v1/admin/flags", &admin, None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("platform_only")),
        "a tenant's Admin never reaches the platform's routes"
    );
    let (status, body) = operator(
        &app,
        Method::PUT,
        "/v1/admin/tenants/flags/feature-flags/fallback-engine",
        Some(json!({"enabled": false})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let all = flags(&app, &bob).await;
    assert_eq!(flag(&all, "fallback-engine")["value"], false);
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE event_type = 'FeatureFlagSet' AND actor_id = 'platform-operator'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(audited, 1);
}

#[tokio::test]
async fn exposures_and_usage_reports_give_each_flags_adoption() {
    let app = TestApp::builder()
        .configure(|s| s.flags.usage_per_minute = 2)
        .spawn()
        .await;
    let admin = app.create_tenant("adoption", "alice").await;
    let bob = app.token("adoption", Role::Operator, "bob");
    for token in [&admin, &bob] {
        flags(&app, token).await;
    }
    let usage = |token: String| {
        let app = &app;
        async move {
            app.call(
                Method::POST,
                "/v1/flags/streaming-answers/usage",
                &token,
                Some(json!({"count": 3})),
            )
            .await
        }
    };
    assert_eq!(usage(admin.clone()).await.0, 204);
    assert_eq!(usage(admin.clone()).await.0, 204);
    let (status, body) = usage(admin.clone()).await;
    assert_eq!((status, body["code"].as_str()), (429, Some("rate_limited")));

    let (status, all) = operator(&app, Method::GET, "/v1/admin/flags", None).await;
    assert_eq!(status, 200, "{all}");
    let streaming = flag(&all, "streaming-answers");
    assert_eq!(streaming["exposed_users"]["on"], 2, "{streaming}");
    assert_eq!(streaming["evaluations"]["on"], 2);
    assert_eq!(streaming["users_who_used"], 1);
    assert_eq!(streaming["adoption"], 0.5);
    assert_eq!(streaming["stale"], false);
    let uses: i64 = sqlx::query_scalar("SELECT uses FROM flag_usage WHERE user_id = 'alice'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(uses, 6);
}
