//! The audit trail: every event an entry, filters, cursor pages, streamed exports, point-in-time
//! state, and the reads of the trail recorded.
use std::time::Duration;

use domain::Role;
use integration_tests::{wait_for, wait_until_projected, Checks, TestApp};
use reqwest::Method;
use serde_json::{json, Value};

async fn wait_until_audited(app: &TestApp) {
    wait_for(
        "the audit trail to catch up",
        Duration::from_secs(60),
        || async {
            let (stored, applied): (i64, Option<i64>) = sqlx::query_as(
                "SELECT (SELECT count(*) FROM events), \
               (SELECT applied_events FROM projection_status WHERE projection = 'audit')",
            )
            .fetch_one(&app.pool)
            .await
            .unwrap();
            (applied == Some(stored)).then_some(())
        },
    )
    .await
}

async fn text(app: &TestApp, path: &str, token: &str) -> (u16, String, String) {
    let response = app
        .client
        .get(format!("{}{path}", app.address))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    (status, content_type, response.text().await.unwrap())
}

#[tokio::test]
async fn the_trail_has_every_event_filters_pages_exports_and_records_its_readers() {
    let app = TestApp::builder().streaming().spawn().await;
    let admin = app.create_tenant("acme", "alice").await;
    let operator = app.token("acme", Role::Operator, "olga");
    let (conversation, answer) = app.ask(&operator, "How do I export, with a comma?").await;
    app.call(
        Method::PUT,
        &format!("/v1/conversations/{conversation}/answers/{answer}/feedback"),
        &operator,
        Some(json!({"reaction": "downvote", "reasons": ["incorrect"]})),
    )
    .await;
    app.call(
        Method::POST,
        "/v1/tenant/members",
        &admin,
        Some(json!({"user_id": "olga", "role": "operator"})),
    )
    .await;
    app.call(
        Method::PUT,
        "/v1/tenant/members/olga/role",
        &admin,
        Some(json!({"role": "viewer"})),
    )
    .await;
    app.call(
        Method::POST,
        "/v1/sources",
        &operator,
        Some(json!({"kind": "docs", "name": "Docs", "location": "https://docs.acme.test"})),
    )
    .await;
    let other = app.create_tenant("other", "oscar").await;
    app.ask(&other, "Someone else's question").await;
    wait_until_audited(&app).await;

    // Expected figures straight from the event store, not from the trail's code path.
    let positions: Vec<i64> = sqlx::query_scalar(
        "SELECT position FROM events WHERE tenant_id = 'acme' ORDER BY position",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let by_olga: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE tenant_id = 'acme' AND actor_id = 'olga'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();

    let mut checks = Checks::default();
    checks
        .check("the trail and its filters", async {
            let (status, page) = app
                .call(Method::GET, "/v1/audit?limit=500", &admin, None)
                .await;
            assert_eq!(status, 200);
            let items = page["items"].as_array().unwrap();
            let listed: Vec<i64> = items
                .iter()
                .map(|e| e["position"].as_i64().unwrap())
                .collect();
            assert_eq!(
                listed, positions,
                "every event of the tenant, in order, and no other tenant's"
            );
            let role_change = items
                .iter()
                .find(|e| e["action"] == "MemberRoleChanged")
                .unwrap();
            assert_eq!(role_change["actor_id"], "alice");
            assert_eq!(role_change["actor_role"], "admin");
            assert_eq!(role_change["object_type"], "tenant");
            assert_eq!(role_change["details"]["to"], "viewer");
            assert_eq!(role_change["outcome"], "succeeded");

            let (_, olga) = app
                .call(Method::GET, "/v1/audit?actor=olga&limit=500", &admin, None)
                .await;
            assert_eq!(olga["items"].as_array().unwrap().len() as i64, by_olga);
            let (_, feedback) = app
                .call(Method::GET, "/v1/audit?action=FeedbackGiven", &admin, None)
                .await;
            assert_eq!(feedback["items"].as_array().unwrap().len(), 1);
            let (_, on_conversation) = app
                .call(
                    Method::GET,
                    &format!("/v1/audit?object_type=conversation&object_id={conversation}"),
                    &admin,
                    None,
                )
                .await;
            assert_eq!(on_conversation["items"].as_array().unwrap().len(), 3);
            let (_, future) = app
                .call(
                    Method::GET,
                    "/v1/audit?from=2999-01-01T00:00:00Z",
                    &admin,
                    None,
                )
                .await;
            assert_eq!(future["items"], json!([]));
        })
        .await;
    checks
        .check("cursor pages", async {
            // Cursor pages walk the same entries.
            let mut walked = Vec::new();
            let mut cursor: Option<i64> = None;
            loop {
                let path = match cursor {
                    Some(c) => format!("/v1/audit?limit=3&cursor={c}"),
                    None => "/v1/audit?limit=3".into(),
                };
                let (_, page) = app.call(Method::GET, &path, &admin, None).await;
                walked.extend(
                    page["items"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|e| e["position"].as_i64().unwrap()),
                );
                match page["next_cursor"].as_i64() {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            assert_eq!(walked, positions);
        })
        .await;
    checks
        .check("exports", async {
            // Exports.
            let (status, content_type, ndjson) = text(&app, "/v1/audit/export", &admin).await;
            assert_eq!(
                (status, content_type.as_str()),
                (200, "application/x-ndjson")
            );
            let lines: Vec<Value> = ndjson
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert_eq!(
                lines
                    .iter()
                    .map(|e| e["position"].as_i64().unwrap())
                    .collect::<Vec<_>>(),
                positions
            );
            let (status, content_type, csv) =
                text(&app, "/v1/audit/export?format=csv", &admin).await;
            assert_eq!(
                (status, content_type.as_str()),
                (200, "text/csv; charset=utf-8")
            );
            let mut csv_lines = csv.lines();
            assert!(csv_lines
                .next()
                .unwrap()
                .starts_with("position,recorded_at,actor_id"));
            assert_eq!(csv_lines.count(), positions.len());
            let (status, _, raw) = text(
                &app,
                "/v1/audit/events?from=2000-01-01T00:00:00Z&to=2999-01-01T00:00:00Z",
                &admin,
            )
            .await;
            assert_eq!(status, 200);
            assert_eq!(raw.lines().count(), positions.len());
            let (status, problem) = app
                .call(Method::GET, "/v1/audit/export?format=xml", &admin, None)
                .await;
            assert_eq!(
                (status, problem["code"].as_str()),
                (400, Some("invalid_format"))
            );
        })
        .await;
    checks
        .check("only admins, only the tenant", async {
            // Only admins; other tenants see nothing of acme.
            let (status, _) = app.call(Method::GET, "/v1/audit", &operator, None).await;
            assert_eq!(status, 403);
            let (_, theirs) = app
                .call(Method::GET, "/v1/audit?limit=500", &other, None)
                .await;
            assert!(theirs["items"]
                .as_array()
                .unwrap()
                .iter()
                .all(|e| e["object_id"] != json!(conversation)));
        })
        .await;
    checks
        .check("every read recorded", async {
            // Every read above was recorded, with who and what.
            let (_, reads) = app.call(Method::GET, "/v1/audit/reads", &admin, None).await;
            let reads = reads.as_array().unwrap();
            assert!(reads
                .iter()
                .all(|r| r["actor_id"] == "alice" && r["actor_role"] == "admin"));
            assert!(reads
                .iter()
                .any(|r| r["route"] == "/v1/audit/export" && r["query"] == "format=csv"));
            assert!(reads
                .iter()
                .any(|r| r["route"] == "/v1/audit" && r["query"] == "actor=olga&limit=500"));
            let recorded: i64 =
                sqlx::query_scalar("SELECT count(*) FROM audit_reads WHERE tenant_id = 'acme'")
                    .fetch_one(&app.pool)
                    .await
                    .unwrap();
            // list, actor, action, object, future, 3 cursor pages, ndjson, csv, raw events, reads
            // (the refused operator and the refused format read nothing).
            assert_eq!(recorded, 12);
        })
        .await;
    checks.finish();
}

#[tokio::test]
async fn point_in_time_state_equals_what_the_live_read_model_showed_then() {
    let app = TestApp::builder().streaming().spawn().await;
    let admin = app.create_tenant("acme", "alice").await;
    let (conversation, answer) = app.ask(&admin, "How do I rotate keys?").await;
    let (_, source) = app
        .call(
            Method::POST,
            "/v1/sources",
            &admin,
            Some(json!({"kind": "docs", "name": "Docs", "location": "https://docs.acme.test"})),
        )
        .await;
    let source = source["id"].as_str().unwrap().to_string();
    wait_until_projected(&app.pool, Duration::from_secs(60)).await;
    let (_, mut live_then) = app
        .call(
            Method::GET,
            &format!("/v1/conversations/{conversation}"),
            &admin,
            None,
        )
        .await;
    live_then.as_object_mut().unwrap().remove("freshness");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let then = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(50)).await;

    // Life goes on.
    app.call(
        Method::PUT,
        &format!("/v1/conversations/{conversation}/answers/{answer}/feedback"),
        &admin,
        Some(json!({"reaction": "upvote"})),
    )
    .await;
    app.call(
        Method::POST,
        &format!("/v1/conversations/{conversation}/resolve"),
        &admin,
        None,
    )
    .await;
    app.call(
        Method::PUT,
        "/v1/tenant/name",
        &admin,
        Some(json!({"name": "Acme Renamed"})),
    )
    .await;
    app.call(
        Method::DELETE,
        &format!("/v1/sources/{source}"),
        &admin,
        None,
    )
    .await;
    wait_until_projected(&app.pool, Duration::from_secs(60)).await;
    let (_, mut live_now) = app
        .call(
            Method::GET,
            &format!("/v1/conversations/{conversation}"),
            &admin,
            None,
        )
        .await;
    live_now.as_object_mut().unwrap().remove("freshness");
    assert_ne!(live_now, live_then);

    let at = then
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        .replace('+', "%2B");
    let (status, past) = app
        .call(
            Method::GET,
            &format!("/v1/audit/state/conversation/{conversation}?at={at}"),
            &admin,
            None,
        )
        .await;
    assert_eq!(status, 200, "{past}");
    assert_eq!(
        past["state"], live_then,
        "the conversation as the read model showed it then"
    );
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let (_, present) = app
        .call(
            Method::GET,
            &format!("/v1/audit/state/conversation/{conversation}?at={now}"),
            &admin,
            None,
        )
        .await;
    assert_eq!(present["state"], live_now);

    let (_, tenant_then) = app
        .call(
            Method::GET,
            &format!("/v1/audit/state/tenant/acme?at={at}"),
            &admin,
            None,
        )
        .await;
    assert_eq!(tenant_then["state"]["name"], "acme");
    let (_, source_then) = app
        .call(
            Method::GET,
            &format!("/v1/audit/state/knowledge_source/{source}?at={at}"),
            &admin,
            None,
        )
        .await;
    assert_eq!(source_then["state"]["status"], "active");
    let (_, source_now) = app
        .call(
            Method::GET,
            &format!("/v1/audit/state/knowledge_source/{source}?at={now}"),
            &admin,
            None,
        )
        .await;
    assert_eq!(source_now["state"]["status"], "removed");
    let (status, _) = app
        .call(
            Method::GET,
            &format!("/v1/audit/state/conversation/{conversation}?at=2000-01-01T00:00:00Z"),
            &admin,
            None,
        )
        .await;
    assert_eq!(status, 404, "it did not exist yet");
    let (status, _) = app
        .call(
            Method::GET,
            &format!("/v1/audit/state/tenant/other?at={now}"),
            &admin,
            None,
        )
        .await;
    assert_eq!(status, 404, "another tenant is never replayed");
}
