//! The per-tenant read models: conversation filters, the sources read model, and every read
//! route answering the same after every projection was rebuilt from 0.
use std::collections::BTreeSet;
use std::time::Duration;

use domain::Role;
use integration_tests::{wait_for, Checks, TestApp};
use reqwest::Method;
use serde_json::{json, Value};

async fn all_caught_up(app: &TestApp) {
    wait_for(
        "every projection to catch up",
        Duration::from_secs(90),
        || async {
            let (_, status) = app
                .call(
                    Method::GET,
                    "/v1/admin/projections",
                    &app.platform_token,
                    None,
                )
                .await;
            let caught_up = status["projections"].as_array().is_some_and(|ps| {
                ps.len() == 5
                    && ps
                        .iter()
                        .all(|p| p["lag_events"] == 0 && p["applied_events"].as_i64() > Some(0))
            });
            caught_up.then_some(())
        },
    )
    .await
}

async fn ids(app: &TestApp, token: &str, query: &str) -> BTreeSet<String> {
    let (status, page) = app
        .call(
            Method::GET,
            &format!("/v1/conversations?limit=100&{query}"),
            token,
            None,
        )
        .await;
    assert_eq!(status, 200, "{query}: {page}");
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect()
}

fn set(items: &[&String]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// From a day ago to a day ahead (analytics windows are at most 366 days).
fn recent_window() -> String {
    let f = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let now = chrono::Utc::now();
    format!(
        "from={}&to={}",
        f(now - chrono::Duration::days(1)),
        f(now + chrono::Duration::days(1))
    )
}

fn without_freshness(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("freshness");
    }
    v
}

#[tokio::test]
async fn filters_sources_and_every_route_unchanged_by_rebuilding_every_projection() {
    let app = TestApp::builder().streaming().spawn().await;
    let admin = app.create_tenant("acme", "admin").await;
    let alice = app.token("acme", Role::Operator, "alice");
    let bob = app.token("acme", Role::Operator, "bob");
    let feedback = |c: &str, a: &str| format!("/v1/conversations/{c}/answers/{a}/feedback");

    let (c1, a1) = app.ask(&alice, "How do I export my data?").await;
    app.call(
        Method::PUT,
        &feedback(&c1, &a1),
        &alice,
        Some(json!({"reaction": "upvote"})),
    )
    .await;
    app.call(
        Method::POST,
        &format!("/v1/conversations/{c1}/resolve"),
        &alice,
        None,
    )
    .await;
    let (c2, a2) = app.ask(&bob, "Export fails with error 500").await;
    app.call(
        Method::PUT,
        &feedback(&c2, &a2),
        &bob,
        Some(json!({"reaction": "downvote", "reasons": ["incorrect"]})),
    )
    .await;
    // The local engine is unsure of questions under three words.
    let (c3, _) = app.ask(&bob, "quantum roadmap").await;
    let (c4, _) = app.ask(&alice, "What is the rate limit?").await;
    app.call(
        Method::POST,
        &format!("/v1/conversations/{c4}/questions"),
        &alice,
        Some(json!({"question": "And for webhooks?"})),
    )
    .await;
    app.call(
        Method::POST,
        &format!("/v1/conversations/{c4}/escalate"),
        &alice,
        Some(json!({})),
    )
    .await;

    let add =
        |name: &str| json!({"kind": "docs", "name": name, "location": "https://docs.acme.test"});
    let (_, s1) = app
        .call(Method::POST, "/v1/sources", &admin, Some(add("Guides")))
        .await;
    let (_, s2) = app
        .call(
            Method::POST,
            "/v1/sources",
            &admin,
            Some(add("API reference")),
        )
        .await;
    let (s1, s2) = (
        s1["id"].as_str().unwrap().to_string(),
        s2["id"].as_str().unwrap().to_string(),
    );
    for (source, fail) in [(&s1, false), (&s2, true)] {
        app.call(
            Method::POST,
            &format!("/v1/sources/{source}/sync"),
            &admin,
            None,
        )
        .await;
        let run = uuid::Uuid::new_v4();
        app.call(
            Method::POST,
            &format!("/v1/sources/{source}/sync/start"),
            &admin,
            Some(json!({"sync_id": run})),
        )
        .await;
        let (path, body) = if fail {
            (
                "fail",
                json!({"sync_id": run, "error": "robots.txt forbids"}),
            )
        } else {
            ("complete", json!({"sync_id": run, "document_count": 42}))
        };
        app.call(
            Method::POST,
            &format!("/v1/sources/{source}/sync/{path}"),
            &admin,
            Some(body),
        )
        .await;
    }
    app.call(
        Method::PATCH,
        &format!("/v1/sources/{s2}"),
        &admin,
        Some(json!({"name": "API docs"})),
    )
    .await;
    all_caught_up(&app).await;

    // Filters, each against what the inputs above say.
    let expectations: Vec<(&str, BTreeSet<String>)> = vec![
        ("", set(&[&c1, &c2, &c3, &c4])),
        ("user=alice", set(&[&c1, &c4])),
        ("user=bob", set(&[&c2, &c3])),
        ("status=resolved", set(&[&c1])),
        ("status=open", set(&[&c2, &c3, &c4])),
        ("uncertain=true", set(&[&c3])),
        ("uncertain=false", set(&[&c1, &c2, &c4])),
        ("reaction=upvote", set(&[&c1])),
        ("reaction=downvote", set(&[&c2])),
        ("reaction=none", set(&[&c3, &c4])),
        ("intent=troubleshooting", set(&[&c2])),
        ("intent=guiding", set(&[&c1])),
        ("intent=lookup", set(&[&c4])),
        // c4's follow-up "And for webhooks?" has no intent keyword: Other.
        ("intent=other", set(&[&c3, &c4])),
        ("topic=export", set(&[&c1, &c2])),
        ("q=WEBHOOKS", set(&[&c4])),
        ("q=export", set(&[&c1, &c2])),
        ("user=bob&reaction=downvote", set(&[&c2])),
        ("from=2999-01-01T00:00:00Z", set(&[])),
        (
            "to=2999-01-01T00:00:00Z&from=2000-01-01T00:00:00Z",
            set(&[&c1, &c2, &c3, &c4]),
        ),
    ];
    let mut checks = Checks::default();
    checks
        .check("filters", async {
            for (query, expected) in &expectations {
                assert_eq!(&ids(&app, &admin, query).await, expected, "{query}");
            }
            for (query, code) in [
                ("status=lost", "invalid_status"),
                ("reaction=meh", "invalid_reaction"),
                ("intent=fun", "invalid_intent"),
            ] {
                let (status, problem) = app
                    .call(
                        Method::GET,
                        &format!("/v1/conversations?{query}"),
                        &admin,
                        None,
                    )
                    .await;
                assert_eq!(
                    (status, problem["code"].as_str()),
                    (400, Some(code)),
                    "{query}"
                );
            }
        })
        .await;
    checks
        .check("the tenant read model", async {
            // The tenant read model, folded from the tenant's events.
            let (status, tenant) = app.call(Method::GET, "/v1/tenant", &alice, None).await;
            assert_eq!(status, 200, "{tenant}");
            assert_eq!(
                (tenant["id"].as_str(), tenant["status"].as_str()),
                (Some("acme"), Some("active"))
            );
            assert_eq!(
                tenant["members"],
                json!([{"user_id": "admin", "email": null, "role": "admin", "invitation_pending": true}])
            );
            assert_eq!(tenant["version"], 2);
        })
        .await;
    checks
        .check("the sources read model", async {
            // The sources read model.
            let (_, sources) = app.call(Method::GET, "/v1/sources", &alice, None).await;
            let sources = sources.as_array().unwrap();
            assert_eq!(sources.len(), 2);
            let guides = sources.iter().find(|s| s["id"] == json!(s1)).unwrap();
            assert_eq!(guides["document_count"], 42);
            assert_eq!(guides["sync_state"], "idle");
            assert_eq!(guides["history"][0]["outcome"], "completed");
            assert!(guides["last_synced_at"].is_string());
            let api = sources.iter().find(|s| s["id"] == json!(s2)).unwrap();
            assert_eq!(api["name"], "API docs");
            assert_eq!(api["last_error"], "robots.txt forbids");
            assert_eq!(api["history"][0]["outcome"], "failed");
            let (_, theirs) = app
                .call(
                    Method::GET,
                    "/v1/sources",
                    &app.create_tenant("other", "oscar").await,
                    None,
                )
                .await;
            assert_eq!(theirs, json!([]));
            all_caught_up(&app).await;
        })
        .await;
    checks
        .check(
            "every read route unchanged by rebuilding every projection",
            async {
                // Every read route, before and after rebuilding every projection from 0.
                let mut routes: Vec<String> = expectations
                    .iter()
                    .map(|(q, _)| format!("/v1/conversations?limit=100&{q}"))
                    .collect();
                routes.extend(
                    [&c1, &c2, &c3, &c4]
                        .iter()
                        .map(|c| format!("/v1/conversations/{c}")),
                );
                routes.push("/v1/sources".into());
                routes.push("/v1/tenant".into());
                let window = recent_window();
                routes.push(format!("/v1/analytics?{window}"));
                routes.push(format!("/v1/analytics/cost?{window}"));
                routes.push("/v1/audit?limit=500".into());
                let mut before = Vec::new();
                for route in &routes {
                    before.push(without_freshness(
                        app.call(Method::GET, route, &admin, None).await.1,
                    ));
                }
                for name in ["conversations", "audit", "questions", "sources", "tenants"] {
                    let (status, _) = app
                        .call(
                            Method::POST,
                            &format!("/v1/admin/projections/{name}/rebuild"),
                            &app.platform_token,
                            None,
                        )
                        .await;
                    assert_eq!(status, 202);
                }
                wait_for(
                    "every rebuild to finish",
                    Duration::from_secs(90),
                    || async {
                        let (_, status) = app
                            .call(
                                Method::GET,
                                "/v1/admin/projections",
                                &app.platform_token,
                                None,
                            )
                            .await;
                        status["projections"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .all(|p| p["rebuilt_at"].is_string())
                            .then_some(())
                    },
                )
                .await;
                for (route, expected) in routes.iter().zip(before) {
                    let after =
                        without_freshness(app.call(Method::GET, route, &admin, None).await.1);
                    assert_eq!(after, expected, "{route}");
                }
            },
        )
        .await;
    checks.finish();
}

#[tokio::test]
async fn a_token_for_tenant_b_gets_nothing_of_tenant_a_from_any_read_route() {
    let app = TestApp::builder().streaming().spawn().await;
    let a = app.create_tenant("tenant-a", "alice").await;
    let marker = "zebra-secret-7781";
    let (conversation, answer) = app
        .ask(&a, &format!("How do I export the {marker} report?"))
        .await;
    app.call(
        Method::PUT,
        &format!("/v1/conversations/{conversation}/answers/{answer}/feedback"),
        &a,
        Some(json!({"reaction": "downvote", "reasons": ["irrelevant"], "comment": marker})),
    )
    .await;
    let (_, source) = app
        .call(
            Method::POST,
            "/v1/sources",
            &a,
            Some(json!({"kind": "docs", "name": marker, "location": "https://a.test"})),
        )
        .await;
    let source = source["id"].as_str().unwrap().to_string();
    let b = app.create_tenant("tenant-b", "bob").await;
    all_caught_up(&app).await;

    let window = recent_window();
    // The audit-read log first: later it holds B's own attempts on A's ids, which are B's, not A's.
    let routes = [
        "/v1/audit/reads".to_string(),
        "/v1/tenant".to_string(),
        "/v1/conversations?limit=100".into(),
        format!("/v1/conversations?q={marker}"),
        format!("/v1/conversations/{conversation}"),
        "/v1/sources".into(),
        format!("/v1/sources/{source}"),
        format!("/v1/analytics?{window}"),
        format!("/v1/analytics/cost?{window}"),
        format!("/v1/analytics/cost?{window}&format=csv"),
        "/v1/audit?limit=500".into(),
        "/v1/audit/export".into(),
        "/v1/audit/export?format=csv".into(),
        format!("/v1/audit/events?{window}"),
        format!("/v1/audit/state/conversation/{conversation}?at=2999-01-01T00:00:00Z"),
        format!("/v1/audit/state/knowledge_source/{source}?at=2999-01-01T00:00:00Z"),
        "/v1/audit/state/tenant/tenant-a?at=2999-01-01T00:00:00Z".into(),
        "/v1/admin/dead-letters?include_resolved=true".into(),
    ];
    for route in routes {
        let response = app
            .client
            .get(format!("{}{route}", app.address))
            .bearer_auth(&b)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();
        assert!(status == 200 || status == 404, "{route}: {status} {body}");
        for secret in [
            marker,
            conversation.as_str(),
            source.as_str(),
            "tenant-a",
            "alice",
        ] {
            assert!(!body.contains(secret), "{route} leaked `{secret}`: {body}");
        }
    }
    // ...while A itself sees its data on the same routes.
    let (_, mine) = app
        .call(
            Method::GET,
            &format!("/v1/conversations?q={marker}"),
            &a,
            None,
        )
        .await;
    assert_eq!(mine["items"].as_array().unwrap().len(), 1);
}
