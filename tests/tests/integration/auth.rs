use answers_api::auth::now_secs;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use domain::Role;
use identity::{AccessClaims, TokenKeys};
use integration_tests::TestApp;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::json;

/// The app's own keys (the development key: the harness runs the development profile).
fn keys(app: &TestApp) -> TokenKeys {
    app.settings.auth.token_keys().unwrap()
}

fn claims(app: &TestApp) -> AccessClaims {
    let mut c = keys(app).claims("alice", 600);
    c.tenant_id = Some("acme".into());
    c.role = Some(Role::Admin);
    c
}

/// A JWT with any header, signed by HMAC with `secret` (or unsigned for `alg: none`).
fn forge(header: serde_json::Value, claims: &serde_json::Value, secret: &[u8]) -> String {
    let h = URL_SAFE_NO_PAD.encode(header.to_string());
    let c = URL_SAFE_NO_PAD.encode(claims.to_string());
    if header["alg"] == "none" {
        return format!("{h}.{c}.");
    }
    let mut header_struct = Header::new(Algorithm::HS256);
    header_struct.kid = header["kid"].as_str().map(String::from);
    encode(&header_struct, claims, &EncodingKey::from_secret(secret)).unwrap()
}

#[tokio::test]
async fn forged_and_stale_tokens_are_401_problems_and_store_nothing() {
    let app = TestApp::spawn().await;
    let keys = keys(&app);
    let good = claims(&app);
    let kid = keys.current_kid().to_string();
    let jwks = keys.jwks();
    let public_x = URL_SAFE_NO_PAD
        .decode(jwks["keys"][0]["x"].as_str().unwrap())
        .unwrap();
    let value = serde_json::to_value(&good).unwrap();
    let with = |change: &dyn Fn(&mut AccessClaims)| {
        let mut c = good.clone();
        change(&mut c);
        keys.sign(&c).unwrap()
    };
    let mut bad_tenant = value.clone();
    bad_tenant["tenant_id"] = json!("Acme Corp/../x");
    let other_pem = identity::keys::generate_pem().unwrap();
    let impostor =
        TokenKeys::new((kid.as_str(), &other_pem), None, &good.iss, &good.aud, 0).unwrap();
    let cases = [
        (
            "alg none",
            forge(
                json!({"alg": "none", "typ": "JWT", "kid": kid}),
                &value,
                b"",
            ),
            "token_invalid",
        ),
        (
            "HS256 signed with our public key (algorithm confusion)",
            forge(json!({"alg": "HS256", "kid": kid}), &value, &public_x),
            "token_invalid",
        ),
        (
            "unknown kid",
            forge_eddsa(&other_pem, "no-such-key", &value),
            "token_invalid",
        ),
        (
            "kid with a path",
            forge_eddsa(&other_pem, "../../etc/passwd", &value),
            "token_invalid",
        ),
        (
            "kid with a URL",
            forge_eddsa(&other_pem, "https://evil.test/jwks.json", &value),
            "token_invalid",
        ),
        (
            "our kid, another key",
            impostor.sign(&good).unwrap(),
            "token_invalid",
        ),
        (
            "expired",
            with(&|c| {
                c.exp = now_secs() - 3600;
                c.iat = now_secs() - 7200;
            }),
            "token_expired",
        ),
        (
            "not yet valid",
            with(&|c| c.nbf = now_secs() + 3600),
            "token_invalid",
        ),
        (
            "wrong audience",
            with(&|c| c.aud = "someone-else".into()),
            "token_invalid",
        ),
        (
            "wrong issuer",
            with(&|c| c.iss = "evil".into()),
            "token_invalid",
        ),
        ("garbage", "not.a.jwt".to_string(), "token_invalid"),
        (
            "a tenant id outside the alphabet",
            forge_eddsa_keys(&keys, &bad_tenant),
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
        .post(
            "/v1/tenant",
            &keys.sign(&good).unwrap(),
            json!({"name": "Acme"}),
        )
        .await;
    assert_eq!(response.status().as_u16(), 201);
}

fn forge_eddsa(pem: &str, kid: &str, claims: &serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.into());
    encode(
        &header,
        claims,
        &EncodingKey::from_ed_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

/// Signs arbitrary claims with the app's key (what `TokenKeys::sign` would not produce).
fn forge_eddsa_keys(keys: &TokenKeys, claims: &serde_json::Value) -> String {
    let typed: AccessClaims = serde_json::from_value(claims.clone()).unwrap();
    keys.sign(&typed).unwrap()
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
