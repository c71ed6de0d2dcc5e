//! Sign-in, sessions, second factors, API keys and platform operators (docs/identity.md),
//! against local providers speaking OpenID Connect and GitHub's API (`integration_tests::idp`).
use std::time::Duration;

use domain::Role;
use integration_tests::idp::{FakeGithub, FakeOidc, CLIENT_ID};
use integration_tests::{wait_for, TestApp};
use reqwest::Method;
use serde_json::{json, Value};

const OPERATOR: &str = "ops@platform.test";

struct World {
    app: TestApp,
    google: FakeOidc,
    microsoft: FakeOidc,
    github: FakeGithub,
}

async fn world() -> World {
    world_with(false).await
}

async fn world_with(streaming: bool) -> World {
    let google = FakeOidc::start().await;
    let microsoft = FakeOidc::start_microsoft().await;
    let github = FakeGithub::start().await;
    let (g, m, h) = (
        google.settings(TestApp::REDIRECT),
        microsoft.settings(TestApp::REDIRECT),
        github.settings(TestApp::REDIRECT),
    );
    let builder = if streaming {
        TestApp::builder().streaming()
    } else {
        TestApp::builder()
    };
    let app = builder
        .configure(move |s| {
            s.identity.google = Some(g);
            s.identity.microsoft = Some(m);
            s.identity.github = Some(h);
            s.identity.operators = format!("{OPERATOR}, other-ops@platform.test");
            s.auth.cookie_secure = false;
        })
        .spawn()
        .await;
    World {
        app,
        google,
        microsoft,
        github,
    }
}

/// A platform operator (break-glass credential) creates `tenant` and invites its first Admin.
async fn onboard(app: &TestApp, tenant: &str, admin_email: &str) {
    let (status, body) = app
        .call(
            Method::POST,
            "/v1/platform/tenants",
            &app.platform_token,
            Some(json!({"tenant_id": tenant, "name": "Acme", "admin_email": admin_email})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

fn access(session: &Value) -> String {
    session["access_token"]
        .as_str()
        .expect("access token")
        .to_string()
}

async fn google_session(w: &World, tenant: &str, sub: &str, email: &str) -> Value {
    let claims = google_claims(w, sub, email);
    let (status, body) = w
        .app
        .oidc_sign_in("google", Some(tenant), &w.google, claims)
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

fn google_claims(w: &World, sub: &str, email: &str) -> Value {
    let mut c = w.google.claims(sub, email, "");
    c.as_object_mut().unwrap().remove("nonce");
    c
}

async fn event_types(app: &TestApp, aggregate_type: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT event_type FROM events WHERE aggregate_type = $1 ORDER BY position")
        .bind(aggregate_type)
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_invited_admin_signs_in_with_google_and_asks_a_question() {
    let w = world().await;
    let app = &w.app;
    onboard(app, "acme", "Admin@Acme.test").await;
    let providers: Value = app
        .client
        .get(format!("{}/v1/auth/providers", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(providers, json!(["google", "microsoft", "github"]));

    let session = google_session(&w, "acme", "g-1", "admin@acme.test").await;
    assert_eq!(session["role"], "admin");
    assert_eq!(session["token_type"], "Bearer");
    let token = access(&session);
    let (status, me) = app.call(Method::GET, "/v1/auth/me", &token, None).await;
    assert_eq!(
        (status, me["role"].as_str(), me["via"].as_str()),
        (200, Some("admin"), Some("session"))
    );
    // The published key verifies our token on its own.
    let jwks: Value = app
        .client
        .get(format!("{}/.well-known/jwks.json", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == header.kid.clone().unwrap().as_str())
            .unwrap()
            .clone(),
    )
    .unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    v.set_audience(&[&app.settings.auth.audience]);
    jsonwebtoken::decode::<Value>(
        &token,
        &jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap(),
        &v,
    )
    .unwrap();

    let (conversation, _) = app.ask(&token, "How do I rotate an API key?").await;
    assert!(!conversation.is_empty());
    // The invitation is accepted once; the second sign-in finds the linked member.
    let again = google_session(&w, "acme", "g-1", "admin@acme.test").await;
    assert_eq!(again["user_id"], session["user_id"]);
    let tenant_events = event_types(app, "tenant").await;
    assert_eq!(
        tenant_events
            .iter()
            .filter(|e| *e == "InvitationAccepted")
            .count(),
        1,
        "{tenant_events:?}"
    );
    assert_eq!(
        event_types(app, "account")
            .await
            .iter()
            .filter(|e| *e == "SignedIn")
            .count(),
        2
    );
}

#[tokio::test]
async fn microsoft_and_github_sign_in_check_what_their_providers_vouch_for() {
    let w = world().await;
    let app = &w.app;
    onboard(app, "acme", "admin@acme.test").await;
    let admin = google_session(&w, "acme", "g-1", "admin@acme.test").await;
    for (email, role) in [("maria@acme.test", "operator"), ("gil@acme.test", "viewer")] {
        let (status, body) = app
            .call(
                Method::POST,
                "/v1/tenant/members",
                &access(&admin),
                Some(json!({"email": email, "role": role})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    // Microsoft's common endpoint: the issuer is checked against the token's own `tid`.
    let tid = "4f1c2d3e-0000-4000-8000-000000000001";
    let ms_claims = |iss_tid: &str| {
        let mut c = w.microsoft.claims("ms-7", "maria@acme.test", "");
        c.as_object_mut().unwrap().remove("nonce");
        c["iss"] = json!(format!("{}/{iss_tid}/v2.0", w.microsoft.server.uri()));
        c["tid"] = json!(tid);
        c["xms_edov"] = json!(true);
        c
    };
    let (status, body) = app
        .oidc_sign_in(
            "microsoft",
            Some("acme"),
            &w.microsoft,
            ms_claims("another-directory"),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("sign_in_failed")),
        "{body}"
    );
    let (status, body) = app
        .oidc_sign_in("microsoft", Some("acme"), &w.microsoft, ms_claims(tid))
        .await;
    assert_eq!(
        (status, body["role"].as_str()),
        (200, Some("operator")),
        "{body}"
    );

    // GitHub: only a verified address counts.
    let request = app.start_sign_in("github", Some("acme")).await;
    assert!(request.nonce.is_none());
    w.github
        .issue(
            "gh-1",
            &request.code_challenge,
            42,
            &[("gil@acme.test", false, true)],
        )
        .await;
    let (status, body) = app.callback("github", "gh-1", &request.state).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("not_a_member")),
        "{body}"
    );
    let request = app.start_sign_in("github", Some("acme")).await;
    w.github
        .issue(
            "gh-2",
            &request.code_challenge,
            42,
            &[
                ("gil@personal.test", true, true),
                ("gil@acme.test", false, false),
            ],
        )
        .await;
    let (status, _) = app.callback("github", "gh-2", &request.state).await;
    assert_eq!(status, 403, "the verified address is not the invited one");
    let request = app.start_sign_in("github", Some("acme")).await;
    w.github
        .issue(
            "gh-3",
            &request.code_challenge,
            42,
            &[("gil@acme.test", true, true)],
        )
        .await;
    let (status, body) = app.callback("github", "gh-3", &request.state).await;
    assert_eq!(
        (status, body["role"].as_str()),
        (200, Some("viewer")),
        "{body}"
    );
    let failures = event_types(app, "account").await;
    assert!(
        failures.iter().filter(|e| *e == "SignInFailed").count() >= 3,
        "{failures:?}"
    );
}

#[tokio::test]
async fn the_access_policy_restricts_domains_providers_and_requires_sso() {
    let w = world().await;
    let app = &w.app;
    onboard(app, "acme", "admin@acme.test").await;
    let admin = access(&google_session(&w, "acme", "g-1", "admin@acme.test").await);
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/tenant/members",
            &admin,
            Some(json!({"email": "pat@partner.test", "role": "viewer"})),
        )
        .await;
    assert_eq!(status, 200);
    let admin_ref = &admin;
    let policy = |p: Value| async move {
        let (status, body) = app
            .call(Method::PUT, "/v1/tenant/access-policy", admin_ref, Some(p))
            .await;
        assert_eq!(status, 200, "{body}");
    };
    policy(json!({"allowed_domains": ["ACME.test"], "domain_members_join": true})).await;
    // Invited, but outside the allowed domains.
    let (status, body) = app
        .oidc_sign_in(
            "google",
            Some("acme"),
            &w.google,
            google_claims(&w, "g-2", "pat@partner.test"),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("email_domain_not_allowed"))
    );
    // Uninvited, inside: joins as a viewer.
    let (status, body) = app
        .oidc_sign_in(
            "google",
            Some("acme"),
            &w.google,
            google_claims(&w, "g-3", "new@acme.test"),
        )
        .await;
    assert_eq!(
        (status, body["role"].as_str()),
        (200, Some("viewer")),
        "{body}"
    );
    // An unverified address is no address.
    let mut unverified = google_claims(&w, "g-4", "other@acme.test");
    unverified["email_verified"] = json!(false);
    let (status, body) = app
        .oidc_sign_in("google", Some("acme"), &w.google, unverified)
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("email_domain_not_allowed"))
    );

    policy(json!({"allowed_domains": ["acme.test"], "allowed_providers": ["google"]})).await;
    let request = app.start_sign_in("github", Some("acme")).await;
    w.github
        .issue(
            "gh-9",
            &request.code_challenge,
            9,
            &[("new@acme.test", true, true)],
        )
        .await;
    let (status, body) = app.callback("github", "gh-9", &request.state).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("provider_not_allowed"))
    );

    policy(json!({"allowed_domains": ["acme.test"], "sso_required": true})).await;
    let (status, body) = app
        .oidc_sign_in(
            "google",
            Some("acme"),
            &w.google,
            google_claims(&w, "g-3", "new@acme.test"),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("sso_required")),
        "a personal Google account"
    );
    let mut workspace = google_claims(&w, "g-3", "new@acme.test");
    workspace["hd"] = json!("acme.test");
    let (status, _) = app
        .oidc_sign_in("google", Some("acme"), &w.google, workspace)
        .await;
    assert_eq!(status, 200, "a Google Workspace account of the domain");

    let (status, body) = app
        .call(
            Method::PUT,
            "/v1/tenant/access-policy",
            &admin,
            Some(json!({"allowed_domains": ["not a domain"]})),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("invalid_access_policy"))
    );
}

#[tokio::test]
async fn forged_or_replayed_sign_ins_are_refused() {
    let w = world().await;
    let app = &w.app;
    onboard(app, "acme", "admin@acme.test").await;
    let good = google_claims(&w, "g-1", "admin@acme.test");
    let now = chrono::Utc::now().timestamp();
    let with = |change: &dyn Fn(&mut Value)| {
        let mut c = good.clone();
        change(&mut c);
        c
    };
    // Each case runs a whole flow whose id_token (or exchange) is wrong in one way.
    let cases: Vec<(&str, Value)> = vec![
        (
            "expired",
            with(&|c| {
                c["exp"] = json!(now - 600);
                c["iat"] = json!(now - 900);
            }),
        ),
        ("not yet valid", with(&|c| c["nbf"] = json!(now + 600))),
        (
            "wrong issuer",
            with(&|c| c["iss"] = json!("https://evil.test")),
        ),
        (
            "wrong audience",
            with(&|c| c["aud"] = json!("another-client")),
        ),
        (
            "another client's token (azp)",
            with(&|c| {
                c["aud"] = json!([CLIENT_ID, "another-client"]);
                c["azp"] = json!("another-client");
            }),
        ),
        (
            "wrong nonce",
            with(&|c| c["nonce"] = json!("not-the-nonce")),
        ),
    ];
    for (what, claims) in cases {
        let (status, body) = app
            .oidc_sign_in("google", Some("acme"), &w.google, claims)
            .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("sign_in_failed")),
            "{what}: {body}"
        );
    }
    // Tokens whose header is forged: none, HMAC with the public key, unknown or hostile kid.
    let jwk_x = w.google.jwk["x"].as_str().unwrap().to_string();
    let google_kid = w.google.kid.clone();
    let forged: Vec<(&str, Forger)> = vec![
        ("alg none", Box::new(|c: &Value| unsigned(c))),
        (
            "HS256 with the provider's public key",
            Box::new(move |c: &Value| hmac(c, jwk_x.as_bytes(), Some(&google_kid))),
        ),
        (
            "unknown kid",
            Box::new(|c: &Value| resign(&w.google, c, "unknown-kid")),
        ),
        (
            "kid with a path",
            Box::new(|c: &Value| resign(&w.google, c, "../../keys/evil")),
        ),
        (
            "kid with a URL",
            Box::new(|c: &Value| resign(&w.google, c, "https://evil.test/keys")),
        ),
    ];
    for (what, make) in forged {
        let request = app.start_sign_in("google", Some("acme")).await;
        let mut claims = good.clone();
        claims["nonce"] = json!(request.nonce.clone().unwrap());
        let code = format!("code-{}", uuid::Uuid::new_v4().simple());
        w.google
            .issue(&code, &request.code_challenge, &make(&claims))
            .await;
        let (status, body) = app.callback("google", &code, &request.state).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("sign_in_failed")),
            "{what}: {body}"
        );
    }
    // Replays: the state once, the code once.
    let request = app.start_sign_in("google", Some("acme")).await;
    let mut claims = good.clone();
    claims["nonce"] = json!(request.nonce.clone().unwrap());
    w.google
        .issue("the-code", &request.code_challenge, &w.google.sign(&claims))
        .await;
    let (status, _) = app.callback("google", "the-code", &request.state).await;
    assert_eq!(status, 200);
    let (status, body) = app.callback("google", "the-code", &request.state).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("sign_in_state_invalid")),
        "replayed state"
    );
    let fresh = app.start_sign_in("google", Some("acme")).await;
    let (status, body) = app.callback("google", "the-code", &fresh.state).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("sign_in_failed")),
        "replayed code"
    );
    // A state from one provider is not another's.
    let other = app.start_sign_in("google", Some("acme")).await;
    let (status, _) = app.callback("github", "x", &other.state).await;
    assert_eq!(status, 401);
}

/// Makes an id_token from claims in some forged way.
type Forger<'a> = Box<dyn Fn(&Value) -> String + 'a>;

fn unsigned(claims: &Value) -> String {
    use base64::Engine;
    let e = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.",
        e(&json!({"alg": "none", "typ": "JWT"})),
        e(claims)
    )
}

fn hmac(claims: &Value, secret: &[u8], kid: Option<&str>) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = kid.map(String::from);
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap()
}

/// The provider's own signature under another `kid`.
fn resign(idp: &FakeOidc, claims: &Value, kid: &str) -> String {
    let token = idp.sign(claims);
    let mut parts: Vec<String> = token.split('.').map(String::from).collect();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    parts[0] = b64.encode(json!({"alg": "ES256", "typ": "JWT", "kid": kid}).to_string());
    parts.join(".")
}

#[tokio::test]
async fn refresh_tokens_rotate_and_a_reused_one_revokes_the_session() {
    let w = world().await;
    let app = &w.app;
    onboard(app, "acme", "admin@acme.test").await;
    let first = google_session(&w, "acme", "g-1", "admin@acme.test").await;
    let refresh = |token: Value| async move {
        let response = app
            .client
            .post(format!("{}/v1/auth/refresh", app.address))
            .json(&json!({"refresh_token": token}))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json::<Value>().await.unwrap())
    };
    let (status, second) = refresh(first["refresh_token"].clone()).await;
    assert_eq!(status, 200, "{second}");
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    assert_eq!(second["session_id"], first["session_id"]);
    let (status, _) = app
        .call(Method::GET, "/v1/auth/me", &access(&second), None)
        .await;
    assert_eq!(status, 200);
    // The first refresh token again: someone holds a copy. The whole session ends.
    let (status, body) = refresh(first["refresh_token"].clone()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("refresh_token_reused"))
    );
    let (status, body) = refresh(second["refresh_token"].clone()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("refresh_token_invalid")),
        "{body}"
    );
    let (status, body) = app
        .call(Method::GET, "/v1/auth/me", &access(&second), None)
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("session_revoked"))
    );
    let (status, _) = refresh(json!("never-issued")).await;
    assert_eq!(status, 401);
    assert!(event_types(app, "account")
        .await
        .contains(&"SessionsRevoked".to_string()));
}

#[tokio::test]
async fn a_demoted_or_removed_member_loses_power_within_seconds() {
    let w = world().await;
    let app = &w.app;
    onboard(app, "acme", "admin@acme.test").await;
    let admin = access(&google_session(&w, "acme", "g-1", "admin@acme.test").await);
    for email in ["bea@acme.test", "carl@acme.test"] {
        let (status, _) = app
            .call(
                Method::POST,
                "/v1/tenant/members",
                &admin,
                Some(json!({"email": email, "role": "admin"})),
            )
            .await;
        assert_eq!(status, 200);
    }
    let bea = google_session(&w, "acme", "g-2", "bea@acme.test").await;
    let carl = google_session(&w, "acme", "g-3", "carl@acme.test").await;
    let (bea_token, bea_id) = (access(&bea), bea["user_id"].as_str().unwrap().to_string());
    let (status, _) = app
        .call(
            Method::PUT,
            "/v1/tenant/name",
            &bea_token,
            Some(json!({"name": "Acme 2"})),
        )
        .await;
    assert_eq!(status, 200, "an admin administers");
    let (status, _) = app
        .call(
            Method::PUT,
            &format!("/v1/tenant/members/{bea_id}/role"),
            &admin,
            Some(json!({"role": "viewer"})),
        )
        .await;
    assert_eq!(status, 200);
    let demoted_at = std::time::Instant::now();
    wait_for(
        "the demotion reaches Bea's live token",
        Duration::from_secs(2),
        || async {
            let (status, _) = app
                .call(
                    Method::PUT,
                    "/v1/tenant/name",
                    &bea_token,
                    Some(json!({"name": "Acme 3"})),
                )
                .await;
            (status == 403).then_some(())
        },
    )
    .await;
    assert!(demoted_at.elapsed() < Duration::from_secs(2));
    let carl_id = carl["user_id"].as_str().unwrap();
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/v1/tenant/members/{carl_id}"),
            &admin,
            None,
        )
        .await;
    assert_eq!(status, 200);
    wait_for(
        "the removal reaches Carl's live token",
        Duration::from_secs(2),
        || async {
            let (status, body) = app
                .call(Method::GET, "/v1/auth/me", &access(&carl), None)
                .await;
            (status == 401 && body["code"] == "session_revoked").then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn sessions_are_listed_signed_out_and_revoked_by_an_admin() {
    let w = world().await;
    let app = &w.app;
    onboard(app, "acme", "admin@acme.test").await;
    let admin = google_session(&w, "acme", "g-1", "admin@acme.test").await;
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/tenant/members",
            &access(&admin),
            Some(json!({"email": "dan@acme.test", "role": "operator"})),
        )
        .await;
    assert_eq!(status, 200);
    let laptop = google_session(&w, "acme", "g-2", "dan@acme.test").await;
    let phone = google_session(&w, "acme", "g-2", "dan@acme.test").await;
    let (status, list) = app
        .call(Method::GET, "/v1/auth/sessions", &access(&laptop), None)
        .await;
    assert_eq!(status, 200);
    let list = list.as_array().unwrap().clone();
    assert_eq!(list.len(), 2);
    assert_eq!(list.iter().filter(|s| s["current"] == true).count(), 1);
    // Sign out the phone from the laptop.
    let phone_id = phone["session_id"].as_str().unwrap();
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/v1/auth/sessions/{phone_id}"),
            &access(&laptop),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = app
        .call(Method::GET, "/v1/auth/me", &access(&phone), None)
        .await;
    assert_eq!(status, 401);
    let (status, body) = app
        .call(
            Method::DELETE,
            &format!("/v1/auth/sessions/{phone_id}"),
            &access(&laptop),
            None,
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("session_not_found"))
    );
    // The admin signs Dan out everywhere; Dan cannot do that to the admin.
    let dan_id = laptop["user_id"].as_str().unwrap();
    let admin_id = admin["user_id"].as_str().unwrap();
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/v1/tenant/members/{admin_id}/sessions"),
            &access(&laptop),
            None,
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/v1/tenant/members/{dan_id}/sessions"),
            &access(&admin),
            None,
        )
        .await;
    assert_eq!(status, 204);
    wait_for(
        "the revocation reaches the laptop",
        Duration::from_secs(2),
        || async {
            let (status, _) = app
                .call(Method::GET, "/v1/auth/me", &access(&laptop), None)
                .await;
            (status == 401).then_some(())
        },
    )
    .await;
    // Signing out this session.
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/auth/sign-out",
            &access(&admin),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = app
        .call(Method::GET, "/v1/auth/me", &access(&admin), None)
        .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn cookie_authenticated_writes_need_the_csrf_token() {
    let w = world().await;
    let app = &w.app;
    onboard(app, "acme", "admin@acme.test").await;
    let session = google_session(&w, "acme", "g-1", "admin@acme.test").await;
    let cookie = format!("__Host-answers_access={}", access(&session));
    let send = |csrf: Option<&str>| {
        let mut request = app
            .client
            .put(format!("{}/v1/tenant/name", app.address))
            .header("cookie", cookie.clone())
            .json(&json!({"name": "Via cookie"}));
        if let Some(csrf) = csrf {
            request = request.header("x-csrf-token", csrf);
        }
        request.send()
    };
    let response = send(None).await.unwrap();
    assert_eq!(response.status().as_u16(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "csrf_token_invalid");
    assert_eq!(send(Some("forged")).await.unwrap().status().as_u16(), 403);
    let ok = send(Some(session["csrf_token"].as_str().unwrap()))
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    // Reads need no CSRF token.
    let read = app
        .client
        .get(format!("{}/v1/auth/me", app.address))
        .header("cookie", cookie.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(read.status().as_u16(), 200);
}

fn totp_now(secret_b32: &str, offset_steps: i64) -> String {
    let secret = base32_decode(secret_b32);
    let step = identity::totp::step_of(identity::keys::now_secs());
    identity::totp::code_at(&secret, step.checked_add_signed(offset_steps).unwrap())
}

fn base32_decode(s: &str) -> Vec<u8> {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut buffer, mut bits, mut out) = (0u32, 0u32, Vec::new());
    for c in s.bytes() {
        let v = alphabet.iter().position(|a| *a == c).unwrap() as u32;
        buffer = (buffer << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    out
}

#[tokio::test]
async fn a_tenant_requiring_mfa_gets_no_session_without_the_second_factor() {
    let w = world().await;
    let app = &w.app;
    onboard(app, "acme", "admin@acme.test").await;
    let admin = access(&google_session(&w, "acme", "g-1", "admin@acme.test").await);
    let (status, _) = app
        .call(
            Method::PUT,
            "/v1/tenant/access-policy",
            &admin,
            Some(json!({"mfa_required": "admins"})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, challenge) = app
        .oidc_sign_in(
            "google",
            Some("acme"),
            &w.google,
            google_claims(&w, "g-1", "admin@acme.test"),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(challenge["status"], "mfa_required");
    assert!(
        challenge.get("access_token").is_none(),
        "no session before the second factor"
    );
    assert_eq!(challenge["enrolment_required"], true);
    let mfa_token = challenge["mfa_token"].as_str().unwrap();
    let post = |path: &str, body: Value| {
        let url = format!("{}{path}", app.address);
        async move {
            let r = app.client.post(url).json(&body).send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, enrolment) = post("/v1/auth/mfa/enrol", json!({"mfa_token": mfa_token})).await;
    assert_eq!(status, 200, "{enrolment}");
    assert!(enrolment["otpauth_url"]
        .as_str()
        .unwrap()
        .starts_with("otpauth://totp/Answers:admin%40acme.test?secret="));
    let secret = enrolment["secret"].as_str().unwrap().to_string();
    let (status, body) = post(
        "/v1/auth/mfa/verify",
        json!({"mfa_token": mfa_token, "code": "000000"}),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("mfa_code_invalid"))
    );
    let code = totp_now(&secret, 0);
    let (status, session) = post(
        "/v1/auth/mfa/verify",
        json!({"mfa_token": mfa_token, "code": code}),
    )
    .await;
    assert_eq!(status, 200, "{session}");
    assert!(session["access_token"].is_string());
    let recovery: Vec<String> = serde_json::from_value(session["recovery_codes"].clone()).unwrap();
    assert_eq!(recovery.len(), 10);
    // The challenge is used up.
    let (status, _) = post(
        "/v1/auth/mfa/verify",
        json!({"mfa_token": mfa_token, "code": code}),
    )
    .await;
    assert_eq!(status, 401);

    // The next sign-in: the same code cannot be replayed; a recovery code works once.
    let (_, challenge) = app
        .oidc_sign_in(
            "google",
            Some("acme"),
            &w.google,
            google_claims(&w, "g-1", "admin@acme.test"),
        )
        .await;
    assert_eq!(challenge["enrolment_required"], false);
    let mfa_token = challenge["mfa_token"].as_str().unwrap();
    let (status, body) = post(
        "/v1/auth/mfa/verify",
        json!({"mfa_token": mfa_token, "code": code}),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("mfa_code_invalid")),
        "a used code is refused"
    );
    let (status, _) = post(
        "/v1/auth/mfa/verify",
        json!({"mfa_token": mfa_token, "recovery_code": recovery[0].to_uppercase()}),
    )
    .await;
    assert_eq!(status, 200);
    let (_, challenge) = app
        .oidc_sign_in(
            "google",
            Some("acme"),
            &w.google,
            google_claims(&w, "g-1", "admin@acme.test"),
        )
        .await;
    let (status, _) = post(
        "/v1/auth/mfa/verify",
        json!({"mfa_token": challenge["mfa_token"], "recovery_code": recovery[0]}),
    )
    .await;
    assert_eq!(status, 401, "a recovery code works once");
    let types = event_types(app, "account").await;
    for t in ["MfaEnrolled", "MfaUsed", "SignInFailed", "SignedIn"] {
        assert!(types.contains(&t.to_string()), "{t} in {types:?}");
    }
}

#[tokio::test]
async fn api_keys_stay_below_admin_and_a_revoked_key_is_refused_at_once() {
    let w = world().await;
    let app = &w.app;
    onboard(app, "acme", "admin@acme.test").await;
    let admin = access(&google_session(&w, "acme", "g-1", "admin@acme.test").await);
    let (status, body) = app
        .call(
            Method::POST,
            "/v1/tenant/api-keys",
            &admin,
            Some(json!({"name": "Slack bot", "role": "admin"})),
        )
        .await;
    assert_eq!(status, 422, "an admin key is not even expressible: {body}");
    let (status, created) = app
        .call(
            Method::POST,
            "/v1/tenant/api-keys",
            &admin,
            Some(json!({"name": "Slack bot", "role": "operator"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("ans_sk_") && key.len() > 40);
    assert!(key.starts_with(created["prefix"].as_str().unwrap()));
    app.ask(&key, "Asked by the Slack bot").await;
    let (status, me) = app.call(Method::GET, "/v1/auth/me", &key, None).await;
    assert_eq!(
        (status, me["role"].as_str(), me["via"].as_str()),
        (200, Some("operator"), Some("api_key"))
    );
    // A key administers nothing, not even other keys.
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/tenant/api-keys",
            &key,
            Some(json!({"name": "x", "role": "viewer"})),
        )
        .await;
    assert_eq!(status, 403);
    let (status, list) = app
        .call(Method::GET, "/v1/tenant/api-keys", &admin, None)
        .await;
    assert_eq!(status, 200);
    assert!(list[0]["last_used_at"].is_string(), "{list}");
    assert!(
        !list.to_string().contains(&key),
        "a listing never shows a key"
    );
    let key_id = created["key_id"].as_str().unwrap();
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/v1/tenant/api-keys/{key_id}"),
            &admin,
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = app.call(Method::GET, "/v1/auth/me", &key, None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("api_key_invalid"))
    );
    let (status, body) = app
        .call(
            Method::DELETE,
            &format!("/v1/tenant/api-keys/{key_id}"),
            &admin,
            None,
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("api_key_revoked"))
    );
    let types = event_types(app, "tenant").await;
    assert!(types.contains(&"ApiKeyCreated".into()) && types.contains(&"ApiKeyRevoked".into()));
    let stored: Vec<Vec<u8>> = sqlx::query_scalar("SELECT key_hash FROM api_keys")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_ne!(stored[0], key.as_bytes(), "only a digest is stored");
}

#[tokio::test]
async fn platform_operators_sign_in_without_a_tenant_and_tenant_admins_never_reach_their_routes() {
    let w = world().await;
    let app = &w.app;
    let (status, operator) = app
        .oidc_sign_in(
            "google",
            None,
            &w.google,
            google_claims(&w, "op-1", OPERATOR),
        )
        .await;
    assert_eq!(
        (status, operator["platform_operator"].as_bool()),
        (200, Some(true)),
        "{operator}"
    );
    let op = access(&operator);
    let (status, body) = app
        .call(
            Method::POST,
            "/v1/platform/tenants",
            &op,
            Some(json!({"tenant_id": "acme", "name": "Acme", "admin_email": "admin@acme.test"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = app
        .call(Method::GET, "/v1/admin/projections", &op, None)
        .await;
    assert_eq!(status, 200);
    // Someone else without a tenant is not an operator.
    let (status, body) = app
        .oidc_sign_in(
            "google",
            None,
            &w.google,
            google_claims(&w, "x-1", "admin@acme.test"),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("not_an_operator"))
    );
    // The tenant's Admin: never the platform's routes; an operator's token is no tenant token.
    let admin = access(&google_session(&w, "acme", "g-1", "admin@acme.test").await);
    for (method, path) in [
        (Method::POST, "/v1/platform/tenants/acme/suspend"),
        (Method::GET, "/v1/admin/projections"),
        (Method::GET, "/v1/platform/me"),
    ] {
        let (status, body) = app
            .call(method, path, &admin, Some(json!({"reason": "x"})))
            .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("platform_only")),
            "{path}"
        );
    }
    let (status, _) = app.call(Method::GET, "/v1/auth/me", &op, None).await;
    assert_eq!(status, 401);
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/platform/tenants/acme/suspend",
            &op,
            Some(json!({"reason": "unpaid"})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = app
        .call(
            Method::PUT,
            "/v1/tenant/name",
            &admin,
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("tenant_suspended"))
    );
    let (status, body) = app
        .oidc_sign_in(
            "google",
            Some("acme"),
            &w.google,
            google_claims(&w, "g-1", "admin@acme.test"),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("tenant_suspended"))
    );
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/platform/tenants/acme/reactivate",
            &op,
            None,
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn production_refuses_development_tokens() {
    let app = TestApp::builder().production().spawn().await;
    let token = app.token("acme", Role::Admin, "alice");
    let (status, body) = app
        .call(
            Method::POST,
            "/v1/tenant",
            &token,
            Some(json!({"name": "Acme"})),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("token_invalid")),
        "{body}"
    );
    assert!(body["detail"].as_str().unwrap().contains("production"));
    let jwks: Value = app
        .client
        .get(format!("{}/.well-known/jwks.json", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"][0]["kid"], "2026-11");
}

#[tokio::test]
async fn identity_events_reach_the_audit_trail() {
    let w = world_with(true).await;
    let app = &w.app;
    onboard(app, "acme", "admin@acme.test").await;
    let admin = access(&google_session(&w, "acme", "g-1", "admin@acme.test").await);
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/tenant/members",
            &admin,
            Some(json!({"email": "eve@acme.test", "role": "operator"})),
        )
        .await;
    assert_eq!(status, 200);
    let eve = google_session(&w, "acme", "g-2", "eve@acme.test").await;
    let eve_id = eve["user_id"].as_str().unwrap().to_string();
    let (status, _) = app
        .oidc_sign_in(
            "google",
            Some("acme"),
            &w.google,
            google_claims(&w, "g-9", "stranger@else.test"),
        )
        .await;
    assert_eq!(status, 403);
    let (_, key) = app
        .call(
            Method::POST,
            "/v1/tenant/api-keys",
            &admin,
            Some(json!({"name": "Widget", "role": "viewer"})),
        )
        .await;
    let key_id = key["key_id"].as_str().unwrap();
    let secret_part = key["key"].as_str().unwrap()["ans_sk_".len()..].to_string();
    app.call(
        Method::DELETE,
        &format!("/v1/tenant/api-keys/{key_id}"),
        &admin,
        None,
    )
    .await;
    app.call(
        Method::PUT,
        &format!("/v1/tenant/members/{eve_id}/role"),
        &admin,
        Some(json!({"role": "viewer"})),
    )
    .await;
    app.call(
        Method::POST,
        "/v1/auth/sign-out",
        &access(&eve),
        Some(json!({"all": true})),
    )
    .await;
    for action in [
        "InvitationAccepted",
        "SignedIn",
        "SignInFailed",
        "ApiKeyCreated",
        "ApiKeyRevoked",
        "MemberRoleChanged",
        "SessionsRevoked",
    ] {
        let path = format!("/v1/audit?action={action}");
        let entries = wait_for(action, Duration::from_secs(60), || async {
            let (status, body) = app.call(Method::GET, &path, &admin, None).await;
            assert_eq!(status, 200, "{body}");
            let items = body["items"].as_array().cloned().unwrap_or_default();
            (!items.is_empty()).then_some(items)
        })
        .await;
        let text = serde_json::to_string(&entries).unwrap();
        assert!(
            !text.contains(&secret_part),
            "no key in the trail (its prefix may be)"
        );
    }
    let (_, failed) = app
        .call(Method::GET, "/v1/audit?action=SignInFailed", &admin, None)
        .await;
    assert_eq!(failed["items"][0]["object_type"], "account");
    assert_eq!(failed["items"][0]["outcome"], "failed");
}

#[tokio::test]
async fn sessions_end_after_their_idle_and_absolute_timeouts() {
    let google = FakeOidc::start().await;
    let settings = google.settings(TestApp::REDIRECT);
    let app = TestApp::builder()
        .configure(move |s| {
            s.identity.google = Some(settings);
            s.auth.session_idle_secs = 2;
            s.auth.session_absolute_secs = 5;
            s.auth.session_check_ttl_ms = 100;
        })
        .spawn()
        .await;
    onboard(&app, "acme", "admin@acme.test").await;
    let claims = || {
        let mut c = google.claims("g-1", "admin@acme.test", "");
        c.as_object_mut().unwrap().remove("nonce");
        c
    };
    // Idle: unused for longer than two seconds.
    let (_, idle) = app
        .oidc_sign_in("google", Some("acme"), &google, claims())
        .await;
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let (status, body) = app
        .call(Method::GET, "/v1/auth/me", &access(&idle), None)
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("session_expired")),
        "{body}"
    );
    // Absolute: used every 400 ms (inside the idle timeout), it still ends 5 s after sign-in.
    let (_, busy) = app
        .oidc_sign_in("google", Some("acme"), &google, claims())
        .await;
    let started = std::time::Instant::now();
    let mut last = 200;
    while started.elapsed() < Duration::from_millis(8000) && last == 200 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        last = app
            .call(Method::GET, "/v1/auth/me", &access(&busy), None)
            .await
            .0;
    }
    assert_eq!(last, 401);
    assert!(
        started.elapsed() > Duration::from_millis(4000),
        "it lived while in use"
    );
}

#[tokio::test]
async fn an_admin_resets_a_lost_factor_and_the_member_enrols_again() {
    let w = world().await;
    let app = &w.app;
    onboard(app, "acme", "admin@acme.test").await;
    let admin = google_session(&w, "acme", "g-1", "admin@acme.test").await;
    let admin_id = admin["user_id"].as_str().unwrap().to_string();
    let post = |path: &'static str, token: Option<String>, body: Value| async move {
        let mut r = app
            .client
            .post(format!("{}{path}", app.address))
            .json(&body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let r = r.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json::<Value>().await.unwrap_or(Value::Null))
    };
    // Voluntary enrolment while signed in.
    let (status, enrolment) = post("/v1/auth/mfa/enrol", Some(access(&admin)), json!({})).await;
    assert_eq!(status, 200);
    let secret = enrolment["secret"].as_str().unwrap().to_string();
    let (status, body) = post(
        "/v1/auth/mfa/confirm",
        Some(access(&admin)),
        json!({"code": "123"}),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("mfa_code_invalid"))
    );
    let (status, codes) = post(
        "/v1/auth/mfa/confirm",
        Some(access(&admin)),
        json!({"code": totp_now(&secret, 0)}),
    )
    .await;
    assert_eq!(status, 200, "{codes}");
    assert_eq!(codes["recovery_codes"].as_array().unwrap().len(), 10);
    let (status, body) = post("/v1/auth/mfa/enrol", Some(access(&admin)), json!({})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("mfa_already_enrolled"))
    );
    // Enrolled: the next sign-in asks for the factor even though the tenant does not require it.
    let (_, challenge) = app
        .oidc_sign_in(
            "google",
            Some("acme"),
            &w.google,
            google_claims(&w, "g-1", "admin@acme.test"),
        )
        .await;
    assert_eq!(challenge["status"], "mfa_required");
    // A second Admin resets it.
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/tenant/members",
            &access(&admin),
            Some(json!({"email": "rae@acme.test", "role": "admin"})),
        )
        .await;
    assert_eq!(status, 200);
    let rae = access(&google_session(&w, "acme", "g-2", "rae@acme.test").await);
    let (status, body) = app
        .call(
            Method::DELETE,
            &format!("/v1/tenant/members/{admin_id}/mfa"),
            &rae,
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app
        .call(
            Method::DELETE,
            &format!("/v1/tenant/members/{admin_id}/mfa"),
            &rae,
            None,
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("mfa_not_enrolled"))
    );
    let (status, session) = app
        .oidc_sign_in(
            "google",
            Some("acme"),
            &w.google,
            google_claims(&w, "g-1", "admin@acme.test"),
        )
        .await;
    assert_eq!(
        (status, session["access_token"].is_string()),
        (200, true),
        "no factor any more: {session}"
    );
    assert!(event_types(app, "account")
        .await
        .contains(&"MfaReset".to_string()));
}

#[tokio::test]
async fn expired_sign_ins_and_ended_sessions_are_purged() {
    let app = TestApp::spawn().await;
    let store = identity::store::IdentityStore::new(app.pool.clone());
    let attempt = identity::store::Attempt {
        tenant_id: Some("acme".into()),
        provider: "google".into(),
        nonce: "n".into(),
        code_verifier: "v".into(),
        redirect_uri: TestApp::REDIRECT.into(),
    };
    store
        .start_attempt("expired", &attempt, Duration::ZERO)
        .await
        .unwrap();
    store
        .start_attempt("open", &attempt, Duration::from_secs(600))
        .await
        .unwrap();
    let ended = store
        .create_session(
            Some("acme"),
            "u1",
            "google",
            false,
            None,
            Duration::from_secs(600),
        )
        .await
        .unwrap();
    let live = store
        .create_session(
            Some("acme"),
            "u2",
            "google",
            false,
            None,
            Duration::from_secs(600),
        )
        .await
        .unwrap();
    store
        .revoke_all(Some("acme"), "u1", "sign_out")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        store.purge(Duration::ZERO).await.unwrap(),
        2,
        "the expired attempt and the ended session"
    );
    assert!(store.take_attempt("open").await.unwrap().is_some());
    let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(sessions, 1);
    assert!(matches!(
        store
            .refresh(&live.refresh_token, Duration::from_secs(60))
            .await
            .unwrap(),
        identity::store::Refreshed::Rotated { .. }
    ));
    assert!(matches!(
        store
            .refresh(&ended.refresh_token, Duration::from_secs(60))
            .await
            .unwrap(),
        identity::store::Refreshed::Unknown
    ));
}
