//! Rate limits and quotas against the real Redis (docs/security.md).
use std::time::Duration;

use answers_api::Settings;
use domain::Role;
use integration_tests::{test_settings, PrivateRedis, TestApp};
use reqwest::Method;
use serde_json::json;

fn strict(change: impl FnOnce(&mut Settings)) -> Settings {
    let mut s = test_settings();
    change(&mut s);
    s
}

async fn me(app: &TestApp, token: &str, forwarded: Option<&str>) -> reqwest::Response {
    let mut r = app
        .client
        .get(format!("{}/v1/auth/me", app.address))
        .bearer_auth(token);
    if let Some(f) = forwarded {
        r = r.header("x-forwarded-for", f);
    }
    r.send().await.unwrap()
}

#[tokio::test]
async fn two_instances_on_one_redis_share_one_budget() {
    let prefix = format!("shared-{}:", uuid::Uuid::new_v4().simple());
    let settings = strict(|s| {
        s.rate_limits.key_prefix = prefix.clone();
        s.rate_limits.per_user_per_minute = 6;
    });
    let a = TestApp::builder()
        .configure(|s| *s = settings.clone())
        .spawn()
        .await;
    let other = strict(|s| {
        s.rate_limits.key_prefix = prefix.clone();
        s.rate_limits.per_user_per_minute = 6;
    });
    let b = TestApp::builder().configure(|s| *s = other).spawn().await;
    let token = a.token("acme", Role::Admin, "alice");
    let mut allowed = 0;
    let mut last = None;
    for i in 0..8 {
        let app = if i % 2 == 0 { &a } else { &b };
        let response = me(app, &token, None).await;
        if response.status().as_u16() == 200 {
            allowed += 1;
            assert!(response.headers().contains_key("ratelimit"));
        } else {
            last = Some(response);
            break;
        }
    }
    assert_eq!(
        allowed, 6,
        "exactly the policy's budget across both instances"
    );
    let refused = last.expect("a refusal");
    assert_eq!(refused.status().as_u16(), 429);
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=10).contains(&retry),
        "one request's worth of refill: {retry}"
    );
    assert_eq!(refused.headers()["ratelimit-policy"], "\"user\";q=6;w=60");
    assert!(refused.headers()["ratelimit"]
        .to_str()
        .unwrap()
        .starts_with("\"user\";r=0;t="));
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited");
}

#[tokio::test]
async fn question_budgets_follow_the_tenants_plan() {
    let app = TestApp::builder()
        .configure(|s| {
            s.rate_limits.questions_per_tenant_per_minute = 2;
        })
        .spawn()
        .await;
    let alice = app.create_tenant("acme", "alice").await;
    let bob = app.token("acme", Role::Operator, "bob");
    app.ask(&alice, "first").await;
    app.ask(&bob, "second").await;
    let (status, body) = app
        .call(
            Method::POST,
            "/v1/conversations",
            &alice,
            Some(json!({"question": "third"})),
        )
        .await;
    assert_eq!((status, body["code"].as_str()), (429, Some("rate_limited")));
    assert!(body["detail"]
        .as_str()
        .unwrap()
        .contains("questions_tenant"));
    // Reading is not asking.
    let (status, _) = app
        .call(Method::GET, "/v1/conversations", &alice, None)
        .await;
    assert_eq!(status, 200);
    // A bigger plan, set by a platform operator, and a monthly quota.
    let (status, body) = app
        .call(
            Method::PUT,
            "/v1/platform/tenants/acme/plan",
            &app.platform_token,
            Some(json!({"questions_per_minute": 100, "questions_per_month": 3})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    tokio::time::sleep(Duration::from_millis(1100)).await; // the cached tenant's TTL
    app.ask(&alice, "third, on the new plan").await;
    let (status, body) = app
        .call(
            Method::POST,
            "/v1/conversations",
            &alice,
            Some(json!({"question": "fourth"})),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (429, Some("rate_limited")),
        "the month's three are used"
    );
    assert!(body["detail"].as_str().unwrap().contains("questions_month"));
    let (status, _) = app
        .call(
            Method::PUT,
            "/v1/platform/tenants/acme/plan",
            &alice,
            Some(json!({"questions_per_minute": 1000, "questions_per_month": 1000})),
        )
        .await;
    assert_eq!(status, 403, "a tenant's Admin does not set its own plan");
}

#[tokio::test]
async fn the_forwarded_address_counts_only_from_trusted_proxies() {
    let untrusted = TestApp::builder()
        .configure(|s| s.rate_limits.per_ip_per_minute = 3)
        .spawn()
        .await;
    let token = untrusted.token("acme", Role::Admin, "alice");
    for i in 0..3 {
        let spoofed = format!("198.51.100.{i}");
        assert_eq!(
            me(&untrusted, &token, Some(&spoofed))
                .await
                .status()
                .as_u16(),
            200
        );
    }
    let refused = me(&untrusted, &token, Some("198.51.100.99")).await;
    assert_eq!(
        refused.status().as_u16(),
        429,
        "a spoofed header from an untrusted peer changes nothing"
    );
    assert_eq!(refused.headers()["ratelimit-policy"], "\"ip\";q=3;w=60");

    let behind_proxy = TestApp::builder()
        .configure(|s| {
            s.rate_limits.per_ip_per_minute = 3;
            s.rate_limits.trusted_proxies = "127.0.0.1/32, ::1".into();
        })
        .spawn()
        .await;
    for i in 0..6 {
        let client = format!("203.0.113.{i}");
        assert_eq!(
            me(&behind_proxy, &token, Some(&client))
                .await
                .status()
                .as_u16(),
            200,
            "{client}"
        );
    }
    for _ in 0..3 {
        assert_eq!(
            me(&behind_proxy, &token, Some("203.0.113.200"))
                .await
                .status()
                .as_u16(),
            200
        );
    }
    assert_eq!(
        me(&behind_proxy, &token, Some("203.0.113.200"))
            .await
            .status()
            .as_u16(),
        429
    );

    let sign_in = TestApp::builder()
        .configure(|s| s.rate_limits.sign_in_per_ip_per_minute = 2)
        .spawn()
        .await;
    let providers = format!("{}/v1/auth/providers", sign_in.address);
    for _ in 0..2 {
        assert_eq!(
            sign_in
                .client
                .get(&providers)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
            200
        );
    }
    let refused = sign_in.client.get(&providers).send().await.unwrap();
    assert_eq!(refused.status().as_u16(), 429);
    assert_eq!(
        refused.headers()["ratelimit-policy"],
        "\"sign_in\";q=2;w=60"
    );
}

#[tokio::test]
async fn when_redis_stops_the_configured_choice_applies() {
    for mode in ["open", "closed"] {
        let mut redis = PrivateRedis::start();
        let url = redis.url();
        let app = TestApp::builder()
            .configure(move |s| {
                s.rate_limits.redis_url = url;
                s.rate_limits.on_redis_down = mode.into();
                s.rate_limits.per_user_per_minute = 1000;
            })
            .spawn()
            .await;
        let token = app.token("acme", Role::Admin, "alice");
        assert_eq!(me(&app, &token, None).await.status().as_u16(), 200);
        // Under load: requests in flight while Redis is killed.
        let load: Vec<_> = (0..20)
            .map(|_| {
                let (client, url, token) = (
                    app.client.clone(),
                    format!("{}/v1/auth/me", app.address),
                    token.clone(),
                );
                tokio::spawn(async move {
                    let mut statuses = Vec::new();
                    for _ in 0..10 {
                        let r = client.get(&url).bearer_auth(&token).send().await.unwrap();
                        statuses.push(r.status().as_u16());
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    statuses
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        redis.stop();
        let mut statuses = Vec::new();
        for task in load {
            statuses.extend(task.await.unwrap());
        }
        assert!(
            statuses.iter().all(|s| *s == 200 || *s == 503),
            "{mode}: {statuses:?}"
        );
        let after = me(&app, &token, None).await;
        match mode {
            "open" => assert_eq!(after.status().as_u16(), 200, "fails open: local budgets"),
            _ => {
                assert_eq!(after.status().as_u16(), 503, "fails closed");
                let body: serde_json::Value = after.json().await.unwrap();
                assert_eq!(body["code"], "service_unavailable");
            }
        }
        assert!(
            !statuses.iter().any(|s| *s >= 500 && *s != 503),
            "never a 500"
        );
    }
}

#[tokio::test]
async fn local_budgets_still_limit_while_redis_is_down() {
    let app = TestApp::builder()
        .configure(|s| {
            s.rate_limits.redis_url = "redis://127.0.0.1:1".into();
            s.rate_limits.per_user_per_minute = 3;
        })
        .spawn()
        .await;
    let token = app.token("acme", Role::Admin, "alice");
    for _ in 0..3 {
        assert_eq!(me(&app, &token, None).await.status().as_u16(), 200);
    }
    assert_eq!(me(&app, &token, None).await.status().as_u16(), 429);
}
