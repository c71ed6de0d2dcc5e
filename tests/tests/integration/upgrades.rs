//! Expand/contract (docs/upgrades.md): during an upgrade the migration Job runs first, so this
//! version's code must keep working on the next version's schema, and the next version's code
//! on this one's. Two checks:
//! - every migration only expands the schema, unless it says it contracts and why (a contract
//!   ships a release after the code stopped needing what it removes);
//! - this version's code, on its schema expanded the way a next version would (a new nullable
//!   column on every table, a new table), still serves every kind of command and read, rebuilds
//!   a projection, and shows nothing of the new column.
use std::path::Path;
use std::time::Duration;

use integration_tests::{wait_until_projected, TestApp};
use reqwest::Method;
use serde_json::json;

/// Statements that take something away from the version still running.
const CONTRACTING: [&str; 7] = [
    "drop table",
    "drop column",
    "rename ",
    " type ",
    "set not null",
    "drop constraint",
    "drop view",
];

#[test]
fn every_migration_expands_unless_it_says_it_contracts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
    let mut offending = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let sql = std::fs::read_to_string(&path).unwrap();
        if sql.contains("-- contract:") {
            continue;
        }
        for (n, line) in sql.lines().enumerate() {
            let code = line.split("--").next().unwrap_or("").to_lowercase();
            let code = format!(" {code} ");
            for statement in CONTRACTING {
                // ` type ` counts in an ALTER only (CREATE TYPE, a column named type...).
                let applies = statement != " type " || code.contains("alter");
                if applies && code.contains(statement) {
                    offending.push(format!(
                        "{}:{}: {}",
                        path.file_name().unwrap().to_string_lossy(),
                        n + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(
        offending.is_empty(),
        "contracting statements in migrations without `-- contract: <why, which release>` \
         (docs/upgrades.md):\n{}",
        offending.join("\n")
    );
}

#[tokio::test]
async fn this_version_serves_on_the_next_versions_expanded_schema() {
    let app = TestApp::builder().embedded().spawn().await;
    // What a next version's expand migration may do: a nullable column on every table, a new
    // table. Applied while this version runs, as the migration Job would.
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert!(tables.len() > 10, "{tables:?}");
    for table in &tables {
        sqlx::query(&format!(
            "ALTER TABLE \"{table}\" ADD COLUMN next_version_note text"
        ))
        .execute(&app.pool)
        .await
        .unwrap();
    }
    sqlx::query(
        "CREATE TABLE next_version_feature (id bigint PRIMARY KEY, tenant_id text NOT NULL)",
    )
    .execute(&app.pool)
    .await
    .unwrap();

    let admin = app.create_tenant("acme", "alice").await;
    let (conversation, answer) = app.ask(&admin, "How do I rotate my API key?").await;
    let calls = [
        (
            Method::POST,
            format!("/v1/conversations/{conversation}/questions"),
            Some(json!({"question": "And the webhook secret?"})),
        ),
        (
            Method::PUT,
            format!("/v1/conversations/{conversation}/answers/{answer}/feedback"),
            Some(json!({"reaction": "upvote"})),
        ),
        (
            Method::POST,
            "/v1/sources".to_string(),
            Some(
                json!({"name": "Docs", "kind": "website", "location": "https://docs.example.com"}),
            ),
        ),
    ];
    for (method, path, body) in calls {
        let (status, answer) = app.call(method, &path, &admin, body).await;
        assert!((200..300).contains(&status), "{path}: {status} {answer}");
    }
    wait_until_projected(&app.pool, Duration::from_secs(30)).await;
    for path in [
        "/v1/conversations".to_string(),
        format!("/v1/conversations/{conversation}"),
        "/v1/sources".to_string(),
        "/v1/analytics?range=7d".to_string(),
        "/v1/tenant".to_string(),
        "/v1/audit".to_string(),
    ] {
        let (status, body) = app.call(Method::GET, &path, &admin, None).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert!(
            !body.to_string().contains("next_version_note"),
            "{path} shows the next version's column: {body}"
        );
    }
    // A rebuild on the expanded schema.
    projections::rebuild(
        &app.pool,
        &projections::Folded(projections::conversations::Conversations),
    )
    .await
    .expect("a rebuild on the expanded schema");
    let (status, listed) = app
        .call(Method::GET, "/v1/conversations", &admin, None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
}
