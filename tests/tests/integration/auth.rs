use answers_api::auth::{now_secs, Claims};
use domain::Role;
use integration_tests::TestApp;
use jsonwebtoken::{encode, EncodingKey, Header};
use reqwest::Method;
use secrecy::ExposeSecret;
use serde_json::json;

fn claims(app: &integration_tests::TestApp) -> Claims {
    Claims {
        sub: "alice".parse().unwrap(),
        tenant_id: "acme".parse().unwrap(),
        role: Role::Admin,
        exp: now_secs() + 600,
        iat: now_secs(),
        iss: app.settings.auth.issuer.clone(),
        aud: app.settings.auth.audience.clone(),
    }
}

fn sign_json(claims: &serde_json::Value, secret: &[u8]) -> String {
    encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

fn sign(claims: &Claims, secret: &[u8]) -> String {
    encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

#[tokio::test]
async fn bad_tokens_are_401_problems_and_store_nothing() {
    let app = TestApp::spawn().await;
    let secret = app
        .settings
        .auth
        .jwt_secret
        .expose_secret()
        .as_bytes()
        .to_vec();
    let good = claims(&app);
    let expired = Claims {
        exp: now_secs() - 3600,
        iat: now_secs() - 7200,
        ..good.clone()
    };
    let wrong_audience = Claims {
        aud: "someone-else".into(),
        ..good.clone()
    };
    let mut bad_tenant = serde_json::to_value(&good).unwrap();
    bad_tenant["tenant_id"] = json!("Acme Corp/../x");
    let wrong_issuer = Claims {
        iss: "evil".into(),
        ..good.clone()
    };
    let cases = [
        (
            "wrong signature",
            sign(&good, b"another-secret-another-secret-another"),
            "token_invalid",
        ),
        ("expired", sign(&expired, &secret), "token_expired"),
        (
            "wrong audience",
            sign(&wrong_audience, &secret),
            "token_invalid",
        ),
        (
            "wrong issuer",
            sign(&wrong_issuer, &secret),
            "token_invalid",
        ),
        ("garbage", "not.a.jwt".to_string(), "token_invalid"),
        (
            "a tenant id outside the alphabet, correctly signed",
            sign_json(&bad_tenant, &secret),
            "token_invalid",
        ),
    ];
    for (what, token, code) in cases {
        let response = app
            .post("/v1/tenant", &token, json!({"name": "Acme"}))
            .await;
        assert_eq!(response.status().as_u16(), 401, "{what}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["code"], code, "{what}");
    }
    let missing = app
        .client
        .post(format!("{}/v1/tenant", app.address))
        .json(&json!({"name": "Acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 401);
    let body: serde_json::Value = missing.json().await.unwrap();
    assert_eq!(body["code"], "token_missing");
    assert_eq!(app.event_count().await, 0);
    // The same claims, correctly signed, are accepted: the refusals above were about the token.
    let response = app
        .post("/v1/tenant", &sign(&good, &secret), json!({"name": "Acme"}))
        .await;
    assert_eq!(response.status().as_u16(), 201);
}

#[tokio::test]
async fn roles_gate_commands() {
    let app = TestApp::spawn().await;
    let admin = app.create_tenant("acme", "alice").await;
    let viewer = app.token("acme", Role::Viewer, "vera");
    let operator = app.token("acme", Role::Operator, "olga");
    let before = app.event_count().await;

    let viewer_attempts = [
        (
            Method::POST,
            "/v1/conversations",
            json!({"question": "Can I ask?"}),
        ),
        (
            Method::POST,
            "/v1/sources",
            json!({"kind": "docs", "name": "D", "location": "https://d.test"}),
        ),
        (Method::PUT, "/v1/tenant/name", json!({"name": "Mine"})),
    ];
    for (method, path, body) in viewer_attempts {
        let (status, problem) = app.call(method, path, &viewer, Some(body)).await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (403, Some("forbidden")),
            "viewer {path}"
        );
    }
    let (status, problem) = app
        .call(
            Method::PUT,
            "/v1/tenant/name",
            &operator,
            Some(json!({"name": "Mine"})),
        )
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (403, Some("forbidden")),
        "operator administers"
    );
    assert_eq!(
        app.event_count().await,
        before,
        "refused commands store nothing"
    );

    // A viewer may read; an operator may ask and manage sources.
    let (status, _) = app
        .call(Method::GET, "/v1/conversations", &viewer, None)
        .await;
    assert_eq!(status, 200);
    app.ask(&operator, "Operators may ask").await;
    let (status, _) = app
        .call(
            Method::PUT,
            "/v1/tenant/name",
            &admin,
            Some(json!({"name": "Acme 2"})),
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_token_for_tenant_b_never_reads_or_changes_tenant_a() {
    let app = TestApp::spawn().await;
    let a = app.create_tenant("tenant-a", "alice").await;
    let b = app.create_tenant("tenant-b", "bob").await;
    let (conversation, answer) = app.ask(&a, "A's private question").await;
    let (_, source) = app
        .call(
            Method::POST,
            "/v1/sources",
            &a,
            Some(json!({"kind": "docs", "name": "A docs", "location": "https://a.test"})),
        )
        .await;
    let source = source["id"].as_str().unwrap().to_string();
    let a_events: Vec<(String, i64)> = sqlx::query_as(
        "SELECT aggregate_id, sequence FROM events WHERE tenant_id = 'tenant-a' ORDER BY position",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();

    let attempts = [
        (Method::GET, format!("/v1/sources/{source}"), None),
        (
            Method::PATCH,
            format!("/v1/sources/{source}"),
            Some(json!({"name": "pwned"})),
        ),
        (Method::DELETE, format!("/v1/sources/{source}"), None),
        (Method::POST, format!("/v1/sources/{source}/sync"), None),
        (
            Method::POST,
            format!("/v1/conversations/{conversation}/questions"),
            Some(json!({"question": "hi"})),
        ),
        (
            Method::PUT,
            format!("/v1/conversations/{conversation}/answers/{answer}/feedback"),
            Some(json!({"reaction": "downvote"})),
        ),
        (
            Method::POST,
            format!("/v1/conversations/{conversation}/resolve"),
            None,
        ),
    ];
    for (method, path, body) in attempts {
        let (status, problem) = app.call(method.clone(), &path, &b, body).await;
        assert_eq!(status, 404, "{method} {path}: {problem}");
    }

    let after: Vec<(String, i64)> = sqlx::query_as(
        "SELECT aggregate_id, sequence FROM events WHERE tenant_id = 'tenant-a' ORDER BY position",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(a_events, after, "tenant A's events are untouched");
    let b_on_a: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE tenant_id = 'tenant-b' AND aggregate_id LIKE 'tenant-a%'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(b_on_a, 0);
}
