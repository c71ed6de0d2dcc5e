//! Read replicas (docs/disaster-recovery.md): with `database.read_url` set, the read routes
//! query it and the commands never do. The same database stands in for the replica, reached
//! under a name of its own; an unreachable replica fails the reads (503) and nothing else.
use std::time::Duration;

use integration_tests::{wait_until_projected, TestApp};
use reqwest::Method;
use secrecy::ExposeSecret;

#[tokio::test]
async fn the_read_routes_query_the_replica_and_the_commands_the_primary() {
    let app = TestApp::builder()
        .embedded()
        .configure(|s| {
            let url = s.database.url.expose_secret().to_string();
            s.database.read_url =
                Some(format!("{url}?application_name=answers-read-replica").into());
        })
        .spawn()
        .await;
    let replica_connections = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity
              WHERE application_name = 'answers-read-replica' AND datname = current_database()",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap()
    };
    let admin = app.create_tenant("acme", "alice").await;
    app.ask(&admin, "How do I rotate my API key?").await;
    assert_eq!(
        replica_connections().await,
        0,
        "commands never open the replica's pool"
    );
    wait_until_projected(&app.pool, Duration::from_secs(30)).await;
    for path in [
        "/v1/conversations",
        "/v1/analytics?range=7d",
        "/v1/sources",
        "/v1/audit",
    ] {
        let (status, body) = app.call(Method::GET, path, &admin, None).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (_, listed) = app
        .call(Method::GET, "/v1/conversations", &admin, None)
        .await;
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    assert!(
        replica_connections().await >= 1,
        "the reads went through the replica's pool"
    );
}

#[tokio::test]
async fn an_unreachable_replica_fails_the_reads_only() {
    let app = TestApp::builder()
        .embedded()
        .configure(|s| {
            s.database.read_url = Some(
                "postgres://postgres@127.0.0.1:1/answers_no_replica"
                    .to_string()
                    .into(),
            );
            s.database.acquire_timeout_ms = 500;
        })
        .spawn()
        .await;
    let admin = app.create_tenant("acme", "alice").await;
    app.ask(&admin, "How do I rotate my API key?").await;
    let (status, problem) = app
        .call(Method::GET, "/v1/conversations", &admin, None)
        .await;
    assert_eq!(status, 503, "{problem}");
    assert_eq!(problem["code"], "service_unavailable");
    let ready = app
        .client
        .get(format!("{}/health/ready", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(
        ready.status(),
        200,
        "a replica outage does not take the instance out: commands still work"
    );
}
