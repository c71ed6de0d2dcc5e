//! Webhooks (docs/webhooks.md): signed deliveries from the events, retries with the same id,
//! the delivery log, redelivery, disabling after a failure streak, secret rotation. Signatures
//! are checked by Python's `hmac` (an implementation independent of ours).
use std::collections::BTreeMap;
use std::time::Duration;

use domain::Role;
use integration_tests::{wait_for, TestApp};
use reqwest::Method;
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

async fn app() -> TestApp {
    TestApp::builder()
        .configure(|s| {
            s.webhooks.allow_private = true;
            s.webhooks.allow_http = true;
            s.webhooks.interval_ms = 100;
            s.webhooks.retry_schedule_ms = "200,200,200,200".into();
            s.webhooks.disable_after_failures = 3;
        })
        .spawn()
        .await
}

/// Whether `signatures` (space-separated `v1,<b64>`) include a valid one for `secret`,
/// computed by Python.
fn python_verifies(secret: &str, request: &Request) -> bool {
    let header = |n: &str| {
        request
            .headers
            .get(n)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string()
    };
    let body = String::from_utf8(request.body.clone()).unwrap();
    let script = r#"
import base64, hashlib, hmac, sys
secret, msg_id, ts, body, sigs = sys.argv[1:6]
key = base64.b64decode(secret.split("_", 1)[1])
expected = base64.b64encode(hmac.new(key, f"{msg_id}.{ts}.{body}".encode(), hashlib.sha256).digest()).decode()
print("ok" if any(hmac.compare_digest(s.split(",", 1)[1], expected) for s in sigs.split(" ")) else "bad")
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, secret])
        .arg(header("webhook-id"))
        .arg(header("webhook-timestamp"))
        .arg(body)
        .arg(header("webhook-signature"))
        .output()
        .expect("python3 runs");
    String::from_utf8_lossy(&out.stdout).trim() == "ok"
}

async fn subscribe(app: &TestApp, admin: &str, url: &str, topics: Value) -> (String, String) {
    let (status, body) = app
        .call(
            Method::POST,
            "/v1/tenant/webhooks",
            admin,
            Some(json!({"url": url, "topics": topics})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    (
        body["endpoint_id"].as_str().unwrap().to_string(),
        body["secret"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn events_are_delivered_signed_and_retried_with_the_same_id() {
    let app = app().await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&receiver)
        .await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(204))
        .with_priority(2)
        .mount(&receiver)
        .await;
    let admin = app.create_tenant("acme", "alice").await;
    let (endpoint, secret) = subscribe(
        &app,
        &admin,
        &format!("{}/hook", receiver.uri()),
        json!(["answer.downvoted", "member.changed"]),
    )
    .await;
    // A member change, an upvote (not subscribed: nothing), a downvote.
    app.call(
        Method::POST,
        "/v1/tenant/members",
        &admin,
        Some(json!({"user_id": "bob", "role": "viewer"})),
    )
    .await;
    let (conversation, answer) = app.ask(&admin, "Where are the invoices?").await;
    let feedback = format!("/v1/conversations/{conversation}/answers/{answer}/feedback");
    let (status, _) = app
        .call(
            Method::PUT,
            &feedback,
            &admin,
            Some(json!({"reaction": "upvote"})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = app
        .call(
            Method::PUT,
            &feedback,
            &admin,
            Some(json!({"reaction": "downvote", "reasons": ["incorrect"]})),
        )
        .await;
    assert_eq!(status, 200);

    let requests = wait_for(
        "both deliveries succeed",
        Duration::from_secs(20),
        || async {
            let requests = receiver.received_requests().await.unwrap_or_default();
            let ids: BTreeMap<String, usize> = requests.iter().fold(BTreeMap::new(), |mut m, r| {
                *m.entry(r.headers["webhook-id"].to_str().unwrap().to_string())
                    .or_default() += 1;
                m
            });
            (ids.len() == 2 && requests.len() >= 4).then_some(requests)
        },
    )
    .await;
    let mut per_id: BTreeMap<String, Vec<&Request>> = BTreeMap::new();
    for r in &requests {
        assert!(python_verifies(&secret, r), "a valid signature");
        per_id
            .entry(r.headers["webhook-id"].to_str().unwrap().into())
            .or_default()
            .push(r);
    }
    // The retries of one message carry its id and its body unchanged: receivers de-duplicate.
    let retried: Vec<_> = per_id.values().filter(|v| v.len() > 1).collect();
    assert!(!retried.is_empty());
    for attempts in retried {
        assert!(attempts.windows(2).all(|w| w[0].body == w[1].body));
    }
    let topics: Vec<String> = per_id
        .values()
        .map(|v| {
            serde_json::from_slice::<Value>(&v[0].body).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(topics, vec!["answer.downvoted", "member.changed"]);
    // A tampered body does not verify.
    let mut forged = requests[0].clone();
    forged.body = b"{\"type\":\"forged\"}".to_vec();
    assert!(!python_verifies(&secret, &forged));

    // The delivery log, and a manual redelivery with the same id.
    let (status, log) = app
        .call(
            Method::GET,
            &format!("/v1/tenant/webhooks/{endpoint}/deliveries"),
            &admin,
            None,
        )
        .await;
    assert_eq!(status, 200);
    let log = log.as_array().unwrap().clone();
    assert_eq!(log.len(), 2);
    assert!(log.iter().all(|d| d["status"] == "delivered"));
    assert!(log.iter().any(|d| d["attempts"].as_i64().unwrap() >= 2));
    let delivery = log[0]["delivery_id"].as_str().unwrap();
    let (status, _) = app
        .call(
            Method::POST,
            &format!("/v1/tenant/webhooks/{endpoint}/deliveries/{delivery}/redeliver"),
            &admin,
            None,
        )
        .await;
    assert_eq!(status, 202);
    let id = format!("msg_{}", delivery.replace('-', ""));
    let count = |requests: Vec<Request>| {
        requests
            .iter()
            .filter(|r| r.headers["webhook-id"] == id.as_str())
            .count()
    };
    let before = count(requests.clone());
    assert!(before >= 1);
    wait_for(
        "the redelivery, under the same id",
        Duration::from_secs(10),
        || async {
            (count(receiver.received_requests().await.unwrap_or_default()) > before).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn an_endpoint_failing_in_a_row_is_disabled_with_an_event() {
    let app = app().await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&receiver)
        .await;
    let admin = app.create_tenant("acme", "alice").await;
    let (endpoint, _) = subscribe(
        &app,
        &admin,
        &format!("{}/down", receiver.uri()),
        json!(["member.changed"]),
    )
    .await;
    app.call(
        Method::POST,
        "/v1/tenant/members",
        &admin,
        Some(json!({"user_id": "bob", "role": "viewer"})),
    )
    .await;
    wait_for(
        "the endpoint is disabled",
        Duration::from_secs(20),
        || async {
            let (_, list) = app
                .call(Method::GET, "/v1/tenant/webhooks", &admin, None)
                .await;
            (list[0]["enabled"] == false).then_some(())
        },
    )
    .await;
    wait_for(
        "the WebhookDisabled event",
        Duration::from_secs(5),
        || async {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM events WHERE event_type = 'WebhookDisabled'",
            )
            .fetch_one(&app.pool)
            .await
            .unwrap();
            (n == 1).then_some(())
        },
    )
    .await;
    let (_, log) = app
        .call(
            Method::GET,
            &format!("/v1/tenant/webhooks/{endpoint}/deliveries"),
            &admin,
            None,
        )
        .await;
    assert!(
        log[0]["last_error"].as_str().unwrap().contains("503"),
        "{log}"
    );
    // Re-enabled by the Admin, it receives again.
    let (status, _) = app
        .call(
            Method::POST,
            &format!("/v1/tenant/webhooks/{endpoint}/enable"),
            &admin,
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (_, list) = app
        .call(Method::GET, "/v1/tenant/webhooks", &admin, None)
        .await;
    assert_eq!(
        (
            list[0]["enabled"].as_bool(),
            list[0]["failure_streak"].as_i64()
        ),
        (Some(true), Some(0))
    );
}

#[tokio::test]
async fn secrets_rotate_with_an_overlap_and_inward_urls_are_refused() {
    let app = app().await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let admin = app.create_tenant("acme", "alice").await;
    let (endpoint, old) = subscribe(
        &app,
        &admin,
        &format!("{}/hook", receiver.uri()),
        json!(["member.changed"]),
    )
    .await;
    let (status, rotated) = app
        .call(
            Method::POST,
            &format!("/v1/tenant/webhooks/{endpoint}/rotate-secret"),
            &admin,
            None,
        )
        .await;
    assert_eq!(status, 200);
    let new = rotated["secret"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    app.call(
        Method::POST,
        "/v1/tenant/members",
        &admin,
        Some(json!({"user_id": "bob", "role": "viewer"})),
    )
    .await;
    let request = wait_for("a delivery", Duration::from_secs(10), || async {
        receiver
            .received_requests()
            .await
            .unwrap_or_default()
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(
        request.headers["webhook-signature"]
            .to_str()
            .unwrap()
            .split(' ')
            .count(),
        2
    );
    assert!(python_verifies(&new, &request) && python_verifies(&old, &request));
    let (status, list) = app
        .call(Method::GET, "/v1/tenant/webhooks", &admin, None)
        .await;
    assert_eq!(status, 200);
    assert!(
        !list.to_string().contains("whsec_"),
        "a listing never shows a secret"
    );

    let strict = TestApp::spawn().await;
    let admin = strict.create_tenant("acme", "alice").await;
    for url in [
        "https://127.0.0.1/hook",
        "https://169.254.169.254/latest",
        "http://hooks.example.com/x",
    ] {
        let (status, body) = strict
            .call(
                Method::POST,
                "/v1/tenant/webhooks",
                &admin,
                Some(json!({"url": url, "topics": ["member.changed"]})),
            )
            .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (422, Some("invalid_webhook_url")),
            "{url}"
        );
    }
    let viewer = strict.token("acme", Role::Viewer, "vera");
    let (status, _) = strict
        .call(Method::GET, "/v1/tenant/webhooks", &viewer, None)
        .await;
    assert_eq!(status, 403);
}

/// Signs like a connector would, with Python's `hmac` (independent of the server's code).
fn python_sign(secret: &str, id: &str, timestamp: i64, body: &str) -> String {
    let script = r#"
import base64, hashlib, hmac, sys
secret, msg_id, ts, body = sys.argv[1:5]
key = base64.b64decode(secret.split("_", 1)[1])
print("v1," + base64.b64encode(hmac.new(key, f"{msg_id}.{ts}.{body}".encode(), hashlib.sha256).digest()).decode())
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, secret, id, &timestamp.to_string(), body])
        .output()
        .expect("python3 runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn inbound_webhooks_are_verified_and_accepted_once() {
    let app = app().await;
    let admin = app.create_tenant("acme", "alice").await;
    let (status, source) = app
        .call(
            Method::POST,
            "/v1/sources",
            &admin,
            Some(json!({"kind": "docs", "name": "Docs", "location": "https://docs.acme.test"})),
        )
        .await;
    assert_eq!(status, 201, "{source}");
    let source = source["id"].as_str().unwrap().to_string();
    let (status, _) = app
        .call(
            Method::POST,
            &format!("/v1/sources/{source}/sync"),
            &admin,
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, first) = app
        .call(Method::POST, "/v1/tenant/inbound-secret", &admin, None)
        .await;
    assert_eq!(status, 200);
    let old = first["secret"].as_str().unwrap().to_string();
    let (_, second) = app
        .call(Method::POST, "/v1/tenant/inbound-secret", &admin, None)
        .await;
    let secret = second["secret"].as_str().unwrap().to_string();
    let url = format!("{}/v1/inbound/acme/sources/{source}/sync", app.address);
    let post = |id: &str, ts: i64, signature: String, body: String| {
        app.client
            .post(&url)
            .header("webhook-id", id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", signature)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let now = chrono::Utc::now().timestamp();
    let sync_id = uuid::Uuid::new_v4();
    let body = json!({"type": "sync.started", "sync_id": sync_id}).to_string();
    let code = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        (
            status,
            r.json::<Value>().await.unwrap()["code"]
                .as_str()
                .map(String::from),
        )
    };
    // Forged, stale, or signed with another tenant's secret: refused, nothing recorded.
    let tampered = json!({"type": "sync.started", "sync_id": uuid::Uuid::new_v4()}).to_string();
    let cases = [
        (
            "tampered body",
            post(
                "msg_a",
                now,
                python_sign(&secret, "msg_a", now, &body),
                tampered,
            ),
        ),
        (
            "ten minutes old",
            post(
                "msg_b",
                now - 600,
                python_sign(&secret, "msg_b", now - 600, &body),
                body.clone(),
            ),
        ),
        (
            "another secret",
            post(
                "msg_c",
                now,
                python_sign(&webhooks_secret(), "msg_c", now, &body),
                body.clone(),
            ),
        ),
    ];
    for (what, request) in cases {
        let (status, c) = code(request.await.unwrap()).await;
        assert_eq!(
            (status, c.as_deref()),
            (401, Some("webhook_signature_invalid")),
            "{what}"
        );
    }
    let missing = app
        .client
        .post(&url)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 401);
    // Signed with the previous secret during the overlap: accepted, once.
    let ok = post(
        "msg_d",
        now,
        python_sign(&old, "msg_d", now, &body),
        body.clone(),
    )
    .await
    .unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    let (status, c) = code(
        post(
            "msg_d",
            now,
            python_sign(&secret, "msg_d", now, &body),
            body.clone(),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!((status, c.as_deref()), (409, Some("webhook_replayed")));
    let done =
        json!({"type": "sync.completed", "sync_id": sync_id, "document_count": 12}).to_string();
    let ok = post(
        "msg_e",
        now,
        python_sign(&secret, "msg_e", now, &done),
        done,
    )
    .await
    .unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    let (_, view) = app
        .call(Method::GET, &format!("/v1/sources/{source}"), &admin, None)
        .await;
    assert_eq!(view["document_count"], 12, "{view}");
    let actors: Vec<String> = sqlx::query_scalar(
        "SELECT actor_id FROM events WHERE event_type IN ('SyncStarted', 'SyncCompleted') ORDER BY position",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(actors, vec!["connector", "connector"]);
}

/// A secret no tenant has.
fn webhooks_secret() -> String {
    format!(
        "whsec_{}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 32])
    )
}
