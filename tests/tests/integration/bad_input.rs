use integration_tests::spawn_app;
use reqwest::header::CONTENT_TYPE;
use serde_json::{json, Value};

#[tokio::test]
async fn malformed_oversized_empty_and_huge_input_is_a_4xx_problem_and_stores_nothing() {
    let app = spawn_app().await;
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
    let app = spawn_app().await;
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
    let app = spawn_app().await;
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
