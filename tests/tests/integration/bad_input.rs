use integration_tests::TestApp;
use reqwest::header::CONTENT_TYPE;
use serde_json::{json, Value};

#[tokio::test]
async fn malformed_oversized_empty_and_huge_input_is_a_4xx_problem_and_stores_nothing() {
    let app = TestApp::spawn().await;
    let admin = app.create_tenant("acme", "alice").await;
    let before = app.event_count().await;
    let url = format!("{}/v1/conversations", app.address);

    let raw_cases: Vec<(&str, String, &str, u16, &str)> = vec![
        (
            "malformed JSON",
            r#"{"question": "unterminated"#.to_string(),
            "application/json",
            400,
            "malformed_json",
        ),
        (
            "not JSON at all",
            "question=hi".to_string(),
            "application/json",
            400,
            "malformed_json",
        ),
        (
            "wrong content type",
            r#"{"question":"hi"}"#.to_string(),
            "text/plain",
            415,
            "unsupported_media_type",
        ),
        (
            "100 KB question",
            json!({"question": "x".repeat(100 * 1024)}).to_string(),
            "application/json",
            413,
            "payload_too_large",
        ),
        (
            "empty question",
            json!({"question": ""}).to_string(),
            "application/json",
            422,
            "invalid_question",
        ),
        (
            "blank question",
            json!({"question": "   \n "}).to_string(),
            "application/json",
            422,
            "invalid_question",
        ),
        (
            "a NUL character (Postgres cannot store it)",
            json!({"question": "before\u{0}after"}).to_string(),
            "application/json",
            422,
            "invalid_question",
        ),
        (
            "question over 4000 characters",
            json!({"question": "y".repeat(4001)}).to_string(),
            "application/json",
            422,
            "invalid_question",
        ),
        (
            "missing field",
            json!({}).to_string(),
            "application/json",
            422,
            "invalid_body",
        ),
        (
            "wrong type",
            json!({"question": 42}).to_string(),
            "application/json",
            422,
            "invalid_body",
        ),
        (
            "unknown field",
            json!({"question": "hi", "tenant_id": "other"}).to_string(),
            "application/json",
            422,
            "invalid_body",
        ),
    ];
    for (what, body, content_type, status, code) in raw_cases {
        let response = app
            .client
            .post(&url)
            .bearer_auth(&admin)
            .header(CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{what}");
        assert_eq!(
            response.headers()[CONTENT_TYPE],
            "application/problem+json",
            "{what}"
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], code, "{what}: {problem}");
        assert_eq!(problem["status"], status, "{what}");
        assert_eq!(problem["type"], format!("/problems/{code}"), "{what}");
    }
    assert_eq!(app.event_count().await, before, "nothing was stored");
}

#[tokio::test]
async fn bad_paths_and_unknown_routes_are_problems() {
    let app = TestApp::spawn().await;
    let admin = app.create_tenant("acme", "alice").await;
    let (status, problem) = app
        .call(
            reqwest::Method::POST,
            "/v1/conversations/not-a-uuid/resolve",
            &admin,
            None,
        )
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (400, Some("invalid_path"))
    );
    let (status, problem) = app
        .call(reqwest::Method::GET, "/v1/nothing-here", &admin, None)
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (404, Some("route_not_found"))
    );
    let (status, problem) = app
        .call(
            reqwest::Method::PUT,
            "/v1/tenant/feature-flags/beta",
            &admin,
            Some(json!({"enabled": true, "rollout_percentage": 300})),
        )
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (422, Some("invalid_body"))
    );
}

#[tokio::test]
async fn health_endpoints_answer_without_a_token() {
    let app = TestApp::spawn().await;
    for path in ["/health/live", "/health/ready"] {
        let response = app
            .client
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "{path}");
    }
}

/// The framework's own rejections are problems too: a query string that does not parse, a path
/// parameter of the wrong type, a method the path does not have (405 with `Allow`).
#[tokio::test]
async fn extractor_rejections_and_wrong_methods_are_problems() {
    let app = TestApp::spawn().await;
    let admin = app.create_tenant("acme", "alice").await;
    let cases: Vec<(reqwest::Method, &str, u16, &str)> = vec![
        (
            reqwest::Method::GET,
            "/v1/conversations?limit=many",
            400,
            "invalid_query",
        ),
        (
            reqwest::Method::GET,
            "/v1/conversations?uncertain=perhaps",
            400,
            "invalid_query",
        ),
        (
            reqwest::Method::GET,
            "/v1/audit/state/conversation/x",
            400,
            "invalid_query",
        ),
        (
            reqwest::Method::GET,
            "/v1/conversations/not-a-uuid",
            400,
            "invalid_path",
        ),
        (
            reqwest::Method::DELETE,
            "/v1/conversations",
            405,
            "method_not_allowed",
        ),
        (
            reqwest::Method::PUT,
            "/v1/sources/0191e4c2-0000-7000-8000-000000000000",
            405,
            "method_not_allowed",
        ),
        (
            reqwest::Method::POST,
            "/health/live",
            405,
            "method_not_allowed",
        ),
        (
            reqwest::Method::GET,
            "/v1/conversations/a/b/c/d",
            404,
            "route_not_found",
        ),
    ];
    for (method, path, status, code) in cases {
        let response = app.send(method.clone(), path, &admin, None).await;
        assert_eq!(response.status().as_u16(), status, "{method} {path}");
        assert_eq!(
            response.headers()[CONTENT_TYPE],
            "application/problem+json",
            "{method} {path}"
        );
        let allow = response
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().to_string());
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], code, "{method} {path}: {problem}");
        assert_eq!(problem["status"], status);
        match path {
            "/v1/conversations" => assert_eq!(allow.as_deref(), Some("GET, POST")),
            "/health/live" => assert_eq!(allow.as_deref(), Some("GET")),
            p if p.starts_with("/v1/sources/") => {
                assert_eq!(allow.as_deref(), Some("DELETE, GET, PATCH"))
            }
            _ => assert_eq!(allow, None, "{path}"),
        }
    }
}

/// Operations that serve every tenant need the platform credential: a tenant admin is refused.
#[tokio::test]
async fn platform_routes_take_the_platform_credential_and_no_tenant_token() {
    let app = TestApp::spawn().await;
    let admin = app.create_tenant("acme", "alice").await;
    let (status, problem) = app
        .call(reqwest::Method::GET, "/v1/admin/projections", &admin, None)
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (403, Some("platform_only"))
    );
    let (status, problem) = app
        .call(
            reqwest::Method::GET,
            "/v1/admin/projections",
            "not-the-credential",
            None,
        )
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (401, Some("platform_credential_invalid"))
    );
    let response = app
        .client
        .get(format!("{}/v1/admin/projections", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let (status, body) = app
        .call(
            reqwest::Method::GET,
            "/v1/admin/projections",
            &app.platform_token,
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["projections"].is_array());
    // The tenant's own dead letters stay the tenant admin's.
    let (status, _) = app
        .call(reqwest::Method::GET, "/v1/admin/dead-letters", &admin, None)
        .await;
    assert_eq!(status, 200);
}
