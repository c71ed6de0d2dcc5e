//! No API key in the logs. A test binary of its own: it installs the process-wide subscriber
//! (JSON, every level, every crate, reqwest and hyper included), drives the Kapa paths that
//! touch the key (asking, retrying, a refused key, streaming, feedback forwarding) and
//! searches everything logged for the key.
use std::time::Duration;

use integration_tests::logs::CapturedLogs;
use integration_tests::{wait_for, TestApp};
use reqwest::Method;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const KEY: &str = "sk-live-LOGSECRET-9f8e7d6c5b4a";

#[tokio::test]
async fn the_kapa_api_key_never_appears_in_any_log_line() {
    let captured = CapturedLogs::install();

    let kapa = MockServer::start().await;
    Mock::given(path("/query/v1/projects/p1/chat/"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .mount(&kapa)
        .await;
    Mock::given(path("/query/v1/projects/p1/chat/"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"detail": "bad key"})))
        .up_to_n_times(1)
        .mount(&kapa)
        .await;
    Mock::given(path("/query/v1/projects/p1/chat/"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "answer": "ok", "thread_id": "t", "question_answer_id": "qa"})))
        .mount(&kapa)
        .await;
    Mock::given(path("/query/v1/projects/p1/chat/stream/"))
        .respond_with(ResponseTemplate::new(200).set_body_string(format!(
            "{}\u{241E}{}\u{241E}",
            json!({"chunk": {"type": "partial_answer", "content": {"text": "streamed"}}}),
            json!({"chunk": {"type": "identifiers", "content": {"thread_id": "t", "question_answer_id": "qa2"}}})
        )))
        .mount(&kapa)
        .await;
    Mock::given(method("POST"))
        .and(path("/query/v1/feedback/upsert/"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&kapa)
        .await;
    let uri = kapa.uri();
    let app = TestApp::builder()
        .configure(move |s| {
            s.kapa.base_url = uri;
            s.kapa.retry_base_ms = 10;
            s.kapa_workers.interval_ms = 100;
        })
        .spawn()
        .await;
    let admin = app.create_tenant("logs", "alice").await;
    std::env::set_var("KAPA_LOGS_API_KEY", KEY);
    app.call(
        Method::PUT,
        "/v1/tenant/kapa",
        &admin,
        Some(json!({"project_id": "p1", "api_key_ref": "env://KAPA_LOGS_API_KEY"})),
    )
    .await;
    // 503 (retried) then 401: a failure; then an answer; then a streamed answer.
    for _ in 0..2 {
        app.call(
            Method::POST,
            "/v1/conversations",
            &admin,
            Some(json!({"question": "How do I export?"})),
        )
        .await;
    }
    let (_, answered) = app
        .call(
            Method::POST,
            "/v1/conversations",
            &admin,
            Some(json!({"question": "How do I export?"})),
        )
        .await;
    assert_eq!(answered["answer"]["status"], "answered", "{answered}");
    let streamed = app
        .client
        .post(format!("{}/v1/conversations", app.address))
        .bearer_auth(&admin)
        .header("Accept", "text/event-stream")
        .json(&json!({"question": "Stream it"}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(streamed.contains("streamed"), "{streamed}");
    let (id, answer) = (
        answered["id"].as_str().unwrap(),
        answered["answer"]["answer_id"].as_str().unwrap(),
    );
    app.call(
        Method::PUT,
        &format!("/v1/conversations/{id}/answers/{answer}/feedback"),
        &admin,
        Some(json!({"reaction": "upvote"})),
    )
    .await;
    wait_for(
        "the feedback forwarded",
        Duration::from_secs(20),
        || async {
            let n = kapa
                .received_requests()
                .await
                .unwrap()
                .iter()
                .filter(|r| r.url.path() == "/query/v1/feedback/upsert/")
                .count();
            (n == 1).then_some(())
        },
    )
    .await;

    let logs = captured.text();
    // The capture works: the paths above did log (retries, the refusal, HTTP client traces).
    assert!(logs.contains("retrying Kapa"), "the retry was logged");
    assert!(
        logs.contains("credentials_rejected"),
        "the refusal was logged"
    );
    assert!(logs.lines().count() > 100, "{} lines", logs.lines().count());
    assert!(!logs.contains(KEY), "the API key was logged");
    assert!(
        !logs.contains("LOGSECRET"),
        "part of the API key was logged"
    );
}
